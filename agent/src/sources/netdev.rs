//! node_exporter's `netdev` collector: the interface counters of /proc/net/dev, with
//! node_exporter's legacy names (`receive_errs`, `transmit_colls`, ...), plus
//! `receive_nohandler` (packets dropped for want of a protocol handler), which
//! node_exporter takes from netlink and /proc/net/dev lacks: from the rtnetlink dump on
//! the host's own /sys, else from /sys/class/net/<device>/statistics/rx_nohandler.

use std::path::PathBuf;

use vigil_proto::MetricFamily;

use super::netlink;
use super::parse::{Exclude, ParseError, excluded, parse_u64, read_attr};
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
            return Err(ParseError::new(
                line_no,
                format!("no interface name: {line:?}"),
            ));
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

/// `node_network_receive_nohandler_total` for the devices whose value could be read.
pub fn nohandler_family(values: &[(&str, u64)]) -> Option<MetricFamily> {
    if values.is_empty() {
        return None;
    }
    let mut family = MetricFamily::counter(
        "node_network_receive_nohandler_total",
        "Network device statistic receive_nohandler.",
    );
    for (device, v) in values {
        family.push(&[("device", device)], *v as f64);
    }
    Some(family)
}

pub struct NetdevSource {
    path: PathBuf,
    class_dir: PathBuf,
    device_exclude: Exclude,
    use_netlink: bool,
}

impl NetdevSource {
    pub fn new(paths: &HostPaths, device_exclude: &str) -> Self {
        Self {
            path: paths.proc("net/dev"),
            class_dir: paths.sys("class/net"),
            device_exclude: Exclude::new("netdev.device_exclude", device_exclude),
            use_netlink: paths.sysfs == std::path::Path::new("/sys"),
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
        let links = if self.use_netlink {
            netlink::dump_links().ok()
        } else {
            None
        };
        let nohandler: Vec<(&str, u64)> = match &links {
            Some(links) => devices
                .iter()
                .filter_map(|d| {
                    let link = links.iter().find(|l| l.name == d.device)?;
                    let v = link.stats64.get(netlink::STATS64_RX_NOHANDLER)?;
                    Some((d.device.as_str(), *v))
                })
                .collect(),
            None => {
                let mut path = self.class_dir.clone();
                devices
                    .iter()
                    .filter_map(|d| {
                        path.push(&d.device);
                        path.push("statistics/rx_nohandler");
                        let v = read_attr(&path).and_then(|v| v.parse::<u64>().ok());
                        path.pop();
                        path.pop();
                        path.pop();
                        Some((d.device.as_str(), v?))
                    })
                    .collect()
            }
        };
        out.extend(nohandler_family(&nohandler));
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
    fn source_adds_nohandler_from_sysfs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let paths = HostPaths {
            procfs: root.join("proc"),
            sysfs: root.join("sys"),
            rootfs: root,
        };
        let mut out = Vec::new();
        NetdevSource::new(&paths, "").collect(&mut out).unwrap();
        assert_eq!(out.len(), 17);
        let nohandler = out.last().unwrap();
        assert_eq!(nohandler.name, "node_network_receive_nohandler_total");
        // Captured for eth0 and lo only; the ifb devices have no sysfs folder here.
        let devices: Vec<&str> = nohandler
            .samples
            .iter()
            .map(|s| s.labels[0].1.as_str())
            .collect();
        assert_eq!(devices, ["lo", "eth0"]);
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
