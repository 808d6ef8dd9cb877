//! Bytes to records: newlines found with memchr over large chunks, lines longer than the
//! cap split into marked pieces, and (when a start pattern is configured) continuation
//! lines joined onto the record they belong to.
//!
//! A line is handed out as a slice of the chunk it was read in whenever it lies wholly
//! in one; only a line cut by a chunk's end, and a multiline record, are copied.

use std::time::{Duration, Instant};

use regex::bytes::Regex;

/// How lines become records.
#[derive(Debug, Clone)]
pub struct LineOptions {
    pub max_line_bytes: usize,
    /// A line matching this begins a record; others join the record before.
    pub multiline_start: Option<Regex>,
    pub multiline_flush: Duration,
}

/// A record ready to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'a> {
    /// Without the newline (and without a CR before it).
    pub bytes: &'a [u8],
    /// Some(index) when a long line was split; every piece of it carries one.
    pub part: Option<u32>,
    /// Physical lines in the record (> 1 only for joined multiline records).
    pub joined_lines: u32,
}

/// One file's unfinished line and multiline record.
#[derive(Debug, Default)]
pub struct Assembler {
    /// An unfinished line: read, but its newline not yet.
    partial: Vec<u8>,
    /// Pieces of the unfinished line already handed out (it is longer than the cap).
    partial_parts: u32,
    /// A multiline record waiting for more lines.
    pending: Vec<u8>,
    pending_lines: u32,
    /// File bytes the pending record stands for, newlines included.
    pending_raw: u64,
    pending_touched: Option<Instant>,
}

impl Assembler {
    /// File bytes read but not yet handed out as records; a checkpoint must stop before
    /// them.
    pub fn unemitted_bytes(&self) -> u64 {
        self.partial.len() as u64 + self.pending_raw
    }

