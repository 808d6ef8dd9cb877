//! Prometheus's JSON encoding of query results, byte for byte where clients look:
//! timestamps as float seconds with up to three decimals (`1435781451.781`), values as
//! strings in Go's shortest round-trip form (`"NaN"`, `"+Inf"`, `"1e-07"`).
//!
//! Results are written straight into a `String` rather than through `serde_json::Value`:
//! a range query can return millions of points, and Prometheus's own encoder also
//! writes floats by hand because JSON has no NaN or infinity.

use std::fmt::Write as _;

use vigil_rules::promql::{Annotations, Labels, Series, Value};

/// Writes a timestamp in milliseconds as Prometheus does: whole seconds, then `.` and
/// exactly three digits when there is a fraction (`1.500`, not `1.5`).
pub fn write_timestamp(t_ms: i64, out: &mut String) {
    let abs = t_ms.unsigned_abs();
    if t_ms < 0 {
        out.push('-');
    }
    let _ = write!(out, "{}", abs / 1000);
    let fraction = abs % 1000;
    if fraction != 0 {
        let _ = write!(out, ".{fraction:03}");
    }
}

/// Writes a float the way Go's `strconv.FormatFloat(v, fmt, -1, 64)` does with
/// Prometheus's choice of `fmt`: `'e'` below 1e-6 or from 1e21 up, `'f'` otherwise.
pub fn write_float(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v != 0.0 && (v.abs() < 1e-6 || v.abs() >= 1e21) {
        // Rust writes `1e-7` and `1.5e21`; Go writes `1e-07` and `1.5e+21`.
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        out.push_str(mantissa);
        out.push('e');
        out.push(sign);
        if digits.len() < 2 {
            out.push('0');
        }
        out.push_str(digits);
    } else {
        // Rust's Display for f64 is the shortest representation that reads back, never
        // in exponent form: the same digits as Go's 'f' with precision -1.
        let _ = write!(out, "{v}");
    }
}

/// A JSON string literal.
pub fn write_str(s: &str, out: &mut String) {
    // serde_json escapes exactly as JSON requires; a `&str` always serialises.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// `[<seconds>,"<value>"]`
fn write_point(t_ms: i64, v: f64, out: &mut String) {
    out.push('[');
    write_timestamp(t_ms, out);
    out.push_str(",\"");
    write_float(v, out);
    out.push_str("\"]");
}

/// `{"name":"value",...}` in the label set's (sorted) order.
pub fn write_labels(labels: &Labels, out: &mut String) {
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(name, out);
        out.push(':');
        write_str(value, out);
    }
    out.push('}');
}

fn write_matrix(series: &[Series], out: &mut String) {
    out.push_str("{\"resultType\":\"matrix\",\"result\":[");
    for (i, s) in series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"metric\":");
        write_labels(&s.labels, out);
        out.push_str(",\"values\":[");
        for (j, &(t, v)) in s.samples.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            write_point(t, v, out);
        }
        out.push_str("]}");
    }
    out.push_str("]}");
}

/// The `data` object of an instant query.
pub fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Scalar { t_ms, v } => {
            out.push_str("{\"resultType\":\"scalar\",\"result\":");
            write_point(*t_ms, *v, out);
            out.push('}');
        }
        Value::String { t_ms, s } => {
            out.push_str("{\"resultType\":\"string\",\"result\":[");
            write_timestamp(*t_ms, out);
            out.push(',');
            write_str(s, out);
            out.push_str("]}");
        }
        Value::Vector(samples) => {
            out.push_str("{\"resultType\":\"vector\",\"result\":[");
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(&s.labels, out);
                out.push_str(",\"value\":");
                write_point(s.t_ms, s.v, out);
                out.push('}');
            }
            out.push_str("]}");
        }
        Value::Matrix(series) => write_matrix(series, out),
    }
}

/// The `data` object of a range query: always a matrix.
pub fn write_range(series: &[Series], out: &mut String) {
    write_matrix(series, out);
}

/// `{"status":"success","data":<data>}` plus `warnings` and `infos` when there are any,
/// as Prometheus 3 sends them.
pub fn success_envelope(data: &str, annotations: &Annotations) -> String {
    let mut out = String::with_capacity(data.len() + 64);
    out.push_str("{\"status\":\"success\",\"data\":");
    out.push_str(data);
    for (key, list) in [
        ("warnings", &annotations.warnings),
        ("infos", &annotations.infos),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = write!(out, ",\"{key}\":[");
        for (i, msg) in list.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_str(msg, &mut out);
        }
        out.push(']');
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(v: f64) -> String {
        let mut s = String::new();
        write_float(v, &mut s);
        s
    }

    fn ts(t: i64) -> String {
        let mut s = String::new();
        write_timestamp(t, &mut s);
        s
    }

    #[test]
    fn floats_as_go_formats_them() {
        // Expected strings are Go's strconv.FormatFloat output for the same values.
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1e-6, "0.000001"),
            (1e-7, "1e-07"),
            (1.5e-10, "1.5e-10"),
            (123456789.125, "123456789.125"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (2.5e22, "2.5e+22"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (0.30000000000000004, "0.30000000000000004"),
        ];
        for &(v, want) in cases {
            assert_eq!(float(v), want, "{v:?}");
        }
    }

    #[test]
    fn timestamps_keep_three_decimals() {
        assert_eq!(ts(1_435_781_451_781), "1435781451.781");
        assert_eq!(ts(1_500), "1.500");
        assert_eq!(ts(1_005), "1.005");
        assert_eq!(ts(2_000), "2");
        assert_eq!(ts(0), "0");
        assert_eq!(ts(-1_500), "-1.500");
    }

    #[test]
    fn envelope_adds_annotations_only_when_present() {
        let mut a = Annotations::default();
        assert_eq!(
            success_envelope("[]", &a),
            r#"{"status":"success","data":[]}"#
        );
        a.infos.push("PromQL info: x".into());
        assert_eq!(
            success_envelope("[]", &a),
            r#"{"status":"success","data":[],"infos":["PromQL info: x"]}"#
        );
    }
}
