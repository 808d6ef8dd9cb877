//! The control client: the agent's end of the collector's control channel
//! (`vigil.control.v1.Control`, see [`vigil_proto::control`]).
//!
//! The agent opens it, so it works behind NAT: one long `Connect` call on the
//! collector's OTLP/gRPC endpoint, with the shipper's URL, TLS settings and bearer
//! token, whose answer is a stream of actions for this node. Each action goes to the
//! [`crate::recovery::Recovery`] runner, which journals it and runs it once; the
//! runner's reports go back with `Report` calls, retried until the collector
//! acknowledges them (a final report is marked in the journal only then, so one made
//! while the collector was away is sent after the reconnect, and so is one from
//! before an agent restart).
//!
//! The collector writes a heartbeat every 15 s; a stream silent for
//! [`SILENCE_LIMIT`] is taken as dead and reopened. A lost connection is retried after
//! 0.5 s, doubling up to [`RETRY_MAX`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic_prost::ProstCodec;
use vigil_proto::control::{self as wire, Command, Hello, Phase, Report, ReportAck};

use crate::config::AgentConfig;
use crate::recovery::Recovery;
use crate::ship::ShipError;
use crate::ship::client::{bearer, endpoint};

/// A stream with no message (not even a heartbeat) for this long is reopened.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// The longest wait between connection attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// One report call's limit.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The running control client.
pub struct Control {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

struct Link {
    channel: Channel,
    authorization: Option<MetadataValue<Ascii>>,
}

impl Link {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(auth) = &self.authorization {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        request
    }
}

impl Control {
    /// Starts the client when the agent ships to a collector and has a recovery
    /// directory; `None` otherwise.
    pub fn start(
        config: &AgentConfig,
        node: &str,
        recovery: Arc<Recovery>,
    ) -> Result<Option<Control>, ShipError> {
        let ship = &config.shipper;
        if ship.collector.is_empty() {
            return Ok(None);
        }
        let token = crate::ship::read_token(&ship.token_file)?;
        let link = Arc::new(Link {
            channel: endpoint(ship)?.connect_lazy(),
            authorization: bearer(token.as_deref(), &ship.token_file)?,
        });
        let (stop, stop_rx) = watch::channel(false);
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let (connected_tx, connected_rx) = watch::channel(0u64);
        let stream = tokio::spawn(run_stream(
            Arc::clone(&link),
            node.to_string(),
            Arc::clone(&recovery),
            reports_tx,
            connected_tx,
            stop_rx.clone(),
        ));
        let reports = tokio::spawn(run_reports(
            link,
            recovery,
            reports_rx,
            connected_rx,
            stop_rx,
        ));
        tracing::info!(collector = %ship.collector, "control channel: connecting");
        Ok(Some(Control {
            stop,
            tasks: vec![stream, reports],
        }))
    }

    /// Closes the stream; reports not yet acknowledged stay in the journal.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

/// Keeps the stream open and hands each action to the runner.
async fn run_stream(
    link: Arc<Link>,
    node: String,
    recovery: Arc<Recovery>,
    reports: mpsc::UnboundedSender<Report>,
    connected: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut wait = RETRY_FIRST;
    let mut failures = 0u64;
    loop {
        if *stop.borrow() {
            return;
        }
        let hello = Hello {
            node: node.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            scripts: recovery.scripts(),
        };
        let mut grpc = tonic::client::Grpc::new(link.channel.clone());
        let opened = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = async {
                grpc.ready().await.map_err(|e| tonic::Status::unavailable(format!("collector unreachable: {e}")))?;
                grpc.server_streaming(
                    link.request(hello),
                    PathAndQuery::from_static(wire::CONNECT),
                    ProstCodec::<Hello, Command>::default(),
                )
                .await
            } => r,
        };
        let mut stream = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => {
                failures += 1;
                // The first failure and then every tenth: a collector that is down
                // for an hour should not fill the log.
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(code = ?status.code(), message = status.message(), failures, "control channel: cannot connect; retrying");
                }
                if sleep_or_stop(wait, &mut stop).await {
                    return;
                }
                wait = (wait * 2).min(RETRY_MAX);
                continue;
            }
        };
        tracing::info!("control channel: connected");
        failures = 0;
        wait = RETRY_FIRST;
        connected.send_modify(|n| *n += 1);
        loop {
            let next = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                m = tokio::time::timeout(SILENCE_LIMIT, stream.message()) => m,
            };
            match next {
                Ok(Ok(Some(Command {
                    action: Some(action),
                }))) => {
                    tracing::info!(action = %action.id, script = %action.script, "control channel: action received");
                    recovery.handle(action, reports.clone());
                }
                Ok(Ok(Some(Command { action: None }))) => {}
                Ok(Ok(None)) => {
                    tracing::info!("control channel: the collector closed the stream");
                    break;
                }
                Ok(Err(status)) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "control channel: stream failed");
                    break;
                }
                Err(_) => {
                    tracing::warn!(
                        secs = SILENCE_LIMIT.as_secs(),
                        "control channel: no heartbeat; reconnecting"
                    );
                    break;
                }
            }
        }
        if sleep_or_stop(RETRY_FIRST, &mut stop).await {
            return;
        }
    }
}

fn is_final(r: &Report) -> bool {
    matches!(
        Phase::try_from(r.phase),
        Ok(Phase::Finished | Phase::Refused | Phase::Lost)
    )
}

/// Sends the runner's reports in order, each until the collector takes it; after
/// every (re)connection, first what the journal holds unacknowledged.
async fn run_reports(
    link: Arc<Link>,
    recovery: Arc<Recovery>,
    mut rx: mpsc::UnboundedReceiver<Report>,
    mut connected: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pending: VecDeque<Report> = VecDeque::new();
    let mut wait = RETRY_FIRST;
    loop {
        if connected.has_changed().unwrap_or(false) {
            connected.mark_unchanged();
            // What the runner reports from now on comes through `rx`; what it reported
            // before and was never acknowledged (this run or an earlier one) is in the
            // journal.
            for r in recovery.unacked() {
                if !pending
                    .iter()
                    .any(|p| p.action_id == r.action_id && p.phase == r.phase)
                {
                    pending.push_back(r);
                }
            }
        }
        while let Ok(r) = rx.try_recv() {
            pending.push_back(r);
        }
        let Some(report) = pending.front().cloned() else {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                r = rx.recv() => match r {
                    Some(r) => pending.push_back(r),
                    None => return,
                },
                _ = connected.changed() => {}
            }
            continue;
        };
        let mut grpc = tonic::client::Grpc::new(link.channel.clone());
        let sent = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = async {
                grpc.ready().await.map_err(|e| tonic::Status::unavailable(format!("collector unreachable: {e}")))?;
                let mut request = link.request(report.clone());
                request.set_timeout(REPORT_TIMEOUT);
                grpc.unary(
                    request,
                    PathAndQuery::from_static(wire::REPORT),
                    ProstCodec::<Report, ReportAck>::default(),
                )
                .await
            } => r,
        };
        match sent {
            Ok(_) => {
                pending.pop_front();
                wait = RETRY_FIRST;
                if is_final(&report) {
                    recovery.acked(&report);
                }
            }
            Err(status) => {
                tracing::debug!(code = ?status.code(), message = status.message(), action = %report.action_id, "control channel: report not taken; retrying");
                if sleep_or_stop(wait, &mut stop).await {
                    return;
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}
