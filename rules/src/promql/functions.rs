//! Function calls: argument evaluation and the element-wise (instant vector) functions.
//! Range-vector functions live in `range_functions`, label and ordering functions in
//! `label_functions`, classic-histogram functions in `histogram`.

use promql_parser::parser::{Call, Expr};

use super::engine::{Ctx, Keep, Sample, Val};
use super::{EvalError, Labels, label_functions, range_functions};

/// Go's `math.Max`: NaN wins unless the other side is +Inf.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a == f64::INFINITY || b == f64::INFINITY {
        f64::INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN wins unless the other side is -Inf.
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY || b == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Strips parentheses, which Prometheus ignores when deciding how to treat an argument.
pub(crate) fn unwrap_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_parens(&p.expr),
        other => other,
    }
}

fn map_vector(vec: Vec<Sample>, f: impl Fn(f64) -> f64) -> Val {
    Val::Vector(
        vec.into_iter()
            .map(|mut s| {
                s.v = f(s.v);
                s.drop_name = true;
                s
            })
            .collect(),
    )
}

fn simple(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sgn" => |v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        },
        "acos" => f64::acos,
        "acosh" => f64::acosh,
        "asin" => f64::asin,
        "asinh" => f64::asinh,
        "atan" => f64::atan,
        "atanh" => f64::atanh,
        "cos" => f64::cos,
        "cosh" => f64::cosh,
        "sin" => f64::sin,
        "sinh" => f64::sinh,
        "tan" => f64::tan,
        "tanh" => f64::tanh,
        "deg" => f64::to_degrees,
        "rad" => f64::to_radians,
        _ => return None,
    })
}

pub(crate) fn call(ctx: &Ctx<'_>, c: &Call, t: i64) -> Result<Val, EvalError> {
    call_filtered(ctx, c, t, None)
}

/// [`call`]; range functions build only the output samples `keep` accepts, other
/// functions return everything and leave the filtering to the caller.
pub(crate) fn call_filtered(
    ctx: &Ctx<'_>,
    c: &Call,
    t: i64,
    keep: Option<Keep<'_>>,
) -> Result<Val, EvalError> {
    let name = c.func.name;
    let args = &c.args.args;
    if let Some(f) = simple(name) {
        return Ok(map_vector(ctx.eval_vector(&args[0], t)?, f));
    }
    if let Some(v) = range_functions::call(ctx, name, args, t, keep)? {
        return Ok(v);
    }
    if let Some(v) = label_functions::call(ctx, name, args, t)? {
        return Ok(v);
    }
    let scalar_arg = |i: usize, default: f64| -> Result<f64, EvalError> {
        match args.get(i) {
            Some(a) => ctx.eval_scalar(a, t),
            None => Ok(default),
        }
    };
    match name {
        "time" => Ok(Val::Scalar(t as f64 / 1000.0)),
        "step" => Ok(Val::Scalar(ctx.step_ms as f64 / 1000.0)),
        "range" => Ok(Val::Scalar((ctx.end_ms - ctx.start_ms) as f64 / 1000.0)),
        "start" => Ok(Val::Scalar(ctx.start_ms as f64 / 1000.0)),
        "end" => Ok(Val::Scalar(ctx.end_ms as f64 / 1000.0)),
        "min_of" | "max_of" => {
            let (a, b) = (scalar_arg(0, f64::NAN)?, scalar_arg(1, f64::NAN)?);
            Ok(Val::Scalar(if name == "min_of" {
                go_min(a, b)
            } else {
                go_max(a, b)
            }))
        }
        "pi" => Ok(Val::Scalar(std::f64::consts::PI)),
        "vector" => Ok(Val::Vector(vec![Sample {
            labels: Labels::empty(),
            v: ctx.eval_scalar(&args[0], t)?,
            drop_name: false,
        }])),
        "scalar" => {
            let v = ctx.eval_vector(&args[0], t)?;
            Ok(Val::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN }))
        }
        "round" => {
            let vec = ctx.eval_vector(&args[0], t)?;
            let inv = 1.0 / scalar_arg(1, 1.0)?;
            Ok(map_vector(vec, |v| (v * inv + 0.5).floor() / inv))
        }
        "clamp" => {
            let vec = ctx.eval_vector(&args[0], t)?;
            let (lo, hi) = (scalar_arg(1, 0.0)?, scalar_arg(2, 0.0)?);
            if hi < lo {
                return Ok(Val::Vector(Vec::new()));
            }
            Ok(map_vector(vec, |v| go_max(lo, go_min(hi, v))))
        }
        "clamp_min" => {
            let vec = ctx.eval_vector(&args[0], t)?;
            let lo = scalar_arg(1, 0.0)?;
            Ok(map_vector(vec, |v| go_max(lo, v)))
        }
        "clamp_max" => {
            let vec = ctx.eval_vector(&args[0], t)?;
            let hi = scalar_arg(1, 0.0)?;
            Ok(map_vector(vec, |v| go_min(hi, v)))
        }
        "timestamp" => {
            // A plain selector yields its samples' own timestamps; anything else has
            // already been moved to the evaluation time.
            if let Expr::VectorSelector(vs) = unwrap_parens(&args[0]) {
                let out = ctx
                    .select_instant_with_ts(vs, t)?
                    .into_iter()
                    .map(|(mut s, ts)| {
                        s.v = ts as f64 / 1000.0;
                        s.drop_name = true;
                        s
                    })
                    .collect();
                return Ok(Val::Vector(out));
            }
            let vec = ctx.eval_vector(&args[0], t)?;
            Ok(map_vector(vec, |_| t as f64 / 1000.0))
        }
        "histogram_quantile" => {
            let q = ctx.eval_scalar(&args[0], t)?;
            let vec = ctx.eval_vector(&args[1], t)?;
            super::histogram::histogram_quantile(ctx, q, vec).map(Val::Vector)
        }
        "histogram_fraction" => {
            let lo = ctx.eval_scalar(&args[0], t)?;
            let hi = ctx.eval_scalar(&args[1], t)?;
            let vec = ctx.eval_vector(&args[2], t)?;
            super::histogram::histogram_fraction(lo, hi, vec).map(Val::Vector)
        }
        "histogram_count"
        | "histogram_sum"
        | "histogram_avg"
        | "histogram_stddev"
        | "histogram_stdvar"
        | "histogram_quantiles" => Err(EvalError::NativeHistogram(format!(
            "{name}() works on native histograms only"
        ))),
        _ => Err(EvalError::Query(format!(
            "function {name}() is not supported"
        ))),
    }
}
