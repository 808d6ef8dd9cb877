//! The file tailer on real files: rotation by rename and by copytruncate, restarts from
//! checkpoints, long lines, invalid UTF-8, multiline records and where new files begin.
//! Each test drives the tailer as the agent's logs thread does (rescan, poll, encode,
//! checkpoint after the batch is "spooled") and decodes what it encoded.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vigil_agent::logs::LogStats;
use vigil_agent::logs::checkpoint::FileCheckpoints;
use vigil_agent::logs::lines::LineOptions;
use vigil_agent::logs::tailer::{Polled, TailOptions, Tailer};
use vigil_proto::logs as attr;
use vigil_proto::otlp::any_value::Value;
use vigil_proto::otlp::{AgentResource, LogsEncoder, decode_logs_request};

#[derive(Debug, Clone, PartialEq)]
struct Rec {
    body: String,
    path: String,
    truncated: bool,
    part: Option<i64>,
    invalid_utf8: bool,
    joined: Option<i64>,
}

struct Harness {
    state: PathBuf,
    opts: TailOptions,
    tailer: Tailer,
    stats: Arc<LogStats>,
}

impl Harness {
    fn new(state: &Path, opts: TailOptions) -> Self {
        let stats = Arc::new(LogStats::default());
        let store = FileCheckpoints::load(state).unwrap();
        let mut tailer = Tailer::new(opts.clone(), store, Arc::clone(&stats));
        let mut enc = LogsEncoder::new();
        tailer.rescan(&mut enc, 1);
        assert!(enc.is_empty());
        tailer.checkpoint();
        tailer.store.save(1).unwrap();
        Self {
            state: state.to_owned(),
            opts,
            tailer,
            stats,
        }
    }

    /// A restart: a new tailer from the saved checkpoints.
    fn restart(self) -> Self {
        Harness::new(&self.state, self.opts)
    }

    /// Rescans, reads everything new, "spools" it and checkpoints.
    fn read(&mut self) -> Vec<Rec> {
        let mut enc = LogsEncoder::new();
        self.tailer.rescan(&mut enc, 1);
        while let Polled::BatchFull = self.tailer.poll(&mut enc, 1 << 20, 1) {}
        let out = decode(&mut enc);
        self.tailer.checkpoint();
        self.tailer.store.save(1).unwrap();
        out
    }

    /// Reads without a rescan first (the logs thread polls many times per rescan).
    fn poll_only(&mut self) -> Vec<String> {
        let mut enc = LogsEncoder::new();
        while let Polled::BatchFull = self.tailer.poll(&mut enc, 1 << 20, 1) {}
        let out = decode(&mut enc);
        self.tailer.checkpoint();
        self.tailer.store.save(1).unwrap();
        out.into_iter().map(|r| r.body).collect()
    }

    fn bodies(&mut self) -> Vec<String> {
        self.read().into_iter().map(|r| r.body).collect()
    }
}

fn decode(enc: &mut LogsEncoder) -> Vec<Rec> {
    if enc.is_empty() {
        return Vec::new();
    }
    let bytes = enc.finish(&AgentResource {
        node: "n",
        agent_version: "0",
        interval_secs: 5.0,
    });
    let req = decode_logs_request(&bytes).unwrap();
    let mut out = Vec::new();
    for rl in req.resource_logs {
        for sl in rl.scope_logs {
            for r in sl.log_records {
                let get = |k: &str| {
                    r.attributes
                        .iter()
                        .find(|kv| kv.key == k)
                        .and_then(|kv| kv.value.clone())
                        .and_then(|v| v.value)
                };
                let Some(Value::StringValue(body)) = r.body.clone().and_then(|b| b.value) else {
                    panic!("body is not a string: {r:?}");
                };
                let Some(Value::StringValue(path)) = get(attr::FILE_PATH) else {
                    panic!("no path: {r:?}");
                };
                assert_eq!(get(attr::SOURCE), None, "the path is the source");
                out.push(Rec {
                    body,
                    path,
                    truncated: get(attr::TRUNCATED) == Some(Value::BoolValue(true)),
                    part: match get(attr::PART) {
                        Some(Value::IntValue(i)) => Some(i),
                        _ => None,
                    },
                    invalid_utf8: get(attr::INVALID_UTF8) == Some(Value::BoolValue(true)),
                    joined: match get(attr::JOINED_LINES) {
                        Some(Value::IntValue(i)) => Some(i),
                        _ => None,
                    },
                });
            }
        }
    }
    out
}

