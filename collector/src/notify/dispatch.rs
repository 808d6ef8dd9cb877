//! The notifier: Alertmanager's dispatcher, aggregation groups and notification
//! pipeline inside the collector.
//!
//! Alerts handed to [`Notifier::send`] are merged into the alert store by
//! fingerprint, routed through the route tree and inserted into aggregation groups,
//! one per route and set of group labels. Each group is a task: its first flush comes
//! `group_wait` after it was created (at once when its alert started longer ago than
//! that), later ones every `group_interval`. A flush drops what silences and inhibit
//! rules mute, asks the notification log whether each integration of the receiver
//! needs the notification (something new fires; something resolved, for
//! `send_resolved`; `repeat_interval` passed), delivers, and logs. Because a group is
//! one task that awaits its deliveries, a slow receiver never gets two notifications
//! of one group at once. When every integration of a receiver failed after its
//! retries, the receiver's `fallback_receiver` gets the notification.
//!
//! The alert store, the notification log and the API's silences are written under
//! `<data_dir>/notify/` (a moment after each change, and at shutdown), so a restart
//! neither resends what was sent nor forgets a firing alert whose resolve is due.
//!
//! # Layout
//! - this file: [`Notifier`], its options, its state, routing of incoming alerts,
//!   reload, persistence and maintenance, metrics.
//! - `group`: the aggregation group's task and its flush.
//! - `store`: the alert store's merge rules, the notification log and its dedup
//!   decision, state files.

mod group;
mod store;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use vigil_proto::MetricFamily;

pub use group::GroupStatus;
pub use store::{NflogEntry, StoredAlert, needs_update};

use super::config::{AlertmanagerConfig, Global, Receiver};
use super::inhibit::Inhibitor;
use super::integrations::{self, RetryPolicy};
use super::route::RouteTree;
use super::silence::{PostableSilence, Silence, SilenceError, SilenceState, Silences};
use super::{
    AlertSink, HistoryEvent, HistoryKind, HistorySink, Integration, PostableAlert, fingerprint,
};
use store::Nflog;

/// Makes a receiver's integrations: [`integrations::build`] unless a test brings its
/// own recording ones.
pub type BuildIntegrations =
    Arc<dyn Fn(&Receiver, &Global) -> Result<Vec<Box<dyn Integration>>, String> + Send + Sync>;

/// What the notifier needs besides its configuration.
#[derive(Clone)]
pub struct NotifierOptions {
    /// The collector's data directory; state goes to `<data_dir>/notify/`.
    pub data_dir: PathBuf,
    /// `externalURL` of notifications: where people reach the collector.
    pub external_url: String,
    /// Where Silenced, Inhibited and Notified transitions are recorded.
    pub history: Option<Arc<dyn HistorySink>>,
    pub retry: RetryPolicy,
    pub build_integrations: BuildIntegrations,
    /// How often resolved alerts, expired silences and old log entries are dropped.
    pub maintenance_interval: Duration,
    /// How long after a change the state files are written (changes in between are
    /// written together).
    pub persist_delay: Duration,
}

