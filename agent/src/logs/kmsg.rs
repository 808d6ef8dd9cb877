//! The kernel log from `/dev/kmsg` (or, in tests, a file or FIFO of the same records).
//!
//! A record is `priority,sequence,microseconds,flags[,...];message` with non-printable
//! bytes escaped as `\xNN`, followed by dictionary lines that start with a space
//! (` SUBSYSTEM=pci`). `/dev/kmsg` hands out one record per read; a file is split at
//! newlines. The timestamp counts microseconds since boot and becomes wall time as
//! `dmesg -T` does it: plus the boot time, taken as CLOCK_REALTIME − CLOCK_BOOTTIME.
//!
//! The last sequence number shipped is checkpointed with the boot's id, so a restart
//! skips what the ring buffer still holds from before. NVRM lines are parsed
//! ([`super::nvrm`]) into attributes, and Xids counted into the GPU source's counters.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vigil_proto::logs as attr;
use vigil_proto::otlp::{LogLine, LogValue, LogsEncoder, kernel_severity};

use super::checkpoint::KmsgCheckpoint;
use super::nvrm::{self, PciAddr};
use super::{LogOutput, LogStats, OwnedResource, unix_nanos};
use crate::sources::gpu::GpuXids;

/// How long one wait for a record blocks; bounds how long shutdown waits.
const WAIT: Duration = Duration::from_millis(200);
/// Records before the agent started count as Xids only when a checkpoint says they are
/// new; this much slack covers records logged while the agent was starting.
const START_SLACK_NS: u64 = 5_000_000_000;

/// One kernel log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord {
    /// Facility and level as the kernel packs them (`facility << 3 | level`).
    pub priority: u32,
    pub seq: u64,
    /// Microseconds since boot.
    pub usec: u64,
    /// The message, `\xNN` escapes undone (so possibly not UTF-8).
    pub message: Vec<u8>,
    /// Dictionary lines (`SUBSYSTEM=pci`, `DEVICE=+pci:0000:3b:00.0`).
    pub dict: Vec<(String, String)>,
}

impl KmsgRecord {
    pub fn level(&self) -> u8 {
        (self.priority & 7) as u8
    }

    pub fn facility(&self) -> u32 {
        self.priority >> 3
    }
}

/// Parses a record's first line; None when it is not one.
pub fn parse_record(line: &[u8]) -> Option<KmsgRecord> {
    let semi = memchr::memchr(b';', line)?;
    let header = std::str::from_utf8(&line[..semi]).ok()?;
    let mut fields = header.split(',');
    let priority = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let usec = fields.next()?.parse().ok()?;
    fields.next()?;
    Some(KmsgRecord {
        priority,
        seq,
        usec,
        message: unescape(&line[semi + 1..]).into_owned(),
        dict: Vec::new(),
    })
}

