//! node_exporter's `netclass` collector: interface properties from /sys/class/net.
//!
//! On the host's own /sys the properties come from one rtnetlink dump ([`netlink`]),
//! which carries the same values as the sysfs files at a fraction of the cost; only
//! `speed` and `duplex` (ethtool, read only for interfaces that are up) and three
//! attributes fixed when the interface is created (`addr_assign_type`, `dev_id`,
//! `name_assign_type`, read once per interface and remembered) still come from sysfs.
//! With `paths.sysfs` pointing elsewhere (a captured tree, a host mount in a container
//! whose network namespace is not the host's) every attribute is read from the files.
//!
//! Attributes that a driver does not implement, or that the kernel refuses while the
//! link is down (`speed`, `duplex` answer EINVAL), are left out rather than failing the
//! interface. A `speed` of -1 (unknown, as virtio reports) is left out too, which is
//! node_exporter's `--collector.netclass.ignore-invalid-speed` behaviour and its 2.x
//! default, instead of exposing -125000 bytes per second.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use vigil_proto::MetricFamily;

use super::netlink::{self, Link};
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

/// Attributes fixed at interface creation: addr_assign_type, dev_id, name_assign_type.
type Statics = [Option<i64>; 3];

pub struct NetclassSource {
    class_dir: PathBuf,
    device_exclude: Exclude,
    use_netlink: bool,
    statics: Mutex<HashMap<(i32, String), Statics>>,
}

impl NetclassSource {
    /// Uses the netdev exclude pattern, so both halves of an interface's metrics agree.
    pub fn new(paths: &HostPaths, device_exclude: &str) -> Self {
        Self {
            class_dir: paths.sys("class/net"),
            device_exclude: Exclude::new("netdev.device_exclude", device_exclude),
            use_netlink: paths.sysfs == Path::new("/sys"),
            statics: Mutex::new(HashMap::new()),
        }
    }

    fn read_sysfs(&self, exclude: Option<&regex::Regex>) -> Result<Vec<NetClass>, SourceError> {
        let entries = match std::fs::read_dir(&self.class_dir) {
            Ok(e) => e,
            // No /sys/class/net (a stripped container): nothing to report, not a fault.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
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
        Ok(devices
            .iter()
            .map(|d| read_iface(&self.class_dir, d))
            .collect())
    }

    fn read_netlink(&self, links: &[Link], exclude: Option<&regex::Regex>) -> Vec<NetClass> {
        // A poisoned lock only means a panic mid-insert; the cache is still usable.
        let mut statics = self.statics.lock().unwrap_or_else(|p| p.into_inner());
        statics
            .retain(|(index, name), _| links.iter().any(|l| l.index == *index && l.name == *name));
        let mut ifaces: Vec<NetClass> = links
            .iter()
            .filter(|l| !excluded(exclude, &l.name))
            .map(|l| {
                let dir = self.class_dir.join(&l.name);
                let fixed = *statics.entry((l.index, l.name.clone())).or_insert_with(|| {
                    ["addr_assign_type", "dev_id", "name_assign_type"]
                        .map(|a| read_attr(&dir.join(a)).as_deref().and_then(parse_sysfs_int))
                });
                // sysfs answers speed, duplex, carrier and dormant only while up.
                let (speed, duplex) = if l.is_up() {
                    (
                        read_attr(&dir.join("speed")),
                        read_attr(&dir.join("duplex")),
                    )
                } else {
                    (None, None)
                };
                NetClass::from_link(l, fixed, speed.as_deref(), duplex)
            })
            .collect();
        ifaces.sort_by(|a, b| a.device.cmp(&b.device));
        ifaces
    }
}

impl NetClass {
    /// The record from a netlink description plus the few sysfs-only attributes.
    pub fn from_link(
        l: &Link,
        fixed: Statics,
        speed: Option<&str>,
        duplex: Option<String>,
    ) -> Self {
        let up = l.is_up();
        let numeric = [
            fixed[0],
            l.carrier.filter(|_| up).map(i64::from),
            l.carrier_changes.map(i64::from),
            l.carrier_up_count.map(i64::from),
            l.carrier_down_count.map(i64::from),
            fixed[1],
            up.then(|| i64::from(l.dormant())),
            Some(i64::from(l.sysfs_flags())),
            Some(i64::from(l.index)),
            Some(l.link.map_or(i64::from(l.index), i64::from)),
            l.linkmode.map(i64::from),
            l.mtu.map(i64::from),
            l.group.map(i64::from),
            fixed[2],
            l.txqlen.map(i64::from),
            Some(i64::from(l.link_type)),
        ];
        Self {
            device: l.name.clone(),
            address: l.address.clone().unwrap_or_default(),
            broadcast: l.broadcast.clone().unwrap_or_default(),
            duplex: duplex.unwrap_or_default(),
            operstate: l.operstate_name().to_owned(),
            ifalias: l.ifalias.clone().unwrap_or_default(),
            numeric,
            speed_mbps: speed.and_then(parse_sysfs_int).filter(|s| *s >= 0),
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
        let links = if self.use_netlink {
            netlink::dump_links().ok()
        } else {
            None
        };
        let ifaces = match links {
            Some(links) => self.read_netlink(&links, exclude),
            // Not the host's /sys, or netlink refused (a seccomp filter): the files.
            None => self.read_sysfs(exclude)?,
        };
        out.extend(netclass_families(&ifaces));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_captured_interfaces() {
        let paths = HostPaths::testdata();
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
        let source = NetclassSource::new(&HostPaths::testdata(), "");
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
        assert_eq!(
            fam("node_network_carrier_changes_total").samples[0].value,
            2.0
        );
    }

    #[test]
    fn netlink_and_sysfs_agree_on_this_machine() {
        let paths = HostPaths::default();
        let source = NetclassSource::new(&paths, "");
        assert!(source.use_netlink);
        let by_files = source.read_sysfs(None).unwrap();
        let by_netlink = source.read_netlink(&netlink::dump_links().unwrap(), None);
        assert_eq!(by_netlink.len(), by_files.len());
        for (n, f) in by_netlink.iter().zip(&by_files) {
            // Carrier changes can tick between the two reads; everything else is fixed.
            assert_eq!(
                (&n.device, &n.address, &n.broadcast, &n.operstate),
                (&f.device, &f.address, &f.broadcast, &f.operstate)
            );
            assert_eq!(
                (&n.duplex, &n.ifalias, n.speed_mbps),
                (&f.duplex, &f.ifalias, f.speed_mbps),
                "{}",
                n.device
            );
            for (i, (nv, fv)) in n.numeric.iter().zip(&f.numeric).enumerate() {
                assert_eq!(nv, fv, "{} attribute {}", n.device, NUMERIC[i].0);
            }
        }
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
        let speed = fams
            .iter()
            .find(|f| f.name == "node_network_speed_bytes")
            .unwrap();
        assert_eq!(speed.samples[0].value, 3_125_000_000.0);
        assert_eq!(parse_sysfs_int("0x1003"), Some(4099));
        assert_eq!(parse_sysfs_int("-1"), Some(-1));
        assert_eq!(parse_sysfs_int("x"), None);
    }
}
