//! The journal that makes a recovery action run at most once: `journal.jsonl` under
//! `<state_dir>/recovery/`, one JSON object a line.
//!
//! - `{"record":"started","id":..,"script":..,"at_ms":..}`: written and fsynced (file
//!   and directory) before the script is spawned, so an id seen again after a crash is
//!   never run twice.
//! - `{"record":"final","id":..,"report":{..},"at_ms":..}`: how it ended (finished,
//!   refused, or lost), fsynced.
//! - `{"record":"acked","id":..,"at_ms":..}`: the collector recorded the final report;
//!   not fsynced, since losing one only sends the report once more.
//!
//! Opening reads the whole file, turns every started id without a final record into a
//! lost one ("the agent restarted while it ran"), and rewrites it compacted: ids from
//! the last [`KEEP_AGE_MS`] or the last [`KEEP_COUNT`], whichever keeps more. A line
//! that does not parse is skipped with a warning naming its line number; a crash while
//! appending can only leave the last line cut short.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use vigil_proto::control::{Phase, Report};

/// Journal entries younger than this survive compaction.
pub const KEEP_AGE_MS: i64 = 7 * 24 * 3600 * 1000;
/// The newest this many entries survive compaction, however old.
pub const KEEP_COUNT: usize = 10_000;
/// The journal's file name in its directory.
pub const FILE_NAME: &str = "journal.jsonl";
/// What a lost report says.
pub const LOST_MESSAGE: &str = "the agent restarted while it ran; whether it completed is unknown";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum Line {
    Started {
        id: String,
        script: String,
        at_ms: i64,
    },
    Final {
        id: String,
        report: StoredReport,
        at_ms: i64,
    },
    Acked {
        id: String,
        at_ms: i64,
    },
}

/// A final [`Report`] as the journal writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredReport {
    node: String,
    phase: StoredPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signal: Option<i32>,
    #[serde(default)]
    timed_out: bool,
    started_unix_ms: i64,
    finished_unix_ms: i64,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredPhase {
    Finished,
    Refused,
    Lost,
}

impl StoredReport {
    fn from_report(r: &Report) -> Option<Self> {
        let phase = match Phase::try_from(r.phase).ok()? {
            Phase::Finished => StoredPhase::Finished,
            Phase::Refused => StoredPhase::Refused,
            Phase::Lost => StoredPhase::Lost,
            Phase::Started | Phase::Unspecified => return None,
        };
        Some(Self {
            node: r.node.clone(),
            phase,
            exit_code: r.exit_code,
            signal: r.signal,
            timed_out: r.timed_out,
            started_unix_ms: r.started_unix_ms,
            finished_unix_ms: r.finished_unix_ms,
            message: r.message.clone(),
        })
    }

    fn to_report(&self, id: &str) -> Report {
        let phase = match self.phase {
            StoredPhase::Finished => Phase::Finished,
            StoredPhase::Refused => Phase::Refused,
            StoredPhase::Lost => Phase::Lost,
        };
        Report {
            action_id: id.to_owned(),
            node: self.node.clone(),
            phase: phase as i32,
            exit_code: self.exit_code,
            signal: self.signal,
            timed_out: self.timed_out,
            started_unix_ms: self.started_unix_ms,
            finished_unix_ms: self.finished_unix_ms,
            message: self.message.clone(),
        }
    }
}

/// What the journal knows of one id.
#[derive(Debug, Clone)]
struct Entry {
    /// Order of first appearance, for compaction and for resending in order.
    seq: u64,
    first_at_ms: i64,
    started: Option<(String, i64)>,
    report: Option<Report>,
    acked_at_ms: Option<i64>,
}

/// What the journal says about an id.
#[derive(Debug, Clone, PartialEq)]
pub enum Known {
    /// Never seen.
    New,
    /// Started, not ended (only while this agent runs it: opening turns these lost).
    Started,
    /// Ended: the final report.
    Final(Report),
}

/// The journal: its file for appending, and an index kept apart so that lookups never
/// wait on an fsync.
pub struct Journal {
    dir: PathBuf,
    file: Mutex<File>,
    index: Mutex<Index>,
}

#[derive(Default)]
struct Index {
    entries: HashMap<String, Entry>,
    next_seq: u64,
}

impl Index {
    fn apply(&mut self, line: Line) {
        let (id, at_ms) = match &line {
            Line::Started { id, at_ms, .. }
            | Line::Final { id, at_ms, .. }
            | Line::Acked { id, at_ms } => (id.clone(), *at_ms),
        };
        let seq = self.next_seq;
        let entry = self.entries.entry(id.clone()).or_insert_with(|| Entry {
            seq,
            first_at_ms: at_ms,
            started: None,
            report: None,
            acked_at_ms: None,
        });
        if entry.seq == seq {
            self.next_seq += 1;
        }
        match line {
            Line::Started { script, at_ms, .. } => entry.started = Some((script, at_ms)),
            Line::Final { report, .. } => entry.report = Some(report.to_report(&id)),
            Line::Acked { at_ms, .. } => entry.acked_at_ms = Some(at_ms),
        }
    }
}

