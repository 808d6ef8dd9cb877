//! Gorilla-style compressed chunks (Pelkonen et al., VLDB 2015), as Prometheus's XOR
//! chunks: timestamps as delta-of-delta in variable-width buckets, values as the XOR
//! with the previous value. A steady 1 s series with slowly moving values costs one to
//! two bytes per sample instead of sixteen.
//!
//! Layout of a chunk (bits, most significant first):
//! - sample 0: timestamp (64 bits), value bits (64 bits);
//! - sample 1..: timestamp delta-of-delta (sample 1 uses delta − 0), then the value XOR.
//!
//! Timestamps use wrapping arithmetic, so any sequence of `i64`s round-trips, even
//! gaps wider than `i64::MAX`. Values are compared and stored as raw bits, so NaN
//! payloads (the staleness marker among them) and negative zero come back exactly.

use super::bits::{BitReader, BitWriter};

/// Samples after which the head closes a chunk; Prometheus uses the same number.
pub(crate) const SAMPLES_PER_CHUNK: u16 = 120;

/// Delta-of-delta buckets: (prefix bits, prefix length, payload bits).
/// The 7-bit bucket catches millisecond jitter around a steady interval.
const DOD_BUCKETS: [(u64, u8, u8); 3] = [(0b10, 2, 7), (0b110, 3, 14), (0b1110, 4, 20)];

/// Leading-zero counts are stored in 5 bits.
const MAX_LEADING: u32 = 31;

/// A closed, immutable chunk.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chunk {
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
    pub(crate) count: u16,
    pub(crate) data: Box<[u8]>,
}

impl Chunk {
    pub(crate) fn iter(&self) -> ChunkIter<'_> {
        ChunkIter::new(&self.data, self.count)
    }

    /// Heap and inline bytes this chunk costs.
    pub(crate) fn mem_bytes(&self) -> usize {
        self.data.len() + std::mem::size_of::<Self>()
    }
}

/// The open chunk of a series: appends go here until it is full.
#[derive(Debug, Clone)]
pub(crate) struct ChunkEncoder {
    bits: BitWriter,
    count: u16,
    min_t: i64,
    t: i64,
    delta: i64,
    v_bits: u64,
    /// Leading/trailing zeros of the last XOR window; `u8::MAX` until one exists.
    leading: u8,
    trailing: u8,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self {
            bits: BitWriter::with_capacity(16),
            count: 0,
            min_t: 0,
            t: 0,
            delta: 0,
            v_bits: 0,
            leading: u8::MAX,
            trailing: 0,
        }
    }
}

impl ChunkEncoder {
    /// Encodes ascending samples into a fresh encoder (used to re-encode a chunk when
    /// an out-of-order sample lands inside it).
    pub(crate) fn from_samples(samples: &[(i64, f64)]) -> Self {
        let mut e = Self::default();
        for &(t, v) in samples {
            e.append(t, v);
        }
        e
    }

    pub(crate) fn count(&self) -> u16 {
        self.count
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(crate) fn min_t(&self) -> i64 {
        self.min_t
    }

    /// The newest timestamp; meaningless while empty.
    pub(crate) fn max_t(&self) -> i64 {
        self.t
    }

    /// The newest value's bits; meaningless while empty.
    pub(crate) fn last_bits(&self) -> u64 {
        self.v_bits
    }

    pub(crate) fn is_full(&self) -> bool {
        self.count >= SAMPLES_PER_CHUNK
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.bits.bytes()
    }

    pub(crate) fn mem_bytes(&self) -> usize {
        self.bits.capacity() + std::mem::size_of::<Self>()
    }

    pub(crate) fn iter(&self) -> ChunkIter<'_> {
        ChunkIter::new(self.bits.bytes(), self.count)
    }

    /// Appends a sample; the caller guarantees `t` is after the previous one.
    pub(crate) fn append(&mut self, t: i64, v: f64) {
        let v_bits = v.to_bits();
        match self.count {
            0 => {
                self.bits.write_bits(t as u64, 64);
                self.bits.write_bits(v_bits, 64);
                self.min_t = t;
            }
            1 => {
                let delta = t.wrapping_sub(self.t);
                self.write_dod(delta);
                self.write_xor(v_bits);
                self.delta = delta;
            }
            _ => {
                let delta = t.wrapping_sub(self.t);
                self.write_dod(delta.wrapping_sub(self.delta));
                self.write_xor(v_bits);
                self.delta = delta;
            }
        }
        self.t = t;
        self.v_bits = v_bits;
        self.count += 1;
    }

    /// Closes the chunk into an exact-size copy and starts the next chunk in the same
    /// buffer. The open chunk of a series then allocates once for its life: growing
    /// a fresh buffer per chunk and trimming it left a trail of small freed blocks
    /// that cost about as much RSS as the chunks themselves.
    pub(crate) fn close(&mut self) -> Chunk {
        let chunk = Chunk {
            min_t: self.min_t,
            max_t: self.t,
            count: self.count,
            data: Box::from(self.bits.bytes()),
        };
        self.bits.clear();
        self.count = 0;
        self.min_t = 0;
        self.t = 0;
        self.delta = 0;
        self.v_bits = 0;
        self.leading = u8::MAX;
        self.trailing = 0;
        chunk
    }

