//! The dashboard's input and update logic without a terminal: keys and clicks to
//! actions, actions to state and effects.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone as _, Utc};
use crossterm::event::{
    Event, KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use serde_json::json;
use vigil_proto::actions::{
    Action as RecoveryAction, ActionState, Decision, KillSwitch, KillSwitchRequest,
};
use vigil_tui::dash::keys::action_for;
use vigil_tui::dash::logs::{LogPage, LogRecord, LogRequest, LogsAnswer, MAX_LINES};
use vigil_tui::dash::model::{Alert, AlertState, GpuDetail, GpuRow, NodeDetail, NodeRow, Snapshot};
use vigil_tui::dash::recovery::{RecoveryAnswer, RecoveryOutcome};
use vigil_tui::dash::state::{
    Action, Confirm, Effect, Link, Mode, RecoveryRequest, SortKey, State, View, update,
};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn node(name: &str, util: f64) -> NodeRow {
    NodeRow {
        name: name.to_owned(),
        up: true,
        last_seen: Some(now()),
        agent_version: "0.1.0".to_owned(),
        gpus: vec![GpuRow {
            index: "0".to_owned(),
            up: true,
            util_pct: Some(util),
            temp_c: Some(50.0),
            power_w: Some(300.0),
        }],
        cpu_pct: None,
        mem_pct: None,
    }
}

fn firing(name: &str, node: &str) -> Alert {
    let labels: BTreeMap<String, String> = [
        ("alertname", name),
        ("node", node),
        ("severity", "critical"),
        ("gpu", "3"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    Alert {
        name: name.to_owned(),
        state: AlertState::Firing,
        node: node.to_owned(),
        severity: "critical".to_owned(),
        active_at: Some(now()),
        value: "1".to_owned(),
        labels,
        annotations: BTreeMap::new(),
    }
}

fn loaded() -> State {
    let mut state = State::new("http://127.0.0.1:9436", now());
    update(&mut state, Action::Resize(80, 24));
    let snapshot = Snapshot {
        taken_at: Some(now()),
        nodes: vec![
            node("gpu-10", 90.0),
            node("gpu-2", 10.0),
            node("gpu-1", 50.0),
        ],
        alerts: vec![firing("GpuFellOffBus", "gpu-10")],
        detail: None,
        recovery: Default::default(),
        errors: Vec::new(),
    };
    update(&mut state, Action::Fetched(Box::new(snapshot)));
    state
}

fn names(state: &State) -> Vec<&str> {
    state
        .visible
        .iter()
        .map(|&i| state.fleet[i].node.name.as_str())
        .collect()
}

fn key(code: KeyCode) -> Event {
    Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn click(column: u16, row: u16) -> Event {
    Event::Mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column,
        row,
        modifiers: KeyModifiers::NONE,
    })
}

#[test]
fn health_first_then_names_in_numeric_order() {
    let mut state = loaded();
    // gpu-10 has a critical alert firing: it comes first.
    assert_eq!(names(&state), ["gpu-10", "gpu-1", "gpu-2"]);
    update(&mut state, Action::NextSort);
    assert_eq!(state.fleet_ui.sort, Some(SortKey::Name));
    assert_eq!(names(&state), ["gpu-1", "gpu-2", "gpu-10"]);
    update(&mut state, Action::NextSort);
    assert_eq!(
        names(&state),
        ["gpu-10", "gpu-1", "gpu-2"],
        "util, busiest first"
    );
    update(&mut state, Action::ReverseSort);
    assert_eq!(names(&state), ["gpu-2", "gpu-1", "gpu-10"]);
}

#[test]
fn the_cursor_follows_its_node_through_sorts_and_filters() {
    let mut state = loaded();
    update(&mut state, Action::Down);
    assert_eq!(state.selected_entry().unwrap().node.name, "gpu-1");
    update(&mut state, Action::NextSort);
    assert_eq!(state.selected_entry().unwrap().node.name, "gpu-1");
    update(&mut state, Action::StartFilter);
    assert_eq!(state.mode, Mode::Filter);
    for c in "gpu-2".chars() {
        update(&mut state, Action::FilterChar(c));
    }
    assert_eq!(names(&state), ["gpu-2"]);
    assert_eq!(state.fleet_ui.selected, 0);
    update(&mut state, Action::FilterClear);
    assert_eq!(names(&state).len(), 3);
    assert_eq!(state.mode, Mode::Normal);
}

#[test]
fn enter_opens_the_node_and_esc_comes_back() {
    let mut state = loaded();
    let effect = update(&mut state, Action::Enter);
    assert_eq!(effect, Some(Effect::Focus(Some("gpu-10".to_owned()))));
    assert_eq!(state.view, View::Node);
    let effect = update(&mut state, Action::Back);
    assert_eq!(effect, Some(Effect::Focus(None)));
    assert_eq!(state.view, View::Fleet);
    // Tab: fleet, node (the selected node), alerts, actions, logs (searched when
    // first opened), fleet.
    assert_eq!(
        update(&mut state, Action::NextView),
        Some(Effect::Focus(Some("gpu-10".to_owned())))
    );
    assert_eq!(
        update(&mut state, Action::NextView),
        Some(Effect::Focus(None))
    );
    assert_eq!(state.view, View::Alerts);
    assert_eq!(update(&mut state, Action::NextView), None);
    assert_eq!(state.view, View::Actions);
    assert!(matches!(
        update(&mut state, Action::NextView),
        Some(Effect::Logs(_))
    ));
    assert_eq!(state.view, View::Logs);
    assert_eq!(update(&mut state, Action::NextView), None);
    assert_eq!(state.view, View::Fleet);
    update(&mut state, Action::PrevView);
    assert_eq!(state.view, View::Logs);
    assert_eq!(
        update(&mut state, Action::GoTo(View::Logs)),
        None,
        "the logs view keeps its records when reopened"
    );
}

#[test]
fn tab_skips_the_node_view_without_nodes() {
    let mut state = State::new("http://x", now());
    update(&mut state, Action::NextView);
    assert_eq!(state.view, View::Alerts);
}

#[test]
fn an_unreachable_collector_keeps_the_data() {
    let mut state = loaded();
    update(&mut state, Action::FetchFailed("connection refused".into()));
    update(
        &mut state,
        Action::Tick(now() + chrono::Duration::seconds(10)),
    );
    update(&mut state, Action::FetchFailed("connection refused".into()));
    match &state.link {
        Link::Down { since, error } => {
            assert_eq!(*since, now(), "the outage started at the first failure");
            assert_eq!(error, "connection refused");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state.fleet.len(), 3);
    let snapshot = state.data.clone();
    update(&mut state, Action::Fetched(Box::new(snapshot)));
    assert_eq!(state.link, Link::Up);
}

#[test]
fn keys_depend_on_the_mode() {
    let mut state = loaded();
    assert_eq!(
        action_for(&key(KeyCode::Char('q')), &state),
        Some(Action::Quit)
    );
    assert_eq!(
        action_for(&key(KeyCode::Char('j')), &state),
        Some(Action::Down)
    );
    assert_eq!(
        action_for(&key(KeyCode::Tab), &state),
        Some(Action::NextView)
    );
    assert_eq!(
        action_for(&key(KeyCode::Char('s')), &state),
        Some(Action::NextSort)
    );
    let ctrl_c = Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    update(&mut state, Action::StartFilter);
    assert_eq!(
        action_for(&key(KeyCode::Char('q')), &state),
        Some(Action::FilterChar('q'))
    );
    assert_eq!(action_for(&ctrl_c, &state), Some(Action::Quit));
    update(&mut state, Action::FilterDone);
    update(&mut state, Action::GoTo(View::Alerts));
    assert_eq!(
        action_for(&key(KeyCode::Char('s')), &state),
        Some(Action::StartSilence)
    );
    update(&mut state, Action::StartSilence);
    assert_eq!(
        action_for(&key(KeyCode::Char('q')), &state),
        Some(Action::PromptChar('q'))
    );
    assert_eq!(action_for(&ctrl_c, &state), Some(Action::Quit));
    assert_eq!(action_for(&key(KeyCode::Esc), &state), Some(Action::Cancel));
}

#[test]
fn clicks_select_rows_and_tabs() {
    let mut state = loaded();
    // Row 0 is the tab line, row 1 the table's heading, rows 2.. the nodes.
    assert_eq!(action_for(&click(10, 3), &state), Some(Action::Click(1)));
    assert_eq!(action_for(&click(10, 1), &state), None);
    assert_eq!(
        action_for(&click(10, 20), &state),
        None,
        "below the last row"
    );
    update(&mut state, Action::Click(1));
    assert_eq!(state.fleet_ui.selected, 1);
    assert_eq!(state.view, View::Fleet);
    // A second click on the selected row opens it.
    let effect = update(&mut state, Action::Click(1));
    assert_eq!(effect, Some(Effect::Focus(Some("gpu-1".to_owned()))));
    // " vigil " then " 1 Fleet (3) ", " 2 Node ", " 3 Alerts (1) ", " 4 Actions (0) ".
    let x = " vigil  1 Fleet (3)  2 Node  3 Alerts".len() as u16 - 3;
    assert_eq!(
        action_for(&click(x + 14, 0), &state),
        Some(Action::GoTo(View::Actions))
    );
    assert_eq!(
        action_for(&click(x, 0), &state),
        Some(Action::GoTo(View::Alerts))
    );
    let scroll = Event::Mouse(MouseEvent {
        kind: MouseEventKind::ScrollDown,
        column: 0,
        row: 5,
        modifiers: KeyModifiers::NONE,
    });
    assert_eq!(action_for(&scroll, &state), Some(Action::Down));
}

#[test]
fn silencing_posts_every_label_of_the_alert() {
    let mut state = loaded();
    update(&mut state, Action::GoTo(View::Alerts));
    update(&mut state, Action::StartSilence);
    // A bad duration is reported in the prompt; nothing is sent.
    update(&mut state, Action::PromptBackspace);
    update(&mut state, Action::PromptBackspace);
    update(&mut state, Action::PromptChar('x'));
    assert_eq!(update(&mut state, Action::PromptSubmit), None);
    let Mode::Silence(prompt) = &state.mode else {
        panic!("{:?}", state.mode)
    };
    assert!(
        prompt.error.as_deref().unwrap().contains("--duration"),
        "{prompt:?}"
    );
    update(&mut state, Action::PromptBackspace);
    for c in "90m".chars() {
        update(&mut state, Action::PromptChar(c));
    }
    update(&mut state, Action::PromptNextField);
    for c in " (rma)".chars() {
        update(&mut state, Action::PromptChar(c));
    }
    let Some(Effect::Silence(body)) = update(&mut state, Action::PromptSubmit) else {
        panic!("no silence effect");
    };
    assert_eq!(state.mode, Mode::Normal);
    assert_eq!(body["endsAt"], "2026-11-27T13:30:00.000Z");
    assert_eq!(body["comment"], "silenced from vigil dash (rma)");
    let matchers = body["matchers"].as_array().unwrap();
    assert_eq!(matchers.len(), 4);
    assert!(matchers.iter().any(|m| m["name"] == "gpu"
        && m["value"] == "3"
        && m["isEqual"] == true
        && m["isRegex"] == false));
    update(
        &mut state,
        Action::Silenced(Err("silence failed: 404".into())),
    );
    assert!(state.notice.as_ref().unwrap().error);
}

fn log_request(effect: Option<Effect>) -> LogRequest {
    match effect {
        Some(Effect::Logs(request)) => request,
        Some(Effect::Batch(effects)) => effects
            .into_iter()
            .find_map(|e| match e {
                Effect::Logs(request) => Some(request),
                _ => None,
            })
            .expect("a logs search among the effects"),
        other => panic!("no logs search: {other:?}"),
    }
}

fn log_line(secs: i64, body: &str) -> LogRecord {
    LogRecord {
        timestamp: Some(now() + chrono::Duration::seconds(secs)),
        node: "gpu-10".to_owned(),
        source: "kernel".to_owned(),
        severity: "error".to_owned(),
        body: body.to_owned(),
        attributes: BTreeMap::new(),
    }
}

fn answered(request: &LogRequest, records: Vec<LogRecord>) -> Action {
    Action::LogsFetched(Box::new(LogsAnswer {
        generation: request.generation,
        tail: request.tail,
        result: Ok(LogPage {
            total: records.len() as u64,
            records,
        }),
    }))
}

#[test]
fn the_logs_query_is_typed_and_run() {
    let mut state = loaded();
    assert_eq!(
        action_for(&key(KeyCode::Char('5')), &state),
        Some(Action::GoTo(View::Logs))
    );
    let first = log_request(update(&mut state, Action::GoTo(View::Logs)));
    assert!(
        first
            .path
            .starts_with("/api/v1/logs/search?q=&limit=500&start="),
        "{}",
        first.path
    );
    // `/` edits the query here, not the fleet filter; typed keys are text.
    assert_eq!(
        action_for(&key(KeyCode::Char('/')), &state),
        Some(Action::StartLogQuery)
    );
    update(&mut state, Action::StartLogQuery);
    assert_eq!(state.mode, Mode::LogQuery);
    for (code, action) in [
        (KeyCode::Char('q'), Action::LogQueryChar('q')),
        (KeyCode::Char('t'), Action::LogQueryChar('t')),
        (KeyCode::Backspace, Action::LogQueryBackspace),
        (KeyCode::Enter, Action::RunLogQuery),
        (KeyCode::Esc, Action::Cancel),
    ] {
        assert_eq!(action_for(&key(code), &state), Some(action));
    }
    for c in "xid AND 79x".chars() {
        update(&mut state, Action::LogQueryChar(c));
    }
    update(&mut state, Action::LogQueryBackspace);
    let search = log_request(update(&mut state, Action::RunLogQuery));
    assert_eq!(state.mode, Mode::Normal);
    assert!(
        search
            .path
            .starts_with("/api/v1/logs/search?q=xid%20AND%2079&limit=500"),
        "{}",
        search.path
    );
    assert!(search.generation > first.generation && !search.tail);
    // The first search's late answer is dropped; the current one shows.
    update(&mut state, answered(&first, vec![log_line(0, "stale")]));
    assert!(state.logs_ui.records.is_empty());
    update(
        &mut state,
        answered(&search, vec![log_line(2, "new"), log_line(1, "old")]),
    );
    assert_eq!(state.logs_ui.records.len(), 2);
    assert_eq!(state.logs_ui.total, 2);
    update(&mut state, Action::Down);
    assert_eq!(state.logs_ui.selected, 1);
    update(&mut state, Action::End);
    assert_eq!(state.logs_ui.selected, 1);
    // Enter searches again; a failure keeps the lines and is shown.
    let again = log_request(update(&mut state, Action::Enter));
    update(
        &mut state,
        Action::LogsFetched(Box::new(LogsAnswer {
            generation: again.generation,
            tail: false,
            result: Err("400 Bad Request: syntax error".into()),
        })),
    );
    assert_eq!(state.logs_ui.records.len(), 2);
    assert_eq!(
        state.logs_ui.error.as_deref(),
        Some("400 Bad Request: syntax error")
    );
}

#[test]
fn the_tail_polls_for_newer_records_while_watched() {
    let mut state = loaded();
    assert_eq!(
        action_for(&key(KeyCode::Char('t')), &state),
        None,
        "t means nothing outside the logs view"
    );
    let search = log_request(update(&mut state, Action::GoTo(View::Logs)));
    update(&mut state, answered(&search, vec![log_line(5, "a")]));
    assert_eq!(
        action_for(&key(KeyCode::Char('t')), &state),
        Some(Action::ToggleTail)
    );
    // Turning it on polls at once, from the newest record shown.
    let poll = log_request(update(&mut state, Action::ToggleTail));
    assert!(state.logs_ui.tail && poll.tail);
    assert!(poll.path.contains("&start=1795780805.000"), "{}", poll.path);
    // One poll at a time.
    assert_eq!(
        update(
            &mut state,
            Action::Tick(now() + chrono::Duration::seconds(9))
        ),
        None
    );
    update(
        &mut state,
        answered(
            &poll,
            vec![log_line(7, "c"), log_line(6, "b"), log_line(5, "a")],
        ),
    );
    let bodies: Vec<&str> = state
        .logs_ui
        .records
        .iter()
        .map(|r| r.body.as_str())
        .collect();
    assert_eq!(bodies, ["c", "b", "a"]);
    // The next tick after the interval polls again; not from another view.
    let later = now() + chrono::Duration::seconds(20);
    update(&mut state, Action::GoTo(View::Fleet));
    assert_eq!(update(&mut state, Action::Tick(later)), None);
    update(&mut state, Action::GoTo(View::Logs));
    let next = log_request(update(&mut state, Action::Tick(later)));
    assert!(next.path.contains("&start=1795780807.000"), "{}", next.path);
    // A flood keeps only the newest MAX_LINES.
    let flood: Vec<LogRecord> = (0..MAX_LINES as i64 + 10)
        .rev()
        .map(|i| log_line(100 + i, "flood"))
        .collect();
    update(&mut state, answered(&next, flood));
    assert_eq!(state.logs_ui.records.len(), MAX_LINES);
    update(&mut state, Action::ToggleTail);
    assert!(!state.logs_ui.tail);
    let much_later = now() + chrono::Duration::seconds(60);
    assert_eq!(update(&mut state, Action::Tick(much_later)), None);
}

#[test]
fn l_jumps_to_the_logs_of_an_alert_a_node_or_a_gpu() {
    let mut state = loaded();
    // From an alert: its node and, with a gpu label, that GPU's kernel lines.
    update(&mut state, Action::GoTo(View::Alerts));
    assert_eq!(
        action_for(&key(KeyCode::Char('l')), &state),
        Some(Action::LogsForSelection)
    );
    let request = log_request(update(&mut state, Action::LogsForSelection));
    assert_eq!(state.view, View::Logs);
    assert_eq!(state.logs_ui.node.as_deref(), Some("gpu-10"));
    assert_eq!(state.logs_ui.query, "attributes.nvidia.gpu:\"3\"");
    assert!(
        request
            .path
            .starts_with("/api/v1/logs/search?q=attributes.nvidia.gpu%3A%223%22&node=gpu-10&"),
        "{}",
        request.path
    );
    // Backspace on an empty query drops the node filter.
    update(&mut state, Action::StartLogQuery);
    for _ in 0..state.logs_ui.query.len() {
        update(&mut state, Action::LogQueryBackspace);
    }
    assert_eq!(state.logs_ui.node.as_deref(), Some("gpu-10"));
    update(&mut state, Action::LogQueryBackspace);
    assert_eq!(state.logs_ui.node, None);
    update(&mut state, Action::Cancel);

    // From the fleet: the selected node, every record.
    update(&mut state, Action::GoTo(View::Fleet));
    update(&mut state, Action::Down);
    update(&mut state, Action::LogsForSelection);
    assert_eq!(state.logs_ui.node.as_deref(), Some("gpu-1"));
    assert_eq!(state.logs_ui.query, "");

    // From the node view: that node and its selected GPU; the fetcher stops the
    // node's details.
    update(&mut state, Action::GoTo(View::Fleet));
    update(&mut state, Action::Enter);
    let mut snapshot = state.data.clone();
    snapshot.detail = Some(NodeDetail {
        node: "gpu-1".to_owned(),
        gpus: ["0", "1"]
            .iter()
            .map(|i| GpuDetail {
                index: (*i).to_owned(),
                up: true,
                ..GpuDetail::default()
            })
            .collect(),
        ..NodeDetail::default()
    });
    update(&mut state, Action::Fetched(Box::new(snapshot)));
    update(&mut state, Action::Right);
    assert_eq!(
        action_for(&key(KeyCode::Char('l')), &state),
        Some(Action::LogsForSelection)
    );
    let effect = update(&mut state, Action::LogsForSelection);
    let Some(Effect::Batch(effects)) = &effect else {
        panic!("{effect:?}");
    };
    assert_eq!(effects[0], Effect::Focus(None));
    assert_eq!(state.logs_ui.node.as_deref(), Some("gpu-1"));
    assert_eq!(state.logs_ui.query, "attributes.nvidia.gpu:\"1\"");
    assert!(log_request(effect).path.contains("&node=gpu-1&"));
    // In the logs view, `l` means nothing.
    assert_eq!(action_for(&key(KeyCode::Char('l')), &state), None);
}

const WAITING: &str = "7f3a1c00-5b1e-4a8e-9d51-0f6b2a7c9e11";
const RUNNING: &str = "2b9d0e17-1111-4a8e-9d51-0f6b2a7c9e11";

fn recovery_action(id: &str, node: &str, state: ActionState, secs_ago: i64) -> RecoveryAction {
    let at = (now() - chrono::Duration::seconds(secs_ago))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    RecoveryAction {
        id: id.to_owned(),
        node: node.to_owned(),
        script: "reset-gpu".to_owned(),
        alertname: "GpuFellOffBus".to_owned(),
        labels: BTreeMap::new(),
        args: BTreeMap::new(),
        decision: if state == ActionState::AwaitingApproval {
            Decision::AwaitApproval
        } else {
            Decision::Run
        },
        state,
        reason: String::new(),
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

/// [`loaded`] with one action awaiting approval on gpu-10 and one running on gpu-1, in
/// the actions view.
fn with_actions() -> State {
    let mut state = loaded();
    let mut snapshot = state.data.clone();
    snapshot.recovery.actions = vec![
        recovery_action(WAITING, "gpu-10", ActionState::AwaitingApproval, 60),
        recovery_action(RUNNING, "gpu-1", ActionState::Running, 120),
    ];
    update(&mut state, Action::Fetched(Box::new(snapshot)));
    update(&mut state, Action::GoTo(View::Actions));
    state
}

fn outcome(request: RecoveryRequest, result: Result<RecoveryAnswer, String>) -> Action {
    Action::RecoveryAnswered(Box::new(RecoveryOutcome { request, result }))
}

#[test]
fn approving_asks_first_and_posts_the_action_that_was_shown() {
    let mut state = with_actions();
    state.operator = "alice".to_owned();
    assert_eq!(
        action_for(&key(KeyCode::Char('a')), &state),
        Some(Action::AskApprove)
    );
    assert_eq!(
        action_for(&key(KeyCode::Char('x')), &state),
        Some(Action::AskReject)
    );
    assert_eq!(
        action_for(&key(KeyCode::Char('K')), &state),
        Some(Action::AskKillSwitch)
    );
    assert_eq!(update(&mut state, Action::AskApprove), None);
    let Mode::Confirm(prompt) = &state.mode else {
        panic!("{:?}", state.mode)
    };
    assert!(matches!(&prompt.confirm, Confirm::Approve(a) if a.id == WAITING));
    // y or Enter says yes, n or Esc no; other keys do nothing.
    assert_eq!(
        action_for(&key(KeyCode::Char('y')), &state),
        Some(Action::Confirm)
    );
    assert_eq!(
        action_for(&key(KeyCode::Enter), &state),
        Some(Action::Confirm)
    );
    assert_eq!(
        action_for(&key(KeyCode::Char('n')), &state),
        Some(Action::Cancel)
    );
    assert_eq!(action_for(&key(KeyCode::Char('j')), &state), None);

    // A newer action arrives while the prompt is open: the cursor stays on the one
    // shown, and the yes approves that one.
    let mut snapshot = state.data.clone();
    snapshot.recovery.actions.insert(
        0,
        recovery_action("00000000-new", "gpu-2", ActionState::AwaitingApproval, 1),
    );
    update(&mut state, Action::Fetched(Box::new(snapshot)));
    assert_eq!(state.actions_ui.selected, 1);
    assert_eq!(state.selected_action().unwrap().id, WAITING);
    let effect = update(&mut state, Action::Confirm);
    let request = RecoveryRequest::Approve {
        id: WAITING.to_owned(),
        by: "alice".to_owned(),
    };
    assert_eq!(effect, Some(Effect::Recovery(request.clone())));
    assert_eq!(state.mode, Mode::Normal);
    assert_eq!(
        request.path_and_body(),
        (
            format!("/api/v1/actions/{WAITING}/approve"),
            json!({"by": "alice"})
        )
    );

    // The answer goes into the list at once.
    let mut queued = recovery_action(WAITING, "gpu-10", ActionState::Queued, 60);
    queued.approved_by = Some("alice".to_owned());
    update(
        &mut state,
        outcome(request, Ok(RecoveryAnswer::Action(Box::new(queued)))),
    );
    assert_eq!(state.selected_action().unwrap().state, ActionState::Queued);
    let notice = state.notice.clone().unwrap();
    assert!(!notice.error);
    assert_eq!(
        notice.text,
        "approved 7f3a1c00 (reset-gpu on gpu-10): now queued"
    );
    // It no longer waits: no prompt, a notice that says why.
    assert_eq!(update(&mut state, Action::AskApprove), None);
    assert_eq!(state.mode, Mode::Normal);
    let notice = state.notice.clone().unwrap();
    assert!(notice.error);
    assert_eq!(
        notice.text,
        "only an action awaiting approval can be approved; 7f3a1c00 is queued"
    );
    // Outside the actions view the keys mean nothing.
    update(&mut state, Action::GoTo(View::Fleet));
    assert_eq!(action_for(&key(KeyCode::Char('x')), &state), None);
    assert_eq!(action_for(&key(KeyCode::Char('K')), &state), None);
}

#[test]
fn rejecting_can_be_called_off_and_a_conflict_is_shown() {
    let mut state = with_actions();
    update(&mut state, Action::AskReject);
    assert!(matches!(&state.mode, Mode::Confirm(p) if matches!(p.confirm, Confirm::Reject(_))));
    assert_eq!(update(&mut state, Action::Cancel), None);
    assert_eq!(state.mode, Mode::Normal);

    update(&mut state, Action::AskReject);
    let effect = update(&mut state, Action::Confirm);
    let request = RecoveryRequest::Reject {
        id: WAITING.to_owned(),
        by: "vigil".to_owned(),
    };
    assert_eq!(effect, Some(Effect::Recovery(request.clone())));
    assert_eq!(
        request.path_and_body().0,
        format!("/api/v1/actions/{WAITING}/reject")
    );
    let error =
        "reject failed: POST /api/v1/actions/7f3a/reject: 409 Conflict: not awaiting approval";
    update(&mut state, outcome(request, Err(error.to_owned())));
    let notice = state.notice.clone().unwrap();
    assert!(notice.error);
    assert_eq!(notice.text, error);
    assert_eq!(
        state.selected_action().unwrap().state,
        ActionState::AwaitingApproval,
        "a failed request changes nothing"
    );
}

#[test]
fn the_kill_switch_takes_a_reason_and_flips_both_ways() {
    let mut state = with_actions();
    update(&mut state, Action::AskKillSwitch);
    let Mode::Confirm(prompt) = &state.mode else {
        panic!("{:?}", state.mode)
    };
    assert_eq!(prompt.confirm, Confirm::KillSwitch { engage: true });
    // The prompt takes text: y is a letter of the reason, Enter says yes.
    assert_eq!(
        action_for(&key(KeyCode::Char('y')), &state),
        Some(Action::PromptChar('y'))
    );
    assert_eq!(
        action_for(&key(KeyCode::Enter), &state),
        Some(Action::Confirm)
    );
    assert_eq!(action_for(&key(KeyCode::Esc), &state), Some(Action::Cancel));
    for c in " rollout!".chars() {
        update(&mut state, Action::PromptChar(c));
    }
    update(&mut state, Action::PromptBackspace);
    let effect = update(&mut state, Action::Confirm);
    let request = RecoveryRequest::KillSwitch(KillSwitchRequest {
        engaged: true,
        by: "vigil".to_owned(),
        reason: "rollout".to_owned(),
    });
    assert_eq!(effect, Some(Effect::Recovery(request.clone())));
    assert_eq!(
        request.path_and_body(),
        (
            "/api/v1/actions/kill-switch".to_owned(),
            json!({"engaged": true, "by": "vigil", "reason": "rollout"})
        )
    );
    let engaged = KillSwitch {
        engaged: true,
        by: "vigil".to_owned(),
        reason: "rollout".to_owned(),
        since: Some("2026-11-27T12:00:00Z".to_owned()),
    };
    update(
        &mut state,
        outcome(request, Ok(RecoveryAnswer::KillSwitch(engaged.clone()))),
    );
    assert_eq!(state.data.recovery.kill_switch, engaged);
    assert_eq!(
        state.notice.clone().unwrap().text,
        "kill switch engaged: no recovery action starts"
    );
    // Engaged, K offers to release it.
    update(&mut state, Action::AskKillSwitch);
    let Mode::Confirm(prompt) = &state.mode else {
        panic!("{:?}", state.mode)
    };
    assert_eq!(prompt.confirm, Confirm::KillSwitch { engage: false });
    let Some(Effect::Recovery(RecoveryRequest::KillSwitch(release))) =
        update(&mut state, Action::Confirm)
    else {
        panic!("no release");
    };
    assert!(!release.engaged);

    // A collector without the actions API has no switch to flip.
    let mut snapshot = state.data.clone();
    snapshot.recovery = Default::default();
    snapshot.recovery.unsupported = true;
    update(&mut state, Action::Fetched(Box::new(snapshot)));
    assert_eq!(update(&mut state, Action::AskKillSwitch), None);
    assert_eq!(state.mode, Mode::Normal);
    assert!(state.notice.clone().unwrap().error);
}

#[test]
fn enter_and_l_from_an_action_and_the_fleet_marks_its_node() {
    let mut state = with_actions();
    let entry = |state: &State, name: &str| {
        state
            .fleet
            .iter()
            .find(|e| e.node.name == name)
            .unwrap()
            .recovering
    };
    assert_eq!(entry(&state, "gpu-1"), 1, "running");
    assert_eq!(
        entry(&state, "gpu-10"),
        0,
        "awaiting approval is not in flight"
    );
    assert_eq!(
        action_for(&key(KeyCode::Char('4')), &state),
        Some(Action::GoTo(View::Actions))
    );
    update(&mut state, Action::Down);
    assert_eq!(
        update(&mut state, Action::Enter),
        Some(Effect::Focus(Some("gpu-1".to_owned())))
    );
    assert_eq!(state.view, View::Node);
    update(&mut state, Action::GoTo(View::Actions));
    assert_eq!(
        action_for(&key(KeyCode::Char('l')), &state),
        Some(Action::LogsForSelection)
    );
    let request = log_request(update(&mut state, Action::LogsForSelection));
    assert_eq!(state.view, View::Logs);
    assert_eq!(
        state.logs_ui.query,
        format!("source:\"recovery:{RUNNING}\"")
    );
    assert_eq!(state.logs_ui.node, None, "the id alone finds the output");
    assert!(
        request.path.starts_with(&format!(
            "/api/v1/logs/search?q=source%3A%22recovery%3A{RUNNING}%22&"
        )),
        "{}",
        request.path
    );
}
