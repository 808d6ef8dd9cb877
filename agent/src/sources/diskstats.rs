//! node_exporter's `diskstats` collector: /proc/diskstats per block device, plus
//! `node_disk_info` and the udev-derived info families.
//!
//! Sectors in /proc/diskstats are always 512 bytes (the kernel's unit, not the
//! device's), times are milliseconds. Older kernels print 11 fields, 4.18 adds the four
//! discard fields and 5.5 the two flush fields; only the fields present are exposed, as
//! node_exporter does.
//!
//! udev's database (`/run/udev/data/b<major>:<minor>` under the root file system)
//! supplies the model, serial and file-system labels. Where it is not readable (a
//! container without /run/udev, this VM) those labels are empty, exactly what
//! node_exporter exposes in that case.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use vigil_proto::MetricFamily;

use super::parse::{Exclude, ParseError, excluded, parse_u64, read_attr};
use super::{HostPaths, Source, SourceError, read_file};

/// One /proc/diskstats line.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskStats {
    pub major: u32,
    pub minor: u32,
    pub device: String,
    /// The statistics after the name, as printed (11, 15 or 17 of them).
    pub fields: Vec<u64>,
}

pub fn parse_diskstats(text: &str) -> Result<Vec<DiskStats>, ParseError> {
    let mut disks = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let mut f = line.split_ascii_whitespace();
        let (Some(major), Some(minor), Some(device)) = (f.next(), f.next(), f.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(ParseError::new(
                line_no,
                format!("too few fields: {line:?}"),
            ));
        };
        let fields = f
            .map(|v| parse_u64(v, line_no, device))
            .collect::<Result<Vec<u64>, ParseError>>()?;
        if fields.len() < 11 {
            return Err(ParseError::new(
                line_no,
                format!(
                    "{device}: {} statistics, expected at least 11",
                    fields.len()
                ),
            ));
        }
        disks.push(DiskStats {
            major: parse_u64(major, line_no, "major")? as u32,
            minor: parse_u64(minor, line_no, "minor")? as u32,
            device: device.to_owned(),
            fields,
        });
    }
    Ok(disks)
}

/// (name, help, is counter, scale) of each /proc/diskstats field, in file order.
const FIELDS: [(&str, &str, bool, f64); 17] = [
    (
        "node_disk_reads_completed_total",
        "The total number of reads completed successfully.",
        true,
        1.0,
    ),
    (
        "node_disk_reads_merged_total",
        "The total number of reads merged.",
        true,
        1.0,
    ),
    (
        "node_disk_read_bytes_total",
        "The total number of bytes read successfully.",
        true,
        512.0,
    ),
    (
        "node_disk_read_time_seconds_total",
        "The total number of seconds spent by all reads.",
        true,
        0.001,
    ),
    (
        "node_disk_writes_completed_total",
        "The total number of writes completed successfully.",
        true,
        1.0,
    ),
    (
        "node_disk_writes_merged_total",
        "The number of writes merged.",
        true,
        1.0,
    ),
    (
        "node_disk_written_bytes_total",
        "The total number of bytes written successfully.",
        true,
        512.0,
    ),
    (
        "node_disk_write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        true,
        0.001,
    ),
    (
        "node_disk_io_now",
        "The number of I/Os currently in progress.",
        false,
        1.0,
    ),
    (
        "node_disk_io_time_seconds_total",
        "Total seconds spent doing I/Os.",
        true,
        0.001,
    ),
    (
        "node_disk_io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
        true,
        0.001,
    ),
    (
        "node_disk_discards_completed_total",
        "The total number of discards completed successfully.",
        true,
        1.0,
    ),
    (
        "node_disk_discards_merged_total",
        "The total number of discards merged.",
        true,
        1.0,
    ),
    (
        "node_disk_discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        true,
        1.0,
    ),
    (
        "node_disk_discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        true,
        0.001,
    ),
    (
        "node_disk_flush_requests_total",
        "The total number of flush requests completed successfully",
        true,
        1.0,
    ),
    (
        "node_disk_flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        true,
        0.001,
    ),
];

