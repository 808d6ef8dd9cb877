//! Searches over the sorted slices [`super::MemoryStorage`] keeps: a series' samples
//! by time, and posting lists by series id. Each starts from a guess that is usually
//! right, because a selector reads many series that are alike, one after another.

/// Index of the first id `>= x` in ascending `ids`, by galloping from the start
/// (1, 2, 4, ... places on) and then a binary search: O(log d) for an answer `d`
/// places in, so intersecting a short posting list with a long one costs little more
/// than the short one's length.
pub(super) fn lower_bound_from_start(ids: &[usize], x: usize) -> usize {
    let mut hi = 1;
    while hi < ids.len() && ids[hi] < x {
        hi *= 2;
    }
    // ids[hi / 2] < x whenever the loop ran; the answer is in (hi / 2, hi].
    let lo = hi / 2;
    let end = (hi + 1).min(ids.len());
    lo + ids[lo..end].partition_point(|&v| v < x)
}

/// Index of the first sample with timestamp `>= t` (or `> t` when `after`). Samples
/// are evenly spaced in practice, so the first probe is where `t` would fall if the
/// last step were repeated all the way back; a short gallop from there corrects the
/// guess. Against a store larger than the
/// caches every probe is a cache miss that depends on the one before, so a good first
/// guess (two or three misses instead of a dozen) is what makes range reads cheap.
pub(super) fn tail_partition(samples: &[(i64, f64)], t: i64, after: bool) -> usize {
    let before = |ts: i64| if after { ts <= t } else { ts < t };
    let n = samples.len();
    if n == 0 || before(samples[n - 1].0) {
        return n;
    }
    if n == 1 {
        return 0;
    }
    // The answer is in [lo, hi]: samples[..lo] are before `t`, samples[hi..] are not.
    // The oldest sample is not read unless the search gets there: it is usually a
    // cache line (and a page) the caller never needs.
    let (mut lo, mut hi) = (0, n - 1);
    let last = samples[n - 1].0;
    let step_ms = last.saturating_sub(samples[n - 2].0).max(1);
    let back = usize::try_from(last.saturating_sub(t) / step_ms).unwrap_or(usize::MAX);
    let g = (n - 1).saturating_sub(back);
    let mut step = 1;
    if before(samples[g].0) {
        lo = g + 1;
        while lo + step - 1 < hi {
            let p = lo + step - 1;
            if !before(samples[p].0) {
                hi = p;
                break;
            }
            lo = p + 1;
            step *= 2;
        }
    } else {
        hi = g;
        while hi >= lo + step {
            let p = hi - step;
            if before(samples[p].0) {
                lo = p + 1;
                break;
            }
            hi = p;
            step *= 2;
        }
    }
    lo + samples[lo..hi].partition_point(|&(ts, _)| before(ts))
}

/// `[lo, hi)`: the samples with `start_ms <= t <= end_ms`. The series of one selector
/// are sampled alike, so the window usually lies where the previous series' did
/// (`skip` samples from the newest one, `len` long); two comparisons at each edge
/// confirm that guess, and the search (with its divisions) runs only when it fails.
pub(super) fn window_bounds(
    samples: &[(i64, f64)],
    start_ms: i64,
    end_ms: i64,
    skip: usize,
    len: usize,
) -> (usize, usize) {
    let n = samples.len();
    let before_end = |i: usize| samples[i].0 <= end_ms;
    let before_start = |i: usize| samples[i].0 < start_ms;
    let hi = match n.checked_sub(skip) {
        Some(h) if (h == n || !before_end(h)) && (h == 0 || before_end(h - 1)) => h,
        _ => tail_partition(samples, end_ms, true),
    };
    let lo = match hi.checked_sub(len) {
        Some(l) if (l == hi || !before_start(l)) && (l == 0 || before_start(l - 1)) => l,
        _ => tail_partition(&samples[..hi], start_ms, false),
    };
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_partition_matches_partition_point() {
        // Even spacing (the first guess is right), uneven spacing with a long gap and
        // bursts (the guess is far off), and the smallest series.
        let even: Vec<i64> = (0..37).map(|i| i * 10).collect();
        let uneven: Vec<i64> = (0..40)
            .map(|i: i64| if i < 30 { i } else { 200 + i * i })
            .collect();
        let squares: Vec<i64> = (0..25).map(|i: i64| i * i - 30).collect();
        for ts in [even, uneven, squares, vec![7], vec![3, 4]] {
            let samples: Vec<(i64, f64)> = ts.iter().map(|&t| (t, 0.0)).collect();
            for t in -40..1900 {
                for after in [false, true] {
                    let want =
                        samples.partition_point(|&(ts, _)| if after { ts <= t } else { ts < t });
                    assert_eq!(
                        tail_partition(&samples, t, after),
                        want,
                        "t={t} after={after} samples={ts:?}"
                    );
                }
            }
        }
        assert_eq!(tail_partition(&[], 5, true), 0);
    }

    #[test]
    fn window_bounds_matches_partition_point_whatever_the_guess() {
        // Right guesses, wrong guesses in both directions, and guesses past either end.
        let even: Vec<(i64, f64)> = (0..61).map(|i| (i * 15, 0.0)).collect();
        let uneven: Vec<(i64, f64)> = (0..30).map(|i: i64| (i * i, 0.0)).collect();
        for samples in [even, uneven, vec![(5, 0.0)], vec![]] {
            for (start, end) in [(0, 900), (601, 900), (300, 599), (-50, -10), (950, 990)] {
                let want_hi = samples.partition_point(|&(t, _)| t <= end);
                let want_lo = samples[..want_hi].partition_point(|&(t, _)| t < start);
                for skip in 0..samples.len() + 3 {
                    for len in 0..samples.len() + 3 {
                        assert_eq!(
                            window_bounds(&samples, start, end, skip, len),
                            (want_lo, want_hi),
                            "[{start}, {end}] skip={skip} len={len} n={}",
                            samples.len()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn lower_bound_from_start_matches_partition_point() {
        for ids in [
            vec![],
            vec![4],
            vec![1, 3],
            (0..50).map(|i| i * 3).collect(),
        ] {
            for x in 0..160 {
                let want = ids.partition_point(|&v| v < x);
                assert_eq!(lower_bound_from_start(&ids, x), want, "x={x} ids={ids:?}");
            }
        }
    }
}
