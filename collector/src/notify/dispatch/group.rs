//! One aggregation group: its task, its flush, and its status.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;

use super::store::{NflogEntry, StoredAlert, needs_update};
use super::{
    GroupId, IntegrationStats, LastAttempt, Notifier, ReceiverRt, State, history_event, now_ms,
};
use crate::notify::integrations;
use crate::notify::route::RouteNode;
use crate::notify::{HistoryEvent, HistoryKind, LabelMap, Message, MessageAlert, Status};

pub(crate) struct Group {
    pub(crate) key: String,
    pub(crate) receiver: String,
    pub(crate) labels: LabelMap,
    pub(crate) repeat_interval_ms: i64,
    pub(crate) alerts: HashMap<u64, StoredAlert>,
    pub(crate) has_flushed: bool,
    /// Flush now (before the first flush), or stop (when the group was dropped).
    pub(crate) wake: Arc<Notify>,
    pub(crate) generation: u64,
}

impl Group {
    pub(crate) fn new(route: &RouteNode, labels: LabelMap, generation: u64) -> Group {
        Group {
            key: route.group_key(&labels),
            receiver: route.receiver.clone(),
            labels,
            repeat_interval_ms: route.repeat_interval_ms,
            alerts: HashMap::new(),
            has_flushed: false,
            wake: Arc::new(Notify::new()),
            generation,
        }
    }
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

/// The group's task: the first flush after `group_wait` (or when woken), then one
/// every `group_interval`, until the group is dropped or empties.
pub(crate) async fn run(
    n: Arc<Notifier>,
    gid: GroupId,
    generation: u64,
    wake: Arc<Notify>,
    group_wait_ms: i64,
    group_interval_ms: i64,
) {
    let mut deadline = tokio::time::Instant::now() + ms(group_wait_ms);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = wake.notified() => {}
        }
        deadline = tokio::time::Instant::now() + ms(group_interval_ms);
        if !flush(&n, gid, generation).await {
            return;
        }
    }
}

/// What one integration's part of a flush came to.
enum Outcome {
    /// Nothing new for it.
    Skip,
    /// Only resolved alerts, and it does not want them: logged, not sent.
    LogOnly,
    Sent {
        secs: f64,
        alerts: Vec<StoredAlert>,
    },
    Failed {
        secs: f64,
        error: String,
    },
}

struct Plan {
    key: String,
    labels: LabelMap,
    repeat_interval_ms: i64,
    now: i64,
    firing: BTreeSet<u64>,
    resolved: BTreeSet<u64>,
    /// The alerts not muted, with fingerprints.
    kept: Vec<(u64, StoredAlert)>,
    external_url: String,
}

