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
    pairs: Box<[Pair]>,
}

/// FNV-1a over names and values with separators; fast and stable across runs.
fn fnv(pairs: &[Pair]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (n, v) in pairs {
        for b in n.bytes().chain(std::iter::once(0xff)).chain(v.bytes()).chain(std::iter::once(0xfe)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

impl Default for Labels {
    fn default() -> Self {
        Labels::from_sorted(Vec::new())
    }
}

impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.0.hash == other.0.hash && self.0.pairs == other.0.pairs)
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
        Labels(Arc::new(Inner { hash: fnv(&pairs), name_idx, pairs: pairs.into_boxed_slice() }))
    }

    /// A stable 64-bit hash of the set (names and values).
    pub fn hash_u64(&self) -> u64 {
        self.0.hash
    }

    /// Builds a label set from pairs; later duplicates win, empty values are dropped.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (N, V)>) -> Self {
        let mut b = LabelsBuilder::default();
        for (n, v) in pairs {
            b.set(n.as_ref(), v.as_ref());
        }
        b.build()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        let p = &self.0.pairs;
        p.binary_search_by(|(n, _)| n.as_ref().cmp(name)).ok().map(|i| p[i].1.as_ref())
    }

    /// The metric name, if any.
    pub fn name(&self) -> Option<&str> {
        self.0.name_idx.map(|i| self.0.pairs[i].1.as_ref())
    }

    /// The same set with every name and value replaced by the interned copy, so
    /// that a store holding many series shares one allocation per distinct string.
    pub(crate) fn interned(&self, pool: &mut std::collections::HashSet<Arc<str>>) -> Labels {
        let mut intern = |s: &Arc<str>| match pool.get(s) {
            Some(x) => Arc::clone(x),
            None => {
                pool.insert(Arc::clone(s));
                Arc::clone(s)
            }
        };
        let pairs = self.0.pairs.iter().map(|(n, v)| (intern(n), intern(v))).collect();
        Labels::from_sorted(pairs)
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
            pairs: self.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        }
    }

    /// The same set without `__name__`.
    pub fn without_name(&self) -> Labels {
        let Some(idx) = self.0.name_idx else { return self.clone() };
        let pairs = self.0.pairs.iter().enumerate().filter(|(i, _)| *i != idx).map(|(_, p)| p.clone()).collect();
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

/// Mutable label set used to derive new sets from old ones.
#[derive(Debug, Clone, Default)]
pub struct LabelsBuilder {
    pairs: Vec<(String, String)>,
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
        match self.pairs.iter_mut().find(|(n, _)| n == name) {
            Some(p) => p.1 = value.to_string(),
            None => self.pairs.push((name.to_string(), value.to_string())),
        }
        self
    }

    pub fn del(&mut self, name: &str) -> &mut Self {
        self.pairs.retain(|(n, _)| n != name);
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn build(&self) -> Labels {
        let mut v: Vec<Pair> = self
            .pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, v)| (n.as_str().into(), v.as_str().into()))
            .collect();
        v.sort();
        Labels::from_sorted(v)
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
    fn display_like_prometheus() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "x\"y")]);
        assert_eq!(l.to_string(), "up{job=\"x\\\"y\"}");
    }
}
