//! OTLP/JSON bodies, read so that a data point that cannot be parsed is refused
//! visibly.
//!
//! opentelemetry-proto's serde derives read a metric's data through `#[serde(flatten)]`
//! on an `Option`, and serde turns a failure inside a flattened option into `None`: a
//! gauge whose `timeUnixNano` is `"NaN"` would vanish with nothing refused, and a
//! point's value (`asDouble`, `asInt`, flattened too) that is not a number would read
//! as "no value". So when a decoded metric has no data, or a number point no value,
//! its JSON is read again piece by piece to find the field that failed, and the body
//! is answered 400 naming it, as OTLP/HTTP prescribes for a payload that is not valid
//! OTLP/JSON. Well-formed bodies are parsed once.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use vigil_proto::otlp::{
    ExponentialHistogram, ExponentialHistogramDataPoint, ExportMetricsServiceRequest, Gauge,
    Histogram, HistogramDataPoint, NumberDataPoint, Sum, Summary, SummaryDataPoint, metric,
};

/// Parses an OTLP/JSON body; the error is the message for a 400 answer.
pub(crate) fn parse(body: &[u8]) -> Result<ExportMetricsServiceRequest, String> {
    let request: ExportMetricsServiceRequest =
        serde_json::from_slice(body).map_err(|e| format!("OTLP/JSON body does not decode: {e}"))?;
    let lost_data = request
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .any(|m| match &m.data {
            None => true,
            Some(metric::Data::Gauge(Gauge { data_points }))
            | Some(metric::Data::Sum(Sum { data_points, .. })) => {
                data_points.iter().any(|p| p.value.is_none())
            }
            Some(_) => false,
        });
    if lost_data {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| format!("OTLP/JSON body does not decode: {e}"))?;
        if let Some(message) = first_bad_metric(&value) {
            return Err(format!("OTLP/JSON body does not decode: {message}"));
        }
    }
    Ok(request)
}