impl NotifierOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> NotifierOptions {
        NotifierOptions {
            data_dir: data_dir.into(),
            external_url: String::new(),
            history: None,
            retry: RetryPolicy::default(),
            build_integrations: Arc::new(integrations::build),
            maintenance_interval: Duration::from_secs(30),
            persist_delay: Duration::from_millis(200),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyStartError {
    #[error("cannot create notifier state directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read notifier state: {0}")]
    State(String),
    #[error("{0}")]
    Integration(String),
    #[error("the notifier must be started inside a tokio runtime")]
    NoRuntime,
}

/// The notifier. Start it with [`Notifier::start`]; hand it alerts through
/// [`AlertSink`].
pub struct Notifier {
    /// Itself, for the group tasks it spawns.
    me: Weak<Notifier>,
    state: Mutex<State>,
    opts: NotifierOptions,
    state_dir: PathBuf,
    handle: tokio::runtime::Handle,
    persist: Notify,
    shutdown_done: Notify,
}

/// The configuration turned into what runs: the route tree, the receivers with
/// their integrations, the inhibit rules.
pub(crate) struct Runtime {
    pub(crate) config: AlertmanagerConfig,
    pub(crate) tree: RouteTree,
    pub(crate) receivers: HashMap<String, Arc<ReceiverRt>>,
    pub(crate) inhibitor: Inhibitor,
}

pub(crate) struct ReceiverRt {
    pub(crate) name: String,
    pub(crate) integrations: Vec<Arc<dyn Integration>>,
    pub(crate) fallback: Option<String>,
}

/// An aggregation group: the route's id and the fingerprint of its group labels.
pub(crate) type GroupId = (usize, u64);

pub(crate) struct State {
    pub(crate) rt: Arc<Runtime>,
    pub(crate) alerts: HashMap<u64, StoredAlert>,
    pub(crate) groups: HashMap<GroupId, group::Group>,
    pub(crate) silences: Silences,
    pub(crate) nflog: Nflog,
    /// (alert fingerprint, silence id or inhibition) already recorded in the history.
    pub(crate) muted_seen: HashSet<(u64, String)>,
    /// Per (receiver, integration kind).
    pub(crate) stats: HashMap<(String, &'static str), IntegrationStats>,
    /// Per (receiver, integration index): the last attempt.
    pub(crate) last_attempts: HashMap<(String, usize), LastAttempt>,
    pub(crate) alerts_received: u64,
    pub(crate) generation: u64,
    pub(crate) stopped: bool,
    pub(crate) dirty: Dirty,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Dirty {
    pub(crate) alerts: bool,
    pub(crate) nflog: bool,
    pub(crate) silences: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct IntegrationStats {
    pub(crate) total: u64,
    pub(crate) failed: u64,
    pub(crate) latency_sum_secs: f64,
}

/// The last delivery attempt of one integration, for the status API.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LastAttempt {
    pub kind: &'static str,
    pub at_ms: i64,
    pub group_key: String,
    pub ok: bool,
    pub error: Option<String>,
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn build_runtime(
    config: AlertmanagerConfig,
    build: &BuildIntegrations,
) -> Result<Runtime, NotifyStartError> {
    let mut receivers = HashMap::new();
    for r in &config.receivers {
        let integrations = build(r, &config.global).map_err(NotifyStartError::Integration)?;
        receivers.insert(
            r.name.clone(),
            Arc::new(ReceiverRt {
                name: r.name.clone(),
                integrations: integrations.into_iter().map(Arc::from).collect(),
                fallback: r.fallback_receiver.clone(),
            }),
        );
    }
    Ok(Runtime {
        tree: RouteTree::new(&config.route),
        inhibitor: Inhibitor::new(&config.inhibit_rules),
        receivers,
        config,
    })
}

impl Notifier {
    /// Loads the state under `<data_dir>/notify/`, builds the integrations and starts
    /// the groups of the alerts it remembers, persistence and maintenance. Everything
    /// stops when `stop` completes (the state is written a last time).
    pub fn start(
        config: AlertmanagerConfig,
        opts: NotifierOptions,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Arc<Notifier>, NotifyStartError> {
        let handle =
            tokio::runtime::Handle::try_current().map_err(|_| NotifyStartError::NoRuntime)?;
        let state_dir = opts.data_dir.join("notify");
        std::fs::create_dir_all(&state_dir).map_err(|source| NotifyStartError::DataDir {
            path: state_dir.clone(),
            source,
        })?;
        let rt = build_runtime(config, &opts.build_integrations)?;
        let mut silences =
            Silences::load(&state_dir.join("silences.json")).map_err(NotifyStartError::State)?;
        silences.set_config(&rt.config.silences);
        let nflog = match store::read_optional(&state_dir.join("nflog.json"))
            .map_err(NotifyStartError::State)?
        {
            Some(t) => Nflog::from_json(&t).map_err(|e| {
                NotifyStartError::State(format!("{}: {e}", state_dir.join("nflog.json").display()))
            })?,
            None => Nflog::default(),
        };
        let alerts: Vec<StoredAlert> = match store::read_optional(&state_dir.join("alerts.json"))
            .map_err(NotifyStartError::State)?
        {
            Some(t) => serde_json::from_str(&t).map_err(|e| {
                NotifyStartError::State(format!("{}: {e}", state_dir.join("alerts.json").display()))
            })?,
            None => Vec::new(),
        };
        let n = Arc::new_cyclic(|me| Notifier {
            me: me.clone(),
            state: Mutex::new(State {
                rt: Arc::new(rt),
                alerts: alerts
                    .into_iter()
                    .map(|a| (fingerprint(&a.labels), a))
                    .collect(),
                groups: HashMap::new(),
                silences,
                nflog,
                muted_seen: HashSet::new(),
                stats: HashMap::new(),
                last_attempts: HashMap::new(),
                alerts_received: 0,
                generation: 0,
                stopped: false,
                dirty: Dirty::default(),
            }),
            opts,
            state_dir,
            handle,
            persist: Notify::new(),
            shutdown_done: Notify::new(),
        });
        {
            let mut st = n.lock();
            n.regroup_all(&mut st, now_ms());
        }
        tokio::spawn(persist_loop(n.clone()));
        tokio::spawn(maintenance_loop(n.clone()));
        let stopper = n.clone();
        tokio::spawn(async move {
            stop.await;
            stopper.shutdown().await;
        });
        Ok(n)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every update is a
        // whole-value insert), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a new configuration: its integrations are built first, and if that
    /// fails the running configuration stays. Groups start over (as Alertmanager's do
    /// on reload); the notification log keeps them from resending.
    pub fn reload(&self, config: AlertmanagerConfig) -> Result<(), NotifyStartError> {
        let rt = build_runtime(config, &self.opts.build_integrations)?;
        let mut st = self.lock();
        st.silences.set_config(&rt.config.silences);
        st.rt = Arc::new(rt);
        self.regroup_all(&mut st, now_ms());
        Ok(())
    }

    /// Drops every group and routes every stored alert again.
    fn regroup_all(&self, st: &mut State, now: i64) {
        st.generation += 1;
        for (_, g) in st.groups.drain() {
            g.wake.notify_one();
        }
        let alerts: Vec<(u64, StoredAlert)> =
            st.alerts.iter().map(|(k, v)| (*k, v.clone())).collect();
        for (fp, a) in alerts {
            self.route_alert(st, fp, a, now);
        }
    }

    fn route_alert(&self, st: &mut State, fp: u64, alert: StoredAlert, now: i64) {
        let Some(me) = self.me.upgrade() else { return };
        let rt = st.rt.clone();
        for route in rt.tree.match_labels(&alert.labels) {
            let labels = route.group_labels(&alert.labels);
            let gid = (route.id, fingerprint(&labels));
            let generation = st.generation;
            let g = st.groups.entry(gid).or_insert_with(|| {
                let g = group::Group::new(route, labels, generation);
                self.handle.spawn(group::run(
                    me.clone(),
                    gid,
                    generation,
                    g.wake.clone(),
                    route.group_wait_ms,
                    route.group_interval_ms,
                ));
                g
            });
            if !g.has_flushed && alert.starts_at_ms + route.group_wait_ms < now {
                g.wake.notify_one();
            }
            g.alerts.insert(fp, alert.clone());
        }
    }

    fn receive(&self, alerts: Vec<PostableAlert>) {
        let now = now_ms();
        let mut st = self.lock();
        if st.stopped {
            return;
        }
        st.alerts_received += alerts.len() as u64;
        let resolve_timeout_ms = st.rt.config.global.resolve_timeout_ms;
        for a in alerts {
            if a.labels.is_empty() {
                tracing::warn!("alert without labels dropped");
                continue;
            }
            if a.ends_at_ms > 0 && a.starts_at_ms > 0 && a.ends_at_ms < a.starts_at_ms {
                tracing::warn!(labels = ?a.labels, "alert ends before it starts; dropped");
                continue;
            }
            let fp = a.fingerprint();
            let incoming = StoredAlert::from_postable(a, now, resolve_timeout_ms);
            let merged = StoredAlert::put(st.alerts.get(&fp), incoming, now);
            st.alerts.insert(fp, merged.clone());
            self.route_alert(&mut st, fp, merged, now);
        }
        st.dirty.alerts = true;
        drop(st);
        self.persist.notify_one();
    }

    /// Stops every group and writes the state a last time. Idempotent; the `stop`
    /// future given to [`Notifier::start`] calls it.
    pub async fn shutdown(&self) {
        {
            let mut st = self.lock();
            if !st.stopped {
                st.stopped = true;
                st.dirty = Dirty {
                    alerts: true,
                    nflog: true,
                    silences: true,
                };
                for (_, g) in st.groups.drain() {
                    g.wake.notify_one();
                }
            }
        }
        self.write_state().await;
        self.shutdown_done.notify_waiters();
        self.persist.notify_one();
    }

    /// Writes what changed since the last write.
    async fn write_state(&self) {
        let (dirty, alerts, nflog, silences) = {
            let mut st = self.lock();
            let d = std::mem::take(&mut st.dirty);
            let alerts = d.alerts.then(|| {
                let mut list: Vec<&StoredAlert> = st.alerts.values().collect();
                list.sort_by(|a, b| a.labels.cmp(&b.labels));
                serde_json::to_string_pretty(&list).unwrap_or_default()
            });
            let nflog = d.nflog.then(|| st.nflog.to_json());
            let silences = d.silences.then(|| st.silences.to_json());
            (d, alerts, nflog, silences)
        };
        if !(dirty.alerts || dirty.nflog || dirty.silences) {
            return;
        }
        let dir = self.state_dir.clone();
        let res = tokio::task::spawn_blocking(move || -> Result<(), String> {
            for (name, text) in [
                ("alerts.json", alerts),
                ("nflog.json", nflog),
                ("silences.json", silences),
            ] {
                if let Some(text) = text {
                    let path = dir.join(name);
                    store::write_atomic(&path, &text)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
            }
            Ok(())
        })
        .await;
        let err = match res {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(e) => e.to_string(),
        };
        tracing::error!(error = %err, "cannot write notifier state; will retry");
        let mut st = self.lock();
        st.dirty.alerts |= dirty.alerts;
        st.dirty.nflog |= dirty.nflog;
        st.dirty.silences |= dirty.silences;
    }

    pub(crate) fn record(&self, events: Vec<HistoryEvent>) {
        if let Some(h) = &self.opts.history {
            for e in events {
                h.record(e);
            }
        }
    }

    /// The configuration running now.
    pub fn config(&self) -> AlertmanagerConfig {
        self.lock().rt.config.clone()
    }

    // ---- silences ----

    /// Every silence with its state now.
    pub fn silences(&self) -> Vec<(Silence, SilenceState)> {
        let now = now_ms();
        let st = self.lock();
        st.silences
            .all()
            .map(|s| (s.clone(), s.state(now)))
            .collect()
    }

    /// Creates or updates a silence; returns its id.
    pub fn upsert_silence(&self, s: PostableSilence) -> Result<String, SilenceError> {
        let mut st = self.lock();
        let id = st.silences.upsert(s, now_ms())?;
        st.dirty.silences = true;
        drop(st);
        self.persist.notify_one();
        Ok(id)
    }

    /// Expires a silence now.
    pub fn expire_silence(&self, id: &str) -> Result<(), SilenceError> {
        let mut st = self.lock();
        st.silences.expire(id, now_ms())?;
        st.dirty.silences = true;
        drop(st);
        self.persist.notify_one();
        Ok(())
    }

    // ---- status and metrics ----

    /// The aggregation groups and their alerts, with what mutes each.
    pub fn groups(&self) -> Vec<GroupStatus> {
        let st = self.lock();
        group::status(&st, now_ms())
    }

    /// The receivers with their integrations' last attempts.
    pub fn receivers(&self) -> Vec<(String, Vec<Option<LastAttempt>>)> {
        let st = self.lock();
        let mut out: Vec<(String, Vec<Option<LastAttempt>>)> = st
            .rt
            .config
            .receivers
            .iter()
            .map(|r| {
                let n = st
                    .rt
                    .receivers
                    .get(&r.name)
                    .map_or(0, |x| x.integrations.len());
                let last = (0..n)
                    .map(|i| st.last_attempts.get(&(r.name.clone(), i)).cloned())
                    .collect();
                (r.name.clone(), last)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The kinds of a receiver's integrations, in order.
    pub fn integration_kinds(&self, receiver: &str) -> Vec<&'static str> {
        let st = self.lock();
        st.rt
            .receivers
            .get(receiver)
            .map(|r| r.integrations.iter().map(|i| i.kind()).collect())
            .unwrap_or_default()
    }

    pub fn metric_families(&self) -> Vec<MetricFamily> {
        let now = now_ms();
        let st = self.lock();
        let mut total = MetricFamily::counter(
            "vigil_notifications_total",
            "Notifications delivered or attempted (after retries), by integration and receiver.",
        );
        let mut failed = MetricFamily::counter(
            "vigil_notifications_failed_total",
            "Notifications that failed after retries, by integration and receiver.",
        );
        let mut lat_sum = MetricFamily::unknown(
            "vigil_notification_latency_seconds_sum",
            "Total time spent delivering notifications, retries included.",
        );
        let mut lat_count = MetricFamily::unknown(
            "vigil_notification_latency_seconds_count",
            "Notifications whose delivery time is in vigil_notification_latency_seconds_sum.",
        );
        let mut keys: Vec<&(String, &'static str)> = st.stats.keys().collect();
        keys.sort();
        for k in keys {
            let s = &st.stats[k];
            let labels = [("integration", k.1), ("receiver", k.0.as_str())];
            total.push(&labels, s.total as f64);
            failed.push(&labels, s.failed as f64);
            lat_sum.push(&labels, s.latency_sum_secs);
            lat_count.push(&labels, s.total as f64);
        }
        let received = MetricFamily::counter(
            "vigil_alerts_received_total",
            "Alerts handed to the notifier by the rule evaluator.",
        )
        .with(&[], st.alerts_received as f64);
        let mut silences = MetricFamily::gauge("vigil_silences", "Silences by state.");
        for (state, count) in st.silences.count_by_state(now) {
            silences.push(&[("state", state.as_str())], count as f64);
        }
        vec![total, failed, lat_sum, lat_count, received, silences]
    }
}

/// It does not block: routing and grouping are in-memory updates under a short lock,
/// and delivery happens in the groups' tasks.
impl AlertSink for Notifier {
    fn send(&self, alerts: Vec<PostableAlert>) {
        self.receive(alerts);
    }
}

async fn persist_loop(n: Arc<Notifier>) {
    loop {
        n.persist.notified().await;
        if n.lock().stopped {
            return;
        }
        tokio::time::sleep(n.opts.persist_delay).await;
        n.write_state().await;
    }
}

async fn maintenance_loop(n: Arc<Notifier>) {
    let mut tick = tokio::time::interval(n.opts.maintenance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = n.shutdown_done.notified() => return,
        }
        let now = now_ms();
        let mut st = n.lock();
        if st.stopped {
            return;
        }
        if st.silences.gc(now) > 0 {
            st.dirty.silences = true;
        }
        st.nflog.gc(now);
        // A resolved alert no group holds any more has been notified (or never
        // needed to be): it can go.
        let held: HashSet<u64> = st
            .groups
            .values()
            .flat_map(|g| g.alerts.keys().copied())
            .collect();
        let before = st.alerts.len();
        st.alerts
            .retain(|fp, a| !a.resolved(now) || held.contains(fp));
        if st.alerts.len() != before {
            st.dirty.alerts = true;
        }
        let alerts = std::mem::take(&mut st.alerts);
        st.muted_seen.retain(|(fp, _)| alerts.contains_key(fp));
        st.alerts = alerts;
        drop(st);
        n.persist.notify_one();
    }
}

/// A history event for one alert.
pub(crate) fn history_event(
    kind: HistoryKind,
    a: &StoredAlert,
    detail: String,
    at_ms: i64,
) -> HistoryEvent {
    HistoryEvent {
        at_ms,
        kind,
        labels: a.labels.clone(),
        annotations: a.annotations.clone(),
        detail,
    }
}
