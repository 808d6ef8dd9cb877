//! [`update`]: the only code that changes the dashboard's [`State`], one [`Action`] at a
//! time, and the cursor and view moves it is made of.

use super::logs::gpu_query;
use super::recovery;
use super::state::{Action, Effect, Link, Mode, Notice, SilencePrompt, SortKey, State, View};

/// Rows a page key moves.
const PAGE_ROWS: usize = 10;

impl State {
    fn list_len(&self) -> usize {
        match self.view {
            View::Fleet => self.visible.len(),
            View::Node => self.data.detail.as_ref().map_or(0, |d| d.gpus.len()),
            View::Alerts => self.data.alerts.len(),
            View::Actions => self.data.recovery.actions.len(),
            View::Logs => self.logs_ui.records.len(),
        }
    }

    fn cursor(&mut self) -> &mut usize {
        match self.view {
            View::Fleet => &mut self.fleet_ui.selected,
            View::Node => &mut self.node_ui.selected_gpu,
            View::Alerts => &mut self.alerts_ui.selected,
            View::Actions => &mut self.actions_ui.selected,
            View::Logs => &mut self.logs_ui.selected,
        }
    }

    fn move_cursor(&mut self, delta: isize) {
        let len = self.list_len();
        let cursor = self.cursor();
        *cursor = cursor
            .saturating_add_signed(delta)
            .min(len.saturating_sub(1));
    }

    fn open_node(&mut self, name: String) -> Option<Effect> {
        // The details of another node stay until the fetcher answers; the view shows
        // only details whose node matches.
        if self.node_ui.node.as_deref() != Some(&name) {
            self.node_ui.selected_gpu = 0;
        }
        self.node_ui.node = Some(name.clone());
        self.view = View::Node;
        Some(Effect::Focus(Some(name)))
    }

    fn switch_to(&mut self, view: View) -> Option<Effect> {
        if view == View::Node {
            let name = self
                .node_ui
                .node
                .clone()
                .or_else(|| self.selected_entry().map(|e| e.node.name.clone()))?;
            return self.open_node(name);
        }
        let leaving_node = self.view == View::Node;
        self.view = view;
        let focus = leaving_node.then_some(Effect::Focus(None));
        // The logs view searches when first opened; later it keeps its records.
        let search = if view == View::Logs && !self.logs_ui.searched {
            self.run_log_query()
        } else {
            None
        };
        both(focus, search)
    }

    fn run_log_query(&mut self) -> Option<Effect> {
        match self.logs_ui.search(self.now) {
            Ok(request) => Some(Effect::Logs(request)),
            Err(e) => {
                self.logs_ui.error = Some(e);
                None
            }
        }
    }

    /// The logs view for `node` with `query`, searched afresh.
    fn open_logs(&mut self, node: Option<String>, query: String) -> Option<Effect> {
        let ui = &mut self.logs_ui;
        ui.node = node.filter(|n| !n.is_empty());
        ui.query = query;
        ui.records.clear();
        ui.total = 0;
        ui.selected = 0;
        ui.error = None;
        ui.searched = false;
        self.switch_to(View::Logs)
    }

    /// The node and the log query of what the current view has selected.
    fn logs_target(&self) -> Option<(String, String)> {
        let gpu = |g: Option<&String>| g.map(|g| gpu_query(g)).unwrap_or_default();
        match self.view {
            View::Fleet => Some((self.selected_entry()?.node.name.clone(), String::new())),
            View::Node => {
                let node = self.node_ui.node.clone()?;
                let index = self
                    .data
                    .detail
                    .as_ref()
                    .filter(|d| d.node == node)
                    .and_then(|d| d.gpus.get(self.node_ui.selected_gpu))
                    .map(|g| &g.index);
                Some((node, gpu(index)))
            }
            View::Alerts => {
                let alert = self.selected_alert()?;
                Some((alert.node.clone(), gpu(alert.labels.get("gpu"))))
            }
            // The script's output, wherever the agent shipped it from: the id is enough.
            View::Actions => Some((
                String::new(),
                crate::actions::action_logs_query(self.selected_action()?),
            )),
            View::Logs => None,
        }
    }

