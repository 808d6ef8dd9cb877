//! The samples of every series of one metric name, for [`super::MemoryStorage`]: one
//! allocation holding each series in a contiguous region, plus per-series arrays (id,
//! region, newest sample, what the samples hold) kept in series order, so that a
//! selector reading every series of a name reads them front to back.

use std::collections::HashMap;

use super::{WindowHints, is_stale_nan};

/// Where one series' samples lie in its slab: `off..off + cap` is the series', the
/// first `len` samples used.
#[derive(Debug, Clone, Copy)]
struct Region {
    off: usize,
    len: usize,
    cap: usize,
}

/// A member's samples hold a staleness marker.
const STALE: u8 = 1;
/// A member's samples hold one smaller than the sample before it.
const DECREASE: u8 = 2;

/// `bit` where `set`, else none.
fn flag(set: bool, bit: u8) -> u8 {
    if set { bit } else { 0 }
}

/// [`STALE`] and [`DECREASE`] as they apply to `samples`.
fn flags_of(samples: &[(i64, f64)]) -> u8 {
    let stale = samples.iter().any(|&(_, v)| is_stale_nan(v));
    let decrease = samples.windows(2).any(|w| w[1].1 < w[0].1);
    flag(stale, STALE) | flag(decrease, DECREASE)
}

/// Samples of every series (member) of one metric name.
#[derive(Debug, Default, Clone)]
pub(super) struct Slab {
    samples: Vec<(i64, f64)>,
    /// Regions left behind by series that outgrew them, by size, for the next series
    /// that needs one of that size.
    free: HashMap<usize, Vec<usize>>,
    /// Per member, in ascending series id: its id, its region, its newest sample and
    /// what its samples hold ([`STALE`], [`DECREASE`]).
    pub(super) ids: Vec<usize>,
    regions: Vec<Region>,
    pub(super) newest: Vec<(i64, f64)>,
    flags: Vec<u8>,
}

impl Slab {
    /// Adds member `id` without samples; returns its index among the members.
    pub(super) fn push_member(&mut self, id: usize) -> usize {
        // No region yet; an empty one at the slab's end grows in place.
        self.regions.push(Region {
            off: self.samples.len(),
            len: 0,
            cap: 0,
        });
        // The oldest possible time: never within a lookback, so a member without
        // samples (none stays so: a series is created with its first sample) is
        // never answered from here.
        self.newest.push((i64::MIN, f64::NAN));
        self.flags.push(0);
        self.ids.push(id);
        self.ids.len() - 1
    }

    /// The samples of member `j`, ascending by time.
    #[inline]
    pub(super) fn samples(&self, j: usize) -> &[(i64, f64)] {
        let r = self.regions[j];
        &self.samples[r.off..r.off + r.len]
    }

    /// What is known of any window of member `j`'s samples.
    #[inline]
    pub(super) fn hints(&self, j: usize) -> WindowHints {
        let flags = self.flags[j];
        WindowHints {
            no_stale: flags & STALE == 0,
            no_decrease: flags & DECREASE == 0,
        }
    }

    /// Adds one sample to member `j`; a sample at an existing timestamp replaces the
    /// old one.
    pub(super) fn add(&mut self, j: usize, t_ms: i64, v: f64) {
        let r = self.regions[j];
        let region = self.samples(j);
        let at = match region.last() {
            Some(&(last, _)) if last >= t_ms => {
                let i = region.partition_point(|&(t, _)| t < t_ms);
                if region.get(i).is_some_and(|&(t, _)| t == t_ms) {
                    self.samples[r.off + i].1 = v;
                    if i + 1 == r.len {
                        self.newest[j] = (t_ms, v);
                    }
                    self.flags[j] = flags_of(self.samples(j));
                    return;
                }
                i
            }
            _ => r.len,
        };
        if r.len == r.cap {
            self.grow(j);
        }
        let r = &mut self.regions[j];
        self.samples
            .copy_within(r.off + at..r.off + r.len, r.off + at + 1);
        self.samples[r.off + at] = (t_ms, v);
        r.len += 1;
        let (off, len) = (r.off, r.len);
        self.newest[j] = self.samples[off + len - 1];
        self.flags[j] = if at + 1 == len {
            // Appended: only the new sample and the one before it are news.
            let prev = at.checked_sub(1).map(|i| self.samples[off + i].1);
            self.flags[j]
                | flag(is_stale_nan(v), STALE)
                | flag(prev.is_some_and(|p| v < p), DECREASE)
        } else {
            flags_of(self.samples(j))
        };
    }

    /// Doubles member `j`'s region: in place when it ends the slab (a series filled
    /// before the next one starts never moves), else into a free region of the new
    /// size or at the slab's end, leaving the old region for another series.
    fn grow(&mut self, j: usize) {
        let r = &mut self.regions[j];
        let cap = (r.cap * 2).max(4);
        if r.off + r.cap == self.samples.len() {
            self.samples.resize(r.off + cap, (0, 0.0));
        } else {
            let off = match self.free.get_mut(&cap).and_then(|f| f.pop()) {
                Some(off) => off,
                None => {
                    let off = self.samples.len();
                    self.samples.resize(off + cap, (0, 0.0));
                    off
                }
            };
            self.samples.copy_within(r.off..r.off + r.len, off);
            if r.cap > 0 {
                self.free.entry(r.cap).or_default().push(r.off);
            }
            r.off = off;
        }
        r.cap = cap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::stale_nan;

    /// Whatever order samples come in, the flags say at least what the samples hold
    /// (a hint may only ever be "may be" where the property could fail).
    #[test]
    fn hints_follow_appends_inserts_and_replacements() {
        let mut slab = Slab::default();
        let j = slab.push_member(0);
        for (t, v) in [(10, 1.0), (20, 2.0), (30, 2.0)] {
            slab.add(j, t, v);
        }
        assert_eq!(
            slab.hints(j),
            WindowHints {
                no_stale: true,
                no_decrease: true
            }
        );
        assert_eq!(slab.newest[j], (30, 2.0));
        // An older sample inserted in the middle: 2.0 → 1.5 at 25 is a decrease.
        slab.add(j, 25, 1.5);
        assert!(!slab.hints(j).no_decrease);
        // Replacing it removes the decrease again.
        slab.add(j, 25, 2.0);
        assert_eq!(
            slab.hints(j),
            WindowHints {
                no_stale: true,
                no_decrease: true
            }
        );
        slab.add(j, 40, stale_nan());
        assert_eq!(slab.newest[j].0, 40);
        assert!(!slab.hints(j).no_stale);
        slab.add(j, 40, 3.0);
        assert!(slab.hints(j).no_stale);
        // An appended reset.
        slab.add(j, 50, 0.0);
        assert!(!slab.hints(j).no_decrease);
        assert_eq!(
            slab.samples(j),
            &[
                (10, 1.0),
                (20, 2.0),
                (25, 2.0),
                (30, 2.0),
                (40, 3.0),
                (50, 0.0)
            ]
        );
    }
}
