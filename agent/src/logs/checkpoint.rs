//! Where reading stopped, persisted under `<state_dir>/logs/` so that a restart resumes
//! there: per tailed file (keyed by a fingerprint of its first bytes) and for the kernel
//! log (its last sequence number, with the boot it belongs to).
//!
//! A checkpoint is saved only after the lines before it are in the spool (the caller's
//! order: append, then save), so it never runs ahead of what will be shipped. Files are
//! replaced by rename without fsync, like the spool's head: a power loss may bring back
//! an older checkpoint and resend what came after it, never lose it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// Bytes a fingerprint covers once a file has that many; shorter files are
/// fingerprinted over what they have, and again as they grow.
pub const FINGERPRINT_BYTES: usize = 256;
/// Checkpoints of files not seen for this long are forgotten.
const FORGET_AFTER_SECS: u64 = 7 * 24 * 3600;
/// At most this many file checkpoints are kept (the most recently seen).
const MAX_ENTRIES: usize = 4096;

/// A hash of a file's first `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    pub hash: u64,
    pub len: u32,
}

impl Fingerprint {
    /// FNV-1a 64: stable across builds and versions, unlike std's hasher, which matters
    /// for a value written to disk.
    pub fn of(bytes: &[u8]) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self {
            hash,
            len: bytes.len() as u32,
        }
    }

    /// Whether a file whose first bytes are `prefix` (up to [`FINGERPRINT_BYTES`]) has
    /// this fingerprint.
    pub fn matches(&self, prefix: &[u8]) -> bool {
        let len = self.len as usize;
        len > 0 && prefix.len() >= len && Fingerprint::of(&prefix[..len]) == *self
    }
}

/// Reads up to [`FINGERPRINT_BYTES`] from the start of `file`.
pub fn read_prefix(file: &File, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.resize(FINGERPRINT_BYTES, 0);
    let mut filled = 0;
    while filled < FINGERPRINT_BYTES {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(())
}

/// One file's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheckpoint {
    pub fingerprint: Fingerprint,
    /// Bytes from the file's start that are in the spool.
    pub offset: u64,
    /// Where the file was last seen (for operators reading the state file).
    pub path: PathBuf,
    pub seen_unix_secs: u64,
}

/// The file checkpoints, in memory and in `<dir>/files.checkpoints`.
#[derive(Debug)]
pub struct FileCheckpoints {
    path: PathBuf,
    pub entries: HashMap<Fingerprint, FileCheckpoint>,
    /// Whether the file existed when loaded: false at the agent's very first start.
    pub existed: bool,
}

impl FileCheckpoints {
    /// Loads the checkpoints; a missing file is an empty store, unreadable lines are
    /// skipped with a log line (the files they named are read again from the start).
    pub fn load(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("files.checkpoints");
        let (text, existed) = match std::fs::read_to_string(&path) {
            Ok(text) => (text, true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (String::new(), false),
            Err(e) => return Err(e),
        };
        let mut entries = HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            match parse_file_line(line) {
                Some(c) => {
                    entries.insert(c.fingerprint, c);
                }
                None => {
                    tracing::warn!(file = %path.display(), line, "logs: unreadable checkpoint line skipped")
                }
            }
        }
        Ok(Self {
            path,
            entries,
            existed,
        })
    }

    /// The checkpoint of the file whose first bytes are `prefix`, if any.
    pub fn find(&self, prefix: &[u8]) -> Option<&FileCheckpoint> {
        // Longest fingerprint first: a short file's entry must not shadow a longer one.
        self.entries
            .values()
            .filter(|c| c.fingerprint.matches(prefix))
            .max_by_key(|c| c.fingerprint.len)
    }

    pub fn put(&mut self, checkpoint: FileCheckpoint) {
        self.entries.insert(checkpoint.fingerprint, checkpoint);
    }

    pub fn remove(&mut self, fingerprint: &Fingerprint) {
        self.entries.remove(fingerprint);
    }

