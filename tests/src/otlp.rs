//! OTLP requests built by hand (opentelemetry-proto's generated types), sent over
//! OTLP/HTTP or gRPC the way a foreign sender would.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    metrics_service_client::MetricsServiceClient,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

pub use opentelemetry_proto::tonic::collector::metrics::v1 as collector_v1;
pub use opentelemetry_proto::tonic::metrics::v1 as metrics_v1;

use crate::{Response, http_request};

/// A string attribute.
pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// A double data point at `time_ms` with string attributes.
pub fn point(attributes: &[(&str, &str)], time_ms: i64, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes.iter().map(|(k, v)| kv(k, v)).collect(),
        time_unix_nano: u64::try_from(time_ms).unwrap_or(0) * 1_000_000,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

/// One request: one resource (`host.name` and `service.name` among `resource`), one
/// scope, the given metrics.
pub fn request(resource: &[(&str, &str)], metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource.iter().map(|(k, v)| kv(k, v)).collect(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A gauge metric with the given points.
pub fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_owned(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

/// The protobuf encoding of `request`.
pub fn encode(request: &ExportMetricsServiceRequest) -> Vec<u8> {
    request.encode_to_vec()
}

/// gzip of `bytes`.
pub fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

/// POST /v1/metrics with a protobuf body (optionally gzipped) and optional bearer token.
pub fn post_protobuf(
    addr: SocketAddr,
    request: &ExportMetricsServiceRequest,
    token: Option<&str>,
    gzipped: bool,
) -> anyhow::Result<Response> {
    let body = encode(request);
    let body = if gzipped { gzip(&body)? } else { body };
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/x-protobuf")];
    if gzipped {
        headers.push(("Content-Encoding", "gzip"));
    }
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    http_request(addr, "POST", "/v1/metrics", &headers, &body)
}

/// Sends `request` over OTLP/gRPC (gzip-compressed) with an optional bearer token and
/// returns the server's status or response. A fresh single-threaded runtime per call:
/// the tests are synchronous and send rarely over gRPC.
pub fn export_grpc(
    addr: SocketAddr,
    request: ExportMetricsServiceRequest,
    token: Option<&str>,
) -> anyhow::Result<Result<ExportMetricsServiceResponse, tonic::Status>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")?;
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await
            .with_context(|| format!("connecting to OTLP/gRPC on {addr}"))?;
        let mut client = MetricsServiceClient::new(channel)
            .send_compressed(tonic::codec::CompressionEncoding::Gzip)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
            .max_encoding_message_size(usize::MAX);
        let mut request = tonic::Request::new(request);
        if let Some(token) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}")
                    .parse()
                    .context("token as metadata")?,
            );
        }
        Ok(client
            .export(request)
            .await
            .map(tonic::Response::into_inner))
    })
}
