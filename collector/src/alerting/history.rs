//! The alert history: every pending, firing and resolved transition of the evaluator,
//! and every silenced, inhibited and notified event of the notifier, kept on disk.
//!
//! Events go down a channel to one writer thread, which appends them as JSON lines to
//! `<data_dir>/alerts/history-<seq>.jsonl` and fsyncs once per batch: `record` never
//! waits for the disk, and a burst of transitions costs one fsync. The files rotate at a
//! quarter of the size budget and the oldest go once the budget is spent, so the
//! history is bounded. A line torn by a crash is skipped when read.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::notify::{HistoryEvent, HistoryKind, HistorySink, LabelMap};

const FILE_PREFIX: &str = "history-";
const FILE_SUFFIX: &str = ".jsonl";
/// Files the size budget is spread over: the oldest quarter is dropped at a time.
const FILES_PER_BUDGET: u64 = 4;

/// Why the history could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("alert history in {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One line of a history file.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    at_ms: i64,
    kind: String,
    #[serde(default)]
    labels: LabelMap,
    #[serde(default)]
    annotations: LabelMap,
    #[serde(default)]
    detail: String,
}

pub fn kind_name(kind: HistoryKind) -> &'static str {
    match kind {
        HistoryKind::Pending => "pending",
        HistoryKind::Firing => "firing",
        HistoryKind::Resolved => "resolved",
        HistoryKind::Silenced => "silenced",
        HistoryKind::Inhibited => "inhibited",
        HistoryKind::Notified => "notified",
    }
}

pub fn parse_kind(s: &str) -> Option<HistoryKind> {
    Some(match s {
        "pending" => HistoryKind::Pending,
        "firing" => HistoryKind::Firing,
        "resolved" => HistoryKind::Resolved,
        "silenced" => HistoryKind::Silenced,
        "inhibited" => HistoryKind::Inhibited,
        "notified" => HistoryKind::Notified,
        _ => return None,
    })
}

/// Which events a query returns; every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub alertname: Option<String>,
    /// Matches the `node`, `instance` (with or without its port) or `Hostname` label,
    /// the labels the rule packs name a node by.
    pub node: Option<String>,
    /// Empty: every kind.
    pub kinds: Vec<HistoryKind>,
    pub limit: usize,
}

impl HistoryQuery {
    fn matches(&self, e: &HistoryEvent) -> bool {
        if self.start_ms.is_some_and(|s| e.at_ms < s) || self.end_ms.is_some_and(|t| e.at_ms > t) {
            return false;
        }
        if !self.kinds.is_empty() && !self.kinds.contains(&e.kind) {
            return false;
        }
        if let Some(name) = &self.alertname
            && e.labels.get("alertname") != Some(name)
        {
            return false;
        }
        if let Some(node) = &self.node {
            let instance_host = e
                .labels
                .get("instance")
                .map(|i| i.rsplit_once(':').map_or(i.as_str(), |(h, _)| h));
            let hit = e.labels.get("node") == Some(node)
                || e.labels.get("Hostname") == Some(node)
                || e.labels.get("instance") == Some(node)
                || instance_host == Some(node.as_str());
            if !hit {
                return false;
            }
        }
        true
    }
}

enum Msg {
    Event(HistoryEvent),
    /// Answered once everything sent before it is on disk.
    Flush(mpsc::Sender<()>),
}

/// The durable alert history; implements [`HistorySink`] for the evaluator and the
/// notifier.
pub struct AlertHistory {
    dir: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    recorded: AtomicU64,
    write_errors: std::sync::Arc<AtomicU64>,
    /// The last pending, firing or resolved event of each alert (by fingerprint) from
    /// before this start, so the evaluator does not record an alert that was firing
    /// before a restart as newly pending and firing while its state is restored.
    before_start: std::collections::HashMap<u64, HistoryKind>,
}

impl std::fmt::Debug for AlertHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertHistory")
            .field("dir", &self.dir)
            .finish()
    }
}

struct Writer {
    dir: PathBuf,
    max_bytes: u64,
    seq: u64,
    file: File,
    size: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HistoryError + '_ {
    move |source| HistoryError::Io {
        path: path.to_owned(),
        source,
    }
}

/// History files in `dir`, oldest first, with their sequence numbers.
fn list_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, HistoryError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_prefix(FILE_PREFIX))
            .and_then(|n| n.strip_suffix(FILE_SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((seq, entry.path()));
    }
    out.sort();
    Ok(out)
}

fn file_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{FILE_PREFIX}{seq:010}{FILE_SUFFIX}"))
}

