//! Every screen of `vigil dash`, drawn from fixed data onto ratatui's TestBackend at
//! 80×24 (the smallest supported terminal) and 160×48, compared with the committed
//! snapshots in `tests/snapshots/`. After a deliberate change to a screen, review the
//! new text with `INSTA_UPDATE=always cargo test -p vigil-tui --test dash_snapshots`
//! and `git diff`.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone as _, Utc};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use vigil_proto::actions::{Action as RecoveryAction, ActionState, Decision, KillSwitch};
use vigil_tui::dash::logs::{LogPage, LogRecord, LogsAnswer};
use vigil_tui::dash::model::{
    Alert, AlertState, Filesystem, GpuDetail, GpuHistory, GpuRow, HostStats, Network, NodeDetail,
    NodeRow, Recovery, Snapshot, XidEvent,
};
use vigil_tui::dash::render;
use vigil_tui::dash::state::{Action, Link, State, View, update};

const SIZES: [(u16, u16); 2] = [(80, 24), (160, 48)];

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A deterministic utilisation for GPU `g` of node `n`.
fn util(n: usize, g: usize) -> f64 {
    ((n * 37 + g * 23) % 97) as f64
}

fn node(n: usize, name: &str, up: bool, lost: &[usize], seen_secs: i64) -> NodeRow {
    let gpus = (0..8)
        .map(|g| GpuRow {
            index: g.to_string(),
            up: !lost.contains(&g),
            util_pct: (!lost.contains(&g)).then(|| util(n, g)),
            temp_c: (!lost.contains(&g)).then(|| 40.0 + util(n, g) / 3.0),
            power_w: (!lost.contains(&g)).then(|| 90.0 + util(n, g) * 4.5),
        })
        .collect();
    NodeRow {
        name: name.to_owned(),
        up,
        last_seen: Some(now() - Duration::seconds(seen_secs)),
        agent_version: "0.1.0".to_owned(),
        gpus,
        cpu_pct: Some(10.0 + n as f64 * 7.0),
        mem_pct: Some(30.0 + n as f64 * 5.0),
    }
}

fn alert(name: &str, state: AlertState, node: &str, severity: &str, summary: &str) -> Alert {
    Alert {
        name: name.to_owned(),
        state,
        node: node.to_owned(),
        severity: severity.to_owned(),
        active_at: Some(now() - Duration::seconds(312)),
        value: "1".to_owned(),
        labels: labels(&[("alertname", name), ("node", node), ("severity", severity)]),
        annotations: labels(&[
            ("summary", summary),
            (
                "description",
                "Reset the GPU or drain the node; see the runbook.",
            ),
        ]),
    }
}

fn history(g: usize, f: impl Fn(usize) -> f64) -> Vec<f64> {
    (0..61).map(|i| f(i + g * 5)).collect()
}

fn gpu_detail(g: usize) -> GpuDetail {
    let u = util(3, g);
    let mut d = GpuDetail {
        index: g.to_string(),
        model: "NVIDIA H100 80GB HBM3".to_owned(),
        uuid: format!("GPU-0000000{g}-aaaa-bbbb-cccc-dddddddddddd"),
        up: g != 5,
        util_pct: Some(u),
        mem_used_mib: Some(800.0 * u),
        mem_total_mib: Some(81559.0),
        temp_c: Some(40.0 + u / 3.0),
        mem_temp_c: Some(45.0 + u / 4.0),
        power_w: Some(90.0 + u * 4.5),
        sm_clock_mhz: Some(1980.0),
        mem_clock_mhz: Some(2619.0),
        throttle: Vec::new(),
        ecc_sbe_volatile: Some(0.0),
        ecc_dbe_volatile: Some(0.0),
        ecc_sbe_aggregate: Some(0.0),
        ecc_dbe_aggregate: Some(0.0),
        remapped_correctable: Some(0.0),
        remapped_uncorrectable: Some(0.0),
        remap_pending: Some(0.0),
        remap_failure: Some(0.0),
        xid_total: 0.0,
        last_xid: Some(0.0),
        history: GpuHistory {
            util_pct: history(g, |i| ((i * 13) % 100) as f64),
            mem_used_mib: history(g, |i| 20_000.0 + ((i * 7) % 50) as f64 * 1000.0),
            temp_c: history(g, |i| 40.0 + ((i * 3) % 30) as f64),
            power_w: history(g, |i| 100.0 + ((i * 17) % 450) as f64),
            sm_clock_mhz: history(g, |i| if i % 20 < 3 { 1410.0 } else { 1980.0 }),
            throttle_reasons: history(g, |i| if i % 20 < 3 { 1.0 } else { 0.0 }),
        },
    };
    match g {
        1 => {
            d.ecc_sbe_volatile = Some(12.0);
            d.ecc_dbe_volatile = Some(1.0);
            d.remapped_uncorrectable = Some(1.0);
            d.remap_pending = Some(1.0);
            d.xid_total = 1.0;
            d.last_xid = Some(48.0);
        }
        2 => {
            d.throttle = vec!["sw_power_cap".to_owned(), "hw_slowdown".to_owned()];
            d.sm_clock_mhz = Some(1410.0);
        }
        5 => {
            d.xid_total = 1.0;
            d.last_xid = Some(79.0);
        }
        _ => {}
    }
    d
}

