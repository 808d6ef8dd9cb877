//! Logs: tailed files and the kernel log, shipped as OTLP log records through the spool.
//!
//! # Layout
//! - [`tailer`]: files by glob, through rename and copytruncate rotation, with
//!   checkpoints keyed by fingerprint ([`checkpoint`]); [`lines`] turns bytes into
//!   records (line cap, multiline joining).
//! - [`kmsg`]: `/dev/kmsg` records, their timestamps as wall time, and [`nvrm`]'s
//!   parsing of the NVIDIA driver's Xid, SXid and "fallen off the bus" lines.
//!
//! Each reader runs on its own thread (file and device reads block) and batches
//! records into one `ExportLogsServiceRequest` of up to `batch_max_bytes` or
//! `batch_max_wait_ms`. A batch is appended to the spool (fsynced) before the
//! checkpoints that cover it are saved, so a restart neither loses nor repeats a line:
//! at worst, a crash between the two sends the last batch twice.

pub mod checkpoint;
pub mod kmsg;
pub mod lines;
pub mod nvrm;
pub mod tailer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vigil_proto::MetricFamily;
use vigil_proto::otlp::{AgentResource, LogsEncoder};

use crate::config::AgentConfig;
use crate::sources::gpu::GpuXids;
use checkpoint::FileCheckpoints;
use lines::LineOptions;
use tailer::{Polled, TailOptions, Tailer};

/// How long a reader with nothing to read waits before looking again.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// How long a batch the spool refused waits before it is offered again.
const RETRY_WAIT: Duration = Duration::from_secs(1);
/// How long a file that left the globs stays open at its end, for late writes of a
/// writer that has not reopened its log yet.
const ROTATED_LINGER: Duration = Duration::from_secs(5);

/// Where encoded batches go: the spool, in the agent.
pub trait LogOutput: Send + Sync {
    /// Appends one encoded `ExportLogsServiceRequest`, durably, before returning.
    fn append(&self, payload: &[u8]) -> Result<(), String>;
}

/// The agent's resource, owned by a reader thread.
#[derive(Debug, Clone)]
pub struct OwnedResource {
    pub node: String,
    pub interval_secs: f64,
}

impl OwnedResource {
    pub fn agent(&self) -> AgentResource<'_> {
        AgentResource {
            node: &self.node,
            agent_version: env!("CARGO_PKG_VERSION"),
            interval_secs: self.interval_secs,
        }
    }
}

/// One source's counters (`source` label: `file` or `kernel`).
#[derive(Debug, Default)]
pub struct SourceStats {
    pub lines: AtomicU64,
    pub bytes: AtomicU64,
    pub truncated: AtomicU64,
    pub invalid_utf8: AtomicU64,
    pub errors: AtomicU64,
}

/// The readers' counters, exposed as `vigil_agent_log_*`.
#[derive(Debug, Default)]
pub struct LogStats {
    pub file: SourceStats,
    pub kernel: SourceStats,
    pub files_tailed: AtomicU64,
    pub truncations: AtomicU64,
    pub kmsg_lost: AtomicU64,
    /// NVIDIA driver messages in the kernel log by (event, code, PCI bus id).
    nvidia: Mutex<BTreeMap<(&'static str, String, String), u64>>,
}

impl LogStats {
    fn count_nvidia(&self, m: &nvrm::NvrmMessage<'_>) {
        let key = (
            m.event.as_str(),
            m.code.map(|c| c.to_string()).unwrap_or_default(),
            m.pci.map(|p| p.to_string()).unwrap_or_default(),
        );
        let mut counts = self.nvidia.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(key).or_insert(0) += 1;
    }

