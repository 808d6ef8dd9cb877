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
        Self { bytes: Vec::with_capacity(bytes), free_bits: 0 }
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

    /// Gives up the buffer, trimmed to its length.
    pub(crate) fn into_boxed(self) -> Box<[u8]> {
        self.bytes.into_boxed_slice()
    }
}

/// Reads bits back from a byte slice written by [`BitWriter`].
#[derive(Debug, Clone)]
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    /// Position in bits from the start of `bytes`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn read_bit(&mut self) -> Option<bool> {
        let byte = *self.bytes.get(self.pos / 8)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(bit == 1)
    }

    /// Reads `n` bits (0..=64) as the low bits of a `u64`; `None` past the end, which
    /// only a corrupt chunk can cause. Loads a 16-byte big-endian window once instead
    /// of looping per byte: decoding is the hot loop of every query.
    pub(crate) fn read_bits(&mut self, n: u8) -> Option<u64> {
        debug_assert!(n <= 64);
        if n == 0 {
            return Some(0);
        }
        if self.pos + usize::from(n) > self.bytes.len() * 8 {
            return None;
        }
        let idx = self.pos / 8;
        let offset = (self.pos % 8) as u32;
        let window = match self.bytes.get(idx..idx + 16) {
            Some(w) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(w);
                u128::from_be_bytes(b)
            }
            None => {
                let mut b = [0u8; 16];
                let tail = &self.bytes[idx..];
                b[..tail.len()].copy_from_slice(tail);
                u128::from_be_bytes(b)
            }
        };
        self.pos += usize::from(n);
        Some(((window << offset) >> (128 - u32::from(n))) as u64)
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
