//! Vigil's cross-process tests and benchmarks: real binaries against real peers.
//!
//! # Layout
//! - [`binary`]: finds a workspace binary that `./tests/run.sh` built.
//! - [`http_get`]: a minimal HTTP/1.1 client over loopback for scraping endpoints.
//! - [`collector`]: `vigil-collector` and a shipping `vigil-agent` as child processes
//!   (free ports, data directory, restart on the same ports), the Prometheus API as a
//!   client sees it, and [`collector::TestDir`], which prints the processes' logs when a
//!   test fails.
//! - [`otlp`]: OTLP requests built by hand and sent over HTTP or gRPC.
//! - [`tmux`]: a terminal program in a detached tmux pane, keys in, screen out.
//! - [`alerting`]: the alerting tests' peers: a webhook listener that can go down and
//!   come back, the aiosmtpd SMTP sink, Prometheus with rules beside Alertmanager, the
//!   simulated GPUs' fault file, the GPU pack with short timers
//!   (`tests/alerting_e2e.rs`, `src/bin/alert-bench.rs`, `./tests/alert-bench.sh`).
//! - [`bench`]: the collector benchmark's simulated fleet, OTLP load and Prometheus
//!   side (`src/bin/collector-bench.rs`, `./tests/collector-bench.sh`).
//! - [`recovery`]: the recovery tests' recovery directory with recording scripts and
//!   the actions API (`tests/recovery_e2e.rs`, `tests/recovery_guardrails.rs`,
//!   `src/bin/recovery-bench.rs`, `./tests/recovery-bench.sh`).
//! - `src/bin/agent-bench.rs`: the agent beside Debian's prometheus-node-exporter
//!   (`./tests/agent-bench.sh`).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};

pub mod alerting;
pub mod bench;
pub mod collector;
pub mod otlp;
pub mod recovery;
pub mod tmux;

/// The path of a workspace binary in the target directory this crate was built into.
/// `./tests/run.sh` runs `cargo build --workspace --bins` before the tests, because
/// `cargo test` builds only the binaries of the package under test.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} is not built next to {}: run `cargo build --workspace --bins` first (./tests/run.sh does)",
        exe.display()
    )
}

/// A response from [`http_get`].
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text, gunzipped when the server compressed it.
    pub fn text(&self) -> anyhow::Result<String> {
        if self.header("content-encoding") == Some("gzip") {
            let mut out = String::new();
            flate2::read::GzDecoder::new(&self.body[..])
                .read_to_string(&mut out)
                .context("gunzipping the body")?;
            Ok(out)
        } else {
            String::from_utf8(self.body.clone()).context("body is not UTF-8")
        }
    }
}

/// GET `path` from `addr` with extra request headers; HTTP/1.1, `Connection: close`.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    http_request(addr, "GET", path, headers, &[])
}

/// One HTTP/1.1 request with `Connection: close`; a body gets a `Content-Length`.
///
/// A server may answer (413, 401) before it has read the whole body and close the
/// connection: a failed write is then not an error as long as a response can be read.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("sending {method} {path} to {addr}"))?;
    let write_error = stream.write_all(body).err();
    read_response(stream).with_context(|| match &write_error {
        Some(e) => format!("{method} {path} on {addr} (writing the body failed: {e})"),
        None => format!("{method} {path} on {addr}"),
    })
}

fn read_response(stream: TcpStream) -> anyhow::Result<Response> {
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let response_headers = read_headers(&mut reader)?;
    let chunked = response_headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            let size = usize::from_str_radix(size_line.trim(), 16)
                .with_context(|| format!("bad chunk size {size_line:?}"))?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Err(e) = reader.read_to_end(&mut body) {
        // A server that answered before reading the whole request resets the
        // connection once it closes; the status and headers already arrived.
        if e.kind() != std::io::ErrorKind::ConnectionReset {
            return Err(e.into());
        }
    }
    Ok(Response {
        status,
        headers: response_headers,
        body,
    })
}

/// Waits until `addr` accepts a connection, up to `timeout`.
/// The header lines of an HTTP/1.1 message up to the blank line, as (name, value).
pub fn read_headers(reader: &mut impl std::io::BufRead) -> std::io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Ok(headers)
}

pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on {addr} after {timeout:?}")
}

/// A free loopback port: bind :0, read the port, release it.
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    listener.local_addr().context("reading the bound address")
}

/// A child process that is killed when dropped, so a failing test leaves nothing behind.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// tests/run.sh sets this: there a missing venv is a failure, not a skip.
const REQUIRE_VENV: &str = "VIGIL_E2E_REQUIRE_VENV";

/// The Python of tests/.venv, which holds the OpenTelemetry SDK (tests/run.sh makes
/// it); `None`, after saying so, when it is missing and not required.
pub fn otel_sdk_python() -> anyhow::Result<Option<PathBuf>> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if python.is_file() {
        return Ok(Some(python));
    }
    if std::env::var_os(REQUIRE_VENV).is_some() {
        bail!(
            "{} is missing although {REQUIRE_VENV} is set: tests/run.sh should have created it",
            python.display()
        );
    }
    println!(
        "SKIPPED: {} is missing; run tests/run.sh, which creates the venv with the \
         OpenTelemetry SDK (tests/python/requirements.txt)",
        python.display()
    );
    Ok(None)
}
