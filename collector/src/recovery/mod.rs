//! Auto-recovery: the collector decides, the agent executes.
//!
//! After each evaluation of a rule with a `recovery:` block the evaluator hands the
//! rule's firing alerts to [`Remediation::observe_rule`]; the [`policy`] decides (run,
//! wait for approval, dry run, or skip for the kill switch, a cooldown, the concurrency
//! cap; escalate after a failure or the last attempt); every decision is appended to the
//! [`journal`] before anything acts on it; a queued action goes to its node's agent over
//! the [`control`] channel at once when the agent is connected, or when it connects.
//! Escalations go to the notifier as the alert `VigilRecoveryEscalated` (labels: the
//! original alert's, with `node`, `script`, `recovery_for` and `severity="critical"`),
//! sent again while the escalation holds.
//!
//! # Layout
//! - [`config`]: `[recovery]` in `collector.toml`.
//! - [`policy`]: the guardrails, pure.
//! - [`journal`]: the audit on disk.
//! - [`control`]: the agents' control stream (`vigil.control.v1.Control` on the OTLP
//!   gRPC port).
//! - [`api`]: `/api/v1/actions`, approve, reject, the kill switch.

pub mod api;
pub mod config;
pub mod control;
pub mod journal;
pub mod policy;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use vigil_proto::MetricFamily;
use vigil_proto::actions::{ActionState, Decision};
use vigil_proto::control::{Command, Report};

use crate::notify::{AlertSink, LabelMap, PostableAlert};
use config::RecoveryConfig;
use journal::{Journal, JournalError};
use policy::{Event, FiringAlert, Policy, PolicyError, Record};

/// The alert name of an escalation.
pub const ESCALATION_ALERT: &str = "VigilRecoveryEscalated";

/// How often the housekeeping runs: expiries, dispatch after freed slots, escalation
/// re-sends.
const TICK: Duration = Duration::from_secs(1);
/// Escalations are sent again this often, valid for four times as long.
const ESCALATION_RESEND: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connected agent: where its commands go.
struct Connection {
    generation: u64,
    tx: mpsc::Sender<Result<Command, tonic::Status>>,
    scripts: Vec<String>,
    agent_version: String,
    since_ms: i64,
}

/// The fleet size the share caps are taken of.
pub trait FleetSize: Send + Sync {
    fn nodes(&self) -> usize;
}

impl FleetSize for crate::registry::Registry {
    fn nodes(&self) -> usize {
        self.node_count()
    }
}

pub struct Remediation {
    policy: Mutex<Policy>,
    journal: Mutex<Journal>,
    connections: Mutex<HashMap<String, Connection>>,
    generation: std::sync::atomic::AtomicU64,
    sink: Option<Arc<dyn AlertSink>>,
    fleet: Option<Arc<dyn FleetSize>>,
    external_url: String,
    journal_errors: std::sync::atomic::AtomicU64,
    /// Set when the collector stops: every control stream ends, so the gRPC server's
    /// graceful shutdown does not wait for agents that never hang up.
    closing: tokio::sync::watch::Sender<bool>,
}

/// Why an operator's request could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{0}; nothing was changed")]
    Journal(#[from] JournalError),
}

fn now_ms() -> i64 {
    crate::alerting::now_ms()
}

impl Remediation {
    /// Opens the audit under `<data_dir>/recovery/` and resumes from it.
    pub fn open(
        config: RecoveryConfig,
        data_dir: &Path,
        sink: Option<Arc<dyn AlertSink>>,
        fleet: Option<Arc<dyn FleetSize>>,
        external_url: String,
    ) -> Result<Arc<Remediation>, JournalError> {
        let (journal, loaded) = Journal::open(&data_dir.join("recovery"))?;
        let policy = Policy::new(config, loaded.records, loaded.kill_switch, now_ms());
        if policy.kill_switch().engaged {
            tracing::warn!(
                by = %policy.kill_switch().by,
                reason = %policy.kill_switch().reason,
                "recovery kill switch engaged: no action starts"
            );
        }
        Ok(Arc::new(Remediation {
            policy: Mutex::new(policy),
            journal: Mutex::new(journal),
            connections: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            sink,
            fleet,
            external_url,
            journal_errors: std::sync::atomic::AtomicU64::new(0),
            closing: tokio::sync::watch::channel(false).0,
        }))
    }

