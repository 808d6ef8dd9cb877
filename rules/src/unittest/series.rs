//! The series notation of promtool tests (and promqltest's `load`): a metric written
//! `name{label="value", ...}` and values in expanding notation — `1 2 3`, `1x3`
//! (four 1s), `1+2x3` (1 3 5 7), `-2+4x3`, `_` and `_x3` (missing samples), `stale`
//! (a staleness marker), `Inf`, `NaN`. Native-histogram values (`{{...}}`) are
//! recognised so the caller can skip them.

use crate::promql::{Labels, LabelsBuilder, METRIC_NAME, stale_nan};

/// One expanded value: `None` is a missing sample.
pub type SeqValue = Option<f64>;

/// Why a series or its values did not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SeriesError(pub String);

/// Parses `name{a="b"}`, `{__name__="x"}` or `name` into a label set.
pub fn parse_metric(s: &str) -> Result<Labels, SeriesError> {
    let src = s.trim();
    let err = |pos: usize, msg: &str| SeriesError(format!("1:{}: parse error: {msg}", pos + 1));
    let b = src.as_bytes();
    let mut i = 0;
    let mut lb = LabelsBuilder::new();
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
        i += 1;
    }
    if i > 0 {
        if b[0].is_ascii_digit() {
            return Err(err(0, "unexpected number"));
        }
        lb.set(METRIC_NAME, &src[..i]);
    }
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if i == b.len() {
        if src.is_empty() {
            return Ok(Labels::empty());
        }
        return Ok(lb.build());
    }
    if b[i] != b'{' {
        return Err(err(i, &format!("unexpected character: {:?}", b[i] as char)));
    }
    i += 1;
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            return Err(err(i, "unexpected end of input inside braces"));
        }
        if b[i] == b'}' {
            i += 1;
            break;
        }
        let start = i;
        if !(b[i].is_ascii_alphabetic() || b[i] == b'_') {
            return Err(err(
                i,
                &format!("unexpected character inside braces: {:?}", b[i] as char),
            ));
        }
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let name = &src[start..i];
        skip_ws(&mut i);
        if i >= b.len() || b[i] != b'=' {
            return Err(err(i, "expected '=' after label name"));
        }
        i += 1;
        skip_ws(&mut i);
        let (value, used) =
            parse_quoted(&src[i..]).ok_or_else(|| err(i, "expected a quoted label value"))?;
        i += used;
        lb.set(name, &value);
        skip_ws(&mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            Some(c) => {
                return Err(err(
                    i,
                    &format!("unexpected character inside braces: {:?}", *c as char),
                ));
            }
            None => return Err(err(i, "unexpected end of input inside braces")),
        }
    }
    skip_ws(&mut i);
    if i != b.len() {
        return Err(err(i, "unexpected characters after the label set"));
    }
    Ok(lb.build())
}

/// A Go-style quoted string at the start of `s`; returns it and the bytes used.
fn parse_quoted(s: &str) -> Option<(String, usize)> {
    let q = s.chars().next()?;
    if !matches!(q, '"' | '\'' | '`') {
        return None;
    }
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        if c == q {
            return Some((out, i + 1));
        }
        if c == '\\' && q != '`' {
            let (_, e) = chars.next()?;
            out.push(match e {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                other => other,
            });
        } else {
            out.push(c);
        }
    }
    None
}

fn parse_number(t: &str) -> Option<f64> {
    let (sign, rest) = match t.as_bytes().first()? {
        b'-' => (-1.0, &t[1..]),
        b'+' => (1.0, &t[1..]),
        _ => (1.0, t),
    };
    match rest.to_ascii_lowercase().as_str() {
        "inf" => return Some(sign * f64::INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    if rest.is_empty() || !rest.as_bytes()[0].is_ascii_digit() && rest.as_bytes()[0] != b'.' {
        return None;
    }
    rest.parse::<f64>().ok().map(|v| sign * v)
}

/// True when the values are native histograms (`{{...}}`), which are not supported.
pub fn is_histogram_values(values: &str) -> bool {
    values.contains("{{")
}

/// Expands a values string; sample i belongs at `start + i * interval`.
pub fn expand_values(values: &str) -> Result<Vec<SeqValue>, SeriesError> {
    let mut out = Vec::new();
    for item in values.split_whitespace() {
        let bad = || {
            SeriesError(format!(
                "parse error: invalid value {item:?} in series values"
            ))
        };
        if item == "_" {
            out.push(None);
            continue;
        }
        if item == "stale" {
            out.push(Some(stale_nan()));
            continue;
        }
        let Some((head, times)) = item.split_once('x') else {
            out.push(Some(parse_number(item).ok_or_else(bad)?));
            continue;
        };
        let n: u64 = times.parse().map_err(|_| bad())?;
        if head == "_" {
            out.extend(std::iter::repeat_n(None, n as usize));
            continue;
        }
        // `start+deltaxN` or `start-deltaxN`; the sign split must skip a leading sign
        // and an exponent's sign.
        let split = head
            .char_indices()
            .skip(1)
            .find(|&(i, c)| {
                (c == '+' || c == '-') && !matches!(head.as_bytes()[i - 1], b'e' | b'E')
            })
            .map(|(i, _)| i);
        let (start, delta) = match split {
            Some(i) => (
                parse_number(&head[..i]).ok_or_else(bad)?,
                parse_number(&head[i..]).ok_or_else(bad)?,
            ),
            None => (parse_number(head).ok_or_else(bad)?, 0.0),
        };
        let mut v = start;
        for _ in 0..=n {
            out.push(Some(v));
            v += delta;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::is_stale_nan;

    fn vals(s: &str) -> Vec<Option<f64>> {
        expand_values(s).unwrap()
    }

    #[test]
    fn expanding_notation() {
        assert_eq!(
            vals("1+1x3"),
            vec![Some(1.0), Some(2.0), Some(3.0), Some(4.0)]
        );
        assert_eq!(
            vals("-2+4x3"),
            vec![Some(-2.0), Some(2.0), Some(6.0), Some(10.0)]
        );
        assert_eq!(vals("1x2"), vec![Some(1.0); 3]);
        assert_eq!(vals("0x10").len(), 11);
        assert_eq!(vals("10-1x2"), vec![Some(10.0), Some(9.0), Some(8.0)]);
        assert_eq!(
            vals("0 _ _x2 3"),
            vec![Some(0.0), None, None, None, Some(3.0)]
        );
        assert_eq!(
            vals("1e3 -Inf"),
            vec![Some(1000.0), Some(f64::NEG_INFINITY)]
        );
        let s = vals("0 stale");
        assert!(is_stale_nan(s[1].unwrap()));
        assert!(expand_values("1+x").is_err());
        assert!(is_histogram_values("{{schema:1 sum:2}}x2"));
    }

    #[test]
    fn metrics() {
        let l = parse_metric("up{job=\"prometheus\", instance='localhost:9090'}").unwrap();
        assert_eq!(l.get("__name__"), Some("up"));
        assert_eq!(l.get("instance"), Some("localhost:9090"));
        assert_eq!(
            parse_metric("{alertname=\"A\",alertstate=\"firing\"}")
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            parse_metric("job:test:count_over_time1m{job=\"test\"}")
                .unwrap()
                .len(),
            2
        );
        assert!(parse_metric("").unwrap().is_empty());
        assert!(parse_metric("up{job=\"prometheus\", instance=\"localhost:9090\"").is_err());
        assert!(parse_metric("up{0=\"x\"}").is_err());
    }
}
