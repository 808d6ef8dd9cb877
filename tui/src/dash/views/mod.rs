//! Rendering: a pure function of [`State`]. One file per screen; this one lays out the
//! frame (tab line, collector-down banner, body, key line) and holds what the screens
//! share. Colour is never the only signal: every state also has a word or a symbol, and
//! only foreground colours and modifiers are used, so light and dark terminals both read.

mod actions;
mod alerts;
mod fleet;
mod help;
mod logs;
mod node;

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

use super::state::{Health, Link, Mode, State, View};
use crate::render::{compact_duration, one_line};

/// Draws the whole screen.
pub fn render(frame: &mut Frame<'_>, state: &State) {
    let screen = Screen::of(frame.area(), state);
    frame.render_widget(header(state, screen.header.width), screen.header);
    if let Some(area) = screen.banner {
        frame.render_widget(banner(state), area);
    }
    match state.view {
        View::Fleet => fleet::render(frame, screen.body, state),
        View::Node => node::render(frame, screen.body, state),
        View::Alerts => alerts::render(frame, screen.body, state),
        View::Actions => actions::render(frame, screen.body, state),
        View::Logs => logs::render(frame, screen.body, state),
    }
    frame.render_widget(footer(state), screen.footer);
    match &state.mode {
        Mode::Help => help::render(frame, frame.area()),
        Mode::Silence(prompt) => alerts::render_prompt(frame, frame.area(), prompt),
        Mode::Confirm(prompt) => actions::render_prompt(frame, frame.area(), prompt, state),
        Mode::Normal | Mode::Filter | Mode::LogQuery => {}
    }
}

/// Where the parts of the frame go; shared by [`render`] and mouse hit-testing.
pub struct Screen {
    pub header: Rect,
    pub banner: Option<Rect>,
    pub body: Rect,
    pub footer: Rect,
}

impl Screen {
    pub fn of(area: Rect, state: &State) -> Self {
        // A banner while the collector is away, and while some of its queries fail.
        let banner_rows = u16::from(
            !matches!(state.link, Link::Up) || !state.data.errors.is_empty() || logs_failed(state),
        );
        let header = Rect {
            height: 1.min(area.height),
            ..area
        };
        let banner = (banner_rows == 1 && area.height > 3).then(|| Rect {
            y: area.y + 1,
            height: 1,
            ..area
        });
        let top = 1 + if banner.is_some() { 1 } else { 0 };
        let footer = Rect {
            y: area.bottom().saturating_sub(1),
            height: 1.min(area.height),
            ..area
        };
        let body = Rect {
            y: area.y + top.min(area.height),
            height: area.height.saturating_sub(top + 1),
            ..area
        };
        Self {
            header,
            banner,
            body,
            footer,
        }
    }
}

/// Whether the logs view is open on a failed search.
fn logs_failed(state: &State) -> bool {
    state.view == View::Logs && state.logs_ui.error.is_some()
}

/// The row of the current view's list under a click at (`column`, `row`), if any.
pub fn row_at(state: &State, column: u16, row: u16) -> Option<usize> {
    let area = Rect::new(0, 0, state.size.0, state.size.1);
    let body = Screen::of(area, state).body;
    if !body.contains(Position::new(column, row)) {
        return None;
    }
    let (rows, offset) = match state.view {
        View::Fleet => fleet::rows_area(body, state),
        View::Node => node::rows_area(body, state),
        View::Alerts => alerts::rows_area(body, state),
        View::Actions => actions::rows_area(body, state),
        View::Logs => logs::rows_area(body, state),
    };
    if !rows.contains(Position::new(column, row)) {
        return None;
    }
    let index = offset + usize::from(row - rows.y);
    let len = match state.view {
        View::Fleet => state.visible.len(),
        View::Node => state.data.detail.as_ref().map_or(0, |d| d.gpus.len()),
        View::Alerts => state.data.alerts.len(),
        View::Actions => state.data.recovery.actions.len(),
        View::Logs => state.logs_ui.records.len(),
    };
    (index < len).then_some(index)
}

/// The view whose tab is under a click on the header line.
pub fn tab_at(state: &State, column: u16, row: u16) -> Option<View> {
    if row != 0 {
        return None;
    }
    let mut x = TITLE.chars().count() as u16;
    for view in View::ALL {
        let width = tab_label(state, view).chars().count() as u16;
        if (x..x + width).contains(&column) {
            return Some(view);
        }
        x += width;
    }
    None
}

const TITLE: &str = " vigil ";

fn tab_label(state: &State, view: View) -> String {
    match view {
        View::Alerts => {
            let firing = state
                .data
                .alerts
                .iter()
                .filter(|a| a.state == super::model::AlertState::Firing)
                .count();
            format!(" 3 Alerts ({firing}) ")
        }
        // Those that wait for an operator's approve.
        View::Actions => {
            let waiting = state
                .data
                .recovery
                .actions
                .iter()
                .filter(|a| a.state == vigil_proto::actions::ActionState::AwaitingApproval)
                .count();
            format!(" 4 Actions ({waiting}) ")
        }
        View::Fleet => format!(" 1 Fleet ({}) ", state.fleet.len()),
        View::Node => " 2 Node ".to_owned(),
        View::Logs => " 5 Logs ".to_owned(),
    }
}

