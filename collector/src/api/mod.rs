//! The collector's HTTP API: Prometheus's query API evaluated by vigil-rules' engine,
//! with Prometheus's JSON shapes, error envelope and status codes, so Grafana's
//! Prometheus data source and Prometheus's own clients work against it unchanged.
//!
//! # Layout
//! - `params`: form values from URL and POST body; time, duration, selector, limit.
//! - `error`: `{"status":"error","errorType":..}` and the status code of each type.
//! - `json`: result encoding with Prometheus's timestamp and float formatting.
//! - `query`: `/query` and `/query_range` with deadline, sample budget and slots.
//! - `logs`: `/logs/search` and `/logs/tail` over the log index.
//! - `meta`: `/series`, `/labels`, `/label/<name>/values` and Grafana's set-up calls.

pub mod error;
pub mod json;
pub mod logs;
pub mod meta;
pub mod params;
pub mod query;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use error::{ApiError, ErrorType};
pub use query::{Endpoint, Queries};

use crate::http::AppState;
use params::Params;

/// The `/api/v1` routes. Every endpoint that takes parameters answers GET and POST
/// alike, as Prometheus's does.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/metadata", get(metadata))
        .route(
            "/api/v1/query_exemplars",
            get(query_exemplars).post(query_exemplars),
        )
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/api/v1/nodes", get(nodes))
        .merge(logs::routes())
}

/// A JSON body that is already encoded.
fn json_text(body: String) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn answer(result: Result<String, ApiError>) -> Response {
    match result {
        Ok(body) => json_text(body),
        Err(e) => e.into_response(),
    }
}

/// Wraps `data` in the success envelope.
fn answer_json(data: Result<serde_json::Value, ApiError>) -> Response {
    answer(data.map(|v| json::success_envelope(&v.to_string(), &Default::default())))
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

async fn query(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let result = async {
        let params = Params::parse(uri.query(), &headers, &body)?;
        let store = state.store().ok_or_else(ApiError::not_ready)?;
        state.queries.instant(store, &params, now_ms()).await
    }
    .await;
    state.queries.record(
        Endpoint::Instant,
        result.as_ref().err().map(|e| e.kind),
        started.elapsed(),
    );
    answer(result)
}

async fn query_range(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let result = async {
        let params = Params::parse(uri.query(), &headers, &body)?;
        let store = state.store().ok_or_else(ApiError::not_ready)?;
        state.queries.range(store, &params).await
    }
    .await;
    state.queries.record(
        Endpoint::Range,
        result.as_ref().err().map(|e| e.kind),
        started.elapsed(),
    );
    answer(result)
}

async fn series(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(
        async {
            let params = Params::parse(uri.query(), &headers, &body)?;
            let store = state.store().ok_or_else(ApiError::not_ready)?;
            meta::series(store, &params).await
        }
        .await,
    )
}

async fn labels(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(
        async {
            let params = Params::parse(uri.query(), &headers, &body)?;
            let store = state.store().ok_or_else(ApiError::not_ready)?;
            meta::label_names(store, &params).await
        }
        .await,
    )
}

async fn label_values(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    uri: Uri,
) -> Response {
    answer(
        async {
            let params = Params::parse(uri.query(), &HeaderMap::new(), &[])?;
            let store = state.store().ok_or_else(ApiError::not_ready)?;
            meta::label_values(store, name, &params).await
        }
        .await,
    )
}

async fn buildinfo() -> Response {
    answer_json(Ok(meta::buildinfo()))
}

async fn metadata() -> Response {
    answer_json(Ok(meta::metadata()))
}

async fn query_exemplars(uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    answer_json(Params::parse(uri.query(), &headers, &body).and_then(|p| meta::query_exemplars(&p)))
}

async fn format_query(uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    answer_json(Params::parse(uri.query(), &headers, &body).and_then(|p| meta::format_query(&p)))
}

/// `/api/v1/nodes`: the fleet registry, in Prometheus's envelope.
async fn nodes(State(state): State<Arc<AppState>>) -> Response {
    answer_json(Ok(state.nodes()))
}
