//! The recovery runner: the agent's half of issue 7. The collector decides; the agent
//! runs, at most once per action id, only executables the node's administrator put in
//! its recovery directory.
//!
//! # Layout
//! - [`script`]: what may run (names, ownership and mode of the directory and the
//!   file) and the environment a script gets (`PATH`, `LANG`, `VIGIL_*`, nothing else).
//! - [`journal`]: the JSON-lines journal under `<state_dir>/recovery/` that makes a run
//!   at-most-once across reconnects and restarts, and remembers unacknowledged reports.
//! - [`run`]: one run: process group, time limit, output as OTLP log records.
//!
//! The control client hands each action to [`Recovery::handle`], which answers a known
//! id from the journal, refuses what fails the checks that need no disk, and queues
//! the rest for one worker thread: actions run one at a time, in the order they came.
//! A script still running when the agent stops is left to finish (a GPU reset cut in
//! half is worse than one completed); the next start reports it lost.

pub mod journal;
pub mod run;
pub mod script;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use vigil_proto::MetricFamily;
use vigil_proto::control::{Action, Phase, Report};

pub use crate::config::RecoveryConfig;
use crate::logs::{LogOutput, OwnedResource};
use journal::{Journal, JournalError, Known};
use run::unix_ms;

/// The resource's `vigil.interval_secs` until [`Recovery::set_interval_secs`] says
/// otherwise (the agent's default).
const DEFAULT_INTERVAL_SECS: f64 = 5.0;

