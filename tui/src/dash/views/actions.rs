//! The recovery audit: what the collector decided for which alert and how it went,
//! newest first, the kill switch when it is engaged, the selected action's details,
//! and the prompt that confirms an approve, a reject or a flip of the kill switch.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};
use vigil_proto::actions::{Action as RecoveryAction, ActionState};

use super::{ago, dim, heading_style, overlay, scroll_offset, selected_style, wrapped};
use crate::actions::{action_logs_query, parse_rfc3339, result_summary, short_id};
use crate::dash::state::{Confirm, ConfirmPrompt, State};
use crate::render::one_line;

/// Wider than this, the table adds the alert, the decision and the attempt.
const WIDE: u16 = 120;

/// The kill switch's line (while engaged) and the rest of the body.
fn banner_split(body: Rect, state: &State) -> (Option<Rect>, Rect) {
    if !state.data.recovery.kill_switch.engaged || body.height < 2 {
        return (None, body);
    }
    let [banner, rest] = Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(body);
    (Some(banner), rest)
}

/// The list's share of what is left; the rest shows the selected action.
fn split(area: Rect) -> [Rect; 2] {
    let list = (area.height / 2).max(area.height.min(4));
    Layout::vertical([Constraint::Length(list), Constraint::Fill(1)]).areas(area)
}

pub fn rows_area(body: Rect, state: &State) -> (Rect, usize) {
    let (_, rest) = banner_split(body, state);
    let [list, _] = split(rest);
    let rows = Rect {
        y: list.y + 1,
        height: list.height.saturating_sub(1),
        ..list
    };
    (
        rows,
        scroll_offset(state.actions_ui.selected, usize::from(rows.height)),
    )
}

/// Colour by state; the state's word is always beside it.
fn state_style(state: ActionState) -> Style {
    match state {
        ActionState::AwaitingApproval => {
            Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD)
        }
        ActionState::Queued | ActionState::Dispatched => Style::new().fg(Color::Cyan),
        ActionState::Running => Style::new().fg(Color::Yellow),
        ActionState::Succeeded => Style::new().fg(Color::Green),
        ActionState::Failed | ActionState::Lost | ActionState::Refused => {
            Style::new().fg(Color::Red)
        }
        ActionState::Cancelled | ActionState::Recorded => dim(),
    }
}

fn state_span(a: &RecoveryAction) -> Span<'static> {
    Span::styled(a.state.as_str(), state_style(a.state))
}

pub fn render(frame: &mut Frame<'_>, body: Rect, state: &State) {
    let recovery = &state.data.recovery;
    if recovery.unsupported {
        let text = " this collector has no recovery actions API (an older version): \
                    nothing to show";
        frame.render_widget(wrapped(vec![Line::styled(text, dim())]), body);
        return;
    }
    let (banner, rest) = banner_split(body, state);
    if let Some(area) = banner {
        let text = format!(" ■ {} · no action starts · K releases", banner_text(state));
        frame.render_widget(
            Paragraph::new(Line::styled(
                text,
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            )),
            area,
        );
    }
    if recovery.actions.is_empty() {
        let text = if state.data.taken_at.is_some() {
            " no recovery actions recorded"
        } else {
            " waiting for the collector ..."
        };
        frame.render_widget(Paragraph::new(Line::styled(text, dim())), rest);
        return;
    }
    let [list, details] = split(rest);
    let (rows_rect, offset) = rows_area(body, state);
    let wide = body.width >= WIDE;
    let rows: Vec<Row<'_>> = recovery
        .actions
        .iter()
        .enumerate()
        .skip(offset)
        .take(usize::from(rows_rect.height))
        .map(|(i, a)| {
            let age = ago(parse_rfc3339(&a.created_at), state.now);
            let mut cells = vec![
                Cell::from(short_id(&a.id)),
                Cell::from(age),
                Cell::from(a.node.as_str()),
                Cell::from(a.script.as_str()),
            ];
            if wide {
                cells.push(Cell::from(a.alertname.as_str()));
                cells.push(Cell::from(a.decision.as_str()));
            }
            cells.push(Cell::from(state_span(a)));
            if wide {
                cells.push(Cell::from(a.attempt.to_string()));
            }
            cells.push(Cell::from(result_summary(a)));
            let row = Row::new(cells);
            if i == state.actions_ui.selected {
                row.style(selected_style())
            } else {
                row
            }
        })
        .collect();
    let (widths, titles) = if wide {
        (
            vec![
                Constraint::Length(8),
                Constraint::Length(6),
                Constraint::Length(20),
                Constraint::Length(18),
                Constraint::Length(24),
                Constraint::Length(16),
                Constraint::Length(17),
                Constraint::Length(3),
                Constraint::Fill(1),
            ],
            vec![
                "ID", "AGE", "NODE", "SCRIPT", "ALERT", "DECISION", "STATE", "TRY", "RESULT",
            ],
        )
    } else {
        (
            vec![
                Constraint::Length(8),
                Constraint::Length(6),
                Constraint::Length(12),
                Constraint::Length(12),
                Constraint::Length(17),
                Constraint::Fill(1),
            ],
            vec!["ID", "AGE", "NODE", "SCRIPT", "STATE", "RESULT"],
        )
    };
    let table = Table::new(rows, widths)
        .header(Row::new(titles).style(heading_style()))
        .column_spacing(1);
    frame.render_widget(table, list);
    if let Some(action) = state.selected_action() {
        render_details(frame, details, action, state);
    }
}

