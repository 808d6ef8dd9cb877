//! The demo's notification receiver: a webhook endpoint on loopback that the embedded
//! collector's notifier sends Alertmanager's v4 webhook bodies to. Each notification is
//! said (one line per alert) and appended to a JSON-lines file, so a newcomer sees what
//! an on-call receiver would get without setting one up.

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;
use tokio::net::TcpListener;

use super::Say;

/// The path the notifier posts to.
pub const PATH: &str = "/notify";

struct Receiver {
    say: Say,
    log: PathBuf,
}

/// Serves [`PATH`] on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    log: PathBuf,
    say: Say,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(PATH, post(receive))
        .with_state(Arc::new(Receiver { say, log }));
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

async fn receive(State(r): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        r.say
            .line(format_args!("demo notification: not JSON, refused"));
        return StatusCode::BAD_REQUEST;
    };
    for line in summarise(&message) {
        r.say.line(format_args!("notification: {line}"));
    }
    let log = r.log.clone();
    let appended = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        file.write_all(&body)?;
        if !body.ends_with(b"\n") {
            file.write_all(b"\n")?;
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    match appended {
        Ok(Ok(())) => StatusCode::OK,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, file = %r.log.display(), "recording a demo notification failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
        Err(e) => {
            tracing::warn!(error = %e, "recording a demo notification failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// One line per alert of a webhook body: `FIRING GpuEccDoubleBitError on demo-node-1
/// GPU 1: <summary>`.
pub fn summarise(message: &Value) -> Vec<String> {
    let label = |a: &Value, k: &str| a["labels"][k].as_str().map(str::to_owned);
    message["alerts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let mut line = format!(
                "{} {}",
                a["status"].as_str().unwrap_or("?").to_uppercase(),
                label(a, "alertname").unwrap_or_else(|| "?".into())
            );
            if let Some(node) = label(a, "node") {
                line.push_str(&format!(" on {node}"));
            }
            if let Some(gpu) = label(a, "gpu") {
                line.push_str(&format!(" GPU {gpu}"));
            }
            if let Some(summary) = a["annotations"]["summary"].as_str() {
                line.push_str(&format!(": {summary}"));
            }
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_alert_with_node_gpu_and_summary() {
        let body = serde_json::json!({
            "status": "firing",
            "alerts": [
                {"status": "firing",
                 "labels": {"alertname": "GpuEccDoubleBitError", "node": "demo-node-1", "gpu": "1"},
                 "annotations": {"summary": "Uncorrectable ECC errors"}},
                {"status": "resolved", "labels": {"alertname": "NodeDown"}, "annotations": {}}
            ]
        });
        assert_eq!(
            summarise(&body),
            [
                "FIRING GpuEccDoubleBitError on demo-node-1 GPU 1: Uncorrectable ECC errors",
                "RESOLVED NodeDown"
            ]
        );
        assert!(summarise(&serde_json::json!({})).is_empty());
    }
}
