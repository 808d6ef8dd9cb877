//! Bit-granular writer and reader for the Gorilla chunk encoding, which packs
//! timestamps and values into runs of 1 to 64 bits with no byte alignment.
//! Bits are written most-significant first so that the stream reads left to right.

/// Appends bits to a growable byte buffer.
#[derive(Debug, Clone, Default)]
pub(crate) struct BitWriter {
    bytes: Vec<u8>,
    /// Bits still free in the last byte of `bytes` (0 when a new byte is needed).
    free_bits: u8,
}

impl BitWriter {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            free_bits: 0,
        }
    }

    /// Writes one bit.
    pub(crate) fn write_bit(&mut self, bit: bool) {
        self.write_bits(u64::from(bit), 1);
    }

    /// Writes the low `n` bits of `value` (`n` in 0..=64), most significant first:
    /// top up the partial last byte, then whole bytes, then a new partial byte.
    pub(crate) fn write_bits(&mut self, value: u64, n: u8) {
        debug_assert!(n <= 64);
        let mut left = u32::from(n);
        if self.free_bits > 0 && left > 0 {
            let free = u32::from(self.free_bits);
            let take = left.min(free);
            let bits = ((value >> (left - take)) as u8) & (((1u16 << take) - 1) as u8);
            if let Some(last) = self.bytes.last_mut() {
                *last |= bits << (free - take);
            }
            self.free_bits -= take as u8;
            left -= take;
        }
        while left >= 8 {
            left -= 8;
            self.bytes.push((value >> left) as u8);
        }
        if left > 0 {
            self.bytes.push((value << (8 - left)) as u8);
            self.free_bits = (8 - left) as u8;
        }
    }

    /// The bytes written so far; the last byte is zero-padded.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Heap bytes held, for memory accounting.
    pub(crate) fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Empties the writer and keeps its buffer.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.free_bits = 0;
    }

    /// Gives up the buffer, trimmed to its length.
    pub(crate) fn into_boxed(self) -> Box<[u8]> {
        self.bytes.into_boxed_slice()
    }
}

/// Reads bits back from a byte slice written by [`BitWriter`]. Keeps up to 64 upcoming
/// bits in a register, refilled a word at a time: decoding is the hot loop of every
/// query, and most reads are one to a dozen bits.
#[derive(Debug, Clone)]
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    /// Next byte of `bytes` not yet counted in `avail`.
    next: usize,
    /// Upcoming bits, most significant first. Bits below the `avail` valid ones are
    /// already the stream's next bits (a refill may load more than it counts), so
    /// OR-ing them in again is harmless.
    buf: u64,
    avail: u32,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            next: 0,
            buf: 0,
            avail: 0,
        }
    }

    /// Tops the register up to at least 57 valid bits, or to the end of the stream.
    fn refill(&mut self) {
        let whole = ((64 - self.avail) / 8) as usize;
        if let Some(word) = self.bytes.get(self.next..self.next + 8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(word);
            self.buf |= u64::from_be_bytes(b) >> self.avail;
            self.next += whole;
            self.avail += whole as u32 * 8;
            return;
        }
        while self.avail <= 56 && self.next < self.bytes.len() {
            self.buf |= u64::from(self.bytes[self.next]) << (56 - self.avail);
            self.next += 1;
            self.avail += 8;
        }
    }

    pub(crate) fn read_bit(&mut self) -> Option<bool> {
        if self.avail == 0 {
            self.refill();
            if self.avail == 0 {
                return None;
            }
        }
        let bit = self.buf >> 63 == 1;
        self.buf <<= 1;
        self.avail -= 1;
        Some(bit)
    }

    /// Reads `n` bits (0..=64) as the low bits of a `u64`; `None` past the end, which
    /// only a corrupt chunk can cause.
    pub(crate) fn read_bits(&mut self, n: u8) -> Option<u64> {
        debug_assert!(n <= 64);
        let n = u32::from(n);
        if n > 56 {
            // A refill guarantees only 57 bits; take wide fields in two halves.
            let hi = self.read_bits(32)?;
            let lo = self.read_bits((n - 32) as u8)?;
            return Some((hi << (n - 32)) | lo);
        }
        if n == 0 {
            return Some(0);
        }
        if n > self.avail {
            self.refill();
            if n > self.avail {
                return None;
            }
        }
        let v = self.buf >> (64 - n);
        self.buf <<= n;
        self.avail -= n;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_mixed_widths() {
        let fields: Vec<(u64, u8)> = vec![
            (1, 1),
            (0, 1),
            (0b101, 3),
            (u64::MAX, 64),
            (0x1234, 14),
            (0, 0),
            (0x7ff0_0000_0000_0002, 64),
            (5, 7),
            (1 << 40, 41),
        ];
        let mut w = BitWriter::default();
        for &(v, n) in &fields {
            w.write_bits(v, n);
        }
        let bytes = w.into_boxed();
        let mut r = BitReader::new(&bytes);
        for &(v, n) in &fields {
            assert_eq!(r.read_bits(n), Some(v), "field of {n} bits");
        }
    }

    #[test]
    fn reading_past_the_end_is_none() {
        let mut w = BitWriter::default();
        w.write_bits(0b11, 2);
        let bytes = w.into_boxed();
        let mut r = BitReader::new(&bytes);
        assert_eq!(r.read_bits(8), Some(0b1100_0000));
        assert_eq!(r.read_bit(), None);
        assert_eq!(r.read_bits(1), None);
    }

    #[test]
    fn single_bits_pack_msb_first() {
        let mut w = BitWriter::default();
        for b in [true, false, true, true, false, false, false, true, true] {
            w.write_bit(b);
        }
        assert_eq!(w.bytes(), &[0b1011_0001, 0b1000_0000]);
    }
}
