//! Runs one `eval` case and compares the outcome with its expectations.

use std::fmt::Write as _;

use super::super::histogram::almost_equal;
use super::super::{Annotations, Engine, EvalError, Labels, MemoryStorage, Series, Value};
use super::parse::{EvalCmd, EvalKind, MatchKind, Point, SeriesSpec};

/// What the engine returned, normalised for comparison.
enum Got {
    Scalar(f64),
    Str(String),
    /// Instant vector: labels and value, in result order.
    Vector(Vec<(Labels, f64)>),
    /// Range vector or range query: series with (t_ms, v) points.
    Matrix(Vec<Series>),
}

fn floats_equal(a: f64, b: f64) -> bool {
    almost_equal(a, b, 1e-6)
}

/// Removes the ` (line:col)` suffix Prometheus appends to annotations.
fn strip_position(msg: &str) -> &str {
    let t = msg.trim_end();
    if let Some(open) = t.rfind(" (")
        && t.ends_with(')')
        && t[open + 2..t.len() - 1]
            .split(':')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return &t[..open];
    }
    t
}

/// Removes a trailing position pattern (`\(1:5\)`, `\([0-9]+:[0-9]+\)`) from a regex.
fn strip_position_regex(re: &str) -> &str {
    let t = re.trim_end();
    if t.ends_with("\\)")
        && let Some(open) = t.rfind("\\(")
    {
        let inner = &t[open + 2..t.len() - 2];
        if inner.contains(':') {
            return t[..open].trim_end();
        }
    }
    t
}

fn matches(kind: &MatchKind, msg: &str) -> bool {
    match kind {
        MatchKind::Any => true,
        MatchKind::Msg(m) => strip_position(m) == msg || m == msg,
        MatchKind::Regex(r) => {
            regex::Regex::new(strip_position_regex(r)).is_ok_and(|re| re.is_match(msg))
        }
    }
}

fn check_annotations(
    kind: &str,
    expect: &[MatchKind],
    none: bool,
    got: &[String],
) -> Result<(), String> {
    if none && !got.is_empty() {
        return Err(format!("expected no {kind} annotation, got {got:?}"));
    }
    for e in expect {
        if !got.iter().any(|g| matches(e, g)) {
            return Err(format!("expected {kind} annotation {e:?}, got {got:?}"));
        }
    }
    if !expect.is_empty() {
        for g in got {
            if !expect.iter().any(|e| matches(e, g)) {
                return Err(format!("unexpected {kind} annotation {g:?}"));
            }
        }
    }
    Ok(())
}

fn fmt_got(g: &Got) -> String {
    let mut s = String::new();
    match g {
        Got::Scalar(v) => s.push_str(&format!("scalar {v}")),
        Got::Str(v) => s.push_str(&format!("string {v:?}")),
        Got::Vector(v) if v.is_empty() => s.push_str("(empty vector)"),
        Got::Vector(v) => {
            for (l, x) in v {
                let _ = write!(s, "\n      {l} {x}");
            }
        }
        Got::Matrix(m) if m.is_empty() => s.push_str("(empty matrix)"),
        Got::Matrix(m) => {
            for ser in m {
                let pts: Vec<String> = ser
                    .samples
                    .iter()
                    .map(|(t, v)| format!("{v}@{}s", *t as f64 / 1000.0))
                    .collect();
                let _ = write!(s, "\n      {} {}", ser.labels, pts.join(" "));
            }
        }
    }
    s
}

fn fmt_expected(ev: &EvalCmd) -> String {
    let mut s = String::new();
    if let Some(v) = ev.scalar {
        let _ = write!(s, "scalar {v}");
    }
    if let Some(v) = &ev.expect.string {
        let _ = write!(s, "string {v:?}");
    }
    if ev.series.is_empty() && ev.scalar.is_none() && ev.expect.string.is_none() {
        s.push_str("(empty)");
    }
    for spec in &ev.series {
        let pts: Vec<String> = spec
            .points
            .iter()
            .map(|p| match p {
                Point::Value(v) => v.to_string(),
                Point::Missing => "_".into(),
                Point::Histogram => "{{histogram}}".into(),
            })
            .collect();
        let _ = write!(s, "\n      {} {}", spec.labels, pts.join(" "));
    }
    s
}

/// Expected points with their timestamps.
fn timed(spec: &SeriesSpec, start: i64, step: i64) -> Vec<(i64, f64)> {
    spec.points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Point::Value(v) => Some((start + i as i64 * step, *v)),
            Point::Missing | Point::Histogram => None,
        })
        .collect()
}

