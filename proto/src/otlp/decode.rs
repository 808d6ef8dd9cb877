//! OTLP metrics to Prometheus samples, as Prometheus 3's OTLP receiver translates them.
//!
//! The output borrows from the request: a sample is a metric-name index, a range in a
//! shared pool of `(name, value)` pairs and its resource's labels, so decoding a
//! request allocates per metric and per request, not per label per sample. The
//! collector turns those borrowed pairs into its interned label sets.
//!
//! Resource attributes become `job` (`service.namespace/service.name`), `instance`
//! (`service.instance.id`, else `host.name`) and — Vigil's addition — `node`
//! (`host.name`). Resource labels override point attributes of the same name, and
//! `__name__` overrides both. Points flagged "no recorded value" become Prometheus
//! staleness markers. What Prometheus cannot store (delta temporality, exponential
//! histograms) is refused per metric with a reason; the rest of the request lands.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::ops::Range;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, DataPointFlags, HistogramDataPoint, Metric, NumberDataPoint,
    SummaryDataPoint, metric, number_data_point,
};

use super::encode::{AGENT_SERVICE_NAME, ATTR_INTERVAL_SECS, METADATA_PROMETHEUS_TYPE};
use super::normalize::{NameType, format_bound, label_name, metric_name};

/// The bit pattern of Prometheus's staleness marker (`value.StaleNaN`).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// A label pair borrowed from the request where it can be.
pub type LabelPair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// One decoded sample. Its label set is [`Decoded::labels`].
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedSample {
    /// Index into [`Decoded::resources`].
    pub resource: u32,
    name: u32,
    labels: Range<u32>,
    pub t_ms: i64,
    /// A staleness marker when the point was flagged "no recorded value".
    pub value: f64,
    /// When a cumulative series started, if known and before `t_ms`: the collector
    /// writes a zero there the first time it sees the series (created-timestamp zero
    /// ingestion), so `increase()` counts the first increment.
    pub start_ms: Option<i64>,
}

/// What a resource says about its sender.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedResource<'a> {
    labels: Range<u32>,
    /// `host.name`, the node.
    pub host_name: Option<&'a str>,
    pub service_name: Option<&'a str>,
    pub service_version: Option<&'a str>,
    /// `vigil.interval_secs`, sent by the agent.
    pub interval_secs: Option<f64>,
    /// A vigil-agent snapshot of one node: every series the node has, so one missing
    /// from the next snapshot is stale.
    pub is_agent_snapshot: bool,
    /// This resource's samples, a range of [`Decoded::samples`].
    pub samples: Range<usize>,
}

/// Why some points of a metric were not turned into samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub metric: String,
    /// OTLP data points refused (what `rejected_data_points` counts).
    pub points: u64,
    pub reason: String,
}

/// A decoded request.
#[derive(Debug, Default)]
pub struct Decoded<'a> {
    pub resources: Vec<DecodedResource<'a>>,
    pub samples: Vec<DecodedSample>,
    pub rejections: Vec<Rejection>,
    names: Vec<Cow<'a, str>>,
    pool: Vec<LabelPair<'a>>,
}

impl<'a> Decoded<'a> {
    /// The sample's metric name (`__name__`).
    pub fn name(&self, s: &DecodedSample) -> &str {
        &self.names[s.name as usize]
    }

    /// The sample's labels without `__name__`: point attributes, then resource labels.
    /// Names may repeat (an attribute called `job`); a later pair wins.
    pub fn labels(&self, s: &DecodedSample) -> impl Iterator<Item = (&str, &str)> + Clone + '_ {
        let res = &self.resources[s.resource as usize].labels;
        self.range(&s.labels).chain(self.range(res))
    }

    fn range(&self, r: &Range<u32>) -> impl Iterator<Item = (&str, &str)> + Clone + '_ {
        self.pool[r.start as usize..r.end as usize]
            .iter()
            .map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    /// Data points refused, summed over rejections.
    pub fn rejected_points(&self) -> u64 {
        self.rejections.iter().map(|r| r.points).sum()
    }

    /// One line naming the first few rejections, for `partial_success.error_message`.
    pub fn rejection_message(&self) -> String {
        let mut msg = String::new();
        for (i, r) in self.rejections.iter().take(5).enumerate() {
            if i > 0 {
                msg.push_str("; ");
            }
            let _ = write!(
                msg,
                "metric {:?}: {} ({} points)",
                r.metric, r.reason, r.points
            );
        }
        if self.rejections.len() > 5 {
            let _ = write!(msg, "; and {} more", self.rejections.len() - 5);
        }
        msg
    }

    fn push_pool(&mut self, pairs: impl IntoIterator<Item = LabelPair<'a>>) -> Range<u32> {
        let start = self.pool.len() as u32;
        self.pool.extend(pairs);
        start..self.pool.len() as u32
    }

    fn push_name(&mut self, name: Cow<'a, str>) -> u32 {
        self.names.push(name);
        (self.names.len() - 1) as u32
    }
}

