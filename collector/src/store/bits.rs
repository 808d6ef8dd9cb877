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

    /// Writes the low `n` bits of `value` (`n` in 0..=64), most significant first.
    pub(crate) fn write_bits(&mut self, value: u64, n: u8) {
        debug_assert!(n <= 64);
        let mut remaining = n;
        while remaining > 0 {
            if self.free_bits == 0 {
                self.bytes.push(0);
                self.free_bits = 8;
            }
            let take = remaining.min(self.free_bits);
            // The `take` bits just below the top `n - remaining` bits of the value.
            let shift = remaining - take;
            let chunk = ((value >> shift) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= chunk << (self.free_bits - take);
            self.free_bits -= take;
            remaining -= take;
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
    /// only a corrupt chunk can cause.
    pub(crate) fn read_bits(&mut self, n: u8) -> Option<u64> {
        debug_assert!(n <= 64);
        if self.pos + usize::from(n) > self.bytes.len() * 8 {
            return None;
        }
        let mut value: u64 = 0;
        let mut remaining = n;
        while remaining > 0 {
            let byte = self.bytes[self.pos / 8];
            let offset = (self.pos % 8) as u8;
            let avail = 8 - offset;
            let take = remaining.min(avail);
            let chunk = (byte >> (avail - take)) & (((1u16 << take) - 1) as u8);
            value = (value << take) | u64::from(chunk);
            self.pos += usize::from(take);
            remaining -= take;
        }
        Some(value)
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
