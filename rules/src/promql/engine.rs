//! Query evaluation: the step loop, selectors, subqueries and the final `__name__`
//! clean-up. Every step is evaluated as an instant query; selector data is fetched
//! once per query for the whole time span it needs, then sliced by binary search.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use promql_parser::label::{MatchOp, Matcher, Matchers};
use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};

use super::{Annotated, Annotations, EvalError, InstantSample, Labels, Series, Storage, Value};

/// Most steps a range query may have, as in Prometheus.
const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// Most steps one subquery evaluation may take: a bound on the work a rule such as
/// `max_over_time(x[1y:1s])` can ask for.
pub(crate) const MAX_SUBQUERY_STEPS: i64 = 1_000_000;

/// Knobs that Prometheus exposes as engine flags.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for the latest sample.
    pub lookback_delta_ms: i64,
    /// Step of a subquery written without one (`x[10m:]`).
    pub default_subquery_step_ms: i64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 5 * 60 * 1000,
            default_subquery_step_ms: 60 * 1000,
        }
    }
}

/// Evaluates parsed PromQL expressions against a [`Storage`].
#[derive(Debug, Clone, Default)]
pub struct Engine {
    pub options: EngineOptions,
}

/// One element of an intermediate instant vector. `drop_name` implements Prometheus 3's
/// delayed name removal: the name stays visible to later label functions and is only
/// removed when the query's result is returned.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub labels: Labels,
    pub v: f64,
    pub drop_name: bool,
}

/// One series of an intermediate range vector.
#[derive(Debug, Clone)]
pub(crate) struct RangeSeries {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
    pub drop_name: bool,
}

/// A filter a parent applies to a child's instant vector (a comparison against a
/// literal, or `and`/`unless` keeping only right-hand samples that can match). Pushed
/// down to selectors and range functions, it keeps samples that would be dropped
/// anyway from ever being built: cloning a stored series' label set costs a cache miss.
pub(crate) type Keep<'k> = &'k dyn Fn(&Labels, f64) -> bool;

/// An intermediate value.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Scalar(f64),
    Str(String),
    Vector(Vec<Sample>),
    Matrix(Vec<RangeSeries>),
}

impl Val {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Str(_) => "string",
            Val::Vector(_) => "instant vector",
            Val::Matrix(_) => "range vector",
        }
    }
}

/// State shared by all steps of one query.
pub(crate) struct Ctx<'a> {
    pub(super) st: &'a dyn Storage,
    pub lookback_ms: i64,
    pub subquery_step_ms: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Step of a range query; 0 for instant queries.
    pub step_ms: i64,
    /// Time span each selector (keyed by its address in the AST) needs from storage.
    pub(super) spans: HashMap<usize, (i64, i64)>,
    pub(super) cache: RefCell<HashMap<usize, Rc<Vec<Series>>>>,
    /// Filtering comparisons of an instant selector with a literal (`x > 0`) whose
    /// answer a range function's pass over the same series (`increase(x[5m])`) can
    /// collect on its way, keyed by that range selector (see `selectors`).
    pub(super) latest_plans: HashMap<usize, Vec<super::selectors::LatestPlan>>,
    /// What those passes collected, keyed by the comparison, with the time it is for.
    pub(super) latest_memo: RefCell<HashMap<usize, (i64, Vec<Sample>)>>,
    pub ann: RefCell<Annotations>,
}

impl Engine {
    pub fn new(options: EngineOptions) -> Self {
        Engine { options }
    }

    /// Evaluates `expr` at one instant.
    pub fn instant(&self, st: &dyn Storage, expr: &Expr, t_ms: i64) -> Result<Value, EvalError> {
        self.instant_annotated(st, expr, t_ms).map(|a| a.value)
    }

