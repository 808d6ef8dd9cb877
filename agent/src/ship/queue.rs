//! One kind's durable FIFO: CRC-framed records in numbered segment files, and the
//! persisted position of the first record not yet acknowledged.
//!
//! A segment starts with an 8-byte header (`VSPL`, version); each record is framed as
//! `len: u32 LE, crc32(payload): u32 LE, payload`. Appends are fsynced before they
//! return, so a record the caller saw appended survives a crash. A crash in the middle of
//! an append leaves a torn frame at the end of the last segment: opening truncates it
//! (after verifying every frame of that segment) and says so in the log.
//!
//! The head position lives in a small file replaced by rename. It is not fsynced: after a
//! power loss the head may be an older one, and the records between are sent again, which
//! the collector treats as the duplicates they are.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use super::segment::{
    FRAME_HEADER_BYTES, MAGIC, SEGMENT_HEADER_BYTES, Scan, VERSION, read_frame, read_frame_len,
    scan_segment, segment_path,
};
use super::spool::SpoolError;

const HEAD_FILE: &str = "head";

/// Where a record ends (or the queue's head is): segment id and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// One record read for sending.
#[derive(Debug, Clone)]
pub struct Record {
    /// The position just after this record; acknowledging it moves the head here.
    pub end: Position,
    /// Bytes the record takes in its segment, frame header included.
    pub frame_bytes: u64,
    /// Empty once the sender has taken it to send.
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    /// Bytes in the file (all valid frames).
    len: u64,
    /// Records and frame bytes from the head (or the segment's start) to its end.
    remaining_records: u64,
    remaining_bytes: u64,
}

pub(crate) struct Queue {
    dir: PathBuf,
    /// Oldest first; the last one is the segment appends go to.
    segments: VecDeque<Segment>,
    head: Position,
    tail: Option<File>,
    segment_max_bytes: u64,
}

