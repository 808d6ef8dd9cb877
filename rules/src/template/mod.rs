//! Alert label and annotation templates in Go's text/template syntax, as Prometheus
//! users write them: `{{ $labels.instance }}`, `{{ $value | humanize }}`,
//! `{{ if gt $value 90.0 }}...{{ else }}...{{ end }}`, `printf "%.2f"`, and the
//! Prometheus function map (humanize*, title, reReplaceAll, match, query, ...).
//!
//! `query` needs a store: the caller passes a callback in [`Env`]; without one the
//! template fails with an error saying so, as an annotation expands to
//! `<error expanding template: ...>` in Prometheus when a function fails.
//!
//! # Layout
//! - `lex`, `parse`: lexer and parser (parse-time errors worded as Go words them).
//! - `exec`: the executor and the [`Val`] type.
//! - `funcs`: the function map; `humanize`: the humanize* functions and Go's time
//!   and duration printing.
//! - `gofmt`: Go's float printing and `Sprintf`.

mod exec;
mod funcs;
mod gofmt;
mod humanize;
mod lex;
mod parse;

use std::collections::BTreeMap;
use std::rc::Rc;

pub use exec::Val;
pub use gofmt::{float_v as format_go_float, format_float, quote as go_quote, sprintf};
pub use humanize::{go_duration_string, go_time_string, humanize, humanize_duration, humanize1024};

/// A template that failed to parse or execute; the message is Go's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// One sample of a `query` result, as templates see it (`.Labels`, `.Value`).
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Runs a PromQL query for the `query` function.
pub type QueryFn<'a> = &'a dyn Fn(&str) -> Result<Vec<QuerySample>, String>;

/// What a template can reach besides its data.
#[derive(Clone, Copy, Default)]
pub struct Env<'a> {
    /// Evaluation time, for `now`.
    pub t_ms: i64,
    pub external_url: &'a str,
    pub query: Option<QueryFn<'a>>,
}

/// The variables Prometheus defines before every alert template.
const ALERT_DEFS: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    items: Vec<parse::Item>,
}

impl Template {
    /// Parses `text` under `name` (used in error messages).
    pub fn parse(name: &str, text: &str) -> Result<Template, TemplateError> {
        let items = parse::Parser::parse(name, text, &funcs::exists)?;
        Ok(Template {
            name: name.to_string(),
            items,
        })
    }

    /// Parses an alert's label or annotation template the way Prometheus does: named
    /// `__alert_<alertname>`, with `$labels`, `$externalLabels`, `$externalURL` and
    /// `$value` defined.
    pub fn parse_alert(alert_name: &str, text: &str) -> Result<Template, TemplateError> {
        Template::parse(
            &format!("__alert_{alert_name}"),
            &format!("{ALERT_DEFS}{text}"),
        )
    }

    /// Whether the output depends on nothing but the data and the external URL: no
    /// `query` (the store) and no `now` (the evaluation time). Such a template, run
    /// again on the same data, prints the same text.
    pub fn reads_only_data(&self) -> bool {
        fn pipe_ok(p: &parse::Pipe) -> bool {
            p.cmds.iter().flat_map(|c| &c.args).all(|a| match a {
                parse::Arg::Func(f) => f != "query" && f != "now",
                parse::Arg::Sub(p, _) => pipe_ok(p),
                _ => true,
            })
        }
        fn items_ok(items: &[parse::Item]) -> bool {
            items.iter().all(|i| match i {
                parse::Item::Text(_) => true,
                parse::Item::Action(p) => pipe_ok(p),
                parse::Item::If { pipe, then, els } | parse::Item::With { pipe, then, els } => {
                    pipe_ok(pipe) && items_ok(then) && items_ok(els)
                }
                parse::Item::Range { pipe, body, els } => {
                    pipe_ok(pipe) && items_ok(body) && items_ok(els)
                }
            })
        }
        items_ok(&self.items)
    }

    /// Executes the template with `data` as dot.
    pub fn execute(&self, data: &Val, env: &Env<'_>) -> Result<String, TemplateError> {
        let mut ex = exec::Exec {
            name: &self.name,
            env,
            vars: vec![("$".into(), data.clone())],
            out: String::new(),
        };
        ex.run(&self.items, data)?;
        Ok(ex.out)
    }
}

/// The data an alert template sees: `.Labels`, `.ExternalLabels`, `.ExternalURL`,
/// `.Value`.
pub fn alert_data<'a>(
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    external_labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    external_url: &str,
    value: f64,
) -> Val {
    Val::Struct(Rc::new(vec![
        ("Labels".into(), funcs::label_map(labels)),
        ("ExternalLabels".into(), funcs::label_map(external_labels)),
        ("ExternalURL".into(), Val::Str(external_url.to_string())),
        ("Value".into(), Val::Float(value)),
    ]))
}

/// Expands an alert template as Prometheus's alerting rule does: a template that fails
/// to parse or run yields `<error expanding template: ...>` instead of failing the rule.
pub fn expand_alert(alert_name: &str, text: &str, data: &Val, env: &Env<'_>) -> String {
    expand_parsed(
        &Template::parse_alert(alert_name, text),
        alert_name,
        data,
        env,
    )
}

