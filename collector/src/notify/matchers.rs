//! Label matchers as Alertmanager writes them: `severity="critical"`,
//! `alertname=~"Gpu.*"`, `node!=gpu-01`, and the deprecated `match:`/`match_re:` maps.
//! Regular expressions are anchored (`^(?:re)$`), as Prometheus's are.

use std::fmt;

use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchType {
    Equal,
    NotEqual,
    Regexp,
    NotRegexp,
}

impl MatchType {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchType::Equal => "=",
            MatchType::NotEqual => "!=",
            MatchType::Regexp => "=~",
            MatchType::NotRegexp => "!~",
        }
    }
}

/// One matcher. Built with [`Matcher::new`], which compiles a regular expression once.
#[derive(Clone)]
pub struct Matcher {
    pub name: String,
    pub kind: MatchType,
    pub value: String,
    re: Option<Regex>,
}

impl Matcher {
    /// A matcher; for the regex kinds `value` must compile (anchored).
    pub fn new(name: &str, kind: MatchType, value: &str) -> Result<Matcher, String> {
        let re = match kind {
            MatchType::Regexp | MatchType::NotRegexp => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("invalid regular expression {value:?}: {e}"))?,
            ),
            MatchType::Equal | MatchType::NotEqual => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            kind,
            value: value.to_string(),
            re,
        })
    }

    /// Whether a label value (empty when the label is absent) matches.
    pub fn matches(&self, value: &str) -> bool {
        match (self.kind, &self.re) {
            (MatchType::Equal, _) => value == self.value,
            (MatchType::NotEqual, _) => value != self.value,
            (MatchType::Regexp, Some(re)) => re.is_match(value),
            (MatchType::NotRegexp, Some(re)) => !re.is_match(value),
            (MatchType::Regexp | MatchType::NotRegexp, None) => false,
        }
    }

    /// Whether every matcher matches the label set (a missing label is "").
    pub fn all_match(matchers: &[Matcher], labels: &super::LabelMap) -> bool {
        matchers
            .iter()
            .all(|m| m.matches(labels.get(&m.name).map_or("", String::as_str)))
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.kind == other.kind && self.value == other.value
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// As Alertmanager prints a matcher in a group key: `name="value"` with Go quoting.
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.kind.as_str(), self.value)
    }
}
