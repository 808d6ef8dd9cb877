//! node_exporter's `conntrack` collector: the netfilter connection table's fill level
//! (/proc/sys/net/netfilter) and its per-CPU statistics (/proc/net/stat/nf_conntrack).
//!
//! A kernel without the nf_conntrack module has none of these files; that is reported
//! as nothing, not as a failure.

use std::path::PathBuf;

use vigil_proto::MetricFamily;

use super::parse::{ParseError, parse_u64, read_optional};
use super::{HostPaths, Source, SourceError};

/// (column of /proc/net/stat/nf_conntrack, metric suffix, help), as node_exporter.
const STATS: [(&str, &str, &str); 8] = [
    (
        "found",
        "found",
        "Number of searched entries which were successful.",
    ),
    (
        "invalid",
        "invalid",
        "Number of packets seen which can not be tracked.",
    ),
    (
        "ignore",
        "ignore",
        "Number of packets seen which are already connected to a conntrack entry.",
    ),
    (
        "insert",
        "insert",
        "Number of entries inserted into the list.",
    ),
    (
        "insert_failed",
        "insert_failed",
        "Number of entries for which list insertion was attempted but failed.",
    ),
    (
        "drop",
        "drop",
        "Number of packets dropped due to conntrack failure.",
    ),
    (
        "early_drop",
        "early_drop",
        "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached.",
    ),
    (
        "search_restart",
        "search_restart",
        "Number of conntrack table lookups which had to be restarted due to hashtable resizes.",
    ),
];

/// Sums the per-CPU rows of /proc/net/stat/nf_conntrack (hexadecimal) per column.
pub fn parse_conntrack_stat(text: &str) -> Result<Vec<(String, u64)>, ParseError> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| ParseError::new(1, "empty file"))?
        .split_ascii_whitespace()
        .collect();
    let mut sums = vec![0u64; header.len()];
    for (i, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() != header.len() {
            return Err(ParseError::new(
                i + 2,
                format!("{} values for {} columns", fields.len(), header.len()),
            ));
        }
        for (sum, f) in sums.iter_mut().zip(fields) {
            let v = u64::from_str_radix(f, 16)
                .map_err(|e| ParseError::new(i + 2, format!("{f:?} is not hexadecimal: {e}")))?;
            *sum = sum.saturating_add(v);
        }
    }
    Ok(header.into_iter().map(str::to_owned).zip(sums).collect())
}

pub struct ConntrackSource {
    count: PathBuf,
    max: PathBuf,
    stat: PathBuf,
}

impl ConntrackSource {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            count: paths.proc("sys/net/netfilter/nf_conntrack_count"),
            max: paths.proc("sys/net/netfilter/nf_conntrack_max"),
            stat: paths.proc("net/stat/nf_conntrack"),
        }
    }
}

impl Source for ConntrackSource {
    fn name(&self) -> &'static str {
        "conntrack"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let (Some(count), Some(max)) = (read_optional(&self.count)?, read_optional(&self.max)?)
        else {
            return Ok(());
        };
        let count =
            parse_u64(count.trim(), 1, "nf_conntrack_count").map_err(|e| e.at(&self.count))?;
        let max = parse_u64(max.trim(), 1, "nf_conntrack_max").map_err(|e| e.at(&self.max))?;
        out.push(
            MetricFamily::gauge(
                "node_nf_conntrack_entries",
                "Number of currently allocated flow entries for connection tracking.",
            )
            .with(&[], count as f64),
        );
        out.push(
            MetricFamily::gauge(
                "node_nf_conntrack_entries_limit",
                "Maximum size of connection tracking table.",
            )
            .with(&[], max as f64),
        );
        if let Some(text) = read_optional(&self.stat)? {
            let sums = parse_conntrack_stat(&text).map_err(|e| e.at(&self.stat))?;
            for (column, suffix, help) in STATS {
                if let Some((_, v)) = sums.iter().find(|(c, _)| c == column) {
                    out.push(
                        MetricFamily::gauge(format!("node_nf_conntrack_stat_{suffix}"), help)
                            .with(&[], *v as f64),
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_stat_sums_per_cpu_rows() {
        let sums = parse_conntrack_stat(include_str!("../../testdata/proc/net/stat/nf_conntrack"))
            .unwrap();
        assert_eq!(sums.len(), 17);
        assert!(sums.iter().all(|(_, v)| *v == 0), "an idle VM: {sums:?}");
        let text = "entries found drop\n0000000a 00000010 00000001\n00000002 000000ff 00000000\n";
        let sums = parse_conntrack_stat(text).unwrap();
        assert_eq!(sums[1], ("found".to_owned(), 0x10 + 0xff));
        assert_eq!(sums[2], ("drop".to_owned(), 1));
        assert_eq!(parse_conntrack_stat("a b\n1 2 3\n").unwrap_err().line, 2);
        assert!(parse_conntrack_stat("a\nzz\n").is_err());
    }

    #[test]
    fn captured_tree() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let paths = HostPaths {
            procfs: root.join("proc"),
            sysfs: root.join("sys"),
            rootfs: root.clone(),
        };
        let mut out = Vec::new();
        ConntrackSource::new(&paths).collect(&mut out).unwrap();
        assert_eq!(out.len(), 10);
        assert_eq!(out[1].name, "node_nf_conntrack_entries_limit");
        assert_eq!(out[1].samples[0].value, 262_144.0);
        let absent = HostPaths {
            procfs: root.join("no-such-proc"),
            ..paths
        };
        let mut out = Vec::new();
        ConntrackSource::new(&absent).collect(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
