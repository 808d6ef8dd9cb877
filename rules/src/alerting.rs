//! The alert state machine of Prometheus's `rules/alerting.go`: inactive → pending →
//! firing → resolved (kept 15 minutes so the resolution reaches the notifier), `for`,
//! `keep_firing_for`, templated labels and annotations, and the `ALERTS` /
//! `ALERTS_FOR_STATE` series. The query result comes in; no I/O happens here.

use std::collections::{HashMap, HashSet};

use crate::promql::{InstantSample, Labels, LabelsBuilder, METRIC_NAME};
use crate::rulefile::{Recovery, Rule};
use crate::template::{Env, Template, TemplateError, alert_data, expand_parsed};

/// How long a resolved alert is kept (and re-sent) before it is forgotten.
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One instance of an alerting rule, keyed by its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The alert's labels: the series' labels without `__name__`, the rule's expanded
    /// labels, and `alertname`.
    pub labels: Labels,
    pub annotations: Vec<(String, String)>,
    pub state: AlertState,
    /// The expression's value at the last evaluation.
    pub value: f64,
    pub active_at_ms: i64,
    pub fired_at_ms: Option<i64>,
    pub resolved_at_ms: Option<i64>,
    pub keep_firing_since_ms: Option<i64>,
}

/// An alerting rule and its active alerts.
#[derive(Debug, Clone)]
pub struct AlertingRule {
    pub rule: Rule,
    /// Labels added to the alert after templating (the group's and the rule's).
    labels: Vec<(String, String)>,
    /// Label and annotation templates, parsed once: a fleet-wide alert expands them for
    /// every firing series at every evaluation.
    templates: Box<Templates>,
    /// The `ALERTS` and `ALERTS_FOR_STATE` label sets of the last evaluation, by the
    /// alert's labels, with the state they were built for: unchanged alerts reuse them.
    series: HashMap<Labels, (AlertState, Labels, Labels)>,
    external_labels: Vec<(String, String)>,
    external_url: String,
    active: HashMap<Labels, Alert>,
    /// `ALERTS` and `ALERTS_FOR_STATE` are only written once `for` state was restored.
    pub(crate) restored: bool,
}

/// An alerting rule's templates and what they printed last.
#[derive(Debug, Clone)]
struct Templates {
    labels: Vec<(String, Result<Template, TemplateError>)>,
    annotations: Vec<(String, Result<Template, TemplateError>)>,
    /// The last evaluation's expansions, by the series they came from; `None` unless
    /// every template prints the same text from the same data (none runs `query` or
    /// `now`). An alert whose series and value are those of the last evaluation then
    /// takes that evaluation's labels and annotations instead of expanding the
    /// templates again: a fleet-wide alert has hundreds of instances every round.
    expanded: Option<HashMap<Labels, Expanded>>,
}

/// An alert's labels and annotations as expanded from one series and value.
#[derive(Debug, Clone)]
struct Expanded {
    value_bits: u64,
    labels: Labels,
    annotations: Vec<(String, String)>,
}

/// Why an evaluation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlertEvalError {
    #[error("vector contains metrics with the same labelset after applying alert labels")]
    DuplicateLabelset,
    #[error("exceeded limit of {limit} with {count} alerts")]
    Limit { limit: u64, count: usize },
}