fn header(state: &State, width: u16) -> Paragraph<'static> {
    let mut spans = vec![Span::styled(
        TITLE,
        Style::new().add_modifier(Modifier::BOLD),
    )];
    for view in View::ALL {
        let style = if view == state.view {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::new()
        };
        // Each label has a blank on both sides: tabs need no gap between them.
        spans.push(Span::styled(tab_label(state, view), style));
    }
    let (mark, style) = match state.link {
        Link::Up => ("● live", Style::new().fg(Color::Green)),
        Link::Connecting => ("○ connecting", Style::new().add_modifier(Modifier::DIM)),
        Link::Down { .. } => ("✕ offline", Style::new().fg(Color::Red)),
    };
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    let clock = format!(" {}", state.now.format("%H:%M:%S"));
    let with_url = format!("  {}{clock}", state.collector);
    // The collector's address only where it fits beside the tabs; the clock too.
    let room = usize::from(width).saturating_sub(used + mark.chars().count());
    let tail = if with_url.chars().count() <= room {
        with_url
    } else if clock.chars().count() <= room {
        clock
    } else {
        String::new()
    };
    spans.push(Span::styled(mark, style));
    spans.push(Span::styled(tail, Style::new().add_modifier(Modifier::DIM)));
    Paragraph::new(Line::from(spans))
}

fn banner(state: &State) -> Paragraph<'static> {
    let logs_error = state.logs_ui.error.as_ref().filter(|_| logs_failed(state));
    let text = match &state.link {
        Link::Up if logs_error.is_some() => {
            format!(
                " ! logs search failed: {}",
                one_line(logs_error.map_or("", |e| e))
            )
        }
        Link::Up => match state.data.errors.as_slice() {
            [] => String::new(),
            [only] => format!(" ! a query failed: {only}"),
            [first, rest @ ..] => format!(" ! {} queries failed: {first}", rest.len() + 1),
        },
        Link::Connecting => format!(" connecting to the collector at {} ...", state.collector),
        Link::Down { since, error } => {
            let kept = match state.data.taken_at {
                Some(t) => format!("showing data from {}", t.format("%H:%M:%S")),
                None => "no data yet".to_owned(),
            };
            format!(
                " ! collector unreachable for {} ({kept}; retrying): {error}",
                compact_duration((state.now - *since).num_seconds())
            )
        }
    };
    let style = match state.link {
        Link::Down { .. } => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Link::Up if logs_error.is_some() => Style::new().fg(Color::Red),
        Link::Up => Style::new().fg(Color::Yellow),
        Link::Connecting => Style::new().add_modifier(Modifier::DIM),
    };
    Paragraph::new(Line::styled(text, style))
}

fn footer(state: &State) -> Paragraph<'static> {
    if state.mode == Mode::LogQuery {
        return Paragraph::new(Line::styled(
            " Enter search · Esc stop editing · Backspace on an empty query drops the node",
            Style::new().add_modifier(Modifier::DIM),
        ));
    }
    if state.mode == Mode::Filter {
        return Paragraph::new(Line::from(vec![
            Span::styled("/", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(state.fleet_ui.filter.clone()),
            Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)),
            Span::styled(
                "  Enter keep · Esc clear",
                Style::new().add_modifier(Modifier::DIM),
            ),
        ]));
    }
    if let Some(notice) = &state.notice {
        let style = if notice.error {
            Style::new().fg(Color::Red)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        };
        return Paragraph::new(Line::styled(format!(" {}", notice.text), style));
    }
    let hints: &[(&str, &str)] = match state.view {
        View::Fleet => &[
            ("↑↓", "move"),
            ("Enter", "node"),
            ("/", "filter"),
            ("s", "sort"),
            ("r", "reverse"),
            ("Tab", "view"),
            ("?", "help"),
            ("q", "quit"),
        ],
        View::Node => &[
            ("↑↓", "GPU"),
            ("l", "logs"),
            ("Esc", "back"),
            ("Tab", "view"),
            ("?", "help"),
            ("q", "quit"),
        ],
        View::Alerts => &[
            ("↑↓", "move"),
            ("s", "silence"),
            ("Enter", "node"),
            ("l", "logs"),
            ("Tab", "view"),
            ("?", "help"),
            ("q", "quit"),
        ],
        View::Actions => &[
            ("↑↓", "move"),
            ("a", "approve"),
            ("x", "reject"),
            ("K", "kill switch"),
            ("Enter", "node"),
            ("l", "logs"),
            ("?", "help"),
            ("q", "quit"),
        ],
        View::Logs => &[
            ("↑↓", "move"),
            ("/", "query"),
            ("Enter", "search"),
            ("t", "tail"),
            ("Tab", "view"),
            ("?", "help"),
            ("q", "quit"),
        ],
    };
    let mut spans = Vec::new();
    for (key, what) in hints {
        spans.push(Span::styled(
            format!(" {key}"),
            Style::new().add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::raw(format!(" {what}")));
    }
    if state.view == View::Fleet && !state.fleet_ui.filter.is_empty() {
        spans.push(Span::styled(
            format!("  filter: {}", state.fleet_ui.filter),
            Style::new().add_modifier(Modifier::ITALIC),
        ));
    }
    Paragraph::new(Line::from(spans))
}

