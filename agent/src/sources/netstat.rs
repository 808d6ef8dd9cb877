//! node_exporter's `netstat` collector: the protocol counters of /proc/net/netstat,
//! /proc/net/snmp and /proc/net/snmp6 whose `<Proto>_<Field>` name matches
//! node_exporter's default `--collector.netstat.fields`, exposed untyped as
//! `node_netstat_<Proto>_<Field>`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use regex::Regex;
use vigil_proto::MetricFamily;

use super::parse::{ParseError, read_optional};
use super::{HostPaths, Source, SourceError, read_file};

/// node_exporter's default field selection.
pub const DEFAULT_FIELDS: &str = "^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts|TCPOFOQueue|TCPRcvQDrop)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$";

/// The field pattern with its answers remembered: the kernel's field names are a fixed
/// set of a few hundred, so after the first cycle no regex runs at all.
#[derive(Debug)]
pub struct FieldSelector {
    fields: Regex,
    known: HashMap<String, bool>,
}

impl FieldSelector {
    pub fn new(fields: Regex) -> Self {
        Self {
            fields,
            known: HashMap::new(),
        }
    }

    pub fn default_fields() -> Self {
        // A constant pattern; a failure here is a bug caught by every test run.
        Self::new(Regex::new(DEFAULT_FIELDS).expect("DEFAULT_FIELDS is a valid regex"))
    }

    pub fn selected(&mut self, key: &str) -> bool {
        if let Some(hit) = self.known.get(key) {
            return *hit;
        }
        let hit = self.fields.is_match(key);
        self.known.insert(key.to_owned(), hit);
        hit
    }
}

/// The matching (`Proto_Field`, value) pairs of a netstat or snmp file: pairs of a
/// header line (`Tcp: RtoAlgorithm RtoMin ...`) and a value line (`Tcp: 1 200 ...`).
pub fn parse_netstat(
    text: &str,
    fields: &mut FieldSelector,
) -> Result<Vec<(String, f64)>, ParseError> {
    let mut out = Vec::new();
    let mut key = String::with_capacity(64);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    while let Some((i, names)) = lines.next() {
        let Some((j, values)) = lines.next() else {
            return Err(ParseError::new(i + 1, "header line without a value line"));
        };
        let (Some((proto, names)), Some((proto2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            return Err(ParseError::new(i + 1, "line without a protocol prefix"));
        };
        if proto != proto2 {
            return Err(ParseError::new(
                j + 1,
                format!("values for {proto2} follow the header of {proto}"),
            ));
        }
        let names: Vec<&str> = names.split_ascii_whitespace().collect();
        let values: Vec<&str> = values.split_ascii_whitespace().collect();
        if names.len() != values.len() {
            return Err(ParseError::new(
                j + 1,
                format!("{proto}: {} names but {} values", names.len(), values.len()),
            ));
        }
        for (name, value) in names.iter().zip(values) {
            key.clear();
            key.push_str(proto);
            key.push('_');
            key.push_str(name);
            if !fields.selected(&key) {
                continue;
            }
            // Some counters (Tcp MaxConn) are -1; parse as a float like node_exporter.
            let v = value.parse::<f64>().map_err(|e| {
                ParseError::new(j + 1, format!("{key}: {value:?} is not a number: {e}"))
            })?;
            out.push((key.clone(), v));
        }
    }
    Ok(out)
}

/// The matching pairs of /proc/net/snmp6, whose lines are `Ip6InReceives  1`: the
/// protocol is the name up to and including its first `6`.
pub fn parse_snmp6(
    text: &str,
    fields: &mut FieldSelector,
) -> Result<Vec<(String, f64)>, ParseError> {
    let mut out = Vec::new();
    let mut key = String::with_capacity(64);
    for (i, line) in text.lines().enumerate() {
        let mut f = line.split_ascii_whitespace();
        let (Some(name), Some(value)) = (f.next(), f.next()) else {
            continue;
        };
        let Some(six) = name.find('6') else {
            continue;
        };
        key.clear();
        key.push_str(&name[..=six]);
        key.push('_');
        key.push_str(&name[six + 1..]);
        if !fields.selected(&key) {
            continue;
        }
        let v = value.parse::<f64>().map_err(|e| {
            ParseError::new(i + 1, format!("{name}: {value:?} is not a number: {e}"))
        })?;
        out.push((key.clone(), v));
    }
    Ok(out)
}

pub fn netstat_families(values: &[(String, f64)]) -> Vec<MetricFamily> {
    values
        .iter()
        .map(|(key, v)| {
            let help = format!("Statistic {}.", key.replacen('_', "", 1));
            MetricFamily::unknown(format!("node_netstat_{key}"), help).with(&[], *v)
        })
        .collect()
}

pub struct NetstatSource {
    netstat: PathBuf,
    snmp: PathBuf,
    snmp6: PathBuf,
    fields: Mutex<FieldSelector>,
}

impl NetstatSource {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            netstat: paths.proc("net/netstat"),
            snmp: paths.proc("net/snmp"),
            snmp6: paths.proc("net/snmp6"),
            fields: Mutex::new(FieldSelector::default_fields()),
        }
    }
}