    /// Writes every entry (dropping the stale ones) to a temporary file and renames it
    /// over the old one.
    pub fn save(&mut self, now_unix_secs: u64) -> io::Result<()> {
        self.entries
            .retain(|_, c| now_unix_secs.saturating_sub(c.seen_unix_secs) < FORGET_AFTER_SECS);
        if self.entries.len() > MAX_ENTRIES {
            let mut seen: Vec<u64> = self.entries.values().map(|c| c.seen_unix_secs).collect();
            seen.sort_unstable_by(|a, b| b.cmp(a));
            let cutoff = seen[MAX_ENTRIES - 1];
            self.entries.retain(|_, c| c.seen_unix_secs >= cutoff);
        }
        let mut text = String::with_capacity(64 + self.entries.len() * 96);
        text.push_str("# vigil-agent log file checkpoints: fingerprint fingerprint_len offset seen_unix_secs path\n");
        for c in self.entries.values() {
            use std::fmt::Write as _;
            let _ = writeln!(
                text,
                "{:016x} {} {} {} {}",
                c.fingerprint.hash,
                c.fingerprint.len,
                c.offset,
                c.seen_unix_secs,
                c.path.display()
            );
        }
        replace_file(&self.path, text.as_bytes())?;
        self.existed = true;
        Ok(())
    }
}

fn parse_file_line(line: &str) -> Option<FileCheckpoint> {
    let mut fields = line.splitn(5, ' ');
    let hash = u64::from_str_radix(fields.next()?, 16).ok()?;
    let len = fields.next()?.parse().ok()?;
    let offset = fields.next()?.parse().ok()?;
    let seen_unix_secs = fields.next()?.parse().ok()?;
    let path = PathBuf::from(fields.next()?);
    (len > 0).then_some(FileCheckpoint {
        fingerprint: Fingerprint { hash, len },
        offset,
        path,
        seen_unix_secs,
    })
}

/// The kernel log's checkpoint: the last sequence number in the spool, valid only for
/// the boot it was taken in (sequence numbers restart at boot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgCheckpoint {
    pub boot_id: String,
    pub seq: u64,
}

impl KmsgCheckpoint {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("kmsg.checkpoint")
    }

    pub fn load(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(Self::path(dir)).ok()?;
        let (boot_id, seq) = text.trim().split_once(' ')?;
        Some(Self {
            boot_id: boot_id.to_owned(),
            seq: seq.parse().ok()?,
        })
    }

    pub fn save(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        replace_file(
            &Self::path(dir),
            format!("{} {}\n", self.boot_id, self.seq).as_bytes(),
        )
    }
}

fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_match_prefixes_of_their_length() {
        let fp = Fingerprint::of(b"hello\n");
        assert!(fp.matches(b"hello\nworld\n"));
        assert!(!fp.matches(b"hello"));
        assert!(!fp.matches(b"jello\n"));
        assert!(
            !Fingerprint::of(b"").matches(b"anything"),
            "an empty file matches nothing"
        );
    }

    #[test]
    fn file_checkpoints_round_trip_and_prefer_the_longest() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileCheckpoints::load(dir.path()).unwrap();
        assert!(!store.existed);
        let content = b"first line of a log\nsecond\n";
        for (len, offset) in [(6, 6), (content.len(), content.len() as u64)] {
            store.put(FileCheckpoint {
                fingerprint: Fingerprint::of(&content[..len]),
                offset,
                path: PathBuf::from("/var/log/with space.log"),
                seen_unix_secs: 1_000,
            });
        }
        store.save(2_000).unwrap();
        let loaded = FileCheckpoints::load(dir.path()).unwrap();
        assert!(loaded.existed);
        assert_eq!(loaded.entries, store.entries);
        let found = loaded.find(content).unwrap();
        assert_eq!(found.offset, content.len() as u64);
        assert_eq!(found.path, PathBuf::from("/var/log/with space.log"));
        assert!(loaded.find(b"other").is_none());
        // Stale entries go at the next save.
        store.save(1_000 + FORGET_AFTER_SECS).unwrap();
        assert!(store.entries.is_empty());
    }

    #[test]
    fn kmsg_checkpoint_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(KmsgCheckpoint::load(dir.path()), None);
        let c = KmsgCheckpoint {
            boot_id: "0b1c".into(),
            seq: 4_010,
        };
        c.save(dir.path()).unwrap();
        assert_eq!(KmsgCheckpoint::load(dir.path()), Some(c));
    }
}
