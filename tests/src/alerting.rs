//! What the alerting tests and benchmark need around Vigil: an HTTP listener that
//! records webhook bodies (and can be taken down and brought back on the same port),
//! checks of a body against Alertmanager's real one, the simulated GPUs' fault file,
//! the GPU rule pack with timers short enough for a test, and (in [`peers`]) the
//! aiosmtpd SMTP sink, Debian's Prometheus with rules and Alertmanager.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

pub mod peers;

pub use peers::{
    ALERTMANAGER, Alertmanager, PROMETHEUS, PrometheusTimers, PrometheusWithRules, REQUIRE_PEERS,
    SYSTEM_PYTHON, SmtpSink, TestCertificate, aiosmtpd_installed, peers_present,
};

/// The workspace's root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

// ---------------------------------------------------------------------------------
// Webhook listener

/// One request the listener received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When its body had been read completely.
    pub at: Instant,
    pub wall: SystemTime,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "{} {}: body is not JSON: {:.300}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Inbox {
    received: Mutex<Vec<Received>>,
    arrived: Condvar,
}

/// An HTTP/1.1 listener on loopback that answers every request 200 and keeps what it
/// got. [`WebhookListener::down`] closes the port (connections are refused, as for a
/// receiver that is down); [`WebhookListener::up`] listens on the same port again.
pub struct WebhookListener {
    pub addr: SocketAddr,
    inbox: Arc<Inbox>,
    accept: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl WebhookListener {
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the webhook listener")?;
        let addr = listener.local_addr()?;
        let mut hook = Self {
            addr,
            inbox: Arc::new(Inbox::default()),
            accept: None,
        };
        hook.serve(listener);
        Ok(hook)
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn serve(&mut self, listener: TcpListener) {
        let stop = Arc::new(AtomicBool::new(false));
        let inbox = Arc::clone(&self.inbox);
        let accept_stop = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let inbox = Arc::clone(&inbox);
                let conn_stop = Arc::clone(&accept_stop);
                std::thread::spawn(move || {
                    let _ = serve_connection(stream, &inbox, &conn_stop);
                });
            }
        });
        self.accept = Some((stop, handle));
    }

    /// Stops listening: new connections are refused until [`Self::up`].
    pub fn down(&mut self) {
        if let Some((stop, handle)) = self.accept.take() {
            stop.store(true, Ordering::SeqCst);
            // Wake the accept loop so it sees the flag and drops the listener.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500));
            let _ = handle.join();
        }
    }

    /// Listens again on the same address.
    pub fn up(&mut self) -> anyhow::Result<()> {
        ensure!(self.accept.is_none(), "the webhook listener is already up");
        let listener = TcpListener::bind(self.addr)
            .with_context(|| format!("binding the webhook listener again on {}", self.addr))?;
        self.serve(listener);
        Ok(())
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.inbox
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The JSON bodies received so far (requests whose body is not JSON are an error).
    pub fn bodies(&self) -> anyhow::Result<Vec<Value>> {
        self.received().iter().map(Received::json).collect()
    }

    /// Waits until `check` finds what it looks for among the requests received so far,
    /// waking at each arrival (and at least every 100 ms).
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&[Received]) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        let mut received = self
            .inbox
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(found) = check(&received)? {
                return Ok(found);
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what} on {}; {} requests received",
                    self.addr,
                    received.len()
                );
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            received = self
                .inbox
                .arrived
                .wait_timeout(received, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Forgets what was received.
    pub fn clear(&self) {
        self.inbox
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Drop for WebhookListener {
    fn drop(&mut self) {
        self.down();
    }
}

fn serve_connection(stream: TcpStream, inbox: &Inbox, stop: &AtomicBool) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 || stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let headers = crate::read_headers(&mut reader)?;
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let mut body = Vec::new();
        if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size_line = String::new();
                reader.read_line(&mut size_line)?;
                let size_hex = size_line.trim().split(';').next().unwrap_or_default();
                let size = usize::from_str_radix(size_hex, 16)
                    .with_context(|| format!("bad chunk size {size_line:?}"))?;
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = header("content-length") {
            let len: usize = len.parse().context("bad content-length")?;
            body.resize(len, 0);
            reader.read_exact(&mut body)?;
        }
        let close = header("connection").is_some_and(|v| v == "close");
        {
            let mut received = inbox
                .received
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            received.push(Received {
                at: Instant::now(),
                wall: SystemTime::now(),
                method,
                path,
                headers,
                body,
            });
        }
        inbox.arrived.notify_all();
        writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
        if close {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------------
// Webhook bodies

/// The alerts of Alertmanager v4 webhook bodies, flattened: (body status, alert).
pub fn alerts_of(bodies: &[Value]) -> Vec<(String, Value)> {
    bodies
        .iter()
        .flat_map(|b| {
            let status = b["status"].as_str().unwrap_or_default().to_owned();
            b["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |a| (status.clone(), a))
        })
        .collect()
}

/// Whether an alert object's labels include every `(name, value)` pair.
pub fn has_labels(alert: &Value, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(k, v)| alert["labels"][*k].as_str() == Some(*v))
}

/// The bodies among `received` that carry an alert with `labels` whose own status is
/// `status` (`firing` or `resolved`).
pub fn bodies_with(received: &[Received], labels: &[(&str, &str)], status: &str) -> Vec<Value> {
    received
        .iter()
        .filter_map(|r| r.json().ok())
        .filter(|b| {
            b["alerts"].as_array().is_some_and(|alerts| {
                alerts
                    .iter()
                    .any(|a| a["status"] == status && has_labels(a, labels))
            })
        })
        .collect()
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

/// Checks that `body` has the shape of the real Alertmanager 0.25 body in
/// `../shared/conformance/alertmanager-webhook-v4-sample.json` (`sample_key` names
/// which one): the same keys at the top and in every alert, the same JSON types, and
/// the value formats (version "4", RFC 3339 times, Go's zero time for a firing alert's
/// end, 16 hex digits of fingerprint).
pub fn check_webhook_shape(body: &Value, sample_key: &str) -> anyhow::Result<()> {
    let path = workspace_root().join("../shared/conformance/alertmanager-webhook-v4-sample.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the sample body {}", path.display()))?;
    let samples: Value = serde_json::from_str(&text).context("parsing the sample")?;
    let sample = &samples[sample_key];
    ensure!(sample.is_object(), "no {sample_key} in {}", path.display());
    ensure!(
        keys(body) == keys(sample),
        "top-level keys {:?}, Alertmanager sends {:?}",
        keys(body),
        keys(sample)
    );
    for key in keys(sample) {
        ensure!(
            std::mem::discriminant(&body[&key]) == std::mem::discriminant(&sample[&key]),
            "{key} is {}, Alertmanager sends {}",
            body[&key],
            sample[&key]
        );
    }
    ensure!(body["version"] == "4", "version {}", body["version"]);
    ensure!(
        body["status"] == "firing" || body["status"] == "resolved",
        "status {}",
        body["status"]
    );
    let sample_alert = &sample["alerts"][0];
    let alerts = body["alerts"].as_array().context("alerts")?;
    ensure!(!alerts.is_empty(), "a body without alerts");
    for alert in alerts {
        ensure!(
            keys(alert) == keys(sample_alert),
            "alert keys {:?}, Alertmanager sends {:?}",
            keys(alert),
            keys(sample_alert)
        );
        for key in ["labels", "annotations"] {
            let map = alert[key].as_object().context("a label map")?;
            ensure!(
                map.values().all(Value::is_string),
                "{key} values must be strings: {}",
                alert[key]
            );
        }
        let fingerprint = alert["fingerprint"].as_str().context("fingerprint")?;
        ensure!(
            fingerprint.len() == 16 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit()),
            "fingerprint {fingerprint:?}"
        );
        let starts = alert["startsAt"].as_str().context("startsAt")?;
        ensure!(rfc3339_ms(starts).is_some(), "startsAt {starts:?}");
        let ends = alert["endsAt"].as_str().context("endsAt")?;
        match alert["status"].as_str() {
            Some("firing") => ensure!(
                ends == "0001-01-01T00:00:00Z",
                "a firing alert's endsAt is {ends:?}, Alertmanager sends Go's zero time"
            ),
            Some("resolved") => ensure!(
                rfc3339_ms(ends).is_some_and(|e| e >= rfc3339_ms(starts).unwrap_or(0)),
                "a resolved alert's endsAt is {ends:?} (startsAt {starts})"
            ),
            other => bail!("alert status {other:?}"),
        }
    }
    Ok(())
}

/// `2026-11-27T11:03:03.23601245Z` (or with an offset) → milliseconds since the epoch.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let zone_at = rest.find(['Z', '+', '-'])?;
    let (clock, zone) = rest.split_at(zone_at);
    let mut c = clock.split(':');
    let (h, min): (i64, i64) = (c.next()?.parse().ok()?, c.next()?.parse().ok()?);
    let secs: f64 = c.next()?.parse().ok()?;
    let offset_min = if zone == "Z" {
        0
    } else {
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (zh, zm) = zone[1..].split_once(':')?;
        sign * (zh.parse::<i64>().ok()? * 60 + zm.parse::<i64>().ok()?)
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 86_400 + h * 3600 + min * 60 - offset_min * 60) * 1000) as f64
        + (secs * 1000.0).round();
    Some(ms as i64)
}

