//! `vigil dash` as a person sees it: the real binary in a 120×40 tmux pane against a
//! real collector (API token, a one-rule rule file, a notifier for silences) with an
//! agent of 8 simulated GPUs shipping to it, one of them running hot. The test reads
//! the screen with `tmux capture-pane` after each key: the node's row in the fleet,
//! Enter to its GPU gauges and host panel, Tab to the firing alert, `s` and Enter to
//! silence it through the collector's API, Esc back to the fleet, `4` to the logs view
//! with a query for a line of a file the agent tails (and `t`, the live tail, showing
//! a line written after it), the collector killed
//! (a banner, the last data kept), and `q` to quit with the terminal given back. tmux runs on a private socket and is killed when the test ends, pass or fail.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use vigil_e2e::alerting::peers_present;
use vigil_e2e::collector::{Collector, ShippingAgent, TestDir, wait_for};
use vigil_e2e::tmux::{self, Tmux};
use vigil_e2e::{binary, http_get};

const NODE: &str = "gpu-node-dash";
const TOKEN: &str = "dash-e2e-admin-7c1f";
const ALERT: &str = "DashE2eGpuHot";

/// The fleet row of `node`: it names the node and shows its 8 GPUs' temperatures.
fn node_row<'a>(screen: &'a str, node: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.contains(node) && l.contains("°C") && l.contains('%'))
}

#[test]
fn dash_in_tmux_shows_the_fleet_a_node_and_its_alert() -> anyhow::Result<()> {
    if !peers_present(&[("tmux", tmux::present())])? {
        return Ok(());
    }
    let dir = TestDir::new("dash-tmux")?;
    let result = run(dir.path());
    dir.finish(result)
}

