//! Log index benchmark: the raw tantivy indexing rate with the collector's schema,
//! writer memory and commit cadence (the ceiling for log ingest on this machine), then
//! the latency of a term + node + 1 h range query over what was indexed.
//!
//! `cargo run --release -p vigil-collector --example bench_logs -- [--lines N]
//! [--nodes N] [--hours H] [--queries N] [--commit-interval-ms MS]
//! [--writer-memory-bytes B] [--dir PATH] [--from-file PATH --node NAME] [--floor]`
//!
//! Lines (~130 bytes, a training job's and the kernel's vocabulary, one source path
//! per node) are generated on the fly, spread evenly over the last `--hours` hours
//! across `--nodes` nodes, in time order as ingest would see them; generating them is
//! part of the measured time. Queries: `--queries` searches, each a term (cycling
//! through a rare, a medium and a common one) on one random node over a random 1 h
//! window, limit 100 with the total count, as `vigil logs search` asks; p50/p99 of the
//! wall time of each `LogIndex::search`.
//!
//! `--from-file PATH --node NAME` indexes the lines of a file instead, as the collector
//! receives them from an agent tailing it (node NAME, source and `log.file.path` the
//! path, no severity), and skips the queries: `./tests/logs-bench.sh` measures its
//! ceiling this way on the very lines it sends end to end.
//!
//! `--floor` also prints tantivy's own rate on the same lines with the least an index
//! can do: the body alone, tokenized with positions, nothing stored, no other field,
//! same writer memory and commit cadence. No schema of ours can index faster than that.
//!
//! The end-to-end rate from files through the agent and the collector to searchable,
//! beside this ceiling: `./tests/logs-bench.sh` (tests/src/bin/logs-bench.rs).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};
use vigil_collector::index::bench::{RawIndexReport, index_floor, index_raw};
use vigil_collector::index::{LogIndex, LogIndexOptions, LogRecord, SearchRequest};

const HOUR_NS: i64 = 3_600_000_000_000;

struct Args {
    lines: u64,
    nodes: u64,
    hours: i64,
    queries: usize,
    commit_interval_ms: u64,
    writer_memory_bytes: usize,
    dir: Option<PathBuf>,
    from_file: Option<PathBuf>,
    node: String,
    floor: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        lines: 10_000_000,
        nodes: 64,
        hours: 24,
        queries: 300,
        commit_interval_ms: 500,
        writer_memory_bytes: 64 << 20,
        dir: None,
        from_file: None,
        node: "bench-node".into(),
        floor: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--lines" => a.lines = value()?.parse()?,
            "--nodes" => a.nodes = value()?.parse()?,
            "--hours" => a.hours = value()?.parse()?,
            "--queries" => a.queries = value()?.parse()?,
            "--commit-interval-ms" => a.commit_interval_ms = value()?.parse()?,
            "--writer-memory-bytes" => a.writer_memory_bytes = value()?.parse()?,
            "--dir" => a.dir = Some(PathBuf::from(value()?)),
            "--from-file" => a.from_file = Some(PathBuf::from(value()?)),
            "--node" => a.node = value()?,
            "--floor" => a.floor = true,
            other => bail!("unknown flag {other}"),
        }
    }
    if a.lines == 0 || a.nodes == 0 || a.hours <= 0 {
        bail!("--lines, --nodes and --hours must be positive");
    }
    Ok(a)
}

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The `i`th line: mostly training progress, some warnings, rare errors.
fn line(i: u64, rng: &mut Rng, nodes: u64, start_ns: i64, step_ns: f64) -> LogRecord {
    let node = i % nodes;
    let r = rng.next();
    let (severity, body) = match r % 1000 {
        0 => (
            "error",
            format!(
                "NVRM: Xid (PCI:0000:{:02x}:00): 79, pid={}, name=python, GPU has fallen off the bus.",
                r % 256,
                r % 50_000
            ),
        ),
        1..=9 => (
            "warn",
            format!(
                "NCCL WARN [Rank {}] Watchdog caught collective operation timeout: WorkNCCL(SeqNum={}, OpType=ALLREDUCE) ran for 600000 milliseconds",
                r % 64,
                i
            ),
        ),
        10..=99 => (
            "warn",
            format!(
                "dataloader worker {} slow batch {} took {} ms, prefetch queue empty",
                r % 16,
                i,
                r % 5000
            ),
        ),
        _ => (
            "info",
            format!(
                "train step {} epoch {} loss {:.4} lr {:.6} tokens/s {} grad_norm {:.3}",
                i / nodes,
                i / 1_000_000,
                (r % 10_000) as f64 / 3000.0,
                (r % 1000) as f64 / 1e6,
                100_000 + r % 50_000,
                (r % 997) as f64 / 100.0
            ),
        ),
    };
    let mut attributes = Map::new();
    attributes.insert(
        "log.file.path".into(),
        Value::from(format!("/var/log/jobs/train-{node}.log")),
    );
    LogRecord {
        time_ns: start_ns + (i as f64 * step_ns) as i64,
        node: format!("gpu-node-{node:03}"),
        source: format!("/var/log/jobs/train-{node}.log"),
        severity: severity.into(),
        body,
        attributes,
    }
}

