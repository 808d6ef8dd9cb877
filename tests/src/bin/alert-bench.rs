//! Fault → webhook latency: Vigil beside Prometheus 2.42 + Alertmanager 0.25.
//!
//! One `vigil-agent --simulate-gpus 8` ships to a real `vigil-collector` and is scraped
//! by Debian's Prometheus at the same time, so both pipelines see the very same fault at
//! the very same moment. A trial appends an Xid event with a code of its own to the
//! simulated GPUs' fault file; the latency is the time from the file's rename to the
//! webhook body naming that code arriving at a real HTTP listener (one path per
//! pipeline). Both sides evaluate the same rule (`vigil_gpu_xid_errors_total > 0`,
//! `for: 0s`) and route with the same Alertmanager configuration (grouped by
//! alertname, gpu and xid, so every trial is a group of its own).
//!
//! Two setups, each a fresh set of processes:
//! - **tuned**: agent every 1 s; Prometheus scrapes and evaluates every 1 s, the
//!   collector evaluates every 1 s; `group_wait: 0s`, `group_interval: 1s`. Trials run
//!   one after another, each injected at a random phase of the 1 s cycles.
//! - **defaults**: every program's own defaults (agent every 5 s, collector evaluation
//!   every 15 s, Prometheus scrape and evaluation every 1 m, `group_wait` 30 s,
//!   `group_interval` 5 m). Trials are injected spread over one minute and run
//!   concurrently, so this setup costs about four minutes rather than one hour.
//!
//! Percentiles are nearest-rank. A trial that did not arrive within its deadline is
//! counted as missed, not as a latency. The whole run is bounded: the tuned setup
//! waits at most `--trial-timeout-secs` per trial, the defaults setup at most 5
//! minutes after its last injection; a full run takes about 7 minutes.
//!
//! `./tests/alert-bench.sh` builds the release binaries and runs this.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use vigil_e2e::alerting::{
    ALERTMANAGER, Alertmanager, FaultFile, Faults, PROMETHEUS, PrometheusTimers,
    PrometheusWithRules, Received, WebhookListener,
};
use vigil_e2e::collector::{Collector, TestDir, series_of, wait_for};
use vigil_e2e::{ChildGuard, binary, free_port, wait_for_port};

const USAGE: &str = "usage: alert-bench [--trials N] [--trial-timeout-secs S] [--skip-defaults] \
[--skip-tuned] [--skip-vigil] [--skip-prometheus]";

struct Args {
    trials: usize,
    trial_timeout: Duration,
    skip_defaults: bool,
    skip_tuned: bool,
    skip_vigil: bool,
    skip_prometheus: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        trials: 20,
        trial_timeout: Duration::from_secs(20),
        skip_defaults: false,
        skip_tuned: false,
        skip_vigil: false,
        skip_prometheus: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--trials" => a.trials = value("--trials")?.parse().context("--trials")?,
            "--trial-timeout-secs" => {
                a.trial_timeout = Duration::from_secs(
                    value("--trial-timeout-secs")?
                        .parse()
                        .context("--trial-timeout-secs")?,
                );
            }
            "--skip-defaults" => a.skip_defaults = true,
            "--skip-tuned" => a.skip_tuned = true,
            "--skip-vigil" => a.skip_vigil = true,
            "--skip-prometheus" => a.skip_prometheus = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if a.trials == 0 || a.trials > 200 {
        bail!("--trials must be 1 to 200");
    }
    if a.skip_vigil && a.skip_prometheus {
        bail!("--skip-vigil and --skip-prometheus leave nothing to measure");
    }
    Ok(a)
}

/// The pipelines' timers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    Tuned,
    Defaults,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Tuned => "tuned",
            Setup::Defaults => "defaults",
        }
    }

    fn rules(self) -> String {
        let interval = match self {
            Setup::Tuned => "    interval: 1s\n",
            Setup::Defaults => "",
        };
        format!(
            "groups:\n  - name: alert-bench\n{interval}    rules:\n      - alert: GpuXidBench\n\
             \x20       expr: vigil_gpu_xid_errors_total > 0\n        for: 0s\n\
             \x20       labels:\n          severity: critical\n\
             \x20       annotations:\n          summary: 'Xid {{{{ $labels.xid }}}} on GPU {{{{ $labels.gpu }}}}'\n"
        )
    }

    fn alertmanager_config(self, url: &str) -> String {
        let timers = match self {
            Setup::Tuned => "  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n",
            Setup::Defaults => "",
        };
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname, gpu, xid]\n{timers}\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: '{url}'\n        send_resolved: false\n"
        )
    }
}

/// Latencies in seconds and the trials that never arrived, per pipeline.
#[derive(Default)]
struct Outcome {
    vigil: Vec<f64>,
    vigil_missed: usize,
    prometheus: Vec<f64>,
    prometheus_missed: usize,
}

