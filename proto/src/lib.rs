//! Vigil's wire contract: the types that cross a process boundary, with no I/O.
//!
//! # Layout
//! - [`metrics`]: a metric family as a source produces it (name, help, type, samples),
//!   shared by the agent's snapshot and, later, the OTLP conversion.
//! - [`config`]: the TOML parser of the daemons' config files, with line and column
//!   in its errors.
//! - [`exposition`]: Prometheus's text exposition formats — classic 0.0.4 and
//!   OpenMetrics 1.0 (with counters' `_created` lines) — written from metric families.
//! - [`logs`]: how a log line travels as an OTLP log record (attribute keys).
//! - [`control`]: the control channel's messages (recovery actions and their reports).
//! - [`actions`]: the recovery audit as `/api/v1/actions` answers it.

pub mod actions;
pub mod config;
pub mod control;
pub mod exposition;
pub mod logs;
pub mod metrics;
pub mod otlp;

pub use metrics::{MetricFamily, MetricKind, Sample};
