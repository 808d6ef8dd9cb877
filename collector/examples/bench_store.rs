//! Store benchmark: a fleet of agents shipping one batch per node per second.
//!
//! `cargo run --release -p vigil-collector --example bench_store -- [--nodes N]
//! [--samples N] [--dir PATH]`
//!
//! Each node sends ~60 series per scrape (8 GPUs × 4 dcgm-exporter metrics, 28 host
//! series with node_exporter names), with the labels the ingest attaches. Prints
//! ingest rate, compression, memory, WAL size, select latency over all 8 × N GPU
//! series for 15 minutes, and the time to reopen (WAL replay) and to checkpoint.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use vigil_collector::store::{Store, StoreOptions, TimeRange};
use vigil_rules::promql::{Engine, Labels, MatchOp, Matcher, Matchers, parse};

const GPUS: usize = 8;
const GPU_METRICS: [&str; 4] = [
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_FB_USED",
];
const START_MS: i64 = 1_764_000_000_000;

struct Args {
    nodes: usize,
    samples: usize,
    dir: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        nodes: 1_000,
        samples: 900,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--nodes" => a.nodes = value.parse()?,
            "--samples" => a.samples = value.parse()?,
            "--dir" => a.dir = Some(PathBuf::from(value)),
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok(a)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How a series' value moves from one scrape to the next.
#[derive(Clone, Copy)]
enum Shape {
    /// Integer percentage that wanders.
    Util,
    /// Integer degrees, slow.
    Temp,
    /// Watts with two decimals.
    Power,
    /// MiB in use, changes now and then.
    Memory,
    /// Counter of seconds with 10 ms resolution.
    CpuSeconds,
    /// Byte counter.
    Bytes,
    /// Gauge that rarely changes.
    Steady,
}

struct SeriesGen {
    labels: Labels,
    shape: Shape,
    v: f64,
}

impl SeriesGen {
    fn step(&mut self, rng: &mut Rng) -> f64 {
        self.v = match self.shape {
            Shape::Util => (self.v + rng.below(21) as f64 - 10.0).clamp(0.0, 100.0),
            Shape::Temp => (self.v + rng.below(3) as f64 - 1.0).clamp(30.0, 90.0),
            Shape::Power => {
                ((self.v + (rng.below(4001) as f64 - 2000.0) / 100.0).clamp(60.0, 700.0) * 100.0)
                    .round()
                    / 100.0
            }
            Shape::Memory if rng.below(10) == 0 => {
                (self.v + rng.below(2049) as f64 - 1024.0).max(0.0)
            }
            Shape::CpuSeconds => ((self.v + rng.below(101) as f64 / 100.0) * 100.0).round() / 100.0,
            Shape::Bytes => self.v + (rng.below(1 << 20) * 64) as f64,
            Shape::Steady if rng.below(60) == 0 => self.v + 4096.0 * (rng.below(9) as f64 - 4.0),
            Shape::Memory | Shape::Steady => self.v,
        };
        self.v
    }
}

fn node_series(node: usize, rng: &mut Rng) -> Vec<SeriesGen> {
    let host = format!("gpu-node-{node:04}");
    let instance = format!("{host}:9435");
    let mut out = Vec::new();
    let mut add = |pairs: Vec<(&str, String)>, shape: Shape, v: f64| {
        let mut all = pairs;
        all.push(("instance", instance.clone()));
        all.push(("node", host.clone()));
        out.push(SeriesGen {
            labels: Labels::from_pairs(all),
            shape,
            v,
        });
    };
    for gpu in 0..GPUS {
        for (m, shape, v) in [
            (GPU_METRICS[0], Shape::Util, 50.0),
            (GPU_METRICS[1], Shape::Temp, 55.0),
            (GPU_METRICS[2], Shape::Power, 300.0),
            (GPU_METRICS[3], Shape::Memory, 40_000.0),
        ] {
            add(
                vec![
                    ("__name__", m.to_string()),
                    ("gpu", gpu.to_string()),
                    (
                        "UUID",
                        format!(
                            "GPU-{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                            node * 31 + gpu,
                            gpu,
                            node % 4096,
                            gpu,
                            node
                        ),
                    ),
                    (
                        "pci_bus_id",
                        format!("00000000:{:02X}:00.0", 0x18 + gpu * 0x10),
                    ),
                    ("device", format!("nvidia{gpu}")),
                    ("modelName", "NVIDIA H100 80GB HBM3".to_string()),
                    ("Hostname", host.clone()),
                ],
                shape,
                v,
            );
        }
    }
    for cpu in 0..4 {
        for mode in ["user", "system", "idle", "iowait"] {
            let v = rng.below(1_000_000) as f64;
            add(
                vec![
                    ("__name__", "node_cpu_seconds_total".into()),
                    ("cpu", cpu.to_string()),
                    ("mode", mode.into()),
                ],
                Shape::CpuSeconds,
                v,
            );
        }
    }
    for (name, shape) in [
        ("node_memory_MemAvailable_bytes", Shape::Steady),
        ("node_memory_MemTotal_bytes", Shape::Steady),
        ("node_load1", Shape::Temp),
        ("node_load5", Shape::Temp),
    ] {
        add(vec![("__name__", name.into())], shape, 1e11);
    }
    for device in ["eth0", "ib0"] {
        for name in [
            "node_network_receive_bytes_total",
            "node_network_transmit_bytes_total",
        ] {
            add(
                vec![("__name__", name.into()), ("device", device.into())],
                Shape::Bytes,
                0.0,
            );
        }
    }
    for mp in ["/", "/data", "/scratch"] {
        add(
            vec![
                ("__name__", "node_filesystem_avail_bytes".into()),
                ("mountpoint", mp.into()),
                ("fstype", "ext4".into()),
            ],
            Shape::Steady,
            5e11,
        );
    }
    let _ = rng.next();
    out
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn timed<T>(runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<(Duration, Duration, T)> {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f()?);
        times.push(t.elapsed());
    }
    times.sort();
    Ok((times[0], times[runs / 2], last.context("no runs")?))
}

fn main() -> Result<()> {
    let a = args()?;
    let tmp = tempfile::tempdir()?;
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let mut opts = StoreOptions::new(&dir);
    // Keep the whole run in the WAL so the reopen below measures a full replay.
    opts.checkpoint_min_wal_bytes = u64::MAX;
    let rss_start = rss_bytes();
    let store = Store::open(opts.clone())?;

    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut fleet: Vec<Vec<SeriesGen>> = (0..a.nodes).map(|n| node_series(n, &mut rng)).collect();
    let per_node = fleet.first().map_or(0, Vec::len);
    println!(
        "fleet: {} nodes × {per_node} series = {} series; {} scrapes at 1 s",
        a.nodes,
        a.nodes * per_node,
        a.samples
    );

    let mut batch: Vec<(Labels, i64, f64)> = Vec::with_capacity(per_node);
    let mut appended = 0u64;
    let mut append_time = Duration::ZERO;
    let mut sync_time = Duration::ZERO;
    for k in 0..a.samples as i64 {
        for (n, node) in fleet.iter_mut().enumerate() {
            // Each agent scrapes on its own phase with a few ms of jitter.
            let t = START_MS + k * 1_000 + (n as i64 * 37) % 1_000 + rng.below(4) as i64;
            batch.clear();
            batch.extend(
                node.iter_mut()
                    .map(|s| (s.labels.clone(), t, s.step(&mut rng))),
            );
            let started = Instant::now();
            let r = store.append_batch(&batch)?;
            append_time += started.elapsed();
            appended += r.accepted as u64;
        }
        // One group commit per second of fleet data, as the ingest acknowledges.
        let started = Instant::now();
        store.sync()?;
        sync_time += started.elapsed();
    }
    let total = append_time + sync_time;
    let stats = store.stats();
    let rss = rss_bytes();
    println!(
        "ingest: {appended} samples in {:.2} s ({:.2} s appending, {:.2} s fsync) = {:.0} samples/s ({:.0}/s without fsync)",
        total.as_secs_f64(),
        append_time.as_secs_f64(),
        sync_time.as_secs_f64(),
        appended as f64 / total.as_secs_f64(),
        appended as f64 / append_time.as_secs_f64()
    );
    println!(
        "chunks: {:.1} MiB compressed for {} samples = {:.3} bytes/sample ({:.3} with chunk bookkeeping)",
        mib(stats.chunk_bytes),
        stats.head_samples,
        stats.chunk_bytes as f64 / stats.head_samples as f64,
        store.chunk_memory_bytes() as f64 / stats.head_samples as f64
    );
    println!(
        "memory: RSS {:.1} MiB (started at {:.1} MiB) = {:.0} bytes per series with {} s of history; WAL {:.1} MiB on disk ({:.2} bytes/sample)",
        mib(rss),
        mib(rss_start),
        (rss - rss_start.min(rss)) as f64 / stats.series as f64,
        a.samples,
        mib(stats.wal_bytes),
        stats.wal_bytes as f64 / appended as f64
    );

    let end = START_MS + (a.samples as i64 - 1) * 1_000 + 1_000;
    let start = end - 15 * 60_000;
    let util = Matchers::new(vec![Matcher::new(
        MatchOp::Equal,
        "__name__",
        GPU_METRICS[0],
    )]);
    let (best, median, got) = timed(7, || Ok(store.select(&util, start, end)?))?;
    let points: usize = got.iter().map(|s| s.samples.len()).sum();
    println!(
        "select {}[15m]: {} series, {points} samples; best {:.1} ms, median {:.1} ms ({:.1} ns/sample)",
        GPU_METRICS[0],
        got.len(),
        best.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        median.as_nanos() as f64 / points.max(1) as f64
    );
    drop(got);
    let one_node = Matchers::new(vec![
        Matcher::new(MatchOp::Equal, "__name__", GPU_METRICS[0]),
        Matcher::new(MatchOp::Equal, "node", "gpu-node-0042"),
    ]);
    let (_, median, got) = timed(51, || Ok(store.select(&one_node, start, end)?))?;
    println!(
        "select one node's {} [15m]: {} series; median {:.3} ms",
        GPU_METRICS[0],
        got.len(),
        median.as_secs_f64() * 1e3
    );

    let engine = Engine::default();
    let expr = parse(r#"avg by (node) (avg_over_time(DCGM_FI_DEV_GPU_UTIL[5m]))"#)?;
    let (_, median, _) = timed(5, || Ok(engine.instant(&store, &expr, end)?))?;
    println!(
        "promql instant avg by (node) (avg_over_time(DCGM_FI_DEV_GPU_UTIL[5m])): median {:.1} ms",
        median.as_secs_f64() * 1e3
    );
    let (_, median, names) = timed(5, || Ok(store.label_values("node", &[], TimeRange::ALL)))?;
    println!(
        "label values of node: {} values; median {:.3} ms",
        names.len(),
        median.as_secs_f64() * 1e3
    );

    drop(store);
    let started = Instant::now();
    let store = Store::open(opts.clone())?;
    println!(
        "reopen by WAL replay: {} series, {} samples in {:.2} s",
        store.stats().series,
        store.stats().head_samples,
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let cp = store.checkpoint()?;
    println!(
        "checkpoint: {} series, {:.1} MiB in {:.2} s, freed {:.1} MiB of WAL",
        cp.series,
        mib(cp.bytes),
        started.elapsed().as_secs_f64(),
        mib(cp.wal_bytes_freed)
    );
    drop(store);
    let started = Instant::now();
    let reopened = Store::open(opts)?;
    println!(
        "reopen from checkpoint: {} series, {} samples in {:.2} s",
        reopened.stats().series,
        reopened.stats().head_samples,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
