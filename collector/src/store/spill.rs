//! Chunk files: closed chunks older than the in-memory window leave the heap for
//! append-only files under `<data_dir>/chunks/`, and a series keeps a 32-byte [`Run`]
//! per group of them. Queries read a run back with one `pread`, served from the page
//! cache for anything recent, which does not count in the process's RSS the way
//! touched pages of an `mmap` would.
//!
//! The files are a cache, never the only copy: every spilled sample is also in the WAL
//! or a checkpoint (a checkpoint reads spilled chunks back before WAL segments go).
//! So nothing here is fsynced, a torn write after a crash does not matter, and open
//! deletes every chunk file and spills afresh from what the WAL rebuilt.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::chunk::Chunk;
use super::hash::FxHashMap;
use super::record;
use super::wal::{WalError, io_err};
use super::{lock, read, write};

/// A chunk file is closed once it holds this much; retention deletes whole files.
const FILE_BYTES: u64 = 128 << 20;

/// Chunks in one run at most: retention drops whole runs, and a query reads one
/// whole, so both stay within about half an hour of a 1 s series.
pub(crate) const MAX_RUN_CHUNKS: usize = 16;

/// Where a group of consecutive closed chunks of one series lies in a chunk file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) min_t: i64,
    /// `max_t - min_t`; a run spans at most [`MAX_RUN_CHUNKS`] chunks, so this fits
    /// unless a series sends one sample every 18 hours or less often, in which case
    /// the run is simply not spilled.
    span_ms: u32,
    file: u32,
    offset: u32,
    len: u32,
    samples: u16,
}

impl Run {
    pub(crate) fn max_t(&self) -> i64 {
        self.min_t + i64::from(self.span_ms)
    }

    pub(crate) fn samples(&self) -> usize {
        usize::from(self.samples)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.len as usize
    }
}

/// The chunk files of one store.
#[derive(Debug)]
pub(crate) struct ChunkFiles {
    dir: PathBuf,
    /// Read handles by file number; a query clones one and reads without any lock
    /// held, so spilling and retention never wait for a slow read.
    readers: RwLock<FxHashMap<u32, Arc<File>>>,
    writer: Mutex<FileWriter>,
}

/// The file being appended to and the newest sample written to each file.
#[derive(Debug)]
pub(crate) struct FileWriter {
    current: Option<(u32, Arc<File>, u64)>,
    next_file: u32,
    newest_t: BTreeMap<u32, i64>,
    buf: Vec<u8>,
}

