//! vigil-rules: everything the collector needs to decide that something is wrong, in
//! the vocabulary Prometheus users already write and test. Pure: no tokio, no network.
//!
//! # Layout
//! - [`promql`]: PromQL evaluation (instant and range queries) over a [`promql::Storage`]
//!   trait, and the runner for Prometheus's promqltest files.

pub mod promql;
