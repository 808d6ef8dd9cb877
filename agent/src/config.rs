//! The agent's configuration: `agent.toml`, overridden by flags.
//!
//! Every key has a default, so the agent starts with no file at all. Unknown keys are
//! refused with the key's name and line (`deny_unknown_fields`), because a misspelt key
//! that is silently ignored is a setting that silently does not apply.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::sources::HostPaths;

/// The commented `agent.toml` that `--print-default-config` prints. A test parses it and
/// checks that it equals [`AgentConfig::default`], so the two cannot drift.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../agent.toml");

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Address of the Prometheus endpoint.
    pub listen: SocketAddr,
    /// Name this node reports as; empty means the host name.
    pub node_name: String,
    /// Seconds between collections; a scrape serves the latest one.
    pub interval_secs: f64,
    /// Seconds one source may take before it is reported as failed for that cycle.
    pub source_timeout_secs: f64,
    /// Where the agent keeps its state (the simulated NVML library's copy, the shipping
    /// spool under `spool/`, later checkpoints).
    pub state_dir: PathBuf,
    /// Where /proc, /sys and the root file system are mounted.
    pub paths: HostPaths,
    pub filesystem: FilesystemConfig,
    pub diskstats: DiskstatsConfig,
    pub netdev: NetdevConfig,
    pub gpu: GpuConfig,
    pub shipper: ShipperConfig,
    pub logs: LogsConfig,
    pub recovery: RecoveryConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9435)),
            node_name: String::new(),
            interval_secs: 5.0,
            source_timeout_secs: 4.0,
            state_dir: PathBuf::from("/var/lib/vigil-agent"),
            paths: HostPaths::default(),
            filesystem: FilesystemConfig::default(),
            diskstats: DiskstatsConfig::default(),
            netdev: NetdevConfig::default(),
            gpu: GpuConfig::default(),
            shipper: ShipperConfig::default(),
            logs: LogsConfig::default(),
            recovery: RecoveryConfig::default(),
        }
    }
}

/// node_exporter's filesystem collector defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesystemConfig {
    /// Regex of mount points to leave out.
    pub mount_points_exclude: String,
    /// Regex of file system types to leave out.
    pub fs_types_exclude: String,
}

