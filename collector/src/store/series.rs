//! One in-memory series: its closed chunks and the open head chunk, with Prometheus's
//! rules for where a new sample may go. Appends at the end are the fast path; a sample
//! inside the out-of-order window re-encodes the one chunk it belongs in, which is cheap
//! at 120 samples a chunk and rare in practice.

use std::sync::Mutex;

use vigil_rules::promql::Labels;

use super::chunk::{Chunk, ChunkEncoder, SAMPLES_PER_CHUNK};
use super::spill::{ChunkFiles, FileWriter, MAX_RUN_CHUNKS, Run};
use super::wal::WalError;

/// Stable identity of a series for the life of the data directory; the WAL refers to
/// series by it. Never reused, so old WAL records cannot attach to a newer series.
pub type SeriesId = u64;

/// A series as the head holds it. The labels never change; the data sits behind its own
/// lock so queries on one series do not wait for appends to another.
#[derive(Debug)]
pub(crate) struct MemSeries {
    pub(crate) id: SeriesId,
    pub(crate) labels: Labels,
    pub(crate) data: Mutex<SeriesData>,
}

impl MemSeries {
    pub(crate) fn new(id: SeriesId, labels: Labels) -> Self {
        Self {
            id,
            labels,
            data: Mutex::new(SeriesData::default()),
        }
    }
}

/// What a sample does to a series, decided before it is written to the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Newer than anything in the series.
    Append,
    /// Older than the newest sample but inside the out-of-order window.
    Insert,
    /// Same timestamp and the same value bits as the newest sample: nothing to do.
    Duplicate,
    /// Same timestamp as the newest sample with a different value.
    Conflict,
    /// Older than the newest sample by more than the out-of-order window.
    OutOfOrder,
}

/// What applying a sample did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    Stored,
    Duplicate,
    Conflict,
}

/// Chunks of one series, oldest first, never overlapping in time: runs spilled to
/// chunk files, then closed chunks in memory, then the open chunk.
#[derive(Debug, Default)]
pub(crate) struct SeriesData {
    runs: Vec<Run>,
    chunks: Vec<Chunk>,
    head: ChunkEncoder,
    /// Compressed bytes of the closed chunks in memory.
    closed_bytes: usize,
    /// Samples in runs and closed chunks.
    closed_samples: usize,
}