/// The kill switch in one short line: who, for how long, why.
fn banner_text(state: &State) -> String {
    let ks = &state.data.recovery.kill_switch;
    let mut text = "KILL SWITCH ENGAGED".to_owned();
    if !ks.by.is_empty() {
        text.push_str(&format!(" by {}", ks.by));
    }
    if let Some(t) = ks.since.as_deref().and_then(parse_rfc3339) {
        text.push_str(&format!(" for {}", ago(Some(t), state.now)));
    }
    if !ks.reason.is_empty() {
        text.push_str(&format!(": {}", one_line(&ks.reason)));
    }
    text
}

fn render_details(frame: &mut Frame<'_>, area: Rect, a: &RecoveryAction, state: &State) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let pairs = |m: &std::collections::BTreeMap<String, String>, skip: &str| {
        let text: Vec<String> = m
            .iter()
            .filter(|(k, _)| k.as_str() != skip)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if text.is_empty() {
            "-".to_owned()
        } else {
            text.join(" ")
        }
    };
    let field = |name: &str, value: String| {
        Line::from(vec![
            Span::styled(format!("{name:<9}"), dim()),
            Span::raw(value),
        ])
    };
    let hms = |t: &str| parse_rfc3339(t).map(|t| (t, t.format("%H:%M:%S").to_string()));
    let mut times = vec![match hms(&a.created_at) {
        Some((t, text)) => format!("created {text} ({} ago)", ago(Some(t), state.now)),
        None => format!("created {}", a.created_at),
    }];
    match (
        a.started_at.as_deref().and_then(hms),
        a.finished_at.as_deref().and_then(hms),
    ) {
        (Some((s, start)), Some((f, end))) => {
            times.push(format!("ran {start}-{end} ({})", ago(Some(s), f)));
        }
        (Some((s, start)), None) => {
            times.push(format!("started {start} ({} ago)", ago(Some(s), state.now)));
        }
        (None, Some((_, end))) => times.push(format!("finished {end}")),
        (None, None) => {}
    }
    if let Some(by) = &a.approved_by {
        times.push(format!("approved by {by}"));
    }
    let result = result_summary(a);
    let mut lines = vec![
        Line::from(vec![
            state_span(a),
            Span::raw(" "),
            Span::styled(a.script.clone(), bold),
            Span::raw(format!(" on {}", a.node)),
        ]),
        field("id", a.id.clone()),
        field(
            "alert",
            format!("{}  {}", a.alertname, pairs(&a.labels, "alertname")),
        ),
        field("args", pairs(&a.args, "")),
        field(
            "decision",
            format!(
                "{} (attempt {}): {}",
                a.decision.as_str(),
                a.attempt,
                one_line(&a.reason)
            ),
        ),
        field("times", times.join(" · ")),
    ];
    if !result.is_empty() {
        lines.push(field("result", result));
    }
    lines.push(field("logs", format!("{}  (l)", action_logs_query(a))));
    let title = if a.state == ActionState::AwaitingApproval {
        " details · a approve · x reject · Enter node · l logs "
    } else {
        " details · Enter node · l logs "
    };
    let block = Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(title, bold));
    frame.render_widget(wrapped(lines).block(block), area);
}

pub fn render_prompt(frame: &mut Frame<'_>, area: Rect, p: &ConfirmPrompt, state: &State) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let by = Line::from(vec![
        Span::styled("by       ", dim()),
        Span::raw(state.operator.clone()),
    ]);
    let (title, mut lines) = match &p.confirm {
        Confirm::Approve(a) | Confirm::Reject(a) => {
            let approve = matches!(p.confirm, Confirm::Approve(_));
            let (title, question, keys) = if approve {
                (" approve recovery action ", "Run", "y approve · n cancel")
            } else {
                (
                    " reject recovery action ",
                    "Do not run",
                    "y reject · n cancel",
                )
            };
            let args: Vec<String> = a.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let lines = vec![
                Line::from(vec![
                    Span::raw(format!("{question} ")),
                    Span::styled(a.script.clone(), bold),
                    Span::raw(format!(" on {}?", a.node)),
                ]),
                Line::from(vec![
                    Span::styled("for      ", dim()),
                    Span::raw(format!("{} {}", a.alertname, args.join(" "))),
                ]),
                Line::from(vec![
                    Span::styled("id       ", dim()),
                    Span::raw(a.id.clone()),
                ]),
                by,
                Line::styled(keys, dim()),
            ];
            (title, lines)
        }
        Confirm::KillSwitch { engage } => {
            let (title, what, keys) = if *engage {
                (
                    " engage the kill switch ",
                    "No recovery action will start on any node until it is released.".to_owned(),
                    "type a reason (optional) · Enter engage · Esc cancel",
                )
            } else {
                (
                    " release the kill switch ",
                    banner_text(state),
                    "type a reason (optional) · Enter release · Esc cancel",
                )
            };
            let lines = vec![
                Line::raw(what),
                Line::from(vec![
                    Span::styled("reason   ", dim()),
                    Span::styled(
                        format!("{} ", p.reason),
                        Style::new().add_modifier(Modifier::REVERSED),
                    ),
                ]),
                by,
                Line::styled(keys, dim()),
            ];
            (title, lines)
        }
    };
    if let Confirm::KillSwitch { engage: false } = p.confirm {
        lines.insert(
            1,
            Line::raw("Recovery actions run again as their alerts fire."),
        );
    }
    let rect = overlay(frame, area, 72, lines.len() as u16 + 2);
    let block = Block::new()
        .borders(Borders::ALL)
        .title(Span::styled(title, bold));
    frame.render_widget(wrapped(lines).block(block), rect);
}
