//! kill -9 the collector five times under load — the agent shipping every second and a
//! client posting OTLP/HTTP batches of known samples — and after each restart every
//! sample whose request was acknowledged (200) is queryable, with its value.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use vigil_e2e::collector::{
    Collector, ShippingAgent, TestDir, check_counts_every_cycle, series_of, sum_of, wait_for,
};
use vigil_e2e::otlp;

const NODE: &str = "gpu-node-crash";
const TOKEN: &str = "crash-token-6a0e";
const METRIC: &str = "vigil_e2e_crash_value";
/// Series per request (label `slot`) and points per series per request.
const SLOTS: usize = 40;
const POINTS: i64 = 5;
/// Time between a restart and the next kill: uneven, so kills land at different
/// points of the WAL's and the agent's cycles.
const RUN_BEFORE_KILL: [Duration; 5] = [
    Duration::from_millis(1700),
    Duration::from_millis(2300),
    Duration::from_millis(1100),
    Duration::from_millis(2900),
    Duration::from_millis(1500),
];

/// A request the collector acknowledged: its sequence number (the value of every sample
/// in it) and the timestamp of its first point (the others follow 1 ms apart).
#[derive(Debug, Clone, Copy)]
struct Acked {
    seq: u64,
    first_ms: i64,
}

#[test]
fn every_acknowledged_sample_survives_five_kill_nines() -> anyhow::Result<()> {
    let dir = TestDir::new("collector-crash")?;
    let result = scenario(dir.path());
    dir.finish(result)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Posts batches until `stop`, recording the acknowledged ones; counts the refused.
fn sender(
    addr: std::net::SocketAddr,
    stop: &AtomicBool,
    acked: &Mutex<Vec<Acked>>,
    failed: &AtomicU64,
) -> anyhow::Result<()> {
    let mut seq = 0u64;
    let mut next_ms = 0i64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let first_ms = now_ms().max(next_ms);
        next_ms = first_ms + POINTS;
        let slots: Vec<String> = (0..SLOTS).map(|s| s.to_string()).collect();
        let points = slots
            .iter()
            .flat_map(|slot| {
                (0..POINTS)
                    .map(move |i| otlp::point(&[("slot", slot.as_str())], first_ms + i, seq as f64))
            })
            .collect();
        let request = otlp::request(
            &[
                ("service.name", "crash-client"),
                ("host.name", "crash-client"),
            ],
            vec![otlp::gauge(METRIC, points)],
        );
        match otlp::post_protobuf(addr, &request, Some(TOKEN), seq.is_multiple_of(2)) {
            Ok(r) if r.status == 200 => acked
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .push(Acked { seq, first_ms }),
            // Refused, reset or not listening: the collector is down or going down.
            _ => {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Checks that every acknowledged request's samples are stored with their values.
fn verify(collector: &Collector, acked: &[Acked], range_secs: u64) -> anyhow::Result<usize> {
    let data = collector.query(&format!("{METRIC}[{range_secs}s]"), None)?;
    let mut stored: HashMap<(String, i64), f64> = HashMap::new();
    for series in series_of(&data)? {
        let slot = series.labels.get("slot").cloned().unwrap_or_default();
        for (t, v) in series.samples {
            stored.insert((slot.clone(), t), v);
        }
    }
    let mut checked = 0;
    for a in acked {
        for slot in 0..SLOTS {
            for i in 0..POINTS {
                let key = (slot.to_string(), a.first_ms + i);
                let value = stored.get(&key).with_context(|| {
                    format!(
                        "acknowledged request {} lost its sample slot={slot} at {} ms",
                        a.seq, key.1
                    )
                })?;
                ensure!(
                    *value == a.seq as f64,
                    "slot={slot} at {} ms: stored {value}, sent {}",
                    key.1,
                    a.seq
                );
                checked += 1;
            }
        }
    }
    Ok(checked)
}

fn scenario(dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut collector = Collector::start(dir, Some(TOKEN), &[])?;
    let agent = ShippingAgent::start(dir, NODE, &collector, &[])?;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let client = {
        let (addr, stop, acked, failed) = (
            collector.otlp_http,
            Arc::clone(&stop),
            Arc::clone(&acked),
            Arc::clone(&failed),
        );
        std::thread::spawn(move || sender(addr, &stop, &acked, &failed))
    };
    let result = crash_loop(&mut collector, &acked, started);
    stop.store(true, Ordering::Relaxed);
    let client_result = client
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))?;
    result?;
    client_result?;
    let acked_total = acked.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.len();
    println!(
        "{acked_total} requests acknowledged, {} refused or cut off",
        failed.load(Ordering::Relaxed)
    );

    // The agent's spool fills the gaps the crashes left: every cycle is there.
    let agent_cycles = sum_of(&agent.scrape()?, "vigil_agent_collections_total", &[])
        .context("the agent exposes no vigil_agent_collections_total")?;
    let range = started.elapsed().as_secs() + 10;
    let expr = format!("vigil_agent_collections_total{{node=\"{NODE}\"}}[{range}s]");
    let series = wait_for(
        Duration::from_secs(60),
        "the agent's spool to drain",
        || {
            let series = series_of(&collector.query(&expr, None)?)?;
            Ok(series
                .first()
                .and_then(|s| s.samples.last())
                .is_some_and(|(_, v)| *v >= agent_cycles)
                .then_some(series))
        },
    )?;
    ensure!(
        series.len() == 1,
        "expected one series, got {}",
        series.len()
    );
    let check = check_counts_every_cycle(&series[0])?;
    ensure!(
        check.first_value <= 1.0,
        "the agent's first collections are missing: stored from {}",
        check.first_value
    );
    println!("agent: {check:?}; test took {:?}", started.elapsed());
    Ok(())
}

fn crash_loop(
    collector: &mut Collector,
    acked: &Mutex<Vec<Acked>>,
    started: Instant,
) -> anyhow::Result<()> {
    let acked_count = || acked.lock().map(|a| a.len()).unwrap_or(0);
    for (round, run_for) in RUN_BEFORE_KILL.iter().enumerate() {
        // Load on the collector when it dies: the client has had acknowledgements
        // from this incarnation.
        let before = acked_count();
        wait_for(Duration::from_secs(30), "acknowledged batches", || {
            Ok((acked_count() >= before + 5).then_some(()))
        })?;
        std::thread::sleep(*run_for);
        collector.kill()?;
        let killed_at = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        collector.spawn()?;
        let snapshot: Vec<Acked> = acked
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        let checked = verify(collector, &snapshot, started.elapsed().as_secs() + 10)
            .with_context(|| format!("after kill -9 number {}", round + 1))?;
        println!(
            "kill -9 #{}: back in {:?}, {} acknowledged requests ({checked} samples) all stored",
            round + 1,
            killed_at.elapsed(),
            snapshot.len()
        );
    }
    Ok(())
}
