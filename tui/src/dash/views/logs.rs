//! The logs view: the query line, a status line (how many records, the tail), the
//! records newest first and, where there is room, the selected record in full with its
//! attributes.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};

use super::{dim, heading_style, scroll_offset, selected_style, wrapped};
use crate::dash::logs::{LogRecord, LogsUi, SEARCH_SINCE, TAIL_EVERY_SECS};
use crate::dash::state::{Mode, State};
use crate::render::one_line;

/// Query line, status line, column titles.
const TOP_ROWS: u16 = 3;
/// The details pane needs a body this tall.
const DETAIL_MIN_BODY: u16 = 30;

/// The source column's width on a wide terminal.
const SOURCE_WIDE: u16 = 28;

/// The end of a path that is too long for `width` cells, `…` in front: the file
/// matters more than the directories above it.
fn path_end(path: &str, width: u16) -> String {
    let width = usize::from(width);
    let chars = path.chars().count();
    if chars <= width {
        return path.to_owned();
    }
    let tail: String = path.chars().skip(chars - width + 1).collect();
    format!("…{tail}")
}

/// The list and, where there is room, the details pane.
fn split(body: Rect) -> [Rect; 2] {
    let detail = if body.height >= DETAIL_MIN_BODY {
        (body.height / 3).min(14)
    } else {
        0
    };
    Layout::vertical([Constraint::Fill(1), Constraint::Length(detail)]).areas(body)
}

pub fn rows_area(body: Rect, state: &State) -> (Rect, usize) {
    let [list, _] = split(body);
    let top = TOP_ROWS.min(list.height);
    let rows = Rect {
        y: list.y + top,
        height: list.height - top,
        ..list
    };
    (
        rows,
        scroll_offset(state.logs_ui.selected, usize::from(rows.height)),
    )
}

fn severity_style(severity: &str) -> Style {
    match severity.to_ascii_lowercase().as_str() {
        "fatal" | "emerg" | "alert" | "crit" | "critical" | "err" | "error" => {
            Style::new().fg(Color::Red)
        }
        "warn" | "warning" => Style::new().fg(Color::Yellow),
        "debug" | "trace" => dim(),
        _ => Style::new(),
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn query_line(state: &State) -> Line<'static> {
    let ui = &state.logs_ui;
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut spans = vec![Span::styled(" query ", bold)];
    if state.mode == Mode::LogQuery {
        spans.push(Span::styled(
            ui.query.clone(),
            Style::new().add_modifier(Modifier::UNDERLINED),
        ));
        spans.push(Span::styled(
            "█",
            Style::new().add_modifier(Modifier::SLOW_BLINK),
        ));
    } else if ui.query.trim().is_empty() {
        spans.push(Span::styled("(every record; / to search)", dim()));
    } else {
        spans.push(Span::raw(ui.query.clone()));
    }
    if let Some(node) = &ui.node {
        spans.push(Span::styled("  node ", bold));
        spans.push(Span::raw(node.clone()));
    }
    Line::from(spans)
}

fn status_line(ui: &LogsUi) -> Line<'static> {
    let count = if !ui.searched {
        "not searched yet".to_owned()
    } else if ui.loading && ui.records.is_empty() {
        "searching ...".to_owned()
    } else if ui.records.is_empty() {
        format!("no matching records in the last {SEARCH_SINCE}")
    } else {
        let more = if ui.total > ui.records.len() as u64 {
            format!(" of {}", ui.total)
        } else {
            String::new()
        };
        format!(
            "{}{more} records · newest first · last {SEARCH_SINCE}",
            ui.records.len()
        )
    };
    let mut spans = vec![Span::raw(format!(" {count}")), Span::raw("  ·  ")];
    if ui.tail {
        spans.push(Span::styled(
            format!("● tail on ({TAIL_EVERY_SECS}s)"),
            Style::new().fg(Color::Green),
        ));
    } else {
        spans.push(Span::styled("○ tail off (t)", dim()));
    }
    if ui.loading && !ui.records.is_empty() {
        spans.push(Span::styled("  · updating ...", dim()));
    }
    Line::from(spans)
}

