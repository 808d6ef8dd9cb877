//! `vigil`, the operator's command, as a library: the binary (`main.rs`) parses the
//! command line and calls in here; tests and benchmarks use the same code.

pub mod actions;
pub mod alerts;
pub mod client;
pub mod dash;
pub mod logs;
pub mod matcher;
pub mod render;
pub mod silence;
pub mod up;
