//! The OTLP/HTTP receiver, against a real store: protobuf, JSON and gzip bodies land;
//! every kind of bad request gets its OTLP/HTTP status (and is counted) and the
//! receiver keeps serving between them.

mod ingest_common;

use anyhow::{Context, Result, ensure};
use ingest_common::*;
use prost::Message;
use vigil_collector::ingest::{Outcome, Protocol};
use vigil_proto::otlp::ExportMetricsServiceResponse;

const PB: (&str, &str) = ("content-type", "application/x-protobuf");
const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_json_and_gzip_bodies_land() -> Result<()> {
    let c = Collector::start(1 << 20).await?;
    let auth = bearer();
    let t = now_ms();

    let body = sdk_gauge("room.temperature", "Cel", t, 21.5).encode_to_vec();
    let a = post(
        c.http,
        "/v1/metrics",
        &[PB, ("authorization", &auth)],
        &body,
    )
    .await?;
    ensure!(a.status == 200, "{a:?}");
    ensure!(
        a.header("content-type") == Some("application/x-protobuf"),
        "{a:?}"
    );
    let answer = ExportMetricsServiceResponse::decode(&a.body[..])?;
    ensure!(answer.partial_success.is_none(), "{answer:?}");

    let gz = gzip(&sdk_gauge("queue.depth", "{item}", t, 3.0).encode_to_vec());
    let a = post(
        c.http,
        "/v1/metrics",
        &[PB, ("authorization", &auth), ("content-encoding", "gzip")],
        &gz,
    )
    .await?;
    ensure!(a.status == 200, "{a:?}");

    let json = format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"py"}}}},{{"key":"host.name","value":{{"stringValue":"h1"}}}}]}},
        "scopeMetrics":[{{"metrics":[{{"name":"jobs.done","unit":"1","sum":{{"aggregationTemporality":2,"isMonotonic":true,
        "dataPoints":[{{"startTimeUnixNano":"{start}","timeUnixNano":"{now}","asInt":"7"}}]}}}}]}}]}}]}}"#,
        start = (t - 60_000) * 1_000_000,
        now = t * 1_000_000
    );
    let a = post(
        c.http,
        "/v1/metrics",
        &[JSON, ("authorization", &auth)],
        json.as_bytes(),
    )
    .await?;
    ensure!(
        a.status == 200,
        "{a:?} {}",
        String::from_utf8_lossy(&a.body)
    );
    ensure!(a.header("content-type") == Some("application/json"));
    let a = post(
        c.http,
        "/v1/metrics",
        &[
            ("content-type", "application/json; charset=utf-8"),
            ("authorization", &auth),
            ("content-encoding", "gzip"),
        ],
        &gzip(json.replace("jobs.done", "jobs.failed").as_bytes()),
    )
    .await?;
    ensure!(a.status == 200, "{a:?}");

    let temp = c.select("room_temperature_celsius")?;
    ensure!(
        temp.len() == 1 && temp[0].samples == vec![(t, 21.5)],
        "{temp:?}"
    );
    ensure!(
        temp[0].labels.get("room") == Some("a") && temp[0].labels.get("instance") == Some("host")
    );
    ensure!(c.select("queue_depth")?.len() == 1);
    let jobs = c.select("jobs_done_total")?;
    ensure!(
        jobs.len() == 1 && jobs[0].samples == vec![(t - 60_000, 0.0), (t, 7.0)],
        "{jobs:?}"
    );
    ensure!(jobs[0].labels.get("job") == Some("py"));
    ensure!(c.select("jobs_failed_total")?.len() == 1);
    ensure!(c.ingest.requests(Protocol::HttpProtobuf, Outcome::Success) == 2);
    ensure!(c.ingest.requests(Protocol::HttpJson, Outcome::Success) == 2);
    Ok(())
}

