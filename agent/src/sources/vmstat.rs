//! node_exporter's `vmstat` collector: the /proc/vmstat fields matching node_exporter's
//! default `--collector.vmstat.fields`, exposed untyped as node_exporter does (so the
//! names stay `node_vmstat_pgfault`, without `_total`).

use std::path::PathBuf;

use regex::Regex;
use vigil_proto::MetricFamily;

use super::parse::{ParseError, parse_u64};
use super::{HostPaths, Source, SourceError, read_file};

/// node_exporter's default field selection.
pub const DEFAULT_FIELDS: &str = "^(oom_kill|pgpg|pswp|pg.*fault).*";

/// The (name, value) pairs of /proc/vmstat whose name `fields` matches.
pub fn parse_vmstat<'a>(text: &'a str, fields: &Regex) -> Result<Vec<(&'a str, f64)>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some((name, value)) = line.split_once(' ') else {
            if line.is_empty() {
                continue;
            }
            return Err(ParseError::new(
                i + 1,
                format!("expected \"name value\", got {line:?}"),
            ));
        };
        if !fields.is_match(name) {
            continue;
        }
        out.push((name, parse_u64(value.trim(), i + 1, name)? as f64));
    }
    Ok(out)
}

pub struct VmstatSource {
    path: PathBuf,
    fields: Regex,
}

impl VmstatSource {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            path: paths.proc("vmstat"),
            // A constant pattern; a failure here is a bug caught by every test run.
            fields: Regex::new(DEFAULT_FIELDS).expect("DEFAULT_FIELDS is a valid regex"),
        }
    }
}

impl Source for VmstatSource {
    fn name(&self) -> &'static str {
        "vmstat"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let text = read_file(&self.path)?;
        let fields = parse_vmstat(&text, &self.fields).map_err(|e| e.at(&self.path))?;
        for (name, value) in fields {
            out.push(
                MetricFamily::unknown(
                    format!("node_vmstat_{name}"),
                    format!("/proc/vmstat information field {name}."),
                )
                .with(&[], value),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_captured_vmstat_default_fields() {
        let re = Regex::new(DEFAULT_FIELDS).unwrap();
        let fields = parse_vmstat(include_str!("../../testdata/proc/vmstat"), &re).unwrap();
        let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "pgpgin",
                "pgpgout",
                "pswpin",
                "pswpout",
                "pgfault",
                "pgmajfault",
                "oom_kill"
            ]
        );
        assert_eq!(fields[0].1, 1_577_293.0);
        assert_eq!(fields[4].1, 2_606_757.0);
        assert_eq!(fields[5].1, 1_116.0);
    }

    #[test]
    fn malformed_value_names_the_line() {
        let re = Regex::new(DEFAULT_FIELDS).unwrap();
        assert_eq!(
            parse_vmstat("nr_free_pages 5\npgfault x\n", &re)
                .unwrap_err()
                .line,
            2
        );
    }
}
