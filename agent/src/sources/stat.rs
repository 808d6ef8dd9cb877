//! node_exporter's `stat` collector: the system-wide counters of /proc/stat.
//!
//! The `intr` line holds one number per interrupt line (thousands on a large machine);
//! only its first field, the total, is parsed.

use std::path::PathBuf;

use vigil_proto::MetricFamily;

use super::parse::{ParseError, parse_u64};
use super::{HostPaths, Source, SourceError, read_file};

/// The system-wide lines of /proc/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcStat {
    pub intr: u64,
    pub ctxt: u64,
    pub btime: u64,
    pub processes: u64,
    pub procs_running: u64,
    pub procs_blocked: u64,
}

pub fn parse_stat(text: &str) -> Result<ProcStat, ParseError> {
    let mut stat = ProcStat::default();
    let mut seen = 0u8;
    for (i, line) in text.lines().enumerate() {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        let slot = match key {
            "intr" => &mut stat.intr,
            "ctxt" => &mut stat.ctxt,
            "btime" => &mut stat.btime,
            "processes" => &mut stat.processes,
            "procs_running" => &mut stat.procs_running,
            "procs_blocked" => &mut stat.procs_blocked,
            _ => continue,
        };
        let first = rest.split_ascii_whitespace().next().unwrap_or("");
        *slot = parse_u64(first, i + 1, key)?;
        seen += 1;
    }
    if seen < 6 {
        return Err(ParseError::new(
            text.lines().count().max(1),
            format!(
                "only {seen} of intr, ctxt, btime, processes, procs_running, procs_blocked found"
            ),
        ));
    }
    Ok(stat)
}

pub fn stat_families(s: &ProcStat) -> Vec<MetricFamily> {
    vec![
        MetricFamily::counter("node_intr_total", "Total number of interrupts serviced.")
            .with(&[], s.intr as f64),
        MetricFamily::counter(
            "node_context_switches_total",
            "Total number of context switches.",
        )
        .with(&[], s.ctxt as f64),
        MetricFamily::counter("node_forks_total", "Total number of forks.")
            .with(&[], s.processes as f64),
        MetricFamily::gauge("node_boot_time_seconds", "Node boot time, in unixtime.")
            .with(&[], s.btime as f64),
        MetricFamily::gauge(
            "node_procs_running",
            "Number of processes in runnable state.",
        )
        .with(&[], s.procs_running as f64),
        MetricFamily::gauge(
            "node_procs_blocked",
            "Number of processes blocked waiting for I/O to complete.",
        )
        .with(&[], s.procs_blocked as f64),
    ]
}

pub struct StatSource {
    path: PathBuf,
}

impl StatSource {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            path: paths.proc("stat"),
        }
    }
}

impl Source for StatSource {
    fn name(&self) -> &'static str {
        "stat"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let text = read_file(&self.path)?;
        let stat = parse_stat(&text).map_err(|e| e.at(&self.path))?;
        out.extend(stat_families(&stat));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_captured_proc_stat() {
        let s = parse_stat(include_str!("../../testdata/proc/stat")).unwrap();
        assert_eq!(s.intr, 165_498);
        assert_eq!(s.ctxt, 283_113);
        assert_eq!(s.btime, 1_795_779_702);
        assert_eq!(s.processes, 6_167);
        assert_eq!(s.procs_running, 3);
        assert_eq!(s.procs_blocked, 0);
        let families = stat_families(&s);
        assert_eq!(families[0].name, "node_intr_total");
        assert_eq!(families[0].samples[0].value, 165_498.0);
    }

    #[test]
    fn missing_or_malformed_lines_are_errors() {
        assert!(parse_stat("ctxt 5\n").is_err());
        let err = parse_stat("intr 1 2\nctxt x\n").unwrap_err();
        assert_eq!(err.line, 2);
    }
}
