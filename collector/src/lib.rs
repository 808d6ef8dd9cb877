//! vigil-collector: receives what the agents send, keeps it queryable, and (in later
//! pieces) evaluates rules, notifies and serves the Prometheus HTTP API.
//!
//! # Layout
//! - [`store`]: the metric store — in-memory head of Gorilla-compressed chunks, label
//!   index, write-ahead log with checkpoints, retention — and its implementation of
//!   the PromQL engine's `Storage` trait.

pub mod api;
pub mod config;
pub mod ingest;
pub mod registry;
pub mod store;

pub use store::{Store, StoreOptions};
