//! vigil-collector's ingest rate and memory per series, beside Prometheus 2.42.
//!
//! From one run it prints: the sustained OTLP ingest (acknowledged samples/s) from a
//! simulated fleet of `--nodes` nodes, each shipping the real agent's series
//! (`vigil-agent --simulate-gpus 8`: 8 GPUs plus this host's series) once a second; and
//! the RSS per active series of a collector holding `--history-secs` of those series at
//! 1 s, beside Debian's Prometheus holding the same series, values and samples (loaded
//! by scraping).
//!
//! - Series: read from a real agent started for the purpose (two scrapes some seconds
//!   apart), so names, labels and value dynamics are the agent's; each simulated node
//!   gets its own host name, GPU UUIDs and MACs, and its own deterministic values.
//! - Ingest: every request is encoded (protobuf + gzip, as the agent's tonic client
//!   sends) before the clock starts; `--connections` HTTP/2 connections send them to a
//!   real `vigil-collector` with a bearer token. The fleet is offered at most at real
//!   time (one request per node per second); a collector that falls behind shows its
//!   ceiling. Counted: samples in acknowledged requests, less partial-success
//!   rejections, over a fixed window after a warm-up that covers series creation.
//! - Memory: a fresh collector receives `--history-secs` 1-second steps of
//!   `--memory-series` series (whole nodes) with timestamps from an hour ago to now;
//!   Prometheus scrapes the same nodes from a synthetic exporter that serves each scrape
//!   the next step with explicit timestamps (`honor_timestamps`), a short scrape
//!   interval letting history advance faster than the wall clock. RSS is VmRSS from
//!   /proc after a settle period, divided by the active series both hold.
//!
//! `./tests/collector-bench.sh` builds the release binaries and runs this.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use vigil_e2e::bench::fleet::Fleet;
use vigil_e2e::bench::load::{self, IngestReport, IngestSettings};
use vigil_e2e::bench::prometheus::{
    Exporter, Prometheus, count_fleet_samples, metric_sum, query_scalar,
};
use vigil_e2e::bench::template::Template;
use vigil_e2e::bench::{ProcSample, now_ms, proc_sample};
use vigil_e2e::{ChildGuard, binary, free_port, http_get, wait_for_port};

const SEED: u64 = 0x5eed_7161_1000;
const TOKEN: &str = "collector-bench-token";

struct Args {
    nodes: usize,
    ingest_secs: u64,
    warmup_secs: u64,
    history_secs: u64,
    memory_series: usize,
    connections: usize,
    scrape_interval_ms: u64,
    /// Sizes the pre-encoded load: enough rounds for this rate over warm-up and window.
    max_rate: f64,
    settle_secs: u64,
    skip_ingest: bool,
    skip_vigil_memory: bool,
    skip_prometheus: bool,
    prometheus: PathBuf,
    collector_args: Vec<String>,
}

