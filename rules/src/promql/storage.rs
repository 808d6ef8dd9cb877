//! In-memory series store with an inverted index, used by tests, the promqltest runner
//! and benchmarks. Equality (and non-empty regex) matchers are answered from postings
//! so a selector touching 8 of 8,000 series does not scan the other 7,992.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::memory_hints::{prefetch, prefetch_all};
use super::search::{lower_bound_from_start, tail_partition, window_bounds};
use super::{
    Labels, LatestVisitor, MatchOp, Matcher, Matchers, Series, SeriesVisitor, Storage, StorageError,
};

/// Series held in memory, indexed by label name and value.
///
/// The samples of all series with one metric name share one allocation (a slab), each
/// series a contiguous region of it. Queries read series of one name together, so
/// their windows then lie on neighbouring pages instead of being scattered over the
/// heap: against a store much larger than the caches, finding each page (a walk of
/// the page tables) costs as much as reading the samples.
#[derive(Debug, Default, Clone)]
pub struct MemoryStorage {
    series: Vec<Stored>,
    ids: HashMap<Labels, usize>,
    /// label name → label value → ascending series ids.
    postings: HashMap<Arc<str>, HashMap<Arc<str>, Vec<usize>>>,
    /// One shared copy of every label name and value.
    strings: HashSet<Arc<str>>,
    slabs: Vec<Slab>,
    /// Metric name (empty for none) → its slab.
    slab_of: HashMap<String, usize>,
}

/// One series: its labels and where its samples lie in its slab.
#[derive(Debug, Clone)]
struct Stored {
    labels: Labels,
    slab: usize,
    /// The region `off..off + cap` is the series', the first `len` samples used.
    off: usize,
    len: usize,
    cap: usize,
}

/// Samples of every series of one metric name.
#[derive(Debug, Default, Clone)]
struct Slab {
    samples: Vec<(i64, f64)>,
    /// Regions left behind by series that outgrew them, by size, for the next series
    /// that needs one of that size.
    free: HashMap<usize, Vec<usize>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// The samples of series `id`, ascending by time.
    fn samples(&self, id: usize) -> &[(i64, f64)] {
        let s = &self.series[id];
        &self.slabs[s.slab].samples[s.off..s.off + s.len]
    }

    /// Adds one sample; a sample at an existing timestamp replaces the old one.
    pub fn add(&mut self, labels: Labels, t_ms: i64, v: f64) {
        let id = match self.ids.get(&labels) {
            Some(&id) => id,
            None => {
                let id = self.series.len();
                let labels = labels.interned(&mut self.strings);
                // Keyed by the pool's shared strings: a new series allocates no key.
                let shared = |s: &str| self.strings.get(s).cloned().unwrap_or_else(|| s.into());
                for (n, val) in labels.iter() {
                    let by_value = match self.postings.get_mut(n) {
                        Some(m) => m,
                        None => self.postings.entry(shared(n)).or_default(),
                    };
                    match by_value.get_mut(val) {
                        Some(ids) => ids.push(id),
                        None => {
                            by_value.insert(shared(val), vec![id]);
                        }
                    }
                }
                let name = labels.name().unwrap_or("");
                let slab = match self.slab_of.get(name) {
                    Some(&i) => i,
                    None => {
                        self.slabs.push(Slab::default());
                        self.slab_of.insert(name.to_string(), self.slabs.len() - 1);
                        self.slabs.len() - 1
                    }
                };
                self.ids.insert(labels.clone(), id);
                // No region yet; an empty one at the slab's end grows in place.
                let off = self.slabs[slab].samples.len();
                self.series.push(Stored {
                    labels,
                    slab,
                    off,
                    len: 0,
                    cap: 0,
                });
                id
            }
        };
        let s = &self.series[id];
        let region = &self.slabs[s.slab].samples[s.off..s.off + s.len];
        let at = match region.last() {
            Some(&(last, _)) if last >= t_ms => {
                let i = region.partition_point(|&(t, _)| t < t_ms);
                if region.get(i).is_some_and(|&(t, _)| t == t_ms) {
                    let off = s.off;
                    self.slabs[s.slab].samples[off + i].1 = v;
                    return;
                }
                i
            }
            _ => s.len,
        };
        if s.len == s.cap {
            self.grow(id);
        }
        let s = &mut self.series[id];
        let samples = &mut self.slabs[s.slab].samples;
        samples.copy_within(s.off + at..s.off + s.len, s.off + at + 1);
        samples[s.off + at] = (t_ms, v);
        s.len += 1;
    }

