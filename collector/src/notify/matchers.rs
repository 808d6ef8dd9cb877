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

/// As Alertmanager prints a matcher in a group key: `name="value"`, the value escaped
/// as OpenMetrics escapes it (backslash, double quote and newline).
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let escaped = self
            .value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        write!(f, "{}{}\"{escaped}\"", self.name, self.kind.as_str())
    }
}

impl Matcher {
    /// Whether the matcher matches the empty string (a silence needs one that does not).
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// Whether the value is a regular expression (the API's `isRegex`).
    pub fn is_regex(&self) -> bool {
        matches!(self.kind, MatchType::Regexp | MatchType::NotRegexp)
    }

    /// Whether the match is positive (the API's `isEqual`).
    pub fn is_equal(&self) -> bool {
        matches!(self.kind, MatchType::Equal | MatchType::Regexp)
    }
}

/// Parses one or more matchers as Alertmanager's `matchers:` lines and `amtool` take
/// them: `a="b"`, `a=~"b.*",c!=d`, `{a="b", c!~"d"}`. Values may be unquoted; quoted
/// values use Go's escapes (`\"`, `\\`, `\n`).
pub fn parse_matchers(text: &str) -> Result<Vec<Matcher>, String> {
    let mut p = Cursor {
        s: text.as_bytes(),
        i: 0,
        text,
    };
    p.skip_ws();
    let braced = p.eat(b'{');
    let mut out = Vec::new();
    loop {
        p.skip_ws();
        if p.done() || (braced && p.peek() == Some(b'}')) {
            break;
        }
        out.push(p.matcher()?);
        p.skip_ws();
        if !p.eat(b',') {
            break;
        }
    }
    p.skip_ws();
    if braced && !p.eat(b'}') {
        return Err(format!(
            "bad matcher format: {text:?}: missing closing '}}'"
        ));
    }
    p.skip_ws();
    if !p.done() {
        return Err(format!(
            "bad matcher format: {text:?}: unexpected {:?} at offset {}",
            &text[p.i..],
            p.i
        ));
    }
    Ok(out)
}

/// Parses exactly one matcher.
pub fn parse_matcher(text: &str) -> Result<Matcher, String> {
    let mut ms = parse_matchers(text)?;
    if ms.len() != 1 {
        return Err(format!(
            "bad matcher format: {text:?}: expected one matcher, got {}",
            ms.len()
        ));
    }
    Ok(ms.remove(0))
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
}

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn err(&self, what: &str) -> String {
        format!("bad matcher format: {:?}: {what}", self.text)
    }

    fn matcher(&mut self) -> Result<Matcher, String> {
        let name = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            let start = self.i;
            while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b':')
            {
                self.i += 1;
            }
            self.text[start..self.i].to_string()
        };
        if name.is_empty() {
            return Err(self.err("missing label name"));
        }
        self.skip_ws();
        let kind = if self.s[self.i..].starts_with(b"=~") {
            MatchType::Regexp
        } else if self.s[self.i..].starts_with(b"!~") {
            MatchType::NotRegexp
        } else if self.s[self.i..].starts_with(b"!=") {
            MatchType::NotEqual
        } else if self.s[self.i..].starts_with(b"=") {
            MatchType::Equal
        } else {
            return Err(self.err(&format!("missing operator after {name:?}")));
        };
        self.i += kind.as_str().len();
        self.skip_ws();
        let value = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            let start = self.i;
            while matches!(self.peek(), Some(c) if c != b',' && c != b'}' && c != b'"') {
                self.i += 1;
            }
            self.text[start..self.i].trim_end().to_string()
        };
        Matcher::new(&name, kind, &value).map_err(|e| self.err(&e))
    }

    /// A Go double-quoted string starting at the cursor.
    fn quoted(&mut self) -> Result<String, String> {
        self.i += 1;
        let mut out = String::new();
        let rest = &self.text[self.i..];
        let mut chars = rest.char_indices();
        while let Some((off, c)) = chars.next() {
            match c {
                '"' => {
                    self.i += off + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, '"')) => out.push('"'),
                    Some((_, '\'')) => out.push('\''),
                    Some((_, other)) => {
                        return Err(self.err(&format!("unknown escape \\{other}")));
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(self.err("unterminated quoted string"))
    }
}

/// `{a="b",c=~"d"}`: a matcher list as Alertmanager prints it in a route's key.
pub fn matchers_string(ms: &[Matcher]) -> String {
    let parts: Vec<String> = ms.iter().map(ToString::to_string).collect();
    format!("{{{}}}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> (String, MatchType, String) {
        let m = parse_matcher(s).unwrap();
        (m.name, m.kind, m.value)
    }

    #[test]
    fn parses_alertmanager_syntax() {
        assert_eq!(
            one(r#"severity="critical""#),
            ("severity".into(), MatchType::Equal, "critical".into())
        );
        assert_eq!(
            one("alertname=~Gpu.*"),
            ("alertname".into(), MatchType::Regexp, "Gpu.*".into())
        );
        assert_eq!(
            one(" node != gpu-01 "),
            ("node".into(), MatchType::NotEqual, "gpu-01".into())
        );
        assert_eq!(
            one(r#"msg!~"a \"b\"""#),
            ("msg".into(), MatchType::NotRegexp, "a \"b\"".into())
        );
        let ms = parse_matchers(r#"{a="b", c=~"d|e",f!=g}"#).unwrap();
        assert_eq!(matchers_string(&ms), r#"{a="b",c=~"d|e",f!="g"}"#);
        assert!(parse_matchers("{}").unwrap().is_empty());
        assert_eq!(parse_matchers("a=b,c=d").unwrap().len(), 2);
    }

    #[test]
    fn regexes_are_anchored_and_errors_are_clear() {
        let m = parse_matcher("job=~node").unwrap();
        assert!(m.matches("node"));
        assert!(!m.matches("node2"));
        assert!(
            parse_matcher("a=~\"(\"")
                .unwrap_err()
                .contains("invalid regular expression")
        );
        assert!(parse_matcher("a").unwrap_err().contains("missing operator"));
        assert!(parse_matcher("{a=b").unwrap_err().contains("closing"));
        assert!(
            parse_matcher("=b")
                .unwrap_err()
                .contains("missing label name")
        );
        assert!(
            parse_matcher(r#"a="b"#)
                .unwrap_err()
                .contains("unterminated")
        );
    }
}
