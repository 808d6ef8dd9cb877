//! Log ingest end to end beside its ceiling, from one run:
//!
//! 1. the ceiling: `bench_logs --from-file` (collector/examples/bench_logs.rs) indexes
//!    the very lines sent end to end, as the collector receives them from the agent,
//!    straight into tantivy with the collector's schema, writer and commit cadence — and
//!    tantivy's floor on them (`--floor`: the body alone, nothing stored);
//! 2. end to end: a release `vigil-collector` and a `vigil-agent` tailing a file; the
//!    file is written at once with `--lines` lines (~85 bytes each, what a training
//!    job logs), and the clock runs from its creation until the collector's search API
//!    counts every line for the node — through the tailer, the spool, OTLP, the log
//!    WAL, indexing and a commit;
//! 3. the ratio of the two.
//!
//!     ./tests/logs-bench.sh [--lines N]
//!
//! Targets (issue 5): end to end at least 70% of the ceiling and at least 20 MB/s here.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use vigil_e2e::collector::{Collector, ShippingAgent, TestDir, api_data};

const NODE: &str = "logs-bench-node";

struct Args {
    lines: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { lines: 1_000_000 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--lines" => a.lines = value()?.parse().context("--lines")?,
            other => bail!("unknown argument {other:?}; see the header of logs-bench.rs"),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let mut text = Vec::with_capacity(a.lines as usize * 132);
    for i in 0..a.lines {
        line(i, &mut text);
    }
    let dir = TestDir::new("logs-bench")?;
    let ceiling = ceiling_mb_per_sec(dir.path(), &text)?;
    let result = end_to_end(dir.path(), a.lines, text);
    let (lines_per_sec, mb_per_sec) = dir.finish(result)?;
    println!(
        "end to end (file -> agent -> collector -> searchable): {lines_per_sec:.0} lines/s, \
         {mb_per_sec:.2} MB/s"
    );
    println!(
        "ratio end to end / ceiling: {:.0}% (targets: >= 70% and >= 20 MB/s)",
        100.0 * mb_per_sec / ceiling
    );
    Ok(())
}

/// Runs bench_logs beside this binary on the lines in `text` (written to a file of
/// their own) and reads its raw indexing rate (MB/s); prints its floor too.
fn ceiling_mb_per_sec(dir: &Path, text: &[u8]) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let bench = exe
        .parent()
        .context("the bench's folder")?
        .join("examples/bench_logs");
    let ceiling = dir.join("ceiling");
    std::fs::create_dir_all(&ceiling)?;
    let file = ceiling.join("train.log");
    std::fs::write(&file, text)?;
    let out = Command::new(&bench)
        .arg("--from-file")
        .arg(&file)
        .args(["--node", NODE, "--floor", "--dir"])
        .arg(ceiling.join("index"))
        .output()
        .with_context(|| {
            format!(
                "running {} (tests/logs-bench.sh builds it)",
                bench.display()
            )
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} failed: {stdout}{}",
            bench.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let found = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .with_context(|| format!("no {prefix:?} line in: {stdout}"))
    };
    let line = found("raw indexing:")?;
    println!("ceiling ({line})");
    println!("{}", found("tantivy floor")?);
    let mbps = line
        .rsplit_once(" MB/s")
        .and_then(|(head, _)| head.rsplit(' ').next())
        .and_then(|s| s.parse::<f64>().ok())
        .with_context(|| format!("no MB/s in {line:?}"))?;
    std::fs::remove_dir_all(&ceiling)?;
    Ok(mbps)
}

/// One generated line of about 85 bytes, the kind of text a training job logs.
fn line(i: u64, out: &mut Vec<u8>) {
    let rank = i % 8;
    let _ = match i % 4 {
        0 => writeln!(
            out,
            "step {i} rank {rank}: loss {:.4} lr 3.0e-4 grad_norm {:.3} tokens/s {} mem 61.2GiB",
            (i % 9973) as f64 / 9973.0 + 1.0,
            (i % 577) as f64 / 97.0,
            118_000 + i % 5000
        ),
        1 => writeln!(
            out,
            "[rank{rank}] NCCL INFO Channel {:02}/32 : {rank}[{}] -> {}[{}] via P2P/IPC/read seq {i}",
            i % 32,
            rank * 8,
            (rank + 1) % 8,
            ((rank + 1) % 8) * 8
        ),
        2 => writeln!(
            out,
            "dataloader worker {} fetched shard {} batch {i} in {} ms (prefetch queue 4/8) ok",
            i % 16,
            i % 4096,
            3 + i % 40
        ),
        _ => writeln!(
            out,
            "checkpoint writer: flushed {} MiB of optimizer state for step {i} to /scratch/ckpt in {} ms",
            64 + i % 512,
            100 + i % 900
        ),
    };
}

fn end_to_end(dir: &Path, lines: u64, text: Vec<u8>) -> anyhow::Result<(f64, f64)> {
    let collector = Collector::start(dir, None, &[])?;
    let logs = dir.join("app");
    std::fs::create_dir_all(&logs)?;
    let glob = format!("{}/*.log", logs.display());
    // Kept until the end: dropping it stops the agent.
    let _agent = ShippingAgent::start(dir, NODE, &collector, &["--log-file", &glob])?;
    // What the index counts: the lines without their newlines.
    let bytes = (text.len() as u64 - lines) as f64;
    // The agent picks the file up at its next rescan (every second); the clock starts
    // before it exists, so that wait is part of the time.
    let started = Instant::now();
    let tmp = logs.join("train.tmp");
    std::fs::write(&tmp, &text)?;
    std::fs::rename(&tmp, logs.join("train.log"))?;
    drop(text);
    let timeout = Duration::from_secs(600);
    let path = format!("/api/v1/logs/search?node={NODE}&limit=1");
    loop {
        // The collector's own count of records committed to the index is cheap to
        // read; a search counting up to a million records five times a second would
        // itself take a share of the two cores it measures. The search then confirms.
        let indexed = collector
            .self_metrics()?
            .iter()
            .find(|s| s.name == "vigil_logs_indexed_records_total")
            .map_or(0.0, |s| s.value);
        if indexed >= lines as f64 {
            let secs = started.elapsed().as_secs_f64();
            let data = api_data(&collector.get(&path)?, "logs search")?;
            let total = data["total"].as_u64().unwrap_or(0);
            if total > lines {
                bail!("{total} lines searchable for {lines} written: duplicates");
            }
            if total == lines {
                println!(
                    "end to end: {lines} lines, {:.1} MB searchable in {secs:.1} s",
                    bytes / 1e6
                );
                return Ok((lines as f64 / secs, bytes / 1e6 / secs));
            }
        }
        if started.elapsed() > timeout {
            bail!("only {indexed} of {lines} lines indexed after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
