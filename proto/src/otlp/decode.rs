//! OTLP metrics to Prometheus samples, as Prometheus 3's OTLP receiver translates them.
//!
//! The output borrows from the request: a sample is a metric-name index, a range in a
//! shared pool of `(name, value)` pairs and its resource's labels, so decoding a
//! request allocates per metric and per request, not per label per sample. The
//! collector turns those borrowed pairs into its interned label sets.
//!
//! Resource attributes become `job` (`service.namespace/service.name`), `instance`
//! and `node`. Both come from `host.name`, as the issue this receiver was built for
//! asks (a fleet of nodes is queried by host); `instance` falls back to
//! `service.instance.id` when a sender has no `host.name`, which is where Prometheus
//! takes it from first. Resource labels override point attributes of the same name, and
//! `__name__` overrides both. Points flagged "no recorded value" become Prometheus
//! staleness markers. What Prometheus cannot store (delta temporality, exponential
//! histograms) is refused per metric with a reason; the rest of the request lands.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::ops::Range;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, DataPointFlags};

use super::encode::{AGENT_SERVICE_NAME, ATTR_INTERVAL_SECS, METADATA_PROMETHEUS_TYPE};
use super::normalize::{NameType, format_bound, label_name, metric_name};
use super::wire::{
    Data, HistogramPoint, Kv, Metric, NumberPoint, Request, SummaryPoint, Value, WireError,
};

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

/// Translates a prost-decoded request. Never fails as a whole: what cannot be stored
/// is listed in [`Decoded::rejections`].
pub fn decode(request: &ExportMetricsServiceRequest) -> Decoded<'_> {
    translate(&Request::from_prost(request))
}

/// Reads and translates a protobuf-encoded request without copying its strings.
pub fn decode_protobuf(bytes: &[u8]) -> Result<Decoded<'_>, WireError> {
    Ok(translate(&Request::parse(bytes)?))
}

/// Translates a request view; the output borrows the request's bytes, not the view.
pub fn translate<'a>(request: &Request<'a>) -> Decoded<'a> {
    let mut out = Decoded::default();
    for rm in &request.resource_metrics {
        let attrs: &[Kv<'a>] = &rm.attributes;
        let text = |key: &str| -> Option<&'a str> {
            attrs
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| match kv.value {
                    Value::Str(s) if !s.is_empty() => Some(s),
                    _ => None,
                })
        };
        let host_name = text("host.name");
        let service_name = text("service.name");
        let job: Option<Cow<'a, str>> = match (text("service.namespace"), service_name) {
            (Some(ns), Some(name)) => Some(Cow::Owned(format!("{ns}/{name}"))),
            (None, Some(name)) => Some(Cow::Borrowed(name)),
            _ => None,
        };
        let instance = host_name.or_else(|| text("service.instance.id"));
        let mut res_labels: Vec<LabelPair<'a>> = Vec::with_capacity(3);
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
            .and_then(|kv| match kv.value {
                Value::Double(d) => Some(d),
                Value::Int(i) => Some(i as f64),
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
        for m in &rm.metrics {
            decode_metric(&mut out, resource, m);
        }
        let end = out.samples.len();
        out.resources[resource as usize].samples = first_sample..end;
    }
    out
}

fn reject(out: &mut Decoded<'_>, m: &Metric<'_>, points: usize, reason: impl Into<String>) {
    out.rejections.push(Rejection {
        metric: m.name.to_owned(),
        points: points as u64,
        reason: reason.into(),
    });
}

