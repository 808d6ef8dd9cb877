//! Auto-recovery's guardrails with real processes: one collector, one `vigil-agent
//! --simulate-gpus 8` node holding the control channel, one recovery directory with
//! three scripts, each fired by an Xid code of its own.
//!
//! - `bad-perms` is world-writable (0777): the agent refuses it, saying why, and the
//!   collector escalates (a `decision: escalate` entry). It never runs.
//! - `show-payload` gets a label full of shell metacharacters (`$(...)`, backticks,
//!   `;`, `&&`, `|`, `>`, `rm -rf` of a directory of the test): the script receives the
//!   string verbatim in `VIGIL_LABEL_PAYLOAD`, and none of it was executed.
//! - `kill-test` fires while the kill switch is engaged: a `skip_kill_switch` entry and
//!   no run; released, it runs.
//!
//! About 20 s.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use vigil_e2e::alerting::{FaultFile, Faults};
use vigil_e2e::collector::{Collector, TestDir, series_of, sum_of, wait_for};
use vigil_e2e::recovery::{
    RecoveryDir, actions, actions_of, check_action_id, collector_config, kill_switch,
    start_recovering_agent, wait_action,
};
use vigil_proto::actions::{ActionState, Decision};

const NODE: &str = "rec-guard";
const BAD: &str = "bad-perms";
const PAYLOAD: &str = "show-payload";
const KILL: &str = "kill-test";
const ACTION_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn refused_scripts_verbatim_labels_and_the_kill_switch() -> anyhow::Result<()> {
    let dir = TestDir::new("recovery-guardrails")?;
    let result = scenario(dir.path());
    dir.finish(result)
}

/// The rules: Xid 79 → `bad-perms`, Xid 48 → `show-payload` with `payload`, Xid 63 →
/// `kill-test`. `payload` is a YAML single-quoted string (a `'` doubled).
fn rules(payload: &str) -> String {
    let quoted = payload.replace('\'', "''");
    format!(
        r#"groups:
  - name: guardrails
    interval: 1s
    rules:
      - alert: GuardBadPerms
        expr: increase(vigil_gpu_xid_errors_total{{xid="79"}}[15s]) > 0
        recovery: {{script: {BAD}, args_from_labels: [gpu]}}
      - alert: GuardPayload
        expr: increase(vigil_gpu_xid_errors_total{{xid="48"}}[15s]) > 0
        labels:
          payload: '{quoted}'
        recovery: {{script: {PAYLOAD}, args_from_labels: [payload]}}
      - alert: GuardKillSwitch
        expr: increase(vigil_gpu_xid_errors_total{{xid="63"}}[30s]) > 0
        recovery: {{script: {KILL}, args_from_labels: [gpu]}}
"#
    )
}

