//! Input: terminal events to [`Action`]s. What a key means depends on the mode (typing
//! a filter, a silence or a kill switch's reason is not navigating) and, for clicks, on
//! where the views put their rows.

use crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};

use super::state::{Action, Mode, State, View};
use super::views;

pub fn action_for(event: &Event, state: &State) -> Option<Action> {
    match event {
        Event::Key(key) if key.kind != KeyEventKind::Release => key_action(key, state),
        Event::Mouse(mouse) => mouse_action(mouse, state),
        Event::Resize(w, h) => Some(Action::Resize(*w, *h)),
        _ => None,
    }
}

fn key_action(key: &KeyEvent, state: &State) -> Option<Action> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    // Raw mode delivers Ctrl-C as a key: it always quits.
    if ctrl && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    match &state.mode {
        Mode::Help => match key.code {
            KeyCode::Esc | KeyCode::Char('?' | 'q') | KeyCode::F(1) => Some(Action::ToggleHelp),
            _ => None,
        },
        Mode::Filter => match key.code {
            KeyCode::Enter => Some(Action::FilterDone),
            KeyCode::Esc => Some(Action::FilterClear),
            KeyCode::Backspace => Some(Action::FilterBackspace),
            KeyCode::Up => Some(Action::Up),
            KeyCode::Down => Some(Action::Down),
            KeyCode::Char(c) if !ctrl => Some(Action::FilterChar(c)),
            _ => None,
        },
        Mode::LogQuery => match key.code {
            KeyCode::Enter => Some(Action::RunLogQuery),
            KeyCode::Esc => Some(Action::Cancel),
            KeyCode::Backspace => Some(Action::LogQueryBackspace),
            KeyCode::Char(c) if !ctrl => Some(Action::LogQueryChar(c)),
            _ => None,
        },
        Mode::Silence(_) => match key.code {
            KeyCode::Enter => Some(Action::PromptSubmit),
            KeyCode::Esc => Some(Action::Cancel),
            KeyCode::Backspace => Some(Action::PromptBackspace),
            KeyCode::Tab | KeyCode::BackTab => Some(Action::PromptNextField),
            KeyCode::Char(c) if !ctrl => Some(Action::PromptChar(c)),
            _ => None,
        },
        // Approve and reject take y or n; the kill switch takes a typed reason.
        Mode::Confirm(prompt) if prompt.takes_text() => match key.code {
            KeyCode::Enter => Some(Action::Confirm),
            KeyCode::Esc => Some(Action::Cancel),
            KeyCode::Backspace => Some(Action::PromptBackspace),
            KeyCode::Char(c) if !ctrl => Some(Action::PromptChar(c)),
            _ => None,
        },
        Mode::Confirm(_) => match key.code {
            KeyCode::Char('y' | 'Y') | KeyCode::Enter => Some(Action::Confirm),
            KeyCode::Char('n' | 'N' | 'q') | KeyCode::Esc => Some(Action::Cancel),
            _ => None,
        },
        Mode::Normal => normal_key(key, state, ctrl),
    }
}

fn normal_key(key: &KeyEvent, state: &State, ctrl: bool) -> Option<Action> {
    let action = match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('?') | KeyCode::F(1) => Action::ToggleHelp,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::Char('b') if ctrl => Action::PageUp,
        KeyCode::Char('f') if ctrl => Action::PageDown,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Action::Home,
        KeyCode::End | KeyCode::Char('G') => Action::End,
        // `l`: the logs of what is selected (a node, its GPU, an alert).
        KeyCode::Char('l') if state.view != View::Logs => Action::LogsForSelection,
        KeyCode::Left | KeyCode::Char('h') => Action::Left,
        KeyCode::Right => Action::Right,
        KeyCode::Enter => Action::Enter,
        KeyCode::Esc => Action::Back,
        KeyCode::Tab => Action::NextView,
        KeyCode::BackTab => Action::PrevView,
        KeyCode::Char('1') => Action::GoTo(View::Fleet),
        KeyCode::Char('2') => Action::GoTo(View::Node),
        KeyCode::Char('3') => Action::GoTo(View::Alerts),
        KeyCode::Char('4') => Action::GoTo(View::Actions),
        KeyCode::Char('5') => Action::GoTo(View::Logs),
        KeyCode::Char('/') if state.view == View::Logs => Action::StartLogQuery,
        KeyCode::Char('/') => Action::StartFilter,
        KeyCode::Char('t') if state.view == View::Logs => Action::ToggleTail,
        KeyCode::Char('s') if state.view == View::Alerts => Action::StartSilence,
        KeyCode::Char('s') if state.view == View::Fleet => Action::NextSort,
        KeyCode::Char('r') if state.view == View::Fleet => Action::ReverseSort,
        KeyCode::Char('a') if state.view == View::Actions => Action::AskApprove,
        KeyCode::Char('x') if state.view == View::Actions => Action::AskReject,
        KeyCode::Char('K') if state.view == View::Actions => Action::AskKillSwitch,
        _ => return None,
    };
    Some(action)
}

fn mouse_action(mouse: &MouseEvent, state: &State) -> Option<Action> {
    if state.mode != Mode::Normal {
        return None;
    }
    match mouse.kind {
        MouseEventKind::ScrollUp => Some(Action::Up),
        MouseEventKind::ScrollDown => Some(Action::Down),
        MouseEventKind::Down(MouseButton::Left) => {
            if let Some(view) = views::tab_at(state, mouse.column, mouse.row) {
                return Some(Action::GoTo(view));
            }
            views::row_at(state, mouse.column, mouse.row).map(Action::Click)
        }
        _ => None,
    }
}