fn snapshot() -> Snapshot {
    let mut nodes = vec![
        node(1, "gpu-node-01", true, &[], 1),
        node(2, "gpu-node-02", true, &[], 2),
        node(3, "gpu-node-03", true, &[5], 1),
        node(4, "gpu-node-04", false, &[], 312),
        node(5, "gpu-node-10", true, &[], 1),
    ];
    nodes[1].gpus[3].temp_c = Some(88.0);
    nodes.push(NodeRow {
        name: "login-01".to_owned(),
        up: true,
        last_seen: Some(now() - Duration::seconds(3)),
        agent_version: "0.1.0".to_owned(),
        gpus: Vec::new(),
        cpu_pct: Some(4.0),
        mem_pct: Some(22.0),
    });
    let alerts = vec![
        alert(
            "GpuFellOffBus",
            AlertState::Firing,
            "gpu-node-03",
            "critical",
            "GPU 5 of gpu-node-03 fell off the bus (Xid 79)",
        ),
        alert(
            "VigilNodeDown",
            AlertState::Firing,
            "gpu-node-04",
            "critical",
            "gpu-node-04 stopped sending 5m ago",
        ),
        alert(
            "GpuTemperatureHigh",
            AlertState::Firing,
            "gpu-node-02",
            "warning",
            "GPU 3 of gpu-node-02 runs at 88°C",
        ),
        alert(
            "GpuEccDoubleBit",
            AlertState::Pending,
            "gpu-node-03",
            "critical",
            "GPU 1 of gpu-node-03 reported a double-bit ECC error",
        ),
    ];
    let detail = NodeDetail {
        node: "gpu-node-03".to_owned(),
        gpus: (0..8).map(gpu_detail).collect(),
        host: HostStats {
            cpu_pct: Some(37.0),
            cpu_history: (0..61).map(|i| 30.0 + (i % 10) as f64).collect(),
            load1: Some(12.3),
            mem_total_bytes: Some(2048.0 * 1024f64.powi(3)),
            mem_available_bytes: Some(1300.0 * 1024f64.powi(3)),
            filesystems: vec![
                Filesystem {
                    mountpoint: "/".to_owned(),
                    size_bytes: 1.8 * 1024f64.powi(4),
                    avail_bytes: 1.1 * 1024f64.powi(4),
                },
                Filesystem {
                    mountpoint: "/raid".to_owned(),
                    size_bytes: 28.0 * 1024f64.powi(4),
                    avail_bytes: 20.0 * 1024f64.powi(4),
                },
            ],
            disk_read_bps: Some(850.0 * 1024f64.powi(2)),
            disk_write_bps: Some(120.0 * 1024f64.powi(2)),
            networks: vec![
                Network {
                    device: "ibp12s0".to_owned(),
                    rx_bps: 22.5 * 1024f64.powi(3),
                    tx_bps: 21.0 * 1024f64.powi(3),
                },
                Network {
                    device: "eth0".to_owned(),
                    rx_bps: 1.2 * 1024f64.powi(2),
                    tx_bps: 0.8 * 1024f64.powi(2),
                },
            ],
        },
        xid_events: vec![
            XidEvent {
                at: now() - Duration::seconds(300),
                gpu: "5".to_owned(),
                xid: "79".to_owned(),
                count: 1.0,
            },
            XidEvent {
                at: now() - Duration::seconds(1500),
                gpu: "1".to_owned(),
                xid: "48".to_owned(),
                count: 1.0,
            },
        ],
        history_secs: 600,
    };
    Snapshot {
        taken_at: Some(now() - Duration::seconds(1)),
        nodes,
        alerts,
        detail: Some(detail),
        recovery: recovery(),
        errors: Vec::new(),
    }
}

