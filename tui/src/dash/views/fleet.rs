//! The fleet table: one row per node. Only the rows on screen are built, so a frame
//! costs the same for ten nodes as for ten thousand.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{
    ago, celsius, dim, heading_style, health_style, level, pct, scroll_offset, selected_style,
    watts,
};
use crate::dash::state::{FleetEntry, HOT_GPU_C, SortKey, State};

/// Wider than this, the table adds the agent version and the firing alerts' names.
const WIDE: u16 = 120;
/// Per-GPU cells in the utilisation strip.
const MAX_STRIP: usize = 16;

/// The table's data rows (below its heading) and the first row shown.
pub fn rows_area(body: Rect, state: &State) -> (Rect, usize) {
    let rows = Rect {
        y: body.y + 1,
        height: body.height.saturating_sub(1),
        ..body
    };
    let offset = scroll_offset(state.fleet_ui.selected, usize::from(rows.height));
    (rows, offset)
}

struct Column {
    title: &'static str,
    sort: Option<SortKey>,
    width: Constraint,
}

pub fn render(frame: &mut Frame<'_>, body: Rect, state: &State) {
    if body.height == 0 {
        return;
    }
    if state.fleet.is_empty() {
        let text = if state.data.taken_at.is_some() {
            " no node has shipped to this collector yet"
        } else {
            " waiting for the collector ..."
        };
        frame.render_widget(Paragraph::new(Line::styled(text, dim())), body);
        return;
    }
    let wide = body.width >= WIDE;
    let strip = state
        .fleet
        .iter()
        .map(|e| e.node.gpus.len())
        .max()
        .unwrap_or(0)
        .clamp(4, MAX_STRIP) as u16;
    let mut columns = vec![
        col("HLTH", Some(SortKey::Health), Constraint::Length(4)),
        col("NODE", Some(SortKey::Name), Constraint::Min(10)),
        col("GPU", None, Constraint::Length(5)),
        col(
            "UTIL",
            Some(SortKey::Util),
            Constraint::Length(strip.max(4) + 5),
        ),
        col("TEMP", Some(SortKey::Temp), Constraint::Length(5)),
        col("POWER", Some(SortKey::Power), Constraint::Length(6)),
        col("CPU", Some(SortKey::Cpu), Constraint::Length(4)),
        col("MEM", Some(SortKey::Mem), Constraint::Length(4)),
        col("ALRT", Some(SortKey::Alerts), Constraint::Length(4)),
        col("SEEN", Some(SortKey::LastSeen), Constraint::Length(5)),
    ];
    if wide {
        columns[1].width = Constraint::Length(24);
        columns.push(col("AGENT", None, Constraint::Length(8)));
        columns.push(col("FIRING", None, Constraint::Fill(1)));
    }
    let sort = state.fleet_ui.sort.unwrap_or(SortKey::Health);
    let arrow = if state.fleet_ui.descending {
        "▲"
    } else {
        "▼"
    };
    let header = Row::new(columns.iter().map(|c| {
        if c.sort == Some(sort) {
            Cell::from(format!("{}{arrow}", c.title))
        } else {
            Cell::from(c.title)
        }
    }))
    .style(heading_style());

    let (rows_rect, offset) = rows_area(body, state);
    let shown = state
        .visible
        .iter()
        .enumerate()
        .skip(offset)
        .take(usize::from(rows_rect.height));
    let rows: Vec<Row<'_>> = shown
        .map(|(pos, &i)| {
            let row = fleet_row(&state.fleet[i], state, wide);
            if pos == state.fleet_ui.selected {
                row.style(selected_style())
            } else {
                row
            }
        })
        .collect();
    let widths: Vec<Constraint> = columns.iter().map(|c| c.width).collect();
    let table = Table::new(rows, widths).header(header).column_spacing(1);
    frame.render_widget(table, body);
    if state.visible.is_empty() {
        let msg = format!(" no node matches {:?}", state.fleet_ui.filter);
        frame.render_widget(Paragraph::new(Line::styled(msg, dim())), rows_rect);
    }
}

fn col(title: &'static str, sort: Option<SortKey>, width: Constraint) -> Column {
    Column { title, sort, width }
}

/// The node's name, marked `↻` while a recovery action is queued or runs on it.
fn name_cell(e: &FleetEntry) -> Cell<'_> {
    if e.recovering == 0 {
        return Cell::from(e.node.name.as_str());
    }
    Cell::from(Line::from(vec![
        Span::raw(e.node.name.as_str()),
        Span::styled(" ↻", Style::new().fg(Color::Yellow)),
    ]))
}

fn fleet_row<'a>(e: &'a FleetEntry, state: &State, wide: bool) -> Row<'a> {
    let node = &e.node;
    let strip: String = node
        .gpus
        .iter()
        .take(MAX_STRIP)
        .map(|g| level(g.util_pct, g.up))
        .collect();
    let gpus = if e.gpus_up == node.gpus.len() {
        format!("{}", node.gpus.len())
    } else {
        format!("{}/{}", e.gpus_up, node.gpus.len())
    };
    let lost_style = if e.gpus_up < node.gpus.len() {
        Style::new().fg(Color::Red)
    } else {
        Style::new()
    };
    let temp_style = if e.max_temp.is_some_and(|t| t >= HOT_GPU_C) {
        Style::new().fg(Color::Red)
    } else {
        Style::new()
    };
    let alerts = match (e.firing, e.pending) {
        (0, 0) => Cell::from("-"),
        (0, p) => Cell::from(format!("({p})")),
        (f, _) => Cell::from(Span::styled(format!("{f}!"), Style::new().fg(Color::Red))),
    };
    let mut cells = vec![
        Cell::from(Span::styled(e.health.label(), health_style(e.health))),
        name_cell(e),
        Cell::from(Span::styled(gpus, lost_style)),
        Cell::from(format!("{strip} {:>4}", pct(e.avg_util))),
        Cell::from(Span::styled(celsius(e.max_temp), temp_style)),
        Cell::from(format!("{:>6}", watts(e.power_w))),
        Cell::from(format!("{:>4}", pct(node.cpu_pct))),
        Cell::from(format!("{:>4}", pct(node.mem_pct))),
        alerts,
        Cell::from(ago(node.last_seen, state.now)),
    ];
    if wide {
        cells.push(Cell::from(node.agent_version.as_str()));
        let names: Vec<&str> = state
            .data
            .alerts
            .iter()
            .filter(|a| a.node == node.name && a.state == crate::dash::model::AlertState::Firing)
            .map(|a| a.name.as_str())
            .collect();
        cells.push(Cell::from(names.join(" ")));
    }
    Row::new(cells)
}
