//! `vigil rules check`: promtool's `check rules` with the same output shape and exit
//! codes, accepting Vigil's `recovery:` blocks.
//!
//! Like promtool's default `--lint=duplicate-rules`, rules with the same name and labels
//! in one file are reported under `FAILED:` as a lint error but do not change the exit
//! code (promtool only fails on lint errors with `--lint-fatal`).

use std::io::Write;
use std::path::PathBuf;

use crate::rulefile::{RuleFile, load_file};

/// Checks each file, writes promtool's report to `out`, returns the exit code (0 or 1).
pub fn check_files(paths: &[PathBuf], out: &mut dyn Write) -> i32 {
    let mut failed = false;
    for path in paths {
        // A failed write to the report is not a rule error; the verdict stands.
        let _ = writeln!(out, "Checking {}", path.display());
        match load_file(path) {
            Err(errs) => {
                failed = true;
                let _ = writeln!(out, "  FAILED:");
                for e in errs {
                    let _ = writeln!(out, "{e}");
                }
            }
            Ok(file) => {
                let dups = duplicates(&file);
                if dups.is_empty() {
                    let n: usize = file.groups.iter().map(|g| g.rules.len()).sum();
                    let _ = writeln!(out, "  SUCCESS: {n} rules found");
                    let with_recovery = file
                        .groups
                        .iter()
                        .flat_map(|g| &g.rules)
                        .filter(|r| r.recovery.is_some())
                        .count();
                    if with_recovery > 0 {
                        let _ = writeln!(
                            out,
                            "  NOTE: {with_recovery} rule(s) use Vigil's recovery: extension; Prometheus will not load this file"
                        );
                    }
                } else {
                    let _ = writeln!(out, "  FAILED:");
                    let _ = writeln!(out, "{}", duplicates_message(&dups));
                }
            }
        }
        let _ = writeln!(out);
    }
    i32::from(failed)
}

/// A rule's identity for the duplicate lint: its name and its own labels, sorted.
type RuleKey = (String, Vec<(String, String)>);

/// Rules that share name and labels with another rule of the same file, each reported
/// once, in promtool's sorted order.
pub fn duplicates(file: &RuleFile) -> Vec<RuleKey> {
    let mut keys: Vec<RuleKey> = file
        .groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .map(|r| {
            let mut l = r.labels.clone();
            l.sort();
            (r.name.clone(), l)
        })
        .collect();
    keys.sort();
    let mut dups: Vec<RuleKey> = Vec::new();
    for w in keys.windows(2) {
        if w[0] == w[1] && dups.last() != Some(&w[1]) {
            dups.push(w[1].clone());
        }
    }
    dups
}

fn duplicates_message(dups: &[RuleKey]) -> String {
    let mut msg = format!("lint error {} duplicate rule(s) found.\n", dups.len());
    for (name, labels) in dups {
        msg.push_str(&format!("Metric: {name}\nLabel(s):\n"));
        for (k, v) in labels {
            msg.push_str(&format!("\t{k}: {v}\n"));
        }
    }
    msg.push_str("Might cause inconsistency while recording expressions");
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> (i32, String) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.yml");
        std::fs::write(&p, text).unwrap();
        let mut out = Vec::new();
        let code = check_files(std::slice::from_ref(&p), &mut out);
        let s = String::from_utf8(out)
            .unwrap()
            .replace(&p.display().to_string(), "r.yml");
        (code, s)
    }

    #[test]
    fn success_and_failure_shapes() {
        let (c, s) = run(
            "groups:\n- name: g\n  rules:\n  - record: a\n    expr: up\n  - alert: B\n    expr: up == 0\n",
        );
        assert_eq!(
            (c, s.as_str()),
            (0, "Checking r.yml\n  SUCCESS: 2 rules found\n\n")
        );
        let (c, s) = run("groups:\n- name: g\n  rules:\n  - record: a\n    expr: 'up +'\n");
        assert_eq!(c, 1);
        assert!(s.starts_with("Checking r.yml\n  FAILED:\nr.yml: 5:11: group \"g\", rule 1, \"a\": could not parse expression: "), "{s}");
    }

    #[test]
    fn duplicates_are_a_lint_not_a_failure() {
        let (c, s) = run(
            "groups:\n- name: g\n  rules:\n  - record: a\n    expr: up\n  - record: a\n    expr: up\n- name: h\n  rules:\n  - record: a\n    expr: up\n",
        );
        assert_eq!(c, 0);
        assert_eq!(
            s,
            "Checking r.yml\n  FAILED:\nlint error 1 duplicate rule(s) found.\nMetric: a\nLabel(s):\nMight cause inconsistency while recording expressions\n\n"
        );
    }
}