impl SeriesData {
    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.chunks.is_empty() && self.head.is_empty()
    }

    /// Bytes of this series' runs in chunk files.
    pub(crate) fn spilled_bytes(&self) -> usize {
        self.runs.iter().map(Run::bytes).sum()
    }

    /// Newest timestamp of the closed chunks, spilled or not.
    fn closed_max_t(&self) -> Option<i64> {
        self.chunks
            .last()
            .map(|c| c.max_t)
            .or_else(|| self.runs.last().map(Run::max_t))
    }

    /// Moves the closed chunks that end before `before_ms` to a chunk file, once at
    /// least `min_chunks` of them have gathered (fewer, larger runs cost less memory
    /// and fewer reads). Returns the bytes spilled. On a write error the chunks stay
    /// in memory.
    pub(crate) fn spill(
        &mut self,
        files: &ChunkFiles,
        w: &mut FileWriter,
        before_ms: i64,
        min_chunks: usize,
    ) -> Result<usize, WalError> {
        let eligible = self.chunks.partition_point(|c| c.max_t < before_ms);
        if eligible == 0 || eligible < min_chunks {
            return Ok(0);
        }
        let mut spilled = 0;
        let mut done = 0;
        while done < eligible {
            let end = (done + MAX_RUN_CHUNKS).min(eligible);
            let Some(run) = files.write_run(w, &self.chunks[done..end])? else {
                break;
            };
            self.runs.push(run);
            spilled += self.chunks[done..end]
                .iter()
                .map(|c| c.data.len())
                .sum::<usize>();
            done = end;
        }
        self.chunks.drain(..done);
        self.closed_bytes -= spilled;
        self.chunks.shrink_to_fit();
        self.runs.shrink_to_fit();
        Ok(spilled)
    }

    /// Brings every run from the one `t` falls in onwards back into memory, so an
    /// out-of-order sample older than the in-memory window can be merged. Rare: the
    /// window is normally wider than the out-of-order window.
    fn unspill_from(&mut self, files: &ChunkFiles, t: i64) -> Result<(), WalError> {
        let from = self
            .runs
            .partition_point(|r| r.min_t <= t)
            .saturating_sub(1);
        let mut back = Vec::new();
        for r in &self.runs[from..] {
            back.extend(files.read_run(r)?);
        }
        self.closed_bytes += back.iter().map(|c| c.data.len()).sum::<usize>();
        self.runs.truncate(from);
        back.append(&mut self.chunks);
        self.chunks = back;
        Ok(())
    }

    /// Newest timestamp and value bits.
    pub(crate) fn last(&self) -> Option<(i64, u64)> {
        if !self.head.is_empty() {
            return Some((self.head.max_t(), self.head.last_bits()));
        }
        // Runs only ever hold chunks older than an in-memory one (see `spill`).
        let c = self.chunks.last()?;
        c.iter().last().map(|(t, v)| (t, v.to_bits()))
    }

    #[cfg(test)]
    pub(crate) fn min_t(&self) -> Option<i64> {
        match (self.runs.first(), self.chunks.first()) {
            (Some(r), _) => Some(r.min_t),
            (None, Some(c)) => Some(c.min_t),
            (None, None) if !self.head.is_empty() => Some(self.head.min_t()),
            (None, None) => None,
        }
    }

    /// Compressed bytes held in memory (closed chunks plus the open chunk's bit
    /// stream).
    pub(crate) fn encoded_bytes(&self) -> usize {
        self.closed_bytes + self.head.bytes().len()
    }

    pub(crate) fn sample_count(&self) -> usize {
        self.closed_samples + usize::from(self.head.count())
    }

    /// Decides where `(t, v)` goes given the newest sample `last` (which the caller may
    /// have advanced with samples staged earlier in the same batch).
    pub(crate) fn judge(last: Option<(i64, u64)>, t: i64, v: f64, ooo_window_ms: i64) -> Verdict {
        let Some((max_t, max_bits)) = last else {
            return Verdict::Append;
        };
        if t > max_t {
            Verdict::Append
        } else if t == max_t {
            if v.to_bits() == max_bits {
                Verdict::Duplicate
            } else {
                Verdict::Conflict
            }
        } else if max_t.saturating_sub(t) <= ooo_window_ms {
            Verdict::Insert
        } else {
            Verdict::OutOfOrder
        }
    }

    /// Stores a sample wherever it belongs. Deterministic in the series' contents, so
    /// WAL replay rebuilds exactly what the live head held.
    pub(crate) fn apply(&mut self, files: &ChunkFiles, t: i64, v: f64) -> Applied {
        match self.last() {
            Some((max_t, _)) if t <= max_t => self.insert(files, t, v),
            _ => {
                self.push(t, v);
                Applied::Stored
            }
        }
    }

    fn push(&mut self, t: i64, v: f64) {
        if self.head.is_full() {
            let closed = self.head.close();
            self.closed_bytes += closed.data.len();
            self.closed_samples += usize::from(closed.count);
            self.chunks.push(closed);
        }
        self.head.append(t, v);
    }

    /// The out-of-order path: decode the chunk `t` falls in, merge, re-encode.
    fn insert(&mut self, files: &ChunkFiles, t: i64, v: f64) -> Applied {
        // Everything after the last closed chunk belongs to the head.
        let in_head = !self.head.is_empty() && self.closed_max_t().is_none_or(|max_t| t > max_t);
        if !in_head
            && !self.runs.is_empty()
            && self.chunks.first().is_none_or(|c| t < c.min_t)
            && let Err(e) = self.unspill_from(files, t)
        {
            // The sample is in the WAL and comes back on the next open; until then
            // the head cannot hold it without its neighbours.
            tracing::error!(error = %e, t, "store: cannot read back spilled chunks for an out-of-order sample");
            return Applied::Stored;
        }
        let mut samples: Vec<(i64, f64)> = if in_head {
            self.head.iter().collect()
        } else {
            match self.chunk_for(t) {
                Some(i) => self.chunks[i].iter().collect(),
                // No chunks and an empty head: nothing to be out of order with.
                None => {
                    self.push(t, v);
                    return Applied::Stored;
                }
            }
        };
        let pos = samples.partition_point(|&(st, _)| st < t);
        if let Some(&(st, sv)) = samples.get(pos)
            && st == t
        {
            return if sv.to_bits() == v.to_bits() {
                Applied::Duplicate
            } else {
                Applied::Conflict
            };
        }
        samples.insert(pos, (t, v));
        if in_head {
            self.replace_head(&samples);
        } else if let Some(i) = self.chunk_for(t) {
            self.replace_chunk(i, &samples);
        }
        Applied::Stored
    }

    /// Index of the closed chunk a timestamp before the head belongs in: the last one
    /// starting at or before it, or the first one.
    fn chunk_for(&self, t: i64) -> Option<usize> {
        if self.chunks.is_empty() {
            return None;
        }
        let after = self.chunks.partition_point(|c| c.min_t <= t);
        Some(after.saturating_sub(1))
    }

    fn replace_head(&mut self, samples: &[(i64, f64)]) {
        let split = samples.len().saturating_sub(usize::from(SAMPLES_PER_CHUNK));
        let (older, newest) = samples.split_at(split);
        let closed = encode_pieces(older);
        for c in &closed {
            self.closed_bytes += c.data.len();
            self.closed_samples += usize::from(c.count);
        }
        self.chunks.extend(closed);
        self.head = ChunkEncoder::from_samples(newest);
    }

    fn replace_chunk(&mut self, i: usize, samples: &[(i64, f64)]) {
        let old = &self.chunks[i];
        self.closed_bytes -= old.data.len();
        self.closed_samples -= usize::from(old.count);
        let pieces = encode_pieces(samples);
        for c in &pieces {
            self.closed_bytes += c.data.len();
            self.closed_samples += usize::from(c.count);
        }
        self.chunks.splice(i..=i, pieces);
    }

    /// Appends the samples in `[start_ms, end_ms]` to `out`, ascending.
    pub(crate) fn read_range(
        &self,
        files: &ChunkFiles,
        start_ms: i64,
        end_ms: i64,
        out: &mut Vec<(i64, f64)>,
    ) -> Result<(), WalError> {
        let first_run = self.runs.partition_point(|r| r.max_t() < start_ms);
        for r in &self.runs[first_run..] {
            if r.min_t > end_ms {
                return Ok(());
            }
            for c in files.read_run(r)? {
                extend_from_chunk(&c, start_ms, end_ms, out);
            }
        }
        self.read_memory_range(start_ms, end_ms, out);
        Ok(())
    }

    fn read_memory_range(&self, start_ms: i64, end_ms: i64, out: &mut Vec<(i64, f64)>) {
        let first = self.chunks.partition_point(|c| c.max_t < start_ms);
        let upper: usize = self.chunks[first..]
            .iter()
            .take_while(|c| c.min_t <= end_ms)
            .map(|c| usize::from(c.count))
            .sum::<usize>()
            + usize::from(self.head.count());
        out.reserve(upper);
        for c in &self.chunks[first..] {
            if c.min_t > end_ms {
                return;
            }
            extend_from_chunk(c, start_ms, end_ms, out);
        }
        if !self.head.is_empty() && self.head.min_t() <= end_ms && self.head.max_t() >= start_ms {
            out.extend(
                self.head
                    .iter()
                    .filter(|&(t, _)| t >= start_ms && t <= end_ms),
            );
        }
    }

    /// The newest sample at or before `t_ms` if it is newer than `after_ms`: what an
    /// instant selector needs, found by decoding one chunk instead of the window.
    pub(crate) fn latest_at(
        &self,
        files: &ChunkFiles,
        t_ms: i64,
        after_ms: i64,
    ) -> Result<Option<(i64, f64)>, WalError> {
        let before = |c: &Chunk| c.iter().take_while(|&(t, _)| t <= t_ms).last();
        let newest = if !self.head.is_empty() && self.head.min_t() <= t_ms {
            self.head.iter().take_while(|&(t, _)| t <= t_ms).last()
        } else {
            let i = self.chunks.partition_point(|c| c.min_t <= t_ms);
            match i.checked_sub(1) {
                Some(i) => before(&self.chunks[i]),
                None => {
                    let r = self.runs.partition_point(|r| r.min_t <= t_ms);
                    match r.checked_sub(1) {
                        Some(r) if self.runs[r].max_t() > after_ms => {
                            let chunks = files.read_run(&self.runs[r])?;
                            let i = chunks.partition_point(|c| c.min_t <= t_ms);
                            i.checked_sub(1).and_then(|i| before(&chunks[i]))
                        }
                        _ => None,
                    }
                }
            }
        };
        Ok(newest.filter(|&(t, _)| t > after_ms))
    }

    /// True when at least one sample lies in `[start_ms, end_ms]`; decodes at most the
    /// chunks that straddle an edge of the range.
    pub(crate) fn has_samples_in(
        &self,
        files: &ChunkFiles,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<bool, WalError> {
        let inside = |min_t: i64, max_t: i64| min_t >= start_ms && max_t <= end_ms;
        let first_run = self.runs.partition_point(|r| r.max_t() < start_ms);
        for r in &self.runs[first_run..] {
            if r.min_t > end_ms {
                break;
            }
            if inside(r.min_t, r.max_t()) {
                return Ok(true);
            }
            let chunks = files.read_run(r)?;
            if chunks
                .iter()
                .any(|c| c.iter().any(|(t, _)| t >= start_ms && t <= end_ms))
            {
                return Ok(true);
            }
        }
        Ok(self.memory_has_samples_in(start_ms, end_ms))
    }

    fn memory_has_samples_in(&self, start_ms: i64, end_ms: i64) -> bool {
        let overlaps = |min_t: i64, max_t: i64| min_t <= end_ms && max_t >= start_ms;
        let inside = |min_t: i64, max_t: i64| min_t >= start_ms && max_t <= end_ms;
        let first = self.chunks.partition_point(|c| c.max_t < start_ms);
        for c in &self.chunks[first..] {
            if c.min_t > end_ms {
                break;
            }
            if inside(c.min_t, c.max_t) || c.iter().any(|(t, _)| t >= start_ms && t <= end_ms) {
                return true;
            }
        }
        let h = &self.head;
        !h.is_empty()
            && overlaps(h.min_t(), h.max_t())
            && (inside(h.min_t(), h.max_t()) || h.iter().any(|(t, _)| t >= start_ms && t <= end_ms))
    }

    /// Drops whole chunks whose newest sample is older than `cutoff_ms`; returns the
    /// number of samples dropped. A chunk straddling the cutoff stays whole, as in
    /// Prometheus, so retention is exact to within one chunk.
    pub(crate) fn drop_before(&mut self, cutoff_ms: i64) -> usize {
        let mut dropped = 0;
        let keep_runs = self.runs.partition_point(|r| r.max_t() < cutoff_ms);
        for r in self.runs.drain(..keep_runs) {
            self.closed_samples -= r.samples();
            dropped += r.samples();
        }
        if keep_runs > 0 {
            self.runs.shrink_to_fit();
        }
        if !self.runs.is_empty() {
            return dropped;
        }
        let keep_from = self.chunks.partition_point(|c| c.max_t < cutoff_ms);
        for c in self.chunks.drain(..keep_from) {
            self.closed_bytes -= c.data.len();
            self.closed_samples -= usize::from(c.count);
            dropped += usize::from(c.count);
        }
        if self.chunks.is_empty() && !self.head.is_empty() && self.head.max_t() < cutoff_ms {
            dropped += usize::from(self.head.count());
            self.head = ChunkEncoder::default();
        }
        dropped
    }

    /// Spilled chunks read back, for checkpoints; then [`SeriesData::parts`].
    pub(crate) fn spilled_chunks(&self, files: &ChunkFiles) -> Result<Vec<Chunk>, WalError> {
        let mut out = Vec::new();
        for r in &self.runs {
            out.extend(files.read_run(r)?);
        }
        Ok(out)
    }

    /// Closed chunks in memory and the open chunk, for checkpoints.
    pub(crate) fn parts(&self) -> (&[Chunk], &ChunkEncoder) {
        (&self.chunks, &self.head)
    }

    /// Rebuilds a series from a checkpoint: closed chunks as they were, the open chunk
    /// from its samples.
    pub(crate) fn from_parts(chunks: Vec<Chunk>, open: &[(i64, f64)]) -> Self {
        let closed_bytes = chunks.iter().map(|c| c.data.len()).sum();
        let closed_samples = chunks.iter().map(|c| usize::from(c.count)).sum();
        Self {
            runs: Vec::new(),
            chunks,
            head: ChunkEncoder::from_samples(open),
            closed_bytes,
            closed_samples,
        }
    }

    /// Heap bytes this series' samples cost, including chunk bookkeeping.
    pub(crate) fn mem_bytes(&self) -> usize {
        self.chunks.iter().map(Chunk::mem_bytes).sum::<usize>()
            + (self.chunks.capacity() - self.chunks.len()) * std::mem::size_of::<Chunk>()
            + self.runs.capacity() * std::mem::size_of::<Run>()
            + self.head.mem_bytes()
    }
}

