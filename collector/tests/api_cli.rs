//! The `vigil-collector` binary: flags, the default config, serving, and a clean exit
//! (servers drained, store synced) on SIGTERM.

mod api_common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

const BIN: &str = env!("CARGO_BIN_EXE_vigil-collector");

#[test]
fn prints_the_default_config() -> Result<()> {
    let out = Command::new(BIN).arg("--print-default-config").output()?;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout)?,
        vigil_collector::config::DEFAULT_CONFIG_TOML
    );
    Ok(())
}

#[test]
fn refuses_a_missing_rule_file_and_a_bad_config_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--otlp-grpc", "127.0.0.1:0"])
        .args(["--otlp-http", "127.0.0.1:0", "--rules", "x.yml"])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr)?;
    assert!(err.contains("x.yml"), "{err}");

    let config = dir.path().join("collector.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nretention_hourz = 3\n")?;
    let out = Command::new(BIN).arg("--config").arg(&config).output()?;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr)?;
    assert!(
        err.contains("retention_hourz") && err.contains("line 2"),
        "{err}"
    );
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_and_stops_cleanly_on_sigterm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (http, grpc, otlp_http) = (free_port()?, free_port()?, free_port()?);
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{http}")])
        .args(["--otlp-grpc", &format!("127.0.0.1:{grpc}")])
        .args(["--otlp-http", &format!("127.0.0.1:{otlp_http}")])
        .args(["--retention", "2h", "--fleet-metrics"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let addr = format!("127.0.0.1:{http}").parse()?;
    let started = Instant::now();
    loop {
        if let Ok(r) = api_common::request(addr, "GET", "/readyz", None).await
            && r.status == 200
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            bail!("vigil-collector did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = api_common::request(addr, "GET", "/api/v1/query?query=1", None).await?;
    assert_eq!(r.status, 200, "{}", r.body);

    let pid = i32::try_from(child.id())?;
    // SAFETY: kill only sends a signal to the child started above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await?
        .context("waiting for vigil-collector")?;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("store synced"), "{log}");
    assert!(dir.path().join("wal").is_dir());
    Ok(())
}