/// One flush; false when the group is gone and its task should end.
async fn flush(n: &Arc<Notifier>, gid: GroupId, generation: u64) -> bool {
    let mut events = Vec::new();
    let (plan, snapshot, receiver, fallback, entries, fb_entries) = {
        let mut st = n.lock();
        if st.stopped {
            return false;
        }
        let now = now_ms();
        let rt = st.rt.clone();
        let Some(g) = st
            .groups
            .get_mut(&gid)
            .filter(|g| g.generation == generation)
        else {
            return false;
        };
        g.has_flushed = true;
        let snapshot: Vec<(u64, StoredAlert)> =
            g.alerts.iter().map(|(k, v)| (*k, v.clone())).collect();
        let (key, labels, receiver_name, repeat) = (
            g.key.clone(),
            g.labels.clone(),
            g.receiver.clone(),
            g.repeat_interval_ms,
        );
        let mut kept = Vec::new();
        let mut newly_muted: Vec<(u64, &StoredAlert, HistoryKind, String)> = Vec::new();
        {
            let sources = rt.inhibitor.sources(
                st.alerts
                    .iter()
                    .map(|(f, x)| (*f, &x.labels, !x.resolved(now))),
            );
            for (fp, a) in &snapshot {
                let mut muters: Vec<(HistoryKind, String)> = st
                    .silences
                    .muting(&a.labels, now)
                    .into_iter()
                    .map(|id| (HistoryKind::Silenced, id))
                    .collect();
                if let Some(inh) = rt.inhibitor.check(&a.labels, &sources) {
                    muters.push((HistoryKind::Inhibited, inh.describe()));
                }
                if muters.is_empty() {
                    kept.push((*fp, a.clone()));
                }
                for (kind, id) in muters {
                    newly_muted.push((*fp, a, kind, id));
                }
            }
        }
        for (fp, a, kind, id) in newly_muted {
            if st.muted_seen.insert((fp, id.clone())) {
                let what = if kind == HistoryKind::Silenced {
                    "silence"
                } else {
                    "inhibited by"
                };
                events.push(history_event(kind, a, format!("{what} {id}"), now));
            }
        }
        let firing = kept
            .iter()
            .filter(|(_, a)| !a.resolved(now))
            .map(|(f, _)| *f)
            .collect();
        let resolved = kept
            .iter()
            .filter(|(_, a)| a.resolved(now))
            .map(|(f, _)| *f)
            .collect();
        let receiver = rt.receivers.get(&receiver_name).cloned();
        let fallback = receiver
            .as_ref()
            .and_then(|r| r.fallback.as_ref())
            .and_then(|f| rt.receivers.get(f).cloned());
        let log_entries = |r: &Option<Arc<ReceiverRt>>| -> Vec<Option<NflogEntry>> {
            r.as_ref().map_or(Vec::new(), |r| {
                (0..r.integrations.len())
                    .map(|i| st.nflog.get(&key, &r.name, i).cloned())
                    .collect()
            })
        };
        let entries = log_entries(&receiver);
        let fb_entries = log_entries(&fallback);
        let plan = Plan {
            key,
            labels,
            repeat_interval_ms: repeat,
            now,
            firing,
            resolved,
            kept,
            external_url: n.opts.external_url.clone(),
        };
        (plan, snapshot, receiver, fallback, entries, fb_entries)
    };
    n.record(std::mem::take(&mut events));

    let Some(receiver) = receiver else {
        return true;
    };
    let outcomes = deliver_all(n, &receiver, &plan, &entries).await;
    let attempted = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Sent { .. } | Outcome::Failed { .. }))
        .count();
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Failed { .. }))
        .count();
    let fb_outcomes = match &fallback {
        Some(fb) if attempted > 0 && failed == attempted => {
            tracing::warn!(
                receiver = %receiver.name,
                fallback = %fb.name,
                group_key = %plan.key,
                "every integration failed; sending to the fallback receiver"
            );
            deliver_all(n, fb, &plan, &fb_entries).await
        }
        _ => Vec::new(),
    };

    let mut st = n.lock();
    apply(&mut st, &receiver, &plan, outcomes, &mut events);
    if let Some(fb) = &fallback {
        apply(&mut st, fb, &plan, fb_outcomes, &mut events);
    }
    st.dirty.nflog = true;
    let keep_running = match st
        .groups
        .get_mut(&gid)
        .filter(|g| g.generation == generation)
    {
        None => false,
        Some(g) => {
            if failed == 0 {
                // Resolved alerts were notified (or needed no notification): drop
                // them unless they changed meanwhile.
                for (fp, a) in &snapshot {
                    if a.resolved(plan.now) && g.alerts.get(fp) == Some(a) {
                        g.alerts.remove(fp);
                    }
                }
            }
            if g.alerts.is_empty() {
                st.groups.remove(&gid);
                false
            } else {
                true
            }
        }
    };
    drop(st);
    n.record(events);
    n.persist.notify_one();
    keep_running
}

