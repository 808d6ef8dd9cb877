//! The view of a request prost decoded: the reference the borrowed reader is tested
//! against, and the path OTLP/JSON takes (serde gives prost's types).

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{NumberDataPoint, metric, number_data_point};

use super::{
    Data, HistogramPoint, Kv, Metric, NumberPoint, Request, ResourceMetrics, SummaryPoint, Value,
};

impl<'a> Request<'a> {
    /// The same view of a request prost decoded.
    pub fn from_prost(req: &'a ExportMetricsServiceRequest) -> Request<'a> {
        Request {
            resource_metrics: req
                .resource_metrics
                .iter()
                .map(|rm| ResourceMetrics {
                    attributes: rm
                        .resource
                        .as_ref()
                        .map_or_else(Vec::new, |r| kvs_from_prost(&r.attributes)),
                    metrics: rm
                        .scope_metrics
                        .iter()
                        .flat_map(|sm| &sm.metrics)
                        .map(metric_from_prost)
                        .collect(),
                })
                .collect(),
        }
    }
}

fn kvs_from_prost(kvs: &[KeyValue]) -> Vec<Kv<'_>> {
    kvs.iter()
        .map(|kv| Kv {
            key: &kv.key,
            value: value_from_prost(kv.value.as_ref()),
        })
        .collect()
}

fn value_from_prost(v: Option<&AnyValue>) -> Value<'_> {
    match v.and_then(|v| v.value.as_ref()) {
        None => Value::None,
        Some(any_value::Value::StringValue(s)) => Value::Str(s),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::Double(*d),
        Some(any_value::Value::BytesValue(b)) => Value::Bytes(b),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| value_from_prost(Some(v))).collect())
        }
        Some(any_value::Value::KvlistValue(l)) => Value::Kvlist(kvs_from_prost(&l.values)),
        Some(any_value::Value::StringValueStrindex(i)) => Value::Strindex(*i),
    }
}

fn number_from_prost(points: &[NumberDataPoint]) -> Vec<NumberPoint<'_>> {
    points
        .iter()
        .map(|p| NumberPoint {
            attributes: kvs_from_prost(&p.attributes),
            start_time_unix_nano: p.start_time_unix_nano,
            time_unix_nano: p.time_unix_nano,
            flags: p.flags,
            value: p.value.map(|v| match v {
                number_data_point::Value::AsDouble(d) => d,
                number_data_point::Value::AsInt(i) => i as f64,
            }),
        })
        .collect()
}

fn metric_from_prost(m: &opentelemetry_proto::tonic::metrics::v1::Metric) -> Metric<'_> {
    let number = number_from_prost;
    let data = m.data.as_ref().map(|d| match d {
        metric::Data::Gauge(g) => Data::Gauge(number(&g.data_points)),
        metric::Data::Sum(s) => Data::Sum {
            points: number(&s.data_points),
            temporality: s.aggregation_temporality,
            monotonic: s.is_monotonic,
        },
        metric::Data::Histogram(h) => Data::Histogram {
            points: h
                .data_points
                .iter()
                .map(|p| HistogramPoint {
                    attributes: kvs_from_prost(&p.attributes),
                    start_time_unix_nano: p.start_time_unix_nano,
                    time_unix_nano: p.time_unix_nano,
                    count: p.count,
                    sum: p.sum,
                    bucket_counts: p.bucket_counts.clone(),
                    explicit_bounds: p.explicit_bounds.clone(),
                    flags: p.flags,
                })
                .collect(),
            temporality: h.aggregation_temporality,
        },
        metric::Data::ExponentialHistogram(h) => Data::Exponential {
            points: h.data_points.len(),
        },
        metric::Data::Summary(s) => Data::Summary(
            s.data_points
                .iter()
                .map(|p| SummaryPoint {
                    attributes: kvs_from_prost(&p.attributes),
                    start_time_unix_nano: p.start_time_unix_nano,
                    time_unix_nano: p.time_unix_nano,
                    count: p.count,
                    sum: p.sum,
                    quantiles: p
                        .quantile_values
                        .iter()
                        .map(|q| (q.quantile, q.value))
                        .collect(),
                    flags: p.flags,
                })
                .collect(),
        ),
    });
    Metric {
        name: &m.name,
        unit: &m.unit,
        metadata: kvs_from_prost(&m.metadata),
        data,
    }
}
