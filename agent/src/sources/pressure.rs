//! node_exporter's `pressure` collector: pressure stall information from
//! /proc/pressure/{cpu,io,memory,irq}.
//!
//! `some` is time at least one task waited (`*_waiting_seconds_total`), `full` time no
//! task could make progress (`*_stalled_seconds_total`); totals are microseconds. A
//! kernel without PSI (before 4.20, or booted without `psi=1`) has no files, and a
//! missing resource is skipped without failing the others.

use std::io::ErrorKind;
use std::path::PathBuf;

use vigil_proto::MetricFamily;

use super::parse::{ParseError, parse_u64};
use super::{HostPaths, Source, SourceError};

/// The `total=` of a PSI file's `some` and `full` lines, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Psi {
    pub some: Option<f64>,
    pub full: Option<f64>,
}

pub fn parse_psi(text: &str) -> Result<Psi, ParseError> {
    let mut psi = Psi::default();
    for (i, line) in text.lines().enumerate() {
        let mut f = line.split_ascii_whitespace();
        let slot = match f.next() {
            Some("some") => &mut psi.some,
            Some("full") => &mut psi.full,
            None => continue,
            Some(other) => {
                return Err(ParseError::new(
                    i + 1,
                    format!("unknown PSI line {other:?}"),
                ));
            }
        };
        let total = f
            .find_map(|kv| kv.strip_prefix("total="))
            .ok_or_else(|| ParseError::new(i + 1, "no total= field"))?;
        *slot = Some(parse_u64(total, i + 1, "total")? as f64 / 1_000_000.0);
    }
    if psi.some.is_none() && psi.full.is_none() {
        return Err(ParseError::new(1, "neither some nor full line"));
    }
    Ok(psi)
}

/// A family's (name, help); `None` where the kernel has no such line for a resource.
type Family = Option<(&'static str, &'static str)>;

/// (resource, some family, full family) with node_exporter's names and help.
const RESOURCES: [(&str, Family, Family); 4] = [
    (
        "cpu",
        Some((
            "node_pressure_cpu_waiting_seconds_total",
            "Total time in seconds that processes have waited for CPU time",
        )),
        Some((
            "node_pressure_cpu_stalled_seconds_total",
            "Total time in seconds no process could make progress due to CPU congestion",
        )),
    ),
    (
        "io",
        Some((
            "node_pressure_io_waiting_seconds_total",
            "Total time in seconds that processes have waited due to IO congestion",
        )),
        Some((
            "node_pressure_io_stalled_seconds_total",
            "Total time in seconds no process could make progress due to IO congestion",
        )),
    ),
    (
        "memory",
        Some((
            "node_pressure_memory_waiting_seconds_total",
            "Total time in seconds that processes have waited for memory",
        )),
        Some((
            "node_pressure_memory_stalled_seconds_total",
            "Total time in seconds no process could make progress due to memory congestion",
        )),
    ),
    (
        "irq",
        None,
        Some((
            "node_pressure_irq_stalled_seconds_total",
            "Total time in seconds no process could make progress due to IRQ congestion",
        )),
    ),
];

pub struct PressureSource {
    dir: PathBuf,
}

impl PressureSource {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            dir: paths.proc("pressure"),
        }
    }
}

impl Source for PressureSource {
    fn name(&self) -> &'static str {
        "pressure"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        for (resource, some_family, full_family) in RESOURCES {
            let path = self.dir.join(resource);
            let text = match super::procfile::read_to_string(&path) {
                Ok(t) => t,
                // Absent (old kernel) or disabled (EOPNOTSUPP without psi=1): skip.
                Err(e)
                    if e.kind() == ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
                {
                    continue;
                }
                Err(e) => return Err(SourceError::io(&path, e)),
            };
            let psi = parse_psi(&text).map_err(|e| e.at(&path))?;
            for (family, value) in [(some_family, psi.some), (full_family, psi.full)] {
                if let (Some((name, help)), Some(v)) = (family, value) {
                    out.push(MetricFamily::counter(name, help).with(&[], v));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn parses_captured_psi() {
        let io = parse_psi(include_str!("../../testdata/proc/pressure/io")).unwrap();
        assert_eq!(io.some, Some(8.062304));
        assert_eq!(io.full, Some(7.500578));
        let cpu = parse_psi(include_str!("../../testdata/proc/pressure/cpu")).unwrap();
        assert_eq!(cpu.some, Some(8.548632));
        assert_eq!(cpu.full, Some(0.0));
    }

    #[test]
    fn missing_resources_are_skipped() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let source = PressureSource {
            dir: root.join("proc/pressure"),
        };
        let mut out = Vec::new();
        source.collect(&mut out).unwrap();
        let names: Vec<&str> = out.iter().map(|f| &*f.name).collect();
        assert_eq!(names.len(), 6, "no irq file in the capture: {names:?}");
        assert_eq!(out[0].name, "node_pressure_cpu_waiting_seconds_total");
        assert_eq!(out[0].samples[0].value, 8.548632);
        let none = PressureSource {
            dir: root.join("proc/no-such-dir"),
        };
        let mut out = Vec::new();
        none.collect(&mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_psi() {
        assert_eq!(
            parse_psi("some avg10=0.00 total=1\nfull avg10=1\n")
                .unwrap_err()
                .line,
            2
        );
        assert!(parse_psi("").is_err());
        assert!(parse_psi("sometimes total=1\n").is_err());
    }
}
