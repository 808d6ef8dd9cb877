//! node_exporter's `bonding` collector: configured and active member links of each
//! bonding interface, which node-mixin's NodeBondingDegraded alert compares. A kernel
//! without the bonding driver has no `bonding_masters` file: nothing to report.

use std::path::{Path, PathBuf};

use vigil_proto::MetricFamily;

use super::parse::read_optional;
use super::{HostPaths, Source, SourceError, read_file};

/// One bonding interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bond {
    pub master: String,
    /// Configured member links.
    pub slaves: u64,
    /// Members whose MII status is up.
    pub active: u64,
}

/// The bonds, or `None` without the bonding driver.
pub fn read_bonding(class_net: &Path) -> Result<Option<Vec<Bond>>, SourceError> {
    let Some(masters) = read_optional(&class_net.join("bonding_masters"))? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for master in masters.split_ascii_whitespace() {
        let dir = class_net.join(master);
        let slaves = read_file(&dir.join("bonding/slaves"))?;
        let (mut configured, mut active) = (0, 0);
        for slave in slaves.split_ascii_whitespace() {
            // lower_<dev> since Linux 4.x; older kernels call the link slave_<dev>.
            let lower = dir.join(format!("lower_{slave}/bonding_slave/mii_status"));
            let state = match read_optional(&lower)? {
                Some(s) => s,
                None => read_file(&dir.join(format!("slave_{slave}/bonding_slave/mii_status")))?,
            };
            configured += 1;
            if state.trim() == "up" {
                active += 1;
            }
        }
        out.push(Bond {
            master: master.to_owned(),
            slaves: configured,
            active,
        });
    }
    Ok(Some(out))
}

pub fn bonding_families(bonds: &[Bond]) -> [MetricFamily; 2] {
    let mut slaves = MetricFamily::gauge(
        "node_bonding_slaves",
        "Number of configured slaves per bonding interface.",
    );
    let mut active = MetricFamily::gauge(
        "node_bonding_active",
        "Number of active slaves per bonding interface.",
    );
    for b in bonds {
        slaves.push(&[("master", &b.master)], b.slaves as f64);
        active.push(&[("master", &b.master)], b.active as f64);
    }
    [slaves, active]
}

pub struct BondingSource {
    class_net: PathBuf,
}

impl BondingSource {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            class_net: paths.sys("class/net"),
        }
    }
}

impl Source for BondingSource {
    fn name(&self) -> &'static str {
        "bonding"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        if let Some(bonds) = read_bonding(&self.class_net)? {
            out.extend(bonding_families(&bonds));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructed_bonds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/constructed/bonding");
        let bonds = read_bonding(&root.join("class/net")).unwrap().unwrap();
        let summary: Vec<(&str, u64, u64)> = bonds
            .iter()
            .map(|b| (b.master.as_str(), b.slaves, b.active))
            .collect();
        assert_eq!(summary, [("bond0", 2, 1), ("bond1", 1, 1)]);
        let [slaves, active] = bonding_families(&bonds);
        assert_eq!(
            slaves.samples[0].labels[0],
            ("master".into(), "bond0".to_owned())
        );
        assert_eq!(active.samples[0].value, 1.0);
    }

    #[test]
    fn no_bonding_driver_is_nothing() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sys/class/net");
        assert!(read_bonding(&root).unwrap().is_none());
    }
}
