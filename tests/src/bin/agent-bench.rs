//! The agent beside Debian's prometheus-node-exporter on this machine.
//!
//! Runs `vigil-agent --simulate-gpus 8 --interval 1` and node_exporter with its default
//! collectors side by side and prints, from one run: CPU milliseconds per collection
//! cycle of the agent against CPU milliseconds per scrape of node_exporter (which
//! collects on each scrape) — once with the agent unscraped (its collection alone) and
//! once with the agent scraped every cycle too (collection plus serving) — then the RSS
//! of each and the number of series each serves. CPU time is utime + stime from
//! /proc/PID/stat over each `--seconds` window (default 60).
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

struct Phase {
    agent_ms: f64,
    cycles: f64,
    ne_ms: f64,
    ne_scrapes: u32,
}

fn run_phase(
    agent: &ChildGuard,
    agent_addr: SocketAddr,
    node_exporter: &ChildGuard,
    ne_addr: SocketAddr,
    seconds: u64,
    scrape_agent: bool,
) -> anyhow::Result<Phase> {
    let cycles_start = agent_cycles(&scrape(agent_addr)?)?;
    let agent_start = measure(agent.0.id())?;
    let ne_start = measure(node_exporter.0.id())?;
    let began = Instant::now();
    for i in 0..seconds {
        if scrape_agent {
            scrape(agent_addr)?;
        }
        scrape(ne_addr)?;
        std::thread::sleep(
            (began + Duration::from_secs(i + 1)).saturating_duration_since(Instant::now()),
        );
    }
    let agent_end = measure(agent.0.id())?;
    let ne_end = measure(node_exporter.0.id())?;
    // The scrape that reads the cycle count is outside the measured window.
    let cycles = (agent_cycles(&scrape(agent_addr)?)? - cycles_start).max(1.0);
    let ne_scrapes = u32::try_from(seconds).unwrap_or(u32::MAX).max(1);
    Ok(Phase {
        agent_ms: (agent_end.cpu_ms - agent_start.cpu_ms) / cycles,
        cycles,
        ne_ms: (ne_end.cpu_ms - ne_start.cpu_ms) / f64::from(ne_scrapes),
        ne_scrapes,
    })
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

    // Phase 1: the agent collects on its own, unscraped; node_exporter is scraped once
    // a second (each scrape is one of its collections).
    let collection = run_phase(&agent, agent_addr, &node_exporter, ne_addr, seconds, false)?;
    // Phase 2: both scraped once a second, as Prometheus would.
    let scraped = run_phase(&agent, agent_addr, &node_exporter, ne_addr, seconds, true)?;

    println!("agent-bench: 2 × {seconds} s; vigil-agent --simulate-gpus 8 --interval 1");
    for (what, p) in [
        ("collection only (agent not scraped)", &collection),
        ("agent scraped once per cycle", &scraped),
    ] {
        println!(
            "{what}: vigil-agent {:.3} CPU ms per cycle ({} cycles) vs prometheus-node-exporter {:.3} CPU ms per scrape ({} scrapes): {:.1}% (target < 20%)",
            p.agent_ms,
            p.cycles,
            p.ne_ms,
            p.ne_scrapes,
            100.0 * p.agent_ms / p.ne_ms.max(f64::MIN_POSITIVE)
        );
    }
    let agent_now = measure(agent.0.id())?;
    let ne_now = measure(node_exporter.0.id())?;
    println!(
        "RSS: vigil-agent {:.1} MiB (peak {:.1}, target < 12), prometheus-node-exporter {:.1} MiB (peak {:.1})",
        agent_now.rss_kib as f64 / 1024.0,
        agent_now.hwm_kib as f64 / 1024.0,
        ne_now.rss_kib as f64 / 1024.0,
        ne_now.hwm_kib as f64 / 1024.0,
    );
    println!(
        "series served: vigil-agent {}, prometheus-node-exporter {}",
        series_count(&scrape(agent_addr)?),
        series_count(&scrape(ne_addr)?)
    );
    drop(agent);
    drop(node_exporter);
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}
