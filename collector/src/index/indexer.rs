//! The indexing thread: takes accepted batches in WAL order, adds their records to the
//! writers of their hours, and every commit interval commits each changed partition
//! with the batch sequence it now covers as payload. After a commit it makes the new
//! records searchable, trims the WAL, counts the log metrics and tells the tail
//! streams. Retention (age and size) runs here too, so that no partition is deleted
//! under an open writer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use tantivy::{IndexWriter, TantivyDocument};

use super::metrics::LogMetrics;
use super::partition::{NS_PER_HOUR, Partition, hour_of, payload, writer_threads};
use super::record::{Batch, record_id};
use super::schema::AttributesDoc;
use super::{IndexError, Inner, now_ns};

/// What the indexing thread is asked to do.
pub(crate) enum Msg {
    Batch(Arc<Batch>),
    /// Apply retention as if it were `now_ns`; answers the partitions dropped.
    Retention(i64, SyncSender<Result<usize, IndexError>>),
}

/// How often retention runs on its own.
const RETENTION_EVERY: Duration = Duration::from_secs(30);
/// A writer of an older hour that received nothing for this long is closed.
const IDLE_WRITER: Duration = Duration::from_secs(120);

struct Writer {
    writer: IndexWriter<TantivyDocument>,
    last_used: Instant,
}

pub(crate) struct Indexer {
    inner: Arc<Inner>,
    writers: HashMap<i64, Writer>,
    dirty: BTreeSet<i64>,
    /// The last batch taken (all its records are in writers or skipped).
    processed_seq: u64,
    /// What the last commit covers.
    committed_seq: u64,
    /// Records taken since the last commit (for the ingest's queue bound).
    pending_records: usize,
    /// Records added to writers since the last commit.
    pending_indexed: u64,
    metrics: LogMetrics,
    writer_memory_bytes: usize,
    attributes: AttributesDoc,
}

impl Indexer {
    pub(crate) fn new(
        inner: Arc<Inner>,
        metrics: LogMetrics,
        committed_seq: u64,
        writer_memory_bytes: usize,
    ) -> Indexer {
        Indexer {
            inner,
            writers: HashMap::new(),
            dirty: BTreeSet::new(),
            processed_seq: committed_seq,
            committed_seq,
            pending_records: 0,
            pending_indexed: 0,
            metrics,
            writer_memory_bytes,
            attributes: AttributesDoc::default(),
        }
    }