impl Default for FilesystemConfig {
    fn default() -> Self {
        Self {
            mount_points_exclude:
                "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
                    .to_owned(),
            fs_types_exclude: "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs)$".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskstatsConfig {
    /// Regex of block devices to leave out (partitions and virtual devices by default).
    pub device_exclude: String,
}

impl Default for DiskstatsConfig {
    fn default() -> Self {
        Self {
            device_exclude: "^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\\d+n\\d+p)\\d+$".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetdevConfig {
    /// Regex of network devices to leave out; empty leaves none out.
    pub device_exclude: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuConfig {
    /// Collect GPU metrics through NVML when a driver is present.
    pub enabled: bool,
    /// Path of libnvidia-ml; empty means the loader's search for `libnvidia-ml.so.1`.
    pub nvml_lib: PathBuf,
    /// How many GPUs this node should have; 0 leaves `vigil_gpu_expected_count` out.
    pub expected_count: u32,
    /// Use the simulated NVML library with this many GPUs instead of the driver.
    pub simulate_gpus: u32,
    /// TOML file of faults for the simulated GPUs, re-read while running.
    pub simulate_faults: PathBuf,
}

impl Default for GpuConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            nvml_lib: PathBuf::new(),
            expected_count: 0,
            simulate_gpus: 0,
            simulate_faults: PathBuf::new(),
        }
    }
}

/// Shipping to vigil-collector. Off (exporter only) while `collector` is empty.
///
/// Every snapshot is appended to a spool under `<state_dir>/spool/` first and deleted only
/// once the collector has acknowledged it. Policy at `spool_max_bytes`: metrics records
/// are dropped oldest-first before any log record is (a new metrics record that would fit
/// only by dropping a log is itself dropped); logs go oldest-first only when no metrics
/// are left. Drops are counted in `vigil_agent_spool_dropped_records_total{kind}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShipperConfig {
    /// OTLP/gRPC endpoint of the collector (`http://host:4317`, or `https://` for TLS);
    /// empty: do not ship.
    pub collector: String,
    /// File holding the bearer token sent to the collector; empty: no token.
    pub token_file: PathBuf,
    /// PEM file of the CA that signed the collector's certificate (a self-signed
    /// collector); empty: the Mozilla roots that ship with the agent.
    pub ca_file: PathBuf,
    /// Cap on the spool's queued bytes, metrics and logs together.
    pub spool_max_bytes: u64,
    /// Most payload bytes in one request when draining a backlog.
    pub batch_max_bytes: u64,
    /// Rate limit on draining a backlog (after the collector was away, or found at
    /// start), so that a fleet reconnecting after an outage does not flatten the
    /// collector; live records at the spool's head are sent unpaced.
    pub drain_max_bytes_per_sec: u64,
    /// Seconds one request may take before it counts as failed and is retried.
    pub request_timeout_secs: f64,
    /// Longest wait between retries; waits grow exponentially with jitter up to this.
    pub retry_max_secs: f64,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        Self {
            collector: String::new(),
            token_file: PathBuf::new(),
            ca_file: PathBuf::new(),
            spool_max_bytes: 1 << 30,
            batch_max_bytes: 1 << 20,
            drain_max_bytes_per_sec: 256 << 10,
            request_timeout_secs: 10.0,
            retry_max_secs: 30.0,
        }
    }
}

impl ShipperConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: String| Err(ConfigError::Invalid { field, message });
        let scheme_ok =
            self.collector.starts_with("http://") || self.collector.starts_with("https://");
        if !self.collector.is_empty() && !scheme_ok {
            return invalid(
                "shipper.collector",
                format!(
                    "must start with http:// or https://, got {:?}",
                    self.collector
                ),
            );
        }
        if self.spool_max_bytes < 1 << 20 {
            return invalid(
                "shipper.spool_max_bytes",
                format!("must be at least 1048576, got {}", self.spool_max_bytes),
            );
        }
        if self.batch_max_bytes == 0 || self.batch_max_bytes > 64 << 20 {
            return invalid(
                "shipper.batch_max_bytes",
                format!(
                    "must be between 1 and 67108864, got {}",
                    self.batch_max_bytes
                ),
            );
        }
        if self.drain_max_bytes_per_sec == 0 {
            return invalid(
                "shipper.drain_max_bytes_per_sec",
                "must be positive".to_owned(),
            );
        }
        for (field, secs) in [
            ("shipper.request_timeout_secs", self.request_timeout_secs),
            ("shipper.retry_max_secs", self.retry_max_secs),
        ] {
            if !(secs > 0.0 && secs.is_finite()) {
                return invalid(
                    field,
                    format!("must be a positive number of seconds, got {secs}"),
                );
            }
        }
        Ok(())
    }
}

/// Log files and the kernel log, shipped as OTLP log records through the spool (so only
/// with `[shipper] collector` set; the kernel log's NVRM Xid lines are counted either
/// way).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// Files to tail, as globs (`/var/log/app/*.log`); re-scanned every
    /// `rescan_interval_secs`, so files created or rotated in later are picked up.
    pub files: Vec<String>,
    /// The kernel log: `/dev/kmsg`, or a file or FIFO of kmsg records; empty: off.
    pub kmsg: PathBuf,
    /// Where to begin in files found at the agent's very first start (no checkpoints
    /// yet): "end" (only what is written from now on) or "start" (the whole file).
    /// Files that appear later, and files at later starts that no checkpoint knows, are
    /// always read from the start, since all they hold was written while the agent ran
    /// or was down.
    pub first_start_from: String,
    /// Lines longer than this are split into pieces of this size, each marked
    /// `vigil.log.truncated` with its `vigil.log.part`.
    pub max_line_bytes: usize,
    /// Regex a line must match to begin a new record; other lines are appended to the
    /// record before (stack traces). Empty: every line is its own record.
    pub multiline_start_pattern: String,
    /// Milliseconds a multiline record waits for another line before it is sent.
    pub multiline_flush_ms: u64,
    /// Seconds between looks for new, renamed and truncated files.
    pub rescan_interval_secs: f64,
    /// A batch of lines goes to the spool at this many encoded bytes ...
    pub batch_max_bytes: usize,
    /// ... or this many milliseconds after its first line, whichever comes first.
    pub batch_max_wait_ms: u64,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            kmsg: PathBuf::from("/dev/kmsg"),
            first_start_from: "end".to_owned(),
            max_line_bytes: 64 << 10,
            multiline_start_pattern: String::new(),
            multiline_flush_ms: 500,
            rescan_interval_secs: 1.0,
            batch_max_bytes: 1 << 20,
            batch_max_wait_ms: 200,
        }
    }
}

