//! `vigil alerts` (the collector's pending and firing alerts) and `vigil alerts
//! history` (its stored transitions).

use std::io::Write as _;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::{Client, CollectorArgs, encode_query_value, unwrap_data};
use crate::render::{clock, label, node_of, one_line, parse_time, since, table};

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Firing, resolved, silenced, inhibited and notified events from the alert
    /// history, oldest first.
    History(HistoryArgs),
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// How far back: a Prometheus duration such as 30m, 1h, 2d.
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub since: String,
    /// Only this alert.
    #[arg(long, value_name = "NAME")]
    pub alertname: Option<String>,
    /// Only this node (its `node`, `instance` or `Hostname` label).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
}

/// `vigil alerts`: a table of state, name, node, severity, since and summary.
pub async fn list(conn: &CollectorArgs) -> anyhow::Result<()> {
    let client = Client::new(conn)?;
    let data = unwrap_data(client.get("/api/v1/alerts").await?)?;
    let alerts = data
        .get("alerts")
        .and_then(Value::as_array)
        .context("GET /api/v1/alerts: the answer has no data.alerts list")?;
    let mut out = std::io::stdout().lock();
    if conn.json {
        writeln!(out, "{}", serde_json::to_string_pretty(alerts)?)?;
    } else {
        out.write_all(alerts_table(alerts, Utc::now()).as_bytes())?;
    }
    Ok(())
}

/// Firing before pending, then by name and node.
pub fn alerts_table(alerts: &[Value], now: DateTime<Utc>) -> String {
    if alerts.is_empty() {
        return "no pending or firing alerts\n".to_owned();
    }
    let mut sorted: Vec<&Value> = alerts.iter().collect();
    let rank = |a: &Value| match a.get("state").and_then(Value::as_str) {
        Some("firing") => 0,
        Some("pending") => 1,
        _ => 2,
    };
    sorted.sort_by(|a, b| {
        let key = |a: &Value| {
            let labels = &a["labels"];
            (
                rank(a),
                label(labels, "alertname").to_owned(),
                node_of(labels).to_owned(),
                a["labels"].to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    let rows: Vec<Vec<String>> = sorted
        .into_iter()
        .map(|a| {
            let labels = &a["labels"];
            vec![
                a.get("state")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .to_owned(),
                label(labels, "alertname").to_owned(),
                node_of(labels).to_owned(),
                label(labels, "severity").to_owned(),
                since(&a["activeAt"], now),
                one_line(label(&a["annotations"], "summary")),
            ]
        })
        .collect();
    table(
        &["STATE", "ALERTNAME", "NODE", "SEVERITY", "SINCE", "SUMMARY"],
        &rows,
    )
}

/// `vigil alerts history`.
pub async fn history(conn: &CollectorArgs, args: &HistoryArgs) -> anyhow::Result<()> {
    let path = history_path(args, Utc::now())?;
    let client = Client::new(conn)?;
    let data = unwrap_data(client.get(&path).await?)?;
    let events = data
        .get("events")
        .and_then(Value::as_array)
        .context("GET /api/v1/alerts/history: the answer has no data.events list")?;
    let mut out = std::io::stdout().lock();
    if conn.json {
        writeln!(out, "{}", serde_json::to_string_pretty(events)?)?;
    } else {
        out.write_all(history_table(events).as_bytes())?;
    }
    Ok(())
}

/// `/api/v1/alerts/history?start=<unix seconds>[&alertname=..][&node=..]`.
pub fn history_path(args: &HistoryArgs, now: DateTime<Utc>) -> anyhow::Result<String> {
    let since_ms = vigil_rules::duration::parse_duration(&args.since)
        .map_err(|e| anyhow::anyhow!("--since {:?}: {e}", args.since))?;
    if since_ms <= 0 {
        bail!("--since {:?}: must be longer than 0", args.since);
    }
    let start_ms = now.timestamp_millis() - since_ms;
    let mut path = format!(
        "/api/v1/alerts/history?start={}.{:03}",
        start_ms.div_euclid(1000),
        start_ms.rem_euclid(1000)
    );
    if let Some(name) = &args.alertname {
        path.push_str(&format!("&alertname={}", encode_query_value(name)));
    }
    if let Some(node) = &args.node {
        path.push_str(&format!("&node={}", encode_query_value(node)));
    }
    Ok(path)
}

pub fn history_table(events: &[Value]) -> String {
    if events.is_empty() {
        return "no alert events in that time\n".to_owned();
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let labels = &e["labels"];
            vec![
                parse_time(&e["time"]).map_or_else(|| "-".to_owned(), clock),
                e.get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .to_owned(),
                label(labels, "alertname").to_owned(),
                node_of(labels).to_owned(),
                label(labels, "severity").to_owned(),
                one_line(e.get("detail").and_then(Value::as_str).unwrap_or("")),
            ]
        })
        .collect();
    table(
        &["TIME", "KIND", "ALERTNAME", "NODE", "SEVERITY", "DETAIL"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn firing_alerts_come_first() {
        let now = parse_time(&json!("2026-11-27T12:00:00Z")).unwrap();
        let alerts = vec![
            json!({"labels":{"alertname":"GpuTemperatureNearSlowdown","node":"gpu-02","severity":"warning"},
                   "annotations":{"summary":"GPU 0 of gpu-02\nruns at 95°C"},
                   "state":"pending","activeAt":"2026-11-27T11:59:30Z","value":"95"}),
            json!({"labels":{"alertname":"GpuFellOffBus","instance":"gpu-01","severity":"critical"},
                   "annotations":{"summary":"GPU 1 of gpu-01 fell off the bus (Xid 79)"},
                   "state":"firing","activeAt":"2026-11-27T11:55:00Z","value":"1"}),
        ];
        let text = alerts_table(&alerts, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("STATE"), "{text}");
        assert!(lines[1].starts_with("firing   GpuFellOffBus"), "{text}");
        assert!(lines[1].contains("gpu-01"), "{text}");
        assert!(
            lines[1].contains("2026-11-27 11:55:00 (5m0s ago)"),
            "{text}"
        );
        assert!(lines[2].starts_with("pending"), "{text}");
        assert!(lines[2].ends_with("GPU 0 of gpu-02 runs at 95°C"), "{text}");
        assert_eq!(alerts_table(&[], now), "no pending or firing alerts\n");
    }

    #[test]
    fn history_query_and_table() {
        let now = parse_time(&json!("2026-11-27T12:00:00Z")).unwrap();
        let args = HistoryArgs {
            since: "90m".into(),
            alertname: Some("GpuFellOffBus".into()),
            node: Some("gpu node".into()),
        };
        assert_eq!(
            history_path(&args, now).unwrap(),
            "/api/v1/alerts/history?start=1795775400.000&alertname=GpuFellOffBus&node=gpu%20node"
        );
        let bad = HistoryArgs {
            since: "an hour".into(),
            alertname: None,
            node: None,
        };
        let e = history_path(&bad, now).unwrap_err().to_string();
        assert!(e.starts_with("--since \"an hour\""), "{e}");

        let events = vec![json!({"time":"2026-11-27T11:58:00Z","kind":"silenced",
            "labels":{"alertname":"GpuLost","node":"gpu-03","severity":"critical"},
            "annotations":{},"detail":"silence 4f1c"})];
        let text = history_table(&events);
        assert!(
            text.lines().nth(1).unwrap().starts_with(
                "2026-11-27 11:58:00  silenced  GpuLost    gpu-03  critical  silence 4f1c"
            ),
            "{text}"
        );
    }
}
