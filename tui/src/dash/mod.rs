//! `vigil dash`: the fleet in the terminal, as nvtop and nvitop show one box.
//!
//! # Layout
//! - [`model`]: the data (snapshots of the fleet, alerts, one node's details) and the
//!   parsing of the collector's JSON into it; pure.
//! - [`fetch`]: the background task that polls the collector every 2 s, all queries of
//!   a round in parallel with a deadline each, and sends snapshots over a channel.
//! - [`logs`]: the logs view's records, query and live tail, and the searches it asks
//!   the event loop to run.
//! - [`recovery`]: the actions view's approve, reject and kill switch: the confirm
//!   prompt, the POSTs it asks for, and their answers.
//! - [`state`]: the dashboard's state and its [`state::Action`]s; `update.rs` holds
//!   [`state::update`], the only code that changes state, which asks for I/O with
//!   [`state::Effect`]s.
//! - [`keys`]: terminal events to actions.
//! - [`views`]: `render(frame, &State)`, a pure function of the state, one file per
//!   screen.
//!
//! This file runs the loop: terminal setup and restore (also from a panic), the
//! input thread, the fetcher, and drawing only when something changed.

pub mod fetch;
pub mod keys;
pub mod logs;
pub mod model;
pub mod recovery;
pub mod state;
mod update;
pub mod views;

use std::io::Stdout;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use crossterm::event::{DisableMouseCapture, EnableMouseCapture, Event};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::client::{Client, CollectorArgs, unwrap_data};
use crate::matcher::{Matcher, Op};
use crate::silence::{AddArgs, postable};
use model::Alert;
use state::{Action, Effect, State};

pub use views::render;

/// How often the clock (and every "ago") moves when nothing else happens.
const TICK: Duration = Duration::from_secs(1);
/// How long the input thread waits for a key before it checks whether to stop.
const INPUT_POLL: Duration = Duration::from_millis(100);

/// Runs the dashboard against the collector until the user quits; the terminal is
/// restored however it ends.
pub async fn run(conn: CollectorArgs) -> anyhow::Result<()> {
    let client = Arc::new(Client::new(&conn)?);
    let mut terminal = TerminalGuard::enter()?;
    let size = terminal
        .terminal
        .size()
        .context("reading the terminal size")?;
    let mut state = State::new(&conn.collector, Utc::now());
    state.size = (size.width, size.height);
    state.operator = crate::actions::operator_name();

    let (tx, mut rx) = mpsc::channel::<Action>(64);
    let (focus_tx, focus_rx) = watch::channel::<Option<String>>(None);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let fetcher = tokio::spawn(fetch::run(
        client.clone(),
        focus_rx,
        tx.clone(),
        shutdown_rx,
    ));
    let (input_tx, mut input_rx) = mpsc::channel::<Event>(64);
    let stop_input = Arc::new(AtomicBool::new(false));
    let input = std::thread::Builder::new()
        .name("dash-input".into())
        .spawn({
            let stop = stop_input.clone();
            move || read_input(&input_tx, &stop)
        })
        .context("starting the input thread")?;

    let mut tick = tokio::time::interval(TICK);
    let mut dirty = true;
    let result: anyhow::Result<()> = loop {
        if dirty {
            if let Err(e) = terminal.terminal.draw(|f| render(f, &state)) {
                break Err(e).context("drawing the dashboard");
            }
            dirty = false;
        }
        let action = tokio::select! {
            Some(action) = rx.recv() => action,
            event = input_rx.recv() => match event {
                Some(event) => match keys::action_for(&event, &state) {
                    Some(action) => action,
                    None => continue,
                },
                None => break Err(anyhow::anyhow!("reading the terminal's input failed")),
            },
            _ = tick.tick() => Action::Tick(Utc::now()),
        };
        if let Action::Resize(..) = action {
            // The next draw resizes; the whole screen is redrawn.
            let _ = terminal.terminal.autoresize();
        }
        let effect = state::update(&mut state, action);
        // ratatui writes only the cells that changed, so a redraw never flickers.
        dirty = true;
        if let Some(effect) = effect {
            perform(effect, &client, &tx, &focus_tx);
        }
        if state.quit {
            break Ok(());
        }
    };
    let _ = shutdown_tx.send(true);
    stop_input.store(true, Ordering::Relaxed);
    fetcher.abort();
    drop(terminal);
    // The input thread notices the flag within INPUT_POLL.
    let _ = tokio::task::spawn_blocking(move || input.join()).await;
    result
}