/// Translates a request. Never fails as a whole: what cannot be stored is listed in
/// [`Decoded::rejections`].
pub fn decode(request: &ExportMetricsServiceRequest) -> Decoded<'_> {
    let mut out = Decoded::default();
    for rm in &request.resource_metrics {
        let attrs: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
        let text = |key: &str| {
            attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
                match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(s) if !s.is_empty() => Some(s.as_str()),
                    _ => None,
                }
            })
        };
        let host_name = text("host.name");
        let service_name = text("service.name");
        let job: Option<Cow<'_, str>> = match (text("service.namespace"), service_name) {
            (Some(ns), Some(name)) => Some(Cow::Owned(format!("{ns}/{name}"))),
            (None, Some(name)) => Some(Cow::Borrowed(name)),
            _ => None,
        };
        let instance = text("service.instance.id").or(host_name);
        let mut res_labels: Vec<LabelPair<'_>> = Vec::with_capacity(3);
        if let Some(job) = job {
            res_labels.push((Cow::Borrowed("job"), job));
        }
        if let Some(instance) = instance {
            res_labels.push((Cow::Borrowed("instance"), Cow::Borrowed(instance)));
        }
        if let Some(node) = host_name {
            res_labels.push((Cow::Borrowed("node"), Cow::Borrowed(node)));
        }
        let labels = out.push_pool(res_labels);
        let interval_secs = attrs
            .iter()
            .find(|kv| kv.key == ATTR_INTERVAL_SECS)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::DoubleValue(d) => Some(*d),
                any_value::Value::IntValue(i) => Some(*i as f64),
                _ => None,
            });
        let resource = out.resources.len() as u32;
        let first_sample = out.samples.len();
        out.resources.push(DecodedResource {
            labels,
            host_name,
            service_name,
            service_version: text("service.version"),
            interval_secs: interval_secs.filter(|s| s.is_finite() && *s > 0.0),
            is_agent_snapshot: service_name == Some(AGENT_SERVICE_NAME) && host_name.is_some(),
            samples: first_sample..first_sample,
        });
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                decode_metric(&mut out, resource, m);
            }
        }
        let end = out.samples.len();
        out.resources[resource as usize].samples = first_sample..end;
    }
    out
}

fn reject(out: &mut Decoded<'_>, m: &Metric, points: usize, reason: impl Into<String>) {
    out.rejections.push(Rejection {
        metric: m.name.clone(),
        points: points as u64,
        reason: reason.into(),
    });
}

fn decode_metric<'a>(out: &mut Decoded<'a>, resource: u32, m: &'a Metric) {
    let Some(data) = &m.data else {
        return reject(
            out,
            m,
            0,
            "metric has no data (no gauge, sum, histogram or summary)",
        );
    };
    let unknown = m.metadata.iter().any(|kv| {
        kv.key == METADATA_PROMETHEUS_TYPE
            && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()),
                Some(any_value::Value::StringValue(s)) if s == "unknown")
    });
    let cumulative = AggregationTemporality::Cumulative as i32;
    match data {
        metric::Data::Gauge(g) => {
            let kind = if unknown {
                NameType::Unknown
            } else {
                NameType::Gauge
            };
            let Some(name) = named(out, m, kind, g.data_points.len()) else {
                return;
            };
            number_points(out, resource, m, name, &g.data_points, false);
        }
        metric::Data::Sum(s) => {
            if s.aggregation_temporality != cumulative {
                return reject(
                    out,
                    m,
                    s.data_points.len(),
                    temporality_reason(s.aggregation_temporality),
                );
            }
            let kind = if s.is_monotonic {
                NameType::MonotonicCounter
            } else {
                NameType::NonMonotonicCounter
            };
            let Some(name) = named(out, m, kind, s.data_points.len()) else {
                return;
            };
            number_points(out, resource, m, name, &s.data_points, s.is_monotonic);
        }
        metric::Data::Histogram(h) => {
            if h.aggregation_temporality != cumulative {
                return reject(
                    out,
                    m,
                    h.data_points.len(),
                    temporality_reason(h.aggregation_temporality),
                );
            }
            let Some(base) = named(out, m, NameType::Histogram, h.data_points.len()) else {
                return;
            };
            histogram_points(out, resource, m, base, &h.data_points);
        }
        metric::Data::Summary(s) => {
            let Some(base) = named(out, m, NameType::Summary, s.data_points.len()) else {
                return;
            };
            summary_points(out, resource, m, base, &s.data_points);
        }
        metric::Data::ExponentialHistogram(h) => reject(
            out,
            m,
            h.data_points.len(),
            "exponential histograms (Prometheus native histograms) are not supported; send explicit-bucket histograms",
        ),
    }
}

