//! OTLP → Prometheus translation, with metric shapes as OpenTelemetry SDKs send them.

use std::collections::BTreeMap;

use vigil_proto::otlp::*;
use vigil_proto::{MetricFamily, MetricKind};

const T_NS: u64 = 1_700_000_000_123_456_789;
const T_MS: i64 = 1_700_000_000_123;

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        key_strindex: 0,
    }
}

fn s(k: &str, v: &str) -> KeyValue {
    kv(k, any_value::Value::StringValue(v.into()))
}

fn point(attrs: Vec<KeyValue>, v: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: 0,
        time_unix_nano: T_NS,
        exemplars: vec![],
        flags: 0,
        value: Some(number_data_point::Value::AsDouble(v)),
    }
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                dropped_attributes_count: 0,
                entity_refs: vec![],
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: None,
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn metric(name: &str, unit: &str, data: metric::Data) -> Metric {
    Metric {
        name: name.into(),
        description: String::new(),
        unit: unit.into(),
        metadata: vec![],
        data: Some(data),
    }
}

/// A sample as (`{name, labels…}` sorted, t, value, start).
type Flat = (BTreeMap<String, String>, i64, f64, Option<i64>);

fn flat(d: &Decoded<'_>) -> Vec<Flat> {
    d.samples
        .iter()
        .map(|s| {
            let mut m: BTreeMap<String, String> = d
                .labels(s)
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            m.insert("__name__".into(), d.name(s).to_owned());
            (m, s.t_ms, s.value, s.start_ms)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn sdk_resource() -> Vec<KeyValue> {
    vec![
        s("service.name", "checkout"),
        s("service.namespace", "shop"),
        s("service.instance.id", "pod-7"),
        s("host.name", "web-3"),
    ]
}

#[test]
fn agent_snapshot_round_trips_with_names_unchanged() {
    let mut counter = MetricFamily::counter("node_cpu_seconds_total", "Seconds spent.");
    counter.push_counter(&[("cpu", "0"), ("mode", "idle")], 12.5, 1_699_999_000.0);
    let gauge = MetricFamily::gauge("DCGM_FI_DEV_GPU_TEMP", "Temperature.").with(
        &[
            ("gpu", "0"),
            ("UUID", "GPU-1"),
            ("modelName", "NVIDIA H100"),
        ],
        41.0,
    );
    let unknown = MetricFamily::unknown("node_vmstat_pgfault", "pgfault").with(&[], 7.0);
    assert_eq!(unknown.kind, MetricKind::Unknown);
    let res = AgentResource {
        node: "gpu-7",
        agent_version: "0.1.0",
        interval_secs: 5.0,
    };
    let rm = snapshot_to_resource_metrics(&[counter, gauge, unknown], &res, T_MS);
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![rm],
    };
    let d = decode(&req);
    assert!(d.rejections.is_empty(), "{:?}", d.rejections);
    let r = &d.resources[0];
    assert!(r.is_agent_snapshot);
    assert_eq!(r.host_name, Some("gpu-7"));
    assert_eq!(r.service_version, Some("0.1.0"));
    assert_eq!(r.interval_secs, Some(5.0));
    assert_eq!(r.samples, 0..3);
    let got = flat(&d);
    let common = [
        ("job", "vigil-agent"),
        ("instance", "gpu-7"),
        ("node", "gpu-7"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut m = labels(&common);
        m.extend(labels(extra));
        m
    };
    assert_eq!(
        got,
        vec![
            (
                with(&[
                    ("__name__", "node_cpu_seconds_total"),
                    ("cpu", "0"),
                    ("mode", "idle")
                ]),
                T_MS,
                12.5,
                Some(1_699_999_000_000)
            ),
            (
                with(&[
                    ("__name__", "DCGM_FI_DEV_GPU_TEMP"),
                    ("gpu", "0"),
                    ("UUID", "GPU-1"),
                    ("modelName", "NVIDIA H100")
                ]),
                T_MS,
                41.0,
                None
            ),
            (
                with(&[("__name__", "node_vmstat_pgfault")]),
                T_MS,
                7.0,
                None
            ),
        ]
    );
}

#[test]
fn sdk_gauge_sum_and_histogram_normalise_like_prometheus() {
    let mut sum_point = point(
        vec![
            s("http.method", "GET"),
            kv("code", any_value::Value::IntValue(200)),
        ],
        42.0,
    );
    sum_point.start_time_unix_nano = T_NS - 10_000_000_000;
    let hist = HistogramDataPoint {
        attributes: vec![s("route", "/pay")],
        start_time_unix_nano: T_NS - 60_000_000_000,
        time_unix_nano: T_NS,
        count: 6,
        sum: Some(2.5),
        bucket_counts: vec![1, 2, 3],
        explicit_bounds: vec![0.1, 1.0],
        exemplars: vec![],
        flags: 0,
        min: None,
        max: None,
    };
    let req = request(
        sdk_resource(),
        vec![
            metric(
                "process.memory.usage",
                "By",
                metric::Data::Gauge(Gauge {
                    data_points: vec![point(vec![], 1024.0)],
                }),
            ),
            metric(
                "requests",
                "1",
                metric::Data::Sum(Sum {
                    data_points: vec![sum_point],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
            ),
            metric(
                "http.server.duration",
                "s",
                metric::Data::Histogram(Histogram {
                    data_points: vec![hist],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            ),
        ],
    );
    let d = decode(&req);
    assert!(d.rejections.is_empty(), "{:?}", d.rejections);
    assert!(!d.resources[0].is_agent_snapshot);
    let res = [
        ("job", "shop/checkout"),
        // host.name wins over service.instance.id.
        ("instance", "web-3"),
        ("node", "web-3"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut m = labels(&res);
        m.extend(labels(extra));
        m
    };
    let start = Some(T_MS - 60_000);
    let want = vec![
        (
            with(&[("__name__", "process_memory_usage_bytes")]),
            T_MS,
            1024.0,
            None,
        ),
        (
            with(&[
                ("__name__", "requests_total"),
                ("http_method", "GET"),
                ("code", "200"),
            ]),
            T_MS,
            42.0,
            Some(T_MS - 10_000),
        ),
        (
            with(&[
                ("__name__", "http_server_duration_seconds_sum"),
                ("route", "/pay"),
            ]),
            T_MS,
            2.5,
            start,
        ),
        (
            with(&[
                ("__name__", "http_server_duration_seconds_count"),
                ("route", "/pay"),
            ]),
            T_MS,
            6.0,
            start,
        ),
        (
            with(&[
                ("__name__", "http_server_duration_seconds_bucket"),
                ("route", "/pay"),
                ("le", "0.1"),
            ]),
            T_MS,
            1.0,
            start,
        ),
        (
            with(&[
                ("__name__", "http_server_duration_seconds_bucket"),
                ("route", "/pay"),
                ("le", "1"),
            ]),
            T_MS,
            3.0,
            start,
        ),
        (
            with(&[
                ("__name__", "http_server_duration_seconds_bucket"),
                ("route", "/pay"),
                ("le", "+Inf"),
            ]),
            T_MS,
            6.0,
            start,
        ),
    ];
    assert_eq!(flat(&d), want);
}

#[test]
fn summary_becomes_quantile_sum_and_count() {
    let p = SummaryDataPoint {
        attributes: vec![],
        start_time_unix_nano: 0,
        time_unix_nano: T_NS,
        count: 10,
        sum: 5.0,
        quantile_values: vec![summary_data_point::ValueAtQuantile {
            quantile: 0.99,
            value: 0.7,
        }],
        flags: 0,
    };
    let req = request(
        vec![s("service.name", "api")],
        vec![metric(
            "rpc.latency",
            "ms",
            metric::Data::Summary(Summary {
                data_points: vec![p],
            }),
        )],
    );
    let d = decode(&req);
    let names: Vec<_> = flat(&d)
        .into_iter()
        .map(|(l, _, v, _)| (l["__name__"].clone(), l.get("quantile").cloned(), v))
        .collect();
    assert_eq!(
        names,
        vec![
            ("rpc_latency_milliseconds_sum".to_owned(), None, 5.0),
            ("rpc_latency_milliseconds_count".to_owned(), None, 10.0),
            (
                "rpc_latency_milliseconds".to_owned(),
                Some("0.99".to_owned()),
                0.7
            ),
        ]
    );
    assert_eq!(flat(&d)[0].0.get("job").map(String::as_str), Some("api"));
    assert!(
        !flat(&d)[0].0.contains_key("instance"),
        "no host.name, no instance id"
    );
}

#[test]
fn delta_and_exponential_are_refused_with_reasons_and_the_rest_lands() {
    let req = request(
        sdk_resource(),
        vec![
            metric(
                "delta.requests",
                "",
                metric::Data::Sum(Sum {
                    data_points: vec![point(vec![], 1.0), point(vec![], 2.0)],
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                    is_monotonic: true,
                }),
            ),
            metric(
                "latency",
                "s",
                metric::Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![ExponentialHistogramDataPoint::default()],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            ),
            metric(
                "ok",
                "",
                metric::Data::Gauge(Gauge {
                    data_points: vec![point(vec![], 1.0)],
                }),
            ),
            Metric {
                name: "empty".into(),
                ..Default::default()
            },
        ],
    );
    let d = decode(&req);
    assert_eq!(d.samples.len(), 1);
    assert_eq!(d.rejected_points(), 3);
    assert!(
        d.rejections[0].reason.contains("delta"),
        "{:?}",
        d.rejections
    );
    assert!(
        d.rejections[1].reason.contains("exponential"),
        "{:?}",
        d.rejections
    );
    assert_eq!(d.rejections[2].metric, "empty");
    let msg = d.rejection_message();
    assert!(
        msg.contains("delta.requests") && msg.contains("latency"),
        "{msg}"
    );
}

#[test]
fn no_recorded_value_is_a_staleness_marker_and_missing_time_is_refused() {
    let mut stale = point(vec![s("k", "a")], 0.0);
    stale.flags = 1;
    stale.value = None;
    let mut nan = point(vec![s("k", "b")], f64::NAN);
    nan.flags = 0;
    let mut untimed = point(vec![s("k", "c")], 1.0);
    untimed.time_unix_nano = 0;
    let mut novalue = point(vec![s("k", "d")], 1.0);
    novalue.value = None;
    let req = request(
        vec![],
        vec![metric(
            "g",
            "",
            metric::Data::Gauge(Gauge {
                data_points: vec![stale, nan, untimed, novalue],
            }),
        )],
    );
    let d = decode(&req);
    assert_eq!(d.samples.len(), 2);
    assert_eq!(d.samples[0].value.to_bits(), STALE_NAN_BITS);
    assert!(d.samples[1].value.is_nan() && d.samples[1].value.to_bits() != STALE_NAN_BITS);
    assert_eq!(d.rejected_points(), 2);
}

#[test]
fn resource_labels_override_point_attributes() {
    let req = request(
        sdk_resource(),
        vec![metric(
            "g",
            "",
            metric::Data::Gauge(Gauge {
                data_points: vec![point(vec![s("job", "spoof"), s("node", "x")], 1.0)],
            }),
        )],
    );
    let d = decode(&req);
    // Later pairs win when a label set is built from them.
    let last: BTreeMap<_, _> = d.labels(&d.samples[0]).collect();
    assert_eq!(last["job"], "shop/checkout");
    assert_eq!(last["node"], "web-3");
}

#[test]
fn otlp_json_decodes_through_serde() {
    let body = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"py"}},{"key":"host.name","value":{"stringValue":"h1"}}]},
      "scopeMetrics":[{"scope":{"name":"s"},"metrics":[{"name":"queue.depth","unit":"{item}","gauge":{"dataPoints":[
        {"attributes":[{"key":"q","value":{"stringValue":"a"}}],"timeUnixNano":"1700000000123456789","asInt":"17"}]}},
        {"name":"jobs","unit":"1","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{"startTimeUnixNano":"1699999990000000000","timeUnixNano":"1700000000123456789","asDouble":3}]}}]}]}]}"#;
    let req: ExportMetricsServiceRequest = serde_json::from_str(body).unwrap();
    let d = decode(&req);
    let got = flat(&d);
    assert_eq!(
        got[0].0,
        labels(&[
            ("__name__", "queue_depth"),
            ("job", "py"),
            ("instance", "h1"),
            ("node", "h1"),
            ("q", "a")
        ])
    );
    assert_eq!((got[0].1, got[0].2), (T_MS, 17.0));
    assert_eq!(got[1].0["__name__"], "jobs_total");
    assert_eq!(got[1].3, Some(1_699_999_990_000));
}

#[test]
fn instance_is_host_name_else_service_instance_id() {
    let gauge = |n: &str| {
        metric(
            n,
            "",
            metric::Data::Gauge(Gauge {
                data_points: vec![point(vec![], 1.0)],
            }),
        )
    };
    let both = request(sdk_resource(), vec![gauge("a")]);
    let d = decode(&both);
    let got = &flat(&d)[0].0;
    assert_eq!(got.get("instance").map(String::as_str), Some("web-3"));
    assert_eq!(got.get("node").map(String::as_str), Some("web-3"));
    let no_host = request(
        vec![
            s("service.name", "checkout"),
            s("service.instance.id", "pod-7"),
        ],
        vec![gauge("b")],
    );
    let d = decode(&no_host);
    let got = &flat(&d)[0].0;
    assert_eq!(got.get("instance").map(String::as_str), Some("pod-7"));
    assert!(!got.contains_key("node"), "{got:?}");
}
