//! A rule group evaluator with Prometheus's `rules/group.go` semantics: rules run in
//! file order and each sees the samples the rules before it wrote at the same instant;
//! a series a rule stops producing gets a staleness marker; alerting rules write
//! `ALERTS`/`ALERTS_FOR_STATE` once their `for` state was restored after a restart.
//!
//! [`Group::eval`] does no I/O: it reads the caller's [`Storage`] and returns what to
//! append (recorded samples, alert series, staleness markers) plus the alert
//! transitions, which the caller stores and notifies.

mod overlay;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::alerting::{Alert, AlertState, AlertingRule};
use crate::promql::{
    Engine, InstantSample, Labels, LabelsBuilder, METRIC_NAME, Matchers, MemoryStorage, Series,
    Storage, Value, stale_nan,
};
use crate::rulefile::{Recovery, Rule, RuleError, RuleGroup, RuleKind, load_file};
use crate::template::{Env, QuerySample};
use overlay::Overlay;

/// Settings Prometheus takes from its global config and flags.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// Interval of a group that names none (`global.evaluation_interval`).
    pub default_interval_ms: i64,
    pub external_labels: Vec<(String, String)>,
    pub external_url: String,
    /// Restore `for` state from `ALERTS_FOR_STATE` after the second evaluation, as a
    /// restarted Prometheus does. Without it, alert series are written from the start.
    pub restore_for_state: bool,
    /// `--rules.alert.for-outage-tolerance`: older state is not restored.
    pub outage_tolerance_ms: i64,
    /// `--rules.alert.for-grace-period`: minimum time left to wait after a restore.
    pub for_grace_period_ms: i64,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            default_interval_ms: 60_000,
            external_labels: Vec::new(),
            external_url: String::new(),
            restore_for_state: true,
            outage_tolerance_ms: 3_600_000,
            for_grace_period_ms: 600_000,
        }
    }
}

#[derive(Debug, Clone)]
enum GroupRule {
    Recording(Rule),
    Alerting(AlertingRule),
}

/// A change of an alert's state during one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertTransition {
    pub rule: String,
    /// The rule's `recovery:` block, for the remediation policy to act on.
    pub recovery: Option<Recovery>,
    pub from: AlertState,
    pub to: AlertState,
    pub alert: Alert,
}

/// A rule that failed to evaluate this round; the other rules still ran.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleEvalError {
    pub rule: String,
    pub error: String,
}

/// What one evaluation produced.
#[derive(Debug, Clone, Default)]
pub struct GroupResult {
    /// Samples to append, in evaluation order: recorded series, alert series, and
    /// staleness markers for series no longer produced.
    pub samples: Vec<InstantSample>,
    pub transitions: Vec<AlertTransition>,
    pub errors: Vec<RuleEvalError>,
    /// One entry per rule, in the group's order: what `/api/v1/rules` reports as each
    /// rule's `evaluationTime`, `health` and `lastError`.
    pub rule_outcomes: Vec<RuleOutcome>,
}

/// How one rule's evaluation went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleOutcome {
    pub eval_seconds: f64,
    pub error: Option<String>,
}

