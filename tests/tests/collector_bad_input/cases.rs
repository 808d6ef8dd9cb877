//! The bad requests of `collector_bad_input`, each with the answer it must get.

use std::io::Write as _;

use anyhow::ensure;
use vigil_e2e::collector::url_encode;
use vigil_e2e::otlp::{self, collector_v1, metrics_v1};

use crate::{Expect, LIMIT_BYTES, TOKEN};

/// A protobuf request body with one metric.
pub(crate) fn pb(metric: metrics_v1::Metric) -> Vec<u8> {
    otlp::encode(&otlp::request(
        &[
            ("service.name", "bad-input"),
            ("host.name", "bad-input-host"),
        ],
        vec![metric],
    ))
}

pub(crate) fn number_points(n: usize, t_ms: i64) -> Vec<metrics_v1::NumberDataPoint> {
    (0..n)
        .map(|i| otlp::point(&[("i", &i.to_string())], t_ms, i as f64))
        .collect()
}

/// How a case reaches the collector.
pub(crate) enum Send {
    /// To the OTLP/HTTP port.
    Http {
        method: &'static str,
        path: &'static str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// An export over OTLP/gRPC with this bearer token.
    Grpc {
        request: collector_v1::ExportMetricsServiceRequest,
        token: Option<&'static str>,
    },
    /// GET on the query API (with the token).
    Api(String),
}

pub(crate) struct Case {
    pub name: &'static str,
    pub send: Send,
    pub expect: Expect,
}

/// Request headers: a content type, a content encoding, an `Authorization` value.
fn headers(
    content_type: Option<&str>,
    encoding: Option<&str>,
    authorization: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(v) = content_type {
        out.push(("Content-Type", v.to_owned()));
    }
    if let Some(v) = encoding {
        out.push(("Content-Encoding", v.to_owned()));
    }
    if let Some(v) = authorization {
        out.push(("Authorization", v.to_owned()));
    }
    out
}

const PROTOBUF: Option<&str> = Some("application/x-protobuf");
const JSON: Option<&str> = Some("application/json");
const GZIP: Option<&str> = Some("gzip");

/// POST /v1/metrics with the right token and `content_type`/`encoding`.
fn post(
    name: &'static str,
    content_type: Option<&str>,
    encoding: Option<&str>,
    body: Vec<u8>,
    expect: Expect,
) -> Case {
    let auth = format!("Bearer {TOKEN}");
    Case {
        name,
        send: Send::Http {
            method: "POST",
            path: "/v1/metrics",
            headers: headers(content_type, encoding, Some(&auth)),
            body,
        },
        expect,
    }
}

/// OTLP/JSON with one gauge point whose `timeUnixNano` and `asDouble` are given as
/// raw JSON.
fn json_point(time: &str, value: &str) -> Vec<u8> {
    format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"host.name","value":{{"stringValue":"bad-input-host"}}}}]}},"scopeMetrics":[{{"metrics":[{{"name":"bad_input_json","gauge":{{"dataPoints":[{{"timeUnixNano":{time},"asDouble":{value}}}]}}}}]}}]}}]}}"#
    )
    .into_bytes()
}

