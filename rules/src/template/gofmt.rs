//! Go's `fmt` formatting for the values a Prometheus template handles, so that
//! `{{ $value }}`, `printf "%.2f"` and the humanize functions print exactly what
//! Prometheus prints (`1e+06`, not `1000000`; `%!d(float64=1.5)` for a wrong verb).

use super::exec::Val;

/// Decimal digits of |v| and the position of the decimal point (`0.d1d2.. × 10^dp`).
struct Digits {
    d: Vec<u8>,
    dp: i32,
}

/// Shortest digits that round-trip (what Go uses for precision -1).
fn shortest(v: f64) -> Digits {
    digits_from_exp(&format!("{:e}", v.abs()))
}

/// `n` significant digits, correctly rounded, trailing zeros removed.
fn significant(v: f64, n: usize) -> Digits {
    let mut d = digits_from_exp(&format!("{:.*e}", n.max(1) - 1, v.abs()));
    while d.d.len() > 1 && d.d.last() == Some(&b'0') {
        d.d.pop();
    }
    d
}

fn digits_from_exp(s: &str) -> Digits {
    let (mant, exp) = s.split_once('e').unwrap_or((s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let d: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    if d.iter().all(|&c| c == b'0') {
        return Digits {
            d: vec![b'0'],
            dp: 1,
        };
    }
    Digits { d, dp: exp + 1 }
}

fn special(v: f64) -> Option<String> {
    if v.is_nan() {
        Some("NaN".into())
    } else if v.is_infinite() {
        Some(if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        })
    } else {
        None
    }
}

fn sign(v: f64) -> &'static str {
    if v.is_sign_negative() && v != 0.0 || (v == 0.0 && v.is_sign_negative()) {
        "-"
    } else {
        ""
    }
}

/// `%e` with `prec` digits after the point from already-rounded digits.
fn fmt_e(neg: &str, d: &Digits, prec: usize, upper: bool) -> String {
    let mut s = String::from(neg);
    s.push(d.d[0] as char);
    if prec > 0 {
        s.push('.');
        for i in 1..=prec {
            s.push(*d.d.get(i).unwrap_or(&b'0') as char);
        }
    }
    let exp = if d.d == [b'0'] { 0 } else { d.dp - 1 };
    s.push(if upper { 'E' } else { 'e' });
    s.push(if exp < 0 { '-' } else { '+' });
    let e = exp.unsigned_abs();
    if e < 10 {
        s.push('0');
    }
    s.push_str(&e.to_string());
    s
}

/// `%f` with `prec` decimals from digits that are already rounded to fit.
fn fmt_f(neg: &str, d: &Digits, prec: usize) -> String {
    let mut s = String::from(neg);
    if d.dp > 0 {
        for i in 0..d.dp as usize {
            s.push(*d.d.get(i).unwrap_or(&b'0') as char);
        }
    } else {
        s.push('0');
    }
    if prec > 0 {
        s.push('.');
        for i in 0..prec as i32 {
            let j = d.dp + i;
            let c = if j < 0 {
                b'0'
            } else {
                *d.d.get(j as usize).unwrap_or(&b'0')
            };
            s.push(c as char);
        }
    }
    s
}

