//! A running agent tails a file written at ~2,000 lines/s through 50 rotations (25 by
//! rename, 25 by copytruncate) and a restart of the agent in the middle; every line
//! must reach the spool exactly once. The collector is down (nothing listens), so the
//! spool holds all of it and the test decodes its log records afterwards.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vigil_agent::AgentConfig;
use vigil_agent::ship::spool::{RecordKind, Spool, SpoolOptions};
use vigil_proto::logs as attr;
use vigil_proto::otlp::any_value::Value;
use vigil_proto::otlp::decode_logs_request;

const ROTATIONS: u32 = 50;
const LINES_PER_SEC: u64 = 2_000;
const ROTATE_EVERY: Duration = Duration::from_millis(200);

struct Agent {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), vigil_agent::AgentError>>,
}

async fn start_agent(state: &Path, pattern: &str, collector_port: u16) -> Result<Agent> {
    let mut config = AgentConfig {
        state_dir: state.to_owned(),
        node_name: "node-rotate".into(),
        interval_secs: 0.5,
        source_timeout_secs: 0.5,
        ..AgentConfig::default()
    };
    config.gpu.enabled = false;
    config.logs.files = vec![pattern.to_owned()];
    config.logs.kmsg = PathBuf::new();
    config.logs.first_start_from = "start".into();
    config.logs.rescan_interval_secs = 0.25;
    config.shipper.collector = format!("http://127.0.0.1:{collector_port}");
    config.shipper.retry_max_secs = 1.0;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(vigil_agent::run(config, listener, async {
        let _ = stopped.await;
    }));
    Ok(Agent { addr, stop, task })
}

impl Agent {
    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .context("agent did not stop")???;
        Ok(())
    }

    async fn file_lines(&self) -> Result<f64> {
        let mut stream = TcpStream::connect(self.addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
            .await?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await?;
        body.lines()
            .find_map(|l| {
                l.strip_prefix("vigil_agent_log_lines_total{source=\"file\"} ")?
                    .parse()
                    .ok()
            })
            .context("no vigil_agent_log_lines_total on /metrics")
    }
}

fn line(seq: u64) -> String {
    format!("seq={seq:07} {}\n", "p".repeat(80))
}

