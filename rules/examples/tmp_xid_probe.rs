use std::time::Instant;
use vigil_rules::promql::{Engine, Labels, MemoryStorage, parse};
fn main() {
    let mut st = MemoryStorage::new();
    for n in 0..1000 { for g in 0..8 {
        for x in 0..15 { let l = Labels::from_pairs([("__name__","vigil_gpu_xid_errors_total"),("gpu",&g.to_string()),("UUID",&format!("GPU-{n:04}-{g}")),("xid",&x.to_string()),("instance",&format!("gpu-node-{n:04}:9435")),("job","vigil")]);
            for i in 0..61 { st.add(l.clone(), i*15000, 0.0); } }
        for x in 0..20 { let l = Labels::from_pairs([("__name__","other"),("gpu",&g.to_string()),("x",&x.to_string()),("instance",&format!("gpu-node-{n:04}:9435"))]);
            for i in 0..61 { st.add(l.clone(), i*15000, 0.0); } }
    }}
    let e = Engine::default();
    let end = 60*15000;
    for q in ["vigil_gpu_xid_errors_total", "vigil_gpu_xid_errors_total > 0", "vigil_gpu_xid_errors_total offset 5m", "count(vigil_gpu_xid_errors_total offset 5m)", "increase(vigil_gpu_xid_errors_total[5m])", "increase(vigil_gpu_xid_errors_total[5m]) > 0", "count_over_time(vigil_gpu_xid_errors_total[5m]) > 100","vigil_gpu_xid_errors_total > 0 unless vigil_gpu_xid_errors_total offset 5m",
      "increase(vigil_gpu_xid_errors_total[5m]) > 0 or (vigil_gpu_xid_errors_total > 0 unless vigil_gpu_xid_errors_total offset 5m)"] {
        let p = parse(q).unwrap();
        let mut best = f64::MAX;
        for _ in 0..7 { let t = Instant::now(); let v = e.instant(&st, &p, end).unwrap(); drop(v); best = best.min(t.elapsed().as_secs_f64()*1e3); }
        println!("{best:8.2} ms  {q}");
    }
}
