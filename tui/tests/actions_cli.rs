//! `vigil actions` as a person runs it, against a stand-in for the collector's actions
//! API: a small HTTP server in the test that answers canned JSON built from vigil-proto's
//! types and records every request. It checks what the CLI prints and sends (the
//! collector's own behaviour is the end-to-end tests' business); and the dashboard's
//! fetch round against the same stand-in, with and without the endpoint.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, ensure};
use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use serde_json::{Value, json};
use vigil_proto::actions::{Action, ActionList, ActionState, Decision, KillSwitch};
use vigil_tui::client::{Client, CollectorArgs};
use vigil_tui::dash::fetch;

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    target: String,
    body: String,
}

/// A canned answer for a method and path (the query is not matched).
struct Route {
    method: &'static str,
    path: String,
    status: u16,
    body: String,
}

struct Shared {
    routes: Vec<Route>,
    seen: Mutex<Vec<Seen>>,
}

/// The stand-in: serves until dropped. An unknown path gets the empty 404 of a router
/// that has no such endpoint.
struct Stub {
    url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stub {
    fn start(routes: Vec<Route>) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            routes,
            seen: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<std::io::Result<SocketAddr>>();
        let app = Router::new().fallback(answer).with_state(shared.clone());
        let thread = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = addr_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e));
                        return;
                    }
                };
                let _ = addr_tx.send(listener.local_addr());
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv().context("the stub's thread")??;
        Ok(Self {
            url: format!("http://{addr}"),
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Runs `vigil ARGS --collector URL` with $USER set to `tester`.
    fn vigil(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(args)
            .args(["--collector", &self.url])
            .env("USER", "tester")
            .env("RUST_LOG", "off")
            .output()
            .context("running vigil")
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: String,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    shared.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        target: uri.to_string(),
        body,
    });
    let route = shared
        .routes
        .iter()
        .find(|r| r.method == method.as_str() && r.path == uri.path());
    match route {
        Some(r) => (
            StatusCode::from_u16(r.status).unwrap(),
            [(header::CONTENT_TYPE, "application/json")],
            r.body.clone(),
        ),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain")],
            String::new(),
        ),
    }
}

fn route(method: &'static str, path: &str, status: u16, body: Value) -> Route {
    Route {
        method,
        path: path.to_owned(),
        status,
        body: body.to_string(),
    }
}

fn success(data: Value) -> Value {
    json!({"status": "success", "data": data})
}

/// A vigil-proto value as JSON.
macro_rules! value {
    ($data:expr) => {
        serde_json::to_value($data).unwrap()
    };
}

const WAITING: &str = "7f3a1c00-5b1e-4a8e-9d51-0f6b2a7c9e11";
const FAILED: &str = "9c2e44d1-0a3b-4c5d-8e6f-112233445566";
const SKIPPED: &str = "7f3a9d02-77aa-4bb1-8cc2-aabbccddeeff";

