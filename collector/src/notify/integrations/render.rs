//! What people read: Alertmanager's default subject (`[FIRING:2] GpuFellOffBus
//! gpu-node-17`), Vigil's text, HTML and Markdown bodies listing every alert (firing
//! first), RFC 3339 times as Go prints them, and the configured Go templates.
//!
//! Configured templates (`text`, `html`, header values, Slack's `title`/`text`/...)
//! run on `vigil_rules::template`, the engine of alert annotations. It has no list
//! values, so `.Alerts` (and `range` over it) cannot be offered; the data a template
//! sees is `.Receiver`, `.Status`, `.GroupLabels`, `.CommonLabels`,
//! `.CommonAnnotations`, `.ExternalURL`, `.GroupKey` and `.TruncatedAlerts`. A
//! template that uses `.Alerts`, a named template (`template`, `define`, `block`) other
//! than Alertmanager's defaults, or a function the engine lacks is refused when the
//! configuration is built, naming the construct. Alertmanager's default templates
//! (`{{ template "email.default.subject" . }}` and the like) select Vigil's built-in
//! renderings.

use std::rc::Rc;

use vigil_rules::template::{Env, Template, Val};

use crate::notify::{LabelMap, Message, MessageAlert, Status};

/// An RFC 3339 time in UTC as Go's `time.RFC3339Nano` prints it (webhook bodies).
pub fn format_time(ms: i64) -> String {
    crate::timefmt::go_rfc3339(Some(ms))
}

/// A time for people: `2026-11-27 11:03:03 UTC`.
fn human_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Firing => "firing",
        Status::Resolved => "resolved",
    }
}

/// Alertmanager's default subject (its `__subject` template): the status upper-case,
/// `:N` firing alerts when firing, the group's label values, then in parentheses the
/// values of the common labels that are not group labels.
pub fn subject(m: &Message) -> String {
    let mut s = format!("[{}", status_word(m.status).to_uppercase());
    if m.status == Status::Firing {
        s.push_str(&format!(":{}", firing_count(m)));
    }
    s.push(']');
    let group: Vec<&str> = m.group_labels.values().map(String::as_str).collect();
    if !group.is_empty() {
        s.push(' ');
        s.push_str(&group.join(" "));
    }
    if m.common_labels.len() > m.group_labels.len() {
        let rest: Vec<&str> = m
            .common_labels
            .iter()
            .filter(|(k, _)| !m.group_labels.contains_key(*k))
            .map(|(_, v)| v.as_str())
            .collect();
        s.push_str(&format!(" ({})", rest.join(" ")));
    }
    s
}

fn firing_count(m: &Message) -> usize {
    m.alerts
        .iter()
        .filter(|a| a.status == Status::Firing)
        .count()
}

/// Firing alerts first, then resolved ones, each in the message's order.
fn ordered(m: &Message) -> impl Iterator<Item = &MessageAlert> {
    let firing = m.alerts.iter().filter(|a| a.status == Status::Firing);
    let resolved = m.alerts.iter().filter(|a| a.status == Status::Resolved);
    firing.chain(resolved)
}

fn label_pairs(l: &LabelMap) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn counts_line(m: &Message) -> String {
    let firing = firing_count(m);
    let resolved = m.alerts.len() - firing;
    let mut s = format!(
        "{firing} firing, {resolved} resolved, receiver {}",
        m.receiver
    );
    if m.truncated_alerts > 0 {
        s.push_str(&format!(" ({} more not shown)", m.truncated_alerts));
    }
    s
}

