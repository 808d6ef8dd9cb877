//! vigil-agent: one process per GPU node that replaces node_exporter + dcgm-exporter.
//!
//! # Layout
//! - [`config`]: `agent.toml` and its defaults.
//! - [`sources`]: one file per part of the machine (cpu, meminfo, ..., gpu), each a
//!   [`sources::Source`]; the explicit registry is [`sources::host_sources`].
//! - [`collect`]: runs every source on its own blocking thread with a deadline and turns
//!   the results into a [`collect::Snapshot`], with node_exporter's scrape-health families.
//! - [`http`]: the Prometheus endpoint; a scrape encodes the latest snapshot (classic
//!   text or OpenMetrics by `Accept`, gzip when asked) and never triggers a collection.
//! - [`ship`]: the durable spool and the OTLP/gRPC shipper that drains it to the
//!   collector, when `[shipper] collector` is set.
//! - [`logs`]: tailed files and the kernel log as OTLP log records into the same spool,
//!   with NVRM Xid lines counted alongside NVML's Xid events.
//! - [`recovery`]: the recovery runner: the collector's actions run as executables of
//!   the recovery directory, at most once (journalled), their output shipped as logs.
//! - [`run`]: wires them together until the shutdown future resolves.

pub mod collect;
pub mod config;
pub mod control;
pub mod http;
pub mod logs;
pub mod recovery;
pub mod ship;
pub mod sources;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::AgentConfig;

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("serving /metrics: {0}")]
    Serve(#[source] std::io::Error),
    #[error("gpu: {0}")]
    Gpu(String),
    #[error("shipping: {0}")]
    Ship(#[from] ship::ShipError),
    #[error("recovery: {0}")]
    Recovery(#[from] recovery::RecoveryError),
}

/// Logs to stderr at `info`, or as `RUST_LOG` says; for the binaries that run the agent
/// (`vigil-agent`, `vigil up`), called once at start.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Runs the agent on `listener` until `shutdown` resolves: a collection every
/// `interval_secs`, the endpoint serving the latest one and, with a collector
/// configured, the shipper spooling and sending each one.
pub async fn run(
    config: AgentConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    config.validate()?;
    let node_name = config.effective_node_name();
    let mut sources = sources::host_sources(&config);
    let mut gpu_xids = None;
    if let Some((gpu, xids)) =
        sources::gpu::open_with_xids(&config, &node_name).map_err(AgentError::Gpu)?
    {
        sources.push(gpu);
        gpu_xids = Some(xids);
    }
    let collector = Arc::new(collect::Collector::new(
        sources,
        Duration::from_secs_f64(config.source_timeout_secs),
    ));
    let shipper = ship::Shipper::start(&config, &node_name)
        .await?
        .map(Arc::new);
    let logs = Arc::new(logs::Logs::start(
        &config,
        &node_name,
        shipper.as_ref().map(|s| s.log_output()),
        gpu_xids,
    ));
    // The recovery runner and the control channel, when shipping to a collector: with
    // no recovery directory every action is refused, and the collector hears why at
    // once rather than waiting for an agent that will never run it.
    let mut runner = None;
    let mut control = None;
    if let Some(shipper) = &shipper {
        let (rc, state_dir, node, out) = (
            config.recovery.clone(),
            config.state_dir.clone(),
            node_name.clone(),
            shipper.log_output(),
        );
        let r = tokio::task::spawn_blocking(move || {
            recovery::Recovery::open(&rc, &state_dir, &node, Some(out))
        })
        .await
        .map_err(|e| AgentError::Ship(ship::ShipError::Task(e.to_string())))??;
        r.set_interval_secs(config.interval_secs);
        let r = Arc::new(r);
        control = control::Control::start(&config, &node_name, Arc::clone(&r))?;
        runner = Some(r);
    }
    let first = collect(&collector, shipper.as_deref(), &logs, runner.as_deref()).await;
    let (snapshot_tx, snapshot_rx) = watch::channel(first);

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let interval = Duration::from_secs_f64(config.interval_secs);
    let loop_collector = Arc::clone(&collector);
    let loop_shipper = shipper.clone();
    let loop_logs = Arc::clone(&logs);
    let loop_runner = runner.clone();
    let collect_task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let snapshot =
                        collect(&loop_collector, loop_shipper.as_deref(), &loop_logs, loop_runner.as_deref()).await;
                    snapshot_tx.send_replace(snapshot);
                }
                _ = stop_rx.changed() => break,
            }
        }
    });

    let local = listener.local_addr().map_err(AgentError::Serve)?;
    tracing::info!(address = %local, node = %node_name, "serving /metrics");
    let served = http::serve(listener, snapshot_rx, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = collect_task.await;
    if let Some(control) = control {
        control.shutdown().await;
    }
    // The runner's worker finishes the action it runs (its output reaches the spool)
    // before the spool's writer stops.
    drop(runner);
    // The log readers spool what they have read before the spool's writer stops.
    if let Some(logs) = Arc::into_inner(logs) {
        logs.shutdown().await;
    }
    if let Some(shipper) = shipper.and_then(Arc::into_inner) {
        shipper.shutdown().await;
    }
    served.map_err(AgentError::Serve)
}

/// One collection, with the log readers' and the shipper's families added, handed to
/// the shipper.
async fn collect(
    collector: &collect::Collector,
    shipper: Option<&ship::Shipper>,
    logs: &logs::Logs,
    runner: Option<&recovery::Recovery>,
) -> Arc<collect::Snapshot> {
    let snapshot = collector.collect_once().await;
    let mut extra = logs.families();
    if let Some(runner) = runner {
        extra.extend(runner.families());
    }
    let Some(shipper) = shipper else {
        return Arc::new(snapshot.extended(extra));
    };
    extra.extend(shipper.families());
    let snapshot = Arc::new(snapshot.extended(extra));
    shipper.offer(Arc::clone(&snapshot));
    snapshot
}
