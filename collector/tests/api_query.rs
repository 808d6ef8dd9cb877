//! `/api/v1/query` and `/api/v1/query_range` against a real collector: the JSON is
//! compared literally with what Prometheus's HTTP API returns for the same samples
//! (shapes from https://prometheus.io/docs/prometheus/latest/querying/api/, timestamp
//! and float formatting from Prometheus's `jsonutil`), errors included.

mod api_common;

use anyhow::Result;
use api_common::{Collector, T0_SECS, enc, labels, seed, test_config};
use vigil_rules::promql::Labels;

/// `up` for two targets, a counter and a gauge with special values, every 15 s from T0
/// for one minute.
fn samples() -> Vec<(Labels, i64, f64)> {
    let mut out = Vec::new();
    for step in 0..=4 {
        let t = (T0_SECS + step * 15) * 1000;
        out.push((
            labels(&[("__name__", "up"), ("job", "node"), ("instance", "a:9100")]),
            t,
            1.0,
        ));
        out.push((
            labels(&[("__name__", "up"), ("job", "node"), ("instance", "b:9100")]),
            t,
            0.0,
        ));
        out.push((
            labels(&[("__name__", "requests_total"), ("code", "200")]),
            t,
            10.0 * step as f64,
        ));
    }
    let t = (T0_SECS + 60) * 1000;
    for (kind, v) in [
        ("nan", f64::NAN),
        ("inf", f64::INFINITY),
        ("neginf", f64::NEG_INFINITY),
        ("small", 1e-7),
        ("big", 2.5e22),
        ("frac", 0.1 + 0.2),
    ] {
        out.push((labels(&[("__name__", "special"), ("kind", kind)]), t, v));
    }
    out
}

async fn start() -> Result<Collector> {
    let dir = tempfile::tempdir()?;
    Collector::start(test_config(dir.path()), |d| seed(d, &samples())).await
}

const UP_VECTOR: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","instance":"a:9100","job":"node"},"value":[1700000060,"1"]},{"metric":{"__name__":"up","instance":"b:9100","job":"node"},"value":[1700000060,"0"]}]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_query_result_types() -> Result<()> {
    let c = start().await?;
    let t = T0_SECS + 60;

    let r = c.get(&format!("/api/v1/query?query=up&time={t}")).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/json");
    assert_eq!(r.body, UP_VECTOR);

    // The same query as RFC 3339 time, and posted as a form the way Grafana sends it.
    let r = c
        .get("/api/v1/query?query=up&time=2023-11-14T22:14:20Z")
        .await?;
    assert_eq!(r.body, UP_VECTOR);
    let r = c
        .post_form("/api/v1/query", &format!("query=up&time={t}"))
        .await?;
    assert_eq!(r.body, UP_VECTOR);

    let r = c
        .get(&format!("/api/v1/query?query={}&time={t}", enc("1+1")))
        .await?;
    assert_eq!(
        r.body,
        r#"{"status":"success","data":{"resultType":"scalar","result":[1700000060,"2"]}}"#
    );

    let r = c
        .get(&format!("/api/v1/query?query={}&time={t}", enc("\"hi\"")))
        .await?;
    assert_eq!(
        r.body,
        r#"{"status":"success","data":{"resultType":"string","result":[1700000060,"hi"]}}"#
    );

    // A range selector: a matrix of the raw samples in (t-1m, t].
    let q = enc(r#"up{instance="a:9100"}[1m]"#);
    let r = c.get(&format!("/api/v1/query?query={q}&time={t}")).await?;
    assert_eq!(
        r.body,
        r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","instance":"a:9100","job":"node"},"values":[[1700000015,"1"],[1700000030,"1"],[1700000045,"1"],[1700000060,"1"]]}]}}"#
    );

    // Evaluation time with a fraction: three decimals, as Prometheus writes it.
    let r = c
        .get(&format!(
            "/api/v1/query?query={}&time={t}.5",
            enc("sum(up)")
        ))
        .await?;
    assert_eq!(
        r.body,
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000060.500,"1"]}]}}"#
    );
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_float_values() -> Result<()> {
    let c = start().await?;
    let r = c
        .get(&format!(
            "/api/v1/query?query=special&time={}",
            T0_SECS + 60
        ))
        .await?;
    assert_eq!(
        r.body,
        concat!(
            r#"{"status":"success","data":{"resultType":"vector","result":["#,
            r#"{"metric":{"__name__":"special","kind":"big"},"value":[1700000060,"2.5e+22"]},"#,
            r#"{"metric":{"__name__":"special","kind":"frac"},"value":[1700000060,"0.30000000000000004"]},"#,
            r#"{"metric":{"__name__":"special","kind":"inf"},"value":[1700000060,"+Inf"]},"#,
            r#"{"metric":{"__name__":"special","kind":"nan"},"value":[1700000060,"NaN"]},"#,
            r#"{"metric":{"__name__":"special","kind":"neginf"},"value":[1700000060,"-Inf"]},"#,
            r#"{"metric":{"__name__":"special","kind":"small"},"value":[1700000060,"1e-07"]}"#,
            r#"]}}"#
        )
    );
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_query_is_a_matrix() -> Result<()> {
    let c = start().await?;
    let q = enc("sum by (job) (up)");
    let path = format!(
        "/api/v1/query_range?query={q}&start={}&end={}&step=30",
        T0_SECS,
        T0_SECS + 60
    );
    let want = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"job":"node"},"values":[[1700000000,"1"],[1700000030,"1"],[1700000060,"1"]]}]}}"#;
    assert_eq!(c.get(&path).await?.body, want);

    // Step as a duration, times as RFC 3339, sent as a POST form.
    let form = format!(
        "query={q}&start={}&end={}&step=30s",
        enc("2023-11-14T22:13:20Z"),
        enc("2023-11-14T22:14:20Z")
    );
    assert_eq!(c.post_form("/api/v1/query_range", &form).await?.body, want);

    // A scalar expression becomes one series without labels.
    let path = format!(
        "/api/v1/query_range?query=2&start={}&end={}&step=60",
        T0_SECS,
        T0_SECS + 60
    );
    assert_eq!(
        c.get(&path).await?.body,
        r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1700000000,"2"],[1700000060,"2"]]}]}}"#
    );

    // A counter: increase over the minute, one point.
    let q = enc("increase(requests_total[1m])");
    let path = format!(
        "/api/v1/query_range?query={q}&start={t}&end={t}&step=15",
        t = T0_SECS + 60
    );
    let v = c.get(&path).await?.json()?;
    let values = &v["data"]["result"][0]["values"];
    assert_eq!(values[0][0], 1700000060);
    // 30 counted over the 45 s the samples span, extrapolated to the 60 s window.
    assert_eq!(values[0][1], "40");
    assert_eq!(
        v["data"]["result"][0]["metric"],
        serde_json::json!({"code": "200"})
    );
    c.stop().await
}