/// Why the journal could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct JournalError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl Journal {
    /// Opens (creating) the journal in `dir`, recovers it as the module says and
    /// rewrites it compacted. `node` is put on the lost reports it creates. Blocking.
    pub fn open(dir: &Path, node: &str, now_ms: i64) -> Result<Self, JournalError> {
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| JournalError { path, source }
        };
        std::fs::create_dir_all(dir).map_err(err(dir))?;
        let path = dir.join(FILE_NAME);
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(&path)(e)),
        };
        let mut index = parse(&path, &text);
        for (id, entry) in &mut index.entries {
            if let (Some((script, started_ms)), None) = (&entry.started, &entry.report) {
                tracing::warn!(action_id = %id, script = %script, "recovery action was running when the agent stopped; reporting it lost");
                entry.report = Some(Report {
                    action_id: id.clone(),
                    node: node.to_owned(),
                    phase: Phase::Lost as i32,
                    started_unix_ms: *started_ms,
                    finished_unix_ms: now_ms,
                    message: LOST_MESSAGE.to_owned(),
                    ..Report::default()
                });
            }
        }
        compact(&mut index, now_ms);
        rewrite(dir, &path, &index).map_err(err(&path))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(err(&path))?;
        Ok(Self {
            dir: dir.to_owned(),
            file: Mutex::new(file),
            index: Mutex::new(index),
        })
    }

    /// What the journal knows of `id`.
    pub fn known(&self, id: &str) -> Known {
        let index = lock(&self.index);
        match index.entries.get(id) {
            None => Known::New,
            Some(Entry {
                report: Some(r), ..
            }) => Known::Final(r.clone()),
            Some(_) => Known::Started,
        }
    }

    /// Final reports not yet acknowledged, oldest first (lost ones included).
    pub fn unacked(&self) -> Vec<Report> {
        let index = lock(&self.index);
        let mut out: Vec<(u64, Report)> = index
            .entries
            .values()
            .filter(|e| e.acked_at_ms.is_none())
            .filter_map(|e| Some((e.seq, e.report.clone()?)))
            .collect();
        out.sort_by_key(|(seq, _)| *seq);
        out.into_iter().map(|(_, r)| r).collect()
    }

    /// Records that `id` is about to start, durably (file and directory fsynced).
    /// Blocking.
    pub fn record_started(&self, id: &str, script: &str, at_ms: i64) -> Result<(), JournalError> {
        self.append(
            Line::Started {
                id: id.to_owned(),
                script: script.to_owned(),
                at_ms,
            },
            true,
        )
    }

    /// Records how an action ended, durably. A started report is not final and is
    /// ignored. Blocking.
    pub fn record_final(&self, report: &Report, at_ms: i64) -> Result<(), JournalError> {
        let Some(stored) = StoredReport::from_report(report) else {
            return Ok(());
        };
        self.append(
            Line::Final {
                id: report.action_id.clone(),
                report: stored,
                at_ms,
            },
            true,
        )
    }

    /// Records the collector's acknowledgement of `id`'s final report; false when the
    /// id has no final report or was acknowledged already (nothing written).
    pub fn record_ack(&self, id: &str, at_ms: i64) -> Result<bool, JournalError> {
        {
            let index = lock(&self.index);
            match index.entries.get(id) {
                Some(e) if e.report.is_some() && e.acked_at_ms.is_none() => {}
                _ => return Ok(false),
            }
        }
        self.append(
            Line::Acked {
                id: id.to_owned(),
                at_ms,
            },
            false,
        )?;
        Ok(true)
    }

    /// Writes one line, then updates the index: the index never claims what the file
    /// does not hold.
    fn append(&self, line: Line, durable: bool) -> Result<(), JournalError> {
        let path = self.dir.join(FILE_NAME);
        let err = |source| JournalError {
            path: path.clone(),
            source,
        };
        let mut bytes = serde_json::to_vec(&line).map_err(|e| err(e.into()))?;
        bytes.push(b'\n');
        {
            let mut file = lock(&self.file);
            file.write_all(&bytes).map_err(err)?;
            if durable {
                file.sync_data().map_err(err)?;
                sync_dir(&self.dir).map_err(err)?;
            }
        }
        lock(&self.index).apply(line);
        Ok(())
    }
}

/// The index from the file's bytes; lines that do not parse are skipped and logged.
fn parse(path: &Path, text: &[u8]) -> Index {
    let mut index = Index::default();
    let ends_cleanly = text.last().is_none_or(|b| *b == b'\n');
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    // split() yields an empty piece after a final newline.
    let count = if ends_cleanly {
        lines.len() - 1
    } else {
        lines.len()
    };
    for (i, line) in lines.iter().take(count).enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Line>(line) {
            Ok(line) => index.apply(line),
            Err(e) if i + 1 == count => tracing::warn!(
                path = %path.display(), line = i + 1, error = %e,
                "skipping the recovery journal's last line, cut short or corrupt (a crash while writing it)"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(), line = i + 1, error = %e,
                "skipping a corrupt line of the recovery journal"
            ),
        }
    }
    index
}

