//! Runner for Prometheus's promqltest scripts (`*.test`), so the engine is checked
//! against the same cases Prometheus itself is. Cases that depend on native
//! histograms are counted as skipped, not failed.
//!
//! Annotations carry no position in this engine, so `expect warn/info` messages are
//! compared without their trailing `(line:column)`.

mod check;
mod parse;

use std::io::Write;
use std::path::PathBuf;

use promql_parser::parser::Expr;

use super::engine::{Ctx, full_matchers};
use super::storage::matches_labels;
use super::{Engine, Labels, LabelsBuilder, METRIC_NAME, MemoryStorage};
use parse::{Command, EvalCmd, Point};

/// Outcome counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Summary {
    fn add(&mut self, o: Summary) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.skipped += o.skipped;
    }
}

/// Functions that only make sense on native histograms.
const NATIVE_ONLY: &[&str] = &[
    "histogram_count",
    "histogram_sum",
    "histogram_avg",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_quantiles",
    "info(",
];

/// Runs every script, prints each failing case, and ends with
/// `N passed, N failed, N skipped`.
pub fn run_files(paths: &[PathBuf], out: &mut dyn Write) -> std::io::Result<Summary> {
    let mut total = Summary::default();
    for p in paths {
        match std::fs::read_to_string(p) {
            Ok(text) => total.add(run_script(&p.display().to_string(), &text, out)?),
            Err(e) => {
                writeln!(out, "{}: cannot read: {e}", p.display())?;
                total.failed += 1;
            }
        }
    }
    writeln!(
        out,
        "{} passed, {} failed, {} skipped",
        total.passed, total.failed, total.skipped
    )?;
    Ok(total)
}

/// Runs one script's text; `name` prefixes failure reports.
pub fn run_script(name: &str, text: &str, out: &mut dyn Write) -> std::io::Result<Summary> {
    let mut sum = Summary::default();
    let mut st = MemoryStorage::new();
    // Series with native-histogram samples, and the timestamps of those samples.
    let mut histograms: Vec<(Labels, Vec<i64>)> = Vec::new();
    let engine = Engine::default();
    for cmd in parse::parse_script(text) {
        match cmd {
            Command::Clear => {
                st.clear();
                histograms.clear();
            }
            Command::Invalid { line, msg } => {
                writeln!(out, "{name}:{line}: cannot parse: {msg}")?;
                sum.failed += 1;
            }
            Command::Load {
                series,
                interval_ms,
                nhcb,
                ..
            } => {
                for s in series {
                    let hist_ts: Vec<i64> = s
                        .points
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| **p == Point::Histogram)
                        .map(|(i, _)| i as i64 * interval_ms)
                        .collect();
                    if nhcb
                        && s.labels.get("le").is_some()
                        && let Some(base) = s.labels.name().and_then(|n| n.strip_suffix("_bucket"))
                    {
                        let mut b: LabelsBuilder = s.labels.to_builder();
                        b.del("le").set(METRIC_NAME, base);
                        let all = (0..s.points.len())
                            .map(|i| i as i64 * interval_ms)
                            .collect();
                        histograms.push((b.build(), all));
                    }
                    for (i, p) in s.points.iter().enumerate() {
                        if let Point::Value(v) = p {
                            st.add(s.labels.clone(), i as i64 * interval_ms, *v);
                        }
                    }
                    if !hist_ts.is_empty() {
                        histograms.push((s.labels, hist_ts));
                    }
                }
            }
            Command::Eval(ev) => {
                if needs_histograms(&engine, &st, &ev, &histograms) {
                    sum.skipped += 1;
                    continue;
                }
                match check::run_eval(&engine, &st, &ev) {
                    Ok(()) => sum.passed += 1,
                    Err(report) => {
                        sum.failed += 1;
                        writeln!(out, "{name}:{}: {}\n{report}", ev.line, ev.query)?;
                    }
                }
            }
        }
    }
    Ok(sum)
}

/// A case needs native histograms when it expects one, calls a histogram-only
/// function, or reads a window of a series that holds histogram samples there.
fn needs_histograms(
    engine: &Engine,
    st: &MemoryStorage,
    ev: &EvalCmd,
    histograms: &[(Labels, Vec<i64>)],
) -> bool {
    if ev.series.iter().any(|s| s.histogram) || NATIVE_ONLY.iter().any(|f| ev.query.contains(f)) {
        return true;
    }
    if histograms.is_empty() {
        return false;
    }
    let Ok(expr) = super::parse(&ev.query) else {
        return false;
    };
    let (start, end, step) = match ev.kind {
        parse::EvalKind::Instant { t_ms } => (t_ms, t_ms, 0),
        parse::EvalKind::Range {
            start_ms,
            end_ms,
            step_ms,
        } => (start_ms, end_ms, step_ms),
    };
    let ctx = Ctx::new(engine, st, &expr, start, end, step);
    let mut hit = false;
    visit_selectors(&expr, &mut |vs| {
        let m = full_matchers(vs);
        let (lo, hi) = ctx.span_of(vs).unwrap_or((i64::MIN, i64::MAX));
        hit |= histograms
            .iter()
            .any(|(l, ts)| matches_labels(&m, l) && ts.iter().any(|&t| t >= lo && t <= hi));
    });
    hit
}

fn visit_selectors(e: &Expr, f: &mut dyn FnMut(&promql_parser::parser::VectorSelector)) {
    match e {
        Expr::VectorSelector(vs) => f(vs),
        Expr::MatrixSelector(ms) => f(&ms.vs),
        Expr::Subquery(s) => visit_selectors(&s.expr, f),
        Expr::Paren(p) => visit_selectors(&p.expr, f),
        Expr::Unary(u) => visit_selectors(&u.expr, f),
        Expr::Binary(b) => {
            visit_selectors(&b.lhs, f);
            visit_selectors(&b.rhs, f);
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                visit_selectors(p, f);
            }
            visit_selectors(&a.expr, f);
        }
        Expr::Call(c) => c.args.args.iter().for_each(|a| visit_selectors(a, f)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}