pub fn render(frame: &mut Frame<'_>, body: Rect, state: &State) {
    let ui = &state.logs_ui;
    let [list, details] = split(body);
    let top = Rect {
        height: TOP_ROWS.min(list.height).min(2),
        ..list
    };
    frame.render_widget(
        Paragraph::new(vec![query_line(state), status_line(ui)]),
        top,
    );
    let (rows_rect, offset) = rows_area(body, state);
    if list.height <= 2 {
        return;
    }
    let table_area = Rect {
        y: list.y + 2,
        height: list.height - 2,
        ..list
    };
    let wide = body.width >= 120;
    let rows: Vec<Row<'_>> = ui
        .records
        .iter()
        .enumerate()
        .skip(offset)
        .take(usize::from(rows_rect.height))
        .map(|(i, r)| {
            let time = r.timestamp.map_or_else(
                || "-".to_owned(),
                |t| {
                    let format = if wide {
                        "%m-%d %H:%M:%S%.3f"
                    } else {
                        "%H:%M:%S"
                    };
                    t.format(format).to_string()
                },
            );
            let source = if wide {
                path_end(&r.source, SOURCE_WIDE)
            } else {
                // The file name says enough where the path does not fit.
                r.source.rsplit('/').next().unwrap_or(&r.source).to_owned()
            };
            let row = Row::new(vec![
                Cell::from(time),
                Cell::from(or_dash(&r.node).to_owned()),
                Cell::from(Span::styled(
                    or_dash(&r.severity).to_owned(),
                    severity_style(&r.severity),
                )),
                Cell::from(or_dash(&source).to_owned()),
                Cell::from(one_line(&r.body)),
            ]);
            if i == ui.selected {
                row.style(selected_style())
            } else {
                row
            }
        })
        .collect();
    let widths = if wide {
        [
            Constraint::Length(18),
            Constraint::Length(16),
            Constraint::Length(8),
            Constraint::Length(SOURCE_WIDE),
            Constraint::Fill(1),
        ]
    } else {
        [
            Constraint::Length(8),
            Constraint::Length(11),
            Constraint::Length(5),
            Constraint::Length(9),
            Constraint::Fill(1),
        ]
    };
    let titles = [
        "TIME",
        "NODE",
        if wide { "SEVERITY" } else { "SEV" },
        "SOURCE",
        "LINE",
    ];
    let table = Table::new(rows, widths)
        .header(Row::new(titles).style(heading_style()))
        .column_spacing(1);
    frame.render_widget(table, table_area);
    if details.height > 0
        && let Some(record) = ui.selected_record()
    {
        render_details(frame, details, record);
    }
}

fn render_details(frame: &mut Frame<'_>, area: Rect, r: &LogRecord) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let time = r.timestamp.map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
    );
    let mut lines = vec![
        Line::from(vec![
            Span::styled("node ", dim()),
            Span::raw(or_dash(&r.node).to_owned()),
            Span::styled("  source ", dim()),
            Span::raw(or_dash(&r.source).to_owned()),
            Span::styled("  severity ", dim()),
            Span::styled(or_dash(&r.severity).to_owned(), severity_style(&r.severity)),
        ]),
        Line::raw(r.body.clone()),
    ];
    for (k, v) in &r.attributes {
        lines.push(Line::from(vec![
            Span::styled(format!("{k} "), dim()),
            Span::raw(one_line(v)),
        ]));
    }
    let block = Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(format!(" record · {time} "), bold));
    frame.render_widget(wrapped(lines).block(block), area);
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_paths_keep_their_end() {
        assert_eq!(super::path_end("/var/log/syslog", 20), "/var/log/syslog");
        assert_eq!(
            super::path_end("/tmp/abcdef/app/train.log", 12),
            "…p/train.log"
        );
    }
}
