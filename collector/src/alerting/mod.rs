//! Rule evaluation inside the collector, as Prometheus's rule manager does it: each
//! group of the loaded rule files is evaluated on its own interval against the store,
//! which receives the recorded series, `ALERTS`/`ALERTS_FOR_STATE` and staleness
//! markers; the active alerts go to an [`AlertSink`] with Prometheus's `sendAlerts`
//! semantics; every transition goes into the alert history.
//!
//! Rule files are reloaded when they change on disk (debounced) and on request
//! (`SIGHUP`). A reload whose files are invalid keeps the running rules, logs why and
//! sets `vigil_rules_last_reload_successful` to 0; a valid one keeps the state of every
//! rule that still exists (Prometheus's `CopyState`).
//!
//! # Layout
//! - [`load`]: which files `--rules` stands for, the built-in default packs, the
//!   file watcher.
//! - [`send`]: which alerts go to the sink after an evaluation, and their shape.
//! - [`history`]: the durable alert history, a [`HistorySink`].
//! - [`api`]: `/api/v1/rules`, `/api/v1/alerts` and `/api/v1/alerts/history`.
//! - [`metrics`]: the evaluator's own metrics on `/metrics`.

pub mod api;
pub mod history;
pub mod load;
mod metrics;
pub mod send;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use vigil_rules::alerting::AlertState;
use vigil_rules::group::{Group, GroupOptions};
use vigil_rules::promql::{Engine, EngineOptions, Labels, stale_nan};

pub use history::{AlertHistory, HistoryError, HistoryQuery};
pub use load::LoadError;

use crate::notify::{AlertSink, HistoryEvent, HistoryKind, HistorySink};
use crate::store::Store;
use api::GroupSnapshot;

/// How long the file watcher waits for quiet before reloading.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);

/// What the evaluator needs from the configuration.
#[derive(Debug, Clone)]
pub struct AlertingOptions {
    /// `--rules`: files or folders. Empty: the built-in default packs.
    pub rule_paths: Vec<PathBuf>,
    /// Default interval, external URL, `for` restore settings. `restore_for_state` is
    /// honoured at start; reloaded groups never restore (Prometheus's behaviour).
    pub group: GroupOptions,
    /// Prometheus's `--rules.alert.resend-delay`.
    pub resend_delay_ms: i64,
    pub lookback_delta_ms: i64,
    /// Watch the rule files and reload on change.
    pub watch: bool,
    /// Bumped by ingest when new samples are stored: with it, a group is also
    /// evaluated soon after data arrives ([`EAGER_GAP_DIVISOR`]), not only on its
    /// interval. `None`: on the interval only.
    pub arrivals: Option<watch::Receiver<u64>>,
}

/// Eager evaluation runs a group at most this many times per interval: at most every
/// quarter of the interval after the previous evaluation.
pub const EAGER_GAP_DIVISOR: u32 = 4;

impl AlertingOptions {
    pub fn from_config(config: &crate::CollectorConfig) -> Self {
        let a = &config.alerting;
        let ms = |secs: f64| (secs * 1000.0).round() as i64;
        let external_url = if a.external_url.is_empty() {
            format!("http://{}:{}", hostname(), config.listen.port())
        } else {
            a.external_url.trim_end_matches('/').to_string()
        };
        AlertingOptions {
            rule_paths: a.rule_files.clone(),
            group: GroupOptions {
                default_interval_ms: ms(a.evaluation_interval_secs),
                external_labels: Vec::new(),
                external_url,
                restore_for_state: true,
                outage_tolerance_ms: ms(a.for_outage_tolerance_secs),
                for_grace_period_ms: ms(a.for_grace_period_secs),
            },
            resend_delay_ms: ms(a.resend_delay_secs),
            lookback_delta_ms: config.query.lookback_delta_ms(),
            watch: true,
            arrivals: None,
        }
    }
}