/// Vigil's plain-text email body.
pub fn text_body(m: &Message) -> String {
    let mut s = format!("{}\n{}\n", subject(m), counts_line(m));
    for a in ordered(m) {
        s.push('\n');
        s.push_str(&format!(
            "[{}] {}\n",
            status_word(a.status).to_uppercase(),
            a.labels.get("alertname").map(String::as_str).unwrap_or("")
        ));
        if let Some(v) = a.annotations.get("summary") {
            s.push_str(&format!("  Summary: {v}\n"));
        }
        if let Some(v) = a.annotations.get("description") {
            s.push_str(&format!("  Description: {v}\n"));
        }
        for (k, v) in &a.annotations {
            if k != "summary" && k != "description" {
                s.push_str(&format!("  {k}: {v}\n"));
            }
        }
        s.push_str(&format!("  Labels: {}\n", label_pairs(&a.labels)));
        s.push_str(&format!("  Started: {}\n", human_time(a.starts_at_ms)));
        if let Some(end) = a.ends_at_ms {
            s.push_str(&format!("  Ended: {}\n", human_time(end)));
        }
        if !a.generator_url.is_empty() {
            s.push_str(&format!("  Source: {}\n", a.generator_url));
        }
    }
    if !m.external_url.is_empty() {
        s.push_str(&format!("\nSent by Vigil: {}\n", m.external_url));
    }
    s
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Vigil's HTML email body: one table row per alert, red for firing, green for
/// resolved.
pub fn html_body(m: &Message) -> String {
    let e = html_escape;
    let mut s = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n<body style=\"font-family:sans-serif\">\n",
    );
    s.push_str(&format!("<h2>{}</h2>\n", e(&subject(m))));
    s.push_str(&format!("<p>{}</p>\n", e(&counts_line(m))));
    s.push_str("<table cellpadding=\"6\" style=\"border-collapse:collapse\">\n");
    for a in ordered(m) {
        let (word, color) = match a.status {
            Status::Firing => ("FIRING", "#d9534f"),
            Status::Resolved => ("RESOLVED", "#5cb85c"),
        };
        s.push_str(&format!(
            "<tr><td style=\"border-left:4px solid {color}\">\n<strong>[{word}] {}</strong><br>\n",
            e(a.labels.get("alertname").map(String::as_str).unwrap_or(""))
        ));
        if let Some(v) = a.annotations.get("summary") {
            s.push_str(&format!("<b>Summary:</b> {}<br>\n", e(v)));
        }
        if let Some(v) = a.annotations.get("description") {
            s.push_str(&format!("<b>Description:</b> {}<br>\n", e(v)));
        }
        for (k, v) in &a.annotations {
            if k != "summary" && k != "description" {
                s.push_str(&format!("<b>{}:</b> {}<br>\n", e(k), e(v)));
            }
        }
        s.push_str("<b>Labels:</b><ul>\n");
        for (k, v) in &a.labels {
            s.push_str(&format!("<li>{} = {}</li>\n", e(k), e(v)));
        }
        s.push_str("</ul>\n");
        s.push_str(&format!(
            "<b>Started:</b> {}<br>\n",
            e(&human_time(a.starts_at_ms))
        ));
        if let Some(end) = a.ends_at_ms {
            s.push_str(&format!("<b>Ended:</b> {}<br>\n", e(&human_time(end))));
        }
        if !a.generator_url.is_empty() {
            s.push_str(&format!("<a href=\"{}\">Source</a>\n", e(&a.generator_url)));
        }
        s.push_str("</td></tr>\n");
    }
    s.push_str("</table>\n");
    if !m.external_url.is_empty() {
        s.push_str(&format!(
            "<p>Sent by <a href=\"{}\">Vigil</a></p>\n",
            e(&m.external_url)
        ));
    }
    s.push_str("</body></html>\n");
    s
}

/// A Markdown list of the alerts for the group robots (`**bold**`, `[text](url)`) or,
/// with `slack`, in Slack's `mrkdwn` (`*bold*`, `<url|text>`); no title (each vendor
/// has its own place for it).
pub fn markdown_alerts(m: &Message, slack: bool) -> String {
    let bold = if slack { "*" } else { "**" };
    let mut s = String::new();
    for a in ordered(m) {
        s.push_str(&format!(
            "{bold}[{}] {}{bold}",
            status_word(a.status).to_uppercase(),
            a.labels.get("alertname").map(String::as_str).unwrap_or("")
        ));
        if let Some(v) = a.annotations.get("summary") {
            s.push_str(&format!(" {v}"));
        }
        s.push('\n');
        if let Some(v) = a.annotations.get("description") {
            s.push_str(&format!("> {v}\n"));
        }
        s.push_str(&format!("> labels: {}\n", label_pairs(&a.labels)));
        s.push_str(&format!("> started: {}", human_time(a.starts_at_ms)));
        if let Some(end) = a.ends_at_ms {
            s.push_str(&format!(", ended: {}", human_time(end)));
        }
        s.push('\n');
        if !a.generator_url.is_empty() {
            if slack {
                s.push_str(&format!("> <{}|source>\n", a.generator_url));
            } else {
                s.push_str(&format!("> [source]({})\n", a.generator_url));
            }
        }
        s.push('\n');
    }
    if m.truncated_alerts > 0 {
        s.push_str(&format!("({} more alerts not shown)\n", m.truncated_alerts));
    }
    s
}

