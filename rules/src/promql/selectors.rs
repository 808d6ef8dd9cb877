//! Selector evaluation: instant and range selectors, range-function windows and
//! subqueries. Data is fetched once per query per selector; when a single step reads
//! a selector (every instant query) it is streamed or handed over without copies.

use std::collections::HashMap;
use std::rc::Rc;

use promql_parser::label::{MatchOp, Matcher, Matchers};
use promql_parser::parser::token::TokenId;
use promql_parser::parser::{BinaryExpr, Expr, MatrixSelector, SubqueryExpr, VectorSelector};

use super::binary::{filtering_comparison, passes};
use super::engine::{Ctx, Keep, RangeSeries, Sample, Val, duration_ms, full_matchers, offset_ms};
use super::functions::unwrap_parens;
use super::{EvalError, Labels, Series, WindowHints, is_stale_nan};

/// A filtering comparison of an instant selector with a literal (`x > 0`) that a
/// range function's pass over the same series (`increase(x[5m]) > 0 or x > 0`)
/// answers on its way: the newest sample of each window is the selector's sample when
/// the window reaches at least a lookback back from the same time. Only the samples
/// the comparison keeps are collected, so the rest cost no label clone, and the
/// selector then reads nothing from storage: rules that look at a counter's increase
/// and at its value otherwise read every series twice.
#[derive(Debug, Clone)]
pub(crate) struct LatestPlan {
    /// The comparison, by address: where the collected samples are used.
    cmp: usize,
    op: TokenId,
    lit: f64,
    lit_on_left: bool,
}

impl LatestPlan {
    #[inline]
    fn keeps(&self, v: f64) -> bool {
        if self.lit_on_left {
            passes(self.op, self.lit, v)
        } else {
            passes(self.op, v, self.lit)
        }
    }
}

/// The comparisons each range selector of `expr` (keyed by its vector selector's
/// address) can answer: those over a selector with the same matchers whose
/// lookback the range covers. Whether both read at the same time is checked when the
/// samples are used.
pub(crate) fn plan_latest(expr: &Expr, lookback_ms: i64) -> HashMap<usize, Vec<LatestPlan>> {
    let mut windows: Vec<(usize, Matchers)> = Vec::new();
    let mut cmps: Vec<(Matchers, LatestPlan)> = Vec::new();
    walk(expr, &mut |e| match e {
        Expr::MatrixSelector(ms) if duration_ms(&ms.range) >= lookback_ms => {
            windows.push((
                &ms.vs as *const VectorSelector as usize,
                full_matchers(&ms.vs),
            ));
        }
        Expr::Binary(b) if filtering_comparison(b) => {
            let sides = (unwrap_parens(&b.lhs), unwrap_parens(&b.rhs));
            let (vs, lit, lit_on_left) = match sides {
                (Expr::VectorSelector(vs), Expr::NumberLiteral(n)) => (vs, n.val, false),
                (Expr::NumberLiteral(n), Expr::VectorSelector(vs)) => (vs, n.val, true),
                _ => return,
            };
            let plan = LatestPlan {
                cmp: b as *const BinaryExpr as usize,
                op: b.op.id(),
                lit,
                lit_on_left,
            };
            cmps.push((full_matchers(vs), plan));
        }
        _ => {}
    });
    let mut plans: HashMap<usize, Vec<LatestPlan>> = HashMap::new();
    for (key, m) in &windows {
        for (cm, plan) in &cmps {
            if cm == m {
                plans.entry(*key).or_default().push(plan.clone());
            }
        }
    }
    plans
}

/// The metric names `expr` reads, or `None` when a selector may read series of any
/// name (one written without a metric name, or matching the name otherwise than by
/// equality).
pub(crate) fn metric_names_read(expr: &Expr) -> Option<Vec<String>> {
    let mut names = Some(Vec::new());
    walk(expr, &mut |e| {
        let vs = match e {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return,
        };
        let m = full_matchers(vs);
        let name = m
            .matchers
            .iter()
            .find(|m| {
                m.name == super::METRIC_NAME
                    && matches!(m.op, MatchOp::Equal)
                    && !m.value.is_empty()
            })
            .map(|m| m.value.clone());
        match (name, &mut names) {
            (Some(n), Some(v)) => v.push(n),
            _ => names = None,
        }
    });
    names
}

/// Calls `f` with `e` and every expression below it.
fn walk(e: &Expr, f: &mut dyn FnMut(&Expr)) {
    f(e);
    match e {
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                walk(p, f);
            }
            walk(&a.expr, f);
        }
        Expr::Unary(u) => walk(&u.expr, f),
        Expr::Binary(b) => {
            walk(&b.lhs, f);
            walk(&b.rhs, f);
        }
        Expr::Paren(p) => walk(&p.expr, f),
        Expr::Subquery(sq) => walk(&sq.expr, f),
        Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, f)),
        Expr::MatrixSelector(_)
        | Expr::VectorSelector(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => {}
    }
}