// ---------------------------------------------------------------------------------
// Fault file

/// The simulated GPUs' fault file (agent/nvml-sim/README.md), rewritten atomically.
pub struct FaultFile {
    pub path: PathBuf,
}

/// What to write into a [`FaultFile`]: per-GPU overrides and Xid events (in order).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub gpus: Vec<(u32, Vec<(&'static str, String)>)>,
    pub xids: Vec<(u32, u32)>,
}

impl Faults {
    /// GPU `index` at `celsius`.
    pub fn temperature(mut self, index: u32, celsius: u32) -> Self {
        self.gpus
            .push((index, vec![("temperature_c", celsius.to_string())]));
        self
    }

    /// One more Xid event for GPU `index`.
    pub fn xid(mut self, index: u32, code: u32) -> Self {
        self.xids.push((index, code));
        self
    }

    pub fn to_toml(&self) -> String {
        let mut out = String::from("# written by vigil-e2e\n");
        for (index, keys) in &self.gpus {
            out.push_str(&format!("[[gpu]]\nindex = {index}\n"));
            for (k, v) in keys {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        for (gpu, code) in &self.xids {
            out.push_str(&format!("[[xid]]\ngpu = {gpu}\ncode = {code}\n"));
        }
        out
    }
}

impl FaultFile {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Writes a temporary file and renames it over the old one, so the simulation never
    /// reads a half-written file.
    pub fn write(&self, faults: &Faults) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, faults.to_toml())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), self.path.display()))
    }
}