/// strconv.FormatFloat(v, fmt, prec, 64) for fmt in e, E, f, g, G; prec -1 = shortest.
pub fn format_float(v: f64, verb: char, prec: i32) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    let neg = sign(v);
    let upper = verb.is_ascii_uppercase();
    match verb.to_ascii_lowercase() {
        'e' => {
            let d = if prec < 0 {
                shortest(v)
            } else {
                digits_from_exp(&format!("{:.*e}", prec as usize, v.abs()))
            };
            let p = if prec < 0 {
                d.d.len() - 1
            } else {
                prec as usize
            };
            fmt_e(neg, &d, p, upper)
        }
        'f' => {
            if prec < 0 {
                let d = shortest(v);
                let p = (d.d.len() as i32 - d.dp).max(0) as usize;
                fmt_f(neg, &d, p)
            } else {
                format!("{neg}{:.*}", prec as usize, v.abs())
            }
        }
        _ => {
            let shortest_mode = prec < 0;
            let (d, mut p) = if shortest_mode {
                let d = shortest(v);
                let n = d.d.len() as i32;
                (d, n)
            } else {
                let p = if prec == 0 { 1 } else { prec };
                (significant(v, p as usize), p)
            };
            let nd = d.d.len() as i32;
            let mut eprec = p;
            if eprec > nd && nd >= d.dp {
                eprec = nd;
            }
            if shortest_mode {
                eprec = 6;
            }
            let exp = d.dp - 1;
            if exp < -4 || exp >= eprec {
                if p > nd {
                    p = nd;
                }
                return fmt_e(neg, &d, (p - 1).max(0) as usize, upper);
            }
            if p > d.dp {
                p = nd;
            }
            fmt_f(neg, &d, (p - d.dp).max(0) as usize)
        }
    }
}

/// Go's `%v` of a float64.
pub fn float_v(v: f64) -> String {
    format_float(v, 'g', -1)
}

/// strconv.Quote for the characters templates meet.
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's type name for `%!verb(type=value)` messages.
fn go_type(v: &Val) -> &'static str {
    match v {
        Val::Nil => "<nil>",
        Val::Bool(_) => "bool",
        Val::Int(_) => "int",
        Val::Float(_) => "float64",
        Val::Str(_) => "string",
        Val::Map(_) => "map[string]string",
        Val::Samples(_) => "template.queryResult",
        Val::Sample(_) => "*template.sample",
        Val::Struct(_) => "struct",
    }
}

#[derive(Default, Clone, Copy)]
struct Flags {
    minus: bool,
    plus: bool,
    space: bool,
    zero: bool,
    sharp: bool,
}

fn pad(s: String, width: Option<usize>, f: Flags, numeric: bool) -> String {
    let Some(w) = width else { return s };
    let n = s.chars().count();
    if n >= w {
        return s;
    }
    let fill = w - n;
    if f.minus {
        format!("{s}{}", " ".repeat(fill))
    } else if f.zero && numeric {
        let (sign, rest) = match s.strip_prefix(['-', '+']) {
            Some(r) => (&s[..1], r),
            None => ("", s.as_str()),
        };
        format!("{sign}{}{rest}", "0".repeat(fill))
    } else {
        format!("{}{s}", " ".repeat(fill))
    }
}

fn with_plus(s: String, v_neg: bool, f: Flags) -> String {
    if v_neg || s.starts_with('-') {
        s
    } else if f.plus {
        format!("+{s}")
    } else if f.space {
        format!(" {s}")
    } else {
        s
    }
}

/// One verb applied to one value, as fmt does it.
fn format_one(verb: char, v: &Val, f: Flags, width: Option<usize>, prec: Option<usize>) -> String {
    let bad = || format!("%!{verb}({}={})", go_type(v), v.to_go_string());
    let p = prec.map_or(-1, |p| p as i32);
    let (s, numeric) = match (verb, v) {
        ('v', Val::Float(x)) | ('g' | 'G' | 'e' | 'E' | 'f' | 'F', Val::Float(x)) => {
            let vb = if verb == 'v' {
                'g'
            } else if verb == 'F' {
                'f'
            } else {
                verb
            };
            let p = if prec.is_none() && matches!(vb, 'e' | 'E' | 'f') {
                6
            } else {
                p
            };
            (with_plus(format_float(*x, vb, p), false, f), true)
        }
        ('d' | 'v', Val::Int(i)) => (with_plus(i.to_string(), *i < 0, f), true),
        ('x', Val::Int(i)) => (format!("{i:x}"), true),
        ('X', Val::Int(i)) => (format!("{i:X}"), true),
        ('x', Val::Str(s)) => (s.bytes().map(|b| format!("{b:02x}")).collect(), false),
        ('g' | 'e' | 'f', Val::Int(_)) => return bad(),
        ('s' | 'v', Val::Str(s)) => {
            let s = match prec {
                Some(n) => s.chars().take(n).collect(),
                None => s.clone(),
            };
            (s, false)
        }
        ('q', Val::Str(s)) => (quote(s), false),
        ('t' | 'v', Val::Bool(b)) => (b.to_string(), false),
        ('v' | 's', other) if !matches!(other, Val::Float(_) | Val::Int(_) | Val::Bool(_)) => {
            (other.to_go_string(), false)
        }
        _ => return bad(),
    };
    let _ = f.sharp;
    pad(s, width, f, numeric)
}

