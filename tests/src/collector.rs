//! The real `vigil-collector` and a shipping `vigil-agent` as child processes, and the
//! Prometheus HTTP API as seen by a client (ours or Debian's prometheus).
//!
//! Each process writes its log to a file in the test's directory; [`TestDir::finish`]
//! prints the tails of those logs when a test fails, so a failure explains itself
//! without the whole output of every restart.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

use crate::{ChildGuard, Response, binary, free_port, http_get, wait_for_port};

/// A scratch directory for one test: kept (and its logs printed) when the test fails,
/// removed when it passes.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("vigil-e2e-{name}-"))
            .tempdir()
            .context("creating a temporary directory")?;
        let path = dir.path().to_owned();
        Ok(Self {
            dir: Some(dir),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Passes `result` through; on an error, prints the last lines of every `*.log` in
    /// the directory and keeps the directory for a look afterwards.
    pub fn finish<T>(mut self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        if result.is_err() {
            eprintln!("{}", log_tails(&self.path, 40));
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("kept {} for inspection", kept.display());
            }
        }
        result
    }
}

/// The last `lines` lines of each `*.log` file in `dir`.
pub fn log_tails(dir: &Path, lines: usize) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut logs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        out.push_str(&format!(
            "---- last {} lines of {} ----\n",
            tail.len(),
            log.display()
        ));
        for line in tail {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// An append-mode log file for a child's stdout and stderr.
fn log_file(path: &Path) -> anyhow::Result<(File, File)> {
    let file = File::options()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let copy = file.try_clone()?;
    Ok((file, copy))
}

/// A `vigil-collector` on free loopback ports with its own data directory. Stopping and
/// starting it again reuses the ports and the data directory, as an operator's restart
/// would.
pub struct Collector {
    child: Option<ChildGuard>,
    /// HTTP: health, /metrics, the query API.
    pub listen: SocketAddr,
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub data_dir: PathBuf,
    /// The bearer token senders must present, when the collector was given one.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    log: PathBuf,
    extra_args: Vec<String>,
    starts: u32,
}

impl Collector {
    /// `vigil ARGS... --collector URL` against this collector; its stdout when it
    /// succeeds.
    pub fn vigil(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(binary("vigil")?)
            .args(args)
            .args(["--collector", &format!("http://{}", self.listen)])
            .output()
            .context("running vigil")?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        ensure!(
            output.status.success(),
            "vigil {args:?} exited with {}: {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(stdout)
    }

    /// Starts a collector in `dir` (data in `dir/collector-data`, log in
    /// `dir/collector.log`), waits until /readyz answers 200.
    pub fn start(dir: &Path, token: Option<&str>, extra_args: &[&str]) -> anyhow::Result<Self> {
        let token_file = match token {
            Some(token) => {
                let path = dir.join("collector-tokens");
                std::fs::write(&path, format!("{token}\n"))?;
                Some(path)
            }
            None => None,
        };
        let mut collector = Self {
            child: None,
            listen: free_port()?,
            otlp_grpc: free_port()?,
            otlp_http: free_port()?,
            data_dir: dir.join("collector-data"),
            token: token.map(str::to_owned),
            token_file,
            log: dir.join("collector.log"),
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            starts: 0,
        };
        collector.spawn()?;
        Ok(collector)
    }

    /// Starts the process again (after [`Self::terminate`] or [`Self::kill`]) on the same
    /// ports and data directory, and waits until it is ready.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        ensure!(self.child.is_none(), "the collector is already running");
        self.starts += 1;
        let (out, err) = log_file(&self.log)?;
        let mut cmd = Command::new(binary("vigil-collector")?);
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &self.listen.to_string()])
            .args(["--otlp-grpc", &self.otlp_grpc.to_string()])
            .args(["--otlp-http", &self.otlp_http.to_string()]);
        if let Some(token_file) = &self.token_file {
            cmd.arg("--token-file").arg(token_file);
        }
        cmd.args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        self.child = Some(ChildGuard(cmd.spawn().context("starting vigil-collector")?));
        self.wait_ready(Duration::from_secs(60))
    }

    /// How many times the process has been started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Waits until /readyz answers 200 (the store replayed its WAL), failing early when
    /// the process exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.0.try_wait()?
            {
                self.child = None;
                bail!("vigil-collector exited with {status} before it was ready");
            }
            if let Ok(r) = http_get(self.listen, "/readyz", &[])
                && r.status == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "vigil-collector not ready on {} after {timeout:?}",
                    self.listen
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for the exit (SIGKILL after `timeout`, which is an error).
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let guard = self.child.take().context("the collector is not running")?;
        terminate_child(guard, "vigil-collector", timeout)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let mut guard = self.child.take().context("the collector is not running")?;
        guard.0.kill().context("kill -9 vigil-collector")?;
        guard.0.wait()?;
        Ok(())
    }

    /// `Authorization` header for the API and OTLP/HTTP, when a token is set.
    pub fn auth_header(&self) -> Vec<(&'static str, String)> {
        self.token
            .iter()
            .map(|t| ("Authorization", format!("Bearer {t}")))
            .collect()
    }

    /// GET on the HTTP port with the bearer token (when the collector has one).
    pub fn get(&self, path: &str) -> anyhow::Result<Response> {
        let auth = self.auth_header();
        let headers: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http_get(self.listen, path, &headers)
    }

    /// A Prometheus API call on our collector; see [`api_data`].
    pub fn api(&self, path_and_query: &str) -> anyhow::Result<Value> {
        api_data(&self.get(path_and_query)?, path_and_query)
    }

    /// `/api/v1/query` at `time` (seconds since the epoch; the server's now when None).
    pub fn query(&self, promql: &str, time: Option<f64>) -> anyhow::Result<Value> {
        self.api(&query_path(promql, time))
    }

    /// The collector's own /metrics, parsed.
    pub fn self_metrics(&self) -> anyhow::Result<Vec<Sample>> {
        let r = self.get("/metrics")?;
        ensure!(r.status == 200, "collector /metrics: status {}", r.status);
        Ok(parse_exposition(&r.text()?))
    }
}

