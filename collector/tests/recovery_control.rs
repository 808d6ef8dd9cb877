//! The remediation policy and the control channel together, over real gRPC on
//! loopback: 100 simulated nodes, each a control-stream client that "runs" what it is
//! sent for a while and reports, fault at once under `max_concurrent = 5`.
//!
//! The alerts are handed to the policy as the evaluator hands them (every 100 ms, the
//! firing alerts of the rule); a node's alert resolves once its action finished.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;
use vigil_collector::recovery::config::RecoveryConfig;
use vigil_collector::recovery::control::ControlServer;
use vigil_collector::recovery::policy::FiringAlert;
use vigil_collector::recovery::{FleetSize, Remediation};
use vigil_proto::actions::{ActionState, Decision};
use vigil_proto::control::{self as wire, Command, Hello, Phase, Report, ReportAck};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct Fleet(usize);

impl FleetSize for Fleet {
    fn nodes(&self) -> usize {
        self.0
    }
}

fn alert(node: &str) -> FiringAlert {
    FiringAlert {
        labels: BTreeMap::from([
            ("alertname".to_string(), "GpuFellOffBus".to_string()),
            ("node".to_string(), node.to_string()),
            ("gpu".to_string(), "0".to_string()),
        ]),
        script: "reset-gpu".into(),
        args_from_labels: vec!["gpu".into()],
    }
}

async fn serve(rem: Arc<Remediation>) -> Channel {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ControlServer::new(rem))
            .serve_with_incoming(
                vigil_collector::tls::Incoming::new(listener, None, vigil_collector::tls::Alpn::H2)
                    .into_stream(),
            ),
    );
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

/// An agent's control stream, opened as `hello`.
async fn connect(channel: &Channel, hello: Hello) -> tonic::Streaming<Command> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    grpc.server_streaming(
        tonic::Request::new(hello),
        PathAndQuery::from_static(wire::CONNECT),
        ProstCodec::<Hello, Command>::default(),
    )
    .await
    .unwrap()
    .into_inner()
}

fn hello(node: &str) -> Hello {
    Hello {
        node: node.into(),
        ..Hello::default()
    }
}

async fn report(channel: &Channel, r: Report) {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(r),
        PathAndQuery::from_static(wire::REPORT),
        ProstCodec::<Report, ReportAck>::default(),
    )
    .await
    .unwrap();
}

