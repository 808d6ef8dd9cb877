//! The Prometheus endpoint.
//!
//! A scrape serves the snapshot of the latest collection; it never runs a source, so a
//! scraper that polls every second costs an encode (cached per snapshot and format),
//! not a walk over /proc and NVML.

use std::future::Future;
use std::io::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::net::TcpListener;
use tokio::sync::watch;
use vigil_proto::exposition::Format;

use crate::collect::Snapshot;

/// Serves `/metrics` from the latest snapshot in `snapshots` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .with_state(snapshots);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><head><title>vigil-agent</title></head><body><h1>vigil-agent</h1>\
         <p><a href=\"/metrics\">Metrics</a></p></body></html>",
    )
}

async fn metrics(
    State(snapshots): State<watch::Receiver<Arc<Snapshot>>>,
    headers: HeaderMap,
) -> Response {
    let snapshot = Arc::clone(&snapshots.borrow());
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let body = snapshot.encoded(format);
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);

    let mut response = if gzip {
        // Compressing a few hundred kilobytes takes well under a millisecond at level 1.
        let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
        match encoder.write_all(&body).and_then(|()| encoder.finish()) {
            Ok(compressed) => {
                let mut r = Response::new(Body::from(compressed));
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "gzip encoding failed");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        }
    } else {
        Response::new(Body::from(body))
    };
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response.headers_mut().insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    response
}

/// Whether an `Accept-Encoding` header allows gzip (and does not refuse it with q=0).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|part| {
        let mut params = part.split(';').map(str::trim);
        let coding = params.next().unwrap_or_default();
        let refused = params.any(|p| {
            p.strip_prefix("q=")
                .is_some_and(|q| q.parse::<f32>().ok() == Some(0.0))
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::accepts_gzip;

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, gzip;q=0.8"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
    }
}