fn opts(pattern: &Path, first_start_at_end: bool) -> TailOptions {
    TailOptions {
        patterns: vec![pattern.to_string_lossy().into_owned()],
        lines: LineOptions {
            max_line_bytes: 1024,
            multiline_start: None,
            multiline_flush: Duration::from_millis(100),
        },
        first_start_at_end,
        linger: Duration::from_millis(0),
    }
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn lines(from: usize, to: usize) -> String {
    (from..to)
        .map(|i| format!("line {i:06} of the log\n"))
        .collect()
}

fn expect(from: usize, to: usize) -> Vec<String> {
    (from..to)
        .map(|i| format!("line {i:06} of the log"))
        .collect()
}

#[test]
fn rename_rotation_reads_the_old_file_to_its_end_and_the_new_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let mut h = Harness::new(
        &dir.path().join("state"),
        opts(&dir.path().join("app.log*"), false),
    );
    append(&log, &lines(0, 100));
    assert_eq!(h.bodies(), expect(0, 100));
    // Written, then rotated before the tailer looked: still read, from the renamed file.
    append(&log, &lines(100, 150));
    fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, &lines(150, 200));
    let mut got = h.bodies();
    got.sort();
    assert_eq!(got, expect(100, 200));
    // Rename again; the glob no longer matching the old file closes it, loses nothing.
    fs::rename(dir.path().join("app.log.1"), dir.path().join("old.1")).unwrap();
    fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, &lines(200, 210));
    assert_eq!(h.bodies(), expect(200, 210));
    assert_eq!(h.bodies(), Vec::<String>::new());
}

#[test]
fn copytruncate_resumes_from_the_copy_and_rereads_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let mut h = Harness::new(
        &dir.path().join("state"),
        opts(&dir.path().join("app.log*"), false),
    );
    append(&log, &lines(0, 100));
    assert_eq!(h.bodies(), expect(0, 100));
    // More lines, then copytruncate before the tailer read them, then new lines.
    append(&log, &lines(100, 130));
    fs::copy(&log, dir.path().join("app.log.1")).unwrap();
    File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, &lines(130, 140));
    let mut got = h.bodies();
    got.sort();
    assert_eq!(
        got,
        expect(100, 140),
        "the copy's tail and the new content, once each"
    );
    assert!(
        h.stats
            .truncations
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    // Truncated and rewritten past the old offset before a poll: caught by the changed
    // first bytes.
    append(&log, &lines(140, 150));
    assert_eq!(h.bodies(), expect(140, 150));
    fs::copy(&log, dir.path().join("app.log.2")).unwrap();
    File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, &lines(1000, 1100));
    let mut got = h.bodies();
    got.sort();
    assert_eq!(got, expect(1000, 1100));
    assert_eq!(h.bodies(), Vec::<String>::new());
}

#[test]
fn a_restart_resumes_at_the_checkpoint_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let small = dir.path().join("small.log");
    let mut h = Harness::new(
        &dir.path().join("state"),
        opts(&dir.path().join("*.log"), false),
    );
    append(&log, &lines(0, 50));
    append(&small, "tiny\n");
    let mut got = h.bodies();
    got.sort();
    let mut want = expect(0, 50);
    want.push("tiny".into());
    assert_eq!(got, want);
    // Written while "down", including an unfinished line finished after the restart.
    append(&log, &lines(50, 60));
    append(&log, "half a li");
    append(&small, "grows past its short fingerprint\n");
    let mut h = h.restart();
    append(&log, "ne\n");
    let mut got = h.bodies();
    got.sort();
    let mut want = expect(50, 60);
    want.push("grows past its short fingerprint".into());
    want.push("half a line".into());
    want.sort();
    assert_eq!(got, want);
    let mut h = h.restart();
    assert_eq!(h.bodies(), Vec::<String>::new());
    append(&small, &"y".repeat(300));
    append(&small, "\n");
    let mut h = h.restart();
    assert_eq!(h.bodies(), ["y".repeat(300)]);
}

