//! Time partitions: one tantivy index per hour of record time, in
//! `<logs dir>/index/hour-<unix hour>/`. Retention drops whole partitions.
//!
//! Each partition's last commit carries in its payload the WAL sequence number it
//! covers: every record of batches up to it that belongs to this hour is in the index,
//! none after it. Replay after a crash skips what a partition already has.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tantivy::directory::MmapDirectory;
use tantivy::{Index, IndexReader, ReloadPolicy};

use super::IndexError;
use super::schema::Fields;

pub(crate) const NS_PER_HOUR: i64 = 3_600_000_000_000;

/// The partition (unix hour) of a record time.
pub(crate) fn hour_of(time_ns: i64) -> i64 {
    time_ns.div_euclid(NS_PER_HOUR)
}

/// One hour's index and its reader.
pub(crate) struct Partition {
    pub(crate) hour: i64,
    pub(crate) dir: PathBuf,
    pub(crate) index: Index,
    pub(crate) reader: IndexReader,
    /// The WAL sequence number the last commit covers (its payload).
    pub(crate) committed_seq: AtomicU64,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("hour", &self.hour)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Partition {
    pub(crate) fn dir_name(hour: i64) -> String {
        format!("hour-{hour}")
    }

    /// Opens (or creates) the partition of `hour` under `root`.
    pub(crate) fn open(root: &Path, hour: i64, fields: &Fields) -> Result<Partition, IndexError> {
        let dir = root.join(Self::dir_name(hour));
        std::fs::create_dir_all(&dir).map_err(|e| IndexError::io("create", &dir, e))?;
        let mmap = MmapDirectory::open(&dir).map_err(|e| IndexError::Tantivy {
            what: format!("opening {}", dir.display()),
            message: e.to_string(),
        })?;
        let index = Index::open_or_create(mmap, fields.schema.clone())
            .map_err(|e| IndexError::tantivy(format!("opening {}", dir.display()), e))?;
        let committed = committed_seq(&index)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| IndexError::tantivy(format!("reading {}", dir.display()), e))?;
        Ok(Partition {
            hour,
            dir,
            index,
            reader,
            committed_seq: AtomicU64::new(committed),
        })
    }

    pub(crate) fn committed(&self) -> u64 {
        self.committed_seq.load(Ordering::Acquire)
    }

    /// Start and end (exclusive) of the partition, in ns.
    pub(crate) fn range_ns(&self) -> (i64, i64) {
        (
            self.hour.saturating_mul(NS_PER_HOUR),
            (self.hour + 1).saturating_mul(NS_PER_HOUR),
        )
    }

    /// Bytes of the partition's files.
    pub(crate) fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.dir)
    }
}

/// The WAL sequence number in the index's last commit payload (0: none).
fn committed_seq(index: &Index) -> Result<u64, IndexError> {
    let metas = index
        .load_metas()
        .map_err(|e| IndexError::tantivy("reading the commit payload".into(), e))?;
    Ok(metas
        .payload
        .as_deref()
        .and_then(|p| p.strip_prefix("wal_seq="))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

/// Indexing threads of a writer with `memory_bytes`: up to the cores, each with
/// tantivy's minimum of 15 MB.
pub(crate) fn writer_threads(memory_bytes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (memory_bytes / 15_000_000).clamp(1, cores.clamp(1, 8))
}

/// The payload a commit covering `seq` carries.
pub(crate) fn payload(seq: u64) -> String {
    format!("wal_seq={seq}")
}

/// Partition hours present under `root`, ascending.
pub(crate) fn list(root: &Path) -> Result<Vec<i64>, IndexError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(IndexError::io("list", root, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| IndexError::io("list", root, e))?;
        if let Some(hour) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("hour-"))
            .and_then(|h| h.parse::<i64>().ok())
        {
            out.push(hour);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
