//! OTLP/gRPC receiver: tonic's `MetricsService`, gzip accepted, bearer auth.
//!
//! The token is checked in an interceptor, before the body is decoded, so an
//! unauthenticated sender costs no decoding. Size limits are tonic's: a message over
//! the limit, compressed or decompressed, is refused before it reaches [`Ingest`].

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use vigil_proto::otlp::metrics_service_server::{MetricsService, MetricsServiceServer};
use vigil_proto::otlp::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};

use super::{Exported, Ingest, Outcome, Protocol};

struct Service {
    ingest: Arc<Ingest>,
}

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

#[tonic::async_trait]
impl MetricsService for Service {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let started = Instant::now();
        match self.ingest.export(request.into_inner()).await {
            Ok(e) => {
                let outcome = if e.rejected > 0 {
                    Outcome::Partial
                } else {
                    Outcome::Success
                };
                self.ingest.record(Protocol::Grpc, outcome, started);
                Ok(Response::new(response(&e)))
            }
            Err(e) => {
                tracing::warn!(error = %e, "OTLP/gRPC export failed; the sender will retry");
                self.ingest
                    .record(Protocol::Grpc, Outcome::Unavailable, started);
                Err(Status::unavailable(e.to_string()))
            }
        }
    }
}

/// Serves OTLP/gRPC on `listener` until `shutdown` resolves; in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = ingest.max_request_bytes();
    let auth = Arc::clone(&ingest);
    let check = move |req: Request<()>| -> Result<Request<()>, Status> {
        let header = req.metadata().get("authorization").map(|v| v.as_bytes());
        if auth.authorize(header) {
            Ok(req)
        } else {
            auth.record(Protocol::Grpc, Outcome::Unauthenticated, Instant::now());
            Err(Status::unauthenticated(
                "missing or unknown bearer token (authorization: Bearer <token>)",
            ))
        }
    };
    let server = MetricsServiceServer::new(Service { ingest })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    let service = tonic::service::interceptor::InterceptedService::new(server, check);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
        .map_err(std::io::Error::other)
}