/// Each integration of `receiver` that needs this notification gets it, all at once.
async fn deliver_all(
    n: &Arc<Notifier>,
    receiver: &Arc<ReceiverRt>,
    plan: &Plan,
    entries: &[Option<NflogEntry>],
) -> Vec<Outcome> {
    let mut set = tokio::task::JoinSet::new();
    let mut outcomes: Vec<Outcome> = (0..receiver.integrations.len())
        .map(|_| Outcome::Skip)
        .collect();
    for (i, integration) in receiver.integrations.iter().enumerate() {
        let send_resolved = integration.send_resolved();
        let entry = entries.get(i).and_then(Option::as_ref);
        if !needs_update(
            entry,
            &plan.firing,
            &plan.resolved,
            send_resolved,
            plan.repeat_interval_ms,
            plan.now,
        ) {
            continue;
        }
        let alerts: Vec<(u64, StoredAlert)> = plan
            .kept
            .iter()
            .filter(|(_, a)| send_resolved || !a.resolved(plan.now))
            .cloned()
            .collect();
        if alerts.is_empty() {
            outcomes[i] = Outcome::LogOnly;
            continue;
        }
        let message = message(&receiver.name, &alerts, plan);
        let integration = integration.clone();
        let policy = n.opts.retry;
        set.spawn(async move {
            let started = Instant::now();
            let res = integrations::deliver(integration.as_ref(), &message, &policy).await;
            let secs = started.elapsed().as_secs_f64();
            let outcome = match res {
                Ok(()) => Outcome::Sent {
                    secs,
                    alerts: alerts.into_iter().map(|(_, a)| a).collect(),
                },
                Err(e) => Outcome::Failed {
                    secs,
                    error: e.message,
                },
            };
            (i, outcome)
        });
    }
    while let Some(res) = set.join_next().await {
        match res {
            Ok((i, o)) => outcomes[i] = o,
            Err(e) => {
                tracing::error!(error = %e, receiver = %receiver.name, "delivery task failed")
            }
        }
    }
    outcomes
}

fn apply(
    st: &mut State,
    receiver: &ReceiverRt,
    plan: &Plan,
    outcomes: Vec<Outcome>,
    events: &mut Vec<HistoryEvent>,
) {
    for (i, o) in outcomes.into_iter().enumerate() {
        let Some(integration) = receiver.integrations.get(i) else {
            continue;
        };
        let kind = integration.kind();
        let log = |st: &mut State| {
            st.nflog.log(NflogEntry {
                group_key: plan.key.clone(),
                receiver: receiver.name.clone(),
                integration: i,
                firing: plan.firing.clone(),
                resolved: plan.resolved.clone(),
                at_ms: plan.now,
            });
        };
        let attempt = |st: &mut State, secs: f64, error: Option<String>| {
            let s: &mut IntegrationStats =
                st.stats.entry((receiver.name.clone(), kind)).or_default();
            s.total += 1;
            s.latency_sum_secs += secs;
            if error.is_some() {
                s.failed += 1;
            }
            st.last_attempts.insert(
                (receiver.name.clone(), i),
                LastAttempt {
                    kind,
                    at_ms: now_ms(),
                    group_key: plan.key.clone(),
                    ok: error.is_none(),
                    error,
                },
            );
        };
        match o {
            Outcome::Skip => {}
            Outcome::LogOnly => log(st),
            Outcome::Sent { secs, alerts } => {
                log(st);
                attempt(st, secs, None);
                let at = now_ms();
                for a in &alerts {
                    let status = if a.resolved(plan.now) {
                        "resolved"
                    } else {
                        "firing"
                    };
                    events.push(history_event(
                        HistoryKind::Notified,
                        a,
                        format!(
                            "receiver={} integration={kind} status={status}",
                            receiver.name
                        ),
                        at,
                    ));
                }
            }
            Outcome::Failed { secs, error } => attempt(st, secs, Some(error)),
        }
    }
}

/// Alertmanager's sort of a group's alerts: by `job`, then `instance`, then labels.
fn alert_order(a: &LabelMap, b: &LabelMap) -> std::cmp::Ordering {
    for k in ["job", "instance"] {
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x != y => return x.cmp(y),
            _ => {}
        }
    }
    a.cmp(b)
}

