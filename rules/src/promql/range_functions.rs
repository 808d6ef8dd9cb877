//! Functions over range vectors: `rate` and friends with Prometheus's extrapolation,
//! `*_over_time`, regression and smoothing.

use promql_parser::parser::{AtModifier, Expr, Offset};

use super::aggregate::{format_go_float, kahan_inc, kahan_sum, mean, quantile};
use super::engine::{Ctx, Keep, Sample, Val, duration_ms};
use super::functions::unwrap_parens;
use super::{EvalError, Labels, WindowHints, label_functions};

/// End (inclusive) and length of the window a range argument covers at time `t`.
fn window(ctx: &Ctx<'_>, e: &Expr, t: i64) -> (i64, i64) {
    let resolve = |at: &Option<AtModifier>, off: &Option<Offset>| {
        let base = match at {
            None => t,
            Some(AtModifier::Start) => ctx.start_ms,
            Some(AtModifier::End) => ctx.end_ms,
            Some(AtModifier::At(st)) => {
                match st.duration_since(std::time::SystemTime::UNIX_EPOCH) {
                    Ok(d) => duration_ms(&d),
                    Err(e) => -duration_ms(&e.duration()),
                }
            }
        };
        base - match off {
            None => 0,
            Some(Offset::Pos(d)) => duration_ms(d),
            Some(Offset::Neg(d)) => -duration_ms(d),
        }
    };
    match unwrap_parens(e) {
        Expr::MatrixSelector(ms) => (resolve(&ms.vs.at, &ms.vs.offset), duration_ms(&ms.range)),
        Expr::Subquery(sq) => (resolve(&sq.at, &sq.offset), duration_ms(&sq.range)),
        _ => (t, 0),
    }
}

fn is_counter_name(n: &str) -> bool {
    ["_total", "_sum", "_count", "_bucket"]
        .iter()
        .any(|s| n.ends_with(s))
}

