//! Prometheus rule files (groups of alerting and recording rules) with Vigil's one
//! extension, a `recovery:` block on an alerting rule, validated as Prometheus's
//! `rulefmt` validates them. Every error names the file, and where it applies the
//! group, the rule (1-based index and name) and the line.
//!
//! Names are checked with Prometheus's legacy (pre-UTF-8) rules, so that a file that
//! passes here also loads in Prometheus 2.x.
//!
//! Prometheus refuses unknown rule keys, so a rule with `recovery:` does not load in
//! Prometheus; rules/packs/README.md says to keep such rules in their own files.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::duration::parse_duration;
use crate::promql::{self, Expr};
use crate::template::Template;
use crate::yaml::{self, Node, YamlError};

/// A loaded and validated rule file.
#[derive(Debug, Clone)]
pub struct RuleFile {
    pub path: PathBuf,
    pub groups: Vec<RuleGroup>,
}

#[derive(Debug, Clone)]
pub struct RuleGroup {
    pub name: String,
    /// Evaluation interval; `None` means the loader's default.
    pub interval_ms: Option<i64>,
    pub query_offset_ms: Option<i64>,
    /// Maximum alerts or series a rule may produce; 0 is no limit.
    pub limit: u64,
    /// Labels added to every rule of the group (a rule's own labels win).
    pub labels: Vec<(String, String)>,
    pub rules: Vec<Rule>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleKind {
    Alerting,
    Recording,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub kind: RuleKind,
    /// The alert name or the recorded metric name.
    pub name: String,
    pub expr: String,
    pub parsed: Expr,
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub recovery: Option<Recovery>,
    pub line: usize,
}

/// Vigil's extension: the script the collector asks the alert's node to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// A plain file name inside the agent's recovery directory.
    pub script: String,
    /// Alert labels passed to the script as `VIGIL_LABEL_<NAME>`.
    pub args_from_labels: Vec<String>,
}

/// One problem in a rule file, printed as promtool prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    pub file: PathBuf,
    pub group: Option<String>,
    /// 1-based index of the rule in its group, and its name.
    pub rule: Option<(usize, String)>,
    pub line: Option<(usize, usize)>,
    pub msg: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some((l, c)) = self.line {
            write!(f, "{l}:{c}: ")?;
        }
        match (&self.group, &self.rule) {
            (Some(g), Some((i, n))) => write!(f, "group {g:?}, rule {i}, {n:?}: {}", self.msg),
            (Some(g), None) => write!(f, "group {g:?}: {}", self.msg),
            _ => f.write_str(&self.msg),
        }
    }
}

impl std::error::Error for RuleError {}

/// Prometheus's legacy label name rule.
pub fn is_valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Prometheus's legacy metric name rule.
pub fn is_valid_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// Reads, parses and validates a rule file.
pub fn load_file(path: &Path) -> Result<RuleFile, Vec<RuleError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![RuleError {
            file: path.into(),
            group: None,
            rule: None,
            line: None,
            msg: e.to_string(),
        }]
    })?;
    parse_rule_file(path, &text)
}