/// The processes of one setup.
struct Bench {
    _collector: Option<Collector>,
    _agent: ChildGuard,
    _alertmanager: Option<Alertmanager>,
    _prometheus: Option<PrometheusWithRules>,
    hook: WebhookListener,
    faults: FaultFile,
    injected: Faults,
}

fn start(dir: &Path, setup: Setup, args: &Args) -> anyhow::Result<Bench> {
    let hook = WebhookListener::start()?;
    let rules = setup.rules();
    let faults = FaultFile::new(dir.join("faults.toml"));
    faults.write(&Faults::default())?;

    let collector = if args.skip_vigil {
        None
    } else {
        let rules_path = dir.join("vigil-rules.yml");
        std::fs::write(&rules_path, &rules)?;
        let am_path = dir.join("vigil-alertmanager.yml");
        std::fs::write(&am_path, setup.alertmanager_config(&hook.url("/vigil")))?;
        let rules_arg = rules_path.display().to_string();
        let am_arg = am_path.display().to_string();
        Some(Collector::start(
            dir,
            None,
            &["--rules", &rules_arg, "--alertmanager-config", &am_arg],
        )?)
    };

    let listen = free_port()?;
    let log = std::fs::File::create(dir.join("agent.log"))?;
    let mut cmd = Command::new(binary("vigil-agent")?);
    cmd.args(["--listen", &listen.to_string()])
        .args(["--node-name", "alert-bench"])
        .args(["--simulate-gpus", "8"])
        .arg("--simulate-faults")
        .arg(&faults.path)
        .arg("--state-dir")
        .arg(dir.join("agent-state"));
    if setup == Setup::Tuned {
        cmd.args(["--interval", "1"]);
    }
    if let Some(c) = &collector {
        cmd.args(["--collector", &format!("http://{}", c.otlp_grpc)]);
    }
    let agent = ChildGuard(
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting vigil-agent")?,
    );
    wait_for_port(listen, Duration::from_secs(20))?;

    let (alertmanager, prometheus) = if args.skip_prometheus {
        (None, None)
    } else {
        let am = Alertmanager::start(
            &dir.join("alertmanager"),
            &setup.alertmanager_config(&hook.url("/prometheus")),
        )?;
        let timers = PrometheusTimers {
            scrape_interval: "1s".into(),
            scrape_timeout: "900ms".into(),
            evaluation_interval: "1s".into(),
        };
        let prometheus = PrometheusWithRules::start(
            &dir.join("prometheus"),
            &[listen],
            &rules,
            am.addr,
            (setup == Setup::Tuned).then_some(&timers),
        )?;
        (Some(am), Some(prometheus))
    };

    // Both pipelines have the agent's GPUs before the first fault.
    if let Some(c) = &collector {
        wait_for(
            Duration::from_secs(60),
            "the agent's GPUs in the collector",
            || {
                let n = series_of(&c.query("DCGM_FI_DEV_GPU_TEMP", None)?)?.len();
                Ok((n >= 8).then_some(()))
            },
        )?;
    }
    if let Some(p) = &prometheus {
        let addr = p.addr;
        let deadline = if setup == Setup::Tuned { 30 } else { 150 };
        wait_for(
            Duration::from_secs(deadline),
            "the agent's GPUs in Prometheus",
            || {
                let path = vigil_e2e::collector::query_path("DCGM_FI_DEV_GPU_TEMP", None);
                let r = vigil_e2e::http_get(addr, &path, &[])?;
                let data = vigil_e2e::collector::api_data(&r, "prometheus query")?;
                Ok((series_of(&data)?.len() >= 8).then_some(()))
            },
        )?;
    }
    Ok(Bench {
        _collector: collector,
        _agent: agent,
        _alertmanager: alertmanager,
        _prometheus: prometheus,
        hook,
        faults,
        injected: Faults::default(),
    })
}

impl Bench {
    /// Appends an Xid event with `code` for GPU `gpu`; returns when the file was
    /// renamed into place.
    fn inject(&mut self, gpu: u32, code: u32) -> anyhow::Result<Instant> {
        self.injected = std::mem::take(&mut self.injected).xid(gpu, code);
        self.faults.write(&self.injected)?;
        Ok(Instant::now())
    }
}

/// When the first body on `path` naming Xid `code` arrived.
fn arrival(received: &[Received], path: &str, code: u32) -> Option<Instant> {
    let code = code.to_string();
    received
        .iter()
        .filter(|r| r.path == path)
        .find(|r| {
            r.json().is_ok_and(|b| {
                b["alerts"].as_array().is_some_and(|alerts| {
                    alerts
                        .iter()
                        .any(|a| a["labels"]["xid"].as_str() == Some(code.as_str()))
                })
            })
        })
        .map(|r| r.at)
}

/// A small deterministic generator for the injection phases (xorshift64*).
struct Jitter(u64);

impl Jitter {
    fn next_ms(&mut self, max_ms: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % max_ms.max(1)
    }
}

