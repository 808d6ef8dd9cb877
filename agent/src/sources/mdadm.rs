//! node_exporter's `mdadm` collector: software RAID arrays from /proc/mdstat, which
//! node-mixin's NodeRAIDDegraded and NodeRAIDDiskFailure alerts read
//! (`node_md_disks_required`, `node_md_disks{state}`). No /proc/mdstat (the md driver
//! is not loaded) is no arrays, not a failure.

use std::path::PathBuf;

use vigil_proto::MetricFamily;

use super::parse::{ParseError, parse_u64, read_optional};
use super::{HostPaths, Source, SourceError};

/// One array, as procfs's MDStat describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MdStat {
    pub name: String,
    /// `active`, `inactive`, `recovering`, `resyncing` or `checking`.
    pub state: String,
    pub disks_active: u64,
    pub disks_total: u64,
    pub disks_failed: u64,
    pub disks_down: u64,
    pub disks_spare: u64,
    pub blocks: u64,
    pub blocks_synced: u64,
}

/// `[4/3]` of a status line: (total, active).
fn disk_counts(token: &str) -> Option<(u64, u64)> {
    let inner = token.strip_prefix('[')?.strip_suffix(']')?;
    let (total, active) = inner.split_once('/')?;
    Some((total.parse().ok()?, active.parse().ok()?))
}

/// `(59190400/468719616)` of a sync line: the blocks done.
fn synced_blocks(line: &str) -> Option<u64> {
    let start = line.find('(')?;
    let rest = &line[start + 1..];
    let (done, rest) = rest.split_once('/')?;
    rest.contains(')').then_some(())?;
    done.parse().ok()
}

pub fn parse_mdstat(text: &str) -> Result<Vec<MdStat>, ParseError> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut arrays = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty()
            || line.starts_with(' ')
            || line.starts_with("Personalities")
            || line.starts_with("unused")
        {
            continue;
        }
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.len() < 3 {
            return Err(ParseError::new(
                i + 1,
                format!("not enough fields in md line: {line:?}"),
            ));
        }
        let name = fields[0];
        if lines.len() <= i + 3 {
            return Err(ParseError::new(
                i + 1,
                format!("{name}: too few lines for an md device"),
            ));
        }
        let mut md = MdStat {
            name: name.to_owned(),
            state: fields[2].to_owned(),
            disks_failed: line.matches("(F)").count() as u64,
            disks_spare: line.matches("(S)").count() as u64,
            ..MdStat::default()
        };
        let status = lines[i + 1];
        let size = status
            .split_ascii_whitespace()
            .next()
            .ok_or_else(|| ParseError::new(i + 2, format!("{name}: empty status line")))?;
        md.blocks = parse_u64(size, i + 2, "blocks")?;
        if line.contains("raid0") || line.contains("linear") {
            // Only member disks carry a [n] in the device line.
            md.disks_total = line.matches('[').count() as u64;
            md.disks_active = md.disks_total;
        } else if !line.contains("inactive") {
            let tokens: Vec<&str> = status.split_ascii_whitespace().collect();
            let found = tokens.windows(2).find_map(|w| {
                let (total, active) = disk_counts(w[0])?;
                let map = w[1].strip_prefix('[')?.strip_suffix(']')?;
                map.chars()
                    .all(|c| c == 'U' || c == '_')
                    .then(|| (total, active, map.matches('_').count() as u64))
            });
            let Some((total, active, down)) = found else {
                return Err(ParseError::new(
                    i + 2,
                    format!("{name}: no [n/m] [UU] in {status:?}"),
                ));
            };
            (md.disks_total, md.disks_active, md.disks_down) = (total, active, down);
        }
        let mut sync_idx = i + 2;
        if lines[sync_idx].contains("bitmap") {
            sync_idx += 1;
        }
        let sync = lines.get(sync_idx).copied().unwrap_or("");
        md.blocks_synced = md.blocks;
        let (recovering, resyncing, checking) = (
            sync.contains("recovery"),
            sync.contains("resync"),
            sync.contains("check"),
        );
        if recovering || resyncing || checking {
            md.state = if recovering {
                "recovering"
            } else if checking {
                "checking"
            } else {
                "resyncing"
            }
            .to_owned();
            md.blocks_synced = if sync.contains("PENDING") || sync.contains("DELAYED") {
                0
            } else {
                synced_blocks(sync).ok_or_else(|| {
                    ParseError::new(sync_idx + 1, format!("{name}: no (done/total) in {sync:?}"))
                })?
            };
        }
        arrays.push(md);
    }
    Ok(arrays)
}

/// (label, procfs state) of `node_md_state`: procfs says resyncing/checking, the label
/// says resync/check.
const STATES: [(&str, &str); 5] = [
    ("active", "active"),
    ("inactive", "inactive"),
    ("recovering", "recovering"),
    ("resync", "resyncing"),
    ("check", "checking"),
];

