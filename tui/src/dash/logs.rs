//! The logs view's data and requests: records from the collector's log index
//! (`/api/v1/logs/search`, newest first), the query that selects them, and the live tail,
//! which asks the same search for records newer than the newest shown.
//!
//! Polling the search API (rather than holding the tail stream open) keeps every request
//! a short one the event loop can drop: a changed query simply outdates the answers in
//! flight ([`LogsUi::generation`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::logs::{FilterArgs, SearchArgs, search_path};
use crate::render::parse_time;

/// The most records kept; the tail drops the oldest beyond this.
pub const MAX_LINES: usize = 1000;
/// Records one search asks for.
pub const SEARCH_LIMIT: usize = 500;
/// How far back a search reaches.
pub const SEARCH_SINCE: &str = "24h";
/// How often the live tail asks for newer records.
pub const TAIL_EVERY_SECS: i64 = 2;

/// One log record as the search API returns it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogRecord {
    pub timestamp: Option<DateTime<Utc>>,
    pub node: String,
    pub source: String,
    pub severity: String,
    pub body: String,
    /// Attribute values as text (`nvidia.xid` → `79`), in name order.
    pub attributes: BTreeMap<String, String>,
}

/// One answer of the search API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogPage {
    pub total: u64,
    /// Newest first.
    pub records: Vec<LogRecord>,
}

pub fn parse_record(v: &Value) -> LogRecord {
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let attributes = v
        .get("attributes")
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    LogRecord {
        timestamp: parse_time(&v["timestamp"]),
        node: text("node"),
        source: text("source"),
        severity: text("severity"),
        body: text("body"),
        attributes,
    }
}

/// The `data` of a search answer.
pub fn parse_page(data: &Value) -> Result<LogPage, String> {
    let hits = data
        .get("hits")
        .and_then(Value::as_array)
        .ok_or("GET /api/v1/logs/search: the answer has no data.hits list")?;
    let records: Vec<LogRecord> = hits.iter().map(parse_record).collect();
    let total = data
        .get("total")
        .and_then(Value::as_u64)
        .unwrap_or(records.len() as u64);
    Ok(LogPage { total, records })
}

/// A search the event loop is asked to run; its answer comes back as
/// [`super::state::Action::LogsFetched`] with the same `generation` and `tail`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRequest {
    pub path: String,
    pub generation: u64,
    /// A tail poll: its records are added above the shown ones.
    pub tail: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogsAnswer {
    pub generation: u64,
    pub tail: bool,
    pub result: Result<LogPage, String>,
}

/// The logs view's query, records and tail.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogsUi {
    /// Tantivy query syntax; empty matches every record.
    pub query: String,
    /// Only this node (the API's `node` filter), set by a jump from another view.
    pub node: Option<String>,
    /// Newest first, at most [`MAX_LINES`].
    pub records: Vec<LogRecord>,
    /// Matching records in the index at the last search, plus those the tail added.
    pub total: u64,
    pub selected: usize,
    pub tail: bool,
    /// Whether a search has run for the current query.
    pub searched: bool,
    /// A request of the current generation is in flight.
    pub loading: bool,
    /// The last request failed; the records shown are from before it.
    pub error: Option<String>,
    /// Bumped by each new search; answers of older generations are dropped.
    pub generation: u64,
    /// When the last tail poll was asked for.
    pub polled_at: Option<DateTime<Utc>>,
    /// When the last search was asked for: the tail's start while nothing is shown.
    pub searched_at: Option<DateTime<Utc>>,
}

impl LogsUi {
    fn filter(&self) -> FilterArgs {
        FilterArgs {
            query: self.query.trim().to_owned(),
            node: self.node.clone(),
            severity: None,
            source: None,
        }
    }

    /// A new search for the current query and node, outdating any in flight.
    pub fn search(&mut self, now: DateTime<Utc>) -> Result<LogRequest, String> {
        self.generation += 1;
        self.searched = true;
        self.searched_at = Some(now);
        self.polled_at = Some(now);
        let args = SearchArgs {
            filter: self.filter(),
            since: SEARCH_SINCE.to_owned(),
            start: None,
            end: None,
            limit: SEARCH_LIMIT,
        };
        let path = search_path(&args, now).map_err(|e| format!("{e:#}"))?;
        self.loading = true;
        Ok(LogRequest {
            path,
            generation: self.generation,
            tail: false,
        })
    }

    /// A tail poll for records at or after the newest shown, when one is due.
    pub fn tail_poll(&mut self, now: DateTime<Utc>) -> Option<LogRequest> {
        if !self.tail || self.loading {
            return None;
        }
        if self
            .polled_at
            .is_some_and(|t| (now - t).num_seconds() < TAIL_EVERY_SECS)
        {
            return None;
        }
        let since = self
            .records
            .first()
            .and_then(|r| r.timestamp)
            .or(self.searched_at)
            .unwrap_or(now);
        let ms = since.timestamp_millis();
        let args = SearchArgs {
            filter: self.filter(),
            since: SEARCH_SINCE.to_owned(),
            start: Some(format!(
                "{}.{:03}",
                ms.div_euclid(1000),
                ms.rem_euclid(1000)
            )),
            end: None,
            limit: SEARCH_LIMIT,
        };
        let path = search_path(&args, now).ok()?;
        self.polled_at = Some(now);
        self.loading = true;
        Some(LogRequest {
            path,
            generation: self.generation,
            tail: true,
        })
    }