/// `vigil-agent --simulate-gpus 8 --interval 1` shipping to a collector's OTLP/gRPC port,
/// with its Prometheus endpoint on a free port.
pub struct ShippingAgent {
    _child: ChildGuard,
    pub listen: SocketAddr,
    pub node: String,
    pub state_dir: PathBuf,
}

impl ShippingAgent {
    pub fn start(
        dir: &Path,
        node: &str,
        collector: &Collector,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let listen = free_port()?;
        let state_dir = dir.join(format!("agent-{node}-state"));
        let (out, err) = log_file(&dir.join(format!("agent-{node}.log")))?;
        let mut cmd = Command::new(binary("vigil-agent")?);
        cmd.args(["--listen", &listen.to_string()])
            .args(["--node-name", node])
            .args(["--interval", "1", "--simulate-gpus", "8"])
            .args(["--collector", &format!("http://{}", collector.otlp_grpc)])
            .arg("--state-dir")
            .arg(&state_dir);
        if let Some(token_file) = &collector.token_file {
            cmd.arg("--token-file").arg(token_file);
        }
        // This machine's kernel log stays out of the tests unless one asks for a kmsg.
        if !extra_args.contains(&"--kmsg") {
            cmd.args(["--kmsg", ""]);
        }
        cmd.args(extra_args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = ChildGuard(cmd.spawn().context("starting vigil-agent")?);
        wait_for_port(listen, Duration::from_secs(20))?;
        Ok(Self {
            _child: child,
            listen,
            node: node.to_owned(),
            state_dir,
        })
    }

    /// The agent's own /metrics, parsed.
    pub fn scrape(&self) -> anyhow::Result<Vec<Sample>> {
        let r = http_get(self.listen, "/metrics", &[])?;
        ensure!(r.status == 200, "agent /metrics: status {}", r.status);
        Ok(parse_exposition(&r.text()?))
    }

    /// Waits until the agent tails `files` log files (`vigil_agent_log_files_tailed`).
    pub fn wait_tailing(&self, files: f64, timeout: Duration) -> anyhow::Result<()> {
        wait_for(timeout, "the agent tailing its log files", || {
            let s = self.scrape()?;
            Ok(find(&s, "vigil_agent_log_files_tailed", &[])
                .first()
                .is_some_and(|x| x.value >= files)
                .then_some(()))
        })
    }

    /// SIGTERM, then waits for the exit (SIGKILL after `timeout`, which is an error).
    pub fn terminate(self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        terminate_child(self._child, "vigil-agent", timeout)
    }

    /// SIGKILL: no chance to flush or save anything.
    pub fn kill(self) -> anyhow::Result<()> {
        let mut guard = self._child;
        guard.0.kill().context("kill -9 vigil-agent")?;
        guard.0.wait()?;
        Ok(())
    }
}

/// SIGTERM to `guard`'s child, then waits for its exit; past `timeout` the guard
/// kills it (SIGKILL) and that is an error.
fn terminate_child(
    mut guard: ChildGuard,
    what: &str,
    timeout: Duration,
) -> anyhow::Result<ExitStatus> {
    let pid = libc::pid_t::try_from(guard.0.id()).context("pid out of range")?;
    // SAFETY: kill(2) on the pid of a child we own and have not yet reaped.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    ensure!(
        rc == 0,
        "kill -TERM {pid}: {}",
        std::io::Error::last_os_error()
    );
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = guard.0.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            drop(guard);
            bail!("{what} did not exit within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One line of the Prometheus text format (enough for self-metrics: no escapes inside
/// label values beyond `\"`, `\\` and `\n`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the text exposition format; lines that do not parse are skipped.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = match line.split_once('}') {
            Some((head, tail)) => (format!("{head}}}"), tail.trim()),
            None => match line.split_once(' ') {
                Some((head, tail)) => (head.to_owned(), tail.trim()),
                None => continue,
            },
        };
        // A trailing timestamp, if any, follows the value.
        let value = value.split_whitespace().next().unwrap_or_default();
        let Some(value) = parse_float(value) else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.clone(), BTreeMap::new()),
            Some((name, rest)) => (name.to_owned(), parse_labels(&rest[..rest.len() - 1])),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn parse_labels(mut rest: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut end = after.len();
        let mut chars = after.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(if e == 'n' { '\n' } else { e });
                    }
                }
                '"' => {
                    end = i;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').trim().to_owned(), value);
        rest = after.get(end + 1..).unwrap_or_default();
    }
    labels
}

