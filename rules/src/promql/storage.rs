//! In-memory series store with an inverted index, used by tests, the promqltest runner
//! and benchmarks. Equality (and non-empty regex) matchers are answered from postings
//! so a selector touching 8 of 8,000 series does not scan the other 7,992.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::memory_hints::{prefetch, prefetch_all};
use super::search::{lower_bound_from_start, tail_partition, window_bounds};
use super::slab::Slab;
use super::{
    HintedVisitor, Labels, LatestVisitor, MatchOp, Matcher, Matchers, Series, SeriesVisitor,
    Storage, StorageError,
};

/// Series held in memory, indexed by label name and value.
///
/// The samples of all series with one metric name share one allocation (a slab), each
/// series a contiguous region of it. Queries read series of one name together, so
/// their windows then lie on neighbouring pages instead of being scattered over the
/// heap: against a store much larger than the caches, finding each page (a walk of
/// the page tables) costs as much as reading the samples. Where each series' region
/// lies, and its newest sample, are kept in arrays of the slab too, in series order:
/// a selector that names only a metric (the usual rule selector) reads them front to
/// back instead of one scattered series entry per series.
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

/// One series: its labels and its place in its slab.
#[derive(Debug, Clone)]
struct Stored {
    labels: Labels,
    slab: usize,
    /// Index of the series among its slab's members.
    member: usize,
}

/// The series a selector picked: every member of one slab (a selector that is its
/// metric name alone), or a list of ascending series ids.
enum Picked<'a> {
    Slab(usize),
    Ids(Cow<'a, [usize]>),
}

impl Picked<'_> {
    fn len(&self, st: &MemoryStorage) -> usize {
        match self {
            Picked::Slab(k) => st.slabs[*k].ids.len(),
            Picked::Ids(ids) => ids.len(),
        }
    }

    /// Slab and member of the `i`th series picked.
    #[inline]
    fn at(&self, st: &MemoryStorage, i: usize) -> (usize, usize) {
        match self {
            Picked::Slab(k) => (*k, i),
            Picked::Ids(ids) => {
                let s = &st.series[ids[i]];
                (s.slab, s.member)
            }
        }
    }

    /// Hints the CPU to fetch what [`Picked::at`] reads for the `i`th series.
    #[inline]
    fn prefetch(&self, st: &MemoryStorage, i: usize) {
        if let Picked::Ids(ids) = self
            && let Some(&id) = ids.get(i)
        {
            prefetch(&st.series[id]);
        }
    }
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample; a sample at an existing timestamp replaces the old one.
    pub fn add(&mut self, labels: Labels, t_ms: i64, v: f64) {
        let id = match self.ids.get(&labels) {
            Some(&id) => id,
            None => self.insert_series(labels),
        };
        let (k, j) = (self.series[id].slab, self.series[id].member);
        self.slabs[k].add(j, t_ms, v);
    }

    /// Registers a new series (no samples yet) and returns its id.
    fn insert_series(&mut self, labels: Labels) -> usize {
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
        let k = match self.slab_of.get(name) {
            Some(&k) => k,
            None => {
                self.slabs.push(Slab::default());
                self.slab_of.insert(name.to_string(), self.slabs.len() - 1);
                self.slabs.len() - 1
            }
        };
        self.ids.insert(labels.clone(), id);
        let member = self.slabs[k].push_member(id);
        self.series.push(Stored {
            labels,
            slab: k,
            member,
        });
        id
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
    /// The series the matchers select, ascending by id. A selector that is its metric
    /// name alone (the usual rule selector) picks that name's slab, whose arrays are
    /// read in order; another single equality matcher is answered with its posting
    /// list itself: copying 120,000 ids would cost a fresh allocation (page faults
    /// included) on every evaluation.
    fn pick(&self, matchers: &Matchers) -> Picked<'_> {
        if let ([m], []) = (
            matchers.matchers.as_slice(),
            matchers.or_matchers.as_slice(),
        ) && matches!(m.op, MatchOp::Equal)
            && !m.value.is_empty()
        {
            // Series without a name share the slab of the empty name, which no
            // non-empty name matcher selects.
            if m.name == super::METRIC_NAME {
                return match self.slab_of.get(m.value.as_str()) {
                    Some(&k) => Picked::Slab(k),
                    None => Picked::Ids(Cow::Borrowed(&[])),
                };
            }
            return Picked::Ids(Cow::Borrowed(
                self.postings
                    .get(m.name.as_str())
                    .and_then(|vs| vs.get(m.value.as_str()))
                    .map_or(&[][..], |v| v.as_slice()),
            ));
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
        Picked::Ids(Cow::Owned(ids))
    }

    /// The labels of member `j` of slab `k`. Taking the reference reads nothing: a
    /// visitor that ignores the labels never fetches the series' entry.
    #[inline]
    fn labels_of(&self, k: usize, j: usize) -> &Labels {
        &self.series[self.slabs[k].ids[j]].labels
    }
}