/// [`expand_alert`] for a template parsed once up front, with Prometheus's wording of
/// both failure kinds.
pub fn expand_parsed(
    parsed: &Result<Template, TemplateError>,
    alert_name: &str,
    data: &Val,
    env: &Env<'_>,
) -> String {
    let name = format!("__alert_{alert_name}");
    let result = match parsed {
        Err(e) => Err(format!("error parsing template {name}: {e}")),
        Ok(t) => t
            .execute(data, env)
            .map_err(|e| format!("error executing template {name}: {e}")),
    };
    match result {
        Ok(s) => s,
        Err(e) => format!("<error expanding template: {e}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(value: f64) -> Val {
        alert_data(
            [
                ("instance", "gpu-node-7:9435"),
                ("gpu", "3"),
                ("job", "vigil"),
            ],
            [("cluster", "east")],
            "http://vigil:9436",
            value,
        )
    }

    fn x(text: &str, value: f64) -> String {
        expand_alert("A", text, &data(value), &Env::default())
    }

    #[test]
    fn variables_fields_and_pipelines() {
        assert_eq!(
            x("Instance {{ $labels.instance }} down", 1.0),
            "Instance gpu-node-7:9435 down"
        );
        assert_eq!(
            x(
                "{{ .Labels.gpu }}/{{ $externalLabels.cluster }}/{{ $externalURL }}",
                1.0
            ),
            "3/east/http://vigil:9436"
        );
        assert_eq!(x("{{ $value }}", 1e6), "1e+06");
        assert_eq!(x("{{ .Value }}", 0.25), "0.25");
        assert_eq!(x("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(x("{{ $value | humanizePercentage }}", 0.8734), "87.34%");
        assert_eq!(x("{{ humanizeDuration $value }}", 3725.0), "1h 2m 5s");
        assert_eq!(x("{{ printf \"%.2f\" $value }}", 93.456), "93.46");
        assert_eq!(x("{{ $labels.missing }}|", 1.0), "|");
        assert_eq!(
            x("{{ $labels.job | toUpper | printf \"%s!\" }}", 1.0),
            "VIGIL!"
        );
        assert_eq!(
            x("{{ reReplaceAll \":.*\" \"\" $labels.instance }}", 1.0),
            "gpu-node-7"
        );
        assert_eq!(x("{{ title \"hello world\" }}", 1.0), "Hello World");
        assert_eq!(
            x("{{ humanizeTimestamp 1435065584.128 }}", 1.0),
            "2015-06-23 13:19:44.128 +0000 UTC"
        );
    }

    #[test]
    fn control_flow_and_trimming() {
        let t = "{{ if gt $value 90.0 }}hot{{ else if gt $value 80.0 }}warm{{ else }}ok{{ end }}";
        assert_eq!(x(t, 95.0), "hot");
        assert_eq!(x(t, 85.0), "warm");
        assert_eq!(x(t, 10.0), "ok");
        assert_eq!(x("a  {{- if true -}}  b  {{- end -}}  c", 1.0), "abc");
        assert_eq!(
            x("{{ with $labels.gpu }}GPU {{ . }}{{ end }}", 1.0),
            "GPU 3"
        );
        assert_eq!(
            x("{{ with $labels.nope }}x{{ else }}none{{ end }}", 1.0),
            "none"
        );
        assert_eq!(
            x(
                "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
                1.0
            ),
            "gpu=3;instance=gpu-node-7:9435;job=vigil;"
        );
        assert_eq!(x("{{/* a comment */}}x{{ $y := 2 }}{{ $y }}", 1.0), "x2");
        assert_eq!(
            x("{{ if match \"^gpu\" $labels.instance }}yes{{ end }}", 1.0),
            "yes"
        );
        assert_eq!(
            x(
                "{{ if and (eq $labels.gpu \"3\") (not false) }}ok{{ end }}",
                1.0
            ),
            "ok"
        );
    }

    #[test]
    fn errors_like_go() {
        let e =
            Template::parse_alert("InstanceDown", "Instance {{ $label.foo }} down").unwrap_err();
        assert_eq!(
            e.to_string(),
            "template: __alert_InstanceDown:1: undefined variable \"$label\""
        );
        let e = Template::parse_alert("A", "{{ nosuch 1 }}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "template: __alert_A:1: function \"nosuch\" not defined"
        );
        assert!(Template::parse_alert("A", "{{ if true }}x").is_err());
        assert!(
            Template::parse_alert("A", "x\n{{ end }}")
                .unwrap_err()
                .to_string()
                .contains(":2:")
        );
        assert_eq!(
            x("{{ gt $value 80 }}", 1.0),
            "<error expanding template: error executing template __alert_A: template: __alert_A:1:115: \
             executing \"__alert_A\" at <gt $value 80>: error calling gt: incompatible types for comparison>"
        );
        assert!(
            x("{{ $labels.x", 1.0)
                .starts_with("<error expanding template: error parsing template __alert_A: ")
        );
        assert!(x("{{ query \"up\" }}", 1.0).contains("query is not available"));
    }

    #[test]
    fn reads_only_data_spots_query_and_now() {
        let pure = |text: &str| Template::parse_alert("A", text).unwrap().reads_only_data();
        assert!(pure(
            "{{ $labels.gpu }} at {{ $value | humanize }} ({{ externalURL }})"
        ));
        assert!(!pure(
            "{{ with query \"up\" }}{{ . | first | value }}{{ end }}"
        ));
        assert!(!pure(
            "{{ if gt $value 1.0 }}{{ (now | humanizeTimestamp) }}{{ end }}"
        ));
        assert!(!pure("{{ range $i := (query \"up\") }}x{{ end }}"));
    }

    #[test]
    fn query_through_callback() {
        let q = |expr: &str| -> Result<Vec<QuerySample>, String> {
            assert_eq!(expr, "up");
            Ok(vec![QuerySample {
                labels: [("job".to_string(), "a".to_string())].into(),
                value: 0.5,
            }])
        };
        let env = Env {
            t_ms: 0,
            external_url: "",
            query: Some(&q),
        };
        let out = expand_alert(
            "A",
            "{{ with query \"up\" }}{{ . | first | value }} {{ range . }}{{ .Labels.job }}{{ end }}{{ end }}",
            &data(1.0),
            &env,
        );
        assert_eq!(out, "0.5 a");
    }
}