    /// Closes the chunk; the buffer is trimmed to its length.
    pub(crate) fn finish(self) -> Chunk {
        Chunk {
            min_t: self.min_t,
            max_t: self.t,
            count: self.count,
            data: self.bits.into_boxed(),
        }
    }

    fn write_dod(&mut self, dod: i64) {
        if dod == 0 {
            self.bits.write_bit(false);
            return;
        }
        for (prefix, prefix_len, width) in DOD_BUCKETS {
            if fits_signed(dod, width) {
                self.bits.write_bits(prefix, prefix_len);
                self.bits.write_bits(dod as u64 & mask(width), width);
                return;
            }
        }
        self.bits.write_bits(0b1111, 4);
        self.bits.write_bits(dod as u64, 64);
    }

    fn write_xor(&mut self, v_bits: u64) {
        let x = v_bits ^ self.v_bits;
        if x == 0 {
            self.bits.write_bit(false);
            return;
        }
        self.bits.write_bit(true);
        let leading = x.leading_zeros().min(MAX_LEADING) as u8;
        let trailing = x.trailing_zeros() as u8;
        if self.leading != u8::MAX && leading >= self.leading && trailing >= self.trailing {
            // The meaningful bits fit the previous window: reuse it.
            self.bits.write_bit(false);
            let sig = 64 - self.leading - self.trailing;
            self.bits.write_bits(x >> self.trailing, sig);
            return;
        }
        self.bits.write_bit(true);
        let sig = 64 - leading - trailing;
        self.bits.write_bits(u64::from(leading), 5);
        // 64 significant bits do not fit in 6 bits; 0 stands for 64 (0 never occurs).
        self.bits.write_bits(u64::from(sig % 64), 6);
        self.bits.write_bits(x >> trailing, sig);
        self.leading = leading;
        self.trailing = trailing;
    }
}

fn mask(width: u8) -> u64 {
    if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    }
}

fn fits_signed(x: i64, width: u8) -> bool {
    let half = 1i64 << (width - 1);
    (-half..half).contains(&x)
}

fn sign_extend(raw: u64, width: u8) -> i64 {
    let shift = 64 - u32::from(width);
    ((raw << shift) as i64) >> shift
}

/// Decodes a chunk's samples in order. A truncated bit stream ends the iteration early
/// and sets [`ChunkIter::is_corrupt`]; only damaged persisted data can cause it.
#[derive(Debug, Clone)]
pub(crate) struct ChunkIter<'a> {
    r: BitReader<'a>,
    remaining: u16,
    read: u16,
    t: i64,
    delta: i64,
    v_bits: u64,
    leading: u8,
    trailing: u8,
    corrupt: bool,
}

impl<'a> ChunkIter<'a> {
    pub(crate) fn new(bytes: &'a [u8], count: u16) -> Self {
        Self {
            r: BitReader::new(bytes),
            remaining: count,
            read: 0,
            t: 0,
            delta: 0,
            v_bits: 0,
            leading: 0,
            trailing: 0,
            corrupt: false,
        }
    }

    pub(crate) fn is_corrupt(&self) -> bool {
        self.corrupt
    }

    fn read_dod(&mut self) -> Option<i64> {
        if !self.r.read_bit()? {
            return Some(0);
        }
        for (_, _, width) in DOD_BUCKETS {
            if !self.r.read_bit()? {
                return Some(sign_extend(self.r.read_bits(width)?, width));
            }
        }
        Some(self.r.read_bits(64)? as i64)
    }

    fn read_xor(&mut self) -> Option<u64> {
        if !self.r.read_bit()? {
            return Some(self.v_bits);
        }
        if self.r.read_bit()? {
            self.leading = self.r.read_bits(5)? as u8;
            let sig = match self.r.read_bits(6)? as u8 {
                0 => 64,
                s => s,
            };
            self.trailing = 64u8.checked_sub(self.leading + sig)?;
        }
        let sig = 64 - self.leading - self.trailing;
        let x = self.r.read_bits(sig)? << self.trailing;
        Some(self.v_bits ^ x)
    }

