//! The `?` overlay: every key, as nvitop, btop and k9s users expect them.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::overlay;

const KEYS: &[(&str, &str)] = &[
    ("↑ ↓  k j", "move the cursor (the mouse wheel too)"),
    ("PgUp PgDn g G", "page, first, last"),
    ("← →  h", "previous / next GPU in the node view"),
    ("Enter", "open its node (a click on the selected row too)"),
    ("Esc", "back to the fleet; clear the filter"),
    (
        "Tab ⇧Tab 1-5",
        "fleet, node, alerts, actions, logs (or a click)",
    ),
    ("/", "filter nodes by name or health (ok warn crit down)"),
    ("/  Enter", "logs: edit the query (tantivy syntax), search"),
    ("t", "logs: live tail on / off"),
    ("l", "logs of the selected node, GPU, alert or action"),
    ("s  r", "fleet: next sort column, reverse order"),
    ("s", "alerts: silence the selected alert"),
    ("a  x", "actions: approve, reject the selected one (y/n)"),
    ("K", "actions: kill switch on / off (stops all recovery)"),
    ("?", "this help"),
    ("q  Ctrl-C", "quit"),
];

pub fn render(frame: &mut Frame<'_>, area: Rect) {
    let rect = overlay(frame, area, 72, KEYS.len() as u16 + 4);
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut lines: Vec<Line<'static>> = KEYS
        .iter()
        .map(|(keys, what)| {
            Line::from(vec![
                Span::styled(format!("{keys:<15}"), bold),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::styled(
        "Esc or ? closes this",
        Style::new().add_modifier(Modifier::DIM),
    ));
    let block = Block::new()
        .borders(Borders::ALL)
        .title(Span::styled(" keys ", bold));
    frame.render_widget(Paragraph::new(lines).block(block), rect);
}