/// A float as Prometheus writes one (`NaN`, `+Inf`, `-Inf`, decimal or exponent form).
pub fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        s => s.parse().ok(),
    }
}

/// The samples of `name` whose labels include all of `labels`.
pub fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The sum of the values of `name` whose labels include all of `labels`; None if absent.
pub fn sum_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found = find(samples, name, labels);
    (!found.is_empty()).then(|| found.iter().map(|s| s.value).sum())
}

/// `/api/v1/query?query=..[&time=..]`, percent-encoded.
pub fn query_path(promql: &str, time: Option<f64>) -> String {
    let mut path = format!("/api/v1/query?query={}", url_encode(promql));
    if let Some(t) = time {
        path.push_str(&format!("&time={t:.3}"));
    }
    path
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The body of a Prometheus API response as JSON.
pub fn api_json(response: &Response, what: &str) -> anyhow::Result<Value> {
    let text = response.text()?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{what}: status {}, body is not JSON: {text:.500}",
            response.status
        )
    })
}

/// `data` of a successful Prometheus API response; anything else is an error that
/// quotes the server's `errorType` and `error`.
pub fn api_data(response: &Response, what: &str) -> anyhow::Result<Value> {
    let json = api_json(response, what)?;
    if response.status != 200 || json["status"] != "success" {
        bail!(
            "{what}: status {}, {} {}",
            response.status,
            json["errorType"],
            json["error"]
        );
    }
    Ok(json["data"].clone())
}

