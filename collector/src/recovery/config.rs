//! `[recovery]` in `collector.toml`: the remediation policy's settings.
//!
//! ```toml
//! [recovery]
//! kill_switch = false            # true: no action starts (also settable through the API)
//!
//! [recovery.defaults]            # for every script without a policy of its own
//! mode = "auto"                  # auto | approval | dry_run
//! cooldown_secs = 600            # per node and script
//! max_attempts = 3               # per alert, within attempt_window_secs; then escalate
//! max_concurrent = 0             # fleet-wide at once; 0: no absolute cap
//! max_concurrent_share = 0.1     # fleet-wide at once, as a share of the nodes (at least 1)
//! timeout_secs = 300
//!
//! [recovery.scripts.reset-gpu]   # only what differs from the defaults
//! mode = "approval"
//! max_concurrent = 2
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// How a script's actions start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// As soon as the guardrails allow.
    Auto,
    /// After an operator approves it (API, `vigil actions approve`, the dashboard).
    Approval,
    /// Recorded as what would have run; nothing runs.
    DryRun,
}

/// The settings of one script, complete.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptPolicy {
    pub mode: Mode,
    /// The same script does not run again on the same node for this long.
    pub cooldown_secs: f64,
    /// Attempts for one alert within [`RecoveryConfig::attempt_window_secs`]; the
    /// alert firing again after the last one escalates.
    pub max_attempts: u32,
    /// Actions of this script in flight at once across the fleet; 0: no absolute cap
    /// (the share still applies).
    pub max_concurrent: u32,
    /// Actions of this script in flight at once, as a share of the fleet's nodes,
    /// rounded down, at least 1.
    pub max_concurrent_share: f64,
    /// The script's time limit on the node.
    pub timeout_secs: u32,
}

impl Default for ScriptPolicy {
    fn default() -> Self {
        ScriptPolicy {
            mode: Mode::Auto,
            cooldown_secs: 600.0,
            max_attempts: 3,
            max_concurrent: 0,
            max_concurrent_share: 0.1,
            timeout_secs: 300,
        }
    }
}

/// A script's own policy: each key left out is taken from `[recovery.defaults]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptOverride {
    pub mode: Option<Mode>,
    pub cooldown_secs: Option<f64>,
    pub max_attempts: Option<u32>,
    pub max_concurrent: Option<u32>,
    pub max_concurrent_share: Option<f64>,
    pub timeout_secs: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryConfig {
    /// Engaged at start: no action starts until it is released through the API.
    pub kill_switch: bool,
    /// How far back attempts for one alert count towards `max_attempts`, and how long
    /// an escalated alert stays escalated (no more attempts).
    pub attempt_window_secs: f64,
    /// An action not taken by its node's agent within this long is cancelled (queued)
    /// or lost (dispatched, never reported started).
    pub delivery_timeout_secs: f64,
    /// A running action not reported finished within its timeout plus this long is
    /// lost.
    pub report_grace_secs: f64,
    /// Audit entries kept (newest); older ones are dropped from `<data_dir>/recovery/`.
    pub keep_actions: usize,
    pub defaults: ScriptPolicy,
    pub scripts: BTreeMap<String, ScriptOverride>,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            kill_switch: false,
            attempt_window_secs: 86_400.0,
            delivery_timeout_secs: 600.0,
            report_grace_secs: 60.0,
            keep_actions: 10_000,
            defaults: ScriptPolicy::default(),
            scripts: BTreeMap::new(),
        }
    }
}

impl RecoveryConfig {
    /// The complete policy of `script`.
    pub fn policy(&self, script: &str) -> ScriptPolicy {
        let d = &self.defaults;
        let Some(o) = self.scripts.get(script) else {
            return d.clone();
        };
        ScriptPolicy {
            mode: o.mode.unwrap_or(d.mode),
            cooldown_secs: o.cooldown_secs.unwrap_or(d.cooldown_secs),
            max_attempts: o.max_attempts.unwrap_or(d.max_attempts),
            max_concurrent: o.max_concurrent.unwrap_or(d.max_concurrent),
            max_concurrent_share: o.max_concurrent_share.unwrap_or(d.max_concurrent_share),
            timeout_secs: o.timeout_secs.unwrap_or(d.timeout_secs),
        }
    }

    /// Every problem as `(key, why)`, the key spelt as in the file.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        secs(
            &mut out,
            "recovery.attempt_window_secs".into(),
            self.attempt_window_secs,
        );
        secs(
            &mut out,
            "recovery.delivery_timeout_secs".into(),
            self.delivery_timeout_secs,
        );
        secs(
            &mut out,
            "recovery.report_grace_secs".into(),
            self.report_grace_secs,
        );
        check_policy(&mut out, "recovery.defaults", &self.defaults);
        for name in self.scripts.keys() {
            if !valid_script_name(name) {
                out.push((
                    format!("recovery.scripts.{name}"),
                    "not a plain file name ([A-Za-z0-9._-], not starting with '.' or '-')".into(),
                ));
            }
            check_policy(
                &mut out,
                &format!("recovery.scripts.{name}"),
                &self.policy(name),
            );
        }
        out
    }
}

fn secs(out: &mut Vec<(String, String)>, key: String, v: f64) {
    if !(v.is_finite() && v >= 0.0) {
        out.push((
            key,
            format!("must be a non-negative number of seconds, not {v}"),
        ));
    }
}

fn check_policy(out: &mut Vec<(String, String)>, prefix: &str, p: &ScriptPolicy) {
    secs(out, format!("{prefix}.cooldown_secs"), p.cooldown_secs);
    if !(p.max_concurrent_share.is_finite() && (0.0..=1.0).contains(&p.max_concurrent_share)) {
        out.push((
            format!("{prefix}.max_concurrent_share"),
            format!("must be between 0 and 1, not {}", p.max_concurrent_share),
        ));
    }
    if p.max_attempts == 0 {
        out.push((
            format!("{prefix}.max_attempts"),
            "must be at least 1 (use mode = \"dry_run\" to run nothing)".into(),
        ));
    }
    if p.timeout_secs == 0 {
        out.push((
            format!("{prefix}.timeout_secs"),
            "must be at least 1".into(),
        ));
    }
}

/// A name the agent would accept: a plain file name of its recovery directory.
pub fn valid_script_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_fall_back_to_defaults() {
        let c: RecoveryConfig = vigil_proto::config::from_toml(
            "[defaults]\ncooldown_secs = 60\n[scripts.reset-gpu]\nmode = \"approval\"\n",
        )
        .unwrap();
        let p = c.policy("reset-gpu");
        assert_eq!(p.mode, Mode::Approval);
        assert_eq!(p.cooldown_secs, 60.0);
        assert_eq!(c.policy("other").mode, Mode::Auto);
        assert!(c.problems().is_empty());
    }

    #[test]
    fn problems_name_the_key() {
        let c: RecoveryConfig = vigil_proto::config::from_toml(
            "[scripts.\"../x\"]\nmax_attempts = 0\n[defaults]\nmax_concurrent_share = 2.0\n",
        )
        .unwrap();
        let keys: Vec<String> = c.problems().into_iter().map(|(k, _)| k).collect();
        assert!(
            keys.contains(&"recovery.scripts.../x".to_string()),
            "{keys:?}"
        );
        assert!(keys.contains(&"recovery.scripts.../x.max_attempts".to_string()));
        assert!(keys.contains(&"recovery.defaults.max_concurrent_share".to_string()));
    }
}