fn run_setup(root: &Path, setup: Setup, args: &Args) -> anyhow::Result<Outcome> {
    let dir = root.join(setup.name());
    std::fs::create_dir_all(&dir)?;
    eprintln!("alert-bench: {}: starting the processes", setup.name());
    let mut bench = start(&dir, setup, args)?;
    let mut jitter = Jitter(0x9e37_79b9_7f4a_7c15);
    let mut trials: Vec<(u32, Instant)> = Vec::with_capacity(args.trials);
    let paths: Vec<&str> = [
        (!args.skip_vigil).then_some("/vigil"),
        (!args.skip_prometheus).then_some("/prometheus"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let started = Instant::now();
    match setup {
        Setup::Tuned => {
            for i in 0..args.trials {
                std::thread::sleep(Duration::from_millis(500 + jitter.next_ms(1000)));
                let code = 1000 + i as u32;
                let t0 = bench.inject(i as u32 % 8, code)?;
                trials.push((code, t0));
                let _ = bench
                    .hook
                    .wait_for(args.trial_timeout, "the trial's webhooks", |r| {
                        Ok(paths
                            .iter()
                            .all(|p| arrival(r, p, code).is_some())
                            .then_some(()))
                    });
            }
        }
        Setup::Defaults => {
            let spread_ms = 60_000 / args.trials as u64;
            for i in 0..args.trials {
                let code = 2000 + i as u32;
                let t0 = bench.inject(i as u32 % 8, code)?;
                trials.push((code, t0));
                std::thread::sleep(Duration::from_millis(
                    spread_ms / 2 + jitter.next_ms(spread_ms),
                ));
            }
            let codes: Vec<u32> = trials.iter().map(|(c, _)| *c).collect();
            let _ = bench
                .hook
                .wait_for(Duration::from_secs(300), "every trial's webhooks", |r| {
                    Ok(codes
                        .iter()
                        .all(|c| paths.iter().all(|p| arrival(r, p, *c).is_some()))
                        .then_some(()))
                });
        }
    }
    let received = bench.hook.received();
    let mut outcome = Outcome::default();
    for (code, t0) in &trials {
        let latency =
            |path: &str| arrival(&received, path, *code).map(|at| (at - *t0).as_secs_f64());
        if !args.skip_vigil {
            match latency("/vigil") {
                Some(s) => outcome.vigil.push(s),
                None => outcome.vigil_missed += 1,
            }
        }
        if !args.skip_prometheus {
            match latency("/prometheus") {
                Some(s) => outcome.prometheus.push(s),
                None => outcome.prometheus_missed += 1,
            }
        }
    }
    eprintln!(
        "alert-bench: {}: {} trials in {:.0} s",
        setup.name(),
        trials.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(outcome)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn row(name: &str, latencies: &[f64], missed: usize) -> String {
    let mut sorted = latencies.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return format!(
            "{name:<70} {:>6} {:>8} {:>8} {:>8} {missed:>6}",
            0, "-", "-", "-"
        );
    }
    format!(
        "{name:<70} {:>6} {:>7.2}s {:>7.2}s {:>7.2}s {missed:>6}",
        sorted.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted[sorted.len() - 1],
    )
}

fn run(args: &Args) -> anyhow::Result<()> {
    if !args.skip_prometheus {
        for peer in [PROMETHEUS, ALERTMANAGER] {
            if !Path::new(peer).is_file() {
                bail!(
                    "{peer} is missing: install Debian's prometheus and prometheus-alertmanager (tests/run.sh does), or pass --skip-prometheus"
                );
            }
        }
    }
    let dir = TestDir::new("alert-bench")?;
    let result = (|| {
        let mut rows = Vec::new();
        for setup in [Setup::Tuned, Setup::Defaults] {
            if (setup == Setup::Tuned && args.skip_tuned)
                || (setup == Setup::Defaults && args.skip_defaults)
            {
                continue;
            }
            let outcome = run_setup(dir.path(), setup, args)?;
            rows.push((setup, outcome));
        }
        println!();
        println!(
            "fault (Xid written to the simulation's fault file) -> webhook body received; nearest-rank percentiles"
        );
        println!(
            "{:<70} {:>6} {:>8} {:>8} {:>8} {:>6}",
            "pipeline", "trials", "p50", "p99", "max", "missed"
        );
        for (setup, o) in &rows {
            let (vigil, prom) = match setup {
                Setup::Tuned => (
                    "vigil (agent 1s, eval 1s, group_wait 0)",
                    "prometheus 2.42 + alertmanager 0.25 (scrape/eval 1s, group_wait 0)",
                ),
                Setup::Defaults => (
                    "vigil defaults (agent 5s, eval 15s, group_wait 30s)",
                    "prometheus 2.42 + alertmanager 0.25 defaults (1m, 1m, 30s)",
                ),
            };
            if !args.skip_vigil {
                println!("{}", row(vigil, &o.vigil, o.vigil_missed));
            }
            if !args.skip_prometheus {
                println!("{}", row(prom, &o.prometheus, o.prometheus_missed));
            }
        }
        anyhow::Ok(())
    })();
    dir.finish(result)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("alert-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alert-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
