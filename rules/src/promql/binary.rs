//! Binary operators: arithmetic, comparison (filtering or `bool`) and set operators,
//! with `on`/`ignoring` and `group_left`/`group_right` vector matching. Matching hashes
//! each side by its matching-label signature, so the cost is linear in series.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD,
    T_MUL, T_NEQ, T_POW, T_SUB, TokenId,
};
use promql_parser::parser::{BinaryExpr, Expr, LabelModifier, VectorMatchCardinality};

use super::engine::{Ctx, Keep, Sample, Val};
use super::functions::unwrap_parens;
use super::{EvalError, Labels, METRIC_NAME};

fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Whether `b` is a comparison that filters (no `bool`), keeping samples unchanged.
pub(crate) fn filtering_comparison(b: &BinaryExpr) -> bool {
    is_comparison(b.op.id()) && !b.modifier.as_ref().is_some_and(|m| m.return_bool)
}

/// Whether comparison `op` keeps the pair (false for any other operator).
pub(crate) fn passes(op: TokenId, l: f64, r: f64) -> bool {
    apply(op, l, r).is_ok_and(|(_, k)| k)
}

fn is_set(op: TokenId) -> bool {
    matches!(op, T_LAND | T_LOR | T_LUNLESS)
}

/// Applies `op`; for comparisons the boolean says whether the pair is kept.
fn apply(op: TokenId, l: f64, r: f64) -> Result<(f64, bool), EvalError> {
    Ok(match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_POW => (l.powf(r), true),
        T_MOD => (l % r, true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => return Err(EvalError::Query(format!("operator {op} not allowed here"))),
    })
}

pub(crate) fn eval(ctx: &Ctx<'_>, b: &BinaryExpr, t: i64) -> Result<Val, EvalError> {
    eval_filtered(ctx, b, t, None)
}

/// Most distinct left-hand signatures for which `and`/`unless` read a right-hand
/// selector one signature at a time instead of in full.
const MAX_NARROWED: usize = 64;

/// The literal a side is, if it is one (parentheses aside).
fn literal(e: &Expr) -> Option<f64> {
    match unwrap_parens(e) {
        Expr::NumberLiteral(n) => Some(n.val),
        _ => None,
    }
}

/// Evaluates `b`. A filtering comparison against a literal (`x > 0`) hands its test
/// down to the vector side, and `and`/`unless` hand the left side's signatures down to
/// the right side, so samples that cannot reach the result are never built. `keep`
/// (the parent's own filter) is applied to the result; the result is the same as
/// evaluating in full and filtering afterwards.
pub(crate) fn eval_filtered(
    ctx: &Ctx<'_>,
    b: &BinaryExpr,
    t: i64,
    keep: Option<Keep<'_>>,
) -> Result<Val, EvalError> {
    let val = eval_inner(ctx, b, t, keep)?;
    Ok(match (keep, val) {
        (Some(k), Val::Vector(mut v)) => {
            v.retain(|s| k(&s.labels, s.v));
            Val::Vector(v)
        }
        (_, other) => other,
    })
}

