//! Payloads of WAL and checkpoint records. Framing (length and CRC) is the WAL's job;
//! this file only turns series, samples and series snapshots into bytes and back.
//!
//! Integers are LEB128 varints (timestamps zig-zag, as deltas within a record, since a
//! batch usually shares one timestamp); values are the raw 8 bytes of the float, so
//! the staleness marker survives bit for bit.

use vigil_rules::promql::Labels;

use super::chunk::Chunk;
use super::series::SeriesId;

const TYPE_SERIES: u8 = 1;
const TYPE_SAMPLES: u8 = 2;
const TYPE_SNAPSHOT: u8 = 3;

/// A decoded record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    /// New series and their labels.
    Series(Vec<(SeriesId, Labels)>),
    /// Samples accepted into the head, in the order they were applied.
    Samples(Vec<(SeriesId, i64, f64)>),
    /// One series in a checkpoint: its closed chunks verbatim and its open chunk's
    /// samples.
    Snapshot {
        id: SeriesId,
        labels: Labels,
        chunks: Vec<Chunk>,
        open: Vec<(i64, f64)>,
    },
}

/// The payload could not be decoded; with a good CRC this means a format bug.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("malformed record: {0}")]
pub struct MalformedRecord(pub &'static str);

pub(crate) fn encode_series<'a>(
    out: &mut Vec<u8>,
    series: impl IntoIterator<Item = (SeriesId, &'a Labels)>,
) {
    out.push(TYPE_SERIES);
    for (id, labels) in series {
        put_uvarint(out, id);
        put_labels(out, labels);
    }
}

pub(crate) fn encode_samples(
    out: &mut Vec<u8>,
    samples: impl IntoIterator<Item = (SeriesId, i64, f64)>,
) {
    out.push(TYPE_SAMPLES);
    let mut prev_t = 0i64;
    for (id, t, v) in samples {
        put_uvarint(out, id);
        put_varint(out, t.wrapping_sub(prev_t));
        out.extend_from_slice(&v.to_bits().to_le_bytes());
        prev_t = t;
    }
}

pub(crate) fn encode_snapshot<'a>(
    out: &mut Vec<u8>,
    id: SeriesId,
    labels: &'a Labels,
    chunks: impl Iterator<Item = &'a Chunk> + Clone,
    open_count: u16,
    open_bytes: &[u8],
) {
    out.push(TYPE_SNAPSHOT);
    put_uvarint(out, id);
    put_labels(out, labels);
    encode_chunks(out, chunks);
    put_uvarint(out, u64::from(open_count));
    put_bytes(out, open_bytes);
}

pub(crate) fn decode(payload: &[u8]) -> Result<Record, MalformedRecord> {
    let (&kind, body) = payload
        .split_first()
        .ok_or(MalformedRecord("empty record"))?;
    let mut r = Reader(body);
    match kind {
        TYPE_SERIES => {
            let mut series = Vec::new();
            while !r.0.is_empty() {
                let id = r.uvarint()?;
                series.push((id, r.labels()?));
            }
            Ok(Record::Series(series))
        }
        TYPE_SAMPLES => {
            let mut samples = Vec::with_capacity(body.len() / 11);
            let mut t = 0i64;
            while !r.0.is_empty() {
                let id = r.uvarint()?;
                t = t.wrapping_add(r.varint()?);
                let bits = u64::from_le_bytes(
                    r.take(8)?
                        .try_into()
                        .map_err(|_| MalformedRecord("value"))?,
                );
                samples.push((id, t, f64::from_bits(bits)));
            }
            Ok(Record::Samples(samples))
        }
        TYPE_SNAPSHOT => {
            let id = r.uvarint()?;
            let labels = r.labels()?;
            let chunks = r.chunks()?;
            let open_count =
                u16::try_from(r.uvarint()?).map_err(|_| MalformedRecord("open count"))?;
            let open_bytes = r.bytes()?;
            let mut it = super::chunk::ChunkIter::new(open_bytes, open_count);
            let open: Vec<(i64, f64)> = it.by_ref().collect();
            if it.is_corrupt() || open.len() != usize::from(open_count) {
                return Err(MalformedRecord("open chunk"));
            }
            Ok(Record::Snapshot {
                id,
                labels,
                chunks,
                open,
            })
        }
        _ => Err(MalformedRecord("unknown record type")),
    }
}

/// Closed chunks as a count and then each chunk's bounds, count and bytes: the body
/// of a snapshot, and of a run of spilled chunks in a chunk file.
pub(crate) fn encode_chunks<'a>(
    out: &mut Vec<u8>,
    chunks: impl Iterator<Item = &'a Chunk> + Clone,
) {
    put_uvarint(out, chunks.clone().count() as u64);
    for c in chunks {
        put_varint(out, c.min_t);
        put_varint(out, c.max_t);
        put_uvarint(out, u64::from(c.count));
        put_bytes(out, &c.data);
    }
}