impl Source for NetstatSource {
    fn name(&self) -> &'static str {
        "netstat"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        // A poisoned lock only means a panic mid-insert; the remembered answers hold.
        let mut fields = self.fields.lock().unwrap_or_else(|p| p.into_inner());
        let mut values = Vec::with_capacity(64);
        for path in [&self.netstat, &self.snmp] {
            let text = read_file(path)?;
            values.extend(parse_netstat(&text, &mut fields).map_err(|e| e.at(path))?);
        }
        // No snmp6 when IPv6 is disabled.
        if let Some(text) = read_optional(&self.snmp6)? {
            values.extend(parse_snmp6(&text, &mut fields).map_err(|e| e.at(&self.snmp6))?);
        }
        out.extend(netstat_families(&values));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re() -> FieldSelector {
        FieldSelector::default_fields()
    }

    fn get(values: &[(String, f64)], key: &str) -> f64 {
        values
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{key}"))
            .1
    }

    #[test]
    fn parses_captured_netstat_and_snmp() {
        let netstat =
            parse_netstat(include_str!("../../testdata/proc/net/netstat"), &mut re()).unwrap();
        assert_eq!(get(&netstat, "IpExt_InOctets"), 82_616_254.0);
        assert_eq!(get(&netstat, "IpExt_OutOctets"), 175_342.0);
        assert_eq!(get(&netstat, "TcpExt_ListenOverflows"), 0.0);
        assert!(
            netstat.iter().all(|(k, _)| k != "TcpExt_TW"),
            "not a default field"
        );
        let snmp = parse_netstat(include_str!("../../testdata/proc/net/snmp"), &mut re()).unwrap();
        assert_eq!(get(&snmp, "Ip_Forwarding"), 2.0);
        assert!(snmp.iter().any(|(k, _)| k == "Tcp_CurrEstab"));
        assert!(snmp.iter().any(|(k, _)| k == "Udp_NoPorts"));
        let fams = netstat_families(&snmp);
        let fwd = fams
            .iter()
            .find(|f| f.name == "node_netstat_Ip_Forwarding")
            .unwrap();
        assert_eq!(fwd.help, "Statistic IpForwarding.");
    }

    #[test]
    fn parses_captured_snmp6() {
        let v = parse_snmp6(include_str!("../../testdata/proc/net/snmp6"), &mut re()).unwrap();
        assert!(v.iter().any(|(k, _)| k == "Ip6_InOctets"));
        assert!(v.iter().any(|(k, _)| k == "Udp6_InDatagrams"));
        assert!(v.iter().any(|(k, _)| k == "Icmp6_InMsgs"));
        assert!(
            !v.iter().any(|(k, _)| k == "Ip6_InReceives"),
            "not a default field"
        );
    }

    #[test]
    fn malformed_netstat() {
        let err = parse_netstat("Tcp: A B\nTcp: 1\n", &mut re()).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(parse_netstat("Tcp: A B\n", &mut re()).is_err());
        assert!(parse_netstat("Tcp: InErrs\nUdp: 1\n", &mut re()).is_err());
    }
}