    /// Doubles series `id`'s region: in place when it ends the slab (a series filled
    /// before the next one starts never moves), else into a free region of the new
    /// size or at the slab's end, leaving the old region for another series.
    fn grow(&mut self, id: usize) {
        let s = &mut self.series[id];
        let slab = &mut self.slabs[s.slab];
        let cap = (s.cap * 2).max(4);
        if s.off + s.cap == slab.samples.len() {
            slab.samples.resize(s.off + cap, (0, 0.0));
        } else {
            let off = match slab.free.get_mut(&cap).and_then(|f| f.pop()) {
                Some(off) => off,
                None => {
                    let off = slab.samples.len();
                    slab.samples.resize(off + cap, (0, 0.0));
                    off
                }
            };
            slab.samples.copy_within(s.off..s.off + s.len, off);
            if s.cap > 0 {
                slab.free.entry(s.cap).or_default().push(s.off);
            }
            s.off = off;
        }
        s.cap = cap;
    }

    /// Drops every series.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Number of series held.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Series ids a non-equality matcher can be answered with from the index, if it
    /// can (it must not match the empty value, or absent labels would qualify).
    fn regex_candidates(&self, m: &Matcher) -> Option<Vec<usize>> {
        if m.is_match("") {
            return None;
        }
        let mut ids: Vec<usize> = self
            .postings
            .get(m.name.as_str())
            .into_iter()
            .flatten()
            .filter(|(v, _)| m.is_match(v))
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        ids.sort_unstable();
        Some(ids)
    }

    fn select_group(&self, group: &[Matcher], out: &mut Vec<usize>) {
        let is_eq = |m: &&Matcher| matches!(m.op, MatchOp::Equal) && !m.value.is_empty();
        // Equality matchers are answered by intersecting posting lists, which are
        // sorted and contiguous; only the other matchers look at each series' labels.
        let mut lists: Vec<&[usize]> = group
            .iter()
            .filter(is_eq)
            .map(|m| {
                self.postings
                    .get(m.name.as_str())
                    .and_then(|vs| vs.get(m.value.as_str()))
                    .map_or(&[][..], |v| v.as_slice())
            })
            .collect();
        let rest: Vec<&Matcher> = group.iter().filter(|m| !is_eq(m)).collect();
        let matches = |id: usize| {
            let l = &self.series[id].labels;
            rest.iter()
                .all(|m| m.is_match(l.get(&m.name).unwrap_or("")))
        };
        if let ([only], []) = (lists.as_slice(), rest.as_slice()) {
            // One equality matcher (`metric_name` alone, the usual rule selector): the
            // posting list is the answer, copied in one go.
            out.extend_from_slice(only);
            return;
        }
        if !lists.is_empty() {
            lists.sort_by_key(|l| l.len());
            let (first, others) = lists
                .split_first_mut()
                .map_or((&[][..], &mut [][..]), |(f, o)| (*f, o));
            // Each other list is searched from where the previous id was found, not
            // from its start: the ids ascend, so the search stays near the cursor.
            out.extend(
                first
                    .iter()
                    .copied()
                    .filter(|&id| {
                        others.iter_mut().all(|l| {
                            *l = &l[lower_bound_from_start(l, id)..];
                            l.first() == Some(&id)
                        })
                    })
                    .filter(|&id| matches(id)),
            );
            return;
        }
        let best = group
            .iter()
            .filter_map(|m| self.regex_candidates(m))
            .min_by_key(|c| c.len());
        match best {
            Some(ids) => out.extend(ids.into_iter().filter(|&id| matches(id))),
            None => out.extend((0..self.series.len()).filter(|&id| matches(id))),
        }
    }
}

/// Whether a label set satisfies a selector's matchers (any `or` group).
pub(crate) fn matches_labels(matchers: &Matchers, l: &Labels) -> bool {
    let group_ok = |g: &[Matcher]| g.iter().all(|m| m.is_match(l.get(&m.name).unwrap_or("")));
    if matchers.or_matchers.is_empty() {
        return group_ok(&matchers.matchers);
    }
    matchers
        .or_matchers
        .iter()
        .any(|g| group_ok(g) && group_ok(&matchers.matchers))
}

