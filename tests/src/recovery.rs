//! What the recovery tests and benchmark need around Vigil: a recovery directory with
//! test scripts that record their environment and start time, the collector's actions
//! API (list, approve, the kill switch) as typed values, and a collector configuration
//! with the `[recovery]` policy a test wants (`tests/recovery_e2e.rs`,
//! `tests/recovery_guardrails.rs`, `src/bin/recovery-bench.rs`).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use serde_json::Value;
use vigil_proto::actions::{Action, ActionList, Decision};

use crate::collector::{
    Collector, ShippingAgent, api_data, api_json, sum_of, url_encode, wait_for,
};
use crate::{Response, http_request};

/// A recovery directory (`--recovery-dir`) as an administrator makes one: mode 0755,
/// owned by whoever runs the test (the agent's own user), with scripts that record what
/// they were given in `out`, a directory of their own beside it.
pub struct RecoveryDir {
    pub path: PathBuf,
    /// Where the scripts write: `<script>.<action id>.env` (`env`'s output),
    /// `<script>.runs` (one action id per run) and `<script>.<action id>.start`
    /// (`date +%s.%N` as the script's first command).
    pub out: PathBuf,
}

/// `text` as a file with `mode`, set explicitly (the umask does not decide).
pub fn write_with_mode(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

impl RecoveryDir {
    /// `dir/<name>` (mode 0755) and `dir/<name>-out`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let path = dir.join(name);
        let out = dir.join(format!("{name}-out"));
        for d in [&path, &out] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod 755 {}", path.display()))?;
        Ok(Self { path, out })
    }

    /// The agent's flag for this directory.
    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }

    /// A script `name` (mode `mode`) that records its start time first, then its whole
    /// environment and its action id, prints `<name> stdout <marker>` to stdout and
    /// `<name> stderr <marker>` to stderr, and exits with `exit_code`.
    pub fn recording_script(
        &self,
        name: &str,
        marker: &str,
        exit_code: i32,
        mode: u32,
    ) -> anyhow::Result<()> {
        let out = self.out.display();
        // No variable of the environment decides a path except the action id, which
        // the collector makes ([0-9a-z-]); the test checks it before reading files.
        let text = format!(
            "#!/bin/sh\n\
             date +%s.%N > '{out}/{name}.'\"$VIGIL_ACTION_ID\"'.start'\n\
             env > '{out}/{name}.'\"$VIGIL_ACTION_ID\"'.env'\n\
             echo \"$VIGIL_ACTION_ID\" >> '{out}/{name}.runs'\n\
             echo '{name} stdout {marker}'\n\
             echo '{name} stderr {marker}' >&2\n\
             exit {exit_code}\n"
        );
        write_with_mode(&self.path.join(name), &text, mode)
    }

    /// The action ids the script `name` ran for, in order.
    pub fn runs(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let path = self.out.join(format!("{name}.runs"));
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The environment the script `name` saw for action `id`, as `env` printed it.
    pub fn env_of(&self, name: &str, id: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let path = self.out.join(format!("{name}.{id}.env"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut vars = BTreeMap::new();
        for line in text.lines() {
            let (k, v) = line
                .split_once('=')
                .with_context(|| format!("{}: not NAME=value: {line:?}", path.display()))?;
            vars.insert(k.to_owned(), v.to_owned());
        }
        Ok(vars)
    }

    /// When the script `name` started for action `id`: its own clock, seconds since the
    /// epoch; `None` while it has not written it.
    pub fn start_of(&self, name: &str, id: &str) -> anyhow::Result<Option<f64>> {
        let path = self.out.join(format!("{name}.{id}.start"));
        match std::fs::read_to_string(&path) {
            Ok(text) if text.ends_with('\n') => {
                let t = text
                    .trim()
                    .parse()
                    .with_context(|| format!("{}: not a time: {text:?}", path.display()))?;
                Ok(Some(t))
            }
            // Still being written.
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// A `collector.toml` with the given `[recovery]` tables (and nothing else).
pub fn collector_config(dir: &Path, recovery_toml: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("collector.toml");
    std::fs::write(&path, recovery_toml).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `GET /api/v1/actions` (every entry, newest first).
pub fn actions(collector: &Collector) -> anyhow::Result<ActionList> {
    let data = collector.api("/api/v1/actions?limit=10000")?;
    serde_json::from_value(data.clone())
        .with_context(|| format!("/api/v1/actions: not a list of actions: {data}"))
}

/// The entries of `node` for `script`, oldest first.
pub fn actions_of(collector: &Collector, node: &str, script: &str) -> anyhow::Result<Vec<Action>> {
    let mut list: Vec<Action> = actions(collector)?
        .actions
        .into_iter()
        .filter(|a| a.node == node && a.script == script)
        .collect();
    list.reverse();
    Ok(list)
}

/// Waits for the first entry of `node` and `script` with `decision` for which `done`
/// holds, and returns it.
pub fn wait_action(
    collector: &Collector,
    timeout: Duration,
    node: &str,
    script: &str,
    decision: Decision,
    done: impl Fn(&Action) -> bool,
) -> anyhow::Result<Action> {
    wait_for(
        timeout,
        &format!("a {} action of {script} on {node}", decision.as_str()),
        || {
            let list = actions_of(collector, node, script)?;
            Ok(list.into_iter().find(|a| a.decision == decision && done(a)))
        },
    )
}

/// An agent of 8 simulated GPUs whose faults come from `faults`, with `rec` as its
/// recovery directory, started and holding the collector's control stream (the only
/// agent: the collector counts one).
pub fn start_recovering_agent(
    dir: &Path,
    node: &str,
    collector: &Collector,
    rec: &RecoveryDir,
    faults: &Path,
) -> anyhow::Result<ShippingAgent> {
    let faults_arg = faults.display().to_string();
    let agent = ShippingAgent::start(
        dir,
        node,
        collector,
        &[
            "--simulate-faults",
            &faults_arg,
            "--recovery-dir",
            &rec.arg(),
        ],
    )?;
    wait_for(
        Duration::from_secs(30),
        "the agent on the control channel",
        || {
            let s = collector.self_metrics()?;
            Ok((sum_of(&s, "vigil_recovery_agents_connected", &[]) == Some(1.0)).then_some(()))
        },
    )?;
    Ok(agent)
}

/// POST `body` as JSON to `path` on the collector; the response's JSON, which must be
/// 200 and `success`.
pub fn post_json(collector: &Collector, path: &str, body: &Value) -> anyhow::Result<Value> {
    api_data(&post(collector, path, body)?, &format!("POST {path}"))
}

/// POST `body` as JSON to `path` on the collector, with its token.
fn post(collector: &Collector, path: &str, body: &Value) -> anyhow::Result<Response> {
    let auth = collector.auth_header();
    let mut headers: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.push(("Content-Type", "application/json"));
    http_request(
        collector.listen,
        "POST",
        path,
        &headers,
        body.to_string().as_bytes(),
    )
}

/// POST to `path` without checking the answer: its status and JSON body.
pub fn post_raw(collector: &Collector, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let response = post(collector, path, body)?;
    Ok((
        response.status,
        api_json(&response, &format!("POST {path}"))?,
    ))
}

/// Engages or releases the kill switch through the API.
pub fn kill_switch(collector: &Collector, engaged: bool, reason: &str) -> anyhow::Result<Value> {
    let body = serde_json::json!({"engaged": engaged, "by": "e2e", "reason": reason});
    let data = post_json(collector, "/api/v1/actions/kill-switch", &body)?;
    ensure!(data["engaged"] == engaged, "kill switch answer {data}");
    Ok(data)
}

/// The log hits of `/api/v1/logs/search` for `q` on `node`.
pub fn search_logs(collector: &Collector, node: &str, q: &str) -> anyhow::Result<Vec<Value>> {
    let path = format!(
        "/api/v1/logs/search?q={}&node={}&limit=100",
        url_encode(q),
        url_encode(node)
    );
    let data = api_data(&collector.get(&path)?, "logs search")?;
    Ok(data["hits"].as_array().context("data.hits")?.clone())
}

/// The alerts of `/api/v1/alerts` named `alertname` on `node`.
pub fn alerts_named(
    collector: &Collector,
    alertname: &str,
    node: &str,
) -> anyhow::Result<Vec<Value>> {
    let data = collector.api("/api/v1/alerts")?;
    Ok(data["alerts"]
        .as_array()
        .context("data.alerts")?
        .iter()
        .filter(|a| a["labels"]["alertname"] == alertname && a["labels"]["node"] == node)
        .cloned()
        .collect())
}

/// An action id fit to be part of a file name: the collector's ids are made of ASCII
/// letters, digits, `-` and `_`.
pub fn check_action_id(id: &str) -> anyhow::Result<()> {
    ensure!(
        !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "unexpected action id {id:?}"
    );
    Ok(())
}
