//! One node: a row of gauges per GPU, the selected GPU's history, the host's CPU,
//! memory, disks and network, and the node's Xid timeline.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table};

use super::{
    ago, bar, bytes, celsius, dim, heading_style, health_style, pct, scroll_offset, selected_style,
    watts,
};
use crate::dash::model::{GpuDetail, HostStats, NodeDetail};
use crate::dash::state::{HOT_GPU_C, State};
use crate::render::compact_duration;

/// GPU table rows at most; more GPUs scroll.
const MAX_GPU_ROWS: u16 = 16;

fn detail(state: &State) -> Option<&NodeDetail> {
    let name = state.node_ui.node.as_deref()?;
    state.data.detail.as_ref().filter(|d| d.node == name)
}

/// The split of the body: title line, GPU table (with its heading), lower panels.
fn split(body: Rect, gpus: usize) -> [Rect; 3] {
    let table_rows = (gpus as u16).clamp(1, MAX_GPU_ROWS) + 1;
    // Keep at least 8 rows for the panels below when the screen is short.
    let table_rows = table_rows.min(body.height.saturating_sub(9).max(2));
    Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(table_rows),
        Constraint::Fill(1),
    ])
    .areas(body)
}

pub fn rows_area(body: Rect, state: &State) -> (Rect, usize) {
    let gpus = detail(state).map_or(0, |d| d.gpus.len());
    let [_, table, _] = split(body, gpus);
    let rows = Rect {
        y: table.y + 1,
        height: table.height.saturating_sub(1),
        ..table
    };
    let offset = scroll_offset(state.node_ui.selected_gpu, usize::from(rows.height));
    (rows, offset)
}

