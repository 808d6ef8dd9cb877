//! One promtool test group: load the input series, evaluate the rule groups step by
//! step, compare firing alerts and PromQL results, word failures as promtool does.

use std::path::PathBuf;

use super::model::{AlertTest, TestGroup};
use super::series::{expand_values, is_histogram_values, parse_metric};
use crate::alerting::AlertState;
use crate::duration::format_duration;
use crate::group::{Group, GroupOptions};
use crate::promql::{Engine, EngineOptions, Labels, MemoryStorage, Value};
use crate::template::{format_float, go_duration_string, go_quote};

pub(crate) struct Setup<'a> {
    pub eval_interval_ms: i64,
    pub order: &'a [String],
    pub rule_files: &'a [PathBuf],
    pub fuzzy: bool,
}

#[derive(Default)]
pub(crate) struct GroupOutcome {
    pub errors: Vec<String>,
    pub skipped: usize,
}

/// Go's `labels.Labels.String()`: `{a="b", c="d"}` with `__name__` as a label.
fn go_labels(pairs: &[(String, String)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn pairs_of(l: &Labels) -> Vec<(String, String)> {
    l.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// promtool's `indentLines`.
fn indent_lines(lines: &str, indent: &str) -> String {
    lines
        .split('\n')
        .collect::<Vec<_>>()
        .join(&format!("\n{indent}"))
}

type LabelsAndAnnotations = Vec<(Vec<(String, String)>, Vec<(String, String)>)>;

fn la_string(la: &LabelsAndAnnotations) -> String {
    if la.is_empty() {
        return "[]".into();
    }
    let mut s = String::from("[\n");
    for (i, (l, a)) in la.iter().enumerate() {
        if i > 0 {
            s.push_str(",\n");
        }
        let one = format!("\nLabels:{}\nAnnotations:{}", go_labels(l), go_labels(a));
        s.push_str(&format!("{i}:{}", indent_lines(&one, "  ")));
    }
    s.push_str("\n]");
    s
}

fn samples_string(v: &[(Vec<(String, String)>, f64)]) -> String {
    if v.is_empty() {
        return "nil".into();
    }
    v.iter()
        .map(|(l, x)| format!("{} {}", go_labels(l), format_float(*x, 'E', -1)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// True when `expr` mentions `name` as a whole identifier.
fn mentions(expr: &str, name: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    expr.match_indices(name).any(|(i, _)| {
        let before = expr[..i].chars().next_back();
        let after = expr[i + name.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

fn floats_equal(a: f64, b: f64, fuzzy: bool) -> bool {
    if a == b || (a.is_nan() && b.is_nan()) {
        return true;
    }
    fuzzy && ((a - b).abs() <= 1e-6 * a.abs().max(b.abs()))
}

pub(crate) fn run_group(tg: &TestGroup, setup: &Setup<'_>) -> GroupOutcome {
    let mut out = GroupOutcome::default();
    let interval = tg.interval_ms.unwrap_or(setup.eval_interval_ms);
    let start = tg.start_ms;

    // Input series, in time order, loaded as evaluation time reaches them.
    let mut inputs: Vec<(i64, Labels, f64)> = Vec::new();
    let mut histogram_series: Vec<String> = Vec::new();
    for s in &tg.input_series {
        let labels = match parse_metric(&s.series) {
            Ok(l) => l,
            Err(e) => {
                out.errors.push(e.to_string());
                return out;
            }
        };
        if is_histogram_values(&s.values) {
            histogram_series.push(labels.name().unwrap_or_default().to_string());
            continue;
        }
        match expand_values(&s.values) {
            Ok(vals) => {
                for (i, v) in vals.into_iter().enumerate() {
                    if let Some(v) = v {
                        inputs.push((start + i as i64 * interval, labels.clone(), v));
                    }
                }
            }
            Err(e) => {
                out.errors.push(e.to_string());
                return out;
            }
        }
    }
    inputs.sort_by_key(|x| x.0);

    let opts = GroupOptions {
        default_interval_ms: interval,
        external_labels: tg.external_labels.clone(),
        external_url: tg.external_url.clone(),
        restore_for_state: false,
        ..GroupOptions::default()
    };
    let mut groups: Vec<Group> = Vec::new();
    for path in setup.rule_files {
        match crate::rulefile::load_file(path) {
            Ok(f) => groups.extend(f.groups.iter().map(|g| Group::new(path.clone(), g, &opts))),
            Err(errs) => {
                out.errors.extend(errs.iter().map(ToString::to_string));
                return out;
            }
        }
    }
    // promtool orders only the groups it was told about; the rest count as position 0.
    let rank = |g: &Group| setup.order.iter().position(|n| *n == g.name).unwrap_or(0);
    groups.sort_by_key(rank);

    for a in &tg.alert_rule_tests {
        if a.alertname.is_empty() {
            let in_group = if tg.name.is_empty() {
                String::new()
            } else {
                format!(" (in TestGroup {})", tg.name)
            };
            out.errors.push(format!(
                "an item under alert_rule_test misses required attribute alertname at eval_time {}{in_group}",
                format_duration(a.eval_time_ms)
            ));
            return out;
        }
    }
    let mut alert_times: Vec<i64> = tg.alert_rule_tests.iter().map(|a| a.eval_time_ms).collect();
    alert_times.sort_unstable();
    alert_times.dedup();
    let max_eval = tg
        .alert_rule_tests
        .iter()
        .map(|a| a.eval_time_ms)
        .chain(tg.promql_expr_tests.iter().map(|p| p.eval_time_ms))
        .max()
        .unwrap_or(0);

    let engine = Engine::new(EngineOptions {
        default_subquery_step_ms: setup.eval_interval_ms,
        ..EngineOptions::default()
    });
    let mut storage = MemoryStorage::new();
    let mut next_input = 0;
    let mut curr = 0;
    let mut ts = start;
    while ts <= start + max_eval {
        while next_input < inputs.len() && inputs[next_input].0 <= ts {
            let (t, l, v) = &inputs[next_input];
            storage.add(l.clone(), *t, *v);
            next_input += 1;
        }
        let mut eval_errs = Vec::new();
        for g in &mut groups {
            let res = g.eval(&engine, &storage, ts);
            for s in res.samples {
                storage.add(s.labels, s.t_ms, s.v);
            }
            for e in res.errors {
                eval_errs.push(format!(
                    "    rule: {}, time: {}, err: {}",
                    e.rule,
                    go_duration_string(ts.saturating_mul(1_000_000)),
                    e.error
                ));
            }
        }
        if !eval_errs.is_empty() {
            out.errors.extend(eval_errs);
            return out;
        }
        while curr < alert_times.len()
            && ts - start <= alert_times[curr]
            && alert_times[curr] < ts - start + setup.eval_interval_ms
        {
            let t = alert_times[curr];
            for case in tg.alert_rule_tests.iter().filter(|a| a.eval_time_ms == t) {
                if let Some(e) = check_alerts(case, &groups, &tg.name) {
                    out.errors.push(e);
                }
            }
            curr += 1;
        }
        ts += setup.eval_interval_ms;
    }

    for case in &tg.promql_expr_tests {
        if case.exp_samples.iter().any(|s| s.histogram.is_some())
            || histogram_series.iter().any(|n| mentions(&case.expr, n))
        {
            out.skipped += 1;
            continue;
        }
        let when = format_duration(case.eval_time_ms);
        let got = crate::promql::parse(&case.expr)
            .map_err(|e| e.to_string())
            .and_then(|expr| {
                engine
                    .instant(&storage, &expr, start + case.eval_time_ms)
                    .map_err(|e| e.to_string())
            })
            .and_then(|v| match v {
                Value::Vector(v) => Ok(v
                    .into_iter()
                    .map(|s| (pairs_of(&s.labels), s.v))
                    .collect::<Vec<_>>()),
                Value::Scalar { v, .. } => Ok(vec![(Vec::new(), v)]),
                _ => Err("rule result is not a vector or scalar".to_string()),
            });
        let mut got = match got {
            Ok(g) => g,
            Err(e) => {
                out.errors.push(format!(
                    "    expr: {}, time: {when}, err: {e}",
                    go_quote(&case.expr)
                ));
                continue;
            }
        };
        let mut exp = Vec::new();
        let mut bad = None;
        for s in &case.exp_samples {
            match parse_metric(&s.labels) {
                Ok(l) => exp.push((pairs_of(&l), s.value)),
                Err(e) => {
                    bad = Some(format!(
                        "    expr: {}, time: {when}, err: labels {}: {e}",
                        go_quote(&case.expr),
                        go_quote(&s.labels)
                    ));
                    break;
                }
            }
        }
        if let Some(b) = bad {
            out.errors.push(b);
            continue;
        }
        exp.sort_by(|a, b| a.0.cmp(&b.0));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let same = exp.len() == got.len()
            && exp
                .iter()
                .zip(&got)
                .all(|(e, g)| e.0 == g.0 && floats_equal(e.1, g.1, setup.fuzzy));
        if !same {
            out.errors.push(format!(
                "    expr: {}, time: {when},\n        exp: {}\n        got: {}",
                go_quote(&case.expr),
                samples_string(&exp),
                samples_string(&got)
            ));
        }
    }
    out
}

/// Compares the firing alerts named in `case` with the expected ones.
fn check_alerts(case: &AlertTest, groups: &[Group], test_name: &str) -> Option<String> {
    let mut got: LabelsAndAnnotations = Vec::new();
    for g in groups {
        for r in g.alerting_rules().filter(|r| r.name() == case.alertname) {
            for a in r.alerts() {
                if a.state == AlertState::Firing && a.resolved_at_ms.is_none() {
                    let mut ann = a.annotations.clone();
                    ann.sort();
                    got.push((pairs_of(&a.labels), ann));
                }
            }
        }
    }
    let mut exp: LabelsAndAnnotations = case
        .exp_alerts
        .iter()
        .map(|e| {
            let mut l: Vec<(String, String)> = e
                .labels
                .iter()
                .filter(|(k, _)| k != "alertname")
                .cloned()
                .collect();
            l.push(("alertname".into(), case.alertname.clone()));
            l.sort();
            let mut a = e.annotations.clone();
            a.sort();
            (l, a)
        })
        .collect();
    got.sort();
    exp.sort();
    if got == exp {
        return None;
    }
    let name = if test_name.is_empty() {
        String::new()
    } else {
        format!("    name: {test_name},\n")
    };
    Some(format!(
        "{name}    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
        case.alertname,
        format_duration(case.eval_time_ms),
        indent_lines(&la_string(&exp), "            "),
        indent_lines(&la_string(&got), "            ")
    ))
}