/// Receives one series of a range argument: labels, whether its name is to be
/// dropped, its window's samples (staleness markers removed) and what is known of them.
pub(crate) type WindowFn<'f> = dyn FnMut(&Labels, bool, &[(i64, f64)], WindowHints) + 'f;

/// Selected series, shared between steps or owned by the only step that reads them.
enum Fetched {
    Shared(Rc<Vec<Series>>),
    Owned(Vec<Series>),
}

impl Fetched {
    fn len(&self) -> usize {
        match self {
            Fetched::Shared(s) => s.len(),
            Fetched::Owned(s) => s.len(),
        }
    }
}

impl Ctx<'_> {
    /// The selector's series over the whole span the query needs. When only one
    /// evaluation time reads the selector (every instant query, the usual rule
    /// evaluation) the data is handed over without caching, so windows can be cut
    /// in place instead of copied; otherwise it is fetched once and shared by steps.
    fn fetch(&self, vs: &VectorSelector, window_ms: i64) -> Result<Fetched, EvalError> {
        let key = vs as *const VectorSelector as usize;
        if let Some(s) = self.cache.borrow().get(&key) {
            return Ok(Fetched::Shared(Rc::clone(s)));
        }
        let (lo, hi) = self
            .spans
            .get(&key)
            .copied()
            .unwrap_or((i64::MIN / 4, i64::MAX / 4));
        let got = self.st.select(&full_matchers(vs), lo, hi)?;
        if hi - lo == window_ms {
            return Ok(Fetched::Owned(got));
        }
        let got = Rc::new(got);
        self.cache.borrow_mut().insert(key, Rc::clone(&got));
        Ok(Fetched::Shared(got))
    }

    pub(super) fn selector_time(&self, vs: &VectorSelector, t: i64) -> i64 {
        self.at_ms(&vs.at).unwrap_or(t) - offset_ms(&vs.offset)
    }

    /// The samples of an instant selector that `keep` accepts. When only this step
    /// reads the selector, label sets are cloned only for the samples kept.
    pub fn select_instant_filtered(
        &self,
        vs: &VectorSelector,
        t: i64,
        keep: Keep<'_>,
    ) -> Result<Vec<Sample>, EvalError> {
        let tt = self.selector_time(vs, t);
        if self.latest_single_use(vs, tt) {
            let mut out = Vec::new();
            self.st.select_latest_each(
                &full_matchers(vs),
                tt,
                self.lookback_ms,
                &mut |labels, _, v| {
                    if !is_stale_nan(v) && keep(labels, v) {
                        out.push(Sample {
                            labels: labels.clone(),
                            v,
                            drop_name: false,
                        });
                    }
                },
            )?;
            return Ok(out);
        }
        Ok(self
            .select_instant_with_ts(vs, t)?
            .into_iter()
            .map(|(s, _)| s)
            .filter(|s| keep(&s.labels, s.v))
            .collect())
    }

    /// An instant selector's samples that `keep` accepts, read only from the series
    /// that also carry every label of one of `narrow` (each list read in turn; a
    /// series may come back once per list it matches). `None` when the selector is
    /// not read on its own by this step, so the caller must evaluate it in full.
    pub fn select_instant_narrowed(
        &self,
        vs: &VectorSelector,
        t: i64,
        narrow: &[Vec<(&str, &str)>],
        keep: Keep<'_>,
    ) -> Result<Option<Vec<Sample>>, EvalError> {
        let tt = self.selector_time(vs, t);
        if !self.latest_single_use(vs, tt) {
            return Ok(None);
        }
        let base = full_matchers(vs);
        let mut out = Vec::new();
        for pairs in narrow {
            let mut m = base.clone();
            m.matchers.extend(
                pairs
                    .iter()
                    .map(|&(n, v)| Matcher::new(MatchOp::Equal, n, v)),
            );
            self.st
                .select_latest_each(&m, tt, self.lookback_ms, &mut |labels, _, v| {
                    if !is_stale_nan(v) && keep(labels, v) {
                        out.push(Sample {
                            labels: labels.clone(),
                            v,
                            drop_name: false,
                        });
                    }
                })?;
        }
        Ok(Some(out))
    }

    /// The samples of comparison `b` (`vs` against a literal) that a range function's
    /// pass over the same series collected at this step, if one did (see
    /// [`LatestPlan`]): the same samples, in the same order, as reading `vs` with the
    /// comparison as filter.
    pub fn take_latest(&self, b: &BinaryExpr, vs: &VectorSelector, t: i64) -> Option<Vec<Sample>> {
        let tt = self.selector_time(vs, t);
        if !self.latest_single_use(vs, tt) {
            return None;
        }
        match self
            .latest_memo
            .borrow_mut()
            .remove(&(b as *const BinaryExpr as usize))
        {
            Some((at, samples)) if at == tt => Some(samples),
            _ => None,
        }
    }

    /// Whether this step is the only reader of an instant selector at `tt`, so it can
    /// ask storage for the newest samples alone instead of fetching and caching.
    fn latest_single_use(&self, vs: &VectorSelector, tt: i64) -> bool {
        let key = vs as *const VectorSelector as usize;
        self.spans
            .get(&key)
            .is_some_and(|&(lo, hi)| hi - lo == self.lookback_ms && hi == tt)
            && !self.cache.borrow().contains_key(&key)
    }

    /// Latest non-stale sample within the lookback window, with its timestamp.
    pub fn select_instant_with_ts(
        &self,
        vs: &VectorSelector,
        t: i64,
    ) -> Result<Vec<(Sample, i64)>, EvalError> {
        let tt = self.selector_time(vs, t);
        if self.latest_single_use(vs, tt) {
            let latest = self
                .st
                .select_latest(&full_matchers(vs), tt, self.lookback_ms)?;
            return Ok(latest
                .into_iter()
                .filter(|&(_, _, v)| !is_stale_nan(v))
                .map(|(labels, ts, v)| {
                    (
                        Sample {
                            labels,
                            v,
                            drop_name: false,
                        },
                        ts,
                    )
                })
                .collect());
        }
        let fetched = self.fetch(vs, self.lookback_ms)?;
        let mut out = Vec::with_capacity(fetched.len());
        let mut take = |labels: &Labels, samples: &[(i64, f64)]| {
            let hi = samples.partition_point(|&(ts, _)| ts <= tt);
            if hi == 0 {
                return;
            }
            let (ts, v) = samples[hi - 1];
            if ts <= tt - self.lookback_ms || is_stale_nan(v) {
                return;
            }
            out.push((
                Sample {
                    labels: labels.clone(),
                    v,
                    drop_name: false,
                },
                ts,
            ));
        };
        match &fetched {
            Fetched::Shared(series) => series.iter().for_each(|s| take(&s.labels, &s.samples)),
            Fetched::Owned(series) => series.iter().for_each(|s| take(&s.labels, &s.samples)),
        }
        Ok(out)
    }

    pub(super) fn select_range(
        &self,
        ms: &MatrixSelector,
        t: i64,
    ) -> Result<Vec<RangeSeries>, EvalError> {
        let tt = self.selector_time(&ms.vs, t);
        let range = duration_ms(&ms.range);
        let window = |samples: &[(i64, f64)]| {
            let lo = samples.partition_point(|&(ts, _)| ts <= tt - range);
            let hi = samples.partition_point(|&(ts, _)| ts <= tt);
            (lo, hi.max(lo))
        };
        let mut out = Vec::new();
        match self.fetch(&ms.vs, range)? {
            Fetched::Shared(series) => {
                out.reserve(series.len());
                for s in series.iter() {
                    let (lo, hi) = window(&s.samples);
                    let samples: Vec<(i64, f64)> = s.samples[lo..hi]
                        .iter()
                        .copied()
                        .filter(|&(_, v)| !is_stale_nan(v))
                        .collect();
                    if !samples.is_empty() {
                        out.push(RangeSeries {
                            labels: s.labels.clone(),
                            samples,
                            drop_name: false,
                        });
                    }
                }
            }
            Fetched::Owned(series) => {
                out.reserve(series.len());
                for Series {
                    labels,
                    mut samples,
                } in series
                {
                    let (lo, hi) = window(&samples);
                    samples.truncate(hi);
                    samples.drain(..lo);
                    samples.retain(|&(_, v)| !is_stale_nan(v));
                    if !samples.is_empty() {
                        out.push(RangeSeries {
                            labels,
                            samples,
                            drop_name: false,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Calls `f` with every series of a range argument and its non-stale samples in
    /// the window at `t`. When only this step reads the selector, windows come
    /// straight from storage and are never copied. `edges_only`: `f` reads no more
    /// than a window's first and last samples where the hints say those suffice
    /// (see [`crate::promql::Storage::select_each_hinted`]).
    pub fn for_each_window(
        &self,
        e: &Expr,
        t: i64,
        edges_only: bool,
        f: &mut WindowFn<'_>,
    ) -> Result<(), EvalError> {
        if let Expr::MatrixSelector(ms) = super::functions::unwrap_parens(e) {
            let key = &ms.vs as *const VectorSelector as usize;
            let range = duration_ms(&ms.range);
            let tt = self.selector_time(&ms.vs, t);
            let single_use = self
                .spans
                .get(&key)
                .is_some_and(|&(lo, hi)| hi - lo == range && hi == tt);
            if single_use && !self.cache.borrow().contains_key(&key) {
                let mut buf = Vec::new();
                let plans = self
                    .latest_plans
                    .get(&key)
                    .map_or(&[][..], |p| p.as_slice());
                let mut latest: Vec<Vec<Sample>> = vec![Vec::new(); plans.len()];
                let since = tt - self.lookback_ms;
                // The window is open on the left: (tt - range, tt].
                self.st.select_each_hinted(
                    &full_matchers(&ms.vs),
                    tt - range + 1,
                    tt,
                    edges_only,
                    &mut |labels, samples, hints| {
                        // The newest sample, staleness markers included, is what an
                        // instant selector at `tt` reads (the range covers the lookback).
                        if !plans.is_empty()
                            && let Some(&(ts, v)) = samples.last()
                            && ts > since
                            && !is_stale_nan(v)
                        {
                            for (p, out) in plans.iter().zip(&mut latest) {
                                if p.keeps(v) {
                                    out.push(Sample {
                                        labels: labels.clone(),
                                        v,
                                        drop_name: false,
                                    });
                                }
                            }
                        }
                        // No early exit: a branch-free pass over a window that
                        // (almost always) holds no marker is the cheaper test, and
                        // none at all where the store knows there is none.
                        if !hints.no_stale
                            && samples
                                .iter()
                                .fold(false, |any, &(_, v)| any | is_stale_nan(v))
                        {
                            buf.clear();
                            buf.extend(samples.iter().copied().filter(|&(_, v)| !is_stale_nan(v)));
                            if !buf.is_empty() {
                                // Dropping markers joins samples the hints never compared.
                                let hints = WindowHints {
                                    no_stale: true,
                                    no_decrease: false,
                                };
                                f(labels, false, &buf, hints);
                            }
                        } else if !samples.is_empty() {
                            let hints = WindowHints {
                                no_stale: true,
                                ..hints
                            };
                            f(labels, false, samples, hints);
                        }
                    },
                )?;
                let mut memo = self.latest_memo.borrow_mut();
                for (p, samples) in plans.iter().zip(latest) {
                    memo.insert(p.cmp, (tt, samples));
                }
                return Ok(());
            }
        }
        for s in self.eval_matrix(e, t)? {
            f(&s.labels, s.drop_name, &s.samples, WindowHints::default());
        }
        Ok(())
    }

    pub(super) fn subquery(
        &self,
        sq: &SubqueryExpr,
        t: i64,
    ) -> Result<Vec<RangeSeries>, EvalError> {
        let end = self.at_ms(&sq.at).unwrap_or(t) - offset_ms(&sq.offset);
        let range = duration_ms(&sq.range);
        let step = sq
            .step
            .as_ref()
            .map(duration_ms)
            .unwrap_or(self.subquery_step_ms);
        if step <= 0 {
            return Err(EvalError::Query("subquery step must be positive".into()));
        }
        let left = end.saturating_sub(range);
        if range / step > super::engine::MAX_SUBQUERY_STEPS {
            return Err(EvalError::Query(format!(
                "subquery would take more than {} steps",
                super::engine::MAX_SUBQUERY_STEPS
            )));
        }
        // First step strictly after the window's open left edge, aligned to the step.
        let mut ts = step * (left / step);
        if ts <= left {
            ts += step;
        }
        let mut index: HashMap<(Labels, bool), usize> = HashMap::new();
        let mut out: Vec<RangeSeries> = Vec::new();
        while ts <= end {
            let points: Vec<Sample> = match self.eval(&sq.expr, ts)? {
                Val::Scalar(v) => vec![Sample {
                    labels: Labels::empty(),
                    v,
                    drop_name: false,
                }],
                Val::Vector(v) => v,
                other => {
                    return Err(EvalError::Query(format!(
                        "subquery is only allowed on instant vector, got {} instead",
                        other.type_name()
                    )));
                }
            };
            for s in points {
                let key = (s.labels.clone(), s.drop_name);
                let i = *index.entry(key).or_insert_with(|| {
                    out.push(RangeSeries {
                        labels: s.labels,
                        samples: Vec::new(),
                        drop_name: s.drop_name,
                    });
                    out.len() - 1
                });
                out[i].samples.push((ts, s.v));
            }
            match ts.checked_add(step) {
                Some(next) => ts = next,
                None => break,
            }
        }
        Ok(out)
    }
}
