//! node_exporter's `filefd` collector: /proc/sys/fs/file-nr.

use std::path::PathBuf;

use vigil_proto::MetricFamily;

use super::parse::{ParseError, parse_u64};
use super::{HostPaths, Source, SourceError, read_file};

/// (allocated, maximum) file handles; the middle field is always 0 since Linux 2.6.
pub fn parse_file_nr(text: &str) -> Result<(u64, u64), ParseError> {
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    if fields.len() != 3 {
        return Err(ParseError::new(
            1,
            format!("expected 3 fields, found {}", fields.len()),
        ));
    }
    Ok((
        parse_u64(fields[0], 1, "allocated")?,
        parse_u64(fields[2], 1, "maximum")?,
    ))
}

pub struct FilefdSource {
    path: PathBuf,
}

impl FilefdSource {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            path: paths.proc("sys/fs/file-nr"),
        }
    }
}

impl Source for FilefdSource {
    fn name(&self) -> &'static str {
        "filefd"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let text = read_file(&self.path)?;
        let (allocated, maximum) = parse_file_nr(&text).map_err(|e| e.at(&self.path))?;
        out.push(
            MetricFamily::gauge(
                "node_filefd_allocated",
                "File descriptor statistics: allocated.",
            )
            .with(&[], allocated as f64),
        );
        out.push(
            MetricFamily::gauge(
                "node_filefd_maximum",
                "File descriptor statistics: maximum.",
            )
            .with(&[], maximum as f64),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_captured_file_nr() {
        let got = parse_file_nr(include_str!("../../testdata/proc/sys/fs/file-nr")).unwrap();
        assert_eq!(got, (599, 2_466_174));
    }

    #[test]
    fn malformed_file_nr() {
        assert!(parse_file_nr("1 0\n").is_err());
        assert!(parse_file_nr("a 0 5\n").is_err());
    }
}
