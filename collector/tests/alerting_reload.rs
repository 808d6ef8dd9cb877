//! Reloading rule files: on change (file watch) and on request (SIGHUP), keeping the
//! running rules when the new files are invalid and the state of rules that stay.

mod alerting_common;
mod api_common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alerting_common::{config, start_with, write_rules};
use anyhow::{Context as _, Result, bail};
use serde_json::Value;

const V1: &str = r#"groups:
  - name: temp
    interval: 1s
    rules:
      - alert: Hot
        expr: temp_celsius > 90
        for: 1s
"#;

const V2: &str = r#"groups:
  - name: temp
    interval: 1s
    rules:
      - record: node:temp_celsius:max
        expr: max by (node) (temp_celsius)
      - alert: Hot
        expr: temp_celsius > 90
        for: 1s
"#;

fn rule_names(v: &Value) -> Vec<String> {
    v["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["name"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_reloads_invalid_keeps_old_rules_and_alert_state() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, V1)?;
    let c = start_with(config(&dir.path().join("data"), &[&rules]), None, None).await?;
    c.push_gauge("temp_celsius", "n1", 95.0).await?;
    let firing = c.wait_alert("Hot", "firing").await?;

    // An invalid file: the old rules keep running, and the metric says so.
    write_rules(
        &rules,
        "groups:\n  - name: temp\n    rules:\n      - alert: Hot\n        expr: temp_celsius >\n",
    )?;
    c.wait_metric("vigil_rules_last_reload_successful 0")
        .await?;
    let v = c.get_json("/api/v1/rules").await?;
    assert_eq!(rule_names(&v), ["Hot"]);
    let still = c.wait_alert("Hot", "firing").await?;
    assert_eq!(still["activeAt"], firing["activeAt"]);

    // A valid change: the new rule appears, the alert keeps its state.
    write_rules(&rules, V2)?;
    let v = c
        .wait_json("/api/v1/rules", |v| rule_names(v).len() == 2)
        .await?;
    assert_eq!(rule_names(&v), ["node:temp_celsius:max", "Hot"]);
    c.wait_metric("vigil_rules_last_reload_successful 1")
        .await?;
    let kept = c.wait_alert("Hot", "firing").await?;
    assert_eq!(kept["activeAt"], firing["activeAt"]);
    c.wait_json("/api/v1/query?query=node%3Atemp_celsius%3Amax", |v| {
        v["data"]["result"][0]["value"][1] == "95"
    })
    .await?;

    // A removed group: its alert goes, and its ALERTS series is marked stale.
    write_rules(&rules, "groups: []\n")?;
    c.wait_json("/api/v1/rules", |v| rule_names(v).is_empty())
        .await?;
    assert!(c.alerts().await?.is_empty());
    let q = c.get_json("/api/v1/query?query=ALERTS").await?;
    assert_eq!(q["data"]["result"].as_array().map(Vec::len), Some(0), "{q}");
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_on_request_reads_a_file_the_watcher_cannot_see() -> Result<()> {
    // The rules are read through a symlink whose target lives in a folder nobody
    // watches: only an explicit reload (what SIGHUP triggers) picks a change up.
    let dir = tempfile::tempdir()?;
    let hidden = tempfile::tempdir()?;
    let target = hidden.path().join("real.yml");
    std::fs::write(&target, V1)?;
    let link = dir.path().join("rules.yml");
    std::os::unix::fs::symlink(&target, &link)?;
    let reload = Arc::new(tokio::sync::Notify::new());
    let c = start_with(
        config(&dir.path().join("data"), &[&link]),
        None,
        Some(Arc::clone(&reload)),
    )
    .await?;
    std::fs::write(&target, V2)?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rule_names(&c.get_json("/api/v1/rules").await?), ["Hot"]);
    reload.notify_one();
    c.wait_json("/api/v1/rules", |v| rule_names(v).len() == 2)
        .await?;
    c.stop().await
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The real binary: `--rules` through a symlink as above, then SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_binary_rules() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let hidden = tempfile::tempdir()?;
    let target = hidden.path().join("real.yml");
    std::fs::write(&target, V1)?;
    let link = dir.path().join("rules.yml");
    std::os::unix::fs::symlink(&target, &link)?;
    let (http, grpc, otlp_http) = (free_port()?, free_port()?, free_port()?);
    let child = Command::new(env!("CARGO_BIN_EXE_vigil-collector"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{http}")])
        .args(["--otlp-grpc", &format!("127.0.0.1:{grpc}")])
        .args(["--otlp-http", &format!("127.0.0.1:{otlp_http}")])
        .arg("--rules")
        .arg(&link)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = i32::try_from(child.id())?;
    let addr = format!("127.0.0.1:{http}").parse()?;
    let outcome = async {
        let started = Instant::now();
        let names = |r: api_common::Response| -> Result<Vec<String>> { Ok(rule_names(&r.json()?)) };
        loop {
            if let Ok(r) = api_common::request(addr, "GET", "/api/v1/rules", None).await
                && r.status == 200
            {
                assert_eq!(names(r)?, ["Hot"]);
                break;
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("vigil-collector did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::write(&target, V2)?;
        // SAFETY: kill only sends a signal to the child started above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
        let started = Instant::now();
        loop {
            let r = api_common::request(addr, "GET", "/api/v1/rules", None).await?;
            if names(r)?.len() == 2 {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("SIGHUP did not reload the rules");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    .await;
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await?
        .context("waiting for vigil-collector")?;
    let log = String::from_utf8_lossy(&out.stderr);
    outcome.with_context(|| log.to_string())?;
    assert!(out.status.success(), "{log}");
    assert!(log.contains("SIGHUP"), "{log}");
    Ok(())
}
