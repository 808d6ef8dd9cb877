//! Silences with Alertmanager's `silence/silence.go` semantics: a silence mutes every
//! alert all its matchers match while it is active (`startsAt <= now < endsAt`);
//! before that it is pending, after that expired. Updating a silence in place is
//! allowed when its matchers stay the same and the change does not rewrite the past
//! (an active silence keeps its start); otherwise the old one is expired and a new
//! one with a new id replaces it. Expired silences are kept for 5 days, then dropped.
//!
//! Silences declared in the configuration file (maintenance windows) sit beside the
//! API's and cannot be changed or expired through the API.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::LabelMap;
use super::config::ConfigSilence;
use super::matchers::{MatchType, Matcher};

/// How long an expired silence is kept (Alertmanager's `--data.retention`).
pub const EXPIRED_RETENTION_MS: i64 = 5 * 24 * 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl SilenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceState::Pending => "pending",
            SilenceState::Active => "active",
            SilenceState::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub updated_at_ms: i64,
    pub created_by: String,
    pub comment: String,
    /// Declared in the configuration file: read-only through the API.
    pub from_config: bool,
}

impl Silence {
    pub fn state(&self, now_ms: i64) -> SilenceState {
        if now_ms < self.starts_at_ms {
            SilenceState::Pending
        } else if now_ms < self.ends_at_ms {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    /// Whether the silence mutes an alert with these labels now.
    pub fn mutes(&self, labels: &LabelMap, now_ms: i64) -> bool {
        self.state(now_ms) == SilenceState::Active && Matcher::all_match(&self.matchers, labels)
    }
}

/// A silence to create (`id: None`) or update, as the API's `PostableSilence` has it.
#[derive(Debug, Clone, PartialEq)]
pub struct PostableSilence {
    pub id: Option<String>,
    pub matchers: Vec<Matcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub created_by: String,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SilenceError {
    #[error("silence {0} not found")]
    NotFound(String),
    #[error("{field}: {msg}")]
    Invalid { field: &'static str, msg: String },
    #[error(
        "silence {0} is declared in the configuration file and cannot be changed through the API"
    )]
    ReadOnly(String),
    #[error("silence {0} is already expired")]
    AlreadyExpired(String),
}

fn invalid(field: &'static str, msg: impl Into<String>) -> SilenceError {
    SilenceError::Invalid {
        field,
        msg: msg.into(),
    }
}

/// The silences: the API's (persisted) and the configuration file's.
#[derive(Debug, Clone, Default)]
pub struct Silences {
    api: Vec<Silence>,
    config: Vec<Silence>,
}

impl Silences {
    /// Replaces the configuration file's silences. Their ids are derived from their
    /// content, so a reload that keeps a window keeps its id.
    pub fn set_config(&mut self, list: &[ConfigSilence]) {
        self.config = list
            .iter()
            .map(|c| {
                let mut text = format!("{}|{}|", c.starts_at_ms, c.ends_at_ms);
                for m in &c.matchers {
                    text.push_str(&m.to_string());
                    text.push(',');
                }
                let fp = super::fingerprint(&[("k".to_string(), text)].into_iter().collect());
                Silence {
                    id: format!("config-{fp:016x}"),
                    matchers: c.matchers.clone(),
                    starts_at_ms: c.starts_at_ms,
                    ends_at_ms: c.ends_at_ms,
                    updated_at_ms: c.starts_at_ms,
                    created_by: c.created_by.clone(),
                    comment: c.comment.clone(),
                    from_config: true,
                }
            })
            .collect();
    }

    /// Every silence, configuration file's first.
    pub fn all(&self) -> impl Iterator<Item = &Silence> {
        self.config.iter().chain(self.api.iter())
    }

    pub fn get(&self, id: &str) -> Option<&Silence> {
        self.all().find(|s| s.id == id)
    }

    /// The ids of the active silences that mute these labels.
    pub fn muting(&self, labels: &LabelMap, now_ms: i64) -> Vec<String> {
        self.all()
            .filter(|s| s.mutes(labels, now_ms))
            .map(|s| s.id.clone())
            .collect()
    }

    /// Creates or updates a silence; returns its id (a new one when an update could
    /// not be done in place).
    pub fn upsert(&mut self, p: PostableSilence, now_ms: i64) -> Result<String, SilenceError> {
        validate(&p, now_ms)?;
        let mut starts_at_ms = p.starts_at_ms;
        if let Some(id) = &p.id {
            if self.config.iter().any(|s| &s.id == id) {
                return Err(SilenceError::ReadOnly(id.clone()));
            }
            let Some(prev) = self.api.iter_mut().find(|s| &s.id == id) else {
                return Err(SilenceError::NotFound(id.clone()));
            };
            if can_update(prev, &p, now_ms) {
                prev.starts_at_ms = p.starts_at_ms;
                prev.ends_at_ms = p.ends_at_ms;
                prev.created_by = p.created_by;
                prev.comment = p.comment;
                prev.updated_at_ms = now_ms;
                return Ok(id.clone());
            }
            if prev.state(now_ms) != SilenceState::Expired {
                expire_in_place(prev, now_ms);
            }
        }
        if starts_at_ms < now_ms {
            starts_at_ms = now_ms;
        }
        let id = new_id();
        self.api.push(Silence {
            id: id.clone(),
            matchers: p.matchers,
            starts_at_ms,
            ends_at_ms: p.ends_at_ms,
            updated_at_ms: now_ms,
            created_by: p.created_by,
            comment: p.comment,
            from_config: false,
        });
        Ok(id)
    }

    /// Ends a silence now (a pending one never becomes active).
    pub fn expire(&mut self, id: &str, now_ms: i64) -> Result<(), SilenceError> {
        if self.config.iter().any(|s| s.id == id) {
            return Err(SilenceError::ReadOnly(id.into()));
        }
        let s = self
            .api
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(|| SilenceError::NotFound(id.into()))?;
        if s.state(now_ms) == SilenceState::Expired {
            return Err(SilenceError::AlreadyExpired(id.into()));
        }
        expire_in_place(s, now_ms);
        Ok(())
    }

    /// Drops API silences expired more than [`EXPIRED_RETENTION_MS`] ago; returns
    /// how many went.
    pub fn gc(&mut self, now_ms: i64) -> usize {
        let before = self.api.len();
        self.api
            .retain(|s| s.ends_at_ms + EXPIRED_RETENTION_MS > now_ms);
        before - self.api.len()
    }

    /// Counts by state, for `vigil_silences{state}`.
    pub fn count_by_state(&self, now_ms: i64) -> [(SilenceState, usize); 3] {
        let mut out = [
            (SilenceState::Active, 0),
            (SilenceState::Pending, 0),
            (SilenceState::Expired, 0),
        ];
        for s in self.all() {
            let st = s.state(now_ms);
            if let Some(e) = out.iter_mut().find(|(k, _)| *k == st) {
                e.1 += 1;
            }
        }
        out
    }

    /// Reads `silences.json`; a missing file is no silences.
    pub fn load(path: &Path) -> Result<Silences, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Silences::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let records: Vec<SilenceRecord> =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut api = Vec::new();
        for r in records {
            let mut matchers = Vec::new();
            for m in &r.matchers {
                let kind = match (m.is_regex, m.is_equal) {
                    (false, true) => MatchType::Equal,
                    (false, false) => MatchType::NotEqual,
                    (true, true) => MatchType::Regexp,
                    (true, false) => MatchType::NotRegexp,
                };
                matchers.push(
                    Matcher::new(&m.name, kind, &m.value)
                        .map_err(|e| format!("{}: silence {}: {e}", path.display(), r.id))?,
                );
            }
            api.push(Silence {
                id: r.id,
                matchers,
                starts_at_ms: r.starts_at_ms,
                ends_at_ms: r.ends_at_ms,
                updated_at_ms: r.updated_at_ms,
                created_by: r.created_by,
                comment: r.comment,
                from_config: false,
            });
        }
        Ok(Silences {
            api,
            config: Vec::new(),
        })
    }

    /// The API's silences as `silences.json` keeps them.
    pub fn to_json(&self) -> String {
        let records: Vec<SilenceRecord> = self
            .api
            .iter()
            .map(|s| SilenceRecord {
                id: s.id.clone(),
                matchers: s.matchers.iter().map(MatcherRecord::from).collect(),
                starts_at_ms: s.starts_at_ms,
                ends_at_ms: s.ends_at_ms,
                updated_at_ms: s.updated_at_ms,
                created_by: s.created_by.clone(),
                comment: s.comment.clone(),
            })
            .collect();
        // Plain data of strings and integers: serialising it cannot fail.
        serde_json::to_string_pretty(&records).unwrap_or_default()
    }
}

/// A matcher as Alertmanager's API v2 writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatcherRecord {
    pub name: String,
    pub value: String,
    #[serde(rename = "isRegex")]
    pub is_regex: bool,
    #[serde(rename = "isEqual", default = "default_true")]
    pub is_equal: bool,
}

