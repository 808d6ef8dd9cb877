//! Hints to the CPU about what [`super::MemoryStorage`] reads next. They change no
//! result, only how long the reads wait for memory: against a store much larger than
//! the caches, a rule that reads every series of a metric is otherwise a long chain of
//! cache misses, waited for one series after another.

/// Asks the CPU to start loading the cache line that holds `x`, so that a later read
/// finds it cached instead of waiting for memory.
#[inline(always)]
pub(super) fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults and writes nothing, and the
    // address comes from a live reference anyway.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>((x as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// [`prefetch`] for every cache line of `samples` (a 64-byte line holds four).
#[inline(always)]
pub(super) fn prefetch_all(samples: &[(i64, f64)]) {
    for x in samples.iter().step_by(4) {
        prefetch(x);
    }
    if let Some(x) = samples.last() {
        prefetch(x);
    }
}
