//! The collector's metric store: an in-memory head of Gorilla-compressed chunks, an
//! inverted label index, a write-ahead log with checkpoints, and time-based retention.
//! Recent data for rules and dashboards, not a long-term archive.
//!
//! All methods take `&self` and block; the async collector calls them from blocking
//! threads. Appends are serialised by one writer lock (WAL order is apply order, so
//! replay rebuilds exactly the head that was acknowledged); queries read the index
//! under a read lock and each series under its own lock, so they never wait for a
//! whole batch.
//!
//! Durability: [`Store::append_batch`] returns after the batch is written to the WAL
//! (it survives the process being killed); [`Store::sync`] fsyncs, after which it also
//! survives power loss. The ingest acknowledges to agents after `sync`.
//!
//! # Layout
//! - `bits`, `chunk`: the bit stream and the Gorilla chunk codec.
//! - `series`: one series' chunks and the in-order / out-of-order append rules.
//! - `postings`: the label index and matcher evaluation.
//! - `record`, `wal`, `crc`: WAL record payloads, segment files and framing.
//! - `replay`: rebuilding the head from the WAL on open.
//! - `hash`: the fast hasher for the head's maps.
//! - `append`: the append path and staleness markers.
//! - `checkpoint`: snapshots of the head that let old WAL segments go.
//! - `retention`: dropping old chunks and empty series; moving old chunks to files.
//! - `spill`: chunk files, where closed chunks older than a few minutes live.
//! - `query`: select, label names and values, series; the PromQL `Storage` impl.

mod append;
mod bits;
mod checkpoint;
mod chunk;
mod crc;
mod hash;
mod postings;
mod query;
mod record;
mod replay;
mod retention;
mod series;
mod spill;
#[cfg(test)]
mod testutil;
pub(crate) mod wal;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use append::{AppendError, AppendReport, Rejection};
pub use checkpoint::CheckpointReport;
pub(crate) use hash::FxBuild;
pub use query::TimeRange;
pub use record::MalformedRecord;
pub use retention::RetentionReport;
pub use series::SeriesId;
pub use wal::WalError;

use postings::Index;
use series::{MemSeries, SeriesData};
use spill::{ChunkFiles, FileWriter};
use vigil_rules::promql::Labels;

type StringPool = std::collections::HashSet<Arc<str>>;

/// Default for [`StoreOptions::head_in_memory_ms`].
pub const DEFAULT_HEAD_IN_MEMORY_MS: i64 = 5 * 60_000;

/// A live spill pass moves a series' chunks once this many are due: one run per
/// two chunks halves the per-run bookkeeping against spilling each chunk alone.
const SPILL_MIN_CHUNKS: usize = 2;

/// Settings of a store; every field has a default through [`StoreOptions::new`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Directory that holds `wal/`; created if missing.
    pub data_dir: PathBuf,
    /// How long samples are kept, relative to the `now_ms` given to retention.
    pub retention_ms: i64,
    /// How far behind its series' newest sample a sample may still be inserted. Measured
    /// per series (Prometheus measures from the newest sample in the whole head), so one
    /// node with a clock running ahead cannot shrink the window for the others.
    /// Prometheus's default is 0; a few minutes absorb agents that resend a batch
    /// after a reconnect. 0 rejects every out-of-order sample.
    pub out_of_order_window_ms: i64,
    /// A WAL segment is closed when the next batch would make it larger than this.
    pub wal_segment_bytes: u64,
    /// Retention writes a checkpoint (and deletes old segments) once closed segments
    /// hold more than this many bytes and more than the last checkpoint's size, which
    /// keeps the rewrite cost proportional to what was appended.
    pub checkpoint_min_wal_bytes: u64,
    /// Closed chunks whose newest sample is older than this, relative to their
    /// series' newest sample, move out of the heap into chunk files under
    /// `chunks/` (during [`Store::apply_retention`] and on open) and are read back
    /// with `pread` when a query needs them; the open chunk always stays. A few
    /// minutes of history cost about as much heap as all of a series' labels and
    /// index entries, while reading them back is one `pread` per series from the page
    /// cache, small beside decoding the samples; see `SPILL_MIN_CHUNKS`.
    /// `i64::MAX` keeps everything in memory.
    pub head_in_memory_ms: i64,
}

