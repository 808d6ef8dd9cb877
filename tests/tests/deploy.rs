//! Files under deploy/ that other programs read, checked by those programs.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, ensure};

#[test]
fn prometheus_accepts_the_scrape_config_and_the_packs_it_loads() -> anyhow::Result<()> {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/prometheus.yml");
    let output = Command::new("promtool")
        .args(["check", "config"])
        .arg(&config)
        .output()
        .context("running promtool (Debian's prometheus package; ./tests/run.sh installs it)")?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.success(),
        "promtool check config failed:\n{report}"
    );
    // The packs were found and checked, not skipped.
    ensure!(
        report.contains("gpu.yml") && report.contains("node.yml"),
        "{report}"
    );
    Ok(())
}
