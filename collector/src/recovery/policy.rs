//! The remediation policy, pure: no I/O, no clock of its own (every call takes `now`).
//!
//! It is level-triggered. After each evaluation of a rule with a `recovery:` block the
//! caller hands over the rule's firing alerts ([`Policy::observe_rule`]); an alert of
//! that rule not in the list has resolved. For each firing alert without an action in
//! flight, the guardrails decide, in this order:
//!
//! 1. the kill switch → `skip_kill_switch`;
//! 2. escalated within the attempt window → nothing (a person was told);
//! 3. the script ran on the node less than its cooldown ago → `skip_cooldown`;
//! 4. `max_attempts` runs within the attempt window already → `escalate` (so the
//!    last attempt has its cooldown to take effect before the alert counts as firing
//!    again);
//! 5. as many actions of the script in flight as its cap → `skip_concurrency`;
//! 6. the script's mode → `run` (queued for the agent), `await_approval`, `dry_run`.
//!
//! A skip is recorded once per stretch (the same skip again is not a new entry) and the
//! alert is considered again at the next evaluation, so a slot or the end of a cooldown
//! is taken up as soon as it comes. An action that fails (non-zero exit, killed,
//! refused by the agent, lost) escalates at once and ends the attempts for its alert.
//!
//! The cap is enforced twice: at decision time (queued and running actions count) and
//! when actions are handed to agents ([`Policy::dispatchable`]: only while fewer than the
//! cap are dispatched or running), so an approval cannot exceed it either.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use vigil_proto::actions::{ActionState, Decision};
use vigil_proto::control::{Phase, Report};

use super::config::{Mode, RecoveryConfig, ScriptPolicy};

/// One firing alert of a rule with a `recovery:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct FiringAlert {
    /// The alert's labels, `alertname` included.
    pub labels: BTreeMap<String, String>,
    pub script: String,
    pub args_from_labels: Vec<String>,
}

impl FiringAlert {
    pub fn alertname(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    /// The node the alert names: its `node` label, else `Hostname` (dcgm-exporter's),
    /// else `instance` without a port.
    pub fn node(&self) -> Option<String> {
        for key in ["node", "Hostname"] {
            if let Some(v) = self.labels.get(key).filter(|v| !v.is_empty()) {
                return Some(v.clone());
            }
        }
        let instance = self.labels.get("instance").filter(|v| !v.is_empty())?;
        let host = match instance.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h,
            _ => instance.as_str(),
        };
        Some(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
    }

    fn key(&self) -> String {
        alert_key(&self.labels)
    }
}

/// An alert's identity: its labels, sorted, as `name="value"` pairs.
pub fn alert_key(labels: &BTreeMap<String, String>) -> String {
    let mut s = String::new();
    for (k, v) in labels {
        s.push_str(k);
        s.push('=');
        s.push_str(&format!("{v:?}"));
        s.push(',');
    }
    s
}

/// One audit entry: a decision and, when it ran something, its outcome. Times in
/// milliseconds since the Unix epoch, on the collector's clock except `started_ms` and
/// `finished_ms`, which are the agent's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub rule: String,
    pub node: String,
    pub script: String,
    pub alertname: String,
    pub labels: BTreeMap<String, String>,
    pub args: BTreeMap<String, String>,
    pub decision: Decision,
    pub state: ActionState,
    pub reason: String,
    pub attempt: u32,
    pub timeout_secs: u32,
    pub created_ms: i64,
    pub updated_ms: i64,
    #[serde(default)]
    pub approved_by: Option<String>,
    #[serde(default)]
    pub dispatched_ms: Option<i64>,
    #[serde(default)]
    pub started_ms: Option<i64>,
    #[serde(default)]
    pub finished_ms: Option<i64>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    #[serde(default)]
    pub timed_out: bool,
    #[serde(default)]
    pub message: String,
}

impl Record {
    fn alert_key(&self) -> String {
        alert_key(&self.labels)
    }

    /// The message the agent gets.
    pub fn to_action(&self) -> vigil_proto::control::Action {
        vigil_proto::control::Action {
            id: self.id.clone(),
            script: self.script.clone(),
            alert_name: self.alertname.clone(),
            node: self.node.clone(),
            labels: self.args.clone(),
            timeout_secs: self.timeout_secs,
        }
    }
}

/// The kill switch and who set it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KillSwitchState {
    pub engaged: bool,
    pub by: String,
    pub reason: String,
    pub since_ms: i64,
}

/// Something for the caller to act on after a policy call.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A new or changed audit entry: persist it (before dispatching it).
    Changed(Record),
    /// A node needs a person: notify (the record is the escalation entry).
    Escalated(Record),
}

/// Why an operator's request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("no action {0}")]
    NotFound(String),
    #[error("action {id} is {state}, not awaiting approval")]
    NotAwaiting { id: String, state: &'static str },
    #[error("the kill switch is engaged: no action starts")]
    KillSwitch,
}

