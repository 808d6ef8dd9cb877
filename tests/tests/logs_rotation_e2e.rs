//! Rotation and agent restarts through the real processes: a writer appends numbered
//! lines at 2,000 lines/s to a file that a `vigil-agent` tails (`--log-file
//! 'app/app.log*'`, default rescan and batching) and rotates it 50 times, alternately by
//! rename (`mv app.log app.log.N`, new `app.log`) and by copytruncate (copy to
//! `app.log.N`, truncate `app.log` in place). In the middle the agent is stopped twice
//! and started again on the same state directory while the writer goes on writing and
//! rotating: once with SIGTERM, once with SIGKILL. Afterwards every line number written
//! is found in the `vigil-collector`'s index through `/api/v1/logs/search`, paged with
//! `cursor`, exactly once and unmangled.
//!
//! What the agent promises, and so what is asserted:
//! - rotation of either kind, and a SIGTERM restart: no line lost, none repeated;
//! - SIGKILL: no line lost; what was in flight at the kill may come twice: the Export
//!   request the collector had not yet acknowledged (the spool's head moves only on
//!   an acknowledgement; at most `shipper.batch_max_bytes`, 1 MiB) and the log batch
//!   spooled but not yet checkpointed (agent/src/logs/mod.rs: "a crash between the
//!   two sends the last batch twice"; at most `logs.batch_max_bytes`, 1 MiB). So lines
//!   written between the SIGTERM and the SIGKILL may be indexed twice, no more, as
//!   long as their bodies and paths come to at most [`KILL_RESEND_MAX_BYTES`] (a lower
//!   bound of their encoded size); every other line must be there exactly once. The
//!   window is by line number, not time, because on a loaded machine the agent's
//!   sender may be seconds behind the writer.
//!
//! Copytruncate has a race no tailer can close: lines written between the copy and the
//! truncate are in the copy but gone from the original before anyone read them. As
//! logrotate's users accept it (the application keeps writing), here the writer itself
//! rotates, between two writes, so no line is written inside that window — the same
//! way `agent/tests/logs_rotation.rs` tests the tailer in-process. What is tested is
//! everything else: a tailer that has read part of the file before the copy, the copy
//! recognised by fingerprint and not read again, the refilled original read from its
//! start, rotations that happen while the agent is down.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use vigil_e2e::collector::{Collector, ShippingAgent, TestDir, api_data};

const NODE: &str = "gpu-node-rotate";
const ROTATIONS: u64 = 50;
const LINES_PER_SEC: u64 = 2_000;
const ROTATE_EVERY: Duration = Duration::from_millis(500);
/// The rotation after which the agent gets SIGTERM, and the one after which it gets
/// SIGKILL.
const TERM_AFTER: u64 = 17;
const KILL_AFTER: u64 = 34;
/// How long the agent stays down each time: two rotations, one of each kind, happen
/// meanwhile.
const DOWN_FOR: Duration = Duration::from_millis(1200);
/// The most a SIGKILL may send twice: one Export request and one log batch, each at
/// its default cap.
const KILL_RESEND_MAX_BYTES: usize = 2 << 20;

#[test]
fn fifty_rotations_and_two_agent_restarts_reach_the_index_exactly_once() -> anyhow::Result<()> {
    let dir = TestDir::new("logs-rotation")?;
    let result = scenario(dir.path());
    dir.finish(result)
}

fn line(seq: u64) -> String {
    format!("seq={seq:07} {}\n", "p".repeat(80))
}

/// The writer's progress, read by the test while it runs.
#[derive(Default)]
struct Progress {
    rotations: AtomicU64,
    /// Lines written so far (the next line's number).
    written: AtomicU64,
    stop: AtomicBool,
}

/// Writes lines at [`LINES_PER_SEC`] into `dir/app.log` every 5 ms, rotating it every
/// [`ROTATE_EVERY`], odd rotations by rename and even ones by copytruncate; returns how
/// many lines it wrote.
fn writer(dir: &Path, progress: &Progress) -> anyhow::Result<u64> {
    let log = dir.join("app.log");
    let open = || OpenOptions::new().create(true).append(true).open(&log);
    let mut file = open()?;
    let start = Instant::now();
    let mut seq = 0u64;
    let mut next_rotation = start + ROTATE_EVERY;
    let mut rotations = 0u64;
    while rotations < ROTATIONS && !progress.stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * LINES_PER_SEC as f64) as u64;
        let mut text = String::new();
        while seq < due {
            text.push_str(&line(seq));
            seq += 1;
        }
        file.write_all(text.as_bytes())?;
        progress.written.store(seq, Ordering::Relaxed);
        if Instant::now() >= next_rotation {
            rotations += 1;
            let rotated = dir.join(format!("app.log.{rotations}"));
            if rotations % 2 == 1 {
                fs::rename(&log, &rotated)?;
                file = open()?;
            } else {
                // Between two writes of the only writer: see the module's doc.
                fs::copy(&log, &rotated)?;
                File::options().write(true).open(&log)?.set_len(0)?;
            }
            progress.rotations.store(rotations, Ordering::Relaxed);
            next_rotation += ROTATE_EVERY;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(seq)
}

