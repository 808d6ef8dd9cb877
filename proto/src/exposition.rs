//! Prometheus's text exposition formats, written from [`MetricFamily`]s.
//!
//! Both encoders write families in the order given; callers hand them sorted and with
//! unique names. The OpenMetrics encoder adds a `_created` line for every counter sample
//! that knows its start, which prometheus-client 0.26's encoder cannot express for
//! dynamically built counters.

use std::fmt::Write as _;

use crate::metrics::{MetricFamily, MetricKind, Sample};

/// `Content-Type` of the classic text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of OpenMetrics 1.0 text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which text format a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

impl Format {
    /// Picks the format from an `Accept` header as Prometheus sends it: OpenMetrics when it
    /// is offered with a higher (or equal, and earlier) quality than plain text.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut best: Option<(f32, Format)> = None;
        for part in accept.split(',') {
            let mut params = part.split(';').map(str::trim);
            let media = params.next().unwrap_or_default().to_ascii_lowercase();
            let mut q = 1.0_f32;
            for p in params {
                if let Some(v) = p.strip_prefix("q=") {
                    q = v.parse().unwrap_or(0.0);
                }
            }
            let format = match media.as_str() {
                "application/openmetrics-text" => Format::OpenMetrics,
                "text/plain" | "*/*" | "text/*" => Format::Text,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, format));
            }
        }
        best.map_or(Format::Text, |(_, f)| f)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// Writes `families` in `format` to `out`.
pub fn encode(families: &[MetricFamily], format: Format, out: &mut String) {
    match format {
        Format::Text => encode_text(families, out),
        Format::OpenMetrics => encode_openmetrics(families, out),
    }
}

/// The classic text format, version 0.0.4.
pub fn encode_text(families: &[MetricFamily], out: &mut String) {
    for family in families {
        if family.samples.is_empty() {
            continue;
        }
        let kind = match family.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Unknown => "untyped",
        };
        out.push_str("# HELP ");
        out.push_str(&family.name);
        out.push(' ');
        escape_help(&family.help, false, out);
        out.push_str("\n# TYPE ");
        out.push_str(&family.name);
        out.push(' ');
        out.push_str(kind);
        out.push('\n');
        for sample in &family.samples {
            write_sample(&family.name, "", sample, sample.value, out);
        }
    }
}

/// OpenMetrics 1.0 text, ending in `# EOF`.
pub fn encode_openmetrics(families: &[MetricFamily], out: &mut String) {
    for family in families {
        if family.samples.is_empty() {
            continue;
        }
        let (family_name, kind) = match family.kind {
            MetricKind::Counter => (
                family.name.strip_suffix("_total").unwrap_or(&family.name),
                "counter",
            ),
            MetricKind::Gauge => (&*family.name, "gauge"),
            MetricKind::Unknown => (&*family.name, "unknown"),
        };
        out.push_str("# HELP ");
        out.push_str(family_name);
        out.push(' ');
        escape_help(&family.help, true, out);
        out.push_str("\n# TYPE ");
        out.push_str(family_name);
        out.push(' ');
        out.push_str(kind);
        out.push('\n');
        for sample in &family.samples {
            if family.kind == MetricKind::Counter {
                write_sample(family_name, "_total", sample, sample.value, out);
                if let Some(created) = sample.created_unix_secs {
                    write_sample(family_name, "_created", sample, created, out);
                }
            } else {
                write_sample(family_name, "", sample, sample.value, out);
            }
        }
    }
    out.push_str("# EOF\n");
}

fn write_sample(name: &str, suffix: &str, sample: &Sample, value: f64, out: &mut String) {
    out.push_str(name);
    out.push_str(suffix);
    if !sample.labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in sample.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label_value(v, out);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    write_float(value, out);
    out.push('\n');
}