/// One simulated node: runs each action for `busy`, counting how many run at once.
async fn node(
    channel: Channel,
    name: String,
    busy: Duration,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    ran: Arc<Mutex<HashMap<String, Vec<String>>>>,
) {
    let mut stream = connect(
        &channel,
        Hello {
            node: name.clone(),
            agent_version: "test".into(),
            scripts: vec!["reset-gpu".into()],
        },
    )
    .await;
    while let Ok(Some(cmd)) = stream.message().await {
        let Some(action) = cmd.action else { continue };
        assert_eq!(action.node, name);
        assert_eq!(action.labels.get("gpu").map(String::as_str), Some("0"));
        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        ran.lock()
            .unwrap()
            .entry(name.clone())
            .or_default()
            .push(action.id.clone());
        let base = Report {
            action_id: action.id.clone(),
            node: name.clone(),
            ..Report::default()
        };
        report(
            &channel,
            Report {
                phase: Phase::Started as i32,
                started_unix_ms: 1,
                ..base.clone()
            },
        )
        .await;
        tokio::time::sleep(busy).await;
        running.fetch_sub(1, Ordering::SeqCst);
        report(
            &channel,
            Report {
                phase: Phase::Finished as i32,
                exit_code: Some(0),
                finished_unix_ms: 2,
                ..base
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_nodes_faulting_at_once_never_run_more_than_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = RecoveryConfig::default();
    config.defaults.max_concurrent = 5;
    let rem = Remediation::open(
        config,
        dir.path(),
        None,
        Some(Arc::new(Fleet(100))),
        "http://collector".into(),
    )
    .unwrap();
    let channel = serve(Arc::clone(&rem)).await;
    let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let ran = Arc::new(Mutex::new(HashMap::new()));
    let names: Vec<String> = (0..100).map(|i| format!("n{i:03}")).collect();
    for name in &names {
        tokio::spawn(node(
            channel.clone(),
            name.clone(),
            Duration::from_millis(150),
            Arc::clone(&running),
            Arc::clone(&peak),
            Arc::clone(&ran),
        ));
    }
    // Every node connected before the fault, as in a running fleet.
    let deadline = Instant::now() + Duration::from_secs(20);
    while rem.connected().len() < 100 {
        assert!(
            Instant::now() < deadline,
            "{} connected",
            rem.connected().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        // The evaluator's view: an alert fires until its node's action finished.
        let (_, records) = rem.snapshot();
        let repaired: std::collections::HashSet<&str> = records
            .iter()
            .filter(|r| r.state == ActionState::Succeeded)
            .map(|r| r.node.as_str())
            .collect();
        if repaired.len() == 100 {
            break;
        }
        let firing: Vec<FiringAlert> = names
            .iter()
            .filter(|n| !repaired.contains(n.as_str()))
            .map(|n| alert(n))
            .collect();
        let now = now_ms();
        let r = Arc::clone(&rem);
        tokio::task::spawn_blocking(move || r.observe_rule("GpuFellOffBus", &firing, now))
            .await
            .unwrap();
        assert!(
            Instant::now() < deadline,
            "only {} of 100 repaired in time",
            repaired.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 5, "{peak} actions ran at once; the cap is 5");
    assert!(peak >= 2, "the cap was never used ({peak} at once)");
    let ran = ran.lock().unwrap();
    assert_eq!(ran.len(), 100);
    for (node, ids) in ran.iter() {
        assert_eq!(ids.len(), 1, "{node} ran {ids:?}");
    }
    let (_, records) = rem.snapshot();
    let skips = records
        .iter()
        .filter(|r| r.decision == Decision::SkipConcurrency)
        .count();
    assert!(skips >= 90, "{skips} concurrency skips recorded");
    // Recorded once per stretch, not once per evaluation (each alert fires for many).
    assert!(skips <= 300, "{skips} concurrency skips recorded");
    let runs = records
        .iter()
        .filter(|r| r.decision == Decision::Run)
        .count();
    assert_eq!(runs, 100);

    // The audit survives a restart: the same entries, read back from disk.
    drop(rem);
    let reopened = Remediation::open(
        RecoveryConfig::default(),
        dir.path(),
        None,
        None,
        String::new(),
    )
    .unwrap();
    let (_, again) = reopened.snapshot();
    assert_eq!(again.len(), records.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_sent_before_a_reconnect_is_sent_again_and_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let rem = Remediation::open(
        RecoveryConfig::default(),
        dir.path(),
        None,
        Some(Arc::new(Fleet(10))),
        String::new(),
    )
    .unwrap();
    let channel = serve(Arc::clone(&rem)).await;
    let mut first = connect(&channel, hello("n1")).await;
    rem.observe_rule("r", &[alert("n1")], now_ms());
    let a = first.message().await.unwrap().unwrap().action.unwrap();
    // The connection drops before the agent reports anything.
    drop(first);
    let mut second = connect(&channel, hello("n1")).await;
    let again = second.message().await.unwrap().unwrap().action.unwrap();
    assert_eq!(
        again.id, a.id,
        "the same action, by id: the agent runs it once"
    );
    report(
        &channel,
        Report {
            action_id: a.id.clone(),
            node: "n1".into(),
            phase: Phase::Finished as i32,
            exit_code: Some(3),
            ..Report::default()
        },
    )
    .await;
    let (_, records) = rem.snapshot();
    let r = records.iter().find(|r| r.id == a.id).unwrap();
    assert_eq!(r.state, ActionState::Failed);
    assert!(
        records
            .iter()
            .any(|e| e.decision == Decision::Escalate && e.reason.contains("exited with status 3")),
        "{records:?}"
    );
    // A report from another node for this action changes nothing.
    report(
        &channel,
        Report {
            action_id: a.id.clone(),
            node: "n2".into(),
            phase: Phase::Finished as i32,
            exit_code: Some(0),
            ..Report::default()
        },
    )
    .await;
    let (_, records) = rem.snapshot();
    assert_eq!(
        records.iter().find(|r| r.id == a.id).unwrap().state,
        ActionState::Failed
    );
}

/// A collector stopping with agents connected: their streams end, so the gRPC server's
/// graceful shutdown is not held up by agents that never hang up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_ends_the_agents_streams_so_the_server_can_stop() {
    let dir = tempfile::tempdir().unwrap();
    let rem = Remediation::open(
        RecoveryConfig::default(),
        dir.path(),
        None,
        None,
        String::new(),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ControlServer::new(Arc::clone(&rem)))
            .serve_with_incoming_shutdown(
                vigil_collector::tls::Incoming::new(listener, None, vigil_collector::tls::Alpn::H2)
                    .into_stream(),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let mut stream = connect(&channel, hello("n1")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while rem.connected().is_empty() {
        assert!(Instant::now() < deadline, "the agent never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // What the collector does on SIGTERM: the server drains while recovery closes.
    stop_tx.send(()).unwrap();
    rem.close_streams();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server did not stop within 5 s with an agent connected")
        .unwrap()
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the agent's stream did not end");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
    assert!(rem.connected().is_empty());
}
