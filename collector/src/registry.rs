//! The fleet registry: every node that ships, with last-seen time, agent version and
//! GPU inventory, and `vigil_node_up{node}` so a rule fires on a silent node.
//!
//! The registry survives a restart through a small JSON file under the data dir
//! (`registry.json`), rewritten (temporary file, then rename) by
//! [`Registry::write_node_up`] when something changed. Rebuilding from the store
//! instead would lose the agent version and interval, which are not series, and a node
//! that went silent before the restart would vanish instead of reading down.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use vigil_proto::MetricFamily;
use vigil_proto::otlp::Decoded;
use vigil_rules::promql::Labels;

use crate::store::{Store, StoreError};

/// The file the registry lives in, under the data dir.
pub const REGISTRY_FILE: &str = "registry.json";
/// A node is up while it was seen within this many of its intervals...
const UP_INTERVALS: f64 = 3.0;
/// ...and never less than this, so a 1 s agent is not flapping on one slow batch.
const MIN_UP_WINDOW_MS: i64 = 15_000;

/// Why the registry file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{action} registry file {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One GPU as the agent last reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// NVML index (dcgm-exporter's `gpu` label).
    pub gpu: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    /// `vigil_gpu_up`: false when the GPU fell off the bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<bool>,
}

/// A node as `/api/v1/nodes` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node: String,
    /// When its last batch arrived (collector clock), RFC 3339.
    pub last_seen_at: String,
    pub last_seen_unix_ms: i64,
    /// Time of the newest sample it sent (agent clock), ms since the epoch.
    pub last_sample_unix_ms: i64,
    #[serde(default)]
    pub agent_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<f64>,
    /// Series in its latest snapshot.
    pub series: u64,
    pub gpus: Vec<GpuInfo>,
    /// Seen within max(3 intervals, 15 s) of the last `vigil_node_up` write (or now).
    pub up: bool,
}

/// What one agent snapshot says about its node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeObservation {
    pub node: String,
    pub agent_version: Option<String>,
    pub interval_secs: Option<f64>,
    pub series: u64,
    pub gpus: Vec<GpuInfo>,
    pub sample_ms: i64,
}

