//! `vigil up --demo` as a newcomer runs it.
//!
//! Headless (stdout is a pipe): it prints where the embedded collector, the agents and
//! the demo's receiver listen; a simulated node serves eight GPUs; within 60 s of the
//! start the collector's API shows a firing alert of a demo node (the fault injector's
//! first fault) and the notifier has recorded a notification delivered to the demo's
//! receiver; the first fault (a double-bit ECC error) is repaired within 60 s too: the
//! collector sends the demo's `reset-gpu` to the node's agent, which runs it, its
//! output is searchable, the fault injector resets the simulated GPU and the alert
//! resolves; everything runs in the one process; SIGINT stops it with exit status 0
//! within seconds and nothing listens afterwards.
//!
//! In a terminal (a 120×40 tmux pane on a private socket, killed when the test ends):
//! the dashboard opens on the demo fleet, shows the firing alert within 60 s on the
//! fleet and in the alerts view and the finished recovery in the actions view, and `q`
//! stops everything with exit status 0 and the
//! terminal given back.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;
use vigil_e2e::alerting::peers_present;
use vigil_e2e::collector::{TestDir, api_data, url_encode, wait_for};
use vigil_e2e::tmux::{self, Tmux};
use vigil_e2e::{ChildGuard, binary, http_get};

/// The promise: a firing alert and a notification within a minute of starting.
const ALERT_WITHIN: Duration = Duration::from_secs(60);
/// How long Ctrl-C may take to stop everything.
const STOP_WITHIN: Duration = Duration::from_secs(10);

#[test]
fn vigil_up_demo_fires_an_alert_notifies_and_stops_on_sigint() -> anyhow::Result<()> {
    let dir = TestDir::new("up-demo")?;
    let result = scenario(dir.path());
    dir.finish(result)
}