/// One rule of a group, as callers list it (`/api/v1/rules`).
#[derive(Debug, Clone, Copy)]
pub enum RuleRef<'a> {
    Recording(&'a Rule),
    Alerting(&'a AlertingRule),
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub file: PathBuf,
    pub interval_ms: i64,
    pub query_offset_ms: i64,
    pub limit: u64,
    rules: Vec<GroupRule>,
    previous_series: Vec<HashSet<Labels>>,
    evaluations: u64,
    opts: GroupOptions,
    /// Metric names the group's rules read, or `None` when they may read any series.
    /// What a rule writes is kept for the later rules of the same evaluation only
    /// under these names: alert series (hundreds a round in a fleet) are seldom read
    /// by the group that writes them, and indexing them costs more than the queries.
    names_read: Option<HashSet<String>>,
}

fn to_vector(v: Value) -> Result<Vec<InstantSample>, String> {
    match v {
        Value::Vector(v) => Ok(v),
        Value::Scalar { t_ms, v } => Ok(vec![InstantSample {
            labels: Labels::empty(),
            t_ms,
            v,
        }]),
        _ => Err("rule result is not a vector or scalar".into()),
    }
}

/// Loads rule files and builds an evaluator per group, in file order. Every file is
/// read; the errors of all of them are returned together.
pub fn load_groups(paths: &[PathBuf], opts: &GroupOptions) -> Result<Vec<Group>, Vec<RuleError>> {
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match load_file(p) {
            Ok(f) => groups.extend(f.groups.iter().map(|g| Group::new(p.clone(), g, opts))),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(errors)
    }
}

impl Group {
    /// Builds the evaluator for one group of a loaded file.
    pub fn new(file: PathBuf, g: &RuleGroup, opts: &GroupOptions) -> Group {
        let rules: Vec<GroupRule> = g
            .rules
            .iter()
            .map(|r| {
                let mut r = r.clone();
                let own: Vec<(String, String)> = r.labels.clone();
                let mut merged: Vec<(String, String)> = g
                    .labels
                    .iter()
                    .filter(|(k, _)| !own.iter().any(|(n, _)| n == k))
                    .cloned()
                    .collect();
                merged.extend(own);
                r.labels = merged;
                match r.kind {
                    RuleKind::Recording => GroupRule::Recording(r),
                    RuleKind::Alerting => GroupRule::Alerting(AlertingRule::new(
                        r,
                        opts.external_labels.clone(),
                        opts.external_url.clone(),
                        !opts.restore_for_state,
                    )),
                }
            })
            .collect();
        let names_read = names_read(g);
        Group {
            names_read,
            name: g.name.clone(),
            file,
            interval_ms: g.interval_ms.unwrap_or(opts.default_interval_ms),
            query_offset_ms: g.query_offset_ms.unwrap_or(0),
            limit: g.limit,
            previous_series: vec![HashSet::new(); rules.len()],
            rules,
            evaluations: 0,
            opts: opts.clone(),
        }
    }

    /// The group's alerting rules.
    pub fn alerting_rules(&self) -> impl Iterator<Item = &AlertingRule> {
        self.rules.iter().filter_map(|r| match r {
            GroupRule::Alerting(a) => Some(a),
            GroupRule::Recording(_) => None,
        })
    }

    /// Every rule, in file order.
    pub fn rules(&self) -> impl Iterator<Item = RuleRef<'_>> {
        self.rules.iter().map(|r| match r {
            GroupRule::Recording(r) => RuleRef::Recording(r),
            GroupRule::Alerting(a) => RuleRef::Alerting(a),
        })
    }

    /// The series the last evaluation wrote: what a caller marks stale when it drops
    /// the group (Prometheus does so when a reload removes a group).
    pub fn previous_series(&self) -> Vec<Labels> {
        let mut v: Vec<Labels> = self.previous_series.iter().flatten().cloned().collect();
        v.sort();
        v
    }

    /// Prometheus's `Group.CopyState`, for a reload: each rule that also exists in `old`
    /// (same kind, name and labels, matched in order) takes over its previous series
    /// and, for alerting rules, its active alerts. Returns the series of `old`'s rules
    /// that have no match here, which the caller marks stale.
    pub fn copy_state_from(&mut self, old: &Group) -> Vec<Labels> {
        fn key(r: &GroupRule) -> (bool, &str, &[(String, String)]) {
            match r {
                GroupRule::Recording(r) => (false, &r.name, &r.labels),
                GroupRule::Alerting(a) => (true, &a.rule.name, &a.rule.labels),
            }
        }
        let mut unmatched: Vec<bool> = vec![true; old.rules.len()];
        for (i, rule) in self.rules.iter_mut().enumerate() {
            let Some(fi) =
                (0..old.rules.len()).find(|&fi| unmatched[fi] && key(&old.rules[fi]) == key(rule))
            else {
                continue;
            };
            unmatched[fi] = false;
            self.previous_series[i] = old.previous_series[fi].clone();
            if let (GroupRule::Alerting(new), GroupRule::Alerting(from)) = (rule, &old.rules[fi]) {
                new.copy_active_from(from);
            }
        }
        self.evaluations = self.evaluations.max(old.evaluations);
        let mut gone: Vec<Labels> = unmatched
            .iter()
            .enumerate()
            .filter(|(_, u)| **u)
            .flat_map(|(fi, _)| old.previous_series[fi].iter().cloned())
            .collect();
        gone.sort();
        gone
    }

    /// Marks every alerting rule restored, so alert series are written from now on
    /// (what promtool's unit tests do before the first evaluation).
    pub fn set_restored(&mut self) {
        for r in &mut self.rules {
            if let GroupRule::Alerting(a) = r {
                a.restored = true;
            }
        }
    }

    /// Evaluates every rule at `t_ms`.
    pub fn eval(&mut self, engine: &Engine, storage: &dyn Storage, t_ms: i64) -> GroupResult {
        let mut res = GroupResult::default();
        let mut fresh = MemoryStorage::new();
        let qt = t_ms - self.query_offset_ms;
        let (limit, offset) = (self.limit, self.query_offset_ms);
        let external_url = self.opts.external_url.clone();
        for (i, rule) in self.rules.iter_mut().enumerate() {
            let started = std::time::Instant::now();
            let overlay = Overlay {
                base: storage,
                fresh: &fresh,
            };
            let out: Result<Vec<InstantSample>, String> = match rule {
                GroupRule::Recording(r) => engine
                    .instant(&overlay, &r.parsed, qt)
                    .map_err(|e| e.to_string())
                    .and_then(to_vector)
                    .and_then(|v| record(r, v, limit)),
                GroupRule::Alerting(a) => {
                    let before: HashMap<Labels, AlertState> = a
                        .alerts()
                        .into_iter()
                        .map(|x| (x.labels.clone(), x.state))
                        .collect();
                    let query = |q: &str| -> Result<Vec<QuerySample>, String> {
                        let expr = crate::promql::parse(q).map_err(|e| e.to_string())?;
                        let v = to_vector(
                            engine
                                .instant(&overlay, &expr, qt)
                                .map_err(|e| e.to_string())?,
                        )?;
                        Ok(v.into_iter()
                            .map(|s| QuerySample {
                                labels: s
                                    .labels
                                    .iter()
                                    .map(|(k, v)| (k.to_string(), v.to_string()))
                                    .collect(),
                                value: s.v,
                            })
                            .collect())
                    };
                    let env = Env {
                        t_ms,
                        external_url: &external_url,
                        query: Some(&query),
                    };
                    let r = engine
                        .instant(&overlay, &a.rule.parsed, qt)
                        .map_err(|e| e.to_string())
                        .and_then(to_vector)
                        .and_then(|v| {
                            a.eval(&v, t_ms, offset, limit, &env)
                                .map_err(|e| e.to_string())
                        });
                    for x in a.alerts() {
                        let from = before
                            .get(&x.labels)
                            .copied()
                            .unwrap_or(AlertState::Inactive);
                        if from != x.state {
                            res.transitions.push(AlertTransition {
                                rule: a.rule.name.clone(),
                                recovery: a.rule.recovery.clone(),
                                from,
                                to: x.state,
                                alert: x.clone(),
                            });
                        }
                    }
                    // Alerts dropped from the map (pending that vanished, or a cleared limit).
                    let now: HashSet<&Labels> = a.alerts().into_iter().map(|x| &x.labels).collect();
                    for (l, from) in before {
                        if from != AlertState::Inactive && !now.contains(&l) {
                            res.transitions.push(AlertTransition {
                                rule: a.rule.name.clone(),
                                recovery: a.rule.recovery.clone(),
                                from,
                                to: AlertState::Inactive,
                                alert: Alert {
                                    labels: l,
                                    annotations: Vec::new(),
                                    state: AlertState::Inactive,
                                    value: f64::NAN,
                                    active_at_ms: t_ms,
                                    fired_at_ms: None,
                                    resolved_at_ms: Some(t_ms),
                                    keep_firing_since_ms: None,
                                },
                            });
                        }
                    }
                    r
                }
            };
            let name = match rule {
                GroupRule::Recording(r) => &r.name,
                GroupRule::Alerting(a) => &a.rule.name,
            };
            let samples = match out {
                Ok(s) => s,
                Err(error) => {
                    res.rule_outcomes.push(RuleOutcome {
                        eval_seconds: started.elapsed().as_secs_f64(),
                        error: Some(error.clone()),
                    });
                    res.errors.push(RuleEvalError {
                        rule: name.clone(),
                        error,
                    });
                    continue;
                }
            };
            let read_later = |l: &Labels| {
                self.names_read
                    .as_ref()
                    .is_none_or(|n| l.name().is_some_and(|x| n.contains(x)))
            };
            let mut returned = HashSet::with_capacity(samples.len());
            for s in samples {
                if read_later(&s.labels) {
                    fresh.add(s.labels.clone(), s.t_ms, s.v);
                }
                returned.insert(s.labels.clone());
                res.samples.push(s);
            }
            let mut gone: Vec<&Labels> = self.previous_series[i].difference(&returned).collect();
            gone.sort();
            for l in gone {
                if read_later(l) {
                    fresh.add(l.clone(), qt, stale_nan());
                }
                res.samples.push(InstantSample {
                    labels: l.clone(),
                    t_ms: qt,
                    v: stale_nan(),
                });
            }
            self.previous_series[i] = returned;
            res.rule_outcomes.push(RuleOutcome {
                eval_seconds: started.elapsed().as_secs_f64(),
                error: None,
            });
        }
        self.evaluations += 1;
        // Prometheus restores after the second evaluation, once recording rules that
        // alerts depend on have fresh values.
        if self.opts.restore_for_state && self.evaluations == 2 {
            self.restore_for_state(storage, t_ms);
        }
        res
    }

    /// Restores each alert's `ActiveAt` from the last `ALERTS_FOR_STATE` sample within
    /// the outage tolerance, as Prometheus's `RestoreForState` does.
    pub fn restore_for_state(&mut self, storage: &dyn Storage, t_ms: i64) {
        let mint = t_ms - self.opts.outage_tolerance_ms;
        let grace = self.opts.for_grace_period_ms;
        for r in &mut self.rules {
            let GroupRule::Alerting(a) = r else { continue };
            let hold = a.rule.for_ms;
            if hold < grace {
                a.restored = true;
                continue;
            }
            let matchers = Matchers::new(
                a.for_state_selector()
                    .into_iter()
                    .map(|(k, v)| {
                        crate::promql::Matcher::new(crate::promql::MatchOp::Equal, &k, &v)
                    })
                    .collect(),
            );
            let series = match storage.select(&matchers, mint, t_ms) {
                Ok(s) => s,
                Err(_) => {
                    a.restored = true;
                    continue;
                }
            };
            let by_labels: HashMap<Labels, &Series> = series
                .iter()
                .map(|s| (s.labels.without_name(), s))
                .collect();
            for alert in a.alerts_mut() {
                let Some(s) = by_labels.get(&alert.labels) else {
                    continue;
                };
                let Some(&(t, v)) = s.samples.last() else {
                    continue;
                };
                if crate::promql::is_stale_nan(v) {
                    continue;
                }
                let down_at = t.div_euclid(1000) * 1000;
                let mut active_at = (v as i64) * 1000;
                let remaining = hold - (down_at - active_at);
                if remaining <= 0 {
                    // It was firing; the next evaluation decides again.
                } else if remaining < grace {
                    active_at = t_ms + grace - hold;
                } else {
                    active_at += t_ms - down_at;
                }
                alert.active_at_ms = active_at;
            }
            a.restored = true;
        }
    }
}