fn eval_inner(
    ctx: &Ctx<'_>,
    b: &BinaryExpr,
    t: i64,
    keep: Option<Keep<'_>>,
) -> Result<Val, EvalError> {
    let op = b.op.id();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    if b.modifier
        .as_ref()
        .is_some_and(|m| m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some())
    {
        return Err(EvalError::Query("fill modifiers are not supported".into()));
    }
    // A filtering comparison keeps the vector side's samples unchanged (labels, value
    // and name flag), so the test and the parent's filter can both run at the source.
    let filtering = is_comparison(op) && !return_bool;
    let passes = |l: f64, r: f64| passes(op, l, r);
    let parent = |l: &Labels, v: f64| keep.is_none_or(|k| k(l, v));
    // Collected already by a range function's pass over the same series?
    let collected = |side: &Expr| match unwrap_parens(side) {
        Expr::VectorSelector(vs) if filtering => ctx.take_latest(b, vs, t).map(|mut v| {
            v.retain(|s| parent(&s.labels, s.v));
            Val::Vector(v)
        }),
        _ => None,
    };
    if filtering && let Some(s) = literal(&b.rhs) {
        let lhs = match collected(&b.lhs) {
            Some(v) => v,
            None => ctx.eval_filtered(&b.lhs, t, &|l, v| passes(v, s) && parent(l, v))?,
        };
        let rhs = ctx.eval(&b.rhs, t)?;
        return combine(op, b, lhs, rhs, return_bool);
    }
    if filtering && literal(&b.lhs).is_some() {
        let lhs = ctx.eval(&b.lhs, t)?;
        if let Val::Scalar(s) = lhs {
            let rhs = match collected(&b.rhs) {
                Some(v) => v,
                None => ctx.eval_filtered(&b.rhs, t, &|l, v| passes(s, v) && parent(l, v))?,
            };
            return combine(op, b, lhs, rhs, return_bool);
        }
        let rhs = ctx.eval(&b.rhs, t)?;
        return combine(op, b, lhs, rhs, return_bool);
    }
    // Arithmetic with a literal (`rate(x[5m]) * 60 > 8`) keeps each sample's labels:
    // the parent's filter, applied to the value the operator will compute, runs at the
    // vector side's source, so samples it drops are never built.
    if let Some(k) = keep
        && !is_comparison(op)
        && !is_set(op)
    {
        if let Some(s) = literal(&b.rhs) {
            let lhs = ctx.eval_filtered(&b.lhs, t, &|l, v| {
                apply(op, v, s).is_ok_and(|(r, _)| k(l, r))
            })?;
            let rhs = ctx.eval(&b.rhs, t)?;
            return combine(op, b, lhs, rhs, return_bool);
        }
        if let Some(s) = literal(&b.lhs) {
            let lhs = ctx.eval(&b.lhs, t)?;
            let rhs = ctx.eval_filtered(&b.rhs, t, &|l, v| {
                apply(op, s, v).is_ok_and(|(r, _)| k(l, r))
            })?;
            return combine(op, b, lhs, rhs, return_bool);
        }
    }
    let lhs = ctx.eval(&b.lhs, t)?;
    // `and`/`unless` keep a subset of the left side: with nothing on the left the
    // right side cannot change the result, so it is not evaluated (alert rules of
    // the form `a > x unless b offset 5m` are mostly empty on the left).
    if matches!(op, T_LAND | T_LUNLESS)
        && let Val::Vector(l) = &lhs
    {
        if l.is_empty() {
            return Ok(Val::Vector(Vec::new()));
        }
        // Only right-hand samples whose signature is on the left can matter.
        let m = Matching::new(b);
        let sg = Signer::new(&m);
        let mut firsts: HashMap<u64, &Labels> = HashMap::new();
        for s in l {
            firsts.entry(sg.sign(&s.labels)).or_insert(&s.labels);
        }
        let pred = |l: &Labels, _: f64| firsts.contains_key(&sg.sign(l));
        // A right-hand selector is read only where its series carry the matching
        // labels of some left-hand sample, when there are few of those: the
        // signature test then sees a handful of series instead of all of them.
        let narrowed = match unwrap_parens(&b.rhs) {
            Expr::VectorSelector(vs) if firsts.len() <= MAX_NARROWED => {
                let narrow: Vec<Vec<(&str, &str)>> = firsts
                    .values()
                    .map(|l| l.iter().filter(|&(n, _)| sg.in_signature(n)).collect())
                    .collect();
                ctx.select_instant_narrowed(vs, t, &narrow, &pred)?
            }
            _ => None,
        };
        let rhs = match narrowed {
            Some(v) => Val::Vector(v),
            None => ctx.eval_filtered(&b.rhs, t, &pred)?,
        };
        return combine(op, b, lhs, rhs, return_bool);
    }
    let rhs = ctx.eval(&b.rhs, t)?;
    combine(op, b, lhs, rhs, return_bool)
}

