//! Checkpoints: a snapshot of the head, compressed chunks as they are in memory, that
//! replaces the WAL segments before it. `checkpoint.N` holds everything logged in
//! segments below N; open replays it and then segments N and later.
//!
//! The snapshot is taken after rotating the WAL but without stopping appends, so it
//! may also contain samples from segment N onwards; replaying those again is harmless
//! because an exact repeat of a stored sample is a no-op.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use vigil_rules::promql::Labels;

use super::record::{self, Record};
use super::series::{MemSeries, SeriesData, SeriesId};
use super::wal::{Frames, WalError, frame, io_err, sync_dir};
use super::{Store, StoreError, lock, read};

const PREFIX: &str = "checkpoint.";
const TMP_SUFFIX: &str = ".tmp";

/// What a checkpoint wrote and freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    /// First WAL segment not covered by the checkpoint.
    pub segment: u32,
    pub series: usize,
    pub bytes: u64,
    /// WAL bytes deleted because the checkpoint covers them.
    pub wal_bytes_freed: u64,
}

fn path_for(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{PREFIX}{segment:08}"))
}

/// The newest complete checkpoint. Unfinished temporary files and checkpoints it
/// supersedes (left by a crash mid-cleanup) are removed.
pub(crate) fn latest(dir: &Path) -> Result<Option<(u32, PathBuf)>, WalError> {
    let mut found: Vec<u32> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if rest.ends_with(TMP_SUFFIX) {
            let p = entry.path();
            tracing::info!(file = %p.display(), "removing unfinished checkpoint");
            fs::remove_file(&p).map_err(io_err("remove", &p))?;
        } else if let Ok(n) = rest.parse::<u32>() {
            found.push(n);
        }
    }
    let best = found.iter().copied().max();
    for &old in found.iter().filter(|&&n| Some(n) != best) {
        let p = path_for(dir, old);
        tracing::info!(file = %p.display(), "removing superseded checkpoint");
        fs::remove_file(&p).map_err(io_err("remove", &p))?;
    }
    Ok(best.map(|n| (n, path_for(dir, n))))
}

