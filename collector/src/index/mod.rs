//! The log index: tantivy, one index per hour of record time, behind a WAL.
//!
//! An accepted batch is appended to the log WAL and fsynced (syncs grouped across
//! concurrent requests) before the sender is answered; the indexing thread adds it to
//! the hour's writer and commits at least every `commit_interval_ms` (≤ 1 s), storing
//! in each partition's commit payload the WAL sequence number it covers. After a crash
//! the WAL's batches are replayed, each record into its partition only when that
//! partition's payload is older than the batch: a kill -9 loses nothing acknowledged
//! and indexes nothing twice. Committed WAL segments are deleted.
//!
//! This module is the only code that imports tantivy.
//!
//! # Layout
//! - `record`: [`LogRecord`] and its WAL encoding.
//! - `schema`: the fields and the record ↔ document mapping.
//! - `partition`: hourly indexes on disk, commit payloads.
//! - `wal`: the log WAL with group commit, trimming.
//! - `indexer`: the indexing thread (commits, retention).
//! - `search`: queries, filters, cursors; id ranges for the tail and the log metrics.
//! - `metrics`: counters derived from log queries, written into the metric store.
//! - [`bench`]: raw indexing for the benchmark.

pub mod bench;
mod indexer;
mod metrics;
mod partition;
mod record;
mod schema;
mod search;
mod wal;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use vigil_proto::MetricFamily;

pub use record::{LogRecord, MAX_BATCH_RECORDS};
pub use search::{Cursor, Hit, MAX_LIMIT, SearchRequest, SearchResult};

use crate::config::LogMetricConfig;
use crate::store::{Store, StoreError};
use indexer::{Indexer, Msg};
use partition::Partition;
use schema::Fields;
use search::{Filter, Parser};

/// Why the log index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("log index {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("log index: {what}: {message}")]
    Tantivy { what: String, message: String },
    #[error("log wal: {0}")]
    Wal(#[from] crate::store::WalError),
    /// The query does not parse; the message names the problem.
    #[error("{0}")]
    BadQuery(String),
    #[error("the log index is closed")]
    Closed,
    #[error("the log index failed to commit; restart the collector to replay its WAL")]
    Broken,
    #[error("{0} log records wait to be indexed; retry later")]
    Busy(usize),
    #[error("writing log metrics: {0}")]
    Store(#[from] StoreError),
}

impl IndexError {
    fn io(op: &'static str, path: &Path, source: std::io::Error) -> IndexError {
        IndexError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }

    fn tantivy(what: String, e: tantivy::TantivyError) -> IndexError {
        IndexError::Tantivy {
            what,
            message: e.to_string(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks mid-update; the state stays usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn now_ns() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_nanos()).unwrap_or(i64::MAX)
}

/// Settings of the log index.
#[derive(Debug, Clone)]
pub struct LogIndexOptions {
    /// `<data_dir>/logs`: `wal/` and `index/hour-N/` below it.
    pub dir: PathBuf,
    pub retention: Duration,
    pub max_bytes: u64,
    pub commit_interval: Duration,
    pub writer_memory_bytes: usize,
    pub max_queued_records: usize,
    pub metrics: Vec<LogMetricConfig>,
}

impl LogIndexOptions {
    pub fn from_config(config: &crate::CollectorConfig) -> LogIndexOptions {
        let logs = &config.logs;
        LogIndexOptions {
            dir: config.data_dir.join("logs"),
            retention: Duration::from_secs_f64(logs.retention_hours * 3600.0),
            max_bytes: logs.max_bytes,
            commit_interval: Duration::from_millis(logs.commit_interval_ms),
            writer_memory_bytes: logs.writer_memory_bytes,
            max_queued_records: logs.max_queued_records,
            metrics: logs.metrics.clone(),
        }
    }

    /// Defaults of `[logs]` with the index in `dir` (tests, benchmarks).
    pub fn in_dir(dir: &Path) -> LogIndexOptions {
        LogIndexOptions::from_config(&crate::CollectorConfig {
            data_dir: dir.to_owned(),
            ..crate::CollectorConfig::default()
        })
    }
}

#[derive(Debug, Default)]
struct Stats {
    records: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
    too_old: AtomicU64,
    commits: AtomicU64,
    commit_micros: AtomicU64,
    /// Records committed to the index (searchable) by this process.
    indexed: AtomicU64,
}

/// What the indexing thread and the API share.
pub(crate) struct Inner {
    fields: Fields,
    parser: Parser,
    root: PathBuf,
    partitions: RwLock<BTreeMap<i64, Arc<Partition>>>,
    wal: wal::LogWal,
    committed: tokio::sync::watch::Sender<u64>,
    /// Turns true when the collector stops: live tails end so the server can drain.
    tails_stop: tokio::sync::watch::Sender<bool>,
    stats: Stats,
    retention_ns: i64,
    max_bytes: u64,
    broken: AtomicBool,
    /// Set by [`LogIndex::abandon`]: the indexer stops without committing.
    abandoned: AtomicBool,
}

impl Inner {
    fn partitions_map(&self) -> BTreeMap<i64, Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn get_partition(&self, hour: i64) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&hour)
            .cloned()
    }

    /// The partition of `hour`, created if new.
    fn partition(&self, hour: i64) -> Result<Arc<Partition>, IndexError> {
        if let Some(p) = self.get_partition(hour) {
            return Ok(p);
        }
        let p = Arc::new(Partition::open(&self.root, hour, &self.fields)?);
        self.partitions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(hour, Arc::clone(&p));
        Ok(p)
    }

    fn drop_partition(&self, hour: i64) -> Result<(), IndexError> {
        let removed = self
            .partitions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&hour);
        if let Some(p) = removed {
            // Searches still holding it read from the mapped files until they finish.
            std::fs::remove_dir_all(&p.dir).map_err(|e| IndexError::io("remove", &p.dir, e))?;
        }
        Ok(())
    }
}

