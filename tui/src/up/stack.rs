//! The running parts of `vigil up` and the order they start and stop in: the
//! collector first (and answering) before any agent ships to it; on the way out the
//! agents and the fault injector, then the collector, then the demo's receiver.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use vigil_agent::{AgentConfig, AgentError};
use vigil_collector::{CollectorConfig, CollectorError, Listeners, RunOptions};

use super::{Say, UpArgs, bind, demo, faults, local, webhook};

/// How long the agents get to stop (their last snapshot is in the spool already).
const AGENTS_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the demo's helpers get to stop after the collector has.
const HELPERS_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the collector may take to answer its first request.
const COLLECTOR_START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the parts are told to stop, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Running,
    /// Agents and the fault injector.
    StopAgents,
    StopCollector,
    /// The demo's receiver, last, as the notifier may still be sending to it.
    StopRest,
}

/// A future that resolves once `stage` has reached `at`.
fn until(stage: &watch::Receiver<Stage>, at: Stage) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = stage.clone();
    async move {
        // An error means the sender is gone, which happens only after stopping.
        let _ = rx.wait_for(|s| *s >= at).await;
    }
}

type AgentResult = (String, Result<(), AgentError>);

/// The running parts.
pub(super) struct Stack {
    stage: watch::Sender<Stage>,
    collector: Option<JoinHandle<Result<(), CollectorError>>>,
    agents: JoinSet<AgentResult>,
    /// The fault injector and the demo's receiver.
    helpers: JoinSet<()>,
    signals: Signals,
    pub(super) api_url: String,
    /// What listens where, in the order headless mode prints it.
    pub(super) listening: Vec<(String, String)>,
    say: Say,
}

