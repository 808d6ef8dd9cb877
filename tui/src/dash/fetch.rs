//! The background fetcher: every [`POLL_INTERVAL`] (and at once when the focused node
//! changes) it asks the collector for the fleet, its alerts, its recovery actions and,
//! when the node view is open, that node's details, all queries of a round at the same
//! time, each with its own deadline, and sends the result to the event loop as one
//! [`Snapshot`].
//!
//! A round whose node list fails means the collector is away: the loop gets
//! [`Action::FetchFailed`] and keeps showing what it had. Any other failed query only
//! leaves its part of the snapshot empty and is listed in [`Snapshot::errors`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::model::{
    self, Filesystem, FleetValues, GpuDetail, HostStats, Network, NodeDetail, RangeSeries,
    Recovery, Sample, Snapshot, by_node, by_node_gpu, resample,
};
use super::state::Action;
use crate::actions::is_missing_endpoint;
use crate::client::{Client, encode_query_value, unwrap_data};

pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// One query's deadline; a slow collector costs a round at most this.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The node view's charts reach this far back...
pub const HISTORY_SECS: i64 = 600;
/// ...one point every this many seconds.
const HISTORY_STEP_SECS: i64 = 10;
/// The Xid timeline's window and resolution.
const XID_WINDOW_SECS: i64 = 3600;
const XID_STEP_SECS: i64 = 60;

/// Runs until `shutdown` turns true or the receiver is gone.
pub async fn run(
    client: Arc<Client>,
    mut focus: watch::Receiver<Option<String>>,
    tx: mpsc::Sender<Action>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let node = focus.borrow_and_update().clone();
        let action = match round(&client, node.as_deref()).await {
            Ok(snapshot) => Action::Fetched(Box::new(snapshot)),
            Err(e) => Action::FetchFailed(e),
        };
        if tx.send(action).await.is_err() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            changed = focus.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

async fn get(client: &Client, path: &str) -> Result<Value, String> {
    match tokio::time::timeout(QUERY_TIMEOUT, client.get(path)).await {
        Ok(Ok(json)) => unwrap_data(json).map_err(|e| format!("{e:#}")),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!(
            "GET {path}: no answer within {}s",
            QUERY_TIMEOUT.as_secs()
        )),
    }
}

async fn query(client: &Client, expr: impl AsRef<str>) -> Result<Vec<Sample>, String> {
    let expr = expr.as_ref();
    let path = format!("/api/v1/query?query={}", encode_query_value(expr));
    get(client, &path)
        .await
        .map(|data| model::parse_vector(&data))
        .map_err(|e| format!("{expr}: {e}"))
}

async fn query_range(
    client: &Client,
    expr: impl AsRef<str>,
    start_secs: i64,
    end_secs: i64,
    step_secs: i64,
) -> Result<Vec<RangeSeries>, String> {
    let expr = expr.as_ref();
    let path = format!(
        "/api/v1/query_range?query={}&start={start_secs}&end={end_secs}&step={step_secs}",
        encode_query_value(expr)
    );
    get(client, &path)
        .await
        .map(|data| model::parse_matrix(&data))
        .map_err(|e| format!("{expr}: {e}"))
}

/// One logs search (the logs view's, run apart from the polling rounds).
pub async fn logs(client: &Client, path: &str) -> Result<super::logs::LogPage, String> {
    get(client, path)
        .await
        .and_then(|data| super::logs::parse_page(&data))
}

/// Keeps the value, or records the error and yields the default.
fn take<T: Default>(result: Result<T, String>, errors: &mut Vec<String>) -> T {
    result.unwrap_or_else(|e| {
        errors.push(e);
        T::default()
    })
}

pub const CPU_BUSY: &str =
    "100 * (1 - avg by (node) (rate(node_cpu_seconds_total{mode=\"idle\"}[1m])))";
pub const MEM_USED: &str =
    "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)";

