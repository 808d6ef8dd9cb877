//! The log WAL: each accepted batch is framed (the metric store's framing and segment
//! files, [`crate::store::wal`]) and fsynced before the sender is answered. Syncs are
//! grouped: a request whose bytes an fsync already covered returns without its own.
//!
//! The indexer reports what its commits cover; segments whose batches are all committed
//! are deleted, so the WAL holds only what the index may not have yet.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use super::indexer::Msg;
use super::record::{Batch, decode, encode};
use super::{IndexError, LogRecord, lock};
use crate::store::wal::{Wal, frame, replay};

/// A segment is closed and a new one started past this size, so that committed
/// segments can be deleted while the writer goes on.
const SEGMENT_MAX_BYTES: u64 = 32 << 20;

struct State {
    wal: Wal,
    segment: u32,
    segment_bytes: u64,
    next_seq: u64,
    /// Segments on disk, oldest first, with the highest batch sequence in each.
    segments: VecDeque<(u32, u64)>,
    /// Batches go to the indexer in sequence order; `None` once closed.
    to_indexer: Option<Sender<Msg>>,
}

pub(crate) struct LogWal {
    dir: PathBuf,
    state: Mutex<State>,
    sync_lock: Mutex<()>,
    synced_position: AtomicU64,
    /// Records handed to the indexer and not yet committed: ingest answers 503 past
    /// the limit instead of queueing without bound.
    pub(crate) queued_records: AtomicUsize,
    max_queued_records: usize,
    pub(crate) disk_bytes: AtomicU64,
}

/// What the WAL held at open.
pub(crate) struct Replayed {
    pub(crate) batches: Vec<Batch>,
}

impl LogWal {
    /// Reads what the WAL holds (batches after `committed_seq` are the ones the index
    /// may lack) and opens a fresh segment after it.
    pub(crate) fn open(
        dir: &Path,
        min_next_seq: u64,
        max_queued_records: usize,
    ) -> Result<(LogWal, Replayed), IndexError> {
        std::fs::create_dir_all(dir).map_err(|e| IndexError::io("create", dir, e))?;
        let mut batches = Vec::new();
        let mut segments: VecDeque<(u32, u64)> = VecDeque::new();
        let mut bad = 0usize;
        let last = replay(dir, 1, |seg, payload| match decode(payload) {
            Some(b) => {
                match segments.back_mut() {
                    Some((s, max)) if *s == seg => *max = (*max).max(b.seq),
                    _ => segments.push_back((seg, b.seq)),
                }
                batches.push(b);
            }
            None => bad += 1,
        })?;
        if bad > 0 {
            tracing::warn!(dir = %dir.display(), batches = bad, "log wal: skipped batches that do not decode");
        }
        let wal = Wal::create(dir, last, u64::MAX)?;
        let segment = last.map_or(1, |l| l + 1);
        let max_replayed = batches.iter().map(|b| b.seq).max().unwrap_or(0);
        segments.push_back((segment, 0));
        let disk_bytes = wal.disk_bytes();
        Ok((
            LogWal {
                dir: dir.to_owned(),
                state: Mutex::new(State {
                    wal,
                    segment,
                    segment_bytes: 0,
                    next_seq: max_replayed.max(min_next_seq.saturating_sub(1)) + 1,
                    segments,
                    to_indexer: None,
                }),
                sync_lock: Mutex::new(()),
                synced_position: AtomicU64::new(0),
                queued_records: AtomicUsize::new(0),
                max_queued_records,
                disk_bytes: AtomicU64::new(disk_bytes),
            },
            Replayed { batches },
        ))
    }

    /// Connects the indexer; batches appended from now on are sent to it.
    pub(crate) fn connect(&self, to_indexer: Sender<Msg>) {
        lock(&self.state).to_indexer = Some(to_indexer);
    }

    /// Stops handing batches to the indexer (its channel closes); appends fail after.
    pub(crate) fn disconnect(&self) {
        lock(&self.state).to_indexer = None;
    }

    /// Logs a batch, hands it to the indexer and returns once it is on disk (fsynced).
    /// Blocks.
    pub(crate) fn append(&self, records: Vec<LogRecord>) -> Result<u64, IndexError> {
        let queued = self.queued_records.load(Ordering::Acquire);
        if queued > self.max_queued_records {
            return Err(IndexError::Busy(queued));
        }
        let n = records.len();
        let (seq, handle) = {
            let mut st = lock(&self.state);
            if st.to_indexer.is_none() {
                return Err(IndexError::Closed);
            }
            let seq = st.next_seq;
            let mut framed = Vec::new();
            frame(&mut framed, &encode(seq, &records));
            if st.segment_bytes > 0 && st.segment_bytes + framed.len() as u64 > SEGMENT_MAX_BYTES {
                let next = st.wal.rotate()?;
                st.segment = next;
                st.segment_bytes = 0;
                st.segments.push_back((next, 0));
            }
            st.wal.write_frames(&framed)?;
            st.segment_bytes += framed.len() as u64;
            st.next_seq += 1;
            if let Some(back) = st.segments.back_mut() {
                back.1 = seq;
            }
            self.disk_bytes
                .store(st.wal.disk_bytes(), Ordering::Relaxed);
            self.queued_records.fetch_add(n, Ordering::AcqRel);
            let sent = st.to_indexer.as_ref().is_some_and(|tx| {
                tx.send(Msg::Batch(Arc::new(Batch { seq, records })))
                    .is_ok()
            });
            if !sent {
                return Err(IndexError::Closed);
            }
            (seq, st.wal.sync_handle())
        };
        // Group commit: one fsync covers every request written before it.
        let _one_at_a_time = lock(&self.sync_lock);
        if self.synced_position.load(Ordering::Acquire) < handle.position {
            handle
                .file
                .sync_data()
                .map_err(|e| IndexError::io("sync", &self.dir, e))?;
            self.synced_position
                .fetch_max(handle.position, Ordering::AcqRel);
        }
        Ok(seq)
    }

    /// Deletes the segments whose batches are all committed (`committed_seq` and
    /// before), except the one being written.
    pub(crate) fn trim(&self, committed_seq: u64) -> Result<(), IndexError> {
        let mut st = lock(&self.state);
        let mut keep_from = None;
        while st.segments.len() > 1 && st.segments.front().is_some_and(|s| s.1 <= committed_seq) {
            st.segments.pop_front();
            keep_from = st.segments.front().map(|s| s.0);
        }
        if let Some(first) = keep_from {
            st.wal.remove_before(first)?;
            self.disk_bytes
                .store(st.wal.disk_bytes(), Ordering::Relaxed);
        }
        Ok(())
    }
}