    fn refresh_fleet_size(&self, policy: &mut Policy) {
        let connected = lock(&self.connections).len();
        let known = self.fleet.as_ref().map_or(0, |f| f.nodes());
        policy.set_fleet_size(known.max(connected));
    }

    /// Persists `events` (the policy lock held, so the journal's order is the
    /// policy's); returns the escalations and the nodes with newly queued actions. On
    /// a journal failure nothing of this batch is dispatched: an action whose decision
    /// is not on disk could be decided again after a restart.
    fn persist(&self, events: &[Event]) -> Result<Vec<Record>, JournalError> {
        let changed: Vec<&Record> = events
            .iter()
            .filter_map(|e| match e {
                Event::Changed(r) => Some(r),
                Event::Escalated(_) => None,
            })
            .collect();
        if let Err(e) = lock(&self.journal).append(&changed) {
            self.journal_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(error = %e, "writing the recovery journal failed");
            return Err(e);
        }
        Ok(events
            .iter()
            .filter_map(|e| match e {
                Event::Escalated(r) => Some(r.clone()),
                Event::Changed(_) => None,
            })
            .collect())
    }

    /// The firing alerts of `rule` after an evaluation at `t_ms`.
    pub fn observe_rule(&self, rule: &str, firing: &[FiringAlert], t_ms: i64) {
        let mut policy = lock(&self.policy);
        self.refresh_fleet_size(&mut policy);
        let events = policy.observe_rule(rule, firing, t_ms);
        if events.is_empty() {
            return;
        }
        for e in &events {
            if let Event::Changed(r) = e {
                log_decision(r);
            }
        }
        let Ok(escalations) = self.persist(&events) else {
            // Not on disk: undo nothing in memory, but hand nothing out either; the
            // tick retries the dispatch once the journal writes again.
            return;
        };
        let nodes: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                Event::Changed(r) if r.state == ActionState::Queued => Some(r.node.clone()),
                _ => None,
            })
            .collect();
        self.dispatch_locked(&mut policy, &nodes);
        drop(policy);
        self.notify(&escalations);
    }

    /// Hands the queued actions of `nodes` to their connected agents, within the caps.
    fn dispatch_locked(&self, policy: &mut Policy, nodes: &[String]) {
        let conns = lock(&self.connections);
        for node in nodes {
            let Some(conn) = conns.get(node) else {
                continue;
            };
            let events = policy.dispatchable(node, now_ms());
            if events.is_empty() || self.persist(&events).is_err() {
                continue;
            }
            for e in events {
                if let Event::Changed(r) = e {
                    tracing::info!(action = %r.id, node = %r.node, script = %r.script, "action sent to the agent");
                    if conn
                        .tx
                        .try_send(Ok(Command {
                            action: Some(r.to_action()),
                        }))
                        .is_err()
                    {
                        // Gone or stuck: the action stays dispatched and goes out again
                        // when the agent reconnects.
                        tracing::warn!(node = %node, action = %r.id, "agent's control stream is not taking commands");
                    }
                }
            }
        }
    }

    /// Every connected node with queued actions.
    fn dispatch_all(&self) {
        let mut policy = lock(&self.policy);
        let nodes: Vec<String> = {
            let conns = lock(&self.connections);
            let mut v: Vec<String> = policy
                .records()
                .iter()
                .filter(|r| r.state == ActionState::Queued && conns.contains_key(&r.node))
                .map(|r| r.node.clone())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        if !nodes.is_empty() {
            self.refresh_fleet_size(&mut policy);
            self.dispatch_locked(&mut policy, &nodes);
        }
    }

    /// An agent connected: its stream of commands, starting with what it was sent
    /// before and did not report yet, then what is queued for it.
    pub(crate) fn connect(
        self: &Arc<Self>,
        hello: &vigil_proto::control::Hello,
    ) -> mpsc::Receiver<Result<Command, tonic::Status>> {
        let (tx, rx) = mpsc::channel(256);
        if *self.closing.borrow() {
            // Stopping: the stream ends at once and the agent tries again later.
            return rx;
        }
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut policy = lock(&self.policy);
        for r in policy.redeliver(&hello.node) {
            let _ = tx.try_send(Ok(Command {
                action: Some(r.to_action()),
            }));
        }
        lock(&self.connections).insert(
            hello.node.clone(),
            Connection {
                generation,
                tx: tx.clone(),
                scripts: hello.scripts.clone(),
                agent_version: hello.agent_version.clone(),
                since_ms: now_ms(),
            },
        );
        tracing::info!(node = %hello.node, scripts = ?hello.scripts, "agent connected to the control channel");
        self.refresh_fleet_size(&mut policy);
        self.dispatch_locked(&mut policy, std::slice::from_ref(&hello.node));
        drop(policy);
        // Heartbeats: they keep proxies from closing an idle stream, and a failed one
        // tells that the agent is gone.
        let me = Arc::clone(self);
        let node = hello.node.clone();
        let mut closing = self.closing.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = closing.wait_for(|c| *c) => break,
                }
                if tx.send(Ok(Command { action: None })).await.is_err() {
                    break;
                }
            }
            let mut conns = lock(&me.connections);
            if conns.get(&node).is_some_and(|c| c.generation == generation) {
                conns.remove(&node);
                tracing::info!(node = %node, "agent left the control channel");
            }
        });
        rx
    }

    /// What an agent reported; `None` when the action is not that node's (or unknown).
    pub(crate) fn report(&self, node: &str, rep: &Report) -> Result<bool, JournalError> {
        let mut policy = lock(&self.policy);
        let Some(events) = policy.report(node, rep, now_ms()) else {
            return Ok(false);
        };
        for e in &events {
            if let Event::Changed(r) = e {
                log_decision(r);
            }
        }
        let escalations = self.persist(&events)?;
        drop(policy);
        self.notify(&escalations);
        // A finished action frees a slot.
        self.dispatch_all();
        Ok(true)
    }

    pub fn approve(&self, id: &str, by: &str) -> Result<Record, RequestError> {
        let mut policy = lock(&self.policy);
        let events = policy.approve(id, by, now_ms())?;
        self.persist(&events)?;
        tracing::info!(action = %id, by, "action approved");
        let node = policy.get(id).map(|r| r.node.clone());
        if let Some(node) = node {
            self.dispatch_locked(&mut policy, &[node]);
        }
        Ok(policy.get(id).cloned().expect("approved above"))
    }

    pub fn reject(&self, id: &str, by: &str) -> Result<Record, RequestError> {
        let mut policy = lock(&self.policy);
        let events = policy.reject(id, by, now_ms())?;
        self.persist(&events)?;
        tracing::info!(action = %id, by, "action rejected");
        Ok(policy.get(id).cloned().expect("rejected above"))
    }

    pub fn set_kill_switch(
        &self,
        engaged: bool,
        by: &str,
        reason: &str,
    ) -> Result<policy::KillSwitchState, JournalError> {
        let mut policy = lock(&self.policy);
        let before = policy.kill_switch().clone();
        let events = policy.set_kill_switch(engaged, by, reason, now_ms());
        let k = policy.kill_switch().clone();
        // The journal's guard must be gone before `persist` locks it again: a guard
        // made in the same statement lives until the statement ends.
        let switched = lock(&self.journal).kill_switch(&k);
        let written = switched.and_then(|()| self.persist(&events).map(|_| ()));
        if let Err(e) = written {
            // Not durable: put the switch back as it was, so the API does not say
            // "engaged" about a switch a restart would forget.
            policy.set_kill_switch(before.engaged, &before.by, &before.reason, before.since_ms);
            return Err(e);
        }
        if engaged {
            tracing::warn!(by, reason, "recovery kill switch engaged");
        } else {
            tracing::warn!(by, "recovery kill switch released");
        }
        drop(policy);
        if !engaged {
            self.dispatch_all();
        }
        Ok(k)
    }

    /// The audit, newest first, with the kill switch.
    pub fn snapshot(&self) -> (policy::KillSwitchState, Vec<Record>) {
        let policy = lock(&self.policy);
        let mut records = policy.records().to_vec();
        records.reverse();
        (policy.kill_switch().clone(), records)
    }

    /// The nodes whose agents hold a control stream now, with the scripts they offer.
    pub fn connected(&self) -> Vec<(String, Vec<String>, String, i64)> {
        let mut v: Vec<_> = lock(&self.connections)
            .iter()
            .map(|(n, c)| {
                (
                    n.clone(),
                    c.scripts.clone(),
                    c.agent_version.clone(),
                    c.since_ms,
                )
            })
            .collect();
        v.sort();
        v
    }

    fn escalation_alert(&self, r: &Record, now: i64) -> PostableAlert {
        let mut labels: LabelMap = r
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "alertname" && k.as_str() != "severity")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert("alertname".into(), ESCALATION_ALERT.into());
        labels.insert("node".into(), r.node.clone());
        labels.insert("script".into(), r.script.clone());
        labels.insert("recovery_for".into(), r.alertname.clone());
        labels.insert("severity".into(), "critical".into());
        let mut annotations = LabelMap::new();
        annotations.insert(
            "summary".into(),
            format!(
                "{} needs hardware inspection: automatic recovery gave up",
                r.node
            ),
        );
        annotations.insert("description".into(), r.reason.clone());
        annotations.insert("action_id".into(), r.id.clone());
        PostableAlert {
            labels,
            annotations,
            starts_at_ms: r.created_ms,
            ends_at_ms: now + 4 * ESCALATION_RESEND.as_millis() as i64,
            generator_url: format!("{}/api/v1/actions", self.external_url),
        }
    }

    fn notify(&self, escalations: &[Record]) {
        if escalations.is_empty() {
            return;
        }
        for r in escalations {
            tracing::warn!(node = %r.node, script = %r.script, reason = %r.reason, "recovery escalated");
        }
        let Some(sink) = &self.sink else {
            return;
        };
        let now = now_ms();
        let alerts = escalations
            .iter()
            .map(|r| self.escalation_alert(r, now))
            .collect();
        sink.send(alerts);
    }

    /// Ends every control stream, now and for agents that connect from now on.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
        let closed = std::mem::take(&mut *lock(&self.connections));
        if !closed.is_empty() {
            tracing::info!(agents = closed.len(), "closing the agents' control streams");
        }
    }

    /// Housekeeping until `stop`: expiries, dispatch of queued actions as slots free,
    /// escalation re-sends, journal compaction. At `stop` the control streams end.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_resend = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = &mut stop => {
                    self.close_streams();
                    break;
                }
                _ = tick.tick() => {}
            }
            let me = Arc::clone(&self);
            let resend = last_resend.elapsed() >= ESCALATION_RESEND;
            if resend {
                last_resend = tokio::time::Instant::now();
            }
            let _ = tokio::task::spawn_blocking(move || me.housekeeping(resend)).await;
        }
    }

    fn housekeeping(&self, resend: bool) {
        let now = now_ms();
        let mut policy = lock(&self.policy);
        let events = policy.expire(now);
        let mut escalations = Vec::new();
        if !events.is_empty() {
            for e in &events {
                if let Event::Changed(r) = e {
                    log_decision(r);
                }
            }
            escalations = self.persist(&events).unwrap_or_default();
        }
        if resend {
            let active: Vec<Record> = policy
                .active_escalations(now)
                .into_iter()
                .cloned()
                .collect();
            if let Some(sink) = &self.sink
                && !active.is_empty()
            {
                sink.send(
                    active
                        .iter()
                        .map(|r| self.escalation_alert(r, now))
                        .collect(),
                );
            }
        }
        {
            let mut journal = lock(&self.journal);
            if journal.wants_rewrite(policy.records().len()) {
                let kill = policy.kill_switch().clone();
                if let Err(e) = journal.rewrite(policy.records(), Some(&kill)) {
                    tracing::warn!(error = %e, "compacting the recovery journal failed");
                }
            }
        }
        drop(policy);
        self.notify(&escalations);
        self.dispatch_all();
    }
}

