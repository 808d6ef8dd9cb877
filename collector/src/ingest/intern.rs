//! The cache from a decoded series' raw identity (metric name and label pairs as the
//! sender ordered them) to its interned [`Labels`], so steady-state ingest neither
//! sorts nor allocates label sets: an agent sends the same few hundred series every
//! interval. Entries of series not seen for a while are dropped.
//!
//! Label limits are checked when a series is first interned: a cached identity passed
//! them already, so steady-state ingest pays nothing for them, and a refused series is
//! never cached (a sender repeating it is checked, and refused, every time).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use vigil_rules::promql::{Labels, LabelsBuilder, METRIC_NAME};

pub(crate) use crate::store::FxBuild;

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

/// Limits on a series' label set, as Mimir has them (`max_label_names_per_series`,
/// `max_label_name_length`, `max_label_value_length`): one sender's runaway labels
/// must not become unbounded memory in the store and the index. `__name__` counts as
/// a label and the metric name as its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelLimits {
    pub max_labels_per_series: usize,
    pub max_label_name_bytes: usize,
    pub max_label_value_bytes: usize,
}

impl Default for LabelLimits {
    fn default() -> Self {
        LabelLimits {
            max_labels_per_series: 64,
            max_label_name_bytes: 1024,
            max_label_value_bytes: 4096,
        }
    }
}

/// A series over a [`LabelLimits`] limit, worded for `partial_success`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OverLimit {
    Labels {
        count: usize,
        max: usize,
    },
    NameBytes {
        bytes: usize,
        max: usize,
    },
    ValueBytes {
        name: String,
        bytes: usize,
        max: usize,
    },
}

impl fmt::Display for OverLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverLimit::Labels { count, max } => write!(
                f,
                "{count} labels exceed the limit of {max} per series (max_labels_per_series)"
            ),
            OverLimit::NameBytes { bytes, max } => write!(
                f,
                "a label name of {bytes} bytes exceeds the limit of {max} (max_label_name_bytes)"
            ),
            OverLimit::ValueBytes { name, bytes, max } => write!(
                f,
                "the value of label {name:?} is {bytes} bytes, over the limit of {max} (max_label_value_bytes)"
            ),
        }
    }
}

impl LabelLimits {
    /// Checks a series as the sender spelled it (later pairs win, empty values are
    /// absent), before anything is built from it.
    fn check<'p>(
        &self,
        name: &str,
        pairs: impl Iterator<Item = (&'p str, &'p str)> + Clone,
    ) -> Result<(), OverLimit> {
        let value_ok = |label: &str, v: &str| {
            if v.len() > self.max_label_value_bytes {
                // A name over its own limit is reported as such, not quoted whole.
                let label: String = label.chars().take(64).collect();
                Err(OverLimit::ValueBytes {
                    name: label,
                    bytes: v.len(),
                    max: self.max_label_value_bytes,
                })
            } else {
                Ok(())
            }
        };
        value_ok(METRIC_NAME, name)?;
        let mut raw = 1;
        for (n, v) in pairs.clone() {
            if v.is_empty() {
                continue;
            }
            raw += 1;
            if n.len() > self.max_label_name_bytes {
                return Err(OverLimit::NameBytes {
                    bytes: n.len(),
                    max: self.max_label_name_bytes,
                });
            }
            value_ok(n, v)?;
        }
        if raw <= self.max_labels_per_series {
            return Ok(());
        }
        // Repeated names collapse: count what the label set will hold.
        let mut last: HashMap<&str, &str, FxBuild> = HashMap::default();
        last.insert(METRIC_NAME, name);
        for (n, v) in pairs {
            last.insert(n, v);
        }
        let count = last.values().filter(|v| !v.is_empty()).count();
        if count > self.max_labels_per_series {
            return Err(OverLimit::Labels {
                count,
                max: self.max_labels_per_series,
            });
        }
        Ok(())
    }
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
    limits: LabelLimits,
}

