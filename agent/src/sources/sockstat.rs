//! node_exporter's `sockstat` collector: /proc/net/sockstat and sockstat6.
//!
//! Every `PROTO: key value ...` pair becomes `node_sockstat_<PROTO>_<key>`; a `mem`
//! value (pages) is also exposed as `_mem_bytes`. The IPv6 file is absent when IPv6 is
//! disabled, which is not an error.

use std::path::{Path, PathBuf};

use vigil_proto::MetricFamily;

use super::parse::{ParseError, parse_u64, read_optional};
use super::{HostPaths, Source, SourceError, read_file};

/// The per-protocol keys node_exporter knows; anything else a future kernel adds is
/// skipped rather than given a name node_exporter would not use.
const KEYS: [&str; 6] = ["inuse", "orphan", "tw", "alloc", "mem", "memory"];

/// One sockstat value.
#[derive(Debug, Clone, PartialEq)]
pub struct SockstatValue {
    /// `sockets_used`, `TCP_inuse`, `TCP_mem_bytes`, ...
    pub suffix: String,
    pub protocol: String,
    pub key: String,
    pub value: f64,
}

/// Parses a sockstat file; `page_size` turns `mem` pages into `mem_bytes`.
pub fn parse_sockstat(text: &str, page_size: u64) -> Result<Vec<SockstatValue>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let Some((protocol, rest)) = line.split_once(':') else {
            return Err(ParseError::new(line_no, format!("no protocol: {line:?}")));
        };
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        if !fields.len().is_multiple_of(2) {
            return Err(ParseError::new(
                line_no,
                format!("{protocol}: odd number of fields"),
            ));
        }
        for pair in fields.chunks_exact(2) {
            let (key, value) = (pair[0], pair[1]);
            let v = parse_u64(value, line_no, key)?;
            if protocol == "sockets" {
                if key == "used" {
                    out.push(SockstatValue {
                        suffix: "sockets_used".to_owned(),
                        protocol: protocol.to_owned(),
                        key: key.to_owned(),
                        value: v as f64,
                    });
                }
                continue;
            }
            if !KEYS.contains(&key) {
                continue;
            }
            out.push(SockstatValue {
                suffix: format!("{protocol}_{key}"),
                protocol: protocol.to_owned(),
                key: key.to_owned(),
                value: v as f64,
            });
            if key == "mem" {
                out.push(SockstatValue {
                    suffix: format!("{protocol}_mem_bytes"),
                    protocol: protocol.to_owned(),
                    key: "mem_bytes".to_owned(),
                    value: (v * page_size) as f64,
                });
            }
        }
    }
    Ok(out)
}

pub fn sockstat_families(values: &[SockstatValue]) -> Vec<MetricFamily> {
    values
        .iter()
        .map(|v| {
            let help = if v.suffix == "sockets_used" {
                "Number of IPv4 sockets in use.".to_owned()
            } else {
                format!("Number of {} sockets in state {}.", v.protocol, v.key)
            };
            MetricFamily::gauge(format!("node_sockstat_{}", v.suffix), help).with(&[], v.value)
        })
        .collect()
}

pub struct SockstatSource {
    v4: PathBuf,
    v6: PathBuf,
    page_size: u64,
}

/// The kernel's page size, which sockstat's `mem` counts in.
fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 only for an unknown name.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

impl SockstatSource {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            v4: paths.proc("net/sockstat"),
            v6: paths.proc("net/sockstat6"),
            page_size: page_size(),
        }
    }

    fn parse(
        &self,
        path: &Path,
        text: &str,
        out: &mut Vec<MetricFamily>,
    ) -> Result<(), SourceError> {
        let values = parse_sockstat(text, self.page_size).map_err(|e| e.at(path))?;
        out.extend(sockstat_families(&values));
        Ok(())
    }
}

impl Source for SockstatSource {
    fn name(&self) -> &'static str {
        "sockstat"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let v4 = read_file(&self.v4)?;
        self.parse(&self.v4, &v4, out)?;
        if let Some(v6) = read_optional(&self.v6)? {
            self.parse(&self.v6, &v6, out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(values: &[SockstatValue], suffix: &str) -> f64 {
        values.iter().find(|v| v.suffix == suffix).unwrap().value
    }

    #[test]
    fn parses_captured_sockstat() {
        let v = parse_sockstat(include_str!("../../testdata/proc/net/sockstat"), 4096).unwrap();
        assert_eq!(get(&v, "sockets_used"), 19.0);
        assert_eq!(get(&v, "TCP_inuse"), 3.0);
        assert_eq!(get(&v, "TCP_alloc"), 3.0);
        assert_eq!(get(&v, "TCP_mem"), 310.0);
        assert_eq!(get(&v, "TCP_mem_bytes"), 310.0 * 4096.0);
        assert_eq!(get(&v, "UDP_mem_bytes"), 0.0);
        assert_eq!(get(&v, "FRAG_memory"), 0.0);
        let fams = sockstat_families(&v);
        assert_eq!(fams[0].name, "node_sockstat_sockets_used");
        let tw = fams
            .iter()
            .find(|f| f.name == "node_sockstat_TCP_tw")
            .unwrap();
        assert_eq!(tw.help, "Number of TCP sockets in state tw.");
    }

    #[test]
    fn parses_captured_sockstat6() {
        let v = parse_sockstat(include_str!("../../testdata/proc/net/sockstat6"), 4096).unwrap();
        let names: Vec<&str> = v.iter().map(|v| v.suffix.as_str()).collect();
        assert_eq!(
            names,
            [
                "TCP6_inuse",
                "UDP6_inuse",
                "UDPLITE6_inuse",
                "RAW6_inuse",
                "FRAG6_inuse",
                "FRAG6_memory"
            ]
        );
    }

    #[test]
    fn malformed_sockstat() {
        assert_eq!(
            parse_sockstat("sockets: used 1\nTCP: inuse\n", 4096)
                .unwrap_err()
                .line,
            2
        );
        assert!(parse_sockstat("TCP: inuse x\n", 4096).is_err());
        assert!(parse_sockstat("garbage\n", 4096).is_err());
    }
}
