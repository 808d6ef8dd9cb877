//! Prometheus loading the same history by scraping a synthetic exporter.
//!
//! Each simulated node is one scrape target, on its own port of the exporter (Prometheus
//! pools connections per host and port, so a target on a shared port could be scraped
//! over any of the pool's connections); every scrape
//! of a target serves that node's next 1-second step, with explicit timestamps starting
//! an hour back, so Prometheus (with `honor_timestamps`) ingests an hour of history in
//! `steps × scrape_interval`. Its head accepts old samples because it has no blocks yet
//! and the history lies within the head's appendable window. A step counts as taken only
//! when Prometheus asks again on the same keep-alive connection (it reuses a connection
//! only after reading the whole body; a timed-out scrape closes it), otherwise the same
//! step is served again — an exact duplicate that Prometheus ignores if it had in fact
//! ingested it — so no step is lost to a slow scrape. Once a node's steps are
//! served its target answers with an empty exposition: series with explicit timestamps
//! get no staleness markers, so nothing but the scrape's own `up`/`scrape_*` series
//! grows afterwards.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::fleet::{Fleet, NodeSim, TextWriter};
use crate::{ChildGuard, free_port, http_get};

struct ServedNode {
    sim: NodeSim,
    writer: TextWriter,
    /// The connection the current step was last served on, until Prometheus confirms it.
    pending_on: Option<u64>,
}

struct ExporterState {
    nodes: Vec<Mutex<ServedNode>>,
    steps: u64,
    t0_ms: i64,
    served_steps: AtomicU64,
    connections: AtomicU64,
    stop: AtomicBool,
}

/// The synthetic exporter: serves node `i`'s next step on `addrs[i]`.
pub struct Exporter {
    pub addrs: Vec<SocketAddr>,
    state: Arc<ExporterState>,
    accept: Vec<std::thread::JoinHandle<()>>,
}

impl Exporter {
    pub fn start(fleet: &Fleet, nodes: usize, steps: u64, t0_ms: i64) -> anyhow::Result<Self> {
        let state = Arc::new(ExporterState {
            nodes: (0..nodes)
                .map(|i| {
                    let sim = fleet.node(i);
                    let writer = sim.text_writer();
                    Mutex::new(ServedNode {
                        sim,
                        writer,
                        pending_on: None,
                    })
                })
                .collect(),
            steps,
            t0_ms,
            served_steps: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let mut addrs = Vec::with_capacity(nodes);
        let mut accept = Vec::with_capacity(nodes);
        for node in 0..nodes {
            let listener = TcpListener::bind("127.0.0.1:0").context("binding the exporter")?;
            addrs.push(listener.local_addr()?);
            let accept_state = Arc::clone(&state);
            accept.push(std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if accept_state.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let connection = accept_state.connections.fetch_add(1, Ordering::Relaxed);
                    let state = Arc::clone(&accept_state);
                    std::thread::spawn(move || {
                        let _ = serve_connection(stream, node, connection, &state);
                    });
                }
            }));
        }
        Ok(Self {
            addrs,
            state,
            accept,
        })
    }

    /// Steps Prometheus has taken so far, over all nodes.
    pub fn served_steps(&self) -> u64 {
        self.state.served_steps.load(Ordering::Relaxed)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        // Wake the accept loops so they see the flag.
        for addr in &self.addrs {
            let _ = TcpStream::connect_timeout(addr, Duration::from_millis(200));
        }
        for h in self.accept.drain(..) {
            let _ = h.join();
        }
    }
}

/// HTTP/1.1 keep-alive: Prometheus reuses one connection per target.
fn serve_connection(
    mut stream: TcpStream,
    node: usize,
    connection: u64,
    state: &ExporterState,
) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    let mut body = String::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 || state.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let path = head.split_whitespace().nth(1).unwrap_or("");
        body.clear();
        let status = match state.nodes.get(node).filter(|_| path == "/metrics") {
            Some(node) => {
                let mut node = node.lock().unwrap_or_else(|p| p.into_inner());
                let ServedNode {
                    sim,
                    writer,
                    pending_on,
                } = &mut *node;
                if *pending_on == Some(connection) {
                    // Asked again on the connection that carried the step: it was read.
                    sim.advance();
                    state.served_steps.fetch_add(1, Ordering::Relaxed);
                    *pending_on = None;
                }
                let step = sim.step();
                if step < state.steps {
                    writer.write(sim, state.t0_ms + step as i64 * 1000, &mut body);
                    *pending_on = Some(connection);
                }
                "200 OK"
            }
            None => "404 Not Found",
        };
        let header = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(header.as_bytes())?;
        stream.write_all(body.as_bytes())?;
    }
}

/// A Prometheus process with its own storage directory and port.
pub struct Prometheus {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    child: ChildGuard,
}