const USAGE: &str = "usage: collector-bench [--quick] [--nodes N] [--ingest-secs S] [--warmup-secs S] \
[--history-secs S] [--memory-series N] [--connections N] [--scrape-interval-ms MS] [--settle-secs S] \
[--max-rate SAMPLES_PER_S] \
[--skip-ingest] [--skip-vigil-memory] [--skip-prometheus] [--prometheus PATH] [--collector-arg ARG]...";

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        nodes: 1000,
        ingest_secs: 60,
        warmup_secs: 15,
        history_secs: 3600,
        memory_series: 10_000,
        connections: 16,
        scrape_interval_ms: 50,
        max_rate: 500_000.0,
        settle_secs: 15,
        skip_ingest: false,
        skip_vigil_memory: false,
        skip_prometheus: false,
        prometheus: PathBuf::from("/usr/bin/prometheus"),
        collector_args: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value; {USAGE}"))
        };
        match flag.as_str() {
            "--quick" => {
                a.nodes = 100;
                a.ingest_secs = 10;
                a.warmup_secs = 5;
                a.history_secs = 300;
                a.memory_series = 2_000;
                a.settle_secs = 3;
            }
            "--nodes" => a.nodes = value()?.parse()?,
            "--ingest-secs" => a.ingest_secs = value()?.parse()?,
            "--warmup-secs" => a.warmup_secs = value()?.parse()?,
            "--history-secs" => a.history_secs = value()?.parse()?,
            "--memory-series" => a.memory_series = value()?.parse()?,
            "--connections" => a.connections = value()?.parse()?,
            "--scrape-interval-ms" => a.scrape_interval_ms = value()?.parse()?,
            "--settle-secs" => a.settle_secs = value()?.parse()?,
            "--max-rate" => a.max_rate = value()?.parse()?,
            "--skip-ingest" => a.skip_ingest = true,
            "--skip-vigil-memory" => a.skip_vigil_memory = true,
            "--skip-prometheus" => a.skip_prometheus = true,
            "--prometheus" => a.prometheus = PathBuf::from(value()?),
            "--collector-arg" => a.collector_args.push(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; {USAGE}"),
        }
    }
    if !a.skip_prometheus && !a.prometheus.is_file() {
        bail!(
            "{} is missing: install Debian's prometheus (2.42) or pass --skip-prometheus",
            a.prometheus.display()
        );
    }
    if a.nodes == 0 || a.history_secs == 0 || a.memory_series == 0 || a.connections == 0 {
        bail!("--nodes, --history-secs, --memory-series and --connections must be positive");
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let began = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("vigil-collector-bench-")
        .tempdir()
        .context("creating the work directory")?;
    let template = agent_template(work.path())?;
    let fleet = Fleet::new(template, SEED);
    let per_node = fleet.series_per_node();
    let memory_nodes = args.memory_series.div_ceil(per_node);
    let memory_series = memory_nodes * per_node;

    println!("collector-bench");
    println!(
        "  node = the real agent's series (vigil-agent --simulate-gpus 8 on this host): {per_node} series, \
         {} of them moving; same names and labels, per-node host name/UUIDs/MACs",
        fleet.template().moving_series()
    );
    println!(
        "  values move as the agent's were seen to: counters rise at the observed rate, gauges wander \
         at the observed step and precision, the rest stay constant"
    );
    println!(
        "  ingest: {} nodes x {per_node} series at 1 s = {} samples/s offered at most; OTLP/gRPC, gzip \
         (fast level), pre-encoded, {} connections; {} s window after >= {} s warm-up",
        args.nodes,
        args.nodes * per_node,
        args.connections,
        args.ingest_secs,
        args.warmup_secs
    );
    println!(
        "  memory: {memory_nodes} nodes = {memory_series} series x {} s of 1 s history in each store \
         (sized so Prometheus keeps up scraping every {} ms on 2 cores; uncompressed OTLP to ours); \
         RSS = VmRSS after {} s settle",
        args.history_secs, args.scrape_interval_ms, args.settle_secs
    );

    let ingest = if args.skip_ingest {
        None
    } else {
        Some(ingest_phase(&args, &fleet, work.path())?)
    };
    let vigil = if args.skip_vigil_memory {
        None
    } else {
        Some(vigil_memory(&args, &fleet, memory_nodes, work.path())?)
    };
    let prometheus = if args.skip_prometheus {
        None
    } else {
        Some(prometheus_memory(&args, &fleet, memory_nodes, work.path())?)
    };

    print_summary(
        &args,
        memory_series,
        ingest.as_ref(),
        vigil.as_ref(),
        prometheus.as_ref(),
    );
    println!("total run time {:.0} s", began.elapsed().as_secs_f64());
    Ok(())
}

/// Starts the real agent and reads its series twice, some seconds apart.
fn agent_template(work: &Path) -> anyhow::Result<Template> {
    let state = work.join("agent-state");
    std::fs::create_dir_all(&state)?;
    let addr = free_port()?;
    let _agent = ChildGuard(
        Command::new(binary("vigil-agent")?)
            .args(["--simulate-gpus", "8", "--interval", "1", "--listen"])
            .arg(addr.to_string())
            .arg("--state-dir")
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting vigil-agent")?,
    );
    wait_for_port(addr, Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_secs(2));
    let scrape = |accept: &[(&str, &str)]| -> anyhow::Result<String> {
        let r = http_get(addr, "/metrics", accept)?;
        if r.status != 200 {
            bail!("agent /metrics: status {}", r.status);
        }
        r.text()
    };
    let cycles = |text: &str| metric_sum(text, "vigil_agent_collections_total");
    let earlier = scrape(&[])?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    let later = scrape(&[])?;
    let openmetrics = scrape(&[("Accept", "application/openmetrics-text; version=1.0.0")])?;
    // The agent serves its last collection: the values are this many cycles apart.
    let interval_secs = match (cycles(&earlier), cycles(&later)) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => t.elapsed().as_secs_f64(),
    };
    Template::from_scrapes(&earlier, &later, interval_secs, &openmetrics)
}