    /// Takes an answer: a search replaces the records, a tail poll adds the new ones on
    /// top (the start is inclusive, so records already shown are skipped). A failure
    /// keeps what is shown.
    pub fn apply(&mut self, answer: LogsAnswer) {
        if answer.generation != self.generation {
            return;
        }
        self.loading = false;
        let page = match answer.result {
            Ok(page) => page,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        self.error = None;
        if !answer.tail {
            self.total = page.total;
            self.records = page.records;
            self.records.truncate(MAX_LINES);
            self.selected = 0;
            return;
        }
        let newest = self.records.first().and_then(|r| r.timestamp);
        let fresh: Vec<LogRecord> = page
            .records
            .into_iter()
            .filter(|r| match (r.timestamp, newest) {
                (Some(t), Some(n)) if t < n => false,
                (Some(t), Some(n)) if t == n => !self
                    .records
                    .iter()
                    .take_while(|s| s.timestamp == Some(n))
                    .any(|s| s == r),
                _ => true,
            })
            .collect();
        if fresh.is_empty() {
            return;
        }
        self.total += fresh.len() as u64;
        // The cursor stays on its record unless it is on the newest, which it follows.
        if self.selected > 0 {
            self.selected = (self.selected + fresh.len()).min(MAX_LINES - 1);
        }
        let mut records = fresh;
        records.append(&mut self.records);
        records.truncate(MAX_LINES);
        self.records = records;
    }

    pub fn selected_record(&self) -> Option<&LogRecord> {
        self.records.get(self.selected)
    }
}

/// The query that finds a GPU's records: the agent tags the kernel's NVRM lines with
/// the GPU's index (`vigil_proto::logs::NVIDIA_GPU`).
pub fn gpu_query(gpu: &str) -> String {
    format!(
        "attributes.nvidia.gpu:\"{}\"",
        gpu.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(ts: &str, body: &str) -> LogRecord {
        parse_record(
            &json!({"timestamp": ts, "node": "gpu-01", "source": "kernel",
            "severity": "error", "body": body, "attributes": {"nvidia.xid": 79, "nvidia.gpu": "3"}}),
        )
    }

    fn answer(generation: u64, tail: bool, records: Vec<LogRecord>) -> LogsAnswer {
        LogsAnswer {
            generation,
            tail,
            result: Ok(LogPage {
                total: records.len() as u64,
                records,
            }),
        }
    }

    #[test]
    fn records_parse_with_text_attributes() {
        let r = record("2026-11-27T11:59:58.5Z", "NVRM: Xid 79");
        assert_eq!(r.attributes["nvidia.xid"], "79");
        assert_eq!(r.attributes["nvidia.gpu"], "3");
        assert_eq!(
            r.timestamp.map(|t| t.timestamp_millis()),
            Some(1_795_780_798_500)
        );
        assert!(parse_page(&json!({"total": 1})).is_err());
        assert_eq!(gpu_query("3"), "attributes.nvidia.gpu:\"3\"");
    }

    #[test]
    fn tail_adds_only_new_records_and_stays_bounded() {
        let now = parse_time(&json!("2026-11-27T12:00:00Z")).unwrap();
        let mut ui = LogsUi::default();
        let req = ui.search(now).unwrap();
        assert!(req.path.contains("limit=500"), "{}", req.path);
        ui.apply(answer(
            1,
            false,
            vec![
                record("2026-11-27T11:59:58Z", "b"),
                record("2026-11-27T11:59:57Z", "a"),
            ],
        ));
        ui.tail = true;
        assert_eq!(ui.tail_poll(now), None, "not due yet");
        let later = now + chrono::Duration::seconds(2);
        let poll = ui.tail_poll(later).unwrap();
        assert!(poll.path.contains("&start=1795780798.000"), "{}", poll.path);
        ui.apply(answer(
            1,
            true,
            vec![
                record("2026-11-27T11:59:59Z", "c"),
                record("2026-11-27T11:59:58Z", "b"),
            ],
        ));
        let bodies: Vec<&str> = ui.records.iter().map(|r| r.body.as_str()).collect();
        assert_eq!(bodies, ["c", "b", "a"]);
        assert_eq!(ui.total, 3);
        // An outdated answer is dropped; a failure keeps the records.
        ui.apply(answer(0, false, Vec::new()));
        assert_eq!(ui.records.len(), 3);
        ui.apply(LogsAnswer {
            generation: 1,
            tail: true,
            result: Err("boom".into()),
        });
        assert_eq!((ui.records.len(), ui.error.as_deref()), (3, Some("boom")));
        let many: Vec<LogRecord> = (0..MAX_LINES + 5)
            .map(|i| record("2026-11-27T12:00:01Z", &i.to_string()))
            .collect();
        ui.apply(answer(1, true, many));
        assert_eq!(ui.records.len(), MAX_LINES);
    }
}
