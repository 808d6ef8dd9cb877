//! Pending and firing alerts, the selected one's labels and annotations, and the
//! silence prompt.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};

use super::{ago, dim, heading_style, overlay, scroll_offset, selected_style, wrapped};
use crate::dash::model::{Alert, AlertState, severity_rank};
use crate::dash::state::{SilencePrompt, State};
use crate::render::one_line;

/// The list's share of the body; the rest shows the selected alert.
fn split(body: Rect) -> [Rect; 2] {
    let list = (body.height / 2).max(body.height.min(4));
    Layout::vertical([Constraint::Length(list), Constraint::Fill(1)]).areas(body)
}

pub fn rows_area(body: Rect, state: &State) -> (Rect, usize) {
    let [list, _] = split(body);
    let rows = Rect {
        y: list.y + 1,
        height: list.height.saturating_sub(1),
        ..list
    };
    (
        rows,
        scroll_offset(state.alerts_ui.selected, usize::from(rows.height)),
    )
}

fn state_span(a: &Alert) -> Span<'static> {
    match a.state {
        AlertState::Firing => Span::styled(
            "firing",
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        AlertState::Pending => Span::styled("pending", Style::new().fg(Color::Yellow)),
    }
}

fn severity_style(severity: &str) -> Style {
    match severity_rank(severity) {
        0 => Style::new().fg(Color::Red),
        1 => Style::new().fg(Color::Yellow),
        _ => Style::new(),
    }
}

pub fn render(frame: &mut Frame<'_>, body: Rect, state: &State) {
    let alerts = &state.data.alerts;
    if alerts.is_empty() {
        let text = if state.data.taken_at.is_some() {
            " no pending or firing alerts"
        } else {
            " waiting for the collector ..."
        };
        frame.render_widget(Paragraph::new(Line::styled(text, dim())), body);
        return;
    }
    let [list, details] = split(body);
    let (rows_rect, offset) = rows_area(body, state);
    let wide = body.width >= 120;
    let rows: Vec<Row<'_>> = alerts
        .iter()
        .enumerate()
        .skip(offset)
        .take(usize::from(rows_rect.height))
        .map(|(i, a)| {
            let mut cells = vec![
                Cell::from(state_span(a)),
                Cell::from(a.name.as_str()),
                Cell::from(a.node.as_str()),
                Cell::from(Span::styled(
                    a.severity.as_str(),
                    severity_style(&a.severity),
                )),
                Cell::from(ago(a.active_at, state.now)),
                Cell::from(one_line(
                    a.annotations.get("summary").map_or("", String::as_str),
                )),
            ];
            if !wide {
                cells.remove(3);
            }
            let row = Row::new(cells);
            if i == state.alerts_ui.selected {
                row.style(selected_style())
            } else {
                row
            }
        })
        .collect();
    let mut widths = vec![
        Constraint::Length(7),
        Constraint::Length(if wide { 30 } else { 22 }),
        Constraint::Length(if wide { 20 } else { 12 }),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Fill(1),
    ];
    let mut titles = vec!["STATE", "ALERT", "NODE", "SEVERITY", "FOR", "SUMMARY"];
    if !wide {
        widths.remove(3);
        titles.remove(3);
    }
    let table = Table::new(rows, widths)
        .header(Row::new(titles).style(heading_style()))
        .column_spacing(1);
    frame.render_widget(table, list);
    if let Some(alert) = state.selected_alert() {
        render_details(frame, details, alert);
    }
}

fn render_details(frame: &mut Frame<'_>, area: Rect, a: &Alert) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut lines = vec![Line::from(vec![
        state_span(a),
        Span::raw(" "),
        Span::styled(a.name.clone(), bold),
        Span::styled(
            format!(
                "  since {} · value {}",
                a.active_at.map_or("-".to_owned(), |t| t
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()),
                a.value
            ),
            dim(),
        ),
    ])];
    let labels: Vec<String> = a
        .labels
        .iter()
        .filter(|(k, _)| k.as_str() != "alertname")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    lines.push(Line::from(vec![
        Span::styled("labels ", dim()),
        Span::raw(labels.join(" ")),
    ]));
    // Summary and description first, then the rest in name order.
    let mut keys: Vec<&String> = a.annotations.keys().collect();
    keys.sort_by_key(|k| match k.as_str() {
        "summary" => 0,
        "description" => 1,
        _ => 2,
    });
    for k in keys {
        lines.push(Line::from(vec![
            Span::styled(format!("{k} "), dim()),
            Span::raw(one_line(&a.annotations[k])),
        ]));
    }
    let block = Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(" details · s silence · Enter node ", bold));
    frame.render_widget(wrapped(lines).block(block), area);
}

pub fn render_prompt(frame: &mut Frame<'_>, area: Rect, p: &SilencePrompt) {
    let rect = overlay(frame, area, 70, 9);
    let block = Block::new().borders(Borders::ALL).title(Span::styled(
        " silence alert ",
        Style::new().add_modifier(Modifier::BOLD),
    ));
    let field = |i: usize, name: &str, value: &str| {
        let style = if p.field == i {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new().add_modifier(Modifier::UNDERLINED)
        };
        Line::from(vec![
            Span::raw(format!("{name:<9}")),
            Span::styled(format!("{value} "), style),
        ])
    };
    let matchers: Vec<String> = p
        .alert
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut lines = vec![
        Line::from(vec![
            Span::styled("matches  ", dim()),
            Span::raw(matchers.join(" ")),
        ]),
        field(0, "for", &p.duration),
        field(1, "comment", &p.comment),
        Line::styled("Tab next field · Enter silence · Esc cancel", dim()),
    ];
    if let Some(e) = &p.error {
        lines.push(Line::styled(e.clone(), Style::new().fg(Color::Red)));
    }
    frame.render_widget(wrapped(lines).block(block), rect);
}