/// Indexes `records` with the collector's schema and prints the rate; with `--floor`,
/// `bodies` (theirs) too with the least an index can do.
fn ceiling<S: AsRef<str>>(
    dir: &std::path::Path,
    records: impl Iterator<Item = LogRecord>,
    bodies: impl Iterator<Item = S>,
    a: &Args,
) -> Result<()> {
    let commit_interval = Duration::from_millis(a.commit_interval_ms);
    let report = index_raw(
        &dir.join("logs"),
        records,
        commit_interval,
        a.writer_memory_bytes,
    )?;
    print_rate("raw indexing", &report);
    if a.floor {
        let report = index_floor(
            &dir.join("floor"),
            bodies,
            commit_interval,
            a.writer_memory_bytes,
        )?;
        print_rate("tantivy floor (body only, nothing stored)", &report);
    }
    Ok(())
}

fn print_rate(what: &str, report: &RawIndexReport) {
    let mb = report.bytes as f64 / 1e6;
    println!(
        "{what}: {} lines, {mb:.1} MB of lines in {:.1} s: {:.0} lines/s, {:.2} MB/s ({} commits)",
        report.records,
        report.seconds,
        report.records as f64 / report.seconds,
        mb / report.seconds,
        report.commits
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<()> {
    let a = args()?;
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as i64;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    if let Some(path) = &a.from_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        println!(
            "bench_logs: the {} lines of {} from node {}; commit every {} ms; writer memory {} MiB; {cores} cores",
            text.lines().count(),
            path.display(),
            a.node,
            a.commit_interval_ms,
            a.writer_memory_bytes >> 20,
        );
        let source = path.display().to_string();
        let records = text.lines().map(|body| {
            let mut attributes = Map::new();
            attributes.insert("log.file.path".into(), Value::from(source.as_str()));
            LogRecord {
                time_ns: now,
                node: a.node.clone(),
                source: source.clone(),
                severity: String::new(),
                body: body.to_owned(),
                attributes,
            }
        });
        ceiling(&dir, records, text.lines(), &a)?;
        return Ok(());
    }
    let span_ns = a.hours * HOUR_NS;
    let start_ns = now - span_ns;
    let step_ns = span_ns as f64 / a.lines as f64;
    println!(
        "bench_logs: {} lines over {} h from {} nodes; commit every {} ms; writer memory {} MiB; {cores} cores",
        a.lines,
        a.hours,
        a.nodes,
        a.commit_interval_ms,
        a.writer_memory_bytes >> 20,
    );

    // Phase 1: the ceiling.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let nodes = a.nodes;
    let records = (0..a.lines).map(move |i| line(i, &mut rng, nodes, start_ns, step_ns));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let bodies = (0..a.lines).map(move |i| line(i, &mut rng, nodes, start_ns, step_ns).body);
    ceiling(&dir, records, bodies, &a)?;

    // Phase 2: search latency over what is on disk.
    let mut opts = LogIndexOptions::in_dir(&dir);
    opts.metrics.clear();
    let index = LogIndex::open(opts, None)?;
    println!("partitions: {}", index.partitions().len());
    let terms = ["xid", "slow", "loss"];
    let mut rng = Rng(42);
    let mut by_term: Vec<Vec<Duration>> = vec![Vec::new(); terms.len()];
    let mut totals = vec![0u64; terms.len()];
    let mut all = Vec::with_capacity(a.queries);
    // A few warm-up queries map the files.
    for q in 0..(a.queries + 20) {
        let t = q % terms.len();
        let window_start = start_ns + (rng.next() % (span_ns - HOUR_NS).max(1) as u64) as i64;
        let req = SearchRequest {
            query: terms[t].into(),
            node: Some(format!("gpu-node-{:03}", rng.next() % a.nodes)),
            start_ns: Some(window_start),
            end_ns: Some(window_start + HOUR_NS),
            limit: 100,
            ..SearchRequest::default()
        };
        let started = Instant::now();
        let found = index.search(&req)?;
        let took = started.elapsed();
        if q >= 20 {
            by_term[t].push(took);
            totals[t] += found.total;
            all.push(took);
        }
    }
    all.sort();
    println!(
        "search (term + node + 1 h range, limit 100, with total): {} queries, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len(),
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        all.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    for (t, mut d) in by_term.into_iter().enumerate() {
        d.sort();
        println!(
            "  {:>5}: p50 {:.2} ms, p99 {:.2} ms, mean hits per query {:.0}",
            terms[t],
            percentile(&d, 0.5).as_secs_f64() * 1e3,
            percentile(&d, 0.99).as_secs_f64() * 1e3,
            totals[t] as f64 / d.len().max(1) as f64
        );
    }
    println!("end to end (files -> agent -> collector -> searchable): ./tests/logs-bench.sh");
    index.close();
    Ok(())
}
