//! `vigil up --demo`'s simulated fleet: nodes with eight simulated GPUs each, every one
//! a real agent in this process with its own copy of the simulated NVML library and its
//! own faults file (each copy loaded from its own file is its own instance, see
//! agent/nvml-sim/README.md), and the Alertmanager configuration that sends the
//! notifications to the demo's receiver ([`super::webhook`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use vigil_agent::AgentConfig;

use super::faults::{self, GPUS_PER_NODE};

/// One simulated node.
#[derive(Debug)]
pub struct DemoNode {
    pub name: String,
    pub faults_file: PathBuf,
    pub config: AgentConfig,
}

/// The name of the `i`th simulated node (from 1).
pub fn node_name(i: u32) -> String {
    format!("demo-node-{i}")
}

/// `count` simulated nodes with their state in `<demo_dir>/<name>/`, shipping to
/// `collector_url`; each starts with an empty faults file (a fault left over from a
/// previous run would fire at once).
pub fn nodes(demo_dir: &Path, count: u32, collector_url: &str) -> anyhow::Result<Vec<DemoNode>> {
    (1..=count)
        .map(|i| {
            let name = node_name(i);
            let state_dir = demo_dir.join(&name);
            std::fs::create_dir_all(&state_dir)
                .with_context(|| format!("creating {}", state_dir.display()))?;
            let faults_file = state_dir.join("faults.toml");
            faults::write_file(&faults_file, &faults::NodeFaults::default().render())
                .with_context(|| format!("writing {}", faults_file.display()))?;
            let mut config = AgentConfig {
                node_name: name.clone(),
                state_dir,
                ..AgentConfig::default()
            };
            config.gpu.simulate_gpus = GPUS_PER_NODE;
            config.gpu.expected_count = GPUS_PER_NODE;
            config.gpu.simulate_faults = faults_file.clone();
            config.shipper.collector = collector_url.to_owned();
            // The kernel log is this machine's: only the agent for this machine ships it.
            config.logs.kmsg = std::path::PathBuf::new();
            Ok(DemoNode {
                name,
                faults_file,
                config,
            })
        })
        .collect()
}

/// Routes every alert to the demo's receiver, quickly: a first notification 5 s after
/// an alert fires (Alertmanager's default is 30 s) and resolved alerts too.
pub fn alertmanager_config(receiver: SocketAddr) -> String {
    format!(
        "# Written by `vigil up --demo`: every alert goes to the demo's receiver, which\n\
         # prints it and appends it to notifications.jsonl beside this file.\n\
         route:\n\
         \x20 receiver: demo\n\
         \x20 group_by: [alertname, node, gpu]\n\
         \x20 group_wait: 5s\n\
         \x20 group_interval: 30s\n\
         \x20 repeat_interval: 4h\n\
         receivers:\n\
         \x20 - name: demo\n\
         \x20   webhook_configs:\n\
         \x20     - url: 'http://{receiver}{path}'\n\
         \x20       send_resolved: true\n",
        path = super::webhook::PATH
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_get_distinct_names_state_and_empty_faults_files() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = nodes(dir.path(), 3, "http://127.0.0.1:4317").unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["demo-node-1", "demo-node-2", "demo-node-3"]);
        for n in &nodes {
            assert_eq!(n.config.gpu.simulate_gpus, 8);
            assert!(n.config.logs.kmsg.as_os_str().is_empty());
            assert_eq!(n.config.shipper.collector, "http://127.0.0.1:4317");
            assert_eq!(n.config.state_dir, dir.path().join(&n.name));
            let text = std::fs::read_to_string(&n.faults_file).unwrap();
            assert!(!text.contains("[["), "{text}");
        }
    }
}
