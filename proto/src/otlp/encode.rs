//! The agent's snapshot as OTLP: one `ResourceMetrics` per collection cycle.
//!
//! The shape is chosen so that the collector's decoder (and any Prometheus OTLP
//! receiver) gets back exactly the names the agent exposes on `/metrics`: no units are
//! set (a unit would add a suffix), counters are monotonic cumulative sums whose names
//! already end in `_total`, and untyped families are gauges marked with the
//! `prometheus.type = unknown` metadata that Prometheus's own OTLP path reads.

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::metrics::{MetricFamily, MetricKind, Sample};

/// `service.name` the agent ships under; the collector treats a resource with this
/// name as a full snapshot of one node (series missing from it become stale).
pub const AGENT_SERVICE_NAME: &str = "vigil-agent";
/// Resource attribute carrying the agent's collection interval, in seconds, so the
/// collector can tell when a node has gone silent.
pub const ATTR_INTERVAL_SECS: &str = "vigil.interval_secs";
/// Resource attribute naming the node (same as `host.name`; kept explicit so a
/// relabelling OTel collector in between cannot lose it).
pub const ATTR_NODE: &str = "vigil.node";
/// Metric metadata key Prometheus's OTLP translator reads for the original type.
pub const METADATA_PROMETHEUS_TYPE: &str = "prometheus.type";

/// What the agent says about itself; becomes OTLP resource attributes
/// (host.name = node, service.name = "vigil-agent", service.version, service.instance.id = node, plus vigil.* attributes).
#[derive(Debug, Clone, Copy)]
pub struct AgentResource<'a> {
    pub node: &'a str,
    pub agent_version: &'a str,
    pub interval_secs: f64,
}

/// One snapshot (all families collected at `timestamp_ms`) as one ResourceMetrics: Counter -> monotonic cumulative Sum
/// (start_time_unix_nano from Sample::created_unix_secs when known, else 0), Gauge and Unknown -> Gauge
/// (Unknown marked with `prometheus.type = unknown` metadata); labels -> attributes; help -> description; no unit.
pub fn snapshot_to_resource_metrics(
    families: &[MetricFamily],
    resource: &AgentResource<'_>,
    timestamp_ms: i64,
) -> ResourceMetrics {
    let time_unix_nano = millis_to_nanos(timestamp_ms);
    let metrics = families
        .iter()
        .filter(|f| !f.samples.is_empty())
        .map(|family| family_to_metric(family, time_unix_nano))
        .collect();
    ResourceMetrics {
        resource: Some(agent_resource(resource)),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(agent_scope(resource)),
            metrics,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// The resource every record the agent sends carries, metrics and logs alike.
pub(crate) fn agent_resource(resource: &AgentResource<'_>) -> Resource {
    Resource {
        attributes: vec![
            string_kv("host.name", resource.node),
            string_kv("service.name", AGENT_SERVICE_NAME),
            string_kv("service.version", resource.agent_version),
            string_kv("service.instance.id", resource.node),
            string_kv(ATTR_NODE, resource.node),
            KeyValue {
                key: ATTR_INTERVAL_SECS.to_owned(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::DoubleValue(resource.interval_secs)),
                }),
                key_strindex: 0,
            },
        ],
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    }
}