    /// Feeds the next bytes of the file.
    pub fn feed(&mut self, opts: &LineOptions, chunk: &[u8], emit: &mut impl FnMut(Piece<'_>)) {
        let now = opts.multiline_start.as_ref().map(|_| Instant::now());
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', chunk) {
            let line = &chunk[start..nl];
            start = nl + 1;
            if self.partial.is_empty() && self.partial_parts == 0 {
                self.line(opts, line, now, emit);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                let first_part = std::mem::take(&mut self.partial_parts);
                if first_part > 0 {
                    // The rest of a line already split: more pieces, same numbering.
                    split(opts, &whole, first_part, emit);
                } else {
                    self.line(opts, &whole, now, emit);
                }
                whole.clear();
                self.partial = whole;
            }
        }
        let rest = &chunk[start..];
        if rest.is_empty() {
            return;
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() >= opts.max_line_bytes {
            // Hand out whole pieces now; a line need not end for its start to ship.
            self.flush_pending(emit);
            let mut whole = std::mem::take(&mut self.partial);
            let mut at = 0;
            while whole.len() - at >= opts.max_line_bytes {
                let end = at + cut(&whole[at..], opts.max_line_bytes);
                emit(Piece {
                    bytes: &whole[at..end],
                    part: Some(self.partial_parts),
                    joined_lines: 1,
                });
                self.partial_parts += 1;
                at = end;
            }
            whole.drain(..at);
            self.partial = whole;
        }
    }

    /// Hands out the pending multiline record once it has waited long enough.
    pub fn flush_due(
        &mut self,
        opts: &LineOptions,
        now: Instant,
        emit: &mut impl FnMut(Piece<'_>),
    ) {
        if self
            .pending_touched
            .is_some_and(|t| now.duration_since(t) >= opts.multiline_flush)
        {
            self.flush_pending(emit);
        }
    }

    /// Hands out the pending multiline record now.
    pub fn flush_pending(&mut self, emit: &mut impl FnMut(Piece<'_>)) {
        if self.pending_raw == 0 {
            return;
        }
        emit(Piece {
            bytes: &self.pending,
            part: None,
            joined_lines: self.pending_lines,
        });
        self.pending.clear();
        self.pending_lines = 0;
        self.pending_raw = 0;
        self.pending_touched = None;
    }

    /// Forgets the unfinished line (its file was truncated under it).
    pub fn discard_partial(&mut self) {
        self.partial.clear();
        self.partial_parts = 0;
    }

    fn line(
        &mut self,
        opts: &LineOptions,
        line: &[u8],
        now: Option<Instant>,
        emit: &mut impl FnMut(Piece<'_>),
    ) {
        let Some(start) = &opts.multiline_start else {
            split(opts, line, 0, emit);
            return;
        };
        let body = strip_cr(line);
        let begins = start.is_match(body);
        if begins
            || self.pending.len() + 1 + body.len() > opts.max_line_bytes
            || body.len() > opts.max_line_bytes
        {
            self.flush_pending(emit);
        }
        if body.len() > opts.max_line_bytes {
            split(opts, line, 0, emit);
            return;
        }
        if self.pending_raw > 0 {
            self.pending.push(b'\n');
        }
        self.pending.extend_from_slice(body);
        self.pending_lines += 1;
        self.pending_raw += line.len() as u64 + 1;
        self.pending_touched = now;
    }
}

/// Hands out a complete line, in pieces of at most the cap when it is longer.
fn split(opts: &LineOptions, line: &[u8], first_part: u32, emit: &mut impl FnMut(Piece<'_>)) {
    let line = strip_cr(line);
    if line.is_empty() && first_part > 0 {
        // The line ended right where its last piece was cut.
        return;
    }
    if line.len() <= opts.max_line_bytes && first_part == 0 {
        emit(Piece {
            bytes: line,
            part: None,
            joined_lines: 1,
        });
        return;
    }
    let mut at = 0;
    let mut part = first_part;
    loop {
        let end = at + cut(&line[at..], opts.max_line_bytes);
        emit(Piece {
            bytes: &line[at..end],
            part: Some(part),
            joined_lines: 1,
        });
        part += 1;
        at = end;
        if at >= line.len() {
            break;
        }
    }
}

/// Where to cut `bytes` to at most `max` bytes: before a UTF-8 character rather than in
/// it, so that both pieces of valid text stay valid.
fn cut(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    let mut end = max;
    while end > max.saturating_sub(3) && end > 0 && (bytes[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    if end == 0 { max } else { end }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(max: usize, multiline: Option<&str>) -> LineOptions {
        LineOptions {
            max_line_bytes: max,
            multiline_start: multiline.map(|p| Regex::new(p).unwrap()),
            multiline_flush: Duration::from_millis(50),
        }
    }

    fn run(
        a: &mut Assembler,
        o: &LineOptions,
        chunks: &[&[u8]],
    ) -> Vec<(String, Option<u32>, u32)> {
        let mut out = Vec::new();
        for c in chunks {
            a.feed(o, c, &mut |p: Piece<'_>| {
                out.push((
                    String::from_utf8_lossy(p.bytes).into_owned(),
                    p.part,
                    p.joined_lines,
                ));
            });
        }
        out
    }

    #[test]
    fn lines_across_chunks_and_crlf() {
        let o = opts(1024, None);
        let mut a = Assembler::default();
        let out = run(&mut a, &o, &[b"one\ntw", b"o\r\nthr", b"ee"]);
        assert_eq!(out, [("one".into(), None, 1), ("two".into(), None, 1)]);
        assert_eq!(a.unemitted_bytes(), 5);
        let out = run(&mut a, &o, &[b"\n"]);
        assert_eq!(out, [("three".into(), None, 1)]);
        assert_eq!(a.unemitted_bytes(), 0);
    }

    #[test]
    fn long_lines_are_split_into_numbered_pieces_even_before_they_end() {
        let o = opts(256, None);
        let mut a = Assembler::default();
        let line = "a".repeat(600);
        // Cut by chunks: the first 300 bytes arrive before the newline exists.
        let out = run(&mut a, &o, &[&line.as_bytes()[..300]]);
        assert_eq!(out, [("a".repeat(256), Some(0), 1)]);
        assert_eq!(a.unemitted_bytes(), 44);
        let mut rest = line.as_bytes()[300..].to_vec();
        rest.extend_from_slice(b"\nshort\n");
        let out = run(&mut a, &o, &[&rest]);
        assert_eq!(
            out,
            [
                ("a".repeat(256), Some(1), 1),
                ("a".repeat(88), Some(2), 1),
                ("short".into(), None, 1)
            ]
        );
        let total: usize = 256 + 256 + 88;
        assert_eq!(total, 600, "nothing dropped");
    }

    #[test]
    fn splits_fall_between_utf8_characters() {
        let o = opts(256, None);
        let mut a = Assembler::default();
        let line = format!("{}{}\n", "a".repeat(255), "é".repeat(10));
        let out = run(&mut a, &o, &[line.as_bytes()]);
        assert_eq!(out[0].0, "a".repeat(255));
        assert_eq!(out[1].0, "é".repeat(10));
    }

    #[test]
    fn multiline_joins_continuations_and_flushes_after_the_timeout() {
        let o = opts(1024, Some(r"^\S"));
        let mut a = Assembler::default();
        let out = run(
            &mut a,
            &o,
            &[b"Exception in main\n  at a.b(C.java:1)\n  at d.e(F.java:2)\nnext record\n"],
        );
        assert_eq!(
            out,
            [(
                "Exception in main\n  at a.b(C.java:1)\n  at d.e(F.java:2)".into(),
                None,
                3
            )]
        );
        assert_eq!(a.unemitted_bytes(), "next record\n".len() as u64);
        let mut later = Vec::new();
        a.flush_due(&o, Instant::now(), &mut |p| later.push(p.bytes.to_vec()));
        assert!(later.is_empty(), "not yet due");
        a.flush_due(&o, Instant::now() + Duration::from_millis(60), &mut |p| {
            later.push(p.bytes.to_vec())
        });
        assert_eq!(later, [b"next record".to_vec()]);
        assert_eq!(a.unemitted_bytes(), 0);
    }

    #[test]
    fn multiline_records_never_grow_past_the_cap() {
        let o = opts(300, Some(r"^\S"));
        let mut a = Assembler::default();
        let cont = format!(" {}\n", "x".repeat(200));
        let text = format!("start\n{cont}{cont}");
        let out = run(&mut a, &o, &[text.as_bytes()]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].2, 2);
        let mut rest = Vec::new();
        a.flush_pending(&mut |p| rest.push(p.joined_lines));
        assert_eq!(rest, [1]);
    }
}