/// Vigil's built-in renderings, chosen by Alertmanager's default template names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Subject,
    Text,
    Html,
    /// Slack's title link (`__alertmanagerURL`): the external URL.
    ExternalUrl,
    /// Slack's username (`__alertmanager`).
    Vigil,
    /// Slack's color: `danger` while firing, `good` when resolved.
    Color,
    Empty,
}

fn builtin_named(name: &str) -> Option<Builtin> {
    Some(match name {
        "email.default.subject"
        | "__subject"
        | "slack.default.title"
        | "slack.default.fallback" => Builtin::Subject,
        "email.default.html" => Builtin::Html,
        "__text_alert_list" | "__text_alert_list_markdown" | "slack.default.text" => Builtin::Text,
        "slack.default.titlelink" | "__alertmanagerURL" => Builtin::ExternalUrl,
        "slack.default.username" | "__alertmanager" => Builtin::Vigil,
        "slack.default.channel"
        | "slack.default.pretext"
        | "slack.default.iconemoji"
        | "slack.default.iconurl"
        | "slack.default.footer"
        | "slack.default.callbackid" => Builtin::Empty,
        _ => return None,
    })
}

/// A configured string: literal text, one of Vigil's built-in renderings, or a Go
/// template over the message.
#[derive(Debug, Clone)]
pub enum Tmpl {
    Literal(String),
    Builtin(Builtin),
    Go(Template),
}

// `Template` holds only owned strings and numbers; the integrations holding one are
// shared between tasks.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Tmpl>();
};

impl Tmpl {
    /// Compiles `text` for the field `field` (named in errors). A template the
    /// engine cannot run for every message is refused here, naming the construct.
    pub fn compile(field: &str, text: &str) -> Result<Tmpl, String> {
        if !text.contains("{{") {
            return Ok(Tmpl::Literal(text.to_string()));
        }
        if let Some(name) = sole_template_call(text) {
            return match builtin_named(&name) {
                Some(b) => Ok(Tmpl::Builtin(b)),
                None => Err(format!(
                    "{field}: named template {name:?} is not supported (Vigil's templates have no \
                     `template`/`define`; use Alertmanager's default names or inline the text)"
                )),
            };
        }
        for action in actions(text) {
            let first = action.split_whitespace().next().unwrap_or("");
            if matches!(first, "template" | "define" | "block") {
                return Err(format!(
                    "{field}: `{{{{ {first} }}}}` (named templates) is not supported by Vigil's \
                     template engine"
                ));
            }
            if mentions_field(action, "Alerts") {
                return Err(format!(
                    "{field}: `.Alerts` is not supported by Vigil's template engine (no list \
                     values); use .CommonLabels, .CommonAnnotations, .GroupLabels, .Status or \
                     the default body, which lists every alert"
                ));
            }
        }
        let t = Template::parse(field, text).map_err(|e| format!("{field}: {e}"))?;
        for status in [Status::Firing, Status::Resolved] {
            let probe = probe_message(status);
            execute(&t, &probe).map_err(|e| format!("{field}: {e}"))?;
        }
        Ok(Tmpl::Go(t))
    }

    /// The text for `m`.
    pub fn render(&self, m: &Message) -> Result<String, String> {
        match self {
            Tmpl::Literal(s) => Ok(s.clone()),
            Tmpl::Builtin(Builtin::Subject) => Ok(subject(m)),
            Tmpl::Builtin(Builtin::Text) => Ok(markdown_alerts(m, true)),
            Tmpl::Builtin(Builtin::Html) => Ok(html_body(m)),
            Tmpl::Builtin(Builtin::ExternalUrl) => Ok(m.external_url.clone()),
            Tmpl::Builtin(Builtin::Vigil) => Ok("Vigil".to_string()),
            Tmpl::Builtin(Builtin::Color) => Ok(match m.status {
                Status::Firing => "danger".to_string(),
                Status::Resolved => "good".to_string(),
            }),
            Tmpl::Builtin(Builtin::Empty) => Ok(String::new()),
            Tmpl::Go(t) => execute(t, m),
        }
    }
}