/// The `E:KEY=VALUE` properties of one udev database entry.
pub fn parse_udev(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("E:"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// What sysfs and udev say about one device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskInfo {
    pub udev: HashMap<String, String>,
    pub rotational: String,
    /// Block devices under a device-mapper device (`/sys/block/dm-0/slaves`), sorted.
    pub backing: Vec<String>,
}

impl DiskInfo {
    fn get(&self, key: &str) -> &str {
        self.udev.get(key).map_or("", String::as_str)
    }

    /// node_exporter's serial: SCSI_IDENT_SERIAL, then ID_SERIAL_SHORT, then ID_SERIAL.
    fn serial(&self) -> &str {
        ["SCSI_IDENT_SERIAL", "ID_SERIAL_SHORT", "ID_SERIAL"]
            .iter()
            .map(|k| self.get(k))
            .find(|v| !v.is_empty())
            .unwrap_or("")
    }
}

pub fn diskstats_families(disks: &[(DiskStats, DiskInfo)]) -> Vec<MetricFamily> {
    let mut stats: Vec<MetricFamily> = FIELDS
        .iter()
        .map(|(name, help, counter, _)| {
            if *counter {
                MetricFamily::counter(*name, *help)
            } else {
                MetricFamily::gauge(*name, *help)
            }
        })
        .collect();
    let mut info = MetricFamily::gauge("node_disk_info", "Info of /sys/block/<block_device>.");
    let mut fs_info =
        MetricFamily::gauge("node_disk_filesystem_info", "Info about disk filesystem.");
    let mut dm_info = MetricFamily::gauge(
        "node_disk_device_mapper_info",
        "Info about disk device mapper.",
    );
    let mut dm_backing = MetricFamily::gauge(
        "node_disk_device_mapper_backing_device_info",
        "Info about the underlying block devices of a device mapper device.",
    );
    let mut ata: Vec<(&str, MetricFamily)> = vec![
        (
            "ID_ATA_WRITE_CACHE",
            MetricFamily::gauge("node_disk_ata_write_cache", "ATA disk has a write cache."),
        ),
        (
            "ID_ATA_WRITE_CACHE_ENABLED",
            MetricFamily::gauge(
                "node_disk_ata_write_cache_enabled",
                "ATA disk has its write cache enabled.",
            ),
        ),
        (
            "ID_ATA_ROTATION_RATE_RPM",
            MetricFamily::gauge(
                "node_disk_ata_rotation_rate_rpm",
                "ATA disk rotation rate in RPMs (0 for SSDs).",
            ),
        ),
    ];
    for (d, di) in disks {
        let dev = d.device.as_str();
        info.push(
            &[
                ("device", dev),
                ("major", &d.major.to_string()),
                ("minor", &d.minor.to_string()),
                ("path", di.get("ID_PATH")),
                ("wwn", di.get("ID_WWN")),
                ("model", di.get("ID_MODEL")),
                ("serial", di.serial()),
                ("revision", di.get("ID_REVISION")),
                ("rotational", &di.rotational),
            ],
            1.0,
        );
        for ((family, (_, _, _, scale)), value) in stats.iter_mut().zip(FIELDS).zip(&d.fields) {
            family.push(&[("device", dev)], *value as f64 * scale);
        }
        let fs_type = di.get("ID_FS_TYPE");
        if !fs_type.is_empty() {
            fs_info.push(
                &[
                    ("device", dev),
                    ("type", fs_type),
                    ("usage", di.get("ID_FS_USAGE")),
                    ("uuid", di.get("ID_FS_UUID")),
                    ("version", di.get("ID_FS_VERSION")),
                ],
                1.0,
            );
        }
        let dm_name = di.get("DM_NAME");
        if !dm_name.is_empty() {
            dm_info.push(
                &[
                    ("device", dev),
                    ("name", dm_name),
                    ("uuid", di.get("DM_UUID")),
                    ("vg_name", di.get("DM_VG_NAME")),
                    ("lv_name", di.get("DM_LV_NAME")),
                    ("lv_layer", di.get("DM_LV_LAYER")),
                ],
                1.0,
            );
            for backing in &di.backing {
                dm_backing.push(&[("device", dev), ("backing_device", backing)], 1.0);
            }
        }
        if !di.get("ID_ATA").is_empty() {
            for (key, family) in ata.iter_mut() {
                if let Ok(v) = di.get(key).parse::<f64>() {
                    family.push(&[("device", dev)], v);
                }
            }
        }
    }
    let mut out = vec![info];
    out.extend(stats.into_iter().filter(|f| !f.samples.is_empty()));
    out.extend(
        [fs_info, dm_info, dm_backing]
            .into_iter()
            .chain(ata.into_iter().map(|(_, f)| f))
            .filter(|f| !f.samples.is_empty()),
    );
    out
}

pub struct DiskstatsSource {
    path: PathBuf,
    sys_block: PathBuf,
    udev_dir: PathBuf,
    device_exclude: Exclude,
}

impl DiskstatsSource {
    pub fn new(paths: &HostPaths, device_exclude: &str) -> Self {
        Self {
            path: paths.proc("diskstats"),
            sys_block: paths.sys("block"),
            udev_dir: paths.rootfs.join("run/udev/data"),
            device_exclude: Exclude::new("diskstats.device_exclude", device_exclude),
        }
    }

    fn info(&self, d: &DiskStats) -> DiskInfo {
        let udev_file = self.udev_dir.join(format!("b{}:{}", d.major, d.minor));
        let udev = std::fs::read_to_string(udev_file)
            .map(|t| parse_udev(&t))
            .unwrap_or_default();
        let block = self.sys_block.join(&d.device);
        let rotational =
            read_attr(&block.join("queue/rotational")).unwrap_or_else(|| "0".to_owned());
        let backing = if udev.contains_key("DM_NAME") {
            list_dir(&block.join("slaves"))
        } else {
            Vec::new()
        };
        DiskInfo {
            udev,
            rotational,
            backing,
        }
    }
}

fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

impl Source for DiskstatsSource {
    fn name(&self) -> &'static str {
        "diskstats"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let exclude = self.device_exclude.get()?;
        let text = read_file(&self.path)?;
        let disks = parse_diskstats(&text).map_err(|e| e.at(&self.path))?;
        let disks: Vec<(DiskStats, DiskInfo)> = disks
            .into_iter()
            .filter(|d| !excluded(exclude, &d.device))
            .map(|d| {
                let info = self.info(&d);
                (d, info)
            })
            .collect();
        out.extend(diskstats_families(&disks));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DiskstatsConfig;

    #[test]
    fn parses_captured_diskstats() {
        let disks = parse_diskstats(include_str!("../../testdata/proc/diskstats")).unwrap();
        let vda = disks.iter().find(|d| d.device == "vda").unwrap();
        assert_eq!((vda.major, vda.minor), (254, 0));
        assert_eq!(vda.fields.len(), 17);
        assert_eq!(vda.fields[0], 30529);
        assert_eq!(vda.fields[2], 3_154_586);
    }

    #[test]
    fn source_excludes_loop_devices_and_scales_units() {
        let source = DiskstatsSource::new(
            &HostPaths::testdata(),
            &DiskstatsConfig::default().device_exclude,
        );
        let mut out = Vec::new();
        source.collect(&mut out).unwrap();
        let fam = |n: &str| out.iter().find(|f| f.name == n).unwrap();
        let devices: Vec<&str> = fam("node_disk_reads_completed_total")
            .samples
            .iter()
            .map(|s| s.labels[0].1.as_str())
            .collect();
        assert!(devices.contains(&"vda"), "{devices:?}");
        assert!(
            !devices.iter().any(|d| d.starts_with("loop")),
            "{devices:?}"
        );
        let vda = |n: &str| {
            fam(n)
                .samples
                .iter()
                .find(|s| s.labels[0].1 == "vda")
                .unwrap()
                .value
        };
        assert_eq!(vda("node_disk_read_bytes_total"), 3_154_586.0 * 512.0);
        assert_eq!(vda("node_disk_read_time_seconds_total"), 31.322);
        assert_eq!(vda("node_disk_flush_requests_total"), 924.0);
        // udev data for vda is the constructed fixture in testdata/run/udev/data.
        let info = fam("node_disk_info")
            .samples
            .iter()
            .find(|s| s.labels[0].1 == "vda")
            .unwrap();
        let label = |k: &str| info.labels.iter().find(|(n, _)| n == k).unwrap().1.as_str();
        assert_eq!(label("major"), "254");
        assert_eq!(label("rotational"), "1");
        assert_eq!(label("serial"), "vigil-test-disk0");
        assert_eq!(label("path"), "pci-0000:00:05.0");
        let fs = fam("node_disk_filesystem_info");
        assert_eq!(fs.samples[0].labels[1], ("type".into(), "ext4".to_owned()));
    }

    #[test]
    fn old_kernel_format_has_only_eleven_fields() {
        let disks = parse_diskstats("   8       0 sda 1 2 3 4 5 6 7 8 9 10 11\n").unwrap();
        let fams = diskstats_families(&[(disks[0].clone(), DiskInfo::default())]);
        assert!(
            fams.iter()
                .any(|f| f.name == "node_disk_io_time_weighted_seconds_total")
        );
        assert!(
            !fams
                .iter()
                .any(|f| f.name == "node_disk_discards_completed_total")
        );
    }

    #[test]
    fn malformed_lines() {
        assert_eq!(parse_diskstats("8 0 sda 1 2 3\n").unwrap_err().line, 1);
        assert!(parse_diskstats("8 0 sda 1 2 3 4 5 6 7 8 9 10 x\n").is_err());
    }
}
