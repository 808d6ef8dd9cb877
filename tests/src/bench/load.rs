//! Driving a collector with simulated nodes' OTLP requests.
//!
//! Throughput ([`run_ingest`]): every request is encoded before the clock starts, so
//! the generator's share of the two cores is the gRPC client alone. The fleet is
//! offered as it really ships — one request per node per second of timestamps — and
//! never faster than real time (round `r` is released at `r` seconds), so a collector
//! that keeps up shows the fleet's rate and one that does not shows its own ceiling.
//! Only samples in acknowledged requests, less those the collector said it rejected,
//! count.
//!
//! History ([`load_history`]): an hour of 1-second steps is sent as fast as the
//! collector takes it, uncompressed and encoded beside the sends: only what the
//! collector ends up holding is measured, and gzip would only slow both sides down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;

use super::fleet::Fleet;
use super::otlp::{Encoding, GrpcClient, NodeRequest};
use super::{load_average, machine_cpu_ticks, proc_sample};

/// Requests for `rounds` seconds of `nodes` nodes, indexed `[round][node]`; round `r`
/// carries timestamps `t0_ms + r s`. Encoded on every core, before any measurement.
pub fn encode_rounds(
    fleet: &Fleet,
    nodes: usize,
    rounds: usize,
    t0_ms: i64,
    start_unix_secs: Option<f64>,
) -> anyhow::Result<Vec<Vec<Bytes>>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_thread = nodes.div_ceil(threads);
    let mut by_node: Vec<Vec<Bytes>> = Vec::with_capacity(nodes);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let range = (t * per_thread).min(nodes)..((t + 1) * per_thread).min(nodes);
                scope.spawn(move || -> anyhow::Result<Vec<Vec<Bytes>>> {
                    let mut out = Vec::with_capacity(range.len());
                    for index in range {
                        let mut node = fleet.node(index);
                        let mut request = NodeRequest::new(&node, start_unix_secs, Encoding::Gzip)?;
                        let mut frames = Vec::with_capacity(rounds);
                        for r in 0..rounds {
                            frames.push(request.frame(&node, t0_ms + r as i64 * 1000)?);
                            node.advance();
                        }
                        out.push(frames);
                    }
                    Ok(out)
                })
            })
            .collect();
        for h in handles {
            let part = h
                .join()
                .map_err(|_| anyhow::anyhow!("an encoding thread panicked"))??;
            by_node.extend(part);
        }
        Ok(())
    })?;
    let mut rounds_out: Vec<Vec<Bytes>> = (0..rounds).map(|_| Vec::with_capacity(nodes)).collect();
    for frames in by_node {
        for (r, f) in frames.into_iter().enumerate() {
            rounds_out[r].push(f);
        }
    }
    Ok(rounds_out)
}

/// Settings of one throughput run.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub addr: std::net::SocketAddr,
    pub token: String,
    pub connections: usize,
    /// Samples in each request.
    pub points_per_request: usize,
    /// The measured window starts after this long and two rounds acknowledged.
    pub warmup: Duration,
    pub window: Duration,
    pub collector_pid: u32,
}

/// What a throughput run measured over its window.
#[derive(Debug, Clone)]
pub struct IngestReport {
    pub window_secs: f64,
    pub acked_samples: u64,
    pub samples_per_sec: f64,
    pub collector_cpu_percent: f64,
    pub generator_cpu_percent: f64,
    /// The whole machine's busy share over the window (100% = every core busy).
    pub machine_busy_percent: f64,
    /// 1-minute load average at the window's end.
    pub load_average: f64,
    /// Rounds (seconds of fleet time) the collector had fully taken by the window's end.
    pub rounds_done: u64,
    /// The generator ran out of encoded rounds before the window was over.
    pub ran_out: bool,
    /// Whether the collector kept pace with real time at the window's end.
    pub real_time: bool,
    pub rejected: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

struct Shared {
    next: AtomicUsize,
    acked_samples: AtomicU64,
    acked_requests: AtomicU64,
    rejected: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    stop: AtomicBool,
    /// Export latencies in microseconds, recorded while `recording` is set.
    latencies_us: std::sync::Mutex<Vec<u32>>,
    recording: AtomicBool,
}

impl Shared {
    fn new() -> Self {
        Self {
            next: AtomicUsize::new(0),
            acked_samples: AtomicU64::new(0),
            acked_requests: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: std::sync::Mutex::new(None),
            stop: AtomicBool::new(false),
            latencies_us: std::sync::Mutex::new(Vec::new()),
            recording: AtomicBool::new(false),
        }
    }

