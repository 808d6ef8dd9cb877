//! The evaluator wired to the notifier of `alerting.alertmanager_config`: a firing
//! alert reaches a real webhook receiver, and the notifier's "notified" event lands in
//! the same alert history as the evaluator's transitions.

mod alerting_common;
mod api_common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alerting_common::{config, start_with};
use anyhow::{Result, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const RULES: &str = r#"groups:
  - name: temp
    interval: 1s
    rules:
      - alert: Hot
        expr: temp_celsius > 90
        labels:
          severity: critical
"#;

/// A webhook receiver: answers 200 to every request and keeps the JSON bodies.
async fn receiver() -> Result<(String, Arc<Mutex<Vec<Value>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&bodies);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() < len {
                        continue;
                    }
                    if let Ok(v) = serde_json::from_str::<Value>(&body[..len]) {
                        kept.lock().unwrap_or_else(|p| p.into_inner()).push(v);
                    }
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    Ok((url, bodies))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firing_alert_reaches_the_webhook_and_the_history() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES)?;
    let (url, bodies) = receiver().await?;
    let am = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: {url}\n"
        ),
    )?;
    let mut cfg = config(&dir.path().join("data"), &[&rules]);
    cfg.alerting.alertmanager_config = am;
    let c = start_with(cfg, None, None).await?;
    c.push_gauge("temp_celsius", "n1", 95.0).await?;
    c.wait_alert("Hot", "firing").await?;

    let started = Instant::now();
    let body = loop {
        if let Some(b) = bodies.lock().unwrap_or_else(|p| p.into_inner()).first() {
            break b.clone();
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("no webhook within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["status"], "firing", "{body}");
    assert_eq!(body["alerts"][0]["labels"]["alertname"], "Hot", "{body}");
    assert_eq!(body["alerts"][0]["labels"]["node"], "n1", "{body}");

    let h = c
        .wait_json("/api/v1/alerts/history?alertname=Hot&kind=notified", |v| {
            v["data"]["events"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        })
        .await?;
    assert_eq!(h["data"]["events"][0]["labels"]["severity"], "critical");
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_alertmanager_config_stops_the_start_and_names_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let am = dir.path().join("alertmanager.yml");
    std::fs::write(&am, "route:\n  receiver: nowhere\nreceivers: []\n")?;
    let mut cfg = config(&dir.path().join("data"), &[]);
    cfg.alerting.alertmanager_config = am;
    match start_with(cfg, None, None).await {
        Ok(c) => {
            c.stop().await?;
            bail!("started with a bad alertmanager.yml")
        }
        Err(e) => {
            let e = format!("{e:#}");
            assert!(e.contains("alertmanager.yml"), "{e}");
            Ok(())
        }
    }
}
