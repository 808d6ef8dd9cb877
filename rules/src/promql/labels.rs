//! An immutable, sorted label set shared by reference counting, because the engine
//! copies label sets into every intermediate vector and alert state keys on them.

use std::fmt;
use std::sync::Arc;

/// The label that carries the metric name.
pub const METRIC_NAME: &str = "__name__";

type Pair = (Arc<str>, Arc<str>);

/// A sorted (by name), duplicate-free label set including `__name__`. Empty values
/// are dropped on construction, as Prometheus treats them as absent.
///
/// Names and values are shared, and the set's hash is computed once at
/// construction: the engine hashes label sets for every matching, grouping and
/// duplicate check, so hashing must not walk the strings each time.
#[derive(Clone)]
pub struct Labels(Arc<Inner>);

struct Inner {
    hash: u64,
    /// Position of `__name__` in `pairs`, so name lookups touch no strings.
    name_idx: Option<usize>,
    /// Hash of the set without `__name__`, the default vector-matching signature,
    /// kept because stored series are matched again every evaluation round.
    hash_without_name: u64,
    pairs: Box<[Pair]>,
}

const HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// One step of a word-at-a-time hash (rotate, xor, multiply by an odd constant): a
/// bijection of the state for each word, so equal-length inputs differing in one
/// word never collide. Label sets are hashed for every matching and grouping, so
/// this reads eight bytes per step instead of one.
fn mix(h: u64, w: u64) -> u64 {
    (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95)
}

fn mix_str(mut h: u64, s: &str) -> u64 {
    let b = s.as_bytes();
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix(h, u64::from_le_bytes(w));
    }
    let r = chunks.remainder();
    let mut w = [0u8; 8];
    w[..r.len()].copy_from_slice(r);
    h = mix(h, u64::from_le_bytes(w));
    mix(h, b.len() as u64)
}

/// Hash of one name and value; fast and stable across runs.
fn hash_pair(h: u64, n: &str, v: &str) -> u64 {
    mix_str(mix_str(h, n), v)
}

fn hash_pairs(pairs: &[Pair]) -> u64 {
    pairs.iter().fold(HASH_SEED, |h, (n, v)| hash_pair(h, n, v))
}

impl Default for Labels {
    fn default() -> Self {
        Labels::from_sorted(Vec::new())
    }
}

impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.hash == other.0.hash && self.0.pairs == other.0.pairs)
    }
}

impl Eq for Labels {}

impl std::hash::Hash for Labels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Labels {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.pairs.cmp(&other.0.pairs)
    }
}

impl Labels {
    /// The empty label set.
    pub fn empty() -> Self {
        Labels::default()
    }

    /// Wraps pairs that are already sorted by name and unique.
    fn from_sorted(pairs: Vec<Pair>) -> Self {
        let name_idx = pairs.iter().position(|(n, _)| n.as_ref() == METRIC_NAME);
        let hash = hash_pairs(&pairs);
        let hash_without_name = match name_idx {
            None => hash,
            Some(idx) => pairs
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != idx)
                .fold(HASH_SEED, |h, (_, (n, v))| hash_pair(h, n, v)),
        };
        Labels(Arc::new(Inner {
            hash,
            name_idx,
            hash_without_name,
            pairs: pairs.into_boxed_slice(),
        }))
    }

    /// A stable 64-bit hash of the set (names and values).
    pub fn hash_u64(&self) -> u64 {
        self.0.hash
    }

    /// Builds a label set from pairs; later duplicates win, empty values are dropped.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut b = LabelsBuilder::default();
        for (n, v) in pairs {
            b.set(n.as_ref(), v.as_ref());
        }
        b.build()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        let p = &self.0.pairs;
        p.binary_search_by(|(n, _)| n.as_ref().cmp(name))
            .ok()
            .map(|i| p[i].1.as_ref())
    }

    /// The metric name, if any.
    pub fn name(&self) -> Option<&str> {
        self.0.name_idx.map(|i| self.0.pairs[i].1.as_ref())
    }

    /// The same set with every name and value replaced by the interned copy, so
    /// that a store holding many series shares one allocation per distinct string.
    /// A set whose strings all are the pool's already is returned as it is (shared,
    /// not copied), so a caller that built it from the pool holds the store's copy.
    pub fn interned(&self, pool: &mut std::collections::HashSet<Arc<str>>) -> Labels {
        let mut copied = false;
        let mut intern = |s: &Arc<str>| match pool.get(s) {
            Some(x) => {
                copied |= !Arc::ptr_eq(x, s);
                Arc::clone(x)
            }
            None => {
                pool.insert(Arc::clone(s));
                Arc::clone(s)
            }
        };
        let pairs: Vec<Pair> = self
            .0
            .pairs
            .iter()
            .map(|(n, v)| (intern(n), intern(v)))
            .collect();
        if copied {
            Labels::from_sorted(pairs)
        } else {
            self.clone()
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.0.pairs.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    pub fn len(&self) -> usize {
        self.0.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.pairs.is_empty()
    }

    /// A builder pre-filled with these labels.
    pub fn to_builder(&self) -> LabelsBuilder {
        LabelsBuilder {
            pairs: self.0.pairs.to_vec(),
        }
    }

    /// Hash of only the named labels (`keep = true`) or of all but them, equal to
    /// `self.filter(names, keep).hash_u64()` without building the set: vector
    /// matching and grouping hash every sample.
    pub fn hash_filtered(&self, names: &[String], keep: bool) -> u64 {
        // Default vector matching ignores only the name: skip it by position.
        if !keep && names.len() == 1 && names[0] == METRIC_NAME {
            return self.0.hash_without_name;
        }
        let mut h: u64 = HASH_SEED;
        for (n, v) in self.0.pairs.iter() {
            if names.iter().any(|x| x.as_str() == n.as_ref()) == keep {
                h = hash_pair(h, n, v);
            }
        }
        h
    }

    /// The same set without `__name__`.
    pub fn without_name(&self) -> Labels {
        let Some(idx) = self.0.name_idx else {
            return self.clone();
        };
        let pairs = self
            .0
            .pairs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != idx)
            .map(|(_, p)| p.clone())
            .collect();
        Labels::from_sorted(pairs)
    }

    /// Only the named labels (`keep = true`) or all but them (`keep = false`).
    pub fn filter(&self, names: &[String], keep: bool) -> Labels {
        Labels::from_sorted(
            self.0
                .pairs
                .iter()
                .filter(|(n, _)| names.iter().any(|x| x.as_str() == n.as_ref()) == keep)
                .cloned()
                .collect(),
        )
    }
}