impl Storage for MemoryStorage {
    fn select(
        &self,
        matchers: &Matchers,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError> {
        let mut out = Vec::new();
        self.select_each(matchers, start_ms, end_ms, &mut |labels, samples| {
            out.push(Series {
                labels: labels.clone(),
                samples: samples.to_vec(),
            });
        })?;
        Ok(out)
    }

    fn select_each(
        &self,
        matchers: &Matchers,
        start_ms: i64,
        end_ms: i64,
        f: &mut SeriesVisitor<'_>,
    ) -> Result<(), StorageError> {
        self.select_each_hinted(matchers, start_ms, end_ms, false, &mut |l, s, _| f(l, s))
    }

    fn select_each_hinted(
        &self,
        matchers: &Matchers,
        start_ms: i64,
        end_ms: i64,
        edges_only: bool,
        f: &mut HintedVisitor<'_>,
    ) -> Result<(), StorageError> {
        let picked = self.pick(matchers);
        // Where the previous series' window lay, counted from its newest sample: the
        // series of one selector are sampled alike, so the next window is likely in
        // the same place and can be fetched before its exact bounds are known.
        let (mut skip, mut len) = (0usize, 1usize);
        let n = picked.len(self);
        for i in 0..n {
            picked.prefetch(self, i + 2 * AHEAD);
            if i + AHEAD < n {
                let (k, j) = picked.at(self, i + AHEAD);
                let slab = &self.slabs[k];
                let s = slab.samples(j);
                let hi = s.len().saturating_sub(skip);
                let lo = hi.saturating_sub(len + 1);
                if edges_only && slab.hints(j).edges_suffice() {
                    // What finding the window's bounds and its edges read: the
                    // samples on both sides of each bound.
                    prefetch_all(&s[lo..(lo + 2).min(hi)]);
                    prefetch_all(&s[hi.saturating_sub(1)..(hi + 1).min(s.len())]);
                } else {
                    prefetch_all(&s[lo..hi]);
                }
            }
            let (k, j) = picked.at(self, i);
            let slab = &self.slabs[k];
            let s = slab.samples(j);
            let (lo, hi) = window_bounds(s, start_ms, end_ms, skip, len);
            if lo < hi {
                f(self.labels_of(k, j), &s[lo..hi], slab.hints(j));
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
        let picked = self.pick(matchers);
        let n = picked.len(self);
        for i in 0..n {
            picked.prefetch(self, i + 2 * AHEAD);
            // Only the newest samples are fetched ahead, not the label sets: a
            // selector under a filter (`x > 0`) looks at the labels of the few samples
            // it keeps.
            if i + AHEAD < n {
                let (k, j) = picked.at(self, i + AHEAD);
                prefetch(&self.slabs[k].newest[j]);
            }
            let (k, j) = picked.at(self, i);
            let slab = &self.slabs[k];
            // The newest sample is the answer unless it lies after `t_ms` (a query
            // of the past), and then the series' samples are searched.
            let latest = match slab.newest[j] {
                (t, v) if t <= t_ms => Some((t, v)),
                _ => {
                    let s = slab.samples(j);
                    let hi = tail_partition(s, t_ms, true);
                    hi.checked_sub(1).map(|i| s[i])
                }
            };
            if let Some((t, v)) = latest
                && t > t_ms - lookback_ms
            {
                f(self.labels_of(k, j), t, v);
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

    /// A selector that is a metric name alone reads the name's slab directly; with
    /// any other matcher it reads posting lists. Both must agree, for windows, hints
    /// and newest samples, including a time before a series' newest sample.
    #[test]
    fn name_alone_reads_like_any_other_selector() {
        let mut s = MemoryStorage::new();
        for i in 0..40i64 {
            let job = i.to_string();
            let l = Labels::from_pairs([("__name__", "c"), ("job", job.as_str())]);
            for t in 0..10 {
                // Every third series resets at t = 6, every fifth goes stale at t = 8.
                let v = if i % 3 == 0 && t >= 6 { t - 6 } else { t } as f64;
                let v = if i % 5 == 0 && t == 8 {
                    crate::promql::stale_nan()
                } else {
                    v
                };
                s.add(l.clone(), t * 10, v);
            }
            s.add(
                Labels::from_pairs([("__name__", "other"), ("job", job.as_str())]),
                0,
                1.0,
            );
        }
        let alone = Matchers::new(vec![Matcher::new(MatchOp::Equal, "__name__", "c")]);
        let any_job = Matchers::new(vec![
            Matcher::new(MatchOp::Equal, "__name__", "c"),
            Matcher::new(
                MatchOp::Re(regex::Regex::new("^(?:.+)$").unwrap()),
                "job",
                ".+",
            ),
        ]);
        let windows = |m: &Matchers, edges_only: bool| {
            let mut got = Vec::new();
            s.select_each_hinted(m, 25, 85, edges_only, &mut |l, w, h| {
                // By bits: a staleness marker is a NaN, never equal to itself.
                let bits: Vec<(i64, u64)> = w.iter().map(|&(t, v)| (t, v.to_bits())).collect();
                got.push((l.clone(), bits, h));
            })
            .unwrap();
            got
        };
        let want = windows(&any_job, false);
        assert_eq!(want.len(), 40);
        assert_eq!(windows(&alone, true), want);
        for (l, w, h) in &want {
            let job: i64 = l.get("job").unwrap().parse().unwrap();
            assert_eq!(h.no_decrease, job % 3 != 0, "{l}");
            assert_eq!(h.no_stale, job % 5 != 0, "{l}");
            assert_eq!(w.len(), 6, "{l}");
        }
        for t in [35, 95, 200] {
            let latest = s.select_latest(&alone, t, 30).unwrap();
            assert_eq!(latest, s.select_latest(&any_job, t, 30).unwrap(), "t={t}");
            let want_len = if t == 200 { 0 } else { 40 };
            assert_eq!(latest.len(), want_len, "t={t}");
            if t == 35 {
                assert!(latest.iter().all(|&(_, ts, _)| ts == 30));
            }
        }
    }

    #[test]
    fn out_of_order_insert_keeps_order() {
        let s = store();
        let m = Matchers::new(vec![Matcher::new(MatchOp::Equal, "job", "b")]);
        let got = s.select(&m, 0, 5000).unwrap();
        assert_eq!(got[0].samples, vec![(1000, 9.0), (2000, 1.0)]);
    }
}