/// The path and error of the first metric whose data does not parse.
fn first_bad_metric(request: &Value) -> Option<String> {
    let list = |v: &Value, key: &str| -> Vec<Value> {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for (ri, rm) in list(request, "resourceMetrics").iter().enumerate() {
        for (si, sm) in list(rm, "scopeMetrics").iter().enumerate() {
            for (mi, m) in list(sm, "metrics").iter().enumerate() {
                let name = m.get("name").and_then(Value::as_str).unwrap_or("");
                let at =
                    format!("resourceMetrics[{ri}].scopeMetrics[{si}].metrics[{mi}] ({name:?})");
                if let Some(e) = bad_data(&at, m) {
                    return Some(e);
                }
            }
        }
    }
    None
}

fn bad_data(at: &str, metric: &Value) -> Option<String> {
    type Check = fn(&str, &Value) -> Option<String>;
    let checks: [(&str, Check); 5] = [
        ("gauge", check::<Gauge, NumberDataPoint>),
        ("sum", check::<Sum, NumberDataPoint>),
        ("histogram", check::<Histogram, HistogramDataPoint>),
        (
            "exponentialHistogram",
            check::<ExponentialHistogram, ExponentialHistogramDataPoint>,
        ),
        ("summary", check::<Summary, SummaryDataPoint>),
    ];
    for key in ["gauge", "sum"] {
        let points = metric
            .get(key)
            .and_then(|d| d.get("dataPoints"))
            .and_then(Value::as_array);
        for (i, p) in points.into_iter().flatten().enumerate() {
            if let Some(e) = bad_number_value(&format!("{at}.{key}.dataPoints[{i}]"), p) {
                return Some(e);
            }
        }
    }
    checks.iter().find_map(|(key, check)| {
        let data = metric.get(*key)?;
        check(&format!("{at}.{key}"), data)
    })
}

/// The error of a metric's data `D`, located at the first data point `P` and field
/// that fail on their own.
fn check<D: DeserializeOwned, P: DeserializeOwned>(path: &str, data: &Value) -> Option<String> {
    let err = D::deserialize(data).err()?;
    if let Some(points) = data.get("dataPoints").and_then(Value::as_array) {
        for (i, p) in points.iter().enumerate() {
            if let Some(e) = bad_field::<P>(&format!("{path}.dataPoints[{i}]"), p) {
                return Some(e);
            }
        }
    }
    bad_field::<D>(path, data).or_else(|| Some(format!("{path}: {err}")))
}

/// A number point's `asDouble` or `asInt` that is present but not a number (serde
/// reads it as "no value": the value is a flattened option).
fn bad_number_value(path: &str, point: &Value) -> Option<String> {
    for key in ["asDouble", "asInt"] {
        let Some(v) = point.get(key) else { continue };
        let alone = Value::Object(Map::from_iter([(key.to_owned(), v.clone())]));
        let read = NumberDataPoint::deserialize(&alone).ok();
        if read.is_none_or(|p| p.value.is_none()) {
            let shown: String = v.to_string().chars().take(64).collect();
            return Some(format!("{path}.{key}: {shown} is not a number"));
        }
    }
    None
}

/// The first field of `v` that `T` (whose fields all have defaults) refuses alone.
fn bad_field<T: DeserializeOwned>(path: &str, v: &Value) -> Option<String> {
    let err = T::deserialize(v).err()?;
    if let Value::Object(fields) = v {
        for (key, field) in fields {
            let alone = Value::Object(Map::from_iter([(key.clone(), field.clone())]));
            if let Err(e) = T::deserialize(&alone) {
                return Some(format!("{path}.{key}: {e}"));
            }
        }
    }
    Some(format!("{path}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(time: &str) -> String {
        format!(
            r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"m","gauge":{{"dataPoints":[{{"timeUnixNano":"1000000","asDouble":1}},{{"timeUnixNano":{time},"asDouble":1}}]}}}}]}}]}}]}}"#
        )
    }

    #[test]
    fn an_unparsable_timestamp_is_named() {
        for bad in [r#""NaN""#, r#""Infinity""#, r#""-5""#, "-5", "1.5"] {
            let err = parse(body(bad).as_bytes()).unwrap_err();
            assert!(
                err.contains(
                    r#"resourceMetrics[0].scopeMetrics[0].metrics[0] ("m").gauge.dataPoints[1].timeUnixNano: "#
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn good_bodies_parse() {
        let r = parse(body(r#""2000000""#).as_bytes()).unwrap();
        let m = &r.resource_metrics[0].scope_metrics[0].metrics[0];
        assert!(m.data.is_some());
        // A metric with no data at all is the translation's to refuse, not a 400.
        let r = parse(br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"x"}]}]}]}"#)
            .unwrap();
        assert!(
            r.resource_metrics[0].scope_metrics[0].metrics[0]
                .data
                .is_none()
        );
    }

    #[test]
    fn a_value_that_is_not_a_number_is_named() {
        let b = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[{"timeUnixNano":"1","asDouble":"abc"}]}}]}]}]}"#;
        let err = parse(b.as_bytes()).unwrap_err();
        assert!(
            err.contains(r#"("g").gauge.dataPoints[0].asDouble: "abc" is not a number"#),
            "{err}"
        );
        // No value at all is not malformed: the translation refuses the point.
        let b = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[{"timeUnixNano":"1"}]}}]}]}]}"#;
        assert!(parse(b.as_bytes()).is_ok());
        // OTLP/JSON writes int64 as a string.
        let b = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","sum":{"dataPoints":[{"timeUnixNano":"1","asInt":"7"}]}}]}]}]}"#;
        assert!(parse(b.as_bytes()).is_ok());
    }

    #[test]
    fn a_bad_temporality_is_named() {
        let b = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"c","sum":{"aggregationTemporality":"often","dataPoints":[]}}]}]}]}"#;
        let err = parse(b.as_bytes()).unwrap_err();
        assert!(
            err.contains(r#"("c").sum.aggregationTemporality: "#),
            "{err}"
        );
    }
}
