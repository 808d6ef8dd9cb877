//! PromQL through vigil-rules' engine over the store gives exactly what the engine's own
//! reference storage gives for the same samples — staleness markers, out-of-order
//! arrivals and a reopen (WAL replay) included.

use anyhow::Result;
use vigil_collector::store::{Store, StoreOptions};
use vigil_rules::promql::{
    Engine, Labels, MemoryStorage, Series, Storage, Value, parse, stale_nan,
};

const START_MS: i64 = 1_700_000_000_000;
const MINUTES: i64 = 40;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Counters and gauges for 3 nodes × 4 GPUs, 15 s apart with jitter; node 2 disappears
/// (staleness markers) halfway.
fn samples() -> Vec<(Labels, i64, f64)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    let mut counters = [0.0f64; 12];
    for step in 0..(MINUTES * 4) {
        let t0 = START_MS + step * 15_000;
        for node in 0..3 {
            for gpu in 0..4 {
                let i = node * 4 + gpu;
                let t = t0 + (rng.next() % 40) as i64;
                let temp = Labels::from_pairs([
                    ("__name__", "DCGM_FI_DEV_GPU_TEMP".to_string()),
                    ("node", format!("n{node}")),
                    ("gpu", gpu.to_string()),
                ]);
                let xid = Labels::from_pairs([
                    ("__name__", "vigil_gpu_xid_errors_total".to_string()),
                    ("node", format!("n{node}")),
                    ("gpu", gpu.to_string()),
                ]);
                if node == 2 && step == MINUTES * 2 {
                    out.push((temp, t, stale_nan()));
                    out.push((xid, t, stale_nan()));
                    continue;
                }
                if node == 2 && step > MINUTES * 2 {
                    continue;
                }
                counters[i] += (rng.next() % 5) as f64;
                if step == 100 && gpu == 1 {
                    counters[i] = 1.0; // a counter reset
                }
                out.push((temp, t, 40.0 + (rng.next() % 400) as f64 / 10.0));
                out.push((xid, t, counters[i]));
            }
        }
    }
    // Deliver some neighbours swapped, as a retrying sender would: still inside the
    // store's out-of-order window.
    for i in (0..out.len().saturating_sub(30)).step_by(29) {
        out.swap(i, i + 24);
    }
    out
}

const QUERIES: &[&str] = &[
    "DCGM_FI_DEV_GPU_TEMP",
    r#"DCGM_FI_DEV_GPU_TEMP{gpu=~"1|3"}"#,
    r#"DCGM_FI_DEV_GPU_TEMP{node!="n0", gpu!~"2"}"#,
    "rate(vigil_gpu_xid_errors_total[5m])",
    "sum by (node) (increase(vigil_gpu_xid_errors_total[10m]))",
    "max_over_time(DCGM_FI_DEV_GPU_TEMP[3m])",
    "count by (node) (DCGM_FI_DEV_GPU_TEMP > 60)",
    "avg(DCGM_FI_DEV_GPU_TEMP) by (gpu)",
    "absent(DCGM_FI_DEV_GPU_TEMP{node=\"n2\"})",
    r#"{__name__=~"DCGM_.*|vigil_.*", gpu="0"}"#,
];

fn canonical(mut series: Vec<Series>) -> Vec<(Labels, Vec<(i64, u64)>)> {
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    series
        .into_iter()
        .map(|s| {
            (
                s.labels,
                s.samples.iter().map(|&(t, v)| (t, v.to_bits())).collect(),
            )
        })
        .collect()
}

/// An instant result in a comparable, order-independent form.
fn instant(v: Value) -> Vec<(Labels, i64, u64)> {
    let mut out: Vec<(Labels, i64, u64)> = match v {
        Value::Vector(samples) => samples
            .into_iter()
            .map(|s| (s.labels, s.t_ms, s.v.to_bits()))
            .collect(),
        Value::Scalar { t_ms, v } => vec![(Labels::empty(), t_ms, v.to_bits())],
        Value::Matrix(series) => canonical(series)
            .into_iter()
            .flat_map(|(l, samples)| samples.into_iter().map(move |(t, v)| (l.clone(), t, v)))
            .collect(),
        Value::String { t_ms, .. } => vec![(Labels::empty(), t_ms, 0)],
    };
    out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    out
}

fn compare(engine: &Engine, store: &dyn Storage, reference: &dyn Storage) -> Result<usize> {
    let (start, end) = (START_MS + 5 * 60_000, START_MS + MINUTES * 60_000);
    let mut points = 0;
    for q in QUERIES {
        let expr = parse(q)?;
        let got = engine.range(store, &expr, start, end, 30_000)?;
        let want = engine.range(reference, &expr, start, end, 30_000)?;
        points += want.iter().map(|s| s.samples.len()).sum::<usize>();
        assert_eq!(canonical(got), canonical(want), "query {q}");
        // Instant queries take the engine's latest-sample path for plain selectors.
        for t in (start..=end).step_by(97_000) {
            let got = instant(engine.instant(store, &expr, t)?);
            let want = instant(engine.instant(reference, &expr, t)?);
            assert_eq!(got, want, "instant query {q} at {t}");
        }
    }
    Ok(points)
}

#[test]
fn engine_over_store_matches_reference_storage() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = StoreOptions::new(dir.path());
    let data = samples();
    let mut reference = MemoryStorage::new();
    for (l, t, v) in &data {
        reference.add(l.clone(), *t, *v);
    }
    let engine = Engine::default();
    {
        let store = Store::open(opts.clone())?;
        for batch in data.chunks(24) {
            let report = store.append_batch(batch)?;
            assert_eq!(report.rejected(), 0, "{report:?}");
        }
        let points = compare(&engine, &store, &reference)?;
        assert!(points > 1_000, "queries returned only {points} points");
    }
    // The same answers after a restart, rebuilt from the WAL alone.
    let store = Store::open(opts)?;
    compare(&engine, &store, &reference)?;
    assert_eq!(store.stats().head_samples as usize, data.len());
    Ok(())
}
