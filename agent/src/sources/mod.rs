//! Sources: each reads one part of the machine and appends metric families.
//!
//! A source is a blocking function over the files it reads. The runner
//! ([`crate::collect`]) calls each on a blocking thread with a deadline, so a source that
//! errors or hangs (statvfs on a dead NFS mount) never delays the others; its result
//! becomes `node_scrape_collector_success{collector}` and
//! `node_scrape_collector_duration_seconds{collector}`.
//!
//! Parsing is split from reading: every parser is a pure function over the text of a
//! file, tested against captured real files in `agent/testdata/`.

pub mod bonding;
pub mod conntrack;
pub mod cpu;
pub mod diskstats;
pub mod entropy;
pub mod filefd;
pub mod filesystem;
pub mod gpu;
mod gpu_events;
mod gpu_fields;
pub mod hwmon;
pub mod loadavg;
pub mod mdadm;
pub mod meminfo;
pub mod netclass;
pub mod netdev;
pub mod netlink;
pub mod netstat;
#[cfg(test)]
mod node_names;
pub mod parse;
pub mod pressure;
pub mod procfile;
pub mod sockstat;
pub mod softnet;
pub mod stat;
pub mod statfs;
pub mod time;
pub mod timex;
pub mod uname;
pub mod vmstat;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vigil_proto::MetricFamily;

use crate::config::AgentConfig;

/// Why a source produced nothing, or less than usual.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path} line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

impl SourceError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SourceError::Io {
            path: path.into(),
            source,
        }
    }
}

/// One part of the machine, read on demand.
pub trait Source: Send + Sync {
    /// node_exporter's collector name (`cpu`, `meminfo`, ...), used as the `collector`
    /// label of the scrape-health metrics.
    fn name(&self) -> &'static str;

    /// Appends this source's families to `out`. Runs on a blocking thread; may block.
    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError>;
}

/// Where the host's pseudo file systems are mounted (node_exporter's `--path.*`), so a
/// containerised agent reads the host's and tests read captured trees. Also the
/// `[paths]` section of agent.toml.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostPaths {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub rootfs: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self {
            procfs: PathBuf::from("/proc"),
            sysfs: PathBuf::from("/sys"),
            rootfs: PathBuf::from("/"),
        }
    }
}

impl HostPaths {
    /// The captured tree in agent/testdata/, for the sources' tests.
    #[cfg(test)]
    pub(crate) fn testdata() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        Self {
            procfs: root.join("proc"),
            sysfs: root.join("sys"),
            rootfs: root,
        }
    }

    pub fn proc(&self, rel: &str) -> PathBuf {
        self.procfs.join(rel)
    }

    pub fn sys(&self, rel: &str) -> PathBuf {
        self.sysfs.join(rel)
    }
}

/// Reads a whole file to a string, naming the path on error.
pub fn read_file(path: &Path) -> Result<String, SourceError> {
    procfile::read_to_string(path).map_err(|e| SourceError::io(path, e))
}

/// The host sources, in exposition order. An explicit list: adding a source means
/// adding a line here.
pub fn host_sources(config: &AgentConfig) -> Vec<Arc<dyn Source>> {
    let paths = config.paths.clone();
    vec![
        Arc::new(bonding::BondingSource::new(&paths)),
        Arc::new(conntrack::ConntrackSource::new(&paths)),
        Arc::new(cpu::CpuSource::new(&paths)),
        Arc::new(diskstats::DiskstatsSource::new(
            &paths,
            &config.diskstats.device_exclude,
        )),
        Arc::new(entropy::EntropySource::new(&paths)),
        Arc::new(filefd::FilefdSource::new(&paths)),
        Arc::new(filesystem::FilesystemSource::new(config)),
        Arc::new(hwmon::HwmonSource::new(&paths)),
        Arc::new(loadavg::LoadavgSource::new(&paths)),
        Arc::new(mdadm::MdadmSource::new(&paths)),
        Arc::new(meminfo::MeminfoSource::new(&paths)),
        Arc::new(netclass::NetclassSource::new(
            &paths,
            &config.netdev.device_exclude,
        )),
        Arc::new(netdev::NetdevSource::new(
            &paths,
            &config.netdev.device_exclude,
        )),
        Arc::new(netstat::NetstatSource::new(&paths)),
        Arc::new(pressure::PressureSource::new(&paths)),
        Arc::new(sockstat::SockstatSource::new(&paths)),
        Arc::new(softnet::SoftnetSource::new(&paths)),
        Arc::new(stat::StatSource::new(&paths)),
        Arc::new(time::TimeSource::new(&paths)),
        Arc::new(timex::TimexSource),
        Arc::new(uname::UnameSource),
        Arc::new(vmstat::VmstatSource::new(&paths)),
    ]
}