/// One series of a query result: its labels and its samples (`[ms, value]`), one for a
/// vector, all of them for a matrix.
#[derive(Debug, Clone)]
pub struct SeriesResult {
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<(i64, f64)>,
}

/// The series of a `vector` or `matrix` result (`data` of /api/v1/query).
pub fn series_of(data: &Value) -> anyhow::Result<Vec<SeriesResult>> {
    let kind = data["resultType"].as_str().context("no resultType")?;
    ensure!(
        kind == "vector" || kind == "matrix",
        "expected a vector or matrix, got {kind}"
    );
    let result = data["result"]
        .as_array()
        .context("result is not an array")?;
    let mut out = Vec::with_capacity(result.len());
    for series in result {
        let labels = series["metric"]
            .as_object()
            .context("metric is not an object")?
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_str().context("label value")?.to_owned())))
            .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
        let points: Vec<&Value> = match kind {
            "vector" => vec![&series["value"]],
            _ => series["values"]
                .as_array()
                .context("values is not an array")?
                .iter()
                .collect(),
        };
        let samples = points
            .into_iter()
            .map(parse_point)
            .collect::<anyhow::Result<Vec<_>>>()?;
        out.push(SeriesResult { labels, samples });
    }
    Ok(out)
}

/// `[1435781451.781, "1"]` → (1435781451781, 1.0).
fn parse_point(point: &Value) -> anyhow::Result<(i64, f64)> {
    let t = point[0]
        .as_f64()
        .with_context(|| format!("bad point {point}"))?;
    let v = point[1]
        .as_str()
        .and_then(parse_float)
        .with_context(|| format!("bad point {point}"))?;
    // Float seconds with three decimals: rounding recovers the milliseconds exactly.
    Ok(((t * 1000.0).round() as i64, v))
}

/// Seconds since the epoch, now.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Polls `check` every 250 ms until it returns `Some`, at most `timeout`; the error
/// carries the last error `check` gave.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "condition not met".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What [`check_counts_every_cycle`] found in a per-cycle counter's samples.
#[derive(Debug, Clone, Copy)]
pub struct CycleCheck {
    pub first_value: f64,
    pub last_value: f64,
    pub samples: usize,
    /// The widest gap between consecutive samples, in milliseconds.
    pub max_gap_ms: i64,
}

/// Checks that a counter the agent increments once per collection cycle (such as
/// `vigil_agent_collections_total`) has a sample for every cycle: timestamps strictly
/// increasing and each value exactly one above the one before. A leading 0 at the
/// series' start time (created-timestamp zero ingestion) fits the same rule.
pub fn check_counts_every_cycle(series: &SeriesResult) -> anyhow::Result<CycleCheck> {
    let samples = &series.samples;
    ensure!(samples.len() >= 2, "only {} samples", samples.len());
    let mut max_gap_ms = 0;
    for pair in samples.windows(2) {
        let ((t0, v0), (t1, v1)) = (pair[0], pair[1]);
        ensure!(
            t1 > t0,
            "timestamps not increasing: {t0} then {t1} in {:?}",
            series.labels
        );
        ensure!(
            v1 == v0 + 1.0,
            "a cycle is missing or doubled: {v0} at {t0} ms, then {v1} at {t1} ms ({} ms later)",
            t1 - t0
        );
        max_gap_ms = max_gap_ms.max(t1 - t0);
    }
    Ok(CycleCheck {
        first_value: samples[0].1,
        last_value: samples[samples.len() - 1].1,
        samples: samples.len(),
        max_gap_ms,
    })
}