/// Reads a checkpoint, handing each series to `on_series`. Returns the file's size.
pub(crate) fn load(
    path: &Path,
    mut on_series: impl FnMut(SeriesId, Labels, SeriesData),
) -> Result<u64, StoreError> {
    let buf = fs::read(path).map_err(io_err("read", path))?;
    let corrupt = |offset: usize, reason: String| StoreError::CorruptCheckpoint {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let mut frames = Frames::new(&buf);
    loop {
        let offset = frames.offset;
        let Some(payload) = frames.next() else { break };
        match record::decode(payload) {
            Ok(Record::Snapshot {
                id,
                labels,
                chunks,
                open,
            }) => {
                on_series(id, labels, SeriesData::from_parts(chunks, &open));
            }
            Ok(_) => return Err(corrupt(offset, "unexpected record type".into())),
            Err(e) => return Err(corrupt(offset, e.to_string())),
        }
    }
    if let Some(why) = frames.damage {
        return Err(corrupt(frames.offset, why.into()));
    }
    Ok(buf.len() as u64)
}

impl Store {
    /// Writes a checkpoint of the head and deletes the WAL segments it covers.
    /// Appends and queries continue meanwhile; each series is locked only while it is
    /// copied out.
    pub fn checkpoint(&self) -> Result<CheckpointReport, StoreError> {
        let _one_at_a_time = lock(&self.checkpoint_lock);
        let (segment, mut series) = {
            let mut w = lock(&self.writer);
            let segment = w.wal.rotate()?;
            let series: Vec<Arc<MemSeries>> = read(&self.index).series().cloned().collect();
            (segment, series)
        };
        series.sort_unstable_by_key(|s| s.id);
        let dir = self.wal_dir();
        let final_path = path_for(dir, segment);
        let tmp = dir.join(format!("{PREFIX}{segment:08}{TMP_SUFFIX}"));
        let file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let (mut payload, mut framed) = (Vec::new(), Vec::new());
        let mut bytes = 0u64;
        for s in &series {
            payload.clear();
            framed.clear();
            {
                // Empty series are kept: a sample logged after the rotation may refer
                // to one, and retention removes it later if it stays empty.
                let data = lock(&s.data);
                // Chunk files are only a cache: the checkpoint carries every sample.
                let spilled = data.spilled_chunks(&self.chunk_files)?;
                let (chunks, open) = data.parts();
                record::encode_snapshot(
                    &mut payload,
                    s.id,
                    &s.labels,
                    spilled.iter().chain(chunks),
                    open.count(),
                    open.bytes(),
                );
            }
            frame(&mut framed, &payload);
            out.write_all(&framed).map_err(io_err("write", &tmp))?;
            bytes += framed.len() as u64;
        }
        let file = out.into_inner().map_err(|e| WalError::Io {
            op: "write",
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err("sync", &tmp))?;
        drop(file);
        fs::rename(&tmp, &final_path).map_err(io_err("rename", &tmp))?;
        sync_dir(dir)?;

        let wal_bytes_freed = lock(&self.writer).wal.remove_before(segment)?;
        for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
            let entry = entry.map_err(io_err("list", dir))?;
            let name = entry.file_name();
            let older = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n < segment);
            if older {
                let p = entry.path();
                fs::remove_file(&p).map_err(io_err("remove", &p))?;
            }
        }
        sync_dir(dir)?;
        self.counters
            .checkpoint_bytes
            .store(bytes, Ordering::Relaxed);
        tracing::info!(
            segment,
            series = series.len(),
            bytes,
            wal_bytes_freed,
            "checkpoint written"
        );
        Ok(CheckpointReport {
            segment,
            series: series.len(),
            bytes,
            wal_bytes_freed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use vigil_rules::promql::{MatchOp, Matcher, Matchers};

    #[test]
    fn checkpoint_then_reopen_keeps_everything() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut opts = StoreOptions::new(dir.path());
        opts.wal_segment_bytes = 4096;
        let labels =
            |i: usize| Labels::from_pairs([("__name__", "m".to_string()), ("i", i.to_string())]);
        {
            let store = Store::open(opts.clone())?;
            for t in 0..300 {
                let batch: Vec<_> = (0..10)
                    .map(|i| (labels(i), t * 1_000, (t * i as i64) as f64))
                    .collect();
                store.append_batch(&batch)?;
            }
            let report = store.checkpoint()?;
            assert!(report.wal_bytes_freed > 0);
            assert_eq!(report.series, 10);
            for t in 300..400 {
                store.append(&labels(3), t * 1_000, -1.0)?;
            }
            store.append(&labels(42), 5, 5.0)?;
        }
        let wal_dir = dir.path().join("wal");
        let segments = super::super::wal::list_segments(&wal_dir)?;
        let covered = latest(&wal_dir)?.map_or(0, |c| c.0);
        assert!(
            covered > 1 && segments.iter().all(|&s| s >= covered),
            "{segments:?} vs {covered}"
        );

        let store = Store::open(opts)?;
        assert_eq!(store.stats().series, 11);
        assert_eq!(store.stats().head_samples, 300 * 10 + 100 + 1);
        let m = Matchers::new(vec![Matcher::new(MatchOp::Equal, "i", "3")]);
        let got = store.select(&m, 0, i64::MAX)?;
        assert_eq!(got[0].samples.len(), 400);
        assert_eq!(got[0].samples[299], (299_000, 897.0));
        assert_eq!(got[0].samples[399], (399_000, -1.0));
        // New series get ids past every id in the checkpoint and WAL.
        store.append(&labels(99), 1, 1.0)?;
        assert_eq!(store.stats().series, 12);
        Ok(())
    }

    #[test]
    fn damaged_checkpoint_refuses_to_open() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let opts = StoreOptions::new(dir.path());
        {
            let store = Store::open(opts.clone())?;
            store.append(&Labels::from_pairs([("__name__", "x")]), 1, 1.0)?;
            store.checkpoint()?;
        }
        let (_, path) =
            latest(&dir.path().join("wal"))?.ok_or_else(|| anyhow::anyhow!("no checkpoint"))?;
        let mut bytes = fs::read(&path)?;
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes)?;
        let err = Store::open(opts).unwrap_err();
        assert!(
            matches!(err, StoreError::CorruptCheckpoint { offset: 0, .. }),
            "{err}"
        );
        Ok(())
    }
}