impl NodeObservation {
    /// Reads the node's identity and GPU inventory from resource `ri` of a decoded
    /// request: `vigil_gpu_up{gpu}` for every GPU NVML reports, and the first
    /// `DCGM_FI_DEV_*` series of each GPU for its UUID, model and PCI bus id.
    pub fn from_snapshot(decoded: &Decoded<'_>, ri: usize, node: &str, sample_ms: i64) -> Self {
        let res = &decoded.resources[ri];
        let mut gpus: BTreeMap<String, GpuInfo> = BTreeMap::new();
        for s in &decoded.samples[res.samples.clone()] {
            let name = decoded.name(s);
            let is_up = name == "vigil_gpu_up";
            if !is_up && !name.starts_with("DCGM_FI_DEV_") {
                continue;
            }
            let label = |want: &str| {
                decoded
                    .labels(s)
                    .filter(|(n, _)| *n == want)
                    .last()
                    .map(|(_, v)| v)
            };
            let Some(gpu) = label("gpu") else { continue };
            // Every DCGM series names its GPU: look up before allocating a key.
            if !gpus.contains_key(gpu) {
                gpus.insert(
                    gpu.to_owned(),
                    GpuInfo {
                        gpu: gpu.to_owned(),
                        uuid: None,
                        model_name: None,
                        pci_bus_id: None,
                        up: None,
                    },
                );
            }
            let Some(entry) = gpus.get_mut(gpu) else {
                continue;
            };
            if is_up {
                entry.up = Some(s.value == 1.0);
            } else if entry.uuid.is_none() {
                let owned = |want: &str| label(want).map(str::to_owned);
                entry.uuid = owned("UUID");
                entry.model_name = owned("modelName");
                entry.pci_bus_id = owned("pci_bus_id");
            }
        }
        let mut gpus: Vec<GpuInfo> = gpus.into_values().collect();
        gpus.sort_by_key(|g| (g.gpu.parse::<u64>().unwrap_or(u64::MAX), g.gpu.clone()));
        NodeObservation {
            node: node.to_owned(),
            agent_version: res.service_version.map(str::to_owned),
            interval_secs: res.interval_secs,
            series: res.samples.len() as u64,
            gpus,
            sample_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeState {
    last_seen_unix_ms: i64,
    last_sample_unix_ms: i64,
    agent_version: String,
    interval_secs: Option<f64>,
    series: u64,
    gpus: Vec<GpuInfo>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileFormat {
    nodes: BTreeMap<String, NodeState>,
}

#[derive(Debug, Default)]
struct Inner {
    nodes: BTreeMap<String, NodeState>,
    dirty: bool,
    /// `now_ms` of the last `write_node_up`, for `up` in listings between writes.
    last_up_check_ms: Option<i64>,
}

/// The fleet registry. Share it as `Arc<Registry>`.
#[derive(Debug)]
pub struct Registry {
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

impl Registry {
    /// A registry kept only in memory (tests, or no data dir).
    pub fn in_memory() -> Registry {
        Registry {
            path: None,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Opens the registry persisted in `data_dir`. A missing file is an empty fleet; a
    /// damaged one (a power cut mid-rename cannot cause that, a disk error can) is set
    /// aside as `registry.json.damaged` with a warning, since agents re-announce
    /// themselves within one interval.
    pub fn open(data_dir: &Path) -> Result<Registry, RegistryError> {
        let path = data_dir.join(REGISTRY_FILE);
        let nodes = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<FileFormat>(&bytes) {
                Ok(f) => f.nodes,
                Err(e) => {
                    let aside = data_dir.join(format!("{REGISTRY_FILE}.damaged"));
                    tracing::warn!(path = %path.display(), error = %e, "registry file is damaged; starting empty");
                    std::fs::rename(&path, &aside).map_err(|source| RegistryError::Io {
                        action: "setting aside",
                        path: path.clone(),
                        source,
                    })?;
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(RegistryError::Io {
                    action: "reading",
                    path,
                    source,
                });
            }
        };
        Ok(Registry {
            path: Some(path),
            inner: Mutex::new(Inner {
                nodes,
                dirty: false,
                last_up_check_ms: None,
            }),
        })
    }

    /// How many nodes the registry knows.
    pub fn node_count(&self) -> usize {
        lock(&self.inner).nodes.len()
    }

    /// Records a snapshot from a node, seen now.
    pub fn observe(&self, obs: NodeObservation) {
        self.observe_at(obs, now_ms());
    }

    /// Records a snapshot from a node, seen at `seen_ms`.
    pub fn observe_at(&self, obs: NodeObservation, seen_ms: i64) {
        let mut inner = lock(&self.inner);
        let state = inner.nodes.entry(obs.node).or_insert_with(|| NodeState {
            last_seen_unix_ms: seen_ms,
            last_sample_unix_ms: obs.sample_ms,
            agent_version: String::new(),
            interval_secs: None,
            series: 0,
            gpus: Vec::new(),
        });
        state.last_seen_unix_ms = state.last_seen_unix_ms.max(seen_ms);
        state.last_sample_unix_ms = state.last_sample_unix_ms.max(obs.sample_ms);
        if let Some(v) = obs.agent_version {
            state.agent_version = v;
        }
        if obs.interval_secs.is_some() {
            state.interval_secs = obs.interval_secs;
        }
        state.series = obs.series;
        // A snapshot without GPU series (GPU source failed this cycle) keeps the
        // last inventory rather than forgetting the node's GPUs.
        if !obs.gpus.is_empty() {
            let mut gpus = obs.gpus;
            // A GPU that fell off the bus reports only `vigil_gpu_up 0`: keep the
            // identity it had, which is what an operator needs to replace it.
            for g in gpus.iter_mut().filter(|g| g.uuid.is_none()) {
                if let Some(prev) = state.gpus.iter().find(|p| p.gpu == g.gpu) {
                    g.uuid.clone_from(&prev.uuid);
                    g.model_name.clone_from(&prev.model_name);
                    g.pci_bus_id.clone_from(&prev.pci_bus_id);
                }
            }
            state.gpus = gpus;
        }
        inner.dirty = true;
    }

    fn is_up(state: &NodeState, now_ms: i64) -> bool {
        let window_ms = state
            .interval_secs
            .map_or(0, |s| (s * UP_INTERVALS * 1000.0) as i64)
            .max(MIN_UP_WINDOW_MS);
        now_ms.saturating_sub(state.last_seen_unix_ms) <= window_ms
    }

    /// Every node, by name.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let inner = lock(&self.inner);
        let now = inner.last_up_check_ms.unwrap_or_else(now_ms).max(now_ms());
        inner
            .nodes
            .iter()
            .map(|(node, s)| NodeInfo {
                node: node.clone(),
                last_seen_at: crate::timefmt::rfc3339_millis(s.last_seen_unix_ms),
                last_seen_unix_ms: s.last_seen_unix_ms,
                last_sample_unix_ms: s.last_sample_unix_ms,
                agent_version: s.agent_version.clone(),
                interval_secs: s.interval_secs,
                series: s.series,
                gpus: s.gpus.clone(),
                up: Self::is_up(s, now),
            })
            .collect()
    }

    /// Appends `vigil_node_up{node}` at `now_ms` for every known node (1 when seen
    /// within max(3 × its interval, 15 s), else 0), and saves the registry file if it
    /// changed (a failed save is logged; the series still land). Blocks: call it on
    /// the blocking pool.
    pub fn write_node_up(&self, store: &Store, now_ms: i64) -> Result<(), StoreError> {
        let batch: Vec<(Labels, i64, f64)> = {
            let mut inner = lock(&self.inner);
            inner.last_up_check_ms = Some(now_ms);
            inner
                .nodes
                .iter()
                .map(|(node, s)| {
                    let labels =
                        Labels::from_pairs([("__name__", "vigil_node_up"), ("node", node)]);
                    let up = if Self::is_up(s, now_ms) { 1.0 } else { 0.0 };
                    (labels, now_ms, up)
                })
                .collect()
        };
        if let Err(e) = self.save() {
            tracing::warn!(error = %e, "saving the fleet registry failed");
        }
        if batch.is_empty() {
            return Ok(());
        }
        store.append_batch(&batch)?;
        Ok(())
    }

    /// Writes the registry file if anything changed since the last save.
    pub fn save(&self) -> Result<(), RegistryError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = {
            let mut inner = lock(&self.inner);
            if !inner.dirty {
                return Ok(());
            }
            inner.dirty = false;
            let file = FileFormat {
                nodes: inner.nodes.clone(),
            };
            // Serialising plain strings and numbers cannot fail.
            serde_json::to_vec(&file).unwrap_or_default()
        };
        let tmp = path.with_extension("json.tmp");
        let io = |action| {
            move |source| RegistryError::Io {
                action,
                path: path.clone(),
                source,
            }
        };
        let result = std::fs::write(&tmp, &bytes)
            .map_err(io("writing"))
            .and_then(|()| std::fs::rename(&tmp, path).map_err(io("renaming")));
        if result.is_err() {
            lock(&self.inner).dirty = true;
        }
        result
    }

    /// The registry's own metrics.
    pub fn metric_families(&self) -> Vec<MetricFamily> {
        let inner = lock(&self.inner);
        let now = inner.last_up_check_ms.unwrap_or_else(now_ms).max(now_ms());
        let mut last_seen = MetricFamily::gauge(
            "vigil_registry_node_last_seen_timestamp_seconds",
            "When the node's last batch arrived, in seconds since the epoch.",
        );
        let mut gpus = MetricFamily::gauge(
            "vigil_registry_node_gpus",
            "GPUs in the node's latest inventory.",
        );
        let mut up_nodes = 0.0;
        for (node, s) in &inner.nodes {
            last_seen.push(&[("node", node)], s.last_seen_unix_ms as f64 / 1000.0);
            gpus.push(&[("node", node)], s.gpus.len() as f64);
            if Self::is_up(s, now) {
                up_nodes += 1.0;
            }
        }
        vec![
            MetricFamily::gauge("vigil_registry_nodes", "Nodes the registry knows.")
                .with(&[], inner.nodes.len() as f64),
            MetricFamily::gauge(
                "vigil_registry_nodes_up",
                "Nodes seen recently enough to be up.",
            )
            .with(&[], up_nodes),
            last_seen,
            gpus,
        ]
    }
}
