//! The append path. A batch is judged against the head (with samples staged earlier in
//! the same batch taken into account), the accepted part is written to the WAL with
//! one `write`, and only then applied, so nothing reaches a query that a crash could
//! take back.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use vigil_rules::promql::{Labels, Matchers, STALE_NAN_BITS, stale_nan};

use super::hash::FxHashMap;
use super::record;
use super::series::{Applied, MemSeries, SeriesData, Verdict};
use super::wal::frame;
use super::{Store, StoreError, Writer, lock, read, size_of_data, write};

/// Samples per WAL record, so one huge batch does not make one huge record.
const SAMPLES_PER_RECORD: usize = 20_000;

/// Why one sample was refused; the rest of its batch is unaffected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Older than the series' newest sample by more than the out-of-order window.
    OutOfOrder,
    /// Same timestamp as a stored sample, different value.
    DuplicateConflict,
    /// Older than retention keeps.
    TooOld,
}

impl Rejection {
    /// Prometheus's wording, for API and log messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::OutOfOrder => "out of order sample",
            Rejection::DuplicateConflict => "duplicate sample for timestamp",
            Rejection::TooOld => "out of bounds",
        }
    }
}

/// A single append that was refused, or a store failure.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("{}: {labels} at {t_ms}", reason.as_str())]
    Rejected {
        labels: Labels,
        t_ms: i64,
        reason: Rejection,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What happened to a batch. Rejections are per sample, as in Prometheus's remote
/// write: the accepted samples are stored and logged even when some were refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendReport {
    /// Samples stored.
    pub accepted: usize,
    /// Exact repeats of a stored sample: no-ops, not errors.
    pub duplicates: usize,
    pub out_of_order: usize,
    pub conflicts: usize,
    pub too_old: usize,
    /// The first refusal, for an error message.
    pub first_rejection: Option<(Labels, i64, Rejection)>,
}

impl AppendReport {
    pub fn rejected(&self) -> usize {
        self.out_of_order + self.conflicts + self.too_old
    }

    fn refuse(&mut self, labels: &Labels, t_ms: i64, reason: Rejection) {
        match reason {
            Rejection::OutOfOrder => self.out_of_order += 1,
            Rejection::DuplicateConflict => self.conflicts += 1,
            Rejection::TooOld => self.too_old += 1,
        }
        if self.first_rejection.is_none() {
            self.first_rejection = Some((labels.clone(), t_ms, reason));
        }
    }
}