    /// Evaluates `expr` at every step in `[start_ms, end_ms]`; scalars become a series
    /// without labels.
    pub fn range(
        &self,
        st: &dyn Storage,
        expr: &Expr,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<Series>, EvalError> {
        self.range_annotated(st, expr, start_ms, end_ms, step_ms)
            .map(|a| a.value)
    }

    /// [`Engine::instant`] with the annotations Prometheus would attach.
    pub fn instant_annotated(
        &self,
        st: &dyn Storage,
        expr: &Expr,
        t_ms: i64,
    ) -> Result<Annotated<Value>, EvalError> {
        let ctx = Ctx::new(self, st, expr, t_ms, t_ms, 0);
        let value = match ctx.eval(expr, t_ms)? {
            Val::Scalar(v) => Value::Scalar { t_ms, v },
            Val::Str(s) => Value::String { t_ms, s },
            Val::Vector(vec) => Value::Vector(
                finish_vector(vec)?
                    .into_iter()
                    .map(|(labels, v)| InstantSample { labels, t_ms, v })
                    .collect(),
            ),
            Val::Matrix(m) => {
                let mut out = Vec::with_capacity(m.len());
                let mut seen = std::collections::HashSet::new();
                for s in m {
                    let labels = if s.drop_name {
                        s.labels.without_name()
                    } else {
                        s.labels
                    };
                    if !seen.insert(labels.clone()) {
                        return Err(EvalError::DuplicateLabelset);
                    }
                    out.push(Series {
                        labels,
                        samples: s.samples,
                    });
                }
                Value::Matrix(out)
            }
        };
        Ok(Annotated {
            value,
            annotations: ctx.ann.into_inner(),
        })
    }

    /// [`Engine::range`] with the annotations Prometheus would attach.
    pub fn range_annotated(
        &self,
        st: &dyn Storage,
        expr: &Expr,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Annotated<Vec<Series>>, EvalError> {
        if step_ms <= 0 {
            return Err(EvalError::Query(
                "zero or negative query resolution step widths are not accepted".into(),
            ));
        }
        // Prometheus's limit, which also bounds the work a single API call can ask for.
        if end_ms.saturating_sub(start_ms) / step_ms > MAX_POINTS_PER_SERIES {
            return Err(EvalError::Query(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
            ));
        }
        let ctx = Ctx::new(self, st, expr, start_ms, end_ms, step_ms);
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut out: Vec<Series> = Vec::new();
        let mut t = start_ms;
        while t <= end_ms {
            let points = match ctx.eval(expr, t)? {
                Val::Scalar(v) => vec![(Labels::empty(), v)],
                Val::Vector(vec) => finish_vector(vec)?,
                other => {
                    return Err(EvalError::Query(format!(
                        "invalid expression type {:?} for range query, must be Scalar or instant Vector",
                        other.type_name()
                    )));
                }
            };
            for (labels, v) in points {
                let i = *index.entry(labels.clone()).or_insert_with(|| {
                    out.push(Series {
                        labels,
                        samples: Vec::new(),
                    });
                    out.len() - 1
                });
                out[i].samples.push((t, v));
            }
            match t.checked_add(step_ms) {
                Some(next) => t = next,
                None => break,
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(Annotated {
            value: out,
            annotations: ctx.ann.into_inner(),
        })
    }
}

/// Applies delayed name removal and refuses results with two identical label sets.
fn finish_vector(vec: Vec<Sample>) -> Result<Vec<(Labels, f64)>, EvalError> {
    let mut seen = std::collections::HashSet::with_capacity(vec.len());
    let mut out = Vec::with_capacity(vec.len());
    for s in vec {
        let labels = if s.drop_name {
            s.labels.without_name()
        } else {
            s.labels
        };
        if !seen.insert(labels.clone()) {
            return Err(EvalError::DuplicateLabelset);
        }
        out.push((labels, s.v));
    }
    Ok(out)
}

pub(crate) fn duration_ms(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => duration_ms(&d),
        Err(e) => -duration_ms(&e.duration()),
    }
}

/// The selector's matchers plus the metric name written before the braces.
pub(crate) fn full_matchers(vs: &VectorSelector) -> Matchers {
    let Some(name) = &vs.name else {
        return vs.matchers.clone();
    };
    let has_name = vs
        .matchers
        .matchers
        .iter()
        .chain(vs.matchers.or_matchers.iter().flatten())
        .any(|m| m.name == super::METRIC_NAME);
    if has_name {
        return vs.matchers.clone();
    }
    let mut m = vs.matchers.clone();
    m.matchers
        .push(Matcher::new(MatchOp::Equal, super::METRIC_NAME, name));
    m
}

impl<'a> Ctx<'a> {
    pub fn new(
        engine: &Engine,
        st: &'a dyn Storage,
        expr: &Expr,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Self {
        let mut ctx = Ctx {
            st,
            lookback_ms: engine.options.lookback_delta_ms,
            subquery_step_ms: engine.options.default_subquery_step_ms,
            start_ms,
            end_ms,
            step_ms,
            spans: HashMap::new(),
            cache: RefCell::new(HashMap::new()),
            latest_plans: HashMap::new(),
            latest_memo: RefCell::new(HashMap::new()),
            ann: RefCell::new(Annotations::default()),
        };
        let mut spans = HashMap::new();
        ctx.collect_spans(expr, start_ms, end_ms, &mut spans);
        ctx.spans = spans;
        if step_ms == 0 {
            ctx.latest_plans = super::selectors::plan_latest(expr, ctx.lookback_ms);
        }
        ctx
    }

    pub fn warn(&self, msg: String) {
        let mut a = self.ann.borrow_mut();
        if !a.warnings.contains(&msg) {
            a.warnings.push(msg);
        }
    }

    pub fn info(&self, msg: String) {
        let mut a = self.ann.borrow_mut();
        if !a.infos.contains(&msg) {
            a.infos.push(msg);
        }
    }

    /// Resolves an `@` modifier to milliseconds.
    pub(super) fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.start_ms),
            Some(AtModifier::End) => Some(self.end_ms),
            Some(AtModifier::At(t)) => Some(system_time_ms(t)),
        }
    }

    /// Records, for every selector, the widest time span any step will read.
    fn collect_spans(&self, e: &Expr, lo: i64, hi: i64, spans: &mut HashMap<usize, (i64, i64)>) {
        let mut add = |vs: &VectorSelector, back: i64| {
            let (l, h) = match self.at_ms(&vs.at) {
                Some(t) => (t, t),
                None => (lo, hi),
            };
            let off = offset_ms(&vs.offset);
            let span = (
                l.saturating_sub(off).saturating_sub(back),
                h.saturating_sub(off),
            );
            let key = vs as *const VectorSelector as usize;
            let e = spans.entry(key).or_insert(span);
            e.0 = e.0.min(span.0);
            e.1 = e.1.max(span.1);
        };
        match e {
            Expr::VectorSelector(vs) => add(vs, self.lookback_ms),
            Expr::MatrixSelector(ms) => add(&ms.vs, duration_ms(&ms.range)),
            Expr::Subquery(sq) => {
                let (l, h) = match self.at_ms(&sq.at) {
                    Some(t) => (t, t),
                    None => (lo, hi),
                };
                let off = offset_ms(&sq.offset);
                let range = duration_ms(&sq.range);
                let inner_lo = l.saturating_sub(off).saturating_sub(range);
                self.collect_spans(&sq.expr, inner_lo, h.saturating_sub(off), spans);
            }
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    self.collect_spans(p, lo, hi, spans);
                }
                self.collect_spans(&a.expr, lo, hi, spans);
            }
            Expr::Unary(u) => self.collect_spans(&u.expr, lo, hi, spans),
            Expr::Binary(b) => {
                self.collect_spans(&b.lhs, lo, hi, spans);
                self.collect_spans(&b.rhs, lo, hi, spans);
            }
            Expr::Paren(p) => self.collect_spans(&p.expr, lo, hi, spans),
            Expr::Call(c) => {
                for a in &c.args.args {
                    self.collect_spans(a, lo, hi, spans);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }

    /// The time span a selector reads over the whole query, if it is part of it.
    pub fn span_of(&self, vs: &VectorSelector) -> Option<(i64, i64)> {
        self.spans
            .get(&(vs as *const VectorSelector as usize))
            .copied()
    }

    /// Evaluates `e` at time `t` (milliseconds).
    pub fn eval(&self, e: &Expr, t: i64) -> Result<Val, EvalError> {
        match e {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Val::Scalar(v) => Ok(Val::Scalar(-v)),
                Val::Vector(mut vec) => {
                    for s in &mut vec {
                        s.v = -s.v;
                        s.drop_name = true;
                    }
                    Ok(Val::Vector(vec))
                }
                other => Err(EvalError::Query(format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => Ok(Val::Vector(
                self.select_instant_with_ts(vs, t)?
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect(),
            )),
            Expr::MatrixSelector(ms) => Ok(Val::Matrix(self.select_range(ms, t)?)),
            Expr::Subquery(sq) => Ok(Val::Matrix(self.subquery(sq, t)?)),
            Expr::Binary(b) => super::binary::eval(self, b, t),
            Expr::Aggregate(a) => super::aggregate::eval(self, a, t),
            Expr::Call(c) => super::functions::call(self, c, t),
            Expr::Extension(_) => Err(EvalError::Query(
                "extension expressions are not supported".into(),
            )),
        }
    }

    /// [`Ctx::eval`] keeping only the instant-vector samples `keep` accepts. Scalars
    /// and strings are returned as they are; errors and annotations are the same as
    /// evaluating in full and filtering afterwards.
    pub fn eval_filtered(&self, e: &Expr, t: i64, keep: Keep<'_>) -> Result<Val, EvalError> {
        let val = match e {
            Expr::Paren(p) => return self.eval_filtered(&p.expr, t, keep),
            Expr::VectorSelector(vs) => {
                return Ok(Val::Vector(self.select_instant_filtered(vs, t, keep)?));
            }
            Expr::Binary(b) => super::binary::eval_filtered(self, b, t, Some(keep))?,
            Expr::Call(c) => super::functions::call_filtered(self, c, t, Some(keep))?,
            _ => self.eval(e, t)?,
        };
        Ok(match val {
            Val::Vector(mut v) => {
                v.retain(|s| keep(&s.labels, s.v));
                Val::Vector(v)
            }
            other => other,
        })
    }

    /// Evaluates an expression that must yield an instant vector.
    pub fn eval_vector(&self, e: &Expr, t: i64) -> Result<Vec<Sample>, EvalError> {
        match self.eval(e, t)? {
            Val::Vector(v) => Ok(v),
            other => Err(EvalError::Query(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates an expression that must yield a scalar.
    pub fn eval_scalar(&self, e: &Expr, t: i64) -> Result<f64, EvalError> {
        match self.eval(e, t)? {
            Val::Scalar(v) => Ok(v),
            other => Err(EvalError::Query(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates an expression that must yield a range vector.
    pub fn eval_matrix(&self, e: &Expr, t: i64) -> Result<Vec<RangeSeries>, EvalError> {
        match self.eval(e, t)? {
            Val::Matrix(m) => Ok(m),
            other => Err(EvalError::Query(format!(
                "expected range vector, got {}",
                other.type_name()
            ))),
        }
    }
}
