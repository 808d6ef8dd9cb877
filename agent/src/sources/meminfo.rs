//! node_exporter's `meminfo` collector: every field of /proc/meminfo.
//!
//! A field with a `kB` unit becomes `node_memory_<Field>_bytes` (the kernel's kB is
//! 1024 bytes); a bare count such as `HugePages_Total` keeps its name without `_bytes`.
//! Parentheses become an underscore prefix, so `Active(anon)` is `Active_anon`, which
//! is node_exporter's `\((.*)\)` → `_$1` rewrite.

use std::path::PathBuf;

use vigil_proto::MetricFamily;

use super::parse::{ParseError, parse_u64};
use super::{HostPaths, Source, SourceError, read_file};

/// One /proc/meminfo line: the metric-name form of its key and its value in bytes (or
/// as a count when the line has no unit).
#[derive(Debug, Clone, PartialEq)]
pub struct MeminfoField {
    /// `MemTotal_bytes`, `Active_anon_bytes`, `HugePages_Total`.
    pub suffix: String,
    pub value: f64,
}

pub fn parse_meminfo(text: &str) -> Result<Vec<MeminfoField>, ParseError> {
    let mut fields = Vec::with_capacity(64);
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            return Err(ParseError::new(
                line_no,
                format!("expected \"Key: value\", got {line:?}"),
            ));
        };
        let Some(key) = key.strip_suffix(':') else {
            return Err(ParseError::new(
                line_no,
                format!("key {key:?} lacks its colon"),
            ));
        };
        let raw = parse_u64(value, line_no, key)? as f64;
        let mut suffix = String::with_capacity(key.len() + 7);
        for c in key.chars() {
            match c {
                '(' => suffix.push('_'),
                ')' => {}
                c => suffix.push(c),
            }
        }
        let value = match parts.next() {
            None => raw,
            Some("kB") => {
                suffix.push_str("_bytes");
                raw * 1024.0
            }
            Some(unit) => {
                return Err(ParseError::new(
                    line_no,
                    format!("unknown unit {unit:?} for {key}"),
                ));
            }
        };
        fields.push(MeminfoField { suffix, value });
    }
    if fields.is_empty() {
        return Err(ParseError::new(1, "no fields"));
    }
    Ok(fields)
}

pub fn meminfo_families(fields: &[MeminfoField]) -> Vec<MetricFamily> {
    fields
        .iter()
        .map(|f| {
            MetricFamily::gauge(
                format!("node_memory_{}", f.suffix),
                format!("Memory information field {}.", f.suffix),
            )
            .with(&[], f.value)
        })
        .collect()
}

pub struct MeminfoSource {
    path: PathBuf,
}

impl MeminfoSource {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            path: paths.proc("meminfo"),
        }
    }
}

impl Source for MeminfoSource {
    fn name(&self) -> &'static str {
        "meminfo"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let text = read_file(&self.path)?;
        let fields = parse_meminfo(&text).map_err(|e| e.at(&self.path))?;
        out.extend(meminfo_families(&fields));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(fields: &[MeminfoField], suffix: &str) -> f64 {
        fields
            .iter()
            .find(|f| f.suffix == suffix)
            .unwrap_or_else(|| panic!("{suffix} missing"))
            .value
    }

    #[test]
    fn parses_captured_meminfo() {
        let fields = parse_meminfo(include_str!("../../testdata/proc/meminfo")).unwrap();
        assert_eq!(value(&fields, "MemTotal_bytes"), 24_683_652.0 * 1024.0);
        assert_eq!(value(&fields, "MemAvailable_bytes"), 23_970_160.0 * 1024.0);
        assert_eq!(value(&fields, "Active_anon_bytes"), 1_556.0 * 1024.0);
        assert_eq!(value(&fields, "Inactive_file_bytes"), 1_176_788.0 * 1024.0);
        assert_eq!(value(&fields, "HugePages_Total"), 0.0);
        assert_eq!(value(&fields, "Hugepagesize_bytes"), 2048.0 * 1024.0);
        assert!(fields.iter().all(|f| !f.suffix.contains('(')));
        let families = meminfo_families(&fields);
        assert_eq!(families.len(), fields.len());
        assert_eq!(families[0].name, "node_memory_MemTotal_bytes");
        assert_eq!(families[0].help, "Memory information field MemTotal_bytes.");
    }

    #[test]
    fn malformed_lines() {
        assert_eq!(
            parse_meminfo("MemTotal: 1 kB\nMemFree 2 kB\n")
                .unwrap_err()
                .line,
            2
        );
        assert!(parse_meminfo("MemTotal: x kB\n").is_err());
        assert!(parse_meminfo("MemTotal: 1 MB\n").is_err());
    }
}
