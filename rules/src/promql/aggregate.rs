//! Aggregation operators (`sum by (...)`, `topk`, `count_values`, ...). Groups are
//! keyed by their output label set in a hash map, in order of first appearance.

use std::collections::HashMap;

use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_LIMIT_RATIO, T_LIMITK, T_MAX, T_MIN,
    T_QUANTILE, T_STDDEV, T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::engine::{Ctx, Sample, Val};
use super::{EvalError, Labels, METRIC_NAME};

/// Neumaier-compensated addition, as Prometheus sums, so that large and small terms
/// do not cancel out.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Compensated sum of a slice.
pub(crate) fn kahan_sum(vals: impl IntoIterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    for v in vals {
        (s, c) = kahan_inc(v, s, c);
    }
    if s.is_infinite() { s } else { s + c }
}

/// Running mean that switches from sum/count to an incremental mean when the sum
/// would overflow, as Prometheus's `avg` does.
pub(crate) fn mean(vals: &[f64]) -> f64 {
    let Some(&first) = vals.first() else {
        return f64::NAN;
    };
    let (mut sum, mut c) = (first, 0.0);
    let (mut incremental, mut m) = (false, 0.0);
    for (i, &v) in vals.iter().enumerate().skip(1) {
        let count = (i + 1) as f64;
        if !incremental {
            let (ns, nc) = kahan_inc(v, sum, c);
            if !ns.is_infinite() {
                (sum, c) = (ns, nc);
                continue;
            }
            incremental = true;
            m = sum / (count - 1.0);
            c /= count - 1.0;
        }
        if m.is_infinite() {
            if v.is_infinite() && (m > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        let cur = m + c;
        (m, c) = kahan_inc(v / count - cur / count, m, c);
    }
    if incremental {
        m + c
    } else {
        (sum + c) / vals.len() as f64
    }
}

/// Population variance by Welford's method.
pub(crate) fn variance(vals: &[f64]) -> f64 {
    let (mut count, mut m, mut acc) = (0.0, 0.0, 0.0);
    for &v in vals {
        count += 1.0;
        let delta = v - m;
        m += delta / count;
        acc += delta * (v - m);
    }
    acc / count
}

/// Prometheus's `quantile`: linear interpolation between closest ranks, NaN first.
pub(crate) fn quantile(q: f64, mut vals: Vec<f64>) -> f64 {
    if vals.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    vals.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let w = rank - rank.floor();
    vals[lower as usize] * (1.0 - w) + vals[upper as usize] * w
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`.
pub(crate) fn format_go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

pub(crate) fn valid_label_name(n: &str) -> bool {
    !n.is_empty() && std::str::from_utf8(n.as_bytes()).is_ok()
}

struct Group {
    labels: Labels,
    samples: Vec<Sample>,
}

pub(crate) fn eval(ctx: &Ctx<'_>, a: &AggregateExpr, t: i64) -> Result<Val, EvalError> {
    let op = a.op.id();
    let input = ctx.eval_vector(&a.expr, t)?;
    let (by, names): (bool, Vec<String>) = match &a.modifier {
        Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
        Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
        None => (true, Vec::new()),
    };
    let mut count_values_label = None;
    let mut param = f64::NAN;
    if let Some(p) = &a.param {
        match ctx.eval(p, t)? {
            Val::Scalar(v) => param = v,
            Val::Str(s) if op == T_COUNT_VALUES => count_values_label = Some(s),
            other => {
                return Err(EvalError::Query(format!(
                    "unexpected aggregation parameter of type {}",
                    other.type_name()
                )));
            }
        }
    }
    if let Some(l) = &count_values_label
        && !valid_label_name(l)
    {
        return Err(EvalError::Query(format!("invalid label name {l:?}")));
    }
    let (keep, key_names) = if by {
        (true, names)
    } else {
        let mut drop = names;
        drop.push(METRIC_NAME.to_string());
        (false, drop)
    };
    let mut groups: Vec<Group> = Vec::new();
    // Keyed by the hash of the grouping labels; the label set itself is only built
    // for the first member of each group.
    let mut index: HashMap<u64, usize> = HashMap::new();
    for s in input {
        let (key_hash, key) = match &count_values_label {
            Some(l) => {
                let mut b = s.labels.filter(&key_names, keep).to_builder();
                b.set(l, &format_go_float(s.v));
                let key = b.build();
                (key.hash_u64(), Some(key))
            }
            None => (s.labels.hash_filtered(&key_names, keep), None),
        };
        let i = *index.entry(key_hash).or_insert_with(|| {
            let labels = key.unwrap_or_else(|| s.labels.filter(&key_names, keep));
            groups.push(Group {
                labels,
                samples: Vec::new(),
            });
            groups.len() - 1
        });
        groups[i].samples.push(s);
    }
    match op {
        T_TOPK | T_BOTTOMK | T_LIMITK => {
            if param.is_nan() {
                return Err(EvalError::Query("Parameter value is NaN".into()));
            }
            let k = if param >= i64::MAX as f64 {
                i64::MAX
            } else {
                param as i64
            };
            if k < 1 {
                return Ok(Val::Vector(Vec::new()));
            }
            let k = usize::try_from(k).unwrap_or(usize::MAX);
            let mut out = Vec::new();
            for mut g in groups {
                if op != T_LIMITK {
                    let top = op == T_TOPK;
                    g.samples
                        .sort_by(|x, y| match (x.v.is_nan(), y.v.is_nan()) {
                            (true, true) => std::cmp::Ordering::Equal,
                            (true, false) => std::cmp::Ordering::Greater,
                            (false, true) => std::cmp::Ordering::Less,
                            _ if top => y.v.total_cmp(&x.v),
                            _ => x.v.total_cmp(&y.v),
                        });
                }
                out.extend(g.samples.into_iter().take(k));
            }
            return Ok(Val::Vector(out));
        }
        T_LIMIT_RATIO => {
            if param.is_nan() {
                return Err(EvalError::Query("Ratio value is NaN".into()));
            }
            let ratio = param.clamp(-1.0, 1.0);
            if ratio != param {
                ctx.warn(format!(
                    "PromQL warning: ratio value should be between -1 and 1, got {}, capping to {}",
                    format_go_float(param),
                    format_go_float(ratio)
                ));
            }
            let out = groups
                .into_iter()
                .flat_map(|g| g.samples)
                .filter(|s| {
                    let r = sample_ratio(&s.labels);
                    if ratio >= 0.0 {
                        r < ratio
                    } else {
                        r >= 1.0 + ratio
                    }
                })
                .collect();
            return Ok(Val::Vector(out));
        }
        T_QUANTILE if !(0.0..=1.0).contains(&param) => {
            ctx.warn(format!(
                "PromQL warning: quantile value should be between 0 and 1, got {}",
                format_go_float(param)
            ));
        }
        _ => {}
    }
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let vals: Vec<f64> = g.samples.iter().map(|s| s.v).collect();
        let v = match op {
            T_SUM => kahan_sum(vals.iter().copied()),
            T_AVG => mean(&vals),
            T_COUNT | T_COUNT_VALUES => vals.len() as f64,
            T_GROUP => 1.0,
            T_MIN => vals
                .iter()
                .copied()
                .fold(f64::NAN, |m, v| if m.is_nan() || v < m { v } else { m }),
            T_MAX => vals
                .iter()
                .copied()
                .fold(f64::NAN, |m, v| if m.is_nan() || v > m { v } else { m }),
            T_STDVAR => variance(&vals),
            T_STDDEV => variance(&vals).sqrt(),
            T_QUANTILE => quantile(param, vals),
            _ => {
                return Err(EvalError::Query(format!(
                    "unsupported aggregation {}",
                    a.op
                )));
            }
        };
        let drop_name = g.labels.name().is_some() && g.samples.iter().any(|s| s.drop_name);
        out.push(Sample {
            labels: g.labels,
            v,
            drop_name,
        });
    }
    Ok(Val::Vector(out))
}

/// The series' position in [0, 1): its Prometheus label hash (XXH64 over
/// `name 0xff value 0xff ...`) scaled down, so `limit_ratio(r)` and
/// `limit_ratio(-(1 - r))` select complementary series, as in Prometheus.
fn sample_ratio(l: &Labels) -> f64 {
    let mut buf = Vec::with_capacity(128);
    for (n, v) in l.iter() {
        buf.extend_from_slice(n.as_bytes());
        buf.push(0xff);
        buf.extend_from_slice(v.as_bytes());
        buf.push(0xff);
    }
    super::xxhash::xxh64(&buf) as f64 / u64::MAX as f64
}