fn scenario(dir: &Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let rec = RecoveryDir::new(dir, "recovery")?;
    rec.recording_script(BAD, "bad", 0, 0o777)?;
    rec.recording_script(PAYLOAD, "payload", 0, 0o755)?;
    rec.recording_script(KILL, "kill", 0, 0o755)?;

    // Whatever a shell would make of the payload leaves a trace in the test directory:
    // three files that must not appear and a directory that must survive.
    let pwned = [
        dir.join("pwned-subst"),
        dir.join("pwned-backtick"),
        dir.join("pwned-redirect"),
    ];
    let victim = dir.join("victim");
    std::fs::create_dir_all(&victim)?;
    std::fs::write(victim.join("keep"), "keep\n")?;
    let payload = format!(
        "$(touch {}); `touch {}` && echo x > {} | cat; rm -rf {} \"'\\n",
        pwned[0].display(),
        pwned[1].display(),
        pwned[2].display(),
        victim.display()
    );

    let rules_path = dir.join("guardrails.yml");
    std::fs::write(&rules_path, rules(&payload))?;
    let config = collector_config(dir, "")?;
    let (rules_arg, config_arg) = (
        rules_path.display().to_string(),
        config.display().to_string(),
    );
    let collector = Collector::start(dir, None, &["--rules", &rules_arg, "--config", &config_arg])?;
    let faults = FaultFile::new(dir.join("faults.toml"));
    faults.write(&Faults::default())?;
    let _agent = start_recovering_agent(dir, NODE, &collector, &rec, &faults.path)?;
    wait_for(Duration::from_secs(30), "the Xid counters", || {
        let n = series_of(&collector.query(
            r#"vigil_gpu_xid_errors_total{xid=~"79|48|63",gpu=~"1|2|4"}"#,
            None,
        )?)?
        .len();
        Ok((n >= 9).then_some(()))
    })?;

    // (a) and (b) at once.
    let mut injected = Faults::default().xid(1, 79).xid(2, 48);
    faults.write(&injected)?;

    // (a) The world-writable script: refused with the reason, then escalated.
    let refused = wait_action(&collector, ACTION_TIMEOUT, NODE, BAD, Decision::Run, |a| {
        a.state.is_final()
    })?;
    ensure!(refused.state == ActionState::Refused, "{refused:?}");
    ensure!(
        refused.message.contains(BAD)
            && refused.message.contains("0777")
            && refused.message.contains("world-writable"),
        "the refusal does not say why: {:?}",
        refused.message
    );
    let escalated = wait_action(
        &collector,
        ACTION_TIMEOUT,
        NODE,
        BAD,
        Decision::Escalate,
        |_| true,
    )?;
    ensure!(
        escalated.state == ActionState::Recorded
            && escalated.reason.contains("refused")
            && escalated.reason.contains("world-writable"),
        "{escalated:?}"
    );
    ensure!(
        rec.runs(BAD)?.is_empty(),
        "the world-writable script ran: {:?}",
        rec.runs(BAD)?
    );

    // (b) The shell metacharacters reach the script verbatim and nothing ran them.
    let shown = wait_action(
        &collector,
        ACTION_TIMEOUT,
        NODE,
        PAYLOAD,
        Decision::Run,
        |a| a.state.is_final(),
    )?;
    ensure!(
        shown.state == ActionState::Succeeded && shown.exit_code == Some(0),
        "{shown:?}"
    );
    check_action_id(&shown.id)?;
    ensure!(
        shown.args.get("payload") == Some(&payload),
        "the action's payload is not verbatim: {:?}",
        shown.args
    );
    let env = rec.env_of(PAYLOAD, &shown.id)?;
    // `env` prints the value as it is; the payload holds no newline (`\n` is two
    // characters), so its line is the whole value.
    ensure!(
        env.get("VIGIL_LABEL_PAYLOAD") == Some(&payload),
        "VIGIL_LABEL_PAYLOAD is {:?}, expected {payload:?}",
        env.get("VIGIL_LABEL_PAYLOAD")
    );
    for path in &pwned {
        ensure!(
            !path.exists(),
            "{} exists: part of the payload was run by a shell",
            path.display()
        );
    }
    ensure!(
        victim.join("keep").is_file(),
        "{} was removed: part of the payload was run by a shell",
        victim.display()
    );

    // (c) The kill switch: engaged, a new fault is skipped and nothing runs.
    kill_switch(&collector, true, "e2e: maintenance window")?;
    let listed = actions(&collector)?;
    ensure!(
        listed.kill_switch.engaged
            && listed.kill_switch.by == "e2e"
            && listed.kill_switch.reason == "e2e: maintenance window",
        "{:?}",
        listed.kill_switch
    );
    injected = injected.xid(4, 63);
    faults.write(&injected)?;
    let skipped = wait_action(
        &collector,
        ACTION_TIMEOUT,
        NODE,
        KILL,
        Decision::SkipKillSwitch,
        |_| true,
    )?;
    ensure!(
        skipped.state == ActionState::Recorded && skipped.reason.contains("kill switch"),
        "{skipped:?}"
    );
    let metrics = collector.self_metrics()?;
    ensure!(
        sum_of(&metrics, "vigil_recovery_kill_switch", &[]) == Some(1.0),
        "vigil_recovery_kill_switch is not 1 while engaged"
    );
    // Evaluations keep coming every second; none may start it.
    std::thread::sleep(Duration::from_secs(3));
    let kill_actions = actions_of(&collector, NODE, KILL)?;
    ensure!(
        kill_actions
            .iter()
            .all(|a| a.decision == Decision::SkipKillSwitch),
        "an action was decided while the kill switch was engaged: {kill_actions:?}"
    );
    ensure!(
        rec.runs(KILL)?.is_empty(),
        "{KILL} ran under the kill switch"
    );

    // Released: the alert still fires, so now it runs.
    kill_switch(&collector, false, "")?;
    let ran = wait_action(&collector, ACTION_TIMEOUT, NODE, KILL, Decision::Run, |a| {
        a.state.is_final()
    })?;
    ensure!(
        ran.state == ActionState::Succeeded && ran.exit_code == Some(0),
        "{ran:?}"
    );
    ensure!(
        rec.runs(KILL)? == vec![ran.id.clone()],
        "{:?}",
        rec.runs(KILL)?
    );
    let metrics = collector.self_metrics()?;
    for (script, decision) in [
        (BAD, "run"),
        (BAD, "escalate"),
        (PAYLOAD, "run"),
        (KILL, "skip_kill_switch"),
        (KILL, "run"),
    ] {
        let n = sum_of(
            &metrics,
            "vigil_recovery_decisions_total",
            &[("script", script), ("decision", decision)],
        )
        .with_context(|| format!("no decisions counted for {script} {decision}"))?;
        ensure!(n >= 1.0, "{script} {decision}: {n}");
    }
    eprintln!("recovery guardrails took {:?}", started.elapsed());
    Ok(())
}