fn action(id: &str, state: ActionState, decision: Decision, minutes_ago: i64) -> Action {
    let at = (chrono::Utc::now() - chrono::Duration::minutes(minutes_ago))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Action {
        id: id.to_owned(),
        node: "gpu-node-03".to_owned(),
        script: "reset-gpu".to_owned(),
        alertname: "GpuFellOffBus".to_owned(),
        labels: [
            ("alertname", "GpuFellOffBus"),
            ("gpu", "5"),
            ("node", "gpu-node-03"),
            ("severity", "critical"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect(),
        args: [("gpu".to_owned(), "5".to_owned())].into(),
        decision,
        state,
        reason: "first attempt within 1h".to_owned(),
        attempt: 1,
        created_at: at.clone(),
        updated_at: at,
        approved_by: None,
        started_at: None,
        finished_at: None,
        exit_code: None,
        signal: None,
        timed_out: false,
        message: String::new(),
        logs_query: String::new(),
    }
}

/// Newest first: one awaiting approval, one that failed, one the cooldown skipped.
fn audit(engaged: bool) -> ActionList {
    let mut failed = action(FAILED, ActionState::Failed, Decision::Run, 30);
    failed.node = "gpu-node-01".to_owned();
    failed.exit_code = Some(3);
    failed.message = "nvidia-smi -r: GPU is in use\nby 2 processes".to_owned();
    failed.started_at = Some(failed.created_at.clone());
    failed.finished_at = Some(failed.created_at.clone());
    let mut skipped = action(SKIPPED, ActionState::Recorded, Decision::SkipCooldown, 50);
    skipped.reason = "cooldown: reset-gpu ran on gpu-node-03 4m ago".to_owned();
    ActionList {
        kill_switch: KillSwitch {
            engaged,
            by: if engaged {
                "alice".to_owned()
            } else {
                String::new()
            },
            reason: if engaged {
                "driver rollout".to_owned()
            } else {
                String::new()
            },
            since: engaged.then(|| "2026-11-27T11:40:00Z".to_owned()),
        },
        actions: vec![
            action(
                WAITING,
                ActionState::AwaitingApproval,
                Decision::AwaitApproval,
                2,
            ),
            failed,
            skipped,
        ],
    }
}

fn list_route(list: &ActionList) -> Route {
    route("GET", "/api/v1/actions", 200, success(value!(list)))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_table_shows_the_kill_switch_and_every_action() -> anyhow::Result<()> {
    let stub = Stub::start(vec![list_route(&audit(true))])?;
    let out = stub.vigil(&["actions", "--node", "gpu-node-03", "--limit", "20"])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    ensure!(
        lines[0].starts_with("KILL SWITCH ENGAGED by alice since 2026-11-27 11:40:00 (")
            && lines[0].ends_with("ago): driver rollout"),
        "{text}"
    );
    ensure!(
        lines[1].split_whitespace().collect::<Vec<_>>()
            == [
                "ID", "AGE", "NODE", "SCRIPT", "ALERT", "DECISION", "STATE", "ATTEMPT", "RESULT"
            ],
        "{text}"
    );
    let row = |id: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&id[..8]))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .with_context(|| format!("no row for {id}:\n{text}"))
    };
    let waiting = row(WAITING)?;
    ensure!(waiting[1].starts_with("2m"), "two minutes old: {waiting:?}");
    ensure!(
        waiting[2..]
            == [
                "gpu-node-03",
                "reset-gpu",
                "GpuFellOffBus",
                "await_approval",
                "awaiting_approval",
                "1"
            ],
        "no result for a waiting action: {waiting:?}"
    );
    let failed = row(FAILED)?;
    ensure!(
        failed[2..]
            == [
                "gpu-node-01",
                "reset-gpu",
                "GpuFellOffBus",
                "run",
                "failed",
                "1",
                "exit",
                "3:",
                "nvidia-smi",
                "-r:",
                "GPU",
                "is",
                "in",
                "use",
                "by",
                "2",
                "processes"
            ],
        "{failed:?}"
    );
    let skipped = row(SKIPPED)?.join(" ");
    ensure!(
        skipped.contains("skip_cooldown recorded 1 cooldown: reset-gpu ran on gpu-node-03 4m ago"),
        "{skipped}"
    );
    let seen = stub.seen();
    ensure!(seen.len() == 1, "{seen:?}");
    ensure!(
        seen[0].method == "GET" && seen[0].target == "/api/v1/actions?limit=20&node=gpu-node-03",
        "{seen:?}"
    );

    // Without the switch engaged there is no line for it; a state filter goes along.
    let stub = Stub::start(vec![list_route(&audit(false))])?;
    let out = stub.vigil(&["actions", "--state", "awaiting_approval"])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    ensure!(stdout(&out).starts_with("ID "), "{}", stdout(&out));
    ensure!(
        stub.seen()[0].target == "/api/v1/actions?limit=50&state=awaiting_approval",
        "{:?}",
        stub.seen()
    );
    // A state that does not exist is refused before anything is sent.
    let out = stub.vigil(&["actions", "--state", "exploded"])?;
    ensure!(!out.status.success());
    ensure!(
        stderr(&out).contains("awaiting_approval"),
        "{}",
        stderr(&out)
    );
    ensure!(stub.seen().len() == 1);
    Ok(())
}

