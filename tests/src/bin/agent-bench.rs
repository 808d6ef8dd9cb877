//! The agent beside Debian's prometheus-node-exporter on this machine.
//!
//! Runs `vigil-agent --simulate-gpus 8 --interval 1` and node_exporter with its default
//! collectors, scrapes each once a second for `--seconds` (default 60), and prints from
//! that one run: CPU milliseconds per collection cycle (agent: its collection cycles plus
//! the scrapes it served; node_exporter: per scrape, which is when it collects), the RSS
//! of each, and the number of series each serves.
//!
//! `./tests/agent-bench.sh` builds the release binaries and runs this.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use vigil_e2e::{ChildGuard, binary, free_port, http_get, wait_for_port};

struct Measured {
    cpu_ms: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

fn measure(pid: u32) -> anyhow::Result<Measured> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command: state is field 3; utime 14, stime 15.
    let after = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Measured {
        cpu_ms: ticks as f64 * 1000.0 / hz,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

fn series_count(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count()
}

fn agent_cycles(text: &str) -> anyhow::Result<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("vigil_agent_collections_total "))
        .context("vigil_agent_collections_total missing")?
        .trim()
        .parse()
        .context("cycle count")
}

fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let r = http_get(addr, "/metrics", &[])?;
    if r.status != 200 {
        bail!("{addr}: status {}", r.status);
    }
    r.text()
}

fn main() -> anyhow::Result<()> {
    let mut seconds = 60u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().context("--seconds N")?.parse()?,
            other => bail!("unknown argument {other}; usage: agent-bench [--seconds N]"),
        }
    }
    let state = std::env::temp_dir().join(format!("vigil-bench-{}", std::process::id()));
    std::fs::create_dir_all(&state)?;

    let agent_addr = free_port()?;
    let agent = ChildGuard(
        Command::new(binary("vigil-agent")?)
            .args(["--simulate-gpus", "8", "--interval", "1", "--listen"])
            .arg(agent_addr.to_string())
            .arg("--state-dir")
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting vigil-agent")?,
    );
    let ne_addr = free_port()?;
    let node_exporter = ChildGuard(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address={ne_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus-node-exporter (./tests/run.sh installs it)")?,
    );
    wait_for_port(agent_addr, Duration::from_secs(20))?;
    wait_for_port(ne_addr, Duration::from_secs(20))?;
    // Warm up: first collections, page cache, lazily built state.
    for _ in 0..3 {
        scrape(agent_addr)?;
        scrape(ne_addr)?;
        std::thread::sleep(Duration::from_secs(1));
    }

    let agent_start = measure(agent.0.id())?;
    let ne_start = measure(node_exporter.0.id())?;
    let cycles_start = agent_cycles(&scrape(agent_addr)?)?;
    let mut ne_scrapes = 0u32;
    let mut agent_series = 0;
    let mut ne_series = 0;
    let began = Instant::now();
    for i in 0..seconds {
        let next = began + Duration::from_secs(i + 1);
        agent_series = series_count(&scrape(agent_addr)?);
        ne_series = series_count(&scrape(ne_addr)?);
        ne_scrapes += 1;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let cycles_end = agent_cycles(&scrape(agent_addr)?)?;
    let agent_end = measure(agent.0.id())?;
    let ne_end = measure(node_exporter.0.id())?;

    let cycles = (cycles_end - cycles_start).max(1.0);
    let agent_ms = (agent_end.cpu_ms - agent_start.cpu_ms) / cycles;
    let ne_ms = (ne_end.cpu_ms - ne_start.cpu_ms) / f64::from(ne_scrapes);
    println!("agent-bench: {seconds} s, one scrape of each per second");
    println!(
        "vigil-agent (8 simulated GPUs): {agent_ms:.3} CPU ms per collection cycle ({cycles} cycles, scrapes included), RSS {:.1} MiB (peak {:.1} MiB), {agent_series} series",
        agent_end.rss_kib as f64 / 1024.0,
        agent_end.hwm_kib as f64 / 1024.0,
    );
    println!(
        "prometheus-node-exporter:       {ne_ms:.3} CPU ms per scrape ({ne_scrapes} scrapes), RSS {:.1} MiB (peak {:.1} MiB), {ne_series} series",
        ne_end.rss_kib as f64 / 1024.0,
        ne_end.hwm_kib as f64 / 1024.0,
    );
    println!(
        "agent / node_exporter CPU: {:.1}% (target < 20%); agent RSS target < 12 MiB",
        100.0 * agent_ms / ne_ms.max(f64::MIN_POSITIVE)
    );
    drop(agent);
    drop(node_exporter);
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}
