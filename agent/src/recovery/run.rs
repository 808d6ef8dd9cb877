//! One script run: the child in its own process group, its output as log records, its
//! time limit, and the end of everything it started.
//!
//! Blocking throughout: it runs on the recovery worker's thread, with one thread per
//! output stream and one that waits for the child.

use std::io::Read;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vigil_proto::logs as keys;
use vigil_proto::otlp::{LogLine, LogValue, LogsEncoder};

use crate::logs::lines::{Assembler, LineOptions};
use crate::logs::{LogOutput, OwnedResource};

/// How long a script gets between SIGTERM and SIGKILL once past its limit.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// Lines longer than this are shipped in pieces of this size.
const MAX_LINE_BYTES: usize = 64 << 10;
/// How long output may wait in a batch before it goes to the spool, while the script
/// runs; everything is spooled before the run returns anyway.
const BATCH_MAX_WAIT: Duration = Duration::from_millis(200);
const BATCH_MAX_BYTES: usize = 256 << 10;
/// How long the runner waits, after the script's group is gone, for its output pipes
/// to close (a process that left the group with `setsid` may still hold them).
const PIPE_DRAIN_WAIT: Duration = Duration::from_secs(2);
/// Lines in flight between the readers and the runner; a script writing faster than
/// they are encoded waits on its pipe.
const LINE_QUEUE: usize = 1024;

const STDOUT_SEVERITY: (i32, &str) = (9, "INFO");
const STDERR_SEVERITY: (i32, &str) = (13, "WARN");

/// What one run needs.
pub struct RunSpec<'a> {
    pub path: &'a Path,
    pub dir: &'a Path,
    pub script: &'a str,
    pub action_id: &'a str,
    pub env: &'a [(String, String)],
    pub timeout: Duration,
    pub grace: Duration,
    pub max_output_bytes: u64,
    pub logs: Option<&'a dyn LogOutput>,
    pub resource: &'a OwnedResource,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub started_unix_ms: i64,
    pub finished_unix_ms: i64,
    /// The closing line: "reset-gpu exited with status 0 after 1.2 s".
    pub message: String,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

enum Event {
    Line {
        stream: Stream,
        bytes: Vec<u8>,
        part: Option<u32>,
        at_unix_nanos: u64,
    },
    Closed,
    Exited(std::io::Result<ExitStatus>),
}

