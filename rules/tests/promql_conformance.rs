//! Runs Prometheus's promqltest files and fails when fewer cases pass than the count
//! committed in `conformance-ratchet.txt`. Raise that number as the engine improves.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

#[test]
fn promql_conformance_ratchet() -> anyhow::Result<()> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = manifest.join("../../shared/conformance/promql");
    let entries = std::fs::read_dir(&dir).with_context(|| {
        format!(
            "promqltest files not found in {} (expected the shared conformance checkout)",
            dir.display()
        )
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no *.test files in {}", dir.display());
    }
    let mut report = Vec::new();
    let summary = vigil_rules::promql::promqltest::run_files(&files, &mut report)?;
    let report = String::from_utf8_lossy(&report);
    let ratchet_path = manifest.join("conformance-ratchet.txt");
    let ratchet: usize = std::fs::read_to_string(&ratchet_path)
        .with_context(|| format!("reading {}", ratchet_path.display()))?
        .trim()
        .parse()
        .context("conformance-ratchet.txt must hold one integer")?;
    println!("{report}");
    if summary.passed < ratchet {
        bail!(
            "promql conformance regressed: {} passed, ratchet is {ratchet}\n{report}",
            summary.passed
        );
    }
    Ok(())
}