impl AlertingRule {
    pub fn new(
        rule: Rule,
        external_labels: Vec<(String, String)>,
        external_url: String,
        restored: bool,
    ) -> Self {
        let labels = rule.labels.clone();
        let parse = |pairs: &[(String, String)]| -> Vec<(String, Result<Template, TemplateError>)> {
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), Template::parse_alert(&rule.name, v)))
                .collect()
        };
        let label_templates = parse(&labels);
        let annotation_templates = parse(&rule.annotations);
        let reusable = label_templates
            .iter()
            .chain(&annotation_templates)
            .all(|(_, t)| t.as_ref().map_or(true, Template::reads_only_data));
        AlertingRule {
            templates: Box::new(Templates {
                labels: label_templates,
                annotations: annotation_templates,
                expanded: reusable.then(HashMap::new),
            }),
            series: HashMap::new(),
            rule,
            labels,
            external_labels,
            external_url,
            active: HashMap::new(),
            restored,
        }
    }

    pub fn name(&self) -> &str {
        &self.rule.name
    }

    pub fn recovery(&self) -> Option<&Recovery> {
        self.rule.recovery.as_ref()
    }

    /// Active alerts, including resolved ones still retained, sorted by labels.
    pub fn alerts(&self) -> Vec<&Alert> {
        let mut v: Vec<&Alert> = self.active.values().collect();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v
    }

    /// Takes over `other`'s active alerts (a reload keeps the state of a rule that
    /// still exists).
    pub(crate) fn copy_active_from(&mut self, other: &AlertingRule) {
        for (k, a) in &other.active {
            self.active.insert(k.clone(), a.clone());
        }
    }

    pub(crate) fn alerts_mut(&mut self) -> impl Iterator<Item = &mut Alert> {
        self.active.values_mut()
    }

    /// Labels of the `ALERTS_FOR_STATE` series of this rule, without an alert's labels:
    /// what restoring `for` state selects on.
    pub(crate) fn for_state_selector(&self) -> Vec<(String, String)> {
        let mut v = self.labels.clone();
        v.retain(|(k, _)| k != "alertname" && k != METRIC_NAME);
        v.push((METRIC_NAME.into(), "ALERTS_FOR_STATE".into()));
        v.push(("alertname".into(), self.rule.name.clone()));
        v
    }

    /// One evaluation at `ts_ms` over the expression's result (evaluated at
    /// `ts_ms - query_offset_ms`). Returns the `ALERTS`/`ALERTS_FOR_STATE` samples.
    pub fn eval(
        &mut self,
        result: &[InstantSample],
        ts_ms: i64,
        query_offset_ms: i64,
        limit: u64,
        env: &Env<'_>,
    ) -> Result<Vec<InstantSample>, AlertEvalError> {
        let mut fresh: HashMap<Labels, Alert> = HashMap::with_capacity(result.len());
        // Only expansions made with the rule's own external URL are kept, so every
        // one kept saw the same URL.
        let reuse = self.templates.expanded.is_some() && env.external_url == self.external_url;
        let mut expanded = HashMap::new();
        for s in result {
            let last = match &self.templates.expanded {
                Some(m) if reuse => m.get(&s.labels),
                _ => None,
            };
            let (labels, annotations) = match last {
                Some(e) if e.value_bits == s.v.to_bits() => {
                    (e.labels.clone(), e.annotations.clone())
                }
                _ => self.expand(s, env),
            };
            if reuse {
                expanded.insert(
                    s.labels.clone(),
                    Expanded {
                        value_bits: s.v.to_bits(),
                        labels: labels.clone(),
                        annotations: annotations.clone(),
                    },
                );
            }
            if fresh.contains_key(&labels) {
                return Err(AlertEvalError::DuplicateLabelset);
            }
            fresh.insert(
                labels.clone(),
                Alert {
                    labels,
                    annotations,
                    state: AlertState::Pending,
                    value: s.v,
                    active_at_ms: ts_ms,
                    fired_at_ms: None,
                    resolved_at_ms: None,
                    keep_firing_since_ms: None,
                },
            );
        }
        if let Some(m) = &mut self.templates.expanded {
            *m = expanded;
        }
        let present: HashSet<Labels> = fresh.keys().cloned().collect();
        for (k, a) in fresh {
            match self.active.get_mut(&k) {
                Some(old) if old.state != AlertState::Inactive => {
                    old.value = a.value;
                    old.annotations = a.annotations;
                }
                _ => {
                    self.active.insert(k, a);
                }
            }
        }

        let hold = self.rule.for_ms;
        let keep_for = self.rule.keep_firing_for_ms;
        let mut out = Vec::new();
        let mut active_pending = 0usize;
        let mut forget = Vec::new();
        let mut keys: Vec<Labels> = self.active.keys().cloned().collect();
        keys.sort();
        let mut series = HashMap::new();
        for k in keys {
            let Some(a) = self.active.get_mut(&k) else {
                continue;
            };
            if !present.contains(&k) {
                let mut keep_firing = false;
                if a.state == AlertState::Firing && keep_for > 0 {
                    let since = *a.keep_firing_since_ms.get_or_insert(ts_ms);
                    keep_firing = ts_ms - since < keep_for;
                }
                if a.state == AlertState::Pending
                    || a.resolved_at_ms
                        .is_some_and(|r| ts_ms - r > RESOLVED_RETENTION_MS)
                {
                    forget.push(k.clone());
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    a.state = AlertState::Inactive;
                    a.resolved_at_ms = Some(ts_ms);
                }
                if !keep_firing {
                    continue;
                }
            } else {
                a.keep_firing_since_ms = None;
            }
            active_pending += 1;
            if a.state == AlertState::Pending && ts_ms - a.active_at_ms >= hold {
                a.state = AlertState::Firing;
                a.fired_at_ms = Some(ts_ms);
            }
            if self.restored {
                let t = ts_ms - query_offset_ms;
                let last = self.series.get(&k);
                let alerts = match last {
                    Some((state, l, _)) if *state == a.state => l.clone(),
                    _ => series_labels(&self.labels, a, "ALERTS", true),
                };
                let for_state = match last {
                    Some((_, _, l)) => l.clone(),
                    None => series_labels(&self.labels, a, "ALERTS_FOR_STATE", false),
                };
                series.insert(k, (a.state, alerts.clone(), for_state.clone()));
                out.push(InstantSample {
                    labels: alerts,
                    t_ms: t,
                    v: 1.0,
                });
                out.push(InstantSample {
                    labels: for_state,
                    t_ms: t,
                    v: a.active_at_ms.div_euclid(1000) as f64,
                });
            }
        }
        self.series = series;
        for k in forget {
            self.active.remove(&k);
        }
        if limit > 0 && active_pending as u64 > limit {
            self.active.clear();
            return Err(AlertEvalError::Limit {
                limit,
                count: active_pending,
            });
        }
        Ok(out)
    }
}

