//! promtool's rule unit-test file, decoded as strictly as promtool decodes it
//! (`yaml.UnmarshalStrict`: unknown keys are errors naming key and line).

use crate::duration::parse_duration;
use crate::yaml::{Node, YamlError};

#[derive(Debug, Clone, Default)]
pub struct TestFile {
    pub rule_files: Vec<String>,
    pub evaluation_interval_ms: Option<i64>,
    pub group_eval_order: Vec<String>,
    pub fuzzy_compare: bool,
    pub tests: Vec<TestGroup>,
}

#[derive(Debug, Clone, Default)]
pub struct TestGroup {
    pub interval_ms: Option<i64>,
    pub input_series: Vec<InputSeries>,
    pub alert_rule_tests: Vec<AlertTest>,
    pub promql_expr_tests: Vec<PromqlTest>,
    pub external_labels: Vec<(String, String)>,
    pub external_url: String,
    pub name: String,
    /// Absolute time of the first sample and of eval_time 0.
    pub start_ms: i64,
}

#[derive(Debug, Clone, Default)]
pub struct InputSeries {
    pub series: String,
    pub values: String,
}

#[derive(Debug, Clone, Default)]
pub struct AlertTest {
    pub eval_time_ms: i64,
    pub alertname: String,
    pub exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Clone, Default)]
pub struct ExpAlert {
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct PromqlTest {
    pub expr: String,
    pub eval_time_ms: i64,
    pub exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Clone, Default)]
pub struct ExpSample {
    pub labels: String,
    pub value: f64,
    /// Set when the expected sample is a native histogram (not supported).
    pub histogram: Option<String>,
}

type Res<T> = Result<T, Vec<YamlError>>;

fn one(e: YamlError) -> Vec<YamlError> {
    vec![e]
}

fn duration(n: &Node, what: &str) -> Result<i64, YamlError> {
    let s = n.string(what)?;
    parse_duration(&s).map_err(|e| YamlError::at(n, e))
}

fn pairs(n: &Node, what: &str) -> Res<Vec<(String, String)>> {
    Ok(n.string_map(what)
        .map_err(one)?
        .into_iter()
        .map(|(k, v)| (k.scalar().unwrap_or("").to_string(), v))
        .collect())
}

/// `start_timestamp`: RFC 3339 or Unix seconds.
fn start_timestamp(n: &Node) -> Result<i64, YamlError> {
    let s = n.string("start_timestamp")?;
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1000.0).round() as i64);
    }
    parse_rfc3339_ms(&s).ok_or_else(|| {
        YamlError::at(
            n,
            format!("cannot parse {s:?} as RFC3339 or Unix timestamp"),
        )
    })
}

/// Milliseconds since the epoch of an RFC 3339 time (`2024-01-01T00:00:00Z`,
/// fractional seconds and numeric offsets allowed).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut i = 19;
    let mut frac_ms = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = format!("{:0<3}", &s[start..i]);
        frac_ms = digits[..3].parse::<i64>().ok()?;
    }
    let offset_s = match &s[i..] {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (tz[1..3].parse::<i64>().ok()? * 3600 + tz[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil date (proleptic Gregorian).
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) - offset_s) * 1000 + frac_ms)
}

pub fn decode(root: &Node) -> Res<TestFile> {
    let f = root.fields(
        "main.unitTestFile",
        &[
            "rule_files",
            "evaluation_interval",
            "group_eval_order",
            "tests",
            "fuzzy_compare",
        ],
    )?;
    let mut tf = TestFile::default();
    if let Some(n) = f.get("rule_files") {
        for r in n.seq("rule_files").map_err(one)? {
            tf.rule_files.push(r.string("rule_files").map_err(one)?);
        }
    }
    if let Some(n) = f.get("evaluation_interval").filter(|n| !n.is_null()) {
        tf.evaluation_interval_ms = Some(duration(n, "evaluation_interval").map_err(one)?);
    }
    if let Some(n) = f.get("group_eval_order") {
        for g in n.seq("group_eval_order").map_err(one)? {
            tf.group_eval_order
                .push(g.string("group_eval_order").map_err(one)?);
        }
    }
    if let Some(n) = f.get("fuzzy_compare") {
        tf.fuzzy_compare = n.string("fuzzy_compare").map_err(one)? == "true";
    }
    let mut errs = Vec::new();
    if let Some(n) = f.get("tests") {
        for t in n.seq("tests").map_err(one)? {
            match decode_group(t) {
                Ok(g) => tf.tests.push(g),
                Err(mut e) => errs.append(&mut e),
            }
        }
    }
    if errs.is_empty() { Ok(tf) } else { Err(errs) }
}

