//! `vigil logs search` (the collector's log index, newest first) and `vigil logs tail`
//! (a live stream of new records with the same filters).

use std::io::Write as _;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::{Client, CollectorArgs, encode_query_value, unwrap_data};
use crate::render::{clock, one_line, parse_time, table};

#[derive(Debug, Subcommand)]
pub enum LogsCommand {
    /// Search the collector's logs, newest first (tantivy query syntax over the line
    /// and its attributes: `xid AND attributes.nvidia.xid:79`, `"fallen off the bus"`).
    Search(SearchArgs),
    /// Follow new log records as they arrive, with the same filters.
    Tail(FilterArgs),
}

#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    /// The query; empty matches every record.
    #[arg(default_value = "", value_name = "QUERY")]
    pub query: String,
    /// Only this node.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Only this severity (`error`, `warn`, `info`, ... as the sender gave it).
    #[arg(long, value_name = "SEVERITY")]
    pub severity: Option<String>,
    /// Only this source (a file path, `kernel`).
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// How far back: a Prometheus duration such as 30m, 1h, 2d.
    #[arg(long, default_value = "1h", value_name = "DURATION", conflicts_with_all = ["start", "end"])]
    pub since: String,
    /// Range start instead of --since: RFC 3339 or Unix seconds.
    #[arg(long, value_name = "TIME")]
    pub start: Option<String>,
    /// Range end (default: now): RFC 3339 or Unix seconds.
    #[arg(long, value_name = "TIME")]
    pub end: Option<String>,
    /// Most records to show (at most 10000).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: usize,
}

fn filter_params(f: &FilterArgs) -> String {
    let mut out = format!("q={}", encode_query_value(&f.query));
    for (name, value) in [
        ("node", &f.node),
        ("severity", &f.severity),
        ("source", &f.source),
    ] {
        if let Some(v) = value {
            out.push_str(&format!("&{name}={}", encode_query_value(v)));
        }
    }
    out
}

/// `/api/v1/logs/search?...` for `args` at `now`.
pub fn search_path(args: &SearchArgs, now: DateTime<Utc>) -> anyhow::Result<String> {
    if args.limit == 0 || args.limit > 10_000 {
        bail!("--limit {}: must be 1 to 10000", args.limit);
    }
    let mut path = format!(
        "/api/v1/logs/search?{}&limit={}",
        filter_params(&args.filter),
        args.limit
    );
    if args.start.is_some() || args.end.is_some() {
        if let Some(s) = &args.start {
            path.push_str(&format!("&start={}", encode_query_value(s)));
        }
        if let Some(e) = &args.end {
            path.push_str(&format!("&end={}", encode_query_value(e)));
        }
    } else {
        let since_ms = vigil_rules::duration::parse_duration(&args.since)
            .map_err(|e| anyhow::anyhow!("--since {:?}: {e}", args.since))?;
        if since_ms <= 0 {
            bail!("--since {:?}: must be longer than 0", args.since);
        }
        let start_ms = now.timestamp_millis() - since_ms;
        path.push_str(&format!(
            "&start={}.{:03}",
            start_ms.div_euclid(1000),
            start_ms.rem_euclid(1000)
        ));
    }
    Ok(path)
}

/// `vigil logs search`.
pub async fn search(conn: &CollectorArgs, args: &SearchArgs) -> anyhow::Result<()> {
    let path = search_path(args, Utc::now())?;
    let client = Client::new(conn)?;
    let data = unwrap_data(client.get(&path).await?)?;
    let logs = data
        .get("hits")
        .and_then(Value::as_array)
        .context("GET /api/v1/logs/search: the answer has no data.hits list")?;
    let mut out = std::io::stdout().lock();
    if conn.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&data)?)?;
    } else {
        out.write_all(logs_table(logs).as_bytes())?;
        let total = data.get("total").and_then(Value::as_u64).unwrap_or(0);
        if total > logs.len() as u64 {
            writeln!(
                out,
                "({} of {total} matching records; --limit shows more)",
                logs.len()
            )?;
        }
    }
    Ok(())
}

