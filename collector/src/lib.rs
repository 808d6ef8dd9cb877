//! vigil-collector: receives what the agents send over OTLP, keeps it in a metric store,
//! and answers Prometheus's HTTP query API over it (later also rules and notifications).
//!
//! [`run`] takes its listeners and a shutdown future, so tests start the real collector
//! on `127.0.0.1:0`; `main.rs` only parses flags and binds.
//!
//! # Layout
//! - [`config`]: `collector.toml` and its defaults.
//! - [`store`]: the metric store — in-memory head of Gorilla-compressed chunks, label
//!   index, write-ahead log with checkpoints, retention — and its implementation of
//!   the PromQL engine's `Storage` trait.
//! - [`ingest`]: the OTLP receivers (gRPC and HTTP), their authentication and limits,
//!   and the path from a decoded request into the store.
//! - [`registry`]: the fleet registry (nodes, last seen, GPU inventory) and
//!   `vigil_node_up`.
//! - [`http`]: the HTTP server — `/healthz`, `/readyz`, `/metrics` (own metrics, and
//!   optionally the fleet's latest values) — around [`api`].
//! - [`api`]: Prometheus's query API (`/api/v1/query`, `query_range`, `series`,
//!   `labels`, `label/<name>/values`, ...) evaluated by vigil-rules' engine.

pub mod api;
pub mod config;
pub mod http;
pub mod ingest;
pub mod notify;
pub mod registry;
pub mod store;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{CollectorConfig, ConfigError};
pub use store::{Store, StoreError, StoreOptions};

use http::AppState;
use ingest::{Ingest, IngestOptions, Tokens};
use registry::Registry;

/// How often retention runs (and, through it, a checkpoint once the WAL has grown).
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);

/// How often `vigil_node_up` is written: often enough that a rule with `for: 1m` on a
/// silent node sees a dozen evaluations' worth of samples.
const NODE_UP_INTERVAL: Duration = Duration::from_secs(5);

/// The sockets the collector serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// Health, own metrics and the query API.
    pub http: TcpListener,
    pub otlp_grpc: TcpListener,
    pub otlp_http: TcpListener,
}

