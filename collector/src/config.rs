//! `collector.toml` and its defaults.
