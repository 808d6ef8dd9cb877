//! Time-based retention: drop whole chunks older than the retention period, drop
//! series left without samples (and their postings), refuse samples behind the cutoff,
//! and reclaim WAL space through a checkpoint when the log has grown enough.
//!
//! "Now" is a parameter so the collector's loop passes the wall clock and tests pass
//! whatever their synthetic timestamps need.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::checkpoint::CheckpointReport;
use super::series::MemSeries;
use super::{SPILL_MIN_CHUNKS, Store, StoreError, lock, read, size_of_data, write};

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Samples older than this are gone (to within one chunk) and refused from now on.
    pub cutoff_ms: i64,
    pub samples_dropped: usize,
    pub series_removed: usize,
    /// Set when the pass also wrote a checkpoint and freed WAL segments.
    pub checkpoint: Option<CheckpointReport>,
}

impl Store {
    /// Applies retention as of `now_ms` (milliseconds since the epoch), and moves
    /// chunks that left the in-memory window to chunk files. Run it every minute or
    /// so, and once after [`Store::open`].
    pub fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport, StoreError> {
        let cutoff_ms = now_ms.saturating_sub(self.opts.retention_ms);
        // Raise the floor first so no append lands behind the chunks being dropped.
        self.min_valid_t.fetch_max(cutoff_ms, Ordering::AcqRel);

        let series: Vec<Arc<MemSeries>> = read(&self.index).series().cloned().collect();
        let mut samples_dropped = 0;
        let mut emptied = Vec::new();
        for s in &series {
            let mut data = lock(&s.data);
            let before = size_of_data(&data);
            let dropped = data.drop_before(cutoff_ms);
            if dropped > 0 {
                samples_dropped += dropped;
                self.counters.track(before, size_of_data(&data));
            }
            if data.is_empty() {
                emptied.push(s.clone());
            }
        }

        let mut series_removed = 0;
        if !emptied.is_empty() {
            // Under the writer lock no append can revive a series between the check
            // and its removal.
            let mut w = lock(&self.writer);
            let still_empty: Vec<u64> = emptied
                .iter()
                .filter(|s| lock(&s.data).is_empty())
                .map(|s| s.id)
                .collect();
            series_removed = still_empty.len();
            write(&self.index).remove(&still_empty);
            drop(emptied);
            drop(series);
            // Strings only the pool still refers to belonged to removed series.
            w.strings.retain(|s| Arc::strong_count(s) > 1);
        }
        self.counters
            .retention_dropped
            .fetch_add(samples_dropped as u64, Ordering::Relaxed);
        self.counters
            .series_removed
            .fetch_add(series_removed as u64, Ordering::Relaxed);
        // Every run ending before the cutoff is gone from its series by now.
        self.chunk_files.remove_before(cutoff_ms)?;
        self.spill_pass(SPILL_MIN_CHUNKS);

        let checkpoint = if self.checkpoint_due() {
            Some(self.checkpoint()?)
        } else {
            None
        };
        if samples_dropped > 0 || series_removed > 0 {
            tracing::debug!(
                cutoff_ms,
                samples_dropped,
                series_removed,
                "retention applied"
            );
        }
        Ok(RetentionReport {
            cutoff_ms,
            samples_dropped,
            series_removed,
            checkpoint,
        })
    }

    /// True when the WAL outgrew both the configured floor and the last checkpoint, so a
    /// new checkpoint costs no more than what was appended since the last one.
    fn checkpoint_due(&self) -> bool {
        let wal_bytes = lock(&self.writer).wal.disk_bytes();
        let last = self.counters.checkpoint_bytes.load(Ordering::Relaxed);
        wal_bytes > self.opts.checkpoint_min_wal_bytes.max(last)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{Rejection, Store, StoreOptions};
    use vigil_rules::promql::{Labels, MatchOp, Matcher, Matchers};

    #[test]
    fn drops_old_chunks_series_and_postings() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut opts = StoreOptions::new(dir.path());
        opts.retention_ms = 3_600_000;
        opts.checkpoint_min_wal_bytes = 1;
        let store = Store::open(opts.clone())?;
        let old = Labels::from_pairs([("__name__", "gone"), ("node", "n1")]);
        let live = Labels::from_pairs([("__name__", "kept"), ("node", "n2")]);
        for i in 0..600i64 {
            store.append(&old, i * 1_000, 1.0)?;
            store.append(&live, i * 10_000, 2.0)?;
        }
        // now = 2 h: the cutoff is 1 h. `gone` ends at 599 s; `kept` runs to 5,990 s.
        let r = store.apply_retention(7_200_000)?;
        assert_eq!(r.cutoff_ms, 3_600_000);
        assert_eq!(r.series_removed, 1);
        // kept's chunks of 120 samples end at 1,190 s, 2,390 s, 3,590 s: three go.
        assert_eq!(r.samples_dropped, 600 + 360);
        assert!(
            r.checkpoint.is_some(),
            "a 1-byte threshold forces a checkpoint"
        );
        assert_eq!(
            store.label_values("node", &[], super::super::TimeRange::ALL),
            vec!["n2"]
        );
        let any = Matchers::new(vec![Matcher::new(MatchOp::Equal, "node", "n1")]);
        assert!(store.select(&any, i64::MIN, i64::MAX)?.is_empty());
        let err = store.append(&live, 3_599_999, 1.0).unwrap_err();
        assert!(matches!(
            err,
            crate::store::AppendError::Rejected {
                reason: Rejection::TooOld,
                ..
            }
        ));
        let stats = store.stats();
        assert_eq!(stats.head_samples, 240);
        assert_eq!(stats.series, 1);
        drop(store);

        // After reopening, the checkpoint alone carries what survived.
        let store = Store::open(opts)?;
        assert_eq!(store.stats().head_samples, 240);
        assert_eq!(store.stats().series, 1);
        Ok(())
    }
    #[test]
    fn series_recreated_after_removal_replays_into_one() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut opts = StoreOptions::new(dir.path());
        opts.retention_ms = 60_000;
        let l = Labels::from_pairs([("__name__", "flappy")]);
        {
            let store = Store::open(opts.clone())?;
            for i in 1..=120 {
                store.append(&l, i * 1_000, 1.0)?;
            }
            assert_eq!(store.apply_retention(300_000)?.series_removed, 1);
            // Same labels again: a new series id, a second series record in the WAL.
            store.append(&l, 290_000, 2.0)?;
            assert_eq!(store.stats().series_created, 2);
        }
        let store = Store::open(opts)?;
        let m = Matchers::new(vec![Matcher::new(MatchOp::Equal, "__name__", "flappy")]);
        let got = store.select(&m, i64::MIN, i64::MAX)?;
        assert_eq!(got.len(), 1, "both ids replay into one series");
        assert_eq!(got[0].samples.len(), 121);
        assert_eq!(got[0].samples[120], (290_000, 2.0));
        // What retention had dropped goes again on the first pass after open.
        store.apply_retention(300_000)?;
        assert_eq!(
            store.select(&m, i64::MIN, i64::MAX)?[0].samples,
            vec![(290_000, 2.0)]
        );
        Ok(())
    }
}
