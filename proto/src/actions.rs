//! The recovery audit as the collector's HTTP API answers it, in Prometheus's envelope:
//!
//! - `GET /api/v1/actions?node=&state=&limit=` →
//!   `{"status":"success","data":{"kill_switch":{..},"actions":[Action, ...]}}`,
//!   newest first. Every decision of the remediation policy is one entry, the ones
//!   that ran nothing (cooldown, concurrency cap, kill switch, dry run, escalation)
//!   included.
//! - `POST /api/v1/actions/{id}/approve` (body `{"by":"alice"}`, optional) → the
//!   action, now `queued`; 404 for an unknown id, 409 for one not awaiting approval.
//! - `POST /api/v1/actions/{id}/reject` (same body) → the action, now `rejected`.
//! - `POST /api/v1/actions/kill-switch` (body `{"engaged":true,"by":"alice",
//!   "reason":"..."}`) → the kill switch. While engaged no action starts.
//!
//! Times are RFC 3339 strings in UTC, as the rest of the API writes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the policy decided when an alert with a `recovery:` block fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Sent to the node's agent to run.
    Run,
    /// Waits for an operator's approve (the script's policy says `mode = "approval"`).
    AwaitApproval,
    /// Recorded what would have run; nothing did (`mode = "dry_run"`).
    DryRun,
    /// The same script ran on the same node less than its cooldown ago.
    SkipCooldown,
    /// As many actions of this script were running as its policy allows.
    SkipConcurrency,
    /// The global kill switch was engaged.
    SkipKillSwitch,
    /// The action failed, or the alert fired again after the last allowed attempt:
    /// the node needs a person (a notification went out); no more attempts.
    Escalate,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Run => "run",
            Decision::AwaitApproval => "await_approval",
            Decision::DryRun => "dry_run",
            Decision::SkipCooldown => "skip_cooldown",
            Decision::SkipConcurrency => "skip_concurrency",
            Decision::SkipKillSwitch => "skip_kill_switch",
            Decision::Escalate => "escalate",
        }
    }

    pub const ALL: [Decision; 7] = [
        Decision::Run,
        Decision::AwaitApproval,
        Decision::DryRun,
        Decision::SkipCooldown,
        Decision::SkipConcurrency,
        Decision::SkipKillSwitch,
        Decision::Escalate,
    ];
}

/// Where an action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Waiting for an operator's approve.
    AwaitingApproval,
    /// Decided (or approved); waiting for the node's agent to take it.
    Queued,
    /// Sent to the agent; not yet reported started.
    Dispatched,
    Running,
    /// Exit status 0.
    Succeeded,
    /// Non-zero exit, killed by a signal, or killed at its time limit.
    Failed,
    /// The agent would not run it (see `message`).
    Refused,
    /// The agent restarted while it ran, or never reported back in time: whether it
    /// completed is unknown. Not run again.
    Lost,
    /// An operator rejected it, or its alert resolved before it was approved or
    /// delivered, or the kill switch cancelled it before it started.
    Cancelled,
    /// Nothing to run: a skip, a dry run or an escalation (see `decision`).
    Recorded,
}

impl ActionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::AwaitingApproval => "awaiting_approval",
            ActionState::Queued => "queued",
            ActionState::Dispatched => "dispatched",
            ActionState::Running => "running",
            ActionState::Succeeded => "succeeded",
            ActionState::Failed => "failed",
            ActionState::Refused => "refused",
            ActionState::Lost => "lost",
            ActionState::Cancelled => "cancelled",
            ActionState::Recorded => "recorded",
        }
    }

    /// Holds one of its script's concurrency slots.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            ActionState::Queued | ActionState::Dispatched | ActionState::Running
        )
    }

    /// Will not change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ActionState::Succeeded
                | ActionState::Failed
                | ActionState::Refused
                | ActionState::Lost
                | ActionState::Cancelled
                | ActionState::Recorded
        )
    }

    pub const ALL: [ActionState; 10] = [
        ActionState::AwaitingApproval,
        ActionState::Queued,
        ActionState::Dispatched,
        ActionState::Running,
        ActionState::Succeeded,
        ActionState::Failed,
        ActionState::Refused,
        ActionState::Lost,
        ActionState::Cancelled,
        ActionState::Recorded,
    ];
}

/// One decision and, when it ran something, its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub id: String,
    pub node: String,
    pub script: String,
    pub alertname: String,
    /// The firing alert's labels.
    pub labels: BTreeMap<String, String>,
    /// The labels passed to the script (`VIGIL_LABEL_<NAME>`).
    pub args: BTreeMap<String, String>,
    pub decision: Decision,
    pub state: ActionState,
    /// Why the policy decided so, in words ("cooldown: reset-gpu ran on n1 4m ago").
    pub reason: String,
    /// 1 for the first attempt for this alert within the policy's attempt window.
    pub attempt: u32,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default)]
    pub timed_out: bool,
    /// What the agent said (why it refused, what went wrong), or the operator's words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Where the script's output is: a logs query (`source:"recovery:<id>"`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub logs_query: String,
}

/// The global kill switch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KillSwitch {
    pub engaged: bool,
    /// Who set it last and why; for a switch set in the config file, `config`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// The body of `GET /api/v1/actions`'s `data`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionList {
    pub kill_switch: KillSwitch,
    pub actions: Vec<Action>,
}

/// The body of `POST /api/v1/actions/{id}/approve` and `/reject`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApproveRequest {
    #[serde(default)]
    pub by: String,
}

/// The body of `POST /api/v1/actions/kill-switch`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KillSwitchRequest {
    pub engaged: bool,
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub reason: String,
}

/// The logs query that finds an action's output.
pub fn logs_query(action_id: &str) -> String {
    format!("source:\"recovery:{action_id}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_serde() {
        for d in Decision::ALL {
            assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
        }
        for s in ActionState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