/// Applies the operator to both evaluated sides.
fn combine(
    op: TokenId,
    b: &BinaryExpr,
    lhs: Val,
    rhs: Val,
    return_bool: bool,
) -> Result<Val, EvalError> {
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => {
            let (v, keep) = apply(op, l, r)?;
            if is_comparison(op) {
                Ok(Val::Scalar(if keep { 1.0 } else { 0.0 }))
            } else {
                Ok(Val::Scalar(v))
            }
        }
        (Val::Vector(vec), Val::Scalar(s)) => vector_scalar(op, vec, s, false, return_bool),
        (Val::Scalar(s), Val::Vector(vec)) => vector_scalar(op, vec, s, true, return_bool),
        (Val::Vector(l), Val::Vector(r)) => {
            let m = Matching::new(b);
            if is_set(op) {
                Ok(Val::Vector(set_op(op, l, r, &m)))
            } else {
                vector_vector(op, l, r, &m, return_bool).map(Val::Vector)
            }
        }
        (l, r) => Err(EvalError::Query(format!(
            "binary expression must contain only scalar and instant vector types, got {} and {}",
            l.type_name(),
            r.type_name()
        ))),
    }
}

fn vector_scalar(
    op: TokenId,
    vec: Vec<Sample>,
    s: f64,
    scalar_on_left: bool,
    return_bool: bool,
) -> Result<Val, EvalError> {
    let mut out = Vec::with_capacity(vec.len());
    for mut smp in vec {
        let (l, r) = if scalar_on_left {
            (s, smp.v)
        } else {
            (smp.v, s)
        };
        let (mut v, mut keep) = apply(op, l, r)?;
        if is_comparison(op) {
            // The vector element's value is the output, whichever side it was on.
            v = smp.v;
            if return_bool {
                v = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
        }
        if !keep {
            continue;
        }
        smp.v = v;
        if !is_comparison(op) || return_bool {
            smp.drop_name = true;
        }
        out.push(smp);
    }
    Ok(Val::Vector(out))
}

/// The `on`/`ignoring` and `group_*` parts of a binary expression.
struct Matching {
    on: bool,
    labels: Vec<String>,
    card: VectorMatchCardinality,
}

impl Matching {
    fn new(b: &BinaryExpr) -> Self {
        let (on, labels) = match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
            Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
            Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
            None => (false, Vec::new()),
        };
        let card = b
            .modifier
            .as_ref()
            .map(|m| m.card.clone())
            .unwrap_or(VectorMatchCardinality::OneToOne);
        Matching { on, labels, card }
    }

    /// The labels two samples must share to match; `ignoring` never compares names.
    fn signature_labels(&self, l: &Labels) -> Labels {
        if self.on {
            l.filter(&self.labels, true)
        } else {
            l.filter(&self.ignored(), false)
        }
    }

    fn ignored(&self) -> Vec<String> {
        let mut drop = self.labels.clone();
        drop.push(METRIC_NAME.to_string());
        drop
    }
}

/// Hashes samples by their matching labels without building label sets.
struct Signer<'m> {
    m: &'m Matching,
    ignored: Vec<String>,
}

impl<'m> Signer<'m> {
    fn new(m: &'m Matching) -> Self {
        Signer {
            m,
            ignored: m.ignored(),
        }
    }

    /// Whether label `name` is part of the signature.
    fn in_signature(&self, name: &str) -> bool {
        if self.m.on {
            self.m.labels.iter().any(|x| x == name)
        } else {
            !self.ignored.iter().any(|x| x == name)
        }
    }

    fn sign(&self, l: &Labels) -> u64 {
        if self.m.on {
            l.hash_filtered(&self.m.labels, true)
        } else {
            l.hash_filtered(&self.ignored, false)
        }
    }
}