impl StoreOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            retention_ms: 24 * 3_600_000,
            out_of_order_window_ms: 5 * 60_000,
            wal_segment_bytes: 64 << 20,
            checkpoint_min_wal_bytes: 128 << 20,
            head_in_memory_ms: DEFAULT_HEAD_IN_MEMORY_MS,
        }
    }
}

/// Why a store operation failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A checkpoint is written to a temporary file and renamed, so a damaged one means
    /// the disk lost data; opening refuses rather than silently dropping series.
    #[error("checkpoint {path} is damaged at offset {offset}: {reason}")]
    CorruptCheckpoint {
        path: PathBuf,
        offset: usize,
        reason: String,
    },
}

/// Counters and gauges for the collector's own `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Series in the head.
    pub series: u64,
    /// Samples held in the head.
    pub head_samples: u64,
    /// Samples accepted since open (replay not included).
    pub samples_appended: u64,
    /// Samples repeating the newest timestamp and value: accepted as no-ops.
    pub duplicates: u64,
    /// Samples rejected for being older than the out-of-order window allows.
    pub out_of_order_rejected: u64,
    /// Samples rejected for a different value at an existing timestamp.
    pub duplicate_conflicts: u64,
    /// Samples rejected for being older than retention keeps.
    pub too_old_rejected: u64,
    /// Bytes of WAL segment files on disk.
    pub wal_bytes: u64,
    /// Bytes of the newest checkpoint on disk.
    pub checkpoint_bytes: u64,
    /// Compressed sample bytes held in memory (closed and open chunks).
    pub chunk_bytes: u64,
    /// Series created and removed since open.
    pub series_created: u64,
    pub series_removed: u64,
    /// Samples dropped by retention since open.
    pub retention_dropped_samples: u64,
    /// Compressed sample bytes of the chunks moved out of memory into chunk files
    /// (included in `head_samples`, not in `chunk_bytes`).
    pub spilled_chunk_bytes: u64,
    /// Bytes of chunk files on disk, including chunks since replaced or dropped
    /// whose file is not yet wholly past retention.
    pub chunk_file_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    samples_appended: AtomicU64,
    duplicates: AtomicU64,
    out_of_order: AtomicU64,
    conflicts: AtomicU64,
    too_old: AtomicU64,
    head_samples: AtomicI64,
    chunk_bytes: AtomicI64,
    spilled_bytes: AtomicI64,
    series_created: AtomicU64,
    series_removed: AtomicU64,
    retention_dropped: AtomicU64,
    checkpoint_bytes: AtomicU64,
}

impl Counters {
    /// Applies the size change of one series' data.
    fn track(&self, before: DataSize, after: DataSize) {
        let delta = |a: usize, b: usize| a as i64 - b as i64;
        self.chunk_bytes
            .fetch_add(delta(after.0, before.0), Ordering::Relaxed);
        self.head_samples
            .fetch_add(delta(after.1, before.1), Ordering::Relaxed);
        self.spilled_bytes
            .fetch_add(delta(after.2, before.2), Ordering::Relaxed);
    }
}

/// In-memory compressed bytes, samples, spilled bytes of one series.
type DataSize = (usize, usize, usize);

fn size_of_data(d: &SeriesData) -> DataSize {
    (d.encoded_bytes(), d.sample_count(), d.spilled_bytes())
}

/// Spills one series' chunks older than `window_ms` before its newest sample.
fn spill_series(
    files: &ChunkFiles,
    w: &mut FileWriter,
    data: &mut SeriesData,
    window_ms: i64,
    min_chunks: usize,
    counters: &Counters,
) -> Result<(), WalError> {
    let Some((newest, _)) = data.last() else {
        return Ok(());
    };
    let before = size_of_data(data);
    let spilled = data.spill(files, w, newest.saturating_sub(window_ms), min_chunks);
    counters.track(before, size_of_data(data));
    spilled.map(|_| ())
}

