//! `vigil up`, the README's first command: Vigil on this machine in one process — an
//! embedded collector (the default GPU and node rule packs, data in
//! `<data-dir>/collector`), an agent for this machine shipping to it (the real NVML when
//! present), and the dashboard on top. `--demo` adds simulated GPU nodes and a fault
//! injector, so alerts fire, notifications are recorded and alerts resolve on a machine
//! without GPUs. When stdout is not a terminal (or with `--headless`) there is no
//! dashboard: it prints where everything listens and runs until Ctrl-C or SIGTERM.
//!
//! Everything listens on loopback by default, where the collector needs no tokens.
//! Stopping goes in order — agents, then the collector (its WAL synced), then the
//! demo's receiver — and ends with exit status 0. Nothing runs as a child process.
//!
//! # Layout
//! - this file: the flags, logging, headless output, binding with errors that name the
//!   flag.
//! - [`stack`]: starting the parts, watching them and stopping them in order.
//! - [`demo`]: the simulated nodes and the demo's Alertmanager configuration.
//! - [`faults`]: the demo's fault injector.
//! - [`webhook`]: the demo's notification receiver.

mod demo;
mod faults;
mod stack;
mod webhook;

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use tokio::net::TcpListener;

use crate::client::CollectorArgs;
use stack::Stack;

/// `vigil up`'s flags.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Add simulated GPU nodes (8 GPUs each) and inject a fault now and then, so alerts
    /// fire, notify and resolve without a GPU.
    #[arg(long)]
    pub demo: bool,
    /// How many simulated nodes `--demo` adds.
    #[arg(long, default_value_t = 3, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub demo_nodes: u32,
    /// Where Vigil keeps its data: `collector/`, `agent/` and `demo/` in it.
    #[arg(long, default_value = "vigil-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The collector's HTTP API (what the dashboard and `vigil alerts` talk to).
    #[arg(long, default_value = "127.0.0.1:9436", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The collector's OTLP gRPC receiver (what agents ship to).
    #[arg(long, default_value = "127.0.0.1:4317", value_name = "ADDR")]
    pub otlp_grpc: SocketAddr,
    /// The collector's OTLP HTTP receiver.
    #[arg(long, default_value = "127.0.0.1:4318", value_name = "ADDR")]
    pub otlp_http: SocketAddr,
    /// The Prometheus endpoint of this machine's agent.
    #[arg(long, default_value = "127.0.0.1:9435", value_name = "ADDR")]
    pub agent_listen: SocketAddr,
    /// Alertmanager configuration (routes and receivers) for the collector [default:
    /// none; with --demo, a receiver that prints each notification].
    #[arg(long, value_name = "PATH")]
    pub alertmanager_config: Option<PathBuf>,
    /// No dashboard: print where everything listens and run until Ctrl-C (also what
    /// happens when stdout is not a terminal).
    #[arg(long)]
    pub headless: bool,
}

/// Runs `vigil up` until the dashboard is quit, Ctrl-C or SIGTERM.
pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let dashboard = !args.headless && std::io::stdout().is_terminal();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    // The dashboard owns the terminal: the log goes to a file then.
    let log_file = args.data_dir.join("vigil-up.log");
    init_logging(dashboard.then_some(log_file.as_path()))?;
    let say = Say { stdout: !dashboard };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let mut stack = Stack::start(&args, say).await?;
        // Headless on stdout; into the log under the dashboard.
        for (what, at) in &stack.listening {
            say.line(format_args!("{what}: {at}"));
        }
        let outcome = if dashboard {
            let _ = writeln!(
                std::io::stdout(),
                "vigil up: collector API {}; log in {}",
                stack.api_url,
                log_file.display()
            );
            let conn = CollectorArgs {
                collector: stack.api_url.clone(),
                token_file: None,
                json: false,
            };
            stack.supervise(crate::dash::run(conn)).await
        } else {
            say.line(format_args!("Ctrl-C stops everything"));
            stack.supervise(std::future::pending()).await
        };
        let stopped = stack.stop().await;
        outcome.and(stopped)?;
        say.line(format_args!("stopped"));
        Ok(ExitCode::SUCCESS)
    })
}

fn init_logging(file: Option<&Path>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A subscriber set before (a test calling in twice) keeps logging where it did.
    let _ = match file {
        None => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .try_init()
        }
    };
    Ok(())
}

/// Says what `vigil up` does: on stdout when headless, into the log when the dashboard
/// owns the terminal.
#[derive(Debug, Clone, Copy)]
struct Say {
    stdout: bool,
}

impl Say {
    fn line(&self, text: std::fmt::Arguments<'_>) {
        if self.stdout {
            // A closed stdout (`vigil up | head -3`) must not stop Vigil.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "vigil up: {text}");
            let _ = out.flush();
        } else {
            tracing::info!("{text}");
        }
    }

    #[cfg(test)]
    fn quiet() -> Self {
        Self { stdout: false }
    }
}

/// Binds `addr`; the error names the address and the flag that sets it.
async fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow!(
                "{addr} is already in use (is another `vigil up` or a collector running?): \
                 choose another address with {flag} ADDR"
            )
        } else {
            anyhow!(e).context(format!("listening on {addr} ({flag})"))
        }
    })
}

fn local(listener: &TcpListener) -> anyhow::Result<SocketAddr> {
    listener.local_addr().context("reading a bound address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_alertmanager_config_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alertmanager.yml");
        std::fs::write(
            &path,
            demo::alertmanager_config(SocketAddr::from(([127, 0, 0, 1], 4321))),
        )
        .unwrap();
        let config =
            vigil_collector::notify::config::load(&path).unwrap_or_else(|errs| panic!("{errs:?}"));
        let receiver = config.receiver("demo").expect("demo receiver");
        assert_eq!(receiver.webhook_configs.len(), 1);
        assert_eq!(config.route.group_wait_ms, 5_000);
    }

    #[tokio::test]
    async fn a_busy_port_names_the_address_and_the_flag() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr, "--otlp-grpc").await.unwrap_err().to_string();
        assert!(err.contains(&addr.to_string()), "{err}");
        assert!(err.contains("--otlp-grpc"), "{err}");
    }
}