/// The metric names the rules read (see `Group`'s field of that name). A template
/// that runs queries may read anything.
fn names_read(g: &RuleGroup) -> Option<HashSet<String>> {
    let mut names = HashSet::new();
    for r in &g.rules {
        let queries = g
            .labels
            .iter()
            .chain(&r.labels)
            .chain(&r.annotations)
            .any(|(_, t)| t.contains("query"));
        if r.kind == RuleKind::Alerting && queries {
            return None;
        }
        names.extend(crate::promql::metric_names_read(&r.parsed)?);
    }
    Some(names)
}

/// A recording rule's output: the result renamed and relabelled.
fn record(r: &Rule, v: Vec<InstantSample>, limit: u64) -> Result<Vec<InstantSample>, String> {
    let mut out = Vec::with_capacity(v.len());
    let mut seen = HashSet::with_capacity(v.len());
    for s in v {
        let mut b: LabelsBuilder = s.labels.to_builder();
        b.set(METRIC_NAME, &r.name);
        for (k, val) in &r.labels {
            b.set(k, val);
        }
        let labels = b.build();
        if !seen.insert(labels.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels".into(),
            );
        }
        out.push(InstantSample {
            labels,
            t_ms: s.t_ms,
            v: s.v,
        });
    }
    if limit > 0 && out.len() as u64 > limit {
        return Err(format!(
            "exceeded limit of {limit} with {} series",
            out.len()
        ));
    }
    Ok(out)
}
