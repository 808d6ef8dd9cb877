//! `vigil`: the operator's command.
//!
//! Subcommands: `up`, `promql-test FILE...`, `rules check FILE...`, `rules test FILE...`,
//! `dash`, `alerts [history]`, `actions [show|approve|reject|kill-switch]`, `logs search|tail`,
//! `silence add|list|expire` (the collector's HTTP API;
//! [`client`]).
//!
//! The subcommands live in the `vigil_tui` library (`lib.rs`), so that tests and
//! benchmarks reach them too.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use vigil_tui::{actions, alerts, client, dash, logs, silence, up};

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
    /// Run Vigil on this machine: a collector, an agent for this node and the dashboard
    /// (headless when stdout is not a terminal); `--demo` adds simulated GPU nodes.
    Up(up::UpArgs),
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
    /// The recovery audit (newest first): what the collector decided to run for which
    /// alert, and how it went; approve or reject an action, flip the kill switch.
    Actions {
        #[command(subcommand)]
        command: Option<actions::ActionsCommand>,
        #[command(flatten)]
        list: actions::ListArgs,
        #[command(flatten)]
        collector: client::CollectorArgs,
    },
    /// The live fleet dashboard: nodes, GPUs, alerts (`?` lists the keys).
    Dash {
        #[command(flatten)]
        collector: client::CollectorArgs,
    },
    /// Search the collector's logs (`logs search QUERY`) or follow them (`logs tail`).
    Logs {
        #[command(subcommand)]
        command: logs::LogsCommand,
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
    // `up` sets up its own logging: into a file while the dashboard owns the terminal.
    if !matches!(cli.command, Command::Up(_)) {
        vigil_agent::init_logging();
    }
    let result = match cli.command {
        Command::Up(args) => up::run(args),
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
        Command::Actions {
            command,
            list,
            collector,
        } => api_command(async move { actions::run(&collector, command.as_ref(), &list).await }),
        Command::Dash { collector } => api_command(dash::run(collector)),
        Command::Logs { command, collector } => api_command(async move {
            match command {
                logs::LogsCommand::Search(args) => logs::search(&collector, &args).await,
                logs::LogsCommand::Tail(args) => logs::tail(&collector, &args).await,
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