/// One indexed line: its number and the file the agent read it from.
struct Indexed {
    seq: u64,
    path: String,
}

/// How many of [`NODE`]'s records the index holds.
fn indexed_total(collector: &Collector) -> anyhow::Result<u64> {
    let path = format!("/api/v1/logs/search?node={NODE}&limit=1");
    let data = api_data(&collector.get(&path)?, &path)?;
    data["total"].as_u64().context("data.total")
}

/// Every record of [`NODE`] in the index, paged newest first with `cursor`; each must
/// be a line the writer wrote, byte for byte.
fn indexed_lines(collector: &Collector) -> anyhow::Result<Vec<Indexed>> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/api/v1/logs/search?node={NODE}&limit=10000&cursor={cursor}");
        let data = api_data(&collector.get(&path)?, &path)?;
        for hit in data["hits"].as_array().context("data.hits")? {
            let body = hit["body"].as_str().context("a hit without a body")?;
            let seq: u64 = body
                .strip_prefix("seq=")
                .and_then(|s| s.get(..7))
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("not a written line: {hit}"))?;
            ensure!(format!("{body}\n") == line(seq), "mangled line: {hit}");
            let path = hit["attributes"]["log.file.path"]
                .as_str()
                .with_context(|| format!("no log.file.path: {hit}"))?;
            // A file's records carry its path as their source.
            ensure!(hit["source"] == path, "{hit}");
            out.push(Indexed {
                seq,
                path: path.to_owned(),
            });
        }
        match data["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return Ok(out),
        }
    }
}