/// A centred box of at most `width`×`height`, cleared, for overlays.
fn overlay(frame: &mut Frame<'_>, area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    let rect = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, rect);
    rect
}

pub(super) fn health_style(health: Health) -> Style {
    match health {
        Health::Down => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Health::Critical => Style::new().fg(Color::Red),
        Health::Warning => Style::new().fg(Color::Yellow),
        Health::Ok => Style::new().fg(Color::Green),
    }
}

pub(super) fn selected_style() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

pub(super) fn heading_style() -> Style {
    Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
}

pub(super) fn dim() -> Style {
    Style::new().add_modifier(Modifier::DIM)
}

/// The first row shown so that `selected` is on screen in `rows` lines.
pub(super) fn scroll_offset(selected: usize, rows: usize) -> usize {
    if rows == 0 {
        0
    } else {
        selected.saturating_sub(rows - 1)
    }
}

/// `57%`, or `-` when unknown.
pub(super) fn pct(v: Option<f64>) -> String {
    match v.filter(|v| v.is_finite()) {
        Some(v) => format!("{v:.0}%"),
        None => "-".to_owned(),
    }
}

pub(super) fn celsius(v: Option<f64>) -> String {
    match v.filter(|v| v.is_finite()) {
        Some(v) => format!("{v:.0}°C"),
        None => "-".to_owned(),
    }
}

/// `570W`, `4.5kW`.
pub(super) fn watts(v: Option<f64>) -> String {
    match v.filter(|v| v.is_finite()) {
        Some(v) if v >= 9_999.5 => format!("{:.0}kW", v / 1000.0),
        Some(v) if v >= 999.5 => format!("{:.1}kW", v / 1000.0),
        Some(v) => format!("{v:.0}W"),
        None => "-".to_owned(),
    }
}

/// Bytes in binary units: `512B`, `3.2K`, `41.0G`.
pub(super) fn bytes(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_owned();
    }
    let units = ["B", "K", "M", "G", "T", "P"];
    let mut v = v;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0}{}", units[unit])
    } else {
        format!("{v:.1}{}", units[unit])
    }
}

/// How long ago, compactly; `-` when never.
pub(super) fn ago(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => compact_duration((now - t).num_seconds()),
        None => "-".to_owned(),
    }
}

/// A horizontal bar of `width` cells for `fraction` (0..=1), in eighths.
pub(super) fn bar(fraction: f64, width: usize) -> String {
    const EIGHTHS: [char; 8] = ['▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let eighths = (fraction * width as f64 * 8.0).round() as usize;
    let mut out = String::with_capacity(width * 3);
    out.extend(std::iter::repeat_n('█', eighths / 8));
    let mut used = eighths / 8;
    if !eighths.is_multiple_of(8) {
        out.push(EIGHTHS[eighths % 8 - 1]);
        used += 1;
    }
    out.extend(std::iter::repeat_n('·', width.saturating_sub(used)));
    out
}

/// One block character for a utilisation (`▁` idle .. `█` full), `?` unknown, `×` lost.
pub(super) fn level(util: Option<f64>, up: bool) -> char {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if !up {
        return '×';
    }
    match util.filter(|v| v.is_finite()) {
        Some(v) => LEVELS[((v.clamp(0.0, 100.0) / 100.0 * 7.0).round() as usize).min(7)],
        None => '?',
    }
}

/// A paragraph that wraps, for free text.
pub(super) fn wrapped(lines: Vec<Line<'static>>) -> Paragraph<'static> {
    Paragraph::new(lines).wrap(Wrap { trim: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_numbers() {
        assert_eq!(bar(0.5, 4), "██··");
        assert_eq!(bar(0.0, 3), "···");
        assert_eq!(bar(1.0, 2), "██");
        assert_eq!(bar(0.0625, 2), "▏·");
        assert_eq!(bar(0.25, 2), "▌·");
        assert_eq!(bar(f64::NAN, 2), "··");
        assert_eq!(watts(Some(570.4)), "570W");
        assert_eq!(watts(Some(4512.0)), "4.5kW");
        assert_eq!(watts(None), "-");
        assert_eq!(bytes(41.0 * 1024.0 * 1024.0 * 1024.0), "41.0G");
        assert_eq!(level(Some(0.0), true), '▁');
        assert_eq!(level(Some(100.0), true), '█');
        assert_eq!(level(Some(50.0), false), '×');
        assert_eq!(scroll_offset(3, 10), 0);
        assert_eq!(scroll_offset(12, 10), 3);
    }
}
