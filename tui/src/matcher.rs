//! Label matchers as amtool takes them on its command line: `alertname=GpuFellOffBus`,
//! `node=~"gpu-0[1-3]"`, `severity!=warning`, `job!~"node|gpu"`, a bare word for
//! `alertname=word` (first argument only, as amtool), and `{a="b",c=~"d"}` lists.

use std::fmt;

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    Regexp,
    NotRegexp,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Equal => "=",
            Op::NotEqual => "!=",
            Op::Regexp => "=~",
            Op::NotRegexp => "!~",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    pub value: String,
}

impl Matcher {
    /// Alertmanager v2's `Matcher` object.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "value": self.value,
            "isRegex": matches!(self.op, Op::Regexp | Op::NotRegexp),
            "isEqual": matches!(self.op, Op::Equal | Op::Regexp),
        })
    }

    /// Reads Alertmanager v2's `Matcher` object (`isEqual` defaults to true, as in
    /// Alertmanager before 0.22).
    pub fn from_json(v: &Value) -> Option<Matcher> {
        let name = v.get("name")?.as_str()?.to_owned();
        let value = v.get("value")?.as_str()?.to_owned();
        let regex = v.get("isRegex").and_then(Value::as_bool).unwrap_or(false);
        let equal = v.get("isEqual").and_then(Value::as_bool).unwrap_or(true);
        let op = match (regex, equal) {
            (false, true) => Op::Equal,
            (false, false) => Op::NotEqual,
            (true, true) => Op::Regexp,
            (true, false) => Op::NotRegexp,
        };
        Some(Matcher { name, op, value })
    }
}

/// `name="value"` with the value quoted and escaped as Go's %q does for plain text.
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}\"", self.name, self.op.as_str())?;
        for c in self.value.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

/// Parses the command line's matcher arguments.
pub fn parse_args(args: &[String]) -> Result<Vec<Matcher>, String> {
    let mut out = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        let arg = arg.trim();
        if let Some(inner) = arg.strip_prefix('{') {
            let inner = inner
                .strip_suffix('}')
                .ok_or_else(|| format!("matcher list {arg:?}: missing closing '}}'"))?;
            for part in split_list(inner).map_err(|e| format!("matcher list {arg:?}: {e}"))? {
                out.push(parse_one(&part)?);
            }
        } else if i == 0 && is_label_value_word(arg) {
            // amtool: a first argument without an operator is the alert's name.
            out.push(Matcher {
                name: "alertname".to_owned(),
                op: Op::Equal,
                value: arg.to_owned(),
            });
        } else {
            out.push(parse_one(arg)?);
        }
    }
    if out.is_empty() {
        return Err("at least one matcher is needed, e.g. alertname=GpuFellOffBus".into());
    }
    Ok(out)
}

fn is_label_value_word(s: &str) -> bool {
    !s.is_empty()
        && !s.contains(['=', '!', '~', '"', ',', '{', '}'])
        && !s.chars().any(char::is_whitespace)
}

/// Splits `a="x,y", b=~z` on the commas outside quotes.
fn split_list(s: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            current.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => {
                current.push(c);
                escaped = true;
            }
            '"' => {
                in_quotes = !in_quotes;
                current.push(c);
            }
            ',' if !in_quotes => {
                parts.push(std::mem::take(&mut current));
            }
            c => current.push(c),
        }
    }
    if in_quotes {
        return Err("unterminated quoted value".into());
    }
    parts.push(current);
    Ok(parts
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect())
}

/// One `name op value`.
pub fn parse_one(s: &str) -> Result<Matcher, String> {
    let s = s.trim();
    let name_end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .ok_or_else(|| {
            format!("matcher {s:?}: no operator (use =, !=, =~ or !~, e.g. node=gpu-01)")
        })?;
    let name = &s[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "matcher {s:?}: {name:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        ));
    }
    let rest = s[name_end..].trim_start();
    let (op, rest) = if let Some(r) = rest.strip_prefix("=~") {
        (Op::Regexp, r)
    } else if let Some(r) = rest.strip_prefix("!~") {
        (Op::NotRegexp, r)
    } else if let Some(r) = rest.strip_prefix("!=") {
        (Op::NotEqual, r)
    } else if let Some(r) = rest.strip_prefix('=') {
        (Op::Equal, r)
    } else {
        return Err(format!(
            "matcher {s:?}: expected =, !=, =~ or !~ after {name:?}"
        ));
    };
    let rest = rest.trim();
    let value = if let Some(quoted) = rest.strip_prefix('"') {
        unquote(quoted).map_err(|e| format!("matcher {s:?}: {e}"))?
    } else {
        rest.to_owned()
    };
    Ok(Matcher {
        name: name.to_owned(),
        op,
        value,
    })
}

