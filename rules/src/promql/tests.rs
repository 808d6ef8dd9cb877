//! Engine behaviour the promqltest files do not pin down directly: the public API
//! shapes, the storage fast paths agreeing with the plain `select` path, and errors.

use super::*;

fn store() -> MemoryStorage {
    let mut st = MemoryStorage::new();
    for (job, step) in [("a", 1.0), ("b", 2.0)] {
        let l = Labels::from_pairs([("__name__", "req_total"), ("job", job)]);
        for i in 0..=10 {
            st.add(l.clone(), i * 60_000, step * i as f64);
        }
    }
    let up = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
    st.add(up.clone(), 0, 1.0);
    st.add(up, 60_000, stale_nan());
    st
}

/// Forwards only `select`, so the engine runs on the trait's default methods.
struct SelectOnly<'a>(&'a MemoryStorage);

impl Storage for SelectOnly<'_> {
    fn select(
        &self,
        m: &Matchers,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError> {
        self.0.select(m, start_ms, end_ms)
    }
}

fn instant(st: &dyn Storage, q: &str, t_ms: i64) -> Result<Value, EvalError> {
    Engine::default().instant(st, &parse(q).map_err(|e| EvalError::Query(e.0))?, t_ms)
}

fn vector(v: Value) -> Vec<(String, f64)> {
    let Value::Vector(mut v) = v else {
        panic!("not a vector: {v:?}")
    };
    v.sort_by(|a, b| a.labels.cmp(&b.labels));
    v.into_iter().map(|s| (s.labels.to_string(), s.v)).collect()
}

#[test]
fn rate_and_selectors_agree_with_default_storage_methods() {
    let st = store();
    for q in [
        "rate(req_total[5m])",
        "req_total > 3",
        "increase(req_total[2m] offset 1m)",
        "up",
    ] {
        let fast = vector(instant(&st, q, 600_000).unwrap());
        let plain = vector(instant(&SelectOnly(&st), q, 600_000).unwrap());
        assert_eq!(fast, plain, "{q}");
    }
    let r = vector(instant(&st, "rate(req_total[5m])", 600_000).unwrap());
    assert_eq!(
        r,
        vec![
            ("{job=\"a\"}".to_string(), 1.0 / 60.0),
            ("{job=\"b\"}".to_string(), 2.0 / 60.0)
        ]
    );
}

/// `rate`, `increase` and `delta` read only a window's edges where the store knows
/// the series never decreased and holds no staleness marker; with a reset, a marker,
/// both or neither, and windows that do or do not reach them, they must give what
/// reading every sample gives.
#[test]
fn counter_functions_agree_whatever_the_store_knows() {
    let mut st = MemoryStorage::new();
    for job in ["clean", "reset", "stale", "both"] {
        let l = Labels::from_pairs([("__name__", "c_total"), ("job", job)]);
        for i in 0..=20i64 {
            let v = match job {
                "reset" | "both" if i >= 12 => (i - 12) as f64 * 0.7,
                _ => i as f64 * 1.3,
            };
            let stale = matches!(job, "stale" | "both") && i == 15;
            st.add(l.clone(), i * 15_000, if stale { stale_nan() } else { v });
        }
    }
    for q in [
        "increase(c_total[5m])",
        "rate(c_total[2m])",
        "delta(c_total[1m])",
        "increase(c_total[1m]) > 0",
    ] {
        for t in [60_000, 170_000, 200_000, 230_000, 300_000] {
            let bits = |v: Vec<(String, f64)>| -> Vec<(String, u64)> {
                v.into_iter().map(|(l, v)| (l, v.to_bits())).collect()
            };
            let fast = bits(vector(instant(&st, q, t).unwrap()));
            let plain = bits(vector(instant(&SelectOnly(&st), q, t).unwrap()));
            assert_eq!(fast, plain, "{q} at {t}");
        }
    }
}

#[test]
fn staleness_marker_ends_a_series_before_lookback() {
    let st = store();
    assert_eq!(vector(instant(&st, "up", 30_000).unwrap()).len(), 1);
    assert!(vector(instant(&st, "up", 90_000).unwrap()).is_empty());
}