impl MemoryStorage {
    /// Ids of the series the matchers select, ascending. A selector that is one
    /// equality matcher (a metric name alone, the usual rule selector) is answered with
    /// its posting list itself: copying 120,000 ids would cost a fresh allocation
    /// (page faults included) on every evaluation.
    fn matching_ids(&self, matchers: &Matchers) -> Cow<'_, [usize]> {
        if let ([m], []) = (
            matchers.matchers.as_slice(),
            matchers.or_matchers.as_slice(),
        ) && matches!(m.op, MatchOp::Equal)
            && !m.value.is_empty()
        {
            return Cow::Borrowed(
                self.postings
                    .get(m.name.as_str())
                    .and_then(|vs| vs.get(m.value.as_str()))
                    .map_or(&[][..], |v| v.as_slice()),
            );
        }
        let mut ids = Vec::new();
        if matchers.or_matchers.is_empty() {
            self.select_group(&matchers.matchers, &mut ids);
        } else {
            for g in &matchers.or_matchers {
                let mut group = g.clone();
                group.extend(matchers.matchers.iter().cloned());
                self.select_group(&group, &mut ids);
            }
            ids.sort_unstable();
            ids.dedup();
        }
        Cow::Owned(ids)
    }
}

impl Storage for MemoryStorage {
    fn select(
        &self,
        matchers: &Matchers,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError> {
        let ids = self.matching_ids(matchers);
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids.iter() {
            let samples = self.samples(id);
            let hi = tail_partition(samples, end_ms, true);
            let lo = tail_partition(&samples[..hi], start_ms, false);
            if lo < hi {
                out.push(Series {
                    labels: self.series[id].labels.clone(),
                    samples: samples[lo..hi].to_vec(),
                });
            }
        }
        Ok(out)
    }

    fn select_each(
        &self,
        matchers: &Matchers,
        start_ms: i64,
        end_ms: i64,
        f: &mut SeriesVisitor<'_>,
    ) -> Result<(), StorageError> {
        let ids = self.matching_ids(matchers);
        // Where the previous series' window lay, counted from its newest sample: the
        // series of one selector are sampled alike, so the next window is likely in
        // the same place and can be fetched before its exact bounds are known.
        let (mut skip, mut len) = (0usize, 1usize);
        for (i, &id) in ids.iter().enumerate() {
            if let Some(&ahead) = ids.get(i + 2 * AHEAD) {
                prefetch(&self.series[ahead]);
            }
            if let Some(&ahead) = ids.get(i + AHEAD) {
                let s = self.samples(ahead);
                let hi = s.len().saturating_sub(skip);
                prefetch_all(&s[hi.saturating_sub(len + 1)..hi]);
            }
            let s = self.samples(id);
            let (lo, hi) = window_bounds(s, start_ms, end_ms, skip, len);
            if lo < hi {
                f(&self.series[id].labels, &s[lo..hi]);
                (skip, len) = (s.len() - hi, hi - lo);
            }
        }
        Ok(())
    }

    fn select_latest(
        &self,
        matchers: &Matchers,
        t_ms: i64,
        lookback_ms: i64,
    ) -> Result<Vec<(Labels, i64, f64)>, StorageError> {
        let mut out = Vec::new();
        self.select_latest_each(matchers, t_ms, lookback_ms, &mut |l, t, v| {
            out.push((l.clone(), t, v));
        })?;
        Ok(out)
    }

    fn select_latest_each(
        &self,
        matchers: &Matchers,
        t_ms: i64,
        lookback_ms: i64,
        f: &mut LatestVisitor<'_>,
    ) -> Result<(), StorageError> {
        let ids = self.matching_ids(matchers);
        for (i, &id) in ids.iter().enumerate() {
            if let Some(&ahead) = ids.get(i + 2 * AHEAD) {
                prefetch(&self.series[ahead]);
            }
            // Only the newest samples are fetched ahead, not the label sets: a
            // selector under a filter (`x > 0`) looks at the labels of the few samples
            // it keeps.
            if let Some(&ahead) = ids.get(i + AHEAD) {
                let s = self.samples(ahead);
                prefetch_all(&s[s.len().saturating_sub(1)..]);
            }
            let s = self.samples(id);
            let hi = tail_partition(s, t_ms, true);
            if let Some(&(t, v)) = hi.checked_sub(1).map(|i| &s[i])
                && t > t_ms - lookback_ms
            {
                f(&self.series[id].labels, t, v);
            }
        }
        Ok(())
    }
}

/// How many series ahead of the one being read the visiting selects fetch its
/// samples (and twice as far ahead its entry in the series table), so that the cache
/// misses of many series overlap with each other and with the work on the series
/// whose samples are there already, instead of being waited for one after another.
const AHEAD: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use promql_parser::label::MatchOp;