    fn error(&self, e: &anyhow::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert_with(|| format!("{e:#}"));
    }

    async fn send(&self, client: &mut GrpcClient, frame: Bytes, points: usize) {
        let began = Instant::now();
        match client.export(frame).await {
            Ok(ack) => {
                let accepted = (points as u64).saturating_sub(ack.rejected);
                self.acked_samples.fetch_add(accepted, Ordering::Relaxed);
                self.rejected.fetch_add(ack.rejected, Ordering::Relaxed);
                self.acked_requests.fetch_add(1, Ordering::Relaxed);
                if self.recording.load(Ordering::Relaxed) {
                    let us = u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX);
                    self.latencies_us
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(us);
                }
            }
            Err(e) => self.error(&e),
        }
    }
}

/// Offers `rounds` to the collector for warm-up plus window and measures the window.
pub fn run_ingest(
    settings: &IngestSettings,
    rounds: Arc<Vec<Vec<Bytes>>>,
) -> anyhow::Result<IngestReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(ingest(settings, rounds))
}

async fn ingest(
    settings: &IngestSettings,
    rounds: Arc<Vec<Vec<Bytes>>>,
) -> anyhow::Result<IngestReport> {
    let nodes = rounds.first().map_or(0, Vec::len);
    let total = rounds.len() * nodes;
    let shared = Arc::new(Shared::new());
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..settings.connections {
        let mut client = GrpcClient::connect(settings.addr, &settings.token).await?;
        let shared = Arc::clone(&shared);
        let rounds = Arc::clone(&rounds);
        let points = settings.points_per_request;
        workers.push(tokio::spawn(async move {
            while !shared.stop.load(Ordering::Relaxed) {
                let i = shared.next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let (round, node) = (i / nodes, i % nodes);
                // Never faster than the fleet would ship: round r exists at r seconds.
                let release = started + Duration::from_secs(round as u64);
                tokio::time::sleep_until(release.into()).await;
                shared
                    .send(&mut client, rounds[round][node].clone(), points)
                    .await;
            }
        }));
    }

    let per_round = (nodes * settings.points_per_request) as u64;
    let all_done =
        |workers: &[tokio::task::JoinHandle<()>]| workers.iter().all(|w| w.is_finished());
    // Warm-up: series creation (the first round) and caches settle.
    while started.elapsed() < settings.warmup
        || shared.acked_samples.load(Ordering::Relaxed) < 2 * per_round
    {
        if all_done(&workers) {
            anyhow::bail!(
                "the load ended during warm-up ({} errors; first: {})",
                shared.errors.load(Ordering::Relaxed),
                shared
                    .first_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_default()
            );
        }
        if started.elapsed() > settings.warmup * 20 {
            anyhow::bail!("warm-up did not finish: the collector took fewer than two rounds");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let collector_start = proc_sample(settings.collector_pid)?;
    let own_start = proc_sample(std::process::id())?;
    let machine_start = machine_cpu_ticks()?;
    let acked_start = shared.acked_samples.load(Ordering::Relaxed);
    shared.recording.store(true, Ordering::Relaxed);
    let window_start = Instant::now();
    let mut ran_out = false;
    while window_start.elapsed() < settings.window {
        if all_done(&workers) {
            ran_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let acked_end = shared.acked_samples.load(Ordering::Relaxed);
    let window_secs = window_start.elapsed().as_secs_f64();
    let collector_end = proc_sample(settings.collector_pid)?;
    let own_end = proc_sample(std::process::id())?;
    let machine_end = machine_cpu_ticks()?;
    shared.recording.store(false, Ordering::Relaxed);
    let requests_done = shared.acked_requests.load(Ordering::Relaxed);
    let fleet_secs_behind = started.elapsed().as_secs_f64() - (requests_done as f64 / nodes as f64);
    shared.stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let mut latencies = std::mem::take(
        &mut *shared
            .latencies_us
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() - 1) as f64 * p).round() as usize;
        f64::from(latencies[i]) / 1000.0
    };
    let acked = acked_end - acked_start;
    Ok(IngestReport {
        window_secs,
        acked_samples: acked,
        samples_per_sec: acked as f64 / window_secs.max(f64::MIN_POSITIVE),
        collector_cpu_percent: 100.0 * (collector_end.cpu_secs - collector_start.cpu_secs)
            / window_secs,
        generator_cpu_percent: 100.0 * (own_end.cpu_secs - own_start.cpu_secs) / window_secs,
        machine_busy_percent: 100.0 * (machine_end.0 - machine_start.0) as f64
            / (machine_end.1 - machine_start.1).max(1) as f64,
        load_average: load_average(),
        rounds_done: requests_done / nodes.max(1) as u64,
        ran_out,
        real_time: fleet_secs_behind < 2.0,
        rejected: shared.rejected.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        first_error: shared
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        latency_p50_ms: pct(0.5),
        latency_p99_ms: pct(0.99),
    })
}

/// What loading a history sent and what the collector took.
#[derive(Debug, Clone)]
pub struct HistoryReport {
    pub sent_samples: u64,
    pub acked_samples: u64,
    pub rejected: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

/// Sends `steps` 1-second steps of nodes `0..nodes`, step after step, timestamps from
/// `t0_ms`; no start times, so that both stores get exactly the same samples.
pub fn load_history(
    fleet: &Fleet,
    nodes: usize,
    steps: usize,
    t0_ms: i64,
    addr: std::net::SocketAddr,
    token: &str,
    connections: usize,
) -> anyhow::Result<HistoryReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tx, rx) = tokio::sync::mpsc::channel::<(Bytes, usize)>(256);
    let started = Instant::now();
    let fleet = fleet.clone();
    // Encoding on its own thread, one step of every node after another, so that a
    // node's steps reach the collector in order.
    let producer = std::thread::spawn(move || -> anyhow::Result<u64> {
        let mut sims: Vec<_> = (0..nodes).map(|i| fleet.node(i)).collect();
        let mut requests = sims
            .iter()
            .map(|n| NodeRequest::new(n, None, Encoding::Identity))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut sent = 0u64;
        for step in 0..steps {
            for (node, request) in sims.iter_mut().zip(&mut requests) {
                let frame = request.frame(node, t0_ms + step as i64 * 1000)?;
                sent += request.points() as u64;
                if tx.blocking_send((frame, request.points())).is_err() {
                    return Ok(sent);
                }
                node.advance();
            }
        }
        Ok(sent)
    });
    let shared = Arc::new(Shared::new());
    runtime.block_on(async {
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut workers = Vec::new();
        for _ in 0..connections.max(1) {
            let mut client = GrpcClient::connect(addr, token).await?;
            let rx = Arc::clone(&rx);
            let shared = Arc::clone(&shared);
            workers.push(tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some((frame, points)) = next else { break };
                    shared.send(&mut client, frame, points).await;
                }
            }));
        }
        for w in workers {
            w.await.context("a sender task failed")?;
        }
        anyhow::Ok(())
    })?;
    let sent = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the encoding thread panicked"))??;
    Ok(HistoryReport {
        sent_samples: sent,
        acked_samples: shared.acked_samples.load(Ordering::Relaxed),
        rejected: shared.rejected.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        first_error: shared
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        elapsed: started.elapsed(),
    })
}
