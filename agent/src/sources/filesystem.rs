//! node_exporter's `filesystem` collector: statvfs of every mount in /proc/1/mounts
//! (or /proc/mounts where pid 1's is hidden), with node_exporter's (≥ 1.7) label set
//! `device, mountpoint, fstype, device_error`.
//!
//! statvfs on a dead NFS server blocks in the kernel forever. The calls therefore run
//! on a helper thread ([`statfs`]) and each has its own timeout: a mount that does not
//! answer is reported with `device_error="mountpoint timeout"`, is remembered as stuck
//! and is not asked again until the abandoned call returns, so a hung mount costs one
//! thread, not one per cycle, and never hides the other mounts.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vigil_proto::MetricFamily;

use super::parse::{Exclude, ParseError, excluded};
use super::statfs::{FsStats, StatOutcome, Statter};
use super::{HostPaths, Source, SourceError, read_file};
use crate::config::AgentConfig;

/// One line of /proc/mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    pub options: String,
}

impl Mount {
    /// node_exporter reads `ro` from the mount options, which hold both the mount's
    /// and the superblock's flags in /proc/mounts.
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// Undoes the octal escapes the kernel writes for space, tab, newline and backslash.
fn unescape(field: &str) -> Cow<'_, str> {
    if !field.contains('\\') {
        return Cow::Borrowed(field);
    }
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(pos) = rest.find('\\') {
        out.push_str(&rest[..pos]);
        let code = rest.get(pos + 1..pos + 4);
        let decoded = match code {
            Some("040") => Some(' '),
            Some("011") => Some('\t'),
            Some("012") => Some('\n'),
            Some("134") => Some('\\'),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[pos + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[pos + 1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

pub fn parse_mounts(text: &str) -> Result<Vec<Mount>, ParseError> {
    let mut mounts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let mut f = line.split_ascii_whitespace();
        let (Some(device), Some(mountpoint), Some(fstype), Some(options)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            return Err(ParseError::new(
                i + 1,
                format!("malformed mount point information: {line:?}"),
            ));
        };
        mounts.push(Mount {
            device: unescape(device).into_owned(),
            mountpoint: unescape(mountpoint).into_owned(),
            fstype: fstype.to_owned(),
            options: options.to_owned(),
        });
    }
    Ok(mounts)
}

/// The mount point as the host sees it: node_exporter strips the rootfs prefix so a
/// containerised agent reports `/boot`, not `/host/boot`.
fn strip_rootfs<'a>(rootfs: &Path, mountpoint: &'a str) -> &'a str {
    let Some(root) = rootfs.to_str() else {
        return mountpoint;
    };
    let root = root.trim_end_matches('/');
    if root.is_empty() {
        return mountpoint;
    }
    match mountpoint.strip_prefix(root) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => mountpoint,
    }
}

/// One mount's outcome, ready to expose.
#[derive(Debug, Clone, PartialEq)]
pub struct FsReport {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    /// Empty when statvfs answered; otherwise why it did not.
    pub device_error: String,
    pub read_only: bool,
    pub stats: Option<FsStats>,
}

pub fn filesystem_families(reports: &[FsReport]) -> Vec<MetricFamily> {
    let mut device_error = MetricFamily::gauge(
        "node_filesystem_device_error",
        "Whether an error occurred while getting statistics for the given device.",
    );
    let mut readonly =
        MetricFamily::gauge("node_filesystem_readonly", "Filesystem read-only status.");
    let mut size = MetricFamily::gauge("node_filesystem_size_bytes", "Filesystem size in bytes.");
    let mut free = MetricFamily::gauge(
        "node_filesystem_free_bytes",
        "Filesystem free space in bytes.",
    );
    let mut avail = MetricFamily::gauge(
        "node_filesystem_avail_bytes",
        "Filesystem space available to non-root users in bytes.",
    );
    let mut files = MetricFamily::gauge("node_filesystem_files", "Filesystem total file nodes.");
    let mut files_free = MetricFamily::gauge(
        "node_filesystem_files_free",
        "Filesystem total free file nodes.",
    );
    for r in reports {
        let labels = [
            ("device", r.device.as_str()),
            ("mountpoint", r.mountpoint.as_str()),
            ("fstype", r.fstype.as_str()),
            ("device_error", r.device_error.as_str()),
        ];
        let ro = r.read_only || r.stats.is_some_and(|s| s.read_only);
        device_error.push(&labels, if r.stats.is_some() { 0.0 } else { 1.0 });
        readonly.push(&labels, if ro { 1.0 } else { 0.0 });
        if let Some(s) = r.stats {
            size.push(&labels, s.size_bytes);
            free.push(&labels, s.free_bytes);
            avail.push(&labels, s.avail_bytes);
            files.push(&labels, s.files);
            files_free.push(&labels, s.files_free);
        }
    }
    vec![device_error, readonly, size, free, avail, files, files_free]
}

pub struct FilesystemSource {
    procfs: PathBuf,
    rootfs: PathBuf,
    mount_points_exclude: Exclude,
    fs_types_exclude: Exclude,
    statter: Statter,
}

impl FilesystemSource {
    /// Each statvfs may take a quarter of the source's deadline before its mount counts
    /// as stuck, so up to three hung mounts still leave time to report the rest.
    pub fn new(config: &AgentConfig) -> Self {
        let paths = config.paths.clone();
        let timeout = Duration::from_secs_f64((config.source_timeout_secs / 4.0).clamp(0.05, 5.0));
        Self::with_timeout(&paths, config, timeout)
    }

