//! The alert store and the notification log, and how both are kept on disk.
//!
//! Alerts are kept by fingerprint and merged as Alertmanager's `types.Alert.Merge`
//! merges them. The notification log remembers, per aggregation group, receiver and
//! integration, which alerts were firing and which resolved at the last notification,
//! and Alertmanager's `DedupStage.needsUpdate` decides from it whether a flush sends.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::notify::{LabelMap, PostableAlert};

/// How long a notification log entry is kept after its last notification.
pub const NFLOG_RETENTION_MS: i64 = 5 * 24 * 3_600_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAlert {
    pub labels: LabelMap,
    pub annotations: LabelMap,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub generator_url: String,
    pub updated_at_ms: i64,
    /// `ends_at_ms` was filled in from `resolve_timeout`, not sent.
    pub timeout: bool,
}

impl StoredAlert {
    /// What the evaluator sent, with Alertmanager's API defaults: no start is now, no
    /// end is now + `resolve_timeout`.
    pub fn from_postable(a: PostableAlert, now_ms: i64, resolve_timeout_ms: i64) -> StoredAlert {
        let starts_at_ms = if a.starts_at_ms > 0 {
            a.starts_at_ms
        } else {
            now_ms
        };
        let (ends_at_ms, timeout) = if a.ends_at_ms > 0 {
            (a.ends_at_ms, false)
        } else {
            (now_ms + resolve_timeout_ms, true)
        };
        StoredAlert {
            labels: a.labels,
            annotations: a.annotations,
            starts_at_ms,
            ends_at_ms,
            generator_url: a.generator_url,
            updated_at_ms: now_ms,
            timeout,
        }
    }

    pub fn resolved(&self, now_ms: i64) -> bool {
        self.ends_at_ms <= now_ms
    }

    /// Alertmanager's `Merge`, `self` the older and `newer` the younger alert.
    pub fn merge(&self, newer: &StoredAlert, now_ms: i64) -> StoredAlert {
        let mut res = newer.clone();
        if self.starts_at_ms < newer.starts_at_ms {
            res.starts_at_ms = self.starts_at_ms;
        }
        if newer.resolved(now_ms) {
            if self.resolved(now_ms) && self.ends_at_ms > newer.ends_at_ms {
                res.ends_at_ms = self.ends_at_ms;
            }
        } else if self.ends_at_ms > newer.ends_at_ms && !self.timeout {
            res.ends_at_ms = self.ends_at_ms;
            res.timeout = false;
        }
        res
    }

    /// What the store keeps when `incoming` arrives for an alert it has: merged when
    /// their activity ranges overlap, else replaced (Alertmanager's `Alerts.Put`).
    pub fn put(old: Option<&StoredAlert>, incoming: StoredAlert, now_ms: i64) -> StoredAlert {
        match old {
            Some(o)
                if (incoming.ends_at_ms > o.starts_at_ms && incoming.ends_at_ms < o.ends_at_ms)
                    || (incoming.starts_at_ms > o.starts_at_ms
                        && incoming.starts_at_ms < o.ends_at_ms) =>
            {
                o.merge(&incoming, now_ms)
            }
            _ => incoming,
        }
    }
}

/// What was last sent for one group, receiver and integration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NflogEntry {
    pub group_key: String,
    pub receiver: String,
    pub integration: usize,
    pub firing: BTreeSet<u64>,
    pub resolved: BTreeSet<u64>,
    pub at_ms: i64,
}

/// The notification log.
#[derive(Debug, Clone, Default)]
pub struct Nflog {
    entries: HashMap<(String, String, usize), NflogEntry>,
}

impl Nflog {
    pub fn get(&self, group_key: &str, receiver: &str, integration: usize) -> Option<&NflogEntry> {
        self.entries
            .get(&(group_key.to_string(), receiver.to_string(), integration))
    }

    pub fn log(&mut self, e: NflogEntry) {
        self.entries
            .insert((e.group_key.clone(), e.receiver.clone(), e.integration), e);
    }

    /// The last notification of a group to a receiver, over its integrations.
    pub fn last_for(&self, group_key: &str, receiver: &str) -> Option<i64> {
        self.entries
            .values()
            .filter(|e| e.group_key == group_key && e.receiver == receiver)
            .map(|e| e.at_ms)
            .max()
    }

    pub fn gc(&mut self, now_ms: i64) {
        self.entries
            .retain(|_, e| e.at_ms + NFLOG_RETENTION_MS > now_ms);
    }

