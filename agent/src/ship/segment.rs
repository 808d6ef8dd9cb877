//! The segment file format: an 8-byte header (`VSPL`, version 1), then records framed as
//! `len: u32 LE, crc32(payload): u32 LE, payload`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};

pub(crate) const MAGIC: &[u8; 4] = b"VSPL";
pub(crate) const VERSION: u32 = 1;
pub(crate) const SEGMENT_HEADER_BYTES: u64 = 8;
pub(crate) const FRAME_HEADER_BYTES: u64 = 8;
/// Larger than any record the agent writes; a frame claiming more is garbage (a torn or
/// overwritten length), not a record.
pub(crate) const MAX_RECORD_BYTES: u64 = 256 << 20;

pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

pub(crate) enum Scan {
    Valid { len: u64, records: u64, bytes: u64 },
    BadHeader,
}

/// Counts a segment's frames; with `verify`, checks every checksum and truncates the
/// file after the last good frame (a torn append).
pub(crate) fn scan_segment(path: &Path, verify: bool) -> io::Result<Scan> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::new(file);
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    if file_len < SEGMENT_HEADER_BYTES || reader.read_exact(&mut header).is_err() {
        if verify {
            // Created and torn before its header was written: nothing in it to keep.
            tracing::warn!(segment = %path.display(), "spool segment torn before its header; truncated");
            let file = reader.into_inner();
            file.set_len(0)?;
            let mut file = file;
            file.write_all(MAGIC)?;
            file.write_all(&VERSION.to_le_bytes())?;
            file.sync_data()?;
            return Ok(Scan::Valid {
                len: SEGMENT_HEADER_BYTES,
                records: 0,
                bytes: 0,
            });
        }
        return Ok(Scan::BadHeader);
    }
    if &header[..4] != MAGIC || header[4..8] != VERSION.to_le_bytes() {
        return Ok(Scan::BadHeader);
    }
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut records = 0;
    loop {
        let remaining = file_len - offset;
        if remaining == 0 {
            break;
        }
        let frame = if verify {
            read_frame(&mut reader, remaining)?.map(|p| p.len() as u64)
        } else {
            match read_frame_len(&mut reader)? {
                Some(len) if FRAME_HEADER_BYTES + len <= remaining => {
                    reader.seek_relative(len as i64)?;
                    Some(len)
                }
                _ => None,
            }
        };
        let Some(len) = frame else { break };
        offset += FRAME_HEADER_BYTES + len;
        records += 1;
    }
    if offset < file_len {
        tracing::warn!(
            segment = %path.display(),
            valid_bytes = offset,
            torn_bytes = file_len - offset,
            "spool segment ends in a torn record; truncated"
        );
        let file = reader.into_inner();
        file.set_len(offset)?;
        file.sync_data()?;
    }
    Ok(Scan::Valid {
        len: offset,
        records,
        bytes: offset - SEGMENT_HEADER_BYTES,
    })
}

/// The next frame's payload length, or None at a short or implausible header.
pub(crate) fn read_frame_len(reader: &mut BufReader<File>) -> io::Result<Option<u64>> {
    let mut header = [0u8; FRAME_HEADER_BYTES as usize];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u64::from(u32::from_le_bytes([
        header[0], header[1], header[2], header[3],
    ]));
    Ok((len <= MAX_RECORD_BYTES).then_some(len))
}

/// The next frame's payload when it is complete within `remaining` bytes and its
/// checksum matches; None otherwise.
pub(crate) fn read_frame(
    reader: &mut BufReader<File>,
    remaining: u64,
) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; FRAME_HEADER_BYTES as usize];
    if remaining < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    reader.read_exact(&mut header)?;
    let len = u64::from(u32::from_le_bytes([
        header[0], header[1], header[2], header[3],
    ]));
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD_BYTES || FRAME_HEADER_BYTES + len > remaining {
        return Ok(None);
    }
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload)?;
    Ok((crc32fast::hash(&payload) == crc).then_some(payload))
}
