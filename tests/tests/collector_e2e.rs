//! The agent with 8 simulated GPUs ships to the real collector; Debian's Prometheus 2.42
//! scrapes the same agent. The collector's query API answers with the agent's series
//! and labels, and rate() over counters agrees with Prometheus's own answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use vigil_e2e::collector::{
    Collector, SeriesResult, ShippingAgent, TestDir, api_data, find, now_secs, query_path,
    series_of, wait_for,
};
use vigil_e2e::{ChildGuard, free_port, http_get};

const NODE: &str = "gpu-node-e2e";
const TOKEN: &str = "e2e-fleet-token-3f1c";
/// The rate() window. Both sides sample once a second.
const WINDOW_SECS: f64 = 30.0;
const INTERVAL_SECS: f64 = 1.0;

/// Debian's prometheus on a free port, scraping `target` every second into its own
/// storage under `dir`.
struct Prometheus {
    _child: ChildGuard,
    addr: SocketAddr,
}

impl Prometheus {
    fn start(dir: &Path, target: SocketAddr) -> anyhow::Result<Self> {
        let addr = free_port()?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
                 scrape_configs:\n  - job_name: vigil-agent\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context(
                "starting /usr/bin/prometheus (Debian's prometheus; tests/run.sh installs it)",
            )?;
        let prometheus = Self {
            _child: ChildGuard(child),
            addr,
        };
        wait_for(Duration::from_secs(60), "prometheus /-/ready", || {
            Ok(http_get(addr, "/-/ready", &[])
                .is_ok_and(|r| r.status == 200)
                .then_some(()))
        })?;
        Ok(prometheus)
    }

    fn query(&self, promql: &str, time: Option<f64>) -> anyhow::Result<serde_json::Value> {
        let path = query_path(promql, time);
        api_data(
            &http_get(self.addr, &path, &[])?,
            &format!("prometheus {path}"),
        )
    }
}

/// The labels of a result series without `__name__`.
fn labels_without_name(series: &SeriesResult) -> BTreeMap<String, String> {
    let mut labels = series.labels.clone();
    labels.remove("__name__");
    labels
}

fn scalar_of(data: &serde_json::Value) -> anyhow::Result<f64> {
    let series = series_of(data)?;
    ensure!(series.len() == 1, "expected one series, got {series:?}");
    Ok(series[0].samples[0].1)
}

#[test]
fn agent_ships_eight_gpus_and_rate_agrees_with_prometheus() -> anyhow::Result<()> {
    let dir = TestDir::new("collector-e2e")?;
    let result = scenario(dir.path());
    dir.finish(result)
}