/// The log index: append, search, tail, log metrics.
pub struct LogIndex {
    inner: Arc<Inner>,
    indexer: Mutex<Option<JoinHandle<()>>>,
    to_indexer: Mutex<Option<std::sync::mpsc::Sender<Msg>>>,
}

impl std::fmt::Debug for LogIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogIndex")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

impl LogIndex {
    /// Opens the partitions, replays the WAL into the indexer and starts it. Blocks.
    /// `store` receives the log-derived counters (none: they are not counted).
    pub fn open(
        options: LogIndexOptions,
        store: Option<Arc<Store>>,
    ) -> Result<LogIndex, IndexError> {
        let fields = Fields::new();
        let parser = Parser::new(&fields);
        let log_metrics = metrics::LogMetrics::new(&parser, &options.metrics, store)?;
        let root = options.dir.join("index");
        std::fs::create_dir_all(&root).map_err(|e| IndexError::io("create", &root, e))?;
        let mut partitions = BTreeMap::new();
        let mut max_committed = 0u64;
        for hour in partition::list(&root)? {
            let p = Partition::open(&root, hour, &fields)?;
            max_committed = max_committed.max(p.committed());
            partitions.insert(hour, Arc::new(p));
        }
        let (wal, replayed) = wal::LogWal::open(
            &options.dir.join("wal"),
            max_committed + 1,
            options.max_queued_records,
        )?;
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let inner = Arc::new(Inner {
            fields,
            parser,
            root,
            partitions: RwLock::new(partitions),
            wal,
            committed: tokio::sync::watch::Sender::new(0),
            tails_stop: tokio::sync::watch::Sender::new(false),
            stats: Stats::default(),
            retention_ns: i64::try_from(options.retention.as_nanos()).unwrap_or(i64::MAX),
            max_bytes: options.max_bytes,
            broken: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
        });
        // The replayed batches first, in WAL order; the indexer skips what a
        // partition's commit already has.
        let replay_count = replayed.batches.len();
        let first_seq = replayed
            .batches
            .first()
            .map_or(max_committed, |b| b.seq.saturating_sub(1));
        for b in replayed.batches {
            inner
                .wal
                .queued_records
                .fetch_add(b.records.len(), Ordering::AcqRel);
            let _ = tx.send(Msg::Batch(Arc::new(b)));
        }
        if replay_count > 0 {
            tracing::info!(batches = replay_count, "replaying the log wal");
        }
        inner.wal.connect(tx.clone());
        let indexer = Indexer::new(
            Arc::clone(&inner),
            log_metrics,
            first_seq.min(max_committed),
            options.writer_memory_bytes,
        );
        inner.committed.send_replace(first_seq.min(max_committed));
        let interval = options.commit_interval;
        let handle = std::thread::Builder::new()
            .name("vigil-logs-index".into())
            .spawn(move || indexer.run(rx, interval))
            .map_err(|e| IndexError::io("spawn", &options.dir, e))?;
        Ok(LogIndex {
            inner,
            indexer: Mutex::new(Some(handle)),
            to_indexer: Mutex::new(Some(tx)),
        })
    }

    /// Makes a batch durable and queues it for indexing; returns its WAL sequence
    /// number once it is fsynced. Blocks.
    pub fn append(&self, records: Vec<LogRecord>) -> Result<u64, IndexError> {
        if self.inner.broken.load(Ordering::Acquire) {
            return Err(IndexError::Broken);
        }
        if records.len() as u64 >= MAX_BATCH_RECORDS {
            return Err(IndexError::Busy(records.len()));
        }
        let n = records.len() as u64;
        let bytes: u64 = records.iter().map(|r| r.body.len() as u64).sum();
        let seq = self.inner.wal.append(records)?;
        let s = &self.inner.stats;
        s.records.fetch_add(n, Ordering::Relaxed);
        s.bytes.fetch_add(bytes, Ordering::Relaxed);
        s.batches.fetch_add(1, Ordering::Relaxed);
        Ok(seq)
    }

    /// Records older than this (ns) are past retention.
    pub fn retention_cutoff_ns(&self) -> i64 {
        now_ns().saturating_sub(self.inner.retention_ns)
    }

    /// Checks a query without running it.
    pub fn check_query(&self, query: &str) -> Result<(), IndexError> {
        self.inner.parser.parse(query).map(|_| ())
    }

