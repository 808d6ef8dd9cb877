//! What may run, and with what: script names, the ownership and mode of the recovery
//! directory and of each script, and the environment a script gets.
//!
//! The checks are made again just before each spawn. Between the check and the exec
//! only someone who can write the directory could swap the file, and the directory's
//! own check allows that to root and the agent's user alone.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use vigil_proto::control::{Action, env};

/// The only `PATH` a script sees.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The only locale a script sees.
pub const LANG: &str = "C.UTF-8";
/// The longest script name a file system takes.
pub const MAX_NAME_BYTES: usize = 255;

/// The agent's effective user id, the one owner besides root that it trusts.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A plain file name of the recovery directory: `[A-Za-z0-9._-]`, not starting with `.`
/// or `-`, at most 255 bytes. Anything with a `/` is a path and refused as traversal.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the script name is empty".to_owned());
    }
    if name.contains('/') {
        return Err(format!(
            "{name:?}: a path, not a plain file name of the recovery directory (path traversal refused)"
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "script name of {} bytes is longer than {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(format!(
            "{name:?}: a script name must not start with '.' or '-'"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{name:?}: {c:?} is not allowed in a script name (only letters, digits, '.', '_' and '-')"
        ));
    }
    Ok(())
}

/// The trust rule for the directory and each script: owned by root or by the agent's
/// own user, and writable by neither group nor others. `what` names the thing in the
/// message (`reset-gpu: mode 0777 is group/world-writable`).
pub fn check_owner_mode(what: &str, uid: u32, mode: u32, euid: u32) -> Result<(), String> {
    if uid != 0 && uid != euid {
        return Err(format!(
            "{what}: owned by uid {uid}, not by root or the agent's uid {euid}"
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "{what}: mode {:04o} is group/world-writable",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// The recovery directory may hold scripts that run: a directory, trusted as
/// [`check_owner_mode`] says.
pub fn check_dir(dir: &Path, euid: u32) -> Result<(), String> {
    let what = format!("recovery directory {}", dir.display());
    let meta = std::fs::metadata(dir).map_err(|e| format!("{what}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("{what}: not a directory"));
    }
    check_owner_mode(&what, meta.uid(), meta.mode(), euid)
}

/// The path of script `name` when it may run: a valid name of a regular, executable,
/// trusted file (not a symlink) in `dir`. The directory is checked with [`check_dir`]
/// first. The error is the refusal's message.
pub fn check_script(dir: &Path, name: &str, euid: u32) -> Result<PathBuf, String> {
    check_name(name)?;
    check_dir(dir, euid)?;
    let path = dir.join(name);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{name}: no such script in {}", dir.display()));
        }
        Err(e) => return Err(format!("{name}: {e}")),
    };
    check_file(name, &meta, euid)?;
    Ok(path)
}

fn check_file(name: &str, meta: &Metadata, euid: u32) -> Result<(), String> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(format!("{name}: a symbolic link, not a regular file"));
    }
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(format!("{name}: {what}, not a regular file"));
    }
    check_owner_mode(name, meta.uid(), meta.mode(), euid)?;
    if meta.mode() & 0o111 == 0 {
        return Err(format!(
            "{name}: not executable (mode {:04o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// The names in `dir` that would run, sorted; empty when the directory itself fails
/// its check or cannot be read.
pub fn list_scripts(dir: &Path, euid: u32) -> Vec<String> {
    if check_dir(dir, euid).is_err() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| {
            check_name(name).is_ok()
                && std::fs::symlink_metadata(dir.join(name))
                    .is_ok_and(|meta| check_file(name, &meta, euid).is_ok())
        })
        .collect();
    names.sort();
    names
}

/// `VIGIL_LABEL_<NAME>` for a label name that is an identifier
/// (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn label_variable(name: &str) -> Result<String, String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "label name {name:?} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)"
        ));
    }
    Ok(format!(
        "{}{}",
        env::LABEL_PREFIX,
        name.to_ascii_uppercase()
    ))
}

