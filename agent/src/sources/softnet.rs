//! node_exporter's `softnet` collector: per-CPU packet processing from
//! /proc/net/softnet_stat (one row per CPU, hexadecimal columns), for Node Exporter
//! Full's "Softnet" panels.

use std::path::PathBuf;

use vigil_proto::MetricFamily;

use super::parse::ParseError;
use super::{HostPaths, Source, SourceError, read_file};

/// One row: (cpu, processed, dropped, times squeezed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftnetRow {
    pub cpu: u64,
    pub processed: u64,
    pub dropped: u64,
    pub times_squeezed: u64,
}

pub fn parse_softnet(text: &str) -> Result<Vec<SoftnetRow>, ParseError> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() < 3 {
            return Err(ParseError::new(
                i + 1,
                format!("{} columns, expected at least 3", fields.len()),
            ));
        }
        let hex = |f: &str| {
            u64::from_str_radix(f, 16)
                .map_err(|e| ParseError::new(i + 1, format!("{f:?} is not hexadecimal: {e}")))
        };
        // Since Linux 5.10 column 13 is the CPU number (rows skip offline CPUs);
        // before that the row index is.
        let cpu = match fields.get(12) {
            Some(f) if fields.len() >= 13 => hex(f)?,
            _ => rows.len() as u64,
        };
        rows.push(SoftnetRow {
            cpu,
            processed: hex(fields[0])?,
            dropped: hex(fields[1])?,
            times_squeezed: hex(fields[2])?,
        });
    }
    Ok(rows)
}

pub fn softnet_families(rows: &[SoftnetRow]) -> [MetricFamily; 3] {
    let mut processed = MetricFamily::counter(
        "node_softnet_processed_total",
        "Number of processed packets",
    );
    let mut dropped =
        MetricFamily::counter("node_softnet_dropped_total", "Number of dropped packets");
    let mut squeezed = MetricFamily::counter(
        "node_softnet_times_squeezed_total",
        "Number of times processing packets ran out of quota",
    );
    for r in rows {
        let cpu = r.cpu.to_string();
        processed.push(&[("cpu", &cpu)], r.processed as f64);
        dropped.push(&[("cpu", &cpu)], r.dropped as f64);
        squeezed.push(&[("cpu", &cpu)], r.times_squeezed as f64);
    }
    [processed, dropped, squeezed]
}

pub struct SoftnetSource {
    path: PathBuf,
}

impl SoftnetSource {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            path: paths.proc("net/softnet_stat"),
        }
    }
}

impl Source for SoftnetSource {
    fn name(&self) -> &'static str {
        "softnet"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let text = read_file(&self.path)?;
        let rows = parse_softnet(&text).map_err(|e| e.at(&self.path))?;
        out.extend(softnet_families(&rows));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_captured_softnet_stat() {
        let rows = parse_softnet(include_str!("../../testdata/proc/net/softnet_stat")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].cpu, 0);
        assert_eq!(rows[0].processed, 0x2c16);
        assert_eq!(rows[1].cpu, 1);
        assert_eq!(rows[1].processed, 0x435f);
        assert_eq!(rows[1].dropped, 0);
        let [processed, _, _] = softnet_families(&rows);
        assert_eq!(processed.samples[1].value, 17_247.0);
    }

    #[test]
    fn old_kernel_rows_use_their_index_and_bad_hex_fails() {
        let rows = parse_softnet("0000000a 00000001 00000002\n0000000b 0 0\n").unwrap();
        assert_eq!((rows[1].cpu, rows[1].processed), (1, 11));
        assert_eq!(parse_softnet("1 2 3\nzz 0 0\n").unwrap_err().line, 2);
        assert!(parse_softnet("1 2\n").is_err());
    }
}