fn log_decision(r: &Record) {
    match r.decision {
        Decision::SkipCooldown | Decision::SkipConcurrency | Decision::SkipKillSwitch => {
            tracing::info!(action = %r.id, node = %r.node, script = %r.script, decision = r.decision.as_str(), reason = %r.reason, "recovery skipped");
        }
        _ => {
            tracing::info!(action = %r.id, node = %r.node, script = %r.script, decision = r.decision.as_str(), state = r.state.as_str(), "recovery action")
        }
    }
}

impl crate::http::MetricSource for Remediation {
    fn metric_families(&self) -> Vec<MetricFamily> {
        let policy = lock(&self.policy);
        let mut decisions = MetricFamily::counter(
            "vigil_recovery_decisions_total",
            "Decisions of the remediation policy since the collector started, by script and decision.",
        );
        for ((script, d), n) in policy.decision_counts() {
            decisions.push(&[("script", script), ("decision", d.as_str())], *n as f64);
        }
        let mut outcomes = MetricFamily::counter(
            "vigil_recovery_actions_total",
            "Actions that reached a final state since the collector started, by script and state.",
        );
        for ((script, s), n) in policy.outcome_counts() {
            outcomes.push(&[("script", script), ("state", s.as_str())], *n as f64);
        }
        let mut by_state: std::collections::BTreeMap<(String, &'static str), u64> =
            std::collections::BTreeMap::new();
        for r in policy.records() {
            if !r.state.is_final() {
                *by_state
                    .entry((r.script.clone(), r.state.as_str()))
                    .or_default() += 1;
            }
        }
        let mut open = MetricFamily::gauge(
            "vigil_recovery_actions_open",
            "Actions not final yet, by script and state (awaiting_approval, queued, dispatched, running).",
        );
        for ((script, state), n) in by_state {
            open.push(&[("script", &script), ("state", state)], n as f64);
        }
        let kill = MetricFamily::gauge(
            "vigil_recovery_kill_switch",
            "1 while the recovery kill switch is engaged.",
        )
        .with(&[], f64::from(u8::from(policy.kill_switch().engaged)));
        let escalations = MetricFamily::gauge(
            "vigil_recovery_escalations_active",
            "Alerts whose recovery escalated within the attempt window.",
        )
        .with(&[], policy.active_escalations(now_ms()).len() as f64);
        drop(policy);
        let agents = MetricFamily::gauge(
            "vigil_recovery_agents_connected",
            "Agents holding a control stream.",
        )
        .with(&[], lock(&self.connections).len() as f64);
        let journal_errors = MetricFamily::counter(
            "vigil_recovery_journal_write_failures_total",
            "Writes of the recovery journal that failed (the decisions were not acted on).",
        )
        .with(
            &[],
            self.journal_errors
                .load(std::sync::atomic::Ordering::Relaxed) as f64,
        );
        vec![
            decisions,
            outcomes,
            open,
            kill,
            escalations,
            agents,
            journal_errors,
        ]
    }
}
