//! PromQL evaluation with Prometheus 3 semantics for float samples.
//!
//! Parsing is delegated to `promql-parser`; this module evaluates the parsed [`Expr`]
//! against any [`Storage`] (the collector's store in production, [`MemoryStorage`] in
//! tests and benchmarks). Native histograms are out of scope: queries that need them
//! fail with [`EvalError::NativeHistogram`].
//!
//! # Layout
//! - `labels`: the [`Labels`] set and its builder.
//! - `storage`: the [`Storage`] trait's in-memory implementation with an inverted index;
//!   `slab`: its samples of one metric name; `search`: its searches over sorted
//!   samples and ids; `memory_hints`: the prefetches that keep its reads from waiting
//!   on memory one series at a time.
//! - `engine`: query context, selectors, subqueries, step loop.
//! - `binary`, `aggregate`, `functions`, `range_functions`, `histogram`: operators.
//! - [`promqltest`]: the runner for Prometheus's promqltest files.

mod aggregate;
mod binary;
mod engine;
mod functions;
mod histogram;
mod label_functions;
mod labels;
mod memory_hints;

pub mod promqltest;
mod range_functions;
mod search;
mod selectors;
mod slab;
mod storage;
#[cfg(test)]
mod tests;
mod xxhash;

pub use engine::{Engine, EngineOptions};
pub(crate) use label_functions::civil_from_days;
pub use labels::{Labels, LabelsBuilder, METRIC_NAME};
pub use promql_parser::label::{MatchOp, Matcher, Matchers};
pub use promql_parser::parser::Expr;
pub(crate) use selectors::metric_names_read;
pub use storage::MemoryStorage;

/// Bit pattern Prometheus writes when a series disappears; it must never be read as a value.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as an `f64`, for stores that write it.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// True only for the exact staleness marker, not for ordinary NaN values.
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One series with its samples, ascending by timestamp (milliseconds since the epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

/// One sample of an instant vector. `t_ms` is the evaluation time, as in Prometheus.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantSample {
    pub labels: Labels,
    pub t_ms: i64,
    pub v: f64,
}

/// The result of an instant query.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar {
        t_ms: i64,
        v: f64,
    },
    String {
        t_ms: i64,
        s: String,
    },
    Vector(Vec<InstantSample>),
    /// Only returned when the query itself is a range vector (`foo[5m]`).
    Matrix(Vec<Series>),
}

/// Non-fatal notes a query produced, worded as Prometheus words them
/// (`PromQL warning: ...`, `PromQL info: ...`), without position suffix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotations {
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
}

/// A value together with the annotations raised while computing it.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotated<T> {
    pub value: T,
    pub annotations: Annotations,
}

/// Receives one series' labels and samples from [`Storage::select_each`].
pub type SeriesVisitor<'f> = dyn FnMut(&Labels, &[(i64, f64)]) + 'f;

/// What a store knows of a window without reading all of it; `false` means "may be".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowHints {
    /// No sample of the window is a staleness marker.
    pub no_stale: bool,
    /// No sample of the window is smaller than the one before it (a counter without
    /// resets, or a constant).
    pub no_decrease: bool,
}

impl WindowHints {
    /// Whether the window's first and last samples tell all that `rate`, `increase`
    /// and `delta` need of it.
    pub fn edges_suffice(self) -> bool {
        self.no_stale && self.no_decrease
    }
}

/// Receives one series' labels, samples and hints from [`Storage::select_each_hinted`].
pub type HintedVisitor<'f> = dyn FnMut(&Labels, &[(i64, f64)], WindowHints) + 'f;

/// Receives one series' labels and newest sample from [`Storage::select_latest_each`].
pub type LatestVisitor<'f> = dyn FnMut(&Labels, i64, f64) + 'f;

/// A storage backend failed to answer a select.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(pub String);

/// Where the engine reads series from. Implementations return every series matching
/// the matchers that has at least one sample in `[start_ms, end_ms]`, with only the
/// samples in that range, ascending. Staleness markers must be returned as stored.
pub trait Storage {
    fn select(
        &self,
        matchers: &Matchers,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError>;

    /// Calls `f` with every matching series' samples in `[start_ms, end_ms]` (series
    /// without samples there are skipped). Range functions read windows this way
    /// without copying them; the default goes through `select`.
    fn select_each(
        &self,
        matchers: &Matchers,
        start_ms: i64,
        end_ms: i64,
        f: &mut SeriesVisitor<'_>,
    ) -> Result<(), StorageError> {
        for s in self.select(matchers, start_ms, end_ms)? {
            f(&s.labels, &s.samples);
        }
        Ok(())
    }

    /// [`Storage::select_each`] with what the store knows of each window. With
    /// `edges_only`, the caller reads no more than a window's first and last samples
    /// where the hints say those suffice ([`WindowHints::edges_suffice`]), so a store
    /// that fetches windows ahead of the caller can fetch just those: `increase`
    /// over a long window of a counter that never reset then costs two reads from
    /// memory, not the whole window. The default knows nothing.
    fn select_each_hinted(
        &self,
        matchers: &Matchers,
        start_ms: i64,
        end_ms: i64,
        edges_only: bool,
        f: &mut HintedVisitor<'_>,
    ) -> Result<(), StorageError> {
        let _ = edges_only;
        self.select_each(matchers, start_ms, end_ms, &mut |l, s| {
            f(l, s, WindowHints::default())
        })
    }

    /// The newest sample in `(t_ms - lookback_ms, t_ms]` of every matching series that
    /// has one, staleness markers included. This is all an instant selector needs;
    /// stores can override it to skip copying whole windows (the default does not).
    fn select_latest(
        &self,
        matchers: &Matchers,
        t_ms: i64,
        lookback_ms: i64,
    ) -> Result<Vec<(Labels, i64, f64)>, StorageError> {
        Ok(self
            .select(
                matchers,
                t_ms.saturating_sub(lookback_ms).saturating_add(1),
                t_ms,
            )?
            .into_iter()
            .filter_map(|s| s.samples.last().map(|&(t, v)| (s.labels, t, v)))
            .collect())
    }

    /// [`Storage::select_latest`] as a visitor, in the same order: a caller that keeps
    /// few of the samples (a selector under a comparison filter) then clones no label
    /// set for the rest. The default goes through `select_latest`.
    fn select_latest_each(
        &self,
        matchers: &Matchers,
        t_ms: i64,
        lookback_ms: i64,
        f: &mut LatestVisitor<'_>,
    ) -> Result<(), StorageError> {
        for (l, t, v) in self.select_latest(matchers, t_ms, lookback_ms)? {
            f(&l, t, v);
        }
        Ok(())
    }
}

/// Why a query failed. Messages match Prometheus's where tests compare them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The query needs native histograms, which this engine does not implement.
    #[error("native histograms are not supported: {0}")]
    NativeHistogram(String),
    /// Two output series ended up with the same label set.
    #[error("vector cannot contain metrics with the same labelset")]
    DuplicateLabelset,
    /// Any other runtime error, worded as Prometheus words it.
    #[error("{0}")]
    Query(String),
}

/// Why a query did not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("parse error: {0}")]
pub struct ParseError(pub String);

/// Parses a PromQL expression.
pub fn parse(expr: &str) -> Result<Expr, ParseError> {
    promql_parser::parser::parse(expr).map_err(ParseError)
}
