//! OTLP export requests for simulated nodes, and a lean gRPC client that sends them.
//!
//! A node's request is built once with the agent's own encoder
//! (`vigil_proto::otlp::snapshot_to_resource_metrics`), so the collector sees exactly
//! the agent's shape; each step then only overwrites timestamps and values in place and
//! encodes with prost, gzipped as the agent's tonic client sends it. The generator
//! compresses at flate2's fast level rather than tonic's default: the collector's cost
//! (inflating) hardly depends on the level, the generator's does, a lot.
//!
//! The client speaks gRPC over HTTP/2 directly with `h2` and sends bodies that are
//! already framed and compressed: the load generator shares two cores with the
//! collector, so it must not spend them re-encoding.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use bytes::{Buf as _, Bytes, BytesMut};
use prost::Message as _;
use vigil_proto::otlp::{
    AgentResource, ExportMetricsServiceRequest, ExportMetricsServiceResponse, ResourceMetrics,
    metric, number_data_point, snapshot_to_resource_metrics,
};

use super::fleet::NodeSim;

/// The gRPC method of OTLP metrics export.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// How a request body travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `grpc-encoding: gzip`, as the agent ships.
    Gzip,
    /// Uncompressed: for loads where only what the collector stores matters.
    Identity,
}

/// One node's export request, reused step after step.
pub struct NodeRequest {
    request: ExportMetricsServiceRequest,
    encoding: Encoding,
    values: Vec<f64>,
    encoded: Vec<u8>,
    points: usize,
}

impl NodeRequest {
    /// The node's request shape; counters the agent ships with a start time get
    /// `start_unix_secs` when given.
    pub fn new(
        node: &NodeSim,
        start_unix_secs: Option<f64>,
        encoding: Encoding,
    ) -> anyhow::Result<Self> {
        let resource = AgentResource {
            node: node.name(),
            agent_version: env!("CARGO_PKG_VERSION"),
            interval_secs: 1.0,
        };
        let families = node.families(start_unix_secs);
        let rm = snapshot_to_resource_metrics(&families, &resource, 0);
        let points = data_points(&rm);
        if points != node.series_count() {
            bail!(
                "the encoder produced {points} data points for {} series",
                node.series_count()
            );
        }
        Ok(Self {
            request: ExportMetricsServiceRequest {
                resource_metrics: vec![rm],
            },
            encoding,
            values: Vec::with_capacity(points),
            encoded: Vec::new(),
            points,
        })
    }

    /// Samples in one request.
    pub fn points(&self) -> usize {
        self.points
    }

    /// The gRPC message (compressed-flag, length, body) for `node`'s current values at
    /// `timestamp_ms`.
    pub fn frame(&mut self, node: &NodeSim, timestamp_ms: i64) -> anyhow::Result<Bytes> {
        node.values(&mut self.values);
        let time_unix_nano =
            u64::try_from(timestamp_ms).context("timestamp before 1970")? * 1_000_000;
        let mut values = self.values.iter();
        for rm in &mut self.request.resource_metrics {
            for sm in &mut rm.scope_metrics {
                for m in &mut sm.metrics {
                    let points = match &mut m.data {
                        Some(metric::Data::Gauge(g)) => &mut g.data_points,
                        Some(metric::Data::Sum(s)) => &mut s.data_points,
                        _ => bail!("metric {} is neither gauge nor sum", m.name),
                    };
                    for p in points {
                        p.time_unix_nano = time_unix_nano;
                        let v = values.next().context("fewer values than data points")?;
                        p.value = Some(number_data_point::Value::AsDouble(*v));
                    }
                }
            }
        }
        self.encoded.clear();
        self.request.encode(&mut self.encoded)?;
        let (flag, body) = match self.encoding {
            Encoding::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(self.encoded.len() / 8),
                    flate2::Compression::fast(),
                );
                gz.write_all(&self.encoded)?;
                (1u8, gz.finish()?)
            }
            Encoding::Identity => (0u8, std::mem::take(&mut self.encoded)),
        };
        let mut frame = BytesMut::with_capacity(body.len() + 5);
        frame.extend_from_slice(&[flag]);
        frame.extend_from_slice(&u32::try_from(body.len())?.to_be_bytes());
        frame.extend_from_slice(&body);
        if self.encoding == Encoding::Identity {
            // Keep the buffer's capacity for the next step.
            self.encoded = body;
        }
        Ok(frame.freeze())
    }
}