/// Deeply nested JSON: serde's recursion limit must refuse it without overflowing.
fn nested_json() -> Vec<u8> {
    let mut s = String::from(
        r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"k","value":{"arrayValue":{"values":["#,
    );
    for _ in 0..1_000 {
        s.push_str(r#"{"arrayValue":{"values":["#);
    }
    s.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_errors_and_the_receiver_keeps_serving() -> Result<()> {
    let max = 64 << 10;
    let c = Collector::start(max).await?;
    let auth = bearer();
    let auth = auth.as_str();
    let good = sdk_gauge("alive", "", now_ms(), 1.0).encode_to_vec();
    let bomb = gzip(&vec![0u8; 4 * max]);
    let too_big = vec![b'x'; max + 1];
    let truncated = &good[..good.len() - 3];
    let mut chunked_big = format!(
        "POST /v1/metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/x-protobuf\r\nauthorization: {auth}\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..4 {
        chunked_big.extend_from_slice(format!("{:x}\r\n", max / 2).as_bytes());
        chunked_big.extend(std::iter::repeat_n(b'y', max / 2));
        chunked_big.extend_from_slice(b"\r\n");
    }
    chunked_big.extend_from_slice(b"0\r\n\r\n");

    let wrong_auth = "Bearer nope";
    let basic = "Basic ZmxlZXQ6czNjcmV0";
    // (what, request bytes, expected status)
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("no token", req("POST", "/v1/metrics", &[PB], &good), 401),
        (
            "wrong token",
            req(
                "POST",
                "/v1/metrics",
                &[PB, ("authorization", wrong_auth)],
                &good,
            ),
            401,
        ),
        (
            "basic auth",
            req(
                "POST",
                "/v1/metrics",
                &[PB, ("authorization", basic)],
                &good,
            ),
            401,
        ),
        (
            "garbage protobuf",
            req(
                "POST",
                "/v1/metrics",
                &[PB, ("authorization", auth)],
                b"\xff\xff\xff\xff\x0f",
            ),
            400,
        ),
        (
            "truncated protobuf",
            req(
                "POST",
                "/v1/metrics",
                &[PB, ("authorization", auth)],
                truncated,
            ),
            400,
        ),
        (
            "invalid JSON",
            req(
                "POST",
                "/v1/metrics",
                &[JSON, ("authorization", auth)],
                b"{\"resourceMetrics\": [}",
            ),
            400,
        ),
        (
            "JSON of wrong types",
            req(
                "POST",
                "/v1/metrics",
                &[JSON, ("authorization", auth)],
                br#"{"resourceMetrics":"yes"}"#,
            ),
            400,
        ),
        (
            "deeply nested JSON",
            req(
                "POST",
                "/v1/metrics",
                &[JSON, ("authorization", auth)],
                &nested_json(),
            ),
            400,
        ),
        (
            "not gzip",
            req(
                "POST",
                "/v1/metrics",
                &[PB, ("authorization", auth), ("content-encoding", "gzip")],
                &good,
            ),
            400,
        ),
        (
            "gzip bomb",
            req(
                "POST",
                "/v1/metrics",
                &[PB, ("authorization", auth), ("content-encoding", "gzip")],
                &bomb,
            ),
            413,
        ),
        (
            "content-length over the limit",
            req(
                "POST",
                "/v1/metrics",
                &[PB, ("authorization", auth)],
                &too_big,
            ),
            413,
        ),
        ("chunked body over the limit", chunked_big, 413),
        (
            "text/plain",
            req(
                "POST",
                "/v1/metrics",
                &[("content-type", "text/plain"), ("authorization", auth)],
                &good,
            ),
            415,
        ),
        (
            "no content type",
            req("POST", "/v1/metrics", &[("authorization", auth)], &good),
            415,
        ),
        (
            "brotli",
            req(
                "POST",
                "/v1/metrics",
                &[PB, ("authorization", auth), ("content-encoding", "br")],
                &good,
            ),
            415,
        ),
        (
            "GET",
            req("GET", "/v1/metrics", &[("authorization", auth)], b""),
            405,
        ),
        (
            "traces path",
            req("POST", "/v1/traces", &[PB, ("authorization", auth)], &good),
            404,
        ),
    ];
    ensure!(cases.len() >= 10);
    for (what, bytes, want) in &cases {
        let a = raw(c.http, bytes).await.with_context(|| what.to_string())?;
        ensure!(
            a.status == *want,
            "{what}: got {} want {want}: {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
        if *want == 401 {
            ensure!(
                a.header("www-authenticate") == Some("Bearer"),
                "{what}: {a:?}"
            );
        }
        // Still serving after each.
        let ok = post(c.http, "/v1/metrics", &[PB, ("authorization", auth)], &good).await?;
        ensure!(ok.status == 200, "after {what}: {ok:?}");
    }
    ensure!(
        c.ingest
            .requests(Protocol::HttpProtobuf, Outcome::Unauthenticated)
            == 3
    );
    ensure!(c.ingest.requests(Protocol::HttpProtobuf, Outcome::TooLarge) == 3);
    ensure!(c.ingest.requests(Protocol::HttpJson, Outcome::Malformed) == 3);
    ensure!(
        c.ingest
            .requests(Protocol::HttpProtobuf, Outcome::Malformed)
            == 3
    );
    ensure!(
        c.ingest
            .requests(Protocol::HttpProtobuf, Outcome::Unsupported)
            == 3
    );
    ensure!(c.ingest.requests(Protocol::HttpProtobuf, Outcome::Success) == cases.len() as u64);
    // A malformed body's error is a google.rpc.Status naming what failed.
    let a = post(
        c.http,
        "/v1/metrics",
        &[JSON, ("authorization", auth)],
        b"[",
    )
    .await?;
    let status: serde_json::Value = serde_json::from_slice(&a.body)?;
    ensure!(
        status["code"] == 3
            && status["message"]
                .as_str()
                .is_some_and(|m| m.contains("JSON")),
        "{status}"
    );
    Ok(())
}

fn req(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}
