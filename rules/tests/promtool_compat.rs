//! `vigil rules test` and `vigil rules check` against Debian's promtool on the
//! conformance files from Prometheus and on our own rule packs: same exit codes.
//!
//! promtool must be installed (./tests/run.sh installs Debian's `prometheus`
//! package); without it this test fails rather than passing silently.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Files Debian's promtool 2.42 cannot judge (newer syntax and defaults), with the exit
/// code current promtool gives, as ../shared/conformance/README.md states it.
const TOO_NEW_FOR_DEBIAN: &[(&str, i32)] = &[
    ("unittest.yml", 0),
    ("start-time-test.yml", 0),
    ("no-test-group-interval.yml", 0),
];

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/promtool")
}

fn packs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packs")
}

fn promtool(args: &[&str], file: &Path) -> i32 {
    let out = Command::new("promtool")
        .args(args)
        .arg(file.file_name().expect("file name"))
        .current_dir(file.parent().expect("parent"))
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool is not installed ({e}); run ./tests/run.sh, which installs Debian's prometheus package")
        });
    out.status.code().expect("promtool exited by a signal")
}

fn ours_test(file: &Path) -> (i32, String) {
    let mut out = Vec::new();
    let code = vigil_rules::test_files(&[file.to_path_buf()], &mut out);
    (code, String::from_utf8_lossy(&out).into_owned())
}

/// Fails with every file whose exit code differs between `expected` and `ours`.
fn assert_same_verdicts(
    files: &[PathBuf],
    expected: impl Fn(&Path) -> i32,
    ours: fn(&Path) -> (i32, String),
) {
    let mut mismatches = Vec::new();
    for f in files {
        let expected = expected(f);
        let (got, report) = ours(f);
        if got != expected {
            mismatches.push(format!(
                "{}: promtool {expected}, ours {got}\n{report}",
                f.display()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "verdicts differ:\n{}",
        mismatches.join("\n")
    );
}

fn ours_check(file: &Path) -> (i32, String) {
    let mut out = Vec::new();
    let code = vigil_rules::check_files(&[file.to_path_buf()], &mut out);
    (code, String::from_utf8_lossy(&out).into_owned())
}

/// A promtool test file has a top-level `tests:` key.
fn is_test_file(p: &Path) -> bool {
    std::fs::read_to_string(p).is_ok_and(|t| t.lines().any(|l| l.starts_with("tests:")))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn unit_test_verdicts_match_promtool() {
    let mut files: Vec<PathBuf> = yaml_files(&conformance_dir())
        .into_iter()
        .filter(|p| is_test_file(p))
        .collect();
    let pack_tests = yaml_files(&packs_dir().join("tests"));
    assert!(!pack_tests.is_empty(), "no pack tests in rules/packs/tests");
    files.extend(pack_tests);
    // Our own corner cases (templates, keep_firing_for, group order), judged by promtool.
    files.extend(
        yaml_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata"))
            .into_iter()
            .filter(|p| is_test_file(p)),
    );
    assert!(
        files.len() >= 11 + 2,
        "expected the 11 conformance test files and the pack tests, found {files:?}"
    );
    assert_same_verdicts(
        &files,
        |f| {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            match TOO_NEW_FOR_DEBIAN.iter().find(|(n, _)| *n == name) {
                Some((_, code)) if f.starts_with(conformance_dir()) => *code,
                _ => promtool(&["test", "rules"], f),
            }
        },
        ours_test,
    );
}

#[test]
fn check_verdicts_match_promtool() {
    let dir = conformance_dir();
    let mut files: Vec<PathBuf> = [
        "rules.yml",
        "rules-bad.yml",
        "rules_duplicates.yml",
        "rules_extrafields.yml",
    ]
    .iter()
    .map(|n| dir.join(n))
    .collect();
    files.extend(yaml_files(&dir).into_iter().filter(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("bad-") && !is_test_file(p))
    }));
    files.extend(yaml_files(&packs_dir()));
    files.extend(
        yaml_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata"))
            .into_iter()
            .filter(|p| !is_test_file(p)),
    );
    assert_same_verdicts(&files, |f| promtool(&["check", "rules"], f), ours_check);
}

#[test]
fn unittest_yml_reports_skipped_histogram_checks() {
    let (code, report) = ours_test(&conformance_dir().join("unittest.yml"));
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("SKIPPED: 3 check(s) on native-histogram series"),
        "{report}"
    );
}

/// The documented split: `recovery:` is Vigil's, Prometheus refuses the key.
#[test]
fn recovery_rules_load_in_vigil_but_not_in_prometheus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("recovery.yml");
    std::fs::write(
        &f,
        "groups:\n- name: recovery\n  rules:\n  - alert: GpuFellOffBus\n    expr: vigil_gpu_up == 0\n    recovery:\n      script: reset-gpu\n      args_from_labels: [gpu]\n",
    )
    .expect("write");
    let (ours, report) = ours_check(&f);
    assert_eq!(ours, 0, "{report}");
    assert!(
        report.contains("NOTE: 1 rule(s) use Vigil's recovery: extension"),
        "{report}"
    );
    assert_eq!(promtool(&["check", "rules"], &f), 1);
}
