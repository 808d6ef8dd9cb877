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
//! - [`index`]: the log index — tantivy, hourly partitions, a WAL for what is not
//!   committed yet, search and tail, counters derived from log queries.
//! - [`registry`]: the fleet registry (nodes, last seen, GPU inventory) and
//!   `vigil_node_up`.
//! - [`http`]: the HTTP server — `/healthz`, `/readyz`, `/metrics` (own metrics, and
//!   optionally the fleet's latest values) — around [`api`].
//! - [`auth`]: the API's read and admin tokens, one layer over every route, and the
//!   refusal to listen on a non-loopback address without a token.
//! - [`tls`]: certificates from files and the TLS listeners every server takes.
//! - [`alerting`]: rule evaluation (recording and alerting rules on their intervals,
//!   reloads), `/api/v1/rules`, `/api/v1/alerts` and the durable alert history.
//! - [`notify`]: notifications with Alertmanager's semantics.
//! - [`api`]: Prometheus's query API (`/api/v1/query`, `query_range`, `series`,
//!   `labels`, `label/<name>/values`, ...) evaluated by vigil-rules' engine.

pub mod alerting;
pub mod api;
pub mod auth;
pub mod config;
pub mod http;
pub mod index;
pub mod ingest;
pub mod notify;
pub mod recovery;
pub mod registry;
pub mod store;
pub mod timefmt;
pub mod tls;

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
    #[error(transparent)]
    ApiTokens(#[from] auth::ApiTokensError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Exposure(#[from] auth::ExposureError),
    #[error("reading a listener's address: {0}")]
    Listener(#[source] std::io::Error),
    #[error("loading the rule files:\n{0}")]
    Rules(#[from] alerting::LoadError),
    #[error(transparent)]
    History(#[from] alerting::HistoryError),
    #[error("{0}")]
    Notifier(String),
    #[error(transparent)]
    Recovery(#[from] recovery::journal::JournalError),
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
    #[error("opening the log index: {0}")]
    Logs(#[from] index::IndexError),
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
    run_with(config, listeners, shutdown, RunOptions::default()).await
}

/// What a caller may hand [`run_with`] besides the configuration.
#[derive(Default)]
pub struct RunOptions {
    /// Receives the evaluator's alerts instead of the notifier built from
    /// `alerting.alertmanager_config` (tests use a channel).
    pub alert_sink: Option<Arc<dyn notify::AlertSink>>,
    /// Notified to reload the rule files (`main.rs` does so on SIGHUP).
    pub reload_rules: Option<Arc<tokio::sync::Notify>>,
    /// Notified to re-read `alerting.alertmanager_config` (`main.rs`: SIGHUP too).
    pub reload_alertmanager: Option<Arc<tokio::sync::Notify>>,
}

/// [`run`], with an alert sink or a reload trigger from the caller.
pub async fn run_with(
    config: CollectorConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: RunOptions,
) -> Result<(), CollectorError> {
    config.validate()?;
    // Bad rule files stop the start, as they stop Prometheus's.
    let mut alerting_opts = alerting::AlertingOptions::from_config(&config);
    // Ingest tells the evaluator when new samples are stored (eager evaluation).
    let arrivals = config.alerting.eager_evaluation.then(|| {
        let (tx, rx) = watch::channel(0u64);
        alerting_opts.arrivals = Some(rx);
        Arc::new(tx)
    });
    let rule_groups = alerting::load_rules(&alerting_opts).await?;
    let history = alerting::open_history(&config).await?;
    // The Alertmanager configuration too: a bad file names every problem and stops the
    // start before anything listens.
    let alertmanager = match &options.alert_sink {
        None if !config.alerting.alertmanager_config.as_os_str().is_empty() => {
            let path = config.alerting.alertmanager_config.clone();
            let loaded = tokio::task::spawn_blocking(move || notify::config::load(&path)).await?;
            Some(loaded.map_err(|errs| {
                CollectorError::Notifier(
                    errs.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            })?)
        }
        _ => None,
    };
    let tokens = if config.token_file.as_os_str().is_empty() {
        tracing::warn!("no token file: OTLP senders are accepted without authentication");
        None
    } else {
        Some(Tokens::from_file(&config.token_file)?)
    };
    let api_auth = auth::ApiAuth::from_file(&config.api_token_file)?;
    if api_auth.is_open() {
        tracing::warn!("no API token file: the HTTP API is open to anyone who reaches it");
    }
    let addr = |l: &TcpListener| l.local_addr().map_err(CollectorError::Listener);
    auth::check_exposure(
        &[
            (addr(&listeners.http)?, "--listen", !api_auth.is_open()),
            (addr(&listeners.otlp_grpc)?, "--otlp-grpc", tokens.is_some()),
            (addr(&listeners.otlp_http)?, "--otlp-http", tokens.is_some()),
        ],
        config.insecure,
    )?;
    let server_tls = tls::ServerTls::from_config(&config.tls)?;
    if let Some(t) = &server_tls {
        tracing::info!(mutual = t.mutual(), "TLS on every listener");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    {
        let stop_tx = Arc::clone(&stop_tx);
        tokio::spawn(async move {
            shutdown.await;
            stop_tx.send_replace(true);
        });
    }

    // ---- Notifier wiring: the one place the alert sink is chosen. ----
    // A sink from the caller wins. Otherwise the notifier runs with the file's routes
    // and receivers, or without a file with a route to a receiver that has no
    // integrations: alerts are still grouped, silenced and recorded in the history, and
    // silences can be set before any receiver is configured. It starts before the HTTP
    // server so that `/api/v1/silences` is served from the first request.
    let mut notifier = None;
    let alert_sink: Option<Arc<dyn notify::AlertSink>> = match options.alert_sink {
        Some(sink) => Some(sink),
        None => {
            let am =
                alertmanager.unwrap_or_else(notify::config::AlertmanagerConfig::default_config);
            let mut notify_opts = notify::dispatch::NotifierOptions::new(&config.data_dir);
            notify_opts.external_url = alerting_opts.group.external_url.clone();
            notify_opts.history = Some(Arc::clone(&history) as Arc<dyn notify::HistorySink>);
            let n = notify::dispatch::Notifier::start(am, notify_opts, stopped(stop_rx.clone()))
                .map_err(|e| CollectorError::Notifier(format!("starting the notifier: {e}")))?;
            notifier = Some(Arc::clone(&n));
            Some(n as Arc<dyn notify::AlertSink>)
        }
    };
    let mut app_state = AppState::new(api::Queries::new(&config.query), config.fleet_metrics)
        .with_api_auth(api_auth);
    if let Some(n) = &notifier {
        app_state = app_state.with_notifier(Arc::clone(n));
        app_state.add_metric_source(Arc::clone(n) as Arc<dyn http::MetricSource>);
        if let Some(reload) = options.reload_alertmanager.clone() {
            tokio::spawn(reload_alertmanager(
                config.alerting.alertmanager_config.clone(),
                Arc::clone(n),
                reload,
                stopped(stop_rx.clone()),
            ));
        }
    }
    let state = Arc::new(app_state);
    let mut servers = tokio::task::JoinSet::new();
    {
        let (state, stop) = (Arc::clone(&state), stopped(stop_rx.clone()));
        let listener = tls::Incoming::new(listeners.http, server_tls.as_ref(), tls::Alpn::Http1);
        servers.spawn(async move { ("http", http::serve(listener, state, stop).await) });
    }

    let opts = config.store_options();
    let logs_opts = index::LogIndexOptions::from_config(&config);
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
        let store = Arc::new(store);
        let logs = index::LogIndex::open(logs_opts, Some(Arc::clone(&store)))?;
        Ok::<_, CollectorError>((store, registry, logs))
    })
    .await?;
    let (store, registry, logs) = match opened {
        Ok((store, registry, logs)) => (store, Arc::new(registry), Arc::new(logs)),
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
            arrivals,
            logs: Some(Arc::clone(&logs)),
            ..IngestOptions::default()
        },
    ));
    let external_url = alerting_opts.group.external_url.clone();
    let evaluator = alerting::Evaluator::new(
        alerting_opts,
        Arc::clone(&store),
        Arc::clone(&history),
        alert_sink.clone(),
        rule_groups,
    );
    let remediation = match recovery::Remediation::open(
        config.recovery.clone(),
        &config.data_dir,
        alert_sink,
        Some(Arc::clone(&registry) as Arc<dyn recovery::FleetSize>),
        external_url,
    ) {
        Ok(r) => r,
        Err(e) => {
            stop_tx.send_replace(true);
            while servers.join_next().await.is_some() {}
            return Err(CollectorError::Recovery(e));
        }
    };
    evaluator.set_recovery(Arc::clone(&remediation));
    state.set_recovery(Arc::clone(&remediation));
    state.add_metric_source(Arc::clone(&remediation) as Arc<dyn http::MetricSource>);
    state.add_metric_source(Arc::clone(&evaluator) as Arc<dyn http::MetricSource>);
    state.set_alerting(Arc::clone(&evaluator));
    state.add_metric_source(Arc::clone(&ingest) as Arc<dyn http::MetricSource>);
    state.add_metric_source(Arc::clone(&registry) as Arc<dyn http::MetricSource>);
    state.set_node_source(Arc::clone(&registry) as Arc<dyn http::NodeSource>);
    state.add_metric_source(Arc::clone(&logs) as Arc<dyn http::MetricSource>);
    state.set_logs(Arc::clone(&logs));
    state.set_store(Arc::clone(&store));
    {
        let (ingest, stop) = (Arc::clone(&ingest), stopped(stop_rx.clone()));
        let listener = tls::Incoming::new(listeners.otlp_grpc, server_tls.as_ref(), tls::Alpn::H2);
        let control = recovery::control::ControlServer::new(Arc::clone(&remediation));
        servers.spawn(async move {
            (
                "otlp grpc",
                ingest::grpc::serve_with_control(listener, ingest, Some(control), stop).await,
            )
        });
    }
    {
        let (ingest, stop) = (Arc::clone(&ingest), stopped(stop_rx.clone()));
        let listener =
            tls::Incoming::new(listeners.otlp_http, server_tls.as_ref(), tls::Alpn::Http1);
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

    let rules = tokio::spawn(Arc::clone(&evaluator).run(
        options.reload_rules.unwrap_or_default(),
        stopped(stop_rx.clone()),
    ));
    let housekeeping = tokio::spawn(Arc::clone(&remediation).run(stopped(stop_rx.clone())));
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
    logs.stop_tails();
    while let Some(done) = servers.join_next().await {
        let (server, result) = done?;
        if let Err(source) = result {
            tracing::error!(server, error = %source, "server failed while stopping");
            failure.get_or_insert(CollectorError::Server { server, source });
        }
    }
    rules.await?;
    if let Some(n) = &notifier {
        // Its state written a last time, after the evaluator's last alerts.
        n.shutdown().await;
    }
    maintenance.await?;
    node_up.await?;
    housekeeping.await?;
    let final_store = Arc::clone(&store);
    tokio::task::spawn_blocking(move || {
        // What the log index has queued is committed before the store's last sync.
        logs.close();
        history.close();
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

/// Re-reads the Alertmanager configuration file each time `reload` is notified, as
/// Alertmanager does on SIGHUP. A file with errors keeps the running configuration and
/// logs every problem; without a file there is nothing to re-read.
async fn reload_alertmanager(
    path: PathBuf,
    notifier: Arc<notify::dispatch::Notifier>,
    reload: Arc<tokio::sync::Notify>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = reload.notified() => {}
        }
        if path.as_os_str().is_empty() {
            tracing::info!("no Alertmanager configuration file to reload");
            continue;
        }
        let file = path.clone();
        let loaded = match tokio::task::spawn_blocking(move || notify::config::load(&file)).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(error = %e, "reloading the Alertmanager configuration failed");
                continue;
            }
        };
        match loaded {
            Ok(config) => match notifier.reload(config) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "Alertmanager configuration reloaded")
                }
                Err(e) => tracing::error!(file = %path.display(), error = %e,
                    "the new Alertmanager configuration was not applied; keeping the running one"),
            },
            Err(errors) => {
                for e in &errors {
                    tracing::error!(error = %e, "invalid Alertmanager configuration");
                }
                tracing::error!(file = %path.display(), problems = errors.len(),
                    "keeping the running Alertmanager configuration");
            }
        }
    }
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