fn escape_help(help: &str, escape_quote: bool, out: &mut String) {
    if !help
        .bytes()
        .any(|b| b == b'\\' || b == b'\n' || (escape_quote && b == b'"'))
    {
        out.push_str(help);
        return;
    }
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if escape_quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn escape_label_value(v: &str, out: &mut String) {
    if !v.bytes().any(|b| matches!(b, b'\\' | b'\n' | b'"')) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Writes a float the way Go's `strconv.FormatFloat(v, 'g', -1, 64)` reads back: integers
/// without a fraction, exponents only for very large or very small magnitudes.
pub fn write_float(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v == v.trunc() && v.abs() < 1e15 {
        // Exact: an f64 below 2^53 holds its integer value.
        let _ = write!(out, "{}", v as i64);
    } else if v != 0.0 && (v.abs() >= 1e21 || v.abs() < 1e-6) {
        let _ = write!(out, "{v:e}");
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn families() -> Vec<MetricFamily> {
        let mut cpu = MetricFamily::counter("node_cpu_seconds_total", "Seconds the CPUs spent.");
        cpu.push_counter(&[("cpu", "0"), ("mode", "idle")], 12.5, 1_700_000_000.0);
        let mem = MetricFamily::gauge("node_memory_MemFree_bytes", "Memory \"free\" \\ in bytes")
            .with(&[], 1024.0 * 1024.0);
        let odd = MetricFamily::unknown("node_vmstat_oom_kill", "/proc/vmstat oom_kill")
            .with(&[("path", "a\"b\\c\nd")], 3.0);
        vec![cpu, mem, odd]
    }

    #[test]
    fn classic_text_matches_the_format() {
        let mut out = String::new();
        encode_text(&families(), &mut out);
        assert_eq!(
            out,
            "# HELP node_cpu_seconds_total Seconds the CPUs spent.\n\
             # TYPE node_cpu_seconds_total counter\n\
             node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 12.5\n\
             # HELP node_memory_MemFree_bytes Memory \"free\" \\\\ in bytes\n\
             # TYPE node_memory_MemFree_bytes gauge\n\
             node_memory_MemFree_bytes 1048576\n\
             # HELP node_vmstat_oom_kill /proc/vmstat oom_kill\n\
             # TYPE node_vmstat_oom_kill untyped\n\
             node_vmstat_oom_kill{path=\"a\\\"b\\\\c\\nd\"} 3\n"
        );
    }

    #[test]
    fn openmetrics_names_counter_families_and_adds_created() {
        let mut out = String::new();
        encode_openmetrics(&families(), &mut out);
        assert!(out.contains("# TYPE node_cpu_seconds counter\n"));
        assert!(out.contains("node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 12.5\n"));
        assert!(out.contains("node_cpu_seconds_created{cpu=\"0\",mode=\"idle\"} 1700000000\n"));
        assert!(
            out.contains("# HELP node_memory_MemFree_bytes Memory \\\"free\\\" \\\\ in bytes\n")
        );
        assert!(out.contains("# TYPE node_vmstat_oom_kill unknown\n"));
        assert!(out.ends_with("# EOF\n"));
    }

    #[test]
    fn empty_families_are_left_out() {
        let mut out = String::new();
        encode_text(&[MetricFamily::gauge("x", "y")], &mut out);
        assert_eq!(out, "");
    }

    #[test]
    fn floats_read_back_exactly() {
        for v in [
            0.0,
            -1.0,
            0.1,
            1e-9,
            123456789.125,
            2.5e22,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            let mut s = String::new();
            write_float(v, &mut s);
            assert_eq!(s.parse::<f64>().ok(), Some(v), "{s}");
        }
        let mut s = String::new();
        write_float(f64::NEG_INFINITY, &mut s);
        write_float(f64::NAN, &mut s);
        assert_eq!(s, "-InfNaN");
    }

    #[test]
    fn accept_header_negotiation() {
        assert_eq!(Format::from_accept(None), Format::Text);
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::from_accept(Some("text/plain;version=0.0.4")),
            Format::Text
        );
        assert_eq!(Format::from_accept(Some("application/json")), Format::Text);
    }
}