/// The rest of a double-quoted value after its opening quote, with `\"`, `\\`, `\n`
/// and `\t` unescaped; nothing may follow the closing quote.
fn unquote(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(e @ ('"' | '\\')) => out.push(e),
                // Regular expressions keep their own escapes (`\d`, `\.`).
                Some(e) => {
                    out.push('\\');
                    out.push(e);
                }
                None => return Err("unterminated quoted value".into()),
            },
            '"' => {
                let trailing = chars.as_str().trim();
                if !trailing.is_empty() {
                    return Err(format!("unexpected {trailing:?} after the quoted value"));
                }
                return Ok(out);
            }
            c => out.push(c),
        }
    }
    Err("unterminated quoted value".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, op: Op, value: &str) -> Matcher {
        Matcher {
            name: name.into(),
            op,
            value: value.into(),
        }
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn amtool_forms() {
        let got = parse_args(&args(&[
            "alertname=GpuFellOffBus",
            "node=~\"gpu-0[1-3]\"",
            "severity!=warning",
            "job!~\"node|gpu\"",
        ]))
        .unwrap();
        assert_eq!(
            got,
            vec![
                m("alertname", Op::Equal, "GpuFellOffBus"),
                m("node", Op::Regexp, "gpu-0[1-3]"),
                m("severity", Op::NotEqual, "warning"),
                m("job", Op::NotRegexp, "node|gpu"),
            ]
        );
    }

    #[test]
    fn bare_first_word_is_the_alertname_and_lists_split_outside_quotes() {
        let got = parse_args(&args(&["GpuLost", "{node=\"a,b\", gpu=~\"1|2\"}"])).unwrap();
        assert_eq!(
            got,
            vec![
                m("alertname", Op::Equal, "GpuLost"),
                m("node", Op::Equal, "a,b"),
                m("gpu", Op::Regexp, "1|2"),
            ]
        );
    }

    #[test]
    fn escapes_and_regex_backslashes() {
        let got = parse_one(r#"summary="say \"hi\"""#).unwrap();
        assert_eq!(got.value, "say \"hi\"");
        let got = parse_one(r#"instance=~"10\.0\.0\.\d+:9435""#).unwrap();
        assert_eq!(got.value, r"10\.0\.0\.\d+:9435");
        assert_eq!(got.to_string(), r#"instance=~"10\\.0\\.0\\.\\d+:9435""#);
    }

    #[test]
    fn bad_matchers_say_why() {
        let e = parse_args(&args(&["alertname=X", "node"])).unwrap_err();
        assert!(e.contains("no operator"), "{e}");
        let e = parse_one("9node=x").unwrap_err();
        assert!(e.contains("not a label name"), "{e}");
        let e = parse_one("node=\"open").unwrap_err();
        assert!(e.contains("unterminated"), "{e}");
        let e = parse_one("node=\"a\"b").unwrap_err();
        assert!(e.contains("after the quoted value"), "{e}");
        let e = parse_one("node<x").unwrap_err();
        assert!(e.contains("expected =, !=, =~ or !~"), "{e}");
        assert!(parse_args(&[]).is_err());
    }

    #[test]
    fn json_round_trip() {
        for op in [Op::Equal, Op::NotEqual, Op::Regexp, Op::NotRegexp] {
            let matcher = m("node", op, "gpu-.*");
            assert_eq!(Matcher::from_json(&matcher.to_json()), Some(matcher));
        }
        assert_eq!(
            m("node", Op::NotRegexp, "x").to_json(),
            json!({"name":"node","value":"x","isRegex":true,"isEqual":false})
        );
    }
}
