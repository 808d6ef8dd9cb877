//! A foreign log sender: Python's `logging` through the OpenTelemetry SDK's
//! `LoggingHandler` and OTLP log exporters (the venv tests/run.sh creates at
//! tests/.venv) sends one record over gRPC and one over HTTP; both are then found by
//! `/api/v1/logs/search` with their node, severity, source and attributes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use vigil_e2e::collector::{Collector, TestDir, api_data, wait_for};

const TOKEN: &str = "sdk-logs-token-19c2";
const HOST_GRPC: &str = "sdk-logs-grpc";
const HOST_HTTP: &str = "sdk-logs-http";
#[test]
fn opentelemetry_python_sdk_logs_are_searchable() -> anyhow::Result<()> {
    let Some(python) = vigil_e2e::otel_sdk_python()? else {
        return Ok(());
    };
    let dir = TestDir::new("logs-otel-sdk")?;
    let result = scenario(dir.path(), &python);
    dir.finish(result)
}

fn scenario(dir: &Path, python: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let collector = Collector::start(dir, Some(TOKEN), &[])?;
    let marker = format!("m{}", std::process::id());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/otel_logs_send.py");
    let output = Command::new(python)
        .arg(&script)
        .args(["--grpc", &collector.otlp_grpc.to_string()])
        .args(["--http", &collector.otlp_http.to_string()])
        .args(["--token", TOKEN, "--marker", &marker])
        .args(["--host-grpc", HOST_GRPC, "--host-http", HOST_HTTP])
        .output()
        .context("running otel_logs_send.py")?;
    ensure!(
        output.status.success(),
        "otel_logs_send.py failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let sent = Instant::now();
    let search = |query: &str| -> anyhow::Result<Option<serde_json::Value>> {
        let path = format!("/api/v1/logs/search?q={query}");
        let data = api_data(&collector.get(&path)?, &path)?;
        Ok((data["total"] == 1).then(|| data["hits"][0].clone()))
    };
    let grpc = wait_for(Duration::from_secs(5), "the gRPC record", || {
        search(&format!("{marker}%20AND%20disk"))
    })?;
    let http = wait_for(Duration::from_secs(5), "the HTTP record", || {
        search(&format!("{marker}%20AND%20allreduce"))
    })?;
    let took = sent.elapsed();
    ensure!(grpc["node"] == HOST_GRPC, "{grpc}");
    ensure!(grpc["severity"] == "error", "{grpc}");
    ensure!(grpc["source"] == "vigil-e2e-sdk-logs", "{grpc}");
    ensure!(grpc["attributes"]["job.id"] == "j-42", "{grpc}");
    ensure!(
        grpc["body"]
            .as_str()
            .is_some_and(|b| b.contains("disk full")),
        "{grpc}"
    );
    ensure!(http["node"] == HOST_HTTP, "{http}");
    ensure!(http["severity"] == "warn", "{http}");
    // An attribute query finds the record by the attribute the script logged with.
    let path = format!("/api/v1/logs/search?q=attributes.job.id:j%2D42%20AND%20{marker}");
    let data = api_data(&collector.get(&path)?, &path)?;
    ensure!(data["total"] == 1, "{data}");
    println!(
        "both SDK records searchable {took:?} after the script; test took {:?}",
        started.elapsed()
    );
    Ok(())
}
