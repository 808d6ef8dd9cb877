//! Memory per active series: a fleet of nodes shipping realistic GPU and host values
//! once a second for an hour, then the process's RSS split into chunk bytes and
//! per-series overhead.
//!
//! `cargo run --release -p vigil-collector --example bench_store_memory -- [--nodes N]
//! [--seconds S] [--head-in-memory-s S] [--dir PATH]`
//!
//! Each node has 60 series: 8 GPUs × 6 dcgm-exporter metrics moving the way the NVML
//! simulator (agent/nvml-sim/sim_state.c) moves them (utilisation and temperature as
//! integers, power with one decimal, framebuffer in MiB, energy as a counter that rises
//! with power, SM clock), and 12 host series (CPU seconds, memory, network counters,
//! load). Timestamps carry a few milliseconds of jitter, as an agent's do.
//!
//! The RSS baseline is taken before the fleet's labels exist, so label memory counts
//! as overhead, as it would for labels decoded from OTLP (the generator's own state,
//! about 24 bytes a series, is included too).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use vigil_collector::store::{Store, StoreOptions};
use vigil_rules::promql::{Engine, Labels, MatchOp, Matcher, Matchers, Value, parse};

const GPUS: usize = 8;
const START_MS: i64 = 1_764_000_000_000;

struct Args {
    nodes: usize,
    seconds: usize,
    head_in_memory_s: Option<i64>,
    dir: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        nodes: 1_000,
        seconds: 3_600,
        head_in_memory_s: None,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--nodes" => a.nodes = value.parse()?,
            "--seconds" => a.seconds = value.parse()?,
            "--head-in-memory-s" => a.head_in_memory_s = Some(value.parse()?),
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

#[derive(Clone, Copy)]
enum Shape {
    Util,
    Temp,
    Power,
    FbUsedBytes,
    EnergyMillijoules,
    SmClockMhz,
    CpuSeconds,
    MemAvailableBytes,
    NetBytes,
    Load,
}

struct Gen {
    labels: Labels,
    shape: Shape,
    phase: f64,
    v: f64,
}

/// The simulator's utilisation curve: slow and fast sine waves, clamped, rounded.
fn util(t_s: f64, phase: f64) -> f64 {
    (60.0 + 30.0 * (t_s / 47.0 + phase).sin() + 6.0 * (t_s / 7.3 + 2.0 * phase).sin())
        .clamp(0.0, 100.0)
        .round()
}

impl Gen {
    fn value(&mut self, t_s: f64, rng: &mut Rng) -> f64 {
        let u = util(t_s, self.phase);
        self.v = match self.shape {
            Shape::Util => u,
            Shape::Temp => (36.0 + u * 0.3 + 1.5 * (t_s / 11.0 + self.phase).sin()).round(),
            Shape::Power => {
                ((72.0 + u * 5.1 + 6.0 * (t_s / 5.0 + self.phase).sin()) * 10.0).round() / 10.0
            }
            // Framebuffer in use: steps of whole MiB when a job allocates, sent in bytes.
            Shape::FbUsedBytes if rng.below(30) == 0 => {
                ((self.v / 1_048_576.0 + rng.below(4_097) as f64 - 2_048.0).clamp(512.0, 81_000.0))
                    .round()
                    * 1_048_576.0
            }
            Shape::FbUsedBytes => self.v,
            Shape::EnergyMillijoules => {
                (self.v + (72.0 + u * 5.1) * 1_000.0 + rng.below(1_000) as f64).round()
            }
            Shape::SmClockMhz if u < 5.0 => 210.0,
            Shape::SmClockMhz => 1_980.0,
            Shape::CpuSeconds => ((self.v + rng.below(101) as f64 / 100.0) * 100.0).round() / 100.0,
            Shape::MemAvailableBytes if rng.below(5) == 0 => {
                self.v + 4_096.0 * (rng.below(2_001) as f64 - 1_000.0)
            }
            Shape::MemAvailableBytes => self.v,
            Shape::NetBytes => self.v + (rng.below(1 << 16) * 1_500) as f64,
            Shape::Load => (u / 10.0 * 100.0).round() / 100.0,
        };
        self.v
    }
}

fn node_series(node: usize, rng: &mut Rng) -> Vec<Gen> {
    let host = format!("gpu-node-{node:04}");
    let instance = format!("{host}:9435");
    let mut out = Vec::new();
    let mut add = |pairs: Vec<(&str, String)>, shape: Shape, phase: f64, v: f64| {
        let mut all = pairs;
        all.push(("instance", instance.clone()));
        all.push(("node", host.clone()));
        out.push(Gen {
            labels: Labels::from_pairs(all),
            shape,
            phase,
            v,
        });
    };
    for gpu in 0..GPUS {
        let phase = rng.below(6_283) as f64 / 1_000.0;
        for (name, shape, v) in [
            ("DCGM_FI_DEV_GPU_UTIL", Shape::Util, 0.0),
            ("DCGM_FI_DEV_GPU_TEMP", Shape::Temp, 0.0),
            ("DCGM_FI_DEV_POWER_USAGE", Shape::Power, 0.0),
            (
                "DCGM_FI_DEV_FB_USED",
                Shape::FbUsedBytes,
                40_000.0 * 1_048_576.0,
            ),
            (
                "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
                Shape::EnergyMillijoules,
                1e11 + rng.below(50_000_000_000) as f64,
            ),
            ("DCGM_FI_DEV_SM_CLOCK", Shape::SmClockMhz, 0.0),
        ] {
            add(
                vec![
                    ("__name__", name.to_string()),
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
                phase,
                v,
            );
        }
    }
    for cpu in 0..2 {
        for mode in ["user", "system", "idle", "iowait"] {
            add(
                vec![
                    ("__name__", "node_cpu_seconds_total".into()),
                    ("cpu", cpu.to_string()),
                    ("mode", mode.into()),
                ],
                Shape::CpuSeconds,
                0.0,
                rng.below(1_000_000) as f64,
            );
        }
    }
    add(
        vec![("__name__", "node_memory_MemAvailable_bytes".into())],
        Shape::MemAvailableBytes,
        0.0,
        4e11,
    );
    add(
        vec![("__name__", "node_load1".into())],
        Shape::Load,
        rng.below(6_283) as f64 / 1_000.0,
        0.0,
    );
    for dir in ["receive", "transmit"] {
        add(
            vec![
                ("__name__", format!("node_network_{dir}_bytes_total")),
                ("device", "ib0".into()),
            ],
            Shape::NetBytes,
            0.0,
            0.0,
        );
    }
    out
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
}

fn rss_bytes() -> u64 {
    status_kib("VmRSS:") * 1024
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn median_of<T>(runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<(Duration, T)> {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f()?);
        times.push(t.elapsed());
    }
    times.sort();
    Ok((times[runs / 2], last.context("no runs")?))
}

fn main() -> Result<()> {
    let a = args()?;
    let tmp = tempfile::tempdir()?;
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let mut opts = StoreOptions::new(&dir);
    if let Some(s) = a.head_in_memory_s {
        opts.head_in_memory_ms = s * 1_000;
    }
    let rss_base = rss_bytes();
    let store = Store::open(opts.clone())?;

    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut fleet: Vec<Vec<Gen>> = (0..a.nodes).map(|n| node_series(n, &mut rng)).collect();
    let series = fleet.iter().map(Vec::len).sum::<usize>();
    println!(
        "fleet: {} nodes, {series} series, {} s at 1 s (head_in_memory_ms = {})",
        a.nodes, a.seconds, opts.head_in_memory_ms
    );

    let mut batch: Vec<(Labels, i64, f64)> = Vec::new();
    let mut appended = 0u64;
    let started = Instant::now();
    let mut append_time = Duration::ZERO;
    let mut housekeeping = Duration::ZERO;
    for k in 0..a.seconds as i64 {
        for (n, node) in fleet.iter_mut().enumerate() {
            let t = START_MS + k * 1_000 + (n as i64 * 37) % 1_000 + rng.below(4) as i64;
            let t_s = t as f64 / 1_000.0;
            batch.clear();
            batch.extend(
                node.iter_mut()
                    .map(|g| (g.labels.clone(), t, g.value(t_s, &mut rng))),
            );
            let t0 = Instant::now();
            appended += store.append_batch(&batch)?.accepted as u64;
            append_time += t0.elapsed();
        }
        let t0 = Instant::now();
        store.sync()?;
        // The collector's housekeeping loop runs retention once a minute.
        if k % 60 == 59 {
            store.apply_retention(START_MS + k * 1_000)?;
        }
        housekeeping += t0.elapsed();
    }
    drop(batch);
    let total = started.elapsed();
    let rss = rss_bytes();
    let stats = store.stats();
    let heap_chunks = store.chunk_memory_bytes() as u64;
    let grown = rss.saturating_sub(rss_base);
    let per_series = grown as f64 / series as f64;
    println!(
        "ingest: {appended} samples in {:.1} s = {:.0} samples/s ({:.0}/s in append_batch; {:.1} s fsync + retention)",
        total.as_secs_f64(),
        appended as f64 / total.as_secs_f64(),
        appended as f64 / append_time.as_secs_f64(),
        housekeeping.as_secs_f64()
    );
    println!(
        "RSS: {:.1} MiB after load, {:.1} MiB before (peak {:.1} MiB); grew {:.1} MiB = {per_series:.0} bytes/series, {:.3} bytes/sample",
        mib(rss),
        mib(rss_base),
        status_kib("VmHWM:") as f64 / 1024.0,
        mib(grown),
        grown as f64 / appended as f64
    );
    println!(
        "  chunks in heap: {:.1} MiB = {:.0} bytes/series ({:.3} bytes/sample stored, {:.3} compressed)",
        mib(heap_chunks),
        heap_chunks as f64 / series as f64,
        heap_chunks as f64 / stats.head_samples as f64,
        stats.chunk_bytes as f64 / stats.head_samples as f64
    );
    println!(
        "  everything else (labels, index, series structs, allocator): {:.0} bytes/series",
        (grown as f64 - heap_chunks as f64) / series as f64
    );
    println!(
        "  on disk: {:.1} MiB of chunks spilled ({:.1} MiB of chunk files), WAL {:.1} MiB",
        mib(stats.spilled_chunk_bytes),
        mib(stats.chunk_file_bytes),
        mib(stats.wal_bytes)
    );

    let end = START_MS + a.seconds as i64 * 1_000;
    let engine = Engine::default();
    for q in [
        "sum by (node) (rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[5m]))",
        "max by (node) (max_over_time(DCGM_FI_DEV_GPU_TEMP[15m]))",
        "avg by (node) (avg_over_time(DCGM_FI_DEV_GPU_UTIL[1h]))",
    ] {
        let expr = parse(q)?;
        let (median, v) = median_of(5, || Ok(engine.instant(&store, &expr, end)?))?;
        println!(
            "promql instant {q}: median {:.1} ms ({v} results)",
            median.as_secs_f64() * 1e3,
            v = result_len(&v)
        );
    }
    let temp = Matchers::new(vec![Matcher::new(
        MatchOp::Equal,
        "__name__",
        "DCGM_FI_DEV_GPU_TEMP",
    )]);
    let (median, got) = median_of(5, || Ok(store.select(&temp, end - 3_600_000, end)?))?;
    let points: usize = got.iter().map(|s| s.samples.len()).sum();
    println!(
        "select DCGM_FI_DEV_GPU_TEMP over 1 h: {} series, {points} samples; median {:.1} ms",
        got.len(),
        median.as_secs_f64() * 1e3
    );
    drop(got);

    let t0 = Instant::now();
    let cp = store.checkpoint()?;
    println!(
        "checkpoint: {} series, {:.1} MiB in {:.1} s",
        cp.series,
        mib(cp.bytes),
        t0.elapsed().as_secs_f64()
    );
    drop(store);
    let t0 = Instant::now();
    let reopened = Store::open(opts)?;
    println!(
        "reopen: {} series, {} samples in {:.1} s; RSS {:.1} MiB",
        reopened.stats().series,
        reopened.stats().head_samples,
        t0.elapsed().as_secs_f64(),
        mib(rss_bytes())
    );
    Ok(())
}

fn result_len(v: &Value) -> usize {
    match v {
        Value::Vector(v) => v.len(),
        Value::Matrix(m) => m.len(),
        Value::Scalar { .. } | Value::String { .. } => 1,
    }
}
