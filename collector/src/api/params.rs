//! Request parameters as Prometheus reads them: from the URL and, for a POST, from an
//! `application/x-www-form-urlencoded` body (Grafana posts its queries), with the same
//! time, duration, matcher and limit syntax and the same error wording.

use axum::http::{HeaderMap, header};
use vigil_rules::promql::{Expr, METRIC_NAME, MatchOp, Matcher, Matchers};

use super::error::ApiError;

/// Prometheus's lowest and highest representable times (`MinTime`, `MaxTime` in
/// web/api/v1), which its own clients send for "unbounded".
pub const MIN_TIME_MS: i64 = (i64::MIN / 1000 + 62_135_596_801) * 1000;
pub const MAX_TIME_MS: i64 = (i64::MAX / 1000 - 62_135_596_801) * 1000 + 999;
const MIN_TIME_FORMATTED: &str = "-292273086-05-16T16:47:06Z";
const MAX_TIME_FORMATTED: &str = "292277025-08-17T07:12:55Z";

/// Form values of one request, in Go's `r.Form` order: body values before URL values,
/// so a name given in both reads as the body's.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Decodes the URL query and, when the body is a form, the body.
    pub fn parse(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Result<Self, ApiError> {
        let mut pairs = Vec::new();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.split(';')
                    .next()
                    .is_some_and(|m| m.trim() == "application/x-www-form-urlencoded")
            });
        if is_form && !body.is_empty() {
            pairs.extend(decode(body)?);
        }
        if let Some(q) = query {
            pairs.extend(decode(q.as_bytes())?);
        }
        Ok(Params(pairs))
    }

    /// The first value of `name`, if given and not empty (Go's `FormValue` returns ""
    /// for both, and Prometheus treats them alike).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Every value of `name` (`match[]` repeats).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A time parameter, or `default` when absent.
    pub fn time_or(&self, name: &'static str, default: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(s) => parse_time(s).map_err(|e| ApiError::invalid_param(name, e)),
        }
    }

    /// A required time parameter: absent reads as "" and fails to parse, as in Prometheus.
    pub fn time(&self, name: &'static str) -> Result<i64, ApiError> {
        parse_time(self.get(name).unwrap_or("")).map_err(|e| ApiError::invalid_param(name, e))
    }

    /// An optional duration parameter in milliseconds.
    pub fn duration(&self, name: &'static str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|s| parse_duration_ms(s).map_err(|e| ApiError::invalid_param(name, e)))
            .transpose()
    }

    /// `limit`: 0 or absent means no limit.
    pub fn limit(&self) -> Result<usize, ApiError> {
        let Some(s) = self.get("limit") else {
            return Ok(0);
        };
        let n: i64 = s.parse().map_err(|_| {
            ApiError::invalid_param("limit", format!("cannot parse {s:?} to a valid limit"))
        })?;
        usize::try_from(n)
            .map_err(|_| ApiError::invalid_param("limit", "limit must be non-negative".into()))
    }

    /// `match[]` selectors; `required` makes an absent one an error, as for `/series`.
    pub fn matchers(&self, required: bool) -> Result<Vec<Matchers>, ApiError> {
        let raw = self.all("match[]");
        if raw.is_empty() && required {
            return Err(ApiError::bad_data("no match[] parameter provided"));
        }
        raw.into_iter()
            .map(|s| parse_selector(s).map_err(|e| ApiError::invalid_param("match[]", e)))
            .collect()
    }
}

fn decode(bytes: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_bytes(bytes)
        .map_err(|e| ApiError::bad_data(format!("error parsing form values: {e}")))
}

/// Prometheus's `parseTime`: a Unix time in (fractional) seconds, rounded to the
/// millisecond, or RFC 3339 with optional fractional seconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let invalid = || format!("cannot parse {s:?} to a valid timestamp");
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() {
            return Err(invalid());
        }
        let whole = secs.trunc();
        let frac_ms = ((secs - whole) * 1000.0).round();
        // `as` saturates; far-out times clamp instead of wrapping.
        return Ok((whole as i64)
            .saturating_mul(1000)
            .saturating_add(frac_ms as i64));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    match s {
        MIN_TIME_FORMATTED => Ok(MIN_TIME_MS),
        MAX_TIME_FORMATTED => Ok(MAX_TIME_MS),
        _ => Err(invalid()),
    }
}

/// Prometheus's `parseDuration`: float seconds, or its duration notation (`1h30m`).
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        let ms = secs * 1000.0;
        if !ms.is_finite() || ms.abs() >= i64::MAX as f64 / 1e6 {
            return Err(format!(
                "cannot parse {s:?} to a valid duration. It overflows int64"
            ));
        }
        return Ok(ms as i64);
    }
    vigil_rules::duration::parse_duration(s)
        .map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

/// A series selector as `match[]` takes it: `up`, `{job="x"}`, `up{job=~"a|b"}`.
pub fn parse_selector(s: &str) -> Result<Matchers, String> {
    let expr = vigil_rules::promql::parse(s).map_err(|e| e.to_string())?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(format!(
            "parse error: expected a series selector, got {s:?}"
        ));
    };
    let mut m = vs.matchers;
    let has_name = m
        .matchers
        .iter()
        .chain(m.or_matchers.iter().flatten())
        .any(|m| m.name == METRIC_NAME);
    if let (Some(name), false) = (vs.name, has_name) {
        m.matchers
            .push(Matcher::new(MatchOp::Equal, METRIC_NAME, &name));
    }
    Ok(m)
}

/// Label names as Prometheus's API accepts them in a path.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_prometheus_parses_them() {
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1700000000.1234"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("1.5e9"), Ok(1_500_000_000_000));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert_eq!(
            parse_time("2015-07-01T22:10:51+02:00"),
            Ok(1_435_781_451_000)
        );
        assert_eq!(parse_time(MAX_TIME_FORMATTED), Ok(MAX_TIME_MS));
        assert_eq!(
            parse_time("yesterday").unwrap_err(),
            "cannot parse \"yesterday\" to a valid timestamp"
        );
        assert!(parse_time("").is_err());
        assert!(parse_time("NaN").is_err());
    }

    #[test]
    fn durations_as_prometheus_parses_them() {
        assert_eq!(parse_duration_ms("15"), Ok(15_000));
        assert_eq!(parse_duration_ms("0.5"), Ok(500));
        assert_eq!(parse_duration_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(
            parse_duration_ms("soon").unwrap_err(),
            "cannot parse \"soon\" to a valid duration"
        );
        assert!(
            parse_duration_ms("1e300")
                .unwrap_err()
                .contains("overflows")
        );
    }

    #[test]
    fn selectors_carry_the_name_as_a_matcher() {
        let m = parse_selector("up{job=\"a\"}").unwrap();
        assert_eq!(m.matchers.len(), 2);
        assert!(
            m.matchers
                .iter()
                .any(|m| m.name == "__name__" && m.value == "up")
        );
        assert!(parse_selector("rate(up[5m])").is_err());
        assert!(parse_selector("up{").is_err());
    }

    #[test]
    fn label_names() {
        assert!(is_valid_label_name("__name__"));
        assert!(is_valid_label_name("gpu0"));
        assert!(!is_valid_label_name("0gpu"));
        assert!(!is_valid_label_name("a-b"));
        assert!(!is_valid_label_name(""));
    }
}
