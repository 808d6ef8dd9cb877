//! The recovery audit on disk: `<data_dir>/recovery/actions.jsonl`, one JSON object
//! per line — an audit entry (`{"action":{..}}`, the whole entry each time it changes)
//! or the kill switch (`{"kill_switch":{..}}`). Reading keeps the last line of each id.
//!
//! Each line is written and fsynced before the caller acts on it: an action is on disk
//! before it is handed to an agent, so a collector restarted after a kill -9 knows the
//! id it sent and never decides the same repair again under a new one. The file is
//! rewritten (to a temporary file, renamed) when it holds four times as many lines as
//! live entries. A torn last line (a crash mid-write) is skipped; a bad line elsewhere
//! is skipped with a warning naming its line number.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::policy::{KillSwitchState, Record};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Action(Box<Record>),
    KillSwitch(KillSwitchState),
}

#[derive(Debug, thiserror::Error)]
#[error("recovery journal {path}: {source}")]
pub struct JournalError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

pub struct Journal {
    path: PathBuf,
    file: File,
    lines: usize,
}

/// What a journal held when it was opened.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The entries, oldest first.
    pub records: Vec<Record>,
    pub kill_switch: Option<KillSwitchState>,
}

impl Journal {
    /// Opens (creating) the journal under `dir` and reads it back.
    pub fn open(dir: &Path) -> Result<(Journal, Loaded), JournalError> {
        let path = dir.join("actions.jsonl");
        let err = |source| JournalError {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut loaded = Loaded::default();
        let mut lines = 0;
        if path.exists() {
            let text = BufReader::new(File::open(&path).map_err(err)?);
            let all: Vec<String> = text.lines().collect::<Result<_, _>>().map_err(err)?;
            let mut order: Vec<String> = Vec::new();
            let mut latest: HashMap<String, Record> = HashMap::new();
            let last = all.len();
            for (i, line) in all.into_iter().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                lines += 1;
                match serde_json::from_str::<Line>(&line) {
                    Ok(Line::Action(r)) => {
                        let r = *r;
                        if !latest.contains_key(&r.id) {
                            order.push(r.id.clone());
                        }
                        latest.insert(r.id.clone(), r);
                    }
                    Ok(Line::KillSwitch(k)) => loaded.kill_switch = Some(k),
                    Err(e) if i + 1 == last => tracing::warn!(
                        path = %path.display(),
                        line = i + 1,
                        error = %e,
                        "skipping a torn last line of the recovery journal"
                    ),
                    Err(e) => tracing::warn!(
                        path = %path.display(),
                        line = i + 1,
                        error = %e,
                        "skipping a line of the recovery journal that does not parse"
                    ),
                }
            }
            loaded.records = order
                .into_iter()
                .filter_map(|id| latest.remove(&id))
                .collect();
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        let mut j = Journal { path, file, lines };
        // Start from a compact file: the loaded state only (drops torn lines too).
        j.rewrite(&loaded.records, loaded.kill_switch.as_ref())?;
        Ok((j, loaded))
    }

    fn write_line(&mut self, line: &Line) -> Result<(), JournalError> {
        let mut bytes = serde_json::to_vec(line).map_err(|e| JournalError {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        bytes.push(b'\n');
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| JournalError {
                path: self.path.clone(),
                source,
            })?;
        self.lines += 1;
        Ok(())
    }

    /// Appends the entries' current state, synced.
    pub fn append(&mut self, records: &[&Record]) -> Result<(), JournalError> {
        for r in records {
            self.write_line(&Line::Action(Box::new((*r).clone())))?;
        }
        Ok(())
    }

    pub fn kill_switch(&mut self, k: &KillSwitchState) -> Result<(), JournalError> {
        self.write_line(&Line::KillSwitch(k.clone()))
    }

    /// Whether the file has grown to four times the live entries.
    pub fn wants_rewrite(&self, live: usize) -> bool {
        self.lines > 1024 && self.lines > 4 * live
    }

    /// Replaces the file with exactly these entries and the kill switch.
    pub fn rewrite(
        &mut self,
        records: &[Record],
        kill: Option<&KillSwitchState>,
    ) -> Result<(), JournalError> {
        let err = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut out = std::io::BufWriter::new(File::create(&tmp).map_err(err)?);
        let mut n = 0;
        let mut put = |line: &Line| -> std::io::Result<()> {
            serde_json::to_writer(&mut out, line).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
            n += 1;
            Ok(())
        };
        if let Some(k) = kill {
            put(&Line::KillSwitch(k.clone())).map_err(err)?;
        }
        for r in records {
            put(&Line::Action(Box::new(r.clone()))).map_err(err)?;
        }
        let file = out.into_inner().map_err(|e| err(e.into_error()))?;
        file.sync_all().map_err(err)?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(err)?;
        self.lines = n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::config::RecoveryConfig;
    use crate::recovery::policy::{FiringAlert, Policy};

    #[test]
    fn last_line_of_each_id_wins_and_a_torn_tail_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let mut p = Policy::new(RecoveryConfig::default(), Vec::new(), None, 0);
        p.set_fleet_size(10);
        let a = FiringAlert {
            labels: [("alertname", "A"), ("node", "n1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            script: "s".into(),
            args_from_labels: vec![],
        };
        let (mut j, loaded) = Journal::open(d.path()).unwrap();
        assert!(loaded.records.is_empty());
        p.observe_rule("r", &[a], 0);
        j.append(&[&p.records()[0]]).unwrap();
        p.dispatchable("n1", 5);
        j.append(&[&p.records()[0]]).unwrap();
        j.kill_switch(&KillSwitchState {
            engaged: true,
            by: "bob".into(),
            reason: "r".into(),
            since_ms: 7,
        })
        .unwrap();
        drop(j);
        let path = d.path().join("actions.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"action\":{\"id\":\"torn").unwrap();
        drop(f);
        let (_j, loaded) = Journal::open(d.path()).unwrap();
        assert_eq!(loaded.records.len(), 1);
        assert_eq!(
            loaded.records[0].state,
            vigil_proto::actions::ActionState::Dispatched
        );
        assert!(loaded.kill_switch.unwrap().engaged);
        // Reopened compact: one line per entry.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}
