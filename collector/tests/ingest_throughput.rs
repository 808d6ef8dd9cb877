//! Ingest throughput, measured (not asserted: timing depends on the machine). Run with
//! `cargo test --release -p vigil-collector --test ingest_throughput -- --ignored --nocapture`.
//!
//! 1,000 simulated nodes, each a protobuf-encoded agent snapshot of 8 GPUs × 20 DCGM
//! fields plus 100 host series, sent through the receivers' protobuf decoding, OTLP
//! translation, label interning, the store's append (WAL write) and a WAL sync per
//! request, on two threads — the receivers' whole path short of the socket.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use prost::Message;
use vigil_collector::ingest::{Ingest, IngestOptions};
use vigil_collector::registry::Registry;
use vigil_collector::store::{Store, StoreOptions};
use vigil_proto::MetricFamily;
use vigil_proto::otlp::wire::Request;
use vigil_proto::otlp::{
    AgentResource, ExportMetricsServiceRequest, snapshot_to_resource_metrics, translate,
};

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
            // Where the time goes, single-threaded: prost (the old path, and what
            // OTLP/JSON still uses), the borrowed reader, and translation.
            let t = Instant::now();
            let reqs: Vec<ExportMetricsServiceRequest> = bodies
                .iter()
                .map(|b| ExportMetricsServiceRequest::decode(&b[..]).expect("valid"))
                .collect();
            let prost = t.elapsed();
            let t = Instant::now();
            let n: usize = reqs
                .iter()
                .map(|r| vigil_proto::otlp::decode(r).samples.len())
                .sum();
            let prost_translation = t.elapsed();
            let t = Instant::now();
            let views: Vec<Request<'_>> = bodies
                .iter()
                .map(|b| Request::parse(b).expect("valid"))
                .collect();
            let wire = t.elapsed();
            let t = Instant::now();
            let m: usize = views.iter().map(|v| translate(v).samples.len()).sum();
            let wire_translation = t.elapsed();
            assert_eq!(n, m);
            println!(
                "phases, one thread, {n} samples: prost decode {prost:?} + translation \
                 {prost_translation:?}; borrowed read {wire:?} + translation {wire_translation:?}"
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
                            .map(|b| ingest.export_protobuf_blocking(b).expect("stored").accepted)
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

/// Where the instructions go, for `valgrind --tool=callgrind` (counts do not depend
/// on the machine's load): 200 nodes, a round that creates the series, then steady
/// rounds (`VIGIL_CG_ROUNDS` in all, default 3) through the receivers' protobuf path,
/// one thread; `VIGIL_CG_PROST=1` decodes with prost and `export_blocking` instead,
/// the path before the borrowed reader. Run `valgrind --tool=callgrind
/// --callgrind-out-file=cg.out <test binary> --ignored --exact callgrind_steady_rounds`
/// and `callgrind_annotate --inclusive=yes cg.out`; the difference between runs of 3
/// and 1 rounds is two steady rounds.
#[test]
#[ignore = "a profile; run under callgrind"]
fn callgrind_steady_rounds() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open(StoreOptions::new(dir.path()))?);
    let ingest = Ingest::new(
        store.clone(),
        Arc::new(Registry::in_memory()),
        IngestOptions::default(),
    );
    let t0 = 1_700_000_000_000;
    let mut accepted = 0;
    let rounds: i64 = std::env::var("VIGIL_CG_ROUNDS").map_or(Ok(3), |r| r.parse())?;
    let prost = std::env::var_os("VIGIL_CG_PROST").is_some();
    for round in 0..rounds {
        let bodies: Vec<Vec<u8>> = (0..200)
            .map(|n| snapshot(&format!("node-{n:04}"), t0 + round * 1_000, round))
            .collect();
        for b in &bodies {
            accepted += if prost {
                let req = ExportMetricsServiceRequest::decode(&b[..])?;
                ingest.export_blocking(&req)?.accepted
            } else {
                ingest.export_protobuf_blocking(b)?.accepted
            };
        }
    }
    println!("{accepted} samples");
    Ok(())
}