impl AlertingRule {
    /// The alert's labels and annotations for one series of the result: the
    /// templates run over the series' labels and value.
    fn expand(&self, s: &InstantSample, env: &Env<'_>) -> (Labels, Vec<(String, String)>) {
        let data = alert_data(
            s.labels.iter(),
            self.external_labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
            &self.external_url,
            s.v,
        );
        let name = self.rule.name.as_str();
        let mut lb: LabelsBuilder = s.labels.to_builder();
        lb.del(METRIC_NAME);
        for (k, t) in &self.templates.labels {
            lb.set(k, &expand_parsed(t, name, &data, env));
        }
        lb.set("alertname", name);
        let annotations: Vec<(String, String)> = self
            .templates
            .annotations
            .iter()
            .map(|(k, t)| (k.clone(), expand_parsed(t, name, &data, env)))
            .collect();
        (lb.build(), annotations)
    }
}

fn series_labels(
    rule_labels: &[(String, String)],
    a: &Alert,
    metric: &str,
    with_state: bool,
) -> Labels {
    // The alert's labels override the rule's, so the set starts from them, sharing
    // their names and values instead of copying each string; a rule label is added
    // only where the alert has none (its template expanded to nothing).
    let mut b = a.labels.to_builder();
    for (k, v) in rule_labels {
        if b.get(k).is_none() {
            b.set(k, v);
        }
    }
    b.set(METRIC_NAME, metric);
    if with_state {
        b.set("alertstate", a.state.as_str());
    }
    b.build()
}
