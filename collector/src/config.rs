//! `collector.toml` and its defaults.
//!
//! Every key has a default, so the collector starts with no file at all. Unknown keys
//! are refused with the key's name and line (`deny_unknown_fields`): a misspelt key that
//! is silently ignored is a setting that silently does not apply.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ingest::LabelLimits;
use crate::store::StoreOptions;
use crate::tls::TlsConfig;

/// The commented `collector.toml` that `--print-default-config` prints. A test parses it
/// and checks that it equals [`CollectorConfig::default`], so the two cannot drift.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../collector.toml");

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConfig {
    /// Where the store keeps its WAL and checkpoints. `/var/lib/vigil-collector`, as the
    /// agent's state lives in `/var/lib/vigil-agent`: what a packaged daemon expects.
    pub data_dir: PathBuf,
    /// HTTP: health, own metrics and the Prometheus query API.
    pub listen: SocketAddr,
    /// OTLP over gRPC.
    pub otlp_grpc: SocketAddr,
    /// OTLP over HTTP (protobuf and JSON).
    pub otlp_http: SocketAddr,
    /// Bearer tokens senders must present; empty accepts unauthenticated senders.
    pub token_file: PathBuf,
    /// `ROLE TOKEN` lines for the HTTP API (see [`crate::auth`]); empty: open API.
    pub api_token_file: PathBuf,
    /// Allows a listener without tokens on a non-loopback address.
    pub insecure: bool,
    /// Certificates for all three listeners; empty: plain TCP.
    pub tls: TlsConfig,
    pub retention_hours: f64,
    /// How far behind a series' newest sample a late sample is still inserted.
    pub out_of_order_window_secs: f64,
    /// Largest OTLP request body, after decompression.
    pub max_request_bytes: usize,
    /// Most labels one series may have, `__name__` included; a point over it is
    /// refused (`partial_success`), counted and not stored.
    pub max_labels_per_series: usize,
    /// Longest label name, in bytes.
    pub max_label_name_bytes: usize,
    /// Longest label value (and metric name), in bytes.
    pub max_label_value_bytes: usize,
    /// `/metrics` also exposes the latest value of every stored series.
    pub fleet_metrics: bool,
    pub query: QueryConfig,
    pub alerting: AlertingConfig,
    pub logs: LogsConfig,
    /// The remediation policy: guardrails of the recovery actions.
    pub recovery: crate::recovery::config::RecoveryConfig,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/vigil-collector"),
            listen: SocketAddr::from(([0, 0, 0, 0], 9436)),
            otlp_grpc: SocketAddr::from(([0, 0, 0, 0], 4317)),
            otlp_http: SocketAddr::from(([0, 0, 0, 0], 4318)),
            token_file: PathBuf::new(),
            api_token_file: PathBuf::new(),
            insecure: false,
            tls: TlsConfig::default(),
            retention_hours: 24.0,
            out_of_order_window_secs: 300.0,
            max_request_bytes: 16 << 20,
            max_labels_per_series: LabelLimits::default().max_labels_per_series,
            max_label_name_bytes: LabelLimits::default().max_label_name_bytes,
            max_label_value_bytes: LabelLimits::default().max_label_value_bytes,
            fleet_metrics: false,
            query: QueryConfig::default(),
            alerting: AlertingConfig::default(),
            logs: LogsConfig::default(),
            recovery: crate::recovery::config::RecoveryConfig::default(),
        }
    }
}

/// Limits of the query API, named after Prometheus's `--query.*` flags.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Longest a query may run; a request's `timeout` parameter may only shorten it.
    pub timeout_secs: f64,
    /// Most samples one query may read from the store.
    pub max_samples: usize,
    /// How far back an instant selector looks for the latest sample.
    pub lookback_delta_secs: f64,
    /// Queries evaluated at once; more wait for a slot.
    pub max_concurrency: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout_secs: 120.0,
            max_samples: 50_000_000,
            lookback_delta_secs: 300.0,
            max_concurrency: 20,
        }
    }
}

/// Rule evaluation and notifications, named after Prometheus's and Alertmanager's
/// settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertingConfig {
    /// Rule files or folders (`--rules`); a folder means its `*.yml` and `*.yaml`
    /// files. Empty: the default GPU and node packs built into the binary.
    pub rule_files: Vec<PathBuf>,
    /// Alertmanager configuration file (`--alertmanager-config`); empty: alerts are
    /// evaluated and kept in the history, but nobody is notified.
    pub alertmanager_config: PathBuf,
    /// Interval of a rule group that names none (`global.evaluation_interval`).
    pub evaluation_interval_secs: f64,
    /// Base of the alerts' generator URLs; empty: `http://<host name>:<listen port>`.
    pub external_url: String,
    /// An unchanged firing alert is sent to the notifier again after this long
    /// (`--rules.alert.resend-delay`).
    pub resend_delay_secs: f64,
    /// `for` state older than this is not restored after a restart
    /// (`--rules.alert.for-outage-tolerance`).
    pub for_outage_tolerance_secs: f64,
    /// Least time an alert with `for` waits after a restart before it fires again
    /// (`--rules.alert.for-grace-period`); shorter `for` durations are not restored.
    pub for_grace_period_secs: f64,
    /// Disk budget of the alert history in `<data_dir>/alerts/`; the oldest events go
    /// first.
    pub history_max_bytes: u64,
    /// Also evaluate a group soon after new samples arrive — at most every quarter of
    /// its interval — instead of only on its interval, so an alert's latency does not
    /// depend on how the agents' collections and the evaluations happen to line up.
    pub eager_evaluation: bool,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            rule_files: Vec::new(),
            alertmanager_config: PathBuf::new(),
            evaluation_interval_secs: 15.0,
            external_url: String::new(),
            resend_delay_secs: 60.0,
            for_outage_tolerance_secs: 3600.0,
            for_grace_period_secs: 600.0,
            history_max_bytes: 64 << 20,
            eager_evaluation: true,
        }
    }
}

