//! Prometheus's duration notation (`1y2w3d4h5m6s7ms`, or `0`), as rule and test files
//! write `for`, `interval` and `eval_time`. Milliseconds are the unit everywhere here.

/// Parses a Prometheus duration into milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if s.is_empty() {
        return Err("empty duration string".into());
    }
    if s == "0" {
        return Ok(0);
    }
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let invalid = || format!("not a valid duration string: {s:?}");
    let mut rest = s;
    let mut next_unit = 0;
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        // "ms" must win over "m" followed by an "s" that is not there.
        let unit = UNITS[next_unit..]
            .iter()
            .enumerate()
            .filter(|(_, (u, _))| rest.starts_with(u))
            .max_by_key(|(_, (u, _))| u.len())
            .map(|(i, _)| i + next_unit)
            .ok_or_else(invalid)?;
        let (u, mult) = UNITS[unit];
        rest = &rest[u.len()..];
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration out of range: {s:?}"))?;
        next_unit = unit + 1;
    }
    Ok(total)
}

/// Formats milliseconds the way Prometheus's `model.Duration` prints itself.
pub fn format_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let (sign, mut ms) = if ms < 0 { ("-", -ms) } else { ("", ms) };
    let mut out = String::from(sign);
    let units: [(&str, i64, bool); 7] = [
        ("y", 365 * 24 * 3_600_000, true),
        ("w", 7 * 24 * 3_600_000, true),
        ("d", 24 * 3_600_000, false),
        ("h", 3_600_000, false),
        ("m", 60_000, false),
        ("s", 1_000, false),
        ("ms", 1, false),
    ];
    for (unit, mult, exact) in units {
        if exact && ms % mult != 0 {
            continue;
        }
        let v = ms / mult;
        if v > 0 {
            out.push_str(&format!("{v}{unit}"));
            ms -= v * mult;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_durations() {
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("2m59s999ms"), Ok(179_999));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("106700d"), Ok(106_700 * 86_400_000));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("1m1h").is_err());
        assert!(parse_duration("-1m").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn formats_like_model_duration() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(300_000), "5m");
        assert_eq!(format_duration(179_999), "2m59s999ms");
        assert_eq!(format_duration(86_400_000), "1d");
        assert_eq!(format_duration(14 * 86_400_000), "2w");
        assert_eq!(format_duration(90 * 86_400_000), "90d");
    }
}