/// TIME, NODE, SEVERITY, SOURCE, LINE.
pub fn logs_table(logs: &[Value]) -> String {
    if logs.is_empty() {
        return "no matching log records\n".to_owned();
    }
    let rows: Vec<Vec<String>> = logs.iter().map(row).collect();
    table(&["TIME", "NODE", "SEVERITY", "SOURCE", "LINE"], &rows)
}

fn row(l: &Value) -> Vec<String> {
    let text = |k: &str| {
        let s = l.get(k).and_then(Value::as_str).unwrap_or("");
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    vec![
        parse_time(&l["timestamp"]).map_or_else(|| "-".to_owned(), clock),
        text("node"),
        text("severity"),
        text("source"),
        one_line(l.get("body").and_then(Value::as_str).unwrap_or("")),
    ]
}

/// `vigil logs tail`: one line per record until interrupted (JSON lines with --json).
pub async fn tail(conn: &CollectorArgs, args: &FilterArgs) -> anyhow::Result<()> {
    let path = format!("/api/v1/logs/tail?{}", filter_params(args));
    let client = Client::new(conn)?;
    let mut response = client.get_stream(&path).await?;
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await.context("reading the log stream")? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim();
            if line.is_empty() {
                continue; // keep-alive
            }
            let mut out = std::io::stdout().lock();
            if conn.json {
                writeln!(out, "{line}")?;
            } else {
                let v: Value = serde_json::from_str(line).with_context(|| {
                    format!("the log stream sent a line that is not JSON: {line}")
                })?;
                let r = row(&v);
                writeln!(out, "{}  {}  {}  {}  {}", r[0], r[1], r[2], r[3], r[4])?;
            }
            out.flush()?;
        }
    }
    bail!("the collector closed the log stream")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(query: &str) -> SearchArgs {
        SearchArgs {
            filter: FilterArgs {
                query: query.into(),
                node: Some("gpu-01".into()),
                severity: None,
                source: None,
            },
            since: "1h".into(),
            start: None,
            end: None,
            limit: 50,
        }
    }

    #[test]
    fn search_path_encodes_filters_and_range() {
        let now = parse_time(&json!("2026-11-27T12:00:00Z")).unwrap();
        let p = search_path(&args("xid AND \"off the bus\""), now).unwrap();
        assert_eq!(
            p,
            "/api/v1/logs/search?q=xid%20AND%20%22off%20the%20bus%22&node=gpu-01&limit=50&start=1795777200.000"
        );
        let mut a = args("");
        a.start = Some("2026-11-27T10:00:00Z".into());
        let p = search_path(&a, now).unwrap();
        assert!(p.ends_with("&start=2026-11-27T10%3A00%3A00Z"), "{p}");
        a.limit = 0;
        assert!(search_path(&a, now).is_err());
        let mut a = args("");
        a.since = "nonsense".into();
        assert!(
            search_path(&a, now)
                .unwrap_err()
                .to_string()
                .contains("--since")
        );
    }

    #[test]
    fn table_of_records() {
        let logs = vec![
            json!({"timestamp":"2026-11-27T11:59:58.5Z","node":"gpu-01","source":"kernel","severity":"error",
                   "body":"NVRM: Xid (PCI:0000:3b:00): 79,\nGPU has fallen off the bus","attributes":{}}),
            json!({"timestamp":"2026-11-27T11:59:00Z","node":"gpu-02","source":"/var/log/a.log","severity":"",
                   "body":"hello","attributes":{}}),
        ];
        let text = logs_table(&logs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("TIME"), "{text}");
        assert!(
            lines[1].starts_with("2026-11-27 11:59:58  gpu-01  error"),
            "{text}"
        );
        assert!(
            lines[1].ends_with("NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus"),
            "{text}"
        );
        assert!(lines[2].contains("  -  "), "{text}");
        assert_eq!(logs_table(&[]), "no matching log records\n");
    }
}