fn execute(t: &Template, m: &Message) -> Result<String, String> {
    let env = Env {
        t_ms: chrono::Utc::now().timestamp_millis(),
        external_url: &m.external_url,
        query: None,
    };
    t.execute(&data(m), &env).map_err(|e| e.to_string())
}

/// The template data of a message (Alertmanager's `template.Data`, without `.Alerts`).
fn data(m: &Message) -> Val {
    let map = |l: &LabelMap| Val::Map(Rc::new(l.clone()));
    Val::Struct(Rc::new(vec![
        ("Receiver".into(), Val::Str(m.receiver.clone())),
        ("Status".into(), Val::Str(status_word(m.status).into())),
        ("GroupLabels".into(), map(&m.group_labels)),
        ("CommonLabels".into(), map(&m.common_labels)),
        ("CommonAnnotations".into(), map(&m.common_annotations)),
        ("ExternalURL".into(), Val::Str(m.external_url.clone())),
        ("GroupKey".into(), Val::Str(m.group_key.clone())),
        (
            "TruncatedAlerts".into(),
            Val::Int(i64::try_from(m.truncated_alerts).unwrap_or(i64::MAX)),
        ),
    ]))
}

/// A message with every field set, to run a template once when it is configured.
fn probe_message(status: Status) -> Message {
    let labels: LabelMap = [("alertname", "Probe"), ("instance", "node-1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let annotations: LabelMap = [("summary", "probe")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Message {
        receiver: "probe".into(),
        status,
        alerts: vec![MessageAlert {
            status,
            labels: labels.clone(),
            annotations: annotations.clone(),
            starts_at_ms: 0,
            ends_at_ms: (status == Status::Resolved).then_some(1000),
            generator_url: String::new(),
            fingerprint: format!("{:016x}", crate::notify::fingerprint(&labels)),
        }],
        group_labels: labels.clone(),
        common_labels: labels,
        common_annotations: annotations,
        external_url: "http://vigil.invalid".into(),
        group_key: "{}:{}".into(),
        truncated_alerts: 0,
    }
}

/// The insides of the `{{ ... }}` actions of `text`, trim markers removed.
fn actions(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else { break };
        let inner = after[..j].trim_start_matches('-').trim_end_matches('-');
        out.push(inner.trim());
        rest = &after[j + 2..];
    }
    out
}

/// `NAME` when `text` is exactly `{{ template "NAME" . }}`.
fn sole_template_call(text: &str) -> Option<String> {
    let t = text.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.trim_start_matches('-').trim_end_matches('-').trim();
    let rest = inner.strip_prefix("template")?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    let name = &rest[..end];
    (rest[end + 1..].trim() == ".").then(|| name.to_string())
}