    /// Runs until the channel closes, then commits what it has.
    pub(crate) fn run(mut self, rx: Receiver<Msg>, commit_interval: Duration) {
        let mut last_commit = Instant::now();
        let mut last_retention = Instant::now();
        if let Err(e) = self.retention(now_ns()) {
            tracing::error!(error = %e, "log retention failed");
        }
        loop {
            if self.inner.abandoned.load(Ordering::Acquire) {
                // A simulated crash: what is not committed is lost from the writers
                // (the WAL still has it).
                return;
            }
            let wait = commit_interval.saturating_sub(last_commit.elapsed());
            match rx.recv_timeout(wait) {
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if self.inner.abandoned.load(Ordering::Acquire) {
                        return;
                    }
                    break;
                }
            }
            // Take what else is queued before looking at the clock.
            while last_commit.elapsed() < commit_interval {
                match rx.try_recv() {
                    Ok(msg) => self.handle(msg),
                    Err(_) => break,
                }
            }
            if last_commit.elapsed() >= commit_interval {
                self.commit();
                last_commit = Instant::now();
            }
            if last_retention.elapsed() >= RETENTION_EVERY {
                last_retention = Instant::now();
                if let Err(e) = self.retention(now_ns()) {
                    tracing::error!(error = %e, "log retention failed");
                }
            }
        }
        self.commit();
        tracing::info!(committed_seq = self.committed_seq, "log indexer stopped");
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Batch(b) => {
                if let Err(e) = self.add(&b) {
                    tracing::error!(error = %e, seq = b.seq, "indexing a log batch failed; the index stops accepting until restarted");
                    self.inner.broken.store(true, Ordering::Release);
                }
            }
            Msg::Retention(now, answer) => {
                self.commit();
                let _ = answer.send(self.retention(now));
            }
        }
    }

    fn add(&mut self, batch: &Batch) -> Result<(), IndexError> {
        let cutoff_ns = now_ns().saturating_sub(self.inner.retention_ns);
        for (i, r) in batch.records.iter().enumerate() {
            let hour = hour_of(r.time_ns);
            if (hour + 1).saturating_mul(NS_PER_HOUR) <= cutoff_ns {
                self.inner.stats.too_old.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let partition = self.inner.partition(hour)?;
            if batch.seq <= partition.committed() {
                // Replayed after a crash and already committed there.
                continue;
            }
            let w = match self.writers.entry(hour) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let writer = partition
                        .index
                        .writer_with_num_threads(
                            writer_threads(self.writer_memory_bytes),
                            self.writer_memory_bytes,
                        )
                        .map_err(|e| IndexError::tantivy("opening a writer".into(), e))?;
                    v.insert(Writer {
                        writer,
                        last_used: Instant::now(),
                    })
                }
            };
            w.last_used = Instant::now();
            w.writer
                .add_document(self.inner.fields.document(
                    r,
                    record_id(batch.seq, i),
                    &mut self.attributes,
                ))
                .map_err(|e| IndexError::tantivy("adding a document".into(), e))?;
            self.pending_indexed += 1;
            self.dirty.insert(hour);
        }
        self.processed_seq = batch.seq;
        self.pending_records += batch.records.len();
        Ok(())
    }

    fn commit(&mut self) {
        if self.processed_seq == self.committed_seq {
            return;
        }
        let started = Instant::now();
        let seq = self.processed_seq;
        let mut committed = Vec::new();
        for hour in std::mem::take(&mut self.dirty) {
            let Some(w) = self.writers.get_mut(&hour) else {
                continue;
            };
            let mut prepared = match w.writer.prepare_commit() {
                Ok(p) => p,
                Err(e) => return self.fail(e),
            };
            prepared.set_payload(&payload(seq));
            if let Err(e) = prepared.commit() {
                return self.fail(e);
            }
            if let Some(p) = self.inner.get_partition(hour) {
                p.committed_seq.store(seq, Ordering::Release);
                if let Err(e) = p.reader.reload() {
                    tracing::warn!(error = %e, hour, "reloading a log partition reader failed");
                }
                committed.push(p);
            }
        }
        let after = self.committed_seq;
        self.committed_seq = seq;
        let micros = started.elapsed().as_micros() as u64;
        self.inner.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.inner
            .stats
            .commit_micros
            .fetch_add(micros, Ordering::Relaxed);
        self.inner
            .stats
            .indexed
            .fetch_add(std::mem::take(&mut self.pending_indexed), Ordering::Relaxed);
        self.inner
            .wal
            .queued_records
            .fetch_sub(self.pending_records, Ordering::AcqRel);
        self.pending_records = 0;
        if let Err(e) = self.inner.wal.trim(seq) {
            tracing::warn!(error = %e, "trimming the log wal failed");
        }
        self.inner.committed.send_replace(seq);
        if let Err(e) = self.metrics.on_commit(
            &self.inner.fields,
            &committed,
            after,
            seq,
            now_ns() / 1_000_000,
        ) {
            tracing::warn!(error = %e, "counting log metrics failed");
        }
        // Close writers of older hours nobody writes to any more.
        let newest = self.writers.keys().max().copied();
        self.writers
            .retain(|h, w| Some(*h) == newest || w.last_used.elapsed() < IDLE_WRITER);
    }

    fn fail(&mut self, e: tantivy::TantivyError) {
        tracing::error!(error = %e, "committing the log index failed; the WAL keeps the records and a restart replays them");
        self.inner.broken.store(true, Ordering::Release);
    }

    /// Drops partitions that ended before the retention cutoff, then the oldest while
    /// over the size budget (never the newest). Returns how many went.
    fn retention(&mut self, now_ns: i64) -> Result<usize, IndexError> {
        let cutoff = now_ns.saturating_sub(self.inner.retention_ns);
        let parts: BTreeMap<i64, Arc<Partition>> = self.inner.partitions_map();
        let mut drop = Vec::new();
        let mut sizes: Vec<(i64, u64)> = Vec::new();
        for (hour, p) in &parts {
            if p.range_ns().1 <= cutoff {
                drop.push(*hour);
            } else {
                sizes.push((*hour, p.disk_bytes()));
            }
        }
        let mut total: u64 = sizes.iter().map(|s| s.1).sum();
        for (hour, bytes) in sizes.iter().take(sizes.len().saturating_sub(1)) {
            if total <= self.inner.max_bytes {
                break;
            }
            drop.push(*hour);
            total -= bytes;
        }
        for hour in &drop {
            self.writers.remove(hour);
            self.dirty.remove(hour);
            self.inner.drop_partition(*hour)?;
        }
        if !drop.is_empty() {
            tracing::info!(partitions = drop.len(), "log retention dropped partitions");
        }
        Ok(drop.len())
    }
}