/// Undoes the kernel's `\xNN` escaping.
pub fn unescape(bytes: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memmem::find(bytes, b"\\x").is_none() {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            let hex = bytes
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// Splits a stream of kmsg text into records: a record ends where the next begins or
/// when the reader goes idle.
#[derive(Debug, Default)]
pub struct RecordSplitter {
    carry: Vec<u8>,
    current: Option<KmsgRecord>,
}

impl RecordSplitter {
    pub fn feed(&mut self, chunk: &[u8], out: &mut impl FnMut(KmsgRecord)) {
        self.carry.extend_from_slice(chunk);
        let mut start = 0;
        let carry = std::mem::take(&mut self.carry);
        for nl in memchr::memchr_iter(b'\n', &carry) {
            self.line(&carry[start..nl], out);
            start = nl + 1;
        }
        self.carry = carry;
        self.carry.drain(..start);
    }

    /// The record in progress is complete (the source has nothing more for now).
    pub fn finish(&mut self, out: &mut impl FnMut(KmsgRecord)) {
        if let Some(record) = self.current.take() {
            out(record);
        }
    }

    fn line(&mut self, line: &[u8], out: &mut impl FnMut(KmsgRecord)) {
        if let Some(dict) = line.strip_prefix(b" ") {
            if let Some(current) = &mut self.current {
                let text = String::from_utf8_lossy(dict);
                if let Some((k, v)) = text.split_once('=') {
                    current.dict.push((k.to_owned(), v.to_owned()));
                }
            }
            return;
        }
        self.finish(out);
        match parse_record(line) {
            Some(record) => self.current = Some(record),
            None if line.is_empty() => {}
            // Not kmsg's format: kept as an informational line rather than lost.
            None => {
                self.current = Some(KmsgRecord {
                    priority: 6,
                    seq: 0,
                    usec: 0,
                    message: line.to_vec(),
                    dict: Vec::new(),
                })
            }
        }
    }
}

/// Wall-clock nanoseconds of the boot: CLOCK_REALTIME − CLOCK_BOOTTIME.
pub fn boot_time_unix_nanos() -> u64 {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec through a valid pointer.
        let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
        (rc == 0).then(|| ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128)
    };
    match (read(libc::CLOCK_REALTIME), read(libc::CLOCK_BOOTTIME)) {
        (Some(real), Some(boot)) => u64::try_from(real - boot).unwrap_or(0),
        _ => 0,
    }
}

/// What the kernel log reader needs.
pub struct KmsgReader {
    pub path: PathBuf,
    /// `<state_dir>/logs`, for the checkpoint.
    pub state_dir: PathBuf,
    pub procfs: PathBuf,
    pub output: Option<Arc<dyn LogOutput>>,
    pub gpus: Option<GpuXids>,
    pub stats: Arc<LogStats>,
    pub resource: OwnedResource,
    pub batch_max_bytes: usize,
}

/// Opens the kernel log for reading without blocking; None (logged) when it cannot be.
pub fn open(path: &Path) -> Option<File> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::info!(path = %path.display(), error = %e, "kernel log is not read: cannot open it");
            None
        }
    }
}