/// The script's whole environment: `PATH`, `LANG` and the `VIGIL_*` variables, values
/// verbatim (no shell ever sees them). Refused: a label name that is not an identifier,
/// two labels that differ only in case, a NUL in any value.
pub fn script_env(action: &Action) -> Result<Vec<(String, String)>, String> {
    let mut vars = BTreeMap::new();
    vars.insert("PATH".to_owned(), PATH.to_owned());
    vars.insert("LANG".to_owned(), LANG.to_owned());
    for (var, value) in [
        (env::ACTION_ID, &action.id),
        (env::ALERT_NAME, &action.alert_name),
        (env::NODE, &action.node),
    ] {
        if value.contains('\0') {
            return Err(format!("{var}: the value contains a NUL byte"));
        }
        vars.insert(var.to_owned(), value.clone());
    }
    for (name, value) in &action.labels {
        let var = label_variable(name)?;
        if value.contains('\0') {
            return Err(format!("label {name:?}: the value contains a NUL byte"));
        }
        if vars.insert(var.clone(), value.clone()).is_some() {
            return Err(format!(
                "label {name:?}: another label also becomes {var} (names differ only in case)"
            ));
        }
    }
    Ok(vars.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_and_mode_rule() {
        let euid = 1000;
        assert!(check_owner_mode("s", 0, 0o100755, euid).is_ok());
        assert!(check_owner_mode("s", 1000, 0o100700, euid).is_ok());
        assert_eq!(
            check_owner_mode("s", 1001, 0o100755, euid).unwrap_err(),
            "s: owned by uid 1001, not by root or the agent's uid 1000"
        );
        assert_eq!(
            check_owner_mode("reset-gpu", 0, 0o100777, euid).unwrap_err(),
            "reset-gpu: mode 0777 is group/world-writable"
        );
        assert!(check_owner_mode("s", 0, 0o100775, euid).is_err());
        assert!(check_owner_mode("s", 0, 0o100757, euid).is_err());
        // Running as root, only root's files are trusted.
        assert!(check_owner_mode("s", 1000, 0o100755, 0).is_err());
    }

    #[test]
    fn names() {
        for ok in ["reset-gpu", "drain_node.sh", "a", "A9.b-c_d"] {
            check_name(ok).unwrap();
        }
        for (bad, says) in [
            ("../../bin/sh", "path traversal"),
            ("reset/gpu", "path traversal"),
            ("", "empty"),
            (".hidden", "must not start"),
            ("-rf", "must not start"),
            ("a b", "not allowed"),
            ("é", "not allowed"),
            ("x\0y", "not allowed"),
        ] {
            let err = check_name(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        assert!(check_name(&"a".repeat(255)).is_ok());
        assert!(check_name(&"a".repeat(256)).unwrap_err().contains("255"));
    }

    #[test]
    fn environment() {
        let action = Action {
            id: "a-1".into(),
            script: "reset-gpu".into(),
            alert_name: "GpuFellOffBus".into(),
            node: "n1".into(),
            labels: BTreeMap::from([
                ("gpu".into(), "3".into()),
                ("pci_bus_id".into(), "$(touch /tmp/x); rm -rf /".into()),
            ]),
            timeout_secs: 0,
        };
        let vars = script_env(&action).unwrap();
        let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "LANG",
                "PATH",
                "VIGIL_ACTION_ID",
                "VIGIL_ALERT_NAME",
                "VIGIL_LABEL_GPU",
                "VIGIL_LABEL_PCI_BUS_ID",
                "VIGIL_NODE"
            ]
        );
        assert!(vars.contains(&(
            "VIGIL_LABEL_PCI_BUS_ID".into(),
            "$(touch /tmp/x); rm -rf /".into()
        )));
        for (name, value, says) in [
            ("a-b", "1", "not an identifier"),
            ("9x", "1", "not an identifier"),
            ("", "1", "not an identifier"),
            ("GPU", "1", "differ only in case"),
            ("ok", "a\0b", "NUL"),
        ] {
            let mut a = action.clone();
            a.labels.insert(name.into(), value.into());
            let err = script_env(&a).unwrap_err();
            assert!(err.contains(says), "{name:?}: {err}");
        }
    }
}
