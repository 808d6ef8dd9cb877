//! Auto-recovery end to end, with real processes only: two `vigil-agent --simulate-gpus
//! 8` nodes ship to the real collector and hold its control channel; each has a
//! recovery directory with one script that records its environment and prints a line
//! to stdout and one to stderr.
//!
//! - `rec-auto`: Xid 79 on GPU 3 fires `GpuFellOffBus` (its `recovery:` block names
//!   `reset-gpu` with `args_from_labels: [gpu]`); the agent runs the script at once.
//!   The script saw exactly `PATH`, `LANG` and the `VIGIL_*` variables of the action
//!   (and the `PWD` that dash sets itself); the action is `succeeded` with exit code 0
//!   in `/api/v1/actions`; both output lines are found by the action's logs query with
//!   their stream; with the fault cleared the alert resolves and nothing ran again.
//! - `rec-approve`: Xid 48 on GPU 5 fires `GpuDoubleBitError`, whose script
//!   `drain-node` is `mode = "approval"`: nothing runs until `vigil actions approve`,
//!   then it runs once.
//!
//! The collector's `/metrics` counts the decisions, and `vigil actions` (table, `show`,
//! `--json`) shows the audit. About 25 s, most of it the 15 s window of the rule that
//! has to resolve.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use serde_json::Value;
use vigil_e2e::alerting::{FaultFile, Faults};
use vigil_e2e::collector::{Collector, ShippingAgent, TestDir, series_of, sum_of, wait_for};
use vigil_e2e::recovery::{
    RecoveryDir, actions_of, alerts_named, check_action_id, collector_config, search_logs,
    wait_action,
};
use vigil_proto::actions::{ActionState, Decision, logs_query};

const AUTO_NODE: &str = "rec-auto";
const APPROVAL_NODE: &str = "rec-approve";
const OFF_BUS: &str = "GpuFellOffBus";
const DBE: &str = "GpuDoubleBitError";
const RESET: &str = "reset-gpu";
const DRAIN: &str = "drain-node";
/// Alert firing, decision, dispatch and the script's run, with room for a loaded
/// 2-core CI machine.
const ACTION_TIMEOUT: Duration = Duration::from_secs(20);

const RULES: &str = r#"groups:
  - name: recovery
    interval: 1s
    rules:
      - alert: GpuFellOffBus
        expr: increase(vigil_gpu_xid_errors_total{xid="79"}[15s]) > 0
        labels: {severity: critical}
        recovery: {script: reset-gpu, args_from_labels: [gpu]}
      - alert: GpuDoubleBitError
        expr: increase(vigil_gpu_xid_errors_total{xid="48"}[2m]) > 0
        labels: {severity: critical}
        recovery: {script: drain-node, args_from_labels: [gpu]}
"#;

const CONFIG: &str = r#"[recovery.scripts.drain-node]
mode = "approval"
"#;

#[test]
fn xid_runs_the_recovery_script_with_its_environment_logs_and_approval() -> anyhow::Result<()> {
    let dir = TestDir::new("recovery-e2e")?;
    let result = scenario(dir.path());
    dir.finish(result)
}

