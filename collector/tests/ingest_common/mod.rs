//! Shared by the ingest tests: a real store, registry and receivers on 127.0.0.1:0,
//! OTLP requests shaped as senders build them, and a small HTTP/1.1 client that can
//! also send what no well-behaved client would.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use vigil_collector::ingest::{self, Ingest, IngestOptions, Tokens};
use vigil_collector::registry::Registry;
use vigil_collector::store::{Store, StoreOptions};
use vigil_proto::otlp::*;
use vigil_rules::promql::{MatchOp, Matcher, Matchers, Series};

pub const TOKEN: &str = "fleet-s3cret";

pub struct Collector {
    pub dir: tempfile::TempDir,
    pub store: Arc<Store>,
    pub registry: Arc<Registry>,
    pub ingest: Arc<Ingest>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    stops: Vec<oneshot::Sender<()>>,
}

impl Collector {
    pub async fn start(max_request_bytes: usize) -> Result<Collector> {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(Store::open(StoreOptions::new(dir.path()))?);
        let registry = Arc::new(Registry::open(dir.path())?);
        let token_file = dir.path().join("tokens");
        std::fs::write(&token_file, format!("# fleet\n{TOKEN}\n"))?;
        let options = IngestOptions {
            tokens: Some(Tokens::from_file(&token_file)?),
            max_request_bytes,
            ..IngestOptions::default()
        };
        let ingest = Arc::new(Ingest::new(store.clone(), registry.clone(), options));
        let grpc_l = TcpListener::bind("127.0.0.1:0").await?;
        let http_l = TcpListener::bind("127.0.0.1:0").await?;
        let (grpc, http) = (grpc_l.local_addr()?, http_l.local_addr()?);
        let (g_tx, g_rx) = oneshot::channel::<()>();
        let (h_tx, h_rx) = oneshot::channel::<()>();
        tokio::spawn(ingest::grpc::serve(grpc_l, ingest.clone(), async move {
            let _ = g_rx.await;
        }));
        tokio::spawn(ingest::http::serve(http_l, ingest.clone(), async move {
            let _ = h_rx.await;
        }));
        Ok(Collector {
            dir,
            store,
            registry,
            ingest,
            grpc,
            http,
            stops: vec![g_tx, h_tx],
        })
    }

    /// Every stored series named `name`, with all its samples.
    pub fn select(&self, name: &str) -> Result<Vec<Series>> {
        let m = Matchers::new(vec![Matcher::new(MatchOp::Equal, "__name__", name)]);
        self.store
            .select(&m, i64::MIN, i64::MAX)
            .map_err(|e| anyhow::anyhow!("select {name}: {e}"))
    }
}

pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        key_strindex: 0,
    }
}

/// A gauge from an OpenTelemetry SDK (`service.name` = `app`, `host.name` = `host`).
pub fn sdk_gauge(name: &str, unit: &str, t_ms: i64, value: f64) -> ExportMetricsServiceRequest {
    let point = NumberDataPoint {
        attributes: vec![kv("room", "a")],
        start_time_unix_nano: 0,
        time_unix_nano: t_ms as u64 * 1_000_000,
        exemplars: vec![],
        flags: 0,
        value: Some(number_data_point::Value::AsDouble(value)),
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "app"), kv("host.name", "host")],
                dropped_attributes_count: 0,
                entity_refs: vec![],
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: None,
                metrics: vec![Metric {
                    name: name.into(),
                    description: String::new(),
                    unit: unit.into(),
                    metadata: vec![],
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![point],
                    })),
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An HTTP answer: status, headers (lowercased names), body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends raw request bytes on a fresh connection and reads the answer to the end
/// (the request says `connection: close`).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Result<HttpAnswer> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    let mut buf = Vec::new();
    // The server may close before reading everything we sent (413): read what came.
    let _ = s.read_to_end(&mut buf).await;
    parse_answer(&buf).with_context(|| format!("answer: {:?}", String::from_utf8_lossy(&buf)))
}

fn parse_answer(buf: &[u8]) -> Result<HttpAnswer> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&buf[..end])?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .context("no status line")?
        .parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(HttpAnswer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..nl])?.trim(), 16)?;
        b = &b[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// A POST to `path` with the given headers and body (content-length set).
pub async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpAnswer> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes).await
}

pub fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("writing to a Vec cannot fail");
    e.finish().expect("writing to a Vec cannot fail")
}
