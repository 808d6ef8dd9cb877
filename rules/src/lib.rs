//! vigil-rules: everything the collector needs to decide that something is wrong, in
//! the vocabulary Prometheus users already write and test. Pure: no tokio, no network.
//!
//! # Layout
//! - [`promql`]: PromQL evaluation (instant and range queries) over a [`promql::Storage`]
//!   trait, and the runner for Prometheus's promqltest files.
//! - [`rulefile`]: Prometheus rule files plus Vigil's `recovery:` block, loaded and
//!   validated with errors that name file, group, rule and line (`rulefile_validate`
//!   holds the per-rule checks; `yaml` the positioned YAML tree both file formats use).
//! - [`template`]: Go text/template for alert labels and annotations.
//! - [`duration`]: Prometheus's duration notation.
//! - [`unittest`]: `vigil rules test` ([`test_files`]), promtool's rule unit tests.
//! - [`check`]: `vigil rules check` ([`check_files`]), promtool's `check rules`.
//! - [`alerting`]: the alert state machine of one alerting rule.
//! - [`group`]: a rule group evaluator ([`group::Group::eval`]): recording rules, alert
//!   series, staleness markers, `for` state restore. No I/O.

pub mod alerting;
pub mod check;
pub mod duration;
pub mod group;
pub mod promql;
pub mod rulefile;
mod rulefile_validate;
pub mod template;
pub mod unittest;
pub mod yaml;

pub use check::check_files;
pub use rulefile_validate::check_script_name;
pub use unittest::test_files;