impl Writer {
    fn open(dir: &Path, max_bytes: u64) -> Result<Writer, HistoryError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let seq = list_files(dir)?.last().map_or(1, |(s, _)| *s);
        let path = file_path(dir, seq);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let size = file.metadata().map_err(io_err(&path))?.len();
        if size > 0 {
            // A line torn by a crash: end it, so the next event starts a line of its own.
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(size - 1))
                .and_then(|_| file.read_exact(&mut last))
                .map_err(io_err(&path))?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(io_err(&path))?;
            }
        }
        Ok(Writer {
            dir: dir.to_owned(),
            max_bytes,
            seq,
            file,
            size,
        })
    }

    fn write_batch(&mut self, events: &[HistoryEvent]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for e in events {
            let line = Line {
                at_ms: e.at_ms,
                kind: kind_name(e.kind).to_string(),
                labels: e.labels.clone(),
                annotations: e.annotations.clone(),
                detail: e.detail.clone(),
            };
            serde_json::to_writer(&mut buf, &line).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.size += buf.len() as u64;
        if self.size >= (self.max_bytes / FILES_PER_BUDGET).max(1) {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.seq += 1;
        let path = file_path(&self.dir, self.seq);
        self.file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.size = 0;
        let files = list_files(&self.dir).map_err(std::io::Error::other)?;
        let mut sizes: Vec<(PathBuf, u64)> = files
            .into_iter()
            .map(|(_, p)| {
                let len = std::fs::metadata(&p).map_or(0, |m| m.len());
                (p, len)
            })
            .collect();
        let mut total: u64 = sizes.iter().map(|(_, l)| l).sum();
        // Oldest first; the current (empty) file is last and never removed.
        sizes.pop();
        for (p, len) in sizes {
            if total <= self.max_bytes {
                break;
            }
            std::fs::remove_file(&p)?;
            total -= len;
        }
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl AlertHistory {
    /// Opens (creating) the history in `dir`, at most about `max_bytes` on disk, and
    /// starts its writer thread.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<AlertHistory, HistoryError> {
        let mut writer = Writer::open(dir, max_bytes)?;
        let mut before_start = std::collections::HashMap::new();
        for (_, path) in list_files(dir)? {
            let file = File::open(&path).map_err(io_err(&path))?;
            for line in BufReader::new(file).lines() {
                let line = line.map_err(io_err(&path))?;
                if let Some(e) = parse_line(&line)
                    && matches!(
                        e.kind,
                        HistoryKind::Pending | HistoryKind::Firing | HistoryKind::Resolved
                    )
                {
                    before_start.insert(crate::notify::fingerprint(&e.labels), e.kind);
                }
            }
        }
        let (tx, rx) = mpsc::channel::<Msg>();
        let write_errors = std::sync::Arc::new(AtomicU64::new(0));
        let errors = std::sync::Arc::clone(&write_errors);
        let thread = std::thread::Builder::new()
            .name("alert-history".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut events = Vec::new();
                    let mut flushes = Vec::new();
                    for msg in std::iter::once(first).chain(rx.try_iter()) {
                        match msg {
                            Msg::Event(e) => events.push(e),
                            Msg::Flush(done) => flushes.push(done),
                        }
                    }
                    if !events.is_empty()
                        && let Err(e) = writer.write_batch(&events)
                    {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            dir = %writer.dir.display(),
                            error = %e,
                            lost = events.len(),
                            "writing the alert history failed"
                        );
                    }
                    for done in flushes {
                        let _ = done.send(());
                    }
                }
            })
            .map_err(io_err(dir))?;
        Ok(AlertHistory {
            dir: dir.to_owned(),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(thread)),
            recorded: AtomicU64::new(0),
            write_errors,
            before_start,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn send(&self, msg: Msg) -> bool {
        self.tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|tx| tx.send(msg).is_ok())
    }

    /// The last transition recorded for the alert with these labels before this start.
    pub fn kind_before_start(&self, labels: &LabelMap) -> Option<HistoryKind> {
        self.before_start
            .get(&crate::notify::fingerprint(labels))
            .copied()
    }

    /// Blocks until every event recorded so far is on disk.
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::channel();
        if self.send(Msg::Flush(done_tx)) {
            let _ = done_rx.recv();
        }
    }

    /// Writes what is queued and stops the writer thread (blocking). Later events are
    /// dropped.
    pub fn close(&self) {
        drop(
            self.tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if let Some(t) = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            && t.join().is_err()
        {
            tracing::error!("the alert history writer panicked");
        }
    }

    /// Events matching `q`, newest first (blocking: reads the files).
    pub fn query(&self, q: &HistoryQuery) -> Result<Vec<HistoryEvent>, HistoryError> {
        self.flush();
        let mut out = Vec::new();
        let files = list_files(&self.dir)?;
        for (_, path) in files.iter().rev() {
            let file = match File::open(path) {
                Ok(f) => f,
                // Rotated away between listing and opening.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(path)(e)),
            };
            let mut events = Vec::new();
            for line in BufReader::new(file).lines() {
                let line = line.map_err(io_err(path))?;
                let Some(e) = parse_line(&line) else { continue };
                if q.matches(&e) {
                    events.push(e);
                }
            }
            // Lines are in write order; events of one batch share the order they came in.
            events.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
            for e in events {
                if out.len() >= q.limit {
                    return Ok(out);
                }
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Events recorded since start, and batches that failed to be written.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.recorded.load(Ordering::Relaxed),
            self.write_errors.load(Ordering::Relaxed),
        )
    }
}

fn parse_line(line: &str) -> Option<HistoryEvent> {
    let l: Line = serde_json::from_str(line).ok()?;
    Some(HistoryEvent {
        at_ms: l.at_ms,
        kind: parse_kind(&l.kind)?,
        labels: l.labels,
        annotations: l.annotations,
        detail: l.detail,
    })
}

impl HistorySink for AlertHistory {
    fn record(&self, event: HistoryEvent) {
        if self.send(Msg::Event(event)) {
            self.recorded.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for AlertHistory {
    fn drop(&mut self) {
        self.close();
    }
}

/// Labels as a sorted map, for events.
pub fn label_map<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> LabelMap {
    pairs
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at_ms: i64, kind: HistoryKind, name: &str, node: &str) -> HistoryEvent {
        HistoryEvent {
            at_ms,
            kind,
            labels: label_map([("alertname", name), ("instance", node)].into_iter()),
            annotations: LabelMap::new(),
            detail: format!("at {at_ms}"),
        }
    }

    fn all() -> HistoryQuery {
        HistoryQuery {
            limit: usize::MAX,
            ..HistoryQuery::default()
        }
    }

    #[test]
    fn events_survive_reopen_newest_first_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        {
            let h = AlertHistory::open(dir.path(), 1 << 20).unwrap();
            h.record(event(1_000, HistoryKind::Pending, "A", "n1:9100"));
            h.record(event(2_000, HistoryKind::Firing, "A", "n1:9100"));
            h.record(event(3_000, HistoryKind::Firing, "B", "n2"));
            h.close();
        }
        let h = AlertHistory::open(dir.path(), 1 << 20).unwrap();
        h.record(event(4_000, HistoryKind::Resolved, "A", "n1:9100"));
        let got: Vec<i64> = h.query(&all()).unwrap().iter().map(|e| e.at_ms).collect();
        assert_eq!(got, vec![4_000, 3_000, 2_000, 1_000]);

        let q = HistoryQuery {
            node: Some("n1".into()),
            kinds: vec![HistoryKind::Firing, HistoryKind::Resolved],
            ..all()
        };
        let got: Vec<i64> = h.query(&q).unwrap().iter().map(|e| e.at_ms).collect();
        assert_eq!(got, vec![4_000, 2_000]);
        let q = HistoryQuery {
            alertname: Some("B".into()),
            ..all()
        };
        assert_eq!(h.query(&q).unwrap().len(), 1);
        let q = HistoryQuery {
            start_ms: Some(2_000),
            end_ms: Some(3_000),
            limit: 1,
            ..all()
        };
        let got = h.query(&q).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].at_ms, 3_000);
    }

    #[test]
    fn torn_line_is_skipped_and_the_next_event_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let h = AlertHistory::open(dir.path(), 1 << 20).unwrap();
            h.record(event(1_000, HistoryKind::Firing, "A", "n1"));
            h.close();
        }
        let (_, path) = list_files(dir.path()).unwrap().pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"at_ms\":2000,\"kind\":\"fir").unwrap();
        drop(f);
        let h = AlertHistory::open(dir.path(), 1 << 20).unwrap();
        h.record(event(3_000, HistoryKind::Resolved, "A", "n1"));
        let got: Vec<i64> = h.query(&all()).unwrap().iter().map(|e| e.at_ms).collect();
        assert_eq!(got, vec![3_000, 1_000]);
    }

    #[test]
    fn size_is_bounded_by_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let budget = 4_000;
        let h = AlertHistory::open(dir.path(), budget).unwrap();
        for i in 0..200 {
            h.record(event(i, HistoryKind::Firing, "Alert", "node"));
            h.flush();
        }
        let files = list_files(dir.path()).unwrap();
        let total: u64 = files
            .iter()
            .map(|(_, p)| std::fs::metadata(p).unwrap().len())
            .sum();
        // The budget, plus the current file up to its rotation point and one line over.
        assert!(total <= budget + budget / FILES_PER_BUDGET + 200, "{total}");
        assert!(files.len() > 1);
        // The newest events are the ones kept.
        let got = h.query(&all()).unwrap();
        assert_eq!(got[0].at_ms, 199);
        assert!(got.len() < 200);
    }
}