fn common(maps: &[&LabelMap]) -> LabelMap {
    let Some(first) = maps.first() else {
        return LabelMap::new();
    };
    first
        .iter()
        .filter(|(k, v)| maps.iter().all(|m| m.get(*k) == Some(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn message(receiver: &str, alerts: &[(u64, StoredAlert)], plan: &Plan) -> Message {
    let mut sorted: Vec<&(u64, StoredAlert)> = alerts.iter().collect();
    sorted.sort_by(|(_, a), (_, b)| {
        a.resolved(plan.now)
            .cmp(&b.resolved(plan.now))
            .then_with(|| alert_order(&a.labels, &b.labels))
    });
    let firing = sorted.iter().any(|(_, a)| !a.resolved(plan.now));
    let labels: Vec<&LabelMap> = sorted.iter().map(|(_, a)| &a.labels).collect();
    let annotations: Vec<&LabelMap> = sorted.iter().map(|(_, a)| &a.annotations).collect();
    Message {
        receiver: receiver.to_string(),
        status: if firing {
            Status::Firing
        } else {
            Status::Resolved
        },
        alerts: sorted
            .iter()
            .map(|(fp, a)| {
                let resolved = a.resolved(plan.now);
                MessageAlert {
                    status: if resolved {
                        Status::Resolved
                    } else {
                        Status::Firing
                    },
                    labels: a.labels.clone(),
                    annotations: a.annotations.clone(),
                    starts_at_ms: a.starts_at_ms,
                    ends_at_ms: resolved.then_some(a.ends_at_ms),
                    generator_url: a.generator_url.clone(),
                    fingerprint: format!("{fp:016x}"),
                }
            })
            .collect(),
        group_labels: plan.labels.clone(),
        common_labels: common(&labels),
        common_annotations: common(&annotations),
        external_url: plan.external_url.clone(),
        group_key: plan.key.clone(),
        truncated_alerts: 0,
    }
}

// ---- status ----

/// One aggregation group as `/api/v1/notifications` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    pub group_key: String,
    pub receiver: String,
    pub labels: LabelMap,
    /// The last notification of this group to its receiver (any integration).
    pub last_notified_at_ms: Option<i64>,
    pub alerts: Vec<AlertStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertStatus {
    pub fingerprint: String,
    pub labels: LabelMap,
    pub annotations: LabelMap,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    /// `active`, `suppressed` (silenced or inhibited) or `resolved`.
    pub state: &'static str,
    pub silenced_by: Vec<String>,
    pub inhibited_by: Vec<String>,
}

pub(crate) fn status(st: &State, now: i64) -> Vec<GroupStatus> {
    let mut out: Vec<GroupStatus> = st
        .groups
        .values()
        .map(|g| {
            let sources = st.rt.inhibitor.sources(
                st.alerts
                    .iter()
                    .map(|(f, x)| (*f, &x.labels, !x.resolved(now))),
            );
            let mut alerts: Vec<AlertStatus> = g
                .alerts
                .iter()
                .map(|(fp, a)| {
                    let silenced_by = st.silences.muting(&a.labels, now);
                    let inhibited_by: Vec<String> = st
                        .rt
                        .inhibitor
                        .check(&a.labels, &sources)
                        .map(|i| i.describe())
                        .into_iter()
                        .collect();
                    let state = if a.resolved(now) {
                        "resolved"
                    } else if silenced_by.is_empty() && inhibited_by.is_empty() {
                        "active"
                    } else {
                        "suppressed"
                    };
                    AlertStatus {
                        fingerprint: format!("{fp:016x}"),
                        labels: a.labels.clone(),
                        annotations: a.annotations.clone(),
                        starts_at_ms: a.starts_at_ms,
                        ends_at_ms: a.ends_at_ms,
                        state,
                        silenced_by,
                        inhibited_by,
                    }
                })
                .collect();
            alerts.sort_by(|a, b| alert_order(&a.labels, &b.labels));
            GroupStatus {
                group_key: g.key.clone(),
                receiver: g.receiver.clone(),
                labels: g.labels.clone(),
                last_notified_at_ms: st.nflog.last_for(&g.key, &g.receiver),
                alerts,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.receiver, &a.group_key).cmp(&(&b.receiver, &b.group_key)));
    out
}
