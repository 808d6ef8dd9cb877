//! `vigil`: the operator's command.
//!
//! Subcommands: `up`, `promql-test FILE...`, `rules check FILE...`, `rules test FILE...`,
//! `alerts [history]`, `silence add|list|expire` (the collector's HTTP API; [`client`]).
//!
//! `vigil up` is the README's first command. Until the collector and the dashboard
//! exist it runs this machine's agent in the foreground and says where its /metrics is;
//! `--demo` gives that agent eight simulated GPUs so a newcomer without GPUs sees them.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

mod alerts;
mod client;
mod matcher;
mod render;
mod silence;

#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    about = "Vigil: observability and operations for GPU clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Vigil on this machine: an agent for this node, in the foreground.
    Up {
        /// Add eight simulated GPUs (no GPU needed).
        #[arg(long)]
        demo: bool,
        /// Where the agent's Prometheus endpoint listens.
        #[arg(long, default_value = "127.0.0.1:9435")]
        listen: SocketAddr,
        /// Where Vigil keeps its data.
        #[arg(long, default_value = "vigil-data")]
        data_dir: PathBuf,
    },
    /// Run Prometheus's promqltest files against Vigil's PromQL engine.
    PromqlTest {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Check and unit-test Prometheus rule files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// The collector's pending and firing alerts (state, name, node, severity, since,
    /// summary); `alerts history` for past transitions.
    Alerts {
        #[command(subcommand)]
        command: Option<alerts::AlertsCommand>,
        #[command(flatten)]
        collector: client::CollectorArgs,
    },
    /// Create, list and expire the collector's silences.
    Silence {
        #[command(subcommand)]
        command: silence::SilenceCommand,
        #[command(flatten)]
        collector: client::CollectorArgs,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Validate rule files, as `promtool check rules` does.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Run rule unit tests in promtool's format, with `promtool test rules` verdicts and
    /// exit codes.
    Test {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    vigil_agent::init_logging();
    let result = match cli.command {
        Command::Up {
            demo,
            listen,
            data_dir,
        } => up(demo, listen, data_dir),
        Command::PromqlTest { files } => promql_test(&files),
        Command::Rules {
            command: RulesCommand::Check { files },
        } => Ok(exit_code(vigil_rules::check_files(
            &files,
            &mut std::io::stdout(),
        ))),
        Command::Rules {
            command: RulesCommand::Test { files },
        } => Ok(exit_code(vigil_rules::test_files(
            &files,
            &mut std::io::stdout(),
        ))),
        Command::Alerts { command, collector } => api_command(async move {
            match command {
                None => alerts::list(&collector).await,
                Some(alerts::AlertsCommand::History(args)) => {
                    alerts::history(&collector, &args).await
                }
            }
        }),
        Command::Silence { command, collector } => {
            api_command(async move { silence::run(&collector, &command).await })
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vigil: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A process exit code from a promtool-style status (0 success, 1 failure, ...).
fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Runs one request-and-print subcommand on a small runtime of its own.
fn api_command(
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(work)?;
    Ok(ExitCode::SUCCESS)
}

fn promql_test(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let summary = vigil_rules::promql::promqltest::run_files(files, &mut std::io::stdout())
        .context("writing the report")?;
    Ok(if summary.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn up(demo: bool, listen: SocketAddr, data_dir: PathBuf) -> anyhow::Result<ExitCode> {
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