fn run(dir: &std::path::Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let tokens = dir.join("api-tokens");
    std::fs::write(&tokens, format!("admin {TOKEN}\n"))?;
    let rules = dir.join("rules.yml");
    std::fs::write(
        &rules,
        format!(
            "groups:\n  - name: dash-e2e\n    interval: 1s\n    rules:\n      - alert: {ALERT}\n        \
             expr: DCGM_FI_DEV_GPU_TEMP > 90\n        labels:\n          severity: warning\n        \
             annotations:\n          summary: GPU {{{{ $labels.gpu }}}} runs at {{{{ $value }}}}°C\n"
        ),
    )?;
    let am = dir.join("alertmanager.yml");
    std::fs::write(
        &am,
        "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n",
    )?;
    let faults = dir.join("faults.toml");
    std::fs::write(&faults, "[[gpu]]\nindex = 3\ntemperature_c = 95\n")?;
    let mut collector = Collector::start(
        dir,
        None,
        &[
            "--api-token-file",
            path_str(&tokens)?,
            "--rules",
            path_str(&rules)?,
            "--alertmanager-config",
            path_str(&am)?,
        ],
    )?;
    let app_logs = dir.join("app");
    std::fs::create_dir_all(&app_logs)?;
    let train_log = app_logs.join("train.log");
    std::fs::write(&train_log, "")?;
    let glob = format!("{}/*.log", app_logs.display());
    let agent = ShippingAgent::start(
        dir,
        NODE,
        &collector,
        &["--simulate-faults", path_str(&faults)?, "--log-file", &glob],
    )?;
    let auth = format!("Bearer {TOKEN}");
    wait_for(Duration::from_secs(20), "the node in /api/v1/nodes", || {
        let r = http_get(
            collector.listen,
            "/api/v1/nodes",
            &[("Authorization", &auth)],
        )?;
        Ok((r.status == 200 && r.text()?.contains(NODE)).then_some(()))
    })?;

    // A line in the tailed file, for the logs view to find.
    agent.wait_tailing(1.0, Duration::from_secs(15))?;
    let marker = format!("dashmarker{}", std::process::id());
    append_line(
        &train_log,
        &format!("epoch 3 step 1200 loss 0.731 {marker}"),
    )?;

    // The shell around vigil dash says how it ended, on the normal screen.
    let command = format!(
        "'{}' dash --collector 'http://{}' --token-file '{}'; echo \"vigil dash exited with $?\"; sleep 60",
        path_str(&binary("vigil")?)?,
        collector.listen,
        path_str(&tokens)?
    );
    let tmux = Tmux::start("dash", 120, 40, &command)?;

    let screen = tmux.wait_screen("the node's row", Duration::from_secs(15), |s| {
        node_row(s, NODE).is_some()
    })?;
    let row = node_row(&screen, NODE).unwrap_or_default();
    ensure!(
        row.contains(" 8 "),
        "the row shows no 8 GPUs: {row:?}\n{screen}"
    );
    ensure!(screen.contains("● live"), "no live mark:\n{screen}");
    let screen = tmux.wait_screen(
        "the hot GPU's alert on the row",
        Duration::from_secs(20),
        |s| node_row(s, NODE).is_some_and(|r| r.contains("95°C") && r.contains("1!")),
    )?;
    let row = node_row(&screen, NODE).unwrap_or_default();
    ensure!(row.trim_start().starts_with("warn"), "not warn: {row:?}");

    tmux.keys(&["Enter"])?;
    let screen = tmux.wait_screen("the node view's GPU gauges", Duration::from_secs(10), |s| {
        s.contains("THROTTLE")
            && s.contains("host")
            && s.lines().any(|l| l.starts_with("7 ") && l.contains('%'))
    })?;
    ensure!(
        screen.contains(&format!(" {NODE} ")),
        "no node title:\n{screen}"
    );
    let gpu3 = screen
        .lines()
        .find(|l| l.starts_with("3 "))
        .context("no GPU 3 row")?;
    ensure!(
        gpu3.contains("95°C"),
        "GPU 3 is not hot: {gpu3:?}\n{screen}"
    );
    ensure!(
        screen.contains("Xid timeline"),
        "no Xid timeline:\n{screen}"
    );

    tmux.keys(&["Tab"])?;
    let screen = tmux.wait_screen("the alerts view", Duration::from_secs(10), |s| {
        s.contains("SUMMARY") && s.contains(ALERT)
    })?;
    let line = screen
        .lines()
        .find(|l| l.contains(ALERT) && l.contains(NODE))
        .with_context(|| format!("no alert line for {NODE}:\n{screen}"))?;
    ensure!(line.starts_with("firing"), "not firing: {line:?}");
    ensure!(line.contains("GPU 3 runs at 95"), "no summary: {line:?}");

    tmux.keys(&["s"])?;
    tmux.wait_screen("the silence prompt", Duration::from_secs(5), |s| {
        s.contains("silence alert") && s.contains("2h")
    })?;
    tmux.keys(&["Enter"])?;
    tmux.wait_screen("the silence's id", Duration::from_secs(10), |s| {
        s.contains("silence ") && s.contains(" created until ")
    })?;
    let r = http_get(
        collector.listen,
        "/api/v1/silences",
        &[("Authorization", &auth)],
    )?;
    let silences = r.text()?;
    ensure!(
        silences.contains(ALERT) && silences.contains("silenced from vigil dash"),
        "the collector has no such silence: {silences}"
    );

    tmux.keys(&["Escape"])?;
    tmux.wait_screen("the fleet again", Duration::from_secs(5), |s| {
        node_row(s, NODE).is_some()
    })?;

    // The logs view (the fifth tab): a query for the file's line, then the live tail.
    tmux.keys(&["5"])?;
    tmux.wait_screen("the logs view", Duration::from_secs(5), |s| {
        s.contains(" query ") && s.contains("LINE")
    })?;
    tmux.keys(&["/"])?;
    tmux.keys(&["-l", &marker])?;
    tmux.keys(&["Enter"])?;
    // The query has run once the line shows it without the cursor.
    let screen = tmux.wait_screen(
        "the query's answer in the logs view",
        Duration::from_secs(10),
        |s| {
            s.lines()
                .any(|l| l.trim_end() == format!(" query {marker}"))
                && s.lines()
                    .any(|l| l.contains("step 1200 loss 0.731") && l.contains(NODE))
        },
    )?;
    ensure!(
        screen.contains("/app/train.log") && screen.contains("1 records"),
        "no source or count:\n{screen}"
    );
    tmux.keys(&["t"])?;
    tmux.wait_screen("the tail on", Duration::from_secs(5), |s| {
        s.contains("tail on")
    })?;
    append_line(
        &train_log,
        &format!("epoch 3 step 1201 loss 0.729 {marker}"),
    )?;
    tmux.wait_screen(
        "the new line through the tail",
        Duration::from_secs(10),
        |s| s.contains("step 1201 loss 0.729") && s.contains("step 1200 loss 0.731"),
    )?;
    tmux.keys(&["Escape"])?;
    tmux.wait_screen("the fleet after the logs", Duration::from_secs(5), |s| {
        node_row(s, NODE).is_some()
    })?;
    // The collector goes away: a banner, the last data stays, no crash.
    collector.kill()?;
    let screen = tmux.wait_screen("the collector-down banner", Duration::from_secs(10), |s| {
        s.contains("collector unreachable") && s.contains("offline")
    })?;
    ensure!(
        node_row(&screen, NODE).is_some(),
        "the last data is gone:\n{screen}"
    );
    tmux.keys(&["q"])?;
    let screen = tmux.wait_screen("vigil dash to exit", Duration::from_secs(10), |s| {
        s.contains("vigil dash exited with")
    })?;
    ensure!(
        screen.contains("vigil dash exited with 0"),
        "vigil dash failed:\n{screen}"
    );
    ensure!(
        !screen.contains("HLTH"),
        "the dashboard is still on screen (alternate screen not left):\n{screen}"
    );
    eprintln!("dash_tmux took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn append_line(path: &std::path::Path, line: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    writeln!(f, "{line}")?;
    f.sync_all()?;
    Ok(())
}

fn path_str(path: &std::path::Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
