//! The parser of the Alertmanager configuration file, on vigil-rules' YAML node tree
//! so that every error names the line and the key. Decoding follows Alertmanager's
//! `config.Load`: unknown keys are errors, defaults and `global` inheritance are filled
//! in, and the same checks run (receivers exist and are unique, the root route names
//! a receiver and has no matchers, email needs to/from/smarthost, ...). Keys of
//! Alertmanager that Vigil does not implement are refused by name.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use vigil_rules::duration::parse_duration;
use vigil_rules::rulefile::is_valid_label_name;
use vigil_rules::yaml::{self, Node, NodeKind};

use super::*;
use crate::notify::matchers::{MatchType, Matcher, parse_matchers};

/// One problem in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    /// Where: `receiver "ops"`, `route`, `global`, `inhibit_rules[1]`; may be empty.
    pub context: String,
    /// Names the key it is about.
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if !self.context.is_empty() {
            write!(f, "{} ", self.context)?;
        }
        if self.line > 0 {
            write!(f, "line {}: ", self.line)?;
        }
        f.write_str(&self.msg)
    }
}

impl std::error::Error for ConfigError {}

/// Reads and parses an Alertmanager configuration file.
pub fn load(path: &Path) -> Result<AlertmanagerConfig, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.into(),
            line: 0,
            context: String::new(),
            msg: format!("cannot read: {e}"),
        }]
    })?;
    parse(path, &text)
}

/// Parses and validates the text of an Alertmanager configuration file. `path` names
/// the file in errors, and relative `*_file` paths are resolved against its folder.
pub fn parse(path: &Path, text: &str) -> Result<AlertmanagerConfig, Vec<ConfigError>> {
    let root = yaml::parse(text).map_err(|e| {
        vec![ConfigError {
            file: path.into(),
            line: e.line,
            context: String::new(),
            msg: format!("yaml: {}", e.msg),
        }]
    })?;
    let mut p = P {
        file: path.to_path_buf(),
        dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        errs: Vec::new(),
    };
    let cfg = p.config(&root);
    if p.errs.is_empty() {
        Ok(cfg)
    } else {
        Err(p.errs)
    }
}

const UNSUPPORTED_TOP: &[&str] = &["time_intervals", "mute_time_intervals"];
const UNSUPPORTED_ROUTE: &[&str] = &["mute_time_intervals", "active_time_intervals"];

pub(super) struct P {
    file: PathBuf,
    dir: PathBuf,
    errs: Vec<ConfigError>,
}

impl P {
    pub(super) fn err(&mut self, ctx: &str, line: usize, msg: impl Into<String>) {
        self.errs.push(ConfigError {
            file: self.file.clone(),
            line,
            context: ctx.to_string(),
            msg: msg.into(),
        });
    }