impl SeriesCache {
    /// `idle` is how long an unseen series stays cached; `max_entries` bounds the cache
    /// whatever senders do (it is cleared when full, and refills from live series).
    pub(crate) fn new(idle: Duration, max_entries: usize, limits: LabelLimits) -> Self {
        let epoch_len = (idle / 4).max(Duration::from_millis(1));
        SeriesCache {
            map: HashMap::default(),
            scratch: Vec::with_capacity(512),
            epoch: 0,
            epoch_started: Instant::now(),
            epoch_len,
            idle_epochs: 4,
            max_entries,
            limits,
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
    /// earlier ones of the same name, empty values are absent), or why it is refused.
    #[cfg(test)]
    pub(crate) fn intern<'p>(
        &mut self,
        name: &str,
        pairs: impl Iterator<Item = (&'p str, &'p str)> + Clone,
        start_ms: Option<i64>,
    ) -> Result<Interned, OverLimit> {
        self.intern_with(name, pairs, start_ms, |l| l)
    }

    /// [`SeriesCache::intern`], with a new label set passed through `canonical` (the
    /// store's [`crate::store::Store::canonical_labels`]) before it is cached.
    pub(crate) fn intern_with<'p>(
        &mut self,
        name: &str,
        pairs: impl Iterator<Item = (&'p str, &'p str)> + Clone,
        start_ms: Option<i64>,
        canonical: impl FnOnce(Labels) -> Labels,
    ) -> Result<Interned, OverLimit> {
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
            return Ok(Interned {
                labels: e.labels.clone(),
                new_start_ms,
            });
        }
        self.limits.check(name, pairs.clone())?;
        let mut b = LabelsBuilder::new();
        for (n, v) in pairs {
            b.set(n, v);
        }
        b.set(METRIC_NAME, name);
        let labels = canonical(b.build());
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
        Ok(Interned {
            labels,
            new_start_ms: start_ms,
        })
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
        let mut c = SeriesCache::new(Duration::from_secs(600), 100, LabelLimits::default());
        let pairs = [("job", "a"), ("gpu", "0")];
        let a = c.intern("up", pairs.iter().copied(), Some(5)).unwrap();
        assert_eq!(a.new_start_ms, Some(5));
        let b = c.intern("up", pairs.iter().copied(), Some(5)).unwrap();
        assert_eq!(b.new_start_ms, None);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.labels.get("__name__"), Some("up"));
        assert_eq!(
            c.intern("up", pairs.iter().copied(), Some(9))
                .unwrap()
                .new_start_ms,
            Some(9)
        );
        // Same set in another order: a second cache entry, the same label set.
        let rev = c.intern("up", pairs.iter().rev().copied(), None).unwrap();
        assert_eq!(rev.labels, a.labels);
        assert_eq!(c.len(), 2);
        // Later duplicates win; empty values are absent.
        let d = c
            .intern(
                "up",
                [("job", "x"), ("job", "y"), ("e", "")].into_iter(),
                None,
            )
            .unwrap();
        assert_eq!(d.labels.get("job"), Some("y"));
        assert_eq!(d.labels.len(), 2);
    }

    #[test]
    fn idle_entries_are_dropped_and_size_is_bounded() {
        let mut c = SeriesCache::new(Duration::from_millis(4), 3, LabelLimits::default());
        c.intern("a", std::iter::empty(), None).unwrap();
        let later = Instant::now() + Duration::from_secs(1);
        for i in 0..5 {
            c.tick(later + Duration::from_millis(2 * i));
        }
        assert_eq!(c.len(), 0);
        for n in ["a", "b", "c", "d"] {
            c.intern(n, std::iter::empty(), None).unwrap();
        }
        assert!(c.len() <= 3);
    }

    #[test]
    fn label_limits_refuse_and_do_not_cache() {
        let limits = LabelLimits {
            max_labels_per_series: 3,
            max_label_name_bytes: 4,
            max_label_value_bytes: 5,
        };
        let mut c = SeriesCache::new(Duration::from_secs(600), 100, limits);
        // __name__ + 2 labels: at the limit. A repeated name and an empty value do not
        // count.
        let ok = [("a", "1"), ("b", "2"), ("a", "3"), ("c", "")];
        assert!(c.intern("m", ok.iter().copied(), None).is_ok());
        let over = [("a", "1"), ("b", "2"), ("c", "3")];
        assert_eq!(
            c.intern("m", over.iter().copied(), None).err(),
            Some(OverLimit::Labels { count: 4, max: 3 })
        );
        let e = c.intern("m", [("name5", "v")].into_iter(), None).err();
        assert_eq!(e, Some(OverLimit::NameBytes { bytes: 5, max: 4 }));
        let e = c.intern("m", [("a", "123456")].into_iter(), None).err();
        assert!(e.unwrap().to_string().contains("max_label_value_bytes"));
        let e = c.intern("longname", std::iter::empty(), None).err();
        assert!(e.unwrap().to_string().contains("\"__name__\""));
        assert_eq!(c.len(), 1, "refused series are not cached");
    }
}