/// Prometheus's `extrapolatedRate` for floats. `may_reset`: whether a sample may be
/// smaller than the one before it; where the store knows none is, the window's middle
/// samples are never read.
fn extrapolated_rate(
    s: &[(i64, f64)],
    end: i64,
    range: i64,
    counter: bool,
    rate: bool,
    may_reset: bool,
) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let start = end - range;
    let (first_t, first_v) = s[0];
    let (last_t, last_v) = s[s.len() - 1];
    let mut result = last_v - first_v;
    // Resets are rare: finding none needs no chain of dependent additions, so the
    // sum (in sample order, as Prometheus adds) runs only when there is one.
    // The test has no early exit: without a branch per sample it costs a few
    // instructions each.
    if counter && may_reset && s.windows(2).fold(false, |any, w| any | (w[1].1 < w[0].1)) {
        let mut prev = first_v;
        for &(_, v) in &s[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    // A series that did not move (an error counter, almost always) has changed by
    // zero whatever the extrapolation, so its divisions are skipped. The full
    // computation gives the same +0.0: with the samples inside the window every
    // term of the factor below is finite and positive.
    if result == 0.0
        && result.is_sign_positive()
        && start <= first_t
        && first_t < last_t
        && last_t <= end
    {
        return Some(0.0);
    }
    let mut to_start = (first_t - start) as f64 / 1000.0;
    let mut to_end = (end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let avg_step = sampled / (s.len() - 1) as f64;
    let threshold = avg_step * 1.1;
    if to_start >= threshold {
        to_start = avg_step / 2.0;
    }
    if counter {
        let mut to_zero = to_start;
        if result > 0.0 && first_v >= 0.0 {
            to_zero = sampled * (first_v / result);
        }
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_step / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if rate {
        factor /= range as f64 / 1000.0;
    }
    Some(result * factor)
}

fn instant_rate(s: &[(i64, f64)], rate: bool) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (pt, pv) = s[s.len() - 2];
    let (lt, lv) = s[s.len() - 1];
    let mut r = if rate && lv < pv { lv } else { lv - pv };
    if rate {
        let dt = lt - pt;
        if dt == 0 {
            return None;
        }
        r /= dt as f64 / 1000.0;
    }
    Some(r)
}

/// Least-squares slope and intercept at `intercept_t`, with compensated sums.
pub(crate) fn linear_regression(s: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sxy, mut cxy, mut sx2, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    let init = s[0].1;
    let mut const_y = true;
    for (i, &(ts, v)) in s.iter().enumerate() {
        if const_y && i > 0 && v != init {
            const_y = false;
        }
        n += 1.0;
        let x = (ts - intercept_t) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn stdvar_over_time(s: &[(i64, f64)]) -> f64 {
    let (mut count, mut m, mut cm, mut aux, mut caux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(_, v) in s {
        count += 1.0;
        let delta = v - (m + cm);
        (m, cm) = kahan_inc(delta / count, m, cm);
        (aux, caux) = kahan_inc(delta * (v - (m + cm)), aux, caux);
    }
    (aux + caux) / count
}

fn smoothing(s: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (mut s0, mut s1, mut b) = (0.0, s[0].1, s[1].1 - s[0].1);
    for (i, &(_, v)) in s.iter().enumerate().skip(1) {
        let x = sf * v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        (s0, s1) = (s1, x + y);
    }
    Some(s1)
}

fn values(s: &[(i64, f64)]) -> Vec<f64> {
    s.iter().map(|&(_, v)| v).collect()
}

/// Evaluates `name` if it is a range-vector function; `None` otherwise.
pub(crate) fn call(
    ctx: &Ctx<'_>,
    name: &str,
    args: &[Box<Expr>],
    t: i64,
    keep: Option<Keep<'_>>,
) -> Result<Option<Val>, EvalError> {
    let known = matches!(
        name,
        "rate"
            | "increase"
            | "delta"
            | "irate"
            | "idelta"
            | "resets"
            | "changes"
            | "deriv"
            | "predict_linear"
            | "avg_over_time"
            | "min_over_time"
            | "max_over_time"
            | "sum_over_time"
            | "count_over_time"
            | "last_over_time"
            | "first_over_time"
            | "present_over_time"
            | "stddev_over_time"
            | "stdvar_over_time"
            | "quantile_over_time"
            | "mad_over_time"
            | "absent_over_time"
            | "double_exponential_smoothing"
            | "holt_winters"
            | "ts_of_min_over_time"
            | "ts_of_max_over_time"
            | "ts_of_last_over_time"
            | "ts_of_first_over_time"
    );
    if !known {
        return Ok(None);
    }
    // Scalar parameters come before (quantile_over_time) or after the range argument.
    let (m_idx, params): (usize, Vec<f64>) = if name == "quantile_over_time" {
        (1, vec![ctx.eval_scalar(&args[0], t)?])
    } else {
        let mut p = Vec::new();
        for a in &args[1..] {
            p.push(ctx.eval_scalar(a, t)?);
        }
        (0, p)
    };
    if name == "absent_over_time" {
        let mut any = false;
        ctx.for_each_window(&args[0], t, false, &mut |_, _, _, _| any = true)?;
        if any {
            return Ok(Some(Val::Vector(Vec::new())));
        }
        let labels = label_functions::absent_labels(&args[0]);
        return Ok(Some(Val::Vector(vec![Sample {
            labels,
            v: 1.0,
            drop_name: false,
        }])));
    }
    if matches!(name, "double_exponential_smoothing" | "holt_winters") {
        let (sf, tf) = (params[0], params[1]);
        if sf <= 0.0 || sf >= 1.0 {
            return Err(EvalError::Query(format!(
                "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
            )));
        }
        if tf <= 0.0 || tf >= 1.0 {
            return Err(EvalError::Query(format!(
                "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
            )));
        }
    }
    if name == "quantile_over_time" && !(0.0..=1.0).contains(&params[0]) {
        ctx.warn(format!(
            "PromQL warning: quantile value should be between 0 and 1, got {}",
            format_go_float(params[0])
        ));
    }
    let (end, range) = window(ctx, &args[m_idx], t);
    let keep_name = matches!(name, "last_over_time" | "first_over_time");
    let mut out = Vec::new();
    let mut reported: Option<Labels> = None;
    let counter_fn = matches!(name, "rate" | "increase" | "irate");
    // A selector written with a metric name (the usual case) is checked once, not
    // per series: reading every series' name costs a cache miss each.
    let named = match unwrap_parens(&args[m_idx]) {
        Expr::MatrixSelector(ms) if counter_fn => ms.vs.name.clone(),
        _ => None,
    };
    let check_each = counter_fn && named.is_none();
    let mut counted_pairs = false;
    // The common functions are picked once, not by comparing names per series.
    let extrapolated = match name {
        "rate" => Some((true, true)),
        "increase" => Some((true, false)),
        "delta" => Some((false, false)),
        _ => None,
    };
    let mut per_series = |labels: &Labels,
                          drop_name: bool,
                          s: &[(i64, f64)],
                          hints: WindowHints| {
        counted_pairs |= s.len() >= 2;
        if check_each
            && s.len() >= 2
            && let Some(n) = labels.name()
            && !is_counter_name(n)
            && reported.as_ref().and_then(|r| r.name()) != Some(n)
        {
            ctx.info(format!(
                "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {n:?}"
            ));
            reported = Some(labels.clone());
        }
        let v = match name {
            _ if let Some((counter, rate)) = extrapolated => {
                extrapolated_rate(s, end, range, counter, rate, !hints.no_decrease)
            }
            "irate" => instant_rate(s, true),
            "idelta" => instant_rate(s, false),
            "resets" => Some(s.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64),
            "changes" => Some(
                s.windows(2)
                    .filter(|w| !(w[0].1 == w[1].1 || (w[0].1.is_nan() && w[1].1.is_nan())))
                    .count() as f64,
            ),
            "deriv" => (s.len() >= 2).then(|| linear_regression(s, s[0].0).0),
            "predict_linear" => (s.len() >= 2).then(|| {
                let (slope, icpt) = linear_regression(s, t);
                slope * params[0] + icpt
            }),
            "avg_over_time" => Some(mean(&values(s))),
            "min_over_time" => {
                Some(s.iter().fold(
                    f64::NAN,
                    |m, &(_, v)| if m.is_nan() || v < m { v } else { m },
                ))
            }
            "max_over_time" => {
                Some(s.iter().fold(
                    f64::NAN,
                    |m, &(_, v)| if m.is_nan() || v > m { v } else { m },
                ))
            }
            "sum_over_time" => Some(kahan_sum(s.iter().map(|&(_, v)| v))),
            "count_over_time" => Some(s.len() as f64),
            "last_over_time" => s.last().map(|&(_, v)| v),
            "first_over_time" => s.first().map(|&(_, v)| v),
            "present_over_time" => Some(1.0),
            "stdvar_over_time" => Some(stdvar_over_time(s)),
            "stddev_over_time" => Some(stdvar_over_time(s).sqrt()),
            "quantile_over_time" => Some(quantile(params[0], values(s))),
            "mad_over_time" => {
                let vals = values(s);
                if vals.iter().any(|v| v.is_nan()) {
                    Some(f64::NAN)
                } else {
                    let med = quantile(0.5, vals.clone());
                    Some(quantile(
                        0.5,
                        vals.iter().map(|v| (v - med).abs()).collect(),
                    ))
                }
            }
            "double_exponential_smoothing" | "holt_winters" => smoothing(s, params[0], params[1]),
            "ts_of_last_over_time" => s.last().map(|&(ts, _)| ts as f64 / 1000.0),
            "ts_of_first_over_time" => s.first().map(|&(ts, _)| ts as f64 / 1000.0),
            "ts_of_min_over_time" | "ts_of_max_over_time" => {
                let max = name == "ts_of_max_over_time";
                let mut best: Option<(i64, f64)> = None;
                for &(ts, v) in s {
                    let better = match best {
                        None => true,
                        Some((_, b)) if b.is_nan() => !v.is_nan(),
                        Some((_, b)) => {
                            if max {
                                v >= b
                            } else {
                                v <= b
                            }
                        }
                    };
                    if better {
                        best = Some((ts, v));
                    }
                }
                best.map(|(ts, _)| ts as f64 / 1000.0)
            }
            _ => None,
        };
        if let Some(v) = v
            && keep.is_none_or(|k| k(labels, v))
        {
            out.push(Sample {
                labels: labels.clone(),
                v,
                drop_name: if keep_name { drop_name } else { true },
            });
        }
    };
    ctx.for_each_window(&args[m_idx], t, extrapolated.is_some(), &mut per_series)?;
    if let Some(n) = named
        && counted_pairs
        && !is_counter_name(&n)
    {
        ctx.info(format!(
            "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {n:?}"
        ));
    }
    Ok(Some(Val::Vector(out)))
}