fn default_true() -> bool {
    true
}

impl From<&Matcher> for MatcherRecord {
    fn from(m: &Matcher) -> Self {
        MatcherRecord {
            name: m.name.clone(),
            value: m.value.clone(),
            is_regex: m.is_regex(),
            is_equal: m.is_equal(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SilenceRecord {
    id: String,
    matchers: Vec<MatcherRecord>,
    starts_at_ms: i64,
    ends_at_ms: i64,
    updated_at_ms: i64,
    created_by: String,
    comment: String,
}

fn validate(p: &PostableSilence, now_ms: i64) -> Result<(), SilenceError> {
    if p.matchers.is_empty() {
        return Err(invalid("matchers", "at least one matcher required"));
    }
    for m in &p.matchers {
        if !vigil_rules::rulefile::is_valid_label_name(&m.name) {
            return Err(invalid(
                "matchers",
                format!("invalid label name {:?}", m.name),
            ));
        }
    }
    if p.matchers.iter().all(Matcher::matches_empty) {
        return Err(invalid(
            "matchers",
            "at least one matcher must not match the empty string",
        ));
    }
    if p.ends_at_ms <= p.starts_at_ms {
        return Err(invalid("endsAt", "start time must be before end time"));
    }
    if p.ends_at_ms < now_ms {
        return Err(invalid("endsAt", "end time can't be in the past"));
    }
    if p.created_by.is_empty() {
        return Err(invalid("createdBy", "creator information missing"));
    }
    Ok(())
}

/// Alertmanager's `canUpdate`.
fn can_update(prev: &Silence, next: &PostableSilence, now_ms: i64) -> bool {
    if prev.matchers != next.matchers {
        return false;
    }
    match prev.state(now_ms) {
        SilenceState::Active => {
            prev.starts_at_ms / 1000 == next.starts_at_ms / 1000 && next.ends_at_ms >= now_ms
        }
        SilenceState::Pending => next.starts_at_ms >= now_ms,
        SilenceState::Expired => false,
    }
}

fn expire_in_place(s: &mut Silence, now_ms: i64) {
    if s.state(now_ms) == SilenceState::Pending {
        s.starts_at_ms = now_ms;
    }
    s.ends_at_ms = now_ms;
    s.updated_at_ms = now_ms;
}

/// A random (version 4) UUID, as Alertmanager's silence ids are; recovery actions
/// use them too.
pub(crate) fn new_id() -> String {
    let mut b = [0u8; 16];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        // The system RNG failing is not worth refusing a silence (or an action) over: time and a
        // counter still make the id unique within this process.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b[..8].copy_from_slice(&t.to_le_bytes());
        b[8..].copy_from_slice(&n.to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::matchers::parse_matchers;

    fn post(m: &str, start: i64, end: i64) -> PostableSilence {
        PostableSilence {
            id: None,
            matchers: parse_matchers(m).unwrap(),
            starts_at_ms: start,
            ends_at_ms: end,
            created_by: "ops".into(),
            comment: "maintenance".into(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> LabelMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn states_and_muting() {
        let mut s = Silences::default();
        let id = s.upsert(post(r#"node="n1""#, 1_000, 2_000), 500).unwrap();
        let l = labels(&[("alertname", "X"), ("node", "n1")]);
        assert_eq!(s.get(&id).unwrap().state(500), SilenceState::Pending);
        assert!(s.muting(&l, 500).is_empty());
        assert_eq!(s.muting(&l, 1_500), vec![id.clone()]);
        assert!(s.muting(&labels(&[("node", "n2")]), 1_500).is_empty());
        assert_eq!(s.get(&id).unwrap().state(2_000), SilenceState::Expired);
        assert!(s.muting(&l, 2_000).is_empty());
        assert_eq!(id.len(), 36);
    }

    #[test]
    fn update_in_place_or_replace_and_expire() {
        let mut s = Silences::default();
        let id = s.upsert(post(r#"node="n1""#, 1_000, 5_000), 1_000).unwrap();
        // Active: a longer end with the same start and matchers updates in place.
        let mut upd = post(r#"node="n1""#, 1_000, 9_000);
        upd.id = Some(id.clone());
        assert_eq!(s.upsert(upd, 2_000).unwrap(), id);
        assert_eq!(s.get(&id).unwrap().ends_at_ms, 9_000);
        // Other matchers: the old one expires and a new id replaces it.
        let mut other = post(r#"node="n2""#, 2_000, 9_000);
        other.id = Some(id.clone());
        let id2 = s.upsert(other, 3_000).unwrap();
        assert_ne!(id2, id);
        assert_eq!(s.get(&id).unwrap().state(3_000), SilenceState::Expired);
        assert_eq!(s.get(&id2).unwrap().starts_at_ms, 3_000);
        s.expire(&id2, 4_000).unwrap();
        assert_eq!(
            s.expire(&id2, 4_000),
            Err(SilenceError::AlreadyExpired(id2.clone()))
        );
        assert_eq!(
            s.expire("nope", 4_000),
            Err(SilenceError::NotFound("nope".into()))
        );
        // Garbage collection after five days.
        assert_eq!(s.gc(3_000 + EXPIRED_RETENTION_MS - 1), 0);
        assert_eq!(s.gc(4_000 + EXPIRED_RETENTION_MS + 1), 2);
    }

    #[test]
    fn validation_names_the_field() {
        let mut s = Silences::default();
        let e = s.upsert(post(r#"node=~".*""#, 0, 10), 0).unwrap_err();
        assert!(
            matches!(
                e,
                SilenceError::Invalid {
                    field: "matchers",
                    ..
                }
            ),
            "{e}"
        );
        let e = s.upsert(post("node=a", 10, 5), 0).unwrap_err();
        assert!(
            matches!(
                e,
                SilenceError::Invalid {
                    field: "endsAt",
                    ..
                }
            ),
            "{e}"
        );
        let e = s.upsert(post("node=a", 0, 5), 100).unwrap_err();
        assert_eq!(e.to_string(), "endsAt: end time can't be in the past");
    }

    #[test]
    fn config_silences_are_read_only_and_persistence_round_trips() {
        let mut s = Silences::default();
        s.set_config(&[ConfigSilence {
            matchers: parse_matchers("node=n9").unwrap(),
            starts_at_ms: 0,
            ends_at_ms: 10_000,
            created_by: "config".into(),
            comment: "window".into(),
            line: 3,
        }]);
        let cid = s.all().next().unwrap().id.clone();
        assert!(cid.starts_with("config-"));
        assert_eq!(s.expire(&cid, 1), Err(SilenceError::ReadOnly(cid.clone())));
        let id = s.upsert(post(r#"a!~"x|y",b="c""#, 0, 10_000), 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silences.json");
        std::fs::write(&path, s.to_json()).unwrap();
        let back = Silences::load(&path).unwrap();
        // Only the API's silences are persisted; the file's come from the config.
        assert_eq!(back.all().count(), 1);
        assert_eq!(back.get(&id), s.get(&id));
        std::fs::write(&path, "{").unwrap();
        assert!(Silences::load(&path).unwrap_err().contains("silences.json"));
    }
}
