//! Tailing files by glob, through rotations.
//!
//! A file being read is known by its inode while it is open (a rename does not change
//! it) and by a fingerprint of its first bytes on disk and across restarts (a new file
//! at the same path, or the same inode rewritten, changes it). So:
//! - rename rotation: the renamed file keeps its watcher and is read to its end; the
//!   new file at the old path is a new watcher, read from its start. A watcher whose
//!   file no longer matches any glob is closed once it has been idle at its end for
//!   [`TailOptions::linger`].
//! - copytruncate: the copy's fingerprint is the live file's, so it is not read twice
//!   while the original is open; when the original's size drops below what was read
//!   (or its first bytes change), what had been read of the old content is kept as a
//!   checkpoint under the old fingerprint and the original is read again from 0. The
//!   copy, when a glob matches it, then resumes at that checkpoint, so lines written
//!   between the last read and the truncation are read from the copy.
//!
//! Everything here is blocking file I/O, run on the logs thread.

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vigil_proto::logs as attr;
use vigil_proto::otlp::{LogLine, LogValue, LogsEncoder};

use super::LogStats;
use super::checkpoint::{
    FINGERPRINT_BYTES, FileCheckpoint, FileCheckpoints, Fingerprint, read_prefix,
};
use super::lines::{Assembler, LineOptions, Piece};

/// Bytes read from one file in one read call.
const READ_CHUNK: usize = 256 << 10;
/// Bytes read from one file before the others get a turn.
const FAIR_SHARE: u64 = 4 << 20;

#[derive(Debug, Clone)]
pub struct TailOptions {
    pub patterns: Vec<String>,
    pub lines: LineOptions,
    /// Files found at the very first start (no checkpoints) begin at their end.
    pub first_start_at_end: bool,
    /// How long a file that left the globs (rotated away, deleted) stays open at its end.
    pub linger: Duration,
}

struct Watcher {
    file: File,
    dev: u64,
    ino: u64,
    path: PathBuf,
    /// The path as the `log.file.path` attribute has it.
    path_text: String,
    read_offset: u64,
    assembler: Assembler,
    /// Of the file's first bytes when last looked at; None while it is empty.
    fingerprint: Option<Fingerprint>,
    /// A shorter fingerprint this file had before it grew; its checkpoint is replaced.
    outgrown: Option<Fingerprint>,
    in_glob: bool,
    /// The last read found nothing more.
    at_eof: bool,
    last_data: Instant,
}

impl Watcher {
    fn emitted_offset(&self) -> u64 {
        self.read_offset
            .saturating_sub(self.assembler.unemitted_bytes())
    }
}

/// The files being tailed and their checkpoints.
pub struct Tailer {
    opts: TailOptions,
    watchers: Vec<Watcher>,
    pub store: FileCheckpoints,
    stats: Arc<LogStats>,
    buf: Vec<u8>,
    prefix: Vec<u8>,
    scanned_once: bool,
}

/// What one poll did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// Stopped because the batch is full; poll again after committing it.
    BatchFull,
    /// Every file was read to its end.
    Drained { bytes: u64 },
}

impl Tailer {
    pub fn new(opts: TailOptions, store: FileCheckpoints, stats: Arc<LogStats>) -> Self {
        Self {
            opts,
            watchers: Vec::new(),
            store,
            stats,
            buf: vec![0; READ_CHUNK],
            prefix: Vec::with_capacity(FINGERPRINT_BYTES),
            scanned_once: false,
        }
    }

    /// Looks for new, renamed, truncated and vanished files. Lines this hands out (a
    /// multiline record flushed at a truncation) go into `out`.
    pub fn rescan(&mut self, out: &mut LogsEncoder, now_ns: u64) {
        let first_scan = !self.scanned_once;
        self.scanned_once = true;
        self.refresh_fingerprints(out, now_ns);
        for w in &mut self.watchers {
            w.in_glob = false;
        }
        let mut paths = Vec::new();
        for pattern in &self.opts.patterns {
            match glob::glob(pattern) {
                Ok(found) => paths.extend(found.flatten()),
                Err(e) => tracing::warn!(pattern, error = %e, "logs: bad glob"),
            }
        }
        for path in paths {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            if let Some(w) = self
                .watchers
                .iter_mut()
                .find(|w| (w.dev, w.ino) == (meta.dev(), meta.ino()))
            {
                if !w.in_glob && w.path != path {
                    tracing::debug!(from = %w.path.display(), to = %path.display(), "logs: file renamed");
                    w.path_text = path.to_string_lossy().into_owned();
                    w.path = path;
                }
                w.in_glob = true;
                continue;
            }
            if let Err(e) = self.open(path.clone(), first_scan) {
                self.stats.file.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(file = %path.display(), error = %e, "logs: cannot open file");
            }
        }
        let linger = self.opts.linger;
        let now = Instant::now();
        let before = self.watchers.len();
        self.watchers.retain(|w| {
            let keep = w.in_glob || !w.at_eof || now.duration_since(w.last_data) < linger;
            if !keep {
                tracing::debug!(file = %w.path.display(), "logs: closed a file rotated away");
            }
            keep
        });
        if self.watchers.len() != before || first_scan {
            tracing::debug!(files = self.watchers.len(), "logs: tailing");
        }
        self.stats
            .files_tailed
            .store(self.watchers.len() as u64, Ordering::Relaxed);
    }

