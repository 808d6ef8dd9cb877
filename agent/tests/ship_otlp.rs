//! The agent shipping to a real OTLP/gRPC MetricsService on loopback: a collector that
//! refuses for a while, a wrong token, and a restart with a backlog in the spool.
//!
//! The receiver here is a small tonic server that records what arrives; the real
//! collector is exercised by the cross-process tests in `tests/`. Each snapshot carries
//! `vigil_agent_collections_total`, which counts 1, 2, 3, ... in one agent process, so
//! "every snapshot, in order, once" is "the received counts are 1..=n".

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Request, Response, Status};
use vigil_agent::AgentConfig;
use vigil_proto::otlp::metrics_service_server::{MetricsService, MetricsServiceServer};
use vigil_proto::otlp::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse, metric, number_data_point,
};

#[derive(Debug, Clone, Copy)]
struct Arrival {
    /// vigil_agent_collections_total in the snapshot.
    collection: u64,
    /// The samples' timestamp.
    timestamp_ms: i64,
    arrived_ms: i64,
}

#[derive(Default)]
struct Received {
    refusing: bool,
    /// A collection whose snapshot is refused as malformed, wherever it is in a batch.
    poison: Option<u64>,
    refused: u64,
    /// Requests that were accepted.
    accepted_requests: u64,
    unauthenticated: u64,
    arrivals: Vec<Arrival>,
    /// Answer this long after storing a request, as a busy collector does: what it
    /// stored stays stored even when the sender stops waiting.
    answer_after: Option<Duration>,
    /// Requests stored and not answered yet.
    unanswered: u64,
}

