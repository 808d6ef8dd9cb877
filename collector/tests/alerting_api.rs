//! Rules evaluated in the collector: `/api/v1/rules` and `/api/v1/alerts` in
//! Prometheus's shapes, an alert through pending, firing and resolved, its history,
//! and the evaluator's metrics.

mod alerting_common;
mod api_common;

use alerting_common::{EXTERNAL_URL, config, now_ms, start_with};
use anyhow::Result;
use serde_json::Value;

const RULES: &str = r#"groups:
  - name: gpu-temp
    interval: 1s
    rules:
      - record: node:temp_celsius:max
        expr: max by (node) (temp_celsius)
      - alert: GpuHot
        expr: node:temp_celsius:max > 90
        for: 2s
        labels:
          severity: critical
        annotations:
          summary: '{{ $labels.node }} at {{ $value }} °C'
"#;

fn rule<'a>(groups: &'a Value, name: &str) -> &'a Value {
    groups["data"]["groups"][0]["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == name))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_goes_pending_firing_resolved_with_prometheus_shapes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES)?;
    let c = start_with(config(&dir.path().join("data"), &[&rules]), None, None).await?;

    // Before any sample: the rules are listed, the alerting rule inactive.
    let v = c.get_json("/api/v1/rules").await?;
    assert_eq!(v["status"], "success");
    let g = &v["data"]["groups"][0];
    assert_eq!(g["name"], "gpu-temp");
    assert_eq!(g["file"], rules.display().to_string());
    assert_eq!(g["interval"], 1.0);
    assert_eq!(g["limit"], 0);

    c.push_gauge("temp_celsius", "n1", 95.0).await?;
    let pending = c.wait_alert("GpuHot", "pending").await?;
    let firing = c.wait_alert("GpuHot", "firing").await?;
    assert_eq!(pending["activeAt"], firing["activeAt"]);
    assert_eq!(firing["value"], "9.5e+01");
    assert_eq!(firing["labels"]["node"], "n1");
    assert_eq!(firing["labels"]["severity"], "critical");
    assert_eq!(firing["annotations"]["summary"], "n1 at 95 °C");
    let active_at = firing["activeAt"].as_str().unwrap_or_default();
    assert!(
        chrono::DateTime::parse_from_rfc3339(active_at).is_ok(),
        "{active_at}"
    );
    let keys: Vec<&String> = firing
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        ["activeAt", "annotations", "labels", "state", "value"],
        "{firing}"
    );

    let v = c.get_json("/api/v1/rules").await?;
    let rec = rule(&v, "node:temp_celsius:max");
    assert_eq!(rec["type"], "recording");
    assert_eq!(rec["health"], "ok");
    assert_eq!(rec["query"], "max by (node) (temp_celsius)");
    assert!(rec["evaluationTime"].is_f64(), "{rec}");
    assert!(rec.get("lastError").is_none());
    let alert = rule(&v, "GpuHot");
    assert_eq!(alert["type"], "alerting");
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["duration"], 2.0);
    assert_eq!(alert["keepFiringFor"], 0.0);
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["alerts"][0]["state"], "firing");
    assert_eq!(alert["health"], "ok");
    let last = alert["lastEvaluation"].as_str().unwrap_or_default();
    assert!(chrono::DateTime::parse_from_rfc3339(last).is_ok(), "{last}");
    // The recorded series is in the store, and so is ALERTS.
    let q = c
        .get_json("/api/v1/query?query=node%3Atemp_celsius%3Amax")
        .await?;
    assert_eq!(q["data"]["result"][0]["value"][1], "95");
    let q = c
        .get_json("/api/v1/query?query=ALERTS%7Balertstate%3D%22firing%22%7D")
        .await?;
    assert_eq!(q["data"]["result"][0]["metric"]["alertname"], "GpuHot");

    // type filters.
    let v = c.get_json("/api/v1/rules?type=alert").await?;
    let names: Vec<&Value> = v["data"]["groups"][0]["rules"]
        .as_array()
        .map(|r| r.iter().map(|r| &r["name"]).collect())
        .unwrap_or_default();
    assert_eq!(names, ["GpuHot"]);
    let v = c.get_json("/api/v1/rules?type=record").await?;
    assert_eq!(
        v["data"]["groups"][0]["rules"][0]["name"],
        "node:temp_celsius:max"
    );
    assert_eq!(
        v["data"]["groups"][0]["rules"].as_array().map(Vec::len),
        Some(1)
    );
    let r = api_common::request(c.addr, "GET", "/api/v1/rules?type=both", None).await?;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()?["errorType"], "bad_data");
    let v = c.get_json("/api/v1/rules?exclude_alerts=true").await?;
    assert!(rule(&v, "GpuHot").get("alerts").is_none());

    // Metrics.
    let m = c.metrics().await?;
    assert!(m.contains("vigil_alerts{state=\"firing\"} 1"), "{m}");
    let group = format!("{};gpu-temp", rules.display());
    assert!(
        m.contains(&format!(
            "vigil_rule_group_iterations_total{{rule_group=\"{group}\"}}"
        )),
        "{m}"
    );
    assert!(m.contains("vigil_rules_last_reload_successful 1"), "{m}");

    // Resolve.
    c.push_gauge("temp_celsius", "n1", 40.0).await?;
    c.wait_alert("GpuHot", "inactive").await?;
    let v = c.get_json("/api/v1/rules?type=alert").await?;
    assert_eq!(rule(&v, "GpuHot")["state"], "inactive");

    // The history has all three transitions, newest first.
    let h = c
        .get_json("/api/v1/alerts/history?alertname=GpuHot&node=n1")
        .await?;
    let kinds: Vec<&Value> = h["data"]["events"]
        .as_array()
        .map(|e| e.iter().map(|e| &e["kind"]).collect())
        .unwrap_or_default();
    assert_eq!(kinds, ["resolved", "firing", "pending"], "{h}");
    let e = &h["data"]["events"][1];
    assert_eq!(e["labels"]["severity"], "critical");
    assert_eq!(e["annotations"]["summary"], "n1 at 95 °C");
    assert!(chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap_or("")).is_ok());
    let h = c
        .get_json("/api/v1/alerts/history?kind=firing&limit=5")
        .await?;
    assert_eq!(h["data"]["events"].as_array().map(Vec::len), Some(1));
    let h = c.get_json("/api/v1/alerts/history?node=other").await?;
    assert_eq!(h["data"]["events"].as_array().map(Vec::len), Some(0));
    let r = api_common::request(c.addr, "GET", "/api/v1/alerts/history?kind=bogus", None).await?;
    assert_eq!(r.status, 400, "{}", r.body);
    let later = now_ms() + 60_000;
    let h = c
        .get_json(&format!("/api/v1/alerts/history?start={}", later / 1000))
        .await?;
    assert_eq!(h["data"]["events"].as_array().map(Vec::len), Some(0));
    let _ = EXTERNAL_URL;
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_packs_are_loaded_without_rules() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let c = start_with(config(dir.path(), &[]), None, None).await?;
    let v = c.get_json("/api/v1/rules").await?;
    let files: Vec<String> = v["data"]["groups"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(|g| g["file"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert!(files.iter().any(|f| f.ends_with("gpu.yml")), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with("node.yml")), "{files:?}");
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rule_file_stops_the_start_and_names_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("broken.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: up ==\n",
    )?;
    let err = match start_with(config(&dir.path().join("data"), &[&rules]), None, None).await {
        Ok(c) => {
            c.stop().await?;
            anyhow::bail!("started with a broken rule file");
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("broken.yml"), "{err}");
    Ok(())
}
