//! kill -9 the real collector five times while two senders ship numbered log lines —
//! one over OTLP/HTTP, one over OTLP/gRPC — recording which requests were
//! acknowledged; afterwards every acknowledged line is searchable exactly once, and no
//! line is indexed twice.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use vigil_e2e::collector::{Collector, TestDir, api_data, wait_for};
use vigil_e2e::http_request;

const NODE: &str = "gpu-node-logcrash";
const TOKEN: &str = "log-crash-token-31f7";
/// Lines per request.
const LINES: usize = 40;
const RUN_BEFORE_KILL: [Duration; 5] = [
    Duration::from_millis(1300),
    Duration::from_millis(2100),
    Duration::from_millis(900),
    Duration::from_millis(2500),
    Duration::from_millis(1600),
];

#[test]
fn every_acknowledged_line_is_searchable_once_after_five_kill_nines() -> anyhow::Result<()> {
    let dir = TestDir::new("logs-crash")?;
    let result = scenario(dir.path());
    dir.finish(result)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn string(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    })
}

/// Lines `first .. first + LINES` of `sender`: bodies `crashline <sender>-<n>`.
fn request(sender: &str, first: u64) -> ExportLogsServiceRequest {
    let t = now_ns();
    let records = (0..LINES as u64)
        .map(|i| LogRecord {
            time_unix_nano: t + i,
            severity_text: "INFO".into(),
            body: string(&format!("crashline {sender}-{}", first + i)),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "host.name".into(),
                    value: string(NODE),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Sends batches until `stop`; pushes the first line number of each acknowledged one.
fn sender(
    name: &'static str,
    collector: (std::net::SocketAddr, std::net::SocketAddr),
    stop: &AtomicBool,
    acked: &Mutex<Vec<(String, u64)>>,
    failed: &AtomicU64,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (http, grpc) = collector;
    let mut next = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let req = request(name, next);
        let ok = if name == "http" {
            let auth = format!("Bearer {TOKEN}");
            let headers = [
                ("Content-Type", "application/x-protobuf"),
                ("Authorization", auth.as_str()),
            ];
            matches!(http_request(http, "POST", "/v1/logs", &headers, &req.encode_to_vec()), Ok(r) if r.status == 200)
        } else {
            runtime.block_on(async {
                let Ok(mut client) = LogsServiceClient::connect(format!("http://{grpc}")).await
                else {
                    return false;
                };
                let mut r = tonic::Request::new(req);
                if let Ok(v) = format!("Bearer {TOKEN}").parse() {
                    r.metadata_mut().insert("authorization", v);
                }
                tokio::time::timeout(Duration::from_secs(10), client.export(r))
                    .await
                    .is_ok_and(|r| r.is_ok())
            })
        };
        if ok {
            acked
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .push((name.to_owned(), next));
        } else {
            failed.fetch_add(1, Ordering::Relaxed);
        }
        next += LINES as u64;
        std::thread::sleep(Duration::from_millis(15));
    }
    Ok(())
}

/// Every `crashline` body in the index and how often it is there.
fn indexed(collector: &Collector) -> anyhow::Result<HashMap<String, usize>> {
    let mut counts = HashMap::new();
    let mut cursor = String::new();
    loop {
        let path =
            format!("/api/v1/logs/search?q=crashline&node={NODE}&limit=10000&cursor={cursor}");
        let data = api_data(&collector.get(&path)?, &path)?;
        for l in data["hits"].as_array().context("data.hits")? {
            let body = l["body"].as_str().unwrap_or_default().to_owned();
            *counts.entry(body).or_insert(0) += 1;
        }
        match data["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return Ok(counts),
        }
    }
}

fn scenario(dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut collector = Collector::start(dir, Some(TOKEN), &[])?;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = ["http", "grpc"]
        .into_iter()
        .map(|name| {
            let (stop, acked, failed) =
                (Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&failed));
            let addrs = (collector.otlp_http, collector.otlp_grpc);
            std::thread::spawn(move || sender(name, addrs, &stop, &acked, &failed))
        })
        .collect();
    let acked_count = || acked.lock().map(|a| a.len()).unwrap_or(0);
    let mut crash = || -> anyhow::Result<()> {
        for (round, run_for) in RUN_BEFORE_KILL.iter().enumerate() {
            let before = acked_count();
            wait_for(Duration::from_secs(30), "acknowledged batches", || {
                Ok((acked_count() >= before + 5).then_some(()))
            })?;
            std::thread::sleep(*run_for);
            collector.kill()?;
            let killed = Instant::now();
            std::thread::sleep(Duration::from_millis(200));
            collector.spawn()?;
            println!(
                "kill -9 #{}: back in {:?}, {} requests acknowledged so far",
                round + 1,
                killed.elapsed(),
                acked_count()
            );
        }
        Ok(())
    };
    let result = crash();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
    }
    result?;
    let acked: Vec<(String, u64)> = acked
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let want: Vec<String> = acked
        .iter()
        .flat_map(|(s, first)| {
            (*first..*first + LINES as u64).map(move |n| format!("crashline {s}-{n}"))
        })
        .collect();
    let counts = wait_for(
        Duration::from_secs(20),
        "every acknowledged line to be searchable",
        || {
            let counts = indexed(&collector)?;
            Ok(want
                .iter()
                .all(|w| counts.contains_key(w))
                .then_some(counts))
        },
    )
    .with_context(|| format!("{} acknowledged lines", want.len()))?;
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    ensure!(twice.is_empty(), "lines indexed more than once: {twice:?}");
    println!(
        "{} requests ({} lines) acknowledged and found once each; {} refused or cut off; {} lines indexed in all; took {:?}",
        acked.len(),
        want.len(),
        failed.load(Ordering::Relaxed),
        counts.len(),
        started.elapsed()
    );
    Ok(())
}