/// One polling round.
pub async fn round(client: &Client, focus: Option<&str>) -> Result<Snapshot, String> {
    let detail = async {
        match focus {
            Some(node) => Some(node_detail(client, node).await),
            None => None,
        }
    };
    let (nodes, alerts, recovery, util, temp, power, gpu_up, cpu, mem, detail) = tokio::join!(
        get(client, "/api/v1/nodes"),
        get(client, "/api/v1/alerts"),
        recovery(client),
        query(client, "DCGM_FI_DEV_GPU_UTIL"),
        query(client, "DCGM_FI_DEV_GPU_TEMP"),
        query(client, "DCGM_FI_DEV_POWER_USAGE"),
        query(client, "vigil_gpu_up"),
        query(client, CPU_BUSY),
        query(client, MEM_USED),
        detail,
    );
    let mut nodes = model::parse_nodes(&nodes?);
    let mut errors = Vec::new();
    let alerts = model::parse_alerts(&take(alerts, &mut errors));
    let recovery = take(recovery, &mut errors);
    let values = FleetValues {
        util: by_node_gpu(&take(util, &mut errors)),
        temp: by_node_gpu(&take(temp, &mut errors)),
        power: by_node_gpu(&take(power, &mut errors)),
        gpu_up: by_node_gpu(&take(gpu_up, &mut errors)),
        cpu_pct: by_node(&take(cpu, &mut errors)),
        mem_pct: by_node(&take(mem, &mut errors)),
    };
    model::join_fleet(&mut nodes, &values);
    let detail = detail.map(|(d, errs)| {
        errors.extend(errs);
        d
    });
    Ok(Snapshot {
        taken_at: Some(Utc::now()),
        nodes,
        alerts,
        detail,
        recovery,
        errors,
    })
}

/// The recovery audit as the actions view shows it: the newest this many.
pub const ACTIONS_PATH: &str = "/api/v1/actions?limit=200";

/// The recovery audit; a collector without the endpoint is a value (the view says so),
/// not a failed query.
async fn recovery(client: &Client) -> Result<Recovery, String> {
    match get(client, ACTIONS_PATH).await {
        Ok(data) => Recovery::parse(data),
        Err(e) if is_missing_endpoint(&e) => Ok(Recovery {
            unsupported: true,
            ..Recovery::default()
        }),
        Err(e) => Err(e),
    }
}

