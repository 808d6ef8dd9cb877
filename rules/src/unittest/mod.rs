//! `vigil rules test`: promtool's rule unit tests (`promtool test rules`) with the same
//! verdicts, exit codes and, closely, the same report.
//!
//! Semantics follow current promtool: `rule_files` are relative to the test file; a
//! test group without `interval` uses `evaluation_interval` (default 1m); groups are
//! evaluated every `evaluation_interval` from `start_timestamp` (default 0) to the
//! latest `eval_time`, input samples becoming visible as time reaches them; alert
//! tests compare firing alerts at the evaluation that covers `eval_time`; PromQL tests
//! run afterwards. Native-histogram series and the checks that need them are skipped
//! and the report says so.
//!
//! # Layout
//! - `model`: the test file, decoded strictly.
//! - `series`: input series and expanding notation.
//! - `run`: one test group.

mod model;
mod run;
pub mod series;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use model::{TestFile, TestGroup, parse_rfc3339_ms};

/// Runs each test file, writes the report to `out`, returns 0 when all passed, else 1.
pub fn test_files(paths: &[PathBuf], out: &mut dyn Write) -> i32 {
    let mut failed = false;
    for path in paths {
        // Report writes can fail (closed pipe); the verdict does not depend on them.
        let _ = writeln!(out, "Unit Testing:  {}", path.display());
        let outcome = test_file(path);
        for w in &outcome.warnings {
            let _ = writeln!(out, "  WARNING: {w}");
        }
        if outcome.skipped > 0 {
            let _ = writeln!(
                out,
                "  SKIPPED: {} check(s) on native-histogram series (native histograms are not supported)",
                outcome.skipped
            );
        }
        if outcome.errors.is_empty() {
            let _ = writeln!(out, "  SUCCESS");
        } else {
            failed = true;
            let _ = writeln!(out, "  FAILED:");
            for e in &outcome.errors {
                let _ = writeln!(out, "{e}");
                let _ = writeln!(out);
            }
        }
        let _ = writeln!(out);
    }
    i32::from(failed)
}

/// What testing one file found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Checks left out because they need native histograms.
    pub skipped: usize,
}

/// Tests one file.
pub fn test_file(path: &Path) -> Outcome {
    let mut outcome = Outcome::default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            outcome.errors.push(format!("open {}: {e}", path.display()));
            return outcome;
        }
    };
    let file = match crate::yaml::parse(&text)
        .map_err(|e| vec![e])
        .and_then(|n| model::decode(&n))
    {
        Ok(f) => f,
        Err(errs) => {
            let mut msg = String::from("yaml: unmarshal errors:");
            for e in errs {
                msg.push_str(&format!("\n  line {}: {}", e.line, e.msg));
            }
            outcome.errors.push(msg);
            return outcome;
        }
    };
    let base = path.parent().unwrap_or(Path::new(""));
    let mut rule_files = Vec::new();
    for rf in &file.rule_files {
        let p = if Path::new(rf).is_absolute() {
            PathBuf::from(rf)
        } else {
            base.join(rf)
        };
        match glob_files(&p) {
            Ok(m) if m.is_empty() => outcome
                .warnings
                .push(format!("no file match pattern {}", p.display())),
            Ok(m) => rule_files.extend(m),
            Err(e) => {
                outcome.errors.push(e);
                return outcome;
            }
        }
    }
    let eval_interval_ms = file
        .evaluation_interval_ms
        .filter(|&i| i > 0)
        .unwrap_or(60_000);
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for g in &file.group_eval_order {
        if !seen.insert(g.as_str()) {
            outcome
                .errors
                .push(format!("group name repeated in evaluation order: {g}"));
            return outcome;
        }
        order.push(g.clone());
    }
    for tg in &file.tests {
        let r = run::run_group(
            tg,
            &run::Setup {
                eval_interval_ms,
                order: &order,
                rule_files: &rule_files,
                fuzzy: file.fuzzy_compare,
            },
        );
        outcome.errors.extend(r.errors);
        outcome.skipped += r.skipped;
    }
    outcome
}

/// Expands `*`, `?` and `[...]` in the file-name part of a rule file path, as
/// promtool's `filepath.Glob` does; a path without them is returned as is if it exists.
fn glob_files(p: &Path) -> Result<Vec<PathBuf>, String> {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if !name.contains(['*', '?', '[']) {
        return Ok(if p.exists() {
            vec![p.to_path_buf()]
        } else {
            Vec::new()
        });
    }
    let re = glob_regex(&name).map_err(|e| format!("syntax error in pattern {name:?}: {e}"))?;
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter(|e| re.is_match(&e.file_name().to_string_lossy()))
            .map(|e| p.parent().unwrap_or(Path::new("")).join(e.file_name()))
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    Ok(out)
}

fn glob_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    let mut re = String::from("^");
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                re.push('[');
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    re.push(if c == '!' { '^' } else { c });
                }
                re.push(']');
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re)
}