fn temporality_reason(t: i32) -> String {
    if t == AggregationTemporality::Delta as i32 {
        "delta temporality is not supported; send cumulative (Prometheus stores cumulative series)"
            .to_owned()
    } else {
        format!("aggregation temporality {t} is not cumulative; send cumulative")
    }
}

/// The normalised name, or a rejection when it normalises to nothing.
fn named<'a>(
    out: &mut Decoded<'a>,
    m: &'a Metric,
    kind: NameType,
    points: usize,
) -> Option<Cow<'a, str>> {
    let name = metric_name(&m.name, &m.unit, kind);
    if name.is_empty() || name.chars().all(|c| c == '_') {
        reject(
            out,
            m,
            points,
            "metric name is empty or has no valid character",
        );
        return None;
    }
    Some(name)
}

/// Nanoseconds to milliseconds; `None` for 0 ("not set").
fn to_ms(ns: u64) -> Option<i64> {
    (ns > 0).then_some((ns / 1_000_000) as i64)
}

fn start_ms(start_ns: u64, t_ms: i64) -> Option<i64> {
    to_ms(start_ns).filter(|s| *s < t_ms)
}

fn no_recorded_value(flags: u32) -> bool {
    flags & DataPointFlags::NoRecordedValueMask as u32 != 0
}

fn stale_or(flags: u32, v: f64) -> f64 {
    if no_recorded_value(flags) {
        f64::from_bits(STALE_NAN_BITS)
    } else {
        v
    }
}

fn number_points<'a>(
    out: &mut Decoded<'a>,
    resource: u32,
    m: &'a Metric,
    name: Cow<'a, str>,
    points: &'a [NumberDataPoint],
    with_start: bool,
) {
    let name = out.push_name(name);
    let (mut no_time, mut no_value) = (0, 0);
    for p in points {
        let Some(t_ms) = to_ms(p.time_unix_nano) else {
            no_time += 1;
            continue;
        };
        let v = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None if no_recorded_value(p.flags) => 0.0,
            None => {
                no_value += 1;
                continue;
            }
        };
        let labels = out.push_pool(attributes(&p.attributes));
        out.samples.push(DecodedSample {
            resource,
            name,
            labels,
            t_ms,
            value: stale_or(p.flags, v),
            start_ms: if with_start {
                start_ms(p.start_time_unix_nano, t_ms)
            } else {
                None
            },
        });
    }
    point_rejections(out, m, no_time, no_value);
}

fn point_rejections(out: &mut Decoded<'_>, m: &Metric, no_time: usize, invalid: usize) {
    if no_time > 0 {
        reject(out, m, no_time, "data point has no time_unix_nano");
    }
    if invalid > 0 {
        reject(
            out,
            m,
            invalid,
            "data point has no value or inconsistent buckets",
        );
    }
}

fn histogram_points<'a>(
    out: &mut Decoded<'a>,
    resource: u32,
    m: &'a Metric,
    base: Cow<'a, str>,
    points: &'a [HistogramDataPoint],
) {
    let bucket = out.push_name(Cow::Owned(format!("{base}_bucket")));
    let sum = out.push_name(Cow::Owned(format!("{base}_sum")));
    let count = out.push_name(Cow::Owned(format!("{base}_count")));
    let (mut no_time, mut invalid) = (0, 0);
    for p in points {
        let Some(t_ms) = to_ms(p.time_unix_nano) else {
            no_time += 1;
            continue;
        };
        if !p.bucket_counts.is_empty() && p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
            invalid += 1;
            continue;
        }
        let start = start_ms(p.start_time_unix_nano, t_ms);
        let attrs: Vec<LabelPair<'a>> = attributes(&p.attributes).collect();
        let push = |out: &mut Decoded<'a>, name: u32, extra: Option<LabelPair<'a>>, v: f64| {
            let labels = out.push_pool(attrs.iter().cloned().chain(extra));
            out.samples.push(DecodedSample {
                resource,
                name,
                labels,
                t_ms,
                value: stale_or(p.flags, v),
                start_ms: start,
            });
        };
        if let Some(s) = p.sum {
            push(out, sum, None, s);
        }
        push(out, count, None, p.count as f64);
        let mut cumulative = 0u64;
        for (i, bound) in p.explicit_bounds.iter().enumerate() {
            cumulative = cumulative.saturating_add(p.bucket_counts.get(i).copied().unwrap_or(0));
            let le = (Cow::Borrowed("le"), Cow::Owned(format_bound(*bound)));
            push(out, bucket, Some(le), cumulative as f64);
        }
        let inf = (Cow::Borrowed("le"), Cow::Borrowed("+Inf"));
        push(out, bucket, Some(inf), p.count as f64);
    }
    point_rejections(out, m, no_time, invalid);
}