impl Queue {
    /// Opens (or creates) the queue in `dir`, truncating a torn tail.
    pub(crate) fn open(dir: &Path, segment_max_bytes: u64) -> Result<Self, SpoolError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| SpoolError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            ids.push(id);
        }
        ids.sort_unstable();
        let head = read_head(dir);
        let mut segments = VecDeque::with_capacity(ids.len());
        let last = ids.last().copied();
        for id in ids {
            let path = segment_path(dir, id);
            if head.is_some_and(|h| id < h.segment) {
                // Acknowledged in full before a crash kept it from being deleted.
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            let is_last = Some(id) == last;
            match scan_segment(&path, is_last).map_err(io_err(&path))? {
                Scan::Valid {
                    len,
                    records,
                    bytes,
                } => segments.push_back(Segment {
                    id,
                    len,
                    remaining_records: records,
                    remaining_bytes: bytes,
                }),
                Scan::BadHeader => {
                    let aside = path.with_extension("corrupt");
                    tracing::error!(segment = %path.display(), "spool segment has no valid header; set aside");
                    fs::rename(&path, &aside).map_err(io_err(&path))?;
                }
            }
        }
        let first = segments.front().map_or(
            Position {
                segment: head.map_or(1, |h| h.segment),
                offset: SEGMENT_HEADER_BYTES,
            },
            |s| Position {
                segment: s.id,
                offset: SEGMENT_HEADER_BYTES,
            },
        );
        let mut queue = Self {
            dir: dir.to_owned(),
            segments,
            head: first,
            tail: None,
            segment_max_bytes: segment_max_bytes.max(SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES),
        };
        if let Some(h) = head {
            queue.restore_head(h).map_err(io_err(dir))?;
        }
        queue.normalize()?;
        Ok(queue)
    }

    /// Moves the head to the persisted position when it names a frame boundary.
    fn restore_head(&mut self, head: Position) -> io::Result<()> {
        let Some(segment) = self.segments.iter_mut().find(|s| s.id == head.segment) else {
            // Its segment is gone: everything before the first remaining one was sent.
            return Ok(());
        };
        if head.offset > segment.len {
            tracing::warn!(
                segment = segment.id,
                offset = head.offset,
                "spool head lies past its segment's end; sending the segment again"
            );
            return Ok(());
        }
        let path = segment_path(&self.dir, segment.id);
        let mut reader = BufReader::new(File::open(&path)?);
        reader.seek(SeekFrom::Start(SEGMENT_HEADER_BYTES))?;
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut skipped = 0;
        while offset < head.offset {
            let Some(len) = read_frame_len(&mut reader)? else {
                break;
            };
            reader.seek_relative(len as i64)?;
            offset += FRAME_HEADER_BYTES + len;
            skipped += 1;
        }
        if offset != head.offset {
            tracing::warn!(
                segment = segment.id,
                offset = head.offset,
                "spool head is not on a record boundary; sending the segment again"
            );
            return Ok(());
        }
        segment.remaining_records -= skipped;
        segment.remaining_bytes -= offset - SEGMENT_HEADER_BYTES;
        self.head = head;
        Ok(())
    }

    pub(crate) fn queued_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.remaining_bytes).sum()
    }

    pub(crate) fn queued_records(&self) -> u64 {
        self.segments.iter().map(|s| s.remaining_records).sum()
    }

    /// Appends one record and fsyncs it.
    pub(crate) fn append(&mut self, payload: &[u8]) -> Result<(), SpoolError> {
        let frame_bytes = FRAME_HEADER_BYTES + payload.len() as u64;
        let needs_roll = match self.segments.back() {
            None => true,
            Some(s) => s.len > SEGMENT_HEADER_BYTES && s.len + frame_bytes > self.segment_max_bytes,
        };
        if needs_roll || self.tail.is_none() {
            self.open_tail(needs_roll)?;
        }
        let (Some(file), Some(segment)) = (self.tail.as_mut(), self.segments.back_mut()) else {
            // open_tail leaves a tail open or returns its error; kept as an error, not a panic.
            return Err(SpoolError::Io {
                path: self.dir.clone(),
                source: io::Error::other("no segment open for appending"),
            });
        };
        let path = segment_path(&self.dir, segment.id);
        let mut frame = Vec::with_capacity(frame_bytes as usize);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        let written = file.write_all(&frame).and_then(|()| file.sync_data());
        if let Err(source) = written {
            // Cut a partial frame off now rather than leave it for the next open, so the
            // next append does not land behind garbage.
            let _ = file.set_len(segment.len);
            self.tail = None;
            return Err(SpoolError::Io { path, source });
        }
        segment.len += frame_bytes;
        segment.remaining_records += 1;
        segment.remaining_bytes += frame_bytes;
        Ok(())
    }

    /// Opens the last segment for appending, or starts a new one.
    fn open_tail(&mut self, new_segment: bool) -> Result<(), SpoolError> {
        if !new_segment && let Some(last) = self.segments.back() {
            let path = segment_path(&self.dir, last.id);
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|source| SpoolError::Io { path, source })?;
            self.tail = Some(file);
            return Ok(());
        }
        // Never reuse the id of the head's segment: its persisted offset would skip records.
        let id = self
            .segments
            .back()
            .map_or(self.head.segment + 1, |s| s.id + 1);
        let path = segment_path(&self.dir, id);
        let created = (|| {
            let mut file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES as usize);
            header.extend_from_slice(MAGIC);
            header.extend_from_slice(&VERSION.to_le_bytes());
            file.write_all(&header)?;
            file.sync_data()?;
            File::open(&self.dir)?.sync_all()?;
            Ok(file)
        })();
        let file = created.map_err(|source| SpoolError::Io { path, source })?;
        self.tail = Some(file);
        if self.segments.is_empty() {
            self.head = Position {
                segment: id,
                offset: SEGMENT_HEADER_BYTES,
            };
        }
        self.segments.push_back(Segment {
            id,
            len: SEGMENT_HEADER_BYTES,
            remaining_records: 0,
            remaining_bytes: 0,
        });
        self.normalize()
    }

    /// Reads records from the head: at least one (when any is queued), then more while
    /// their payloads stay within `max_bytes`. A record whose checksum fails is dropped
    /// with the rest of its segment; the count of such records is returned beside.
    pub(crate) fn peek(&mut self, max_bytes: u64) -> Result<(Vec<Record>, u64, u64), SpoolError> {
        let mut out: Vec<Record> = Vec::new();
        let mut total = 0u64;
        let (mut lost_records, mut lost_bytes) = (0, 0);
        let mut index = 0;
        'segments: while index < self.segments.len() {
            let segment = &self.segments[index];
            let start = if segment.id == self.head.segment {
                self.head.offset
            } else {
                SEGMENT_HEADER_BYTES
            };
            if start >= segment.len {
                index += 1;
                continue;
            }
            let (id, len) = (segment.id, segment.len);
            let path = segment_path(&self.dir, id);
            let io_err = |source| SpoolError::Io {
                path: path.clone(),
                source,
            };
            let mut reader = BufReader::new(File::open(&path).map_err(io_err)?);
            reader.seek(SeekFrom::Start(start)).map_err(io_err)?;
            let mut offset = start;
            while offset < len {
                match read_frame(&mut reader, len - offset).map_err(io_err)? {
                    Some(payload) => {
                        if !out.is_empty() && total + payload.len() as u64 > max_bytes {
                            break 'segments;
                        }
                        total += payload.len() as u64;
                        offset += FRAME_HEADER_BYTES + payload.len() as u64;
                        out.push(Record {
                            end: Position {
                                segment: id,
                                offset,
                            },
                            frame_bytes: FRAME_HEADER_BYTES + payload.len() as u64,
                            payload,
                        });
                    }
                    None if out.is_empty() => {
                        tracing::error!(segment = %path.display(), offset, "spool record fails its checksum; dropping the rest of its segment");
                        let (records, bytes) = self.drop_segment_rest(index);
                        lost_records += records;
                        lost_bytes += bytes;
                        self.normalize()?;
                        continue 'segments;
                    }
                    // Sent what precedes it first; the next peek starts at the bad one.
                    None => break 'segments,
                }
            }
            index += 1;
        }
        Ok((out, lost_records, lost_bytes))
    }

    /// Moves the head past every record in `records` that it has not passed yet.
    pub(crate) fn ack(&mut self, records: &[Record]) -> Result<(), SpoolError> {
        let mut moved = false;
        for record in records {
            if record.end <= self.head {
                continue;
            }
            let Some(segment) = self
                .segments
                .iter_mut()
                .find(|s| s.id == record.end.segment)
            else {
                continue;
            };
            let frame_bytes = record.frame_bytes;
            segment.remaining_records = segment.remaining_records.saturating_sub(1);
            segment.remaining_bytes = segment.remaining_bytes.saturating_sub(frame_bytes);
            self.head = record.end;
            moved = true;
            self.normalize()?;
        }
        if moved {
            self.persist_head()?;
        }
        Ok(())
    }

    /// Drops records from the head until at least `bytes` of queued frames are gone or
    /// the queue is empty; returns the records and bytes dropped.
    pub(crate) fn drop_oldest(&mut self, bytes: u64) -> Result<(u64, u64), SpoolError> {
        let (mut records, mut freed) = (0, 0);
        while freed < bytes && !self.segments.is_empty() {
            let segment = &self.segments[0];
            if segment.remaining_bytes == 0 {
                if self.segments.len() == 1 {
                    break;
                }
                self.normalize()?;
                continue;
            }
            if segment.remaining_bytes <= bytes - freed {
                let (r, b) = self.drop_segment_rest(0);
                records += r;
                freed += b;
                self.normalize()?;
                continue;
            }
            // Part of this segment: walk its frame headers from the head.
            let (id, len) = (segment.id, segment.len);
            let path = segment_path(&self.dir, id);
            let io_err = |source| SpoolError::Io {
                path: path.clone(),
                source,
            };
            let mut reader = BufReader::new(File::open(&path).map_err(io_err)?);
            reader
                .seek(SeekFrom::Start(self.head.offset))
                .map_err(io_err)?;
            let mut offset = self.head.offset;
            let (mut r, mut b) = (0, 0);
            while freed + b < bytes && offset < len {
                let Some(frame_len) = read_frame_len(&mut reader).map_err(io_err)? else {
                    break;
                };
                reader.seek_relative(frame_len as i64).map_err(io_err)?;
                offset += FRAME_HEADER_BYTES + frame_len;
                r += 1;
                b += FRAME_HEADER_BYTES + frame_len;
            }
            let segment = &mut self.segments[0];
            segment.remaining_records = segment.remaining_records.saturating_sub(r);
            segment.remaining_bytes = segment.remaining_bytes.saturating_sub(b);
            self.head = Position {
                segment: id,
                offset,
            };
            records += r;
            freed += b;
            if r == 0 {
                break;
            }
            self.normalize()?;
        }
        if records > 0 {
            self.persist_head()?;
        }
        Ok((records, freed))
    }

    /// Marks the rest of segment `index` consumed; returns what that dropped.
    fn drop_segment_rest(&mut self, index: usize) -> (u64, u64) {
        let segment = &mut self.segments[index];
        let dropped = (segment.remaining_records, segment.remaining_bytes);
        segment.remaining_records = 0;
        segment.remaining_bytes = 0;
        self.head = Position {
            segment: segment.id,
            offset: segment.len,
        };
        dropped
    }

    /// Deletes leading segments that are fully consumed, except the one appends go to.
    fn normalize(&mut self) -> Result<(), SpoolError> {
        while self.segments.len() > 1 && self.segments[0].remaining_records == 0 {
            let Some(done) = self.segments.pop_front() else {
                break;
            };
            let path = segment_path(&self.dir, done.id);
            fs::remove_file(&path).map_err(|source| SpoolError::Io { path, source })?;
            if let Some(next) = self.segments.front()
                && self.head.segment <= done.id
            {
                self.head = Position {
                    segment: next.id,
                    offset: SEGMENT_HEADER_BYTES,
                };
            }
        }
        Ok(())
    }

    fn persist_head(&self) -> Result<(), SpoolError> {
        let mut bytes = Vec::with_capacity(20);
        bytes.extend_from_slice(&self.head.segment.to_le_bytes());
        bytes.extend_from_slice(&self.head.offset.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
        let path = self.dir.join(HEAD_FILE);
        let tmp = self.dir.join("head.tmp");
        fs::write(&tmp, &bytes)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|source| SpoolError::Io { path, source })
    }
}

/// The persisted head, or None when absent or unreadable (then every remaining record is
/// sent again, which is safe).
fn read_head(dir: &Path) -> Option<Position> {
    let path = dir.join(HEAD_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the spool head; sending the whole spool again");
            return None;
        }
    };
    let valid = bytes.len() == 20 && crc32fast::hash(&bytes[..16]).to_le_bytes() == bytes[16..20];
    if !valid {
        tracing::warn!(path = %path.display(), "spool head is damaged; sending the whole spool again");
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or_default());
    Some(Position {
        segment: word(0),
        offset: word(8),
    })
}
