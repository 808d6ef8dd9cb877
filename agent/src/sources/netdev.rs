//! node_exporter's `netdev` collector: the interface counters of /proc/net/dev, with
//! node_exporter's legacy names (`receive_errs`, `transmit_colls`, ...).

use std::path::PathBuf;

use vigil_proto::MetricFamily;

use super::parse::{Exclude, ParseError, excluded, parse_u64};
use super::{HostPaths, Source, SourceError, read_file};

/// The 16 columns of /proc/net/dev, in order, as node_exporter names them.
const COLUMNS: [&str; 16] = [
    "receive_bytes",
    "receive_packets",
    "receive_errs",
    "receive_drop",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errs",
    "transmit_drop",
    "transmit_fifo",
    "transmit_colls",
    "transmit_carrier",
    "transmit_compressed",
];

/// One interface's line.
#[derive(Debug, Clone, PartialEq)]
pub struct NetDev {
    pub device: String,
    pub counters: [u64; 16],
}

pub fn parse_net_dev(text: &str) -> Result<Vec<NetDev>, ParseError> {
    let mut devices = Vec::new();
    // The first two lines are the column headers.
    for (i, line) in text.lines().enumerate().skip(2) {
        let line_no = i + 1;
        let Some((name, rest)) = line.split_once(':') else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(ParseError::new(line_no, format!("no interface name: {line:?}")));
        };
        let mut counters = [0u64; 16];
        let mut count = 0;
        for (slot, field) in counters.iter_mut().zip(rest.split_ascii_whitespace()) {
            *slot = parse_u64(field, line_no, name.trim())?;
            count += 1;
        }
        if count != 16 {
            return Err(ParseError::new(
                line_no,
                format!("{}: {count} counters, expected 16", name.trim()),
            ));
        }
        devices.push(NetDev {
            device: name.trim().to_owned(),
            counters,
        });
    }
    Ok(devices)
}

pub fn netdev_families(devices: &[NetDev]) -> Vec<MetricFamily> {
    COLUMNS
        .iter()
        .enumerate()
        .map(|(col, key)| {
            let mut family = MetricFamily::counter(
                format!("node_network_{key}_total"),
                format!("Network device statistic {key}."),
            );
            for d in devices {
                family.push(&[("device", &d.device)], d.counters[col] as f64);
            }
            family
        })
        .collect()
}

pub struct NetdevSource {
    path: PathBuf,
    device_exclude: Exclude,
}

impl NetdevSource {
    pub fn new(paths: &HostPaths, device_exclude: &str) -> Self {
        Self {
            path: paths.proc("net/dev"),
            device_exclude: Exclude::new("netdev.device_exclude", device_exclude),
        }
    }
}

impl Source for NetdevSource {
    fn name(&self) -> &'static str {
        "netdev"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let exclude = self.device_exclude.get()?;
        let text = read_file(&self.path)?;
        let mut devices = parse_net_dev(&text).map_err(|e| e.at(&self.path))?;
        devices.retain(|d| !excluded(exclude, &d.device));
        out.extend(netdev_families(&devices));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_captured_net_dev() {
        let devs = parse_net_dev(include_str!("../../testdata/proc/net/dev")).unwrap();
        let names: Vec<&str> = devs.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, ["lo", "ifb0", "ifb1", "eth0"]);
        let eth0 = &devs[3];
        assert_eq!(eth0.counters[0], 82_658_339);
        assert_eq!(eth0.counters[1], 3_217);
        assert_eq!(eth0.counters[8], 200_375);
        assert_eq!(eth0.counters[9], 1_951);
        let fams = netdev_families(&devs);
        assert_eq!(fams.len(), 16);
        assert_eq!(fams[0].name, "node_network_receive_bytes_total");
        assert_eq!(fams[13].name, "node_network_transmit_colls_total");
        assert_eq!(fams[0].samples[3].value, 82_658_339.0);
    }

    #[test]
    fn exclude_and_malformed() {
        let text = include_str!("../../testdata/proc/net/dev");
        let paths = HostPaths::default();
        let source = NetdevSource::new(&paths, "^ifb");
        let mut devs = parse_net_dev(text).unwrap();
        let re = source.device_exclude.get().unwrap();
        devs.retain(|d| !excluded(re, &d.device));
        assert_eq!(devs.len(), 2);
        let bad = "h1\nh2\n  eth0: 1 2 3\n";
        assert_eq!(parse_net_dev(bad).unwrap_err().line, 3);
    }
}