    /// Recomputes fingerprints that can still grow and notices content replaced under
    /// an open file (copytruncate followed by writes past the old read offset).
    fn refresh_fingerprints(&mut self, out: &mut LogsEncoder, now_ns: u64) {
        for i in 0..self.watchers.len() {
            let w = &mut self.watchers[i];
            if read_prefix(&w.file, &mut self.prefix).is_err() {
                continue;
            }
            match w.fingerprint {
                Some(fp) if !fp.matches(&self.prefix) => {
                    self.truncated(i, out, now_ns);
                }
                _ => grow_fingerprint(w, &mut self.prefix),
            }
        }
    }

    fn open(&mut self, path: PathBuf, first_scan: bool) -> io::Result<()> {
        let mut file = File::open(&path)?;
        let meta = file.metadata()?;
        read_prefix(&file, &mut self.prefix)?;
        let fingerprint = (!self.prefix.is_empty()).then(|| Fingerprint::of(&self.prefix));
        if !self.prefix.is_empty() {
            let copy_of = self
                .watchers
                .iter()
                .find(|w| w.fingerprint.is_some_and(|fp| fp.matches(&self.prefix)));
            if let Some(original) = copy_of {
                // A copy (copytruncate) of a file being read: reading it too would
                // duplicate; once the original is truncated, its checkpoint leads here.
                tracing::trace!(copy = %path.display(), original = %original.path.display(), "logs: same content as an open file; not read twice");
                return Ok(());
            }
        }
        let len = meta.len();
        let offset = match self.store.find(&self.prefix) {
            Some(c) if c.offset <= len => c.offset,
            Some(_) => 0,
            None if first_scan && !self.store.existed && self.opts.first_start_at_end => len,
            None => 0,
        };
        file.seek(SeekFrom::Start(offset))?;
        tracing::debug!(file = %path.display(), offset, "logs: tailing a file");
        self.watchers.push(Watcher {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            path_text: path.to_string_lossy().into_owned(),
            path,
            read_offset: offset,
            assembler: Assembler::default(),
            fingerprint,
            outgrown: None,
            in_glob: true,
            at_eof: false,
            last_data: Instant::now(),
        });
        Ok(())
    }

    /// Whether watcher `i`'s file no longer starts with the bytes it was fingerprinted
    /// on: truncated and written again up to or past the read offset (a copytruncate
    /// right after the file was opened, at offset 0 or at a restart's checkpoint, before
    /// any read). The size check misses it; reading on would take the new content for
    /// the old from the read offset, and the rescan's fingerprint check would then read
    /// it all again from 0. So it is checked before every read, not only at rescans.
    fn content_replaced(&mut self, i: usize) -> bool {
        let w = &self.watchers[i];
        let Some(fp) = w.fingerprint else {
            return false;
        };
        read_prefix(&w.file, &mut self.prefix).is_ok() && !fp.matches(&self.prefix)
    }

    /// The file at watcher `i` lost its content (copytruncate): keep what was read of
    /// the old content as a checkpoint for the copy, and start over at 0.
    fn truncated(&mut self, i: usize, out: &mut LogsEncoder, now_ns: u64) {
        let stats = Arc::clone(&self.stats);
        let w = &mut self.watchers[i];
        let path = w.path_text.as_str();
        w.assembler
            .flush_pending(&mut |p| encode_piece(out, &stats, path, p, now_ns));
        let offset = w.emitted_offset();
        w.assembler.discard_partial();
        if let Some(fp) = w.fingerprint.take() {
            self.store.put(FileCheckpoint {
                fingerprint: fp,
                offset,
                path: w.path.clone(),
                seen_unix_secs: unix_secs(),
            });
        }
        w.outgrown = None;
        w.read_offset = 0;
        if let Err(e) = w.file.seek(SeekFrom::Start(0)) {
            tracing::warn!(file = %w.path.display(), error = %e, "logs: cannot rewind a truncated file");
        }
        stats.truncations.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(file = %w.path.display(), "logs: file truncated; reading it from the start");
    }