impl LogsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: String| Err(ConfigError::Invalid { field, message });
        if self.first_start_from != "end" && self.first_start_from != "start" {
            return invalid(
                "logs.first_start_from",
                format!(
                    "must be \"start\" or \"end\", got {:?}",
                    self.first_start_from
                ),
            );
        }
        // A piece must fit one request well under gRPC's usual 4 MiB message limit.
        if !(256..=1 << 20).contains(&self.max_line_bytes) {
            return invalid(
                "logs.max_line_bytes",
                format!(
                    "must be between 256 and 1048576, got {}",
                    self.max_line_bytes
                ),
            );
        }
        if !(self.rescan_interval_secs > 0.0 && self.rescan_interval_secs.is_finite()) {
            return invalid(
                "logs.rescan_interval_secs",
                format!(
                    "must be a positive number of seconds, got {}",
                    self.rescan_interval_secs
                ),
            );
        }
        if !(4 << 10..=16 << 20).contains(&self.batch_max_bytes) {
            return invalid(
                "logs.batch_max_bytes",
                format!(
                    "must be between 4096 and 16777216, got {}",
                    self.batch_max_bytes
                ),
            );
        }
        for pattern in &self.files {
            if let Err(e) = glob::Pattern::new(pattern) {
                return invalid("logs.files", format!("{pattern:?}: {e}"));
            }
        }
        if let Err(e) = regex::bytes::Regex::new(&self.multiline_start_pattern) {
            return invalid("logs.multiline_start_pattern", e.to_string());
        }
        Ok(())
    }
}

/// Recovery scripts the collector may ask this node to run (issue 7). Off while `dir` is
/// empty: every action is then refused.
///
/// Only executables in `dir` run, and only when the directory and the file are owned by
/// root or by the agent's user and writable by nobody else; an action names a file, never
/// a command. Each run is journalled under `<state_dir>/recovery/` before it starts, so an
/// action runs at most once across reconnects and restarts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryConfig {
    /// The recovery directory (`--recovery-dir`), an absolute path; empty: recovery off.
    pub dir: PathBuf,
    /// Seconds a script may run when the action gives no time limit (its
    /// `timeout_secs` is 0).
    pub default_timeout_secs: u32,
    /// The most seconds any script may run, whatever the action asks; past its limit a
    /// script's process group gets SIGTERM, then SIGKILL 5 s later.
    pub max_timeout_secs: u32,
    /// Bytes of a script's stdout and stderr shipped as log records per action; the rest
    /// is dropped, and a last record says how much.
    pub max_output_bytes: u64,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            default_timeout_secs: 300,
            max_timeout_secs: 600,
            max_output_bytes: 1 << 20,
        }
    }
}