/// A PromQL string literal.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The node view's queries, all at once.
async fn node_detail(client: &Client, node: &str) -> (NodeDetail, Vec<String>) {
    let n = quoted(node);
    let end = Utc::now().timestamp();
    let start = end - HISTORY_SECS;
    let range = |expr: String| async move {
        query_range(client, expr, start, end, HISTORY_STEP_SECS).await
    };
    let (gpus, host, util, mem, temp, power, clock, throttle, cpu, xids, rx, tx, read, write) = tokio::join!(
        query(
            client,
            format!("{{__name__=~\"DCGM_FI_DEV_.+|vigil_gpu_.+\",node={n}}}")
        ),
        query(
            client,
            format!(
                "{{__name__=~\"node_memory_MemAvailable_bytes|node_memory_MemTotal_bytes|node_load1|node_filesystem_avail_bytes|node_filesystem_size_bytes\",node={n},fstype!~\"tmpfs|devtmpfs|overlay|squashfs|ramfs|nsfs|proc|sysfs\"}}"
            )
        ),
        range(format!("DCGM_FI_DEV_GPU_UTIL{{node={n}}}")),
        range(format!("DCGM_FI_DEV_FB_USED{{node={n}}}")),
        range(format!("DCGM_FI_DEV_GPU_TEMP{{node={n}}}")),
        range(format!("DCGM_FI_DEV_POWER_USAGE{{node={n}}}")),
        range(format!("DCGM_FI_DEV_SM_CLOCK{{node={n}}}")),
        range(format!(
            "sum by (gpu) (vigil_gpu_throttle_active{{node={n}}})"
        )),
        range(format!(
            "100 * (1 - avg(rate(node_cpu_seconds_total{{mode=\"idle\",node={n}}}[1m])))"
        )),
        query_range(
            client,
            format!("increase(vigil_gpu_xid_errors_total{{node={n}}}[{XID_STEP_SECS}s])"),
            end - XID_WINDOW_SECS,
            end,
            XID_STEP_SECS,
        ),
        query(
            client,
            format!(
                "sum by (device) (rate(node_network_receive_bytes_total{{node={n},device!=\"lo\"}}[1m]))"
            )
        ),
        query(
            client,
            format!(
                "sum by (device) (rate(node_network_transmit_bytes_total{{node={n},device!=\"lo\"}}[1m]))"
            )
        ),
        query(
            client,
            format!("sum(rate(node_disk_read_bytes_total{{node={n}}}[1m]))")
        ),
        query(
            client,
            format!("sum(rate(node_disk_written_bytes_total{{node={n}}}[1m]))")
        ),
    );
    let mut errors = Vec::new();
    let start_ms = start * 1000;
    let step_ms = HISTORY_STEP_SECS * 1000;
    let steps = usize::try_from(HISTORY_SECS / HISTORY_STEP_SECS + 1).unwrap_or(0);
    let per_gpu = |series: Vec<RangeSeries>| -> BTreeMap<String, Vec<f64>> {
        series
            .into_iter()
            .filter_map(|s| {
                let gpu = s.labels.get("gpu")?.clone();
                Some((gpu, resample(&s.points, start_ms, step_ms, steps)))
            })
            .collect()
    };
    let mut gpus = gpus_from_samples(&take(gpus, &mut errors));
    let histories = [
        per_gpu(take(util, &mut errors)),
        per_gpu(take(mem, &mut errors)),
        per_gpu(take(temp, &mut errors)),
        per_gpu(take(power, &mut errors)),
        per_gpu(take(clock, &mut errors)),
        per_gpu(take(throttle, &mut errors)),
    ];
    for g in &mut gpus {
        let h = &mut g.history;
        let slots = [
            &mut h.util_pct,
            &mut h.mem_used_mib,
            &mut h.temp_c,
            &mut h.power_w,
            &mut h.sm_clock_mhz,
            &mut h.throttle_reasons,
        ];
        for (slot, map) in slots.into_iter().zip(&histories) {
            *slot = map.get(&g.index).cloned().unwrap_or_default();
        }
    }
    let mut host = host_from_samples(&take(host, &mut errors));
    host.cpu_history = take(cpu, &mut errors)
        .first()
        .map(|s| resample(&s.points, start_ms, step_ms, steps))
        .unwrap_or_default();
    host.cpu_pct = host
        .cpu_history
        .iter()
        .rev()
        .copied()
        .find(|v| v.is_finite());
    let rx = take(rx, &mut errors);
    let tx = take(tx, &mut errors);
    host.networks = rx
        .iter()
        .filter_map(|s| {
            let device = s.labels.get("device")?.clone();
            let tx_bps = tx
                .iter()
                .find(|t| t.labels.get("device") == Some(&device))
                .map_or(0.0, |t| t.value);
            Some(Network {
                device,
                rx_bps: s.value,
                tx_bps,
            })
        })
        .collect();
    host.networks
        .sort_by(|a, b| (b.rx_bps + b.tx_bps).total_cmp(&(a.rx_bps + a.tx_bps)));
    host.disk_read_bps = take(read, &mut errors).first().map(|s| s.value);
    host.disk_write_bps = take(write, &mut errors).first().map(|s| s.value);
    let xid_events = model::xid_events(&take(xids, &mut errors));
    (
        NodeDetail {
            node: node.to_owned(),
            gpus,
            host,
            xid_events,
            history_secs: HISTORY_SECS,
        },
        errors,
    )
}

