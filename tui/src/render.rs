//! Plain-text tables and times for the CLI's human output.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Columns padded to their widest cell, two spaces apart; the last column is not
/// padded, so a long summary does not push trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A time from the API: RFC 3339 text or seconds since the epoch (a number or a
/// numeric string, as Prometheus writes sample times).
pub fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
            .or_else(|| s.parse::<f64>().ok().and_then(from_secs)),
        Value::Number(n) => n.as_f64().and_then(from_secs),
        _ => None,
    }
}

fn from_secs(secs: f64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis((secs * 1000.0).round() as i64)
}

/// `2026-11-27 17:03:05`, UTC.
pub fn clock(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A duration in seconds, compactly: `45s`, `4m12s`, `3h5m`, `2d4h`.
pub fn compact_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// `2026-11-27 17:03:05 (4m12s ago)`, or `-` when absent or unreadable.
pub fn since(v: &Value, now: DateTime<Utc>) -> String {
    match parse_time(v) {
        Some(t) => format!(
            "{} ({} ago)",
            clock(t),
            compact_duration((now - t).num_seconds())
        ),
        None => "-".to_owned(),
    }
}

/// A label of a JSON label map, or `-`.
pub fn label<'a>(labels: &'a Value, name: &str) -> &'a str {
    labels.get(name).and_then(Value::as_str).unwrap_or("-")
}

/// The node an alert is about: `node`, else `instance`, else dcgm's `Hostname`, as the
/// rule packs name it.
pub fn node_of(labels: &Value) -> &str {
    ["node", "instance", "Hostname"]
        .iter()
        .find_map(|k| labels.get(*k).and_then(Value::as_str))
        .unwrap_or("-")
}

/// One line of text: newlines in annotations would break the table.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_pads_all_but_the_last_column() {
        let text = table(
            &["STATE", "NAME", "SUMMARY"],
            &[
                vec!["firing".into(), "GpuLost".into(), "GPU 3 lost".into()],
                vec!["pending".into(), "X".into(), "".into()],
            ],
        );
        assert_eq!(
            text,
            "STATE    NAME     SUMMARY\nfiring   GpuLost  GPU 3 lost\npending  X\n"
        );
    }

    #[test]
    fn times_in_both_notations() {
        let a = parse_time(&json!("2026-11-27T11:03:03.236Z")).unwrap();
        let b = parse_time(&json!(1_795_777_383.236)).unwrap();
        assert_eq!(a, b);
        assert_eq!(parse_time(&json!("1795777383.236")), Some(a));
        assert_eq!(clock(a), "2026-11-27 11:03:03");
        assert!(parse_time(&json!("yesterday")).is_none());
        let now = a + chrono::Duration::seconds(252);
        assert_eq!(
            since(&json!("2026-11-27T11:03:03.236Z"), now),
            "2026-11-27 11:03:03 (4m12s ago)"
        );
        assert_eq!(since(&Value::Null, now), "-");
    }

    #[test]
    fn durations_and_nodes() {
        assert_eq!(compact_duration(45), "45s");
        assert_eq!(compact_duration(3600 * 3 + 300), "3h5m");
        assert_eq!(compact_duration(86_400 * 2 + 3600 * 4), "2d4h");
        assert_eq!(node_of(&json!({"instance":"a","node":"b"})), "b");
        assert_eq!(node_of(&json!({"Hostname":"h"})), "h");
        assert_eq!(node_of(&json!({})), "-");
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }
}