/// The script's environment must be exactly `PATH`, `LANG`, the action's `VIGIL_*`
/// variables, and `PWD`, which dash (`/bin/sh`) sets for itself.
fn check_env(
    env: &BTreeMap<String, String>,
    expected_vigil: &[(&str, &str)],
    recovery_dir: &Path,
) -> anyhow::Result<()> {
    let mut expected: BTreeMap<String, String> = expected_vigil
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    expected.insert(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    expected.insert("LANG".into(), "C.UTF-8".into());
    let mut seen = env.clone();
    let pwd = seen.remove("PWD");
    ensure!(
        seen == expected,
        "the script's environment is not exactly the expected one:\n  got      {seen:?}\n  expected {expected:?}"
    );
    if let Some(pwd) = pwd {
        ensure!(
            Path::new(&pwd) == recovery_dir,
            "the script ran in {pwd}, not in its recovery directory {}",
            recovery_dir.display()
        );
    }
    Ok(())
}

fn scenario(dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let marker = format!("recoverymarker{}", std::process::id());
    let auto_dir = RecoveryDir::new(dir, "recovery-auto")?;
    auto_dir.recording_script(RESET, &marker, 0, 0o755)?;
    let approval_dir = RecoveryDir::new(dir, "recovery-approve")?;
    approval_dir.recording_script(DRAIN, &marker, 0, 0o755)?;

    let rules = dir.join("recovery.yml");
    std::fs::write(&rules, RULES)?;
    let config = collector_config(dir, CONFIG)?;
    let (rules_arg, config_arg) = (rules.display().to_string(), config.display().to_string());
    let collector = Collector::start(dir, None, &["--rules", &rules_arg, "--config", &config_arg])?;

    let auto_faults = FaultFile::new(dir.join("faults-auto.toml"));
    let approval_faults = FaultFile::new(dir.join("faults-approve.toml"));
    auto_faults.write(&Faults::default())?;
    approval_faults.write(&Faults::default())?;
    let (auto_path, approval_path) = (
        auto_faults.path.display().to_string(),
        approval_faults.path.display().to_string(),
    );
    let _auto_agent = ShippingAgent::start(
        dir,
        AUTO_NODE,
        &collector,
        &[
            "--simulate-faults",
            &auto_path,
            "--recovery-dir",
            &auto_dir.arg(),
        ],
    )?;
    let _approval_agent = ShippingAgent::start(
        dir,
        APPROVAL_NODE,
        &collector,
        &[
            "--simulate-faults",
            &approval_path,
            "--recovery-dir",
            &approval_dir.arg(),
        ],
    )?;
    // Both agents hold the control channel, and the collector has the pre-initialised
    // Xid counters at 0 that increase() compares with.
    wait_for(
        Duration::from_secs(30),
        "both agents on the control channel",
        || {
            let s = collector.self_metrics()?;
            Ok((sum_of(&s, "vigil_recovery_agents_connected", &[]) == Some(2.0)).then_some(()))
        },
    )?;
    wait_for(
        Duration::from_secs(30),
        "the Xid counters of both nodes",
        || {
            let n = series_of(&collector.query(
                r#"vigil_gpu_xid_errors_total{xid=~"79|48",gpu=~"3|5"}"#,
                None,
            )?)?
            .len();
            Ok((n >= 8).then_some(()))
        },
    )?;

    // The faults, at once on both nodes.
    let injected = Instant::now();
    auto_faults.write(&Faults::default().xid(3, 79))?;
    approval_faults.write(&Faults::default().xid(5, 48))?;

    // 1. The automatic action: decided, sent, run, reported.
    let action = wait_action(
        &collector,
        ACTION_TIMEOUT,
        AUTO_NODE,
        RESET,
        Decision::Run,
        |a| a.state.is_final(),
    )?;
    eprintln!(
        "{RESET} on {AUTO_NODE} finished {:?} after the fault",
        injected.elapsed()
    );
    ensure!(
        action.state == ActionState::Succeeded && action.exit_code == Some(0),
        "{RESET} did not succeed: {action:?}"
    );
    check_action_id(&action.id)?;
    ensure!(action.alertname == OFF_BUS, "{action:?}");
    ensure!(
        action.args == BTreeMap::from([("gpu".to_owned(), "3".to_owned())]),
        "the action's args are not just the GPU: {action:?}"
    );
    ensure!(
        action.labels.get("gpu").map(String::as_str) == Some("3")
            && action.labels.get("node").map(String::as_str) == Some(AUTO_NODE)
            && action.labels.get("xid").map(String::as_str) == Some("79"),
        "{action:?}"
    );
    ensure!(
        action.started_at.is_some() && action.finished_at.is_some() && !action.timed_out,
        "{action:?}"
    );
    ensure!(action.logs_query == logs_query(&action.id), "{action:?}");
    ensure!(
        auto_dir.runs(RESET)? == vec![action.id.clone()],
        "{RESET} ran {:?}, expected once for {}",
        auto_dir.runs(RESET)?,
        action.id
    );
    check_env(
        &auto_dir.env_of(RESET, &action.id)?,
        &[
            ("VIGIL_ACTION_ID", &action.id),
            ("VIGIL_ALERT_NAME", OFF_BUS),
            ("VIGIL_NODE", AUTO_NODE),
            ("VIGIL_LABEL_GPU", "3"),
        ],
        &auto_dir.path,
    )?;
    // The fault goes away (the Xid counter stays; the rule's window empties).
    auto_faults.write(&Faults::default())?;

    // 2. The output, searchable by the action's logs query, each line with its stream.
    let query = logs_query(&action.id);
    let hits = wait_for(
        Duration::from_secs(15),
        "the script's output in search",
        || {
            let hits = search_logs(&collector, AUTO_NODE, &query)?;
            let both = ["stdout", "stderr"].iter().all(|stream| {
                hits.iter()
                    .any(|h| h["attributes"]["vigil.recovery.stream"] == *stream)
            });
            Ok(both.then_some(hits))
        },
    )?;
    for stream in ["stdout", "stderr"] {
        let line = format!("{RESET} {stream} {marker}");
        let hit = hits
            .iter()
            .find(|h| h["attributes"]["vigil.recovery.stream"] == stream)
            .with_context(|| format!("no {stream} line in {hits:?}"))?;
        ensure!(hit["body"] == line.as_str(), "{stream}: {hit}");
        ensure!(
            hit["source"] == format!("recovery:{}", action.id).as_str() && hit["node"] == AUTO_NODE,
            "{hit}"
        );
    }
    // Every hit is this action's, and the query finds nothing of another action.
    ensure!(
        hits.iter()
            .all(|h| h["source"] == format!("recovery:{}", action.id).as_str()),
        "{hits:?}"
    );
    let by_marker = search_logs(&collector, AUTO_NODE, &marker)?;
    ensure!(
        by_marker.len() == 2,
        "a search for the marker found {} lines, expected the 2 the script printed: {by_marker:?}",
        by_marker.len()
    );

    // 3. The approval node: its action waits, and nothing ran.
    let waiting = wait_action(
        &collector,
        ACTION_TIMEOUT,
        APPROVAL_NODE,
        DRAIN,
        Decision::AwaitApproval,
        |_| true,
    )?;
    ensure!(
        waiting.state == ActionState::AwaitingApproval
            && waiting.args == BTreeMap::from([("gpu".to_owned(), "5".to_owned())]),
        "{waiting:?}"
    );
    // Give a wrongly dispatched action time to show.
    std::thread::sleep(Duration::from_secs(2));
    let still = actions_of(&collector, APPROVAL_NODE, DRAIN)?;
    ensure!(
        still.len() == 1 && still[0].state == ActionState::AwaitingApproval,
        "{DRAIN} changed without an approve: {still:?}"
    );
    ensure!(
        approval_dir.runs(DRAIN)?.is_empty(),
        "{DRAIN} ran before it was approved: {:?}",
        approval_dir.runs(DRAIN)?
    );

    // The CLI's view: both actions, one awaiting approval.
    let table = collector.vigil(&["actions"])?;
    for (node, script, state) in [
        (AUTO_NODE, RESET, "succeeded"),
        (APPROVAL_NODE, DRAIN, "awaiting_approval"),
    ] {
        ensure!(
            table
                .lines()
                .any(|l| l.contains(node) && l.contains(script) && l.contains(state)),
            "`vigil actions` has no {state} {script} on {node}:\n{table}"
        );
    }
    let listed: Value =
        serde_json::from_str(&collector.vigil(&["actions", "--json", "--node", APPROVAL_NODE])?)?;
    let ids: Vec<&str> = listed["actions"]
        .as_array()
        .context("actions in `vigil actions --json`")?
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    ensure!(ids == [waiting.id.as_str()], "{listed}");

    // Approved as an operator would; then it runs, once.
    let approved = collector.vigil(&["actions", "approve", &waiting.id, "--by", "e2e"])?;
    ensure!(approved.contains(&waiting.id[..8]), "{approved}");
    let ran = wait_action(
        &collector,
        ACTION_TIMEOUT,
        APPROVAL_NODE,
        DRAIN,
        Decision::AwaitApproval,
        |a| a.state.is_final(),
    )?;
    ensure!(
        ran.id == waiting.id
            && ran.state == ActionState::Succeeded
            && ran.exit_code == Some(0)
            && ran.approved_by.as_deref() == Some("e2e"),
        "{ran:?}"
    );
    ensure!(
        approval_dir.runs(DRAIN)? == vec![ran.id.clone()],
        "{:?}",
        approval_dir.runs(DRAIN)?
    );
    check_env(
        &approval_dir.env_of(DRAIN, &ran.id)?,
        &[
            ("VIGIL_ACTION_ID", &ran.id),
            ("VIGIL_ALERT_NAME", DBE),
            ("VIGIL_NODE", APPROVAL_NODE),
            ("VIGIL_LABEL_GPU", "5"),
        ],
        &approval_dir.path,
    )?;
    let shown = collector.vigil(&["actions", "show", &ran.id])?;
    ensure!(
        shown.contains(&ran.id) && shown.contains(&logs_query(&ran.id)),
        "{shown}"
    );

    // 4. The collector counts its decisions and outcomes.
    let metrics = collector.self_metrics()?;
    for (script, decision) in [(RESET, "run"), (DRAIN, "await_approval")] {
        ensure!(
            sum_of(
                &metrics,
                "vigil_recovery_decisions_total",
                &[("script", script), ("decision", decision)]
            ) == Some(1.0),
            "vigil_recovery_decisions_total{{script={script:?},decision={decision:?}}} is not 1"
        );
    }
    ensure!(
        sum_of(
            &metrics,
            "vigil_recovery_actions_total",
            &[("state", "succeeded")]
        ) == Some(2.0),
        "vigil_recovery_actions_total{{state=\"succeeded\"}} is not 2"
    );

    // 5. With the fault gone the alert resolves, and the script did not run again.
    wait_for(Duration::from_secs(30), "GpuFellOffBus to resolve", || {
        Ok(alerts_named(&collector, OFF_BUS, AUTO_NODE)?
            .is_empty()
            .then_some(()))
    })?;
    let reset_actions = actions_of(&collector, AUTO_NODE, RESET)?;
    ensure!(
        reset_actions
            .iter()
            .filter(|a| a.decision == Decision::Run)
            .count()
            == 1,
        "{RESET} was decided to run more than once: {reset_actions:?}"
    );
    ensure!(
        auto_dir.runs(RESET)?.len() == 1,
        "{:?}",
        auto_dir.runs(RESET)?
    );
    eprintln!("recovery e2e took {:?}", started.elapsed());
    Ok(())
}