impl KmsgReader {
    /// Reads records until `stop` is set.
    pub fn run(self, mut file: File, stop: Arc<AtomicBool>) {
        let boot_id = std::fs::read_to_string(self.procfs.join("sys/kernel/random/boot_id"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let checkpoint = KmsgCheckpoint::load(&self.state_dir)
            .filter(|c| c.boot_id == boot_id && !boot_id.is_empty());
        let mut state = State {
            skip_through: checkpoint.as_ref().map(|c| c.seq),
            count_from_ns: if checkpoint.is_some() {
                0
            } else {
                unix_nanos().saturating_sub(START_SLACK_NS)
            },
            boot_ns: boot_time_unix_nanos(),
            last_seq: checkpoint.map(|c| c.seq),
            saved_seq: None,
            encoder: LogsEncoder::new(),
            failing: false,
            gpus: self.gpus.clone().map(|g| (g, Vec::new(), None)),
        };
        tracing::info!(path = %self.path.display(), resume_after_seq = ?state.skip_through, "reading the kernel log");
        let mut splitter = RecordSplitter::default();
        let mut buf = vec![0u8; 64 << 10];
        while !stop.load(Ordering::Acquire) {
            match file.read(&mut buf) {
                Ok(0) => {
                    self.idle(&mut splitter, &mut state);
                    std::thread::sleep(WAIT);
                }
                Ok(n) => {
                    splitter.feed(&buf[..n], &mut |r| self.record(r, &mut state));
                    if state.encoder.encoded_bytes() >= self.batch_max_bytes {
                        self.commit(&mut state);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                    // The ring buffer overwrote records before they were read.
                    self.stats.kmsg_lost.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.idle(&mut splitter, &mut state);
                    wait_readable(&file, WAIT);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stats.kernel.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(path = %self.path.display(), error = %e, "reading the kernel log failed");
                    std::thread::sleep(WAIT);
                }
            }
        }
        self.idle(&mut splitter, &mut state);
    }

    fn idle(&self, splitter: &mut RecordSplitter, state: &mut State) {
        splitter.finish(&mut |r| self.record(r, state));
        self.commit(state);
    }

    /// Spools the batch, then checkpoints its last sequence number.
    fn commit(&self, state: &mut State) {
        if let Some(output) = &self.output
            && !state.encoder.is_empty()
        {
            let payload = state.encoder.finish(&self.resource.agent());
            if let Err(e) = output.append(&payload) {
                self.stats.kernel.errors.fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut state.failing, true) {
                    tracing::error!(error = %e, "spooling kernel log lines failed; they are not shipped");
                }
                return;
            }
            state.failing = false;
        }
        if state.last_seq != state.saved_seq
            && let Some(seq) = state.last_seq
        {
            let boot_id = std::fs::read_to_string(self.procfs.join("sys/kernel/random/boot_id"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            if !boot_id.is_empty() {
                match (KmsgCheckpoint { boot_id, seq }).save(&self.state_dir) {
                    Ok(()) => state.saved_seq = Some(seq),
                    Err(e) => tracing::warn!(error = %e, "saving the kernel log checkpoint failed"),
                }
            }
        }
    }

    fn record(&self, record: KmsgRecord, state: &mut State) {
        if record.seq > 0 {
            if state.skip_through.is_some_and(|s| record.seq <= s) {
                return;
            }
            // Past the checkpoint once, every later record is new, even a repeated seq.
            state.skip_through = None;
            state.last_seq = Some(record.seq);
        }
        let time_ns = state
            .boot_ns
            .saturating_add(record.usec.saturating_mul(1000));
        let observed_ns = unix_nanos();
        let text = String::from_utf8_lossy(&record.message);
        let parsed = nvrm::parse(&text);
        let gpu = parsed
            .as_ref()
            .and_then(|m| m.pci)
            .and_then(|pci| state.gpu_for(&pci));
        let is_new = time_ns >= state.count_from_ns || record.usec == 0;
        if let Some(m) = &parsed
            && is_new
        {
            self.stats.count_nvidia(m);
            if let (Some(code), Some((index, _)), Some((gpus, _, _))) = (m.code, &gpu, &state.gpus)
                && m.event == nvrm::NvidiaEvent::Xid
            {
                gpus.record_kernel_xid(*index, code);
            }
        }
        self.stats.kernel.lines.fetch_add(1, Ordering::Relaxed);
        self.stats
            .kernel
            .bytes
            .fetch_add(record.message.len() as u64, Ordering::Relaxed);
        if self.output.is_none() {
            return;
        }
        let invalid = matches!(text, Cow::Owned(_));
        if invalid {
            self.stats
                .kernel
                .invalid_utf8
                .fetch_add(1, Ordering::Relaxed);
        }
        let (severity_number, severity_text) = kernel_severity(record.level());
        let pci_text = parsed.as_ref().and_then(|m| m.pci).map(|p| p.to_string());
        let gpu_index = gpu.as_ref().map(|(i, _)| i.to_string());
        let mut attrs: Vec<(&str, LogValue<'_>)> = vec![
            (attr::SOURCE, LogValue::Str(attr::SOURCE_KERNEL)),
            (attr::KERNEL_SEQ, LogValue::Int(record.seq as i64)),
            (
                attr::KERNEL_FACILITY,
                LogValue::Int(i64::from(record.facility())),
            ),
        ];
        if invalid {
            attrs.push((attr::INVALID_UTF8, LogValue::Bool(true)));
        }
        if let Some(m) = &parsed {
            attrs.push((attr::NVIDIA_EVENT, LogValue::Str(m.event.as_str())));
            if let Some(code) = m.code {
                attrs.push((attr::NVIDIA_XID, LogValue::Int(code as i64)));
            }
            if let Some(pci) = &pci_text {
                attrs.push((attr::NVIDIA_PCI_BUS_ID, LogValue::Str(pci)));
            }
            if let (Some(index), Some((_, uuid))) = (&gpu_index, &gpu) {
                attrs.push((attr::NVIDIA_GPU, LogValue::Str(index)));
                attrs.push((attr::NVIDIA_GPU_UUID, LogValue::Str(uuid)));
            }
            attrs.push((attr::NVIDIA_MESSAGE, LogValue::Str(m.message)));
        }
        for (key, value) in &record.dict {
            attrs.push((dict_key(key), LogValue::Str(value)));
        }
        state.encoder.push(&LogLine {
            time_unix_nano: time_ns,
            observed_time_unix_nano: observed_ns,
            severity_number,
            severity_text,
            body: &text,
            attributes: &attrs,
        });
    }
}

/// The attribute key of a dictionary entry: `kernel.subsystem`, `kernel.device`.
fn dict_key(key: &str) -> &'static str {
    match key {
        "SUBSYSTEM" => "kernel.subsystem",
        "DEVICE" => "kernel.device",
        _ => "kernel.dict",
    }
}

struct State {
    skip_through: Option<u64>,
    count_from_ns: u64,
    boot_ns: u64,
    last_seq: Option<u64>,
    saved_seq: Option<u64>,
    encoder: LogsEncoder,
    failing: bool,
    gpus: Option<GpuDirectory>,
}

/// The GPU source's handle, its GPUs' (address, index, UUID), and when they were read.
type GpuDirectory = (GpuXids, Vec<(PciAddr, u32, String)>, Option<Instant>);

impl State {
    /// The GPU (index, UUID) at a PCI address, from the GPU source's identities (read
    /// again when an address is not found, at most every few seconds).
    fn gpu_for(&mut self, pci: &PciAddr) -> Option<(u32, String)> {
        let (handle, known, read_at) = self.gpus.as_mut()?;
        let find = |known: &[(PciAddr, u32, String)]| {
            known
                .iter()
                .find(|(addr, _, _)| addr.same_device(pci))
                .map(|(_, index, uuid)| (*index, uuid.clone()))
        };
        if let Some(found) = find(known) {
            return Some(found);
        }
        if read_at.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
            return None;
        }
        *read_at = Some(Instant::now());
        known.clear();
        known.extend(
            handle
                .gpus()
                .into_iter()
                .filter_map(|g| Some((PciAddr::parse(&g.pci_bus_id)?, g.index, g.uuid))),
        );
        find(known)
    }
}

/// Waits until `file` has something to read, or `timeout`.
fn wait_readable(file: &File, timeout: Duration) {
    let mut fds = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut fds, 1, timeout.as_millis() as libc::c_int) };
    if rc < 0 {
        std::thread::sleep(timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_with_escapes_and_dictionaries() {
        let mut s = RecordSplitter::default();
        let mut out = Vec::new();
        s.feed(
            b"6,3964,206764307,-;nvidia-nvswitch2: open (major=510)\n4,3965,206764310,-,caller=T1;tab\\x09here\n SUBSYSTEM=pci\n DEVICE=+pci:0000:3b:00.0\n3,39",
            &mut |r| out.push(r),
        );
        assert_eq!(
            out.len(),
            1,
            "the second record may still get dictionary lines"
        );
        s.feed(b"66,1,-;last\n", &mut |r| out.push(r));
        s.finish(&mut |r| out.push(r));
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].seq, 3964);
        assert_eq!(out[0].usec, 206_764_307);
        assert_eq!(out[0].level(), 6);
        assert_eq!(out[0].message, b"nvidia-nvswitch2: open (major=510)");
        assert_eq!(out[1].message, b"tab\there");
        assert_eq!(
            out[1].dict,
            [
                ("SUBSYSTEM".to_owned(), "pci".to_owned()),
                ("DEVICE".to_owned(), "+pci:0000:3b:00.0".to_owned())
            ]
        );
        assert_eq!((out[2].seq, out[2].level()), (3966, 3));
        // Facility: 30 << 3 | 6 (daemon info).
        let r = parse_record(b"246,7,8,-;x").unwrap();
        assert_eq!((r.facility(), r.level()), (30, 6));
        assert_eq!(parse_record(b"no header here"), None);
    }

    #[test]
    fn boot_time_is_in_the_past_and_plausible() {
        let boot = boot_time_unix_nanos();
        let now = unix_nanos();
        assert!(boot > 1_500_000_000_000_000_000 && boot < now, "{boot}");
    }
}