/// Waits until `progress` has seen `rotations` rotations.
fn wait_rotations(progress: &Progress, rotations: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.rotations.load(Ordering::Relaxed) < rotations {
        ensure!(
            Instant::now() < deadline,
            "the writer did not reach rotation {rotations} in 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The agent's two restarts while the writer runs; returns the agent now running and
/// the lines written before the SIGTERM and the SIGKILL went out.
fn restarts(
    dir: &Path,
    collector: &Collector,
    args: &[&str],
    agent: ShippingAgent,
    progress: &Progress,
) -> anyhow::Result<(ShippingAgent, Range<u64>)> {
    wait_rotations(progress, TERM_AFTER)?;
    let terminated_at_line = progress.written.load(Ordering::Relaxed);
    let status = agent.terminate(Duration::from_secs(30))?;
    ensure!(
        status.success(),
        "vigil-agent exited with {status} on SIGTERM"
    );
    let stopped_at = progress.rotations.load(Ordering::Relaxed);
    std::thread::sleep(DOWN_FOR);
    let agent = ShippingAgent::start(dir, NODE, collector, args)?;
    println!(
        "SIGTERM after rotation {stopped_at}, started again at rotation {}",
        progress.rotations.load(Ordering::Relaxed)
    );

    wait_rotations(progress, KILL_AFTER)?;
    let killed_at_line = progress.written.load(Ordering::Relaxed);
    let killed_at = progress.rotations.load(Ordering::Relaxed);
    agent.kill()?;
    std::thread::sleep(DOWN_FOR);
    let agent = ShippingAgent::start(dir, NODE, collector, args)?;
    println!(
        "SIGKILL after rotation {killed_at} (line {killed_at_line}), started again at rotation {}",
        progress.rotations.load(Ordering::Relaxed)
    );
    Ok((agent, terminated_at_line..killed_at_line))
}

fn join(writer: JoinHandle<anyhow::Result<u64>>) -> anyhow::Result<u64> {
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))?
}

fn scenario(dir: &Path) -> anyhow::Result<()> {
    let collector = Collector::start(dir, None, &[])?;
    let logs: PathBuf = dir.join("app");
    fs::create_dir_all(&logs)?;
    File::create(logs.join("app.log"))?;
    let glob = format!("{}/app.log*", logs.display());
    let args = ["--log-file", glob.as_str()];
    let agent = ShippingAgent::start(dir, NODE, &collector, &args)?;
    agent.wait_tailing(1.0, Duration::from_secs(30))?;

    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let writer = {
        let (logs, progress) = (logs.clone(), Arc::clone(&progress));
        std::thread::spawn(move || writer(&logs, &progress))
    };
    let (agent, between_stops) = match restarts(dir, &collector, &args, agent, &progress) {
        Ok(r) => r,
        Err(e) => {
            progress.stop.store(true, Ordering::Relaxed);
            let _ = join(writer);
            return Err(e);
        }
    };
    let written = join(writer)?;
    let writing = started.elapsed();
    println!(
        "{written} lines in {:.1} s ({:.0} lines/s), {ROTATIONS} rotations",
        writing.as_secs_f64(),
        written as f64 / writing.as_secs_f64()
    );

    // Everything is in once the index holds at least every line and stops growing (a
    // commit is at most 1 s away); a count stuck below means lines lost, which the
    // listing below names.
    let mut last = (0, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let total = indexed_total(&collector)?;
        if total != last.0 {
            last = (total, Instant::now());
        }
        let still = last.1.elapsed();
        if (total >= written && still > Duration::from_secs(2))
            || still > Duration::from_secs(15)
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let drained = started.elapsed();
    let hits = indexed_lines(&collector)?;
    drop(agent);
    // Paging by cursor neither skipped nor repeated a record.
    let total = indexed_total(&collector)?;
    ensure!(
        hits.len() as u64 == total,
        "paging found {} records, the search counts {total}",
        hits.len()
    );

    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for hit in &hits {
        *seen.entry(hit.seq).or_default() += 1;
    }
    let missing: Vec<u64> = (0..written).filter(|s| !seen.contains_key(s)).collect();
    let extra: Vec<u64> = seen.range(written..).map(|(s, _)| *s).collect();
    let duplicated: Vec<(u64, u32)> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, n)| (*s, *n))
        .collect();
    for (first, last) in runs(duplicated.iter().map(|(s, _)| *s)) {
        let from: Vec<&str> = hits
            .iter()
            .filter(|h| h.seq == first || h.seq == last)
            .map(|h| h.path.rsplit('/').next().unwrap_or_default())
            .collect();
        println!("duplicated: lines {first}..={last}, first and last from {from:?}");
    }
    let (in_window, outside): (Vec<_>, Vec<_>) = duplicated
        .iter()
        .partition(|(s, n)| between_stops.contains(s) && *n == 2);
    // Bodies and paths of the second copies: less than they took on the wire.
    let resent: BTreeSet<u64> = in_window.iter().map(|(s, _)| *s).collect();
    let resent_bytes: usize = hits
        .iter()
        .filter(|h| resent.contains(&h.seq))
        .map(|h| line(h.seq).len() - 1 + h.path.len())
        .sum::<usize>()
        / 2;
    println!(
        "{} records indexed, {} missing, {} duplicated ({} of them between the SIGTERM and the SIGKILL, lines {between_stops:?}, {resent_bytes} bytes); all in the index {:.1} s after the start",
        hits.len(),
        missing.len(),
        duplicated.len(),
        in_window.len(),
        drained.as_secs_f64()
    );
    ensure!(
        resent_bytes <= KILL_RESEND_MAX_BYTES,
        "the SIGKILL sent {resent_bytes} bytes of lines twice, more than one request and one batch"
    );
    ensure!(
        missing.is_empty(),
        "{} lines lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    ensure!(extra.is_empty(), "lines never written: {extra:?}");
    if let Some((first, _)) = outside.first() {
        // Which files each copy came from says which rotation or restart went wrong.
        let from: Vec<&str> = hits
            .iter()
            .filter(|h| h.seq == *first)
            .map(|h| h.path.as_str())
            .collect();
        bail!(
            "{} lines indexed more than once, first {:?}; line {first} came from {from:?}",
            outside.len(),
            &outside[..outside.len().min(10)]
        );
    }
    // The writer ran its course: 25 s at 2,000 lines/s.
    let expected = ROTATIONS * ROTATE_EVERY.as_millis() as u64 * LINES_PER_SEC / 1000;
    ensure!(
        written >= expected * 95 / 100,
        "only {written} lines written, {expected} expected"
    );
    Ok(())
}

/// Contiguous runs in an ascending sequence, as (first, last).
fn runs(seqs: impl Iterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in seqs {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == s => *last = s,
            _ => out.push((s, s)),
        }
    }
    out
}