// ---------------------------------------------------------------------------------
// Rules

/// The GPU pack (`rules/packs/gpu.yml`) as it is, except that every group is evaluated
/// every `interval` and every `for:` is `for_duration`, so a test sees in seconds what
/// the pack does in minutes.
pub fn gpu_pack_with_timers(interval: &str, for_duration: &str) -> anyhow::Result<String> {
    let path = workspace_root().join("rules/packs/gpu.yml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = String::with_capacity(text.len() + 256);
    let (mut groups, mut fors) = (0, 0);
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(name) = trimmed.strip_prefix("- name: ") {
            out.push_str(&format!(
                "{indent}- name: {name}\n{indent}  interval: {interval}\n"
            ));
            groups += 1;
        } else if trimmed.starts_with("for: ") {
            out.push_str(&format!("{indent}for: {for_duration}\n"));
            fors += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    ensure!(
        groups >= 2 && fors >= 1,
        "{}: found {groups} groups and {fors} `for:` lines; has the pack's layout changed?",
        path.display()
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_go_and_offset_forms() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ms("2026-11-27T11:03:03.23601245Z"),
            Some(1_795_777_383_236)
        );
        assert_eq!(
            rfc3339_ms("2026-11-27T12:03:03.236+01:00"),
            Some(1_795_777_383_236)
        );
        assert_eq!(
            rfc3339_ms("0001-01-01T00:00:00Z"),
            Some(-62_135_596_800_000)
        );
        assert_eq!(rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn listener_records_goes_down_and_comes_back() -> anyhow::Result<()> {
        let mut hook = WebhookListener::start()?;
        let addr = hook.addr;
        let post = |body: &str| {
            crate::http_request(
                addr,
                "POST",
                "/hook",
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            )
        };
        assert_eq!(post("{\"a\":1}")?.status, 200);
        hook.down();
        assert!(post("{\"a\":2}").is_err(), "a down listener accepted");
        hook.up()?;
        assert_eq!(post("{\"a\":3}")?.status, 200);
        let bodies = hook.bodies()?;
        assert_eq!(
            bodies,
            vec![serde_json::json!({"a":1}), serde_json::json!({"a":3})]
        );
        let got = hook.wait_for(Duration::from_secs(1), "a=3", |r| {
            Ok(r.iter().any(|r| r.body == b"{\"a\":3}").then_some(()))
        });
        assert!(got.is_ok());
        Ok(())
    }

    #[test]
    fn pack_timers_are_shortened() -> anyhow::Result<()> {
        let pack = gpu_pack_with_timers("1s", "2s")?;
        assert!(pack.contains("  - name: vigil-gpu-health\n    interval: 1s\n"));
        assert!(!pack.contains("for: 5m"));
        assert!(pack.contains("        for: 2s\n"));
        Ok(())
    }

    #[test]
    fn faults_toml() {
        let text = Faults::default().temperature(0, 95).xid(1, 79).to_toml();
        assert_eq!(
            text,
            "# written by vigil-e2e\n[[gpu]]\nindex = 0\ntemperature_c = 95\n[[xid]]\ngpu = 1\ncode = 79\n"
        );
    }
}
