//! The shipper's own metrics, kept in atomics and a small copy of the spool's counters so
//! that the collection loop reads them without waiting on the spool's lock (which an
//! fsync may hold).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use vigil_proto::MetricFamily;

use super::client::RESULTS;
use super::spool::{KindStats, RecordKind, Spool};

/// Counters of one shipper; read by tests through [`super::Shipper::stats`].
pub struct ShipStats {
    started_unix_secs: f64,
    requests: [AtomicU64; RESULTS.len()],
    shipped_records: AtomicU64,
    rejected_items: AtomicU64,
    last_success_unix_ms: AtomicU64,
    /// Snapshots that never reached the spool: its writer was stuck or its disk failed.
    unspooled: AtomicU64,
    spool: Mutex<[KindStats; 2]>,
}

impl ShipStats {
    pub(crate) fn new() -> Self {
        Self {
            started_unix_secs: unix_ms(SystemTime::now()) as f64 / 1000.0,
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            shipped_records: AtomicU64::new(0),
            rejected_items: AtomicU64::new(0),
            last_success_unix_ms: AtomicU64::new(0),
            unspooled: AtomicU64::new(0),
            spool: Mutex::new([KindStats::default(); 2]),
        }
    }

    pub(crate) fn count_request(&self, result: &str) {
        if let Some(i) = RESULTS.iter().position(|r| *r == result) {
            self.requests[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_success(&self, records: u64, rejected_items: u64) {
        self.count_request("ok");
        self.shipped_records.fetch_add(records, Ordering::Relaxed);
        self.rejected_items
            .fetch_add(rejected_items, Ordering::Relaxed);
        self.last_success_unix_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    pub(crate) fn count_unspooled(&self) {
        self.unspooled.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies the spool's counters; called after every spool operation.
    pub(crate) fn observe(&self, spool: &Spool) {
        if let Ok(mut copy) = self.spool.lock() {
            *copy = RecordKind::ALL.map(|k| spool.stats(k));
        }
    }

    /// Requests counted with `result`.
    pub fn requests(&self, result: &str) -> u64 {
        RESULTS
            .iter()
            .position(|r| *r == result)
            .map_or(0, |i| self.requests[i].load(Ordering::Relaxed))
    }

    pub fn shipped_records(&self) -> u64 {
        self.shipped_records.load(Ordering::Relaxed)
    }

    pub fn spool(&self, kind: RecordKind) -> KindStats {
        let i = RecordKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.spool.lock().map(|s| s[i]).unwrap_or_default()
    }

    pub(crate) fn families(&self) -> Vec<MetricFamily> {
        let created = self.started_unix_secs;
        let mut bytes = MetricFamily::gauge(
            "vigil_agent_spool_bytes",
            "Bytes in the shipping spool not yet acknowledged by the collector.",
        );
        let mut records = MetricFamily::gauge(
            "vigil_agent_spool_records",
            "Records in the shipping spool not yet acknowledged by the collector.",
        );
        let mut dropped_records = MetricFamily::counter(
            "vigil_agent_spool_dropped_records_total",
            "Records dropped unsent: at the spool's cap, damaged on disk, not writable to it, or refused by the collector as malformed.",
        );
        let mut dropped_bytes = MetricFamily::counter(
            "vigil_agent_spool_dropped_bytes_total",
            "Bytes of the records counted in vigil_agent_spool_dropped_records_total.",
        );
        let spool = self.spool.lock().map(|s| *s).unwrap_or_default();
        let unspooled = self.unspooled.load(Ordering::Relaxed);
        for (kind, stats) in RecordKind::ALL.iter().zip(spool) {
            let labels = [("kind", kind.as_str())];
            let extra = if *kind == RecordKind::Metrics {
                unspooled
            } else {
                0
            };
            bytes.push(&labels, stats.queued_bytes as f64);
            records.push(&labels, stats.queued_records as f64);
            dropped_records.push_counter(&labels, (stats.dropped_records + extra) as f64, created);
            dropped_bytes.push_counter(&labels, stats.dropped_bytes as f64, created);
        }
        let mut requests = MetricFamily::counter(
            "vigil_agent_ship_requests_total",
            "Export requests sent to the collector, by how they ended.",
        );
        for (result, count) in RESULTS.iter().zip(&self.requests) {
            requests.push_counter(
                &[("result", result)],
                count.load(Ordering::Relaxed) as f64,
                created,
            );
        }
        let mut shipped = MetricFamily::counter(
            "vigil_agent_shipped_records_total",
            "Spool records the collector acknowledged.",
        );
        shipped.push_counter(&[], self.shipped_records() as f64, created);
        let mut rejected = MetricFamily::counter(
            "vigil_agent_ship_rejected_items_total",
            "Data points or log records the collector refused inside an accepted request (OTLP partial success).",
        );
        rejected.push_counter(
            &[],
            self.rejected_items.load(Ordering::Relaxed) as f64,
            created,
        );
        let last = MetricFamily::gauge(
            "vigil_agent_ship_last_success_timestamp_seconds",
            "When the collector last acknowledged a request, in seconds since the epoch; 0 before the first.",
        )
        .with(&[], self.last_success_unix_ms.load(Ordering::Relaxed) as f64 / 1000.0);
        vec![
            bytes,
            records,
            dropped_records,
            dropped_bytes,
            requests,
            shipped,
            rejected,
            last,
        ]
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