    fn step(&mut self) -> Option<(i64, f64)> {
        match self.read {
            0 => {
                self.t = self.r.read_bits(64)? as i64;
                self.v_bits = self.r.read_bits(64)?;
            }
            _ => {
                let dod = self.read_dod()?;
                self.delta = if self.read == 1 {
                    dod
                } else {
                    self.delta.wrapping_add(dod)
                };
                self.t = self.t.wrapping_add(self.delta);
                self.v_bits = self.read_xor()?;
            }
        }
        self.read += 1;
        Some((self.t, f64::from_bits(self.v_bits)))
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        if self.remaining == 0 || self.corrupt {
            return None;
        }
        match self.step() {
            Some(s) => {
                self.remaining -= 1;
                Some(s)
            }
            None => {
                self.corrupt = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::Rng;

    const STALE: u64 = 0x7ff0_0000_0000_0002;

    fn round_trip(samples: &[(i64, f64)]) {
        let enc = ChunkEncoder::from_samples(samples);
        let chunk = enc.clone().finish();
        // Closing keeps the buffer for the next chunk, which must start clean.
        let mut reused = enc.clone();
        assert_eq!(reused.close(), chunk);
        for &(t, v) in samples {
            reused.append(t, v);
        }
        assert_eq!(reused.close(), chunk);
        for decoded in [
            enc.iter().collect::<Vec<_>>(),
            chunk.iter().collect::<Vec<_>>(),
        ] {
            assert_eq!(decoded.len(), samples.len());
            for (i, (got, want)) in decoded.iter().zip(samples).enumerate() {
                assert_eq!(got.0, want.0, "timestamp {i}");
                assert_eq!(
                    got.1.to_bits(),
                    want.1.to_bits(),
                    "value {i} of {samples:?}"
                );
            }
        }
        assert_eq!(chunk.count as usize, samples.len());
        if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
            assert_eq!((chunk.min_t, chunk.max_t), (first.0, last.0));
        }
    }

    fn special_value(rng: &mut Rng) -> f64 {
        match rng.below(12) {
            0 => f64::NAN,
            1 => f64::from_bits(STALE),
            2 => f64::INFINITY,
            3 => f64::NEG_INFINITY,
            4 => -0.0,
            5 => 0.0,
            6 => f64::from_bits(rng.next_u64()),
            7 => f64::MIN_POSITIVE,
            8 => f64::MAX,
            9 => rng.below(100) as f64,
            10 => (rng.below(1_000_000) as f64) / 7.0,
            _ => -(rng.below(50) as f64) * 0.25,
        }
    }

    fn next_timestamp(rng: &mut Rng, t: i64) -> i64 {
        let step = match rng.below(8) {
            0 => 1,
            1 => 1_000 + rng.below(100) as i64 - 50,
            2 => 15_000,
            3 => rng.below(1 << 20) as i64 + 1,
            4 => rng.below(1 << 40) as i64 + 1,
            5 => (rng.next_u64() >> 2) as i64 + 1,
            _ => 1_000,
        };
        t.wrapping_add(step)
    }

    #[test]
    fn random_series_round_trip_exactly() {
        let mut rng = Rng::new(0x5eed);
        for case in 0..2_000 {
            let n = 1 + rng.below(u64::from(SAMPLES_PER_CHUNK) + 10) as usize;
            let mut t = match case % 3 {
                0 => i64::MIN + rng.below(1000) as i64,
                1 => 1_700_000_000_000,
                _ => (rng.next_u64() as i64) / 2,
            };
            let mut v = 0.0;
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                v = match rng.below(3) {
                    0 => special_value(&mut rng),
                    1 => v,
                    _ => v + rng.below(10) as f64,
                };
                samples.push((t, v));
                t = next_timestamp(&mut rng, t);
            }
            round_trip(&samples);
        }
    }

    #[test]
    fn extreme_timestamps_and_values() {
        round_trip(&[
            (i64::MIN, -0.0),
            (i64::MAX, f64::from_bits(STALE)),
            (0, f64::NAN),
        ]);
        round_trip(&[
            (-5, f64::INFINITY),
            (-4, f64::NEG_INFINITY),
            (i64::MAX, 0.0),
        ]);
        round_trip(&[(42, 1.5)]);
        round_trip(&[]);
    }

    #[test]
    fn steady_series_compress_well() {
        let samples: Vec<(i64, f64)> = (0..120)
            .map(|i| (1_700_000_000_000 + i * 1_000, (i % 7) as f64))
            .collect();
        let chunk = ChunkEncoder::from_samples(&samples).finish();
        // 16 bytes for the first sample, then 1 bit of timestamp and a short XOR each.
        assert!(
            chunk.data.len() < 16 + 120 * 3,
            "{} bytes",
            chunk.data.len()
        );
        let constant: Vec<(i64, f64)> = (0..120).map(|i| (i * 15_000, 3.25)).collect();
        let chunk = ChunkEncoder::from_samples(&constant).finish();
        assert!(
            chunk.data.len() <= 16 + 4 + 30 + 2,
            "{} bytes",
            chunk.data.len()
        );
    }

    #[test]
    fn truncated_chunk_is_flagged_corrupt() {
        let samples: Vec<(i64, f64)> = (0..50).map(|i| (i * 1_000, i as f64 * 1.1)).collect();
        let chunk = ChunkEncoder::from_samples(&samples).finish();
        let mut it = ChunkIter::new(&chunk.data[..chunk.data.len() / 2], chunk.count);
        let got = it.by_ref().count();
        assert!(got < 50);
        assert!(it.is_corrupt());
    }
}