    /// Searches the partitions overlapping the request's range. Blocks.
    pub fn search(&self, req: &SearchRequest) -> Result<SearchResult, IndexError> {
        let filter = Filter::from_request(&self.inner.parser, req)?;
        let parts: Vec<Arc<Partition>> = self.inner.partitions_map().into_values().collect();
        search::search(
            &self.inner.fields,
            parts,
            &filter,
            req.limit.clamp(1, MAX_LIMIT),
            req.cursor,
        )
    }

    /// The WAL sequence number the index has committed through, and its changes: what
    /// a live tail waits on.
    pub fn committed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.committed.subscribe()
    }

    /// Turns true once [`Self::stop_tails`] was called.
    pub fn tails_stopped(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.tails_stop.subscribe()
    }

    /// Ends every live tail (the collector is stopping; its HTTP server drains only
    /// once no response is still streaming).
    pub fn stop_tails(&self) {
        self.inner.tails_stop.send_replace(true);
    }

    /// Records of batches `after_seq + 1 ..= through_seq` matching `req` (its cursor
    /// and limit aside), oldest first, at most `limit`. Blocks.
    pub fn between(
        &self,
        req: &SearchRequest,
        after_seq: u64,
        through_seq: u64,
        limit: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        let filter = Filter::from_request(&self.inner.parser, req)?;
        let parts: Vec<Arc<Partition>> = self.inner.partitions_map().into_values().collect();
        search::between(
            &self.inner.fields,
            &parts,
            &filter,
            after_seq,
            through_seq,
            Some(limit),
        )
    }

    /// Partition hours on disk, ascending.
    pub fn partitions(&self) -> Vec<i64> {
        self.inner.partitions_map().into_keys().collect()
    }

    /// Runs retention now as if the time were `now_ns` (after committing what is
    /// pending); returns the partitions dropped. Blocks.
    pub fn apply_retention(&self, now_ns: i64) -> Result<usize, IndexError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        lock(&self.to_indexer)
            .as_ref()
            .ok_or(IndexError::Closed)?
            .send(Msg::Retention(now_ns, tx))
            .map_err(|_| IndexError::Closed)?;
        rx.recv().map_err(|_| IndexError::Closed)?
    }

    /// Stops accepting, commits what is queued and stops the indexing thread. Blocks.
    pub fn close(&self) {
        self.inner.wal.disconnect();
        lock(&self.to_indexer).take();
        if let Some(h) = lock(&self.indexer).take()
            && h.join().is_err()
        {
            tracing::error!("the log indexing thread panicked");
        }
    }

    /// Stops the indexing thread without committing what it has not committed yet,
    /// as a kill -9 would; the WAL keeps those records for the next open. For crash
    /// tests. Blocks.
    pub fn abandon(&self) {
        self.inner.abandoned.store(true, Ordering::Release);
        self.close();
    }

    /// The index's own metrics.
    pub fn metric_families(&self) -> Vec<MetricFamily> {
        let s = &self.inner.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let parts = self.inner.partitions_map();
        let disk: u64 = parts.values().map(|p| p.disk_bytes()).sum();
        vec![
            MetricFamily::counter(
                "vigil_logs_ingested_records_total",
                "Log records accepted (written to the log WAL and acknowledged).",
            )
            .with(&[], get(&s.records)),
            MetricFamily::counter(
                "vigil_logs_ingested_bytes_total",
                "Bytes of log bodies accepted.",
            )
            .with(&[], get(&s.bytes)),
            MetricFamily::counter(
                "vigil_logs_dropped_too_old_total",
                "Log records not indexed because their time is past retention.",
            )
            .with(&[], get(&s.too_old)),
            MetricFamily::gauge(
                "vigil_logs_index_partitions",
                "Hourly log index partitions.",
            )
            .with(&[], parts.len() as f64),
            MetricFamily::gauge("vigil_logs_index_bytes", "Disk bytes of the log index.")
                .with(&[], disk as f64),
            MetricFamily::counter(
                "vigil_logs_indexed_records_total",
                "Log records committed to the index (searchable); ingested minus indexed is the lag.",
            )
            .with(&[], get(&s.indexed)),
            MetricFamily::counter("vigil_logs_commits_total", "Commits of the log index.")
                .with(&[], get(&s.commits)),
            MetricFamily::counter(
                "vigil_logs_commit_duration_seconds_total",
                "Time spent committing the log index; divide by the commit rate for the mean.",
            )
            .with(&[], get(&s.commit_micros) / 1e6),
            MetricFamily::gauge("vigil_logs_wal_bytes", "Disk bytes of the log WAL.").with(
                &[],
                self.inner.wal.disk_bytes.load(Ordering::Relaxed) as f64,
            ),
            MetricFamily::gauge(
                "vigil_logs_queued_records",
                "Log records acknowledged and not yet committed to the index.",
            )
            .with(
                &[],
                self.inner.wal.queued_records.load(Ordering::Relaxed) as f64,
            ),
        ]
    }
}

impl Drop for LogIndex {
    fn drop(&mut self) {
        self.close();
    }
}