/// The node's GPUs from its `DCGM_FI_DEV_*` and `vigil_gpu_*` series.
pub fn gpus_from_samples(samples: &[Sample]) -> Vec<GpuDetail> {
    let mut gpus: BTreeMap<String, GpuDetail> = BTreeMap::new();
    let mut fb: BTreeMap<String, [Option<f64>; 3]> = BTreeMap::new();
    for s in samples {
        let (Some(name), Some(gpu)) = (s.labels.get("__name__"), s.labels.get("gpu")) else {
            continue;
        };
        let g = gpus.entry(gpu.clone()).or_insert_with(|| GpuDetail {
            index: gpu.clone(),
            up: true,
            ..GpuDetail::default()
        });
        if let Some(model) = s.labels.get("modelName") {
            g.model.clone_from(model);
        }
        if let Some(uuid) = s.labels.get("UUID").filter(|u| !u.is_empty()) {
            g.uuid.clone_from(uuid);
        }
        let v = Some(s.value);
        match name.as_str() {
            "vigil_gpu_up" => g.up = s.value == 1.0,
            "vigil_gpu_throttle_active" if s.value == 1.0 => {
                if let Some(reason) = s.labels.get("reason") {
                    g.throttle.push(reason.clone());
                }
            }
            "vigil_gpu_xid_errors_total" => g.xid_total += s.value,
            "DCGM_FI_DEV_GPU_UTIL" => g.util_pct = v,
            "DCGM_FI_DEV_GPU_TEMP" => g.temp_c = v,
            "DCGM_FI_DEV_MEMORY_TEMP" => g.mem_temp_c = v,
            "DCGM_FI_DEV_POWER_USAGE" => g.power_w = v,
            "DCGM_FI_DEV_SM_CLOCK" => g.sm_clock_mhz = v,
            "DCGM_FI_DEV_MEM_CLOCK" => g.mem_clock_mhz = v,
            "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL" => g.ecc_sbe_volatile = v,
            "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL" => g.ecc_dbe_volatile = v,
            "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL" => g.ecc_sbe_aggregate = v,
            "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL" => g.ecc_dbe_aggregate = v,
            "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS" => g.remapped_correctable = v,
            "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS" => g.remapped_uncorrectable = v,
            "DCGM_FI_DEV_ROW_REMAP_PENDING" => g.remap_pending = v,
            "DCGM_FI_DEV_ROW_REMAP_FAILURE" => g.remap_failure = v,
            "DCGM_FI_DEV_XID_ERRORS" => g.last_xid = v,
            "DCGM_FI_DEV_FB_USED" => fb.entry(gpu.clone()).or_default()[0] = v,
            "DCGM_FI_DEV_FB_FREE" => fb.entry(gpu.clone()).or_default()[1] = v,
            "DCGM_FI_DEV_FB_RESERVED" => fb.entry(gpu.clone()).or_default()[2] = v,
            _ => {}
        }
    }
    for (gpu, [used, free, reserved]) in fb {
        if let Some(g) = gpus.get_mut(&gpu) {
            g.mem_used_mib = used;
            if let (Some(used), Some(free)) = (used, free) {
                g.mem_total_mib = Some(used + free + reserved.unwrap_or(0.0));
            }
        }
    }
    let mut gpus: Vec<GpuDetail> = gpus.into_values().collect();
    for g in &mut gpus {
        g.throttle.sort();
    }
    gpus.sort_by_key(|g| (g.index.parse::<u64>().unwrap_or(u64::MAX), g.index.clone()));
    gpus
}

