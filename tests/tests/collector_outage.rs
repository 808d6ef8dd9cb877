//! The collector stops (SIGTERM) for 60 s while the agent keeps collecting every second;
//! once it is back on the same ports and data directory, every collection the agent made
//! — before, during and after the outage — is queryable, with its original timestamp.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use vigil_e2e::collector::{
    Collector, ShippingAgent, TestDir, check_counts_every_cycle, now_secs, series_of, sum_of,
    wait_for,
};

const NODE: &str = "gpu-node-outage";
const TOKEN: &str = "outage-token-91d2";
/// The number.
const OUTAGE: Duration = Duration::from_secs(60);

#[test]
fn a_sixty_second_collector_outage_loses_no_sample() -> anyhow::Result<()> {
    let dir = TestDir::new("collector-outage")?;
    let result = scenario(dir.path());
    dir.finish(result)
}

/// The agent's collection count, from its own /metrics.
fn agent_cycles(agent: &ShippingAgent) -> anyhow::Result<f64> {
    sum_of(&agent.scrape()?, "vigil_agent_collections_total", &[])
        .context("the agent exposes no vigil_agent_collections_total")
}

/// The highest collection count the collector holds for the node.
fn stored_cycles(collector: &Collector) -> anyhow::Result<f64> {
    let series = series_of(&collector.query(
        &format!("max(vigil_agent_collections_total{{node=\"{NODE}\"}})"),
        None,
    )?)?;
    Ok(series.first().map_or(0.0, |s| s.samples[0].1))
}

fn scenario(dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut collector = Collector::start(dir, Some(TOKEN), &[])?;
    let agent = ShippingAgent::start(dir, NODE, &collector, &[])?;
    wait_for(Duration::from_secs(60), "a few shipped cycles", || {
        Ok((stored_cycles(&collector)? >= 3.0).then_some(()))
    })?;

    let status = collector.terminate(Duration::from_secs(20))?;
    ensure!(
        status.success(),
        "SIGTERM: the collector exited with {status}"
    );
    let stopped_at = now_secs();
    let cycles_at_stop = agent_cycles(&agent)?;
    std::thread::sleep(OUTAGE);
    let cycles_during = agent_cycles(&agent)? - cycles_at_stop;
    ensure!(
        cycles_during >= 50.0,
        "the agent made only {cycles_during} collections during the 60 s outage"
    );

    collector.spawn()?;
    let restarted_at = now_secs();
    let cycles_at_restart = agent_cycles(&agent)?;
    let drained = Instant::now();
    wait_for(Duration::from_secs(90), "the spool to drain", || {
        Ok((stored_cycles(&collector)? >= cycles_at_restart + 2.0).then_some(()))
    })?;
    println!(
        "spool of {cycles_during} cycles drained {:?} after the restart",
        drained.elapsed()
    );

    // Every sample of the agent's per-cycle counter, from its first collection on.
    let range = started.elapsed().as_secs() + 10;
    let data = collector.query(
        &format!("vigil_agent_collections_total{{node=\"{NODE}\"}}[{range}s]"),
        None,
    )?;
    let series = series_of(&data)?;
    ensure!(
        series.len() == 1,
        "expected one series, got {}",
        series.len()
    );
    let check = check_counts_every_cycle(&series[0])?;
    println!("{check:?}");
    ensure!(
        check.first_value <= 1.0,
        "the first collections are missing: the stored series starts at {}",
        check.first_value
    );
    ensure!(
        check.last_value >= cycles_at_restart + 2.0,
        "stored up to {} but the agent had made {cycles_at_restart} by the restart",
        check.last_value
    );
    ensure!(
        check.max_gap_ms < 5_000,
        "samples {} ms apart: original timestamps were not kept",
        check.max_gap_ms
    );
    let stop_ms = (stopped_at * 1000.0) as i64;
    let restart_ms = (restarted_at * 1000.0) as i64;
    let inside = series[0]
        .samples
        .iter()
        .filter(|(t, _)| (stop_ms..restart_ms).contains(t))
        .count();
    ensure!(
        inside as f64 >= cycles_during,
        "only {inside} samples are stamped inside the outage, the agent made {cycles_during}"
    );

    // Not just the counter: each GPU's temperature has one sample per cycle too.
    let outage_secs = ((restart_ms - stop_ms) as f64 / 1000.0).floor();
    let at = restarted_at;
    let counts = |expr: &str| -> anyhow::Result<Vec<(String, f64)>> {
        Ok(series_of(&collector.query(expr, Some(at))?)?
            .into_iter()
            .map(|s| {
                (
                    s.labels.get("gpu").cloned().unwrap_or_default(),
                    s.samples[0].1,
                )
            })
            .collect())
    };
    let cycles = counts(&format!(
        "count_over_time(vigil_agent_collections_total{{node=\"{NODE}\"}}[{outage_secs}s])"
    ))?;
    ensure!(cycles.len() == 1, "cycle count: {cycles:?}");
    let temps = counts(&format!(
        "count_over_time(DCGM_FI_DEV_GPU_TEMP{{node=\"{NODE}\"}}[{outage_secs}s])"
    ))?;
    ensure!(temps.len() == 8, "GPU temperature counts: {temps:?}");
    for (gpu, n) in &temps {
        ensure!(
            *n == cycles[0].1,
            "gpu {gpu}: {n} temperature samples in the outage's {outage_secs} s, {} cycles",
            cycles[0].1
        );
    }
    println!(
        "{} cycles in the {outage_secs} s outage window, each with 8 GPU temperatures; test took {:?}",
        cycles[0].1,
        started.elapsed()
    );
    Ok(())
}
