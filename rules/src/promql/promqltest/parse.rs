//! Parser for the promqltest scripting language (load / clear / eval blocks, the
//! expanding series notation and `expect` lines).

use super::super::{Labels, LabelsBuilder, stale_nan};

/// One point of a series specification.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Point {
    Value(f64),
    Missing,
    /// A native-histogram sample, which this engine does not store.
    Histogram,
}

/// A series line: labels and points, or a bare scalar.
#[derive(Debug, Clone)]
pub(crate) struct SeriesSpec {
    pub labels: Labels,
    pub points: Vec<Point>,
    /// The line holds at least one native-histogram sample.
    pub histogram: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MatchKind {
    Any,
    Msg(String),
    Regex(String),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Expectations {
    pub fail: Option<MatchKind>,
    pub warn: Vec<MatchKind>,
    pub info: Vec<MatchKind>,
    pub no_warn: bool,
    pub no_info: bool,
    pub ordered: bool,
    pub string: Option<String>,
    /// `expect range vector from A to B step C`, in ms.
    pub range_vector: Option<(i64, i64, i64)>,
}

#[derive(Debug, Clone)]
pub(crate) enum EvalKind {
    Instant {
        t_ms: i64,
    },
    Range {
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct EvalCmd {
    pub line: usize,
    pub kind: EvalKind,
    pub query: String,
    pub expect: Expectations,
    /// Expected scalar, when the query yields one.
    pub scalar: Option<f64>,
    pub series: Vec<SeriesSpec>,
    /// A result line that could not be parsed; the case fails with this message.
    pub bad_line: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum Command {
    Load {
        interval_ms: i64,
        series: Vec<SeriesSpec>,
        nhcb: bool,
    },
    Clear,
    Eval(Box<EvalCmd>),
    /// A line the parser did not understand.
    Invalid {
        line: usize,
        msg: String,
    },
}

/// Parses a duration (`5m`, `1h30m`) or a number of seconds; negative allowed.
pub(crate) fn parse_time_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('-') {
        return parse_time_ms(rest).map(|v| -v);
    }
    if s == "0" {
        return Ok(0);
    }
    if let Ok(f) = s.parse::<f64>() {
        return Ok((f * 1000.0).round() as i64);
    }
    match promql_parser::util::parse_duration(s) {
        Ok(d) => Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        // `0m`, `0s`: the parser refuses zero durations, the test language does not.
        Err(_) if s.bytes().all(|b| b == b'0' || b.is_ascii_alphabetic()) && s.starts_with('0') => {
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

fn parse_number(s: &str) -> Option<f64> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => s.parse::<f64>().ok(),
    }
}

/// Expands one token of the series notation.
fn expand(tok: &str, out: &mut Vec<Point>) -> Result<(), String> {
    if tok == "_" {
        out.push(Point::Missing);
        return Ok(());
    }
    if tok == "stale" {
        out.push(Point::Value(stale_nan()));
        return Ok(());
    }
    if let Some(n) = tok.strip_prefix("_x") {
        let n: usize = n.parse().map_err(|_| format!("bad repetition {tok:?}"))?;
        out.extend(std::iter::repeat_n(Point::Missing, n));
        return Ok(());
    }
    if let Some(v) = parse_number(tok) {
        out.push(Point::Value(v));
        return Ok(());
    }
    let Some(xpos) = tok.rfind('x') else {
        return Err(format!("bad value {tok:?}"));
    };
    let (head, count) = (&tok[..xpos], &tok[xpos + 1..]);
    let n: i64 = count
        .parse()
        .map_err(|_| format!("bad repetition count in {tok:?}"))?;
    // The operator is the last + or - that does not start the token or an exponent.
    let bytes = head.as_bytes();
    let op = (1..bytes.len())
        .rev()
        .find(|&i| (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
    let (init, step) = match op {
        Some(i) => {
            let init = parse_number(&head[..i]).ok_or_else(|| format!("bad value {tok:?}"))?;
            let incr = parse_number(&head[i + 1..]).ok_or_else(|| format!("bad value {tok:?}"))?;
            (init, if bytes[i] == b'-' { -incr } else { incr })
        }
        None => (
            parse_number(head).ok_or_else(|| format!("bad value {tok:?}"))?,
            0.0,
        ),
    };
    let mut cur = init;
    out.push(Point::Value(cur));
    for _ in 0..n {
        cur += step;
        out.push(Point::Value(cur));
    }
    Ok(())
}

/// Reads a quoted string starting at `s[0]` (`"`, `'` or backtick); returns the value
/// and the rest.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let q = s.chars().next().ok_or("expected a quoted string")?;
    let mut out = String::new();
    let mut chars = s[q.len_utf8()..].char_indices();
    while let Some((i, c)) = chars.next() {
        if c == q {
            return Ok((out, &s[q.len_utf8() + i + c.len_utf8()..]));
        }
        if c == '\\' && q != '`' {
            let (_, e) = chars.next().ok_or("unterminated escape")?;
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                'x' => {
                    let h: String = (0..2)
                        .filter_map(|_| chars.next().map(|(_, c)| c))
                        .collect();
                    let b = u8::from_str_radix(&h, 16).map_err(|_| "bad \\x escape")?;
                    out.push(char::from(b));
                }
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        } else {
            out.push(c);
        }
    }
    Err("unterminated string".into())
}

/// Splits `metric{a="b"} rest` into labels and the rest of the line.
pub(crate) fn parse_labels(line: &str) -> Result<(Labels, &str), String> {
    let line = line.trim_start();
    let mut b = LabelsBuilder::new();
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    if name_end > 0 {
        b.set(super::super::METRIC_NAME, &line[..name_end]);
    }
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        rest = r.trim_start();
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (name, r) = if rest.starts_with('"') {
                quoted(rest)?
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '.'))
                    .ok_or("unterminated label set")?;
                (rest[..end].to_string(), &rest[end..])
            };
            if name.is_empty() {
                return Err(format!("bad label set in {line:?}"));
            }
            let r = r.trim_start();
            // A bare quoted string is the metric name in the UTF-8 syntax.
            if !r.starts_with('=') {
                b.set(super::super::METRIC_NAME, &name);
                rest = r.strip_prefix(',').unwrap_or(r).trim_start();
                continue;
            }
            let r = r
                .strip_prefix('=')
                .ok_or_else(|| format!("expected '=' in {line:?}"))?;
            let (value, r) = quoted(r.trim_start())?;
            b.set(&name, &value);
            rest = r.trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r.trim_start();
            }
        }
    }
    Ok((b.build(), rest))
}

/// Parses a series line of a load or an expected result.
pub(crate) fn parse_series(line: &str) -> Result<SeriesSpec, String> {
    let (labels, rest) = parse_labels(line)?;
    let mut points = Vec::new();
    for tok in tokens(rest)? {
        if tok.contains("{{") {
            // `{{...}}`, `{{...}}xN` or `{{...}}+{{...}}xN`: only the count matters.
            let after = &tok[tok.rfind("}}").map_or(0, |i| i + 2)..];
            let n = after
                .strip_prefix('x')
                .and_then(|c| c.parse::<usize>().ok())
                .unwrap_or(0);
            points.extend(std::iter::repeat_n(Point::Histogram, n + 1));
        } else {
            expand(&tok, &mut points)?;
        }
    }
    let histogram = points.contains(&Point::Histogram);
    Ok(SeriesSpec {
        labels,
        points,
        histogram,
    })
}

/// Splits points on whitespace, keeping each `{{...}}` with its suffix as one token.
fn tokens(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '{' && chars.peek() == Some(&'{') {
            chars.next();
            depth += 1;
            cur.push_str("{{");
        } else if c == '}' && depth > 0 && chars.peek() == Some(&'}') {
            chars.next();
            depth -= 1;
            cur.push_str("}}");
        } else if c.is_whitespace() && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if depth > 0 {
        return Err("unterminated {{ in series".into());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn parse_match(rest: &str) -> Result<MatchKind, String> {
    let rest = rest.trim();
    if rest.is_empty() {
        return Ok(MatchKind::Any);
    }
    let unquote = |s: &str| -> String {
        let s = s.trim();
        if s.len() >= 2 && (s.starts_with('"') && s.ends_with('"')) {
            s[1..s.len() - 1].to_string()
        } else {
            s.to_string()
        }
    };
    if let Some(m) = rest.strip_prefix("msg:") {
        return Ok(MatchKind::Msg(unquote(m)));
    }
    if let Some(m) = rest.strip_prefix("regex:") {
        return Ok(MatchKind::Regex(unquote(m)));
    }
    Err(format!("unknown expect modifier {rest:?}"))
}

fn parse_expect(line: &str, e: &mut Expectations) -> Result<(), String> {
    let rest = line.trim().strip_prefix("expect").unwrap_or("").trim();
    let (word, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    match word {
        "fail" => e.fail = Some(parse_match(tail)?),
        "warn" => e.warn.push(parse_match(tail)?),
        "info" => e.info.push(parse_match(tail)?),
        "no_warn" => e.no_warn = true,
        "no_info" => e.no_info = true,
        "ordered" => e.ordered = true,
        "string" => {
            let t = tail.trim();
            let (s, _) = quoted(t)?;
            e.string = Some(s);
        }
        "range" => {
            let t = tail
                .trim()
                .strip_prefix("vector")
                .ok_or("expected 'range vector'")?
                .trim();
            let t = t.strip_prefix("from").ok_or("expected 'from'")?;
            let (a, t) = t.split_once(" to ").ok_or("expected 'to'")?;
            let (b, c) = t.split_once(" step ").ok_or("expected 'step'")?;
            e.range_vector = Some((parse_time_ms(a)?, parse_time_ms(b)?, parse_time_ms(c)?));
        }
        other => return Err(format!("unknown expectation {other:?}")),
    }
    Ok(())
}

fn parse_eval_header(line_no: usize, line: &str) -> Result<EvalCmd, String> {
    let (cmd, rest) = line
        .split_once(char::is_whitespace)
        .ok_or("incomplete eval")?;
    let mut expect = Expectations::default();
    match cmd {
        "eval" => {}
        "eval_fail" => expect.fail = Some(MatchKind::Any),
        "eval_warn" => expect.warn.push(MatchKind::Any),
        "eval_info" => expect.info.push(MatchKind::Any),
        "eval_ordered" => expect.ordered = true,
        other => return Err(format!("unknown command {other:?}")),
    }
    let rest = rest.trim_start();
    let (kind, query) = if let Some(r) = rest.strip_prefix("instant") {
        let r = r
            .trim_start()
            .strip_prefix("at")
            .ok_or("expected 'at'")?
            .trim_start();
        let (t, q) = r.split_once(char::is_whitespace).ok_or("missing query")?;
        (
            EvalKind::Instant {
                t_ms: parse_time_ms(t)?,
            },
            q,
        )
    } else if let Some(r) = rest.strip_prefix("range") {
        let r = r
            .trim_start()
            .strip_prefix("from")
            .ok_or("expected 'from'")?
            .trim_start();
        let (s, r) = r.split_once(" to ").ok_or("expected 'to'")?;
        let (e, r) = r
            .trim_start()
            .split_once(" step ")
            .ok_or("expected 'step'")?;
        let (st, q) = r
            .trim_start()
            .split_once(char::is_whitespace)
            .ok_or("missing query")?;
        (
            EvalKind::Range {
                start_ms: parse_time_ms(s)?,
                end_ms: parse_time_ms(e)?,
                step_ms: parse_time_ms(st)?,
            },
            q,
        )
    } else {
        return Err(format!("bad eval line {line:?}"));
    };
    Ok(EvalCmd {
        line: line_no,
        kind,
        query: query.trim().to_string(),
        expect,
        scalar: None,
        series: Vec::new(),
        bad_line: None,
    })
}

/// Parses a whole script into commands.
pub(crate) fn parse_script(text: &str) -> Vec<Command> {
    let lines: Vec<&str> = text.lines().collect();
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let line = lines[i].trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The block body: following lines until a blank line or the next command.
        let start = i;
        while i < lines.len() {
            let l = lines[i].trim();
            if l.is_empty() || is_command(l) {
                break;
            }
            i += 1;
        }
        let body: Vec<(usize, &str)> = (start..i)
            .map(|j| (j + 1, lines[j].trim()))
            .filter(|(_, l)| !l.starts_with('#'))
            .collect();
        if line == "clear" {
            cmds.push(Command::Clear);
        } else if let Some(r) = line.strip_prefix("load") {
            let (nhcb, r) = match r.strip_prefix("_with_nhcb") {
                Some(r) => (true, r),
                None => (false, r),
            };
            match parse_time_ms(r) {
                Ok(interval_ms) => {
                    let mut series = Vec::new();
                    for (n, l) in body {
                        match parse_series(l) {
                            Ok(s) => series.push(s),
                            Err(msg) => cmds.push(Command::Invalid { line: n, msg }),
                        }
                    }
                    cmds.push(Command::Load {
                        interval_ms,
                        series,
                        nhcb,
                    });
                }
                Err(msg) => cmds.push(Command::Invalid { line: line_no, msg }),
            }
        } else if line.starts_with("eval") {
            match parse_eval_header(line_no, line) {
                Ok(mut ev) => {
                    for (_, l) in body {
                        if l.starts_with("expect ") || l == "expect" {
                            if let Err(msg) = parse_expect(l, &mut ev.expect) {
                                ev.bad_line = Some(msg);
                            }
                        } else if let Some(m) = l.strip_prefix("expected_fail_message") {
                            ev.expect.fail = Some(MatchKind::Msg(m.trim().to_string()));
                        } else if let Some(m) = l.strip_prefix("expected_fail_regexp") {
                            ev.expect.fail = Some(MatchKind::Regex(m.trim().to_string()));
                        } else if let Some(v) = parse_number(l) {
                            ev.scalar = Some(v);
                        } else {
                            match parse_series(l) {
                                Ok(s) => ev.series.push(s),
                                Err(msg) => ev.bad_line = Some(msg),
                            }
                        }
                    }
                    cmds.push(Command::Eval(Box::new(ev)));
                }
                Err(msg) => cmds.push(Command::Invalid { line: line_no, msg }),
            }
        } else {
            cmds.push(Command::Invalid {
                line: line_no,
                msg: format!("unknown command {line:?}"),
            });
        }
    }
    cmds
}

fn is_command(l: &str) -> bool {
    l == "clear"
        || l.starts_with("load ")
        || l.starts_with("load_with_nhcb ")
        || l.starts_with("eval ")
        || l.starts_with("eval_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(s: &str) -> Vec<Point> {
        parse_series(s).unwrap().points
    }

    #[test]
    fn expanding_notation() {
        use Point::*;
        assert_eq!(vals("m 1+1x2"), vec![Value(1.0), Value(2.0), Value(3.0)]);
        assert_eq!(
            vals("m -2-1x1 _ _x2"),
            vec![Value(-2.0), Value(-3.0), Missing, Missing, Missing]
        );
        assert_eq!(vals("m 1e3+1e3x1"), vec![Value(1000.0), Value(2000.0)]);
        assert_eq!(vals("m 5x2"), vec![Value(5.0), Value(5.0), Value(5.0)]);
        let s = vals("m stale");
        assert!(matches!(s[0], Value(v) if crate::promql::is_stale_nan(v)));
    }

    #[test]
    fn labels_with_quotes() {
        let (l, rest) = parse_labels(r#"foo{a="x,y", b="q\"}"} 1 2"#).unwrap();
        assert_eq!(l.get("__name__"), Some("foo"));
        assert_eq!(l.get("a"), Some("x,y"));
        assert_eq!(l.get("b"), Some("q\"}"));
        assert_eq!(rest.trim(), "1 2");
        let (l, _) = parse_labels(r#"{"utf.name", x="1"} 3"#).unwrap();
        assert_eq!(l.get("__name__"), Some("utf.name"));
    }

    #[test]
    fn eval_header() {
        let c = parse_script("eval range from 0 to 10m step 5m rate(x[5m])\n  {} 1 2 3\n");
        let Command::Eval(e) = &c[0] else {
            panic!("not an eval")
        };
        assert!(matches!(
            e.kind,
            EvalKind::Range {
                start_ms: 0,
                end_ms: 600_000,
                step_ms: 300_000
            }
        ));
        assert_eq!(e.query, "rate(x[5m])");
        assert_eq!(e.series.len(), 1);
    }
}
