//! Timestamps as the collector's APIs and notifications print them.

/// Go's zero `time.Time`, which Prometheus and Alertmanager print for "never".
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Go's `time.Time` as JSON or `time.RFC3339Nano` prints it, in UTC: fractional
/// seconds without trailing zeros, none when whole (`2026-11-18T11:06:40.12Z`).
/// `None`, or a time chrono cannot hold, is Go's zero time.
pub fn go_rfc3339(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return GO_ZERO_TIME.to_string();
    };
    let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else {
        return GO_ZERO_TIME.to_string();
    };
    let secs = t.format("%Y-%m-%dT%H:%M:%S");
    match ms.rem_euclid(1000) {
        0 => format!("{secs}Z"),
        frac => format!("{secs}.{}Z", format!("{frac:03}").trim_end_matches('0')),
    }
}

/// RFC 3339 with milliseconds, in UTC (`2026-11-27T11:03:03.236Z`), as Alertmanager's
/// v2 API prints times; empty for a time chrono cannot hold.
pub fn rfc3339_millis(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
