//! The write-ahead log: numbered segment files (`00000001`, `00000002`, ...) of framed
//! records, each `[len: u32 LE][crc32c: u32 LE][payload]`.
//!
//! Durability has two levels, so the ingest can choose what it acknowledges:
//! a record is handed to the kernel with one `write` before `log` returns, which
//! survives the process being killed; [`Wal::sync_handle`] gives what an fsync needs to
//! make everything logged so far survive a power loss as well.
//!
//! Replay stops at the first torn or corrupt frame, truncates the segment there with a
//! warning naming the file and offset, and deletes later segments: what came before
//! the damage is intact, and nothing after it was ever acknowledged as synced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::crc::crc32c;

/// Bytes before each payload: length and CRC.
pub(crate) const FRAME_HEADER: usize = 8;

/// No legitimate record is this large; a length beyond it is corruption.
const MAX_RECORD_BYTES: usize = 1 << 30;

/// Why the WAL failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// An earlier write failed and could not be undone; appends are refused until the
    /// store is reopened, so no acknowledged record can sit behind a torn one.
    #[error("wal is unusable after a failed write to {0}")]
    Broken(PathBuf),
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Appends a framed payload to `out`.
pub(crate) fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Splits a buffer of frames; stops at the first bad one.
pub(crate) struct Frames<'a> {
    buf: &'a [u8],
    pub(crate) offset: usize,
    /// Why reading stopped before the end, if it did.
    pub(crate) damage: Option<&'static str>,
}

impl<'a> Frames<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            offset: 0,
            damage: None,
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = &self.buf[self.offset..];
        if rest.is_empty() || self.damage.is_some() {
            return None;
        }
        let mut bad = |why| {
            self.damage = Some(why);
            None
        };
        if rest.len() < FRAME_HEADER {
            return bad("torn record header");
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len == 0 || len > MAX_RECORD_BYTES {
            return bad("invalid record length");
        }
        let Some(payload) = rest.get(FRAME_HEADER..FRAME_HEADER + len) else {
            return bad("torn record");
        };
        if crc32c(payload) != crc {
            return bad("checksum mismatch");
        }
        self.offset += FRAME_HEADER + len;
        Some(payload)
    }
}

/// Segment numbers present in `dir`, ascending.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u32>, WalError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 8
            && let Ok(n) = name.parse::<u32>()
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

pub(crate) fn segment_path(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("{index:08}"))
}

/// Makes directory entries (new or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync dir", dir))
}

/// Reads segments `from..` in order, calling `on_record` with each payload and its
/// segment number. Damage truncates the segment and removes the ones after it.
/// Returns the last segment number seen (or `from - 1`).
pub(crate) fn replay(
    dir: &Path,
    from: u32,
    mut on_record: impl FnMut(u32, &[u8]),
) -> Result<Option<u32>, WalError> {
    let segments: Vec<u32> = list_segments(dir)?
        .into_iter()
        .filter(|&s| s >= from)
        .collect();
    let mut last = None;
    for (i, &seg) in segments.iter().enumerate() {
        let path = segment_path(dir, seg);
        let buf = fs::read(&path).map_err(io_err("read", &path))?;
        let mut frames = Frames::new(&buf);
        for payload in frames.by_ref() {
            on_record(seg, payload);
        }
        last = Some(seg);
        if let Some(why) = frames.damage {
            tracing::warn!(
                file = %path.display(),
                offset = frames.offset,
                reason = why,
                "wal: truncating damaged tail; records before this offset are kept"
            );
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err("open", &path))?;
            f.set_len(frames.offset as u64)
                .map_err(io_err("truncate", &path))?;
            f.sync_all().map_err(io_err("sync", &path))?;
            for &later in &segments[i + 1..] {
                let p = segment_path(dir, later);
                tracing::warn!(file = %p.display(), "wal: removing segment after damaged one");
                fs::remove_file(&p).map_err(io_err("remove", &p))?;
            }
            sync_dir(dir)?;
            break;
        }
    }
    Ok(last)
}

/// What an fsync of everything logged so far needs: the current segment's file and the
/// logical position it must reach.
pub(crate) struct SyncHandle {
    pub(crate) file: Arc<File>,
    pub(crate) position: u64,
}

/// The writing end: one open segment at a time.
#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    segment_max_bytes: u64,
    index: u32,
    file: Arc<File>,
    len: u64,
    /// Bytes logged since open, across segments: the positions syncs are measured in.
    position: u64,
    /// Bytes in all segment files on disk.
    disk_bytes: u64,
    broken: bool,
}