#[test]
fn approve_resolves_a_prefix_and_says_who() -> anyhow::Result<()> {
    let list = audit(false);
    let mut queued = list.actions[0].clone();
    queued.state = ActionState::Queued;
    queued.approved_by = Some("alice".to_owned());
    let mut rejected = list.actions[0].clone();
    rejected.state = ActionState::Cancelled;
    rejected.message = "rejected by tester".to_owned();
    let stub = Stub::start(vec![
        list_route(&list),
        route(
            "POST",
            &format!("/api/v1/actions/{WAITING}/approve"),
            200,
            success(value!(&queued)),
        ),
        route(
            "POST",
            &format!("/api/v1/actions/{WAITING}/reject"),
            200,
            success(value!(&rejected)),
        ),
    ])?;
    let out = stub.vigil(&["actions", "approve", "7f3a1", "--by", "alice"])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    ensure!(
        stdout(&out)
            == "approved 7f3a1c00 (reset-gpu on gpu-node-03 for GpuFellOffBus): now queued\n",
        "{}",
        stdout(&out)
    );
    let seen = stub.seen();
    ensure!(seen.len() == 2, "{seen:?}");
    ensure!(seen[0].method == "GET", "{seen:?}");
    ensure!(
        seen[1].method == "POST" && seen[1].target == format!("/api/v1/actions/{WAITING}/approve"),
        "{seen:?}"
    );
    let body: Value = serde_json::from_str(&seen[1].body)?;
    ensure!(body == json!({"by": "alice"}), "{body}");

    // Without --by, $USER decides.
    let out = stub.vigil(&["actions", "reject", "7f3a1c"])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    ensure!(
        stdout(&out).starts_with("rejected 7f3a1c00 (reset-gpu on gpu-node-03"),
        "{}",
        stdout(&out)
    );
    let seen = stub.seen();
    ensure!(seen[3].target == format!("/api/v1/actions/{WAITING}/reject"));
    ensure!(serde_json::from_str::<Value>(&seen[3].body)? == json!({"by": "tester"}));
    Ok(())
}