/// Parses and validates rule-file text; `path` only names the file in errors.
pub fn parse_rule_file(path: &Path, text: &str) -> Result<RuleFile, Vec<RuleError>> {
    let file_err = |msg: String, line: Option<(usize, usize)>| RuleError {
        file: path.into(),
        group: None,
        rule: None,
        line,
        msg,
    };
    let root = yaml::parse(text)
        .map_err(|e| vec![file_err(format!("yaml: line {}: {}", e.line, e.msg), None)])?;
    let mut decode_errs: Vec<YamlError> = Vec::new();
    let mut errs: Vec<RuleError> = Vec::new();
    let mut groups = Vec::new();
    let top = match root.fields("rulefmt.RuleGroups", &["groups"]) {
        Ok(f) => f,
        Err(e) => return Err(vec![unmarshal_errors(path, e)]),
    };
    let group_nodes = match top.get("groups").map(|n| n.seq("groups")) {
        Some(Ok(g)) => g,
        Some(Err(e)) => return Err(vec![unmarshal_errors(path, vec![e])]),
        None => &[],
    };
    for gnode in group_nodes {
        match decode_group(gnode) {
            Ok(g) => groups.push(g),
            Err(mut e) => decode_errs.append(&mut e),
        }
    }
    if !decode_errs.is_empty() {
        return Err(vec![unmarshal_errors(path, decode_errs)]);
    }
    let mut seen: Vec<&str> = Vec::new();
    for g in &groups {
        if g.name.value.is_empty() {
            errs.push(file_err(
                "Groupname must not be empty".into(),
                Some(g.name.pos),
            ));
        }
        if seen.contains(&g.name.value.as_str()) {
            errs.push(file_err(
                format!(
                    "groupname: \"{}\" is repeated in the same file",
                    g.name.value
                ),
                Some(g.name.pos),
            ));
        }
        seen.push(&g.name.value);
        for (n, _) in &g.labels {
            if !is_valid_label_name(&n.value) || n.value == promql::METRIC_NAME {
                errs.push(RuleError {
                    line: Some(n.pos),
                    group: Some(g.name.value.clone()),
                    ..file_err(format!("invalid label name: {}", n.value), None)
                });
            }
        }
        for (i, r) in g.rules.iter().enumerate() {
            for (pos, msg) in crate::rulefile_validate::validate_rule(r) {
                errs.push(RuleError {
                    file: path.into(),
                    group: Some(g.name.value.clone()),
                    rule: Some((i + 1, r.name().to_string())),
                    line: pos,
                    msg,
                });
            }
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(RuleFile {
        path: path.into(),
        groups: groups.into_iter().map(RawGroup::into_group).collect(),
    })
}

fn unmarshal_errors(path: &Path, errs: Vec<YamlError>) -> RuleError {
    let mut msg = String::from("yaml: unmarshal errors:");
    for e in &errs {
        msg.push_str(&format!("\n  line {}: {}", e.line, e.msg));
    }
    RuleError {
        file: path.into(),
        group: None,
        rule: None,
        line: None,
        msg,
    }
}

/// A decoded value with the position of its YAML node.
#[derive(Debug, Clone, Default)]
pub(crate) struct At<T> {
    pub value: T,
    pub pos: (usize, usize),
}

fn at<T>(node: &Node, value: T) -> At<T> {
    At {
        value,
        pos: (node.line, node.col),
    }
}

pub(crate) struct RawGroup {
    name: At<String>,
    interval_ms: Option<i64>,
    query_offset_ms: Option<i64>,
    limit: u64,
    labels: Vec<(At<String>, String)>,
    rules: Vec<RawRule>,
}

#[derive(Default)]
pub(crate) struct RawRule {
    pub record: Option<At<String>>,
    pub alert: Option<At<String>>,
    pub expr: Option<At<String>>,
    pub for_ms: Option<At<i64>>,
    pub keep_firing_for_ms: Option<At<i64>>,
    pub labels: PositionedPairs,
    pub annotations: PositionedPairs,
    pub recovery: Option<At<RawRecovery>>,
    pub line: usize,
}

#[derive(Default)]
pub(crate) struct RawRecovery {
    pub script: Option<At<String>>,
    pub args_from_labels: Vec<At<String>>,
}

impl RawRule {
    pub fn name(&self) -> &str {
        match (&self.alert, &self.record) {
            (Some(a), _) if !a.value.is_empty() => &a.value,
            (_, Some(r)) => &r.value,
            _ => "",
        }
    }
}

fn duration_field(n: &Node, what: &str) -> Result<At<i64>, YamlError> {
    let s = n.string(what)?;
    parse_duration(&s)
        .map(|ms| at(n, ms))
        .map_err(|e| YamlError::at(n, e))
}

fn decode_group(n: &Node) -> Result<RawGroup, Vec<YamlError>> {
    let (f, mut errs) = n.fields_collect(
        "rulefmt.RuleGroup",
        &[
            "name",
            "interval",
            "query_offset",
            "limit",
            "rules",
            "labels",
        ],
    );
    let one = |e: YamlError| vec![e];
    let name = match f.get("name") {
        Some(v) => at(v, v.string("name").map_err(one)?),
        None => at(n, String::new()),
    };
    let opt_dur = |k: &str| -> Result<Option<i64>, Vec<YamlError>> {
        f.get(k)
            .filter(|v| !v.is_null())
            .map(|v| duration_field(v, k).map(|d| d.value))
            .transpose()
            .map_err(one)
    };
    let interval_ms = opt_dur("interval")?;
    let query_offset_ms = opt_dur("query_offset")?;
    let limit = f
        .get("limit")
        .map(|v| v.uint("limit"))
        .transpose()
        .map_err(one)?
        .unwrap_or(0);
    let labels = match f.get("labels") {
        Some(v) => v
            .string_map("labels")
            .map_err(one)?
            .into_iter()
            .map(|(k, val)| (at(&k, k.string("").unwrap_or_default()), val))
            .collect(),
        None => Vec::new(),
    };
    let mut rules = Vec::new();
    if let Some(rn) = f.get("rules") {
        for r in rn.seq("rules").map_err(one)? {
            match decode_rule(r) {
                Ok(r) => rules.push(r),
                Err(mut e) => errs.append(&mut e),
            }
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(RawGroup {
        name,
        interval_ms,
        query_offset_ms,
        limit,
        labels,
        rules,
    })
}

/// A `map[string]string` with the position of every key and value.
type PositionedPairs = Vec<(At<String>, At<String>)>;

fn string_pairs(n: &Node, what: &str) -> Result<PositionedPairs, YamlError> {
    match &n.kind {
        yaml::NodeKind::Map(entries) => entries
            .iter()
            .map(|(k, v)| Ok((at(k, k.string(what)?), at(v, v.string(what)?))))
            .collect(),
        // Null is empty; anything else is the decoder's type error.
        _ => n.string_map(what).map(|_| Vec::new()),
    }
}

fn decode_rule(n: &Node) -> Result<RawRule, Vec<YamlError>> {
    let (f, unknown) = n.fields_collect(
        "rulefmt.RuleNode",
        &[
            "record",
            "alert",
            "expr",
            "for",
            "keep_firing_for",
            "labels",
            "annotations",
            "recovery",
        ],
    );
    if !unknown.is_empty() {
        return Err(unknown);
    }
    let one = |e: YamlError| vec![e];
    let s = |k: &str| -> Result<Option<At<String>>, Vec<YamlError>> {
        f.get(k)
            .map(|v| v.string(k).map(|s| at(v, s)))
            .transpose()
            .map_err(one)
    };
    let d = |k: &str| -> Result<Option<At<i64>>, Vec<YamlError>> {
        f.get(k)
            .filter(|v| !v.is_null())
            .map(|v| duration_field(v, k))
            .transpose()
            .map_err(one)
    };
    let mut rule = RawRule {
        record: s("record")?,
        alert: s("alert")?,
        expr: s("expr")?,
        for_ms: d("for")?,
        keep_firing_for_ms: d("keep_firing_for")?,
        line: n.line,
        ..RawRule::default()
    };
    if let Some(v) = f.get("labels") {
        rule.labels = string_pairs(v, "labels").map_err(one)?;
    }
    if let Some(v) = f.get("annotations") {
        rule.annotations = string_pairs(v, "annotations").map_err(one)?;
    }
    if let Some(v) = f.get("recovery") {
        let rf = v.fields("vigil.Recovery", &["script", "args_from_labels"])?;
        let mut rec = RawRecovery::default();
        if let Some(sn) = rf.get("script") {
            rec.script = Some(at(sn, sn.string("script").map_err(one)?));
        }
        if let Some(an) = rf.get("args_from_labels") {
            for a in an.seq("args_from_labels").map_err(one)? {
                rec.args_from_labels
                    .push(at(a, a.string("args_from_labels").map_err(one)?));
            }
        }
        rule.recovery = Some(at(v, rec));
    }
    Ok(rule)
}

impl RawGroup {
    fn into_group(self) -> RuleGroup {
        RuleGroup {
            line: self.name.pos.0,
            name: self.name.value,
            interval_ms: self.interval_ms,
            query_offset_ms: self.query_offset_ms,
            limit: self.limit,
            labels: self.labels.into_iter().map(|(k, v)| (k.value, v)).collect(),
            rules: self
                .rules
                .into_iter()
                .filter_map(RawRule::into_rule)
                .collect(),
        }
    }
}

impl RawRule {
    /// Only called after validation passed, so expr parses and one name is set.
    fn into_rule(self) -> Option<Rule> {
        let expr = self.expr?.value;
        let parsed = promql::parse(&expr).ok()?;
        let (kind, name) = match (self.alert, self.record) {
            (Some(a), _) if !a.value.is_empty() => (RuleKind::Alerting, a.value),
            (_, Some(r)) => (RuleKind::Recording, r.value),
            _ => return None,
        };
        Some(Rule {
            kind,
            name,
            expr,
            parsed,
            for_ms: self.for_ms.map_or(0, |d| d.value),
            keep_firing_for_ms: self.keep_firing_for_ms.map_or(0, |d| d.value),
            labels: self
                .labels
                .into_iter()
                .map(|(k, v)| (k.value, v.value))
                .collect(),
            annotations: self
                .annotations
                .into_iter()
                .map(|(k, v)| (k.value, v.value))
                .collect(),
            recovery: self.recovery.map(|r| Recovery {
                script: r.value.script.map(|s| s.value).unwrap_or_default(),
                args_from_labels: r
                    .value
                    .args_from_labels
                    .into_iter()
                    .map(|a| a.value)
                    .collect(),
            }),
            line: self.line,
        })
    }
}

/// Parses an annotation or label template as Prometheus's loader does, with the
/// variables it predefines.
pub(crate) fn check_template(alert: &str, text: &str) -> Result<(), String> {
    Template::parse_alert(alert, text)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