#[test]
fn range_query_steps_and_scalars() {
    let st = store();
    let e = parse("req_total{job=\"a\"} * 2").unwrap();
    let got = Engine::default()
        .range(&st, &e, 0, 120_000, 60_000)
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels.to_string(), "{job=\"a\"}");
    assert_eq!(
        got[0].samples,
        vec![(0, 0.0), (60_000, 2.0), (120_000, 4.0)]
    );
    let s = Engine::default()
        .range(&st, &parse("time()").unwrap(), 0, 60_000, 60_000)
        .unwrap();
    assert_eq!(s[0].labels, Labels::empty());
    assert_eq!(s[0].samples, vec![(0, 0.0), (60_000, 60.0)]);
}

#[test]
fn matching_errors_name_the_duplicates() {
    let st = store();
    let err = instant(&st, "up + on() req_total", 0).unwrap_err();
    assert!(
        err.to_string()
            .contains("many-to-many matching not allowed"),
        "{err}"
    );
    let err = instant(
        &st,
        "sum by (__name__) (rate({job=\"a\"}[5m]) or rate(up[5m]) or rate({job=\"b\"}[5m]))",
        600_000,
    );
    assert!(err.is_ok(), "one name, one group: {err:?}");
    let err = instant(&st, "ceil({__name__=~\"req_total|up\", job=\"a\"})", 30_000).unwrap_err();
    assert_eq!(err, EvalError::DuplicateLabelset);
}

#[test]
fn native_histogram_functions_fail_clearly() {
    let st = store();
    let err = instant(&st, "histogram_count(req_total)", 0).unwrap_err();
    assert!(matches!(err, EvalError::NativeHistogram(_)), "{err}");
}

#[test]
fn counter_name_info_annotation() {
    let st = store();
    let e = parse("rate(up[5m])").unwrap();
    let a = Engine::default()
        .instant_annotated(&st, &e, 60_000)
        .unwrap();
    assert!(
        a.annotations.infos.is_empty(),
        "a single sample yields no rate and no info"
    );
    let mut st = st;
    st.add(Labels::from_pairs([("__name__", "temp")]), 0, 1.0);
    st.add(Labels::from_pairs([("__name__", "temp")]), 60_000, 2.0);
    let a = Engine::default()
        .instant_annotated(&st, &parse("rate(temp[5m])").unwrap(), 60_000)
        .unwrap();
    assert_eq!(a.annotations.infos.len(), 1);
    assert!(a.annotations.infos[0].contains("\"temp\""));
}

#[test]
fn range_queries_and_subqueries_are_bounded() {
    let st = store();
    let e = parse("time()").unwrap();
    let err = Engine::default()
        .range(&st, &e, 0, 12_000_000, 1_000)
        .unwrap_err();
    assert!(err.to_string().contains("11,000 points"), "{err}");
    let err = instant(&st, "max_over_time(time()[100w:1s])", 0).unwrap_err();
    assert!(err.to_string().contains("subquery"), "{err}");
}

/// `and`/`unless` read a right-hand selector only where the left side's matching
/// labels are, and comparisons filter at the source; a range query (whose selectors
/// are read over several steps, so neither shortcut applies) must agree at each step.
#[test]
fn narrowed_set_operators_agree_with_full_evaluation() {
    let mut st = store();
    for (job, zone) in [("a", "x"), ("b", "y"), ("c", "x")] {
        let l = Labels::from_pairs([("__name__", "errs"), ("job", job), ("zone", zone)]);
        for i in 0..=10 {
            st.add(l.clone(), i * 60_000, (i % 3) as f64);
        }
        let l = Labels::from_pairs([("__name__", "errs"), ("job", job)]);
        st.add(l, 540_000, 1.0);
    }
    let engine = Engine::default();
    for q in [
        "req_total > 4 unless req_total offset 5m",
        "req_total > 4 and req_total offset 5m",
        "errs > 0 unless errs offset 2m",
        "errs > 0 and ignoring(zone) (errs offset 1m)",
        "errs unless on(job) req_total",
        "errs and on(zone) errs{job=\"c\"} > 0",
        "req_total and on() up",
        "errs unless ignoring(job, zone) errs{job=\"b\"}",
        "increase(req_total[5m]) > 5 or errs > 1",
        "0 < errs unless on(job) (errs{zone=\"x\"} == 1)",
    ] {
        let e = parse(q).unwrap();
        for t in [480_000, 540_000, 600_000] {
            let fast = vector(engine.instant(&st, &e, t).unwrap());
            let range = engine.range(&st, &e, t - 120_000, t, 60_000).unwrap();
            let mut at_t: Vec<(String, f64)> = range
                .iter()
                .filter_map(|s| {
                    s.samples
                        .iter()
                        .find(|&&(ts, _)| ts == t)
                        .map(|&(_, v)| (s.labels.to_string(), v))
                })
                .collect();
            at_t.sort_by(|a, b| a.0.cmp(&b.0));
            let mut fast_sorted = fast.clone();
            fast_sorted.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(fast_sorted, at_t, "{q} at {t}");
        }
    }
}