    /// The known fields of a mapping; unknown and unsupported keys are reported.
    pub(super) fn fields<'n>(
        &mut self,
        node: &'n Node,
        ctx: &str,
        known: &[&str],
        unsupported: &[&str],
    ) -> HashMap<&'n str, &'n Node> {
        let entries = match &node.kind {
            NodeKind::Map(e) => e.as_slice(),
            _ if node.is_null() => &[],
            _ => {
                self.err(ctx, node.line, "expected a mapping");
                return HashMap::new();
            }
        };
        let mut out = HashMap::new();
        for (k, v) in entries {
            let name = k.scalar().unwrap_or("");
            if known.contains(&name) {
                out.insert(name, v);
            } else if unsupported.contains(&name) {
                let empty = v.is_null() || matches!(&v.kind, NodeKind::Seq(s) if s.is_empty());
                if !empty {
                    self.err(ctx, k.line, format!("{name} is not supported by Vigil yet"));
                }
            } else {
                self.err(ctx, k.line, format!("unknown key {name:?}"));
            }
        }
        out
    }

    pub(super) fn string(&mut self, ctx: &str, f: &HashMap<&str, &Node>, key: &str) -> String {
        match f.get(key) {
            None => String::new(),
            Some(n) => match n.string(key) {
                Ok(s) => s,
                Err(e) => {
                    self.err(ctx, n.line, format!("{key}: expected a string: {}", e.msg));
                    String::new()
                }
            },
        }
    }

    pub(super) fn opt_string(
        &mut self,
        ctx: &str,
        f: &HashMap<&str, &Node>,
        key: &str,
    ) -> Option<String> {
        let s = self.string(ctx, f, key);
        (!s.is_empty()).then_some(s)
    }

    pub(super) fn bool(&mut self, ctx: &str, f: &HashMap<&str, &Node>, key: &str) -> Option<bool> {
        let n = f.get(key)?;
        if n.is_null() {
            return None;
        }
        match n.scalar() {
            Some("true" | "True" | "TRUE") => Some(true),
            Some("false" | "False" | "FALSE") => Some(false),
            _ => {
                self.err(ctx, n.line, format!("{key}: expected true or false"));
                None
            }
        }
    }

    pub(super) fn duration(
        &mut self,
        ctx: &str,
        f: &HashMap<&str, &Node>,
        key: &str,
    ) -> Option<i64> {
        let n = f.get(key)?;
        if n.is_null() {
            return None;
        }
        let text = n.scalar().unwrap_or("");
        match parse_duration(text) {
            Ok(ms) => Some(ms),
            Err(e) => {
                self.err(ctx, n.line, format!("{key}: {e}"));
                None
            }
        }
    }

    pub(super) fn seq<'n>(
        &mut self,
        ctx: &str,
        f: &HashMap<&str, &'n Node>,
        key: &str,
    ) -> &'n [Node] {
        match f.get(key) {
            None => &[],
            Some(n) => match n.seq(key) {
                Ok(s) => s,
                Err(_) => {
                    self.err(ctx, n.line, format!("{key}: expected a list"));
                    &[]
                }
            },
        }
    }

    pub(super) fn string_list(
        &mut self,
        ctx: &str,
        f: &HashMap<&str, &Node>,
        key: &str,
    ) -> Vec<String> {
        let items = self.seq(ctx, f, key);
        let mut out = Vec::new();
        for n in items {
            match n.scalar() {
                Some(s) => out.push(s.to_string()),
                None => self.err(ctx, n.line, format!("{key}: expected a list of strings")),
            }
        }
        out
    }

    pub(super) fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_relative() {
            self.dir.join(p)
        } else {
            p.to_path_buf()
        }
    }

    /// A secret given inline as `key` or in the file named by `key_file`.
    pub(super) fn secret(
        &mut self,
        ctx: &str,
        f: &HashMap<&str, &Node>,
        key: &str,
        key_file: &str,
    ) -> Option<Secret> {
        let inline = self.opt_string(ctx, f, key);
        let file = self.opt_string(ctx, f, key_file);
        match (inline, file) {
            (Some(_), Some(_)) => {
                let line = f.get(key_file).map_or(0, |n| n.line);
                self.err(
                    ctx,
                    line,
                    format!("at most one of {key} & {key_file} must be configured"),
                );
                None
            }
            (Some(s), None) => Some(Secret(s)),
            (None, Some(file)) => {
                let line = f.get(key_file).map_or(0, |n| n.line);
                match std::fs::read_to_string(self.path(&file)) {
                    Ok(s) => Some(Secret(s.trim().to_string())),
                    Err(e) => {
                        self.err(ctx, line, format!("{key_file}: cannot read {file:?}: {e}"));
                        None
                    }
                }
            }
            (None, None) => None,
        }
    }

    fn config(&mut self, root: &Node) -> AlertmanagerConfig {
        let f = self.fields(
            root,
            "",
            &[
                "global",
                "route",
                "receivers",
                "inhibit_rules",
                "templates",
                "silences",
            ],
            UNSUPPORTED_TOP,
        );
        if let Some(t) = f.get("templates")
            && !t.seq("templates").map(<[Node]>::is_empty).unwrap_or(false)
        {
            self.err(
                "",
                t.line,
                "templates: custom notification template files are not supported by Vigil yet; \
                 remove the list (Vigil's built-in bodies follow Alertmanager's defaults)",
            );
        }
        let global = match f.get("global") {
            Some(n) => self.global(n),
            None => Global::default(),
        };
        let receivers: Vec<Receiver> = self
            .seq("", &f, "receivers")
            .iter()
            .map(|n| self.receiver(n, &global))
            .collect();
        let route = match f.get("route") {
            Some(n) if !n.is_null() => self.route(n, None),
            _ => {
                self.err("", 0, "route: no route provided");
                AlertmanagerConfig::default_config().route
            }
        };
        let inhibit_rules = self
            .seq("", &f, "inhibit_rules")
            .iter()
            .enumerate()
            .map(|(i, n)| self.inhibit_rule(n, i))
            .collect();
        let silences = self
            .seq("", &f, "silences")
            .iter()
            .enumerate()
            .map(|(i, n)| self.silence(n, i))
            .collect();
        let cfg = AlertmanagerConfig {
            path: self.file.clone(),
            global,
            route,
            receivers,
            inhibit_rules,
            silences,
        };
        self.validate(&cfg);
        cfg
    }

    /// `matchers`, `match` and `match_re` of a route or of one side of an inhibit rule.
    fn matchers(
        &mut self,
        ctx: &str,
        f: &HashMap<&str, &Node>,
        list_key: &str,
        eq_key: &str,
        re_key: &str,
    ) -> Vec<Matcher> {
        let mut out = Vec::new();
        for n in self.seq(ctx, f, list_key) {
            let Some(text) = n.scalar() else {
                self.err(
                    ctx,
                    n.line,
                    format!("{list_key}: expected a list of strings"),
                );
                continue;
            };
            match parse_matchers(text) {
                Ok(mut ms) => out.append(&mut ms),
                Err(e) => self.err(ctx, n.line, format!("{list_key}: {e}")),
            }
        }
        for (key, kind) in [(eq_key, MatchType::Equal), (re_key, MatchType::Regexp)] {
            let Some(m) = f.get(key) else { continue };
            match m.string_map(key) {
                Ok(entries) => {
                    for (k, v) in entries {
                        let name = k.scalar().unwrap_or("");
                        if !is_valid_label_name(name) {
                            self.err(ctx, k.line, format!("{key}: invalid label name {name:?}"));
                            continue;
                        }
                        match Matcher::new(name, kind, &v) {
                            Ok(m) => out.push(m),
                            Err(e) => self.err(ctx, k.line, format!("{key}: {e}")),
                        }
                    }
                }
                Err(e) => self.err(ctx, m.line, format!("{key}: {}", e.msg)),
            }
        }
        out
    }

    fn route(&mut self, n: &Node, parent: Option<&Route>) -> Route {
        let ctx = if parent.is_none() {
            "route"
        } else {
            "route (child)"
        };
        let f = self.fields(
            n,
            ctx,
            &[
                "receiver",
                "group_by",
                "continue",
                "matchers",
                "match",
                "match_re",
                "group_wait",
                "group_interval",
                "repeat_interval",
                "routes",
            ],
            UNSUPPORTED_ROUTE,
        );
        let group_by = if f.get("group_by").is_some_and(|n| !n.is_null()) {
            let labels = self.string_list(ctx, &f, "group_by");
            let line = f.get("group_by").map_or(n.line, |n| n.line);
            if labels.iter().any(|l| l == "...") {
                if labels.len() > 1 {
                    self.err(
                        ctx,
                        line,
                        "group_by: cannot have wildcard group_by (`...`) and other labels at the same time",
                    );
                }
                GroupBy::All
            } else {
                let mut seen: Vec<&String> = Vec::new();
                for l in &labels {
                    if !is_valid_label_name(l) {
                        self.err(ctx, line, format!("group_by: invalid label name {l:?}"));
                    }
                    if seen.contains(&l) {
                        self.err(
                            ctx,
                            line,
                            format!("group_by: duplicated label {l:?} in group_by"),
                        );
                    }
                    seen.push(l);
                }
                GroupBy::Labels(labels)
            }
        } else {
            parent.map_or(GroupBy::Labels(Vec::new()), |p| p.group_by.clone())
        };
        let matchers = self.matchers(ctx, &f, "matchers", "match", "match_re");
        let timer = |p: &mut P, key: &str, inherited: i64| match p.duration(ctx, &f, key) {
            Some(0) if key != "group_wait" => {
                let line = f.get(key).map_or(n.line, |n| n.line);
                p.err(ctx, line, format!("{key} cannot be zero"));
                inherited
            }
            Some(ms) => ms,
            None => inherited,
        };
        let group_wait_ms = timer(
            self,
            "group_wait",
            parent.map_or(DEFAULT_GROUP_WAIT_MS, |p| p.group_wait_ms),
        );
        let group_interval_ms = timer(
            self,
            "group_interval",
            parent.map_or(DEFAULT_GROUP_INTERVAL_MS, |p| p.group_interval_ms),
        );
        let repeat_interval_ms = timer(
            self,
            "repeat_interval",
            parent.map_or(DEFAULT_REPEAT_INTERVAL_MS, |p| p.repeat_interval_ms),
        );
        let receiver = self
            .opt_string(ctx, &f, "receiver")
            .or_else(|| parent.map(|p| p.receiver.clone()))
            .unwrap_or_default();
        let continue_matching = self.bool(ctx, &f, "continue").unwrap_or(false);
        let mut route = Route {
            receiver,
            group_by,
            matchers,
            continue_matching,
            group_wait_ms,
            group_interval_ms,
            repeat_interval_ms,
            routes: Vec::new(),
            line: n.line,
        };
        if parent.is_none() {
            if route.receiver.is_empty() {
                self.err(
                    ctx,
                    n.line,
                    "receiver: root route must specify a default receiver",
                );
            }
            if !route.matchers.is_empty() {
                self.err(ctx, n.line, "root route must not have any matchers");
            }
            if route.continue_matching {
                self.err(ctx, n.line, "continue: cannot have continue in root route");
            }
        }
        let children: Vec<Route> = self
            .seq(ctx, &f, "routes")
            .iter()
            .map(|c| self.route(c, Some(&route)))
            .collect();
        route.routes = children;
        route
    }

    fn inhibit_rule(&mut self, n: &Node, i: usize) -> InhibitRule {
        let ctx = format!("inhibit_rules[{i}]");
        let ctx = ctx.as_str();
        let f = self.fields(
            n,
            ctx,
            &[
                "source_matchers",
                "target_matchers",
                "source_match",
                "source_match_re",
                "target_match",
                "target_match_re",
                "equal",
            ],
            &[],
        );
        let equal = self.string_list(ctx, &f, "equal");
        for l in &equal {
            if !is_valid_label_name(l) {
                let line = f.get("equal").map_or(n.line, |n| n.line);
                self.err(ctx, line, format!("equal: invalid label name {l:?}"));
            }
        }
        InhibitRule {
            source_matchers: self.matchers(
                ctx,
                &f,
                "source_matchers",
                "source_match",
                "source_match_re",
            ),
            target_matchers: self.matchers(
                ctx,
                &f,
                "target_matchers",
                "target_match",
                "target_match_re",
            ),
            equal,
            line: n.line,
        }
    }

    fn silence(&mut self, n: &Node, i: usize) -> ConfigSilence {
        let ctx = format!("silences[{i}]");
        let ctx = ctx.as_str();
        let f = self.fields(
            n,
            ctx,
            &["matchers", "starts_at", "ends_at", "created_by", "comment"],
            &[],
        );
        let matchers = self.matchers(ctx, &f, "matchers", "", "");
        if matchers.is_empty() {
            self.err(
                ctx,
                n.line,
                "matchers: a silence needs at least one matcher",
            );
        } else if matchers.iter().all(Matcher::matches_empty) {
            self.err(
                ctx,
                n.line,
                "matchers: at least one matcher must not match the empty string",
            );
        }
        let time = |p: &mut P, key: &str| -> i64 {
            let Some(t) = f.get(key) else {
                p.err(ctx, n.line, format!("{key}: missing (an RFC 3339 time)"));
                return 0;
            };
            let text = t.scalar().unwrap_or("");
            match chrono::DateTime::parse_from_rfc3339(text) {
                Ok(d) => d.timestamp_millis(),
                Err(e) => {
                    p.err(
                        ctx,
                        t.line,
                        format!("{key}: {text:?} is not an RFC 3339 time: {e}"),
                    );
                    0
                }
            }
        };
        let starts_at_ms = time(self, "starts_at");
        let ends_at_ms = time(self, "ends_at");
        if starts_at_ms != 0 && ends_at_ms != 0 && ends_at_ms <= starts_at_ms {
            self.err(ctx, n.line, "ends_at: must be after starts_at");
        }
        ConfigSilence {
            matchers,
            starts_at_ms,
            ends_at_ms,
            created_by: self
                .opt_string(ctx, &f, "created_by")
                .unwrap_or_else(|| "config".into()),
            comment: self.string(ctx, &f, "comment"),
            line: n.line,
        }
    }

    fn validate(&mut self, cfg: &AlertmanagerConfig) {
        let mut names: Vec<&str> = Vec::new();
        for r in &cfg.receivers {
            if names.contains(&r.name.as_str()) {
                self.err(
                    &format!("receiver {:?}", r.name),
                    r.line,
                    format!("name: notification config name {:?} is not unique", r.name),
                );
            }
            names.push(&r.name);
        }
        for r in &cfg.receivers {
            if let Some(fb) = &r.fallback_receiver {
                let ctx = format!("receiver {:?}", r.name);
                if fb == &r.name {
                    self.err(
                        &ctx,
                        r.line,
                        "fallback_receiver: a receiver cannot be its own fallback",
                    );
                } else if !names.contains(&fb.as_str()) {
                    self.err(
                        &ctx,
                        r.line,
                        format!("fallback_receiver: undefined receiver {fb:?}"),
                    );
                }
            }
        }
        let mut stack = vec![&cfg.route];
        while let Some(r) = stack.pop() {
            if !r.receiver.is_empty() && !names.contains(&r.receiver.as_str()) {
                self.err(
                    "route",
                    r.line,
                    format!(
                        "receiver: undefined receiver {:?} used in route",
                        r.receiver
                    ),
                );
            }
            stack.extend(r.routes.iter());
        }
    }
}
