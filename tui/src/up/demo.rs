//! `vigil up --demo`'s simulated fleet: nodes with eight simulated GPUs each, every one
//! a real agent in this process with its own copy of the simulated NVML library and its
//! own faults file (each copy loaded from its own file is its own instance, see
//! agent/nvml-sim/README.md), and the Alertmanager configuration that sends the
//! notifications to the demo's receiver ([`super::webhook`]).
//!
//! Recovery, for real but against the simulation: the default GPU pack is loaded with a
//! `recovery:` block on GpuEccDoubleBitError (a GPU reset clears the volatile ECC
//! counters on real hardware too), and each node's recovery directory holds a
//! `reset-gpu` that, instead of `nvidia-smi -r`, asks the demo's fault injector to reset
//! the simulated GPU (a file in the node's `resets/` folder): the collector decides, the
//! agent runs the script, the injector clears the fault, the alert resolves.

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
    /// Where the node's `reset-gpu` leaves its reset requests for the fault injector.
    pub resets_dir: PathBuf,
    pub config: AgentConfig,
}

/// The demo's `reset-gpu`: checks its input as a real one must, then asks the fault
/// injector (through `resets_dir`) to reset the simulated GPU.
fn reset_script(resets_dir: &Path) -> String {
    format!(
        r#"#!/bin/sh
# Written by `vigil up --demo`: a reset-gpu for simulated GPUs. A real one is in
# deploy/recovery/reset-gpu (nvidia-smi -r, with its checks).
set -eu
gpu="${{VIGIL_LABEL_GPU:-}}"
case "$gpu" in
  ''|*[!0-9]*) echo "reset-gpu: VIGIL_LABEL_GPU is not a GPU index: '$gpu'" >&2; exit 2 ;;
esac
echo "reset-gpu: resetting simulated GPU $gpu of $VIGIL_NODE for $VIGIL_ALERT_NAME (action $VIGIL_ACTION_ID)"
printf '%s\n' "$gpu" > '{dir}/.'"$VIGIL_ACTION_ID"
mv '{dir}/.'"$VIGIL_ACTION_ID" '{dir}/'"$VIGIL_ACTION_ID"
echo "reset-gpu: GPU $gpu reset requested; its volatile ECC counters start again from 0"
"#,
        dir = resets_dir.display()
    )
}

/// Creates `dir` with `mode` (the agent refuses a recovery directory or script that
/// others may write).
fn create_with_mode(path: &Path, mode: u32, contents: Option<&str>) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    match contents {
        None => std::fs::create_dir_all(path),
        Some(text) => std::fs::write(path, text),
    }
    .with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// The default rule packs as files under `<demo_dir>/rules/`, the GPU pack with a
/// `recovery:` block on GpuEccDoubleBitError.
pub fn rule_files(demo_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = demo_dir.join("rules");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Vec::new();
    for (name, text) in vigil_collector::alerting::load::DEFAULT_PACKS {
        let file = name.rsplit('/').next().unwrap_or(name);
        let mut text = (*text).to_string();
        if file == "gpu.yml" {
            const RULE: &str = "      - alert: GpuEccDoubleBitError\n        expr: DCGM_FI_DEV_ECC_DBE_VOL_TOTAL > 0\n";
            anyhow::ensure!(
                text.contains(RULE),
                "the GPU pack no longer has GpuEccDoubleBitError as the demo expects"
            );
            text = text.replace(
                RULE,
                &format!(
                    "{RULE}        recovery:\n          script: reset-gpu\n          args_from_labels: [gpu]\n"
                ),
            );
        }
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        out.push(path);
    }
    Ok(out)
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
            let resets_dir = state_dir.join("resets");
            let recovery_dir = state_dir.join("recovery");
            std::fs::create_dir_all(&resets_dir)
                .with_context(|| format!("creating {}", resets_dir.display()))?;
            create_with_mode(&recovery_dir, 0o755, None)?;
            create_with_mode(
                &recovery_dir.join("reset-gpu"),
                0o755,
                Some(&reset_script(&resets_dir)),
            )?;
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
            config.recovery.dir = recovery_dir;
            // The kernel log is this machine's: only the agent for this machine ships it.
            config.logs.kmsg = std::path::PathBuf::new();
            Ok(DemoNode {
                name,
                faults_file,
                resets_dir,
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
            let script = n.config.recovery.dir.join("reset-gpu");
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&script).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o755);
        }
    }

    #[test]
    fn the_demo_script_asks_the_injector_and_refuses_a_bad_index() {
        let dir = tempfile::tempdir().unwrap();
        let node = nodes(dir.path(), 1, "http://127.0.0.1:4317")
            .unwrap()
            .remove(0);
        let run = |gpu: &str| {
            std::process::Command::new(node.config.recovery.dir.join("reset-gpu"))
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("VIGIL_LABEL_GPU", gpu)
                .env("VIGIL_NODE", "demo-node-1")
                .env("VIGIL_ALERT_NAME", "GpuEccDoubleBitError")
                .env("VIGIL_ACTION_ID", "a-1")
                .output()
                .unwrap()
        };
        let bad = run("1; touch x");
        assert_eq!(bad.status.code(), Some(2));
        assert!(!node.resets_dir.join("a-1").exists());
        let ok = run("3");
        assert!(ok.status.success(), "{ok:?}");
        let asked = std::fs::read_to_string(node.resets_dir.join("a-1")).unwrap();
        assert_eq!(asked, "3\n");
    }

    #[test]
    fn the_gpu_pack_gets_its_recovery_block() {
        let dir = tempfile::tempdir().unwrap();
        let files = rule_files(dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        let gpu = std::fs::read_to_string(&files[0]).unwrap();
        assert!(
            gpu.contains("recovery:\n          script: reset-gpu\n"),
            "{gpu}"
        );
        let parsed = vigil_rules::rulefile::parse_rule_file(&files[0], &gpu);
        assert!(parsed.is_ok(), "{parsed:?}");
    }
}
