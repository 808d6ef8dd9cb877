//! Per-rule checks, in the order and words of Prometheus's `rulefmt.RuleNode.Validate`,
//! plus the checks on Vigil's `recovery:` block.

use crate::promql;
use crate::rulefile::{RawRule, check_template, is_valid_label_name, is_valid_metric_name};

type Pos = Option<(usize, usize)>;

/// Every problem with one rule, each with the position of the node it concerns.
pub(crate) fn validate_rule(r: &RawRule) -> Vec<(Pos, String)> {
    let mut out: Vec<(Pos, String)> = Vec::new();
    let record = r.record.as_ref().filter(|a| !a.value.is_empty());
    let alert = r.alert.as_ref().filter(|a| !a.value.is_empty());
    let rule_pos = Some((r.line, 1));
    match (record, alert) {
        (Some(rec), Some(_)) => out.push((
            Some(rec.pos),
            "only one of 'record' and 'alert' must be set".into(),
        )),
        (None, None) => out.push((rule_pos, "one of 'record' or 'alert' must be set".into())),
        _ => {}
    }
    match r.expr.as_ref().filter(|e| !e.value.is_empty()) {
        None => out.push((rule_pos, "field 'expr' must be set in rule".into())),
        Some(e) => {
            if let Err(err) = promql::parse(&e.value) {
                out.push((Some(e.pos), format!("could not parse expression: {err}")));
            }
        }
    }
    if let Some(rec) = record {
        if !r.annotations.is_empty() {
            out.push((
                Some(rec.pos),
                "invalid field 'annotations' in recording rule".into(),
            ));
        }
        if r.for_ms.as_ref().is_some_and(|d| d.value != 0) {
            out.push((
                Some(rec.pos),
                "invalid field 'for' in recording rule".into(),
            ));
        }
        if r.keep_firing_for_ms.as_ref().is_some_and(|d| d.value != 0) {
            out.push((
                Some(rec.pos),
                "invalid field 'keep_firing_for' in recording rule".into(),
            ));
        }
        if !is_valid_metric_name(&rec.value) {
            out.push((
                Some(rec.pos),
                format!("invalid recording rule name: {}", rec.value),
            ));
        }
        if r.recovery.is_some() {
            out.push((
                Some(rec.pos),
                "invalid field 'recovery' in recording rule: only alerts trigger recovery".into(),
            ));
        }
    }
    for (k, _) in &r.labels {
        if !is_valid_label_name(&k.value) || k.value == promql::METRIC_NAME {
            out.push((Some(k.pos), format!("invalid label name: {}", k.value)));
        }
    }
    for (k, _) in &r.annotations {
        if !is_valid_label_name(&k.value) {
            out.push((Some(k.pos), format!("invalid annotation name: {}", k.value)));
        }
    }
    if let Some(a) = alert {
        for (k, v) in &r.labels {
            if let Err(e) = check_template(&a.value, &v.value) {
                out.push((Some(v.pos), format!("label {:?}: {e}", k.value)));
            }
        }
        for (k, v) in &r.annotations {
            if let Err(e) = check_template(&a.value, &v.value) {
                out.push((Some(v.pos), format!("annotation {:?}: {e}", k.value)));
            }
        }
    }
    if let Some(rec) = &r.recovery {
        match &rec.value.script {
            None => out.push((Some(rec.pos), "recovery: field 'script' must be set".into())),
            Some(s) => {
                if let Err(why) = check_script_name(&s.value) {
                    out.push((
                        Some(s.pos),
                        format!("recovery: invalid script {:?}: {why}", s.value),
                    ));
                }
            }
        }
        for l in &rec.value.args_from_labels {
            if !is_valid_label_name(&l.value) || l.value.starts_with("__") {
                out.push((
                    Some(l.pos),
                    format!(
                        "recovery: invalid label name in args_from_labels: {:?}",
                        l.value
                    ),
                ));
            }
        }
    }
    out
}

