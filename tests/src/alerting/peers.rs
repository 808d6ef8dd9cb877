//! The real programs beside Vigil in the alerting tests and benchmark: the aiosmtpd SMTP
//! sink (`tests/python/smtp_sink.py`), Debian's Alertmanager 0.25, and Debian's
//! Prometheus 2.42 evaluating rules; and whether they are installed.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::workspace_root;
use crate::collector::wait_for;
use crate::{ChildGuard, free_port, http_get};

/// tests/run.sh sets this: there a missing peer (Alertmanager, aiosmtpd) fails a test
/// instead of skipping it.
pub const REQUIRE_PEERS: &str = "VIGIL_E2E_REQUIRE_PEERS";

/// Debian's Alertmanager 0.25.
pub const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
/// Debian's Prometheus 2.42.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Debian's python3, which has python3-aiosmtpd (a python3 earlier in PATH may not).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// Whether the peers a test needs are installed: `Ok(false)` (print why, skip) when
/// they are not, an error when [`REQUIRE_PEERS`] says they must be.
pub fn peers_present(what: &[(&str, bool)]) -> anyhow::Result<bool> {
    let missing: Vec<&str> = what
        .iter()
        .filter(|(_, present)| !present)
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        return Ok(true);
    }
    if std::env::var_os(REQUIRE_PEERS).is_some() {
        bail!(
            "{} missing although {REQUIRE_PEERS} is set: tests/run.sh should have installed it",
            missing.join(", ")
        );
    }
    println!(
        "SKIPPED: {} missing; tests/run.sh installs the Debian packages",
        missing.join(", ")
    );
    Ok(false)
}

/// Whether Debian's python3 can import aiosmtpd.
pub fn aiosmtpd_installed() -> bool {
    Command::new(SYSTEM_PYTHON)
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------------------------
// SMTP sink

/// `tests/python/smtp_sink.py` (aiosmtpd) on a free loopback port, storing each
/// accepted message as `msg-<n>.json` in its own directory.
pub struct SmtpSink {
    child: ChildGuard,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

/// The test CA and a server certificate for `localhost` and `127.0.0.1` (valid until
/// 2126): `agent/testdata/tls/{ca.pem, collector.pem, collector.key}`.
pub struct TestCertificate {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCertificate {
    pub fn get() -> Self {
        let dir = workspace_root().join("agent/testdata/tls");
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("collector.pem"),
            key: dir.join("collector.key"),
        }
    }
}

impl SmtpSink {
    /// Starts a sink named `name` under `dir` (messages in `dir/<name>`, its log in
    /// `dir/smtp-<name>.log`) with the script's extra options (`--tls-cert`, ...).
    pub fn start(dir: &Path, name: &str, options: &[&str]) -> anyhow::Result<Self> {
        let messages = dir.join(name);
        std::fs::create_dir_all(&messages)?;
        let script = workspace_root().join("tests/python/smtp_sink.py");
        let log = std::fs::File::create(dir.join(format!("smtp-{name}.log")))?;
        let mut child = ChildGuard(
            Command::new(SYSTEM_PYTHON)
                .arg(&script)
                .arg("--dir")
                .arg(&messages)
                .args(options)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {SYSTEM_PYTHON} {}", script.display()))?,
        );
        let stdout = child.0.stdout.take().context("the sink's stdout")?;
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .context("reading the sink's port")?;
        let port: u16 = first
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .with_context(|| {
                format!("smtp_sink.py said {first:?} instead of `PORT <n>` (see smtp-{name}.log)")
            })?;
        Ok(Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: messages,
        })
    }

    /// Every message stored so far, in the order they arrived.
    pub fn messages(&mut self) -> anyhow::Result<Vec<Value>> {
        if let Some(status) = self.child.0.try_wait()? {
            bail!(
                "the SMTP sink in {} exited with {status}",
                self.dir.display()
            );
        }
        let mut numbered = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let n = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("msg-"))
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(n) = n {
                numbered.push((n, path));
            }
        }
        numbered.sort();
        numbered
            .into_iter()
            .map(|(_, path)| {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------
// Prometheus and Alertmanager

/// Debian's Alertmanager on a free port, clustering off, its own storage.
pub struct Alertmanager {
    _child: ChildGuard,
    pub addr: SocketAddr,
}

impl Alertmanager {
    /// Starts it with `config` (alertmanager.yml text) in `dir`; waits for /-/ready.
    pub fn start(dir: &Path, config: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let addr = free_port()?;
        let config_path = dir.join("alertmanager.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join("alertmanager.log"))?;
        let child = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.path={}",
                dir.join("alertmanager-data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            // A single instance: no gossip port, no peer settling delay.
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {ALERTMANAGER}"))?;
        let am = Self {
            _child: ChildGuard(child),
            addr,
        };
        wait_for(Duration::from_secs(60), "alertmanager /-/ready", || {
            Ok(http_get(addr, "/-/ready", &[])
                .is_ok_and(|r| r.status == 200)
                .then_some(()))
        })?;
        Ok(am)
    }
}

/// Debian's Prometheus scraping `targets`, evaluating `rules` and sending alerts to
/// `alertmanager`.
pub struct PrometheusWithRules {
    _child: ChildGuard,
    pub addr: SocketAddr,
}

/// The timers of a [`PrometheusWithRules`]; `None` there keeps Prometheus's defaults
/// (scrape and evaluation every minute, 10 s scrape timeout).
#[derive(Debug, Clone)]
pub struct PrometheusTimers {
    pub scrape_interval: String,
    pub scrape_timeout: String,
    pub evaluation_interval: String,
}

impl PrometheusWithRules {
    pub fn start(
        dir: &Path,
        targets: &[SocketAddr],
        rules: &str,
        alertmanager: SocketAddr,
        timers: Option<&PrometheusTimers>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let addr = free_port()?;
        let rules_path = dir.join("rules.yml");
        std::fs::write(&rules_path, rules)?;
        let target_list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let global = match timers {
            Some(t) => format!(
                "global:\n  scrape_interval: {}\n  scrape_timeout: {}\n  evaluation_interval: {}\n",
                t.scrape_interval, t.scrape_timeout, t.evaluation_interval
            ),
            None => String::new(),
        };
        let config = format!(
            "{global}rule_files:\n  - {}\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{alertmanager}']\n\
             scrape_configs:\n  - job_name: vigil-agent\n    static_configs:\n      - targets: [{target_list}]\n",
            rules_path.display(),
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {PROMETHEUS}"))?;
        let prometheus = Self {
            _child: ChildGuard(child),
            addr,
        };
        wait_for(Duration::from_secs(60), "prometheus /-/ready", || {
            Ok(http_get(addr, "/-/ready", &[])
                .is_ok_and(|r| r.status == 200)
                .then_some(()))
        })?;
        Ok(prometheus)
    }
}
