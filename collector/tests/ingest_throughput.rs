//! Ingest throughput, measured (not asserted: timing depends on the machine). Run with
//! `cargo test --release -p vigil-collector --test ingest_throughput -- --ignored --nocapture`.
//!
//! 1,000 simulated nodes, each a protobuf-encoded agent snapshot of 8 GPUs × 20 DCGM
//! fields plus 100 host series, sent through prost decoding, OTLP translation, label
//! interning, the store's append (WAL write) and a WAL sync per request, on two
//! threads — the receivers' whole path short of the socket.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use prost::Message;
use vigil_collector::ingest::{Ingest, IngestOptions};
use vigil_collector::registry::Registry;
use vigil_collector::store::{Store, StoreOptions};
use vigil_proto::MetricFamily;
use vigil_proto::otlp::{AgentResource, ExportMetricsServiceRequest, snapshot_to_resource_metrics};

const NODES: usize = 1_000;
const ROUNDS: i64 = 5;
const THREADS: usize = 2;

fn snapshot(node: &str, t_ms: i64, round: i64) -> Vec<u8> {
    let mut families = Vec::new();
    for field in 0..20 {
        let name = format!("DCGM_FI_DEV_FIELD_{field}");
        let mut f = MetricFamily::gauge(name, "a DCGM field");
        for gpu in 0..8 {
            let g = gpu.to_string();
            let uuid = format!("GPU-{node}-{gpu}");
            f.push(
                &[
                    ("gpu", &g),
                    ("UUID", &uuid),
                    ("pci_bus_id", "00000000:17:00.0"),
                    ("device", "nvidia0"),
                    ("modelName", "NVIDIA H100 80GB HBM3"),
                    ("Hostname", node),
                ],
                (round * 7 + field + gpu) as f64,
            );
        }
        families.push(f);
    }
    let mut cpu = MetricFamily::counter("node_cpu_seconds_total", "cpu");
    for c in 0..25 {
        for mode in ["user", "system", "idle", "iowait"] {
            cpu.push(
                &[("cpu", &c.to_string()), ("mode", mode)],
                (round * 100 + c) as f64,
            );
        }
    }
    families.push(cpu);
    let res = AgentResource {
        node,
        agent_version: "0.1.0",
        interval_secs: 1.0,
    };
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![snapshot_to_resource_metrics(&families, &res, t_ms)],
    };
    req.encode_to_vec()
}

#[test]
#[ignore = "a measurement; run in release with --ignored --nocapture"]
fn sustained_ingest_samples_per_second() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open(StoreOptions::new(dir.path()))?);
    let ingest = Arc::new(Ingest::new(
        store.clone(),
        Arc::new(Registry::in_memory()),
        IngestOptions::default(),
    ));
    let t0 = 1_700_000_000_000;
    let mut total_samples = 0u64;
    let mut timed = std::time::Duration::ZERO;
    for round in 0..ROUNDS {
        let bodies: Vec<Vec<u8>> = (0..NODES)
            .map(|n| snapshot(&format!("node-{n:04}"), t0 + round * 1_000, round))
            .collect();
        if round == 1 {
            // Where the time goes, single-threaded: protobuf, then OTLP translation.
            let t = Instant::now();
            let reqs: Vec<ExportMetricsServiceRequest> = bodies
                .iter()
                .map(|b| ExportMetricsServiceRequest::decode(&b[..]).expect("valid"))
                .collect();
            let protobuf = t.elapsed();
            let t = Instant::now();
            let n: usize = reqs
                .iter()
                .map(|r| vigil_proto::otlp::decode(r).samples.len())
                .sum();
            println!(
                "phases, one thread: protobuf decode {protobuf:?}, OTLP translation {:?} for {n} samples",
                t.elapsed()
            );
            let t = Instant::now();
            for _ in 0..100 {
                store.sync()?;
            }
            println!("100 syncs with nothing new: {:?}", t.elapsed());
        }
        let started = Instant::now();
        let accepted: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = bodies
                .chunks(NODES / THREADS)
                .map(|chunk| {
                    let ingest = ingest.clone();
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|b| {
                                let req =
                                    ExportMetricsServiceRequest::decode(&b[..]).expect("valid");
                                ingest.export_blocking(&req).expect("stored").accepted
                            })
                            .sum::<u64>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .sum()
        });
        let took = started.elapsed();
        println!(
            "round {round}: {accepted} samples in {took:?} = {:.0} samples/s",
            accepted as f64 / took.as_secs_f64()
        );
        // The first round creates every series; steady state is what the agents cost.
        if round > 0 {
            total_samples += accepted;
            timed += took;
        }
    }
    println!(
        "steady state: {:.0} samples/s ({} series)",
        total_samples as f64 / timed.as_secs_f64(),
        store.stats().series
    );
    Ok(())
}
