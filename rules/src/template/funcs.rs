//! The functions a Prometheus alert template can call: Go's builtins and Prometheus's
//! template function map, with the same output for the same input.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::Env;
use super::exec::Val;
use super::gofmt::{format_float, sprintf};

/// Every function name the parser accepts.
pub const NAMES: &[&str] = &[
    // Go builtins.
    "and",
    "or",
    "not",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "html",
    "js",
    "urlquery",
    // Prometheus.
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "sortByLabel",
    "reReplaceAll",
    "match",
    "safeHtml",
    "title",
    "toUpper",
    "toLower",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toTime",
    "toDuration",
    "parseDuration",
    "pathPrefix",
    "externalURL",
    "graphLink",
    "tableLink",
    "stripPort",
    "stripDomain",
    "now",
];

pub fn exists(name: &str) -> bool {
    NAMES.contains(&name)
}

fn want(args: &[Val], n: usize) -> Result<(), String> {
    if args.len() != n {
        return Err(format!("wrong number of args: got {} want {n}", args.len()));
    }
    Ok(())
}

fn string_arg(v: &Val) -> Result<String, String> {
    match v {
        Val::Str(s) => Ok(s.clone()),
        other => Err(format!(
            "wrong type for value; expected string; got {}",
            other.type_name()
        )),
    }
}

/// Prometheus's convertToFloat.
pub fn to_float(v: &Val) -> Result<f64, String> {
    match v {
        Val::Float(f) => Ok(*f),
        Val::Int(i) => Ok(*i as f64),
        Val::Str(s) => go_parse_float(s).ok_or_else(|| {
            format!(
                "strconv.ParseFloat: parsing {}: invalid syntax",
                super::gofmt::quote(s)
            )
        }),
        other => Err(format!("can't convert {} to float", other.type_name())),
    }
}

fn go_parse_float(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().trim_start_matches(['+', '-']) {
        "inf" | "infinity" => Some(if s.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }),
        "nan" => Some(f64::NAN),
        _ => s.parse::<f64>().ok().filter(|_| !s.is_empty()),
    }
}

fn g4(v: f64) -> String {
    format_float(v, 'g', 4)
}

pub fn humanize(mut v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return g4(v);
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
        return format!("{}{prefix}", g4(v));
    }
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}", g4(v))
}

pub fn humanize1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return g4(v);
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", g4(v))
}