/// A `vigil-collector` on free ports with its own data directory and a token.
struct CollectorProc {
    child: ChildGuard,
    listen: SocketAddr,
    grpc: SocketAddr,
    log: PathBuf,
}

impl CollectorProc {
    fn start(dir: &Path, extra: &[String]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let token_file = dir.join("tokens");
        std::fs::write(&token_file, format!("{TOKEN}\n"))?;
        let (listen, grpc, http) = (free_port()?, free_port()?, free_port()?);
        let log = dir.join("collector.log");
        let out = std::fs::File::create(&log)?;
        let child = ChildGuard(
            Command::new(binary("vigil-collector")?)
                .arg("--data-dir")
                .arg(dir.join("data"))
                .args(["--listen", &listen.to_string()])
                .args(["--otlp-grpc", &grpc.to_string()])
                .args(["--otlp-http", &http.to_string()])
                .arg("--token-file")
                .arg(&token_file)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .context("starting vigil-collector")?,
        );
        let mut me = Self {
            child,
            listen,
            grpc,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = me.child.0.try_wait()? {
                bail!("vigil-collector exited with {status}: {}", me.log_tail());
            }
            if let Ok(r) = http_get(listen, "/readyz", &[])
                && r.status == 200
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("vigil-collector not ready after 60 s: {}", me.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        wait_for_port(grpc, Duration::from_secs(10))?;
        Ok(me)
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn self_metrics(&self) -> anyhow::Result<String> {
        let auth = format!("Bearer {TOKEN}");
        let r = http_get(self.listen, "/metrics", &[("Authorization", &auth)])?;
        if r.status != 200 {
            bail!("collector /metrics: status {}", r.status);
        }
        r.text()
    }
}

struct IngestPhase {
    report: IngestReport,
    offered_per_sec: f64,
    encode_secs: f64,
    encoded_mib: f64,
    request_kib: f64,
    rss_after: ProcSample,
}

fn ingest_phase(args: &Args, fleet: &Fleet, work: &Path) -> anyhow::Result<IngestPhase> {
    let per_node = fleet.series_per_node();
    // Real-time pacing never needs more rounds than seconds in the run, and a collector
    // slower than --max-rate needs fewer; encoding what would never be sent costs minutes.
    let run_secs = (args.warmup_secs + args.ingest_secs) as f64;
    let for_max_rate =
        (args.max_rate * run_secs / (args.nodes * per_node) as f64).ceil() as usize + 2;
    let rounds = usize::try_from(args.warmup_secs + args.ingest_secs + 5)?.min(for_max_rate.max(3));
    let t0_ms = (now_ms() / 1000 - rounds as i64 - 120) * 1000;
    // Agents started an hour before: the counters' start-time zero samples fall
    // within retention.
    let agent_started = (t0_ms / 1000 - 3_600) as f64;
    println!(
        "\n[ingest] encoding {rounds} rounds x {} nodes before the clock starts...",
        args.nodes
    );
    let t = Instant::now();
    let frames = load::encode_rounds(fleet, args.nodes, rounds, t0_ms, Some(agent_started))?;
    let encode_secs = t.elapsed().as_secs_f64();
    let bytes: usize = frames.iter().flatten().map(|f| f.len()).sum();
    let requests = rounds * args.nodes;
    println!(
        "[ingest] {requests} requests, {:.0} MiB gzipped ({:.1} KiB each), encoded in {encode_secs:.0} s",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / requests as f64 / 1024.0
    );
    let collector = CollectorProc::start(&work.join("ingest"), &args.collector_args)?;
    let settings = IngestSettings {
        addr: collector.grpc,
        token: TOKEN.to_owned(),
        connections: args.connections,
        points_per_request: per_node,
        warmup: Duration::from_secs(args.warmup_secs),
        window: Duration::from_secs(args.ingest_secs),
        collector_pid: collector.pid(),
    };
    let report = load::run_ingest(&settings, Arc::new(frames))
        .with_context(|| format!("collector log:\n{}", collector.log_tail()))?;
    let rss_after = proc_sample(collector.pid())?;
    match collector.self_metrics() {
        Ok(text) => println!("[ingest] {}", store_note(&text)),
        Err(e) => println!("[ingest] collector /metrics: {e:#}"),
    }
    println!(
        "[ingest] {:.0} samples/s acked over {:.1} s; collector CPU {:.0}%, generator CPU {:.0}%, \
         machine busy {:.0}% (load average {:.1}); {} fleet-seconds taken; export latency p50 {:.1} ms \
         p99 {:.1} ms; {} rejected, {} errors{}",
        report.samples_per_sec,
        report.window_secs,
        report.collector_cpu_percent,
        report.generator_cpu_percent,
        report.machine_busy_percent,
        report.load_average,
        report.rounds_done,
        report.latency_p50_ms,
        report.latency_p99_ms,
        report.rejected,
        report.errors,
        report
            .first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    Ok(IngestPhase {
        offered_per_sec: (args.nodes * per_node) as f64,
        encode_secs,
        encoded_mib: bytes as f64 / (1 << 20) as f64,
        request_kib: bytes as f64 / requests as f64 / 1024.0,
        report,
        rss_after,
    })
}

/// What one store holds after the history load.
struct Memory {
    baseline: ProcSample,
    loaded: ProcSample,
    load_secs: f64,
    /// Active series the store reports in its own metrics.
    head_series: Option<f64>,
    /// Fleet series and their samples, counted by PromQL.
    series_counted: Option<f64>,
    samples_counted: Option<f64>,
    notes: Vec<String>,
}

fn history_t0_ms(history_secs: u64) -> i64 {
    // Starts a minute inside the hour so that the newest wall-clock samples (Prometheus's
    // own `up`) never push the first steps out of its head's appendable window.
    (now_ms() / 1000 - history_secs as i64 + 60) * 1000
}

/// Counts the fleet's series and samples through the PromQL API.
fn count_history(
    addr: SocketAddr,
    token: Option<&str>,
    t0_ms: i64,
    steps: u64,
    notes: &mut Vec<String>,
) -> (Option<f64>, Option<f64>) {
    let from = t0_ms / 1000;
    let to = from + i64::try_from(steps).unwrap_or(i64::MAX) - 1;
    match count_fleet_samples(addr, token, from, to) {
        Ok((series, samples)) => (Some(series as f64), Some(samples as f64)),
        Err(e) => {
            notes.push(format!(
                "counting samples through the query API failed: {e:#}"
            ));
            (None, None)
        }
    }
}

fn vigil_memory(args: &Args, fleet: &Fleet, nodes: usize, work: &Path) -> anyhow::Result<Memory> {
    let collector = CollectorProc::start(&work.join("memory"), &args.collector_args)?;
    std::thread::sleep(Duration::from_secs(1));
    let baseline = proc_sample(collector.pid())?;
    let t0_ms = history_t0_ms(args.history_secs);
    println!(
        "\n[vigil memory] sending {} s of history for {nodes} nodes...",
        args.history_secs
    );
    let connections = args.connections.min(nodes.div_ceil(2)).max(1);
    let report = load::load_history(
        fleet,
        nodes,
        usize::try_from(args.history_secs)?,
        t0_ms,
        collector.grpc,
        TOKEN,
        connections,
    )
    .with_context(|| format!("collector log:\n{}", collector.log_tail()))?;
    let load_secs = report.elapsed.as_secs_f64();
    println!(
        "[vigil memory] {} of {} samples acked in {load_secs:.0} s ({:.0}/s); {} rejected, {} errors{}",
        report.acked_samples,
        report.sent_samples,
        report.acked_samples as f64 / load_secs.max(f64::MIN_POSITIVE),
        report.rejected,
        report.errors,
        report
            .first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    std::thread::sleep(Duration::from_secs(args.settle_secs));
    let loaded = proc_sample(collector.pid())?;
    let mut notes = Vec::new();
    let head_series = match collector.self_metrics() {
        Ok(text) => {
            notes.push(store_note(&text));
            metric_sum(&text, "vigil_collector_store_series")
        }
        Err(e) => {
            notes.push(format!("collector /metrics: {e:#}"));
            None
        }
    };
    let (series_counted, samples_counted) = count_history(
        collector.listen,
        Some(TOKEN),
        t0_ms,
        args.history_secs,
        &mut notes,
    );
    if report.errors > 0 || report.rejected > 0 {
        notes.push(format!(
            "{} requests failed, {} samples rejected",
            report.errors, report.rejected
        ));
    }
    Ok(Memory {
        baseline,
        loaded,
        load_secs,
        head_series,
        series_counted,
        samples_counted,
        notes,
    })
}

/// The collector's own account of what it holds.
fn store_note(text: &str) -> String {
    let get = |name: &str| metric_sum(text, name).unwrap_or(f64::NAN);
    format!(
        "vigil: store series {:.0}, head samples {:.0}, compressed chunk bytes {:.1} MiB, appended {:.0}, \
         rejected {:.0}, WAL {:.0} MiB",
        get("vigil_collector_store_series"),
        get("vigil_collector_store_head_samples"),
        get("vigil_collector_store_chunk_bytes") / (1 << 20) as f64,
        get("vigil_collector_store_samples_appended_total"),
        get("vigil_collector_store_samples_rejected_total"),
        get("vigil_collector_store_wal_bytes") / (1 << 20) as f64,
    )
}

fn prometheus_memory(
    args: &Args,
    fleet: &Fleet,
    nodes: usize,
    work: &Path,
) -> anyhow::Result<Memory> {
    let steps = args.history_secs;
    let t0_ms = history_t0_ms(steps);
    let exporter = Exporter::start(fleet, nodes, steps, t0_ms)?;
    let prometheus = Prometheus::start(
        &args.prometheus,
        &work.join("prometheus"),
        &exporter.addrs,
        args.scrape_interval_ms,
    )?;
    let version = Command::new(&args.prometheus)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default();
    let baseline = proc_sample(prometheus.pid())?;
    println!(
        "\n[prometheus memory] {version}; scraping {nodes} targets every {} ms, {steps} steps each...",
        args.scrape_interval_ms
    );
    let total = nodes as u64 * steps;
    let started = Instant::now();
    // Twice the ideal time, plus start-up: Prometheus that cannot keep up is a finding.
    let limit =
        Duration::from_millis(steps * args.scrape_interval_ms * 4) + Duration::from_secs(60);
    let mut last_report = Instant::now();
    while exporter.served_steps() < total {
        if started.elapsed() > limit {
            bail!(
                "prometheus took only {} of {total} steps in {:?}; log: {}",
                exporter.served_steps(),
                limit,
                std::fs::read_to_string(prometheus.dir.join("prometheus.log")).unwrap_or_default()
            );
        }
        if last_report.elapsed() > Duration::from_secs(60) {
            println!(
                "[prometheus memory] {} of {total} steps after {:.0} s",
                exporter.served_steps(),
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let load_secs = started.elapsed().as_secs_f64();
    // The last scrapes' appends commit after the response is read.
    std::thread::sleep(Duration::from_millis(4 * args.scrape_interval_ms + 1000));
    let metrics = prometheus.self_metrics()?;
    let get = |name: &str| metric_sum(&metrics, name).unwrap_or(0.0);
    let mut notes = vec![format!(
        "prometheus: head samples appended {:.0}, out-of-bounds {:.0}, out-of-order {:.0}, duplicate {:.0}, \
         failed scrapes {:.0}; heap in use {:.1} MiB",
        get("prometheus_tsdb_head_samples_appended_total"),
        get("prometheus_target_scrapes_sample_out_of_bounds_total"),
        get("prometheus_target_scrapes_sample_out_of_order_total"),
        get("prometheus_target_scrapes_sample_duplicate_timestamp_total"),
        get("prometheus_target_scrapes_exceeded_body_size_limit_total")
            + get("prometheus_target_scrapes_exceeded_sample_limit_total"),
        get("go_memstats_heap_inuse_bytes") / (1 << 20) as f64,
    )];
    let up = query_scalar(prometheus.addr, None, "min(up)", now_ms() as f64 / 1000.0)
        .ok()
        .flatten()
        .unwrap_or(f64::NAN);
    if up != 1.0 {
        notes.push(format!("prometheus: min(up) = {up}: some scrapes failed"));
    }
    let range = format!("[{}s]", started.elapsed().as_secs() + 60);
    let failed = query_scalar(
        prometheus.addr,
        None,
        &format!("sum(count_over_time(up{range})) - sum(sum_over_time(up{range}))"),
        now_ms() as f64 / 1000.0,
    );
    notes.push(match failed {
        Ok(Some(n)) => {
            format!("prometheus: {n:.0} scrapes failed (timed out); their steps were served again")
        }
        Ok(None) => "prometheus: no up series".to_owned(),
        Err(e) => format!("prometheus: counting failed scrapes: {e:#}"),
    });
    let head_series = metric_sum(&metrics, "prometheus_tsdb_head_series");
    println!(
        "[prometheus memory] loaded in {load_secs:.0} s; head series {:.0}; min(up) {up}",
        head_series.unwrap_or(f64::NAN)
    );
    std::thread::sleep(Duration::from_secs(args.settle_secs));
    let loaded = proc_sample(prometheus.pid())?;
    let (series_counted, samples_counted) =
        count_history(prometheus.addr, None, t0_ms, steps, &mut notes);
    Ok(Memory {
        baseline,
        loaded,
        load_secs,
        head_series,
        series_counted,
        samples_counted,
        notes,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_summary(
    args: &Args,
    series: usize,
    ingest: Option<&IngestPhase>,
    vigil: Option<&Memory>,
    prometheus: Option<&Memory>,
) {
    println!("\n== collector-bench results ==");
    if let Some(i) = ingest {
        let r = &i.report;
        println!(
            "ingest   {:>12.0} samples/s acked (target >= 250000: {})  [{} nodes offer {:.0}/s at most; {}]",
            r.samples_per_sec,
            if r.samples_per_sec >= 250_000.0 {
                "met"
            } else {
                "NOT met"
            },
            args.nodes,
            i.offered_per_sec,
            if r.real_time {
                "kept up with the fleet in real time"
            } else {
                "fell behind real time: this is the collector's ceiling"
            }
        );
        let per_cpu_sec =
            r.samples_per_sec / (r.collector_cpu_percent / 100.0).max(f64::MIN_POSITIVE);
        println!(
            "         collector CPU {:.0}% (of 200%) = {per_cpu_sec:.0} samples per collector CPU-second; \
             load generator CPU {:.0}%; machine busy {:.0}%, load average {:.1}{}",
            r.collector_cpu_percent,
            r.generator_cpu_percent,
            r.machine_busy_percent,
            r.load_average,
            if r.machine_busy_percent > 90.0 && r.collector_cpu_percent < 170.0 {
                " (other processes took CPU: the rate is lower than on an idle machine)"
            } else {
                ""
            }
        );
        println!(
            "         window {:.1} s{}; p50/p99 export {:.1}/{:.1} ms; collector RSS after {:.0} MiB",
            r.window_secs,
            if r.ran_out {
                " (cut short: encoded rounds ran out)"
            } else {
                ""
            },
            r.latency_p50_ms,
            r.latency_p99_ms,
            mib(i.rss_after.rss_kib)
        );
        println!(
            "         pre-encoded {:.0} MiB ({:.1} KiB/request) in {:.0} s; {} rejected, {} failed requests",
            i.encoded_mib, i.request_kib, i.encode_secs, r.rejected, r.errors
        );
    }
    let per_series = |m: &Memory| m.loaded.rss_kib as f64 * 1024.0 / series as f64;
    let row = |what: &str, m: &Memory| {
        let samples_per_series = match (m.samples_counted, m.series_counted) {
            (Some(s), Some(n)) if n > 0.0 => format!("{:.1}", s / n),
            _ => "?".to_owned(),
        };
        println!(
            "{what:<11} RSS {:>7.1} MiB (anon {:.1}, file {:.1}; {:.1} before load) = {:>6.0} B/series \
             ({:.0} B/series above the empty process); series: {series} sent, {} counted, {} in head; \
             samples/series {samples_per_series}; loaded in {:.0} s",
            mib(m.loaded.rss_kib),
            mib(m.loaded.rss_anon_kib),
            mib(m.loaded.rss_file_kib),
            mib(m.baseline.rss_kib),
            per_series(m),
            (m.loaded.rss_kib.saturating_sub(m.baseline.rss_kib)) as f64 * 1024.0 / series as f64,
            m.series_counted
                .map_or("?".to_owned(), |v| format!("{v:.0}")),
            m.head_series.map_or("?".to_owned(), |v| format!("{v:.0}")),
            m.load_secs,
        );
        for n in &m.notes {
            println!("            note: {n}");
        }
    };
    println!(
        "memory   {series} series x {} s of 1 s samples (RSS per active series):",
        args.history_secs
    );
    if let Some(v) = vigil {
        row("  vigil", v);
    }
    if let Some(p) = prometheus {
        row("  prometheus", p);
    }
    if let (Some(v), Some(p)) = (vigil, prometheus) {
        let ratio = per_series(v) / per_series(p);
        println!(
            "ratio    vigil / prometheus RSS per series = {ratio:.2} (target <= 0.5: {})",
            if ratio <= 0.5 { "met" } else { "NOT met" }
        );
    }
}