#[derive(Clone)]
struct Receiver {
    token: Option<String>,
    state: Arc<Mutex<Received>>,
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        if let Some(delay) = self.store(request)? {
            tokio::time::sleep(delay).await;
            self.state.lock().unwrap().unanswered -= 1;
        }
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Checks and stores a request; how long to wait before answering it.
    fn store(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Option<Duration>, Status> {
        let mut state = self.state.lock().unwrap();
        if let Some(token) = &self.token {
            let given = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if given != Some(&format!("Bearer {token}")) {
                state.unauthenticated += 1;
                return Err(Status::unauthenticated("bad token"));
            }
        }
        if state.refusing {
            state.refused += 1;
            return Err(Status::unavailable("store unavailable"));
        }
        let arrived_ms = now_ms();
        let mut arrivals = Vec::new();
        for resource in &request.get_ref().resource_metrics {
            let point = resource
                .scope_metrics
                .iter()
                .flat_map(|s| &s.metrics)
                .find(|m| m.name == "vigil_agent_collections_total")
                .and_then(|m| match &m.data {
                    Some(metric::Data::Sum(sum)) => sum.data_points.first(),
                    _ => None,
                })
                .ok_or_else(|| Status::invalid_argument("no vigil_agent_collections_total"))?;
            let Some(number_data_point::Value::AsDouble(value)) = point.value else {
                return Err(Status::invalid_argument(
                    "collections_total is not a double",
                ));
            };
            if state.poison == Some(value as u64) {
                return Err(Status::invalid_argument("poisoned snapshot"));
            }
            arrivals.push(Arrival {
                collection: value as u64,
                timestamp_ms: (point.time_unix_nano / 1_000_000) as i64,
                arrived_ms,
            });
        }
        state.arrivals.extend(arrivals);
        state.accepted_requests += 1;
        if state.answer_after.is_some() {
            state.unanswered += 1;
        }
        Ok(state.answer_after)
    }
}

async fn start_receiver(token: Option<&str>) -> Result<(SocketAddr, Arc<Mutex<Received>>)> {
    start_receiver_with(token, None).await
}

/// With `tls`, a PEM certificate and key to serve gRPC over TLS with.
async fn start_receiver_with(
    token: Option<&str>,
    tls: Option<(&Path, &Path)>,
) -> Result<(SocketAddr, Arc<Mutex<Received>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(Mutex::new(Received::default()));
    let service = MetricsServiceServer::new(Receiver {
        token: token.map(str::to_owned),
        state: Arc::clone(&state),
    })
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip);
    let mut server = tonic::transport::Server::builder();
    if let Some((cert, key)) = tls {
        let identity = Identity::from_pem(std::fs::read(cert)?, std::fs::read(key)?);
        server = server.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    tokio::spawn(
        server
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    Ok((addr, state))
}

struct Agent {
    metrics: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), vigil_agent::AgentError>>,
}

async fn start_agent(
    state_dir: &Path,
    collector: SocketAddr,
    token_file: Option<&Path>,
) -> Result<Agent> {
    start_agent_with(state_dir, collector, token_file, |_| {}).await
}

async fn start_agent_with(
    state_dir: &Path,
    collector: SocketAddr,
    token_file: Option<&Path>,
    adjust: impl FnOnce(&mut AgentConfig),
) -> Result<Agent> {
    let mut config = AgentConfig {
        state_dir: state_dir.to_owned(),
        node_name: "node-ship".into(),
        interval_secs: 0.2,
        source_timeout_secs: 0.2,
        ..AgentConfig::default()
    };
    config.gpu.enabled = false;
    // Metrics only: this machine's kernel log would share the drain rate.
    config.logs.kmsg = PathBuf::new();
    config.shipper.collector = format!("http://{collector}");
    config.shipper.retry_max_secs = 0.4;
    if let Some(path) = token_file {
        config.shipper.token_file = path.to_owned();
    }
    adjust(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let metrics = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(vigil_agent::run(config, listener, async {
        let _ = stopped.await;
    }));
    Ok(Agent {
        metrics,
        stop,
        task,
    })
}

impl Agent {
    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .context("agent did not stop")???;
        Ok(())
    }
}

/// The value of the series written exactly as `series` on the agent's /metrics.
async fn scrape(addr: SocketAddr, series: &str) -> Result<f64> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    body.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("{series} not on /metrics"))
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn collections(arrivals: &[Arrival]) -> Vec<u64> {
    arrivals.iter().map(|a| a.collection).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_collector_gets_every_snapshot_in_order_with_original_timestamps() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let (collector, received) = start_receiver(None).await?;
    received.lock().unwrap().refusing = true;
    let agent = start_agent(dir.path(), collector, None).await?;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let queued = scrape(agent.metrics, "vigil_agent_spool_records{kind=\"metrics\"}").await?;
    let unavailable = scrape(
        agent.metrics,
        "vigil_agent_ship_requests_total{result=\"unavailable\"}",
    )
    .await?;
    ensure!(queued >= 3.0, "only {queued} records spooled while refused");
    ensure!(unavailable >= 1.0, "refusals not counted");
    ensure!(received.lock().unwrap().arrivals.is_empty());

    let accepted_from_ms = now_ms();
    received.lock().unwrap().refusing = false;
    let target = queued as u64 + 5;
    wait_for(
        "the backlog and live snapshots",
        Duration::from_secs(20),
        || {
            received
                .lock()
                .unwrap()
                .arrivals
                .iter()
                .any(|a| a.collection >= target)
        },
    )
    .await?;
    // /metrics serves the latest collection, so the shipper's counters show the last
    // shipment one collection later: wait for them rather than read them once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (ok, shipped) = loop {
        let ok = scrape(
            agent.metrics,
            "vigil_agent_ship_requests_total{result=\"ok\"}",
        )
        .await?;
        let shipped = scrape(agent.metrics, "vigil_agent_shipped_records_total").await?;
        if shipped >= target as f64 - 1.0 || Instant::now() > deadline {
            break (ok, shipped);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let last_success = scrape(
        agent.metrics,
        "vigil_agent_ship_last_success_timestamp_seconds",
    )
    .await?;
    agent.stop().await?;

    let state = received.lock().unwrap();
    ensure!(state.refused >= 1);
    let arrivals = &state.arrivals;
    let expected: Vec<u64> = (1..=arrivals.len() as u64).collect();
    ensure!(
        collections(arrivals) == expected,
        "out of order, missing or repeated: {:?}",
        collections(arrivals)
    );
    ensure!(
        arrivals
            .windows(2)
            .all(|w| w[0].timestamp_ms < w[1].timestamp_ms),
        "timestamps not increasing"
    );
    // The first snapshots were taken during the refusal and keep that time.
    let first = arrivals[0];
    ensure!(
        first.timestamp_ms < accepted_from_ms - 1000,
        "first snapshot stamped {} ms, accepted from {accepted_from_ms}",
        first.timestamp_ms
    );
    ensure!(first.arrived_ms >= accepted_from_ms);
    ensure!(arrivals.iter().all(|a| a.timestamp_ms <= a.arrived_ms));
    ensure!(
        ok >= 1.0 && shipped >= target as f64 - 1.0,
        "ok {ok}, shipped {shipped}"
    );
    ensure!(last_success * 1000.0 >= accepted_from_ms as f64);
    // The backlog went out several records per request.
    ensure!(
        state.accepted_requests < arrivals.len() as u64,
        "{} requests for {} snapshots",
        state.accepted_requests,
        arrivals.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_as_malformed_is_dropped_alone() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (collector, received) = start_receiver(None).await?;
    received.lock().unwrap().refusing = true;
    received.lock().unwrap().poison = Some(3);
    let agent = start_agent(dir.path(), collector, None).await?;
    // A backlog, so that the poisoned snapshot first arrives inside a batch.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    received.lock().unwrap().refusing = false;
    wait_for(
        "snapshots after the poisoned one",
        Duration::from_secs(20),
        || {
            received
                .lock()
                .unwrap()
                .arrivals
                .iter()
                .any(|a| a.collection >= 10)
        },
    )
    .await?;
    // The endpoint serves the latest collection's counters, which may predate the drop
    // by one interval: wait for a collection that saw it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let dropped = loop {
        let dropped = scrape(
            agent.metrics,
            "vigil_agent_spool_dropped_records_total{kind=\"metrics\"}",
        )
        .await?;
        if dropped >= 1.0 || Instant::now() > deadline {
            break dropped;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rejected = scrape(
        agent.metrics,
        "vigil_agent_ship_requests_total{result=\"rejected\"}",
    )
    .await?;
    agent.stop().await?;
    let got = collections(&received.lock().unwrap().arrivals);
    let expected: Vec<u64> = (1..=got.len() as u64 + 1).filter(|c| *c != 3).collect();
    ensure!(got == expected, "{got:?}");
    ensure!(
        rejected >= 2.0,
        "the batch and then the record alone: {rejected}"
    );
    ensure!(dropped == 1.0, "dropped {dropped}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_deletes_nothing_and_a_restart_sends_the_backlog() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "wrong-token\n")?;
    let (collector, received) = start_receiver(Some("right-token")).await?;

    let agent = start_agent(&dir.path().join("state"), collector, Some(&token_file)).await?;
    wait_for("refused requests", Duration::from_secs(10), || {
        received.lock().unwrap().unauthenticated >= 2
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let unauthenticated = scrape(
        agent.metrics,
        "vigil_agent_ship_requests_total{result=\"unauthenticated\"}",
    )
    .await?;
    let queued = scrape(agent.metrics, "vigil_agent_spool_records{kind=\"metrics\"}").await?;
    let collected = scrape(agent.metrics, "vigil_agent_collections_total").await?;
    let ok = scrape(
        agent.metrics,
        "vigil_agent_ship_requests_total{result=\"ok\"}",
    )
    .await?;
    agent.stop().await?;
    ensure!(unauthenticated >= 1.0, "unauthenticated not counted");
    ensure!(ok == 0.0);
    // Everything collected so far is still queued (the scrape's own snapshot may not be
    // spooled yet).
    ensure!(
        queued >= collected - 1.0 && queued >= 3.0,
        "{queued} queued of {collected} collected"
    );
    ensure!(received.lock().unwrap().arrivals.is_empty());

    std::fs::write(&token_file, "right-token")?;
    let agent = start_agent(&dir.path().join("state"), collector, Some(&token_file)).await?;
    // The first run's snapshots (1..=a), then the second run's (1..=b).
    let split = |arrivals: &[Arrival]| -> Option<usize> {
        (1..arrivals.len()).find(|&i| arrivals[i].collection == 1)
    };
    wait_for(
        "the backlog, then live snapshots",
        Duration::from_secs(20),
        || {
            let state = received.lock().unwrap();
            split(&state.arrivals).is_some_and(|i| state.arrivals.len() - i >= 3)
        },
    )
    .await?;
    agent.stop().await?;
    let state = received.lock().unwrap();
    let all = collections(&state.arrivals);
    let i = split(&state.arrivals).context("no second run")?;
    let (backlog, live) = all.split_at(i);
    ensure!(
        backlog == (1..=backlog.len() as u64).collect::<Vec<_>>(),
        "backlog {backlog:?}"
    );
    ensure!(
        live == (1..=live.len() as u64).collect::<Vec<_>>(),
        "live {live:?}"
    );
    ensure!(
        backlog.len() as f64 >= collected,
        "backlog of {} after {collected} collections",
        backlog.len()
    );
    let backlog_end = state.arrivals[i - 1].timestamp_ms;
    ensure!(backlog_end < state.arrivals[i].timestamp_ms);
    Ok(())
}

/// An agent stopped while the collector is storing its request waits for the answer and
/// deletes what was acknowledged: after a restart nothing arrives twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_request_waits_for_its_answer_and_sends_nothing_twice() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (collector, received) = start_receiver(None).await?;
    let agent = start_agent(&dir.path().join("state"), collector, None).await?;
    wait_for("a first snapshot", Duration::from_secs(10), || {
        !received.lock().unwrap().arrivals.is_empty()
    })
    .await?;
    received.lock().unwrap().answer_after = Some(Duration::from_millis(1500));
    wait_for(
        "a request stored and not answered",
        Duration::from_secs(10),
        || received.lock().unwrap().unanswered > 0,
    )
    .await?;
    agent.stop().await?;
    let first_run = collections(&received.lock().unwrap().arrivals);

    received.lock().unwrap().answer_after = None;
    let agent = start_agent(&dir.path().join("state"), collector, None).await?;
    // The second run's own snapshots start again from 1.
    wait_for(
        "the second run's snapshots",
        Duration::from_secs(20),
        || {
            let state = received.lock().unwrap();
            state.arrivals[first_run.len()..]
                .iter()
                .filter(|a| a.collection == 1)
                .count()
                >= 1
                && state.arrivals.len() >= first_run.len() + 3
        },
    )
    .await?;
    agent.stop().await?;
    let state = received.lock().unwrap();
    let all = collections(&state.arrivals);
    // Whatever the first run spooled after the stopped request is the backlog that comes
    // first: the first run's numbers continue, none repeated.
    let second = all[first_run.len()..]
        .iter()
        .position(|&c| c == 1)
        .map(|i| first_run.len() + i)
        .context("no second run")?;
    let first: Vec<u64> = all[..second].to_vec();
    ensure!(
        first == (1..=first.len() as u64).collect::<Vec<_>>(),
        "the first run's snapshots arrived as {first:?}: a stored request was sent again"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_at_the_configured_rate() -> Result<()> {
    const RATE: f64 = 100_000.0;
    let dir = tempfile::tempdir()?;
    let (collector, received) = start_receiver(None).await?;
    received.lock().unwrap().refusing = true;
    let agent = start_agent_with(dir.path(), collector, None, |c| {
        c.shipper.drain_max_bytes_per_sec = RATE as u64;
        c.shipper.batch_max_bytes = 64 << 10;
    })
    .await?;
    let series = "vigil_agent_spool_bytes{kind=\"metrics\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    let backlog_bytes = loop {
        let bytes = scrape(agent.metrics, series).await?;
        if bytes >= 2.5 * RATE {
            break bytes;
        }
        ensure!(Instant::now() < deadline, "backlog stuck at {bytes} bytes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let backlog_end = scrape(agent.metrics, "vigil_agent_collections_total").await? as u64;
    let accepted = Instant::now();
    received.lock().unwrap().refusing = false;
    wait_for("the backlog", Duration::from_secs(30), || {
        received
            .lock()
            .unwrap()
            .arrivals
            .iter()
            .any(|a| a.collection >= backlog_end)
    })
    .await?;
    let drained_secs = accepted.elapsed().as_secs_f64();
    agent.stop().await?;
    eprintln!(
        "backlog of {backlog_bytes} bytes ({backlog_end} snapshots) drained in {drained_secs:.2}s at {RATE} bytes/s"
    );
    // A second's worth may go at once; the rest at the rate.
    let floor = backlog_bytes / RATE - 1.0;
    ensure!(
        drained_secs >= floor - 0.2,
        "{backlog_bytes} bytes drained in {drained_secs:.2}s, faster than the rate allows"
    );
    ensure!(
        drained_secs <= floor + 4.0,
        "{backlog_bytes} bytes drained in {drained_secs:.2}s"
    );
    let got = collections(&received.lock().unwrap().arrivals);
    ensure!(got == (1..=got.len() as u64).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_ships_to_a_collector_signed_by_the_configured_ca() -> Result<()> {
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tls");
    let (cert, key) = (tls.join("collector.pem"), tls.join("collector.key"));
    let (collector, received) = start_receiver_with(None, Some((&cert, &key))).await?;
    let url = format!("https://localhost:{}", collector.port());

    // Without the CA, the certificate is not trusted and nothing is sent.
    let dir = tempfile::tempdir()?;
    let untrusting = start_agent_with(dir.path(), collector, None, |c| {
        c.shipper.collector = url.clone();
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let failed = scrape(
        untrusting.metrics,
        "vigil_agent_ship_requests_total{result=\"unavailable\"}",
    )
    .await?;
    untrusting.stop().await?;
    ensure!(failed >= 1.0, "an untrusted certificate was not a failure");
    ensure!(received.lock().unwrap().arrivals.is_empty());

    // With it, the snapshots spooled meanwhile and the new ones arrive.
    let agent = start_agent_with(dir.path(), collector, None, |c| {
        c.shipper.collector = url.clone();
        c.shipper.ca_file = tls.join("ca.pem");
    })
    .await?;
    wait_for("snapshots over TLS", Duration::from_secs(20), || {
        received.lock().unwrap().arrivals.len() >= 8
    })
    .await?;
    agent.stop().await?;
    let got = collections(&received.lock().unwrap().arrivals);
    ensure!(got[..3] == [1, 2, 3], "{got:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_collector_the_agent_only_exports() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = AgentConfig {
        state_dir: dir.path().to_owned(),
        interval_secs: 0.2,
        source_timeout_secs: 0.2,
        ..AgentConfig::default()
    };
    config.gpu.enabled = false;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(vigil_agent::run(config, listener, async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(scrape(addr, "vigil_agent_collections_total").await? >= 1.0);
    ensure!(
        scrape(addr, "vigil_agent_shipped_records_total")
            .await
            .is_err()
    );
    let _ = stop.send(());
    task.await??;
    ensure!(
        !dir.path().join("spool").exists(),
        "a spool without a collector"
    );
    Ok(())
}
