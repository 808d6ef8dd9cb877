//! The commands as a person runs them: `vigil up` prints where /metrics is and serves
//! it; the agent refuses a config file with an unknown key, naming key and line, and
//! prints its whole default config.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use vigil_e2e::{ChildGuard, binary, free_port, http_get, wait_for_port};

#[test]
fn vigil_up_runs_the_agent_and_says_where_metrics_is() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("vigil-e2e-up-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addr = free_port()?;
    let mut child = ChildGuard(
        Command::new(binary("vigil")?)
            .args(["up", "--demo", "--listen", &addr.to_string(), "--data-dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting vigil up")?,
    );
    let stdout = child.0.stdout.take().context("stdout")?;
    let mut stdout = BufReader::new(stdout);
    let mut first = String::new();
    stdout.read_line(&mut first)?;
    let url = format!("http://{addr}/metrics");
    ensure!(first.contains(&url), "vigil up said {first:?}, not {url}");
    wait_for_port(addr, Duration::from_secs(20))?;
    let text = http_get(addr, "/metrics", &[])?.text()?;
    ensure!(text.contains("node_cpu_seconds_total{"));
    ensure!(
        text.matches("DCGM_FI_DEV_GPU_UTIL{").count() == 8,
        "demo has no 8 GPUs"
    );
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
