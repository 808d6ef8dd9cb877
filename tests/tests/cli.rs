//! The commands as a person runs them: `vigil up` prints where /metrics is and serves
//! it; the agent refuses a config file with an unknown key, naming key and line, and
//! prints its whole default config; `vigil alerts` and `vigil alerts history` read a
//! real collector's alerts (with its API token), say which collector they cannot reach,
//! and `vigil silence add` names a bad matcher before it sends anything.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use vigil_e2e::collector::{Collector, TestDir, wait_for};
use vigil_e2e::{ChildGuard, binary, free_port, http_get, wait_for_port};

#[test]
fn vigil_up_runs_the_agent_and_says_where_metrics_is() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("vigil-e2e-up-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addr = free_port()?;
    let mut child = ChildGuard(
        Command::new(binary("vigil")?)
            .args(["up", "--agent-listen", &addr.to_string(), "--data-dir"])
            .arg(&dir)
            // The embedded collector on ports of its own (0: any free one).
            .args(["--listen", "127.0.0.1:0", "--otlp-grpc", "127.0.0.1:0"])
            .args(["--otlp-http", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting vigil up")?,
    );
    let stdout = child.0.stdout.take().context("stdout")?;
    let mut stdout = BufReader::new(stdout);
    let url = format!("http://{addr}/metrics");
    let mut said = String::new();
    // Headless (stdout is a pipe), it says where each part listens, one line each.
    while !said.contains("Ctrl-C") {
        ensure!(
            stdout.read_line(&mut said)? > 0,
            "vigil up stopped saying: {said}"
        );
    }
    ensure!(
        said.lines()
            .any(|l| l.starts_with("vigil up: agent for this machine") && l.ends_with(&url)),
        "vigil up said {said:?}, not {url}"
    );
    ensure!(
        said.contains("vigil up: collector API: http://127.0.0.1:"),
        "{said}"
    );
    wait_for_port(addr, Duration::from_secs(20))?;
    let text = http_get(addr, "/metrics", &[])?.text()?;
    ensure!(text.contains("node_cpu_seconds_total{"));
    drop(child);
    drop(stdout);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn agent_names_an_unknown_config_key_and_its_line() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("vigil-e2e-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("agent.toml");
    std::fs::write(&config, "interval_secs = 2\n\n[gpu]\nexpected_gpus = 8\n")?;
    let output = Command::new(binary("vigil-agent")?)
        .arg("--config")
        .arg(&config)
        .output()?;
    ensure!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(stderr.contains("expected_gpus"), "{stderr}");
    ensure!(stderr.contains("line 4"), "{stderr}");
    ensure!(
        stderr.contains(config.to_str().context("path")?),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn agent_prints_its_whole_commented_default_config() -> anyhow::Result<()> {
    let output = Command::new(binary("vigil-agent")?)
        .arg("--print-default-config")
        .output()?;
    ensure!(output.status.success());
    let text = String::from_utf8(output.stdout)?;
    for key in [
        "listen",
        "interval_secs",
        "[paths]",
        "[gpu]",
        "simulate_faults",
    ] {
        ensure!(text.contains(key), "default config lacks {key}");
    }
    ensure!(
        text.lines().filter(|l| l.starts_with('#')).count() > 10,
        "not commented"
    );
    Ok(())
}

/// `vigil ARGS...`: (success, stdout, stderr).
fn run_vigil(args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let output = Command::new(binary("vigil")?)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running vigil")?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[test]
fn vigil_alerts_says_which_collector_it_cannot_reach() -> anyhow::Result<()> {
    // A port that was free a moment ago: nothing listens there.
    let url = format!("http://{}", free_port()?);
    for args in [
        vec!["alerts", "--collector", &url],
        vec!["alerts", "history", "--collector", &url, "--json"],
        vec!["silence", "list", "--collector", &url],
    ] {
        let (ok, stdout, stderr) = run_vigil(&args)?;
        ensure!(!ok, "vigil {args:?} succeeded: {stdout}");
        ensure!(
            stderr.contains(&format!("cannot reach the collector at {url}: ")),
            "vigil {args:?}: {stderr}"
        );
    }
    Ok(())
}

#[test]
fn vigil_silence_add_names_a_bad_matcher_before_sending() -> anyhow::Result<()> {
    let url = format!("http://{}", free_port()?);
    let (ok, _, stderr) = run_vigil(&[
        "silence",
        "add",
        "alertname=GpuFellOffBus",
        "node=~\"gpu-0[1-3]",
        "--comment",
        "reseat",
        "--collector",
        &url,
    ])?;
    ensure!(!ok);
    ensure!(
        stderr.contains("node=~\\\"gpu-0[1-3]") && stderr.contains("unterminated"),
        "{stderr}"
    );
    ensure!(
        !stderr.contains("cannot reach"),
        "it tried to send: {stderr}"
    );
    let (ok, _, stderr) = run_vigil(&[
        "silence",
        "add",
        "node=gpu-01",
        "--duration",
        "forever",
        "--comment",
        "x",
        "--collector",
        &url,
    ])?;
    ensure!(!ok && stderr.contains("--duration \"forever\""), "{stderr}");
    Ok(())
}

#[test]
fn vigil_alerts_lists_a_real_collectors_alerts_and_history() -> anyhow::Result<()> {
    let dir = TestDir::new("cli-alerts")?;
    let result = alerts_scenario(dir.path());
    dir.finish(result)
}

fn alerts_scenario(dir: &std::path::Path) -> anyhow::Result<()> {
    let rules = dir.join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: cli\n    interval: 1s\n    rules:\n\
         \x20     - alert: CliAlwaysFiring\n        expr: vector(1)\n\
         \x20       labels:\n          node: cli-node-01\n          severity: info\n\
         \x20       annotations:\n          summary: always firing, for the CLI test\n",
    )?;
    let tokens = dir.join("api-tokens");
    std::fs::write(&tokens, "# role token\nread cli-read-token\n")?;
    let rules_arg = rules.display().to_string();
    let tokens_arg = tokens.display().to_string();
    let collector = Collector::start(
        dir,
        None,
        &["--rules", &rules_arg, "--api-token-file", &tokens_arg],
    )?;
    let url = format!("http://{}", collector.listen);

    // Without the token the collector refuses, and the CLI says what to do.
    let (ok, _, stderr) = run_vigil(&["alerts", "--collector", &url])?;
    ensure!(!ok && stderr.contains("401"), "{stderr}");
    ensure!(stderr.contains("--token-file"), "{stderr}");

    let table = wait_for(
        Duration::from_secs(30),
        "CliAlwaysFiring in `vigil alerts`",
        || {
            let (ok, stdout, stderr) =
                run_vigil(&["alerts", "--collector", &url, "--token-file", &tokens_arg])?;
            ensure!(ok, "{stderr}");
            Ok(stdout.contains("CliAlwaysFiring").then_some(stdout))
        },
    )?;
    let row = table
        .lines()
        .find(|l| l.contains("CliAlwaysFiring"))
        .context("no row")?;
    ensure!(
        table.starts_with("STATE") && row.starts_with("firing"),
        "{table}"
    );
    for cell in [
        "cli-node-01",
        "info",
        "always firing, for the CLI test",
        " ago)",
    ] {
        ensure!(row.contains(cell), "no {cell:?} in {row:?}");
    }

    let (ok, stdout, stderr) = run_vigil(&[
        "alerts",
        "--json",
        "--collector",
        &url,
        "--token-file",
        &tokens_arg,
    ])?;
    ensure!(ok, "{stderr}");
    let alerts: serde_json::Value = serde_json::from_str(&stdout)?;
    ensure!(
        alerts.as_array().is_some_and(|a| a
            .iter()
            .any(|a| a["labels"]["alertname"] == "CliAlwaysFiring" && a["state"] == "firing")),
        "{stdout}"
    );

    let (ok, stdout, stderr) = run_vigil(&[
        "alerts",
        "history",
        "--since",
        "5m",
        "--alertname",
        "CliAlwaysFiring",
        "--node",
        "cli-node-01",
        "--collector",
        &url,
        "--token-file",
        &tokens_arg,
    ])?;
    ensure!(ok, "{stderr}");
    ensure!(
        stdout.starts_with("TIME")
            && stdout.lines().any(|l| l.contains("firing")
                && l.contains("CliAlwaysFiring")
                && l.contains("cli-node-01")),
        "{stdout}"
    );
    let (ok, stdout, _) = run_vigil(&[
        "alerts",
        "history",
        "--alertname",
        "NoSuchAlert",
        "--collector",
        &url,
        "--token-file",
        &tokens_arg,
    ])?;
    ensure!(ok && stdout == "no alert events in that time\n", "{stdout}");
    Ok(())
}