/// Writes lines at LINES_PER_SEC into `log`, rotating it every ROTATE_EVERY, alternately
/// by rename and by copytruncate; returns how many lines it wrote.
fn writer(dir: PathBuf, rotations_done: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> Result<u64> {
    let log = dir.join("app.log");
    let open = || OpenOptions::new().create(true).append(true).open(&log);
    let mut file = open()?;
    let start = Instant::now();
    let mut seq = 0u64;
    let mut next_rotation = start + ROTATE_EVERY;
    let mut rotations = 0u32;
    while rotations < ROTATIONS && !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * LINES_PER_SEC as f64) as u64;
        let mut text = String::new();
        while seq < due {
            text.push_str(&line(seq));
            seq += 1;
        }
        file.write_all(text.as_bytes())?;
        if Instant::now() >= next_rotation {
            rotations += 1;
            let rotated = dir.join(format!("app.log.{rotations}"));
            if rotations % 2 == 1 {
                fs::rename(&log, &rotated)?;
                file = open()?;
            } else {
                fs::copy(&log, &rotated)?;
                File::options().write(true).open(&log)?.set_len(0)?;
            }
            rotations_done.store(u64::from(rotations), Ordering::Relaxed);
            next_rotation += ROTATE_EVERY;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(seq)
}

/// Every file record in the spool: (body, path).
fn spooled_lines(state: &Path) -> Result<Vec<(String, String)>> {
    let mut spool = Spool::open(&state.join("spool"), SpoolOptions::with_max_bytes(1 << 30))?;
    let batch = spool.peek(RecordKind::Logs, u64::MAX)?;
    let mut out = Vec::new();
    for record in batch.records {
        let req = decode_logs_request(&record.payload)?;
        for rl in &req.resource_logs {
            let host = rl
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "host.name"))
                .and_then(|kv| kv.value.clone()?.value);
            ensure!(host == Some(Value::StringValue("node-rotate".into())));
            for r in rl.scope_logs.iter().flat_map(|sl| &sl.log_records) {
                let Some(Value::StringValue(body)) = r.body.clone().and_then(|b| b.value) else {
                    bail!("body is not a string");
                };
                let path = r
                    .attributes
                    .iter()
                    .find(|kv| kv.key == attr::FILE_PATH)
                    .and_then(|kv| kv.value.clone()?.value);
                let Some(Value::StringValue(path)) = path else {
                    bail!("no {} on {body}", attr::FILE_PATH);
                };
                out.push((body, path));
            }
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_rotations_and_a_restart_lose_and_duplicate_no_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let logs = dir.path().join("logs");
    let state = dir.path().join("state");
    fs::create_dir_all(&logs)?;
    let pattern = format!("{}/app.log*", logs.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();

    let agent = start_agent(&state, &pattern, port).await?;
    let rotations = Arc::new(AtomicU64::new(0));
    let stop_writer = Arc::new(AtomicBool::new(false));
    let writer = {
        let (logs, rotations, stop) = (
            logs.clone(),
            Arc::clone(&rotations),
            Arc::clone(&stop_writer),
        );
        std::thread::spawn(move || writer(logs, rotations, stop))
    };
    let started = Instant::now();
    // Restart the agent half way, while the writer goes on writing and rotating.
    while rotations.load(Ordering::Relaxed) < u64::from(ROTATIONS / 2) {
        if started.elapsed() > Duration::from_secs(30) {
            stop_writer.store(true, Ordering::Relaxed);
            bail!("writer too slow");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.stop().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let agent = start_agent(&state, &pattern, port).await?;
    let written = tokio::task::spawn_blocking(move || writer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    let elapsed = started.elapsed();

    // Wait until the agent has read everything: its line count stops moving.
    let mut last = -1.0;
    let mut still_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = agent.file_lines().await?;
        if n != last {
            last = n;
            still_since = Instant::now();
        } else if still_since.elapsed() > Duration::from_millis(1500) {
            break;
        }
        ensure!(Instant::now() < deadline, "the agent kept reading for 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.stop().await?;

    let spooled = spooled_lines(&state)?;
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for (body, _path) in &spooled {
        let seq: u64 = body
            .strip_prefix("seq=")
            .and_then(|s| s.get(..7))
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("not a written line: {body:?}"))?;
        ensure!(format!("{body}\n") == line(seq), "mangled line {body:?}");
        *seen.entry(seq).or_default() += 1;
    }
    let missing: Vec<u64> = (0..written).filter(|s| !seen.contains_key(s)).collect();
    let duplicated: Vec<(&u64, &u32)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    println!(
        "{written} lines in {:.1} s ({:.0} lines/s), {ROTATIONS} rotations, {} records spooled, {} missing, {} duplicated",
        elapsed.as_secs_f64(),
        written as f64 / elapsed.as_secs_f64(),
        spooled.len(),
        missing.len(),
        duplicated.len()
    );
    ensure!(
        missing.is_empty(),
        "{} lines lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    if !duplicated.is_empty() {
        // Which files each copy came from says which rotation went wrong.
        let first = *duplicated[0].0;
        let from: Vec<&str> = spooled
            .iter()
            .filter(|(body, _)| body.starts_with(&format!("seq={first:07} ")))
            .map(|(_, path)| path.as_str())
            .collect();
        bail!(
            "{} lines duplicated, first {:?}; line {first} came from {from:?}",
            duplicated.len(),
            &duplicated[..duplicated.len().min(10)]
        );
    }
    ensure!(seen.len() as u64 == written && written > 15_000);
    Ok(())
}
