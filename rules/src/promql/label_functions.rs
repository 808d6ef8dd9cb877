//! Functions that work on labels or order rather than values: `label_replace`,
//! `label_join`, `sort*`, `absent`, and the calendar functions.

use std::cmp::Ordering;

use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;

use super::engine::{Ctx, Sample, Val};
use super::functions::unwrap_parens;
use super::{EvalError, Labels, LabelsBuilder, METRIC_NAME};

/// Labels `absent()` reports: the selector's equality matchers, minus any label
/// constrained more than once.
pub(crate) fn absent_labels(e: &Expr) -> Labels {
    let vs = match unwrap_parens(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::empty(),
    };
    let mut b = LabelsBuilder::new();
    let mut seen: Vec<&str> = Vec::new();
    for m in vs
        .matchers
        .matchers
        .iter()
        .filter(|m| m.name != METRIC_NAME)
    {
        if seen.contains(&m.name.as_str()) {
            b.del(&m.name);
        } else if matches!(m.op, MatchOp::Equal) {
            b.set(&m.name, &m.value);
        }
        seen.push(&m.name);
    }
    b.build()
}

/// Compares strings so that digit runs compare by numeric value ("cpu2" < "cpu10").
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let la = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let lb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (&a[..la], &b[..lb]);
                let ta = da.iter().skip_while(|&&c| c == b'0').count();
                let tb = db.iter().skip_while(|&&c| c == b'0').count();
                let ord = ta
                    .cmp(&tb)
                    .then_with(|| da[la - ta..].cmp(&db[lb - tb..]))
                    .then(la.cmp(&lb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[la..];
                b = &b[lb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn labels_natural_cmp(a: &Labels, b: &Labels) -> Ordering {
    let mut ia = a.iter();
    let mut ib = b.iter();
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((na, va)), Some((nb, vb))) => {
                let o = na.cmp(nb).then_with(|| natural_cmp(va, vb));
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian. Shared with the
/// templates' humanizeTimestamp.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn date_part(name: &str, secs: f64) -> f64 {
    let s = secs as i64;
    let days = s.div_euclid(86_400);
    let sod = s.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let month_days = [
        31,
        if is_leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    match name {
        "year" => y as f64,
        "month" => f64::from(m),
        "day_of_month" => f64::from(d),
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => {
            let before: u32 = month_days[..(m - 1) as usize].iter().sum();
            f64::from(before + d)
        }
        "days_in_month" => f64::from(month_days[(m - 1) as usize]),
        "hour" => (sod / 3600) as f64,
        _ => ((sod % 3600) / 60) as f64,
    }
}

fn string_arg(ctx: &Ctx<'_>, e: &Expr, t: i64) -> Result<String, EvalError> {
    match ctx.eval(e, t)? {
        Val::Str(s) => Ok(s),
        other => Err(EvalError::Query(format!(
            "expected string, got {}",
            other.type_name()
        ))),
    }
}

/// Evaluates `name` if it is handled here; `None` otherwise.
pub(crate) fn call(
    ctx: &Ctx<'_>,
    name: &str,
    args: &[Box<Expr>],
    t: i64,
) -> Result<Option<Val>, EvalError> {
    let out = match name {
        "label_replace" => {
            let vec = ctx.eval_vector(&args[0], t)?;
            let dst = string_arg(ctx, &args[1], t)?;
            let repl = string_arg(ctx, &args[2], t)?;
            let src = string_arg(ctx, &args[3], t)?;
            let re_src = string_arg(ctx, &args[4], t)?;
            let re = regex::Regex::new(&format!("^(?s:{re_src})$")).map_err(|_| {
                EvalError::Query(format!(
                    "invalid regular expression in label_replace(): {re_src}"
                ))
            })?;
            if dst.is_empty() {
                return Err(EvalError::Query(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let mut out = Vec::with_capacity(vec.len());
            for mut s in vec {
                let v = s.labels.get(&src).unwrap_or("").to_string();
                if let Some(caps) = re.captures(&v) {
                    let mut res = String::new();
                    caps.expand(&repl, &mut res);
                    let mut b = s.labels.to_builder();
                    b.set(&dst, &res);
                    s.labels = b.build();
                    if dst == METRIC_NAME {
                        s.drop_name = false;
                    }
                }
                out.push(s);
            }
            Val::Vector(out)
        }
        "label_join" => {
            let vec = ctx.eval_vector(&args[0], t)?;
            let dst = string_arg(ctx, &args[1], t)?;
            let sep = string_arg(ctx, &args[2], t)?;
            let mut srcs = Vec::new();
            for a in &args[3..] {
                srcs.push(string_arg(ctx, a, t)?);
            }
            if dst.is_empty() {
                return Err(EvalError::Query(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            let mut out = Vec::with_capacity(vec.len());
            for mut s in vec {
                let joined: Vec<&str> =
                    srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
                let joined = joined.join(&sep);
                let mut b = s.labels.to_builder();
                b.set(&dst, &joined);
                s.labels = b.build();
                if dst == METRIC_NAME {
                    s.drop_name = false;
                }
                out.push(s);
            }
            Val::Vector(out)
        }
        "sort" | "sort_desc" => {
            let mut vec = ctx.eval_vector(&args[0], t)?;
            let desc = name == "sort_desc";
            vec.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                _ if desc => b.v.total_cmp(&a.v),
                _ => a.v.total_cmp(&b.v),
            });
            Val::Vector(vec)
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut vec = ctx.eval_vector(&args[0], t)?;
            let mut names = Vec::new();
            for a in &args[1..] {
                names.push(string_arg(ctx, a, t)?);
            }
            let desc = name == "sort_by_label_desc";
            vec.sort_by(|a, b| {
                let mut o = Ordering::Equal;
                for n in &names {
                    o = natural_cmp(a.labels.get(n).unwrap_or(""), b.labels.get(n).unwrap_or(""));
                    if o != Ordering::Equal {
                        break;
                    }
                }
                let o = o.then_with(|| labels_natural_cmp(&a.labels, &b.labels));
                if desc { o.reverse() } else { o }
            });
            Val::Vector(vec)
        }
        "absent" => {
            let vec = ctx.eval_vector(&args[0], t)?;
            if vec.is_empty() {
                Val::Vector(vec![Sample {
                    labels: absent_labels(&args[0]),
                    v: 1.0,
                    drop_name: false,
                }])
            } else {
                Val::Vector(Vec::new())
            }
        }
        "year" | "month" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month"
        | "hour" | "minute" => {
            if args.is_empty() {
                let v = date_part(name, t as f64 / 1000.0);
                Val::Vector(vec![Sample {
                    labels: Labels::empty(),
                    v,
                    drop_name: false,
                }])
            } else {
                let vec = ctx.eval_vector(&args[0], t)?;
                Val::Vector(
                    vec.into_iter()
                        .filter(|s| s.v.is_finite())
                        .map(|mut s| {
                            s.v = date_part(name, s.v);
                            s.drop_name = true;
                            s
                        })
                        .collect(),
                )
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        assert_eq!(natural_cmp("4m5", "4m600"), Ordering::Less);
        assert_eq!(natural_cmp("1.11.3", "1.2.3"), Ordering::Greater);
        assert_eq!(natural_cmp("cpu10", "cpu9"), Ordering::Greater);
    }

    #[test]
    fn calendar() {
        // 2024-02-29 12:34:00 UTC
        let t = 1_709_210_040.0;
        assert_eq!(date_part("year", t), 2024.0);
        assert_eq!(date_part("month", t), 2.0);
        assert_eq!(date_part("day_of_month", t), 29.0);
        assert_eq!(date_part("days_in_month", t), 29.0);
        assert_eq!(date_part("day_of_week", t), 4.0);
        assert_eq!(date_part("day_of_year", t), 60.0);
        assert_eq!(date_part("hour", t), 12.0);
        assert_eq!(date_part("minute", t), 34.0);
    }
}
