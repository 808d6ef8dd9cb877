//! node_exporter's `netclass` collector: interface properties from /sys/class/net.
//!
//! Attributes that a driver does not implement, or that the kernel refuses while the
//! link is down (`speed`, `duplex` answer EINVAL), are left out rather than failing the
//! interface. A `speed` of -1 (unknown, as virtio reports) is left out too, which is
//! node_exporter's `--collector.netclass.ignore-invalid-speed` behaviour and its 2.x
//! default, instead of exposing -125000 bytes per second.

use std::path::{Path, PathBuf};

use vigil_proto::MetricFamily;

use super::parse::{Exclude, excluded, read_attr};
use super::{HostPaths, Source, SourceError};

/// Numeric attributes: (sysfs file, metric suffix, is a counter).
const NUMERIC: [(&str, &str, bool); 16] = [
    ("addr_assign_type", "address_assign_type", false),
    ("carrier", "carrier", false),
    ("carrier_changes", "carrier_changes_total", true),
    ("carrier_up_count", "carrier_up_changes_total", true),
    ("carrier_down_count", "carrier_down_changes_total", true),
    ("dev_id", "device_id", false),
    ("dormant", "dormant", false),
    ("flags", "flags", false),
    ("ifindex", "iface_id", false),
    ("iflink", "iface_link", false),
    ("link_mode", "iface_link_mode", false),
    ("mtu", "mtu_bytes", false),
    ("netdev_group", "net_dev_group", false),
    ("name_assign_type", "name_assign_type", false),
    ("tx_queue_len", "transmit_queue_length", false),
    ("type", "protocol_type", false),
];

/// What /sys/class/net/<device> says about one interface.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetClass {
    pub device: String,
    pub address: String,
    pub broadcast: String,
    pub duplex: String,
    pub operstate: String,
    pub ifalias: String,
    /// The [`NUMERIC`] attributes, `None` where unreadable.
    pub numeric: [Option<i64>; 16],
    /// Link speed in Mbit/s; `None` when unknown.
    pub speed_mbps: Option<i64>,
}

/// Parses a sysfs integer, decimal or `0x` hexadecimal (`flags`, `dev_id`).
pub fn parse_sysfs_int(text: &str) -> Option<i64> {
    let t = text.trim();
    match t.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

impl NetClass {
    /// Builds the record from an attribute reader: `attr("mtu")` is the trimmed content
    /// of that file, `None` where it cannot be read.
    pub fn from_attrs(device: &str, mut attr: impl FnMut(&str) -> Option<String>) -> Self {
        let mut numeric = [None; 16];
        for (slot, (file, _, _)) in numeric.iter_mut().zip(NUMERIC) {
            *slot = attr(file).as_deref().and_then(parse_sysfs_int);
        }
        Self {
            device: device.to_owned(),
            address: attr("address").unwrap_or_default(),
            broadcast: attr("broadcast").unwrap_or_default(),
            duplex: attr("duplex").unwrap_or_default(),
            operstate: attr("operstate").unwrap_or_default(),
            ifalias: attr("ifalias").unwrap_or_default(),
            numeric,
            speed_mbps: attr("speed")
                .as_deref()
                .and_then(parse_sysfs_int)
                .filter(|s| *s >= 0),
        }
    }

    /// node_exporter's `adminstate` label: IFF_UP of the flags.
    fn adminstate(&self) -> &'static str {
        match self.numeric[7] {
            None => "unknown",
            Some(flags) if flags & 1 == 1 => "up",
            Some(_) => "down",
        }
    }
}

pub fn netclass_families(ifaces: &[NetClass]) -> Vec<MetricFamily> {
    let mut up = MetricFamily::gauge(
        "node_network_up",
        "Value is 1 if operstate is 'up', 0 otherwise.",
    );
    let mut info = MetricFamily::gauge(
        "node_network_info",
        "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
    );
    let mut numeric: Vec<MetricFamily> = NUMERIC
        .iter()
        .map(|(_, suffix, counter)| {
            let name = format!("node_network_{suffix}");
            let help = format!("Network device property: {suffix}");
            if *counter {
                MetricFamily::counter(name, help)
            } else {
                MetricFamily::gauge(name, help)
            }
        })
        .collect();
    let mut speed = MetricFamily::gauge(
        "node_network_speed_bytes",
        "Network device property: speed_bytes",
    );
    for i in ifaces {
        let dev = [("device", i.device.as_str())];
        up.push(&dev, if i.operstate == "up" { 1.0 } else { 0.0 });
        info.push(
            &[
                ("device", &i.device),
                ("address", &i.address),
                ("broadcast", &i.broadcast),
                ("duplex", &i.duplex),
                ("operstate", &i.operstate),
                ("adminstate", i.adminstate()),
                ("ifalias", &i.ifalias),
            ],
            1.0,
        );
        for (family, value) in numeric.iter_mut().zip(i.numeric) {
            if let Some(v) = value {
                family.push(&dev, v as f64);
            }
        }
        if let Some(mbps) = i.speed_mbps {
            speed.push(&dev, mbps as f64 * 125_000.0);
        }
    }
    let mut out = vec![up, info];
    out.extend(numeric.into_iter().filter(|f| !f.samples.is_empty()));
    if !speed.samples.is_empty() {
        out.push(speed);
    }
    out
}