/// Forgets entries that are both older than [`KEEP_AGE_MS`] and not among the newest
/// [`KEEP_COUNT`].
fn compact(index: &mut Index, now_ms: i64) {
    if index.entries.len() <= KEEP_COUNT {
        return;
    }
    let mut seqs: Vec<u64> = index.entries.values().map(|e| e.seq).collect();
    seqs.sort_unstable();
    let newest_from = seqs[seqs.len() - KEEP_COUNT];
    index
        .entries
        .retain(|_, e| e.seq >= newest_from || now_ms - e.first_at_ms < KEEP_AGE_MS);
}

/// Writes the index as a fresh journal beside the old one and renames it over it.
fn rewrite(dir: &Path, path: &Path, index: &Index) -> std::io::Result<()> {
    let mut entries: Vec<(&String, &Entry)> = index.entries.iter().collect();
    entries.sort_by_key(|(_, e)| e.seq);
    let mut out = Vec::new();
    for (id, e) in entries {
        let mut lines = Vec::new();
        if let Some((script, at_ms)) = &e.started {
            lines.push(Line::Started {
                id: id.clone(),
                script: script.clone(),
                at_ms: *at_ms,
            });
        }
        if let Some(stored) = e.report.as_ref().and_then(StoredReport::from_report) {
            lines.push(Line::Final {
                id: id.clone(),
                at_ms: stored.finished_unix_ms.max(e.first_at_ms),
                report: stored,
            });
        }
        if let Some(at_ms) = e.acked_at_ms {
            lines.push(Line::Acked {
                id: id.clone(),
                at_ms,
            });
        }
        for line in lines {
            serde_json::to_writer(&mut out, &line)?;
            out.push(b'\n');
        }
    }
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(&out)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The journal's state is consistent between statements; a panic elsewhere leaves
    // nothing half-done here.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(id: &str) -> Report {
        Report {
            action_id: id.into(),
            node: "n1".into(),
            phase: Phase::Finished as i32,
            exit_code: Some(0),
            started_unix_ms: 1,
            finished_unix_ms: 2,
            ..Report::default()
        }
    }

    #[test]
    fn recovers_lost_and_skips_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), "n1", 1_000).unwrap();
        j.record_started("a", "s", 10).unwrap();
        j.record_final(&finished("a"), 20).unwrap();
        j.record_started("b", "s", 30).unwrap();
        j.record_started("c", "s", 40).unwrap();
        j.record_final(&finished("c"), 50).unwrap();
        assert!(j.record_ack("c", 60).unwrap());
        assert!(!j.record_ack("c", 61).unwrap(), "acked once");
        assert!(!j.record_ack("b", 61).unwrap(), "no final report yet");
        drop(j);
        let path = dir.path().join(FILE_NAME);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.insert_str(0, "{not json\n");
        text.push_str("{\"record\":\"started\",\"id\":\"d\",\"scr");
        std::fs::write(&path, text).unwrap();

        let j = Journal::open(dir.path(), "n1", 2_000).unwrap();
        assert_eq!(j.known("a"), Known::Final(finished("a")));
        assert_eq!(j.known("d"), Known::New, "cut-short line skipped");
        let unacked = j.unacked();
        let ids: Vec<&str> = unacked.iter().map(|r| r.action_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(unacked[1].phase, Phase::Lost as i32);
        assert_eq!(
            (unacked[1].started_unix_ms, unacked[1].finished_unix_ms),
            (30, 2_000)
        );
        // The rewrite dropped the bad lines and kept the lost report as it was made.
        drop(j);
        let j = Journal::open(dir.path(), "n1", 3_000).unwrap();
        assert_eq!(j.unacked()[1].finished_unix_ms, 2_000);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("not json") && !text.contains("\"scr\n"));
    }

    #[test]
    fn compaction_keeps_recent_or_newest() {
        let mut index = Index::default();
        let old = 0;
        let now = KEEP_AGE_MS * 2;
        for i in 0..KEEP_COUNT + 5 {
            index.apply(Line::Acked {
                id: format!("old-{i}"),
                at_ms: old,
            });
        }
        for i in 0..3 {
            index.apply(Line::Acked {
                id: format!("new-{i}"),
                at_ms: now - 1,
            });
        }
        compact(&mut index, now);
        assert_eq!(index.entries.len(), KEEP_COUNT);
        assert!(index.entries.contains_key("new-2"));
        assert!(!index.entries.contains_key("old-7"));
        assert!(
            index
                .entries
                .contains_key(&format!("old-{}", KEEP_COUNT + 4))
        );
        // All recent: more than KEEP_COUNT are kept.
        let mut index = Index::default();
        for i in 0..KEEP_COUNT + 5 {
            index.apply(Line::Acked {
                id: format!("r-{i}"),
                at_ms: now - 1,
            });
        }
        compact(&mut index, now);
        assert_eq!(index.entries.len(), KEEP_COUNT + 5);
    }
}