    /// Reads what is new in every file into `out`, up to `max_bytes` of encoded records.
    pub fn poll(&mut self, out: &mut LogsEncoder, max_bytes: usize, now_ns: u64) -> Polled {
        let mut total = 0;
        let now = Instant::now();
        for i in 0..self.watchers.len() {
            match self.watchers[i].file.metadata() {
                Ok(meta) if meta.len() < self.watchers[i].read_offset => {
                    self.truncated(i, out, now_ns);
                }
                Ok(_) if self.content_replaced(i) => self.truncated(i, out, now_ns),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "logs: stat failed");
                    continue;
                }
            }
            let stats = Arc::clone(&self.stats);
            let w = &mut self.watchers[i];
            let path = w.path_text.as_str();
            let mut read_here = 0u64;
            loop {
                if out.encoded_bytes() >= max_bytes {
                    return Polled::BatchFull;
                }
                if read_here >= FAIR_SHARE {
                    break;
                }
                let n = match w.file.read(&mut self.buf) {
                    Ok(0) => {
                        w.at_eof = true;
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        stats.file.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(file = %w.path.display(), error = %e, "logs: read failed");
                        break;
                    }
                };
                w.read_offset += n as u64;
                w.at_eof = false;
                read_here += n as u64;
                w.last_data = now;
                w.assembler
                    .feed(&self.opts.lines, &self.buf[..n], &mut |p| {
                        encode_piece(out, &stats, path, p, now_ns)
                    });
            }
            w.assembler.flush_due(&self.opts.lines, now, &mut |p| {
                encode_piece(out, &stats, path, p, now_ns)
            });
            total += read_here;
            if read_here > 0
                && w.fingerprint
                    .is_none_or(|fp| (fp.len as usize) < FINGERPRINT_BYTES)
            {
                // Known before the next checkpoint, even if no rescan comes first: a
                // file read but never fingerprinted would be read again after a
                // restart, or from its copy after a rotation.
                grow_fingerprint(w, &mut self.prefix);
            }
        }
        Polled::Drained { bytes: total }
    }

    /// Puts every open file's position (what has been handed out) into the store; call
    /// right after the records handed out so far are in the spool, then save.
    pub fn checkpoint(&mut self) {
        let now = unix_secs();
        for w in &mut self.watchers {
            if let Some(old) = w.outgrown.take() {
                self.store.remove(&old);
            }
            let Some(fp) = w.fingerprint else {
                continue;
            };
            self.store.put(FileCheckpoint {
                fingerprint: fp,
                offset: w.emitted_offset(),
                path: w.path.clone(),
                seen_unix_secs: now,
            });
        }
    }

    pub fn files(&self) -> usize {
        self.watchers.len()
    }
}

/// Fingerprints a file over more of its first bytes as it grows (or at all, once it has
/// some), remembering the shorter fingerprint so its checkpoint is replaced. Content
/// that no longer matches is left to the rescan, which treats it as a truncation.
fn grow_fingerprint(w: &mut Watcher, prefix: &mut Vec<u8>) {
    if read_prefix(&w.file, prefix).is_err() || prefix.is_empty() {
        return;
    }
    match w.fingerprint {
        None => w.fingerprint = Some(Fingerprint::of(prefix)),
        Some(fp) if fp.matches(prefix) && (fp.len as usize) < prefix.len() => {
            w.outgrown.get_or_insert(fp);
            w.fingerprint = Some(Fingerprint::of(prefix));
        }
        Some(_) => {}
    }
}