/// Whether an action reads the field `name` (`.Alerts`, `$.Alerts`, `(...).Alerts`),
/// outside string literals.
fn mentions_field(action: &str, name: &str) -> bool {
    let mut in_str = false;
    let b = action.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => in_str = !in_str,
            b'\\' if in_str => i += 1,
            b'.' if !in_str => {
                let rest = &action[i + 1..];
                if rest.starts_with(name)
                    && !rest[name.len()..]
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_')
                {
                    return true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lm(pairs: &[(&str, &str)]) -> LabelMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn alert(status: Status, name: &str, node: &str) -> MessageAlert {
        let labels = lm(&[
            ("alertname", name),
            ("instance", node),
            ("severity", "page"),
        ]);
        MessageAlert {
            status,
            fingerprint: format!("{:016x}", crate::notify::fingerprint(&labels)),
            labels,
            annotations: lm(&[
                ("summary", "GPU fell off the bus"),
                ("description", "Xid 79 <&>"),
            ]),
            starts_at_ms: 1_795_000_000_123,
            ends_at_ms: (status == Status::Resolved).then_some(1_795_000_060_000),
            generator_url: "http://vigil:9436/graph?g0.expr=x&g0.tab=1".into(),
        }
    }

    fn message() -> Message {
        Message {
            receiver: "team-gpu".into(),
            status: Status::Firing,
            alerts: vec![
                alert(Status::Resolved, "GpuFellOffBus", "gpu-node-17"),
                alert(Status::Firing, "GpuFellOffBus", "gpu-node-17"),
                alert(Status::Firing, "GpuFellOffBus", "gpu-node-17"),
            ],
            group_labels: lm(&[("alertname", "GpuFellOffBus"), ("instance", "gpu-node-17")]),
            common_labels: lm(&[
                ("alertname", "GpuFellOffBus"),
                ("instance", "gpu-node-17"),
                ("severity", "page"),
            ]),
            common_annotations: lm(&[("summary", "GPU fell off the bus")]),
            external_url: "http://vigil:9436".into(),
            group_key: "{}:{alertname=\"GpuFellOffBus\"}".into(),
            truncated_alerts: 0,
        }
    }

    #[test]
    fn times_print_as_go_rfc3339nano() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_795_000_000_500), "2026-11-18T11:06:40.5Z");
        assert_eq!(format_time(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(format_time(1_795_000_000_120), "2026-11-18T11:06:40.12Z");
    }

    #[test]
    fn subject_is_alertmanagers_default() {
        let mut m = message();
        assert_eq!(subject(&m), "[FIRING:2] GpuFellOffBus gpu-node-17 (page)");
        m.common_labels.remove("severity");
        assert_eq!(subject(&m), "[FIRING:2] GpuFellOffBus gpu-node-17");
        m.status = Status::Resolved;
        assert_eq!(subject(&m), "[RESOLVED] GpuFellOffBus gpu-node-17");
    }

    #[test]
    fn bodies_list_firing_first_and_escape_html() {
        let m = message();
        let text = text_body(&m);
        let first_firing = text.find("[FIRING] GpuFellOffBus").unwrap();
        let first_resolved = text.find("[RESOLVED] GpuFellOffBus").unwrap();
        assert!(first_firing < first_resolved, "{text}");
        assert!(text.contains("Description: Xid 79 <&>"));
        assert!(text.contains("Ended: 2026-11-18 11:07:40 UTC"));
        let html = html_body(&m);
        assert!(html.contains("Xid 79 &lt;&amp;&gt;"), "{html}");
        assert!(html.contains("href=\"http://vigil:9436/graph?g0.expr=x&amp;g0.tab=1\""));
        assert_eq!(html.matches("[FIRING]").count(), 2);
    }

    #[test]
    fn templates_run_over_the_message() {
        let m = message();
        let t = Tmpl::compile(
            "subject",
            "{{ .Status | toUpper }} {{ .GroupLabels.alertname }} on {{ .CommonLabels.instance }} ({{ .Receiver }})",
        )
        .unwrap();
        assert_eq!(
            t.render(&m).unwrap(),
            "FIRING GpuFellOffBus on gpu-node-17 (team-gpu)"
        );
        let t = Tmpl::compile(
            "color",
            "{{ if eq .Status \"firing\" }}danger{{ else }}good{{ end }}",
        )
        .unwrap();
        assert_eq!(t.render(&m).unwrap(), "danger");
        let t = Tmpl::compile("Subject", "{{ template \"email.default.subject\" . }}").unwrap();
        assert_eq!(t.render(&m).unwrap(), subject(&m));
        assert!(matches!(
            Tmpl::compile("x", "plain").unwrap(),
            Tmpl::Literal(_)
        ));
    }

    #[test]
    fn unsupported_constructs_are_named() {
        let e = Tmpl::compile("text", "{{ range .Alerts }}{{ .Labels }}{{ end }}").unwrap_err();
        assert!(e.contains("`.Alerts` is not supported"), "{e}");
        let e = Tmpl::compile("text", "{{ len $.Alerts.Firing }}").unwrap_err();
        assert!(e.contains("`.Alerts`"), "{e}");
        let e = Tmpl::compile("html", "{{ template \"mine\" . }}").unwrap_err();
        assert!(e.contains("named template \"mine\""), "{e}");
        let e = Tmpl::compile("html", "a {{ define \"x\" }}b{{ end }}").unwrap_err();
        assert!(e.contains("define"), "{e}");
        let e = Tmpl::compile("html", "{{ .GroupLabels.SortedPairs.Values | join \" \" }}")
            .unwrap_err();
        assert!(e.contains("join"), "{e}");
        // A string that merely says ".Alerts" is fine.
        assert!(Tmpl::compile("x", "{{ \"see .Alerts\" }}").is_ok());
        // A field the data lacks fails when configured, not when sending.
        let e = Tmpl::compile("x", "{{ .Nope }}").unwrap_err();
        assert!(e.contains("Nope"), "{e}");
    }
}