impl Store {
    /// Appends one sample. Exact duplicates succeed without storing anything.
    pub fn append(&self, labels: &Labels, t_ms: i64, v: f64) -> Result<(), AppendError> {
        let report = self.append_batch(&[(labels.clone(), t_ms, v)])?;
        match report.first_rejection {
            Some((labels, t_ms, reason)) => Err(AppendError::Rejected {
                labels,
                t_ms,
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Appends a batch. Returns once the accepted samples are in the WAL (they survive
    /// a crash of this process); call [`Store::sync`] before acknowledging to a sender
    /// that must not lose them to a power cut. An `Err` means nothing was stored.
    pub fn append_batch(&self, samples: &[(Labels, i64, f64)]) -> Result<AppendReport, StoreError> {
        let mut report = AppendReport::default();
        let mut w = lock(&self.writer);
        let min_valid = self.min_valid_t.load(Ordering::Acquire);
        let window = self.opts.out_of_order_window_ms;

        let mut staged: Vec<(Arc<MemSeries>, i64, f64)> = Vec::with_capacity(samples.len());
        let mut created: FxHashMap<Labels, Arc<MemSeries>> = FxHashMap::default();
        // Newest (t, value bits) per touched series, including staged appends.
        let mut tails: FxHashMap<u64, Option<(i64, u64)>> =
            FxHashMap::with_capacity_and_hasher(samples.len(), Default::default());
        {
            let index = read(&self.index);
            for (labels, t, v) in samples {
                let (t, v) = (*t, *v);
                if t < min_valid {
                    report.refuse(labels, t, Rejection::TooOld);
                    continue;
                }
                let series = match index.get(labels).or_else(|| created.get(labels)) {
                    Some(s) => s.clone(),
                    None => {
                        let s =
                            Arc::new(MemSeries::new(w.next_id, labels.interned(&mut w.strings)));
                        w.next_id += 1;
                        created.insert(labels.clone(), s.clone());
                        s
                    }
                };
                let tail = tails
                    .entry(series.id)
                    .or_insert_with(|| lock(&series.data).last());
                match SeriesData::judge(*tail, t, v, window) {
                    Verdict::Append => {
                        *tail = Some((t, v.to_bits()));
                        staged.push((series, t, v));
                    }
                    Verdict::Insert => staged.push((series, t, v)),
                    Verdict::Duplicate => report.duplicates += 1,
                    Verdict::Conflict => report.refuse(labels, t, Rejection::DuplicateConflict),
                    Verdict::OutOfOrder => report.refuse(labels, t, Rejection::OutOfOrder),
                }
            }
        }

        if !staged.is_empty() {
            let Writer {
                wal,
                frames,
                payload,
                ..
            } = &mut *w;
            frames.clear();
            if !created.is_empty() {
                payload.clear();
                record::encode_series(payload, created.values().map(|s| (s.id, &s.labels)));
                frame(frames, payload);
            }
            for part in staged.chunks(SAMPLES_PER_RECORD) {
                payload.clear();
                record::encode_samples(payload, part.iter().map(|(s, t, v)| (s.id, *t, *v)));
                frame(frames, payload);
            }
            wal.write_frames(frames)?;
        }

        if !created.is_empty() {
            self.counters
                .series_created
                .fetch_add(created.len() as u64, Ordering::Relaxed);
            let mut index = write(&self.index);
            for s in created.into_values() {
                index.insert(s);
            }
        }
        for (series, t, v) in &staged {
            let mut data = lock(&series.data);
            let before = size_of_data(&data);
            match data.apply(&self.chunk_files, *t, *v) {
                Applied::Stored => report.accepted += 1,
                Applied::Duplicate => report.duplicates += 1,
                Applied::Conflict => {
                    report.refuse(&series.labels, *t, Rejection::DuplicateConflict)
                }
            }
            self.counters.track(before, size_of_data(&data));
        }
        drop(w);

        let c = &self.counters;
        c.samples_appended
            .fetch_add(report.accepted as u64, Ordering::Relaxed);
        c.duplicates
            .fetch_add(report.duplicates as u64, Ordering::Relaxed);
        c.out_of_order
            .fetch_add(report.out_of_order as u64, Ordering::Relaxed);
        c.conflicts
            .fetch_add(report.conflicts as u64, Ordering::Relaxed);
        c.too_old
            .fetch_add(report.too_old as u64, Ordering::Relaxed);
        Ok(report)
    }

    /// Writes a staleness marker for one series at `t_ms`, as Prometheus does when a
    /// target disappears, so queries stop returning its last value at once instead of
    /// after the 5-minute lookback. Returns false when the series is unknown, already
    /// stale, or has a sample at or after `t_ms`.
    pub fn mark_stale(&self, labels: &Labels, t_ms: i64) -> Result<bool, StoreError> {
        let needs_marker = match read(&self.index).get(labels) {
            Some(s) => needs_marker(&lock(&s.data), t_ms),
            None => false,
        };
        if !needs_marker {
            return Ok(false);
        }
        Ok(self
            .append_batch(&[(labels.clone(), t_ms, stale_nan())])?
            .accepted
            == 1)
    }

    /// Marks every live series matching `matchers` stale at `t_ms` (a node went away:
    /// `{node="gpu-17"}`). Returns how many markers were written.
    pub fn mark_stale_matching(&self, matchers: &Matchers, t_ms: i64) -> Result<usize, StoreError> {
        let batch: Vec<(Labels, i64, f64)> = self
            .matching_series(matchers)
            .into_iter()
            .filter(|s| needs_marker(&lock(&s.data), t_ms))
            .map(|s| (s.labels.clone(), t_ms, stale_nan()))
            .collect();
        Ok(self.append_batch(&batch)?.accepted)
    }

    fn matching_series(&self, matchers: &Matchers) -> Vec<Arc<MemSeries>> {
        let index = read(&self.index);
        super::query::select_ids(&index, matchers)
            .into_iter()
            .filter_map(|id| index.by_id(id).cloned())
            .collect()
    }
}

fn needs_marker(data: &SeriesData, t_ms: i64) -> bool {
    data.last()
        .is_some_and(|(t, bits)| t < t_ms && bits != STALE_NAN_BITS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use vigil_rules::promql::{MatchOp, Matcher, is_stale_nan};

    fn store(dir: &std::path::Path) -> Store {
        let mut opts = StoreOptions::new(dir);
        opts.out_of_order_window_ms = 10_000;
        Store::open(opts).unwrap()
    }

    fn up(job: &str) -> Labels {
        Labels::from_pairs([("__name__", "up"), ("job", job)])
    }

    #[test]
    fn duplicates_conflicts_and_out_of_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.append(&up("a"), 100_000, 1.0).unwrap();
        s.append(&up("a"), 100_000, 1.0).unwrap();
        let err = s.append(&up("a"), 100_000, 2.0).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("duplicate sample for timestamp"),
            "{err}"
        );
        s.append(&up("a"), 95_000, 0.5).unwrap();
        let err = s.append(&up("a"), 89_999, 0.5).unwrap_err();
        assert!(matches!(
            err,
            AppendError::Rejected {
                reason: Rejection::OutOfOrder,
                ..
            }
        ));
        let st = s.stats();
        assert_eq!(
            (st.samples_appended, st.duplicates, st.duplicate_conflicts),
            (2, 1, 1)
        );
        assert_eq!(st.out_of_order_rejected, 1);
        let m = Matchers::new(vec![Matcher::new(MatchOp::Equal, "job", "a")]);
        let got = s.select(&m, 0, 200_000).unwrap();
        assert_eq!(got[0].samples, vec![(95_000, 0.5), (100_000, 1.0)]);
    }

    #[test]
    fn batch_judges_against_its_own_earlier_samples() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let batch = vec![
            (up("a"), 1_000, 1.0),
            (up("a"), 2_000, 2.0),
            (up("a"), 2_000, 3.0),
            (up("b"), 5_000, 1.0),
            (up("a"), 1_500, 1.5),
            (up("a"), 1_000, 1.0),
        ];
        let r = s.append_batch(&batch).unwrap();
        assert_eq!((r.accepted, r.conflicts, r.duplicates), (4, 1, 1));
        assert_eq!(s.stats().series, 2);
        assert_eq!(s.stats().series_created, 2);
    }

    #[test]
    fn stale_markers_are_stored_bit_exact() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for job in ["a", "b"] {
            s.append(&up(job), 1_000, 1.0).unwrap();
        }
        s.append(
            &Labels::from_pairs([("__name__", "other"), ("job", "a")]),
            1_000,
            1.0,
        )
        .unwrap();
        let m = Matchers::new(vec![Matcher::new(MatchOp::Equal, "__name__", "up")]);
        assert_eq!(s.mark_stale_matching(&m, 2_000).unwrap(), 2);
        assert_eq!(
            s.mark_stale_matching(&m, 3_000).unwrap(),
            0,
            "already stale"
        );
        assert!(!s.mark_stale(&up("a"), 4_000).unwrap());
        assert!(
            s.mark_stale(
                &Labels::from_pairs([("__name__", "other"), ("job", "a")]),
                2_000
            )
            .unwrap()
        );
        let got = s.select(&m, 0, 10_000).unwrap();
        for series in got {
            let (t, v) = series.samples[1];
            assert_eq!((t, v.to_bits()), (2_000, STALE_NAN_BITS));
            assert!(is_stale_nan(v));
        }
    }
}
