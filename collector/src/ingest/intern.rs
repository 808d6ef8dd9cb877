//! The cache from a decoded series' raw identity (metric name and label pairs as the
//! sender ordered them) to its interned [`Labels`], so steady-state ingest neither
//! sorts nor allocates label sets: an agent sends the same few hundred series every
//! interval. Entries of series not seen for a while are dropped.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use vigil_rules::promql::{Labels, LabelsBuilder, METRIC_NAME};

/// FxHash's multiply-rotate step: the keys come from authenticated senders, so
/// flooding resistance is not worth SipHash's cost on every sample.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        let r = chunks.remainder();
        let mut w = [0u8; 8];
        w[..r.len()].copy_from_slice(r);
        self.write_u64(u64::from_le_bytes(w) ^ ((r.len() as u64) << 59));
    }

    fn write_u64(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;

struct Entry {
    labels: Labels,
    /// The start time of the series last seen, so a new start (first sight, or a
    /// counter reset) gets its created-timestamp zero once.
    start_ms: Option<i64>,
    last_seen_epoch: u32,
}

/// What interning one sample gave.
pub(crate) struct Interned {
    pub labels: Labels,
    /// A start time not seen before for this series: write a zero there.
    pub new_start_ms: Option<i64>,
}

pub(crate) struct SeriesCache {
    map: HashMap<Box<[u8]>, Entry, FxBuild>,
    /// Reused buffer for the raw key, so a lookup allocates nothing.
    scratch: Vec<u8>,
    epoch: u32,
    epoch_started: Instant,
    epoch_len: Duration,
    /// Entries unseen for this many epochs are dropped.
    idle_epochs: u32,
    max_entries: usize,
}

impl SeriesCache {
    /// `idle` is how long an unseen series stays cached; `max_entries` bounds the cache
    /// whatever senders do (it is cleared when full, and refills from live series).
    pub(crate) fn new(idle: Duration, max_entries: usize) -> Self {
        let epoch_len = (idle / 4).max(Duration::from_millis(1));
        SeriesCache {
            map: HashMap::default(),
            scratch: Vec::with_capacity(512),
            epoch: 0,
            epoch_started: Instant::now(),
            epoch_len,
            idle_epochs: 4,
            max_entries,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Advances the clock and drops idle entries; call once per request.
    pub(crate) fn tick(&mut self, now: Instant) {
        if now.duration_since(self.epoch_started) < self.epoch_len {
            return;
        }
        self.epoch = self.epoch.wrapping_add(1);
        self.epoch_started = now;
        let (epoch, idle) = (self.epoch, self.idle_epochs);
        self.map
            .retain(|_, e| epoch.wrapping_sub(e.last_seen_epoch) < idle);
    }

    /// The interned label set of a series: `name` plus `pairs` (later pairs win over
    /// earlier ones of the same name, empty values are absent).
    pub(crate) fn intern<'p>(
        &mut self,
        name: &str,
        pairs: impl Iterator<Item = (&'p str, &'p str)> + Clone,
        start_ms: Option<i64>,
    ) -> Interned {
        self.scratch.clear();
        push_field(&mut self.scratch, name);
        for (n, v) in pairs.clone() {
            push_field(&mut self.scratch, n);
            push_field(&mut self.scratch, v);
        }
        if let Some(e) = self.map.get_mut(self.scratch.as_slice()) {
            e.last_seen_epoch = self.epoch;
            let new_start_ms = start_ms.filter(|s| e.start_ms != Some(*s));
            if new_start_ms.is_some() {
                e.start_ms = new_start_ms;
            }
            return Interned {
                labels: e.labels.clone(),
                new_start_ms,
            };
        }
        let mut b = LabelsBuilder::new();
        for (n, v) in pairs {
            b.set(n, v);
        }
        b.set(METRIC_NAME, name);
        let labels = b.build();
        if self.map.len() >= self.max_entries {
            tracing::warn!(
                entries = self.map.len(),
                "ingest series cache full; clearing it"
            );
            self.map.clear();
        }
        self.map.insert(
            self.scratch.as_slice().into(),
            Entry {
                labels: labels.clone(),
                start_ms,
                last_seen_epoch: self.epoch,
            },
        );
        Interned {
            labels,
            new_start_ms: start_ms,
        }
    }
}

/// Length-prefixed, so no choice of separator can make two identities collide.
fn push_field(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_once_and_reports_new_start_times_once() {
        let mut c = SeriesCache::new(Duration::from_secs(600), 100);
        let pairs = [("job", "a"), ("gpu", "0")];
        let a = c.intern("up", pairs.iter().copied(), Some(5));
        assert_eq!(a.new_start_ms, Some(5));
        let b = c.intern("up", pairs.iter().copied(), Some(5));
        assert_eq!(b.new_start_ms, None);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.labels.get("__name__"), Some("up"));
        assert_eq!(
            c.intern("up", pairs.iter().copied(), Some(9)).new_start_ms,
            Some(9)
        );
        // Same set in another order: a second cache entry, the same label set.
        let rev = c.intern("up", pairs.iter().rev().copied(), None);
        assert_eq!(rev.labels, a.labels);
        assert_eq!(c.len(), 2);
        // Later duplicates win; empty values are absent.
        let d = c.intern(
            "up",
            [("job", "x"), ("job", "y"), ("e", "")].into_iter(),
            None,
        );
        assert_eq!(d.labels.get("job"), Some("y"));
        assert_eq!(d.labels.len(), 2);
    }

    #[test]
    fn idle_entries_are_dropped_and_size_is_bounded() {
        let mut c = SeriesCache::new(Duration::from_millis(4), 3);
        c.intern("a", std::iter::empty(), None);
        let later = Instant::now() + Duration::from_secs(1);
        for i in 0..5 {
            c.tick(later + Duration::from_millis(2 * i));
        }
        assert_eq!(c.len(), 0);
        for n in ["a", "b", "c", "d"] {
            c.intern(n, std::iter::empty(), None);
        }
        assert!(c.len() <= 3);
    }
}