fn scenario(dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let collector = Collector::start(dir, Some(TOKEN), &[])?;
    let agent = ShippingAgent::start(dir, NODE, &collector, &[])?;
    let prometheus = Prometheus::start(dir, agent.listen)?;

    // 8 series of DCGM_FI_DEV_GPU_TEMP, each with exactly the agent's labels plus the
    // node's identity from the OTLP resource.
    let temps = wait_for(Duration::from_secs(60), "8 GPU temperature series", || {
        let series = series_of(&collector.query("DCGM_FI_DEV_GPU_TEMP", None)?)?;
        Ok((series.len() >= 8).then_some(series))
    })?;
    ensure!(
        temps.len() == 8,
        "{} series of DCGM_FI_DEV_GPU_TEMP: {temps:?}",
        temps.len()
    );
    let exposed = agent.scrape()?;
    let exposed = find(&exposed, "DCGM_FI_DEV_GPU_TEMP", &[]);
    ensure!(
        exposed.len() == 8,
        "the agent exposes {} GPUs",
        exposed.len()
    );
    let mut seen_gpus = Vec::new();
    for series in &temps {
        let mut labels = labels_without_name(series);
        ensure!(
            series.labels.get("__name__").map(String::as_str) == Some("DCGM_FI_DEV_GPU_TEMP"),
            "__name__ of {:?}",
            series.labels
        );
        ensure!(
            labels.remove("node").as_deref() == Some(NODE),
            "node label of {:?}",
            series.labels
        );
        ensure!(
            labels.remove("instance").as_deref() == Some(NODE),
            "instance label of {:?}",
            series.labels
        );
        // Prometheus's OTLP receiver also turns service.name into `job`; nothing else
        // may be added.
        labels.remove("job");
        for key in [
            "gpu",
            "UUID",
            "pci_bus_id",
            "device",
            "modelName",
            "Hostname",
        ] {
            ensure!(
                labels.contains_key(key),
                "{key} missing from {:?}",
                series.labels
            );
        }
        ensure!(
            labels["Hostname"] == NODE,
            "Hostname of {:?}",
            series.labels
        );
        let twin = exposed
            .iter()
            .find(|s| s.labels == labels)
            .with_context(|| {
                format!("no series on the agent's /metrics has the labels {labels:?}")
            })?;
        ensure!(
            (0.0..150.0).contains(&series.samples[0].1),
            "temperature {} (agent exposes {})",
            series.samples[0].1,
            twin.value
        );
        seen_gpus.push(labels["gpu"].clone());
    }
    seen_gpus.sort();
    ensure!(
        seen_gpus == ["0", "1", "2", "3", "4", "5", "6", "7"],
        "gpu labels {seen_gpus:?}"
    );
    println!(
        "8 GPU series with the agent's labels after {:?}",
        started.elapsed()
    );

    // rate() on both sides over the same window, evaluated at the same instant. The
    // window begins only after both have their first samples, so neither side
    // extrapolates from a partial window, and ends a few seconds before the query so
    // both have ingested everything inside it.
    wait_for(
        Duration::from_secs(30),
        "first samples on both sides",
        || {
            let ours = series_of(&collector.query("vigil_agent_collections_total", None)?)?;
            let theirs = series_of(&prometheus.query("vigil_agent_collections_total", None)?)?;
            Ok((!ours.is_empty() && !theirs.is_empty()).then_some(()))
        },
    )?;
    let eval_at = (now_secs() + WINDOW_SECS + 2.0).floor();
    let ready_at = eval_at + 4.0;
    std::thread::sleep(Duration::from_secs_f64((ready_at - now_secs()).max(0.0)));

    // Tolerance: the collector stamps each sample with the agent's collection time,
    // Prometheus with its scrape time, which lags the collection it reads by anything
    // from 0 to one interval. So each end of the window can be misaligned by up to one
    // interval: a relative error of at most 2 × interval / window (6.7 % here) for a
    // counter rising at a steady rate. Both counters below do: CPU seconds rise at the
    // number of CPUs per second, and the simulated GPUs' energy with a power that
    // varies by a few percent over a second.
    let tolerance = 2.0 * INTERVAL_SECS / WINDOW_SECS;
    let window = format!("{WINDOW_SECS}s");
    let mut compared = Vec::new();
    let cpu = format!("sum(rate(node_cpu_seconds_total[{window}]))");
    let ours = scalar_of(&collector.query(&cpu, Some(eval_at))?)?;
    let theirs = scalar_of(&prometheus.query(&cpu, Some(eval_at))?)?;
    compared.push((cpu, ours, theirs));

    let energy = format!("sum by (gpu) (rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[{window}]))");
    let ours = series_of(&collector.query(&energy, Some(eval_at))?)?;
    let theirs = series_of(&prometheus.query(&energy, Some(eval_at))?)?;
    ensure!(
        ours.len() == 8 && theirs.len() == 8,
        "energy rate per GPU: {} series here, {} in Prometheus",
        ours.len(),
        theirs.len()
    );
    for series in &ours {
        let gpu = &series.labels["gpu"];
        let twin = theirs
            .iter()
            .find(|s| s.labels.get("gpu") == Some(gpu))
            .with_context(|| format!("Prometheus has no energy rate for gpu {gpu}"))?;
        compared.push((
            format!("{energy} {{gpu={gpu}}}"),
            series.samples[0].1,
            twin.samples[0].1,
        ));
    }
    let mut worst: f64 = 0.0;
    for (what, ours, theirs) in &compared {
        ensure!(
            *ours > 0.0 && *theirs > 0.0,
            "{what}: collector {ours}, prometheus {theirs}"
        );
        let difference = (ours - theirs).abs() / ours.max(*theirs);
        println!(
            "{what}: collector {ours:.4}, prometheus {theirs:.4}, differ by {:.2} %",
            difference * 100.0
        );
        ensure!(
            difference <= tolerance,
            "{what} at {eval_at}: collector {ours}, prometheus {theirs}: {:.2} % apart, more than {:.2} %",
            difference * 100.0,
            tolerance * 100.0
        );
        worst = worst.max(difference);
    }
    println!(
        "rate() agrees within {:.2} % (tolerance {:.2} %); test took {:?}",
        worst * 100.0,
        tolerance * 100.0,
        started.elapsed()
    );
    Ok(())
}
