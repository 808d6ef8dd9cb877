//! Helpers shared by the host sources: the parse error every `parse_*` function returns,
//! number parsing that names the line, reads of optional files, and the exclude filters.
//!
//! The parsers are pure functions over text so that tests can feed them captured files;
//! the error carries only the line, and the source adds the path when it turns the error
//! into a [`SourceError`].

use std::io::ErrorKind;
use std::path::Path;

use regex::Regex;

use super::SourceError;

/// A malformed line in a kernel file; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl ParseError {
    pub fn new(line: usize, message: impl Into<String>) -> Self {
        Self {
            line,
            message: message.into(),
        }
    }

    /// The source-level error, naming the file the text came from.
    pub fn at(self, path: &Path) -> SourceError {
        SourceError::Parse {
            path: path.to_owned(),
            line: self.line,
            message: self.message,
        }
    }
}

/// Parses an unsigned integer field, naming the line and the field on failure.
pub fn parse_u64(field: &str, line: usize, what: &str) -> Result<u64, ParseError> {
    field.parse::<u64>().map_err(|e| {
        ParseError::new(
            line,
            format!("{what}: {field:?} is not an unsigned integer: {e}"),
        )
    })
}

/// Parses a signed integer field (sysfs values such as `speed` may be -1).
pub fn parse_i64(field: &str, line: usize, what: &str) -> Result<i64, ParseError> {
    field
        .parse::<i64>()
        .map_err(|e| ParseError::new(line, format!("{what}: {field:?} is not an integer: {e}")))
}

/// Parses a decimal field such as a load average.
pub fn parse_f64(field: &str, line: usize, what: &str) -> Result<f64, ParseError> {
    field
        .parse::<f64>()
        .map_err(|e| ParseError::new(line, format!("{what}: {field:?} is not a number: {e}")))
}

/// Reads a file that may legitimately be absent (PSI on an old kernel, snmp6 without
/// IPv6): `Ok(None)` when it does not exist, an error for anything else.
pub fn read_optional(path: &Path) -> Result<Option<String>, SourceError> {
    match super::procfile::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SourceError::io(path, e)),
    }
}

/// Reads one sysfs attribute, trimmed. Many attributes fail to read by design (`speed`
/// of a link that is down answers EINVAL), so every error reads as "not there".
pub fn read_attr(path: &Path) -> Option<String> {
    let text = super::procfile::read_to_string(path).ok()?;
    Some(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// An exclude pattern from the configuration, compiled once when the source is built.
///
/// An empty pattern excludes nothing. A pattern that does not compile (the agent
/// validates its configuration first, so only a caller that skipped validation sees
/// this) makes every collection of that source fail with the regex error rather than
/// silently collecting everything.
#[derive(Debug, Clone)]
pub struct Exclude {
    pattern: Result<Option<Regex>, String>,
}

impl Exclude {
    pub fn new(what: &str, pattern: &str) -> Self {
        let pattern = if pattern.is_empty() {
            Ok(None)
        } else {
            Regex::new(pattern)
                .map(Some)
                .map_err(|e| format!("{what}: invalid regex: {e}"))
        };
        Self { pattern }
    }

    /// The compiled pattern, or the error to report for this cycle.
    pub fn get(&self) -> Result<Option<&Regex>, SourceError> {
        match &self.pattern {
            Ok(re) => Ok(re.as_ref()),
            Err(e) => Err(SourceError::Other(e.clone())),
        }
    }
}

/// Whether `value` is excluded by an optional pattern.
pub fn excluded(pattern: Option<&Regex>, value: &str) -> bool {
    pattern.is_some_and(|re| re.is_match(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_path_and_line() {
        let err = parse_u64("x1", 7, "ctxt")
            .unwrap_err()
            .at(Path::new("/proc/stat"));
        let text = err.to_string();
        assert!(text.contains("/proc/stat"), "{text}");
        assert!(text.contains("line 7"), "{text}");
        assert!(text.contains("ctxt"), "{text}");
    }

    #[test]
    fn empty_exclude_excludes_nothing_and_bad_regex_is_reported() {
        let none = Exclude::new("netdev.device_exclude", "");
        assert!(!excluded(none.get().unwrap(), "lo"));
        let lo = Exclude::new("netdev.device_exclude", "^lo$");
        assert!(excluded(lo.get().unwrap(), "lo"));
        assert!(!excluded(lo.get().unwrap(), "eth0"));
        let bad = Exclude::new("netdev.device_exclude", "(");
        assert!(
            bad.get()
                .unwrap_err()
                .to_string()
                .starts_with("netdev.device_exclude")
        );
    }

    #[test]
    fn missing_optional_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_optional(&dir.path().join("absent")).unwrap().is_none());
        assert!(read_attr(&dir.path().join("absent")).is_none());
    }
}