/// Runs the script at `spec.path` with exactly `spec.env`, stdin from /dev/null, in
/// `spec.dir`, as the leader of a new process group. `on_spawned` is called with the
/// start time once the child exists. Past `spec.timeout` the whole group gets SIGTERM,
/// then SIGKILL after `spec.grace`. When the script's own process ends, every process
/// still in its group is killed (SIGKILL) before it is reaped, so nothing it started
/// outlives the action (short of leaving the group with `setsid`). Every line of output
/// is in `spec.logs` before this returns. Err: the script could not be spawned.
pub fn run(spec: &RunSpec<'_>, on_spawned: impl FnOnce(i64)) -> Result<Outcome, String> {
    let mut command = Command::new(spec.path);
    command
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(spec.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let begun = Instant::now();
    let started_unix_ms = unix_ms();
    let mut child = command
        .spawn()
        .map_err(|e| format!("{}: could not start: {e}", spec.script))?;
    on_spawned(started_unix_ms);
    let pgid = child.id() as libc::pid_t;
    // Set under the lock once the leader is reaped: from then on its pid (the group's
    // id) may belong to someone else, and the group must not be signalled.
    let reaped = Arc::new(Mutex::new(false));
    let (tx, rx) = sync_channel(LINE_QUEUE);
    let mut open_streams = 0;
    for (stream, pipe) in [
        (
            Stream::Stdout,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            Stream::Stderr,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        if let Some(pipe) = pipe {
            let tx = tx.clone();
            open_streams += 1;
            spawn_thread("recovery-output", move || read_lines(pipe, stream, tx));
        }
    }
    {
        let reaped = Arc::clone(&reaped);
        spawn_thread("recovery-wait", move || {
            wait_exited(pgid);
            // The leader is a zombie: its pid, and so the group id, cannot be reused yet.
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let mut reaped = reaped.lock().unwrap_or_else(|p| p.into_inner());
            let status = child.wait();
            *reaped = true;
            drop(reaped);
            let _ = tx.send(Event::Exited(status));
        });
    }
    let signal_group = |sig: libc::c_int| {
        let reaped = reaped.lock().unwrap_or_else(|p| p.into_inner());
        if !*reaped {
            // SAFETY: kill has no memory-safety preconditions; the group is ours while its
            // leader is unreaped.
            unsafe { libc::kill(-pgid, sig) };
        }
    };

    let mut capture = Capture::new(spec);
    let deadline = begun + spec.timeout;
    let mut timed_out = false;
    let mut kill_at = None;
    let mut status = None;
    let mut exited_at = None;
    loop {
        if status.is_some() && open_streams == 0 {
            break;
        }
        let now = Instant::now();
        if let Some(at) = exited_at
            && now.duration_since(at) >= PIPE_DRAIN_WAIT
        {
            tracing::warn!(
                action_id = spec.action_id,
                script = spec.script,
                "a process outside the script's group still holds its output open; not waiting for it"
            );
            break;
        }
        if status.is_none() && !timed_out && now >= deadline {
            timed_out = true;
            tracing::warn!(
                action_id = spec.action_id,
                script = spec.script,
                timeout_secs = spec.timeout.as_secs_f64(),
                "recovery script timed out; sending SIGTERM to its process group"
            );
            signal_group(libc::SIGTERM);
            kill_at = Some(now + spec.grace);
        }
        if status.is_none()
            && let Some(at) = kill_at
            && now >= at
        {
            signal_group(libc::SIGKILL);
            kill_at = None;
        }
        capture.flush_if_due(now);
        let mut wake = now + BATCH_MAX_WAIT;
        if status.is_none() && !timed_out {
            wake = wake.min(deadline);
        }
        if let Some(at) = kill_at {
            wake = wake.min(at);
        }
        if let Some(at) = exited_at {
            wake = wake.min(at + PIPE_DRAIN_WAIT);
        }
        match recv_until(&rx, wake) {
            Ok(Event::Line {
                stream,
                bytes,
                part,
                at_unix_nanos,
            }) => capture.line(stream, &bytes, part, at_unix_nanos),
            Ok(Event::Closed) => open_streams -= 1,
            Ok(Event::Exited(s)) => {
                status = Some(s);
                exited_at = Some(Instant::now());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let elapsed = begun.elapsed();
    let finished_unix_ms = unix_ms();
    let (exit_code, signal, error) = match status {
        Some(Ok(s)) => (s.code(), s.signal(), None),
        Some(Err(e)) => (None, None, Some(e.to_string())),
        None => (None, None, Some("the wait for it failed".to_owned())),
    };
    let message = closing_message(
        spec.script,
        exit_code,
        signal,
        timed_out.then_some(spec.timeout),
        elapsed,
        error.as_deref(),
    );
    let succeeded = exit_code == Some(0) && !timed_out;
    capture.finish(&message, succeeded);
    Ok(Outcome {
        exit_code,
        signal,
        timed_out,
        started_unix_ms,
        finished_unix_ms,
        message,
    })
}

/// The script's last record and its report's message.
fn closing_message(
    script: &str,
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out_at: Option<Duration>,
    elapsed: Duration,
    error: Option<&str>,
) -> String {
    let after = format!("after {:.1} s", elapsed.as_secs_f64());
    let how = match (exit_code, signal, error) {
        (_, _, Some(e)) => format!("ended, but its status is unknown ({e})"),
        (Some(code), _, _) => format!("exited with status {code}"),
        (None, Some(sig), _) => format!("was killed by signal {sig} ({})", signal_name(sig)),
        (None, None, None) => "ended with an unknown status".to_owned(),
    };
    match timed_out_at {
        Some(limit) => format!(
            "{script} timed out after {} s and {how} {after}",
            limit.as_secs()
        ),
        None => format!("{script} {how} {after}"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// Blocks until `pid` has exited, without reaping it.
fn wait_exited(pid: libc::pid_t) {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value; waitid writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t for the call's duration.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Reads one of the script's streams into lines until it closes.
fn read_lines(mut pipe: Box<dyn Read + Send>, stream: Stream, tx: SyncSender<Event>) {
    let opts = LineOptions {
        max_line_bytes: MAX_LINE_BYTES,
        multiline_start: None,
        multiline_flush: Duration::ZERO,
    };
    let mut lines = Assembler::default();
    let mut buf = vec![0u8; 16 << 10];
    let mut receiver_gone = false;
    let mut emit = |piece: crate::logs::lines::Piece<'_>| {
        if receiver_gone {
            return;
        }
        let event = Event::Line {
            stream,
            bytes: piece.bytes.to_vec(),
            part: piece.part,
            at_unix_nanos: unix_nanos(),
        };
        receiver_gone = tx.send(event).is_err();
    };
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => lines.feed(&opts, &buf[..n], &mut emit),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if lines.unemitted_bytes() > 0 {
        // The last line had no newline.
        lines.feed(&opts, b"\n", &mut emit);
    }
    let _ = tx.send(Event::Closed);
}

/// The action's output as log records, up to its byte cap.
struct Capture<'a> {
    spec: &'a RunSpec<'a>,
    source: String,
    encoder: LogsEncoder,
    first_pending: Option<Instant>,
    kept_bytes: u64,
    dropped_bytes: u64,
    dropped_lines: u64,
}

impl<'a> Capture<'a> {
    fn new(spec: &'a RunSpec<'a>) -> Self {
        Self {
            spec,
            source: format!("{}{}", keys::SOURCE_RECOVERY_PREFIX, spec.action_id),
            encoder: LogsEncoder::new(),
            first_pending: None,
            kept_bytes: 0,
            dropped_bytes: 0,
            dropped_lines: 0,
        }
    }

    fn line(&mut self, stream: Stream, bytes: &[u8], part: Option<u32>, at_unix_nanos: u64) {
        let len = bytes.len() as u64;
        // Once one line is dropped, every later one is too: the shipped output is a
        // prefix of the script's, without holes.
        if self.dropped_lines > 0 || self.kept_bytes + len > self.spec.max_output_bytes {
            self.dropped_bytes += len;
            self.dropped_lines += 1;
            return;
        }
        self.kept_bytes += len;
        let text = String::from_utf8_lossy(bytes);
        let (severity, severity_text) = match stream {
            Stream::Stdout => STDOUT_SEVERITY,
            Stream::Stderr => STDERR_SEVERITY,
        };
        if self.spec.logs.is_none() {
            tracing::info!(action_id = self.spec.action_id, script = self.spec.script, stream = stream.name(), line = %text, "recovery output");
            return;
        }
        let mut attributes = Self::attributes(&self.source, self.spec, Some(stream));
        if let Some(part) = part {
            attributes.push((keys::TRUNCATED, LogValue::Bool(true)));
            attributes.push((keys::PART, LogValue::Int(i64::from(part))));
        }
        if matches!(text, std::borrow::Cow::Owned(_)) {
            attributes.push((keys::INVALID_UTF8, LogValue::Bool(true)));
        }
        self.encoder.push(&LogLine {
            time_unix_nano: at_unix_nanos,
            observed_time_unix_nano: at_unix_nanos,
            severity_number: severity,
            severity_text,
            body: &text,
            attributes: &attributes,
        });
        self.first_pending.get_or_insert_with(Instant::now);
        if self.encoder.encoded_bytes() >= BATCH_MAX_BYTES {
            self.flush();
        }
    }

    fn attributes<'b>(
        source: &'b str,
        spec: &'b RunSpec<'_>,
        stream: Option<Stream>,
    ) -> Vec<(&'static str, LogValue<'b>)> {
        let mut out = vec![
            (keys::SOURCE, LogValue::Str(source)),
            (keys::RECOVERY_SCRIPT, LogValue::Str(spec.script)),
            (keys::RECOVERY_ACTION_ID, LogValue::Str(spec.action_id)),
        ];
        if let Some(stream) = stream {
            out.push((keys::RECOVERY_STREAM, LogValue::Str(stream.name())));
        }
        out
    }

    /// A record the agent writes about the run (not a line of the script's).
    fn note(&mut self, body: &str, (severity, severity_text): (i32, &str)) {
        if self.spec.logs.is_none() {
            tracing::info!(
                action_id = self.spec.action_id,
                script = self.spec.script,
                "{body}"
            );
            return;
        }
        let now = unix_nanos();
        let attributes = Self::attributes(&self.source, self.spec, None);
        self.encoder.push(&LogLine {
            time_unix_nano: now,
            observed_time_unix_nano: now,
            severity_number: severity,
            severity_text,
            body,
            attributes: &attributes,
        });
    }

    fn flush_if_due(&mut self, now: Instant) {
        if self
            .first_pending
            .is_some_and(|at| now.duration_since(at) >= BATCH_MAX_WAIT)
        {
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.first_pending = None;
        let Some(logs) = self.spec.logs else {
            return;
        };
        if self.encoder.is_empty() {
            return;
        }
        let payload = self.encoder.finish(&self.spec.resource.agent());
        if let Err(e) = logs.append(&payload) {
            tracing::error!(action_id = self.spec.action_id, error = %e, "spooling a recovery script's output failed; it is not shipped");
        }
    }

    /// The drop notice and the closing record, then everything to the spool.
    fn finish(mut self, closing: &str, succeeded: bool) {
        if self.dropped_lines > 0 {
            let body = format!(
                "dropped {} bytes of output ({} lines) past recovery.max_output_bytes ({})",
                self.dropped_bytes, self.dropped_lines, self.spec.max_output_bytes
            );
            self.note(&body, STDERR_SEVERITY);
        }
        let severity = if succeeded {
            STDOUT_SEVERITY
        } else {
            STDERR_SEVERITY
        };
        self.note(closing, severity);
        self.flush();
    }
}

fn recv_until(rx: &Receiver<Event>, until: Instant) -> Result<Event, RecvTimeoutError> {
    rx.recv_timeout(until.saturating_duration_since(Instant::now()))
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.to_owned()).spawn(f) {
        // Without the thread the run cannot be watched; the caller sees its stream never
        // close or the child never reported, and gives up at the pipe-drain wait.
        tracing::error!(error = %e, "cannot start a recovery thread");
    }
}

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_messages() {
        let s = Duration::from_millis(1_234);
        assert_eq!(
            closing_message("reset-gpu", Some(0), None, None, s, None),
            "reset-gpu exited with status 0 after 1.2 s"
        );
        assert_eq!(
            closing_message("x", None, Some(9), None, s, None),
            "x was killed by signal 9 (SIGKILL) after 1.2 s"
        );
        assert_eq!(
            closing_message("x", None, Some(15), Some(Duration::from_secs(2)), s, None),
            "x timed out after 2 s and was killed by signal 15 (SIGTERM) after 1.2 s"
        );
    }
}