    fn cycle_view(&mut self, forward: bool) -> Option<Effect> {
        let at = View::ALL.iter().position(|v| *v == self.view).unwrap_or(0);
        let n = View::ALL.len();
        let mut next = if forward {
            (at + 1) % n
        } else {
            (at + n - 1) % n
        };
        // The node view needs a node: skip it when there is none to show.
        if View::ALL[next] == View::Node
            && self.node_ui.node.is_none()
            && self.selected_entry().is_none()
        {
            next = if forward {
                (next + 1) % n
            } else {
                (next + n - 1) % n
            };
        }
        self.switch_to(View::ALL[next])
    }
}

/// One effect, or both in order.
fn both(first: Option<Effect>, second: Option<Effect>) -> Option<Effect> {
    match (first, second) {
        (Some(a), Some(b)) => Some(Effect::Batch(vec![a, b])),
        (a, b) => a.or(b),
    }
}

/// Applies `action`; the effect, if any, is the event loop's to perform.
pub fn update(state: &mut State, action: Action) -> Option<Effect> {
    match action {
        Action::Tick(now) => {
            state.now = now;
            // The tail polls only while it is watched; it catches up when reopened.
            if state.view == View::Logs {
                return state.logs_ui.tail_poll(now).map(Effect::Logs);
            }
        }
        Action::Fetched(snapshot) => {
            state.link = Link::Up;
            state.set_snapshot(*snapshot);
        }
        Action::FetchFailed(error) => {
            let since = match &state.link {
                Link::Down { since, .. } => *since,
                _ => state.now,
            };
            state.link = Link::Down { since, error };
        }
        Action::Resize(w, h) => state.size = (w, h),
        Action::Up => state.move_cursor(-1),
        Action::Down => state.move_cursor(1),
        Action::PageUp => state.move_cursor(-(PAGE_ROWS as isize)),
        Action::PageDown => state.move_cursor(PAGE_ROWS as isize),
        Action::Home => *state.cursor() = 0,
        Action::End => *state.cursor() = state.list_len().saturating_sub(1),
        Action::Left if state.view == View::Node => state.move_cursor(-1),
        Action::Right if state.view == View::Node => state.move_cursor(1),
        Action::Left | Action::Right => {}
        Action::Click(row) => {
            if row >= state.list_len() {
                return None;
            }
            // In the logs view Enter searches again: a click only selects.
            if *state.cursor() == row && state.view != View::Logs {
                return update(state, Action::Enter);
            }
            *state.cursor() = row;
        }
        Action::Enter => match state.view {
            View::Fleet => {
                let name = state.selected_entry()?.node.name.clone();
                return state.open_node(name);
            }
            View::Alerts => {
                let node = state.selected_alert()?.node.clone();
                if state.fleet.iter().any(|e| e.node.name == node) {
                    return state.open_node(node);
                }
            }
            View::Actions => {
                let node = state.selected_action()?.node.clone();
                if state.fleet.iter().any(|e| e.node.name == node) {
                    return state.open_node(node);
                }
            }
            View::Logs => return state.run_log_query(),
            View::Node => {}
        },
        Action::Back => {
            state.notice = None;
            if state.view != View::Fleet {
                return state.switch_to(View::Fleet);
            }
            if !state.fleet_ui.filter.is_empty() {
                return update(state, Action::FilterClear);
            }
        }
        Action::NextView => return state.cycle_view(true),
        Action::PrevView => return state.cycle_view(false),
        Action::GoTo(view) => return state.switch_to(view),
        Action::ToggleHelp => {
            state.mode = match state.mode {
                Mode::Help => Mode::Normal,
                _ => Mode::Help,
            }
        }
        Action::StartFilter => {
            let effect = if state.view == View::Fleet {
                None
            } else {
                state.switch_to(View::Fleet)
            };
            state.mode = Mode::Filter;
            return effect;
        }
        Action::FilterChar(c) => {
            let keep = state.selected_entry().map(|e| e.node.name.clone());
            state.fleet_ui.filter.push(c);
            state.refresh_visible(keep.as_deref());
        }
        Action::FilterBackspace => {
            let keep = state.selected_entry().map(|e| e.node.name.clone());
            state.fleet_ui.filter.pop();
            state.refresh_visible(keep.as_deref());
        }
        Action::FilterDone => state.mode = Mode::Normal,
        Action::FilterClear => {
            let keep = state.selected_entry().map(|e| e.node.name.clone());
            state.fleet_ui.filter.clear();
            state.mode = Mode::Normal;
            state.refresh_visible(keep.as_deref());
        }
        Action::NextSort => {
            let at = SortKey::ALL
                .iter()
                .position(|k| Some(*k) == state.fleet_ui.sort)
                .map_or(1, |i| (i + 1) % SortKey::ALL.len());
            state.fleet_ui.sort = Some(SortKey::ALL[at]);
            state.fleet_ui.descending = false;
            let keep = state.selected_entry().map(|e| e.node.name.clone());
            state.refresh_visible(keep.as_deref());
        }
        Action::ReverseSort => {
            state.fleet_ui.descending = !state.fleet_ui.descending;
            let keep = state.selected_entry().map(|e| e.node.name.clone());
            state.refresh_visible(keep.as_deref());
        }
        Action::StartSilence => {
            if state.view != View::Alerts {
                return None;
            }
            let alert = state.selected_alert()?.clone();
            state.mode = Mode::Silence(Box::new(SilencePrompt {
                alert,
                duration: "2h".to_owned(),
                comment: "silenced from vigil dash".to_owned(),
                field: 0,
                error: None,
            }));
        }
        Action::PromptChar(c) => match &mut state.mode {
            Mode::Silence(p) => prompt_field(p).push(c),
            Mode::Confirm(p) if p.takes_text() => p.reason.push(c),
            _ => {}
        },
        Action::PromptBackspace => match &mut state.mode {
            Mode::Silence(p) => {
                prompt_field(p).pop();
            }
            Mode::Confirm(p) => {
                p.reason.pop();
            }
            _ => {}
        },
        Action::PromptNextField => {
            if let Mode::Silence(p) = &mut state.mode {
                p.field = (p.field + 1) % 2;
            }
        }
        Action::PromptSubmit => {
            let Mode::Silence(p) = &mut state.mode else {
                return None;
            };
            match super::silence_body(&p.alert, &p.duration, &p.comment, state.now) {
                Ok(body) => {
                    state.notice = Some(Notice {
                        text: format!("silencing {} ...", p.alert.name),
                        error: false,
                    });
                    state.mode = Mode::Normal;
                    return Some(Effect::Silence(body));
                }
                Err(e) => p.error = Some(format!("{e:#}")),
            }
        }
        Action::Cancel => state.mode = Mode::Normal,
        Action::Silenced(result) => {
            state.notice = Some(match result {
                Ok(text) => Notice { text, error: false },
                Err(text) => Notice { text, error: true },
            });
        }
        Action::StartLogQuery => {
            state.mode = Mode::LogQuery;
            if state.view != View::Logs {
                return state.switch_to(View::Logs);
            }
        }
        Action::LogQueryChar(c) => state.logs_ui.query.push(c),
        Action::LogQueryBackspace => {
            if state.logs_ui.query.pop().is_none() {
                state.logs_ui.node = None;
            }
        }
        Action::RunLogQuery => {
            state.mode = Mode::Normal;
            // Opening the view (or staying in it) searches afresh.
            state.logs_ui.searched = false;
            return state.switch_to(View::Logs);
        }
        Action::ToggleTail => {
            let ui = &mut state.logs_ui;
            ui.tail = !ui.tail;
            if !ui.tail {
                return None;
            }
            if !ui.searched {
                return state.run_log_query();
            }
            ui.polled_at = None;
            return ui.tail_poll(state.now).map(Effect::Logs);
        }
        Action::LogsForSelection => {
            let (node, query) = state.logs_target()?;
            return state.open_logs(Some(node), query);
        }
        Action::LogsFetched(answer) => state.logs_ui.apply(*answer),
        Action::AskApprove | Action::AskReject if state.view == View::Actions => {
            recovery::ask_decide(state, action == Action::AskApprove);
        }
        Action::AskKillSwitch if state.view == View::Actions => {
            recovery::ask_kill_switch(state);
        }
        Action::AskApprove | Action::AskReject | Action::AskKillSwitch => {}
        Action::Confirm => return recovery::confirmed(state),
        Action::RecoveryAnswered(outcome) => recovery::answered(state, *outcome),
        Action::Quit => state.quit = true,
    }
    None
}

fn prompt_field(p: &mut SilencePrompt) -> &mut String {
    p.error = None;
    if p.field == 0 {
        &mut p.duration
    } else {
        &mut p.comment
    }
}