pub fn mdadm_families(arrays: &[MdStat]) -> Vec<MetricFamily> {
    let mut required =
        MetricFamily::gauge("node_md_disks_required", "Total number of disks of device.");
    let mut disks = MetricFamily::gauge(
        "node_md_disks",
        "Number of active/failed/spare disks of device.",
    );
    let mut state = MetricFamily::gauge("node_md_state", "Indicates the state of md-device.");
    let mut blocks = MetricFamily::gauge("node_md_blocks", "Total number of blocks on device.");
    let mut synced = MetricFamily::gauge(
        "node_md_blocks_synced",
        "Number of blocks synced on device.",
    );
    for md in arrays {
        let dev = md.name.as_str();
        required.push(&[("device", dev)], md.disks_total as f64);
        for (label, v) in [
            ("active", md.disks_active),
            ("failed", md.disks_failed),
            ("spare", md.disks_spare),
        ] {
            disks.push(&[("device", dev), ("state", label)], v as f64);
        }
        for (label, procfs_state) in STATES {
            let v = if md.state == procfs_state { 1.0 } else { 0.0 };
            state.push(&[("device", dev), ("state", label)], v);
        }
        blocks.push(&[("device", dev)], md.blocks as f64);
        synced.push(&[("device", dev)], md.blocks_synced as f64);
    }
    vec![required, disks, state, blocks, synced]
}

pub struct MdadmSource {
    path: PathBuf,
}

impl MdadmSource {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            path: paths.proc("mdstat"),
        }
    }
}

impl Source for MdadmSource {
    fn name(&self) -> &'static str {
        "mdadm"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let Some(text) = read_optional(&self.path)? else {
            return Ok(());
        };
        let arrays = parse_mdstat(&text).map_err(|e| e.at(&self.path))?;
        if !arrays.is_empty() {
            out.extend(mdadm_families(&arrays));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_constructed_mdstat() {
        let arrays = parse_mdstat(include_str!("../../testdata/constructed/mdstat")).unwrap();
        let names: Vec<&str> = arrays.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["md127", "md1", "md2", "md3", "md4"]);
        let raid0 = &arrays[0];
        assert_eq!(
            (raid0.state.as_str(), raid0.disks_active, raid0.disks_total),
            ("active", 4, 4)
        );
        assert_eq!(raid0.blocks, 15_002_423_296);
        assert_eq!(raid0.blocks_synced, raid0.blocks);
        let resync = &arrays[1];
        assert_eq!(resync.state, "resyncing");
        assert_eq!(resync.blocks_synced, 59_190_400);
        let degraded = &arrays[2];
        assert_eq!(
            (
                degraded.disks_total,
                degraded.disks_active,
                degraded.disks_down
            ),
            (4, 3, 1)
        );
        assert_eq!((degraded.disks_failed, degraded.disks_spare), (1, 1));
        assert_eq!(degraded.state, "active");
        let inactive = &arrays[3];
        assert_eq!(
            (inactive.state.as_str(), inactive.disks_total),
            ("inactive", 0)
        );
        assert_eq!(inactive.disks_spare, 1);
        assert_eq!(arrays[4].state, "checking");
        assert_eq!(arrays[4].blocks_synced, 545_134_720);
    }

    #[test]
    fn families_feed_node_mixin_raid_alerts() {
        let arrays = parse_mdstat(include_str!("../../testdata/constructed/mdstat")).unwrap();
        let fams = mdadm_families(&arrays);
        let value = |name: &str, dev: &str, state: Option<&str>| {
            fams.iter()
                .find(|f| f.name == name)
                .unwrap()
                .samples
                .iter()
                .find(|s| s.labels[0].1 == dev && state.is_none_or(|st| s.labels[1].1 == st))
                .unwrap()
                .value
        };
        // NodeRAIDDegraded: disks_required - disks{state="active"} > 0 for md2.
        assert_eq!(value("node_md_disks_required", "md2", None), 4.0);
        assert_eq!(value("node_md_disks", "md2", Some("active")), 3.0);
        // NodeRAIDDiskFailure: disks{state="failed"} > 0.
        assert_eq!(value("node_md_disks", "md2", Some("failed")), 1.0);
        assert_eq!(value("node_md_state", "md1", Some("resync")), 1.0);
        assert_eq!(value("node_md_state", "md1", Some("active")), 0.0);
        assert_eq!(value("node_md_state", "md4", Some("check")), 1.0);
    }

    #[test]
    fn malformed_mdstat() {
        let err =
            parse_mdstat("md0 : active raid1 sda1[0] sdb1[1]\n      x blocks\n\n\n").unwrap_err();
        assert_eq!(err.line, 2);
        let err =
            parse_mdstat("md0 : active raid1 sda1[0]\n      5 blocks [2/1]\n\n\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(parse_mdstat("md0 :\n").is_err());
        assert!(
            parse_mdstat("Personalities : [raid1]\nunused devices: <none>\n")
                .unwrap()
                .is_empty()
        );
    }
}