fn delta_sum(t_ms: i64) -> metrics_v1::Metric {
    metrics_v1::Metric {
        name: "bad_input_delta".to_owned(),
        data: Some(metrics_v1::metric::Data::Sum(metrics_v1::Sum {
            data_points: number_points(3, t_ms),
            aggregation_temporality: metrics_v1::AggregationTemporality::Delta as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn exponential_histogram(t_ms: i64) -> anyhow::Result<metrics_v1::Metric> {
    use metrics_v1::exponential_histogram_data_point::Buckets;
    let point = metrics_v1::ExponentialHistogramDataPoint {
        time_unix_nano: u64::try_from(t_ms)? * 1_000_000,
        count: 3,
        sum: Some(6.0),
        scale: 2,
        positive: Some(Buckets {
            offset: 0,
            bucket_counts: vec![1, 2],
        }),
        ..Default::default()
    };
    Ok(metrics_v1::Metric {
        name: "bad_input_exponential".to_owned(),
        data: Some(metrics_v1::metric::Data::ExponentialHistogram(
            metrics_v1::ExponentialHistogram {
                data_points: vec![point],
                aggregation_temporality: metrics_v1::AggregationTemporality::Cumulative as i32,
            },
        )),
        ..Default::default()
    })
}

/// The bad requests, each with the answer it must get.
pub(crate) fn cases(t: i64) -> anyhow::Result<Vec<Case>> {
    use Expect::{Api, Rejected, Status};
    let good = pb(otlp::gauge("bad_input_never_stored", number_points(1, t)));
    let good_gz = otlp::gzip(&good)?;
    let bomb = gzip_bomb(64 << 20)?;
    ensure!(bomb.len() < LIMIT_BYTES, "the bomb is {} bytes", bomb.len());
    let many: Vec<(String, String)> = (0..20_000)
        .map(|i| (format!("label_{i}"), "v".to_owned()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let long = "x".repeat(512 * 1024);
    let unauthenticated = |name, authorization: Option<&str>| Case {
        name,
        send: Send::Http {
            method: "POST",
            path: "/v1/metrics",
            headers: headers(PROTOBUF, None, authorization),
            body: good.clone(),
        },
        expect: Status(401),
    };
    let grpc = |name, request, token, expect| Case {
        name,
        send: Send::Grpc { request, token },
        expect,
    };
    let one_gauge = |metric| otlp::request(&[("host.name", "bad-input-host")], vec![metric]);
    let api = |name, path: &str, expect| Case {
        name,
        send: Send::Api(path.to_owned()),
        expect,
    };
    let query = |promql: &str| format!("/api/v1/query?query={}", url_encode(promql));
    let bad_data = Api(400, "bad_data");
    Ok(vec![
        // OTLP/HTTP: authentication.
        unauthenticated("http: no bearer token", None),
        unauthenticated("http: wrong bearer token", Some("Bearer not-the-token")),
        unauthenticated(
            "http: basic auth instead of bearer",
            Some(&format!("Basic {TOKEN}")),
        ),
        // OTLP/HTTP: content type, encoding, method, path.
        post(
            "http: text/plain body",
            Some("text/plain"),
            None,
            good.clone(),
            Status(415),
        ),
        post(
            "http: no content type",
            None,
            None,
            good.clone(),
            Status(415),
        ),
        post(
            "http: content-encoding br",
            PROTOBUF,
            Some("br"),
            good.clone(),
            Status(415),
        ),
        Case {
            name: "http: GET /v1/metrics",
            send: Send::Http {
                method: "GET",
                path: "/v1/metrics",
                headers: headers(None, None, Some(&format!("Bearer {TOKEN}"))),
                body: Vec::new(),
            },
            expect: Status(405),
        },
        Case {
            name: "http: unknown path",
            send: Send::Http {
                method: "POST",
                path: "/v1/nothing-here",
                headers: headers(PROTOBUF, None, Some(&format!("Bearer {TOKEN}"))),
                body: good.clone(),
            },
            expect: Status(404),
        },
        // OTLP/HTTP: bodies that do not decode.
        post(
            "http: invalid protobuf",
            PROTOBUF,
            None,
            vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x01],
            Status(400),
        ),
        post(
            "http: truncated protobuf",
            PROTOBUF,
            None,
            good[..good.len() - 3].to_vec(),
            Status(400),
        ),
        post(
            "http: invalid JSON",
            JSON,
            None,
            br#"{"resourceMetrics": ["#.to_vec(),
            Status(400),
        ),
        post(
            "http: JSON of the wrong shape",
            JSON,
            None,
            br#"{"resourceMetrics": 5}"#.to_vec(),
            Status(400),
        ),
        post(
            "http: truncated gzip",
            PROTOBUF,
            GZIP,
            good_gz[..good_gz.len() / 2].to_vec(),
            Status(400),
        ),
        post(
            "http: gzip header on plain bytes",
            PROTOBUF,
            GZIP,
            good.clone(),
            Status(400),
        ),
        // Timestamps are integers in OTLP; in JSON they are strings that can hold
        // anything. A point that cannot be read is refused: 400, or counted as rejected.
        post(
            "http: JSON timestamp NaN",
            JSON,
            None,
            json_point("\"NaN\"", "1"),
            Rejected(1),
        ),
        post(
            "http: JSON timestamp Infinity",
            JSON,
            None,
            json_point("\"Infinity\"", "1"),
            Rejected(1),
        ),
        post(
            "http: JSON timestamp negative",
            JSON,
            None,
            json_point("\"-5\"", "1"),
            Rejected(1),
        ),
        post(
            "http: JSON value not a number",
            JSON,
            None,
            json_point(&format!("\"{}\"", t * 1_000_000), "\"abc\""),
            Rejected(1),
        ),
        // OTLP/HTTP: too large, as sent and once decompressed.
        post(
            "http: body over the limit",
            PROTOBUF,
            None,
            vec![0x0a; LIMIT_BYTES + 4096],
            Status(413),
        ),
        post(
            "http: gzip bomb (64 MiB of zeros)",
            PROTOBUF,
            GZIP,
            bomb,
            Status(413),
        ),
        // OTLP/HTTP: well-formed points Prometheus cannot store, and absurd labels.
        post(
            "http: delta sum",
            PROTOBUF,
            None,
            pb(delta_sum(t)),
            Rejected(3),
        ),
        post(
            "http: exponential histogram",
            PROTOBUF,
            None,
            pb(exponential_histogram(t)?),
            Rejected(1),
        ),
        post(
            "http: point without a timestamp",
            PROTOBUF,
            None,
            pb(otlp::gauge("bad_input_no_time", number_points(2, 0))),
            Rejected(2),
        ),
        post(
            "http: 20,000 labels on one point",
            PROTOBUF,
            None,
            pb(otlp::gauge(
                "bad_input_many_labels",
                vec![otlp::point(&many, t, 1.0)],
            )),
            Rejected(1),
        ),
        post(
            "http: a 512 KiB label value",
            PROTOBUF,
            None,
            pb(otlp::gauge(
                "bad_input_long_label",
                vec![otlp::point(&[("long", &long)], t, 1.0)],
            )),
            Rejected(1),
        ),
        // OTLP/gRPC.
        grpc(
            "grpc: no bearer token",
            one_gauge(otlp::gauge("bad_input_never_stored", number_points(1, t))),
            None,
            Expect::Grpc(&[tonic::Code::Unauthenticated]),
        ),
        grpc(
            "grpc: wrong bearer token",
            one_gauge(otlp::gauge("bad_input_never_stored", number_points(1, t))),
            Some("not-the-token"),
            Expect::Grpc(&[tonic::Code::Unauthenticated]),
        ),
        grpc(
            "grpc: message over the limit",
            one_gauge(otlp::gauge(
                "bad_input_big",
                vec![otlp::point(
                    &[("long", &"y".repeat(LIMIT_BYTES + 1024))],
                    t,
                    1.0,
                )],
            )),
            Some(TOKEN),
            Expect::Grpc(&[tonic::Code::ResourceExhausted, tonic::Code::OutOfRange]),
        ),
        grpc(
            "grpc: delta sum",
            one_gauge(delta_sum(t)),
            Some(TOKEN),
            Rejected(3),
        ),
        // The query API, answered as Prometheus 2.42 answers the same requests.
        api(
            "api: unparsable PromQL",
            &query("sum(rate(up[5m]"),
            bad_data,
        ),
        api(
            "api: range vector where an instant one is needed",
            &query("rate(up)"),
            bad_data,
        ),
        api("api: no query parameter", "/api/v1/query", bad_data),
        api(
            "api: time that is not a time",
            &format!("{}&time=yesterday", query("up")),
            bad_data,
        ),
        api(
            "api: query_range without step",
            "/api/v1/query_range?query=up&start=1&end=100",
            bad_data,
        ),
        api(
            "api: query_range step 0",
            "/api/v1/query_range?query=up&start=1&end=100&step=0",
            bad_data,
        ),
        api(
            "api: query_range end before start",
            "/api/v1/query_range?query=up&start=100&end=1&step=1",
            bad_data,
        ),
        api(
            "api: query_range over 11,000 points",
            "/api/v1/query_range?query=up&start=0&end=1000000&step=1",
            bad_data,
        ),
        api("api: series without match[]", "/api/v1/series", bad_data),
        api(
            "api: series with a bad selector",
            &format!("/api/v1/series?match[]={}", url_encode("{__name__=~")),
            bad_data,
        ),
        api(
            "api: values of an invalid label name",
            "/api/v1/label/not-a-label/values",
            bad_data,
        ),
        api(
            "api: unknown endpoint",
            "/api/v1/no-such-endpoint",
            Status(404),
        ),
    ])
}

/// `size` zero bytes, gzipped (about a thousandth of the size).
fn gzip_bomb(size: usize) -> anyhow::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..size / zeros.len() {
        encoder.write_all(&zeros)?;
    }
    Ok(encoder.finish()?)
}