/// The log index (`<data_dir>/logs/`): tantivy, one index per hour of record time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// Whole hourly partitions older than this are deleted.
    pub retention_hours: f64,
    /// Disk budget of the partitions; past it the oldest go first (the newest is kept).
    pub max_bytes: u64,
    /// How often new records are committed (made searchable); at most 1000.
    pub commit_interval_ms: u64,
    /// Indexing memory of each open partition writer (tantivy needs at least 15 MB).
    pub writer_memory_bytes: usize,
    /// Records accepted but not yet committed past which OTLP log requests are answered
    /// 503 (retry) instead of queueing without bound.
    pub max_queued_records: usize,
    /// Counters derived from log queries, stored as ordinary series.
    pub metrics: Vec<LogMetricConfig>,
}

/// A counter of the records matching `query` (tantivy syntax, as `vigil logs search`),
/// by `node` and the labels in `labels` (label name = a record field — `source`,
/// `severity` — or an attribute key such as `nvidia.xid`). Counted as records are
/// committed; it starts again from 0 when the collector restarts, as any counter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogMetricConfig {
    pub name: String,
    pub query: String,
    #[serde(default)]
    pub help: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Default for LogsConfig {
    fn default() -> Self {
        let metric =
            |name: &str, help: &str, query: &str, labels: &[(&str, &str)]| LogMetricConfig {
                name: name.into(),
                query: query.into(),
                help: help.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            };
        Self {
            retention_hours: 168.0,
            max_bytes: 50 << 30,
            commit_interval_ms: 500,
            writer_memory_bytes: 64 << 20,
            max_queued_records: 500_000,
            metrics: vec![
                metric(
                    "vigil_log_oom_kills_total",
                    "Kernel OOM-killer lines.",
                    "\"out of memory\" OR \"oom-kill\" OR \"killed process\"",
                    &[],
                ),
                metric(
                    "vigil_log_nccl_timeouts_total",
                    "NCCL collective or watchdog timeouts.",
                    "(nccl OR worknccl OR processgroupnccl) AND (timeout OR \"timed out\" OR \"timing out\")",
                    &[],
                ),
                metric(
                    "vigil_log_segfaults_total",
                    "Segmentation faults reported by the kernel or a process.",
                    "segfault OR \"segmentation fault\"",
                    &[],
                ),
                metric(
                    "vigil_log_xid_errors_total",
                    "NVIDIA Xid lines in the kernel log, by Xid and GPU.",
                    "attributes.nvidia.event:xid",
                    &[("xid", "nvidia.xid"), ("gpu", "nvidia.gpu")],
                ),
            ],
        }
    }
}

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A key whose name is built from the file (`recovery.scripts.<name>.*`).
    #[error("{key}: {message}")]
    InvalidKey { key: String, message: String },
}

