//! `vigil up`, the README's first command. Until the collector and the dashboard
//! are embedded it runs this machine's agent in the foreground and says where its
//! /metrics is; `--demo` gives that agent eight simulated GPUs so a newcomer without
//! GPUs sees them.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

/// `vigil up`'s flags.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Add eight simulated GPUs (no GPU needed).
    #[arg(long)]
    pub demo: bool,
    /// Where the agent's Prometheus endpoint listens.
    #[arg(long, default_value = "127.0.0.1:9435")]
    pub listen: SocketAddr,
    /// Where Vigil keeps its data.
    #[arg(long, default_value = "vigil-data")]
    pub data_dir: PathBuf,
}

pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let UpArgs {
        demo,
        listen,
        data_dir,
    } = args;
    let mut config = vigil_agent::AgentConfig {
        listen,
        state_dir: data_dir.join("agent"),
        ..Default::default()
    };
    if demo {
        config.gpu.simulate_gpus = 8;
        config.gpu.expected_count = 8;
        let faults = data_dir.join("demo-faults.toml");
        if !faults.exists() {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            std::fs::write(
                &faults,
                "# Faults for the simulated GPUs; edit while `vigil up --demo` runs.\n\
                 # Format: agent/nvml-sim/README.md\n",
            )
            .with_context(|| format!("writing {}", faults.display()))?;
        }
        config.gpu.simulate_faults = faults;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let address = listener.local_addr().context("reading the bound address")?;
        // Where everything listens goes to stdout; a closed stdout (`vigil up | head -1`)
        // must not stop the agent, so write errors are ignored.
        let mut stdout = std::io::stdout();
        let _ = writeln!(
            stdout,
            "vigil up: agent for this node serving http://{address}/metrics"
        );
        if demo {
            let _ = writeln!(
                stdout,
                "vigil up: 8 simulated GPUs; inject faults by editing {}",
                config.gpu.simulate_faults.display()
            );
        }
        let _ = writeln!(stdout, "vigil up: Ctrl-C stops it");
        let _ = stdout.flush();
        vigil_agent::run(config, listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
