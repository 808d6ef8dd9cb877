//! Logs through the real processes: a `vigil-agent` tailing a file and reading a kmsg
//! FIFO ships to a `vigil-collector`, and the lines are found through
//! `/api/v1/logs/search`. A line appended to a tailed file must be searchable within
//! 2 s; an NVRM Xid 79 record written to the kernel log must come out with its Xid,
//! its GPU's index and UUID (looked up from the PCI bus id), and count once in
//! `vigil_gpu_xid_errors_total`.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use serde_json::Value;
use vigil_e2e::collector::{
    Collector, ShippingAgent, TestDir, api_data, find, url_encode, wait_for,
};

const NODE: &str = "gpu-node-logs";

#[test]
fn file_lines_and_kernel_xids_reach_search() -> anyhow::Result<()> {
    let dir = TestDir::new("logs-e2e")?;
    let result = scenario(dir.path());
    dir.finish(result)
}

/// The hits of a search for `q` on [`NODE`].
fn search(collector: &Collector, q: &str) -> anyhow::Result<Vec<Value>> {
    let path = format!(
        "/api/v1/logs/search?q={}&node={NODE}&limit=100",
        url_encode(q)
    );
    let data = api_data(&collector.get(&path)?, "logs search")?;
    Ok(data["hits"].as_array().context("data.hits")?.clone())
}

fn scenario(dir: &Path) -> anyhow::Result<()> {
    let collector = Collector::start(dir, None, &[])?;
    let logs = dir.join("app");
    std::fs::create_dir_all(&logs)?;
    let file = logs.join("train.log");
    std::fs::write(&file, "")?;
    let fifo = dir.join("kmsg.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status()?;
    ensure!(made.success(), "mkfifo {}", fifo.display());
    let glob = format!("{}/*.log", logs.display());
    let fifo_arg = fifo.to_str().context("fifo path")?;
    let agent = ShippingAgent::start(
        dir,
        NODE,
        &collector,
        &["--log-file", &glob, "--kmsg", fifo_arg],
    )?;

    // The agent has found the (empty) file once its self-metrics say so.
    agent.wait_tailing(1.0, Duration::from_secs(15))?;
    // A line appended to the tailed file, timed until the API finds it.
    let marker = format!("stepmarker{}", std::process::id());
    let written = Instant::now();
    let mut f = std::fs::OpenOptions::new().append(true).open(&file)?;
    writeln!(f, "epoch 3 step 1200 loss 0.731 {marker}")?;
    f.sync_all()?;
    let hit = wait_for(Duration::from_secs(10), "the file's line in search", || {
        Ok(search(&collector, &marker)?.into_iter().next())
    })?;
    let took = written.elapsed();
    eprintln!("file line searchable after {took:?}");
    ensure!(
        took < Duration::from_secs(2),
        "a line written to a tailed file took {took:?} to be searchable"
    );
    ensure!(hit["node"] == NODE, "{hit}");
    ensure!(
        hit["attributes"]["log.file.path"] == file.to_str().context("path")?,
        "{hit}"
    );

    // The simulated GPU 0's bus id and UUID, as the agent's metrics label them.
    let samples = agent.scrape()?;
    let gpu0 = find(&samples, "DCGM_FI_DEV_GPU_UTIL", &[("gpu", "0")]);
    let gpu0 = gpu0.first().context("GPU 0's utilisation")?;
    let label = |name: &str| {
        gpu0.labels
            .get(name)
            .cloned()
            .with_context(|| format!("label {name} on {gpu0:?}"))
    };
    let (bus_id, uuid) = (label("pci_bus_id")?, label("UUID")?);
    // NVML writes 00000000:3B:00.0; the kernel 0000:3b:00.
    let kernel_bus = bus_id
        .get(4..)
        .and_then(|s| s.strip_suffix(".0"))
        .context("bus id")?
        .to_ascii_lowercase();
    let uptime_usec = std::fs::read_to_string("/proc/uptime")?
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|s| (s * 1e6) as u64)
        .context("/proc/uptime")?;
    let record = format!(
        "3,90001,{uptime_usec},-;NVRM: Xid (PCI:{kernel_bus}): 79, pid=0, name=python, GPU has fallen off the bus.\n"
    );
    let mut kmsg = std::fs::OpenOptions::new().write(true).open(&fifo)?;
    kmsg.write_all(record.as_bytes())?;
    kmsg.flush()?;

    let hit = wait_for(Duration::from_secs(10), "the Xid record in search", || {
        Ok(search(&collector, "attributes.nvidia.xid:79")?
            .into_iter()
            .next())
    })?;
    let attrs = &hit["attributes"];
    ensure!(hit["source"] == "kernel", "{hit}");
    // The kernel's own name for priority 3.
    ensure!(hit["severity"] == "err", "{hit}");
    ensure!(attrs["nvidia.event"] == "xid", "{hit}");
    ensure!(attrs["nvidia.gpu"] == "0", "{hit}");
    ensure!(attrs["nvidia.gpu_uuid"] == uuid.as_str(), "{hit}");
    ensure!(attrs["nvidia.pci_bus_id"] == bus_id.as_str(), "{hit}");
    let body = hit["body"].as_str().unwrap_or("");
    ensure!(body.contains("fallen off the bus"), "{hit}");

    // Counted once into the agent's Xid counter for that GPU.
    wait_for(Duration::from_secs(10), "the Xid counter", || {
        let s = agent.scrape()?;
        let n: f64 = find(
            &s,
            "vigil_gpu_xid_errors_total",
            &[("gpu", "0"), ("xid", "79")],
        )
        .iter()
        .map(|x| x.value)
        .sum();
        ensure!(n <= 1.0, "Xid 79 counted {n} times");
        Ok((n == 1.0).then_some(()))
    })?;
    drop(kmsg);
    Ok(())
}