pub fn render(frame: &mut Frame<'_>, body: Rect, state: &State) {
    let Some(name) = state.node_ui.node.as_deref() else {
        frame.render_widget(Paragraph::new(Line::styled(" no node chosen", dim())), body);
        return;
    };
    let entry = state.focused_entry();
    let mut title = vec![Span::styled(
        format!(" {name} "),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    match entry {
        Some(e) => {
            title.push(Span::styled(e.health.label(), health_style(e.health)));
            title.push(Span::styled(
                format!(
                    " · agent {} · {}/{} GPUs up · seen {} ago · {} firing",
                    if e.node.agent_version.is_empty() {
                        "?"
                    } else {
                        &e.node.agent_version
                    },
                    e.gpus_up,
                    e.node.gpus.len(),
                    ago(e.node.last_seen, state.now),
                    e.firing
                ),
                dim(),
            ));
        }
        None => title.push(Span::styled("not in the registry", dim())),
    }
    let Some(detail) = detail(state) else {
        let [head, rest, _] = split(body, 1);
        frame.render_widget(Paragraph::new(Line::from(title)), head);
        frame.render_widget(
            Paragraph::new(Line::styled(" loading this node's details ...", dim())),
            rest,
        );
        return;
    };
    let [head, table, lower] = split(body, detail.gpus.len());
    frame.render_widget(Paragraph::new(Line::from(title)), head);
    render_gpus(frame, table, state, detail);

    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(lower);
    let gpu = detail.gpus.get(state.node_ui.selected_gpu);
    render_history(frame, left, gpu, detail.history_secs);
    let host_rows = host_lines(&detail.host, right.width).len() as u16 + 2;
    let [host, xids] = Layout::vertical([
        Constraint::Length(host_rows.min(right.height.saturating_sub(3).max(3))),
        Constraint::Fill(1),
    ])
    .areas(right);
    frame.render_widget(
        Paragraph::new(host_lines(&detail.host, right.width)).block(titled(" host ")),
        host,
    );
    render_xids(frame, xids, state, detail);
}

fn titled(title: &str) -> Block<'static> {
    Block::new().borders(Borders::ALL).title(Span::styled(
        title.to_owned(),
        Style::new().add_modifier(Modifier::BOLD),
    ))
}

fn render_gpus(frame: &mut Frame<'_>, area: Rect, state: &State, detail: &NodeDetail) {
    let wide = area.width >= 120;
    let gauge = if wide { 14 } else { 6 };
    let mut widths = vec![
        Constraint::Length(3),
        Constraint::Length(gauge + 5),
        Constraint::Length(gauge + 6),
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(4),
        Constraint::Fill(1),
    ];
    let mut titles = vec![
        "GPU", "UTIL", "MEM", "TEMP", "POWER", "SM", "ECC", "RMAP", "XID", "THROTTLE",
    ];
    if wide {
        widths.insert(4, Constraint::Length(5));
        titles.insert(4, "MTEMP");
        widths.insert(7, Constraint::Length(5));
        titles.insert(7, "MCLK");
    }
    let (rows_rect, offset) = (
        Rect {
            y: area.y + 1,
            height: area.height.saturating_sub(1),
            ..area
        },
        scroll_offset(
            state.node_ui.selected_gpu,
            usize::from(area.height.saturating_sub(1)),
        ),
    );
    let rows: Vec<Row<'_>> = detail
        .gpus
        .iter()
        .enumerate()
        .skip(offset)
        .take(usize::from(rows_rect.height))
        .map(|(i, g)| {
            let row = gpu_row(g, usize::from(gauge), wide);
            if i == state.node_ui.selected_gpu {
                row.style(selected_style())
            } else {
                row
            }
        })
        .collect();
    let table = Table::new(rows, widths)
        .header(Row::new(titles).style(heading_style()))
        .column_spacing(1);
    frame.render_widget(table, area);
}

fn opt(v: Option<f64>) -> String {
    match v.filter(|v| v.is_finite()) {
        Some(v) => format!("{v:.0}"),
        None => "-".to_owned(),
    }
}

fn gpu_row(g: &GpuDetail, gauge: usize, wide: bool) -> Row<'_> {
    if !g.up {
        let lost = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
        let mut cells = vec![
            Cell::from(g.index.as_str()),
            Cell::from(Span::styled("LOST", lost)),
        ];
        cells.extend((0..if wide { 9 } else { 7 }).map(|_| Cell::from("-")));
        cells.push(Cell::from(Span::styled(
            "fell off the bus: NVML does not answer",
            lost,
        )));
        return Row::new(cells);
    }
    let util = g.util_pct.unwrap_or(f64::NAN);
    let mem_fraction = match (g.mem_used_mib, g.mem_total_mib) {
        (Some(u), Some(t)) if t > 0.0 => u / t,
        _ => f64::NAN,
    };
    let mem_text = match g.mem_total_mib {
        Some(t) if t > 0.0 => format!("{:>4.0}%", mem_fraction * 100.0),
        _ => "    -".to_owned(),
    };
    let hot = g.temp_c.is_some_and(|t| t >= HOT_GPU_C);
    let ecc = format!("{}/{}", opt(g.ecc_sbe_volatile), opt(g.ecc_dbe_volatile));
    let ecc_bad = g.ecc_dbe_volatile.is_some_and(|v| v > 0.0);
    let remap_bad =
        g.remap_failure.is_some_and(|v| v > 0.0) || g.remap_pending.is_some_and(|v| v > 0.0);
    let remap = format!(
        "{}/{}{}",
        opt(g.remapped_correctable),
        opt(g.remapped_uncorrectable),
        if remap_bad { "!" } else { "" }
    );
    let xid = match g.last_xid.filter(|x| *x > 0.0) {
        Some(last) => format!("{}:{last:.0}", g.xid_total),
        None => format!("{}", g.xid_total),
    };
    let red = |bad: bool| {
        if bad {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        }
    };
    let throttle = if g.throttle.is_empty() {
        Span::styled("-", dim())
    } else {
        Span::styled(g.throttle.join(","), Style::new().fg(Color::Yellow))
    };
    let mut cells = vec![
        Cell::from(g.index.as_str()),
        Cell::from(format!(
            "{}{:>5}",
            bar(util / 100.0, gauge),
            pct(g.util_pct)
        )),
        Cell::from(format!("{}{mem_text}", bar(mem_fraction, gauge))),
        Cell::from(Span::styled(celsius(g.temp_c), red(hot))),
        Cell::from(format!("{:>5}", watts(g.power_w))),
        Cell::from(format!("{:>5}", opt(g.sm_clock_mhz))),
        Cell::from(Span::styled(ecc, red(ecc_bad))),
        Cell::from(Span::styled(remap, red(remap_bad))),
        Cell::from(Span::styled(xid, red(g.xid_total > 0.0))),
        Cell::from(throttle),
    ];
    if wide {
        cells.insert(4, Cell::from(celsius(g.mem_temp_c)));
        cells.insert(7, Cell::from(format!("{:>5}", opt(g.mem_clock_mhz))));
    }
    Row::new(cells)
}