/// State only the single writer touches.
#[derive(Debug)]
struct Writer {
    wal: wal::Wal,
    next_id: SeriesId,
    /// One copy of every label name and value the head holds: series of one node or
    /// one metric share most strings, and a label set's own copies would cost more
    /// than an hour of its samples.
    strings: StringPool,
    /// Reused buffers for framing a batch.
    frames: Vec<u8>,
    payload: Vec<u8>,
}

/// The metric store. Share it as `Arc<Store>`.
#[derive(Debug)]
pub struct Store {
    opts: StoreOptions,
    wal_dir: PathBuf,
    index: RwLock<Index>,
    writer: Mutex<Writer>,
    /// Serialises fsyncs so concurrent callers share one (group commit).
    sync_lock: Mutex<()>,
    synced_position: AtomicU64,
    /// Samples older than this are refused; raised by retention.
    min_valid_t: AtomicI64,
    checkpoint_lock: Mutex<()>,
    counters: Counters,
    chunk_files: ChunkFiles,
}

impl Store {
    /// Opens (or creates) the store in `opts.data_dir`, loading the newest checkpoint
    /// and replaying the WAL after it. Call [`Store::apply_retention`] afterwards to
    /// drop what aged out while the process was down.
    pub fn open(opts: StoreOptions) -> Result<Store, StoreError> {
        let wal_dir = opts.data_dir.join("wal");
        fs::create_dir_all(&wal_dir).map_err(wal::io_err("create", &wal_dir))?;
        let chunk_files = ChunkFiles::open(opts.data_dir.join("chunks"))?;
        let window_ms = opts.head_in_memory_ms;
        let mut index = Index::default();
        let mut strings = StringPool::default();
        let counters = Counters::default();
        let mut max_id: Option<SeriesId> = None;

        let checkpoint = checkpoint::latest(&wal_dir)?;
        let first_segment = match &checkpoint {
            Some((seg, path)) => {
                let mut w = chunk_files.writer();
                let mut spill_error = None;
                let bytes = checkpoint::load(path, |id, labels, mut data| {
                    max_id = max_id.max(Some(id));
                    counters.track((0, 0, 0), size_of_data(&data));
                    // Spill as it loads, so opening needs no more memory than running.
                    if spill_error.is_none()
                        && let Err(e) =
                            spill_series(&chunk_files, &mut w, &mut data, window_ms, 1, &counters)
                    {
                        spill_error = Some(e);
                    }
                    let s = MemSeries::new(id, labels.interned(&mut strings));
                    *lock(&s.data) = data;
                    index.insert(Arc::new(s));
                })?;
                drop(w);
                if let Some(e) = spill_error {
                    tracing::warn!(error = %e, "store: chunks stay in memory");
                }
                counters.checkpoint_bytes.store(bytes, Ordering::Relaxed);
                *seg
            }
            None => 1,
        };

        let mut replayer = replay::Replayer::new(
            &mut index,
            &mut strings,
            &counters,
            &chunk_files,
            window_ms,
            max_id,
        );
        let last_segment = wal::replay(&wal_dir, first_segment, |seg, payload| {
            replayer.record(seg, payload)
        })?;
        let malformed = replayer.malformed;
        let max_id = replayer.finish();
        if checkpoint.is_some() {
            // Segments before the checkpoint are left over from a crash mid-truncation.
            for seg in wal::list_segments(&wal_dir)?
                .into_iter()
                .filter(|&s| s < first_segment)
            {
                let p = wal::segment_path(&wal_dir, seg);
                fs::remove_file(&p).map_err(wal::io_err("remove", &p))?;
            }
        }
        let last = last_segment.or(first_segment.checked_sub(1).filter(|&s| s > 0));
        let wal = wal::Wal::create(&wal_dir, last, opts.wal_segment_bytes)?;
        tracing::info!(
            series = index.len(),
            samples = counters.head_samples.load(Ordering::Relaxed),
            malformed_records = malformed,
            "store opened"
        );
        Ok(Store {
            wal_dir,
            index: RwLock::new(index),
            writer: Mutex::new(Writer {
                wal,
                next_id: max_id.map_or(1, |m| m + 1),
                strings,
                frames: Vec::new(),
                payload: Vec::new(),
            }),
            sync_lock: Mutex::new(()),
            synced_position: AtomicU64::new(0),
            min_valid_t: AtomicI64::new(i64::MIN),
            checkpoint_lock: Mutex::new(()),
            counters,
            chunk_files,
            opts,
        })
    }

