//! Notifications with Alertmanager's vocabulary and semantics, inside the collector.
//!
//! The rule evaluator hands its active alerts to an [`AlertSink`] after every
//! evaluation, as Prometheus POSTs them to Alertmanager. The notifier behind it keeps
//! them by fingerprint, routes them through the route tree of an Alertmanager
//! configuration file, groups them (`group_by`, `group_wait`, `group_interval`,
//! `repeat_interval`), drops what silences and inhibit rules mute, and delivers each
//! group's [`Message`] through the receiver's integrations (email, webhooks, Slack and
//! the group-robot formats), retrying with bounded backoff and falling back to another
//! receiver when one stays down. What was sent is remembered on disk, so a restart
//! neither repeats a storm of notifications nor loses a resolve.
//!
//! # Layout
//! - [`config`]: the Alertmanager configuration file's model, and its parser with
//!   errors that name file, line and key; keys we do not support are refused by name.
//! - [`matchers`]: label matchers in Alertmanager's syntax (`severity=~"crit.*"`).
//! - [`route`], [`dispatch`]: the route tree and the aggregation groups with their
//!   timers and notification log.
//! - [`inhibit`], [`silence`]: muting.
//! - [`integrations`]: delivery — email (lettre), webhooks (Alertmanager's v4 body and
//!   the ready-made Slack, WeCom, DingTalk and Feishu bodies), retries and signatures.
//! - [`api`]: `/api/v1/silences` and the notifier's status.

pub mod api;
pub mod config;
pub mod dispatch;
pub mod inhibit;
pub mod integrations;
pub mod matchers;
pub mod route;
pub mod silence;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

/// Labels or annotations, ordered by name as Alertmanager prints them.
pub type LabelMap = BTreeMap<String, String>;

/// An alert as the rule evaluator hands it over: what Prometheus POSTs to
/// Alertmanager's `/api/v2/alerts` for every pending-to-firing, firing and recently
/// resolved alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PostableAlert {
    pub labels: LabelMap,
    pub annotations: LabelMap,
    /// When the alert started firing (Prometheus sends `ActiveAt`).
    pub starts_at_ms: i64,
    /// For a resolved alert, when it resolved. For a firing one, the time until which
    /// it is valid without being sent again (Prometheus sends now + 4 × the resend
    /// delay), after which the notifier considers it resolved on its own.
    pub ends_at_ms: i64,
    pub generator_url: String,
}

impl PostableAlert {
    /// Alertmanager's fingerprint of the label set: 16 hex digits of FNV-1a 64 over
    /// the sorted names and values, each followed by the separator byte 0xff.
    pub fn fingerprint(&self) -> u64 {
        fingerprint(&self.labels)
    }
}

/// Prometheus's `model.LabelSet.Fingerprint`.
pub fn fingerprint(labels: &LabelMap) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    if labels.is_empty() {
        return OFFSET;
    }
    let mut h = OFFSET;
    for (name, value) in labels {
        for b in name
            .bytes()
            .chain([0xff])
            .chain(value.bytes())
            .chain([0xff])
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// Where the rule evaluator sends its alerts; the notifier implements it, tests use a
/// channel. `send` must not block: the evaluator calls it between evaluations.
pub trait AlertSink: Send + Sync {
    fn send(&self, alerts: Vec<PostableAlert>);
}

/// Firing or resolved, for one alert or a whole group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

/// One alert inside a [`Message`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageAlert {
    pub status: Status,
    pub labels: LabelMap,
    pub annotations: LabelMap,
    pub starts_at_ms: i64,
    /// `None` while firing (Alertmanager prints `0001-01-01T00:00:00Z`).
    pub ends_at_ms: Option<i64>,
    pub generator_url: String,
    /// 16 lower-case hex digits of [`fingerprint`].
    pub fingerprint: String,
}

/// What one notification of one aggregation group carries: the data of Alertmanager's
/// webhook v4 body and of its notification templates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub receiver: String,
    /// Firing when any alert of the group fires.
    pub status: Status,
    /// Firing alerts first, then resolved ones, each sorted by labels.
    pub alerts: Vec<MessageAlert>,
    pub group_labels: LabelMap,
    pub common_labels: LabelMap,
    pub common_annotations: LabelMap,
    pub external_url: String,
    /// The route's matchers and the group labels, as Alertmanager prints them:
    /// `{}:{alertname="NodeDiskFull"}`.
    pub group_key: String,
    /// Alerts left out because the integration's `max_alerts` was reached.
    pub truncated_alerts: u64,
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct NotifyError {
    /// A timeout, a refused connection or a 5xx/429 may succeed later; a 4xx or a
    /// rejected recipient will not.
    pub retryable: bool,
    pub message: String,
}

/// A future a delivery returns.
pub type NotifyFuture<'a> = Pin<Box<dyn Future<Output = Result<(), NotifyError>> + Send + 'a>>;

/// One configured delivery of a receiver: an `email_configs` or `webhook_configs`
/// entry, say. [`integrations::build`] makes them from the configuration.
pub trait Integration: Send + Sync {
    /// `email`, `webhook`, `slack`, `wecom`, `dingtalk` or `feishu`: the `integration`
    /// label of the notifier's metrics.
    fn kind(&self) -> &'static str;
    /// Whether resolved-only notifications are sent (`send_resolved`).
    fn send_resolved(&self) -> bool;
    /// One attempt, within the integration's own timeout. Retrying is the caller's
    /// ([`integrations::deliver`]).
    fn notify<'a>(&'a self, message: &'a Message) -> NotifyFuture<'a>;
}

/// A transition kept in the alert history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryKind {
    Pending,
    Firing,
    Resolved,
    /// A notification of the alert was held back by a silence.
    Silenced,
    /// A notification of the alert was held back by an inhibit rule.
    Inhibited,
    /// A notification of the alert was delivered to a receiver.
    Notified,
}

/// One entry of the alert history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEvent {
    pub at_ms: i64,
    pub kind: HistoryKind,
    pub labels: LabelMap,
    pub annotations: LabelMap,
    /// What else is worth keeping: the silence's id, the receiver, the value.
    pub detail: String,
}

/// Where transitions are recorded durably (the collector's alert history). `record`
/// must not block for long: it is called from the evaluator and the notifier.
pub trait HistorySink: Send + Sync {
    fn record(&self, event: HistoryEvent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_alertmanager() {
        // The sample body's alert: Alertmanager 0.25 printed fingerprint 3c2b73d428058102.
        let labels: LabelMap = [
            ("alertname", "NodeDiskFull"),
            ("instance", "node-1:9100"),
            ("job", "node"),
            ("severity", "critical"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(format!("{:016x}", fingerprint(&labels)), "3c2b73d428058102");
    }
}
