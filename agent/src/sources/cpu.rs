//! node_exporter's `cpu` collector: per-CPU time from the `cpuN` lines of /proc/stat,
//! thermal throttle counts and isolated CPUs from sysfs.
//!
//! Times are in USER_HZ ticks, which the kernel fixes at 100 for user space whatever
//! CONFIG_HZ is, so seconds are ticks / 100 exactly as node_exporter (via procfs)
//! computes them.
//!
//! Like node_exporter, the source keeps the last value of every counter and never lets
//! one go backwards: some kernels report idle and iowait slightly lower from one read
//! to the next, and a counter that drops reads as a reset to `rate()`. A drop of more
//! than three seconds of idle is a CPU hot-plug, and that CPU starts afresh.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use vigil_proto::MetricFamily;

use super::parse::{ParseError, parse_u64, read_attr};
use super::{HostPaths, Source, SourceError, read_file};

/// The kernel's USER_HZ, the unit of /proc/stat times.
const USER_HZ: f64 = 100.0;
/// An idle counter that falls this many seconds means the CPU was hot-plugged.
const JUMP_BACK_SECONDS: f64 = 3.0;

/// One `cpuN` line of /proc/stat, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    pub user: f64,
    pub nice: f64,
    pub system: f64,
    pub idle: f64,
    pub iowait: f64,
    pub irq: f64,
    pub softirq: f64,
    pub steal: f64,
    pub guest: f64,
    pub guest_nice: f64,
}

impl CpuTimes {
    fn fields(&self) -> [f64; 10] {
        [
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq,
            self.softirq,
            self.steal,
            self.guest,
            self.guest_nice,
        ]
    }

    fn from_fields(f: [f64; 10]) -> Self {
        Self {
            user: f[0],
            nice: f[1],
            system: f[2],
            idle: f[3],
            iowait: f[4],
            irq: f[5],
            softirq: f[6],
            steal: f[7],
            guest: f[8],
            guest_nice: f[9],
        }
    }

    /// `self` is the last exposed value, `new` the fresh read: each counter takes the
    /// larger, unless idle fell so far that the CPU was replaced.
    fn advance(&self, new: &CpuTimes) -> CpuTimes {
        if self.idle - new.idle >= JUMP_BACK_SECONDS {
            return *new;
        }
        let old = self.fields();
        let mut f = new.fields();
        for (n, o) in f.iter_mut().zip(old) {
            if *n < o {
                *n = o;
            }
        }
        Self::from_fields(f)
    }
}

/// The per-CPU lines of /proc/stat (not the aggregate `cpu` line), as (cpu id, times).
pub fn parse_cpu_times(text: &str) -> Result<Vec<(u32, CpuTimes)>, ParseError> {
    let mut cpus = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let mut fields = rest.split_ascii_whitespace();
        let Some(id) = fields.next() else {
            return Err(ParseError::new(line_no, "empty cpu line"));
        };
        if rest.starts_with(' ') {
            continue; // the aggregate "cpu  ..." line
        }
        let id = parse_u64(id, line_no, "cpu number")? as u32;
        let mut ticks = [0.0f64; 10];
        let mut count = 0;
        for (slot, field) in ticks.iter_mut().zip(fields) {
            *slot = parse_u64(field, line_no, "cpu time")? as f64 / USER_HZ;
            count += 1;
        }
        if count < 4 {
            return Err(ParseError::new(
                line_no,
                format!("cpu{id} has {count} fields, expected at least 4"),
            ));
        }
        cpus.push((id, CpuTimes::from_fields(ticks)));
    }
    if cpus.is_empty() {
        return Err(ParseError::new(1, "no cpuN lines"));
    }
    Ok(cpus)
}

/// Parses a kernel CPU list such as `0-3,8,10-11`; an empty list is no CPUs.
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>, ParseError> {
    let mut cpus = Vec::new();
    let text = text.trim();
    if text.is_empty() {
        return Ok(cpus);
    }
    for part in text.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let lo = parse_u64(lo, 1, "cpu list")? as u32;
        let hi = parse_u64(hi, 1, "cpu list")? as u32;
        if hi < lo {
            return Err(ParseError::new(1, format!("cpu range {part} is backwards")));
        }
        cpus.extend(lo..=hi);
    }
    Ok(cpus)
}