impl Stack {
    pub(super) async fn start(args: &UpArgs, say: Say) -> anyhow::Result<Self> {
        // Watched before anything is said, so a Ctrl-C right after the addresses are
        // printed already stops Vigil cleanly.
        let signals = Signals::new()?;
        let http = bind(args.listen, "--listen").await?;
        let otlp_grpc = bind(args.otlp_grpc, "--otlp-grpc").await?;
        let otlp_http = bind(args.otlp_http, "--otlp-http").await?;
        let agent_listener = bind(args.agent_listen, "--agent-listen").await?;
        let (api, grpc, otlp_http_addr) = (local(&http)?, local(&otlp_grpc)?, local(&otlp_http)?);
        let agent_addr = local(&agent_listener)?;
        let api_url = format!("http://{api}");
        let grpc_url = format!("http://{grpc}");
        let data_dir = std::path::absolute(&args.data_dir)
            .with_context(|| format!("resolving {}", args.data_dir.display()))?;
        let listening = vec![
            ("collector API".to_owned(), api_url.clone()),
            ("OTLP gRPC".to_owned(), grpc_url.clone()),
            ("OTLP HTTP".to_owned(), format!("http://{otlp_http_addr}")),
        ];
        let (stage, stage_rx) = watch::channel(Stage::Running);
        let mut helpers = JoinSet::new();

        // Said after the nodes, with what they are for.
        let mut said_last = Vec::new();
        let mut alertmanager_config = args.alertmanager_config.clone().unwrap_or_default();
        let mut demo_nodes = Vec::new();
        if args.demo {
            let demo_dir = data_dir.join("demo");
            std::fs::create_dir_all(&demo_dir)
                .with_context(|| format!("creating {}", demo_dir.display()))?;
            for mut node in demo::nodes(&demo_dir, args.demo_nodes, &grpc_url)? {
                let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)), "(demo node)").await?;
                node.config.listen = local(&listener)?;
                demo_nodes.push((node, listener));
            }
            if args.alertmanager_config.is_none() {
                let listener =
                    bind(SocketAddr::from(([127, 0, 0, 1], 0)), "(demo receiver)").await?;
                let addr = local(&listener)?;
                let path = demo_dir.join("alertmanager.yml");
                std::fs::write(&path, demo::alertmanager_config(addr))
                    .with_context(|| format!("writing {}", path.display()))?;
                alertmanager_config = path;
                let log = demo_dir.join("notifications.jsonl");
                said_last.push((
                    "demo notifications".to_owned(),
                    format!(
                        "http://{addr}{}, each notification said here and kept in {}",
                        webhook::PATH,
                        log.display()
                    ),
                ));
                let stop = until(&stage_rx, Stage::StopRest);
                helpers.spawn(async move {
                    if let Err(e) = webhook::serve(listener, log, say, stop).await {
                        tracing::error!(error = %e, "the demo's notification receiver failed");
                    }
                });
            }
        }

        let mut config = CollectorConfig {
            data_dir: data_dir.join("collector"),
            listen: api,
            otlp_grpc: grpc,
            otlp_http: otlp_http_addr,
            ..CollectorConfig::default()
        };
        config.alerting.external_url = api_url.clone();
        if args.demo {
            // The default packs, with recovery on GpuEccDoubleBitError for the demo's
            // reset-gpu; `--rules`-less collectors load the same packs built in.
            config.alerting.rule_files = demo::rule_files(&data_dir.join("demo"))?;
        }
        config.alerting.alertmanager_config = alertmanager_config;
        let collector = tokio::spawn(vigil_collector::run_with(
            config,
            Listeners {
                http,
                otlp_grpc,
                otlp_http,
            },
            until(&stage_rx, Stage::StopCollector),
            RunOptions::default(),
        ));
        let mut stack = Self {
            stage,
            collector: Some(collector),
            agents: JoinSet::new(),
            helpers,
            signals,
            api_url,
            listening,
            say,
        };
        // A collector that cannot start (a bad Alertmanager file, a locked store) says
        // so before anything claims to be running.
        if let Err(e) = stack.wait_ready().await {
            let _ = stack.stop().await;
            return Err(e);
        }

        let mut this = AgentConfig {
            listen: agent_addr,
            state_dir: data_dir.join("agent"),
            ..AgentConfig::default()
        };
        this.shipper.collector = grpc_url.clone();
        let name = this.effective_node_name();
        stack.listening.push((
            format!("agent for this machine ({name})"),
            format!("http://{}/metrics", this.listen),
        ));
        stack.spawn_agent(name, this, agent_listener, &stage_rx);

        let mut targets = Vec::new();
        for (node, listener) in demo_nodes {
            stack.listening.push((
                format!("demo node {} (8 simulated GPUs)", node.name),
                format!(
                    "http://{}/metrics, faults file {}",
                    node.config.listen,
                    node.faults_file.display()
                ),
            ));
            targets.push(faults::Target {
                name: node.name.clone(),
                faults_file: node.faults_file,
                resets_dir: Some(node.resets_dir),
            });
            stack.spawn_agent(node.name, node.config, listener, &stage_rx);
        }
        if !targets.is_empty() {
            let stop = until(&stage_rx, Stage::StopAgents);
            stack
                .helpers
                .spawn(faults::run(targets, faults::Schedule::default(), say, stop));
        }
        stack.listening.extend(said_last);
        stack
            .listening
            .push(("data".to_owned(), data_dir.display().to_string()));
        stack.listening.push((
            "dashboard".to_owned(),
            format!("vigil dash --collector {}", stack.api_url),
        ));
        Ok(stack)
    }

    fn spawn_agent(
        &mut self,
        name: String,
        config: AgentConfig,
        listener: TcpListener,
        stage: &watch::Receiver<Stage>,
    ) {
        let stop = until(stage, Stage::StopAgents);
        self.agents
            .spawn(async move { (name, vigil_agent::run(config, listener, stop).await) });
    }

    /// Waits until the collector answers `/healthz`, or fails if it stops first.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        // reqwest has no crypto provider of its own (the workspace uses ring's);
        // installing fails only when one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("building an HTTP client")?;
        let url = format!("{}/healthz", self.api_url);
        let ready = async {
            loop {
                if let Ok(r) = client.get(&url).send().await
                    && r.status().is_success()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let Some(collector) = self.collector.as_mut() else {
            return Err(anyhow!("the collector is not running"));
        };
        tokio::select! {
            () = ready => Ok(()),
            ended = collector => {
                self.collector = None;
                Err(collector_ended(ended))
            }
            () = tokio::time::sleep(COLLECTOR_START_TIMEOUT) => Err(anyhow!(
                "the collector did not answer {url} within {} s",
                COLLECTOR_START_TIMEOUT.as_secs()
            )),
        }
    }

    /// Runs until `front` (the dashboard) ends, a stop signal arrives, or a part fails.
    pub(super) async fn supervise(
        &mut self,
        front: impl Future<Output = anyhow::Result<()>>,
    ) -> anyhow::Result<()> {
        let Some(collector) = self.collector.as_mut() else {
            return Err(anyhow!("the collector is not running"));
        };
        let ended = tokio::select! {
            r = front => Ended::Front(r),
            name = self.signals.recv() => Ended::Signal(name),
            r = collector => Ended::Collector(r),
            Some(r) = self.agents.join_next() => Ended::Agent(r),
        };
        match ended {
            Ended::Front(r) => r,
            Ended::Signal(name) => {
                self.say.line(format_args!("{name}: stopping"));
                Ok(())
            }
            Ended::Collector(r) => {
                self.collector = None;
                Err(collector_ended(r))
            }
            Ended::Agent(Ok((name, Ok(())))) => {
                Err(anyhow!("the agent for {name} stopped unexpectedly"))
            }
            Ended::Agent(Ok((name, Err(e)))) => {
                Err(anyhow!(e).context(format!("the agent for {name} stopped")))
            }
            Ended::Agent(Err(e)) => Err(anyhow!(e).context("an agent task failed")),
        }
    }

    /// Stops everything in order; the first failure on the way is the result.
    pub(super) async fn stop(mut self) -> anyhow::Result<()> {
        let mut failure = None;
        self.stage.send_replace(Stage::StopAgents);
        let agents = &mut self.agents;
        let drained = tokio::time::timeout(AGENTS_STOP_TIMEOUT, async {
            let mut first = None;
            while let Some(done) = agents.join_next().await {
                match done {
                    Ok((_, Ok(()))) => {}
                    Ok((name, Err(e))) => {
                        first.get_or_insert(
                            anyhow!(e).context(format!("stopping the agent for {name}")),
                        );
                    }
                    Err(e) => {
                        first.get_or_insert(anyhow!(e).context("an agent task failed"));
                    }
                }
            }
            first
        })
        .await;
        match drained {
            Ok(first) => failure = first,
            Err(_) => {
                tracing::warn!(
                    timeout_secs = AGENTS_STOP_TIMEOUT.as_secs(),
                    "agents did not stop in time; stopping them now"
                );
                self.agents.abort_all();
            }
        }
        self.stage.send_replace(Stage::StopCollector);
        if let Some(collector) = self.collector.take() {
            match collector.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failure.get_or_insert(anyhow!(e).context("stopping the collector"));
                }
                Err(e) => {
                    failure.get_or_insert(anyhow!(e).context("the collector task failed"));
                }
            }
        }
        self.stage.send_replace(Stage::StopRest);
        let helpers = &mut self.helpers;
        let _ = tokio::time::timeout(HELPERS_STOP_TIMEOUT, async {
            while helpers.join_next().await.is_some() {}
        })
        .await;
        self.helpers.abort_all();
        failure.map_or(Ok(()), Err)
    }
}

enum Ended {
    Front(anyhow::Result<()>),
    Signal(&'static str),
    Collector(Result<Result<(), CollectorError>, JoinError>),
    Agent(Result<AgentResult, JoinError>),
}

fn collector_ended(r: Result<Result<(), CollectorError>, JoinError>) -> anyhow::Error {
    match r {
        Ok(Ok(())) => anyhow!("the collector stopped unexpectedly"),
        Ok(Err(e)) => anyhow!(e).context("the collector stopped"),
        Err(e) => anyhow!(e).context("the collector task failed"),
    }
}

/// Ctrl-C and SIGTERM, watched from the start.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).context("watching SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("watching SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The name of the next stop signal.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "Ctrl-C",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
