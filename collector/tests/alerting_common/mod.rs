//! Shared by the `alerting_*` tests: a real collector through `run_with()` on loopback
//! listeners over a data directory the test owns (so a test can restart on it), rule
//! files, OTLP/JSON samples, and an alert sink that keeps what it receives.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use vigil_collector::notify::{AlertSink, PostableAlert};
use vigil_collector::{CollectorConfig, CollectorError, Listeners, RunOptions};

use crate::api_common::request;

pub const EXTERNAL_URL: &str = "http://vigil.test:9436";

/// A config for tests: 1 s evaluation, no `for` grace period, a fixed external URL.
pub fn config(data_dir: &Path, rules: &[&Path]) -> CollectorConfig {
    let mut c = CollectorConfig {
        data_dir: data_dir.to_path_buf(),
        ..CollectorConfig::default()
    };
    c.alerting.rule_files = rules.iter().map(|p| p.to_path_buf()).collect();
    c.alerting.evaluation_interval_secs = 1.0;
    c.alerting.for_grace_period_secs = 0.0;
    c.alerting.external_url = EXTERNAL_URL.into();
    c
}

pub struct Running {
    pub addr: SocketAddr,
    pub otlp_http: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), CollectorError>>>,
}

/// Starts the collector and waits until `/readyz` answers 200.
pub async fn start(config: CollectorConfig, options: RunOptions) -> Result<Running> {
    let bind = || TcpListener::bind("127.0.0.1:0");
    let listeners = Listeners {
        http: bind().await?,
        otlp_grpc: bind().await?,
        otlp_http: bind().await?,
    };
    let addr = listeners.http.local_addr()?;
    let otlp_http = listeners.otlp_http.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(vigil_collector::run_with(
        config,
        listeners,
        async move {
            let _ = rx.await;
        },
        options,
    ));
    let c = Running {
        addr,
        otlp_http,
        stop: Some(tx),
        task: Some(task),
    };
    for _ in 0..400 {
        if c.task.as_ref().is_some_and(|t| t.is_finished()) {
            return c
                .stop()
                .await
                .and_then(|()| bail!("the collector stopped at start"));
        }
        if let Ok(r) = request(addr, "GET", "/readyz", None).await
            && r.status == 200
        {
            return Ok(c);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("collector did not become ready")
}

/// Starts with a sink and a reload trigger of the test's own.
pub async fn start_with(
    config: CollectorConfig,
    sink: Option<Arc<dyn AlertSink>>,
    reload: Option<Arc<Notify>>,
) -> Result<Running> {
    start(
        config,
        RunOptions {
            alert_sink: sink,
            reload_rules: reload,
            ..RunOptions::default()
        },
    )
    .await
}

impl Running {
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let r = request(self.addr, "GET", path, None).await?;
        if r.status != 200 {
            bail!("GET {path}: {} {}", r.status, r.body);
        }
        r.json()
    }

    pub async fn metrics(&self) -> Result<String> {
        Ok(request(self.addr, "GET", "/metrics", None).await?.body)
    }

    /// A gauge sample from node `node` (OTLP resource `host.name`), timestamped now.
    pub async fn push_gauge(&self, name: &str, node: &str, value: f64) -> Result<()> {
        let t_ns = now_ms() * 1_000_000;
        let body = json!({"resourceMetrics": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "vigil-agent"}},
                {"key": "host.name", "value": {"stringValue": node}}
            ]},
            "scopeMetrics": [{"metrics": [{
                "name": name,
                "gauge": {"dataPoints": [{
                    "asDouble": value,
                    "timeUnixNano": t_ns.to_string(),
                    "attributes": [{"key": "gpu", "value": {"stringValue": "0"}}]
                }]}
            }]}]
        }]});
        let r = request(
            self.otlp_http,
            "POST",
            "/v1/metrics",
            Some(("application/json", &body.to_string())),
        )
        .await?;
        if r.status != 200 {
            bail!("OTLP push: {} {}", r.status, r.body);
        }
        Ok(())
    }

    /// The alerts of `/api/v1/alerts`.
    pub async fn alerts(&self) -> Result<Vec<Value>> {
        let v = self.get_json("/api/v1/alerts").await?;
        Ok(v["data"]["alerts"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until an alert named `name` is in `state` ("pending", "firing") or, for
    /// "inactive", gone from `/api/v1/alerts`; returns it (Null for inactive).
    pub async fn wait_alert(&self, name: &str, state: &str) -> Result<Value> {
        let started = Instant::now();
        loop {
            let alerts = self.alerts().await?;
            let found = alerts
                .iter()
                .find(|a| a["labels"]["alertname"] == name)
                .cloned();
            match (&found, state) {
                (None, "inactive") => return Ok(Value::Null),
                (Some(a), s) if a["state"] == s => return Ok(a.clone()),
                _ => {}
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("alert {name} not {state} after 20 s: {alerts:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `check` holds for the JSON at `path`.
    pub async fn wait_json(&self, path: &str, check: impl Fn(&Value) -> bool) -> Result<Value> {
        let started = Instant::now();
        loop {
            let v = self.get_json(path).await?;
            if check(&v) {
                return Ok(v);
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("{path} did not get there in 20 s: {v}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `/metrics` has the line `line`.
    pub async fn wait_metric(&self, line: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            let m = self.metrics().await?;
            if m.lines().any(|l| l == line) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("/metrics has no line {line:?} after 20 s:\n{m}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().context("already stopped")?;
        task.await??;
        Ok(())
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Writes `text` to `path` through a rename, as editors and config management do.
pub fn write_rules(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// An [`AlertSink`] that keeps every batch it receives.
#[derive(Default)]
pub struct Recorder {
    pub batches: Mutex<Vec<(i64, Vec<PostableAlert>)>>,
}

impl AlertSink for Recorder {
    fn send(&self, alerts: Vec<PostableAlert>) {
        self.batches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((now_ms(), alerts));
    }
}

impl Recorder {
    pub fn all(&self) -> Vec<(i64, PostableAlert)> {
        self.batches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .flat_map(|(t, b)| b.iter().map(|a| (*t, a.clone())))
            .collect()
    }
}