impl Labels {
    /// Go's `labels.Labels.String()` form, `{__name__="up", job="x"}`, used in error
    /// messages that tests compare verbatim.
    pub fn go_string(&self) -> String {
        let parts: Vec<String> = self.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
        format!("{{{}}}", parts.join(", "))
    }
}

impl fmt::Display for Labels {
    /// Prometheus's text form: `name{a="b", c="d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.name() {
            f.write_str(n)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for (n, v) in self.iter().filter(|(n, _)| *n != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{n}={v:?}")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Mutable label set used to derive new sets from old ones. Kept sorted, and
/// unchanged names and values stay shared with the set it came from.
#[derive(Debug, Clone, Default)]
pub struct LabelsBuilder {
    pairs: Vec<Pair>,
}

impl LabelsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a label; an empty value deletes it.
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        if value.is_empty() {
            return self.del(name);
        }
        match self.pairs.binary_search_by(|(n, _)| n.as_ref().cmp(name)) {
            Ok(i) => {
                if self.pairs[i].1.as_ref() != value {
                    self.pairs[i].1 = value.into();
                }
            }
            Err(i) => self.pairs.insert(i, (name.into(), value.into())),
        }
        self
    }

    pub fn del(&mut self, name: &str) -> &mut Self {
        if let Ok(i) = self.pairs.binary_search_by(|(n, _)| n.as_ref().cmp(name)) {
            self.pairs.remove(i);
        }
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .binary_search_by(|(n, _)| n.as_ref().cmp(name))
            .ok()
            .map(|i| self.pairs[i].1.as_ref())
    }

    pub fn build(&self) -> Labels {
        Labels::from_sorted(self.pairs.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_and_deduplicated() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("b", "3"), ("c", "")]);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("a", "1"), ("b", "3")]);
        assert_eq!(l.get("b"), Some("3"));
        assert_eq!(l.get("c"), None);
    }

    #[test]
    fn filtered_hash_matches_filtered_set() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a"), ("instance", "b")]);
        let names = vec!["job".to_string()];
        assert_eq!(
            l.hash_filtered(&names, true),
            l.filter(&names, true).hash_u64()
        );
        assert_eq!(
            l.hash_filtered(&names, false),
            l.filter(&names, false).hash_u64()
        );
        let mut b = l.to_builder();
        b.set("job", "z").del("instance").set("a", "1");
        assert_eq!(
            b.build(),
            Labels::from_pairs([("__name__", "up"), ("job", "z"), ("a", "1")])
        );
    }

    #[test]
    fn display_like_prometheus() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "x\"y")]);
        assert_eq!(l.to_string(), "up{job=\"x\\\"y\"}");
    }
}