pub fn humanize_duration(mut v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return g4(v);
    }
    if v == 0.0 {
        return format!("{}s", g4(v));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        let d = v as i64;
        let (s, m, h, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        if days != 0 {
            return format!("{sign}{days}d {h}h {m}m {s}s");
        }
        if h != 0 {
            return format!("{sign}{h}h {m}m {s}s");
        }
        if m != 0 {
            return format!("{sign}{m}m {s}s");
        }
        return format!("{sign}{}s", g4(v));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", g4(v))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Go's `time.Time.String()` of a UTC time given in milliseconds.
pub fn go_time_string(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let frac = ms.rem_euclid(1000);
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut s = format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if frac != 0 {
        let f = format!("{frac:03}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push_str(" +0000 UTC");
    s
}

fn float_to_ms(v: f64) -> Result<i64, String> {
    let ns = v * 1e9;
    if ns > i64::MAX as f64 || ns < i64::MIN as f64 {
        return Err(format!(
            "{} cannot be represented as a nanoseconds timestamp since it overflows int64",
            format_float(v, 'g', -1)
        ));
    }
    Ok((ns as i64).div_euclid(1_000_000))
}

/// Go's `time.Duration.String()`.
pub fn go_duration_string(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let sign = if neg { "-" } else { "" };
    let frac = |v: u64, div: u64| -> String {
        let whole = v / div;
        let rest = v % div;
        if rest == 0 {
            return whole.to_string();
        }
        let width = div.to_string().len() - 1;
        let f = format!("{rest:0width$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u, 1_000));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u, 1_000_000));
    }
    let h = u / 3_600_000_000_000;
    let m = (u / 60_000_000_000) % 60;
    let s = frac(u % 60_000_000_000, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's eq/lt family: same basic kind required.
fn compare(a: &Val, b: &Val) -> Result<std::cmp::Ordering, String> {
    use std::cmp::Ordering;
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => Ok(x.cmp(y)),
        (Val::Float(x), Val::Float(y)) => Ok(x.partial_cmp(y).unwrap_or(Ordering::Less)),
        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Ok(x.cmp(y)),
        _ => Err("incompatible types for comparison".into()),
    }
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_start = true;
    for c in s.chars() {
        if at_start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_start = !(c.is_alphanumeric() || c == '\'' || c == '_');
    }
    out
}

fn sample(v: &Val) -> Result<Rc<super::QuerySample>, String> {
    match v {
        Val::Sample(s) => Ok(s.clone()),
        other => Err(format!(
            "wrong type for value; expected *template.sample; got {}",
            other.type_name()
        )),
    }
}

pub fn call(name: &str, args: Vec<Val>, env: &Env<'_>) -> Result<Val, String> {
    let a = &args;
    let s = |v: String| Ok(Val::Str(v));
    match name {
        "and" => Ok(a
            .iter()
            .find(|v| !v.truth())
            .or(a.last())
            .cloned()
            .unwrap_or(Val::Nil)),
        "or" => Ok(a
            .iter()
            .find(|v| v.truth())
            .or(a.last())
            .cloned()
            .unwrap_or(Val::Nil)),
        "not" => {
            want(a, 1)?;
            Ok(Val::Bool(!a[0].truth()))
        }
        "len" => {
            want(a, 1)?;
            match &a[0] {
                Val::Str(x) => Ok(Val::Int(x.len() as i64)),
                Val::Map(m) => Ok(Val::Int(m.len() as i64)),
                Val::Samples(x) => Ok(Val::Int(x.len() as i64)),
                other => Err(format!("len of type {}", other.type_name())),
            }
        }
        "index" => {
            want(a, 2)?;
            match (&a[0], &a[1]) {
                (Val::Map(m), Val::Str(k)) => s(m.get(k).cloned().unwrap_or_default()),
                (Val::Samples(v), Val::Int(i)) => v
                    .get(*i as usize)
                    .map(|x| Val::Sample(Rc::new(x.clone())))
                    .ok_or_else(|| format!("index out of range: {i}")),
                (x, _) => Err(format!("can't index item of type {}", x.type_name())),
            }
        }
        "print" => {
            let mut out = String::new();
            for (i, v) in a.iter().enumerate() {
                let is_str = matches!(v, Val::Str(_));
                if i > 0 && !is_str && !matches!(a[i - 1], Val::Str(_)) {
                    out.push(' ');
                }
                out.push_str(&v.to_go_string());
            }
            s(out)
        }
        "println" => s(format!(
            "{}\n",
            a.iter()
                .map(Val::to_go_string)
                .collect::<Vec<_>>()
                .join(" ")
        )),
        "printf" => {
            let fmt = string_arg(a.first().ok_or("wrong number of args for printf")?)?;
            s(sprintf(&fmt, &a[1..]))
        }
        "eq" => {
            if a.len() < 2 {
                return Err("missing argument for comparison".into());
            }
            for b in &a[1..] {
                if compare(&a[0], b)? == std::cmp::Ordering::Equal {
                    return Ok(Val::Bool(true));
                }
            }
            Ok(Val::Bool(false))
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            want(a, 2)?;
            let o = compare(&a[0], &a[1])?;
            use std::cmp::Ordering::*;
            let r = match name {
                "ne" => o != Equal,
                "lt" => o == Less,
                "le" => o != Greater,
                "gt" => o == Greater,
                _ => o != Less,
            };
            Ok(Val::Bool(r))
        }
        "html" => {
            let t: String = a.iter().map(Val::to_go_string).collect();
            s(t.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&#34;")
                .replace('\'', "&#39;"))
        }
        "js" => {
            let t: String = a.iter().map(Val::to_go_string).collect();
            s(t.replace('\\', "\\\\")
                .replace('\'', "\\'")
                .replace('"', "\\\"")
                .replace('<', "\\u003C")
                .replace('>', "\\u003E"))
        }
        "urlquery" => s(query_escape(
            &a.iter().map(Val::to_go_string).collect::<String>(),
        )),
        "query" => {
            want(a, 1)?;
            let q = string_arg(&a[0])?;
            let f = env
                .query
                .ok_or("query is not available when checking templates without a store")?;
            Ok(Val::Samples(Rc::new(f(&q)?)))
        }
        "first" => {
            want(a, 1)?;
            match &a[0] {
                Val::Samples(v) => v
                    .first()
                    .map(|x| Val::Sample(Rc::new(x.clone())))
                    .ok_or_else(|| "first() called on vector with no elements".into()),
                other => Err(format!(
                    "wrong type for value; expected template.queryResult; got {}",
                    other.type_name()
                )),
            }
        }
        "label" => {
            want(a, 2)?;
            let l = string_arg(&a[0])?;
            s(sample(&a[1])?.labels.get(&l).cloned().unwrap_or_default())
        }
        "value" => {
            want(a, 1)?;
            Ok(Val::Float(sample(&a[0])?.value))
        }
        "strvalue" => {
            want(a, 1)?;
            s(sample(&a[0])?
                .labels
                .get("__value__")
                .cloned()
                .unwrap_or_default())
        }
        "sortByLabel" => {
            want(a, 2)?;
            let l = string_arg(&a[0])?;
            let Val::Samples(v) = &a[1] else {
                return Err("sortByLabel needs a query result".into());
            };
            let mut v = (**v).clone();
            v.sort_by(|x, y| x.labels.get(&l).cmp(&y.labels.get(&l)));
            Ok(Val::Samples(Rc::new(v)))
        }
        "reReplaceAll" => {
            want(a, 3)?;
            let re = regex::Regex::new(&string_arg(&a[0])?).map_err(|e| e.to_string())?;
            s(
                re.replace_all(&string_arg(&a[2])?, string_arg(&a[1])?.as_str())
                    .into_owned(),
            )
        }
        "match" => {
            want(a, 2)?;
            let re = regex::Regex::new(&string_arg(&a[0])?).map_err(|e| e.to_string())?;
            Ok(Val::Bool(re.is_match(&string_arg(&a[1])?)))
        }
        "safeHtml" => {
            want(a, 1)?;
            s(string_arg(&a[0])?)
        }
        "title" => {
            want(a, 1)?;
            s(title(&string_arg(&a[0])?))
        }
        "toUpper" => {
            want(a, 1)?;
            s(string_arg(&a[0])?.to_uppercase())
        }
        "toLower" => {
            want(a, 1)?;
            s(string_arg(&a[0])?.to_lowercase())
        }
        "humanize" => {
            want(a, 1)?;
            s(humanize(to_float(&a[0])?))
        }
        "humanize1024" => {
            want(a, 1)?;
            s(humanize1024(to_float(&a[0])?))
        }
        "humanizeDuration" => {
            want(a, 1)?;
            s(humanize_duration(to_float(&a[0])?))
        }
        "humanizePercentage" => {
            want(a, 1)?;
            s(format!("{}%", g4(to_float(&a[0])? * 100.0)))
        }
        "humanizeTimestamp" | "toTime" => {
            want(a, 1)?;
            let v = to_float(&a[0])?;
            if v.is_nan() || v.is_infinite() {
                if name == "toTime" {
                    return Err("value is NaN or Inf".into());
                }
                return s(g4(v));
            }
            s(go_time_string(float_to_ms(v)?))
        }
        "toDuration" => {
            want(a, 1)?;
            s(go_duration_string((to_float(&a[0])? * 1e9) as i64))
        }
        "parseDuration" => {
            want(a, 1)?;
            let ms = crate::duration::parse_duration(&string_arg(&a[0])?)?;
            Ok(Val::Float(ms as f64 / 1000.0))
        }
        "pathPrefix" => {
            let url = env.external_url;
            let path = url
                .split_once("://")
                .map_or("", |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]));
            s(path.to_string())
        }
        "externalURL" => s(env.external_url.to_string()),
        "graphLink" | "tableLink" => {
            want(a, 1)?;
            let tab = if name == "graphLink" { 0 } else { 1 };
            s(format!(
                "/graph?g0.expr={}&g0.tab={tab}",
                query_escape(&string_arg(&a[0])?)
            ))
        }
        "stripPort" => {
            want(a, 1)?;
            let h = string_arg(&a[0])?;
            if let Some((host, _)) = h.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
                return s(host.to_string());
            }
            match h.rsplit_once(':') {
                Some((host, _)) if !host.contains(':') => s(host.to_string()),
                _ => s(h),
            }
        }
        "stripDomain" => {
            want(a, 1)?;
            let h = string_arg(&a[0])?;
            let (host, port) = match h.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host.to_string(), format!(":{port}")),
                _ => (h.clone(), String::new()),
            };
            if host.parse::<std::net::IpAddr>().is_ok() {
                return s(h);
            }
            s(format!("{}{port}", host.split('.').next().unwrap_or("")))
        }
        "now" => Ok(Val::Float(env.t_ms as f64 / 1000.0)),
        _ => Err(format!("function {name:?} not defined")),
    }
}

/// Labels as the template's `map[string]string`.
pub fn label_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Val {
    Val::Map(Rc::new(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humanizers_match_prometheus() {
        assert_eq!(humanize(0.0), "0");
        assert_eq!(humanize(1234.0), "1.234k");
        assert_eq!(humanize(12345678.0), "12.35M");
        assert_eq!(humanize(0.0012), "1.2m");
        assert_eq!(humanize(-1500.0), "-1.5k");
        assert_eq!(humanize1024(1024.0), "1ki");
        assert_eq!(humanize1024(1_073_741_824.0), "1Gi");
        assert_eq!(humanize1024(0.5), "0.5");
        assert_eq!(humanize_duration(0.0), "0s");
        assert_eq!(humanize_duration(1.0), "1s");
        assert_eq!(humanize_duration(60.0), "1m 0s");
        assert_eq!(humanize_duration(3600.0), "1h 0m 0s");
        assert_eq!(humanize_duration(90061.0), "1d 1h 1m 1s");
        assert_eq!(humanize_duration(0.0012), "1.2ms");
        assert_eq!(humanize_duration(-61.0), "-1m 1s");
        assert_eq!(
            go_time_string(1_435_065_584_128),
            "2015-06-23 13:19:44.128 +0000 UTC"
        );
        assert_eq!(go_time_string(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(go_duration_string(90_000_000_000), "1m30s");
        assert_eq!(go_duration_string(1_500_000), "1.5ms");
        assert_eq!(title("aa bb-cc"), "Aa Bb-Cc");
    }
}