fn decode_group(n: &Node) -> Res<TestGroup> {
    let f = n.fields(
        "main.testGroup",
        &[
            "interval",
            "input_series",
            "alert_rule_test",
            "promql_expr_test",
            "external_labels",
            "external_url",
            "name",
            "start_timestamp",
        ],
    )?;
    let mut g = TestGroup::default();
    if let Some(v) = f.get("interval").filter(|v| !v.is_null()) {
        let ms = duration(v, "interval").map_err(one)?;
        g.interval_ms = (ms != 0).then_some(ms);
    }
    if let Some(v) = f.get("start_timestamp").filter(|v| !v.is_null()) {
        g.start_ms = start_timestamp(v).map_err(one)?;
    }
    if let Some(v) = f.get("name") {
        g.name = v.string("name").map_err(one)?;
    }
    if let Some(v) = f.get("external_url") {
        g.external_url = v.string("external_url").map_err(one)?;
    }
    if let Some(v) = f.get("external_labels") {
        g.external_labels = pairs(v, "external_labels")?;
    }
    if let Some(v) = f.get("input_series") {
        for s in v.seq("input_series").map_err(one)? {
            let sf = s.fields("main.series", &["series", "values"])?;
            g.input_series.push(InputSeries {
                series: sf
                    .get("series")
                    .map(|x| x.string("series"))
                    .transpose()
                    .map_err(one)?
                    .unwrap_or_default(),
                values: sf
                    .get("values")
                    .map(|x| x.string("values"))
                    .transpose()
                    .map_err(one)?
                    .unwrap_or_default(),
            });
        }
    }
    if let Some(v) = f.get("alert_rule_test") {
        for a in v.seq("alert_rule_test").map_err(one)? {
            let af = a.fields(
                "main.alertTestCase",
                &["eval_time", "alertname", "exp_alerts"],
            )?;
            let mut t = AlertTest::default();
            if let Some(x) = af.get("eval_time") {
                t.eval_time_ms = duration(x, "eval_time").map_err(one)?;
            }
            if let Some(x) = af.get("alertname") {
                t.alertname = x.string("alertname").map_err(one)?;
            }
            if let Some(x) = af.get("exp_alerts") {
                for e in x.seq("exp_alerts").map_err(one)? {
                    let ef = e.fields("main.alert", &["exp_labels", "exp_annotations"])?;
                    let mut ea = ExpAlert::default();
                    if let Some(l) = ef.get("exp_labels") {
                        ea.labels = pairs(l, "exp_labels")?;
                    }
                    if let Some(l) = ef.get("exp_annotations") {
                        ea.annotations = pairs(l, "exp_annotations")?;
                    }
                    t.exp_alerts.push(ea);
                }
            }
            g.alert_rule_tests.push(t);
        }
    }
    if let Some(v) = f.get("promql_expr_test") {
        for p in v.seq("promql_expr_test").map_err(one)? {
            let pf = p.fields("main.promqlTestCase", &["expr", "eval_time", "exp_samples"])?;
            let mut t = PromqlTest::default();
            if let Some(x) = pf.get("expr") {
                t.expr = x.string("expr").map_err(one)?;
            }
            if let Some(x) = pf.get("eval_time") {
                t.eval_time_ms = duration(x, "eval_time").map_err(one)?;
            }
            if let Some(x) = pf.get("exp_samples") {
                for s in x.seq("exp_samples").map_err(one)? {
                    let sf = s.fields("main.sample", &["labels", "value", "histogram"])?;
                    t.exp_samples.push(ExpSample {
                        labels: sf
                            .get("labels")
                            .map(|x| x.string("labels"))
                            .transpose()
                            .map_err(one)?
                            .unwrap_or_default(),
                        value: sf
                            .get("value")
                            .map(|x| x.float("value"))
                            .transpose()
                            .map_err(one)?
                            .unwrap_or(0.0),
                        histogram: sf
                            .get("histogram")
                            .map(|x| x.string("histogram"))
                            .transpose()
                            .map_err(one)?,
                    });
                }
            }
            g.promql_expr_tests.push(t);
        }
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(
            parse_rfc3339_ms("2024-01-01T00:00:00Z"),
            Some(1_704_067_200_000)
        );
        assert_eq!(parse_rfc3339_ms("1970-01-01T01:00:00.5+01:00"), Some(500));
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn strict_decoding() {
        let n = crate::yaml::parse("tests:\n- interval: 1m\n  input_series:\n  - series: up\n    values: 0x10\n    typo: 1\n").unwrap();
        let e = decode(&n).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "line 6: field typo not found in type main.series"
        );
        let n = crate::yaml::parse("evaluation_interval: 30s\ntests:\n- start_timestamp: 1609459200\n  input_series:\n  - series: up\n    values: 0x10\n").unwrap();
        let f = decode(&n).unwrap();
        assert_eq!(f.evaluation_interval_ms, Some(30_000));
        assert_eq!(f.tests[0].start_ms, 1_609_459_200_000);
        assert_eq!(f.tests[0].input_series[0].values, "0x10");
    }
}
