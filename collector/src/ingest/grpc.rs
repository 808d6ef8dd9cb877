//! OTLP/gRPC receiver: `MetricsService/Export` on tonic's server, gzip accepted,
//! bearer auth; `LogsService/Export` beside it ([`super::logs`]). The service is written by hand rather than generated so that the
//! handler gets the message's bytes and reads them with the borrowed decoder
//! (`vigil_proto::otlp::decode_protobuf`); prost only encodes the small response.
//!
//! The token is checked in an interceptor, before the body is decoded, so an
//! unauthenticated sender costs no decoding. Size limits are tonic's: a message over
//! the limit, compressed or decompressed, is refused before it reaches [`Ingest`];
//! [`CountTooLarge`] counts those refusals from the status tonic answers with, since
//! the handler never sees them.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes};
use prost::Message;

use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Service as TowerService, StdError, http};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};
use vigil_proto::otlp::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse};

use crate::tls::Incoming;

use super::{Exported, Ingest, IngestError, Outcome, Principal, Protocol};

/// The OTLP answer to a stored request: `partial_success` only when something was
/// refused.
pub(crate) fn response(e: &Exported) -> ExportMetricsServiceResponse {
    ExportMetricsServiceResponse {
        partial_success: (e.rejected > 0 || !e.message.is_empty()).then(|| {
            ExportMetricsPartialSuccess {
                rejected_data_points: i64::try_from(e.rejected).unwrap_or(i64::MAX),
                error_message: e.message.clone(),
            }
        }),
    }
}

/// The full method path of `MetricsService.Export`.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// Requests as their protobuf bytes (read by the borrowed decoder, not prost);
/// responses encoded by prost.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = ExportMetricsServiceResponse;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = ExportMetricsServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the response: {e}")))
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// `MetricsService` by hand: tonic's generated server decodes with prost, which
/// allocated more per request than the rest of ingest together.
#[derive(Clone)]
struct MetricsServer {
    ingest: Arc<Ingest>,
}

impl NamedService for MetricsServer {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

impl<B> TowerService<http::Request<B>> for MetricsServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async move {
                Ok(Status::unimplemented("only MetricsService/Export is served").into_http())
            });
        }
        let ingest = Arc::clone(&self.ingest);
        Box::pin(async move {
            let max = ingest.max_request_bytes();
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max);
            Ok(grpc.unary(Export { ingest }, request).await)
        })
    }
}

struct Export {
    ingest: Arc<Ingest>,
}

impl UnaryService<Bytes> for Export {
    type Response = ExportMetricsServiceResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let ingest = Arc::clone(&self.ingest);
        Box::pin(async move {
            let started = Instant::now();
            let principal = principal_of(&request);
            let result = ingest
                .export_protobuf_as(request.into_inner(), principal)
                .await;
            answer(&ingest, started, result, response, "metrics")
        })
    }
}

/// The principal the interceptor put on the request; without tokens, the fleet.
pub(super) fn principal_of<T>(request: &Request<T>) -> Principal {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or(Principal::Fleet)
}

/// An Export's answer and its count in the ingest metrics, for metrics and logs alike:
/// `respond` builds the signal's response from what was stored.
pub(super) fn answer<R>(
    ingest: &Ingest,
    started: Instant,
    result: Result<Exported, IngestError>,
    respond: fn(&Exported) -> R,
    signal: &str,
) -> Result<Response<R>, Status> {
    match result {
        Ok(e) => {
            let outcome = if e.rejected > 0 {
                Outcome::Partial
            } else {
                Outcome::Success
            };
            ingest.record(Protocol::Grpc, outcome, started);
            Ok(Response::new(respond(&e)))
        }
        Err(e @ IngestError::WrongNode { .. }) => {
            ingest.record(Protocol::Grpc, Outcome::Forbidden, started);
            Err(Status::permission_denied(e.to_string()))
        }
        Err(IngestError::Malformed(e)) => {
            ingest.record(Protocol::Grpc, Outcome::Malformed, started);
            Err(Status::invalid_argument(format!(
                "protobuf message does not decode: {e}"
            )))
        }
        Err(e) => {
            tracing::warn!(error = %e, signal, "OTLP/gRPC export failed; the sender will retry");
            ingest.record(Protocol::Grpc, Outcome::Unavailable, started);
            Err(Status::unavailable(e.to_string()))
        }
    }
}

/// Serves OTLP/gRPC on `listener` (plain TCP or TLS) until `shutdown` resolves;
/// in-flight requests finish.
pub async fn serve(
    listener: impl Into<Incoming>,
    ingest: Arc<Ingest>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_control(listener, ingest, None, shutdown).await
}

/// [`serve`], with the agents' control channel beside OTLP, behind the same tokens.
pub async fn serve_with_control(
    listener: impl Into<Incoming>,
    ingest: Arc<Ingest>,
    control: Option<crate::recovery::control::ControlServer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let auth = Arc::clone(&ingest);
    let counted = Arc::clone(&ingest);
    let check = move |mut req: Request<()>| -> Result<Request<()>, Status> {
        let header = req.metadata().get("authorization").map(|v| v.as_bytes());
        if let Some(principal) = auth.authenticate(header) {
            req.extensions_mut().insert(principal);
            Ok(req)
        } else {
            auth.record(Protocol::Grpc, Outcome::Unauthenticated, Instant::now());
            Err(Status::unauthenticated(
                "missing or unknown bearer token (authorization: Bearer <token>)",
            ))
        }
    };
    let logs = CountTooLarge {
        inner: tonic::service::interceptor::InterceptedService::new(
            super::logs::grpc_service(Arc::clone(&ingest)),
            check.clone(),
        ),
        ingest: Arc::clone(&counted),
    };
    let control =
        control.map(|c| tonic::service::interceptor::InterceptedService::new(c, check.clone()));
    let server = MetricsServer { ingest };
    let service = CountTooLarge {
        inner: tonic::service::interceptor::InterceptedService::new(server, check),
        ingest: counted,
    };
    tonic::transport::Server::builder()
        .add_service(service)
        .add_service(logs)
        .add_optional_service(control)
        .serve_with_incoming_shutdown(listener.into().into_stream(), shutdown)
        .await
        .map_err(std::io::Error::other)
}

/// Counts the requests tonic refuses for their size: those answered `OUT_OF_RANGE`
/// (declared length over the limit) or `RESOURCE_EXHAUSTED` (over it once
/// decompressed). The handler answers neither, so either one is tonic's refusal.
#[derive(Clone)]
struct CountTooLarge<S> {
    inner: S,
    ingest: Arc<Ingest>,
}

impl<S: NamedService> NamedService for CountTooLarge<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> TowerService<http::Request<B>> for CountTooLarge<S>
where
    S: TowerService<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let ingest = Arc::clone(&self.ingest);
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(tonic::Code::from);
            if matches!(
                code,
                Some(tonic::Code::OutOfRange | tonic::Code::ResourceExhausted)
            ) {
                ingest.record(Protocol::Grpc, Outcome::TooLarge, started);
            }
            Ok(response)
        })
    }
}
