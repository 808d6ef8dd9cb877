//! A fast non-cryptographic hasher (the multiply-rotate scheme of rustc's FxHash) for
//! the head's maps. Every appended sample hashes its full label set; with the standard
//! SipHash that was a third of the append path. Label sets come only from
//! authenticated senders, so flooding resistance is not what this map needs.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // A final avalanche so the low bits the table uses depend on every input bit.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
pub(crate) type FxHashMap<K, V> = HashMap<K, V, FxBuild>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};
    use vigil_rules::promql::Labels;

    #[test]
    fn distinct_label_sets_hash_apart() {
        let b = FxBuild::default();
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            let l = Labels::from_pairs([("__name__", "m".to_string()), ("i", i.to_string())]);
            seen.insert(b.hash_one(&l));
        }
        assert_eq!(seen.len(), 10_000);
        // Moving a byte across a string boundary changes the hash.
        let a = Labels::from_pairs([("ab", "c")]);
        let c = Labels::from_pairs([("a", "bc")]);
        let mut ha = FxHasher::default();
        a.hash(&mut ha);
        let mut hc = FxHasher::default();
        c.hash(&mut hc);
        assert_ne!(ha.finish(), hc.finish());
    }
}