/// Why the runner could not start.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("recovery journal {0}")]
    Journal(#[from] JournalError),
    #[error("starting the recovery worker: {0}")]
    Worker(#[source] std::io::Error),
}

/// The recovery runner. Dropping it stops its worker after the action it is running.
pub struct Recovery {
    inner: Arc<Inner>,
    queue: mpsc::Sender<Action>,
}

struct Inner {
    /// None: recovery is off and every action is refused.
    dir: Option<PathBuf>,
    default_timeout_secs: u32,
    max_timeout_secs: u32,
    max_output_bytes: u64,
    node: String,
    euid: u32,
    logs: Option<Arc<dyn LogOutput>>,
    interval_secs_bits: AtomicU64,
    journal: Journal,
    /// Actions queued or running, with whoever waits for their reports (a repeat of
    /// the id over a new connection adds its channel).
    in_flight: Mutex<HashMap<String, InFlight>>,
    stats: Stats,
    created_unix_secs: f64,
}

struct InFlight {
    senders: Vec<UnboundedSender<Report>>,
    started: Option<Report>,
}

#[derive(Default)]
struct Stats {
    started: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    refused: AtomicU64,
    duplicate: AtomicU64,
    lost: AtomicU64,
    running: AtomicU64,
}

impl Recovery {
    /// Opens the journal under `<state_dir>/recovery/` (lost runs become reports to
    /// resend, the file is compacted) and starts the worker. `config.dir` empty: recovery
    /// is off and every action is refused, still answered through the journal. A missing
    /// or untrusted directory is not an error here: it is logged, and each action says
    /// why it was refused. Blocking (the journal is fsynced): call it off the runtime.
    pub fn open(
        config: &RecoveryConfig,
        state_dir: &Path,
        node: &str,
        logs: Option<Arc<dyn LogOutput>>,
    ) -> Result<Recovery, RecoveryError> {
        let journal = Journal::open(&state_dir.join("recovery"), node, unix_ms())?;
        let lost = journal
            .unacked()
            .iter()
            .filter(|r| r.phase == Phase::Lost as i32)
            .count();
        let euid = script::euid();
        let dir = (!config.dir.as_os_str().is_empty()).then(|| config.dir.clone());
        match &dir {
            None => tracing::info!("recovery is off: no recovery directory is configured"),
            Some(dir) => match script::check_dir(dir, euid) {
                Ok(()) => tracing::info!(
                    dir = %dir.display(),
                    scripts = ?script::list_scripts(dir, euid),
                    "recovery scripts"
                ),
                Err(e) => tracing::warn!(error = %e, "recovery actions will be refused"),
            },
        }
        let inner = Arc::new(Inner {
            dir,
            default_timeout_secs: config.default_timeout_secs,
            max_timeout_secs: config.max_timeout_secs,
            max_output_bytes: config.max_output_bytes,
            node: node.to_owned(),
            euid,
            logs,
            interval_secs_bits: AtomicU64::new(DEFAULT_INTERVAL_SECS.to_bits()),
            journal,
            in_flight: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            created_unix_secs: unix_ms() as f64 / 1000.0,
        });
        inner.stats.lost.store(lost as u64, Ordering::Relaxed);
        let (queue, actions) = mpsc::channel();
        let worker = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("recovery".to_owned())
            .spawn(move || {
                for action in actions {
                    worker.execute(action);
                }
            })
            .map_err(RecoveryError::Worker)?;
        Ok(Recovery { inner, queue })
    }

    /// The agent's collection interval, for the `vigil.interval_secs` resource
    /// attribute of the output's log records.
    pub fn set_interval_secs(&self, secs: f64) {
        self.inner
            .interval_secs_bits
            .store(secs.to_bits(), Ordering::Relaxed);
    }

    /// The runnable executables in the directory (names), for the Hello message.
    /// Re-reads the directory; empty when recovery is off or the directory is untrusted.
    pub fn scripts(&self) -> Vec<String> {
        match &self.inner.dir {
            Some(dir) => script::list_scripts(dir, self.inner.euid),
            None => Vec::new(),
        }
    }

    /// Takes one action from the collector and returns at once. A new id runs on the
    /// worker after any action before it: `Started` (once the id is journalled and
    /// fsynced and the child spawned), then `Finished`; or a single `Refused`. An id
    /// the journal has ended is not run again: its final report (`Lost` for a run the
    /// agent restarted during) is sent again. An id still queued or running is not run
    /// twice either: `reports` joins those waiting for its reports.
    pub fn handle(self: &Arc<Self>, action: Action, reports: UnboundedSender<Report>) {
        let inner = &self.inner;
        if action.id.is_empty() {
            // Nothing to journal it under; the collector never sends one.
            inner.stats.refused.fetch_add(1, Ordering::Relaxed);
            let _ = reports.send(inner.refused(&action, "the action has no id".to_owned()));
            return;
        }
        let mut in_flight = lock(&inner.in_flight);
        if let Some(waiting) = in_flight.get_mut(&action.id) {
            inner.stats.duplicate.fetch_add(1, Ordering::Relaxed);
            if let Some(started) = &waiting.started {
                let _ = reports.send(started.clone());
            }
            waiting.senders.push(reports);
            return;
        }
        // Checked under the in-flight lock: the worker journals the final report before
        // it leaves the in-flight map, so an id is always in one of the two.
        match inner.journal.known(&action.id) {
            Known::New => {}
            Known::Final(report) => {
                inner.stats.duplicate.fetch_add(1, Ordering::Relaxed);
                let _ = reports.send(report);
                return;
            }
            Known::Started => {
                // Started by this agent, yet its final report could not be journalled.
                inner.stats.duplicate.fetch_add(1, Ordering::Relaxed);
                let _ = reports.send(Report {
                    phase: Phase::Lost as i32,
                    message: "started earlier; its final report could not be journalled".to_owned(),
                    finished_unix_ms: unix_ms(),
                    ..inner.refused(&action, String::new())
                });
                return;
            }
        }
        in_flight.insert(
            action.id.clone(),
            InFlight {
                senders: vec![reports],
                started: None,
            },
        );
        drop(in_flight);
        let refusal = match inner.precheck(&action) {
            Err(message) => Some(inner.refused(&action, message)),
            Ok(()) => match self.queue.send(action) {
                Ok(()) => None,
                Err(mpsc::SendError(action)) => {
                    Some(inner.refused(&action, "the recovery worker has stopped".to_owned()))
                }
            },
        };
        if let Some(report) = refusal {
            // Journalling the refusal fsyncs: not on the caller's (async) thread.
            let inner = Arc::clone(inner);
            let spawned = std::thread::Builder::new()
                .name("recovery-refuse".to_owned())
                .spawn(move || inner.finish(report));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a thread to journal a refusal");
            }
        }
    }

    /// Final reports the collector has not acknowledged yet (lost ones included),
    /// oldest first, to resend after a reconnect.
    pub fn unacked(&self) -> Vec<Report> {
        self.inner.journal.unacked()
    }

    /// The collector recorded this report: the journal marks it and stops resending it.
    /// A `Started` report needs no acknowledgement and is ignored.
    pub fn acked(&self, report: &Report) {
        if report.phase == Phase::Started as i32 {
            return;
        }
        if let Err(e) = self.inner.journal.record_ack(&report.action_id, unix_ms()) {
            tracing::warn!(action_id = %report.action_id, error = %e, "cannot journal a report's acknowledgement; it will be sent again");
        }
    }

    /// `vigil_agent_recovery_actions_total{result}` and `vigil_agent_recovery_running`.
    pub fn families(&self) -> Vec<MetricFamily> {
        let s = &self.inner.stats;
        let mut actions = MetricFamily::counter(
            "vigil_agent_recovery_actions_total",
            "Recovery actions by result: started, succeeded, failed, timed_out, refused, duplicate (an id already run or running, answered without running it), lost (running when the agent stopped).",
        );
        for (result, count) in [
            ("started", &s.started),
            ("succeeded", &s.succeeded),
            ("failed", &s.failed),
            ("timed_out", &s.timed_out),
            ("refused", &s.refused),
            ("duplicate", &s.duplicate),
            ("lost", &s.lost),
        ] {
            actions.push_counter(
                &[("result", result)],
                count.load(Ordering::Relaxed) as f64,
                self.inner.created_unix_secs,
            );
        }
        vec![
            actions,
            MetricFamily::gauge(
                "vigil_agent_recovery_running",
                "Recovery scripts running now (one at a time per node).",
            )
            .with(&[], s.running.load(Ordering::Relaxed) as f64),
        ]
    }
}