/// Resolves when ingest stored samples the caller has not seen yet; never without a
/// signal (or once ingest is gone).
async fn new_samples(arrivals: &mut Option<watch::Receiver<u64>>) {
    match arrivals {
        Some(rx) => {
            if rx.changed().await.is_err() {
                *arrivals = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// The firing alerts of each rule of `group` that has a `recovery:` block, to the
/// remediation policy (an alert that is no longer in the list has resolved).
fn observe_recovery(recovery: &crate::recovery::Remediation, group: &Group, t_ms: i64) {
    for rule in group.rules() {
        let vigil_rules::group::RuleRef::Alerting(rule) = rule else {
            continue;
        };
        let Some(rec) = rule.recovery() else {
            continue;
        };
        let firing: Vec<crate::recovery::policy::FiringAlert> = rule
            .alerts()
            .into_iter()
            .filter(|a| a.state == AlertState::Firing)
            .map(|a| crate::recovery::policy::FiringAlert {
                labels: a
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                script: rec.script.clone(),
                args_from_labels: rec.args_from_labels.clone(),
            })
            .collect();
        recovery.observe_rule(rule.name(), &firing, t_ms);
    }
}

/// The host name, for the default external URL.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(s) if rc == 0 && !s.is_empty() => s.to_string(),
        _ => "localhost".to_string(),
    }
}

pub(crate) fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counters of one group, kept across reloads of the same group.
#[derive(Debug, Default)]
struct GroupCounters {
    iterations: AtomicU64,
    missed: AtomicU64,
    failures: AtomicU64,
    last_duration_micros: AtomicU64,
}

/// One running group: its evaluator, the last sent time of each alert, and what the
/// API shows.
struct GroupSlot {
    file: PathBuf,
    name: String,
    interval_ms: i64,
    group: Mutex<Group>,
    /// When each alert (rule name, labels) was last handed to the sink.
    last_sent_ms: Mutex<HashMap<(String, Labels), i64>>,
    snapshot: RwLock<Arc<GroupSnapshot>>,
    counters: GroupCounters,
    /// Evaluations left in which `for` state is being restored after a start: an alert
    /// the history last saw firing is not recorded as pending or firing again.
    restoring_evals: AtomicU64,
}

impl GroupSlot {
    fn new(group: Group) -> GroupSlot {
        let snapshot = GroupSnapshot::build(&group, None, 0.0, None);
        GroupSlot {
            file: group.file.clone(),
            name: group.name.clone(),
            interval_ms: group.interval_ms.max(1),
            group: Mutex::new(group),
            last_sent_ms: Mutex::new(HashMap::new()),
            snapshot: RwLock::new(Arc::new(snapshot)),
            counters: GroupCounters::default(),
            restoring_evals: AtomicU64::new(0),
        }
    }

    fn key(&self) -> (PathBuf, String) {
        (self.file.clone(), self.name.clone())
    }

    /// Prometheus's `rule_group` label: `file;name`.
    fn label(&self) -> String {
        format!("{};{}", self.file.display(), self.name)
    }
}

struct Runner {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct ReloadStatus {
    successful: AtomicBool,
    last_success_ms: AtomicI64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The rule evaluator over groups from [`load_rules`]; [`Evaluator::run`]
/// evaluates them until shutdown; the HTTP API reads [`Evaluator::groups`].
pub struct Evaluator {
    opts: AlertingOptions,
    store: Arc<Store>,
    engine: Engine,
    history: Arc<AlertHistory>,
    sink: Option<Arc<dyn AlertSink>>,
    slots: RwLock<Vec<Arc<GroupSlot>>>,
    runners: tokio::sync::Mutex<Vec<Runner>>,
    reload: ReloadStatus,
    /// The remediation policy, told of the firing alerts of every rule with a
    /// `recovery:` block after each evaluation.
    recovery: std::sync::OnceLock<Arc<crate::recovery::Remediation>>,
}

impl Evaluator {
    pub fn new(
        opts: AlertingOptions,
        store: Arc<Store>,
        history: Arc<AlertHistory>,
        sink: Option<Arc<dyn AlertSink>>,
        groups: Vec<Group>,
    ) -> Arc<Evaluator> {
        let restore = opts.group.restore_for_state;
        let engine = Engine::new(EngineOptions {
            lookback_delta_ms: opts.lookback_delta_ms,
            ..EngineOptions::default()
        });
        Arc::new(Evaluator {
            opts,
            store,
            engine,
            history,
            sink,
            slots: RwLock::new(
                groups
                    .into_iter()
                    .map(|g| {
                        let slot = GroupSlot::new(g);
                        if restore {
                            // Restored after the second evaluation, firing by the third.
                            slot.restoring_evals.store(3, Ordering::Relaxed);
                        }
                        Arc::new(slot)
                    })
                    .collect(),
            ),
            runners: tokio::sync::Mutex::new(Vec::new()),
            reload: ReloadStatus {
                successful: AtomicBool::new(true),
                last_success_ms: AtomicI64::new(now_ms()),
                ..ReloadStatus::default()
            },
            recovery: std::sync::OnceLock::new(),
        })
    }

    /// Hands the firing alerts of rules with a `recovery:` block to `recovery` from
    /// the next evaluation on.
    pub fn set_recovery(&self, recovery: Arc<crate::recovery::Remediation>) {
        let _ = self.recovery.set(recovery);
    }

    pub fn history(&self) -> &Arc<AlertHistory> {
        &self.history
    }

    pub fn options(&self) -> &AlertingOptions {
        &self.opts
    }

    /// The groups' last snapshots, in file order.
    pub fn groups(&self) -> Vec<Arc<GroupSnapshot>> {
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|s| Arc::clone(&s.snapshot.read().unwrap_or_else(PoisonError::into_inner)))
            .collect()
    }

    /// Why the last reload failed, if it did.
    pub fn last_reload_error(&self) -> Option<String> {
        lock(&self.reload.last_error).clone()
    }

    /// Evaluates every group until `stop` resolves; reloads when the rule files change
    /// or `reload` is notified (SIGHUP).
    pub async fn run(self: Arc<Self>, reload: Arc<Notify>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        self.start_runners().await;
        let (_watcher, mut changed) = if self.opts.watch && !self.opts.rule_paths.is_empty() {
            match load::RuleWatcher::start(&self.opts.rule_paths, RELOAD_DEBOUNCE) {
                Ok((w, rx)) => (Some(w), Some(rx)),
                Err(e) => {
                    tracing::warn!(error = %e, "rule files are not watched; reload with SIGHUP");
                    (None, None)
                }
            }
        } else {
            (None, None)
        };
        loop {
            let file_changed = async {
                match changed.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stop => break,
                _ = reload.notified() => {
                    tracing::info!("reloading the rules on request");
                }
                got = file_changed => {
                    if got.is_none() {
                        changed = None;
                        continue;
                    }
                    tracing::info!("rule files changed; reloading");
                }
            }
            // The outcome is logged and exported by `reload`.
            let _ = Arc::clone(&self).reload().await;
        }
        self.stop_runners().await;
    }

    async fn start_runners(self: &Arc<Self>) {
        let slots = self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut runners = self.runners.lock().await;
        for slot in slots {
            let (stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(Arc::clone(self).run_group(slot, stop_rx));
            runners.push(Runner { stop, task });
        }
    }

    async fn stop_runners(&self) {
        let runners: Vec<Runner> = std::mem::take(&mut *self.runners.lock().await);
        for r in &runners {
            r.stop.send_replace(true);
        }
        for r in runners {
            if let Err(e) = r.task.await {
                tracing::error!(error = %e, "a rule group task failed");
            }
        }
    }

    /// Loads the rule files again. Invalid files keep the running rules; valid ones
    /// replace them, keeping the state of rules that still exist.
    pub async fn reload(self: Arc<Self>) -> Result<(), LoadError> {
        let (paths, mut opts) = (self.opts.rule_paths.clone(), self.opts.group.clone());
        opts.restore_for_state = false;
        let loaded = tokio::task::spawn_blocking(move || load::load(&paths, &opts))
            .await
            .map_err(|e| LoadError {
                problems: vec![format!("loading the rules: {e}")],
            })
            .and_then(|r| r);
        let groups = match loaded {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "reloading the rules failed; the previous rules stay");
                self.reload.successful.store(false, Ordering::Relaxed);
                self.reload.failures.fetch_add(1, Ordering::Relaxed);
                *lock(&self.reload.last_error) = Some(e.to_string());
                return Err(e);
            }
        };
        // Stop every group first: no evaluation may run while its state is handed over.
        self.stop_runners().await;
        let this = Arc::clone(&self);
        let swapped = tokio::task::spawn_blocking(move || this.swap_groups(groups)).await;
        if let Err(e) = swapped {
            tracing::error!(error = %e, "handing over rule state failed");
        }
        self.start_runners().await;
        self.reload.successful.store(true, Ordering::Relaxed);
        self.reload
            .last_success_ms
            .store(now_ms(), Ordering::Relaxed);
        *lock(&self.reload.last_error) = None;
        tracing::info!(
            groups = self
                .slots
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
            "rules reloaded"
        );
        Ok(())
    }

    /// Replaces the slots with `groups`, copying state over from the old slot of the
    /// same file and name, and marks stale what no rule writes any more (blocking).
    fn swap_groups(&self, groups: Vec<Group>) {
        let old: HashMap<(PathBuf, String), Arc<GroupSlot>> = self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|s| (s.key(), Arc::clone(s)))
            .collect();
        let mut stale: Vec<Labels> = Vec::new();
        let mut kept = std::collections::HashSet::new();
        let mut new_slots = Vec::with_capacity(groups.len());
        for mut g in groups {
            let key = (g.file.clone(), g.name.clone());
            if let Some(prev) = old.get(&key) {
                kept.insert(key);
                stale.extend(g.copy_state_from(&lock(&prev.group)));
                let slot = GroupSlot::new(g);
                *lock(&slot.last_sent_ms) = lock(&prev.last_sent_ms).clone();
                for (to, from) in [
                    (&slot.counters.iterations, &prev.counters.iterations),
                    (&slot.counters.missed, &prev.counters.missed),
                    (&slot.counters.failures, &prev.counters.failures),
                    (
                        &slot.counters.last_duration_micros,
                        &prev.counters.last_duration_micros,
                    ),
                ] {
                    to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
                }
                // Until it evaluates again, the API shows the group's alerts as they are.
                let prev_snap =
                    Arc::clone(&prev.snapshot.read().unwrap_or_else(PoisonError::into_inner));
                *slot
                    .snapshot
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::new(GroupSnapshot::build(
                    &lock(&slot.group),
                    None,
                    prev_snap.eval_seconds,
                    prev_snap.last_eval_ms,
                ));
                new_slots.push(Arc::new(slot));
            } else {
                new_slots.push(Arc::new(GroupSlot::new(g)));
            }
        }
        for (key, slot) in &old {
            if !kept.contains(key) {
                stale.extend(lock(&slot.group).previous_series());
            }
        }
        if !stale.is_empty() {
            let t = now_ms();
            let samples: Vec<(Labels, i64, f64)> =
                stale.into_iter().map(|l| (l, t, stale_nan())).collect();
            if let Err(e) = self.store.append_batch(&samples) {
                tracing::warn!(error = %e, "marking the series of removed rules stale failed");
            }
        }
        *self.slots.write().unwrap_or_else(PoisonError::into_inner) = new_slots;
    }

    /// Evaluates one group on its interval until stopped. The first evaluation runs at
    /// once; a late one skips the ticks it missed and counts them.
    async fn run_group(self: Arc<Self>, slot: Arc<GroupSlot>, mut stop: watch::Receiver<bool>) {
        let interval = Duration::from_millis(u64::try_from(slot.interval_ms).unwrap_or(1));
        let eager_gap = interval / EAGER_GAP_DIVISOR;
        let mut arrivals = self.opts.arrivals.clone();
        let mut next = tokio::time::Instant::now();
        let mut last_eval: Option<tokio::time::Instant> = None;
        loop {
            // The tick, or (eager) samples stored since the last evaluation began.
            let on_tick = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep_until(next) => true,
                () = new_samples(&mut arrivals) => false,
            };
            if !on_tick {
                let earliest = last_eval.map_or(next, |t| t + eager_gap);
                if earliest >= next {
                    continue; // the tick comes first anyway
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep_until(earliest) => {}
                }
            }
            if let Some(a) = arrivals.as_mut() {
                // What arrives from now on triggers the next eager evaluation.
                a.borrow_and_update();
            }
            last_eval = Some(tokio::time::Instant::now());
            let (this, s) = (Arc::clone(&self), Arc::clone(&slot));
            let t_ms = now_ms();
            if let Err(e) = tokio::task::spawn_blocking(move || this.evaluate(&s, t_ms)).await {
                tracing::error!(group = %slot.name, error = %e, "rule evaluation task failed");
            }
            if !on_tick {
                continue;
            }
            next += interval;
            let now = tokio::time::Instant::now();
            if next <= now {
                let behind = now.duration_since(next).as_nanos();
                let missed = u64::try_from(behind / interval.as_nanos().max(1)).unwrap_or(0) + 1;
                slot.counters.missed.fetch_add(missed, Ordering::Relaxed);
                next += interval * u32::try_from(missed).unwrap_or(u32::MAX);
            }
        }
    }

    /// One evaluation of one group at `t_ms` (blocking): samples into the store,
    /// transitions into the history, alerts to the sink, a new snapshot for the API.
    fn evaluate(&self, slot: &GroupSlot, t_ms: i64) {
        let started = Instant::now();
        let mut group = lock(&slot.group);
        let res = group.eval(&self.engine, &*self.store, t_ms);
        if !res.samples.is_empty() {
            let samples: Vec<(Labels, i64, f64)> = res
                .samples
                .into_iter()
                .map(|s| (s.labels, s.t_ms, s.v))
                .collect();
            match self.store.append_batch(&samples) {
                Ok(report) if report.rejected() > 0 => tracing::debug!(
                    group = %slot.name,
                    rejected = report.rejected(),
                    "the store refused some rule results"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(
                    group = %slot.name,
                    error = %e,
                    "storing rule results failed"
                ),
            }
        }
        for e in &res.errors {
            tracing::warn!(group = %slot.name, rule = %e.rule, error = %e.error, "rule evaluation failed");
        }
        slot.counters
            .failures
            .fetch_add(res.errors.len() as u64, Ordering::Relaxed);
        let restoring = slot
            .restoring_evals
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        for t in &res.transitions {
            let kind = match t.to {
                AlertState::Pending => HistoryKind::Pending,
                AlertState::Firing => HistoryKind::Firing,
                AlertState::Inactive => HistoryKind::Resolved,
            };
            let labels = history::label_map(t.alert.labels.iter());
            if restoring
                && kind != HistoryKind::Resolved
                && self.history.kind_before_start(&labels) == Some(HistoryKind::Firing)
            {
                continue;
            }
            let mut detail = format!(
                "group {:?}: {} -> {}",
                group.name,
                t.from.as_str(),
                t.to.as_str()
            );
            if !t.alert.value.is_nan() {
                detail.push_str(&format!(", value {}", t.alert.value));
            }
            self.history.record(HistoryEvent {
                at_ms: t_ms,
                kind,
                labels,
                annotations: t
                    .alert
                    .annotations
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                detail,
            });
        }
        if let Some(recovery) = self.recovery.get() {
            observe_recovery(recovery, &group, t_ms);
        }
        let to_send = send::alerts_to_send(
            &group,
            &mut lock(&slot.last_sent_ms),
            t_ms,
            self.opts.resend_delay_ms,
            &self.opts.group.external_url,
        );
        if let Some(sink) = &self.sink
            && !to_send.is_empty()
        {
            sink.send(to_send);
        }
        let took = started.elapsed();
        let snapshot = GroupSnapshot::build(
            &group,
            Some(&res.rule_outcomes),
            took.as_secs_f64(),
            Some(t_ms),
        );
        drop(group);
        *slot
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
        slot.counters.iterations.fetch_add(1, Ordering::Relaxed);
        slot.counters.last_duration_micros.store(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// Loads the rule files of `opts` (or the default packs) on a blocking thread.
pub async fn load_rules(opts: &AlertingOptions) -> Result<Vec<Group>, LoadError> {
    let (paths, group_opts) = (opts.rule_paths.clone(), opts.group.clone());
    let groups = tokio::task::spawn_blocking(move || load::load(&paths, &group_opts))
        .await
        .map_err(|e| LoadError {
            problems: vec![format!("loading the rules: {e}")],
        })??;
    tracing::info!(groups = groups.len(), "rules loaded");
    Ok(groups)
}

/// Opens the alert history in `<data_dir>/alerts/` on a blocking thread.
pub async fn open_history(
    config: &crate::CollectorConfig,
) -> Result<Arc<AlertHistory>, HistoryError> {
    let dir = config.data_dir.join("alerts");
    let max_bytes = config.alerting.history_max_bytes;
    let opened = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || AlertHistory::open(&dir, max_bytes)
    })
    .await
    .map_err(|e| HistoryError::Io {
        path: dir,
        source: std::io::Error::other(e.to_string()),
    })??;
    Ok(Arc::new(opened))
}
