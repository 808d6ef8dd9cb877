//! The fleet registry: nodes from agent snapshots, `vigil_node_up` as time passes, and
//! the registry file that carries it across a restart.

mod ingest_common;

use anyhow::{Context, Result, ensure};
use ingest_common::*;
use vigil_collector::registry::{NodeObservation, Registry};
use vigil_proto::MetricFamily;
use vigil_proto::otlp::*;

fn agent_request(node: &str, interval_secs: f64, t_ms: i64) -> ExportMetricsServiceRequest {
    let mut temp = MetricFamily::gauge("DCGM_FI_DEV_GPU_TEMP", "t");
    temp.push(
        &[
            ("gpu", "0"),
            ("UUID", "GPU-1"),
            ("pci_bus_id", "0000:17:00.0"),
            ("modelName", "NVIDIA A100"),
        ],
        40.0,
    );
    let up = MetricFamily::gauge("vigil_gpu_up", "u").with(&[("gpu", "0")], 1.0);
    let load = MetricFamily::gauge("node_load1", "l").with(&[], 0.5);
    let res = AgentResource {
        node,
        agent_version: "0.2.0",
        interval_secs,
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![snapshot_to_resource_metrics(&[temp, up, load], &res, t_ms)],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_up_follows_silence_and_the_registry_survives_a_restart() -> Result<()> {
    let c = Collector::start(1 << 20).await?;
    let t = now_ms();
    for (node, interval) in [("n1", 1.0), ("n2", 30.0)] {
        let ingest = c.ingest.clone();
        let req = agent_request(node, interval, t);
        ingest.export(req).await?;
    }
    let nodes = c.registry.nodes();
    ensure!(nodes.len() == 2 && nodes.iter().all(|n| n.up), "{nodes:?}");
    let n1 = &nodes[0];
    ensure!(
        n1.series == 3
            && n1.gpus.len() == 1
            && n1.gpus[0].model_name.as_deref() == Some("NVIDIA A100"),
        "{n1:?}"
    );
    let json = serde_json::to_value(&nodes)?;
    ensure!(json[0]["gpus"][0]["uuid"] == "GPU-1", "{json}");

    // 20 s later: n1 (1 s interval, 15 s floor) is down; n2 (30 s interval → 90 s) is up.
    let seen = n1.last_seen_unix_ms;
    c.registry.write_node_up(&c.store, seen + 1_000)?;
    c.registry.write_node_up(&c.store, seen + 20_000)?;
    let up = c.select("vigil_node_up")?;
    let by_node = |n: &str| {
        up.iter()
            .find(|s| s.labels.get("node") == Some(n))
            .map(|s| s.samples.clone())
    };
    ensure!(
        by_node("n1") == Some(vec![(seen + 1_000, 1.0), (seen + 20_000, 0.0)]),
        "{up:?}"
    );
    ensure!(
        by_node("n2") == Some(vec![(seen + 1_000, 1.0), (seen + 20_000, 1.0)]),
        "{up:?}"
    );
    ensure!(
        up[0].labels.len() == 2,
        "only __name__ and node: {}",
        up[0].labels
    );

    let fams = c.registry.metric_families();
    let count = fams
        .iter()
        .find(|f| f.name == "vigil_registry_nodes")
        .context("family")?;
    ensure!(count.samples[0].value == 2.0);

    // The file written by write_node_up brings the fleet back after a restart.
    let reopened = Registry::open(c.dir.path())?;
    ensure!(
        reopened
            .nodes()
            .iter()
            .map(|n| (&n.node, &n.agent_version, n.gpus.len()))
            .eq(nodes
                .iter()
                .map(|n| (&n.node, &n.agent_version, n.gpus.len())))
    );
    Ok(())
}

#[test]
fn a_damaged_registry_file_is_set_aside() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("registry.json"), b"{not json")?;
    let r = Registry::open(dir.path())?;
    ensure!(r.nodes().is_empty());
    ensure!(dir.path().join("registry.json.damaged").exists());
    r.observe(NodeObservation {
        node: "n".into(),
        agent_version: None,
        interval_secs: None,
        series: 1,
        gpus: vec![],
        sample_ms: 1,
    });
    r.save()?;
    ensure!(Registry::open(dir.path())?.nodes().len() == 1);
    Ok(())
}