fn error(kind: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"status": "error", "errorType": kind, "error": message})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_prometheus_errors() -> Result<()> {
    let c = start().await?;

    let r = c
        .get(&format!("/api/v1/query?query={}", enc("up{")))
        .await?;
    assert_eq!(r.status, 400);
    let v = r.json()?;
    assert_eq!(v["status"], "error");
    assert_eq!(v["errorType"], "bad_data");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.starts_with("invalid parameter \"query\": "), "{msg}");
    assert!(msg.contains("parse error"), "{msg}");

    let r = c.get("/api/v1/query?query=up&time=yesterday").await?;
    assert_eq!(r.status, 400);
    assert_eq!(r.content_type, "application/json");
    // Key order as Prometheus writes it.
    assert_eq!(
        r.body,
        r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"time\": cannot parse \"yesterday\" to a valid timestamp"}"#
    );
    assert_eq!(
        r.json()?,
        error(
            "bad_data",
            "invalid parameter \"time\": cannot parse \"yesterday\" to a valid timestamp"
        )
    );

    let r = c.get("/api/v1/query?query=up&timeout=soon").await?;
    assert_eq!(
        r.json()?,
        error(
            "bad_data",
            "invalid parameter \"timeout\": cannot parse \"soon\" to a valid duration"
        )
    );

    let cases = [
        (
            "/api/v1/query_range?query=up&start=10&end=20".to_string(),
            "invalid parameter \"step\": cannot parse \"\" to a valid duration",
        ),
        (
            "/api/v1/query_range?query=up&end=20&step=1".to_string(),
            "invalid parameter \"start\": cannot parse \"\" to a valid timestamp",
        ),
        (
            "/api/v1/query_range?query=up&start=20&end=10&step=1".to_string(),
            "end timestamp must not be before start time",
        ),
        (
            "/api/v1/query_range?query=up&start=10&end=20&step=0".to_string(),
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ),
        (
            "/api/v1/query_range?query=up&start=0&end=11001&step=1".to_string(),
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ),
        (
            format!(
                "/api/v1/query_range?query={}&start=0&end=10&step=1",
                enc("up[5m]")
            ),
            "invalid parameter \"query\": invalid expression type \"range vector\" for range query, must be Scalar or instant Vector",
        ),
    ];
    for (path, message) in cases {
        let r = c.get(&path).await?;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert_eq!(r.json()?, error("bad_data", message), "{path}");
    }

    // Exactly 11,000 steps is still allowed.
    let r = c
        .get("/api/v1/query_range?query=1&start=0&end=11000&step=1")
        .await?;
    assert_eq!(r.status, 200);

    // An execution error: two output series with one label set.
    let q = enc(r#"label_replace(up, "instance", "x", "", "")"#);
    let r = c
        .get(&format!("/api/v1/query?query={q}&time={}", T0_SECS + 60))
        .await?;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json()?,
        error(
            "execution",
            "vector cannot contain metrics with the same labelset"
        )
    );
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_sample_budget_and_timeout() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = test_config(dir.path());
    config.query.max_samples = 5;
    let c = Collector::start(config, |d| seed(d, &samples())).await?;
    let t = T0_SECS + 60;

    // 2 series × 4 samples is over a budget of 5; 2 latest samples are not.
    let r = c
        .get(&format!("/api/v1/query?query={}&time={t}", enc("up[1m]")))
        .await?;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json()?,
        error(
            "execution",
            "query processing would load too many samples into memory in query execution"
        )
    );
    assert_eq!(
        c.get(&format!("/api/v1/query?query=up&time={t}"))
            .await?
            .body,
        UP_VECTOR
    );

    // A deadline that has passed before evaluation starts.
    let r = c
        .get(&format!("/api/v1/query?query=up&time={t}&timeout=0.0001"))
        .await?;
    assert_eq!(r.status, 503);
    let v = r.json()?;
    assert_eq!(v["errorType"], "timeout");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|m| m.starts_with("query timed out in ")),
        "{v}"
    );

    // The outcomes are counted on /metrics.
    let m = c.get("/metrics").await?.body;
    assert!(
        m.contains(r#"vigil_collector_api_queries_total{endpoint="query",outcome="execution"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"vigil_collector_api_queries_total{endpoint="query",outcome="timeout"} 1"#),
        "{m}"
    );
    c.stop().await
}