    fn store() -> MemoryStorage {
        let mut s = MemoryStorage::new();
        for (i, job) in ["a", "b", "c"].iter().enumerate() {
            let l = Labels::from_pairs([("__name__", "up"), ("job", job)]);
            s.add(l.clone(), 2000, i as f64);
            s.add(l, 1000, 9.0);
        }
        s
    }

    #[test]
    fn equality_and_regex_and_time_range() {
        let s = store();
        let m = Matchers::new(vec![
            Matcher::new(MatchOp::Equal, "__name__", "up"),
            Matcher::new(
                MatchOp::Re(regex::Regex::new("^(?:a|c)$").unwrap()),
                "job",
                "a|c",
            ),
        ]);
        let got = s.select(&m, 1500, 3000).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].samples, vec![(2000, 0.0)]);
        assert_eq!(got[1].labels.get("job"), Some("c"));
        let none = s.select(&m, 3000, 4000).unwrap();
        assert!(none.is_empty());
        let latest = s.select_latest(&m, 2500, 1000).unwrap();
        assert_eq!(latest.len(), 2);
        assert_eq!((latest[0].1, latest[0].2), (2000, 0.0));
        assert!(s.select_latest(&m, 2500, 500).unwrap().is_empty());
    }

    #[test]
    fn intersection_of_postings_and_matchers() {
        let mut s = MemoryStorage::new();
        for i in 0..300 {
            let (a, b, n) = ((i % 3).to_string(), (i % 7).to_string(), i.to_string());
            let l = Labels::from_pairs([("__name__", "m"), ("a", &a), ("b", &b), ("i", &n)]);
            s.add(l, 0, i as f64);
        }
        let m = Matchers::new(vec![
            Matcher::new(MatchOp::Equal, "__name__", "m"),
            Matcher::new(MatchOp::Equal, "a", "1"),
            Matcher::new(MatchOp::Equal, "b", "4"),
        ]);
        let got: Vec<f64> = s
            .select_latest(&m, 0, 1000)
            .unwrap()
            .into_iter()
            .map(|(_, _, v)| v)
            .collect();
        let want: Vec<f64> = (0..300)
            .filter(|i| i % 3 == 1 && i % 7 == 4)
            .map(|i| i as f64)
            .collect();
        assert_eq!(got, want);
        assert_eq!(want.len(), 15);
    }

    /// Series filled in turn (each moving to a larger region while the others are in
    /// the way, reusing regions others left) and out of order must read back exactly
    /// as a plain sorted map of their samples.
    #[test]
    fn interleaved_growth_matches_a_sorted_map() {
        use std::collections::BTreeMap;
        let mut s = MemoryStorage::new();
        let mut want: BTreeMap<(String, String), BTreeMap<i64, f64>> = BTreeMap::new();
        // A fixed pseudo-random order of timestamps, with repeats that overwrite.
        let mut x: u64 = 7;
        for i in 0..600u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let name = ["a", "b"][(i % 2) as usize];
            let job = ["1", "2", "3"][(x >> 40) as usize % 3];
            let t = if i % 5 == 0 {
                ((x >> 20) % 200) as i64
            } else {
                i as i64
            };
            let v = i as f64;
            s.add(Labels::from_pairs([("__name__", name), ("job", job)]), t, v);
            want.entry((name.into(), job.into()))
                .or_default()
                .insert(t, v);
        }
        for ((name, job), samples) in &want {
            let m = Matchers::new(vec![
                Matcher::new(MatchOp::Equal, "__name__", name),
                Matcher::new(MatchOp::Equal, "job", job),
            ]);
            let got = s.select(&m, i64::MIN / 4, i64::MAX / 4).unwrap();
            let want: Vec<(i64, f64)> = samples.iter().map(|(&t, &v)| (t, v)).collect();
            assert_eq!(got.len(), 1, "{name} {job}");
            assert_eq!(got[0].samples, want, "{name} {job}");
            let mut each = Vec::new();
            s.select_each(&m, 100, 400, &mut |_, w| each.extend_from_slice(w))
                .unwrap();
            let in_range: Vec<(i64, f64)> = want
                .iter()
                .copied()
                .filter(|&(t, _)| (100..=400).contains(&t))
                .collect();
            assert_eq!(each, in_range, "{name} {job}");
        }
        assert_eq!(s.series_count(), want.len());
    }

    #[test]
    fn out_of_order_insert_keeps_order() {
        let s = store();
        let m = Matchers::new(vec![Matcher::new(MatchOp::Equal, "job", "b")]);
        let got = s.select(&m, 0, 5000).unwrap();
        assert_eq!(got[0].samples, vec![(1000, 9.0), (2000, 1.0)]);
    }
}
