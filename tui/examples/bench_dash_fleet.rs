//! Renders the dashboard's fleet view for 1,000 nodes × 8 GPUs (with alerts on 5 % of
//! them) onto ratatui's TestBackend and prints the time per frame at three terminal
//! sizes: min, mean, median, p99 and max.
//!
//!     cargo run --release -p vigil-tui --example bench_dash_fleet [FRAMES]
//!
//! Target: under 5 ms per frame. Each frame first moves the cursor one row (so the
//! table scrolls and the diff has work to do), then draws the whole screen:
//! `Terminal::draw` with `vigil_tui::dash::render`, the buffer diff and the backend
//! write included. Also printed: how long taking in one polling round's snapshot
//! (health, filter and sort of every node) takes, which happens every 2 s, not per
//! frame.

use std::time::{Duration, Instant};

use chrono::{TimeZone as _, Utc};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use vigil_tui::dash::model::{Alert, AlertState, GpuRow, NodeRow, Snapshot};
use vigil_tui::dash::render;
use vigil_tui::dash::state::{Action, State, update};

const NODES: usize = 1000;
const GPUS: usize = 8;
const SIZES: [(u16, u16); 3] = [(80, 24), (160, 48), (240, 70)];

fn snapshot() -> Snapshot {
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    let nodes = (0..NODES)
        .map(|n| NodeRow {
            name: format!("gpu-node-{n:04}"),
            up: n % 97 != 0,
            last_seen: Some(now - chrono::Duration::seconds((n % 5) as i64)),
            agent_version: "0.1.0".to_owned(),
            gpus: (0..GPUS)
                .map(|g| {
                    let u = ((n * 31 + g * 17) % 101) as f64;
                    GpuRow {
                        index: g.to_string(),
                        up: (n + g) % 211 != 0,
                        util_pct: Some(u),
                        temp_c: Some(35.0 + u * 0.5),
                        power_w: Some(70.0 + u * 5.0),
                    }
                })
                .collect(),
            cpu_pct: Some((n % 100) as f64),
            mem_pct: Some(((n * 7) % 100) as f64),
        })
        .collect();
    let alerts = (0..NODES)
        .filter(|n| n % 20 == 0)
        .map(|n| {
            let node = format!("gpu-node-{n:04}");
            let name = if n % 40 == 0 {
                "GpuFellOffBus"
            } else {
                "GpuTemperatureHigh"
            };
            Alert {
                name: name.to_owned(),
                state: AlertState::Firing,
                node: node.clone(),
                severity: if n % 40 == 0 { "critical" } else { "warning" }.to_owned(),
                active_at: Some(now),
                value: "1".to_owned(),
                labels: [
                    ("alertname".to_owned(), name.to_owned()),
                    ("node".to_owned(), node),
                ]
                .into(),
                annotations: Default::default(),
            }
        })
        .collect();
    Snapshot {
        taken_at: Some(now),
        nodes,
        alerts,
        detail: None,
        recovery: Default::default(),
        errors: Vec::new(),
    }
}

fn summary(times: &mut [Duration]) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len() as f64;
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    format!(
        "min {:.3} ms  mean {:.3} ms  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        ms(times[0]),
        mean,
        ms(at(0.5)),
        ms(at(0.99)),
        ms(times[times.len() - 1])
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let frames: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200);
    let data = snapshot();
    let mut state = State::new("http://127.0.0.1:9436", data.taken_at.unwrap_or_default());
    let mut ingest = Vec::new();
    for _ in 0..20 {
        let copy = Box::new(data.clone());
        let start = Instant::now();
        update(&mut state, Action::Fetched(copy));
        ingest.push(start.elapsed());
    }
    println!(
        "fleet of {NODES} nodes × {GPUS} GPUs, {} firing alerts",
        data.alerts.len()
    );
    println!("take in a snapshot (every 2 s): {}", summary(&mut ingest));
    let mut worst_p99 = Duration::ZERO;
    for (w, h) in SIZES {
        update(&mut state, Action::Resize(w, h));
        update(&mut state, Action::Home);
        let mut terminal = Terminal::new(TestBackend::new(w, h))?;
        terminal.draw(|f| render(f, &state))?;
        let mut times = Vec::with_capacity(frames);
        for _ in 0..frames {
            let start = Instant::now();
            update(&mut state, Action::Down);
            terminal.draw(|f| render(f, &state))?;
            times.push(start.elapsed());
        }
        let p99 = {
            let mut sorted = times.clone();
            sorted.sort();
            sorted[((sorted.len() as f64 * 0.99) as usize).min(sorted.len() - 1)]
        };
        worst_p99 = worst_p99.max(p99);
        println!(
            "fleet view {w:>3}×{h:<3} {frames} frames: {}",
            summary(&mut times)
        );
    }
    let verdict = if worst_p99 < Duration::from_millis(5) {
        "under"
    } else {
        "OVER"
    };
    println!("target: a frame under 5 ms: p99 {verdict} target");
    Ok(())
}