/// What sysfs says about the CPUs that does not change while the agent runs.
#[derive(Debug, Default)]
struct Topology {
    /// (package, thermal_throttle/package_throttle_count of the package's first CPU).
    package_throttles: Vec<(String, PathBuf)>,
    /// (package, core, thermal_throttle/core_throttle_count of the core's first CPU).
    core_throttles: Vec<(String, String, PathBuf)>,
    isolated: Vec<u32>,
}

impl Topology {
    /// Scans sysfs once: the throttle files exist only on physical x86 machines, and
    /// looking for them on every cycle would cost a few reads per CPU for nothing.
    fn scan(sysfs: &Path) -> Self {
        let mut topo = Topology::default();
        let cpu_dir = sysfs.join("devices/system/cpu");
        if let Some(text) = read_attr(&cpu_dir.join("isolated")) {
            topo.isolated = parse_cpu_list(&text).unwrap_or_default();
        }
        let Ok(entries) = std::fs::read_dir(&cpu_dir) else {
            return topo;
        };
        let mut cpus: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name();
                let id = name.to_str()?.strip_prefix("cpu")?.parse::<u32>().ok()?;
                Some((id, e.path()))
            })
            .collect();
        cpus.sort_unstable_by_key(|(id, _)| *id);
        for (_, dir) in cpus {
            let (Some(package), Some(core)) = (
                read_attr(&dir.join("topology/physical_package_id")),
                read_attr(&dir.join("topology/core_id")),
            ) else {
                continue;
            };
            let core_file = dir.join("thermal_throttle/core_throttle_count");
            if core_file.exists()
                && !topo
                    .core_throttles
                    .iter()
                    .any(|(p, c, _)| *p == package && *c == core)
            {
                topo.core_throttles.push((package.clone(), core, core_file));
            }
            let package_file = dir.join("thermal_throttle/package_throttle_count");
            if package_file.exists() && !topo.package_throttles.iter().any(|(p, _)| *p == package) {
                topo.package_throttles.push((package, package_file));
            }
        }
        topo
    }
}

pub struct CpuSource {
    stat_path: PathBuf,
    sysfs: PathBuf,
    last: Mutex<Vec<Option<CpuTimes>>>,
    topology: OnceLock<Topology>,
}

impl CpuSource {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            stat_path: paths.proc("stat"),
            sysfs: paths.sysfs.clone(),
            last: Mutex::new(Vec::new()),
            topology: OnceLock::new(),
        }
    }

    /// Applies the never-backwards rule against the previous cycle.
    fn monotonic(&self, cpus: &mut [(u32, CpuTimes)]) {
        // A poisoned lock only means an earlier cycle panicked mid-update; the values
        // in it are still whole `CpuTimes`, so carry on with them.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        for (id, times) in cpus.iter_mut() {
            let idx = *id as usize;
            if last.len() <= idx {
                last.resize(idx + 1, None);
            }
            if let Some(prev) = &last[idx] {
                *times = prev.advance(times);
            }
            last[idx] = Some(*times);
        }
    }
}

/// The families for a set of CPU times.
pub fn cpu_families(cpus: &[(u32, CpuTimes)]) -> [MetricFamily; 2] {
    let mut seconds = MetricFamily::counter(
        "node_cpu_seconds_total",
        "Seconds the CPUs spent in each mode.",
    );
    let mut guest = MetricFamily::counter(
        "node_cpu_guest_seconds_total",
        "Seconds the CPUs spent in guests (VMs) for each mode.",
    );
    seconds.samples.reserve(cpus.len() * 8);
    guest.samples.reserve(cpus.len() * 2);
    for (id, t) in cpus {
        let cpu = id.to_string();
        for (mode, v) in [
            ("user", t.user),
            ("nice", t.nice),
            ("system", t.system),
            ("idle", t.idle),
            ("iowait", t.iowait),
            ("irq", t.irq),
            ("softirq", t.softirq),
            ("steal", t.steal),
        ] {
            seconds.push(&[("cpu", &cpu), ("mode", mode)], v);
        }
        guest.push(&[("cpu", &cpu), ("mode", "user")], t.guest);
        guest.push(&[("cpu", &cpu), ("mode", "nice")], t.guest_nice);
    }
    [seconds, guest]
}