/// Starts the I/O an effect asks for; answers come back on `tx` as actions.
fn perform(
    effect: Effect,
    client: &Arc<Client>,
    tx: &mpsc::Sender<Action>,
    focus_tx: &watch::Sender<Option<String>>,
) {
    match effect {
        Effect::Focus(node) => {
            let _ = focus_tx.send(node);
        }
        Effect::Silence(body) => {
            let client = client.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx
                    .send(Action::Silenced(post_silence(&client, &body).await))
                    .await;
            });
        }
        Effect::Logs(request) => {
            let client = client.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let result = fetch::logs(&client, &request.path).await;
                let answer = logs::LogsAnswer {
                    generation: request.generation,
                    tail: request.tail,
                    result,
                };
                let _ = tx.send(Action::LogsFetched(Box::new(answer))).await;
            });
        }
        Effect::Recovery(request) => {
            let client = client.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let outcome = recovery::perform(&client, request).await;
                let _ = tx.send(Action::RecoveryAnswered(Box::new(outcome))).await;
            });
        }
        Effect::Batch(effects) => {
            for effect in effects {
                perform(effect, client, tx, focus_tx);
            }
        }
    }
}

/// The terminal's input, read on a thread of its own (crossterm's reads block).
fn read_input(tx: &mpsc::Sender<Event>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match crossterm::event::poll(INPUT_POLL) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(_) => return,
        }
        match crossterm::event::read() {
            Ok(event) => {
                if tx.blocking_send(event).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

async fn post_silence(client: &Client, body: &Value) -> Result<String, String> {
    let answer = client
        .post("/api/v1/silences", body)
        .await
        .and_then(unwrap_data)
        .map_err(|e| format!("silence failed: {e:#}"))?;
    let id = answer
        .get("silenceID")
        .or_else(|| answer.get("id"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    Ok(format!(
        "silence {id} created until {}",
        body["endsAt"].as_str().unwrap_or("?")
    ))
}

/// The `PostableSilence` that silences exactly `alert` (every label equal) for
/// `duration` from `now`; validated as `vigil silence add` validates its flags.
pub fn silence_body(
    alert: &Alert,
    duration: &str,
    comment: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Value> {
    let matchers: Vec<String> = alert
        .labels
        .iter()
        .map(|(name, value)| {
            Matcher {
                name: name.clone(),
                op: Op::Equal,
                value: value.clone(),
            }
            .to_string()
        })
        .collect();
    postable(
        &AddArgs {
            matchers,
            duration: duration.trim().to_owned(),
            comment: comment.to_owned(),
            author: None,
        },
        now,
    )
}

/// Raw mode, the alternate screen and mouse reporting while it lives; a panic hook
/// undoes them before the panic message prints.
struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    fn enter() -> anyhow::Result<Self> {
        enable_raw_mode().context("switching the terminal to raw mode")?;
        let mut stdout = std::io::stdout();
        if let Err(e) = execute!(stdout, EnterAlternateScreen, EnableMouseCapture) {
            restore_terminal();
            return Err(e).context("entering the alternate screen");
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        let terminal = match Terminal::new(CrosstermBackend::new(stdout)) {
            Ok(t) => t,
            Err(e) => {
                restore_terminal();
                return Err(e).context("setting up the terminal");
            }
        };
        Ok(Self { terminal })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = self.terminal.show_cursor();
        restore_terminal();
    }
}

/// Leaves raw mode, the alternate screen and mouse reporting; safe to call twice.
fn restore_terminal() {
    let _ = execute!(
        std::io::stdout(),
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = disable_raw_mode();
}

#[cfg(test)]
mod tests {
    /// `vigil up` may run the dashboard on a spawned task.
    #[test]
    fn run_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let args = crate::client::CollectorArgs {
            collector: "http://127.0.0.1:9".to_owned(),
            token_file: None,
            json: false,
        };
        let future = super::run(args);
        assert_send(&future);
    }
}