/// Memory, load and filesystems from the node_exporter series.
pub fn host_from_samples(samples: &[Sample]) -> HostStats {
    let mut host = HostStats::default();
    let mut fs: BTreeMap<String, (Option<f64>, Option<f64>)> = BTreeMap::new();
    for s in samples {
        let Some(name) = s.labels.get("__name__") else {
            continue;
        };
        match name.as_str() {
            "node_memory_MemAvailable_bytes" => host.mem_available_bytes = Some(s.value),
            "node_memory_MemTotal_bytes" => host.mem_total_bytes = Some(s.value),
            "node_load1" => host.load1 = Some(s.value),
            "node_filesystem_size_bytes" | "node_filesystem_avail_bytes" => {
                let Some(mount) = s.labels.get("mountpoint") else {
                    continue;
                };
                let entry = fs.entry(mount.clone()).or_default();
                if name == "node_filesystem_size_bytes" {
                    entry.0 = Some(s.value);
                } else {
                    entry.1 = Some(s.value);
                }
            }
            _ => {}
        }
    }
    host.filesystems = fs
        .into_iter()
        .filter_map(|(mountpoint, (size, avail))| {
            let size_bytes = size.filter(|s| *s > 0.0)?;
            Some(Filesystem {
                mountpoint,
                size_bytes,
                avail_bytes: avail.unwrap_or(0.0),
            })
        })
        .collect();
    // The root first, then the biggest.
    host.filesystems.sort_by(|a, b| {
        (b.mountpoint == "/")
            .cmp(&(a.mountpoint == "/"))
            .then(b.size_bytes.total_cmp(&a.size_bytes))
    });
    host
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        let mut map: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        map.insert("__name__".to_owned(), name.to_owned());
        Sample { labels: map, value }
    }

    #[test]
    fn gpus_are_assembled_from_their_series() {
        let gpu = |g: &'static str| [("gpu", g), ("UUID", "GPU-x"), ("modelName", "H100")];
        let samples = vec![
            sample("DCGM_FI_DEV_GPU_UTIL", &gpu("10"), 57.0),
            sample("DCGM_FI_DEV_GPU_UTIL", &gpu("2"), 12.0),
            sample("DCGM_FI_DEV_FB_USED", &gpu("2"), 1000.0),
            sample("DCGM_FI_DEV_FB_FREE", &gpu("2"), 79_000.0),
            sample("DCGM_FI_DEV_FB_RESERVED", &gpu("2"), 559.0),
            sample("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", &gpu("2"), 1.0),
            sample("DCGM_FI_DEV_XID_ERRORS", &gpu("2"), 79.0),
            sample("vigil_gpu_up", &[("gpu", "3")], 0.0),
            sample("vigil_gpu_up", &[("gpu", "2")], 1.0),
            sample(
                "vigil_gpu_throttle_active",
                &[("gpu", "2"), ("reason", "sw_thermal")],
                1.0,
            ),
            sample(
                "vigil_gpu_throttle_active",
                &[("gpu", "2"), ("reason", "hw_slowdown")],
                1.0,
            ),
            sample(
                "vigil_gpu_throttle_active",
                &[("gpu", "2"), ("reason", "gpu_idle")],
                0.0,
            ),
            sample(
                "vigil_gpu_xid_errors_total",
                &[("gpu", "2"), ("xid", "79")],
                2.0,
            ),
            sample(
                "vigil_gpu_xid_errors_total",
                &[("gpu", "2"), ("xid", "48")],
                1.0,
            ),
        ];
        let gpus = gpus_from_samples(&samples);
        let order: Vec<&str> = gpus.iter().map(|g| g.index.as_str()).collect();
        assert_eq!(order, ["2", "3", "10"], "numeric order");
        let g = &gpus[0];
        assert!(g.up);
        assert_eq!(g.util_pct, Some(12.0));
        assert_eq!(g.mem_used_mib, Some(1000.0));
        assert_eq!(g.mem_total_mib, Some(80_559.0));
        assert_eq!(g.ecc_dbe_volatile, Some(1.0));
        assert_eq!(g.throttle, ["hw_slowdown", "sw_thermal"]);
        assert_eq!(g.xid_total, 3.0);
        assert_eq!(g.last_xid, Some(79.0));
        assert_eq!(g.model, "H100");
        assert!(!gpus[1].up, "vigil_gpu_up 0: lost");
    }

    #[test]
    fn host_memory_and_filesystems() {
        let samples = vec![
            sample("node_memory_MemTotal_bytes", &[], 100.0),
            sample("node_memory_MemAvailable_bytes", &[], 40.0),
            sample("node_load1", &[], 2.5),
            sample(
                "node_filesystem_size_bytes",
                &[("mountpoint", "/raid")],
                1e12,
            ),
            sample(
                "node_filesystem_avail_bytes",
                &[("mountpoint", "/raid")],
                5e11,
            ),
            sample("node_filesystem_size_bytes", &[("mountpoint", "/")], 1e11),
            sample("node_filesystem_avail_bytes", &[("mountpoint", "/")], 1e10),
            sample(
                "node_filesystem_size_bytes",
                &[("mountpoint", "/empty")],
                0.0,
            ),
        ];
        let host = host_from_samples(&samples);
        assert_eq!(host.mem_total_bytes, Some(100.0));
        assert_eq!(host.mem_available_bytes, Some(40.0));
        assert_eq!(host.load1, Some(2.5));
        let mounts: Vec<&str> = host
            .filesystems
            .iter()
            .map(|f| f.mountpoint.as_str())
            .collect();
        assert_eq!(mounts, ["/", "/raid"], "the root first, empty ones dropped");
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
