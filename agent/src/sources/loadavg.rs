//! node_exporter's `loadavg` collector: /proc/loadavg.

use std::path::PathBuf;

use vigil_proto::MetricFamily;

use super::parse::{ParseError, parse_f64};
use super::{HostPaths, Source, SourceError, read_file};

/// The 1, 5 and 15 minute load averages.
pub fn parse_loadavg(text: &str) -> Result<[f64; 3], ParseError> {
    let mut fields = text.split_ascii_whitespace();
    let mut loads = [0.0; 3];
    for (slot, what) in loads.iter_mut().zip(["load1", "load5", "load15"]) {
        let field = fields
            .next()
            .ok_or_else(|| ParseError::new(1, format!("{what} missing")))?;
        *slot = parse_f64(field, 1, what)?;
    }
    Ok(loads)
}

pub struct LoadavgSource {
    path: PathBuf,
}

impl LoadavgSource {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            path: paths.proc("loadavg"),
        }
    }
}

impl Source for LoadavgSource {
    fn name(&self) -> &'static str {
        "loadavg"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let text = read_file(&self.path)?;
        let [l1, l5, l15] = parse_loadavg(&text).map_err(|e| e.at(&self.path))?;
        out.push(MetricFamily::gauge("node_load1", "1m load average.").with(&[], l1));
        out.push(MetricFamily::gauge("node_load5", "5m load average.").with(&[], l5));
        out.push(MetricFamily::gauge("node_load15", "15m load average.").with(&[], l15));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_captured_loadavg() {
        let loads = parse_loadavg(include_str!("../../testdata/proc/loadavg")).unwrap();
        assert_eq!(loads, [1.27, 0.38, 0.13]);
    }

    #[test]
    fn short_or_bad_file_is_an_error() {
        assert!(parse_loadavg("0.1 0.2\n").is_err());
        assert!(parse_loadavg("0.1 x 0.3 1/2 3\n").is_err());
    }
}