    /// The counters as metric families.
    pub fn families(&self, created_unix_secs: f64) -> Vec<MetricFamily> {
        let per_source =
            |name: &'static str, help: &'static str, get: fn(&SourceStats) -> &AtomicU64| {
                let mut f = MetricFamily::counter(name, help);
                for (source, stats) in [("file", &self.file), ("kernel", &self.kernel)] {
                    f.push_counter(
                        &[("source", source)],
                        get(stats).load(Ordering::Relaxed) as f64,
                        created_unix_secs,
                    );
                }
                f
            };
        let mut out = vec![
            per_source(
                "vigil_agent_log_lines_total",
                "Log records read (a split long line counts once per piece, a joined multiline record once).",
                |s| &s.lines,
            ),
            per_source(
                "vigil_agent_log_bytes_total",
                "Bytes of log records read, without newlines.",
                |s| &s.bytes,
            ),
            per_source(
                "vigil_agent_log_truncated_lines_total",
                "Pieces of lines longer than logs.max_line_bytes, shipped marked vigil.log.truncated.",
                |s| &s.truncated,
            ),
            per_source(
                "vigil_agent_log_invalid_utf8_lines_total",
                "Log records that were not valid UTF-8, shipped as lossy text marked vigil.log.invalid_utf8.",
                |s| &s.invalid_utf8,
            ),
            per_source(
                "vigil_agent_log_errors_total",
                "Failures reading log sources or spooling their records.",
                |s| &s.errors,
            ),
            MetricFamily::gauge("vigil_agent_log_files_tailed", "Files open for tailing.")
                .with(&[], self.files_tailed.load(Ordering::Relaxed) as f64),
        ];
        for (name, help, count) in [
            (
                "vigil_agent_log_file_truncations_total",
                "Tailed files found truncated (copytruncate rotation) and read again from the start.",
                &self.truncations,
            ),
            (
                "vigil_agent_kmsg_overruns_total",
                "Times the kernel's ring buffer overwrote records before the agent read them.",
                &self.kmsg_lost,
            ),
        ] {
            let mut family = MetricFamily::counter(name, help);
            family.push_counter(&[], count.load(Ordering::Relaxed) as f64, created_unix_secs);
            out.push(family);
        }
        let mut nvidia = MetricFamily::counter(
            "vigil_kernel_nvidia_events_total",
            "NVIDIA driver messages in the kernel log: Xid, SXid (code) and fallen off the bus, by PCI bus id (also where NVML gives no events).",
        );
        let counts = self.nvidia.lock().unwrap_or_else(|p| p.into_inner());
        for ((event, code, pci), count) in counts.iter() {
            nvidia.push_counter(
                &[("event", event), ("code", code), ("pci_bus_id", pci)],
                *count as f64,
                created_unix_secs,
            );
        }
        if !nvidia.samples.is_empty() {
            out.push(nvidia);
        }
        out
    }
}

/// The running log readers.
pub struct Logs {
    stats: Arc<LogStats>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    started_unix_secs: f64,
}

impl Logs {
    /// Starts the file tailer (with an output, when `logs.files` is set) and the kernel
    /// log reader (when `logs.kmsg` opens; with no output it still counts Xids).
    pub fn start(
        config: &AgentConfig,
        node: &str,
        output: Option<Arc<dyn LogOutput>>,
        gpus: Option<GpuXids>,
    ) -> Self {
        let stats = Arc::new(LogStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let logs = &config.logs;
        let state_dir = config.state_dir.join("logs");
        let resource = OwnedResource {
            node: node.to_owned(),
            interval_secs: config.interval_secs,
        };
        let batch_max_bytes = logs
            .batch_max_bytes
            .min((config.shipper.spool_max_bytes / 4) as usize);
        let mut threads = Vec::new();
        match (&output, logs.files.is_empty()) {
            (_, true) => {}
            (None, false) => tracing::warn!(
                "log files are not tailed: no collector is configured to ship them to"
            ),
            (Some(output), false) => {
                let reader = FileReader {
                    opts: TailOptions {
                        patterns: logs.files.clone(),
                        lines: LineOptions {
                            max_line_bytes: logs.max_line_bytes,
                            multiline_start: (!logs.multiline_start_pattern.is_empty())
                                .then(|| {
                                    regex::bytes::Regex::new(&logs.multiline_start_pattern).ok()
                                })
                                .flatten(),
                            multiline_flush: Duration::from_millis(logs.multiline_flush_ms),
                        },
                        first_start_at_end: logs.first_start_from == "end",
                        linger: ROTATED_LINGER,
                    },
                    state_dir: state_dir.clone(),
                    output: Arc::clone(output),
                    stats: Arc::clone(&stats),
                    resource: resource.clone(),
                    rescan_every: Duration::from_secs_f64(logs.rescan_interval_secs),
                    batch_max_bytes,
                    batch_max_wait: Duration::from_millis(logs.batch_max_wait_ms),
                };
                let stop = Arc::clone(&stop);
                spawn(&mut threads, "logs-files", move || reader.run(&stop));
            }
        }
        if !logs.kmsg.as_os_str().is_empty()
            && let Some(file) = kmsg::open(&logs.kmsg)
        {
            let reader = kmsg::KmsgReader {
                path: logs.kmsg.clone(),
                state_dir,
                procfs: config.paths.procfs.clone(),
                output,
                gpus,
                stats: Arc::clone(&stats),
                resource,
                batch_max_bytes,
            };
            let stop = Arc::clone(&stop);
            spawn(&mut threads, "logs-kmsg", move || reader.run(file, stop));
        }
        Self {
            stats,
            stop,
            threads,
            started_unix_secs: unix_nanos() as f64 / 1e9,
        }
    }

    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    pub fn families(&self) -> Vec<MetricFamily> {
        self.stats.families(self.started_unix_secs)
    }

    /// Stops the readers; each spools what it has read and saves its checkpoints first.
    pub async fn shutdown(self) {
        self.stop.store(true, Ordering::Release);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

fn spawn(threads: &mut Vec<JoinHandle<()>>, name: &str, body: impl FnOnce() + Send + 'static) {
    match std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
    {
        Ok(t) => threads.push(t),
        Err(e) => tracing::error!(thread = name, error = %e, "logs: cannot start a reader thread"),
    }
}

/// The file tailer's thread.
struct FileReader {
    opts: TailOptions,
    state_dir: PathBuf,
    output: Arc<dyn LogOutput>,
    stats: Arc<LogStats>,
    resource: OwnedResource,
    rescan_every: Duration,
    batch_max_bytes: usize,
    batch_max_wait: Duration,
}

impl FileReader {
    fn run(self, stop: &AtomicBool) {
        let store = match FileCheckpoints::load(&self.state_dir) {
            Ok(store) => store,
            Err(e) => {
                self.stats.file.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(dir = %self.state_dir.display(), error = %e, "log files are not tailed: cannot load their checkpoints");
                return;
            }
        };
        let mut tailer = Tailer::new(self.opts.clone(), store, Arc::clone(&self.stats));
        let mut batch = Batch::default();
        tailer.rescan(&mut batch.encoder, unix_nanos());
        // From now on this is not the first start, even before a line is read.
        self.save(&mut tailer);
        let mut next_rescan = Instant::now() + self.rescan_every;
        while !stop.load(Ordering::Acquire) {
            if let Some(payload) = batch.refused.take() {
                if !self.append(&mut tailer, &mut batch, payload) {
                    std::thread::sleep(RETRY_WAIT);
                }
                continue;
            }
            let now = Instant::now();
            if now >= next_rescan {
                tailer.rescan(&mut batch.encoder, unix_nanos());
                next_rescan = now + self.rescan_every;
            }
            let polled = tailer.poll(&mut batch.encoder, self.batch_max_bytes, unix_nanos());
            if !batch.encoder.is_empty() && batch.first_at.is_none() {
                batch.first_at = Some(now);
            }
            let due = batch
                .first_at
                .is_some_and(|t| t.elapsed() >= self.batch_max_wait);
            match polled {
                Polled::BatchFull => self.commit(&mut tailer, &mut batch),
                Polled::Drained { .. } if due => self.commit(&mut tailer, &mut batch),
                Polled::Drained { bytes: 0 } => std::thread::sleep(IDLE_WAIT),
                Polled::Drained { .. } => {}
            }
        }
        self.commit(&mut tailer, &mut batch);
        if let Some(payload) = batch.refused.take() {
            self.append(&mut tailer, &mut batch, payload);
        }
    }

    fn commit(&self, tailer: &mut Tailer, batch: &mut Batch) {
        batch.first_at = None;
        if batch.encoder.is_empty() {
            return;
        }
        let payload = batch.encoder.finish(&self.resource.agent());
        self.append(tailer, batch, payload);
    }

    /// Appends a batch and then checkpoints it; a refused batch is kept for a retry,
    /// with no more lines read (and no checkpoint moved) until it is in.
    fn append(&self, tailer: &mut Tailer, batch: &mut Batch, payload: Vec<u8>) -> bool {
        match self.output.append(&payload) {
            Ok(()) => {
                if std::mem::take(&mut batch.failing) {
                    tracing::info!("spooling log lines works again");
                }
                self.save(tailer);
                true
            }
            Err(e) => {
                self.stats.file.errors.fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut batch.failing, true) {
                    tracing::error!(error = %e, "spooling log lines failed; retrying, reading paused");
                }
                batch.refused = Some(payload);
                false
            }
        }
    }

    fn save(&self, tailer: &mut Tailer) {
        tailer.checkpoint();
        if let Err(e) = tailer.store.save(tailer::unix_secs()) {
            self.stats.file.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(dir = %self.state_dir.display(), error = %e, "saving log checkpoints failed");
        }
    }
}

#[derive(Default)]
struct Batch {
    encoder: LogsEncoder,
    first_at: Option<Instant>,
    refused: Option<Vec<u8>>,
    failing: bool,
}

pub(crate) fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
