//! What survives a restart: the alert history, and the `for` state of a firing alert
//! (restored from `ALERTS_FOR_STATE`, so it fires again without waiting `for` anew).

mod alerting_common;
mod api_common;

use alerting_common::{config, start_with};
use anyhow::Result;
use serde_json::Value;

const RULES: &str = r#"groups:
  - name: temp
    interval: 1s
    rules:
      - alert: Hot
        expr: temp_celsius > 90
        for: 3s
"#;

fn secs(rfc3339: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap_or(""))
        .map(|t| t.timestamp())
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firing_alert_and_history_survive_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES)?;
    let data = dir.path().join("data");

    let c = start_with(config(&data, &[&rules]), None, None).await?;
    c.push_gauge("temp_celsius", "n1", 95.0).await?;
    let before = c.wait_alert("Hot", "firing").await?;
    c.stop().await?;
    assert!(data.join("alerts").is_dir());

    let c = start_with(config(&data, &[&rules]), None, None).await?;
    // The history written before the restart is there.
    let h = c.get_json("/api/v1/alerts/history?alertname=Hot").await?;
    let kinds: Vec<&Value> = h["data"]["events"]
        .as_array()
        .map(|e| e.iter().map(|e| &e["kind"]).collect())
        .unwrap_or_default();
    assert_eq!(kinds, ["firing", "pending"], "{h}");

    // Firing again with the activeAt of before the restart: restored, not started over
    // (a fresh alert would have a new activeAt and wait 3 s pending).
    let after = c.wait_alert("Hot", "firing").await?;
    assert_eq!(secs(&after["activeAt"]), secs(&before["activeAt"]));
    assert!(secs(&before["activeAt"]) > 0);
    c.stop().await
}