pub struct NetclassSource {
    class_dir: PathBuf,
    device_exclude: Exclude,
}

impl NetclassSource {
    /// Uses the netdev exclude pattern, so both halves of an interface's metrics agree.
    pub fn new(paths: &HostPaths, device_exclude: &str) -> Self {
        Self {
            class_dir: paths.sys("class/net"),
            device_exclude: Exclude::new("netdev.device_exclude", device_exclude),
        }
    }
}

fn read_iface(dir: &Path, device: &str) -> NetClass {
    let mut path = dir.join(device);
    NetClass::from_attrs(device, |name| {
        path.push(name);
        let v = read_attr(&path);
        path.pop();
        v
    })
}

impl Source for NetclassSource {
    fn name(&self) -> &'static str {
        "netclass"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let exclude = self.device_exclude.get()?;
        let entries = match std::fs::read_dir(&self.class_dir) {
            Ok(e) => e,
            // No /sys/class/net (a stripped container): nothing to report, not a fault.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(SourceError::io(&self.class_dir, e)),
        };
        let mut devices: Vec<String> = entries
            .filter_map(Result::ok)
            // Interfaces are directories (symlinks to them); `bonding_masters` is a file.
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|d| !excluded(exclude, d))
            .collect();
        devices.sort();
        let ifaces: Vec<NetClass> = devices
            .iter()
            .map(|d| read_iface(&self.class_dir, d))
            .collect();
        out.extend(netclass_families(&ifaces));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata() -> HostPaths {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        HostPaths {
            procfs: root.join("proc"),
            sysfs: root.join("sys"),
            rootfs: root,
        }
    }

    #[test]
    fn reads_captured_interfaces() {
        let paths = testdata();
        let eth0 = read_iface(&paths.sys("class/net"), "eth0");
        assert_eq!(eth0.operstate, "up");
        assert_eq!(eth0.address, "02:fc:00:00:00:01");
        assert_eq!(eth0.numeric[11], Some(1400), "mtu");
        assert_eq!(eth0.numeric[7], Some(0x1003), "flags");
        assert_eq!(eth0.numeric[1], Some(1), "carrier");
        assert_eq!(eth0.speed_mbps, None, "virtio reports -1");
        assert_eq!(eth0.adminstate(), "up");
        let lo = read_iface(&paths.sys("class/net"), "lo");
        assert_eq!(lo.operstate, "unknown");
        assert_eq!(lo.numeric[11], Some(65536));
        assert_eq!(lo.duplex, "", "unreadable on lo");
    }

    #[test]
    fn families_from_captured_tree() {
        let source = NetclassSource::new(&testdata(), "");
        let mut out = Vec::new();
        source.collect(&mut out).unwrap();
        let fam = |n: &str| out.iter().find(|f| f.name == n).unwrap();
        let up = fam("node_network_up");
        assert_eq!(up.samples.len(), 2);
        assert_eq!(up.samples[0].labels[0].1, "eth0");
        assert_eq!(up.samples[0].value, 1.0);
        assert_eq!(up.samples[1].value, 0.0, "lo's operstate is unknown");
        assert_eq!(fam("node_network_mtu_bytes").samples[0].value, 1400.0);
        assert!(!out.iter().any(|f| f.name == "node_network_speed_bytes"));
        assert_eq!(fam("node_network_carrier_changes_total").samples[0].value, 2.0);
    }

    #[test]
    fn speed_is_converted_to_bytes() {
        let attrs = |name: &str| match name {
            "speed" => Some("25000".to_owned()),
            "operstate" => Some("up".to_owned()),
            _ => None,
        };
        let iface = NetClass::from_attrs("ens1f0", attrs);
        let fams = netclass_families(&[iface]);
        let speed = fams.iter().find(|f| f.name == "node_network_speed_bytes").unwrap();
        assert_eq!(speed.samples[0].value, 3_125_000_000.0);
        assert_eq!(parse_sysfs_int("0x1003"), Some(4099));
        assert_eq!(parse_sysfs_int("-1"), Some(-1));
        assert_eq!(parse_sysfs_int("x"), None);
    }
}
