//! How fast the file tailer gets lines into the spool: a file of 100-byte lines
//! (`VIGIL_LOG_BENCH_MB`, default 200) read from its start, encoded as OTLP log records
//! and appended (fsynced) to a real spool in batches, as the agent does.
//!
//! A measurement, not a check: run in release with
//! `cargo test -p vigil-agent --release --test logs_throughput -- --ignored --nocapture`.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use vigil_agent::AgentConfig;
use vigil_agent::logs::{LogOutput, Logs};
use vigil_agent::ship::spool::{RecordKind, Spool, SpoolOptions};

struct SpoolOutput(Mutex<Spool>, Mutex<u64>);

impl LogOutput for SpoolOutput {
    fn append(&self, payload: &[u8]) -> Result<(), String> {
        *self.1.lock().unwrap() += payload.len() as u64;
        self.0
            .lock()
            .unwrap()
            .append(RecordKind::Logs, payload)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn tailer_lines_per_second_into_the_spool() -> Result<()> {
    let mb: u64 = std::env::var("VIGIL_LOG_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("bench.log");
    let lines = mb * 10_000;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&log)?);
        for i in 0..lines {
            // 100 bytes with the newline: a typical application log line.
            writeln!(
                f,
                "2026-11-27T20:00:00.{:06}Z INFO worker[{:05}] request {i:012} served in 3 ms ok",
                i % 1_000_000,
                i % 100_000
            )?;
        }
    }
    let bytes = std::fs::metadata(&log)?.len();
    let spool = Spool::open(
        &dir.path().join("spool"),
        SpoolOptions::with_max_bytes(64 << 30),
    )?;
    let output = Arc::new(SpoolOutput(Mutex::new(spool), Mutex::new(0)));
    let mut config = AgentConfig {
        state_dir: dir.path().join("state"),
        ..AgentConfig::default()
    };
    config.shipper.spool_max_bytes = 64 << 30;
    config.logs.files = vec![log.to_string_lossy().into_owned()];
    config.logs.kmsg = PathBuf::new();
    config.logs.first_start_from = "start".into();
    let started = Instant::now();
    let logs = Logs::start(
        &config,
        "bench",
        Some(Arc::clone(&output) as Arc<dyn LogOutput>),
        None,
    );
    let deadline = started + Duration::from_secs(300);
    while logs.stats().file.lines.load(Ordering::Relaxed) < lines {
        ensure!(Instant::now() < deadline, "not done in 300 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Shutting down spools the last batch; it counts.
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(logs.shutdown());
    let elapsed = started.elapsed().as_secs_f64();
    let spooled = *output.1.lock().unwrap();
    println!(
        "tailer → spool: {lines} lines, {:.1} MB in {elapsed:.2} s = {:.0} lines/s, {:.1} MB/s of log text ({:.1} MB/s of OTLP into the spool)",
        bytes as f64 / 1e6,
        lines as f64 / elapsed,
        bytes as f64 / 1e6 / elapsed,
        spooled as f64 / 1e6 / elapsed
    );
    Ok(())
}
