//! `vigil-agent`: flags → config, tracing, then [`vigil_agent::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use vigil_agent::config::{AgentConfig, DEFAULT_CONFIG_TOML};

/// Vigil's node agent: host and GPU metrics for Prometheus.
#[derive(Debug, Parser)]
#[command(name = "vigil-agent", version)]
struct Flags {
    /// Configuration file (TOML); flags override it.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print the whole commented default agent.toml and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Address of the Prometheus endpoint [default: 0.0.0.0:9435].
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Name this node reports as [default: the host name].
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// Directory for the agent's state.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Ship to this collector over OTLP/gRPC (http://host:4317, https:// for TLS);
    /// absent: exporter only.
    #[arg(long, value_name = "URL")]
    collector: Option<String>,
    /// File holding the bearer token for the collector.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Seconds between collections [default: 5].
    #[arg(long, value_name = "SECS")]
    interval: Option<f64>,
    /// Where procfs is mounted [default: /proc].
    #[arg(long, value_name = "DIR")]
    procfs: Option<PathBuf>,
    /// Where sysfs is mounted [default: /sys].
    #[arg(long, value_name = "DIR")]
    sysfs: Option<PathBuf>,
    /// Where the root file system is mounted [default: /].
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Path of libnvidia-ml [default: the loader's libnvidia-ml.so.1].
    #[arg(long, value_name = "PATH")]
    nvml_lib: Option<PathBuf>,
    /// Do not collect GPU metrics.
    #[arg(long)]
    no_gpu: bool,
    /// How many GPUs this node should have (exports vigil_gpu_expected_count).
    #[arg(long, value_name = "N")]
    expected_gpus: Option<u32>,
    /// Use the simulated NVML library with N GPUs instead of the driver.
    #[arg(long, value_name = "N")]
    simulate_gpus: Option<u32>,
    /// TOML file of faults for the simulated GPUs, re-read while running.
    #[arg(long, value_name = "FILE")]
    simulate_faults: Option<PathBuf>,
    /// Tail the files matching this glob (repeatable; replaces logs.files).
    #[arg(long = "log-file", value_name = "GLOB")]
    log_files: Vec<String>,
    /// Kernel log to read: /dev/kmsg, or a file or FIFO of kmsg records; "" turns it
    /// off [default: /dev/kmsg].
    #[arg(long, value_name = "PATH")]
    kmsg: Option<String>,
    /// Directory of the recovery scripts the collector may ask this node to run; absent:
    /// recovery off.
    #[arg(long, value_name = "DIR")]
    recovery_dir: Option<PathBuf>,
}

impl Flags {
    fn into_config(self) -> anyhow::Result<AgentConfig> {
        let mut config = match &self.config {
            Some(path) => AgentConfig::from_file(path)?,
            None => AgentConfig::default(),
        };
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.node_name {
            config.node_name = v;
        }
        if let Some(v) = self.state_dir {
            config.state_dir = v;
        }
        if let Some(v) = self.collector {
            config.shipper.collector = v;
        }
        if let Some(v) = self.token_file {
            config.shipper.token_file = v;
        }
        if let Some(v) = self.interval {
            config.interval_secs = v;
            // A source may not take longer than the cycle it belongs to.
            config.source_timeout_secs = config.source_timeout_secs.min(v);
        }
        if let Some(v) = self.procfs {
            config.paths.procfs = v;
        }
        if let Some(v) = self.sysfs {
            config.paths.sysfs = v;
        }
        if let Some(v) = self.rootfs {
            config.paths.rootfs = v;
        }
        if let Some(v) = self.nvml_lib {
            config.gpu.nvml_lib = v;
        }
        if self.no_gpu {
            config.gpu.enabled = false;
        }
        if let Some(v) = self.expected_gpus {
            config.gpu.expected_count = v;
        }
        if let Some(v) = self.simulate_gpus {
            config.gpu.simulate_gpus = v;
        }
        if let Some(v) = self.simulate_faults {
            config.gpu.simulate_faults = v;
        }
        if !self.log_files.is_empty() {
            config.logs.files = self.log_files;
        }
        if let Some(v) = self.kmsg {
            config.logs.kmsg = PathBuf::from(v);
        }
        if let Some(v) = self.recovery_dir {
            config.recovery.dir = v;
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
    vigil_agent::init_logging();
    match flags.into_config().and_then(serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: AgentConfig) -> anyhow::Result<()> {
    limit_malloc_arenas();
    // One thread serves scrapes; sources run on the blocking pool, bounded so that hung
    // sources cannot pile up threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        vigil_agent::run(config, listener, shutdown_signal()).await?;
        Ok(())
    })
}

/// glibc gives each thread that allocates its own arena; the agent's few threads need
/// no more than two, and every extra arena is resident memory on every GPU node.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

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