impl CollectorConfig {
    /// Reads and validates a config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; the error names the key, line and column.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        vigil_proto::config::from_toml(text)
    }

    /// Checks what serde cannot: durations that are positive and finite, limits above 0.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |field: &'static str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    field,
                    message: format!("must be a positive finite number, got {v}"),
                })
            }
        };
        positive("retention_hours", self.retention_hours)?;
        if let Some((key, message)) = self.recovery.problems().into_iter().next() {
            return Err(ConfigError::InvalidKey { key, message });
        }
        positive("query.timeout_secs", self.query.timeout_secs)?;
        positive("query.lookback_delta_secs", self.query.lookback_delta_secs)?;
        positive(
            "alerting.evaluation_interval_secs",
            self.alerting.evaluation_interval_secs,
        )?;
        positive(
            "alerting.resend_delay_secs",
            self.alerting.resend_delay_secs,
        )?;
        positive(
            "alerting.for_outage_tolerance_secs",
            self.alerting.for_outage_tolerance_secs,
        )?;
        if !(self.alerting.for_grace_period_secs >= 0.0
            && self.alerting.for_grace_period_secs.is_finite())
        {
            return Err(ConfigError::Invalid {
                field: "alerting.for_grace_period_secs",
                message: format!(
                    "must be 0 or a positive finite number, got {}",
                    self.alerting.for_grace_period_secs
                ),
            });
        }
        if self.alerting.history_max_bytes < 4096 {
            return Err(ConfigError::Invalid {
                field: "alerting.history_max_bytes",
                message: format!(
                    "must be at least 4096, got {}",
                    self.alerting.history_max_bytes
                ),
            });
        }
        if !(self.out_of_order_window_secs >= 0.0 && self.out_of_order_window_secs.is_finite()) {
            return Err(ConfigError::Invalid {
                field: "out_of_order_window_secs",
                message: format!(
                    "must be 0 or a positive finite number, got {}",
                    self.out_of_order_window_secs
                ),
            });
        }
        positive("logs.retention_hours", self.logs.retention_hours)?;
        if !(1..=1000).contains(&self.logs.commit_interval_ms) {
            return Err(ConfigError::Invalid {
                field: "logs.commit_interval_ms",
                message: format!(
                    "must be 1 to 1000 (records are searchable within a second), got {}",
                    self.logs.commit_interval_ms
                ),
            });
        }
        if self.logs.writer_memory_bytes < 15_000_000 {
            return Err(ConfigError::Invalid {
                field: "logs.writer_memory_bytes",
                message: format!(
                    "must be at least 15000000 (tantivy's minimum), got {}",
                    self.logs.writer_memory_bytes
                ),
            });
        }
        let label_name = regex::Regex::new("^[a-zA-Z_][a-zA-Z0-9_]*$").ok();
        let valid = |s: &str| label_name.as_ref().is_some_and(|r| r.is_match(s));
        for m in &self.logs.metrics {
            if !valid(&m.name) {
                return Err(ConfigError::Invalid {
                    field: "logs.metrics.name",
                    message: format!("{:?} is not a valid metric name", m.name),
                });
            }
            if let Some(bad) = m
                .labels
                .keys()
                .find(|k| !valid(k) || k.as_str() == "node" || k.starts_with("__"))
            {
                return Err(ConfigError::Invalid {
                    field: "logs.metrics.labels",
                    message: format!(
                        "metric {}: {bad:?} is not a label name it may set (node is always set)",
                        m.name
                    ),
                });
            }
        }
        for (field, v) in [
            ("max_request_bytes", self.max_request_bytes),
            ("logs.max_queued_records", self.logs.max_queued_records),
            ("max_labels_per_series", self.max_labels_per_series),
            ("max_label_name_bytes", self.max_label_name_bytes),
            ("max_label_value_bytes", self.max_label_value_bytes),
            ("query.max_samples", self.query.max_samples),
            ("query.max_concurrency", self.query.max_concurrency),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    field,
                    message: "must be at least 1".into(),
                });
            }
        }
        Ok(())
    }

    /// The store's settings: this config's directory, retention and window, the store's
    /// own defaults for the rest.
    pub fn store_options(&self) -> StoreOptions {
        let mut opts = StoreOptions::new(&self.data_dir);
        opts.retention_ms = secs_to_ms(self.retention_hours * 3600.0);
        opts.out_of_order_window_ms = secs_to_ms(self.out_of_order_window_secs);
        opts
    }

    /// The receivers' label limits.
    pub fn label_limits(&self) -> LabelLimits {
        LabelLimits {
            max_labels_per_series: self.max_labels_per_series,
            max_label_name_bytes: self.max_label_name_bytes,
            max_label_value_bytes: self.max_label_value_bytes,
        }
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs_f64(self.retention_hours * 3600.0)
    }
}

impl QueryConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_secs)
    }

    pub fn lookback_delta_ms(&self) -> i64 {
        secs_to_ms(self.lookback_delta_secs)
    }
}

/// Seconds (validated finite and non-negative) to whole milliseconds, saturating.
fn secs_to_ms(secs: f64) -> i64 {
    // `as` saturates for out-of-range floats.
    (secs * 1000.0).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_file_matches_the_defaults() {
        let parsed = CollectorConfig::from_toml(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(parsed, CollectorConfig::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(
            CollectorConfig::from_toml("").unwrap(),
            CollectorConfig::default()
        );
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = CollectorConfig::from_toml("fleet_metrics = true\n\n[query]\ntimeout = 5\n")
            .unwrap_err();
        assert!(err.contains("timeout"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        let err = CollectorConfig::from_toml("listen = \"nowhere\"\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut c = CollectorConfig::default();
        c.query.timeout_secs = 0.0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("query.timeout_secs:")
        );
        let c = CollectorConfig {
            out_of_order_window_secs: -1.0,
            ..CollectorConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("out_of_order_window_secs:")
        );
    }

    #[test]
    fn store_options_carry_units_over() {
        let c = CollectorConfig {
            retention_hours: 2.0,
            out_of_order_window_secs: 1.5,
            ..CollectorConfig::default()
        };
        let o = c.store_options();
        assert_eq!(o.retention_ms, 7_200_000);
        assert_eq!(o.out_of_order_window_ms, 1_500);
    }
}