fn summary_points<'a>(
    out: &mut Decoded<'a>,
    resource: u32,
    m: &'a Metric,
    base: Cow<'a, str>,
    points: &'a [SummaryDataPoint],
) {
    let sum = out.push_name(Cow::Owned(format!("{base}_sum")));
    let count = out.push_name(Cow::Owned(format!("{base}_count")));
    let quantile = out.push_name(base);
    let mut no_time = 0;
    for p in points {
        let Some(t_ms) = to_ms(p.time_unix_nano) else {
            no_time += 1;
            continue;
        };
        let start = start_ms(p.start_time_unix_nano, t_ms);
        let attrs: Vec<LabelPair<'a>> = attributes(&p.attributes).collect();
        let push =
            |out: &mut Decoded<'a>, name: u32, extra: Option<LabelPair<'a>>, v: f64, start| {
                let labels = out.push_pool(attrs.iter().cloned().chain(extra));
                out.samples.push(DecodedSample {
                    resource,
                    name,
                    labels,
                    t_ms,
                    value: stale_or(p.flags, v),
                    start_ms: start,
                });
            };
        push(out, sum, None, p.sum, start);
        push(out, count, None, p.count as f64, start);
        for q in &p.quantile_values {
            let label = (
                Cow::Borrowed("quantile"),
                Cow::Owned(format_bound(q.quantile)),
            );
            // A quantile is a gauge-like value: no created-timestamp zero.
            push(out, quantile, Some(label), q.value, None);
        }
    }
    point_rejections(out, m, no_time, 0);
}

/// Point attributes as label pairs: names sanitised, values as text; empty keys
/// dropped.
fn attributes(attrs: &[KeyValue]) -> impl Iterator<Item = LabelPair<'_>> + '_ {
    attrs
        .iter()
        .filter(|kv| !kv.key.is_empty())
        .map(|kv| (label_name(&kv.key), value_text(kv.value.as_ref())))
}

/// An attribute value as Prometheus renders it (pcommon's `AsString`): strings as
/// they are, numbers and booleans as text, bytes as base64, arrays and maps as JSON.
fn value_text(v: Option<&AnyValue>) -> Cow<'_, str> {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Cow::Borrowed(s),
        None => Cow::Borrowed(""),
        Some(other) => {
            let mut s = String::new();
            write_value(&mut s, other, false);
            Cow::Owned(s)
        }
    }
}

fn write_value(out: &mut String, v: &any_value::Value, quoted: bool) {
    match v {
        any_value::Value::StringValue(s) if quoted => write_json_string(out, s),
        any_value::Value::StringValue(s) => out.push_str(s),
        any_value::Value::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
        any_value::Value::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        any_value::Value::DoubleValue(d) => {
            let _ = write!(out, "{d}");
        }
        any_value::Value::BytesValue(b) => {
            if quoted {
                out.push('"');
            }
            base64(out, b);
            if quoted {
                out.push('"');
            }
        }
        any_value::Value::ArrayValue(a) => {
            out.push('[');
            for (i, item) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match item.value.as_ref() {
                    Some(v) => write_value(out, v, true),
                    None => out.push_str("null"),
                }
            }
            out.push(']');
        }
        // A profiles-only reference into a string table this signal does not have.
        any_value::Value::StringValueStrindex(i) => {
            let _ = write!(out, "{i}");
        }
        any_value::Value::KvlistValue(kvs) => {
            out.push('{');
            for (i, kv) in kvs.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, &kv.key);
                out.push(':');
                match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(v) => write_value(out, v, true),
                    None => out.push_str("null"),
                }
            }
            out.push('}');
        }
    }
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn base64(out: &mut String, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
}
