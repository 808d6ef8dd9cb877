//! node_exporter's `time` collector: the system clock, the local time zone's offset,
//! and the kernel's clock sources from sysfs.

use std::ffi::CStr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use vigil_proto::MetricFamily;

use super::parse::read_attr;
use super::{HostPaths, Source, SourceError};

/// One `clocksourceN` directory: its available and current clock sources.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockSource {
    pub device: String,
    pub available: Vec<String>,
    pub current: String,
}

/// Parses the two files of a clocksource directory.
pub fn parse_clocksource(device: &str, available: &str, current: &str) -> ClockSource {
    ClockSource {
        device: device.to_owned(),
        available: available
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect(),
        current: current.trim().to_owned(),
    }
}

/// The local time zone's abbreviation and offset from UTC in seconds at `unix_secs`.
pub fn zone_offset(unix_secs: i64) -> Option<(String, libc::c_long)> {
    let t = unix_secs as libc::time_t;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: both pointers are valid for the call; localtime_r is the reentrant form
    // and writes only into `tm`.
    let res = unsafe { libc::localtime_r(&t, tm.as_mut_ptr()) };
    if res.is_null() {
        return None;
    }
    // SAFETY: localtime_r succeeded, so `tm` is initialised.
    let tm = unsafe { tm.assume_init() };
    let name = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: tm_zone points at a NUL-terminated abbreviation owned by the C
        // library's time zone state, which lives for the whole process.
        unsafe { CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    Some((name, tm.tm_gmtoff))
}

pub struct TimeSource {
    clocksource_dir: PathBuf,
}

impl TimeSource {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            clocksource_dir: paths.sys("devices/system/clocksource"),
        }
    }

    fn clocksources(&self) -> Vec<ClockSource> {
        let Ok(entries) = std::fs::read_dir(&self.clocksource_dir) else {
            return Vec::new();
        };
        let mut dirs: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let index = name.strip_prefix("clocksource")?;
                index.parse::<u32>().ok()?;
                Some((index.to_owned(), e.path()))
            })
            .collect();
        dirs.sort();
        dirs.into_iter()
            .filter_map(|(index, dir)| {
                let available = read_attr(&dir.join("available_clocksource"))?;
                let current = read_attr(&dir.join("current_clocksource"))?;
                Some(parse_clocksource(&index, &available, &current))
            })
            .collect()
    }
}

pub fn clocksource_families(sources: &[ClockSource]) -> Vec<MetricFamily> {
    let mut available = MetricFamily::gauge(
        "node_time_clocksource_available_info",
        "Available clocksources read from '/sys/devices/system/clocksource'.",
    );
    let mut current = MetricFamily::gauge(
        "node_time_clocksource_current_info",
        "Current clocksource read from '/sys/devices/system/clocksource'.",
    );
    for s in sources {
        for cs in &s.available {
            available.push(&[("device", &s.device), ("clocksource", cs)], 1.0);
        }
        current.push(&[("device", &s.device), ("clocksource", &s.current)], 1.0);
    }
    vec![available, current]
}

impl Source for TimeSource {
    fn name(&self) -> &'static str {
        "time"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| SourceError::Other(format!("system clock before 1970: {e}")))?;
        out.push(
            MetricFamily::gauge(
                "node_time_seconds",
                "System time in seconds since epoch (1970).",
            )
            .with(&[], now.as_secs_f64()),
        );
        if let Some((zone, offset)) = zone_offset(now.as_secs() as i64) {
            out.push(
                MetricFamily::gauge(
                    "node_time_zone_offset_seconds",
                    "System time zone offset in seconds.",
                )
                .with(&[("time_zone", &zone)], offset as f64),
            );
        }
        let sources = self.clocksources();
        if !sources.is_empty() {
            out.extend(clocksource_families(&sources));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn captured_clocksource() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let source = TimeSource {
            clocksource_dir: root.join("sys/devices/system/clocksource"),
        };
        let sources = source.clocksources();
        assert_eq!(
            sources,
            vec![ClockSource {
                device: "0".into(),
                available: vec!["tsc".into(), "kvm-clock".into()],
                current: "tsc".into(),
            }]
        );
        let fams = clocksource_families(&sources);
        assert_eq!(fams[0].samples.len(), 2);
        assert_eq!(
            fams[1].samples[0].labels,
            vec![
                ("device".into(), "0".into()),
                ("clocksource".into(), "tsc".into())
            ]
        );
    }

    #[test]
    fn time_and_zone() {
        let source = TimeSource::new(&HostPaths::default());
        let mut out = Vec::new();
        source.collect(&mut out).unwrap();
        assert_eq!(out[0].name, "node_time_seconds");
        assert!(out[0].samples[0].value > 1.7e9);
        let (zone, offset) = zone_offset(0).unwrap();
        assert!(!zone.is_empty());
        assert!(offset.abs() <= 14 * 3600);
    }
}
