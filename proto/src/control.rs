//! The control channel between the collector and its agents: how the collector asks a
//! node to run a recovery script, and how the agent says what became of it.
//!
//! The agent opens the channel (so it works behind NAT): a gRPC server-streaming call
//! [`CONNECT`] on the collector's OTLP/gRPC port, with the same bearer token it ships
//! with, answered by a stream of [`Command`]s; it reports each action's progress with
//! the unary [`REPORT`]. Both are messages of the service `vigil.control.v1.Control`,
//! written here with prost's derive (no `.proto` compiler needed); their field numbers
//! are the contract.
//!
//! An action carries no command: only the name of an executable in the agent's recovery
//! directory, the alert's name, and the label values the rule chose to pass. The agent
//! builds the script's environment from them (`VIGIL_ACTION_ID`, `VIGIL_ALERT_NAME`,
//! `VIGIL_NODE`, `VIGIL_LABEL_<NAME>`), never a command line.
//!
//! Delivery is at-least-once (the collector sends an undelivered or unreported action
//! again on every reconnect); the agent makes execution at-most-once by journalling an
//! action's id before it starts the script, and answers a repeated id with what it
//! recorded.

use std::collections::BTreeMap;

/// The full method path of the agent's stream of commands.
pub const CONNECT: &str = "/vigil.control.v1.Control/Connect";
/// The full method path of an action's report.
pub const REPORT: &str = "/vigil.control.v1.Control/Report";
/// The service name, as tonic's `NamedService` wants it.
pub const SERVICE: &str = "vigil.control.v1.Control";

/// The environment variable names the agent sets for a script.
pub mod env {
    pub const ACTION_ID: &str = "VIGIL_ACTION_ID";
    pub const ALERT_NAME: &str = "VIGIL_ALERT_NAME";
    pub const NODE: &str = "VIGIL_NODE";
    /// Followed by the label's name in upper case: `gpu` → `VIGIL_LABEL_GPU`.
    pub const LABEL_PREFIX: &str = "VIGIL_LABEL_";
}

/// Agent → collector: opens the stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    /// The node this agent speaks for (its `host.name`).
    #[prost(string, tag = "1")]
    pub node: String,
    /// The agent's version, for the fleet registry.
    #[prost(string, tag = "2")]
    pub agent_version: String,
    /// The executables the recovery directory holds that the agent would run; empty
    /// when it has no recovery directory.
    #[prost(string, repeated, tag = "3")]
    pub scripts: Vec<String>,
}

/// Collector → agent: one message of the stream. Without an action it is a heartbeat,
/// which lets both ends notice a dead connection.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Command {
    #[prost(message, optional, tag = "1")]
    pub action: Option<Action>,
}

/// Run one script, once.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Action {
    /// Unique across the collector's life (and restarts); the agent runs an id once.
    #[prost(string, tag = "1")]
    pub id: String,
    /// A plain file name inside the agent's recovery directory.
    #[prost(string, tag = "2")]
    pub script: String,
    /// The alert that asked for it (`VIGIL_ALERT_NAME`).
    #[prost(string, tag = "3")]
    pub alert_name: String,
    /// The node it runs on (`VIGIL_NODE`); the agent refuses an action for another node.
    #[prost(string, tag = "4")]
    pub node: String,
    /// The labels the rule's `args_from_labels` named, with the alert's values; each
    /// becomes `VIGIL_LABEL_<NAME>`.
    #[prost(btree_map = "string, string", tag = "5")]
    pub labels: BTreeMap<String, String>,
    /// The script's time limit; past it the agent kills the script's process group.
    #[prost(uint32, tag = "6")]
    pub timeout_secs: u32,
}

/// Where an action stands, as the agent reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Phase {
    Unspecified = 0,
    /// The script was started (its id is journalled: it will not run again).
    Started = 1,
    /// The script ended: see `exit_code`, `signal`, `timed_out`.
    Finished = 2,
    /// The agent would not run it: `message` says why (no such script, wrong
    /// ownership or mode, bad name, another node's action, recovery disabled).
    Refused = 3,
    /// The agent had started it but restarted before it ended: whether it completed is
    /// unknown, and it is not run again.
    Lost = 4,
}

/// Agent → collector: what became of an action.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Report {
    #[prost(string, tag = "1")]
    pub action_id: String,
    #[prost(string, tag = "2")]
    pub node: String,
    #[prost(enumeration = "Phase", tag = "3")]
    pub phase: i32,
    /// The exit status, when the script exited on its own.
    #[prost(int32, optional, tag = "4")]
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    #[prost(int32, optional, tag = "5")]
    pub signal: Option<i32>,
    /// The agent killed it at its time limit.
    #[prost(bool, tag = "6")]
    pub timed_out: bool,
    /// Milliseconds since the Unix epoch, on the agent's clock.
    #[prost(int64, tag = "7")]
    pub started_unix_ms: i64,
    #[prost(int64, tag = "8")]
    pub finished_unix_ms: i64,
    /// Why it was refused or lost, or what went wrong starting it.
    #[prost(string, tag = "9")]
    pub message: String,
}

impl Report {
    /// Finished with exit status 0.
    pub fn succeeded(&self) -> bool {
        self.phase == Phase::Finished as i32 && self.exit_code == Some(0) && !self.timed_out
    }
}

/// Collector → agent: the report was recorded (the agent may forget it).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReportAck {}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn messages_round_trip() {
        let a = Action {
            id: "a-1".into(),
            script: "reset-gpu".into(),
            alert_name: "GpuFellOffBus".into(),
            node: "n1".into(),
            labels: BTreeMap::from([("gpu".into(), "3".into())]),
            timeout_secs: 60,
        };
        let c = Command { action: Some(a) };
        let back = Command::decode(c.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, c);
        let r = Report {
            action_id: "a-1".into(),
            node: "n1".into(),
            phase: Phase::Finished as i32,
            exit_code: Some(0),
            ..Report::default()
        };
        let back = Report::decode(r.encode_to_vec().as_slice()).unwrap();
        assert!(back.succeeded());
        assert_eq!(Command::default().encode_to_vec(), Vec::<u8>::new());
    }
}