/// Why the collector stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tokens(#[from] ingest::TokensError),
    #[error("opening the fleet registry: {0}")]
    Registry(#[from] registry::RegistryError),
    #[error("opening the store in {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("{server} server")]
    Server {
        server: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("syncing the store at shutdown: {0}")]
    FinalSync(#[source] StoreError),
    #[error("a collector task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// A future that resolves once `rx` has seen `true`.
async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens after shutdown.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Runs the collector until `shutdown` resolves (or a server fails): HTTP first, so
/// `/healthz` answers while the store replays its WAL; then the store, ingest and
/// maintenance. On the way out every server drains, and the store is synced.
pub async fn run(
    config: CollectorConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CollectorError> {
    config.validate()?;
    let tokens = if config.token_file.as_os_str().is_empty() {
        tracing::warn!("no token file: OTLP senders are accepted without authentication");
        None
    } else {
        Some(Tokens::from_file(&config.token_file)?)
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    {
        let stop_tx = Arc::clone(&stop_tx);
        tokio::spawn(async move {
            shutdown.await;
            stop_tx.send_replace(true);
        });
    }

    let state = Arc::new(AppState::new(
        api::Queries::new(&config.query),
        config.fleet_metrics,
    ));
    let mut servers = tokio::task::JoinSet::new();
    {
        let (state, stop) = (Arc::clone(&state), stopped(stop_rx.clone()));
        let listener = listeners.http;
        servers.spawn(async move { ("http", http::serve(listener, state, stop).await) });
    }

    let opts = config.store_options();
    let data_dir = opts.data_dir.clone();
    tracing::info!(data_dir = %data_dir.display(), "opening the store");
    let opened = tokio::task::spawn_blocking(move || {
        let store = Store::open(opts).map_err(|source| CollectorError::Store {
            path: data_dir.clone(),
            source,
        })?;
        store
            .apply_retention(now_ms())
            .map_err(|source| CollectorError::Store {
                path: data_dir.clone(),
                source,
            })?;
        let registry = Registry::open(&data_dir)?;
        Ok::<_, CollectorError>((store, registry))
    })
    .await?;
    let (store, registry) = match opened {
        Ok((store, registry)) => (Arc::new(store), Arc::new(registry)),
        Err(e) => {
            stop_tx.send_replace(true);
            while servers.join_next().await.is_some() {}
            return Err(e);
        }
    };
    let ingest = Arc::new(Ingest::new(
        Arc::clone(&store),
        Arc::clone(&registry),
        IngestOptions {
            tokens,
            max_request_bytes: config.max_request_bytes,
            label_limits: config.label_limits(),
            ..IngestOptions::default()
        },
    ));
    state.add_metric_source(Arc::clone(&ingest) as Arc<dyn http::MetricSource>);
    state.add_metric_source(Arc::clone(&registry) as Arc<dyn http::MetricSource>);
    state.set_node_source(Arc::clone(&registry) as Arc<dyn http::NodeSource>);
    state.set_store(Arc::clone(&store));
    {
        let (ingest, stop) = (Arc::clone(&ingest), stopped(stop_rx.clone()));
        let listener = listeners.otlp_grpc;
        servers.spawn(async move {
            (
                "otlp grpc",
                ingest::grpc::serve(listener, ingest, stop).await,
            )
        });
    }
    {
        let (ingest, stop) = (Arc::clone(&ingest), stopped(stop_rx.clone()));
        let listener = listeners.otlp_http;
        servers.spawn(async move {
            (
                "otlp http",
                ingest::http::serve(listener, ingest, stop).await,
            )
        });
    }
    tracing::info!(
        listen = %config.listen,
        otlp_grpc = %config.otlp_grpc,
        otlp_http = %config.otlp_http,
        "collector ready"
    );

    let maintenance = tokio::spawn(maintain(Arc::clone(&store), stopped(stop_rx.clone())));
    let node_up = tokio::spawn(write_node_up(
        Arc::clone(&registry),
        Arc::clone(&store),
        stopped(stop_rx.clone()),
    ));

    // Wait for the shutdown signal, or for a server to stop on its own (an error).
    let mut failure = None;
    let mut stop_rx_main = stop_rx.clone();
    tokio::select! {
        biased;
        _ = stop_rx_main.wait_for(|stop| *stop) => {}
        Some(done) = servers.join_next() => {
            let (server, result) = done?;
            // A server that returns Ok after the signal simply drained first.
            let stopping = *stop_rx.borrow();
            failure = match result {
                Err(source) => Some(CollectorError::Server { server, source }),
                Ok(()) if stopping => None,
                Ok(()) => Some(CollectorError::Server {
                    server,
                    source: std::io::Error::other("stopped unexpectedly"),
                }),
            };
        }
    }
    stop_tx.send_replace(true);
    while let Some(done) = servers.join_next().await {
        let (server, result) = done?;
        if let Err(source) = result {
            tracing::error!(server, error = %source, "server failed while stopping");
            failure.get_or_insert(CollectorError::Server { server, source });
        }
    }
    maintenance.await?;
    node_up.await?;
    let final_store = Arc::clone(&store);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = registry.save() {
            tracing::warn!(error = %e, "saving the fleet registry at shutdown failed");
        }
        final_store.sync()
    })
    .await?
    .map_err(CollectorError::FinalSync)?;
    tracing::info!("collector stopped; store synced");
    failure.map_or(Ok(()), Err)
}

/// Retention every [`MAINTENANCE_INTERVAL`] on a blocking thread; the store writes a
/// checkpoint and frees WAL segments from within retention once the log has grown.
async fn maintain(store: Arc<Store>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; retention just ran at open
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let store = Arc::clone(&store);
        match tokio::task::spawn_blocking(move || store.apply_retention(now_ms())).await {
            Ok(Ok(report)) => {
                if let Some(c) = report.checkpoint {
                    tracing::info!(checkpoint = ?c, "checkpoint written");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
            Err(e) => tracing::error!(error = %e, "retention task failed"),
        }
    }
}

/// `vigil_node_up` for every known node every [`NODE_UP_INTERVAL`], so a rule can fire
/// on a node that stopped sending.
async fn write_node_up(registry: Arc<Registry>, store: Arc<Store>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(NODE_UP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let (registry, store) = (Arc::clone(&registry), Arc::clone(&store));
        match tokio::task::spawn_blocking(move || registry.write_node_up(&store, now_ms())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "writing vigil_node_up failed"),
            Err(e) => tracing::error!(error = %e, "node-up task failed"),
        }
    }
}