/// An RFC 3339 time `secs` before [`now`].
fn at(secs: i64) -> String {
    (now() - Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn recovery_action(
    id: &str,
    node: &str,
    script: &str,
    alertname: &str,
    state: ActionState,
    secs_ago: i64,
) -> RecoveryAction {
    RecoveryAction {
        id: id.to_owned(),
        node: node.to_owned(),
        script: script.to_owned(),
        alertname: alertname.to_owned(),
        labels: labels(&[("alertname", alertname), ("gpu", "5"), ("node", node)]),
        args: labels(&[("gpu", "5")]),
        decision: Decision::Run,
        state,
        reason: "first attempt within 1h".to_owned(),
        attempt: 1,
        created_at: at(secs_ago),
        updated_at: at(secs_ago),
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

/// Newest first, one of each kind of outcome.
fn recovery() -> Recovery {
    let mut waiting = recovery_action(
        "7f3a1c00-5b1e-4a8e-9d51-0f6b2a7c9e11",
        "gpu-node-03",
        "reset-gpu",
        "GpuFellOffBus",
        ActionState::AwaitingApproval,
        60,
    );
    waiting.decision = Decision::AwaitApproval;
    waiting.reason = "reset-gpu needs approval (mode = approval)".to_owned();
    let mut running = recovery_action(
        "2b9d0e17-1111-4a8e-9d51-0f6b2a7c9e11",
        "gpu-node-02",
        "restart-fabricmanager",
        "NvlinkDown",
        ActionState::Running,
        95,
    );
    running.started_at = Some(at(90));
    let mut succeeded = recovery_action(
        "c41f5a22-2222-4a8e-9d51-0f6b2a7c9e11",
        "gpu-node-01",
        "reset-gpu",
        "GpuFellOffBus",
        ActionState::Succeeded,
        1200,
    );
    succeeded.started_at = Some(at(1198));
    succeeded.finished_at = Some(at(1186));
    succeeded.exit_code = Some(0);
    succeeded.approved_by = Some("alice".to_owned());
    let mut failed = recovery_action(
        "e0a7b933-3333-4a8e-9d51-0f6b2a7c9e11",
        "gpu-node-04",
        "reset-gpu",
        "GpuFellOffBus",
        ActionState::Failed,
        2400,
    );
    failed.started_at = Some(at(2398));
    failed.finished_at = Some(at(2390));
    failed.exit_code = Some(3);
    failed.message = "nvidia-smi -r: GPU 5 is in use by 2 processes".to_owned();
    let mut refused = recovery_action(
        "5d6e7f44-4444-4a8e-9d51-0f6b2a7c9e11",
        "gpu-node-10",
        "clear-ecc",
        "GpuEccDoubleBit",
        ActionState::Refused,
        3000,
    );
    refused.message = "clear-ecc is not in /etc/vigil/recovery.d".to_owned();
    let mut skipped = recovery_action(
        "a1b2c3d4-5555-4a8e-9d51-0f6b2a7c9e11",
        "gpu-node-03",
        "reset-gpu",
        "GpuFellOffBus",
        ActionState::Recorded,
        3300,
    );
    skipped.decision = Decision::SkipCooldown;
    skipped.reason = "cooldown: reset-gpu ran on gpu-node-03 4m ago".to_owned();
    let mut lost = recovery_action(
        "0f0e0d55-6666-4a8e-9d51-0f6b2a7c9e11",
        "gpu-node-04",
        "drain-node",
        "VigilNodeDown",
        ActionState::Lost,
        3500,
    );
    lost.timed_out = true;
    lost.message = "the agent restarted while it ran".to_owned();
    Recovery {
        kill_switch: KillSwitch::default(),
        actions: vec![waiting, running, succeeded, failed, refused, skipped, lost],
        unsupported: false,
    }
}

/// A state with the fixture loaded, as after the first good round.
fn loaded(width: u16, height: u16) -> State {
    let mut state = State::new("http://127.0.0.1:9436", now());
    update(&mut state, Action::Resize(width, height));
    update(&mut state, Action::Fetched(Box::new(snapshot())));
    state
}

fn draw(state: &State) -> String {
    let (w, h) = state.size;
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    terminal.draw(|f| render(f, state)).unwrap();
    terminal.backend().to_string()
}

fn check(name: &str, prepare: impl Fn(&mut State)) {
    for (w, h) in SIZES {
        let mut state = loaded(w, h);
        prepare(&mut state);
        let screen = draw(&state);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), screen);
    }
}

#[test]
fn fleet_view() {
    check("fleet", |_| {});
}

#[test]
fn fleet_sorted_by_util_and_filtered() {
    check("fleet_filtered", |s| {
        update(s, Action::NextSort);
        update(s, Action::NextSort);
        assert_eq!(s.fleet_ui.sort.map(|k| k.name()), Some("util"));
        update(s, Action::StartFilter);
        for c in "node-0".chars() {
            update(s, Action::FilterChar(c));
        }
    });
}

#[test]
fn node_view() {
    check("node", |s| {
        // gpu-node-03 (lost GPU, critical) sorts after the down node.
        let at = s
            .visible
            .iter()
            .position(|&i| s.fleet[i].node.name == "gpu-node-03")
            .unwrap();
        update(s, Action::Click(at));
        update(s, Action::Enter);
        assert_eq!(s.view, View::Node);
        update(s, Action::Down);
        update(s, Action::Down);
    });
}

#[test]
fn alerts_view() {
    check("alerts", |s| {
        update(s, Action::GoTo(View::Alerts));
    });
}

#[test]
fn silence_prompt() {
    check("silence_prompt", |s| {
        update(s, Action::GoTo(View::Alerts));
        update(s, Action::StartSilence);
    });
}

#[test]
fn actions_view() {
    check("actions", |s| {
        update(s, Action::GoTo(View::Actions));
    });
}

#[test]
fn actions_with_the_kill_switch_engaged() {
    check("actions_kill_switch", |s| {
        let mut snapshot = s.data.clone();
        snapshot.recovery.kill_switch = KillSwitch {
            engaged: true,
            by: "alice".to_owned(),
            reason: "driver rollout on the whole fleet".to_owned(),
            since: Some(at(1200)),
        };
        update(s, Action::Fetched(Box::new(snapshot)));
        update(s, Action::GoTo(View::Actions));
        // The failed one's details.
        update(s, Action::Down);
        update(s, Action::Down);
        update(s, Action::Down);
    });
}

#[test]
fn approve_prompt() {
    check("approve_prompt", |s| {
        update(s, Action::GoTo(View::Actions));
        update(s, Action::AskApprove);
    });
}

#[test]
fn kill_switch_prompt() {
    check("kill_switch_prompt", |s| {
        update(s, Action::GoTo(View::Actions));
        update(s, Action::AskKillSwitch);
        for c in "rollout".chars() {
            update(s, Action::PromptChar(c));
        }
    });
}

#[test]
fn actions_without_the_endpoint() {
    check("actions_unsupported", |s| {
        let mut snapshot = s.data.clone();
        snapshot.recovery = Recovery {
            unsupported: true,
            ..Recovery::default()
        };
        update(s, Action::Fetched(Box::new(snapshot)));
        update(s, Action::GoTo(View::Actions));
    });
}

#[test]
fn help_overlay() {
    check("help", |s| {
        update(s, Action::ToggleHelp);
    });
}

#[test]
fn collector_down_banner() {
    check("collector_down", |s| {
        update(
            s,
            Action::FetchFailed(
                "cannot reach the collector at http://127.0.0.1:9436: Connection refused (os error 111)"
                    .to_owned(),
            ),
        );
        update(s, Action::Tick(now() + Duration::seconds(42)));
        assert!(matches!(s.link, Link::Down { .. }));
    });
}

#[test]
fn failed_queries_banner() {
    check("query_errors", |s| {
        let mut snapshot = s.data.clone();
        snapshot.errors = vec![
            "DCGM_FI_DEV_POWER_USAGE: GET /api/v1/query: no answer within 5s".to_owned(),
            "vigil_gpu_up: GET /api/v1/query: no answer within 5s".to_owned(),
        ];
        update(s, Action::Fetched(Box::new(snapshot)));
    });
}

/// Newest first: kernel Xid lines of one GPU among a training job's and the agent's lines.
fn log_records() -> Vec<LogRecord> {
    (0..40)
        .map(|i| {
            let at = now() - Duration::milliseconds(1500 * i as i64 + 250);
            let (source, severity, body, attributes) = match i % 4 {
                0 => (
                    "kernel",
                    "error",
                    format!(
                        "NVRM: Xid (PCI:0000:3b:00): 79, pid={}, GPU has fallen off the bus.",
                        4000 + i
                    ),
                    labels(&[
                        ("kernel.seq", &format!("{}", 9000 + i)),
                        ("nvidia.event", "xid"),
                        ("nvidia.gpu", "3"),
                        ("nvidia.message", "GPU has fallen off the bus."),
                        ("nvidia.pci_bus_id", "00000000:3B:00.0"),
                        ("nvidia.xid", "79"),
                    ]),
                ),
                1 => (
                    "/var/log/train/rank3.log",
                    "warn",
                    format!(
                        "step {}: NCCL watchdog: collective operation timed out after 600000 ms",
                        1200 - i
                    ),
                    labels(&[("job", "llama-70b")]),
                ),
                2 => (
                    "/var/log/train/rank3.log",
                    "info",
                    format!("step {}: loss 1.{:03} lr 3e-4", 1200 - i, 900 - i),
                    BTreeMap::new(),
                ),
                _ => (
                    "/var/log/syslog",
                    "",
                    "systemd[1]: Started nvidia-persistenced.service.".to_owned(),
                    BTreeMap::new(),
                ),
            };
            LogRecord {
                timestamp: Some(at),
                node: "gpu-node-03".to_owned(),
                source: source.to_owned(),
                severity: severity.to_owned(),
                body,
                attributes,
            }
        })
        .collect()
}

/// The logs view after `/`, a typed query and Enter, the collector's answer and `t`.
fn logs_searched(s: &mut State) {
    update(s, Action::GoTo(View::Logs));
    update(s, Action::StartLogQuery);
    for c in "xid OR step".chars() {
        update(s, Action::LogQueryChar(c));
    }
    update(s, Action::RunLogQuery);
    let answer = LogsAnswer {
        generation: s.logs_ui.generation,
        tail: false,
        result: Ok(LogPage {
            total: 1234,
            records: log_records(),
        }),
    };
    update(s, Action::LogsFetched(Box::new(answer)));
    update(s, Action::ToggleTail);
    // The second Xid line: its attributes fill the details pane where it fits.
    for _ in 0..4 {
        update(s, Action::Down);
    }
}

#[test]
fn logs_view() {
    check("logs", logs_searched);
}

#[test]
fn logs_failed_search_keeps_lines() {
    check("logs_error", |s| {
        logs_searched(s);
        let answer = LogsAnswer {
            generation: s.logs_ui.generation,
            tail: true,
            result: Err(
                "GET /api/v1/logs/search: 400 Bad Request: bad_data: invalid parameter \"q\": syntax error".to_owned(),
            ),
        };
        // The tail's poll is in flight after `t`; its answer is the failure.
        assert!(s.logs_ui.loading);
        update(s, Action::LogsFetched(Box::new(answer)));
        assert_eq!(s.logs_ui.records.len(), 40);
    });
}

#[test]
fn logs_query_editing() {
    check("logs_editing", |s| {
        update(s, Action::GoTo(View::Alerts));
        update(s, Action::LogsForSelection);
        update(s, Action::StartLogQuery);
        update(s, Action::LogQueryChar(' '));
    });
}

#[test]
fn connecting_without_data() {
    for (w, h) in SIZES {
        let mut state = State::new("http://127.0.0.1:9436", now());
        update(&mut state, Action::Resize(w, h));
        insta::assert_snapshot!(format!("connecting_{w}x{h}"), draw(&state));
    }
}

/// Puts a state into the screen under test.
type Prepare = fn(&mut State);

/// No screen panics or overflows on a terminal too small for it, nor on a huge one.
#[test]
fn every_screen_survives_any_size() {
    let screens: [(&str, Prepare); 10] = [
        ("fleet", |_| {}),
        ("node", |s| {
            update(s, Action::Enter);
        }),
        ("alerts", |s| {
            update(s, Action::GoTo(View::Alerts));
        }),
        ("prompt", |s| {
            update(s, Action::GoTo(View::Alerts));
            update(s, Action::StartSilence);
        }),
        ("help", |s| {
            update(s, Action::ToggleHelp);
        }),
        ("actions", |s| {
            update(s, Action::GoTo(View::Actions));
        }),
        ("confirm", |s| {
            update(s, Action::GoTo(View::Actions));
            update(s, Action::AskKillSwitch);
        }),
        ("down", |s| {
            update(s, Action::FetchFailed("gone".into()));
        }),
        ("logs", logs_searched),
        ("logs_query", |s| {
            update(s, Action::GoTo(View::Logs));
            update(s, Action::StartLogQuery);
        }),
    ];
    for (w, h) in [
        (1, 1),
        (2, 2),
        (10, 3),
        (20, 5),
        (40, 10),
        (79, 23),
        (400, 120),
    ] {
        for (name, prepare) in &screens {
            let mut state = loaded(w, h);
            prepare(&mut state);
            let screen = draw(&state);
            assert_eq!(screen.lines().count(), usize::from(h), "{name} at {w}x{h}");
        }
    }
}
