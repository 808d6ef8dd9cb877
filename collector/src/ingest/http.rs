//! OTLP/HTTP receiver: `POST /v1/metrics` (and `POST /v1/logs`, [`super::logs`]) with protobuf (`application/x-protobuf`) or
//! JSON (`application/json`: camelCase, 64-bit integers as strings, enums as numbers)
//! bodies, optionally gzip-compressed, answered as the OTLP/HTTP specification says:
//! 200 with an `ExportMetricsServiceResponse` in the request's encoding (with
//! `partial_success` when points were refused), and otherwise a `google.rpc.Status`
//! body with 400 (malformed), 401 (no or unknown token), 403 (a per-node token
//! sending for another node), 413 (too large), 415 (wrong
//! content type or encoding) or 503 (store unavailable: retry).

use std::borrow::Cow;
use std::future::Future;
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost::Message;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

use super::grpc::response;
use super::{Ingest, IngestError, Outcome, Protocol};
use crate::tls::Incoming;

/// `google.rpc.Status`, the error body OTLP/HTTP prescribes.
#[derive(Clone, PartialEq, Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// gRPC status codes used in error bodies.
const INVALID_ARGUMENT: i32 = 3;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAVAILABLE: i32 = 14;
const UNAUTHENTICATED: i32 = 16;
const PERMISSION_DENIED: i32 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn protocol(self) -> Protocol {
        match self {
            Format::Protobuf => Protocol::HttpProtobuf,
            Format::Json => Protocol::HttpJson,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// Why a body could not become a request.
enum BodyError {
    TooLarge(String),
    Malformed(String),
}

/// Serves OTLP/HTTP on `listener` (plain TCP or TLS) until `shutdown` resolves;
/// in-flight requests finish.
pub async fn serve(
    listener: impl Into<Incoming>,
    ingest: Arc<Ingest>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/v1/metrics", post(export))
        .route("/v1/logs", post(export_logs))
        .fallback(not_found)
        .with_state(ingest);
    axum::serve(listener.into().into_listener()?, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: OTLP/HTTP is accepted on POST /v1/metrics and POST /v1/logs\n",
    )
        .into_response()
}

fn error(format: Format, status: StatusCode, code: i32, message: String) -> Response {
    let body = RpcStatus { code, message };
    let bytes = match format {
        Format::Protobuf => body.encode_to_vec(),
        // A struct of an integer and a string always serialises.
        Format::Json => serde_json::to_vec(&body).unwrap_or_default(),
    };
    let mut r = (status, bytes).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    r
}

/// The media type without parameters, lowercased.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Which OTLP signal a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Metrics,
    Logs,
}

async fn export(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    receive(ingest, headers, body, Signal::Metrics).await
}

async fn export_logs(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive(ingest, headers, body, Signal::Logs).await
}

async fn receive(ingest: Arc<Ingest>, headers: HeaderMap, body: Body, signal: Signal) -> Response {
    let started = Instant::now();
    let media = media_type(&headers);
    let format = match media.as_deref() {
        Some("application/x-protobuf") => Some(Format::Protobuf),
        Some("application/json") => Some(Format::Json),
        _ => None,
    };
    // Errors before the type is known are answered (and counted) as protobuf, OTLP's
    // default encoding.
    let reply_format = format.unwrap_or(Format::Protobuf);
    let protocol = reply_format.protocol();
    let fail = |outcome, status, code, message: String| {
        ingest.record(protocol, outcome, started);
        error(reply_format, status, code, message)
    };

    let auth = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let Some(principal) = ingest.authenticate(auth) else {
        let mut r = fail(
            Outcome::Unauthenticated,
            StatusCode::UNAUTHORIZED,
            UNAUTHENTICATED,
            "missing or unknown bearer token (authorization: Bearer <token>)".into(),
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    let Some(format) = format else {
        ingest.record(protocol, Outcome::Unsupported, started);
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported content type {:?}: send application/x-protobuf or application/json\n",
                media.unwrap_or_default()
            ),
        )
            .into_response();
    };
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().map(|s| s.trim().to_ascii_lowercase()))
    {
        None => false,
        Some(Ok(e)) if e.is_empty() || e == "identity" => false,
        Some(Ok(e)) if e == "gzip" => true,
        other => {
            let name = match other {
                Some(Ok(e)) => e,
                _ => "(not text)".into(),
            };
            return fail(
                Outcome::Unsupported,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                INVALID_ARGUMENT,
                format!("unsupported content encoding {name:?}: send gzip or none"),
            );
        }
    };
    let max = ingest.max_request_bytes();
    let too_large = |what: &str| format!("request body {what} exceeds the limit of {max} bytes");
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return fail(
            Outcome::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            RESOURCE_EXHAUSTED,
            too_large("(content-length)"),
        );
    }
    let bytes = match Limited::new(body, max).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return fail(
                Outcome::TooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                RESOURCE_EXHAUSTED,
                too_large("as sent"),
            );
        }
        Err(e) => {
            return fail(
                Outcome::Malformed,
                StatusCode::BAD_REQUEST,
                INVALID_ARGUMENT,
                format!("reading the request body: {e}"),
            );
        }
    };

    let worker = Arc::clone(&ingest);
    let result = tokio::task::spawn_blocking(move || {
        let body = inflate(&bytes, gzip, max)?;
        if signal == Signal::Logs {
            let request: ExportLogsServiceRequest = match format {
                Format::Protobuf => ExportLogsServiceRequest::decode(&*body).map_err(|e| {
                    BodyError::Malformed(format!("protobuf body does not decode: {e}"))
                })?,
                Format::Json => serde_json::from_slice(&body).map_err(|e| {
                    BodyError::Malformed(format!("OTLP/JSON body does not decode: {e}"))
                })?,
            };
            return Ok(worker.export_logs_blocking_as(&request, &principal));
        }
        Ok::<_, BodyError>(match format {
            Format::Protobuf => match worker.export_protobuf_blocking_as(&body, &principal) {
                Err(IngestError::Malformed(e)) => {
                    return Err(BodyError::Malformed(format!(
                        "protobuf body does not decode: {e}"
                    )));
                }
                other => other,
            },
            Format::Json => {
                let request = super::json::parse(&body).map_err(BodyError::Malformed)?;
                worker.export_blocking_as(&request, &principal)
            }
        })
    })
    .await;
    match result {
        Ok(Ok(Ok(exported))) => {
            let outcome = if exported.rejected > 0 {
                Outcome::Partial
            } else {
                Outcome::Success
            };
            ingest.record(protocol, outcome, started);
            let body = match (signal, format) {
                (Signal::Metrics, Format::Protobuf) => response(&exported).encode_to_vec(),
                (Signal::Metrics, Format::Json) => {
                    serde_json::to_vec(&response(&exported)).unwrap_or_default()
                }
                (Signal::Logs, Format::Protobuf) => {
                    super::logs::response(&exported).encode_to_vec()
                }
                (Signal::Logs, Format::Json) => {
                    serde_json::to_vec(&super::logs::response(&exported)).unwrap_or_default()
                }
            };
            let mut r = (StatusCode::OK, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            r
        }
        Ok(Err(BodyError::TooLarge(m))) => fail(
            Outcome::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            RESOURCE_EXHAUSTED,
            m,
        ),
        Ok(Err(BodyError::Malformed(m))) => fail(
            Outcome::Malformed,
            StatusCode::BAD_REQUEST,
            INVALID_ARGUMENT,
            m,
        ),
        Ok(Ok(Err(e @ IngestError::WrongNode { .. }))) => fail(
            Outcome::Forbidden,
            StatusCode::FORBIDDEN,
            PERMISSION_DENIED,
            e.to_string(),
        ),
        Ok(Ok(Err(e))) => unavailable(fail, e),
        Err(join) => unavailable(fail, IngestError::Task(join.to_string())),
    }
}

fn unavailable(
    fail: impl Fn(Outcome, StatusCode, i32, String) -> Response,
    e: IngestError,
) -> Response {
    tracing::warn!(error = %e, "OTLP/HTTP export failed; the sender will retry");
    let mut r = fail(
        Outcome::Unavailable,
        StatusCode::SERVICE_UNAVAILABLE,
        UNAVAILABLE,
        e.to_string(),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Decompresses a body, bounded.
fn inflate(bytes: &[u8], gzip: bool, max: usize) -> Result<Cow<'_, [u8]>, BodyError> {
    if !gzip {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Malformed(format!("gzip body does not decompress: {e}")))?;
    if out.len() > max {
        return Err(BodyError::TooLarge(format!(
            "request body exceeds the limit of {max} bytes once decompressed"
        )));
    }
    Ok(Cow::Owned(out))
}
