//! OTLP conversions: the agent's metric families to OTLP, and OTLP from any sender to
//! Prometheus series (names normalised as Prometheus's own OTLP receiver does).
//!
//! The opentelemetry-proto types other crates need are re-exported here, so that the
//! agent and the collector name `vigil_proto::otlp::…` and one version of the generated
//! code.

mod decode;
mod encode;
mod logs;
mod normalize;
pub mod wire;

pub use decode::{
    Decoded, DecodedResource, DecodedSample, LabelPair, Rejection, STALE_NAN_BITS, decode,
    decode_protobuf, translate,
};
pub use logs::{
    LogLine, LogValue, LogsEncoder, decode_logs_request, empty_resource_logs, kernel_severity,
};
pub use normalize::{NameType, format_bound, label_name, metric_name};
pub use wire::WireError;

pub use encode::{
    AGENT_SERVICE_NAME, ATTR_INTERVAL_SECS, ATTR_NODE, AgentResource, METADATA_PROMETHEUS_TYPE,
    snapshot_to_resource_metrics,
};

pub use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    metrics_service_client, metrics_service_server,
};
pub use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
pub use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, DataPointFlags, ExponentialHistogram, ExponentialHistogramDataPoint,
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum, Summary, SummaryDataPoint, metric, number_data_point, summary_data_point,
};
pub use opentelemetry_proto::tonic::resource::v1::Resource;
