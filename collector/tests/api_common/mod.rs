//! Shared by the `api_*` tests: a real collector started through `run()` on loopback
//! listeners over a temporary store, and a minimal HTTP/1.1 client.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vigil_collector::store::{Store, StoreOptions};
use vigil_collector::{CollectorConfig, CollectorError, Listeners};
use vigil_rules::promql::Labels;

/// 2023-11-14T22:13:20Z.
pub const T0_SECS: i64 = 1_700_000_000;

pub struct Collector {
    pub addr: SocketAddr,
    pub otlp_http: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), CollectorError>>>,
    pub dir: tempfile::TempDir,
}

/// A config for tests: loopback, a retention long enough for fixed 2023 timestamps.
pub fn test_config(dir: &std::path::Path) -> CollectorConfig {
    CollectorConfig {
        data_dir: dir.to_path_buf(),
        retention_hours: 1_000_000.0,
        ..CollectorConfig::default()
    }
}

/// Writes `samples` into a store in `dir` and closes it, so the collector replays them.
pub fn seed(dir: &std::path::Path, samples: &[(Labels, i64, f64)]) -> Result<()> {
    let mut opts = StoreOptions::new(dir);
    opts.retention_ms = i64::MAX / 2;
    let store = Store::open(opts)?;
    store.append_batch(samples)?;
    store.sync()?;
    Ok(())
}

impl Collector {
    /// Starts `run()` with `config` (its data_dir replaced by a fresh temp dir that
    /// `seed_fn` may fill first) and waits until /readyz answers 200.
    pub async fn start(
        mut config: CollectorConfig,
        seed_fn: impl FnOnce(&std::path::Path) -> Result<()>,
    ) -> Result<Collector> {
        let dir = tempfile::tempdir()?;
        config.data_dir = dir.path().to_path_buf();
        seed_fn(dir.path())?;
        let bind = || TcpListener::bind("127.0.0.1:0");
        let listeners = Listeners {
            http: bind().await?,
            otlp_grpc: bind().await?,
            otlp_http: bind().await?,
        };
        let addr = listeners.http.local_addr()?;
        let otlp_http = listeners.otlp_http.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(vigil_collector::run(config, listeners, async move {
            let _ = rx.await;
        }));
        let c = Collector {
            addr,
            otlp_http,
            stop: Some(tx),
            task: Some(task),
            dir,
        };
        for _ in 0..200 {
            if let Ok(r) = c.get("/readyz").await
                && r.status == 200
            {
                return Ok(c);
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        bail!("collector did not become ready")
    }

    pub async fn get(&self, path: &str) -> Result<Response> {
        request(self.addr, "GET", path, None).await
    }

    pub async fn post_form(&self, path: &str, form: &str) -> Result<Response> {
        request(
            self.addr,
            "POST",
            path,
            Some(("application/x-www-form-urlencoded", form)),
        )
        .await
    }

    /// Stops the collector and returns what `run()` returned.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().context("already stopped")?;
        task.await??;
        Ok(())
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }
}

/// One HTTP/1.1 request on its own connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> Result<Response> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some((ct, b)) = body {
        req.push_str(&format!(
            "Content-Type: {ct}\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some((_, b)) = body {
        req.push_str(b);
    }
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw)?;
    let (head, rest) = text.split_once("\r\n\r\n").context("no header end")?;
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no status line")?
        .parse()?;
    let mut content_type = String::new();
    let mut chunked = false;
    for l in lines {
        let (k, v) = l.split_once(':').unwrap_or((l, ""));
        if k.eq_ignore_ascii_case("content-type") {
            content_type = v.trim().to_string();
        }
        if k.eq_ignore_ascii_case("transfer-encoding") && v.trim() == "chunked" {
            chunked = true;
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_string()
    };
    Ok(Response {
        status,
        content_type,
        body,
    })
}

fn dechunk(mut s: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").context("bad chunk")?;
        let n = usize::from_str_radix(size.trim(), 16)?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).context("short chunk")?);
        s = rest.get(n + 2..).context("short chunk")?;
    }
}

/// Percent-encodes a query parameter value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}