fn compare_matrix(ev: &EvalCmd, got: &[Series], start: i64, step: i64) -> Result<(), String> {
    if got.len() != ev.series.len() {
        return Err(format!(
            "expected {} series, got {}",
            ev.series.len(),
            got.len()
        ));
    }
    for spec in &ev.series {
        let Some(g) = got.iter().find(|s| s.labels == spec.labels) else {
            return Err(format!("missing series {}", spec.labels));
        };
        let want = timed(spec, start, step);
        let same = want.len() == g.samples.len()
            && want
                .iter()
                .zip(&g.samples)
                .all(|(a, b)| a.0 == b.0 && floats_equal(a.1, b.1));
        if !same {
            return Err(format!("series {} differs", spec.labels));
        }
    }
    Ok(())
}

fn compare(ev: &EvalCmd, got: &Got) -> Result<(), String> {
    match got {
        Got::Scalar(v) => match ev.scalar {
            Some(want) if ev.series.is_empty() && floats_equal(want, *v) => Ok(()),
            _ => Err("scalar differs".into()),
        },
        Got::Str(v) => match &ev.expect.string {
            Some(want) if want == v => Ok(()),
            _ => Err("string differs".into()),
        },
        Got::Vector(v) => {
            if ev.scalar.is_some() {
                return Err("expected a scalar".into());
            }
            if v.len() != ev.series.len() {
                return Err(format!(
                    "expected {} samples, got {}",
                    ev.series.len(),
                    v.len()
                ));
            }
            for (i, spec) in ev.series.iter().enumerate() {
                let [Point::Value(want)] = spec.points[..] else {
                    return Err(format!(
                        "expected series {} must have exactly one value",
                        spec.labels
                    ));
                };
                let pos = v.iter().position(|(l, _)| *l == spec.labels);
                let Some(pos) = pos else {
                    return Err(format!("missing sample {}", spec.labels));
                };
                if ev.expect.ordered && pos != i {
                    return Err(format!(
                        "sample {} at position {pos}, expected {i}",
                        spec.labels
                    ));
                }
                if !floats_equal(want, v[pos].1) {
                    return Err(format!("value of {} differs", spec.labels));
                }
            }
            Ok(())
        }
        Got::Matrix(m) => {
            let (start, step) = match (&ev.kind, ev.expect.range_vector) {
                (
                    EvalKind::Range {
                        start_ms, step_ms, ..
                    },
                    _,
                ) => (*start_ms, *step_ms),
                (EvalKind::Instant { .. }, Some((from, _, step))) => (from, step),
                (EvalKind::Instant { .. }, None) => {
                    return Err("range vector result needs 'expect range vector'".into());
                }
            };
            compare_matrix(ev, m, start, step)
        }
    }
}

/// Runs the case; `Err` carries the report to print.
pub(super) fn run_eval(engine: &Engine, st: &MemoryStorage, ev: &EvalCmd) -> Result<(), String> {
    if let Some(bad) = &ev.bad_line {
        return Err(format!("    cannot parse case: {bad}"));
    }
    let result: Result<(Got, Annotations), EvalError> = super::super::parse(&ev.query)
        .map_err(|e| EvalError::Query(e.0))
        .and_then(|expr| match ev.kind {
            EvalKind::Instant { t_ms } => engine.instant_annotated(st, &expr, t_ms).map(|a| {
                let g = match a.value {
                    Value::Scalar { v, .. } => Got::Scalar(v),
                    Value::String { s, .. } => Got::Str(s),
                    Value::Vector(v) => {
                        Got::Vector(v.into_iter().map(|s| (s.labels, s.v)).collect())
                    }
                    Value::Matrix(m) => Got::Matrix(m),
                };
                (g, a.annotations)
            }),
            EvalKind::Range {
                start_ms,
                end_ms,
                step_ms,
            } => engine
                .range_annotated(st, &expr, start_ms, end_ms, step_ms)
                .map(|a| (Got::Matrix(a.value), a.annotations)),
        });
    let (got, ann) = match (result, &ev.expect.fail) {
        (Err(e), Some(kind)) => {
            return if matches(kind, &e.to_string()) {
                Ok(())
            } else {
                Err(format!("    expected error {kind:?}\n    got error: {e}"))
            };
        }
        (Err(e), None) => {
            return Err(format!(
                "    expected: {}\n    got error: {e}",
                fmt_expected(ev)
            ));
        }
        (Ok((got, _)), Some(kind)) => {
            return Err(format!(
                "    expected error {kind:?}\n    got: {}",
                fmt_got(&got)
            ));
        }
        (Ok(r), None) => r,
    };
    let annotations = check_annotations("warn", &ev.expect.warn, ev.expect.no_warn, &ann.warnings)
        .and_then(|()| check_annotations("info", &ev.expect.info, ev.expect.no_info, &ann.infos));
    if let Err(e) = annotations {
        return Err(format!("    {e}"));
    }
    compare(ev, &got).map_err(|why| {
        format!(
            "    {why}\n    expected: {}\n    got: {}",
            fmt_expected(ev),
            fmt_got(&got)
        )
    })
}