/// A recovery script is a plain file name inside the agent's recovery directory: the
/// agent resolves it there and nowhere else, so anything that could walk out of that
/// directory or be mistaken for an option is refused here already.
pub fn check_script_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty name");
    }
    if s == "." || s == ".." {
        return Err("not a file name");
    }
    if s.contains('/') || s.contains('\\') {
        return Err("must be a plain file name without slashes");
    }
    if s.starts_with('-') {
        return Err("must not start with '-'");
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain whitespace or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::rulefile::parse_rule_file;
    use std::path::Path;

    fn errors(text: &str) -> Vec<String> {
        match parse_rule_file(Path::new("f.yml"), text) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn prometheus_checks_with_positions() {
        let e = errors("groups:\n- name: g\n  rules:\n  - record: a\n    alert: b\n    expr: up\n");
        assert_eq!(
            e,
            vec![
                "f.yml: 4:13: group \"g\", rule 1, \"b\": only one of 'record' and 'alert' must be set"
            ]
        );
        let e =
            errors("groups:\n- name: g\n  rules:\n  - record: 'a{b}'\n    expr: up\n    for: 5m\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("invalid field 'for' in recording rule"));
        assert!(e[1].contains("invalid recording rule name: a{b}"));
        let e = errors(
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up +\n    labels:\n      0bad: x\n",
        );
        assert!(
            e[0].starts_with(
                "f.yml: 5:11: group \"g\", rule 1, \"A\": could not parse expression:"
            ),
            "{e:?}"
        );
        assert!(e[1].contains("invalid label name: 0bad"));
        let e = errors("groups:\n- name: g\n  rules: []\n- name: g\n  rules: []\n");
        assert_eq!(
            e,
            vec!["f.yml: 4:9: groupname: \"g\" is repeated in the same file"]
        );
    }

    #[test]
    fn unknown_fields_listed_like_go() {
        let e = errors(
            "groups:\n- name: g\n  owner: x\n  rules:\n  - alert: A\n    expr: up\n    severity: x\n",
        );
        assert_eq!(
            e,
            vec![
                "f.yml: yaml: unmarshal errors:\n  line 3: field owner not found in type rulefmt.RuleGroup\n  line 7: field severity not found in type rulefmt.RuleNode"
            ]
        );
    }

    #[test]
    fn recovery_block() {
        let ok = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    recovery:\n      script: reset-gpu\n      args_from_labels: [gpu, UUID]\n";
        let f = parse_rule_file(Path::new("f.yml"), ok).unwrap();
        let rec = f.groups[0].rules[0].recovery.clone().unwrap();
        assert_eq!(rec.script, "reset-gpu");
        assert_eq!(rec.args_from_labels, vec!["gpu", "UUID"]);
        let bad = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    recovery:\n      script: ../../bin/sh\n      args_from_labels: [\"a-b\"]\n      shell: x\n";
        let e = errors(bad);
        assert!(
            e[0].contains("field shell not found in type vigil.Recovery"),
            "{e:?}"
        );
        let bad = bad.replace("      shell: x\n", "");
        let e = errors(&bad);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains(
            "7:15: group \"g\", rule 1, \"A\": recovery: invalid script \"../../bin/sh\""
        ));
        assert!(e[1].contains("invalid label name in args_from_labels: \"a-b\""));
        let e = errors(
            "groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n    recovery: {script: x}\n",
        );
        assert!(e[0].contains("only alerts trigger recovery"));
    }

    #[test]
    fn template_errors_name_the_annotation() {
        let e = errors(
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    annotations:\n      summary: '{{ $label.x }}'\n",
        );
        assert_eq!(
            e,
            vec![
                "f.yml: 7:16: group \"g\", rule 1, \"A\": annotation \"summary\": template: __alert_A:1: undefined variable \"$label\""
            ]
        );
    }
}
