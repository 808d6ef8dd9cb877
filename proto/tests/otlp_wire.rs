//! The borrowed protobuf reader against prost, the reference: random requests of every
//! metric shape and attribute type, encoded by prost, read both ways, must give equal
//! views and equal translations; damaged bytes must never panic, and where prost
//! accepts them the reader must agree with it.

use prost::Message;
use vigil_proto::MetricFamily;
use vigil_proto::otlp::wire::Request;
use vigil_proto::otlp::*;
use vigil_proto::otlp::{AgentResource, snapshot_to_resource_metrics};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn any(r: &mut Rng, depth: u32) -> Option<AnyValue> {
    use any_value::Value as V;
    let v = match r.below(if depth > 2 { 6 } else { 9 }) {
        0 => return None,
        1 => V::StringValue(r.pick(&["a", "", "GPU-1", "ünï", "x y"]).into()),
        2 => V::BoolValue(r.below(2) == 1),
        3 => V::IntValue(r.next() as i64),
        4 => V::DoubleValue(f64::from_bits(r.next())),
        5 => V::BytesValue((0..r.below(5)).map(|i| i as u8).collect()),
        6 => V::ArrayValue(ArrayValue {
            values: (0..r.below(3)).filter_map(|_| any(r, depth + 1)).collect(),
        }),
        7 => V::KvlistValue(KeyValueList {
            values: (0..r.below(3)).map(|_| key_value(r, depth + 1)).collect(),
        }),
        _ => V::StringValueStrindex(r.below(100) as i32),
    };
    Some(AnyValue { value: Some(v) })
}

fn key_value(r: &mut Rng, depth: u32) -> KeyValue {
    KeyValue {
        key: r
            .pick(&[
                "gpu",
                "http.method",
                "",
                "job",
                "le",
                "1bad",
                "service.name",
            ])
            .into(),
        value: any(r, depth),
        key_strindex: 0,
    }
}

fn attrs(r: &mut Rng) -> Vec<KeyValue> {
    (0..r.below(4)).map(|_| key_value(r, 0)).collect()
}

fn time(r: &mut Rng) -> u64 {
    if r.below(8) == 0 {
        0
    } else {
        1_700_000_000_000_000_000 + r.below(1 << 40)
    }
}

fn number_point(r: &mut Rng) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs(r),
        start_time_unix_nano: time(r),
        time_unix_nano: time(r),
        exemplars: vec![],
        flags: r.below(3) as u32,
        value: match r.below(3) {
            0 => None,
            1 => Some(number_data_point::Value::AsInt(r.next() as i64)),
            _ => Some(number_data_point::Value::AsDouble(
                r.below(1000) as f64 / 8.0,
            )),
        },
    }
}

fn random_metric(r: &mut Rng) -> Metric {
    let temporality = r.below(3) as i32;
    let data = match r.below(6) {
        0 => None,
        1 => Some(metric::Data::Gauge(Gauge {
            data_points: (0..r.below(4)).map(|_| number_point(r)).collect(),
        })),
        2 => Some(metric::Data::Sum(Sum {
            data_points: (0..r.below(4)).map(|_| number_point(r)).collect(),
            aggregation_temporality: temporality,
            is_monotonic: r.below(2) == 1,
        })),
        3 => Some(metric::Data::Histogram(Histogram {
            data_points: (0..r.below(3))
                .map(|_| {
                    let n = r.below(4) as usize;
                    HistogramDataPoint {
                        attributes: attrs(r),
                        start_time_unix_nano: time(r),
                        time_unix_nano: time(r),
                        count: r.below(100),
                        sum: (r.below(2) == 1).then(|| r.below(100) as f64),
                        bucket_counts: (0..n + r.below(2) as usize).map(|_| r.below(9)).collect(),
                        explicit_bounds: (0..n).map(|i| i as f64 * 0.5).collect(),
                        exemplars: vec![],
                        flags: r.below(2) as u32,
                        min: None,
                        max: Some(3.0),
                    }
                })
                .collect(),
            aggregation_temporality: temporality,
        })),
        4 => Some(metric::Data::Summary(Summary {
            data_points: (0..r.below(3))
                .map(|_| SummaryDataPoint {
                    attributes: attrs(r),
                    start_time_unix_nano: time(r),
                    time_unix_nano: time(r),
                    count: r.below(50),
                    sum: r.below(50) as f64,
                    quantile_values: (0..r.below(3))
                        .map(|i| summary_data_point::ValueAtQuantile {
                            quantile: i as f64 / 4.0,
                            value: r.below(10) as f64,
                        })
                        .collect(),
                    flags: 0,
                })
                .collect(),
        })),
        _ => Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: (0..r.below(3))
                .map(|_| ExponentialHistogramDataPoint {
                    count: 2,
                    ..Default::default()
                })
                .collect(),
            aggregation_temporality: temporality,
        })),
    };
    Metric {
        name: r
            .pick(&[
                "requests",
                "process.memory.usage",
                "",
                "__",
                "DCGM_FI_DEV_GPU_TEMP",
            ])
            .into(),
        description: "described".into(),
        unit: r.pick(&["", "By", "s", "1", "{req}"]).into(),
        metadata: if r.below(4) == 0 {
            vec![KeyValue {
                key: METADATA_PROMETHEUS_TYPE.into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("unknown".into())),
                }),
                key_strindex: 0,
            }]
        } else {
            vec![]
        },
        data,
    }
}

