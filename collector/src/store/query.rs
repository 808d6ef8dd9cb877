//! Reads: `select` for the PromQL engine, and the metadata queries behind
//! `/api/v1/series`, `/api/v1/labels` and `/api/v1/label/<name>/values`.
//!
//! The index lock is held only to turn matchers into series; samples are decoded
//! afterwards under each series' own lock, so a large select never stalls ingest.

use std::collections::BTreeSet;
use std::sync::Arc;

use vigil_rules::promql::{Labels, Matchers, Series, Storage, StorageError};

use super::postings::Index;
use super::series::{MemSeries, SeriesId};
use super::{Store, lock, read};

/// An inclusive time range in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl TimeRange {
    /// No time restriction.
    pub const ALL: TimeRange = TimeRange {
        start_ms: i64::MIN,
        end_ms: i64::MAX,
    };

    pub fn new(start_ms: i64, end_ms: i64) -> Self {
        Self { start_ms, end_ms }
    }

    fn is_all(&self) -> bool {
        *self == Self::ALL
    }
}

/// Ids matching a selector, ascending: its `or` groups (`{a="1" or b="2"}`) each
/// joined with the shared matchers, then united.
pub(crate) fn select_ids(index: &Index, matchers: &Matchers) -> Vec<SeriesId> {
    if matchers.or_matchers.is_empty() {
        return index.select(&matchers.matchers);
    }
    let mut ids = Vec::new();
    for g in &matchers.or_matchers {
        let mut group = g.clone();
        group.extend(matchers.matchers.iter().cloned());
        ids.extend(index.select(&group));
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl Store {
    /// Series matching `matchers` with at least one sample in `[start_ms, end_ms]`, with
    /// only those samples, sorted by labels. Staleness markers come back as stored.
    pub fn select(
        &self,
        matchers: &Matchers,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError> {
        let series = self.resolve(std::slice::from_ref(matchers));
        let mut out = Vec::with_capacity(series.len());
        for s in series {
            let mut samples = Vec::new();
            lock(&s.data)
                .read_range(&self.chunk_files, start_ms, end_ms, &mut samples)
                .map_err(|e| StorageError(e.to_string()))?;
            if !samples.is_empty() {
                out.push(Series {
                    labels: s.labels.clone(),
                    samples,
                });
            }
        }
        out.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// Label sets of the series matching any of `selectors` (all series when empty)
    /// with a sample in `range`, sorted.
    pub fn series(&self, selectors: &[Matchers], range: TimeRange) -> Vec<Labels> {
        let mut out: Vec<Labels> = self
            .resolve(selectors)
            .into_iter()
            .filter(|s| self.in_range(s, range))
            .map(|s| s.labels.clone())
            .collect();
        out.sort_unstable();
        out
    }

    /// Label names of the matching series, sorted. Without selectors or range this is
    /// answered from the index alone.
    pub fn label_names(&self, selectors: &[Matchers], range: TimeRange) -> Vec<String> {
        if selectors.is_empty() && range.is_all() {
            let index = read(&self.index);
            let mut names: Vec<String> = index.names().map(str::to_string).collect();
            names.sort_unstable();
            return names;
        }
        let mut names = BTreeSet::new();
        for s in self
            .resolve(selectors)
            .into_iter()
            .filter(|s| self.in_range(s, range))
        {
            for (n, _) in s.labels.iter() {
                if !names.contains(n) {
                    names.insert(n.to_string());
                }
            }
        }
        names.into_iter().collect()
    }

    /// Values of label `name` among the matching series, sorted.
    pub fn label_values(
        &self,
        name: &str,
        selectors: &[Matchers],
        range: TimeRange,
    ) -> Vec<String> {
        if selectors.is_empty() && range.is_all() {
            let index = read(&self.index);
            let mut values: Vec<String> = index.values(name).map(str::to_string).collect();
            values.sort_unstable();
            return values;
        }
        let mut values = BTreeSet::new();
        for s in self
            .resolve(selectors)
            .into_iter()
            .filter(|s| self.in_range(s, range))
        {
            if let Some(v) = s.labels.get(name)
                && !values.contains(v)
            {
                values.insert(v.to_string());
            }
        }
        values.into_iter().collect()
    }

    /// Series matching any selector (every series for none), ascending by id.
    fn resolve(&self, selectors: &[Matchers]) -> Vec<Arc<MemSeries>> {
        let index = read(&self.index);
        let ids: Vec<SeriesId> = match selectors {
            [] => {
                let mut all: Vec<SeriesId> = index.series().map(|s| s.id).collect();
                all.sort_unstable();
                all
            }
            [one] => select_ids(&index, one),
            many => {
                let mut ids: Vec<SeriesId> =
                    many.iter().flat_map(|m| select_ids(&index, m)).collect();
                ids.sort_unstable();
                ids.dedup();
                ids
            }
        };
        ids.into_iter()
            .filter_map(|id| index.by_id(id).cloned())
            .collect()
    }
}

impl Store {
    /// True when the series has a sample in `range`. A chunk file that cannot be
    /// read counts as a sample there: metadata answers err towards listing a series.
    fn in_range(&self, s: &MemSeries, range: TimeRange) -> bool {
        let data = lock(&s.data);
        if range.is_all() {
            return !data.is_empty();
        }
        data.has_samples_in(&self.chunk_files, range.start_ms, range.end_ms)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "store: reading spilled chunks");
                true
            })
    }
}

/// The PromQL engine reads through this.
impl Storage for Store {
    fn select(
        &self,
        matchers: &Matchers,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError> {
        Store::select(self, matchers, start_ms, end_ms)
    }

    /// Instant selectors: one decoded chunk per series and no sample vectors.
    fn select_latest(
        &self,
        matchers: &Matchers,
        t_ms: i64,
        lookback_ms: i64,
    ) -> Result<Vec<(Labels, i64, f64)>, StorageError> {
        let after_ms = t_ms.saturating_sub(lookback_ms);
        let mut out: Vec<(Labels, i64, f64)> = Vec::new();
        for s in self.resolve(std::slice::from_ref(matchers)) {
            let latest = lock(&s.data)
                .latest_at(&self.chunk_files, t_ms, after_ms)
                .map_err(|e| StorageError(e.to_string()))?;
            if let Some((t, v)) = latest {
                out.push((s.labels.clone(), t, v));
            }
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use vigil_rules::promql::{MatchOp, Matcher};

    fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
        Matcher::new(op, name, value)
    }

    #[test]
    fn metadata_queries() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(StoreOptions::new(dir.path()))?;
        let l = |name: &str, node: &str, gpu: Option<&str>| {
            let mut pairs = vec![("__name__", name), ("node", node)];
            if let Some(g) = gpu {
                pairs.push(("gpu", g));
            }
            Labels::from_pairs(pairs)
        };
        store.append(&l("temp", "b", Some("0")), 1_000, 50.0)?;
        store.append(&l("temp", "a", Some("1")), 2_000, 51.0)?;
        store.append(&l("load", "a", None), 9_000, 1.0)?;

        assert_eq!(
            store.label_names(&[], TimeRange::ALL),
            vec!["__name__", "gpu", "node"]
        );
        let load = Matchers::new(vec![m(MatchOp::Equal, "__name__", "load")]);
        assert_eq!(
            store.label_names(std::slice::from_ref(&load), TimeRange::ALL),
            vec!["__name__", "node"]
        );
        assert_eq!(
            store.label_values("node", &[], TimeRange::ALL),
            vec!["a", "b"]
        );
        assert_eq!(
            store.label_values("node", &[], TimeRange::new(1_500, 3_000)),
            vec!["a"]
        );
        assert_eq!(
            store.label_values("gpu", &[], TimeRange::new(0, 1_000)),
            vec!["0"]
        );

        let temp = Matchers::new(vec![m(MatchOp::Equal, "__name__", "temp")]);
        let series = store.series(&[temp.clone(), load], TimeRange::ALL);
        assert_eq!(series.len(), 3);
        assert!(series.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            store.series(std::slice::from_ref(&temp), TimeRange::new(5_000, 10_000)),
            vec![]
        );

        let got = store.select(&temp, 0, 10_000)?;
        assert_eq!(
            got.iter().map(|s| s.labels.get("node")).collect::<Vec<_>>(),
            vec![Some("b"), Some("a")],
            "sorted by labels: gpu 0 before gpu 1"
        );
        Ok(())
    }

    #[test]
    fn or_groups_unite() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(StoreOptions::new(dir.path()))?;
        for job in ["x", "y", "z"] {
            store.append(
                &Labels::from_pairs([("__name__", "up"), ("job", job)]),
                1,
                1.0,
            )?;
        }
        let sel = Matchers::new(vec![m(MatchOp::Equal, "__name__", "up")]).with_or_matchers(vec![
            vec![m(MatchOp::Equal, "job", "x")],
            vec![m(MatchOp::Equal, "job", "z")],
        ]);
        let got = store.select(&sel, 0, 10)?;
        assert_eq!(
            got.iter().map(|s| s.labels.get("job")).collect::<Vec<_>>(),
            vec![Some("x"), Some("z")]
        );
        Ok(())
    }
    /// Only `select`: the trait's default `select_latest` is the reference.
    struct SelectOnly<'a>(&'a Store);

    impl Storage for SelectOnly<'_> {
        fn select(
            &self,
            m: &Matchers,
            start_ms: i64,
            end_ms: i64,
        ) -> Result<Vec<Series>, StorageError> {
            self.0.select(m, start_ms, end_ms)
        }
    }

    #[test]
    fn select_latest_matches_the_default_definition() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(StoreOptions::new(dir.path()))?;
        let mut rng = crate::store::testutil::Rng::new(11);
        for i in 0..6 {
            let l = Labels::from_pairs([("__name__", "g".to_string()), ("i", i.to_string())]);
            let mut t = 0;
            for _ in 0..(50 + i * 80) {
                t += 1 + rng.below(3_000) as i64;
                let v = if rng.below(20) == 0 {
                    vigil_rules::promql::stale_nan()
                } else {
                    rng.below(100) as f64
                };
                store.append(&l, t, v)?;
            }
        }
        let sel = Matchers::new(vec![m(MatchOp::Equal, "__name__", "g")]);
        for _ in 0..400 {
            let t = rng.below(800_000) as i64 - 1_000;
            let lookback = 1 + rng.below(20_000) as i64;
            let bits = |v: Vec<(Labels, i64, f64)>| {
                v.into_iter()
                    .map(|(l, t, v)| (l, t, v.to_bits()))
                    .collect::<Vec<_>>()
            };
            let got = bits(Storage::select_latest(&store, &sel, t, lookback)?);
            let want = bits(SelectOnly(&store).select_latest(&sel, t, lookback)?);
            assert_eq!(got, want, "t={t} lookback={lookback}");
        }
        Ok(())
    }
}
