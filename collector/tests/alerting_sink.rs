//! The evaluator hands alerts to the notifier as Prometheus hands them to
//! Alertmanager: never pending, once when firing (then every resend delay), at once
//! when resolved; with validity, generator URL, labels and annotations.

mod alerting_common;
mod api_common;

use std::sync::Arc;

use alerting_common::{EXTERNAL_URL, Recorder, config, now_ms, start_with};
use anyhow::Result;
use vigil_collector::notify::AlertSink;

const RULES: &str = r#"groups:
  - name: temp
    interval: 1s
    rules:
      - alert: Hot
        expr: temp_celsius > 90
        for: 2s
        labels:
          severity: warning
        annotations:
          summary: 'hot {{ $labels.node }}'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_receives_firing_then_resolved() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES)?;
    let recorder = Arc::new(Recorder::default());
    let c = start_with(
        config(&dir.path().join("data"), &[&rules]),
        Some(Arc::clone(&recorder) as Arc<dyn AlertSink>),
        None,
    )
    .await?;
    c.push_gauge("temp_celsius", "n1", 95.0).await?;
    c.wait_alert("Hot", "pending").await?;
    assert!(recorder.all().is_empty(), "pending alerts are not sent");
    let firing = c.wait_alert("Hot", "firing").await?;
    // The send happens in the same evaluation that the API shows; allow it to land.
    for _ in 0..100 {
        if !recorder.all().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let sent = recorder.all();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (sent_at, a) = &sent[0];
    assert_eq!(a.labels.get("alertname").map(String::as_str), Some("Hot"));
    assert_eq!(a.labels.get("node").map(String::as_str), Some("n1"));
    assert_eq!(
        a.labels.get("severity").map(String::as_str),
        Some("warning")
    );
    assert!(!a.labels.contains_key("__name__"));
    assert_eq!(
        a.annotations.get("summary").map(String::as_str),
        Some("hot n1")
    );
    let active_at =
        chrono::DateTime::parse_from_rfc3339(firing["activeAt"].as_str().unwrap_or(""))?
            .timestamp_millis();
    assert_eq!(a.starts_at_ms, active_at);
    // Valid for 4 × max(resend delay 60 s, interval 1 s) from the evaluation.
    let valid_for = a.ends_at_ms - sent_at;
    assert!((235_000..=240_000).contains(&valid_for), "{valid_for}");
    assert_eq!(
        a.generator_url,
        format!("{EXTERNAL_URL}/graph?g0.expr=temp_celsius+%3E+90&g0.tab=1")
    );

    // Unchanged and within the resend delay: not sent again.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(recorder.all().len(), 1);

    c.push_gauge("temp_celsius", "n1", 20.0).await?;
    c.wait_alert("Hot", "inactive").await?;
    for _ in 0..100 {
        if recorder.all().len() > 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let sent = recorder.all();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let (_, resolved) = &sent[1];
    assert_eq!(resolved.starts_at_ms, active_at);
    assert!(resolved.ends_at_ms > active_at && resolved.ends_at_ms <= now_ms());
    assert_eq!(resolved.labels, a.labels);
    c.stop().await
}