/// Per alert: what the guardrails remember.
#[derive(Debug, Clone, Default)]
struct Track {
    rule: String,
    /// When each run (or approval) for this alert was decided, within the window.
    attempts: Vec<i64>,
    escalated_ms: Option<i64>,
    /// The skip recorded in this stretch, so the same skip is recorded once.
    last_skip: Option<Decision>,
    /// The action in flight or awaiting approval.
    open: Option<String>,
    firing: bool,
}

pub struct Policy {
    config: RecoveryConfig,
    records: Vec<Record>,
    index: HashMap<String, usize>,
    tracks: HashMap<String, Track>,
    /// When each (node, script) last ran (or was approved, or dry-ran).
    last_run: HashMap<(String, String), i64>,
    kill: KillSwitchState,
    fleet_size: usize,
    /// Counts per (script, decision) since start, for the metrics.
    decisions: BTreeMap<(String, Decision), u64>,
    /// Counts per (script, final state) since start.
    outcomes: BTreeMap<(String, ActionState), u64>,
}

fn ms(secs: f64) -> i64 {
    (secs * 1000.0).round() as i64
}

fn ago(now: i64, then: i64) -> String {
    let s = ((now - then).max(0) / 1000) as u64;
    if s >= 3600 {
        format!("{}h{}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl Policy {
    /// A policy that resumes from `records` (oldest first) and the kill switch as last
    /// persisted; the config's `kill_switch = true` engages it whatever was persisted.
    pub fn new(
        config: RecoveryConfig,
        records: Vec<Record>,
        kill: Option<KillSwitchState>,
        now_ms: i64,
    ) -> Policy {
        let mut kill = kill.unwrap_or_default();
        if config.kill_switch && !kill.engaged {
            kill = KillSwitchState {
                engaged: true,
                by: "config".into(),
                reason: "kill_switch = true in [recovery]".into(),
                since_ms: now_ms,
            };
        }
        let mut p = Policy {
            config,
            records: Vec::new(),
            index: HashMap::new(),
            tracks: HashMap::new(),
            last_run: HashMap::new(),
            kill,
            fleet_size: 0,
            decisions: BTreeMap::new(),
            outcomes: BTreeMap::new(),
        };
        for r in records {
            p.restore(r);
        }
        p
    }

    fn restore(&mut self, r: Record) {
        let window = ms(self.config.attempt_window_secs);
        let track = self.tracks.entry(r.alert_key()).or_default();
        track.rule = r.rule.clone();
        match r.decision {
            Decision::Run | Decision::DryRun | Decision::AwaitApproval => {
                let counted = r.decision != Decision::AwaitApproval || r.approved_by.is_some();
                if counted {
                    track.attempts.push(r.created_ms);
                    let at = self
                        .last_run
                        .entry((r.node.clone(), r.script.clone()))
                        .or_insert(r.created_ms);
                    *at = (*at).max(r.created_ms);
                }
                if !r.state.is_final() {
                    track.open = Some(r.id.clone());
                }
            }
            Decision::Escalate => track.escalated_ms = Some(r.created_ms),
            _ => {}
        }
        track.attempts.retain(|&t| r.created_ms - t < window);
        self.index.insert(r.id.clone(), self.records.len());
        self.records.push(r);
    }

    pub fn config(&self) -> &RecoveryConfig {
        &self.config
    }

    pub fn kill_switch(&self) -> &KillSwitchState {
        &self.kill
    }

    /// Every audit entry, oldest first.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn get(&self, id: &str) -> Option<&Record> {
        self.index.get(id).map(|&i| &self.records[i])
    }

    pub fn decision_counts(&self) -> &BTreeMap<(String, Decision), u64> {
        &self.decisions
    }

    pub fn outcome_counts(&self) -> &BTreeMap<(String, ActionState), u64> {
        &self.outcomes
    }

    /// The number of nodes the share caps are taken of.
    pub fn set_fleet_size(&mut self, nodes: usize) {
        self.fleet_size = nodes;
    }

    /// The cap of `script`: the smaller of its absolute cap and its share of the fleet
    /// (rounded down, at least 1).
    pub fn cap(&self, script: &str) -> usize {
        let p = self.config.policy(script);
        let share = ((self.fleet_size as f64 * p.max_concurrent_share).floor() as usize).max(1);
        if p.max_concurrent == 0 {
            share
        } else {
            share.min(p.max_concurrent as usize)
        }
    }

    /// Actions of `script` holding a slot: queued, dispatched or running.
    fn in_flight(&self, script: &str) -> usize {
        self.records
            .iter()
            .filter(|r| r.script == script && r.state.is_in_flight())
            .count()
    }

    /// Actions of `script` dispatched or running.
    pub fn running(&self, script: &str) -> usize {
        self.records
            .iter()
            .filter(|r| {
                r.script == script
                    && matches!(r.state, ActionState::Dispatched | ActionState::Running)
            })
            .count()
    }

    fn push(&mut self, r: Record, events: &mut Vec<Event>) {
        *self
            .decisions
            .entry((r.script.clone(), r.decision))
            .or_default() += 1;
        self.index.insert(r.id.clone(), self.records.len());
        self.records.push(r.clone());
        events.push(Event::Changed(r));
    }

    fn update(&mut self, id: &str, now_ms: i64, f: impl FnOnce(&mut Record)) -> Option<Record> {
        let &i = self.index.get(id)?;
        let r = &mut self.records[i];
        let was_final = r.state.is_final();
        f(r);
        r.updated_ms = now_ms;
        let r = r.clone();
        if r.state.is_final() {
            if !was_final {
                *self
                    .outcomes
                    .entry((r.script.clone(), r.state))
                    .or_default() += 1;
            }
            if let Some(t) = self.tracks.get_mut(&r.alert_key())
                && t.open.as_deref() == Some(id)
            {
                t.open = None;
            }
        }
        Some(r)
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        rule: &str,
        a: &FiringAlert,
        node: &str,
        decision: Decision,
        state: ActionState,
        reason: String,
        attempt: u32,
        policy: &ScriptPolicy,
        now_ms: i64,
    ) -> Record {
        let args = a
            .args_from_labels
            .iter()
            .filter_map(|k| a.labels.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        Record {
            id: crate::notify::silence::new_id(),
            rule: rule.to_string(),
            node: node.to_string(),
            script: a.script.clone(),
            alertname: a.alertname().to_string(),
            labels: a.labels.clone(),
            args,
            decision,
            state,
            reason,
            attempt,
            timeout_secs: policy.timeout_secs,
            created_ms: now_ms,
            updated_ms: now_ms,
            approved_by: None,
            dispatched_ms: None,
            started_ms: None,
            finished_ms: None,
            exit_code: None,
            signal: None,
            timed_out: false,
            message: String::new(),
        }
    }

    /// The firing alerts of `rule` after an evaluation; any alert of the rule it had
    /// seen firing and that is not in `firing` has resolved.
    pub fn observe_rule(&mut self, rule: &str, firing: &[FiringAlert], now_ms: i64) -> Vec<Event> {
        let mut events = Vec::new();
        let keys: std::collections::HashSet<String> = firing.iter().map(FiringAlert::key).collect();
        let resolved: Vec<String> = self
            .tracks
            .iter()
            .filter(|(k, t)| t.rule == rule && t.firing && !keys.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in resolved {
            self.resolved(&key, now_ms, &mut events);
        }
        for a in firing {
            self.consider(rule, a, now_ms, &mut events);
        }
        self.prune(now_ms);
        events
    }

    fn resolved(&mut self, key: &str, now_ms: i64, events: &mut Vec<Event>) {
        let Some(t) = self.tracks.get_mut(key) else {
            return;
        };
        t.firing = false;
        t.last_skip = None;
        let Some(open) = t.open.clone() else {
            return;
        };
        let waiting = self.get(&open).is_some_and(|r| {
            matches!(r.state, ActionState::AwaitingApproval | ActionState::Queued)
        });
        if waiting
            && let Some(r) = self.update(&open, now_ms, |r| {
                r.message = match r.state {
                    ActionState::AwaitingApproval => "the alert resolved before approval".into(),
                    _ => "the alert resolved before the agent took it".into(),
                };
                r.state = ActionState::Cancelled;
            })
        {
            events.push(Event::Changed(r));
        }
    }

    fn consider(&mut self, rule: &str, a: &FiringAlert, now_ms: i64, events: &mut Vec<Event>) {
        let key = a.key();
        let window = ms(self.config.attempt_window_secs);
        let policy = self.config.policy(&a.script);
        let Some(node) = a.node() else {
            return;
        };
        let t = self.tracks.entry(key.clone()).or_default();
        t.rule = rule.to_string();
        t.firing = true;
        t.attempts.retain(|&at| now_ms - at < window);
        if t.open.is_some() {
            return;
        }
        if let Some(at) = t.escalated_ms {
            if now_ms - at < window {
                return;
            }
            t.escalated_ms = None;
        }
        let attempts = t.attempts.len() as u32;
        let last_skip = t.last_skip;
        let mut skip = |p: &mut Policy, d: Decision, reason: String| {
            if last_skip != Some(d) {
                let r = p.entry(
                    rule,
                    a,
                    &node,
                    d,
                    ActionState::Recorded,
                    reason,
                    attempts + 1,
                    &policy,
                    now_ms,
                );
                p.push(r, events);
                if let Some(t) = p.tracks.get_mut(&key) {
                    t.last_skip = Some(d);
                }
            }
        };
        if self.kill.engaged {
            let reason = format!(
                "kill switch engaged by {}{}",
                self.kill.by,
                if self.kill.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", self.kill.reason)
                }
            );
            skip(self, Decision::SkipKillSwitch, reason);
            return;
        }
        let run_key = (node.clone(), a.script.clone());
        if let Some(&last) = self.last_run.get(&run_key)
            && now_ms - last < ms(policy.cooldown_secs)
        {
            let reason = format!(
                "cooldown: {} ran on {node} {} ago (cooldown {})",
                a.script,
                ago(now_ms, last),
                ago(now_ms, now_ms - ms(policy.cooldown_secs))
            );
            skip(self, Decision::SkipCooldown, reason);
            return;
        }
        if attempts >= policy.max_attempts {
            let r = self.entry(
                rule,
                a,
                &node,
                Decision::Escalate,
                ActionState::Recorded,
                format!(
                    "{} fired again after {attempts} attempt(s) of {} within {}: node {node} needs hardware inspection",
                    a.alertname(),
                    a.script,
                    ago(now_ms, now_ms - window)
                ),
                attempts,
                &policy,
                now_ms,
            );
            self.escalate(r, events);
            return;
        }
        let cap = self.cap(&a.script);
        if policy.mode == Mode::Auto {
            let in_flight = self.in_flight(&a.script);
            if in_flight >= cap {
                let reason = format!(
                    "concurrency cap: {in_flight} of {cap} {} action(s) in flight across {} node(s)",
                    a.script, self.fleet_size
                );
                skip(self, Decision::SkipConcurrency, reason);
                return;
            }
        }
        let (decision, state, reason) = match policy.mode {
            Mode::Auto => (
                Decision::Run,
                ActionState::Queued,
                format!(
                    "{} firing on {node}: attempt {} of {}",
                    a.alertname(),
                    attempts + 1,
                    policy.max_attempts
                ),
            ),
            Mode::Approval => (
                Decision::AwaitApproval,
                ActionState::AwaitingApproval,
                format!(
                    "{} firing on {node}: {} needs approval",
                    a.alertname(),
                    a.script
                ),
            ),
            Mode::DryRun => (
                Decision::DryRun,
                ActionState::Recorded,
                format!(
                    "dry run: would run {} on {node} for {} (attempt {} of {})",
                    a.script,
                    a.alertname(),
                    attempts + 1,
                    policy.max_attempts
                ),
            ),
        };
        let r = self.entry(
            rule,
            a,
            &node,
            decision,
            state,
            reason,
            attempts + 1,
            &policy,
            now_ms,
        );
        let t = self.tracks.get_mut(&key).expect("inserted above");
        t.last_skip = None;
        if decision != Decision::AwaitApproval {
            t.attempts.push(now_ms);
            self.last_run.insert(run_key, now_ms);
        }
        if !state.is_final() {
            t.open = Some(r.id.clone());
        }
        self.push(r, events);
    }

    fn escalate(&mut self, r: Record, events: &mut Vec<Event>) {
        if let Some(t) = self.tracks.get_mut(&r.alert_key()) {
            t.escalated_ms = Some(r.created_ms);
            t.last_skip = None;
        }
        self.push(r.clone(), events);
        events.push(Event::Escalated(r));
    }

    /// Escalation entries still within the attempt window, for re-notifying.
    pub fn active_escalations(&self, now_ms: i64) -> Vec<&Record> {
        let window = ms(self.config.attempt_window_secs);
        self.tracks
            .values()
            .filter_map(|t| t.escalated_ms)
            .filter(|&at| now_ms - at < window)
            .flat_map(|at| {
                self.records
                    .iter()
                    .rev()
                    .find(|r| r.decision == Decision::Escalate && r.created_ms == at)
            })
            .collect()
    }

    /// Drops the memory of alerts that have nothing left to remember, and audit
    /// entries past `keep_actions` (the oldest final ones).
    fn prune(&mut self, now_ms: i64) {
        let window = ms(self.config.attempt_window_secs);
        self.tracks.retain(|_, t| {
            t.firing
                || t.open.is_some()
                || t.escalated_ms.is_some_and(|at| now_ms - at < window)
                || t.attempts.iter().any(|&at| now_ms - at < window)
        });
        let keep = self.config.keep_actions.max(1);
        if self.records.len() > keep + keep / 10 {
            let excess = self.records.len() - keep;
            let mut dropped = 0;
            self.records.retain(|r| {
                if dropped < excess && r.state.is_final() {
                    dropped += 1;
                    false
                } else {
                    true
                }
            });
            self.index = self
                .records
                .iter()
                .enumerate()
                .map(|(i, r)| (r.id.clone(), i))
                .collect();
        }
    }

    /// Queued actions for `node` that may go out now without exceeding their
    /// script's cap, oldest first; each returned action is marked dispatched.
    pub fn dispatchable(&mut self, node: &str, now_ms: i64) -> Vec<Event> {
        if self.kill.engaged {
            return Vec::new();
        }
        let ids: Vec<(String, String)> = self
            .records
            .iter()
            .filter(|r| r.node == node && r.state == ActionState::Queued)
            .map(|r| (r.id.clone(), r.script.clone()))
            .collect();
        let mut out = Vec::new();
        for (id, script) in ids {
            if self.running(&script) >= self.cap(&script) {
                continue;
            }
            if let Some(r) = self.update(&id, now_ms, |r| {
                r.state = ActionState::Dispatched;
                r.dispatched_ms = Some(now_ms);
            }) {
                out.push(Event::Changed(r));
            }
        }
        out
    }

    /// Actions already dispatched to `node` but not reported started or finished: sent
    /// again when its agent reconnects (the agent runs an id once).
    pub fn redeliver(&self, node: &str) -> Vec<&Record> {
        self.records
            .iter()
            .filter(|r| {
                r.node == node && matches!(r.state, ActionState::Dispatched | ActionState::Running)
            })
            .collect()
    }

    /// What the agent of `node` reported. A report for another node's action, or for
    /// an unknown id, is refused (`None`); a repeated report changes nothing.
    pub fn report(&mut self, node: &str, rep: &Report, now_ms: i64) -> Option<Vec<Event>> {
        let r = self.get(&rep.action_id)?;
        if r.node != node {
            return None;
        }
        let mut events = Vec::new();
        let phase = Phase::try_from(rep.phase).unwrap_or(Phase::Unspecified);
        let current = r.state;
        let next = match phase {
            Phase::Started => match current {
                ActionState::Queued | ActionState::Dispatched => ActionState::Running,
                _ => return Some(events),
            },
            Phase::Finished => {
                if rep.succeeded() {
                    ActionState::Succeeded
                } else {
                    ActionState::Failed
                }
            }
            Phase::Refused => ActionState::Refused,
            Phase::Lost => ActionState::Lost,
            Phase::Unspecified => return Some(events),
        };
        // A final state changes only from `lost` (the collector gave up waiting) to
        // what the agent knows happened.
        if current.is_final() && !(current == ActionState::Lost && phase == Phase::Finished) {
            return Some(events);
        }
        let Some(updated) = self.update(&rep.action_id, now_ms, |r| {
            r.state = next;
            if rep.started_unix_ms > 0 {
                r.started_ms = Some(rep.started_unix_ms);
            }
            if rep.finished_unix_ms > 0 {
                r.finished_ms = Some(rep.finished_unix_ms);
            }
            if phase != Phase::Started {
                r.exit_code = rep.exit_code;
                r.signal = rep.signal;
                r.timed_out = rep.timed_out;
                if !rep.message.is_empty() {
                    r.message = rep.message.clone();
                }
            }
        }) else {
            return Some(events);
        };
        events.push(Event::Changed(updated.clone()));
        if matches!(
            next,
            ActionState::Failed | ActionState::Refused | ActionState::Lost
        ) && current != ActionState::Lost
        {
            self.escalate_failure(&updated, now_ms, &mut events);
        }
        Some(events)
    }

    fn escalate_failure(&mut self, failed: &Record, now_ms: i64, events: &mut Vec<Event>) {
        let how = match failed.state {
            ActionState::Refused => format!("was refused by the agent ({})", failed.message),
            ActionState::Lost => format!("was lost ({})", failed.message),
            _ if failed.timed_out => format!("timed out after {} s", failed.timeout_secs),
            _ => match (failed.exit_code, failed.signal) {
                (Some(c), _) => format!("exited with status {c}"),
                (None, Some(s)) => format!("was killed by signal {s}"),
                _ => "failed".to_string(),
            },
        };
        let policy = self.config.policy(&failed.script);
        let a = FiringAlert {
            labels: failed.labels.clone(),
            script: failed.script.clone(),
            args_from_labels: failed.args.keys().cloned().collect(),
        };
        let mut r = self.entry(
            &failed.rule,
            &a,
            &failed.node,
            Decision::Escalate,
            ActionState::Recorded,
            format!(
                "{} on {} {how} (action {}): node {} needs hardware inspection; no more attempts",
                failed.script, failed.node, failed.id, failed.node
            ),
            failed.attempt,
            &policy,
            now_ms,
        );
        r.message = failed.id.clone();
        self.escalate(r, events);
    }

    /// Approves an action awaiting approval: it is queued for its node's agent (the
    /// cap still applies when it is handed out).
    /// The entry `id`, when it awaits approval.
    fn awaiting(&self, id: &str) -> Result<&Record, PolicyError> {
        let r = self
            .get(id)
            .ok_or_else(|| PolicyError::NotFound(id.into()))?;
        if r.state != ActionState::AwaitingApproval {
            return Err(PolicyError::NotAwaiting {
                id: id.into(),
                state: r.state.as_str(),
            });
        }
        Ok(r)
    }

    pub fn approve(&mut self, id: &str, by: &str, now_ms: i64) -> Result<Vec<Event>, PolicyError> {
        let r = self.awaiting(id)?;
        if self.kill.engaged {
            return Err(PolicyError::KillSwitch);
        }
        let (key, run_key) = (r.alert_key(), (r.node.clone(), r.script.clone()));
        let updated = self
            .update(id, now_ms, |r| {
                r.state = ActionState::Queued;
                r.approved_by = Some(by.to_string());
            })
            .expect("checked above");
        if let Some(t) = self.tracks.get_mut(&key) {
            t.attempts.push(now_ms);
        }
        self.last_run.insert(run_key, now_ms);
        Ok(vec![Event::Changed(updated)])
    }

    /// Rejects an action awaiting approval. Its script's cooldown starts, so the still
    /// firing alert does not ask again at once.
    pub fn reject(&mut self, id: &str, by: &str, now_ms: i64) -> Result<Vec<Event>, PolicyError> {
        let r = self.awaiting(id)?;
        let run_key = (r.node.clone(), r.script.clone());
        let updated = self
            .update(id, now_ms, |r| {
                r.state = ActionState::Cancelled;
                r.message = format!("rejected by {by}");
            })
            .expect("checked above");
        self.last_run.insert(run_key, now_ms);
        Ok(vec![Event::Changed(updated)])
    }

    /// Engages or releases the kill switch. Engaging it cancels what has not reached an
    /// agent yet (queued and awaiting approval); what agents already run finishes.
    pub fn set_kill_switch(
        &mut self,
        engaged: bool,
        by: &str,
        reason: &str,
        now_ms: i64,
    ) -> Vec<Event> {
        self.kill = KillSwitchState {
            engaged,
            by: by.to_string(),
            reason: reason.to_string(),
            since_ms: now_ms,
        };
        let mut events = Vec::new();
        for t in self.tracks.values_mut() {
            t.last_skip = None;
        }
        if engaged {
            let ids: Vec<String> = self
                .records
                .iter()
                .filter(|r| matches!(r.state, ActionState::Queued | ActionState::AwaitingApproval))
                .map(|r| r.id.clone())
                .collect();
            for id in ids {
                if let Some(r) = self.update(&id, now_ms, |r| {
                    r.state = ActionState::Cancelled;
                    r.message = format!("cancelled: kill switch engaged by {by}");
                }) {
                    events.push(Event::Changed(r));
                }
            }
        }
        events
    }

    /// Gives up on actions their agents did not take or finish in time: queued past
    /// the delivery timeout → cancelled; dispatched past it, or running past its
    /// timeout plus the grace → lost (and escalated).
    pub fn expire(&mut self, now_ms: i64) -> Vec<Event> {
        let delivery = ms(self.config.delivery_timeout_secs);
        let grace = ms(self.config.report_grace_secs);
        let mut due = Vec::new();
        for r in &self.records {
            match r.state {
                ActionState::Queued if now_ms - r.updated_ms > delivery => {
                    due.push((
                        r.id.clone(),
                        ActionState::Cancelled,
                        format!(
                            "not delivered: the agent of {} did not connect within {}",
                            r.node,
                            ago(now_ms, now_ms - delivery)
                        ),
                    ));
                }
                ActionState::Dispatched
                    if now_ms - r.dispatched_ms.unwrap_or(r.updated_ms) > delivery =>
                {
                    due.push((
                        r.id.clone(),
                        ActionState::Lost,
                        "the agent took it but never reported it started".to_string(),
                    ));
                }
                ActionState::Running
                    if now_ms - r.updated_ms > i64::from(r.timeout_secs) * 1000 + grace =>
                {
                    due.push((
                        r.id.clone(),
                        ActionState::Lost,
                        format!(
                            "no report within its {} s timeout and {} s grace",
                            r.timeout_secs,
                            grace / 1000
                        ),
                    ));
                }
                _ => {}
            }
        }
        let mut events = Vec::new();
        for (id, state, message) in due {
            if let Some(r) = self.update(&id, now_ms, |r| {
                r.state = state;
                r.message = message;
            }) {
                events.push(Event::Changed(r.clone()));
                if state == ActionState::Lost {
                    self.escalate_failure(&r, now_ms, &mut events);
                }
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::config::ScriptOverride;

    fn alert(node: &str, gpu: &str) -> FiringAlert {
        FiringAlert {
            labels: BTreeMap::from([
                ("alertname".into(), "GpuFellOffBus".into()),
                ("node".into(), node.into()),
                ("gpu".into(), gpu.into()),
                ("severity".into(), "critical".into()),
            ]),
            script: "reset-gpu".into(),
            args_from_labels: vec!["gpu".into()],
        }
    }

    fn changed(events: &[Event]) -> Vec<&Record> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Changed(r) => Some(r),
                Event::Escalated(_) => None,
            })
            .collect()
    }

    fn finished(node: &str, id: &str, code: i32) -> Report {
        Report {
            action_id: id.into(),
            node: node.into(),
            phase: Phase::Finished as i32,
            exit_code: Some(code),
            started_unix_ms: 1,
            finished_unix_ms: 2,
            ..Report::default()
        }
    }

    fn policy(edit: impl FnOnce(&mut RecoveryConfig)) -> Policy {
        let mut c = RecoveryConfig::default();
        edit(&mut c);
        let mut p = Policy::new(c, Vec::new(), None, 0);
        p.set_fleet_size(100);
        p
    }

    #[test]
    fn a_firing_alert_queues_one_action_with_its_args() {
        let mut p = policy(|_| {});
        let ev = p.observe_rule("r", &[alert("n1", "3")], 1000);
        let c = changed(&ev);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].decision, Decision::Run);
        assert_eq!(c[0].state, ActionState::Queued);
        assert_eq!(c[0].args, BTreeMap::from([("gpu".into(), "3".into())]));
        assert_eq!(c[0].node, "n1");
        // Still firing, the action in flight: nothing new.
        assert!(p.observe_rule("r", &[alert("n1", "3")], 2000).is_empty());
        let id = c[0].id.clone();
        let out = p.dispatchable("n1", 2000);
        assert_eq!(changed(&out)[0].state, ActionState::Dispatched);
        assert!(p.dispatchable("n1", 2000).is_empty());
        let ev = p.report("n1", &finished("n1", &id, 0), 3000).unwrap();
        assert_eq!(changed(&ev)[0].state, ActionState::Succeeded);
        // Another node cannot report for it.
        assert!(p.report("n2", &finished("n2", &id, 0), 3000).is_none());
    }

    #[test]
    fn never_more_than_the_cap_in_flight_across_100_nodes() {
        let mut p = policy(|c| c.defaults.max_concurrent = 5);
        let alerts: Vec<FiringAlert> = (0..100).map(|i| alert(&format!("n{i}"), "0")).collect();
        let mut now = 0;
        let mut done = std::collections::HashSet::new();
        for round in 0..200 {
            now += 1000;
            let firing: Vec<FiringAlert> = alerts
                .iter()
                .filter(|a| !done.contains(&a.node().unwrap()))
                .cloned()
                .collect();
            p.observe_rule("r", &firing, now);
            for i in 0..100 {
                p.dispatchable(&format!("n{i}"), now);
            }
            let in_flight: Vec<Record> = p
                .records()
                .iter()
                .filter(|r| r.state.is_in_flight())
                .cloned()
                .collect();
            assert!(in_flight.len() <= 5, "round {round}: {}", in_flight.len());
            // Every other round the running ones finish and their alerts resolve.
            if round % 2 == 1 {
                for r in in_flight {
                    p.report(&r.node, &finished(&r.node, &r.id, 0), now)
                        .unwrap();
                    done.insert(r.node.clone());
                }
            }
        }
        assert_eq!(done.len(), 100, "every node was repaired in the end");
        let skips = p
            .records()
            .iter()
            .filter(|r| r.decision == Decision::SkipConcurrency)
            .count();
        // One skip per alert per stretch, not one per evaluation.
        assert!(skips <= 100 * 2, "{skips}");
        assert!(skips >= 95);
    }

    #[test]
    fn share_cap_is_at_least_one() {
        let mut p = policy(|_| {});
        p.set_fleet_size(3);
        assert_eq!(p.cap("reset-gpu"), 1);
        p.set_fleet_size(100);
        assert_eq!(p.cap("reset-gpu"), 10);
    }

    #[test]
    fn cooldown_then_escalation_after_max_attempts() {
        let mut p = policy(|c| c.defaults.cooldown_secs = 60.0);
        let a = alert("n1", "1");
        let mut now = 0;
        for attempt in 1..=3 {
            let ev = p.observe_rule("r", std::slice::from_ref(&a), now);
            let r = changed(&ev)[0].clone();
            assert_eq!((r.decision, r.attempt), (Decision::Run, attempt));
            p.dispatchable("n1", now);
            p.report("n1", &finished("n1", &r.id, 0), now + 1000)
                .unwrap();
            // Still firing within the cooldown: one skip, recorded once.
            let ev = p.observe_rule("r", std::slice::from_ref(&a), now + 2000);
            assert_eq!(changed(&ev)[0].decision, Decision::SkipCooldown);
            assert!(
                p.observe_rule("r", std::slice::from_ref(&a), now + 3000)
                    .is_empty()
            );
            now += 61_000;
        }
        let ev = p.observe_rule("r", std::slice::from_ref(&a), now);
        assert!(matches!(ev.last(), Some(Event::Escalated(r)) if r.decision == Decision::Escalate));
        assert_eq!(p.active_escalations(now).len(), 1);
        // Escalated: no more attempts, no more entries.
        assert!(
            p.observe_rule("r", std::slice::from_ref(&a), now + 120_000)
                .is_empty()
        );
    }

    #[test]
    fn a_failed_action_escalates_and_stops_retrying() {
        let mut p = policy(|c| c.defaults.cooldown_secs = 1.0);
        let a = alert("n1", "1");
        let ev = p.observe_rule("r", std::slice::from_ref(&a), 0);
        let id = changed(&ev)[0].id.clone();
        p.dispatchable("n1", 0);
        let ev = p.report("n1", &finished("n1", &id, 2), 1000).unwrap();
        assert_eq!(changed(&ev)[0].state, ActionState::Failed);
        let Some(Event::Escalated(e)) = ev.last() else {
            panic!("{ev:?}")
        };
        assert!(e.reason.contains("exited with status 2"), "{}", e.reason);
        assert!(
            p.observe_rule("r", std::slice::from_ref(&a), 10_000)
                .is_empty()
        );
    }

    #[test]
    fn approval_waits_and_resolution_cancels() {
        let mut p = policy(|c| {
            c.scripts.insert(
                "reset-gpu".into(),
                ScriptOverride {
                    mode: Some(Mode::Approval),
                    ..ScriptOverride::default()
                },
            );
        });
        let a = alert("n1", "1");
        let ev = p.observe_rule("r", std::slice::from_ref(&a), 0);
        let r = changed(&ev)[0].clone();
        assert_eq!(r.state, ActionState::AwaitingApproval);
        assert!(
            p.dispatchable("n1", 1000).is_empty(),
            "nothing before approval"
        );
        assert!(
            p.observe_rule("r", std::slice::from_ref(&a), 5000)
                .is_empty()
        );
        p.approve(&r.id, "alice", 6000).unwrap();
        assert_eq!(
            p.approve(&r.id, "alice", 6000),
            Err(PolicyError::NotAwaiting {
                id: r.id.clone(),
                state: "queued"
            })
        );
        let out = p.dispatchable("n1", 6000);
        assert_eq!(changed(&out)[0].approved_by.as_deref(), Some("alice"));

        let b = alert("n2", "1");
        let ev = p.observe_rule("r", std::slice::from_ref(&b), 7000);
        let waiting = changed(&ev)[0].id.clone();
        let ev = p.observe_rule("r", &[], 8000);
        assert_eq!(changed(&ev)[0].state, ActionState::Cancelled);
        assert_eq!(p.get(&waiting).unwrap().state, ActionState::Cancelled);
    }

    #[test]
    fn kill_switch_stops_everything_not_yet_at_an_agent() {
        let mut p = policy(|_| {});
        let ev = p.observe_rule("r", &[alert("n1", "0")], 0);
        let queued = changed(&ev)[0].id.clone();
        let ev = p.set_kill_switch(true, "bob", "bad night", 1000);
        assert_eq!(changed(&ev)[0].id, queued);
        assert_eq!(p.get(&queued).unwrap().state, ActionState::Cancelled);
        assert!(p.dispatchable("n1", 1000).is_empty());
        let ev = p.observe_rule("r", &[alert("n1", "0"), alert("n2", "0")], 2000);
        let c = changed(&ev);
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|r| r.decision == Decision::SkipKillSwitch));
        assert!(c[0].reason.contains("bob: bad night"));
        p.set_kill_switch(false, "bob", "", 3000);
        let ev = p.observe_rule("r", &[alert("n2", "0")], 4000);
        assert_eq!(changed(&ev)[0].decision, Decision::Run);
    }

    #[test]
    fn dry_run_records_and_runs_nothing() {
        let mut p = policy(|c| c.defaults.mode = Mode::DryRun);
        let ev = p.observe_rule("r", &[alert("n1", "0")], 0);
        assert_eq!(changed(&ev)[0].decision, Decision::DryRun);
        assert_eq!(changed(&ev)[0].state, ActionState::Recorded);
        assert!(p.dispatchable("n1", 0).is_empty());
    }

    #[test]
    fn restored_records_keep_cooldowns_and_open_actions() {
        let mut p = policy(|_| {});
        let ev = p.observe_rule("r", &[alert("n1", "0")], 0);
        let id = changed(&ev)[0].id.clone();
        p.dispatchable("n1", 0);
        let records = p.records().to_vec();
        let mut q = Policy::new(RecoveryConfig::default(), records, None, 0);
        q.set_fleet_size(100);
        assert_eq!(q.redeliver("n1").len(), 1);
        assert!(q.observe_rule("r", &[alert("n1", "0")], 1000).is_empty());
        q.report("n1", &finished("n1", &id, 0), 2000).unwrap();
        let ev = q.observe_rule("r", &[alert("n1", "0")], 3000);
        assert_eq!(changed(&ev)[0].decision, Decision::SkipCooldown);
    }

    #[test]
    fn undelivered_and_silent_actions_expire() {
        let mut p = policy(|c| c.delivery_timeout_secs = 10.0);
        let ev = p.observe_rule("r", &[alert("n1", "0"), alert("n2", "0")], 0);
        let (a, b) = (changed(&ev)[0].id.clone(), changed(&ev)[1].id.clone());
        p.dispatchable("n2", 0);
        let ev = p.expire(11_000);
        assert_eq!(p.get(&a).unwrap().state, ActionState::Cancelled);
        assert_eq!(p.get(&b).unwrap().state, ActionState::Lost);
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::Escalated(r) if r.node == "n2"))
        );
        // The agent's late report replaces "lost" with what happened.
        p.report("n2", &finished("n2", &b, 0), 12_000).unwrap();
        assert_eq!(p.get(&b).unwrap().state, ActionState::Succeeded);
    }

    #[test]
    fn node_from_labels() {
        let mut a = alert("n1", "0");
        assert_eq!(a.node().as_deref(), Some("n1"));
        a.labels.remove("node");
        a.labels.insert("instance".into(), "gpu-07:9435".into());
        assert_eq!(a.node().as_deref(), Some("gpu-07"));
        a.labels.insert("Hostname".into(), "gpu-08".into());
        assert_eq!(a.node().as_deref(), Some("gpu-08"));
    }
}
