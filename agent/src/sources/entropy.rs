//! node_exporter's `entropy` collector: the kernel's random pool, from
//! /proc/sys/kernel/random.

use std::path::PathBuf;

use vigil_proto::MetricFamily;

use super::parse::{ParseError, parse_u64};
use super::{HostPaths, Source, SourceError, read_file};

/// A single-number file such as `entropy_avail`.
pub fn parse_single(text: &str, what: &str) -> Result<u64, ParseError> {
    parse_u64(text.trim(), 1, what)
}

pub struct EntropySource {
    avail: PathBuf,
    pool: PathBuf,
}

impl EntropySource {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            avail: paths.proc("sys/kernel/random/entropy_avail"),
            pool: paths.proc("sys/kernel/random/poolsize"),
        }
    }
}

impl Source for EntropySource {
    fn name(&self) -> &'static str {
        "entropy"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let avail = parse_single(&read_file(&self.avail)?, "entropy_avail")
            .map_err(|e| e.at(&self.avail))?;
        out.push(
            MetricFamily::gauge("node_entropy_available_bits", "Bits of available entropy.")
                .with(&[], avail as f64),
        );
        let pool =
            parse_single(&read_file(&self.pool)?, "poolsize").map_err(|e| e.at(&self.pool))?;
        out.push(
            MetricFamily::gauge("node_entropy_pool_size_bits", "Bits of entropy pool.")
                .with(&[], pool as f64),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_entropy_files() {
        let avail = parse_single(
            include_str!("../../testdata/proc/sys/kernel/random/entropy_avail"),
            "a",
        );
        assert_eq!(avail.unwrap(), 256);
        let pool = parse_single(
            include_str!("../../testdata/proc/sys/kernel/random/poolsize"),
            "p",
        );
        assert_eq!(pool.unwrap(), 256);
        assert!(parse_single("x\n", "a").is_err());
    }
}