/// Reads what [`encode_chunks`] wrote; the whole buffer must be consumed.
pub(crate) fn decode_chunks(buf: &[u8]) -> Result<Vec<Chunk>, MalformedRecord> {
    let mut r = Reader(buf);
    let chunks = r.chunks()?;
    if !r.0.is_empty() {
        return Err(MalformedRecord("trailing bytes after chunks"));
    }
    Ok(chunks)
}

fn put_uvarint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn put_varint(out: &mut Vec<u8>, x: i64) {
    put_uvarint(out, ((x << 1) ^ (x >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_labels(out: &mut Vec<u8>, labels: &Labels) {
    put_uvarint(out, labels.len() as u64);
    for (n, v) in labels.iter() {
        put_bytes(out, n.as_bytes());
        put_bytes(out, v.as_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MalformedRecord> {
        if self.0.len() < n {
            return Err(MalformedRecord("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn uvarint(&mut self) -> Result<u64, MalformedRecord> {
        let mut x = 0u64;
        for shift in (0..70).step_by(7) {
            let (&b, rest) = self
                .0
                .split_first()
                .ok_or(MalformedRecord("truncated varint"))?;
            self.0 = rest;
            if shift == 63 && b > 1 {
                return Err(MalformedRecord("varint overflow"));
            }
            x |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err(MalformedRecord("varint overflow"))
    }

    fn varint(&mut self) -> Result<i64, MalformedRecord> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    fn bytes(&mut self) -> Result<&'a [u8], MalformedRecord> {
        let n = usize::try_from(self.uvarint()?).map_err(|_| MalformedRecord("length"))?;
        self.take(n)
    }

    fn str(&mut self) -> Result<&'a str, MalformedRecord> {
        std::str::from_utf8(self.bytes()?).map_err(|_| MalformedRecord("label is not utf-8"))
    }

    fn chunks(&mut self) -> Result<Vec<Chunk>, MalformedRecord> {
        let n = self.uvarint()?;
        let mut chunks = Vec::with_capacity(n.min(1 << 16) as usize);
        for _ in 0..n {
            let min_t = self.varint()?;
            let max_t = self.varint()?;
            let count =
                u16::try_from(self.uvarint()?).map_err(|_| MalformedRecord("chunk count"))?;
            let data: Box<[u8]> = self.bytes()?.into();
            chunks.push(Chunk {
                min_t,
                max_t,
                count,
                data,
            });
        }
        Ok(chunks)
    }

    fn labels(&mut self) -> Result<Labels, MalformedRecord> {
        let n = self.uvarint()?;
        let mut pairs = Vec::with_capacity(n.min(256) as usize);
        for _ in 0..n {
            pairs.push((self.str()?, self.str()?));
        }
        Ok(Labels::from_pairs(pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chunk::ChunkEncoder;

    #[test]
    fn records_round_trip() {
        let a = Labels::from_pairs([("__name__", "up"), ("job", "x")]);
        let b = Labels::from_pairs([("__name__", "ünïcode"), ("le", "+Inf")]);
        let mut buf = Vec::new();
        encode_series(&mut buf, [(1, &a), (u64::MAX, &b)]);
        assert_eq!(
            decode(&buf),
            Ok(Record::Series(vec![(1, a.clone()), (u64::MAX, b.clone())]))
        );

        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let samples = vec![
            (1, 1_000, 1.5),
            (2, 1_000, stale),
            (1, i64::MIN, -0.0),
            (9, i64::MAX, 2.0),
        ];
        buf.clear();
        encode_samples(&mut buf, samples.iter().copied());
        let Ok(Record::Samples(got)) = decode(&buf) else {
            panic!("not samples")
        };
        let bits = |s: &[(u64, i64, f64)]| {
            s.iter()
                .map(|&(i, t, v)| (i, t, v.to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&got), bits(&samples));

        let chunk = ChunkEncoder::from_samples(&[(1, 1.0), (2, 2.0)]).finish();
        let open = ChunkEncoder::from_samples(&[(3, 3.0), (4, stale)]);
        buf.clear();
        encode_snapshot(
            &mut buf,
            7,
            &a,
            std::slice::from_ref(&chunk).iter(),
            open.count(),
            open.bytes(),
        );
        let Ok(Record::Snapshot {
            id,
            labels,
            chunks,
            open,
        }) = decode(&buf)
        else {
            panic!("not a snapshot")
        };
        assert_eq!((id, labels, chunks), (7, a, vec![chunk]));
        assert_eq!(open.len(), 2);
        assert_eq!(open[1].1.to_bits(), stale.to_bits());
    }

    #[test]
    fn truncated_payloads_are_errors() {
        let mut buf = Vec::new();
        encode_samples(&mut buf, [(1, 5, 1.0)]);
        assert!(decode(&buf[..buf.len() - 1]).is_err());
        assert!(decode(&[]).is_err());
        assert!(decode(&[99]).is_err());
    }
}