/// A range function's pass over a selector collects what a comparison on the same
/// selector keeps (`increase(x[10m]) > 0 or x > 0`), and a parent's filter reaches
/// through arithmetic with a literal (`rate(x[5m]) * 60 > 8`). Range queries take
/// neither shortcut, and a store with only `select` gives the plain reads: all three
/// must agree, staleness markers, NaN and series older than the lookback included.
#[test]
fn collected_comparisons_and_filters_through_arithmetic_agree() {
    let mut st = MemoryStorage::new();
    let l = |job: &str| Labels::from_pairs([("__name__", "xid_total"), ("job", job)]);
    for i in 0..=20 {
        let t = i * 30_000;
        st.add(l("rising"), t, i as f64);
        st.add(l("flat"), t, 2.0);
        st.add(l("reset"), t, (i % 7) as f64);
        st.add(l("nan"), t, if i % 5 == 0 { f64::NAN } else { 4.0 });
        // Last sample at 4 min: outside a 5m lookback at 10 min, inside a 10m range.
        if i <= 8 {
            st.add(l("old"), t, 10.0 + i as f64);
        }
        // Ends with a staleness marker at 9.5 min.
        if i <= 19 {
            st.add(
                l("stale"),
                t,
                if i == 19 { stale_nan() } else { 7.0 + i as f64 },
            );
        }
    }
    st.add(Labels::from_pairs([("__name__", "other")]), 0, 1.0);
    let bits = |v: Vec<(String, f64)>| -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = v.into_iter().map(|(l, x)| (l, x.to_bits())).collect();
        v.sort();
        v
    };
    let engine = Engine::default();
    for q in [
        "increase(xid_total[10m]) < -1 or xid_total > 3",
        "increase(xid_total[10m]) > 0 or xid_total > 3",
        "increase(xid_total[5m]) > 0 or (xid_total > 0 unless xid_total offset 5m)",
        "increase(xid_total[10m]) > 0 or (3 < xid_total)",
        "rate(xid_total[10m]) > 0 or xid_total != 2",
        "increase(xid_total[10m]) > 0 or xid_total offset 1m > 3",
        "increase(xid_total[2m]) > 0 or xid_total > 3",
        "max_over_time(xid_total[6m]) > 100 or xid_total >= 4 or xid_total < 3",
        "rate(xid_total[5m]) * 60 > 8",
        "60 * rate(xid_total[5m]) > 8",
        "2 - xid_total < 0",
        "xid_total / 2 > 3 and xid_total > 1",
        "sum(rate(xid_total[5m]) * 60 > 1)",
        "(rate(xid_total[5m]) + 1) * 60 > 61 unless xid_total offset 1m < 2",
    ] {
        let e = parse(q).unwrap();
        for t in [540_000, 570_000, 600_000] {
            let fast = bits(vector(engine.instant(&st, &e, t).unwrap()));
            let plain = bits(vector(engine.instant(&SelectOnly(&st), &e, t).unwrap()));
            assert_eq!(fast, plain, "{q} at {t}: fast store against select only");
            let range = engine.range(&st, &e, t - 60_000, t, 30_000).unwrap();
            let at_t = bits(
                range
                    .iter()
                    .filter_map(|s| {
                        s.samples
                            .iter()
                            .find(|&&(ts, _)| ts == t)
                            .map(|&(_, v)| (s.labels.to_string(), v))
                    })
                    .collect(),
            );
            assert_eq!(fast, at_t, "{q} at {t}: instant against range query");
        }
    }
    // The shortcut's answer itself, worked out by hand at 10 min: `old` has no sample
    // in the lookback, `stale` ends with a marker, NaN (`nan` now) is not above 3.
    let got = vector(
        instant(
            &st,
            "increase(xid_total[10m]) < -1 or xid_total > 3",
            600_000,
        )
        .unwrap(),
    );
    let jobs: Vec<&str> = got
        .iter()
        .map(|(l, _)| l.split('"').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(jobs, vec!["reset", "rising"]);
}