impl Prometheus {
    /// Starts `binary` scraping `targets` (node `i` on `targets[i]`) every `interval_ms`.
    pub fn start(
        binary: &Path,
        dir: &Path,
        targets: &[SocketAddr],
        interval_ms: u64,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut config = format!(
            "global:\n  scrape_interval: {interval_ms}ms\n  scrape_timeout: {interval_ms}ms\n\
             scrape_configs:\n  - job_name: vigil-agent\n    honor_timestamps: true\n\
             \x20   static_configs:\n"
        );
        for (i, target) in targets.iter().enumerate() {
            let node = Fleet::node_name(i);
            config.push_str(&format!(
                "      - targets: ['{target}']\n        labels: {{node: '{node}'}}\n"
            ));
        }
        // `instance` and `node` name the node, as the collector labels OTLP resources.
        config.push_str(
            "    relabel_configs:\n      - source_labels: [node]\n        target_label: instance\n",
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let addr = free_port()?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let child = ChildGuard(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http_get(addr, "/-/ready", &[])
                && r.status == 200
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "prometheus not ready after 60 s; log: {}",
                    std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self {
            addr,
            dir: dir.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Prometheus's own /metrics as text.
    pub fn self_metrics(&self) -> anyhow::Result<String> {
        let r = http_get(self.addr, "/metrics", &[])?;
        if r.status != 200 {
            bail!("prometheus /metrics: status {}", r.status);
        }
        r.text()
    }
}

/// The sum over all series of `name` in an exposition (any labels); `None` if absent.
pub fn metric_sum(exposition: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// A GET on a Prometheus-compatible API (with a bearer token when given); the `data`
/// of a successful answer.
pub fn api_data(
    addr: SocketAddr,
    token: Option<&str>,
    path: &str,
) -> anyhow::Result<serde_json::Value> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let r = http_get(addr, path, &headers)?;
    let text = r.text()?;
    if r.status != 200 {
        bail!("{addr}{path}: status {}: {text}", r.status);
    }
    let mut v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{addr}{path}: not JSON"))?;
    Ok(v["data"].take())
}

/// Runs an instant PromQL query at `time_secs` and returns the value of its only
/// element (or of a scalar); `None` for an empty vector.
pub fn query_scalar(
    addr: SocketAddr,
    token: Option<&str>,
    promql: &str,
    time_secs: f64,
) -> anyhow::Result<Option<f64>> {
    let path = format!(
        "/api/v1/query?query={}&time={time_secs:.3}",
        percent_encode(promql)
    );
    let data = api_data(addr, token, &path)?;
    let value = match data["resultType"].as_str() {
        Some("vector") => {
            let result = data["result"].as_array().context("no result")?;
            match result.as_slice() {
                [one] => &one["value"][1],
                [] => return Ok(None),
                _ => bail!("{addr} {promql}: {} elements, expected one", result.len()),
            }
        }
        Some("scalar") => &data["result"][1],
        other => bail!("{addr} {promql}: result type {other:?}"),
    };
    let v = value
        .as_str()
        .context("value is not a string")?
        .parse()
        .with_context(|| format!("{addr} {promql}: value {value}"))?;
    Ok(Some(v))
}

/// Series and samples of the simulated fleet (`node="gpu-node-…"`) in `[from, to]`,
/// counted family by family: PromQL functions drop the metric name, so one query over
/// all families would collide on label sets.
pub fn count_fleet_samples(
    addr: SocketAddr,
    token: Option<&str>,
    from_secs: i64,
    to_secs: i64,
) -> anyhow::Result<(u64, u64)> {
    let names = api_data(addr, token, "/api/v1/label/__name__/values")?;
    let names = names.as_array().context("label values are not a list")?;
    let range = to_secs - from_secs + 1;
    let (mut series, mut samples) = (0u64, 0u64);
    for name in names.iter().filter_map(|n| n.as_str()) {
        // What each store adds about its targets is not the fleet's data.
        if name == "up" || name.starts_with("scrape_") || name.starts_with("vigil_node_") {
            continue;
        }
        let selector = format!("{name}{{node=~\"gpu-node-.+\"}}[{range}s]");
        let at = to_secs as f64;
        let s = query_scalar(
            addr,
            token,
            &format!("count(count_over_time({selector}))"),
            at,
        )?;
        let n = query_scalar(
            addr,
            token,
            &format!("sum(count_over_time({selector}))"),
            at,
        )?;
        series += s.unwrap_or(0.0) as u64;
        samples += n.unwrap_or(0.0) as u64;
    }
    Ok((series, samples))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_labelled_series_and_skips_prefixes() {
        let text =
            "# TYPE a counter\na{type=\"float\"} 2\na{type=\"histogram\"} 3\na_b 100\nab 7\n";
        assert_eq!(metric_sum(text, "a"), Some(5.0));
        assert_eq!(metric_sum(text, "a_b"), Some(100.0));
        assert_eq!(metric_sum(text, "c"), None);
    }

    #[test]
    fn percent_encoding_covers_promql() {
        assert_eq!(
            percent_encode("up{a=\"b\"}[1m]"),
            "up%7Ba%3D%22b%22%7D%5B1m%5D"
        );
    }
}