fn set_op(op: TokenId, l: Vec<Sample>, r: Vec<Sample>, m: &Matching) -> Vec<Sample> {
    let sg = Signer::new(m);
    match op {
        T_LAND => {
            let rs: HashSet<u64> = r.iter().map(|s| sg.sign(&s.labels)).collect();
            l.into_iter()
                .filter(|s| rs.contains(&sg.sign(&s.labels)))
                .collect()
        }
        T_LUNLESS => {
            let rs: HashSet<u64> = r.iter().map(|s| sg.sign(&s.labels)).collect();
            l.into_iter()
                .filter(|s| !rs.contains(&sg.sign(&s.labels)))
                .collect()
        }
        _ => {
            let ls: HashSet<u64> = l.iter().map(|s| sg.sign(&s.labels)).collect();
            let mut out = l;
            out.extend(r.into_iter().filter(|s| !ls.contains(&sg.sign(&s.labels))));
            out
        }
    }
}

fn vector_vector(
    op: TokenId,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    m: &Matching,
    return_bool: bool,
) -> Result<Vec<Sample>, EvalError> {
    let (include, swapped) = match &m.card {
        VectorMatchCardinality::ManyToMany => {
            return Err(EvalError::Query(
                "many-to-many only allowed for set operators".into(),
            ));
        }
        VectorMatchCardinality::OneToOne => (Vec::new(), false),
        VectorMatchCardinality::ManyToOne(l) => (l.labels.clone(), false),
        VectorMatchCardinality::OneToMany(l) => (l.labels.clone(), true),
    };
    let one_to_one = matches!(m.card, VectorMatchCardinality::OneToOne);
    // The "one" side is always indexed; group_right swaps the roles.
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    let sg = Signer::new(m);
    let mut index: HashMap<u64, usize> = HashMap::with_capacity(one.len());
    for (i, s) in one.iter().enumerate() {
        let sig = sg.sign(&s.labels);
        if let Some(&j) = index.get(&sig) {
            let side = if swapped { "left" } else { "right" };
            return Err(EvalError::Query(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                m.signature_labels(&s.labels).go_string(),
                one[j].labels.go_string(),
                s.labels.go_string()
            )));
        }
        index.insert(sig, i);
    }
    let drop_name_op = !is_comparison(op) || return_bool;
    let mut matched_sigs: HashSet<u64> = HashSet::new();
    let mut out_labels: HashSet<Labels> = HashSet::new();
    let mut out = Vec::new();
    for ms in &many {
        let sig = sg.sign(&ms.labels);
        let Some(&j) = index.get(&sig) else { continue };
        let os = &one[j];
        // Checked before filtering: a comparison must not hide an ambiguous match.
        if one_to_one && !matched_sigs.insert(sig) {
            return Err(EvalError::Query(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
            ));
        }
        let (l, r) = if swapped { (os.v, ms.v) } else { (ms.v, os.v) };
        let (mut v, mut keep) = apply(op, l, r)?;
        if return_bool {
            v = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if !keep {
            continue;
        }
        let labels = result_labels(&ms.labels, &os.labels, m, &include, one_to_one);
        if !one_to_one && !out_labels.insert(labels.clone()) {
            return Err(EvalError::Query(
                "multiple matches for labels: grouping labels must ensure unique matches".into(),
            ));
        }
        out.push(Sample {
            labels,
            v,
            drop_name: ms.drop_name || drop_name_op,
        });
    }
    Ok(out)
}

fn result_labels(
    many: &Labels,
    one: &Labels,
    m: &Matching,
    include: &[String],
    one_to_one: bool,
) -> Labels {
    if one_to_one && m.on {
        return many.filter(&m.labels, true);
    }
    if (!one_to_one || m.labels.is_empty()) && include.is_empty() {
        return many.clone();
    }
    let mut b = many.to_builder();
    if one_to_one {
        for l in &m.labels {
            b.del(l);
        }
    }
    for l in include {
        match one.get(l) {
            Some(v) => b.set(l, v),
            None => b.del(l),
        };
    }
    b.build()
}
