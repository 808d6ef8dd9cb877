//! The recovery runner against real processes in temporary directories: the exact
//! environment a script sees, what is refused, time limits and process groups, output
//! as log records, at-most-once across duplicates and restarts; and the example scripts
//! in deploy/recovery/ (syntax, and reset-gpu's checks against a fake nvidia-smi).
//!
//! The tests run as root, so ownership is covered by the unit test of the pure check in
//! `recovery::script`; here it is modes, symlinks and names.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use vigil_agent::config::RecoveryConfig;
use vigil_agent::logs::LogOutput;
use vigil_agent::recovery::Recovery;
use vigil_proto::control::{Action, Phase, Report};
use vigil_proto::logs as attr;
use vigil_proto::otlp::any_value::Value;
use vigil_proto::otlp::decode_logs_request;

const NODE: &str = "gpu-node-07";
/// Longest a test waits for one report.
const REPORT_WAIT: Duration = Duration::from_secs(20);

/// Log batches as the spool would receive them.
#[derive(Default)]
struct Spooled(Mutex<Vec<Vec<u8>>>);

impl LogOutput for Spooled {
    fn append(&self, payload: &[u8]) -> Result<(), String> {
        self.0.lock().unwrap().push(payload.to_vec());
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Rec {
    body: String,
    severity: String,
    attrs: HashMap<String, String>,
}

impl Spooled {
    fn records(&self) -> Vec<Rec> {
        let mut out = Vec::new();
        for batch in self.0.lock().unwrap().iter() {
            let req = decode_logs_request(batch).unwrap();
            for rl in req.resource_logs {
                for sl in rl.scope_logs {
                    for r in sl.log_records {
                        let text = |v: Option<Value>| match v {
                            Some(Value::StringValue(s)) => s,
                            Some(Value::IntValue(i)) => i.to_string(),
                            Some(Value::BoolValue(b)) => b.to_string(),
                            other => format!("{other:?}"),
                        };
                        out.push(Rec {
                            body: text(r.body.and_then(|b| b.value)),
                            severity: r.severity_text,
                            attrs: r
                                .attributes
                                .into_iter()
                                .map(|kv| (kv.key, text(kv.value.and_then(|v| v.value))))
                                .collect(),
                        });
                    }
                }
            }
        }
        out
    }
}

struct Env {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    state: PathBuf,
    logs: Arc<Spooled>,
}

impl Env {
    fn new() -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("recovery.d");
        std::fs::create_dir(&dir)?;
        chmod(&dir, 0o755)?;
        let state = tmp.path().join("state");
        Ok(Self {
            tmp,
            dir,
            state,
            logs: Arc::default(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// A `#!/bin/sh` script in the recovery directory.
    fn script(&self, name: &str, body: &str, mode: u32) -> Result<()> {
        let path = self.dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n"))?;
        chmod(&path, mode)
    }

    fn open(&self, config: RecoveryConfig) -> Result<Arc<Recovery>> {
        let config = RecoveryConfig {
            dir: self.dir.clone(),
            ..config
        };
        let logs: Arc<dyn LogOutput> = self.logs.clone();
        Ok(Arc::new(Recovery::open(
            &config,
            &self.state,
            NODE,
            Some(logs),
        )?))
    }
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn action(id: &str, script: &str) -> Action {
    Action {
        id: id.into(),
        script: script.into(),
        alert_name: "GpuLost".into(),
        node: NODE.into(),
        labels: BTreeMap::new(),
        timeout_secs: 20,
    }
}

async fn next(rx: &mut UnboundedReceiver<Report>) -> Result<Report> {
    tokio::time::timeout(REPORT_WAIT, rx.recv())
        .await
        .context("no report in time")?
        .context("report channel closed")
}

/// Handles `action` and returns its reports up to the final one.
async fn run(recovery: &Arc<Recovery>, action: Action) -> Result<Vec<Report>> {
    let (tx, mut rx) = unbounded_channel();
    recovery.handle(action, tx);
    let mut out = Vec::new();
    loop {
        let r = next(&mut rx).await?;
        let done = r.phase != Phase::Started as i32;
        out.push(r);
        if done {
            return Ok(out);
        }
    }
}

fn phases(reports: &[Report]) -> Vec<Phase> {
    reports
        .iter()
        .map(|r| Phase::try_from(r.phase).unwrap())
        .collect()
}

fn counter(recovery: &Recovery, result: &str) -> f64 {
    let families = recovery.families();
    let family = families
        .iter()
        .find(|f| f.name == "vigil_agent_recovery_actions_total")
        .unwrap();
    family
        .samples
        .iter()
        .find(|s| s.labels.iter().any(|(k, v)| k == "result" && v == result))
        .map_or(-1.0, |s| s.value)
}

/// True while `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(text.trim().parse()?)
}

#[tokio::test]
async fn script_sees_exactly_path_lang_and_vigil_variables() -> Result<()> {
    let env = Env::new()?;
    let out = env.path("environ");
    let cwd = env.path("cwd");
    let stdin = env.path("stdin");
    env.script(
        "show-env",
        &format!(
            "tr '\\0' '\\n' < /proc/$$/environ > {}\npwd > {}\nreadlink /proc/$$/fd/0 > {}",
            out.display(),
            cwd.display(),
            stdin.display()
        ),
        0o755,
    )?;
    let recovery = env.open(RecoveryConfig::default())?;
    assert_eq!(recovery.scripts(), ["show-env"]);
    let mut a = action("env-1", "show-env");
    a.labels.insert("gpu".into(), "3".into());
    a.labels
        .insert("Pci_Bus_Id".into(), "00000000:3B:00.0".into());
    let reports = run(&recovery, a).await?;
    assert_eq!(phases(&reports), [Phase::Started, Phase::Finished]);
    assert!(reports[1].succeeded(), "{reports:?}");
    let mut seen: Vec<String> = std::fs::read_to_string(&out)?
        .lines()
        .map(str::to_owned)
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "LANG=C.UTF-8",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "VIGIL_ACTION_ID=env-1",
            "VIGIL_ALERT_NAME=GpuLost",
            "VIGIL_LABEL_GPU=3",
            "VIGIL_LABEL_PCI_BUS_ID=00000000:3B:00.0",
            "VIGIL_NODE=gpu-node-07",
        ]
    );
    assert_eq!(
        std::fs::read_to_string(&cwd)?.trim(),
        env.dir.to_str().unwrap()
    );
    assert_eq!(std::fs::read_to_string(&stdin)?.trim(), "/dev/null");
    Ok(())
}

#[tokio::test]
async fn untrusted_scripts_names_and_labels_are_refused() -> Result<()> {
    let env = Env::new()?;
    let ran = env.path("ran");
    let body = format!("echo ran >> {}", ran.display());
    env.script("good", &body, 0o755)?;
    env.script("reset-gpu", &body, 0o777)?;
    env.script("not-exec", &body, 0o644)?;
    std::os::unix::fs::symlink(env.dir.join("good"), env.dir.join("link"))?;
    std::fs::create_dir(env.dir.join("subdir"))?;
    let recovery = env.open(RecoveryConfig::default())?;
    assert_eq!(recovery.scripts(), ["good"]);

    let mut bad_label = action("r-label", "good");
    bad_label.labels.insert("gpu-index".into(), "3".into());
    let mut nul_label = action("r-nul", "good");
    nul_label.labels.insert("gpu".into(), "3\0".into());
    let mut other_node = action("r-node", "good");
    other_node.node = "gpu-node-08".into();
    let cases = [
        (
            action("r-mode", "reset-gpu"),
            "reset-gpu: mode 0777 is group/world-writable",
        ),
        (action("r-exec", "not-exec"), "not-exec: not executable"),
        (action("r-link", "link"), "link: a symbolic link"),
        (action("r-dir", "subdir"), "subdir: a directory"),
        (action("r-missing", "nope"), "nope: no such script"),
        (action("r-trav", "../../bin/sh"), "path traversal"),
        (action("r-slash", "reset/gpu"), "path traversal"),
        (action("r-dot", ".hidden"), "must not start"),
        (bad_label, "label name \"gpu-index\" is not an identifier"),
        (nul_label, "NUL"),
        (other_node, "the action is for node \"gpu-node-08\""),
    ];
    let count = cases.len();
    for (a, says) in cases {
        let id = a.id.clone();
        let reports = run(&recovery, a).await?;
        assert_eq!(phases(&reports), [Phase::Refused], "{id}: {reports:?}");
        assert!(
            reports[0].message.contains(says),
            "{id}: {:?} does not say {says:?}",
            reports[0].message
        );
        assert_eq!(reports[0].node, NODE);
    }
    assert!(!ran.exists(), "nothing ran");
    assert_eq!(counter(&recovery, "refused"), count as f64);

    // A directory others can write: nothing in it runs, nothing is listed.
    chmod(&env.dir, 0o775)?;
    assert!(recovery.scripts().is_empty());
    let reports = run(&recovery, action("r-gdir", "good")).await?;
    assert_eq!(phases(&reports), [Phase::Refused]);
    let msg = &reports[0].message;
    assert!(
        msg.starts_with("recovery directory ")
            && msg.ends_with("mode 0775 is group/world-writable"),
        "{msg}"
    );
    assert!(!ran.exists());
    chmod(&env.dir, 0o755)?;

    // Refusals are final reports too: journalled, resent until acknowledged.
    let unacked = recovery.unacked();
    assert_eq!(unacked.len(), count + 1);
    assert!(unacked.iter().all(|r| r.phase == Phase::Refused as i32));
    Ok(())
}

#[tokio::test]
async fn recovery_off_refuses_everything() -> Result<()> {
    let env = Env::new()?;
    env.script("good", "true", 0o755)?;
    let recovery = Arc::new(Recovery::open(
        &RecoveryConfig::default(),
        &env.state,
        NODE,
        None,
    )?);
    assert!(recovery.scripts().is_empty());
    let reports = run(&recovery, action("off-1", "good")).await?;
    assert_eq!(phases(&reports), [Phase::Refused]);
    assert!(
        reports[0].message.contains("recovery is off"),
        "{reports:?}"
    );
    Ok(())
}

#[tokio::test]
async fn label_values_reach_the_script_verbatim_and_inert() -> Result<()> {
    let env = Env::new()?;
    let marker = env.path("pwned");
    let seen = env.path("seen");
    let value = format!(
        "$(touch {m}1); touch {m}2 `touch {m}3` && touch {m}4 | touch {m}5 > {m}6 \"'\\\n",
        m = marker.display()
    );
    env.script(
        "echo-label",
        &format!(
            "printf '%s' \"$VIGIL_LABEL_ARG\" > {}\nprintf '%s' \"$VIGIL_ALERT_NAME\" > {}.alert",
            seen.display(),
            seen.display()
        ),
        0o755,
    )?;
    let recovery = env.open(RecoveryConfig::default())?;
    let mut a = action("inject-1", "echo-label");
    a.labels.insert("arg".into(), value.clone());
    a.alert_name = format!("Alert; touch {}7", marker.display());
    let reports = run(&recovery, a.clone()).await?;
    assert!(reports.last().unwrap().succeeded(), "{reports:?}");
    assert_eq!(std::fs::read_to_string(&seen)?, value);
    assert_eq!(
        std::fs::read_to_string(env.path("seen.alert"))?,
        a.alert_name
    );
    for i in 1..=7 {
        let m = PathBuf::from(format!("{}{i}", marker.display()));
        assert!(!m.exists(), "{} was created", m.display());
    }
    Ok(())
}

#[tokio::test]
async fn timeout_kills_the_whole_group_term_then_kill() -> Result<()> {
    let env = Env::new()?;
    let (main_pid, child_pid) = (env.path("main.pid"), env.path("child.pid"));
    // Both ignore SIGTERM (an ignored signal stays ignored across fork and exec), so
    // only the SIGKILL after the grace ends them.
    env.script(
        "hang",
        &format!(
            "trap '' TERM\necho $$ > {}\nsleep 300 &\necho $! > {}\necho started\nsleep 300",
            main_pid.display(),
            child_pid.display()
        ),
        0o755,
    )?;
    let recovery = env.open(RecoveryConfig::default())?;
    let mut a = action("slow-1", "hang");
    a.timeout_secs = 1;
    let begun = Instant::now();
    let (tx, mut rx) = unbounded_channel();
    recovery.handle(a, tx);
    let started = next(&mut rx).await?;
    assert_eq!(started.phase, Phase::Started as i32);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let running = recovery.families();
    let gauge = running
        .iter()
        .find(|f| f.name == "vigil_agent_recovery_running")
        .unwrap();
    assert_eq!(gauge.samples[0].value, 1.0);
    let finished = next(&mut rx).await?;
    let took = begun.elapsed();
    assert_eq!(finished.phase, Phase::Finished as i32);
    assert!(
        finished.timed_out && finished.signal == Some(9),
        "{finished:?}"
    );
    assert!(!finished.succeeded());
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert!(
        finished
            .message
            .starts_with("hang timed out after 1 s and was killed by signal 9"),
        "{}",
        finished.message
    );
    let (main, child) = (read_pid(&main_pid)?, read_pid(&child_pid)?);
    assert!(!alive(main), "script {main} still runs");
    assert!(!alive(child), "its child {child} still runs");
    assert_eq!(counter(&recovery, "timed_out"), 1.0);
    let records = env.logs.records();
    assert!(records.iter().any(|r| r.body == "started"), "{records:?}");
    Ok(())
}

#[tokio::test]
async fn what_a_script_leaves_running_is_killed_when_it_exits() -> Result<()> {
    let env = Env::new()?;
    let child_pid = env.path("child.pid");
    env.script(
        "leave-child",
        &format!("sleep 300 &\necho $! > {}\nexit 0", child_pid.display()),
        0o755,
    )?;
    let recovery = env.open(RecoveryConfig::default())?;
    let begun = Instant::now();
    let reports = run(&recovery, action("leave-1", "leave-child")).await?;
    assert!(reports.last().unwrap().succeeded(), "{reports:?}");
    assert!(begun.elapsed() < Duration::from_secs(5));
    let child = read_pid(&child_pid)?;
    assert!(
        !alive(child),
        "the background child {child} outlived its action"
    );
    Ok(())
}

#[tokio::test]
async fn output_is_shipped_as_log_records_before_the_report() -> Result<()> {
    let env = Env::new()?;
    env.script(
        "talk",
        "echo hello out\necho oops err >&2\nprintf 'no newline'\nexit 3",
        0o755,
    )?;
    // One stream only, so which lines fit under the cap does not depend on how the
    // two readers interleave.
    env.script(
        "chatter",
        "i=0\nwhile [ $i -lt 100 ]; do echo \"filler line $i with some padding to take space\"; i=$((i+1)); done\necho short",
        0o755,
    )?;
    let recovery = env.open(RecoveryConfig {
        max_output_bytes: 1024,
        ..RecoveryConfig::default()
    })?;
    let (tx, mut rx) = unbounded_channel();
    recovery.handle(action("talk-1", "talk"), tx);
    assert_eq!(next(&mut rx).await?.phase, Phase::Started as i32);
    let finished = next(&mut rx).await?;
    // Taken the moment the report arrives: everything must be spooled already.
    let records = env.logs.records();
    assert_eq!(finished.exit_code, Some(3));
    assert!(!finished.succeeded() && !finished.timed_out);
    assert_eq!(counter(&recovery, "failed"), 1.0);
    assert_eq!(records.len(), 4, "{records:?}");
    for r in &records {
        assert_eq!(r.attrs[attr::SOURCE], "recovery:talk-1");
        assert_eq!(r.attrs[attr::RECOVERY_SCRIPT], "talk");
        assert_eq!(r.attrs[attr::RECOVERY_ACTION_ID], "talk-1");
    }
    let find = |body: &str| records.iter().find(|r| r.body == body);
    let line = |body: &str| -> Result<(String, String)> {
        let r = find(body).with_context(|| format!("no record {body:?} in {records:?}"))?;
        Ok((r.severity.clone(), r.attrs[attr::RECOVERY_STREAM].clone()))
    };
    assert_eq!(line("hello out")?, ("INFO".into(), "stdout".into()));
    assert_eq!(line("no newline")?, ("INFO".into(), "stdout".into()));
    assert_eq!(line("oops err")?, ("WARN".into(), "stderr".into()));
    let closing = records.last().unwrap();
    assert!(
        closing.body.starts_with("talk exited with status 3 after "),
        "{closing:?}"
    );
    assert_eq!(closing.body, finished.message);
    assert!(!closing.attrs.contains_key(attr::RECOVERY_STREAM));

    let reports = run(&recovery, action("chatter-1", "chatter")).await?;
    assert!(reports.last().unwrap().succeeded(), "{reports:?}");
    let records: Vec<Rec> = env
        .logs
        .records()
        .into_iter()
        .filter(|r| r.attrs[attr::SOURCE] == "recovery:chatter-1")
        .collect();
    let kept: Vec<&str> = records
        .iter()
        .filter(|r| r.attrs.contains_key(attr::RECOVERY_STREAM))
        .map(|r| r.body.as_str())
        .collect();
    let kept_bytes: usize = kept.iter().map(|b| b.len()).sum();
    assert!(kept_bytes <= 1024 && kept_bytes > 1024 - 46, "{kept_bytes}");
    assert_eq!(kept[0], "filler line 0 with some padding to take space");
    assert!(
        !kept.contains(&"short"),
        "nothing after the first dropped line"
    );
    let dropped = &records[records.len() - 2];
    assert!(
        dropped.body.starts_with("dropped ") && dropped.body.contains("max_output_bytes (1024)"),
        "{dropped:?}"
    );
    assert_eq!(dropped.severity, "WARN");
    assert!(
        records
            .last()
            .unwrap()
            .body
            .starts_with("chatter exited with status 0")
    );
    Ok(())
}

#[tokio::test]
async fn a_duplicate_id_runs_once_and_actions_run_one_at_a_time() -> Result<()> {
    let env = Env::new()?;
    let count = env.path("count");
    env.script(
        "count",
        &format!(
            "echo \"$VIGIL_ACTION_ID\" >> {}\nsleep 0.3",
            count.display()
        ),
        0o755,
    )?;
    let recovery = env.open(RecoveryConfig::default())?;
    // The same id twice while it is queued or running, and another action behind it.
    let (tx1, mut rx1) = unbounded_channel();
    let (tx2, mut rx2) = unbounded_channel();
    let (tx3, mut rx3) = unbounded_channel();
    recovery.handle(action("dup-1", "count"), tx1);
    recovery.handle(action("dup-1", "count"), tx2);
    recovery.handle(action("dup-2", "count"), tx3);
    let first = [next(&mut rx1).await?, next(&mut rx1).await?];
    assert_eq!(phases(&first), [Phase::Started, Phase::Finished]);
    let mut second = vec![next(&mut rx2).await?];
    if second[0].phase == Phase::Started as i32 {
        second.push(next(&mut rx2).await?);
    }
    assert_eq!(
        second.last(),
        first.last(),
        "the joiner gets the same report"
    );
    let other = [next(&mut rx3).await?, next(&mut rx3).await?];
    assert!(other[1].succeeded());
    assert!(
        other[0].started_unix_ms >= first[1].finished_unix_ms,
        "one at a time: {first:?} {other:?}"
    );
    // Again after it ended: the journalled report, nothing run.
    let again = run(&recovery, action("dup-1", "count")).await?;
    assert_eq!(again.as_slice(), &first[1..]);
    assert_eq!(std::fs::read_to_string(&count)?, "dup-1\ndup-2\n");
    assert_eq!(counter(&recovery, "duplicate"), 2.0);
    assert_eq!(counter(&recovery, "started"), 2.0);
    Ok(())
}

#[tokio::test]
async fn a_restart_mid_run_reports_lost_and_never_reruns() -> Result<()> {
    let env = Env::new()?;
    let (pid_file, count) = (env.path("pid"), env.path("count"));
    env.script(
        "long",
        &format!(
            "echo run >> {}\necho $$ > {}\nsleep 30",
            count.display(),
            pid_file.display()
        ),
        0o755,
    )?;
    let first = env.open(RecoveryConfig::default())?;
    let (tx, mut rx) = unbounded_channel();
    first.handle(action("mid-1", "long"), tx);
    assert_eq!(next(&mut rx).await?.phase, Phase::Started as i32);
    // The agent "restarts": a new runner on the same state dir while the first still runs.
    let second = env.open(RecoveryConfig::default())?;
    let unacked = second.unacked();
    assert_eq!(unacked.len(), 1, "{unacked:?}");
    assert_eq!(unacked[0].phase, Phase::Lost as i32);
    assert_eq!(unacked[0].action_id, "mid-1");
    assert!(unacked[0].message.contains("restarted"));
    assert_eq!(counter(&second, "lost"), 1.0);
    let again = run(&second, action("mid-1", "long")).await?;
    assert_eq!(again, unacked);

    let deadline = Instant::now() + Duration::from_secs(5);
    let pid = loop {
        match read_pid(&pid_file) {
            Ok(pid) => break pid,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => bail!("no pid file: {e}"),
        }
    };
    // SAFETY: signalling the test's own script's process group.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let finished = next(&mut rx).await?;
    assert_eq!(finished.signal, Some(9));
    assert_eq!(std::fs::read_to_string(&count)?, "run\n");
    Ok(())
}

#[tokio::test]
async fn acknowledged_reports_are_not_resent_after_reopening() -> Result<()> {
    let env = Env::new()?;
    env.script("ok", "true", 0o755)?;
    env.script("fail", "exit 1", 0o755)?;
    let recovery = env.open(RecoveryConfig::default())?;
    let ok = run(&recovery, action("ack-1", "ok")).await?;
    let failed = run(&recovery, action("ack-2", "fail")).await?;
    let refused = run(&recovery, action("ack-3", "missing")).await?;
    let finals = [ok[1].clone(), failed[1].clone(), refused[0].clone()];
    assert_eq!(recovery.unacked(), finals);
    recovery.acked(&ok[0]); // a started report needs no ack: nothing changes
    recovery.acked(&finals[0]);
    recovery.acked(&finals[2]);
    assert_eq!(recovery.unacked(), [finals[1].clone()]);
    drop(recovery);

    let reopened = env.open(RecoveryConfig::default())?;
    assert_eq!(reopened.unacked(), [finals[1].clone()]);
    // An acknowledged id is still known: not run again.
    let again = run(&reopened, action("ack-1", "ok")).await?;
    assert_eq!(again, [finals[0].clone()]);
    reopened.acked(&finals[1]);
    drop(reopened);
    ensure!(env.open(RecoveryConfig::default())?.unacked().is_empty());
    Ok(())
}

#[tokio::test]
async fn a_corrupt_journal_does_not_stop_the_runner() -> Result<()> {
    let env = Env::new()?;
    env.script("ok", "true", 0o755)?;
    let recovery = env.open(RecoveryConfig::default())?;
    let done = run(&recovery, action("j-1", "ok")).await?;
    drop(recovery);
    let journal = env.state.join("recovery/journal.jsonl");
    let mut text = std::fs::read_to_string(&journal)?;
    text.insert_str(0, "garbage in the middle\n");
    text.push_str("{\"record\":\"started\",\"id\":\"j-2\",\"scri");
    std::fs::write(&journal, text)?;
    let recovery = env.open(RecoveryConfig::default())?;
    assert_eq!(recovery.unacked(), [done[1].clone()]);
    let again = run(&recovery, action("j-1", "ok")).await?;
    assert_eq!(again, [done[1].clone()]);
    Ok(())
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/recovery")
}

#[test]
fn deploy_scripts_are_valid_sh() -> Result<()> {
    let shellcheck = Command::new("shellcheck").arg("--version").output().is_ok();
    for name in ["reset-gpu", "restart-service", "drain-node"] {
        let path = deploy_dir().join(name);
        let text = std::fs::read_to_string(&path)?;
        ensure!(text.starts_with("#!/bin/sh\n"), "{name}: not #!/bin/sh");
        ensure!(text.contains("\nset -eu\n"), "{name}: no set -eu");
        let out = Command::new("sh").arg("-n").arg(&path).output()?;
        ensure!(
            out.status.success(),
            "sh -n {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if shellcheck {
            let out = Command::new("shellcheck").arg(&path).output()?;
            ensure!(
                out.status.success(),
                "shellcheck {name}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    Ok(())
}

#[test]
fn reset_gpu_checks_before_it_resets() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin)?;
    let calls = tmp.path().join("calls");
    let apps = tmp.path().join("apps");
    let fake = bin.join("nvidia-smi");
    std::fs::write(
        &fake,
        format!(
            r#"#!/bin/sh
echo "$*" >> {calls}
case "$1" in
    -L) printf 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)\nGPU 3: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb)\n' ;;
    --query-compute-apps=*) cat {apps} 2>/dev/null || true ;;
    -r) echo "GPU 00000000:3B:00.0 was successfully reset." ;;
esac
"#,
            calls = calls.display(),
            apps = apps.display()
        ),
    )?;
    chmod(&fake, 0o755)?;
    let reset = |gpu: &str| -> Result<(i32, String, String)> {
        let _ = std::fs::remove_file(&calls);
        let out = Command::new(deploy_dir().join("reset-gpu"))
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("LANG", "C.UTF-8")
            .env("VIGIL_LABEL_GPU", gpu)
            .env("VIGIL_ACTION_ID", "a-1")
            .env("VIGIL_ALERT_NAME", "GpuLost")
            .env("VIGIL_NODE", NODE)
            .output()?;
        let calls = std::fs::read_to_string(&calls).unwrap_or_default();
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            calls,
        ))
    };
    for bad in ["x", "3; reboot", "", "-1", "$(id)"] {
        let (code, err, calls) = reset(bad)?;
        ensure!(
            code == 2 && err.contains("must be a GPU index"),
            "{bad:?}: {code} {err}"
        );
        ensure!(calls.is_empty(), "{bad:?}: nvidia-smi was called: {calls}");
    }
    let (code, err, calls) = reset("5")?;
    ensure!(code == 2 && err.contains("no GPU 5"), "{code} {err}");
    ensure!(!calls.contains("-r"), "{calls}");

    std::fs::write(&apps, "4242, python\n")?;
    let (code, err, calls) = reset("3")?;
    ensure!(
        code == 2 && err.contains("has compute processes") && err.contains("4242, python"),
        "{code} {err}"
    );
    ensure!(
        calls.contains("--query-compute-apps=pid,process_name --format=csv,noheader -i 3"),
        "{calls}"
    );
    ensure!(
        !calls.contains("-r -i"),
        "reset despite compute apps: {calls}"
    );

    std::fs::write(&apps, "")?;
    let (code, err, calls) = reset("3")?;
    ensure!(code == 0, "{code} {err}");
    ensure!(calls.lines().last() == Some("-r -i 3"), "{calls}");
    Ok(())
}