pub(crate) fn agent_scope(resource: &AgentResource<'_>) -> InstrumentationScope {
    InstrumentationScope {
        name: AGENT_SERVICE_NAME.to_owned(),
        version: resource.agent_version.to_owned(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    }
}

fn family_to_metric(family: &MetricFamily, time_unix_nano: u64) -> Metric {
    let points = |with_start: bool| -> Vec<NumberDataPoint> {
        family
            .samples
            .iter()
            .map(|s| data_point(s, time_unix_nano, with_start))
            .collect()
    };
    let (data, metadata) = match family.kind {
        MetricKind::Counter => (
            metric::Data::Sum(Sum {
                data_points: points(true),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            Vec::new(),
        ),
        MetricKind::Gauge => (
            metric::Data::Gauge(Gauge {
                data_points: points(false),
            }),
            Vec::new(),
        ),
        MetricKind::Unknown => (
            metric::Data::Gauge(Gauge {
                data_points: points(false),
            }),
            vec![string_kv(METADATA_PROMETHEUS_TYPE, "unknown")],
        ),
    };
    Metric {
        name: family.name.to_string(),
        description: family.help.to_string(),
        unit: String::new(),
        metadata,
        data: Some(data),
    }
}

fn data_point(sample: &Sample, time_unix_nano: u64, with_start: bool) -> NumberDataPoint {
    let start_time_unix_nano = match sample.created_unix_secs {
        Some(secs) if with_start && secs.is_finite() && secs > 0.0 => (secs * 1e9) as u64,
        _ => 0,
    };
    NumberDataPoint {
        attributes: sample
            .labels
            .iter()
            .map(|(name, value)| string_kv(name, value))
            .collect(),
        start_time_unix_nano,
        time_unix_nano,
        exemplars: Vec::new(),
        flags: 0,
        value: Some(number_data_point::Value::AsDouble(sample.value)),
    }
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        key_strindex: 0,
    }
}

/// Milliseconds since the epoch to OTLP's unsigned nanoseconds; times before 1970 do
/// not occur in a snapshot and clamp to 0 rather than wrap.
fn millis_to_nanos(timestamp_ms: i64) -> u64 {
    u64::try_from(timestamp_ms).map_or(0, |ms| ms.saturating_mul(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn resource() -> AgentResource<'static> {
        AgentResource {
            node: "gpu-node-07",
            agent_version: "0.1.0",
            interval_secs: 5.0,
        }
    }

    #[test]
    fn resource_attributes_name_the_node_and_agent() {
        let rm = snapshot_to_resource_metrics(&[], &resource(), 1_700_000_000_000);
        let attrs = &rm.resource.as_ref().unwrap().attributes;
        let s = |v: &str| any_value::Value::StringValue(v.to_owned());
        assert_eq!(attr(attrs, "host.name"), Some(&s("gpu-node-07")));
        assert_eq!(attr(attrs, "service.name"), Some(&s("vigil-agent")));
        assert_eq!(attr(attrs, "service.version"), Some(&s("0.1.0")));
        assert_eq!(attr(attrs, "service.instance.id"), Some(&s("gpu-node-07")));
        assert_eq!(
            attr(attrs, ATTR_INTERVAL_SECS),
            Some(&any_value::Value::DoubleValue(5.0))
        );
        assert!(rm.scope_metrics[0].metrics.is_empty());
    }

    #[test]
    fn families_map_to_gauges_and_monotonic_sums() {
        let mut counter =
            MetricFamily::counter("vigil_gpu_xid_errors_total", "Xid errors by GPU and code.");
        counter.push_counter(&[("gpu", "0"), ("xid", "79")], 2.0, 1_699_999_990.5);
        counter.push(&[("gpu", "1"), ("xid", "48")], 1.0);
        let gauge = MetricFamily::gauge("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).")
            .with(&[("gpu", "0"), ("UUID", "GPU-abc")], 41.0);
        let unknown = MetricFamily::unknown("node_vmstat_pgfault", "vmstat pgfault").with(&[], 9.0);
        let empty = MetricFamily::gauge("vigil_empty", "no samples");
        let families = [counter, gauge, unknown, empty];

        let rm = snapshot_to_resource_metrics(&families, &resource(), 1_700_000_000_123);
        let metrics = &rm.scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 3, "a family without samples is not sent");

        let m = &metrics[0];
        assert_eq!(m.name, "vigil_gpu_xid_errors_total");
        assert_eq!(m.description, "Xid errors by GPU and code.");
        assert_eq!(m.unit, "");
        let Some(metric::Data::Sum(sum)) = &m.data else {
            panic!("counter must be a sum: {m:?}")
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(sum.data_points[0].time_unix_nano, 1_700_000_000_123_000_000);
        assert_eq!(
            sum.data_points[0].start_time_unix_nano,
            1_699_999_990_500_000_000
        );
        assert_eq!(
            sum.data_points[1].start_time_unix_nano, 0,
            "unknown start is 0"
        );
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsDouble(2.0))
        );
        let keys: Vec<_> = sum.data_points[0]
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        assert_eq!(keys, ["gpu", "xid"]);

        let Some(metric::Data::Gauge(g)) = &metrics[1].data else {
            panic!("gauge expected")
        };
        assert_eq!(g.data_points[0].start_time_unix_nano, 0);
        assert!(metrics[1].metadata.is_empty());

        let m = &metrics[2];
        assert!(matches!(m.data, Some(metric::Data::Gauge(_))));
        assert_eq!(
            attr(&m.metadata, METADATA_PROMETHEUS_TYPE),
            Some(&any_value::Value::StringValue("unknown".into()))
        );
    }

    #[test]
    fn negative_timestamps_clamp_to_zero() {
        assert_eq!(millis_to_nanos(-5), 0);
        assert_eq!(millis_to_nanos(2), 2_000_000);
    }
}
