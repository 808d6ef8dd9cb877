//! `histogram_quantile` and `histogram_fraction` over classic `le` buckets.

use std::collections::HashMap;

use super::aggregate::format_go_float;
use super::engine::{Ctx, Sample};
use super::{EvalError, Labels, METRIC_NAME};

const BUCKET_LABEL: &str = "le";

/// Prometheus's `almost.Equal`: relative comparison with a floor near zero.
pub(crate) fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    let min_normal = f64::from_bits(0x0010_0000_0000_0000);
    if a.is_nan() && b.is_nan() || a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < min_normal {
        return diff < eps * min_normal;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

struct Buckets {
    labels: Labels,
    name: String,
    /// (upper bound, cumulative count)
    buckets: Vec<(f64, f64)>,
}

/// Groups bucket series by their labels without `le`.
fn group(ctx: Option<&Ctx<'_>>, vec: Vec<Sample>) -> Vec<Buckets> {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut out: Vec<Buckets> = Vec::new();
    for s in vec {
        let le = s.labels.get(BUCKET_LABEL).unwrap_or("");
        let Some(upper) = parse_le(le) else {
            if let Some(ctx) = ctx {
                ctx.warn(format!(
                    "PromQL warning: bucket label {BUCKET_LABEL:?} is missing or has a malformed value of {le:?} for metric name {:?}",
                    s.labels.name().unwrap_or("")
                ));
            }
            continue;
        };
        let key = s.labels.filter(&[BUCKET_LABEL.to_string()], false);
        let i = *index.entry(key).or_insert_with(|| {
            out.push(Buckets {
                labels: s
                    .labels
                    .filter(&[BUCKET_LABEL.to_string(), METRIC_NAME.to_string()], false),
                name: s.labels.name().unwrap_or("").to_string(),
                buckets: Vec::new(),
            });
            out.len() - 1
        });
        out[i].buckets.push((upper, s.v));
    }
    out
}

fn parse_le(s: &str) -> Option<f64> {
    match s.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        t => t.parse::<f64>().ok(),
    }
}

/// Sorts by bound and merges buckets with equal bounds; `None` without a +Inf bucket.
fn prepare(b: &mut Vec<(f64, f64)>) -> Option<()> {
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    if b.last().is_none_or(|l| l.0 != f64::INFINITY) {
        return None;
    }
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for &(u, c) in b.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == u => last.1 += c,
            _ => merged.push((u, c)),
        }
    }
    *b = merged;
    Some(())
}

/// Returns (quantile, forced monotonic).
fn bucket_quantile(q: f64, b: &mut Vec<(f64, f64)>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    if prepare(b).is_none() {
        return (f64::NAN, false);
    }
    let mut forced = false;
    let mut prev = b[0].1;
    for bucket in b.iter_mut().skip(1) {
        let cur = bucket.1;
        if cur == prev {
            continue;
        }
        if almost_equal(prev, cur, 1e-12) {
            bucket.1 = prev;
            continue;
        }
        if cur < prev {
            bucket.1 = prev;
            forced = true;
            continue;
        }
        prev = cur;
    }
    if b.len() < 2 {
        return (f64::NAN, forced);
    }
    let total = b[b.len() - 1].1;
    if total == 0.0 {
        return (f64::NAN, forced);
    }
    let mut rank = q * total;
    let idx = b[..b.len() - 1].partition_point(|&(_, c)| c < rank);
    if idx == b.len() - 1 {
        return (b[b.len() - 2].0, forced);
    }
    if idx == 0 && b[0].0 <= 0.0 {
        return (b[0].0, forced);
    }
    let (mut start, end, mut count) = (0.0, b[idx].0, b[idx].1);
    if idx > 0 {
        start = b[idx - 1].0;
        count -= b[idx - 1].1;
        rank -= b[idx - 1].1;
    }
    (start + (end - start) * (rank / count), forced)
}

pub(crate) fn histogram_quantile(
    ctx: &Ctx<'_>,
    q: f64,
    vec: Vec<Sample>,
) -> Result<Vec<Sample>, EvalError> {
    if !(0.0..=1.0).contains(&q) {
        ctx.warn(format!(
            "PromQL warning: quantile value should be between 0 and 1, got {}",
            format_go_float(q)
        ));
    }
    let mut out = Vec::new();
    for mut g in group(Some(ctx), vec) {
        let (v, forced) = bucket_quantile(q, &mut g.buckets);
        if forced {
            ctx.info(format!(
                "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?}",
                g.name
            ));
        }
        out.push(Sample {
            labels: g.labels,
            v,
            drop_name: false,
        });
    }
    Ok(out)
}

fn bucket_fraction(lower: f64, upper: f64, b: &mut Vec<(f64, f64)>) -> f64 {
    if prepare(b).is_none() {
        return f64::NAN;
    }
    let count = b[b.len() - 1].1;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    for (i, &(ub, c)) in b.iter().enumerate() {
        let lb = if i > 0 {
            b[i - 1].0
        } else if ub > 0.0 {
            0.0
        } else {
            f64::NEG_INFINITY
        };
        let interp = |v: f64| rank + (c - rank) * (v - lb) / (ub - lb);
        if !lower_set && lb >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lb >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lb < lower && ub > lower {
            lower_rank = if lb.is_infinite() || ub.is_infinite() {
                rank
            } else {
                interp(lower)
            };
            lower_set = true;
        }
        if !upper_set && lb < upper && ub > upper {
            upper_rank = if lb.is_infinite() || ub.is_infinite() {
                c
            } else {
                interp(upper)
            };
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = c;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

pub(crate) fn histogram_fraction(
    lower: f64,
    upper: f64,
    vec: Vec<Sample>,
) -> Result<Vec<Sample>, EvalError> {
    Ok(group(None, vec)
        .into_iter()
        .map(|mut g| Sample {
            v: bucket_fraction(lower, upper, &mut g.buckets),
            labels: g.labels,
            drop_name: false,
        })
        .collect())
}
