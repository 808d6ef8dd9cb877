//! The agent's on-disk spool: everything bound for the collector is appended here first
//! and deleted only once the collector has acknowledged it.
//!
//! One FIFO per record kind (`<state_dir>/spool/metrics/`, `.../logs/`), because each kind
//! goes to its own OTLP service and only order within a kind matters. The kinds share one
//! size cap. At the cap the oldest metrics go first: a metric sample is one of thousands
//! taken every few seconds, while a log line lost is lost for good, so no log is dropped
//! while any metrics record is queued. A new metrics record that would need a log
//! dropped to fit is itself dropped instead.
//!
//! The cap counts queued record bytes (frames). Disk usage exceeds it by at most the
//! consumed part of one segment per kind, which is why segments are small next to the cap.
//!
//! Everything here is blocking file I/O with fsync: call it from a blocking thread.

use std::path::{Path, PathBuf};

use super::queue::Queue;
pub use super::queue::{Position, Record};
use super::segment::{FRAME_HEADER_BYTES, MAX_RECORD_BYTES};

/// What a spool record holds; each kind is its own FIFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// An encoded `ExportMetricsServiceRequest`.
    Metrics,
    /// An encoded `ExportLogsServiceRequest`.
    Logs,
}

impl RecordKind {
    pub const ALL: [RecordKind; 2] = [RecordKind::Metrics, RecordKind::Logs];

    /// The label value and directory name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Metrics => "metrics",
            RecordKind::Logs => "logs",
        }
    }

    fn index(self) -> usize {
        match self {
            RecordKind::Metrics => 0,
            RecordKind::Logs => 1,
        }
    }
}

/// A spool operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("record of {bytes} bytes is larger than the spool's cap of {max_bytes} bytes")]
    TooLarge { bytes: u64, max_bytes: u64 },
}

/// Size settings.
#[derive(Debug, Clone, Copy)]
pub struct SpoolOptions {
    /// Cap on the queued bytes of all kinds together.
    pub max_bytes: u64,
    /// A segment file is closed once it would grow past this.
    pub segment_max_bytes: u64,
}

impl SpoolOptions {
    /// Segments of 1/32 of the cap, between 64 KiB and 32 MiB: small enough that the
    /// consumed part of a segment is a small overshoot, large enough that a segment holds
    /// many snapshots.
    pub fn with_max_bytes(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            segment_max_bytes: (max_bytes / 32).clamp(64 << 10, 32 << 20),
        }
    }
}

/// One kind's counters as the agent exposes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindStats {
    pub queued_bytes: u64,
    pub queued_records: u64,
    pub dropped_records: u64,
    pub dropped_bytes: u64,
}

/// The durable queue the shipper drains.
pub struct Spool {
    queues: [Queue; 2],
    dropped: [(u64, u64); 2],
    options: SpoolOptions,
}

/// Records read from the head of one kind, to send together.
#[derive(Debug, Clone)]
pub struct Batch {
    pub kind: RecordKind,
    pub records: Vec<Record>,
}

impl Batch {
    /// Bytes of the records' frames.
    pub fn frame_bytes(&self) -> u64 {
        self.records.iter().map(|r| r.frame_bytes).sum()
    }
}

impl Spool {
    /// Opens the spool under `dir`, truncating torn tails.
    pub fn open(dir: &Path, options: SpoolOptions) -> Result<Self, SpoolError> {
        let open =
            |kind: RecordKind| Queue::open(&dir.join(kind.as_str()), options.segment_max_bytes);
        let spool = Self {
            queues: [open(RecordKind::Metrics)?, open(RecordKind::Logs)?],
            dropped: [(0, 0); 2],
            options,
        };
        for kind in RecordKind::ALL {
            let stats = spool.stats(kind);
            if stats.queued_records > 0 {
                tracing::info!(
                    kind = kind.as_str(),
                    records = stats.queued_records,
                    bytes = stats.queued_bytes,
                    "spool holds records not yet acknowledged"
                );
            }
        }
        Ok(spool)
    }

    /// Appends a record (fsynced before this returns), first dropping what the cap
    /// policy says must go to make room. Returns false when the record itself was the one
    /// dropped (a metrics record that would only fit by dropping logs).
    pub fn append(&mut self, kind: RecordKind, payload: &[u8]) -> Result<bool, SpoolError> {
        let frame = FRAME_HEADER_BYTES + payload.len() as u64;
        if frame > self.options.max_bytes || payload.len() as u64 > MAX_RECORD_BYTES {
            self.count_dropped(kind, 1, frame);
            return Err(SpoolError::TooLarge {
                bytes: payload.len() as u64,
                max_bytes: self.options.max_bytes.min(MAX_RECORD_BYTES),
            });
        }
        let mut over = (self.total_queued_bytes() + frame).saturating_sub(self.options.max_bytes);
        for victim in RecordKind::ALL {
            if over == 0 {
                break;
            }
            if victim == RecordKind::Logs && kind == RecordKind::Metrics {
                // Metrics go before any log: this record is the oldest metric left.
                self.count_dropped(kind, 1, frame);
                return Ok(false);
            }
            let (records, bytes) = self.queues[victim.index()].drop_oldest(over)?;
            if records > 0 {
                tracing::warn!(
                    kind = victim.as_str(),
                    records,
                    bytes,
                    "spool at its cap; dropped the oldest records"
                );
            }
            self.count_dropped(victim, records, bytes);
            over = over.saturating_sub(bytes);
        }
        self.queues[kind.index()].append(payload)?;
        Ok(true)
    }

    /// Reads up to `max_bytes` of payload from the head of `kind` (at least one record
    /// when any is queued) without removing it.
    pub fn peek(&mut self, kind: RecordKind, max_bytes: u64) -> Result<Batch, SpoolError> {
        let (records, lost_records, lost_bytes) = self.queues[kind.index()].peek(max_bytes)?;
        self.count_dropped(kind, lost_records, lost_bytes);
        Ok(Batch { kind, records })
    }

    /// Removes an acknowledged batch (what of it is still queued) and persists the head.
    pub fn ack(&mut self, batch: &Batch) -> Result<(), SpoolError> {
        self.queues[batch.kind.index()].ack(&batch.records)
    }

    /// Removes a batch the collector refused for good, counting it as dropped.
    pub fn reject(&mut self, batch: &Batch) -> Result<(), SpoolError> {
        let bytes = batch.records.iter().map(|r| r.frame_bytes).sum();
        self.count_dropped(batch.kind, batch.records.len() as u64, bytes);
        self.ack(batch)
    }

    pub fn stats(&self, kind: RecordKind) -> KindStats {
        let queue = &self.queues[kind.index()];
        let (dropped_records, dropped_bytes) = self.dropped[kind.index()];
        KindStats {
            queued_bytes: queue.queued_bytes(),
            queued_records: queue.queued_records(),
            dropped_records,
            dropped_bytes,
        }
    }

    fn total_queued_bytes(&self) -> u64 {
        self.queues.iter().map(Queue::queued_bytes).sum()
    }

    fn count_dropped(&mut self, kind: RecordKind, records: u64, bytes: u64) {
        let d = &mut self.dropped[kind.index()];
        d.0 += records;
        d.1 += bytes;
    }
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;
