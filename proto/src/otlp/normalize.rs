//! Metric and label names from OTLP to Prometheus, as Prometheus 3's OTLP receiver
//! does it by default (`UnderscoreEscapingWithSuffixes`, its `otlptranslator` rules):
//! invalid characters become `_` and runs of `_` collapse, the unit becomes a suffix
//! (`By` → `_bytes`, `s` → `_seconds`, `{requests}` → nothing, `KiBy/s` →
//! `_kibibytes_per_second`), monotonic sums end in `_total` and unit-`1` gauges in
//! `_ratio`.
//!
//! A name that is already a valid Prometheus name with no unit and no missing suffix
//! comes back borrowed: the agent's own names (`node_cpu_seconds_total`,
//! `DCGM_FI_DEV_GPU_TEMP`) pass through unchanged and without an allocation.

use std::borrow::Cow;

/// The type a metric name is built for; decides the `_total` and `_ratio` suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameType {
    Gauge,
    MonotonicCounter,
    NonMonotonicCounter,
    Histogram,
    Summary,
    Unknown,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// Prometheus's `unitMap`: UCUM main units to their Prometheus word.
fn main_unit(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

/// Prometheus's `perUnitMap`: the unit after `/`, singular.
fn per_unit(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

/// Invalid characters to `_`, runs of `_` collapsed, leading and trailing `_` trimmed.
fn clean_unit(unit: &str) -> String {
    unit.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

/// The main and per-unit suffix tokens of an OTLP unit; empty when there is none.
fn unit_suffixes(unit: &str) -> (String, String) {
    let mut parts = unit.splitn(2, '/');
    let main = parts.next().unwrap_or("").trim();
    let main = if main.is_empty() || main.contains(['{', '}']) {
        String::new()
    } else {
        clean_unit(main_unit(main))
    };
    let per = match parts.next().map(str::trim) {
        Some(p) if !p.is_empty() && !p.contains(['{', '}']) => clean_unit(per_unit(p)),
        _ => String::new(),
    };
    (main, per)
}

/// The Prometheus name of an OTLP metric.
pub fn metric_name<'a>(name: &'a str, unit: &str, kind: NameType) -> Cow<'a, str> {
    let (main, per) = unit_suffixes(unit);
    let wants_total = kind == NameType::MonotonicCounter;
    let wants_ratio = unit == "1" && kind == NameType::Gauge;
    if main.is_empty()
        && per.is_empty()
        && !wants_ratio
        && is_clean(name)
        && (!wants_total || ends_with_single_total(name))
    {
        return Cow::Borrowed(name);
    }
    let mut tokens: Vec<&str> = name
        .split(|c| !is_name_char(c))
        .filter(|t| !t.is_empty())
        .collect();
    if !main.is_empty() && !tokens.contains(&main.as_str()) {
        tokens.push(&main);
    }
    let per_token = if per.is_empty() || tokens.contains(&per.as_str()) {
        String::new()
    } else {
        format!("per_{per}")
    };
    if !per_token.is_empty() {
        tokens.push(&per_token);
    }
    if wants_total {
        tokens.retain(|t| *t != "total");
        tokens.push("total");
    }
    if wants_ratio {
        tokens.retain(|t| *t != "ratio");
        tokens.push("ratio");
    }
    let joined = tokens.join("_");
    if joined.starts_with(|c: char| c.is_ascii_digit()) {
        Cow::Owned(format!("_{joined}"))
    } else {
        Cow::Owned(joined)
    }
}

/// True when tokenising would give the name back as it is: only name characters and
/// single underscores between them, not starting with a digit.
fn is_clean(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit() || c == '_')
        && !name.ends_with('_')
        && !name.contains("__")
        && name.chars().all(|c| is_name_char(c) || c == '_')
}

/// A counter name that keeps its form: ends in `_total` and has no other `total` token
/// (Prometheus removes every `total` token before appending one).
fn ends_with_single_total(name: &str) -> bool {
    name.ends_with("_total") && name.split('_').filter(|t| *t == "total").count() == 1
}

