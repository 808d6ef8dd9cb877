//! Evaluates the whole GPU rule pack (rules/packs/gpu.yml) over 1,000 nodes × 8 GPUs of
//! every series the pack reads, 15 minutes of 15 s samples held in a MemoryStorage, and
//! prints the time per evaluation round (all groups once): min, mean, median and max.
//!
//!     cargo run --release -p vigil-rules --example bench_gpu_pack [ROUNDS]
//!
//! Target: under 50 ms per round. Two checksums follow the timings, so a change to the
//! engine can be shown to leave the results alone: one over everything the rounds
//! produced (samples to append and the active alerts with their annotations), one over
//! each rule expression's own result, evaluated once outside the timed rounds. `--per-rule` also times each rule's expression alone,
//! to show where the time goes. `--nodes N` fills a smaller (or larger) fleet than the
//! default 1,000 nodes, for instruction-counting runs under callgrind, which would
//! otherwise spend minutes filling the store.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::time::{Duration, Instant};

use vigil_rules::group::{Group, GroupOptions};
use vigil_rules::promql::{Engine, Labels, MemoryStorage};

/// Nodes filled unless `--nodes` says otherwise.
const NODES: usize = 1000;
const GPUS: usize = 8;
const STEP_MS: i64 = 15_000;
const SAMPLES: i64 = 61; // 15 minutes of 15 s samples, both ends included.
const XIDS: [&str; 15] = [
    "13", "31", "43", "45", "48", "62", "63", "64", "74", "79", "92", "94", "95", "119", "120",
];
const REASONS: [&str; 9] = [
    "gpu_idle",
    "applications_clocks_setting",
    "sw_power_cap",
    "hw_slowdown",
    "sync_boost",
    "sw_thermal",
    "hw_thermal",
    "hw_power_brake",
    "display_clocks_setting",
];

/// An order-independent checksum: the wrapping sum of each item's hash, so results
/// that come out in another order (nothing in PromQL orders a vector) still agree.
#[derive(Default)]
struct Checksum(u64);

impl Checksum {
    fn add(&mut self, item: impl Hash) {
        // DefaultHasher::new() uses fixed keys: the same item hashes alike in every run.
        let mut h = DefaultHasher::new();
        item.hash(&mut h);
        self.0 = self.0.wrapping_add(h.finish());
    }

    fn sample(&mut self, labels: &Labels, t_ms: i64, v: f64) {
        self.add((labels.to_string(), t_ms, v.to_bits()));
    }
}

fn labels(name: &str, pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(std::iter::once(("__name__", name)).chain(pairs.iter().copied()))
}