    pub fn with_timeout(paths: &HostPaths, config: &AgentConfig, timeout: Duration) -> Self {
        Self {
            procfs: paths.procfs.clone(),
            rootfs: paths.rootfs.clone(),
            mount_points_exclude: Exclude::new(
                "filesystem.mount_points_exclude",
                &config.filesystem.mount_points_exclude,
            ),
            fs_types_exclude: Exclude::new(
                "filesystem.fs_types_exclude",
                &config.filesystem.fs_types_exclude,
            ),
            statter: Statter::new(timeout),
        }
    }

    /// /proc/1/mounts shows the host's mounts even from a container sharing the host's
    /// pid namespace; where pid 1 is hidden (hidepid) fall back to our own view.
    fn read_mounts(&self) -> Result<(PathBuf, String), SourceError> {
        let primary = self.procfs.join("1/mounts");
        match super::procfile::read_to_string(&primary) {
            Ok(text) => Ok((primary, text)),
            Err(_) => {
                let fallback = self.procfs.join("mounts");
                let text = read_file(&fallback)?;
                Ok((fallback, text))
            }
        }
    }

    /// The mounts to report, in file order, without excluded or repeated ones.
    fn selected(&self, mounts: Vec<Mount>) -> Result<Vec<(Mount, String)>, SourceError> {
        let mp_re = self.mount_points_exclude.get()?;
        let fs_re = self.fs_types_exclude.get()?;
        let mut seen: HashSet<(String, String, String)> = HashSet::new();
        let mut out = Vec::with_capacity(mounts.len());
        for m in mounts {
            let label = strip_rootfs(&self.rootfs, &m.mountpoint).to_owned();
            if excluded(mp_re, &label) || excluded(fs_re, &m.fstype) {
                continue;
            }
            if !seen.insert((m.device.clone(), label.clone(), m.fstype.clone())) {
                continue;
            }
            out.push((m, label));
        }
        Ok(out)
    }

    pub fn stuck_mounts(&self) -> Vec<String> {
        self.statter.stuck()
    }
}

impl Source for FilesystemSource {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let (path, text) = self.read_mounts()?;
        let mounts = parse_mounts(&text).map_err(|e| e.at(&path))?;
        let selected = self.selected(mounts)?;
        let targets: Vec<(PathBuf, String)> = selected
            .iter()
            .map(|(_, label)| {
                (
                    self.rootfs.join(label.trim_start_matches('/')),
                    label.clone(),
                )
            })
            .collect();
        let outcomes = self.statter.stat_all(targets);
        let reports: Vec<FsReport> = selected
            .into_iter()
            .zip(outcomes)
            .map(|((m, label), outcome)| {
                let read_only = m.read_only();
                let (device_error, stats) = match outcome {
                    StatOutcome::Ok(s) => (String::new(), Some(s)),
                    StatOutcome::Failed(e) => (e, None),
                    StatOutcome::Stuck => ("mountpoint timeout".to_owned(), None),
                };
                FsReport {
                    device: m.device,
                    mountpoint: label,
                    fstype: m.fstype,
                    device_error,
                    read_only,
                    stats,
                }
            })
            .collect();
        out.extend(filesystem_families(&reports));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = include_str!("../../testdata/proc/1/mounts");

