//! Malformed, oversized and unauthenticated requests against the real collector, over
//! OTLP/HTTP, OTLP/gRPC and the query API: each gets the error status that the OTLP
//! specification or Prometheus's API gives it, the collector's refusal counters count
//! them, and it goes on serving — a good request before and after lands.

mod cases;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use cases::{Case, Send, cases};
use prost::Message as _;
use vigil_e2e::collector::{Collector, TestDir, api_json, series_of, sum_of};
use vigil_e2e::otlp::{self, collector_v1};
use vigil_e2e::{Response, http_request};

pub(crate) const TOKEN: &str = "bad-input-token-c77a";
/// The collector's body limit in this test (after decompression), set small so the
/// oversized requests stay cheap to build.
pub(crate) const LIMIT_BYTES: usize = 1 << 20;

/// What a case must get back.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect {
    /// This HTTP status.
    Status(u16),
    /// OTLP's answer for points it cannot store: 400, or 200 with
    /// `partial_success.rejected_data_points` equal to this many points and a message.
    Rejected(u64),
    /// A Prometheus API error: this status and `errorType`.
    Api(u16, &'static str),
    /// This gRPC status code (any of them).
    Grpc(&'static [tonic::Code]),
}

struct Checked {
    name: &'static str,
    outcome: String,
}

/// Every case's verdict: all cases run, and the test fails at the end listing each
/// wrong answer.
#[derive(Default)]
struct Verdicts {
    ok: Vec<Checked>,
    failed: Vec<String>,
}

impl Verdicts {
    fn check(&mut self, name: &'static str, outcome: anyhow::Result<String>) {
        match outcome {
            Ok(outcome) => self.ok.push(Checked { name, outcome }),
            Err(e) => self.failed.push(format!("{name}: {e:#}")),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[test]
fn bad_requests_get_errors_and_the_collector_keeps_serving() -> anyhow::Result<()> {
    let dir = TestDir::new("collector-bad-input")?;
    let result = scenario(dir.path());
    dir.finish(result)
}

/// Checks one HTTP answer against `expect`.
fn judge_http(response: &Response, expect: Expect) -> anyhow::Result<String> {
    let status = response.status;
    match expect {
        Expect::Status(want) => {
            ensure!(
                status == want,
                "status {status}, want {want}: {}",
                body_text(response)
            );
        }
        Expect::Rejected(points) => {
            if status == 400 {
                return Ok(format!("400 {}", body_text(response)));
            }
            ensure!(
                status == 200,
                "status {status}, want 400 or a partial success: {}",
                body_text(response)
            );
            let (rejected, message) = partial_success(response)?;
            ensure!(
                rejected == points && !message.is_empty(),
                "200 with rejected_data_points {rejected} ({message:?}), want {points} and a reason"
            );
            return Ok(format!(
                "200 partial_success: {rejected} rejected, {message:?}"
            ));
        }
        Expect::Api(want, kind) => {
            let json = api_json(response, "API error")?;
            ensure!(
                status == want && json["status"] == "error" && json["errorType"] == kind,
                "status {status} {json}, want {want} with errorType {kind}"
            );
            ensure!(
                json["error"].as_str().is_some_and(|e| !e.is_empty()),
                "no error text: {json}"
            );
            return Ok(format!("{status} {kind}: {}", json["error"]));
        }
        Expect::Grpc(_) => bail!("a gRPC expectation for an HTTP request"),
    }
    Ok(format!("{status} {}", body_text(response)))
}

fn body_text(response: &Response) -> String {
    let text = response
        .text()
        .unwrap_or_else(|_| format!("{} bytes", response.body.len()));
    text.chars().take(200).collect()
}

/// `partial_success` of an export response in protobuf or JSON.
fn partial_success(response: &Response) -> anyhow::Result<(u64, String)> {
    let json = response
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"));
    if json {
        let v: serde_json::Value = serde_json::from_slice(&response.body)?;
        let p = &v["partialSuccess"];
        let rejected = match &p["rejectedDataPoints"] {
            serde_json::Value::String(s) => s.parse()?,
            v => v.as_u64().unwrap_or(0),
        };
        Ok((
            rejected,
            p["errorMessage"].as_str().unwrap_or_default().to_owned(),
        ))
    } else {
        let r = collector_v1::ExportMetricsServiceResponse::decode(&response.body[..])
            .context("the response is not an ExportMetricsServiceResponse")?;
        let p = r.partial_success.unwrap_or_default();
        Ok((u64::try_from(p.rejected_data_points)?, p.error_message))
    }
}

fn judge_grpc(
    result: anyhow::Result<Result<collector_v1::ExportMetricsServiceResponse, tonic::Status>>,
    expect: Expect,
) -> anyhow::Result<String> {
    let result = result?;
    match (expect, result) {
        (Expect::Grpc(codes), Err(status)) => {
            ensure!(
                codes.contains(&status.code()),
                "gRPC {status:?}, want one of {codes:?}"
            );
            Ok(format!("{:?}: {}", status.code(), status.message()))
        }
        (Expect::Rejected(points), Ok(r)) => {
            let p = r.partial_success.unwrap_or_default();
            ensure!(
                u64::try_from(p.rejected_data_points)? == points && !p.error_message.is_empty(),
                "partial_success {p:?}, want {points} rejected with a reason"
            );
            Ok(format!(
                "OK partial_success: {} rejected, {:?}",
                p.rejected_data_points, p.error_message
            ))
        }
        (Expect::Rejected(_), Err(status)) if status.code() == tonic::Code::InvalidArgument => {
            Ok(format!("{:?}: {}", status.code(), status.message()))
        }
        (expect, got) => bail!("got {got:?}, want {expect:?}"),
    }
}

/// Sends one case and judges the answer.
fn run_case(collector: &Collector, case: Case) -> anyhow::Result<String> {
    match case.send {
        Send::Http {
            method,
            path,
            headers,
            body,
        } => {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let response = http_request(collector.otlp_http, method, path, &headers, &body)?;
            judge_http(&response, case.expect)
        }
        Send::Grpc { request, token } => judge_grpc(
            otlp::export_grpc(collector.otlp_grpc, request, token),
            case.expect,
        ),
        Send::Api(path) => judge_http(&collector.get(&path)?, case.expect),
    }
}

fn scenario(dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = dir.join("collector.toml");
    std::fs::write(&config, format!("max_request_bytes = {LIMIT_BYTES}\n"))?;
    let config_arg = config
        .to_str()
        .context("temp path is not UTF-8")?
        .to_owned();
    let collector = Collector::start(dir, Some(TOKEN), &["--config", &config_arg])?;
    let before = collector.self_metrics()?;
    good_requests_land(&collector, "before")?;

    let mut v = Verdicts::default();
    let cases = cases(now_ms())?;
    let count = cases.len();
    ensure!(count >= 20, "only {count} cases");
    for case in cases {
        let name = case.name;
        v.check(name, run_case(&collector, case));
    }

    // Still serving, and nothing of the refused requests landed.
    let health = collector.get("/healthz")?;
    v.check(
        "after: /healthz",
        if health.status == 200 {
            Ok("200".to_owned())
        } else {
            Err(anyhow::anyhow!("status {}", health.status))
        },
    );
    v.check(
        "after: good protobuf, gzip and JSON requests land",
        good_requests_land(&collector, "after").map(|()| "stored".to_owned()),
    );
    for name in [
        "bad_input_never_stored",
        "bad_input_delta",
        "bad_input_exponential",
        "bad_input_no_time",
        "bad_input_many_labels",
        "bad_input_long_label",
        "bad_input_big",
        "bad_input_json",
    ] {
        let stored = series_of(&collector.query(&format!("{{__name__=~\"{name}.*\"}}"), None)?)?;
        v.check(
            "after: refused metrics are not stored",
            if stored.is_empty() {
                Ok(format!("no {name}"))
            } else {
                Err(anyhow::anyhow!(
                    "{name} was refused but stored: {} series",
                    stored.len()
                ))
            },
        );
    }

    // The refusals were counted. Exactly: 3 over HTTP and 2 over gRPC unauthenticated;
    // 2 over HTTP and 1 over gRPC too large (tonic refuses that one before the handler;
    // the receiver counts it from tonic's answer). At least: a case whose answer may
    // take one of two forms counts in one counter or the other.
    let after = collector.self_metrics()?;
    let grew = |name: &str| -> anyhow::Result<f64> {
        let now =
            sum_of(&after, name, &[]).with_context(|| format!("{name} is not on /metrics"))?;
        Ok(now - sum_of(&before, name, &[]).unwrap_or(0.0))
    };
    for (name, want, exact) in [
        ("vigil_ingest_unauthenticated_total", 5.0, true),
        ("vigil_ingest_payload_too_large_total", 3.0, true),
        ("vigil_ingest_decode_errors_total", 6.0, false),
        ("vigil_ingest_samples_rejected_total", 10.0, false),
    ] {
        v.check(
            "after: refusal counters",
            grew(name).and_then(|by| {
                let ok = if exact { by == want } else { by >= want };
                ensure!(
                    ok,
                    "{name} grew by {by}, want {}{want}",
                    if exact { "" } else { ">= " }
                );
                Ok(format!("{name} +{by}"))
            }),
        );
    }

    for c in &v.ok {
        println!("ok   {}: {}", c.name, c.outcome);
    }
    for f in &v.failed {
        println!("FAIL {f}");
    }
    ensure!(
        v.failed.is_empty(),
        "{} checks of {count} bad requests and the collector afterwards failed:\n{}",
        v.failed.len(),
        v.failed.join("\n")
    );
    println!(
        "{count} bad requests answered correctly; test took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// A protobuf, a gzipped protobuf and a JSON request each land and are queryable.
fn good_requests_land(collector: &Collector, when: &str) -> anyhow::Result<()> {
    let t = now_ms();
    let name = format!("bad_input_control_{when}");
    let auth = format!("Bearer {TOKEN}");
    let request = otlp::request(
        &[("host.name", "control-host")],
        vec![otlp::gauge(
            &name,
            vec![otlp::point(&[("via", "protobuf")], t, 1.0)],
        )],
    );
    let r = otlp::post_protobuf(collector.otlp_http, &request, Some(TOKEN), false)?;
    ensure!(
        r.status == 200,
        "{when}: a good protobuf request got {}: {}",
        r.status,
        body_text(&r)
    );
    let request = otlp::request(
        &[("host.name", "control-host")],
        vec![otlp::gauge(
            &name,
            vec![otlp::point(&[("via", "gzip")], t, 2.0)],
        )],
    );
    let r = otlp::post_protobuf(collector.otlp_http, &request, Some(TOKEN), true)?;
    ensure!(
        r.status == 200,
        "{when}: a good gzipped request got {}: {}",
        r.status,
        body_text(&r)
    );
    let json = format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"host.name","value":{{"stringValue":"control-host"}}}}]}},"scopeMetrics":[{{"metrics":[{{"name":"{name}","gauge":{{"dataPoints":[{{"attributes":[{{"key":"via","value":{{"stringValue":"json"}}}}],"timeUnixNano":"{}","asDouble":3}}]}}}}]}}]}}]}}"#,
        t * 1_000_000
    );
    let r = http_request(
        collector.otlp_http,
        "POST",
        "/v1/metrics",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &auth),
        ],
        json.as_bytes(),
    )?;
    ensure!(
        r.status == 200,
        "{when}: a good JSON request got {}: {}",
        r.status,
        body_text(&r)
    );
    let mut got: Vec<(String, f64)> = series_of(&collector.query(&name, None)?)?
        .into_iter()
        .map(|s| {
            (
                s.labels.get("via").cloned().unwrap_or_default(),
                s.samples[0].1,
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let want = [
        ("gzip".to_owned(), 2.0),
        ("json".to_owned(), 3.0),
        ("protobuf".to_owned(), 1.0),
    ];
    ensure!(got == want, "{when}: control series {got:?}, want {want:?}");
    Ok(())
}
