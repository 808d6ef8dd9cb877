//! Which rule files to load, loading them, and watching them for changes.
//!
//! `--rules` names files or folders (a folder means its `*.yml` and `*.yaml` files, in
//! name order). With none, the default packs built into the binary are loaded, so the
//! collector alerts on GPU and node faults wherever it is installed from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use vigil_rules::group::{Group, GroupOptions};
use vigil_rules::rulefile::{load_file, parse_rule_file};

/// The default rule packs (rules/packs/), by the name the API shows as their file.
pub const DEFAULT_PACKS: &[(&str, &str)] = &[
    (
        "builtin:packs/gpu.yml",
        include_str!("../../../rules/packs/gpu.yml"),
    ),
    (
        "builtin:packs/node.yml",
        include_str!("../../../rules/packs/node.yml"),
    ),
];

/// Rule files that could not be loaded: every problem, one per line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct LoadError {
    pub problems: Vec<String>,
}

impl LoadError {
    fn one(msg: String) -> Self {
        LoadError {
            problems: vec![msg],
        }
    }
}

fn is_rule_file(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
}

/// The files `paths` stand for: files as given, folders expanded to their rule files.
pub fn resolve(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => match std::fs::read_dir(p) {
                Ok(entries) => {
                    let mut files: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| is_rule_file(f) && f.is_file())
                        .collect();
                    files.sort();
                    out.extend(files);
                }
                Err(e) => problems.push(format!("{}: {e}", p.display())),
            },
            Ok(_) => out.push(p.clone()),
            Err(e) => problems.push(format!("{}: {e}", p.display())),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(LoadError { problems })
    }
}

/// Loads the groups of `paths`, or of the default packs when `paths` is empty. Every
/// file is read; all their problems come back together.
pub fn load(paths: &[PathBuf], opts: &GroupOptions) -> Result<Vec<Group>, LoadError> {
    let mut groups = Vec::new();
    let mut problems = Vec::new();
    if paths.is_empty() {
        for (name, text) in DEFAULT_PACKS {
            let path = Path::new(name);
            match parse_rule_file(path, text) {
                Ok(f) => groups.extend(
                    f.groups
                        .iter()
                        .map(|g| Group::new(path.to_owned(), g, opts)),
                ),
                Err(errs) => problems.extend(errs.iter().map(ToString::to_string)),
            }
        }
    } else {
        for p in resolve(paths)? {
            match load_file(&p) {
                Ok(f) => groups.extend(f.groups.iter().map(|g| Group::new(p.clone(), g, opts))),
                Err(errs) => problems.extend(errs.iter().map(ToString::to_string)),
            }
        }
    }
    // Prometheus refuses two groups of one name in one file.
    let mut seen = std::collections::HashSet::new();
    for g in &groups {
        if !seen.insert((g.file.clone(), g.name.clone())) {
            problems.push(format!(
                "{}: groupname: {:?} is repeated in the same file",
                g.file.display(),
                g.name
            ));
        }
    }
    if problems.is_empty() {
        Ok(groups)
    } else {
        Err(LoadError { problems })
    }
}

/// Watches the rule files and folders; sends `()` (debounced by `debounce`) after
/// anything in them changed. Files are watched through their folder, since editors
/// and config management replace a file by renaming a new one over it.
pub struct RuleWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl RuleWatcher {
    pub fn start(
        paths: &[PathBuf],
        debounce: Duration,
    ) -> Result<(RuleWatcher, mpsc::Receiver<()>), LoadError> {
        use notify::Watcher as _;
        let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut files: Vec<PathBuf> = Vec::new();
        for p in paths {
            let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            if abs.is_dir() {
                dirs.push(abs);
            } else {
                files.push(abs.clone());
                if let Some(parent) = abs.parent() {
                    dirs.push(parent.to_owned());
                }
            }
        }
        dirs.sort();
        dirs.dedup();
        let folders: Vec<PathBuf> = paths
            .iter()
            .filter(|p| p.is_dir())
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .collect();
        let relevant = move |p: &Path| {
            files.iter().any(|f| f == p)
                || (is_rule_file(p) && p.parent().is_some_and(|d| folders.iter().any(|f| f == d)))
        };
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            match res {
                Ok(ev) => {
                    // Reading the files on reload is an access: not a change.
                    if matches!(ev.kind, notify::EventKind::Access(_)) {
                        return;
                    }
                    if ev.paths.iter().any(|p| relevant(p)) {
                        let _ = raw_tx.send(());
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watching the rule files"),
            }
        })
        .map_err(|e| LoadError::one(format!("watching the rule files: {e}")))?;
        for d in &dirs {
            watcher
                .watch(d, notify::RecursiveMode::NonRecursive)
                .map_err(|e| LoadError::one(format!("watching {}: {e}", d.display())))?;
        }
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            while raw_rx.recv().await.is_some() {
                // Wait for quiet: a save is often several events (truncate, write, rename).
                loop {
                    match tokio::time::timeout(debounce, raw_rx.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                if tx.send(()).await.is_err() {
                    return;
                }
            }
        });
        Ok((RuleWatcher { _watcher: watcher }, rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_packs_load() {
        let groups = load(&[], &GroupOptions::default()).expect("packs load");
        assert!(groups.iter().any(|g| g.file.ends_with("gpu.yml")));
        assert!(groups.iter().any(|g| g.file.ends_with("node.yml")));
    }

    #[test]
    fn folder_means_its_yaml_files_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: up\n";
        std::fs::write(dir.path().join("b.yaml"), good).unwrap();
        std::fs::write(dir.path().join("a.yml"), good.replace("name: g", "name: h")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not rules").unwrap();
        let files = resolve(&[dir.path().to_owned()]).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap()).collect();
        assert_eq!(names, ["a.yml", "b.yaml"]);
        let groups = load(&[dir.path().to_owned()], &GroupOptions::default()).unwrap();
        assert_eq!(groups.len(), 2);

        std::fs::write(
            dir.path().join("c.yml"),
            "groups:\n  - name: x\n    rules:\n      - record: r\n        expr: up(\n",
        )
        .unwrap();
        let err = load(&[dir.path().to_owned()], &GroupOptions::default()).unwrap_err();
        assert!(err.to_string().contains("c.yml"), "{err}");
        let err = load(&[dir.path().join("missing.yml")], &GroupOptions::default()).unwrap_err();
        assert!(err.to_string().contains("missing.yml"), "{err}");
    }
}