    /// The label set the head holds (or will hold) for `labels`: the stored series'
    /// own when it exists, else one made of the head's shared strings. A caller that
    /// keeps label sets of its own (the ingest's series cache) keeps these, so the
    /// strings and the set are not held twice.
    pub fn canonical_labels(&self, labels: &Labels) -> Labels {
        if let Some(s) = read(&self.index).get(labels) {
            return s.labels.clone();
        }
        labels.interned(&mut lock(&self.writer).strings)
    }

    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// Makes every batch appended so far durable across power loss. Concurrent callers
    /// share one fsync: whoever finds its position already synced returns at once.
    pub fn sync(&self) -> Result<(), StoreError> {
        let handle = lock(&self.writer).wal.sync_handle();
        let _one_at_a_time = lock(&self.sync_lock);
        if self.synced_position.load(Ordering::Acquire) >= handle.position {
            return Ok(());
        }
        let path = self.wal_dir.clone();
        handle
            .file
            .sync_data()
            .map_err(wal::io_err("sync", &path))?;
        self.synced_position
            .fetch_max(handle.position, Ordering::AcqRel);
        Ok(())
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let wal_bytes = lock(&self.writer).wal.disk_bytes();
        StoreStats {
            series: read(&self.index).len() as u64,
            head_samples: c.head_samples.load(Ordering::Relaxed).max(0) as u64,
            samples_appended: get(&c.samples_appended),
            duplicates: get(&c.duplicates),
            out_of_order_rejected: get(&c.out_of_order),
            duplicate_conflicts: get(&c.conflicts),
            too_old_rejected: get(&c.too_old),
            wal_bytes,
            checkpoint_bytes: get(&c.checkpoint_bytes),
            chunk_bytes: c.chunk_bytes.load(Ordering::Relaxed).max(0) as u64,
            spilled_chunk_bytes: c.spilled_bytes.load(Ordering::Relaxed).max(0) as u64,
            chunk_file_bytes: self.chunk_files.disk_bytes(),
            series_created: get(&c.series_created),
            series_removed: get(&c.series_removed),
            retention_dropped_samples: get(&c.retention_dropped),
        }
    }

    /// Heap bytes of chunk data and bookkeeping (in-memory chunks, the open chunk,
    /// references to spilled runs), summed over series (walks every series; for
    /// benchmarks and diagnostics, not per scrape).
    pub fn chunk_memory_bytes(&self) -> usize {
        let series: Vec<Arc<MemSeries>> = read(&self.index).series().cloned().collect();
        series.iter().map(|s| lock(&s.data).mem_bytes()).sum()
    }

    fn wal_dir(&self) -> &Path {
        &self.wal_dir
    }

    /// Moves chunks older than the in-memory window of every series to chunk files.
    /// A write error (disk full) leaves the rest in memory and is logged: spilling
    /// saves memory, it is not needed for correctness.
    fn spill_pass(&self, min_chunks: usize) {
        let series: Vec<Arc<MemSeries>> = read(&self.index).series().cloned().collect();
        let mut w = self.chunk_files.writer();
        for s in &series {
            let mut data = lock(&s.data);
            if let Err(e) = spill_series(
                &self.chunk_files,
                &mut w,
                &mut data,
                self.opts.head_in_memory_ms,
                min_chunks,
                &self.counters,
            ) {
                tracing::warn!(error = %e, "store: spilling chunks failed; they stay in memory");
                return;
            }
        }
    }
}

/// Locks a mutex, recovering from poisoning: no code path panics mid-update of the
/// data these locks protect, so the value is consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