impl Inner {
    /// The checks that need no disk: recovery on, this node, a plain name, an
    /// environment that can be built.
    fn precheck(&self, action: &Action) -> Result<(), String> {
        if self.dir.is_none() {
            return Err(
                "recovery is off on this node: no recovery directory is configured".to_owned(),
            );
        }
        if action.node != self.node {
            return Err(format!(
                "the action is for node {:?}, and this is {:?}",
                action.node, self.node
            ));
        }
        script::check_name(&action.script)?;
        script::script_env(action).map(|_| ())
    }

    fn refused(&self, action: &Action, message: String) -> Report {
        let now = unix_ms();
        Report {
            action_id: action.id.clone(),
            node: self.node.clone(),
            phase: Phase::Refused as i32,
            started_unix_ms: now,
            finished_unix_ms: now,
            message,
            ..Report::default()
        }
    }

    fn timeout(&self, asked_secs: u32) -> Duration {
        let secs = match asked_secs {
            0 => self.default_timeout_secs,
            n => n,
        };
        Duration::from_secs(u64::from(secs.min(self.max_timeout_secs)))
    }

    /// Runs one queued action on the worker thread.
    fn execute(&self, action: Action) {
        let Some(dir) = self.dir.as_deref() else {
            return self.finish(self.refused(&action, "recovery is off".to_owned()));
        };
        let checked = script::check_script(dir, &action.script, self.euid)
            .and_then(|path| Ok((path, script::script_env(&action)?)));
        let (path, env) = match checked {
            Ok(ok) => ok,
            Err(message) => return self.finish(self.refused(&action, message)),
        };
        if let Err(e) = self
            .journal
            .record_started(&action.id, &action.script, unix_ms())
        {
            tracing::error!(action_id = %action.id, error = %e, "cannot journal a recovery action; not running it");
            let message = format!("not started: the journal could not record it first ({e})");
            return self.finish(self.refused(&action, message));
        }
        let resource = OwnedResource {
            node: self.node.clone(),
            interval_secs: f64::from_bits(self.interval_secs_bits.load(Ordering::Relaxed)),
        };
        let spec = run::RunSpec {
            path: &path,
            dir,
            script: &action.script,
            action_id: &action.id,
            env: &env,
            timeout: self.timeout(action.timeout_secs),
            grace: run::KILL_GRACE,
            max_output_bytes: self.max_output_bytes,
            logs: self.logs.as_deref(),
            resource: &resource,
        };
        tracing::info!(action_id = %action.id, script = %action.script, alert = %action.alert_name, "running recovery script");
        let mut spawned = false;
        let result = run::run(&spec, |started_unix_ms| {
            spawned = true;
            self.on_spawned(&action, started_unix_ms);
        });
        if spawned {
            self.stats.running.fetch_sub(1, Ordering::Relaxed);
        }
        let report = match result {
            Ok(outcome) => Report {
                action_id: action.id.clone(),
                node: self.node.clone(),
                phase: Phase::Finished as i32,
                exit_code: outcome.exit_code,
                signal: outcome.signal,
                timed_out: outcome.timed_out,
                started_unix_ms: outcome.started_unix_ms,
                finished_unix_ms: outcome.finished_unix_ms,
                message: outcome.message,
            },
            Err(message) => Report {
                phase: Phase::Finished as i32,
                ..self.refused(&action, message)
            },
        };
        self.finish(report);
    }

    fn on_spawned(&self, action: &Action, started_unix_ms: i64) {
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        self.stats.running.fetch_add(1, Ordering::Relaxed);
        let report = Report {
            action_id: action.id.clone(),
            node: self.node.clone(),
            phase: Phase::Started as i32,
            started_unix_ms,
            ..Report::default()
        };
        let mut in_flight = lock(&self.in_flight);
        if let Some(waiting) = in_flight.get_mut(&action.id) {
            for sender in &waiting.senders {
                let _ = sender.send(report.clone());
            }
            waiting.started = Some(report);
        }
    }

    /// Journals a final report, then hands it to everyone waiting for it.
    fn finish(&self, report: Report) {
        let counter = match Phase::try_from(report.phase) {
            Ok(Phase::Refused) => &self.stats.refused,
            _ if report.timed_out => &self.stats.timed_out,
            _ if report.succeeded() => &self.stats.succeeded,
            _ => &self.stats.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if report.phase == Phase::Refused as i32 {
            tracing::warn!(action_id = %report.action_id, reason = %report.message, "recovery action refused");
        } else {
            tracing::info!(action_id = %report.action_id, result = %report.message, "recovery action finished");
        }
        if let Err(e) = self.journal.record_final(&report, unix_ms()) {
            tracing::error!(action_id = %report.action_id, error = %e, "cannot journal a recovery action's report; it is sent once, not resent");
        }
        let waiting = lock(&self.in_flight).remove(&report.action_id);
        for sender in waiting.map(|w| w.senders).unwrap_or_default() {
            let _ = sender.send(report.clone());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the map consistent; a panic elsewhere changes nothing.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