impl Wal {
    /// Starts a fresh segment after `last` (never appends to a replayed one, whose tail
    /// may just have been repaired). `disk_bytes` counts the existing segments.
    pub(crate) fn create(
        dir: &Path,
        last: Option<u32>,
        segment_max_bytes: u64,
    ) -> Result<Self, WalError> {
        let index = last.map_or(1, |l| l + 1);
        let file = Arc::new(create_segment(dir, index)?);
        let mut disk_bytes = 0;
        for seg in list_segments(dir)? {
            let p = segment_path(dir, seg);
            disk_bytes += fs::metadata(&p).map_err(io_err("stat", &p))?.len();
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            segment_max_bytes,
            index,
            file,
            len: 0,
            position: 0,
            disk_bytes,
            broken: false,
        })
    }

    #[cfg(test)]
    pub(crate) fn segment(&self) -> u32 {
        self.index
    }

    pub(crate) fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Writes already-framed records with one `write` call, first moving to a new
    /// segment if they would overflow this one. Returns the position after them.
    pub(crate) fn write_frames(&mut self, frames: &[u8]) -> Result<u64, WalError> {
        let path = segment_path(&self.dir, self.index);
        if self.broken {
            return Err(WalError::Broken(path));
        }
        if self.len > 0 && self.len + frames.len() as u64 > self.segment_max_bytes {
            self.rotate()?;
        }
        let path = segment_path(&self.dir, self.index);
        if let Err(e) = (&*self.file).write_all(frames) {
            // Undo a partial write so later records do not sit behind a torn one.
            if self.file.set_len(self.len).is_err() {
                self.broken = true;
            }
            return Err(WalError::Io {
                op: "write",
                path,
                source: e,
            });
        }
        self.len += frames.len() as u64;
        self.disk_bytes += frames.len() as u64;
        self.position += frames.len() as u64;
        Ok(self.position)
    }

    /// Closes the current segment (fsynced, so every position in it is durable) and
    /// opens the next. Returns the new segment's number.
    pub(crate) fn rotate(&mut self) -> Result<u32, WalError> {
        let path = segment_path(&self.dir, self.index);
        self.file.sync_data().map_err(io_err("sync", &path))?;
        let next = self.index + 1;
        self.file = Arc::new(create_segment(&self.dir, next)?);
        self.index = next;
        self.len = 0;
        Ok(next)
    }

    pub(crate) fn sync_handle(&self) -> SyncHandle {
        SyncHandle {
            file: self.file.clone(),
            position: self.position,
        }
    }

    /// Deletes segments numbered below `index` (their contents are in a checkpoint).
    pub(crate) fn remove_before(&mut self, index: u32) -> Result<u64, WalError> {
        let mut freed = 0;
        for seg in list_segments(&self.dir)?.into_iter().filter(|&s| s < index) {
            let p = segment_path(&self.dir, seg);
            freed += fs::metadata(&p).map_err(io_err("stat", &p))?.len();
            fs::remove_file(&p).map_err(io_err("remove", &p))?;
        }
        self.disk_bytes = self.disk_bytes.saturating_sub(freed);
        sync_dir(&self.dir)?;
        Ok(freed)
    }
}

fn create_segment(dir: &Path, index: u32) -> Result<File, WalError> {
    let path = segment_path(dir, index);
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_err("create", &path))?;
    sync_dir(dir)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            frame(&mut out, p);
        }
        out
    }

    #[test]
    fn write_rotate_replay() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut wal = Wal::create(dir.path(), None, 64)?;
        for i in 0..10u8 {
            wal.write_frames(&framed(&[&[i; 20]]))?;
        }
        assert!(wal.segment() > 1, "64-byte segments must rotate");
        let mut seen = Vec::new();
        let last = replay(dir.path(), 1, |_, p| seen.push(p[0]))?;
        assert_eq!(seen, (0..10).collect::<Vec<u8>>());
        assert_eq!(last, Some(wal.segment()));
        wal.remove_before(wal.segment())?;
        assert_eq!(list_segments(dir.path())?, vec![wal.segment()]);
        Ok(())
    }

    #[test]
    fn torn_tail_is_truncated_and_later_segments_removed() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let good = framed(&[b"one", b"two"]);
        let mut damaged = good.clone();
        damaged.extend_from_slice(&framed(&[b"three"])[..6]);
        fs::write(segment_path(dir.path(), 1), &damaged)?;
        fs::write(segment_path(dir.path(), 2), framed(&[b"after"]))?;
        let mut seen = Vec::new();
        replay(dir.path(), 1, |_, p| seen.push(p.to_vec()))?;
        assert_eq!(seen, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(
            fs::metadata(segment_path(dir.path(), 1))?.len(),
            good.len() as u64
        );
        assert_eq!(list_segments(dir.path())?, vec![1]);
        Ok(())
    }

    #[test]
    fn flipped_bit_stops_replay_at_that_record() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut buf = framed(&[b"alpha", b"beta", b"gamma"]);
        let second = FRAME_HEADER + 5;
        buf[second + FRAME_HEADER + 1] ^= 0x40;
        fs::write(segment_path(dir.path(), 3), &buf)?;
        let mut seen = Vec::new();
        replay(dir.path(), 1, |_, p| seen.push(p.to_vec()))?;
        assert_eq!(seen, vec![b"alpha".to_vec()]);
        assert_eq!(
            fs::metadata(segment_path(dir.path(), 3))?.len(),
            second as u64
        );
        Ok(())
    }

    #[test]
    fn zeroed_tail_is_damage_not_records() {
        let mut buf = framed(&[b"x"]);
        buf.extend_from_slice(&[0u8; 32]);
        let mut frames = Frames::new(&buf);
        assert_eq!(frames.by_ref().count(), 1);
        assert_eq!(frames.damage, Some("invalid record length"));
    }
}
