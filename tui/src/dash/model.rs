//! What the dashboard knows about the fleet: typed snapshots built from the collector's
//! JSON answers. Pure: the fetcher ([`super::fetch`]) does the I/O and calls in here, and
//! the snapshot tests build the same types by hand.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use vigil_proto::actions::{Action as RecoveryAction, ActionList, KillSwitch};

use crate::actions::parse_rfc3339;
use crate::render::{node_of, parse_time};

/// One polling round's view of the collector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// When the round finished (the dashboard's clock).
    pub taken_at: Option<DateTime<Utc>>,
    pub nodes: Vec<NodeRow>,
    pub alerts: Vec<Alert>,
    /// The focused node's details, when the node view is open.
    pub detail: Option<NodeDetail>,
    /// The recovery audit (`/api/v1/actions`).
    pub recovery: Recovery,
    /// Queries of this round that failed; the rest of the snapshot is still good.
    pub errors: Vec<String>,
}

/// The collector's recovery actions and kill switch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovery {
    pub kill_switch: KillSwitch,
    /// Newest first.
    pub actions: Vec<RecoveryAction>,
    /// The collector has no actions API (it answered 404): an older version.
    pub unsupported: bool,
}

impl Recovery {
    /// `data` of `/api/v1/actions`, newest first whatever order it came in.
    pub fn parse(data: Value) -> Result<Self, String> {
        let list: ActionList = serde_json::from_value(data).map_err(|e| {
            format!("GET /api/v1/actions: the answer is not a list of actions: {e}")
        })?;
        let mut actions = list.actions;
        // Stable: equal times keep the collector's order.
        actions.sort_by_key(|a| std::cmp::Reverse(parse_rfc3339(&a.created_at)));
        Ok(Self {
            kill_switch: list.kill_switch,
            actions,
            unsupported: false,
        })
    }
}

/// One node of the fleet table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeRow {
    pub name: String,
    /// The registry's verdict: seen within a few of its intervals.
    pub up: bool,
    pub last_seen: Option<DateTime<Utc>>,
    pub agent_version: String,
    pub gpus: Vec<GpuRow>,
    pub cpu_pct: Option<f64>,
    pub mem_pct: Option<f64>,
}

/// One GPU's latest values as the fleet table shows them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuRow {
    /// dcgm-exporter's `gpu` label (the NVML index).
    pub index: String,
    /// False when the GPU fell off the bus (`vigil_gpu_up` 0).
    pub up: bool,
    pub util_pct: Option<f64>,
    pub temp_c: Option<f64>,
    pub power_w: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertState {
    Firing,
    Pending,
}

/// A pending or firing alert from `/api/v1/alerts`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub name: String,
    pub state: AlertState,
    pub node: String,
    pub severity: String,
    pub active_at: Option<DateTime<Utc>>,
    pub value: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Everything the node view shows about one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeDetail {
    pub node: String,
    pub gpus: Vec<GpuDetail>,
    pub host: HostStats,
    /// Xid errors in the timeline's window, newest first.
    pub xid_events: Vec<XidEvent>,
    /// How far back the history charts reach.
    pub history_secs: i64,
}

/// One GPU's latest values, counters and recent history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuDetail {
    pub index: String,
    pub model: String,
    pub uuid: String,
    pub up: bool,
    pub util_pct: Option<f64>,
    pub mem_used_mib: Option<f64>,
    /// Used + free + reserved, as NVML's total.
    pub mem_total_mib: Option<f64>,
    pub temp_c: Option<f64>,
    pub mem_temp_c: Option<f64>,
    pub power_w: Option<f64>,
    pub sm_clock_mhz: Option<f64>,
    pub mem_clock_mhz: Option<f64>,
    /// Active clock event reasons (`vigil_gpu_throttle_active` 1), by name.
    pub throttle: Vec<String>,
    pub ecc_sbe_volatile: Option<f64>,
    pub ecc_dbe_volatile: Option<f64>,
    pub ecc_sbe_aggregate: Option<f64>,
    pub ecc_dbe_aggregate: Option<f64>,
    pub remapped_correctable: Option<f64>,
    pub remapped_uncorrectable: Option<f64>,
    pub remap_pending: Option<f64>,
    pub remap_failure: Option<f64>,
    /// `vigil_gpu_xid_errors_total` over all codes.
    pub xid_total: f64,
    /// dcgm's `DCGM_FI_DEV_XID_ERRORS`: the last Xid code seen (0 none).
    pub last_xid: Option<f64>,
    pub history: GpuHistory,
}

