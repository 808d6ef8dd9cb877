//! A foreign sender: the OpenTelemetry Python SDK (from PyPI, in the venv that
//! tests/run.sh creates at tests/.venv) exports a gauge over OTLP/gRPC and a gauge and a
//! counter over OTLP/HTTP; each is queryable under the name Prometheus's own OTLP
//! receiver gives it (dots to underscores, unit suffixes, `_total` on counters).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use vigil_e2e::collector::{Collector, TestDir, series_of, wait_for};

const TOKEN: &str = "sdk-token-5be8";
const HOST_GRPC: &str = "sdk-host-grpc";
const HOST_HTTP: &str = "sdk-host-http";
const INSTANCE_GRPC: &str = "sdk-instance-grpc-1";
#[test]
fn opentelemetry_python_sdk_lands_over_grpc_and_http() -> anyhow::Result<()> {
    let Some(python) = vigil_e2e::otel_sdk_python()? else {
        return Ok(());
    };
    let dir = TestDir::new("collector-otel-sdk")?;
    let result = scenario(dir.path(), &python);
    dir.finish(result)
}

fn scenario(dir: &Path, python: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let collector = Collector::start(dir, Some(TOKEN), &[])?;
    // A value no other run or series has.
    let value = f64::from(std::process::id() % 100_000) + 0.25;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/otel_send.py");
    let output = Command::new(python)
        .arg(&script)
        .args(["--grpc", &collector.otlp_grpc.to_string()])
        .args(["--http", &collector.otlp_http.to_string()])
        .args(["--token", TOKEN])
        .args(["--value", &value.to_string()])
        .args(["--host-grpc", HOST_GRPC, "--host-http", HOST_HTTP])
        .args(["--instance-grpc", INSTANCE_GRPC])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(dir.join("otel-sdk.log"), &report)?;
    ensure!(
        output.status.success(),
        "the SDK's exports failed ({}):\n{report}",
        output.status
    );

    // Resource to labels: `job` from service.name as Prometheus does; `instance` and
    // `node` from host.name (issue 4), service.instance.id only when host.name is absent.
    for (name, host, instance, expected) in [
        ("sdk_grpc_memory_usage_bytes", HOST_GRPC, HOST_GRPC, value),
        (
            "sdk_http_temperature_celsius",
            HOST_HTTP,
            HOST_HTTP,
            value + 0.5,
        ),
        ("sdk_http_requests_total", HOST_HTTP, HOST_HTTP, 7.0),
    ] {
        let series = wait_for(Duration::from_secs(15), name, || {
            let series = series_of(&collector.query(name, None)?)?;
            Ok((!series.is_empty()).then_some(series))
        })?;
        ensure!(
            series.len() == 1,
            "{name}: {} series: {series:?}",
            series.len()
        );
        let labels = &series[0].labels;
        for (key, want) in [
            ("node", host),
            ("instance", instance),
            ("job", "vigil-e2e-sdk"),
            ("queue", "default"),
            ("http_route", "/v1/x"),
        ] {
            ensure!(
                labels.get(key).map(String::as_str) == Some(want),
                "{name}: label {key} should be {want:?}, labels are {labels:?}"
            );
        }
        let got = series[0].samples[0].1;
        ensure!(got == expected, "{name}: value {got}, sent {expected}");
        println!("{name}{labels:?} = {got}");
    }
    // Nothing landed under an unnormalised name.
    let raw = collector.api("/api/v1/label/__name__/values")?;
    let names: Vec<&str> = raw
        .as_array()
        .context("label values are not an array")?
        .iter()
        .filter_map(|v| v.as_str())
        .filter(|n| n.starts_with("sdk"))
        .collect();
    let mut names = names;
    names.sort_unstable();
    ensure!(
        names
            == [
                "sdk_grpc_memory_usage_bytes",
                "sdk_http_requests_total",
                "sdk_http_temperature_celsius"
            ],
        "metric names from the SDK: {names:?}"
    );
    println!("test took {:?}", started.elapsed());
    Ok(())
}