impl Source for CpuSource {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let text = read_file(&self.stat_path)?;
        let mut cpus = parse_cpu_times(&text).map_err(|e| e.at(&self.stat_path))?;
        self.monotonic(&mut cpus);
        out.extend(cpu_families(&cpus));

        let topo = self.topology.get_or_init(|| Topology::scan(&self.sysfs));
        if !topo.isolated.is_empty() {
            let mut isolated = MetricFamily::gauge(
                "node_cpu_isolated",
                "Whether each core is isolated, information from /sys/devices/system/cpu/isolated.",
            );
            for cpu in &topo.isolated {
                isolated.push(&[("cpu", &cpu.to_string())], 1.0);
            }
            out.push(isolated);
        }
        if !topo.package_throttles.is_empty() {
            let mut fam = MetricFamily::counter(
                "node_cpu_package_throttles_total",
                "Number of times this CPU package has been throttled.",
            );
            for (package, path) in &topo.package_throttles {
                if let Some(v) = read_attr(path).and_then(|v| v.parse::<u64>().ok()) {
                    fam.push(&[("package", package)], v as f64);
                }
            }
            out.push(fam);
        }
        if !topo.core_throttles.is_empty() {
            let mut fam = MetricFamily::counter(
                "node_cpu_core_throttles_total",
                "Number of times this CPU core has been throttled.",
            );
            for (package, core, path) in &topo.core_throttles {
                if let Some(v) = read_attr(path).and_then(|v| v.parse::<u64>().ok()) {
                    fam.push(&[("package", package), ("core", core)], v as f64);
                }
            }
            out.push(fam);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = include_str!("../../testdata/proc/stat");

    #[test]
    fn parses_captured_proc_stat() {
        let cpus = parse_cpu_times(STAT).unwrap();
        assert_eq!(cpus.len(), 2);
        // cpu0 4615 0 1419 40273 84 0 26 51 0 0
        let (id, t) = cpus[0];
        assert_eq!(id, 0);
        assert_eq!(t.user, 46.15);
        assert_eq!(t.system, 14.19);
        assert_eq!(t.idle, 402.73);
        assert_eq!(t.iowait, 0.84);
        assert_eq!(t.softirq, 0.26);
        assert_eq!(t.steal, 0.51);
        // cpu1 5522 0 2022 37955 857 0 71 57 0 0
        assert_eq!(cpus[1].0, 1);
        assert_eq!(cpus[1].1.user, 55.22);
        assert_eq!(cpus[1].1.iowait, 8.57);
    }

    #[test]
    fn families_have_node_exporter_labels() {
        let cpus = parse_cpu_times(STAT).unwrap();
        let [seconds, guest] = cpu_families(&cpus);
        assert_eq!(seconds.samples.len(), 16);
        assert_eq!(guest.samples.len(), 4);
        let s = &seconds.samples[3];
        assert_eq!(
            s.labels,
            vec![
                ("cpu".into(), "0".to_owned()),
                ("mode".into(), "idle".to_owned())
            ]
        );
        assert_eq!(s.value, 402.73);
    }

    #[test]
    fn counters_never_go_backwards_but_hotplug_resets() {
        let source = CpuSource::new(&HostPaths::default());
        let t = |idle: f64, user: f64| CpuTimes {
            idle,
            user,
            ..CpuTimes::default()
        };
        let mut first = vec![(0, t(100.0, 10.0))];
        source.monotonic(&mut first);
        let mut dip = vec![(0, t(99.5, 11.0))];
        source.monotonic(&mut dip);
        assert_eq!(dip[0].1.idle, 100.0, "a small dip keeps the old value");
        assert_eq!(dip[0].1.user, 11.0);
        let mut hotplug = vec![(0, t(5.0, 1.0))];
        source.monotonic(&mut hotplug);
        assert_eq!(hotplug[0].1.idle, 5.0, "a large drop is a new CPU");
        assert_eq!(hotplug[0].1.user, 1.0);
    }

    #[test]
    fn malformed_line_is_named() {
        let err = parse_cpu_times("cpu  1 2 3 4\ncpu0 1 2 x 4\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(parse_cpu_times("cpu0 1 2\n").is_err());
        assert!(parse_cpu_times("intr 5\n").is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-2,5\n").unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(parse_cpu_list("\n").unwrap(), Vec::<u32>::new());
        assert!(parse_cpu_list("3-1").is_err());
    }
}