impl RecoveryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: String| Err(ConfigError::Invalid { field, message });
        if !self.dir.as_os_str().is_empty() && !self.dir.is_absolute() {
            return invalid(
                "recovery.dir",
                format!("must be an absolute path, got {:?}", self.dir),
            );
        }
        if self.max_timeout_secs == 0 {
            return invalid(
                "recovery.max_timeout_secs",
                "must be a positive number of seconds".to_owned(),
            );
        }
        if self.default_timeout_secs == 0 || self.default_timeout_secs > self.max_timeout_secs {
            return invalid(
                "recovery.default_timeout_secs",
                format!(
                    "must be between 1 and recovery.max_timeout_secs ({}), got {}",
                    self.max_timeout_secs, self.default_timeout_secs
                ),
            );
        }
        if !(1024..=64 << 20).contains(&self.max_output_bytes) {
            return invalid(
                "recovery.max_output_bytes",
                format!(
                    "must be between 1024 and 67108864, got {}",
                    self.max_output_bytes
                ),
            );
        }
        Ok(())
    }
}

/// A configuration file that could not be used.
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
}

impl AgentConfig {
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

    /// Checks what serde cannot: positive durations and regexes that compile.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.interval_secs > 0.0 && self.interval_secs.is_finite()) {
            return Err(ConfigError::Invalid {
                field: "interval_secs",
                message: format!(
                    "must be a positive number of seconds, got {}",
                    self.interval_secs
                ),
            });
        }
        if !(self.source_timeout_secs > 0.0 && self.source_timeout_secs.is_finite()) {
            return Err(ConfigError::Invalid {
                field: "source_timeout_secs",
                message: format!(
                    "must be a positive number of seconds, got {}",
                    self.source_timeout_secs
                ),
            });
        }
        for (field, re) in [
            (
                "filesystem.mount_points_exclude",
                &self.filesystem.mount_points_exclude,
            ),
            (
                "filesystem.fs_types_exclude",
                &self.filesystem.fs_types_exclude,
            ),
            ("diskstats.device_exclude", &self.diskstats.device_exclude),
            ("netdev.device_exclude", &self.netdev.device_exclude),
        ] {
            regex::Regex::new(re).map_err(|e| ConfigError::Invalid {
                field,
                message: e.to_string(),
            })?;
        }
        self.shipper.validate()?;
        self.logs.validate()?;
        self.recovery.validate()
    }

    /// The node name to report: the configured one, else the host name.
    pub fn effective_node_name(&self) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        hostname().unwrap_or_else(|| "localhost".to_owned())
    }
}

/// The kernel's host name (uname nodename).
pub fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_file_matches_the_defaults() {
        let parsed = AgentConfig::from_toml(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(parsed, AgentConfig::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err =
            AgentConfig::from_toml("interval_secs = 5\n\n[gpu]\nexpected_cont = 8\n").unwrap_err();
        assert!(err.contains("expected_cont"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let c = AgentConfig {
            interval_secs: 0.0,
            ..AgentConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("interval_secs:")
        );
        let mut c = AgentConfig::default();
        c.netdev.device_exclude = "(".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("netdev.device_exclude:")
        );
        for (field, adjust) in [
            (
                "logs.first_start_from:",
                (|c: &mut AgentConfig| c.logs.first_start_from = "middle".into())
                    as fn(&mut AgentConfig),
            ),
            ("logs.max_line_bytes:", |c| c.logs.max_line_bytes = 2 << 20),
            ("logs.files:", |c| c.logs.files = vec!["/var/log/[".into()]),
            ("logs.multiline_start_pattern:", |c| {
                c.logs.multiline_start_pattern = "(".into()
            }),
            ("logs.rescan_interval_secs:", |c| {
                c.logs.rescan_interval_secs = 0.0
            }),
            ("recovery.dir:", |c| c.recovery.dir = "recovery.d".into()),
            ("recovery.default_timeout_secs:", |c| {
                c.recovery.default_timeout_secs = 900
            }),
            ("recovery.max_timeout_secs:", |c| {
                c.recovery.max_timeout_secs = 0
            }),
            ("recovery.max_output_bytes:", |c| {
                c.recovery.max_output_bytes = 0
            }),
        ] {
            let mut c = AgentConfig::default();
            adjust(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.starts_with(field), "{err}");
        }
        let mut c = AgentConfig::default();
        c.shipper.collector = "collector:4317".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("shipper.collector:")
        );
    }
}