/// The selected GPU's charts, one per metric, splitting the height between them.
fn render_history(frame: &mut Frame<'_>, area: Rect, gpu: Option<&GpuDetail>, secs: i64) {
    let Some(gpu) = gpu else {
        frame.render_widget(titled(" history "), area);
        return;
    };
    let span = if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        compact_duration(secs)
    };
    let block = titled(&format!(" GPU {} · last {span} ", gpu.index));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let h = &gpu.history;
    let mem_total = gpu.mem_total_mib.unwrap_or(0.0);
    let charts: [(&str, &[f64], f64, String); 6] = [
        ("util", &h.util_pct, 100.0, pct(gpu.util_pct)),
        (
            "mem",
            &h.mem_used_mib,
            mem_total,
            match gpu.mem_used_mib {
                Some(m) => bytes(m * 1024.0 * 1024.0),
                None => "-".to_owned(),
            },
        ),
        ("temp", &h.temp_c, 100.0, celsius(gpu.temp_c)),
        (
            "power",
            &h.power_w,
            max_of(&h.power_w).max(100.0),
            watts(gpu.power_w),
        ),
        (
            "clock",
            &h.sm_clock_mhz,
            max_of(&h.sm_clock_mhz).max(100.0),
            opt(gpu.sm_clock_mhz),
        ),
        (
            "thrtl",
            &h.throttle_reasons,
            4.0,
            format!("{}", gpu.throttle.len()),
        ),
    ];
    if inner.height == 0 {
        return;
    }
    let shown = charts.len().min(usize::from(inner.height));
    let rows = Layout::vertical(vec![Constraint::Fill(1); shown]).split(inner);
    for ((label, values, max, now), row) in charts.iter().zip(rows.iter()) {
        let [name, chart, value] = Layout::horizontal([
            Constraint::Length(6),
            Constraint::Fill(1),
            Constraint::Length(7),
        ])
        .areas(*row);
        frame.render_widget(Paragraph::new(Line::styled(*label, dim())), name);
        frame.render_widget(
            Paragraph::new(Line::from(format!("{now:>7}"))),
            Rect { height: 1, ..value },
        );
        // The newest samples that fit, scaled to the metric's range.
        let take = usize::from(chart.width);
        let tail = &values[values.len().saturating_sub(take)..];
        let scale = if *max > 0.0 { 1000.0 / max } else { 0.0 };
        let data: Vec<Option<u64>> = tail
            .iter()
            .map(|v| v.is_finite().then(|| (v.max(0.0) * scale).round() as u64))
            .collect();
        frame.render_widget(Sparkline::default().data(data).max(1000), chart);
    }
}

fn max_of(values: &[f64]) -> f64 {
    values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
}

fn host_lines(host: &HostStats, width: u16) -> Vec<Line<'static>> {
    let gauge = usize::from(width.saturating_sub(30).clamp(4, 30));
    let mut lines = Vec::new();
    let cpu = host.cpu_pct.unwrap_or(f64::NAN);
    lines.push(Line::from(format!(
        "cpu  {}{:>5}  load {}",
        bar(cpu / 100.0, gauge),
        pct(host.cpu_pct),
        host.load1.map_or("-".to_owned(), |l| format!("{l:.1}"))
    )));
    if let (Some(total), Some(avail)) = (host.mem_total_bytes, host.mem_available_bytes) {
        let used = total - avail;
        lines.push(Line::from(format!(
            "mem  {}{:>5}  {}/{}",
            bar(used / total, gauge),
            pct(Some(used / total * 100.0)),
            bytes(used),
            bytes(total)
        )));
    }
    lines.push(Line::from(format!(
        "disk read {}/s write {}/s",
        host.disk_read_bps.map_or("-".to_owned(), bytes),
        host.disk_write_bps.map_or("-".to_owned(), bytes)
    )));
    for fs in host.filesystems.iter().take(3) {
        let used = fs.size_bytes - fs.avail_bytes;
        lines.push(Line::from(format!(
            "fs   {:<10} {:>5} of {}",
            truncate(&fs.mountpoint, 10),
            pct(Some(used / fs.size_bytes * 100.0)),
            bytes(fs.size_bytes)
        )));
    }
    for net in host.networks.iter().take(2) {
        lines.push(Line::from(format!(
            "net  {:<8} rx {}/s tx {}/s",
            truncate(&net.device, 8),
            bytes(net.rx_bps),
            bytes(net.tx_bps)
        )));
    }
    lines
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

fn render_xids(frame: &mut Frame<'_>, area: Rect, state: &State, detail: &NodeDetail) {
    let block = titled(" Xid timeline · 1h ");
    let lines: Vec<Line<'static>> = if detail.xid_events.is_empty() {
        vec![Line::styled("no Xid errors", dim())]
    } else {
        detail
            .xid_events
            .iter()
            .map(|e| {
                Line::from(vec![
                    Span::raw(format!("{} ", e.at.format("%H:%M"))),
                    Span::styled(
                        format!("GPU {} Xid {}", e.gpu, e.xid),
                        Style::new().fg(Color::Red),
                    ),
                    Span::raw(format!(
                        " ×{} ({} ago)",
                        e.count,
                        compact_duration((state.now - e.at).num_seconds())
                    )),
                ])
            })
            .collect()
    };
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