#[test]
fn an_ambiguous_prefix_names_the_candidates() -> anyhow::Result<()> {
    let stub = Stub::start(vec![list_route(&audit(false))])?;
    for args in [["actions", "show", "7f3a"], ["actions", "approve", "7f3a"]] {
        let out = stub.vigil(&args)?;
        ensure!(!out.status.success(), "{args:?}: {}", stdout(&out));
        let e = stderr(&out);
        ensure!(
            e.contains("the id prefix \"7f3a\" matches 2 actions")
                && e.contains(WAITING)
                && e.contains(SKIPPED),
            "{e}"
        );
    }
    ensure!(
        stub.seen().iter().all(|s| s.method == "GET"),
        "nothing is posted for an ambiguous id: {:?}",
        stub.seen()
    );
    let out = stub.vigil(&["actions", "show", "0000"])?;
    ensure!(!out.status.success());
    ensure!(
        stderr(&out).contains("no action has the id \"0000\""),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn a_conflict_is_shown_with_a_failing_exit() -> anyhow::Result<()> {
    let error = json!({"status": "error", "errorType": "conflict",
        "error": format!("action {FAILED} is not awaiting approval (it is failed)")});
    let stub = Stub::start(vec![
        list_route(&audit(false)),
        route(
            "POST",
            &format!("/api/v1/actions/{FAILED}/approve"),
            409,
            error,
        ),
        route(
            "POST",
            "/api/v1/actions/kill-switch",
            403,
            json!({"status": "error", "errorType": "forbidden",
                   "error": "the kill switch needs an admin token"}),
        ),
    ])?;
    let out = stub.vigil(&["actions", "approve", "9c2e"])?;
    ensure!(out.status.code() == Some(1), "{:?}", out.status);
    ensure!(stdout(&out).is_empty(), "{}", stdout(&out));
    let e = stderr(&out);
    let expected = format!(
        "vigil: approving action {FAILED}: POST /api/v1/actions/{FAILED}/approve \
         on the collector at {}: 409 Conflict: \
         action {FAILED} is not awaiting approval (it is failed)",
        stub.url
    );
    ensure!(e.starts_with(&expected), "{e}");
    let out = stub.vigil(&["actions", "kill-switch", "on"])?;
    ensure!(!out.status.success());
    ensure!(
        stderr(&out).contains("engaging the kill switch: POST /api/v1/actions/kill-switch")
            && stderr(&out).contains("403 Forbidden: the kill switch needs an admin token"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn json_passes_the_collectors_answer_through() -> anyhow::Result<()> {
    let mut data = serde_json::to_value(audit(true))?;
    // A field this CLI does not know survives.
    data["actions"][1]["runner_pid"] = json!(4242);
    let stub = Stub::start(vec![route(
        "GET",
        "/api/v1/actions",
        200,
        success(data.clone()),
    )])?;
    let out = stub.vigil(&["actions", "--json"])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let printed: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(printed == data, "{printed}");
    let out = stub.vigil(&["actions", "show", "9c2e", "--json"])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let printed: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(printed == data["actions"][1], "{printed}");
    Ok(())
}

#[test]
fn show_prints_every_field_and_where_the_output_is() -> anyhow::Result<()> {
    let mut list = audit(false);
    list.actions[1].signal = Some(9);
    list.actions[1].timed_out = true;
    let stub = Stub::start(vec![list_route(&list)])?;
    let out = stub.vigil(&["actions", "show", "9c2e"])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        format!("id           {FAILED}"),
        "node         gpu-node-01".to_owned(),
        "labels       alertname=GpuFellOffBus gpu=5 node=gpu-node-03 severity=critical".to_owned(),
        "args         gpu=5".to_owned(),
        "decision     run".to_owned(),
        "state        failed".to_owned(),
        "result       exit code 3, killed by signal 9, timed out".to_owned(),
        "message      nvidia-smi -r: GPU is in use by 2 processes".to_owned(),
        format!("logs         vigil logs search 'source:\"recovery:{FAILED}\"'"),
    ] {
        ensure!(
            text.lines().any(|l| l == expected),
            "no line {expected:?} in:\n{text}"
        );
    }
    ensure!(
        text.lines()
            .any(|l| l.starts_with("finished ") && l.ends_with(", took 0s")),
        "{text}"
    );
    Ok(())
}

#[test]
fn the_kill_switch_goes_on_and_off() -> anyhow::Result<()> {
    let engaged = KillSwitch {
        engaged: true,
        by: "bob".to_owned(),
        reason: "driver rollout".to_owned(),
        since: Some("2026-11-27T11:40:00Z".to_owned()),
    };
    let stub = Stub::start(vec![route(
        "POST",
        "/api/v1/actions/kill-switch",
        200,
        success(value!(&engaged)),
    )])?;
    let out = stub.vigil(&[
        "actions",
        "kill-switch",
        "on",
        "--reason",
        "driver rollout",
        "--by",
        "bob",
    ])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    ensure!(
        stdout(&out).starts_with("KILL SWITCH ENGAGED by bob since 2026-11-27 11:40:00"),
        "{}",
        stdout(&out)
    );
    let seen = stub.seen();
    ensure!(seen[0].target == "/api/v1/actions/kill-switch");
    ensure!(
        serde_json::from_str::<Value>(&seen[0].body)?
            == json!({"engaged": true, "by": "bob", "reason": "driver rollout"}),
        "{}",
        seen[0].body
    );
    let out = stub.vigil(&["actions", "kill-switch", "off"])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    ensure!(
        serde_json::from_str::<Value>(&stub.seen()[1].body)?
            == json!({"engaged": false, "by": "tester", "reason": ""})
    );
    let out = stub.vigil(&["actions", "kill-switch", "maybe"])?;
    ensure!(!out.status.success());
    ensure!(stub.seen().len() == 2);
    Ok(())
}

#[test]
fn an_older_collector_is_named_as_such() -> anyhow::Result<()> {
    let stub = Stub::start(Vec::new())?;
    let out = stub.vigil(&["actions"])?;
    ensure!(!out.status.success());
    ensure!(
        stderr(&out).contains("the collector has no recovery actions API"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

/// The dashboard's round: the actions come newest first; a collector without the
/// endpoint leaves the view empty with a note, not a failed query.
#[test]
fn the_dashboard_fetches_actions_with_the_alerts() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let nodes = route("GET", "/api/v1/nodes", 200, success(json!([])));
    let alerts = route("GET", "/api/v1/alerts", 200, success(json!({"alerts": []})));
    let round = |stub: &Stub| {
        let client = Client::new(&CollectorArgs {
            collector: stub.url.clone(),
            token_file: None,
            json: false,
        })?;
        runtime
            .block_on(fetch::round(&client, None))
            .map_err(anyhow::Error::msg)
    };

    let old = Stub::start(vec![
        route("GET", "/api/v1/nodes", 200, success(json!([]))),
        route("GET", "/api/v1/alerts", 200, success(json!({"alerts": []}))),
    ])?;
    let snapshot = round(&old)?;
    ensure!(snapshot.recovery.unsupported);
    ensure!(
        !snapshot
            .errors
            .iter()
            .any(|e| e.contains("/api/v1/actions")),
        "{:?}",
        snapshot.errors
    );

    let mut list = audit(true);
    list.actions.reverse();
    let new = Stub::start(vec![nodes, alerts, list_route(&list)])?;
    let snapshot = round(&new)?;
    ensure!(!snapshot.recovery.unsupported);
    ensure!(snapshot.recovery.kill_switch.engaged);
    let ids: Vec<&str> = snapshot
        .recovery
        .actions
        .iter()
        .map(|a| a.id.as_str())
        .collect();
    ensure!(ids == [WAITING, FAILED, SKIPPED], "newest first: {ids:?}");
    ensure!(
        new.seen().iter().any(|s| s.target == fetch::ACTIONS_PATH),
        "{:?}",
        new.seen()
    );
    Ok(())
}
