//! `vigil-collector`: flags → config, tracing, listeners, then [`vigil_collector::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use vigil_collector::config::{CollectorConfig, DEFAULT_CONFIG_TOML};
use vigil_collector::{Listeners, RunOptions, run_with};

/// Vigil's collector: OTLP ingest, metric store and Prometheus query API.
#[derive(Debug, Parser)]
#[command(name = "vigil-collector", version)]
struct Flags {
    /// Configuration file (TOML); flags override it.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print the whole commented default collector.toml and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Directory of the metric store [default: /var/lib/vigil-collector].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the HTTP API and /metrics [default: 0.0.0.0:9436].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Address of the OTLP gRPC receiver [default: 0.0.0.0:4317].
    #[arg(long, value_name = "ADDR")]
    otlp_grpc: Option<SocketAddr>,
    /// Address of the OTLP HTTP receiver [default: 0.0.0.0:4318].
    #[arg(long, value_name = "ADDR")]
    otlp_http: Option<SocketAddr>,
    /// File of bearer tokens OTLP senders must present, one per line (`TOKEN` for the
    /// fleet, `node=NAME TOKEN` for one node).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// File of HTTP API tokens, one `read TOKEN` or `admin TOKEN` per line.
    #[arg(long, value_name = "PATH")]
    api_token_file: Option<PathBuf>,
    /// Listen on non-loopback addresses even without token files.
    #[arg(long)]
    insecure: bool,
    /// PEM certificate chain: TLS on every listener.
    #[arg(long, value_name = "PATH")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, value_name = "PATH")]
    tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: peers must present a certificate signed by one (mTLS).
    #[arg(long, value_name = "PATH")]
    tls_client_ca_file: Option<PathBuf>,
    /// How long samples are kept, in Prometheus's notation (24h, 7d) [default: 24h].
    #[arg(long, value_name = "DURATION", value_parser = parse_retention_hours)]
    retention: Option<f64>,
    /// Also expose the latest value of every fleet series on /metrics.
    #[arg(long)]
    fleet_metrics: bool,
    /// Rule file or folder of rule files (*.yml, *.yaml); repeatable. Reloaded on
    /// change and on SIGHUP [default: the built-in GPU and node packs].
    #[arg(long = "rules", value_name = "PATH")]
    rules: Vec<PathBuf>,
    /// Alertmanager configuration file: routes, receivers, inhibit rules.
    #[arg(long, value_name = "PATH")]
    alertmanager_config: Option<PathBuf>,
    /// Base of the alerts' generator URLs [default: http://<host name>:<listen port>].
    #[arg(long, value_name = "URL")]
    external_url: Option<String>,
}

fn parse_retention_hours(s: &str) -> Result<f64, String> {
    let ms = vigil_rules::duration::parse_duration(s)?;
    if ms <= 0 {
        return Err("retention must be positive".into());
    }
    Ok(ms as f64 / 3_600_000.0)
}

impl Flags {
    fn into_config(self) -> anyhow::Result<CollectorConfig> {
        let mut config = match &self.config {
            Some(path) => CollectorConfig::from_file(path)?,
            None => CollectorConfig::default(),
        };
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.otlp_grpc {
            config.otlp_grpc = v;
        }
        if let Some(v) = self.otlp_http {
            config.otlp_http = v;
        }
        if let Some(v) = self.token_file {
            config.token_file = v;
        }
        if let Some(v) = self.api_token_file {
            config.api_token_file = v;
        }
        if self.insecure {
            config.insecure = true;
        }
        if let Some(v) = self.tls_cert_file {
            config.tls.cert_file = v;
        }
        if let Some(v) = self.tls_key_file {
            config.tls.key_file = v;
        }
        if let Some(v) = self.tls_client_ca_file {
            config.tls.client_ca_file = v;
        }
        if let Some(v) = self.retention {
            config.retention_hours = v;
        }
        if self.fleet_metrics {
            config.fleet_metrics = true;
        }
        if !self.rules.is_empty() {
            config.alerting.rule_files = self.rules;
        }
        if let Some(v) = self.alertmanager_config {
            config.alerting.alertmanager_config = v;
        }
        if let Some(v) = self.external_url {
            config.alerting.external_url = v;
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    if flags.print_default_config {
        print!("{DEFAULT_CONFIG_TOML}");
        return ExitCode::SUCCESS;
    }
    init_logging();
    match flags.into_config().and_then(serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

fn serve(config: CollectorConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let bind = |addr: SocketAddr, what: &'static str| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} ({what})"))
        };
        let listeners = Listeners {
            http: bind(config.listen, "--listen").await?,
            otlp_grpc: bind(config.otlp_grpc, "--otlp-grpc").await?,
            otlp_http: bind(config.otlp_http, "--otlp-http").await?,
        };
        let reload_rules = Arc::new(tokio::sync::Notify::new());
        let reload_alertmanager = Arc::new(tokio::sync::Notify::new());
        reload_on_sighup([Arc::clone(&reload_rules), Arc::clone(&reload_alertmanager)])?;
        let options = RunOptions {
            reload_rules: Some(reload_rules),
            reload_alertmanager: Some(reload_alertmanager),
            ..RunOptions::default()
        };
        run_with(config, listeners, shutdown_signal(), options).await?;
        Ok(())
    })
}

/// SIGHUP reloads the rule files and the Alertmanager configuration, as it makes
/// Prometheus and Alertmanager reload theirs.
fn reload_on_sighup(reload: [Arc<tokio::sync::Notify>; 2]) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("watching SIGHUP")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!(
                    "SIGHUP: reloading the rule files and the Alertmanager configuration"
                );
                for r in &reload {
                    r.notify_one();
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = reload;
    Ok(())
}

/// SIGTERM or SIGINT: `run` then drains its servers and syncs the store.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