/// A Prometheus label name for an OTLP attribute key: invalid characters become `_`,
/// a leading digit gets `key_`, a single leading `_` gets `key`.
pub fn label_name(key: &str) -> Cow<'_, str> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let sanitized: Cow<'_, str> = if key.chars().all(valid) {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(
            key.chars()
                .map(|c| if valid(c) { c } else { '_' })
                .collect(),
        )
    };
    if sanitized.starts_with(|c: char| c.is_ascii_digit()) {
        Cow::Owned(format!("key_{sanitized}"))
    } else if sanitized.starts_with('_') && !sanitized.starts_with("__") {
        Cow::Owned(format!("key{sanitized}"))
    } else {
        sanitized
    }
}

/// A float as Prometheus writes `le` and `quantile` values (Go's `FormatFloat(f, 'f',
/// -1, 64)`, with `+Inf`).
pub fn format_bound(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else if v.is_nan() {
        "NaN".to_owned()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otel_semantic_names_get_prometheus_suffixes() {
        use NameType::*;
        let cases = [
            (
                "system.memory.usage",
                "By",
                Gauge,
                "system_memory_usage_bytes",
            ),
            ("requests", "1", MonotonicCounter, "requests_total"),
            ("cpu.utilization", "1", Gauge, "cpu_utilization_ratio"),
            (
                "http.server.request.duration",
                "s",
                Histogram,
                "http_server_request_duration_seconds",
            ),
            (
                "http.server.active_requests",
                "{request}",
                NonMonotonicCounter,
                "http_server_active_requests",
            ),
            (
                "network.io",
                "KiBy/s",
                Gauge,
                "network_io_kibibytes_per_second",
            ),
            ("throughput", "By/{request}", Gauge, "throughput_bytes"),
            (
                "errors_total_count",
                "",
                MonotonicCounter,
                "errors_count_total",
            ),
            ("memory_bytes", "By", Gauge, "memory_bytes"),
            ("ratio_of_x", "1", Gauge, "of_x_ratio"),
            ("2xx.responses", "", Gauge, "_2xx_responses"),
            ("a__b", "", Gauge, "a_b"),
            ("temperature", "Cel", Gauge, "temperature_celsius"),
            (
                "requests.count",
                "",
                MonotonicCounter,
                "requests_count_total",
            ),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(
                metric_name(name, unit, kind),
                want,
                "{name} [{unit}] {kind:?}"
            );
        }
    }

    #[test]
    fn agent_names_pass_through_borrowed() {
        for (name, kind) in [
            ("node_cpu_seconds_total", NameType::MonotonicCounter),
            ("DCGM_FI_DEV_GPU_TEMP", NameType::Gauge),
            ("DCGM_FI_DEV_XID_ERRORS", NameType::Unknown),
            ("node_memory_MemAvailable_bytes", NameType::Gauge),
            ("node_vmstat_pgfault", NameType::Unknown),
            ("vigil_gpu_xid_errors_total", NameType::MonotonicCounter),
        ] {
            assert!(
                matches!(metric_name(name, "", kind), Cow::Borrowed(n) if n == name),
                "{name}"
            );
        }
    }

    #[test]
    fn label_names_are_sanitised() {
        assert_eq!(label_name("gpu"), "gpu");
        assert!(matches!(label_name("modelName"), Cow::Borrowed(_)));
        assert_eq!(label_name("http.request.method"), "http_request_method");
        assert_eq!(label_name("0day"), "key_0day");
        assert_eq!(label_name("_private"), "key_private");
        assert_eq!(label_name("__reserved"), "__reserved");
        assert_eq!(label_name("k8s.pod-name"), "k8s_pod_name");
    }

    #[test]
    fn bounds_format_as_prometheus_does() {
        assert_eq!(format_bound(0.5), "0.5");
        assert_eq!(format_bound(1.0), "1");
        assert_eq!(format_bound(1000.0), "1000");
        assert_eq!(format_bound(f64::INFINITY), "+Inf");
        assert_eq!(format_bound(0.99), "0.99");
    }
}