/// What `vigil up` printed: `vigil up: WHAT: WHERE` lines, and every line in order.
struct Printed {
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Printed {
    /// Reads lines until one contains `want`, at most until `deadline`.
    fn until(&mut self, want: &str, deadline: Instant) -> anyhow::Result<()> {
        while !self.seen.iter().any(|l| l.contains(want)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => bail!(
                    "vigil up never printed {want:?}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
        Ok(())
    }

    /// Every line read so far, and those waiting.
    fn drain(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// `WHAT` → `WHERE` of the lines read so far.
    fn listening(&self) -> BTreeMap<String, String> {
        self.seen
            .iter()
            .filter_map(|l| l.strip_prefix("vigil up: "))
            .filter_map(|l| l.split_once(": "))
            .map(|(what, at)| (what.to_owned(), at.to_owned()))
            .collect()
    }
}

/// The address of the first `http://ADDR...` in `text`.
fn addr_in(text: &str) -> anyhow::Result<SocketAddr> {
    let rest = text
        .split_once("http://")
        .with_context(|| format!("no URL in {text:?}"))?
        .1;
    let end = rest.find(['/', ',', ' ']).unwrap_or(rest.len());
    rest[..end]
        .parse()
        .with_context(|| format!("bad address in {text:?}"))
}

fn api(addr: SocketAddr, path: &str) -> anyhow::Result<Value> {
    api_data(&http_get(addr, path, &[])?, path)
}

fn scenario(dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let data = dir.join("data");
    let log = std::fs::File::create(dir.join("vigil-up.log"))?;
    let mut child = ChildGuard(
        Command::new(binary("vigil")?)
            .args(["up", "--demo", "--data-dir"])
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--otlp-grpc", "127.0.0.1:0"])
            .args([
                "--otlp-http",
                "127.0.0.1:0",
                "--agent-listen",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting vigil up --demo")?,
    );
    let pid = child.0.id();
    let stdout = child.0.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    // Read on a thread of its own, so the pipe never fills while the test polls.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut printed = Printed {
        lines: rx,
        seen: Vec::new(),
    };
    printed.until("Ctrl-C stops everything", started + Duration::from_secs(30))?;
    let listening = printed.listening();
    let get = |what: &str| {
        listening
            .get(what)
            .with_context(|| format!("vigil up did not say where {what:?} is: {listening:?}"))
    };
    let api_addr = addr_in(get("collector API")?)?;
    for what in ["OTLP gRPC", "OTLP HTTP", "demo notifications", "data"] {
        get(what)?;
    }
    ensure!(
        listening
            .keys()
            .any(|k| k.starts_with("agent for this machine")),
        "no agent for this machine: {listening:?}"
    );
    let nodes: Vec<(&String, &String)> = listening
        .iter()
        .filter(|(k, _)| k.starts_with("demo node demo-node-"))
        .collect();
    ensure!(nodes.len() == 3, "not 3 demo nodes: {listening:?}");

    // A simulated node serves its eight GPUs through the agent's real NVML code path.
    let node_metrics = addr_in(nodes[0].1)?;
    let gpus = wait_for(Duration::from_secs(15), "a demo node's GPUs", || {
        let text = http_get(node_metrics, "/metrics", &[])?.text()?;
        let n = text.matches("DCGM_FI_DEV_GPU_UTIL{").count();
        Ok((n > 0).then_some(n))
    })?;
    ensure!(gpus == 8, "a demo node has {gpus} GPUs, not 8");

    // The fault injector's first fault fires a GPU-pack alert on a demo node.
    let left = ALERT_WITHIN.saturating_sub(started.elapsed());
    let firing = wait_for(left, "a firing alert of a demo node", || {
        let data = api(api_addr, "/api/v1/alerts")?;
        Ok(data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| {
                a["state"] == "firing"
                    && a["labels"]["node"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("demo-node-"))
            })
            .cloned())
    })?;
    let alertname = firing["labels"]["alertname"]
        .as_str()
        .context("alert without a name")?
        .to_owned();

    // The notifier delivered it to the demo's receiver and recorded that.
    let left = ALERT_WITHIN.saturating_sub(started.elapsed());
    wait_for(left, "a recorded notification", || {
        let data = api(api_addr, "/api/v1/notifications")?;
        let notified = data["groups"].as_array().into_iter().flatten().any(|g| {
            g["lastNotifiedAt"].is_string() && g["labels"]["alertname"] == alertname.as_str()
        });
        let delivered = data["receivers"].as_array().into_iter().flatten().any(|r| {
            r["integrations"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|i| i["kind"] == "webhook" && i["lastAttempt"]["ok"] == true)
        });
        Ok((notified && delivered).then_some(()))
    })?;
    let said = format!("notification: FIRING {alertname} on demo-node-");
    printed.until(&said, Instant::now() + Duration::from_secs(10))?;
    let kept = std::fs::read_to_string(data.join("demo/notifications.jsonl"))
        .context("reading the demo's notifications.jsonl")?;
    ensure!(kept.contains(&alertname), "{kept}");
    ensure!(
        printed
            .drain()
            .iter()
            .any(|l| l.starts_with("vigil up: demo fault on demo-node-")),
        "the injected fault was not announced"
    );

    // The first fault, a double-bit ECC error, is repaired: the collector decided to
    // run reset-gpu on its node, the agent ran it, the injector reset the GPU.
    let left = ALERT_WITHIN.saturating_sub(started.elapsed());
    let action = wait_for(left, "a finished recovery on a demo node", || {
        let data = api(api_addr, "/api/v1/actions")?;
        Ok(data["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["script"] == "reset-gpu" && a["state"] == "succeeded")
            .cloned())
    })?;
    ensure!(
        action["alertname"] == "GpuEccDoubleBitError" && action["exit_code"] == 0,
        "{action}"
    );
    let (node, gpu) = (
        action["node"].as_str().context("action without a node")?,
        action["args"]["gpu"]
            .as_str()
            .context("action without a gpu")?,
    );
    printed.until(
        &format!("demo recovery: reset-gpu reset {node} GPU {gpu}"),
        Instant::now() + Duration::from_secs(10),
    )?;
    let id = action["id"].as_str().context("action without an id")?;
    let query = url_encode(&format!("source:\"recovery:{id}\""));
    wait_for(
        Duration::from_secs(10),
        "the script's output in the logs",
        || {
            let data = api(api_addr, &format!("/api/v1/logs/search?q={query}"))?;
            Ok(data["hits"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|h| {
                    h["body"].as_str().is_some_and(|b| {
                        b.contains(&format!("resetting simulated GPU {gpu} of {node}"))
                    })
                })
                .then_some(()))
        },
    )?;
    wait_for(
        Duration::from_secs(30),
        "the repaired alert to resolve",
        || {
            let data = api(api_addr, "/api/v1/alerts")?;
            let still = data["alerts"].as_array().into_iter().flatten().any(|a| {
                a["labels"]["alertname"] == "GpuEccDoubleBitError"
                    && a["labels"]["node"] == node
                    && a["labels"]["gpu"] == gpu
            });
            Ok((!still).then_some(()))
        },
    )?;

    // Collector and agents are in this one process: no child processes to leave behind.
    let children = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(Result::ok)
        .map(|t| std::fs::read_to_string(t.path().join("children")).unwrap_or_default())
        .collect::<String>();
    ensure!(
        children.trim().is_empty(),
        "vigil up has children: {children}"
    );

    // Ctrl-C stops everything cleanly and quickly.
    // SAFETY: kill(2) with a pid of a child this test started and has not reaped.
    let sent = unsafe { libc::kill(libc::pid_t::try_from(pid)?, libc::SIGINT) };
    ensure!(sent == 0, "kill: {}", std::io::Error::last_os_error());
    let asked = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        ensure!(
            asked.elapsed() < STOP_WITHIN,
            "vigil up still running {STOP_WITHIN:?} after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    ensure!(
        status.success(),
        "vigil up exited with {status} after SIGINT"
    );
    printed.until("vigil up: stopped", Instant::now() + Duration::from_secs(5))?;
    ensure!(
        TcpStream::connect_timeout(&api_addr, Duration::from_millis(500)).is_err(),
        "the collector API still answers after exit"
    );
    eprintln!(
        "vigil up --demo: {alertname} firing and notified, stopped in {:?}; {:?} in all",
        asked.elapsed(),
        started.elapsed()
    );
    Ok(())
}

#[test]
fn vigil_up_demo_in_tmux_shows_an_alert_and_its_recovery_and_quits_cleanly() -> anyhow::Result<()> {
    if !peers_present(&[("tmux", tmux::present())])? {
        return Ok(());
    }
    let dir = TestDir::new("up-demo-tmux")?;
    let result = in_tmux(dir.path());
    dir.finish(result)
}

/// The fault injector's first fault and the alert the GPU pack raises for it.
const FIRST_ALERT: &str = "GpuEccDoubleBitError";

fn in_tmux(dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let vigil = binary("vigil")?;
    let data = dir.join("data");
    // The shell around vigil up says how it ended, on the normal screen.
    let command = format!(
        "'{}' up --demo --data-dir '{}' --listen 127.0.0.1:0 --otlp-grpc 127.0.0.1:0 \
         --otlp-http 127.0.0.1:0 --agent-listen 127.0.0.1:0; \
         echo \"vigil up exited with $?\"; sleep 60",
        vigil.display(),
        data.display()
    );
    let tmux = Tmux::start("up", 120, 40, &command)?;
    tmux.wait_screen("the demo fleet", Duration::from_secs(30), |s| {
        (1..=3).all(|i| s.contains(&format!("demo-node-{i} "))) && s.contains("Fleet")
    })?;
    let left = ALERT_WITHIN.saturating_sub(started.elapsed());
    tmux.wait_screen("the firing alert on a demo node's row", left, |s| {
        s.lines()
            .any(|l| l.contains("demo-node-") && l.contains(FIRST_ALERT))
    })?;
    tmux.keys(&["3"])?;
    let screen = tmux.wait_screen("the alerts view", Duration::from_secs(10), |s| {
        s.contains("SUMMARY") && s.contains(FIRST_ALERT)
    })?;
    let line = screen
        .lines()
        .find(|l| l.contains(FIRST_ALERT) && l.contains("demo-node-"))
        .with_context(|| format!("no {FIRST_ALERT} line of a demo node:\n{screen}"))?;
    ensure!(line.starts_with("firing"), "not firing: {line:?}");

    // The actions view: the first fault's repair, finished, within the same minute.
    tmux.keys(&["4"])?;
    let left = ALERT_WITHIN.saturating_sub(started.elapsed());
    tmux.wait_screen("a finished recovery in the actions view", left, |s| {
        s.lines()
            .any(|l| l.contains("reset-gpu") && l.contains("demo-node-") && l.contains("succeeded"))
    })?;

    tmux.keys(&["q"])?;
    let screen = tmux.wait_screen("vigil up to exit", STOP_WITHIN, |s| {
        s.contains("vigil up exited with")
    })?;
    ensure!(
        screen.contains("vigil up exited with 0"),
        "vigil up failed:\n{screen}"
    );
    ensure!(
        !screen.contains("HLTH"),
        "the dashboard is still on screen (alternate screen not left):\n{screen}"
    );
    eprintln!(
        "vigil up --demo in tmux: {FIRST_ALERT} and its recovery on screen and quit; {:?} in all",
        started.elapsed()
    );
    Ok(())
}