fn data_points(rm: &ResourceMetrics) -> usize {
    rm.scope_metrics
        .iter()
        .flat_map(|sm| &sm.metrics)
        .map(|m| match &m.data {
            Some(metric::Data::Gauge(g)) => g.data_points.len(),
            Some(metric::Data::Sum(s)) => s.data_points.len(),
            _ => 0,
        })
        .sum()
}

/// One HTTP/2 connection to the collector's OTLP gRPC port.
#[derive(Clone)]
pub struct GrpcClient {
    send: h2::client::SendRequest<Bytes>,
    uri: http::Uri,
    authorization: http::HeaderValue,
}

/// What the collector answered to one export.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// Data points the collector said it rejected (partial success).
    pub rejected: u64,
}

impl GrpcClient {
    pub async fn connect(addr: SocketAddr, token: &str) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 22)
            .handshake(tcp)
            .await
            .context("HTTP/2 handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            send,
            uri: format!("http://{addr}{EXPORT_PATH}").parse()?,
            authorization: format!("Bearer {token}").parse()?,
        })
    }

    /// Sends one framed request and waits for the collector's answer; an error status
    /// is an error.
    pub async fn export(&mut self, frame: Bytes) -> anyhow::Result<Ack> {
        let mut request = http::Request::builder()
            .method("POST")
            .uri(self.uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-accept-encoding", "gzip")
            .header("authorization", self.authorization.clone());
        // The frame's first byte says whether its body is compressed.
        if frame.first() == Some(&1) {
            request = request.header("grpc-encoding", "gzip");
        }
        let request = request.body(())?;
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .context("connection closed")?;
        let (response, mut stream) = send.send_request(request, false)?;
        stream.send_data(frame, true)?;
        let response = response.await.context("no response")?;
        let (parts, mut body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            bail!("HTTP status {}", parts.status);
        }
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await?;
        let status_of = |h: &http::HeaderMap| {
            h.get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let status = trailers
            .as_ref()
            .and_then(status_of)
            .or_else(|| status_of(&parts.headers))
            .context("no grpc-status")?;
        if status != "0" {
            let message = trailers
                .as_ref()
                .and_then(|t| t.get("grpc-message"))
                .or_else(|| parts.headers.get("grpc-message"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            bail!("grpc-status {status}: {message}");
        }
        let compressed = parts
            .headers
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes() == b"gzip");
        let response = decode_response(data.freeze(), compressed)?;
        Ok(Ack {
            rejected: response
                .partial_success
                .map_or(0, |p| u64::try_from(p.rejected_data_points).unwrap_or(0)),
        })
    }
}

fn decode_response(mut data: Bytes, gzip: bool) -> anyhow::Result<ExportMetricsServiceResponse> {
    if data.is_empty() {
        return Ok(ExportMetricsServiceResponse::default());
    }
    if data.len() < 5 {
        bail!("gRPC message shorter than its header");
    }
    let flag = data.get_u8();
    let len = data.get_u32() as usize;
    if data.len() < len {
        bail!("gRPC message shorter than its length");
    }
    let body = data.split_to(len);
    if flag == 1 {
        if !gzip {
            bail!("compressed gRPC message without grpc-encoding");
        }
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out)?;
        Ok(ExportMetricsServiceResponse::decode(&out[..])?)
    } else {
        Ok(ExportMetricsServiceResponse::decode(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::fleet::Fleet;
    use crate::bench::template::Template;

    fn fleet() -> Fleet {
        let earlier = "# HELP c_total C.\n# TYPE c_total counter\nc_total{gpu=\"0\"} 10.5\n# HELP g G.\n# TYPE g gauge\ng{gpu=\"0\"} 50\ng{gpu=\"1\"} 40\n";
        let later = "# HELP c_total C.\n# TYPE c_total counter\nc_total{gpu=\"0\"} 20.25\n# HELP g G.\n# TYPE g gauge\ng{gpu=\"0\"} 48\ng{gpu=\"1\"} 41\n";
        let om = "c_created{gpu=\"0\"} 1700000000\n";
        Fleet::new(
            Template::from_scrapes(earlier, later, 2.0, om).expect("template"),
            1,
        )
    }

    fn decode_frame(frame: &[u8]) -> ExportMetricsServiceRequest {
        let len = u32::from_be_bytes(frame[1..5].try_into().expect("header")) as usize;
        assert_eq!(len, frame.len() - 5);
        let body = &frame[5..];
        if frame[0] == 1 {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out)
                .expect("gunzip");
            ExportMetricsServiceRequest::decode(&out[..]).expect("decode")
        } else {
            ExportMetricsServiceRequest::decode(body).expect("decode")
        }
    }

    fn points(request: &ExportMetricsServiceRequest) -> Vec<(u64, f64, u64)> {
        let mut out = Vec::new();
        for m in &request.resource_metrics[0].scope_metrics[0].metrics {
            let points = match &m.data {
                Some(metric::Data::Gauge(g)) => &g.data_points,
                Some(metric::Data::Sum(s)) => &s.data_points,
                other => panic!("unexpected {other:?}"),
            };
            for p in points {
                let Some(number_data_point::Value::AsDouble(v)) = p.value else {
                    panic!("not a double")
                };
                out.push((p.time_unix_nano, v, p.start_time_unix_nano));
            }
        }
        out
    }

    /// The OTLP load and the Prometheus exporter must give both stores the same data.
    #[test]
    fn frames_carry_the_same_values_as_the_exposition() -> anyhow::Result<()> {
        let fleet = fleet();
        let mut node = fleet.node(2);
        let mut twin = fleet.node(2);
        let writer = twin.text_writer();
        let mut gzip = NodeRequest::new(&node, Some(1_600_000_000.0), Encoding::Gzip)?;
        let mut plain = NodeRequest::new(&node, None, Encoding::Identity)?;
        for step in 0..50i64 {
            let ts = 1_700_000_000_000 + step * 1000;
            let zipped = points(&decode_frame(&gzip.frame(&node, ts)?));
            let frame = plain.frame(&node, ts)?;
            assert_eq!(frame[0], 0);
            let unzipped = points(&decode_frame(&frame));
            let mut text = String::new();
            writer.write(&twin, ts, &mut text);
            let exposed: Vec<(u64, f64)> = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| {
                    let mut f = l.rsplitn(3, ' ');
                    let t: u64 = f.next().and_then(|t| t.parse().ok()).expect("ts");
                    let v: f64 = f.next().and_then(|v| v.parse().ok()).expect("value");
                    (t * 1_000_000, v)
                })
                .collect();
            let strip =
                |p: &[(u64, f64, u64)]| p.iter().map(|(t, v, _)| (*t, *v)).collect::<Vec<_>>();
            assert_eq!(strip(&zipped), exposed);
            assert_eq!(strip(&unzipped), exposed);
            // Only the counter the agent ships with a start time carries one.
            assert_eq!(zipped[0].2, 1_600_000_000_000_000_000);
            assert_eq!(zipped[1].2, 0);
            assert_eq!(unzipped[0].2, 0);
            node.advance();
            twin.advance();
        }
        Ok(())
    }
}
