//! The functions a Prometheus alert template can call: Go's builtins and Prometheus's
//! template function map, with the same output for the same input.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::Env;
use super::exec::Val;
use super::gofmt::sprintf;
use super::humanize::{
    float_to_ms, g4, go_duration_string, go_time_string, humanize, humanize_duration, humanize1024,
};

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
    fn go_builtins_and_prometheus_helpers() {
        assert_eq!(title("aa bb-cc"), "Aa Bb-Cc");
        assert_eq!(query_escape("up{job=\"a b\"}"), "up%7Bjob%3D%22a+b%22%7D");
        assert!(compare(&Val::Int(1), &Val::Float(1.0)).is_err());
        let env = Env::default();
        let v = call(
            "print",
            vec![
                Val::Int(1),
                Val::Int(2),
                Val::Str("a".into()),
                Val::Float(3.5),
            ],
            &env,
        );
        assert_eq!(v, Ok(Val::Str("1 2a3.5".into())));
        let v = call("stripPort", vec![Val::Str("[::1]:9090".into())], &env);
        assert_eq!(v, Ok(Val::Str("::1".into())));
    }
}