/// fmt.Sprintf over template values.
pub fn sprintf(format: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let mut next_arg = 0;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut f = Flags::default();
        while let Some(&c) = chars.peek() {
            match c {
                '-' => f.minus = true,
                '+' => f.plus = true,
                ' ' => f.space = true,
                '0' => f.zero = true,
                '#' => f.sharp = true,
                _ => break,
            }
            chars.next();
        }
        let num = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
            let mut n: Option<usize> = None;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = Some(n.unwrap_or(0) * 10 + d as usize);
                chars.next();
            }
            n
        };
        let width = num(&mut chars);
        let prec = if chars.peek() == Some(&'.') {
            chars.next();
            Some(num(&mut chars).unwrap_or(0))
        } else {
            None
        };
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        match args.get(next_arg) {
            Some(v) => out.push_str(&format_one(verb, v, f, width, prec)),
            None => out.push_str(&format!("%!{verb}(MISSING)")),
        }
        next_arg += 1;
    }
    if next_arg < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[next_arg..]
            .iter()
            .map(|v| format!("{}={}", go_type(v), v.to_go_string()))
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_go() {
        assert_eq!(float_v(1e6), "1e+06");
        assert_eq!(float_v(100000.0), "100000");
        assert_eq!(float_v(0.5), "0.5");
        assert_eq!(float_v(123456789.0), "1.23456789e+08");
        assert_eq!(float_v(0.0001), "0.0001");
        assert_eq!(float_v(0.00001), "1e-05");
        assert_eq!(float_v(-2.5), "-2.5");
        assert_eq!(float_v(0.0), "0");
        assert_eq!(format_float(12345.0, 'g', 4), "1.234e+04");
        assert_eq!(format_float(1.5, 'g', 4), "1.5");
        assert_eq!(format_float(100.0, 'g', 4), "100");
        assert_eq!(format_float(1e5, 'g', 4), "1e+05");
        assert_eq!(format_float(0.0, 'g', 4), "0");
        assert_eq!(format_float(12.345, 'g', 4), "12.35");
        assert_eq!(format_float(f64::NAN, 'g', 4), "NaN");
        assert_eq!(format_float(f64::INFINITY, 'g', 4), "+Inf");
    }

    #[test]
    fn sprintf_verbs() {
        let f = Val::Float(4.56789);
        assert_eq!(sprintf("%.2f", std::slice::from_ref(&f)), "4.57");
        assert_eq!(sprintf("%f", std::slice::from_ref(&f)), "4.567890");
        assert_eq!(
            sprintf("%v|%s", &[f.clone(), Val::Str("x".into())]),
            "4.56789|x"
        );
        assert_eq!(
            sprintf("%d", std::slice::from_ref(&f)),
            "%!d(float64=4.56789)"
        );
        assert_eq!(sprintf("%d%%", &[Val::Int(42)]), "42%");
        assert_eq!(sprintf("%q", &[Val::Str("a\"b".into())]), "\"a\\\"b\"");
        assert_eq!(
            sprintf("%5.1f|%-4s|", &[Val::Float(2.25), Val::Str("ab".into())]),
            "  2.2|ab  |"
        );
        assert_eq!(sprintf("%s", &[]), "%!s(MISSING)");
        assert_eq!(sprintf("%e", &[Val::Float(1234.5678)]), "1.234568e+03");
    }
}