/// Fills the store; about 1 in 200 GPUs has a fault somewhere, so alerts fire and
/// their templates are expanded as they would be in a real fleet.
fn fill(st: &mut MemoryStorage, nodes: usize) -> usize {
    let mut series = 0;
    for n in 0..nodes {
        let instance = format!("gpu-node-{n:04}:9435");
        let host = format!("gpu-node-{n:04}");
        let node_labels = [("instance", instance.as_str()), ("job", "vigil")];
        let mut add = |l: Labels, f: &dyn Fn(i64) -> f64| {
            for i in 0..SAMPLES {
                st.add(l.clone(), i * STEP_MS, f(i));
            }
            series += 1;
        };
        add(labels("vigil_gpu_count", &node_labels), &|_| GPUS as f64);
        add(labels("vigil_gpu_expected_count", &node_labels), &|_| {
            GPUS as f64
        });
        for g in 0..GPUS {
            let gpu = g.to_string();
            let uuid = format!("GPU-{n:04}-{g}");
            let bus = format!("00000000:{:02x}:00.0", 0x18 + g * 0x10);
            let dev = format!("nvidia{g}");
            let faulty = (n * GPUS + g) % 200 == 7;
            let short = [
                ("gpu", gpu.as_str()),
                ("instance", instance.as_str()),
                ("job", "vigil"),
            ];
            let dcgm = [
                ("gpu", gpu.as_str()),
                ("UUID", uuid.as_str()),
                ("pci_bus_id", bus.as_str()),
                ("device", dev.as_str()),
                ("modelName", "NVIDIA H100 80GB HBM3"),
                ("Hostname", host.as_str()),
                ("instance", instance.as_str()),
                ("job", "vigil"),
            ];
            for xid in XIDS {
                let l = labels(
                    "vigil_gpu_xid_errors_total",
                    &[
                        ("gpu", &gpu),
                        ("UUID", &uuid),
                        ("xid", xid),
                        ("instance", &instance),
                        ("job", "vigil"),
                    ],
                );
                let fires = faulty && xid == "79";
                add(l, &move |i| if fires && i > 50 { 1.0 } else { 0.0 });
            }
            for reason in REASONS {
                let l = labels(
                    "vigil_gpu_throttle_active",
                    &[short[0], ("reason", reason), short[1], short[2]],
                );
                let on = faulty && reason == "hw_thermal";
                add(l, &move |_| if on { 1.0 } else { 0.0 });
            }
            add(labels("vigil_gpu_up", &short), &|_| 1.0);
            add(labels("DCGM_FI_DEV_GPU_TEMP", &dcgm), &move |i| {
                if faulty { 88.0 } else { 60.0 + (i % 7) as f64 }
            });
            add(labels("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", &dcgm), &|_| 0.0);
            add(labels("DCGM_FI_DEV_ROW_REMAP_FAILURE", &dcgm), &|_| 0.0);
            add(labels("DCGM_FI_DEV_ROW_REMAP_PENDING", &dcgm), &move |_| {
                if faulty { 1.0 } else { 0.0 }
            });
            add(labels("DCGM_FI_DEV_RETIRED_PENDING", &dcgm), &|_| 0.0);
            add(
                labels("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", &dcgm),
                &move |i| if faulty { (i * 10) as f64 } else { 3.0 },
            );
            for name in [
                "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
                "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
                "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
                "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
            ] {
                add(labels(name, &dcgm), &|_| 0.0);
            }
        }
    }
    series
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let per_rule = args.iter().any(|a| a == "--per-rule");
    let nodes_at = args.iter().position(|a| a == "--nodes");
    let nodes: usize = match nodes_at {
        Some(i) => args
            .get(i + 1)
            .ok_or("--nodes needs a number")?
            .parse()
            .map_err(|e| format!("--nodes: {e}"))?,
        None => NODES,
    };
    let rounds: usize = args
        .iter()
        .enumerate()
        .find(|&(i, a)| !a.starts_with("--") && nodes_at.is_none_or(|n| i != n + 1))
        .map(|(_, a)| a)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20);
    let pack = Path::new(env!("CARGO_MANIFEST_DIR")).join("packs/gpu.yml");
    let file = vigil_rules::rulefile::load_file(&pack).map_err(|e| format!("{e:?}"))?;

    let t0 = Instant::now();
    let mut st = MemoryStorage::new();
    let series = fill(&mut st, nodes);
    println!(
        "filled {series} series × {SAMPLES} samples ({nodes} nodes × {GPUS} GPUs) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let opts = GroupOptions {
        default_interval_ms: STEP_MS,
        restore_for_state: false,
        ..GroupOptions::default()
    };
    let mut groups: Vec<Group> = file
        .groups
        .iter()
        .map(|g| Group::new(pack.clone(), g, &opts))
        .collect();
    let engine = Engine::default();
    let end = (SAMPLES - 1) * STEP_MS;
    let mut times = Vec::with_capacity(rounds);
    let mut alerts = 0;
    let mut rounds_sum = Checksum::default();
    for r in 0..rounds {
        // Evaluate at the last sample's time each round, so every round sees the same
        // 15 minutes of data and the numbers are comparable.
        let start = Instant::now();
        let mut recorded = Vec::new();
        for g in &mut groups {
            let res = g.eval(&engine, &st, end);
            if let Some(e) = res.errors.first() {
                return Err(format!("rule {} failed: {}", e.rule, e.error).into());
            }
            recorded.extend(res.samples);
        }
        times.push(start.elapsed());
        for s in &recorded {
            rounds_sum.sample(&s.labels, s.t_ms, s.v);
        }
        if r == 0 {
            alerts = groups
                .iter()
                .flat_map(|g| g.alerting_rules())
                .map(|a| a.alerts().len())
                .sum();
        }
        // Not appended: appending would change the data each round.
        drop(recorded);
    }
    for a in groups.iter().flat_map(|g| g.alerting_rules()) {
        for al in a.alerts() {
            rounds_sum.add((
                al.labels.to_string(),
                &al.annotations,
                al.state.as_str(),
                al.value.to_bits(),
                al.active_at_ms,
                al.fired_at_ms,
                al.resolved_at_ms,
                al.keep_firing_since_ms,
            ));
        }
    }
    let mut exprs_sum = Checksum::default();
    let mut exprs_samples = 0;
    for g in &file.groups {
        for r in &g.rules {
            match engine.instant(&st, &r.parsed, end)? {
                vigil_rules::promql::Value::Vector(v) => {
                    exprs_samples += v.len();
                    for s in &v {
                        exprs_sum.add((&r.name, s.labels.to_string(), s.t_ms, s.v.to_bits()));
                    }
                }
                other => exprs_sum.add((&r.name, format!("{other:?}"))),
            }
        }
    }
    if per_rule {
        for g in &file.groups {
            for r in &g.rules {
                let start = Instant::now();
                let n = match engine.instant(&st, &r.parsed, end)? {
                    vigil_rules::promql::Value::Vector(v) => v.len(),
                    _ => 1,
                };
                println!(
                    "  {:>8.2} ms  {:>6} samples  {}",
                    start.elapsed().as_secs_f64() * 1e3,
                    n,
                    r.name
                );
            }
        }
    }
    let mean = times.iter().sum::<Duration>() / rounds.max(1) as u32;
    let mut sorted = times.clone();
    sorted.sort_unstable();
    let min = sorted.first().copied().unwrap_or_default();
    let max = sorted.last().copied().unwrap_or_default();
    // Median; the upper one of the middle two for an even count.
    let p50 = sorted.get(rounds / 2).copied().unwrap_or_default();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "gpu pack: {} rules in {} groups, {alerts} active alerts after round 1",
        file.groups.iter().map(|g| g.rules.len()).sum::<usize>(),
        groups.len()
    );
    println!(
        "evaluation round over {series} series: min {:.2} ms, mean {:.2} ms, p50 {:.2} ms, max {:.2} ms ({rounds} rounds)",
        ms(min),
        ms(mean),
        ms(p50),
        ms(max)
    );
    println!(
        "checksums: rounds {:016x}, rule expressions {:016x} ({exprs_samples} samples)",
        rounds_sum.0, exprs_sum.0
    );
    Ok(())
}