    #[test]
    fn parses_captured_mounts() {
        let mounts = parse_mounts(MOUNTS).unwrap();
        let root = mounts.iter().find(|m| m.mountpoint == "/").unwrap();
        assert_eq!(root.device, "/dev/vda");
        assert_eq!(root.fstype, "ext4");
        assert!(!root.read_only());
        let tools = mounts
            .iter()
            .find(|m| m.mountpoint == "/mnt/sandboxing/model_tools_env/v1/python")
            .unwrap();
        assert!(tools.read_only());
        assert_eq!(tools.fstype, "tmpfs");
    }

    #[test]
    fn escapes_and_malformed_lines() {
        let m = parse_mounts("/dev/sdb1 /mnt/my\\040disk\\011x ext4 rw 0 0\n").unwrap();
        assert_eq!(m[0].mountpoint, "/mnt/my disk\tx");
        assert_eq!(unescape("a\\b"), "a\\b");
        assert_eq!(parse_mounts("a b c d\nbroken line\n").unwrap_err().line, 2);
    }

    #[test]
    fn default_excludes_leave_real_filesystems() {
        let source = FilesystemSource::new(&AgentConfig::default());
        let selected = source.selected(parse_mounts(MOUNTS).unwrap()).unwrap();
        let labels: Vec<&str> = selected.iter().map(|(_, l)| l.as_str()).collect();
        assert!(labels.contains(&"/"), "{labels:?}");
        assert!(
            !labels
                .iter()
                .any(|l| l.starts_with("/sys") || l.starts_with("/proc") || l.starts_with("/dev")),
            "{labels:?}"
        );
        // "devpts /dev/pts" and "tmpfs /dev/shm" appear twice in the capture.
        let mut unique = labels.clone();
        unique.dedup();
        assert_eq!(unique.len(), labels.len());
    }

    #[test]
    fn rootfs_prefix_is_stripped() {
        assert_eq!(strip_rootfs(Path::new("/"), "/boot"), "/boot");
        assert_eq!(strip_rootfs(Path::new("/host"), "/host/boot"), "/boot");
        assert_eq!(strip_rootfs(Path::new("/host/"), "/host"), "/");
        assert_eq!(strip_rootfs(Path::new("/host"), "/hostile"), "/hostile");
    }

    #[test]
    fn failed_mount_reports_device_error_and_others_still_report() {
        let reports = vec![
            FsReport {
                device: "/dev/vda".into(),
                mountpoint: "/".into(),
                fstype: "ext4".into(),
                device_error: String::new(),
                read_only: false,
                stats: Some(FsStats {
                    size_bytes: 100.0,
                    free_bytes: 40.0,
                    avail_bytes: 30.0,
                    files: 10.0,
                    files_free: 5.0,
                    read_only: false,
                }),
            },
            FsReport {
                device: "nfs:/export".into(),
                mountpoint: "/mnt/nfs".into(),
                fstype: "nfs4".into(),
                device_error: "mountpoint timeout".into(),
                read_only: true,
                stats: None,
            },
        ];
        let families = filesystem_families(&reports);
        let by_name = |n: &str| families.iter().find(|f| f.name == n).unwrap();
        let errors = by_name("node_filesystem_device_error");
        assert_eq!(errors.samples.len(), 2);
        assert_eq!(errors.samples[1].value, 1.0);
        assert_eq!(
            errors.samples[1].labels[3],
            ("device_error".into(), "mountpoint timeout".to_owned())
        );
        assert_eq!(by_name("node_filesystem_readonly").samples[1].value, 1.0);
        assert_eq!(by_name("node_filesystem_size_bytes").samples.len(), 1);
        assert_eq!(
            by_name("node_filesystem_avail_bytes").samples[0].value,
            30.0
        );
    }
}