#[test]
fn long_lines_are_split_and_marked_and_invalid_utf8_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let mut h = Harness::new(&dir.path().join("state"), opts(&log, false));
    let long = "z".repeat(2500);
    append(&log, &format!("{long}\nshort\n"));
    let mut f = OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(b"bad \xff\xfe bytes\n").unwrap();
    let got = h.read();
    assert_eq!(got.len(), 5);
    for (i, r) in got[..3].iter().enumerate() {
        assert!(r.truncated, "{r:?}");
        assert_eq!(r.part, Some(i as i64));
    }
    let joined: String = got[..3].iter().map(|r| r.body.as_str()).collect();
    assert_eq!(joined, long, "nothing dropped");
    assert_eq!((got[3].body.as_str(), got[3].truncated), ("short", false));
    assert!(got[4].invalid_utf8);
    assert_eq!(got[4].body, "bad \u{fffd}\u{fffd} bytes");
    assert!(!got[3].invalid_utf8);
    let stats = &h.stats.file;
    assert_eq!(
        stats.truncated.load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert_eq!(
        stats
            .invalid_utf8
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn multiline_records_join_stack_traces() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let mut o = opts(&log, false);
    o.lines.multiline_start = Some(regex::bytes::Regex::new(r"^\d{4}-").unwrap());
    let mut h = Harness::new(&dir.path().join("state"), o);
    append(
        &log,
        "2026-11-27 error\nTraceback:\n  File \"x.py\"\nValueError\n2026-11-27 next\n",
    );
    let got = h.read();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].body,
        "2026-11-27 error\nTraceback:\n  File \"x.py\"\nValueError"
    );
    assert_eq!(got[0].joined, Some(4));
    // The last record goes after the flush timeout, and a restart before that re-reads
    // it rather than losing it.
    let mut h = h.restart();
    assert_eq!(h.bodies(), Vec::<String>::new());
    std::thread::sleep(Duration::from_millis(150));
    let got = h.read();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].body.as_str(), got[0].joined),
        ("2026-11-27 next", None)
    );
}

#[test]
fn first_start_begins_at_the_end_later_files_at_their_start() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.log");
    append(&old, &lines(0, 10));
    let mut h = Harness::new(
        &dir.path().join("state"),
        opts(&dir.path().join("*.log"), true),
    );
    assert_eq!(h.bodies(), Vec::<String>::new(), "history is not shipped");
    append(&old, &lines(10, 12));
    let new = dir.path().join("new.log");
    append(&new, &lines(100, 103));
    let mut got = h.bodies();
    got.sort();
    let mut want = expect(10, 12);
    want.extend(expect(100, 103));
    assert_eq!(got, want);
    // Not the first start any more: a file created while down is read whole.
    let mut h = h.restart();
    append(&dir.path().join("while-down.log"), &lines(200, 205));
    assert_eq!(h.bodies(), expect(200, 205));
    assert!(h.read().iter().all(|r| !r.path.is_empty()));
}

#[test]
fn a_file_read_before_any_rescan_fingerprinted_it_is_still_checkpointed() {
    // Found empty, written to, read by a poll with no rescan in between, then rotated by
    // copytruncate while the agent is down: the copy must resume, not start over.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let h = Harness::new(
        &dir.path().join("state"),
        opts(&dir.path().join("app.log*"), false),
    );
    let mut h = h;
    append(&log, &lines(0, 5));
    assert_eq!(h.poll_only(), expect(0, 5));
    fs::copy(&log, dir.path().join("app.log.1")).unwrap();
    File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, &lines(5, 8));
    let mut h = h.restart();
    assert_eq!(h.bodies(), expect(5, 8));
}