/// Evenly spaced samples over [`NodeDetail::history_secs`], oldest first; a gap is NaN.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuHistory {
    pub util_pct: Vec<f64>,
    pub mem_used_mib: Vec<f64>,
    pub temp_c: Vec<f64>,
    pub power_w: Vec<f64>,
    pub sm_clock_mhz: Vec<f64>,
    /// How many clock event reasons were active.
    pub throttle_reasons: Vec<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostStats {
    pub cpu_pct: Option<f64>,
    pub cpu_history: Vec<f64>,
    pub load1: Option<f64>,
    pub mem_total_bytes: Option<f64>,
    pub mem_available_bytes: Option<f64>,
    pub filesystems: Vec<Filesystem>,
    pub disk_read_bps: Option<f64>,
    pub disk_write_bps: Option<f64>,
    pub networks: Vec<Network>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Filesystem {
    pub mountpoint: String,
    pub size_bytes: f64,
    pub avail_bytes: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub device: String,
    pub rx_bps: f64,
    pub tx_bps: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct XidEvent {
    pub at: DateTime<Utc>,
    pub gpu: String,
    pub xid: String,
    pub count: f64,
}

/// One series of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One series of a range query: (ms since the epoch, value) pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(i64, f64)>,
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// A Prometheus sample value: `"1.5"`, `"NaN"`, `"+Inf"`.
fn sample_value(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => match s.as_str() {
            "+Inf" | "Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            s => s.parse().ok(),
        },
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// `data` of an instant query (`resultType` vector) as samples.
pub fn parse_vector(data: &Value) -> Vec<Sample> {
    data.get("result")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .filter_map(|r| {
                    Some(Sample {
                        labels: labels_of(&r["metric"]),
                        value: sample_value(r.get("value")?.get(1)?)?,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `data` of a range query (`resultType` matrix) as series.
pub fn parse_matrix(data: &Value) -> Vec<RangeSeries> {
    data.get("result")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .map(|r| RangeSeries {
                    labels: labels_of(&r["metric"]),
                    points: r["values"]
                        .as_array()
                        .map(|ps| {
                            ps.iter()
                                .filter_map(|p| {
                                    let t = p.get(0)?.as_f64()?;
                                    Some(((t * 1000.0).round() as i64, sample_value(p.get(1)?)?))
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `data` of `/api/v1/nodes` (a list of the registry's `NodeInfo`), GPUs without values.
pub fn parse_nodes(data: &Value) -> Vec<NodeRow> {
    let Some(list) = data.as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|n| {
            let name = n.get("node")?.as_str()?.to_owned();
            let gpus = n["gpus"]
                .as_array()
                .map(|gs| {
                    gs.iter()
                        .filter_map(|g| {
                            Some(GpuRow {
                                index: g.get("gpu")?.as_str()?.to_owned(),
                                up: g.get("up").and_then(Value::as_bool).unwrap_or(true),
                                ..GpuRow::default()
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(NodeRow {
                name,
                up: n.get("up").and_then(Value::as_bool).unwrap_or(false),
                last_seen: parse_time(&n["last_seen_at"]).or_else(|| {
                    n.get("last_seen_unix_ms")
                        .and_then(Value::as_i64)
                        .and_then(DateTime::from_timestamp_millis)
                }),
                agent_version: n["agent_version"].as_str().unwrap_or("").to_owned(),
                gpus,
                cpu_pct: None,
                mem_pct: None,
            })
        })
        .collect()
}

/// `data.alerts` of `/api/v1/alerts`: pending and firing ones (inactive are dropped).
pub fn parse_alerts(data: &Value) -> Vec<Alert> {
    let Some(list) = data.get("alerts").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut alerts: Vec<Alert> = list
        .iter()
        .filter_map(|a| {
            let state = match a.get("state")?.as_str()? {
                "firing" => AlertState::Firing,
                "pending" => AlertState::Pending,
                _ => return None,
            };
            let labels = labels_of(&a["labels"]);
            Some(Alert {
                name: labels.get("alertname").cloned().unwrap_or_default(),
                state,
                node: node_of(&a["labels"]).to_owned(),
                severity: labels.get("severity").cloned().unwrap_or_default(),
                active_at: parse_time(&a["activeAt"]),
                value: a["value"].as_str().unwrap_or("").to_owned(),
                annotations: labels_of(&a["annotations"]),
                labels,
            })
        })
        .collect();
    sort_alerts(&mut alerts);
    alerts
}

/// Firing before pending, critical first, then by name, node and labels.
pub fn sort_alerts(alerts: &mut [Alert]) {
    alerts.sort_by(|a, b| {
        let key = |a: &Alert| (a.state, severity_rank(&a.severity));
        key(a)
            .cmp(&key(b))
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.node.cmp(&b.node))
            .then_with(|| a.labels.cmp(&b.labels))
    });
}

/// Lower is worse.
pub fn severity_rank(severity: &str) -> u8 {
    match severity {
        "critical" | "page" => 0,
        "warning" => 1,
        "info" => 2,
        _ => 3,
    }
}

/// The node a series belongs to: the collector's `node` label, else dcgm's `Hostname`.
pub fn series_node(labels: &BTreeMap<String, String>) -> Option<&str> {
    labels
        .get("node")
        .or_else(|| labels.get("Hostname"))
        .or_else(|| labels.get("instance"))
        .map(String::as_str)
}

/// Per-node, per-GPU values of one DCGM gauge.
pub type GpuValues = BTreeMap<(String, String), f64>;

pub fn by_node_gpu(samples: &[Sample]) -> GpuValues {
    samples
        .iter()
        .filter_map(|s| {
            let node = series_node(&s.labels)?.to_owned();
            let gpu = s.labels.get("gpu")?.clone();
            Some(((node, gpu), s.value))
        })
        .collect()
}

pub fn by_node(samples: &[Sample]) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter_map(|s| Some((series_node(&s.labels)?.to_owned(), s.value)))
        .collect()
}

/// The fleet queries' answers, to be joined onto the registry's node list.
#[derive(Debug, Default)]
pub struct FleetValues {
    pub util: GpuValues,
    pub temp: GpuValues,
    pub power: GpuValues,
    pub gpu_up: GpuValues,
    pub cpu_pct: BTreeMap<String, f64>,
    pub mem_pct: BTreeMap<String, f64>,
}

/// Fills the nodes' GPU and host values; a GPU that the queries know but the registry
/// does not (yet) list is added.
pub fn join_fleet(nodes: &mut [NodeRow], values: &FleetValues) {
    for node in nodes.iter_mut() {
        let name = node.name.clone();
        let known: Vec<String> = values
            .util
            .keys()
            .chain(values.temp.keys())
            .chain(values.gpu_up.keys())
            .filter(|(n, _)| *n == name)
            .map(|(_, g)| g.clone())
            .collect();
        for gpu in known {
            if !node.gpus.iter().any(|g| g.index == gpu) {
                node.gpus.push(GpuRow {
                    index: gpu,
                    up: true,
                    ..GpuRow::default()
                });
            }
        }
        node.gpus
            .sort_by_key(|g| (g.index.parse::<u64>().unwrap_or(u64::MAX), g.index.clone()));
        for gpu in &mut node.gpus {
            let key = (name.clone(), gpu.index.clone());
            gpu.util_pct = values.util.get(&key).copied();
            gpu.temp_c = values.temp.get(&key).copied();
            gpu.power_w = values.power.get(&key).copied();
            if let Some(up) = values.gpu_up.get(&key) {
                gpu.up = *up == 1.0;
            }
        }
        node.cpu_pct = values.cpu_pct.get(&name).copied();
        node.mem_pct = values.mem_pct.get(&name).copied();
    }
}

/// Values of `points` resampled onto `steps` slots from `start_ms` every `step_ms`
/// (NaN where a slot has no point).
pub fn resample(points: &[(i64, f64)], start_ms: i64, step_ms: i64, steps: usize) -> Vec<f64> {
    let mut out = vec![f64::NAN; steps];
    for &(t, v) in points {
        let slot = (t - start_ms).div_euclid(step_ms.max(1));
        if let Ok(slot) = usize::try_from(slot)
            && let Some(cell) = out.get_mut(slot)
        {
            *cell = v;
        }
    }
    out
}

/// Xid events from `increase(vigil_gpu_xid_errors_total[step])` over the window, newest
/// first.
pub fn xid_events(series: &[RangeSeries]) -> Vec<XidEvent> {
    let mut out: Vec<XidEvent> = series
        .iter()
        .flat_map(|s| {
            let gpu = s.labels.get("gpu").cloned().unwrap_or_default();
            let xid = s.labels.get("xid").cloned().unwrap_or_default();
            s.points
                .iter()
                .filter(|(_, v)| *v >= 0.5)
                .map(move |&(t, v)| XidEvent {
                    at: DateTime::from_timestamp_millis(t).unwrap_or_default(),
                    gpu: gpu.clone(),
                    xid: xid.clone(),
                    count: v.round(),
                })
        })
        .collect();
    out.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.gpu.cmp(&b.gpu)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vectors_matrices_and_nodes() {
        let v = parse_vector(&json!({"resultType":"vector","result":[
            {"metric":{"__name__":"DCGM_FI_DEV_GPU_UTIL","gpu":"0","node":"a"},"value":[1.0,"57"]},
            {"metric":{"gpu":"1","Hostname":"b"},"value":[1.0,"NaN"]}]}));
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].value, 57.0);
        assert!(v[1].value.is_nan());
        let util = by_node_gpu(&v);
        assert_eq!(util[&("a".into(), "0".into())], 57.0);
        assert!(util.contains_key(&("b".into(), "1".into())));

        let m = parse_matrix(&json!({"resultType":"matrix","result":[
            {"metric":{"gpu":"0","xid":"79"},"values":[[100.0,"0"],[160.0,"1"],[220.0,"2"]]}]}));
        assert_eq!(
            m[0].points,
            vec![(100_000, 0.0), (160_000, 1.0), (220_000, 2.0)]
        );
        let events = xid_events(&m);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].count, 2.0);
        assert_eq!(events[0].at.timestamp(), 220);
        let r = resample(&m[0].points, 100_000, 60_000, 4);
        assert_eq!(&r[..3], &[0.0, 1.0, 2.0]);
        assert!(r[3].is_nan());

        let mut nodes = parse_nodes(&json!([{"node":"a","last_seen_at":"2026-11-27T12:00:00Z",
            "last_seen_unix_ms":0,"last_sample_unix_ms":0,"agent_version":"0.1.0","series":10,
            "gpus":[{"gpu":"1","up":false},{"gpu":"0"}],"up":true}]));
        assert_eq!(nodes[0].gpus.len(), 2);
        assert!(!nodes[0].gpus[0].up);
        let values = FleetValues {
            util,
            gpu_up: [(("a".to_owned(), "2".to_owned()), 1.0)].into(),
            cpu_pct: [("a".to_owned(), 12.5)].into(),
            ..FleetValues::default()
        };
        join_fleet(&mut nodes, &values);
        let gpus: Vec<&str> = nodes[0].gpus.iter().map(|g| g.index.as_str()).collect();
        assert_eq!(gpus, ["0", "1", "2"]);
        assert_eq!(nodes[0].gpus[0].util_pct, Some(57.0));
        assert_eq!(nodes[0].cpu_pct, Some(12.5));
    }

    #[test]
    fn alerts_sort_firing_and_critical_first() {
        let alerts = parse_alerts(&json!({"alerts":[
            {"labels":{"alertname":"B","node":"n1","severity":"warning"},"annotations":{},
             "state":"firing","activeAt":"2026-11-27T12:00:00Z","value":"1"},
            {"labels":{"alertname":"A","instance":"n2","severity":"warning"},"annotations":{},
             "state":"pending","activeAt":"2026-11-27T12:00:00Z","value":"1"},
            {"labels":{"alertname":"C","Hostname":"n3","severity":"critical"},
             "annotations":{"summary":"s"},"state":"firing","value":"1"},
            {"labels":{"alertname":"D"},"state":"inactive"}]}));
        let names: Vec<&str> = alerts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["C", "B", "A"]);
        assert_eq!(alerts[0].node, "n3");
        assert_eq!(alerts[2].node, "n2");
        assert_eq!(alerts[0].annotations["summary"], "s");
    }
}
