//! What the rules of one group evaluation read: the caller's store plus the samples
//! the earlier rules of the same evaluation wrote.

use std::collections::HashMap;

use crate::promql::{
    HintedVisitor, Labels, LatestVisitor, Matchers, MemoryStorage, Series, SeriesVisitor, Storage,
    StorageError, WindowHints,
};

/// The caller's store plus what this evaluation wrote so far.
pub(super) struct Overlay<'a> {
    pub(super) base: &'a dyn Storage,
    pub(super) fresh: &'a MemoryStorage,
}

impl Overlay<'_> {
    /// Base and fresh series merged; a fresh sample replaces a base one at the same time.
    fn merged(
        &self,
        m: &Matchers,
        start_ms: i64,
        end_ms: i64,
        fresh: Vec<Series>,
    ) -> Result<Vec<Series>, StorageError> {
        let mut out = self.base.select(m, start_ms, end_ms)?;
        let index: HashMap<Labels, usize> = out
            .iter()
            .enumerate()
            .map(|(i, s)| (s.labels.clone(), i))
            .collect();
        for s in fresh {
            match index.get(&s.labels) {
                Some(&i) => {
                    let merged = &mut out[i].samples;
                    for (t, v) in s.samples {
                        match merged.binary_search_by_key(&t, |&(x, _)| x) {
                            Ok(j) => merged[j].1 = v,
                            Err(j) => merged.insert(j, (t, v)),
                        }
                    }
                }
                None => out.push(s),
            }
        }
        Ok(out)
    }
}

/// Reads go straight to the caller's store unless this evaluation already wrote a
/// matching series, so the engine's fast paths stay fast.
impl Storage for Overlay<'_> {
    fn select(
        &self,
        m: &Matchers,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError> {
        let fresh = self.fresh.select(m, start_ms, end_ms)?;
        if fresh.is_empty() {
            return self.base.select(m, start_ms, end_ms);
        }
        self.merged(m, start_ms, end_ms, fresh)
    }

    fn select_each(
        &self,
        m: &Matchers,
        start_ms: i64,
        end_ms: i64,
        f: &mut SeriesVisitor<'_>,
    ) -> Result<(), StorageError> {
        self.select_each_hinted(m, start_ms, end_ms, false, &mut |l, s, _| f(l, s))
    }

    fn select_each_hinted(
        &self,
        m: &Matchers,
        start_ms: i64,
        end_ms: i64,
        edges_only: bool,
        f: &mut HintedVisitor<'_>,
    ) -> Result<(), StorageError> {
        let fresh = self.fresh.select(m, start_ms, end_ms)?;
        if fresh.is_empty() {
            return self
                .base
                .select_each_hinted(m, start_ms, end_ms, edges_only, f);
        }
        for s in self.merged(m, start_ms, end_ms, fresh)? {
            f(&s.labels, &s.samples, WindowHints::default());
        }
        Ok(())
    }

    fn select_latest(
        &self,
        m: &Matchers,
        t_ms: i64,
        lookback_ms: i64,
    ) -> Result<Vec<(Labels, i64, f64)>, StorageError> {
        let fresh = self.fresh.select_latest(m, t_ms, lookback_ms)?;
        let mut out = self.base.select_latest(m, t_ms, lookback_ms)?;
        if fresh.is_empty() {
            return Ok(out);
        }
        let index: HashMap<Labels, usize> = out
            .iter()
            .enumerate()
            .map(|(i, s)| (s.0.clone(), i))
            .collect();
        for s in fresh {
            match index.get(&s.0) {
                // The fresh sample wins at the same time: it was written this round.
                Some(&i) if out[i].1 <= s.1 => out[i] = s,
                Some(_) => {}
                None => out.push(s),
            }
        }
        Ok(out)
    }

    fn select_latest_each(
        &self,
        m: &Matchers,
        t_ms: i64,
        lookback_ms: i64,
        f: &mut LatestVisitor<'_>,
    ) -> Result<(), StorageError> {
        if self.fresh.select_latest(m, t_ms, lookback_ms)?.is_empty() {
            return self.base.select_latest_each(m, t_ms, lookback_ms, f);
        }
        for (l, t, v) in self.select_latest(m, t_ms, lookback_ms)? {
            f(&l, t, v);
        }
        Ok(())
    }
}