fn extend_from_chunk(c: &Chunk, start_ms: i64, end_ms: i64, out: &mut Vec<(i64, f64)>) {
    if c.min_t >= start_ms && c.max_t <= end_ms {
        out.extend(c.iter());
    } else if c.min_t <= end_ms && c.max_t >= start_ms {
        out.extend(c.iter().filter(|&(t, _)| t >= start_ms && t <= end_ms));
    }
}

/// Encodes ascending samples into chunks of at most [`SAMPLES_PER_CHUNK`].
fn encode_pieces(samples: &[(i64, f64)]) -> Vec<Chunk> {
    samples
        .chunks(usize::from(SAMPLES_PER_CHUNK))
        .map(|piece| ChunkEncoder::from_samples(piece).finish())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::Rng;

    fn files() -> (tempfile::TempDir, ChunkFiles) {
        let dir = tempfile::tempdir().unwrap();
        let files = ChunkFiles::open(dir.path().join("chunks")).unwrap();
        (dir, files)
    }

    fn all(d: &SeriesData, f: &ChunkFiles) -> Vec<(i64, u64)> {
        let mut out = Vec::new();
        d.read_range(f, i64::MIN, i64::MAX, &mut out).unwrap();
        out.into_iter().map(|(t, v)| (t, v.to_bits())).collect()
    }

    #[test]
    fn judge_follows_prometheus() {
        let last = Some((10_000, 1.0f64.to_bits()));
        assert_eq!(SeriesData::judge(None, 5, 0.0, 0), Verdict::Append);
        assert_eq!(SeriesData::judge(last, 10_001, 0.0, 0), Verdict::Append);
        assert_eq!(SeriesData::judge(last, 10_000, 1.0, 0), Verdict::Duplicate);
        assert_eq!(SeriesData::judge(last, 10_000, 2.0, 0), Verdict::Conflict);
        assert_eq!(SeriesData::judge(last, 9_999, 2.0, 0), Verdict::OutOfOrder);
        assert_eq!(SeriesData::judge(last, 9_000, 2.0, 1_000), Verdict::Insert);
        assert_eq!(
            SeriesData::judge(last, 8_999, 2.0, 1_000),
            Verdict::OutOfOrder
        );
    }

    #[test]
    fn random_inserts_match_a_sorted_reference() {
        let mut rng = Rng::new(7);
        let (_dir, f) = files();
        for case in 0..30 {
            let mut d = SeriesData::default();
            let mut reference = std::collections::BTreeMap::new();
            for _ in 0..(rng.below(900) + 1) {
                let t = rng.below(2_000) as i64 * 10;
                let v = rng.below(50) as f64;
                let want = match reference.get(&t) {
                    None => Applied::Stored,
                    Some(&old) if old == v => Applied::Duplicate,
                    Some(_) => Applied::Conflict,
                };
                assert_eq!(d.apply(&f, t, v), want, "t={t}");
                reference.entry(t).or_insert(v);
                // Half the cases spill now and then, so inserts land in spilled
                // chunks too and have to bring them back.
                if case % 2 == 1 && rng.below(50) == 0 {
                    let before = rng.below(20_000) as i64;
                    d.spill(&f, &mut f.writer(), before, 1).unwrap();
                }
            }
            let want: Vec<(i64, u64)> = reference.iter().map(|(&t, v)| (t, v.to_bits())).collect();
            assert_eq!(all(&d, &f), want);
            assert_eq!(d.sample_count(), want.len());
            let chunk_total: usize = d.chunks.iter().map(|c| c.data.len()).sum();
            assert_eq!(d.closed_bytes, chunk_total);
            for w in d.chunks.windows(2) {
                assert!(w[0].max_t < w[1].min_t, "chunks overlap");
            }
        }
    }

    #[test]
    fn ranges_and_retention() {
        let (_dir, f) = files();
        for spill in [false, true] {
            let mut d = SeriesData::default();
            for i in 0..500 {
                d.apply(&f, i * 1_000, i as f64);
            }
            if spill {
                // The first two chunks go to a file as one run; two and the head stay.
                assert!(d.spill(&f, &mut f.writer(), 240_000, 1).unwrap() > 0);
                assert_eq!((d.runs.len(), d.chunks.len()), (1, 2));
            }
            ranges_and_retention_on(d, &f);
        }
    }

    fn ranges_and_retention_on(mut d: SeriesData, f: &ChunkFiles) {
        let mut out = Vec::new();
        d.read_range(f, 10_500, 12_000, &mut out).unwrap();
        assert_eq!(out, vec![(11_000, 11.0), (12_000, 12.0)]);
        let has = |d: &SeriesData, a, b| d.has_samples_in(f, a, b).unwrap();
        assert!(has(&d, 499_000, 600_000));
        assert!(!has(&d, 10_100, 10_900));
        assert!(has(&d, 10_100, 11_000));
        assert!(!has(&d, 500_000, 600_000));
        assert_eq!(d.latest_at(f, 10_500, 0).unwrap(), Some((10_000, 10.0)));
        assert_eq!(
            d.latest_at(f, 250_000, 249_000).unwrap(),
            Some((250_000, 250.0))
        );
        assert_eq!(d.latest_at(f, 10_500, 10_000).unwrap(), None);
        assert_eq!(d.sample_count(), 500);
        // Chunks hold 120 samples: [0, 119_000] and [120_000, 239_000] go whole.
        assert_eq!(d.drop_before(239_500), 240);
        assert_eq!(d.min_t(), Some(240_000));
        assert_eq!(d.drop_before(1_000_000), 260);
        assert!(d.is_empty());
        assert_eq!(d.encoded_bytes(), 0);
    }
}
