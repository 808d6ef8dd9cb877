//! kill -9 in the middle of appends: every batch the writer acknowledged must be there
//! after reopening, value for value. The writer is this test binary itself, re-run with
//! `--ignored --exact child_writer`; it appends, checkpoints from a second thread, and
//! prints `ack K` after batch K's `append_batch` returned.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use vigil_collector::store::{Store, StoreOptions};
use vigil_rules::promql::{Labels, MatchOp, Matcher, Matchers, stale_nan};

const DIR_ENV: &str = "VIGIL_STORE_CRASH_DIR";
const SERIES: usize = 40;
const STEP_MS: i64 = 1_000;

fn options(dir: &Path) -> StoreOptions {
    let mut opts = StoreOptions::new(dir);
    // Small segments and a low checkpoint floor, so rotations and checkpoints happen
    // many times per run and the kill lands near them too.
    opts.wal_segment_bytes = 16 << 10;
    opts.checkpoint_min_wal_bytes = 48 << 10;
    // Closed chunks leave memory for chunk files on every retention pass, so kills
    // also land mid-spill and reopening must rebuild from the WAL, not the files.
    opts.head_in_memory_ms = 5_000;
    opts
}

fn labels(i: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", "DCGM_FI_DEV_GPU_UTIL".to_string()),
        ("node", format!("node-{}", i / 8)),
        ("gpu", (i % 8).to_string()),
    ])
}

/// The value series `i` gets in batch `k`; every fifth batch of series 0 is a
/// staleness marker, to check its bits survive too.
fn value(i: usize, k: i64) -> f64 {
    if i == 0 && k % 5 == 4 {
        stale_nan()
    } else {
        (k as f64) * 0.5 + i as f64
    }
}

fn all_series() -> Matchers {
    Matchers::new(vec![Matcher::new(
        MatchOp::Equal,
        "__name__",
        "DCGM_FI_DEV_GPU_UTIL",
    )])
}

/// Highest batch number present for series 0, or -1.
fn last_batch(store: &Store) -> Result<i64> {
    let got = store.select(&all_series(), i64::MIN, i64::MAX)?;
    let first = got.iter().find(|s| s.labels == labels(0));
    Ok(first
        .and_then(|s| s.samples.last())
        .map_or(-1, |&(t, _)| t / STEP_MS))
}

#[test]
#[ignore = "runs only as the child of kill_nine_keeps_every_acknowledged_sample"]
fn child_writer() -> Result<()> {
    let dir = std::env::var(DIR_ENV).context("child_writer runs only as a child")?;
    let store = Arc::new(Store::open(options(Path::new(&dir)))?);
    store.apply_retention(0)?;
    let start = last_batch(&store)? + 1;
    let stop = Arc::new(AtomicBool::new(false));
    let checkpointer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                // Retention far behind the data: only the checkpoint policy acts.
                store.apply_retention(0)?;
                std::thread::sleep(Duration::from_millis(3));
            }
            Ok(())
        })
    };
    let mut out = std::io::stdout().lock();
    for k in start.. {
        let batch: Vec<(Labels, i64, f64)> = (0..SERIES)
            .map(|i| (labels(i), k * STEP_MS, value(i, k)))
            .collect();
        let report = store.append_batch(&batch)?;
        ensure!(report.accepted == SERIES, "batch {k}: {report:?}");
        if k % 7 == 0 {
            store.sync()?;
        }
        writeln!(out, "ack {k}")?;
        out.flush()?;
        if checkpointer.is_finished() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    match checkpointer.join() {
        Ok(r) => r,
        Err(_) => bail!("checkpointer panicked"),
    }
}

fn verify(dir: &Path, acked: i64) -> Result<i64> {
    let store = Store::open(options(dir))?;
    let got = store.select(&all_series(), i64::MIN, i64::MAX)?;
    ensure!(got.len() == SERIES, "{} series after reopen", got.len());
    // Two full chunks lie behind the in-memory window: open spilled them, and the
    // samples above were partly read back from chunk files.
    let spilled = store.stats().spilled_chunk_bytes;
    ensure!(
        acked < 250 || spilled > 0,
        "nothing spilled by batch {acked}"
    );
    for s in &got {
        let i = (0..SERIES)
            .find(|&i| labels(i) == s.labels)
            .context("unknown series")?;
        for k in 0..=acked {
            let idx = usize::try_from(k)?;
            let Some(&(t, v)) = s.samples.get(idx) else {
                bail!(
                    "series {i}: acknowledged batch {k} missing ({} samples)",
                    s.samples.len()
                );
            };
            ensure!(t == k * STEP_MS, "series {i}: sample {idx} at {t}");
            ensure!(
                v.to_bits() == value(i, k).to_bits(),
                "series {i} batch {k}: {v}"
            );
        }
    }
    last_batch(&store)
}

#[test]
fn kill_nine_keeps_every_acknowledged_sample() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut acked = -1i64;
    for round in 0..4u64 {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("child stdout")?;
        // A reader thread drains the child's output to the end, so acknowledgements
        // printed after the kill decision are counted too.
        let (tx, rx) = std::sync::mpsc::channel::<i64>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                // libtest may print "test child_writer ... " on the same line.
                if let Some((_, k)) = line.rsplit_once("ack ")
                    && let Ok(k) = k.trim().parse::<i64>()
                    && tx.send(k).is_err()
                {
                    break;
                }
            }
        });
        // Kill after a varying number of acknowledgements, while it keeps writing.
        let target = 150 + round * 97;
        let mut seen = 0;
        while seen < target {
            acked = rx
                .recv_timeout(Duration::from_secs(120))
                .context("child stopped acknowledging")?;
            seen += 1;
        }
        // Let it run on a little, a different while each round, so the kill lands at
        // varying points of a write, a rotation or a checkpoint.
        std::thread::sleep(Duration::from_micros(round * 1_300));
        child.kill()?; // SIGKILL on Unix
        let status = child.wait()?;
        ensure!(status.code().is_none(), "child exited by itself: {status}");
        let _ = reader.join();
        acked = rx.try_iter().fold(acked, i64::max);
        let present = verify(dir.path(), acked)?;
        ensure!(
            present >= acked,
            "round {round}: last batch {present} < acknowledged {acked}"
        );
        eprintln!(
            "round {round}: {seen} acks, acknowledged up to {acked}, present up to {present}"
        );
        // The next round continues after what is present.
        acked = present;
    }
    let wal = dir.path().join("wal");
    let checkpoints = std::fs::read_dir(&wal)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("checkpoint."))
        .count();
    ensure!(
        checkpoints == 1,
        "expected one checkpoint in {wal:?}, found {checkpoints}"
    );
    Ok(())
}
