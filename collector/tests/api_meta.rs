//! The metadata endpoints, health, `/metrics` and the OTLP → query path against a real
//! collector, compared literally with Prometheus's API responses for the same series.

mod api_common;

use anyhow::Result;
use api_common::{Collector, T0_SECS, enc, labels, request, seed, test_config};
use serde_json::json;
use vigil_rules::promql::Labels;

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
            labels(&[("__name__", "up"), ("job", "gpu"), ("instance", "a:9400")]),
            t,
            1.0,
        ));
    }
    // One series only in the second half hour.
    let late = (T0_SECS + 1800) * 1000;
    out.push((
        labels(&[
            ("__name__", "DCGM_FI_DEV_GPU_TEMP"),
            ("gpu", "0"),
            ("node", "n1"),
        ]),
        late,
        55.0,
    ));
    out
}

async fn start() -> Result<Collector> {
    let dir = tempfile::tempdir()?;
    Collector::start(test_config(dir.path()), |d| seed(d, &samples())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_labels_and_values() -> Result<()> {
    let c = start().await?;

    let r = c.get("/api/v1/series?match[]=up").await?;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        r#"{"status":"success","data":[{"__name__":"up","instance":"a:9100","job":"node"},{"__name__":"up","instance":"a:9400","job":"gpu"}]}"#
    );
    // Several match[] are united; a time range leaves out series without samples in it.
    let r = c
        .get(&format!(
            "/api/v1/series?match[]={}&match[]={}&start={}&end={}",
            enc(r#"up{job="gpu"}"#),
            enc("DCGM_FI_DEV_GPU_TEMP"),
            T0_SECS + 1000,
            T0_SECS + 2000
        ))
        .await?;
    assert_eq!(
        r.body,
        r#"{"status":"success","data":[{"__name__":"DCGM_FI_DEV_GPU_TEMP","gpu":"0","node":"n1"}]}"#
    );
    // Grafana posts it.
    let r = c
        .post_form(
            "/api/v1/series",
            &format!(
                "match%5B%5D={}&start={T0_SECS}&end={}",
                enc("up"),
                T0_SECS + 60
            ),
        )
        .await?;
    assert_eq!(r.json()?["data"].as_array().map(Vec::len), Some(2));

    let r = c.get("/api/v1/labels").await?;
    assert_eq!(
        r.body,
        r#"{"status":"success","data":["__name__","gpu","instance","job","node"]}"#
    );
    let r = c
        .get(&format!("/api/v1/labels?match[]={}", enc("up")))
        .await?;
    assert_eq!(
        r.body,
        r#"{"status":"success","data":["__name__","instance","job"]}"#
    );
    let r = c.get("/api/v1/labels?limit=2").await?;
    assert_eq!(
        r.body,
        r#"{"status":"success","data":["__name__","gpu"],"warnings":["results truncated due to limit"]}"#
    );

    let r = c.get("/api/v1/label/job/values").await?;
    assert_eq!(r.body, r#"{"status":"success","data":["gpu","node"]}"#);
    let r = c.get("/api/v1/label/__name__/values").await?;
    assert_eq!(
        r.body,
        r#"{"status":"success","data":["DCGM_FI_DEV_GPU_TEMP","up"]}"#
    );
    let r = c
        .get(&format!(
            "/api/v1/label/instance/values?match[]={}",
            enc(r#"{job="gpu"}"#)
        ))
        .await?;
    assert_eq!(r.body, r#"{"status":"success","data":["a:9400"]}"#);
    // A name no series has: an empty list, never null.
    let r = c.get("/api/v1/label/nothing/values").await?;
    assert_eq!(r.body, r#"{"status":"success","data":[]}"#);
    c.stop().await
}

fn error(message: &str) -> serde_json::Value {
    json!({"status": "error", "errorType": "bad_data", "error": message})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_errors() -> Result<()> {
    let c = start().await?;
    let r = c.get("/api/v1/series").await?;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()?, error("no match[] parameter provided"));

    let r = c.get("/api/v1/series?match[]=up&start=later").await?;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()?,
        error("invalid parameter \"start\": cannot parse \"later\" to a valid timestamp")
    );

    let r = c
        .get(&format!("/api/v1/series?match[]={}", enc("up{")))
        .await?;
    assert_eq!(r.status, 400);
    let msg = r.json()?["error"].as_str().unwrap_or_default().to_string();
    assert!(msg.starts_with("invalid parameter \"match[]\": "), "{msg}");

    let r = c.get("/api/v1/label/0bad/values").await?;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()?, error("invalid label name: \"0bad\""));

    let r = c.get("/api/v1/labels?limit=-1").await?;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()?,
        error("invalid parameter \"limit\": limit must be non-negative")
    );
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_set_up_calls() -> Result<()> {
    let c = start().await?;
    let v = c.get("/api/v1/status/buildinfo").await?.json()?;
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["version"], "3.0.0");
    for key in ["revision", "branch", "buildUser", "buildDate", "goVersion"] {
        assert!(v["data"][key].is_string(), "{key}");
    }
    assert_eq!(
        c.get("/api/v1/metadata").await?.body,
        r#"{"status":"success","data":{}}"#
    );
    assert_eq!(
        c.get("/api/v1/query_exemplars?query=up&start=0&end=1")
            .await?
            .body,
        r#"{"status":"success","data":[]}"#
    );
    assert_eq!(
        c.get(&format!(
            "/api/v1/format_query?query={}",
            enc("sum(up)by(job)")
        ))
        .await?
        .json()?,
        json!({"status": "success", "data": "sum by (job) (up)"})
    );
    assert_eq!(
        c.get("/api/v1/nodes").await?.body,
        r#"{"status":"success","data":[]}"#
    );
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_own_metrics() -> Result<()> {
    let c = start().await?;
    let r = c.get("/healthz").await?;
    assert_eq!(r.status, 200);
    assert_eq!(c.get("/readyz").await?.status, 200);

    let r = c.get("/metrics").await?;
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        r.content_type
    );
    for line in [
        "vigil_collector_ready 1\n",
        "vigil_collector_store_series 3\n",
        "# TYPE process_resident_memory_bytes gauge\n",
        "# TYPE vigil_collector_api_queries_total counter\n",
    ] {
        assert!(r.body.contains(line), "missing {line:?} in\n{}", r.body);
    }
    // Without the flag, fleet series stay out of /metrics.
    assert!(!r.body.contains("\nup{"), "{}", r.body);
    c.stop().await
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_metrics_expose_latest_values() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = test_config(dir.path());
    config.fleet_metrics = true;
    let now = now_ms();
    let c = Collector::start(config, |d| {
        seed(
            d,
            &[
                (
                    labels(&[
                        ("__name__", "DCGM_FI_DEV_GPU_TEMP"),
                        ("gpu", "0"),
                        ("node", "n1"),
                    ]),
                    now - 20_000,
                    50.0,
                ),
                (
                    labels(&[
                        ("__name__", "DCGM_FI_DEV_GPU_TEMP"),
                        ("gpu", "0"),
                        ("node", "n1"),
                    ]),
                    now - 5_000,
                    51.5,
                ),
                (
                    labels(&[
                        ("__name__", "DCGM_FI_DEV_GPU_TEMP"),
                        ("gpu", "1"),
                        ("node", "n1"),
                    ]),
                    now - 5_000,
                    60.0,
                ),
                // Gone: its last sample is a staleness marker.
                (
                    labels(&[("__name__", "node_load1"), ("node", "n2")]),
                    now - 9_000,
                    0.5,
                ),
                (
                    labels(&[("__name__", "node_load1"), ("node", "n2")]),
                    now - 4_000,
                    vigil_rules::promql::stale_nan(),
                ),
                // Older than the 5 m lookback.
                (
                    labels(&[("__name__", "node_load1"), ("node", "n3")]),
                    now - 600_000,
                    0.7,
                ),
            ],
        )
    })
    .await?;
    let body = c.get("/metrics").await?.body;
    assert!(
        body.contains(
            "# TYPE DCGM_FI_DEV_GPU_TEMP untyped\n\
             DCGM_FI_DEV_GPU_TEMP{gpu=\"0\",node=\"n1\"} 51.5\n\
             DCGM_FI_DEV_GPU_TEMP{gpu=\"1\",node=\"n1\"} 60\n"
        ),
        "{body}"
    );
    assert!(!body.contains("node_load1"), "{body}");
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_gauge_is_queryable() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Collector::start(test_config(dir.path()), |_| Ok(())).await?;
    let t_ns = (now_ms() - 1_000) * 1_000_000;
    let body = json!({"resourceMetrics": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "demo"}},
            {"key": "host.name", "value": {"stringValue": "box1"}}
        ]},
        "scopeMetrics": [{"metrics": [{
            "name": "demo_temperature",
            "gauge": {"dataPoints": [{
                "asDouble": 21.5,
                "timeUnixNano": t_ns.to_string(),
                "attributes": [{"key": "room", "value": {"stringValue": "a"}}]
            }]}
        }]}]
    }]});
    let r = request(
        c.otlp_http,
        "POST",
        "/v1/metrics",
        Some(("application/json", &body.to_string())),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = c
        .get(&format!(
            "/api/v1/query?query={}",
            enc(r#"demo_temperature{room="a"}"#)
        ))
        .await?
        .json()?;
    let result = &v["data"]["result"];
    assert_eq!(result.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(result[0]["value"][1], "21.5");
    assert_eq!(result[0]["metric"]["instance"], "box1");
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_store_is_open() -> Result<()> {
    use std::sync::Arc;
    use vigil_collector::api::Queries;
    use vigil_collector::config::QueryConfig;
    use vigil_collector::http::{self, AppState};
    use vigil_collector::store::{Store, StoreOptions};

    // The HTTP server alone, as `run` starts it before the store has replayed its WAL.
    let state = Arc::new(AppState::new(Queries::new(&QueryConfig::default()), false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, Arc::clone(&state), async move {
        let _ = rx.await;
    }));

    assert_eq!(request(addr, "GET", "/healthz", None).await?.status, 200);
    assert_eq!(request(addr, "GET", "/readyz", None).await?.status, 503);
    let r = request(addr, "GET", "/api/v1/query?query=1", None).await?;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()?["errorType"], "unavailable");
    let m = request(addr, "GET", "/metrics", None).await?.body;
    assert!(m.contains("vigil_collector_ready 0\n"), "{m}");

    let dir = tempfile::tempdir()?;
    state.set_store(Arc::new(Store::open(StoreOptions::new(dir.path()))?));
    assert_eq!(request(addr, "GET", "/readyz", None).await?.status, 200);
    let r = request(addr, "GET", "/api/v1/query?query=1&time=1", None).await?;
    assert_eq!(
        r.body,
        r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#
    );
    let _ = tx.send(());
    server.await??;
    Ok(())
}