fn random_request(r: &mut Rng) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: (0..1 + r.below(3))
            .map(|_| ResourceMetrics {
                resource: (r.below(5) > 0).then(|| Resource {
                    attributes: attrs(r)
                        .into_iter()
                        .chain([
                            KeyValue {
                                key: "host.name".into(),
                                value: any(r, 3),
                                key_strindex: 0,
                            },
                            KeyValue {
                                key: "service.name".into(),
                                value: Some(AnyValue {
                                    value: Some(any_value::Value::StringValue(
                                        r.pick(&["vigil-agent", "app"]).into(),
                                    )),
                                }),
                                key_strindex: 0,
                            },
                        ])
                        .collect(),
                    dropped_attributes_count: 1,
                    entity_refs: vec![],
                }),
                scope_metrics: (0..r.below(3))
                    .map(|_| ScopeMetrics {
                        scope: Some(InstrumentationScope {
                            name: "scope".into(),
                            ..Default::default()
                        }),
                        metrics: (0..r.below(5)).map(|_| random_metric(r)).collect(),
                        schema_url: "https://opentelemetry.io/schemas/1.0".into(),
                    })
                    .collect(),
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// A sample as text, NaN-safe (stale markers compare by bits).
fn samples(d: &Decoded<'_>) -> Vec<String> {
    d.samples
        .iter()
        .map(|s| {
            let labels: Vec<String> = d.labels(s).map(|(n, v)| format!("{n}={v:?}")).collect();
            format!(
                "{} {} r{} {} {:x} {:?}",
                d.name(s),
                labels.join(","),
                s.resource,
                s.t_ms,
                s.value.to_bits(),
                s.start_ms
            )
        })
        .collect()
}

fn assert_same(bytes: &[u8], reference: &ExportMetricsServiceRequest) {
    let wire = Request::parse(bytes).expect("prost decoded these bytes");
    // Debug text, so that NaN attributes compare equal.
    assert_eq!(
        format!("{wire:?}"),
        format!("{:?}", Request::from_prost(reference))
    );
    let (a, b) = (decode_protobuf(bytes).expect("parses"), decode(reference));
    assert_eq!(samples(&a), samples(&b));
    assert_eq!(a.rejections, b.rejections);
    assert_eq!(a.resources, b.resources);
}

#[test]
fn random_requests_read_like_prost() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..2_000 {
        let req = random_request(&mut r);
        let bytes = req.encode_to_vec();
        let back = ExportMetricsServiceRequest::decode(&bytes[..]).expect("prost round trip");
        assert_same(&bytes, &back);
    }
}

#[test]
fn an_agent_snapshot_reads_like_prost() {
    let mut f = MetricFamily::gauge("DCGM_FI_DEV_GPU_TEMP", "t");
    for gpu in 0..8 {
        f.push(
            &[("gpu", &gpu.to_string()), ("UUID", "GPU-x")],
            40.0 + gpu as f64,
        );
    }
    let mut c = MetricFamily::counter("node_cpu_seconds_total", "c");
    c.push_counter(&[("cpu", "0"), ("mode", "idle")], 12.5, 1_699_999_000.0);
    let res = AgentResource {
        node: "gpu-7",
        agent_version: "0.1.0",
        interval_secs: 5.0,
    };
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![snapshot_to_resource_metrics(
            &[f, c],
            &res,
            1_700_000_000_000,
        )],
    };
    let bytes = req.encode_to_vec();
    assert_same(&bytes, &req);
    assert_eq!(decode_protobuf(&bytes).unwrap().samples.len(), 9);
}

#[test]
fn damaged_bytes_never_panic_and_agree_with_prost_when_it_accepts() {
    let mut r = Rng(42);
    let (mut both_ok, mut disagree) = (0, 0);
    for _ in 0..3_000 {
        let mut bytes = random_request(&mut r).encode_to_vec();
        if bytes.is_empty() {
            continue;
        }
        match r.below(3) {
            0 => bytes.truncate(r.below(bytes.len() as u64) as usize),
            1 => {
                let i = r.below(bytes.len() as u64) as usize;
                bytes[i] = r.next() as u8;
            }
            _ => {
                for _ in 0..4 {
                    let i = r.below(bytes.len() as u64) as usize;
                    bytes[i] ^= 1 << r.below(8);
                }
            }
        }
        let mine = decode_protobuf(&bytes);
        // Where prost refuses the bytes, the reader only has to not panic.
        if let Ok(reference) = ExportMetricsServiceRequest::decode(&bytes[..]) {
            match mine {
                Ok(_) => {
                    assert_same(&bytes, &reference);
                    both_ok += 1;
                }
                // Stricter than prost only where prost skips what the reader refuses
                // (groups); the reader skips UTF-8 checks of fields it does not read.
                Err(e) => {
                    disagree += 1;
                    assert!(e.message.contains("wire type"), "prost accepts, we say {e}");
                }
            }
        }
    }
    assert!(
        both_ok > 100,
        "only {both_ok} damaged requests still decoded"
    );
    assert!(disagree < 30, "{disagree} disagreements");
}

#[test]
fn errors_say_where() {
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics::default()],
    };
    let mut bytes = req.encode_to_vec();
    bytes.extend_from_slice(&[0x0a, 0x05, 0x12]);
    let e = decode_protobuf(&bytes).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    let e = decode_protobuf(&[0x0a, 0x02, 0x12, 0x7f]).unwrap_err();
    assert!(e.to_string().contains("ResourceMetrics"), "{e}");
}
