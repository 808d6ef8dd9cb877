//! The agents' control channel: `vigil.control.v1.Control` on the OTLP/gRPC port,
//! behind the same bearer-token interceptor as OTLP (see [`vigil_proto::control`] for
//! the messages).
//!
//! - `Connect(Hello) → stream Command`: the agent opens it and keeps it open; the
//!   collector writes each action for the node as it is decided, and a heartbeat every
//!   15 s. A per-node token may only connect as its own node.
//! - `Report(Report) → ReportAck`: the agent reports an action's progress; a per-node
//!   token may only report its own node's actions. The ack means the report is on disk.
//!
//! Written by hand (as the OTLP services are), with prost's codec over the derived
//! message types: there is no `.proto` compiler here.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{Body, BoxFuture, Service as TowerService, StdError, http};
use tonic::server::{NamedService, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use vigil_proto::control::{self as wire, Command, Hello, Report, ReportAck};

use super::Remediation;
use crate::ingest::Principal;

/// The most bytes of one control message; they are small.
const MAX_MESSAGE: usize = 64 << 10;

#[derive(Clone)]
pub struct ControlServer {
    remediation: Arc<Remediation>,
}

impl ControlServer {
    pub fn new(remediation: Arc<Remediation>) -> Self {
        ControlServer { remediation }
    }
}

impl NamedService for ControlServer {
    const NAME: &'static str = wire::SERVICE;
}

fn principal_of<T>(request: &Request<T>) -> Principal {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or(Principal::Fleet)
}

fn principal_node(p: &Principal) -> &str {
    match p {
        Principal::Fleet => "(fleet token)",
        Principal::Node(n) => n,
    }
}

/// A node token speaks only for its node.
fn may_speak_for(principal: &Principal, node: &str) -> Result<(), Status> {
    match principal {
        Principal::Fleet => Ok(()),
        Principal::Node(n) if &**n == node => Ok(()),
        Principal::Node(n) => Err(Status::permission_denied(format!(
            "this token belongs to node {n:?}, not {node:?}"
        ))),
    }
}

impl<B> TowerService<http::Request<B>> for ControlServer
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
        let remediation = Arc::clone(&self.remediation);
        match request.uri().path() {
            wire::CONNECT => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::<Command, Hello>::default())
                    .max_decoding_message_size(MAX_MESSAGE);
                Ok(grpc
                    .server_streaming(Connect { remediation }, request)
                    .await)
            }),
            wire::REPORT => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::<ReportAck, Report>::default())
                    .max_decoding_message_size(MAX_MESSAGE);
                Ok(grpc.unary(ReportCall { remediation }, request).await)
            }),
            other => {
                let msg = format!("{other}: the control service serves Connect and Report");
                Box::pin(async move { Ok(Status::unimplemented(msg).into_http()) })
            }
        }
    }
}

struct Connect {
    remediation: Arc<Remediation>,
}

impl ServerStreamingService<Hello> for Connect {
    type Response = Command;
    type ResponseStream = tokio_stream::wrappers::ReceiverStream<Result<Command, Status>>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Hello>) -> Self::Future {
        let remediation = Arc::clone(&self.remediation);
        Box::pin(async move {
            let principal = principal_of(&request);
            let hello = request.into_inner();
            if hello.node.is_empty() {
                return Err(Status::invalid_argument("Hello.node is empty"));
            }
            may_speak_for(&principal, &hello.node)?;
            let rx = remediation.connect(&hello);
            Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
                rx,
            )))
        })
    }
}

struct ReportCall {
    remediation: Arc<Remediation>,
}

impl UnaryService<Report> for ReportCall {
    type Response = ReportAck;
    type Future = BoxFuture<Response<ReportAck>, Status>;

    fn call(&mut self, request: Request<Report>) -> Self::Future {
        let remediation = Arc::clone(&self.remediation);
        Box::pin(async move {
            let principal = principal_of(&request);
            let report = request.into_inner();
            may_speak_for(&principal, &report.node)?;
            let node = report.node.clone();
            let known = tokio::task::spawn_blocking(move || remediation.report(&node, &report))
                .await
                .map_err(|e| Status::internal(format!("recording the report: {e}")))?
                .map_err(|e| Status::unavailable(e.to_string()))?;
            if !known {
                // An id this collector never gave this node (or one pruned from the
                // audit long ago): acknowledged all the same, so the agent stops
                // resending it, and changes nothing.
                tracing::warn!(node = %principal_node(&principal), "a report for an action this collector does not know was dropped");
            }
            Ok(Response::new(ReportAck {}))
        })
    }
}
