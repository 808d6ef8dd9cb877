//! The OTLP/gRPC client: one Export call per batch of spool records.
//!
//! A spool record is an encoded `Export*ServiceRequest`, whose only field is the repeated
//! resource list; protobuf concatenation of such messages is their merge. So a batch
//! goes out as the records' bytes back to back, never decoded and re-encoded: draining
//! a gigabyte backlog costs the agent a copy and gzip, not a protobuf round trip.

use std::path::Path;
use std::time::Duration;

use bytes::BufMut as _;
use http::uri::PathAndQuery;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use super::ShipError;
use super::spool::RecordKind;
use crate::config::ShipperConfig;

const METRICS_EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
const LOGS_EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// How one Export call ended, as the shipper acts on it.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Acknowledged: delete the records. `rejected` items were refused inside an accepted
    /// request (OTLP partial success) and will not get better by resending.
    Accepted { rejected: i64, message: String },
    /// Not taken; keep the records and try again later.
    Retry {
        result: &'static str,
        status: Status,
    },
    /// The collector says the payload itself is malformed: resending cannot help.
    Invalid { status: Status },
}

/// The `result` label of `vigil_agent_ship_requests_total`, every value it takes.
pub(crate) const RESULTS: [&str; 7] = [
    "ok",
    "unauthenticated",
    "unavailable",
    "timeout",
    "resource_exhausted",
    "rejected",
    "error",
];

/// The collector's gRPC endpoint as `[shipper]` configures it (URL, TLS and its CA,
/// connect timeout, keep-alive), without a per-request timeout: the Export client adds
/// one, the control stream must not have one.
pub(crate) fn endpoint(config: &ShipperConfig) -> Result<Endpoint, ShipError> {
    let url = config.collector.clone();
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| ShipError::Collector {
            url: url.clone(),
            message: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs_f64(
            config.request_timeout_secs.min(10.0),
        ))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(false);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        tls = if config.ca_file.as_os_str().is_empty() {
            tls.with_webpki_roots()
        } else {
            let pem = std::fs::read(&config.ca_file).map_err(|e| ShipError::CaFile {
                path: config.ca_file.clone(),
                message: e.to_string(),
            })?;
            tls.ca_certificate(Certificate::from_pem(pem))
        };
        endpoint = endpoint.tls_config(tls).map_err(|e| ShipError::Collector {
            url: url.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(endpoint)
}

/// The `authorization` header value for `token` (read from `token_file`).
pub(crate) fn bearer(
    token: Option<&str>,
    token_file: &Path,
) -> Result<Option<MetadataValue<Ascii>>, ShipError> {
    token
        .map(|t| {
            MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| ShipError::Token {
                path: token_file.to_owned(),
                message: "token holds characters a header cannot carry".to_owned(),
            })
        })
        .transpose()
}

pub(crate) struct Client {
    channel: Channel,
    authorization: Option<MetadataValue<Ascii>>,
    timeout: Duration,
}

impl Client {
    /// Builds the client; connects lazily, so a collector that is down at start costs
    /// nothing here.
    pub(crate) fn new(
        config: &ShipperConfig,
        token: Option<&str>,
        token_file: &Path,
    ) -> Result<Self, ShipError> {
        let timeout = Duration::from_secs_f64(config.request_timeout_secs);
        Ok(Self {
            channel: endpoint(config)?.timeout(timeout).connect_lazy(),
            authorization: bearer(token, token_file)?,
            timeout,
        })
    }

    /// Sends `payloads` (encoded requests of `kind`) as one Export call, gzip-compressed.
    pub(crate) async fn export(&self, kind: RecordKind, payloads: Vec<Vec<u8>>) -> Outcome {
        let path = match kind {
            RecordKind::Metrics => METRICS_EXPORT,
            RecordKind::Logs => LOGS_EXPORT,
        };
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(format!("collector unreachable: {e}")))?;
            let mut request = tonic::Request::new(payloads);
            request.set_timeout(self.timeout);
            if let Some(auth) = &self.authorization {
                request.metadata_mut().insert("authorization", auth.clone());
            }
            grpc.unary(request, PathAndQuery::from_static(path), RawCodec)
                .await
        };
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded(
                "no answer from the collector in time",
            )),
        };
        match result {
            Ok(response) => {
                let partial = response.into_inner().partial_success.unwrap_or_default();
                Outcome::Accepted {
                    rejected: partial.rejected,
                    message: partial.error_message,
                }
            }
            Err(status) => classify(status),
        }
    }
}

/// Sorts a failure into what to do about it. Only a payload the collector calls
/// malformed is given up on; a refused token, an overloaded or restarting collector or a
/// bug on its side all keep the records until it takes them.
pub(crate) fn classify(status: Status) -> Outcome {
    let result = match status.code() {
        Code::InvalidArgument => return Outcome::Invalid { status },
        Code::Unauthenticated | Code::PermissionDenied => "unauthenticated",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded | Code::Cancelled => "timeout",
        Code::ResourceExhausted => "resource_exhausted",
        _ => "error",
    };
    Outcome::Retry { result, status }
}

/// The response of both Export services: `partial_success` with the count of refused
/// items (data points or log records) and why.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<PartialSuccess>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PartialSuccess {
    #[prost(int64, tag = "1")]
    pub rejected: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// Sends pre-encoded request messages as they are; decodes the response with prost.
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<Vec<u8>>;
    type Decode = ExportResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<Vec<u8>>;
    type Error = Status;

    fn encode(&mut self, item: Vec<Vec<u8>>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.iter().map(Vec::len).sum());
        for payload in item {
            dst.put_slice(&payload);
        }
        Ok(())
    }
}

struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = ExportResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ExportResponse>, Status> {
        prost::Message::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable export response: {e}")))
    }
}
