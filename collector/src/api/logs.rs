//! `/api/v1/logs/search` and `/api/v1/logs/tail` over the log index.
//!
//! Search parameters (../shared/DESIGN.md): `q` (or `query`; tantivy syntax over `body` and `attributes`,
//! terms ANDed, empty = everything), `node`, `severity`, `source`, `start` / `end`
//! (RFC 3339 or Unix seconds, as the Prometheus API takes them), `limit` (default 100,
//! at most 10,000) and `cursor` (the previous page's `next_cursor`). Newest first:
//! `{"status":"success","data":{"total":N,"hits":[{"timestamp","node","source","severity",
//! "body","attributes"}],"next_cursor":"..."|null}}`. A query that does not parse is
//! answered 400 naming the problem.
//!
//! The tail takes the same filters (not `cursor`/`limit`) and streams, as
//! newline-delimited JSON over a chunked response, the matching records of every commit
//! from the moment it is opened — at most a commit interval (≤ 1 s) after they arrive.
//! An empty line every 15 s keeps idle connections open.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::error::{ApiError, ErrorType};
use super::params::Params;
use crate::http::{AppState, MetricSource};
use crate::index::{Cursor, Hit, IndexError, LogIndex, MAX_LIMIT, SearchRequest};

const DEFAULT_LIMIT: usize = 100;
/// Most records one tail poll sends; a client further behind than this per commit
/// skips the rest of that commit.
const TAIL_BATCH: usize = 10_000;
const TAIL_HEARTBEAT: Duration = Duration::from_secs(15);

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/logs/search", get(search).post(search))
        .route("/api/v1/logs/tail", get(tail))
}

impl MetricSource for LogIndex {
    fn metric_families(&self) -> Vec<vigil_proto::MetricFamily> {
        LogIndex::metric_families(self)
    }
}

fn index_error(e: IndexError) -> ApiError {
    match e {
        IndexError::BadQuery(m) => ApiError::bad_data(m),
        other => ApiError::new(ErrorType::Internal, other.to_string()),
    }
}

/// The filters shared by search and tail.
fn request(params: &Params) -> Result<SearchRequest, ApiError> {
    let text = |name: &str| {
        params
            .get(name)
            .map(str::to_owned)
            .filter(|s| !s.is_empty())
    };
    let ns = |ms: i64| ms.saturating_mul(1_000_000);
    let start_ns = params
        .get("start")
        .map(|_| params.time("start").map(ns))
        .transpose()?;
    // `end` covers its whole millisecond.
    let end_ns = params
        .get("end")
        .map(|_| params.time("end").map(|ms| ns(ms).saturating_add(999_999)))
        .transpose()?;
    if let (Some(s), Some(e)) = (start_ns, end_ns)
        && e < s
    {
        return Err(ApiError::invalid_param(
            "end",
            "end timestamp must not be before start time".into(),
        ));
    }
    Ok(SearchRequest {
        query: params
            .get("q")
            .or_else(|| params.get("query"))
            .unwrap_or("")
            .to_owned(),
        node: text("node"),
        severity: text("severity"),
        source: text("source"),
        start_ns,
        end_ns,
        limit: DEFAULT_LIMIT,
        cursor: None,
    })
}

/// One record as the API shows it.
pub(crate) fn hit_json(h: &Hit) -> serde_json::Value {
    let r = &h.record;
    json!({
        "timestamp": chrono::DateTime::from_timestamp_nanos(r.time_ns)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        "node": r.node,
        "source": r.source,
        "severity": r.severity,
        "body": r.body,
        "attributes": r.attributes,
    })
}

fn logs(state: &AppState) -> Result<Arc<LogIndex>, ApiError> {
    state.logs().ok_or_else(ApiError::not_ready)
}

async fn search(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let params = Params::parse(uri.query(), &headers, &body)?;
        let mut req = request(&params)?;
        if let Some(l) = params.get("limit") {
            let n: usize = l.parse().map_err(|_| {
                ApiError::invalid_param("limit", format!("cannot parse {l:?} to a valid limit"))
            })?;
            if n == 0 || n > MAX_LIMIT {
                return Err(ApiError::invalid_param(
                    "limit",
                    format!("must be 1 to {MAX_LIMIT}, got {n}"),
                ));
            }
            req.limit = n;
        }
        if let Some(c) = params.get("cursor").filter(|c| !c.is_empty()) {
            req.cursor = Some(Cursor::decode(c).ok_or_else(|| {
                ApiError::invalid_param("cursor", format!("{c:?} is not a cursor this API gave"))
            })?);
        }
        let index = logs(&state)?;
        let found = tokio::task::spawn_blocking(move || index.search(&req))
            .await
            .map_err(|e| ApiError::new(ErrorType::Internal, e.to_string()))?
            .map_err(index_error)?;
        Ok(json!({
            "total": found.total,
            "hits": found.hits.iter().map(hit_json).collect::<Vec<_>>(),
            "next_cursor": found.next_cursor.map(|c| c.encode()),
        }))
    }
    .await;
    super::answer_json(result)
}

async fn tail(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    let setup = (|| {
        let params = Params::parse(uri.query(), &HeaderMap::new(), &[])?;
        let req = request(&params)?;
        let index = logs(&state)?;
        index.check_query(&req.query).map_err(index_error)?;
        Ok::<_, ApiError>((index, req))
    })();
    let (index, req) = match setup {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(stream_tail(index, req, tx));
    let mut r = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Sends each commit's matching records until the client goes away.
async fn stream_tail(
    index: Arc<LogIndex>,
    req: SearchRequest,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut committed = index.committed();
    let mut stopped = index.tails_stopped();
    if *stopped.borrow_and_update() {
        return;
    }
    let mut after = *committed.borrow_and_update();
    let req = Arc::new(req);
    // The headers go out at once, so the client knows the stream is open.
    if tx.send(Ok(Bytes::from_static(b"\n"))).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            changed = committed.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(TAIL_HEARTBEAT) => {
                if tx.send(Ok(Bytes::from_static(b"\n"))).await.is_err() {
                    return;
                }
                continue;
            }
            _ = tx.closed() => return,
            _ = stopped.changed() => return,
        }
        let through = *committed.borrow_and_update();
        if through <= after {
            continue;
        }
        let (index, r) = (Arc::clone(&index), Arc::clone(&req));
        let hits =
            tokio::task::spawn_blocking(move || index.between(&r, after, through, TAIL_BATCH))
                .await;
        after = through;
        let hits = match hits {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "log tail read failed");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "log tail task failed");
                continue;
            }
        };
        if hits.is_empty() {
            continue;
        }
        let mut chunk = Vec::new();
        for h in &hits {
            chunk.extend_from_slice(hit_json(h).to_string().as_bytes());
            chunk.push(b'\n');
        }
        if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
            return;
        }
    }
}