fn decode_metric<'a>(out: &mut Decoded<'a>, resource: u32, m: &Metric<'a>) {
    let Some(data) = &m.data else {
        return reject(
            out,
            m,
            0,
            "metric has no data (no gauge, sum, histogram or summary)",
        );
    };
    let unknown = m
        .metadata
        .iter()
        .any(|kv| kv.key == METADATA_PROMETHEUS_TYPE && matches!(kv.value, Value::Str("unknown")));
    let cumulative = AggregationTemporality::Cumulative as i32;
    match data {
        Data::Gauge(points) => {
            let kind = if unknown {
                NameType::Unknown
            } else {
                NameType::Gauge
            };
            let Some(name) = named(out, m, kind, points.len()) else {
                return;
            };
            number_points(out, resource, m, name, points, false);
        }
        Data::Sum {
            points,
            temporality,
            monotonic,
        } => {
            if *temporality != cumulative {
                return reject(out, m, points.len(), temporality_reason(*temporality));
            }
            let kind = if *monotonic {
                NameType::MonotonicCounter
            } else {
                NameType::NonMonotonicCounter
            };
            let Some(name) = named(out, m, kind, points.len()) else {
                return;
            };
            number_points(out, resource, m, name, points, *monotonic);
        }
        Data::Histogram {
            points,
            temporality,
        } => {
            if *temporality != cumulative {
                return reject(out, m, points.len(), temporality_reason(*temporality));
            }
            let Some(base) = named(out, m, NameType::Histogram, points.len()) else {
                return;
            };
            histogram_points(out, resource, m, base, points);
        }
        Data::Summary(points) => {
            let Some(base) = named(out, m, NameType::Summary, points.len()) else {
                return;
            };
            summary_points(out, resource, m, base, points);
        }
        Data::Exponential { points } => reject(
            out,
            m,
            *points,
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
    m: &Metric<'a>,
    kind: NameType,
    points: usize,
) -> Option<Cow<'a, str>> {
    let name = metric_name(m.name, m.unit, kind);
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
    m: &Metric<'a>,
    name: Cow<'a, str>,
    points: &[NumberPoint<'a>],
    with_start: bool,
) {
    let name = out.push_name(name);
    let (mut no_time, mut no_value) = (0, 0);
    out.samples.reserve(points.len());
    let pairs: usize = points.iter().map(|p| p.attributes.len()).sum();
    out.pool.reserve(pairs);
    for p in points {
        let Some(t_ms) = to_ms(p.time_unix_nano) else {
            no_time += 1;
            continue;
        };
        let v = match p.value {
            Some(v) => v,
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

fn point_rejections(out: &mut Decoded<'_>, m: &Metric<'_>, no_time: usize, invalid: usize) {
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
    m: &Metric<'a>,
    base: Cow<'a, str>,
    points: &[HistogramPoint<'a>],
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
    m: &Metric<'a>,
    base: Cow<'a, str>,
    points: &[SummaryPoint<'a>],
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
        for (q, v) in &p.quantiles {
            let label = (Cow::Borrowed("quantile"), Cow::Owned(format_bound(*q)));
            // A quantile is a gauge-like value: no created-timestamp zero.
            push(out, quantile, Some(label), *v, None);
        }
    }
    point_rejections(out, m, no_time, 0);
}

/// Point attributes as label pairs: names sanitised, values as text; empty keys
/// dropped.
fn attributes<'a, 'v>(attrs: &'v [Kv<'a>]) -> impl Iterator<Item = LabelPair<'a>> + 'v {
    attrs
        .iter()
        .filter(|kv| !kv.key.is_empty())
        .map(|kv| (label_name(kv.key), value_text(&kv.value)))
}

/// An attribute value as Prometheus renders it (pcommon's `AsString`): strings as
/// they are, numbers and booleans as text, bytes as base64, arrays and maps as JSON.
fn value_text<'a>(v: &Value<'a>) -> Cow<'a, str> {
    match v {
        Value::Str(s) => Cow::Borrowed(*s),
        Value::None => Cow::Borrowed(""),
        other => {
            let mut s = String::new();
            write_value(&mut s, other, false);
            Cow::Owned(s)
        }
    }
}

fn write_value(out: &mut String, v: &Value<'_>, quoted: bool) {
    match v {
        Value::None => out.push_str("null"),
        Value::Str(s) if quoted => write_json_string(out, s),
        Value::Str(s) => out.push_str(s),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Double(d) => {
            let _ = write!(out, "{d}");
        }
        Value::Bytes(b) => {
            if quoted {
                out.push('"');
            }
            base64(out, b);
            if quoted {
                out.push('"');
            }
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, true);
            }
            out.push(']');
        }
        // A profiles-only reference into a string table this signal does not have.
        Value::Strindex(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Kvlist(kvs) => {
            out.push('{');
            for (i, kv) in kvs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, kv.key);
                out.push(':');
                write_value(out, &kv.value, true);
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