/// One record of a tailed file into the batch.
pub(crate) fn encode_piece(
    out: &mut LogsEncoder,
    stats: &LogStats,
    path: &str,
    piece: Piece<'_>,
    now_ns: u64,
) {
    let lossy;
    let (body, invalid) = match std::str::from_utf8(piece.bytes) {
        Ok(s) => (s, false),
        Err(_) => {
            lossy = String::from_utf8_lossy(piece.bytes);
            (&*lossy, true)
        }
    };
    // The path once, as `log.file.path`: the collector takes a record's source from it
    // when `vigil.log.source` is absent, and at ~100 bytes a line a second copy of the
    // path would be a third of the record.
    let mut attrs = [
        (attr::FILE_PATH, LogValue::Str(path)),
        ("", LogValue::Bool(false)),
        ("", LogValue::Bool(false)),
        ("", LogValue::Bool(false)),
        ("", LogValue::Bool(false)),
    ];
    let mut n = 1;
    if let Some(part) = piece.part {
        attrs[n] = (attr::TRUNCATED, LogValue::Bool(true));
        attrs[n + 1] = (attr::PART, LogValue::Int(i64::from(part)));
        n += 2;
        stats.file.truncated.fetch_add(1, Ordering::Relaxed);
    }
    if invalid {
        attrs[n] = (attr::INVALID_UTF8, LogValue::Bool(true));
        n += 1;
        stats.file.invalid_utf8.fetch_add(1, Ordering::Relaxed);
    }
    if piece.joined_lines > 1 {
        attrs[n] = (
            attr::JOINED_LINES,
            LogValue::Int(i64::from(piece.joined_lines)),
        );
        n += 1;
    }
    out.push(&LogLine {
        time_unix_nano: now_ns,
        observed_time_unix_nano: now_ns,
        severity_number: 0,
        severity_text: "",
        body,
        attributes: &attrs[..n],
    });
    stats.file.lines.fetch_add(1, Ordering::Relaxed);
    stats
        .file
        .bytes
        .fetch_add(piece.bytes.len() as u64, Ordering::Relaxed);
}

pub(crate) fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use vigil_proto::otlp::any_value::Value;
    use vigil_proto::otlp::{AgentResource, decode_logs_request};

    use super::*;

    fn bodies(enc: &mut LogsEncoder) -> Vec<String> {
        if enc.is_empty() {
            return Vec::new();
        }
        let bytes = enc.finish(&AgentResource {
            node: "n",
            agent_version: "0",
            interval_secs: 5.0,
        });
        let req = decode_logs_request(&bytes).unwrap();
        let records = req
            .resource_logs
            .into_iter()
            .flat_map(|rl| rl.scope_logs)
            .flat_map(|sl| sl.log_records);
        records
            .map(|r| match r.body.and_then(|b| b.value) {
                Some(Value::StringValue(s)) => s,
                other => panic!("body {other:?}"),
            })
            .collect()
    }

    fn content(tag: &str, lines: usize) -> String {
        (0..lines)
            .map(|i| format!("{tag} {i:04} {}\n", "p".repeat(60)))
            .collect()
    }

    /// The file is truncated and written again past the read offset before the tailer
    /// reads on (a copytruncate right after the file was opened, or after a restart
    /// resumed it at a checkpoint). The new content must be read once, from its start,
    /// and what was read of the old content stays its checkpoint, for the copy.
    fn replaced_under_an_open_file(old_lines: usize, read_first: bool) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let old = content("old", old_lines);
        rewrite(&log, &old);
        let opts = TailOptions {
            patterns: vec![log.to_string_lossy().into_owned()],
            lines: LineOptions {
                max_line_bytes: 1024,
                multiline_start: None,
                multiline_flush: Duration::from_millis(100),
            },
            first_start_at_end: false,
            linger: Duration::ZERO,
        };
        let store = FileCheckpoints::load(&dir.path().join("state")).unwrap();
        let mut tailer = Tailer::new(opts, store, Arc::new(LogStats::default()));
        let mut enc = LogsEncoder::new();
        tailer.rescan(&mut enc, 1);
        let mut read = 0;
        if read_first {
            tailer.poll(&mut enc, 1 << 20, 1);
            assert_eq!(bodies(&mut enc).len(), old_lines);
            read = old.len() as u64;
        }
        // Truncated in place (same inode) and refilled past the offset read so far.
        let new = content("new", old_lines * 3);
        rewrite(&log, &new);
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..3 {
            tailer.poll(&mut enc, 1 << 20, 1);
            tailer.rescan(&mut enc, 1);
            for b in bodies(&mut enc) {
                *seen.entry(b).or_default() += 1;
            }
        }
        let want: BTreeMap<String, usize> = new.lines().map(|l| (l.to_owned(), 1)).collect();
        assert_eq!(seen, want);
        tailer.checkpoint();
        let old_checkpoint = tailer
            .store
            .find(&old.as_bytes()[..FINGERPRINT_BYTES])
            .map(|c| c.offset);
        assert_eq!(old_checkpoint, Some(read));
    }

    /// Rewrites `path` in place: truncation keeps the inode, as copytruncate does.
    fn rewrite(path: &std::path::Path, text: &str) {
        use std::io::Write as _;
        let mut f = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn content_replaced_before_the_first_read_is_read_once() {
        replaced_under_an_open_file(10, false);
    }

    #[test]
    fn content_replaced_past_the_read_offset_is_read_once_from_its_start() {
        replaced_under_an_open_file(4, true);
    }
}