impl ChunkFiles {
    /// Creates `dir` and deletes any chunk files in it: what they held is rebuilt
    /// from the WAL and checkpoint, so a file torn by a crash is never read.
    pub(crate) fn open(dir: PathBuf) -> Result<Self, WalError> {
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let p = entry.path();
            if entry.file_type().map_err(io_err("stat", &p))?.is_file() {
                fs::remove_file(&p).map_err(io_err("remove", &p))?;
            }
        }
        Ok(Self {
            dir,
            readers: RwLock::default(),
            writer: Mutex::new(FileWriter {
                current: None,
                next_file: 1,
                newest_t: BTreeMap::new(),
                buf: Vec::new(),
            }),
        })
    }

    fn path(&self, file: u32) -> PathBuf {
        self.dir.join(format!("{file:08}"))
    }

    /// The writer; one spill pass at a time holds it.
    pub(crate) fn writer(&self) -> MutexGuard<'_, FileWriter> {
        lock(&self.writer)
    }

    /// Writes `chunks` (consecutive, ascending, at most [`MAX_RUN_CHUNKS`]) as one
    /// run. `None` when the run cannot be described (too long a span).
    pub(crate) fn write_run(
        &self,
        w: &mut FileWriter,
        chunks: &[Chunk],
    ) -> Result<Option<Run>, WalError> {
        let (Some(first), Some(last)) = (chunks.first(), chunks.last()) else {
            return Ok(None);
        };
        let samples: usize = chunks.iter().map(|c| usize::from(c.count)).sum();
        let (Ok(span_ms), Ok(samples)) = (
            u32::try_from(last.max_t.wrapping_sub(first.min_t)),
            u16::try_from(samples),
        ) else {
            return Ok(None);
        };
        if last.max_t < first.min_t {
            return Ok(None);
        }
        w.buf.clear();
        record::encode_chunks(&mut w.buf, chunks.iter());
        let len = w.buf.len() as u64;
        if w.current.as_ref().is_none_or(|c| c.2 + len > FILE_BYTES) {
            self.rotate(w)?;
        }
        let Some((file, handle, offset)) = w.current.as_mut() else {
            return Ok(None);
        };
        let path = self.dir.join(format!("{file:08}"));
        handle
            .write_all_at(&w.buf, *offset)
            .map_err(io_err("write", &path))?;
        let run = Run {
            min_t: first.min_t,
            span_ms,
            file: *file,
            offset: *offset as u32,
            len: len as u32,
            samples,
        };
        *offset += len;
        let newest = w.newest_t.entry(*file).or_insert(i64::MIN);
        *newest = (*newest).max(last.max_t);
        Ok(Some(run))
    }

    fn rotate(&self, w: &mut FileWriter) -> Result<(), WalError> {
        let file = w.next_file;
        let path = self.path(file);
        let handle = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        let handle = Arc::new(handle);
        write(&self.readers).insert(file, handle.clone());
        w.next_file += 1;
        w.current = Some((file, handle, 0));
        Ok(())
    }

    /// Reads a run's chunks back.
    pub(crate) fn read_run(&self, run: &Run) -> Result<Vec<Chunk>, WalError> {
        let path = self.path(run.file);
        let handle = read(&self.readers).get(&run.file).cloned();
        let handle = handle.ok_or_else(|| WalError::Io {
            op: "read",
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "chunk file is gone"),
        })?;
        let mut buf = vec![0u8; run.len as usize];
        handle
            .read_exact_at(&mut buf, u64::from(run.offset))
            .map_err(io_err("read", &path))?;
        record::decode_chunks(&buf).map_err(|e| WalError::Io {
            op: "decode",
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        })
    }

    /// Deletes closed files whose every chunk ends before `cutoff_ms`; call after
    /// the runs pointing into them were dropped. Returns the bytes freed.
    pub(crate) fn remove_before(&self, cutoff_ms: i64) -> Result<u64, WalError> {
        let mut w = self.writer();
        let current = w.current.as_ref().map(|c| c.0);
        let doomed: Vec<u32> = w
            .newest_t
            .iter()
            .filter(|&(&f, &t)| t < cutoff_ms && Some(f) != current)
            .map(|(&f, _)| f)
            .collect();
        let mut freed = 0;
        for f in doomed {
            w.newest_t.remove(&f);
            write(&self.readers).remove(&f);
            let p = self.path(f);
            freed += fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&p).map_err(io_err("remove", &p))?;
        }
        Ok(freed)
    }

    /// Bytes in chunk files on disk (live and not yet deleted).
    pub(crate) fn disk_bytes(&self) -> u64 {
        let w = self.writer();
        w.newest_t
            .keys()
            .filter_map(|&f| fs::metadata(self.path(f)).ok())
            .map(|m| m.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testutil::Rng;
    use crate::store::{Store, StoreOptions, TimeRange};
    use vigil_rules::promql::{Labels, MatchOp, Matcher, Matchers, Storage};

    const HOUR_MS: i64 = 3_600_000;

    fn labels(i: usize) -> Labels {
        Labels::from_pairs([("__name__", "g".to_string()), ("i", i.to_string())])
    }

    fn everything(store: &Store) -> Vec<(Labels, Vec<(i64, u64)>)> {
        let m = Matchers::new(vec![Matcher::new(MatchOp::Equal, "__name__", "g")]);
        store
            .select(&m, i64::MIN, i64::MAX)
            .unwrap()
            .into_iter()
            .map(|s| {
                let bits = s.samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
                (s.labels, bits)
            })
            .collect()
    }

    /// Spilled chunks read back exactly, through every read path, across a
    /// checkpoint, a reopen without one (chunk files deleted and rebuilt), and
    /// retention deleting whole chunk files.
    #[test]
    fn spilled_chunks_read_back_and_survive_reopen() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut opts = StoreOptions::new(dir.path());
        opts.head_in_memory_ms = 60_000;
        opts.retention_ms = 2 * HOUR_MS;
        opts.out_of_order_window_ms = 10 * 60_000;
        let mut rng = Rng::new(3);
        let store = Store::open(opts.clone())?;
        for k in 0..3_600i64 {
            let t = k * 1_000 + rng.below(5) as i64;
            let batch: Vec<_> = (0..5)
                .map(|i| (labels(i), t, (rng.below(100) as f64) / 10.0))
                .collect();
            store.append_batch(&batch)?;
            // Out-of-order samples reaching behind the in-memory window.
            if k % 700 == 699 {
                store.append(&labels(0), t - 400_000 + 500, 1.25)?;
            }
            if k % 60 == 59 {
                store.apply_retention(t)?;
            }
        }
        let stats = store.stats();
        assert!(stats.spilled_chunk_bytes > 0, "{stats:?}");
        assert!(
            stats.chunk_bytes < stats.spilled_chunk_bytes / 10,
            "only the last minutes stay in memory: {stats:?}"
        );
        let want = everything(&store);
        assert_eq!(want.len(), 5);
        assert_eq!(want[1].1.len(), 3_600);
        assert_eq!(want[0].1.len(), 3_605);

        // Every read path agrees with a plain scan of the samples.
        let m = Matchers::new(vec![Matcher::new(MatchOp::Equal, "i", "1")]);
        let scan = &want[1].1;
        for _ in 0..200 {
            let a = rng.below(3_700_000) as i64 - 50_000;
            let b = a + rng.below(900_000) as i64;
            let expect: Vec<(i64, u64)> = scan
                .iter()
                .copied()
                .filter(|&(t, _)| t >= a && t <= b)
                .collect();
            let got = store.select(&m, a, b)?;
            let got: Vec<(i64, u64)> = got
                .first()
                .map(|s| s.samples.iter().map(|&(t, v)| (t, v.to_bits())).collect())
                .unwrap_or_default();
            assert_eq!(got, expect, "select [{a}, {b}]");
            let latest = Storage::select_latest(&store, &m, b, b - a)?;
            let expect_latest = expect.iter().rfind(|&&(t, _)| t > a).copied();
            assert_eq!(
                latest.first().map(|(_, t, v)| (*t, v.to_bits())),
                expect_latest,
                "latest at {b}"
            );
            let listed = !store
                .series(std::slice::from_ref(&m), TimeRange::new(a, b))
                .is_empty();
            assert_eq!(listed, !expect.is_empty(), "series in [{a}, {b}]");
        }

        // kill -9 stand-in: no checkpoint, chunk files left behind as they are.
        drop(store);
        let store = Store::open(opts.clone())?;
        assert_eq!(everything(&store), want, "reopen from the WAL");
        assert!(store.stats().spilled_chunk_bytes > 0, "open spills again");
        store.checkpoint()?;
        drop(store);
        let store = Store::open(opts.clone())?;
        assert_eq!(everything(&store), want, "reopen from a checkpoint");

        // Retention two hours later deletes every chunk file wholly before the cutoff.
        let files_before = store.stats().chunk_file_bytes;
        assert!(files_before > 0);
        store.apply_retention(3_600_000 + 2 * HOUR_MS + 60_000)?;
        let after = store.stats();
        assert_eq!(after.head_samples, 0, "{after:?}");
        assert_eq!(after.spilled_chunk_bytes, 0);
        Ok(())
    }
}