    pub fn to_json(&self) -> String {
        let mut list: Vec<&NflogEntry> = self.entries.values().collect();
        list.sort_by(|a, b| {
            (&a.group_key, &a.receiver, a.integration).cmp(&(
                &b.group_key,
                &b.receiver,
                b.integration,
            ))
        });
        serde_json::to_string_pretty(&list).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Nflog, serde_json::Error> {
        let list: Vec<NflogEntry> = serde_json::from_str(text)?;
        let mut n = Nflog::default();
        for e in list {
            n.log(e);
        }
        Ok(n)
    }
}

/// Alertmanager's `DedupStage.needsUpdate`: whether a flush with these firing and
/// resolved alerts sends, given the last notification.
pub fn needs_update(
    entry: Option<&NflogEntry>,
    firing: &BTreeSet<u64>,
    resolved: &BTreeSet<u64>,
    send_resolved: bool,
    repeat_interval_ms: i64,
    now_ms: i64,
) -> bool {
    let Some(entry) = entry else {
        // Never notified: only when something fires.
        return !firing.is_empty();
    };
    if !firing.is_subset(&entry.firing) {
        return true;
    }
    if firing.is_empty() {
        // Everything resolved: notify (or at least log) when the receiver was told
        // about firing alerts, whether or not it wants resolves, so the log clears.
        return !entry.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&entry.resolved) {
        return true;
    }
    entry.at_ms < now_ms - repeat_interval_ms
}

/// Writes `text` to `path` through a temporary file and a rename, so a crash leaves
/// the old or the new file, never half of one. Blocking: call from a blocking thread.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Reads a state file; a missing one is `None`.
pub fn read_optional(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(start: i64, end: i64, updated: i64, timeout: bool) -> StoredAlert {
        StoredAlert {
            labels: [("alertname".to_string(), "X".to_string())].into(),
            annotations: LabelMap::new(),
            starts_at_ms: start,
            ends_at_ms: end,
            generator_url: String::new(),
            updated_at_ms: updated,
            timeout,
        }
    }

    #[test]
    fn put_extends_and_resolves_like_alertmanager() {
        let now = 10_000;
        let old = alert(1_000, 20_000, 5_000, false);
        // A re-send with a later end replaces (ranges do not overlap by the rule).
        let later = StoredAlert::put(Some(&old), alert(1_000, 30_000, now, false), now);
        assert_eq!(later.ends_at_ms, 30_000);
        // A resolve inside the range merges: the explicit resolve wins.
        let res = StoredAlert::put(Some(&old), alert(1_000, 9_000, now, false), now);
        assert_eq!(res.ends_at_ms, 9_000);
        assert!(res.resolved(now));
        // A shorter, still-firing update keeps the longer explicit end.
        let shorter = StoredAlert::put(Some(&old), alert(2_000, 15_000, now, false), now);
        assert_eq!((shorter.starts_at_ms, shorter.ends_at_ms), (1_000, 20_000));
        // ...but not one that only came from resolve_timeout.
        let old_timeout = alert(1_000, 20_000, 5_000, true);
        let shorter = StoredAlert::put(Some(&old_timeout), alert(2_000, 15_000, now, false), now);
        assert_eq!(shorter.ends_at_ms, 15_000);
        // Missing times get the API's defaults.
        let p = PostableAlert {
            labels: LabelMap::new(),
            annotations: LabelMap::new(),
            starts_at_ms: 0,
            ends_at_ms: 0,
            generator_url: String::new(),
        };
        let s = StoredAlert::from_postable(p, now, 300_000);
        assert_eq!(
            (s.starts_at_ms, s.ends_at_ms, s.timeout),
            (now, now + 300_000, true)
        );
    }

    fn set(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    #[test]
    fn needs_update_follows_dedup_stage() {
        let entry = NflogEntry {
            group_key: "g".into(),
            receiver: "r".into(),
            integration: 0,
            firing: set(&[1, 2]),
            resolved: set(&[]),
            at_ms: 1_000,
        };
        let e = Some(&entry);
        assert!(!needs_update(None, &set(&[]), &set(&[1]), true, 100, 2_000));
        assert!(needs_update(None, &set(&[1]), &set(&[]), true, 100, 2_000));
        // Unchanged: only after repeat_interval.
        assert!(!needs_update(
            e,
            &set(&[1, 2]),
            &set(&[]),
            true,
            10_000,
            5_000
        ));
        assert!(needs_update(
            e,
            &set(&[1, 2]),
            &set(&[]),
            true,
            10_000,
            11_001
        ));
        // A new firing alert.
        assert!(needs_update(
            e,
            &set(&[1, 3]),
            &set(&[]),
            false,
            10_000,
            5_000
        ));
        // One resolved: only for send_resolved.
        assert!(needs_update(e, &set(&[1]), &set(&[2]), true, 10_000, 5_000));
        assert!(!needs_update(
            e,
            &set(&[1]),
            &set(&[2]),
            false,
            10_000,
            5_000
        ));
        // All resolved: always, so the log clears.
        assert!(needs_update(
            e,
            &set(&[]),
            &set(&[1, 2]),
            false,
            10_000,
            5_000
        ));
        let cleared = NflogEntry {
            firing: set(&[]),
            ..entry.clone()
        };
        assert!(!needs_update(
            Some(&cleared),
            &set(&[]),
            &set(&[1]),
            true,
            10_000,
            5_000
        ));
    }

    #[test]
    fn nflog_round_trips() {
        let mut n = Nflog::default();
        n.log(NflogEntry {
            group_key: "{}:{a=\"b\"}".into(),
            receiver: "r".into(),
            integration: 1,
            firing: set(&[u64::MAX]),
            resolved: set(&[7]),
            at_ms: 42,
        });
        let back = Nflog::from_json(&n.to_json()).unwrap();
        assert_eq!(
            back.get("{}:{a=\"b\"}", "r", 1),
            n.get("{}:{a=\"b\"}", "r", 1)
        );
        assert_eq!(back.last_for("{}:{a=\"b\"}", "r"), Some(42));
        let mut old = back.clone();
        old.gc(42 + NFLOG_RETENTION_MS);
        assert!(old.get("{}:{a=\"b\"}", "r", 1).is_none());
    }
}
