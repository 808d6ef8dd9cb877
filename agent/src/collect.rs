//! One collection cycle: every source on its own blocking thread, each with a deadline.
//!
//! A source that is still running from an earlier cycle (a hung statvfs, a driver call
//! that never returns) is not started again: that would pile up a thread per cycle. It
//! is reported as failed until it returns, and everything else carries on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vigil_proto::exposition::{self, Format};
use vigil_proto::MetricFamily;

use crate::sources::{Source, SourceError};

struct Slot {
    source: Arc<dyn Source>,
    busy: Arc<AtomicBool>,
    /// Whether the last cycle failed, so an error is logged once per outage, not per cycle.
    failing: AtomicBool,
}

/// Runs the sources; shared between the collection loop and tests.
pub struct Collector {
    slots: Vec<Slot>,
    timeout: Duration,
    cycles: AtomicU64,
    started_unix_secs: f64,
}

/// The outcome of one source in one cycle.
#[derive(Debug)]
pub struct SourceReport {
    pub name: &'static str,
    pub success: bool,
    pub duration: Duration,
    pub error: Option<String>,
}

/// What one cycle produced: the families to serve, encoded lazily once per format.
pub struct Snapshot {
    pub families: Vec<MetricFamily>,
    pub reports: Vec<SourceReport>,
    pub collected_at: SystemTime,
    text: OnceLock<Arc<[u8]>>,
    openmetrics: OnceLock<Arc<[u8]>>,
}

impl Snapshot {
    pub fn new(families: Vec<MetricFamily>, reports: Vec<SourceReport>) -> Self {
        Self {
            families,
            reports,
            collected_at: SystemTime::now(),
            text: OnceLock::new(),
            openmetrics: OnceLock::new(),
        }
    }

    /// The exposition in `format`, encoded on first use and shared by later scrapes.
    pub fn encoded(&self, format: Format) -> Arc<[u8]> {
        let cell = match format {
            Format::Text => &self.text,
            Format::OpenMetrics => &self.openmetrics,
        };
        Arc::clone(cell.get_or_init(|| {
            let mut out = String::with_capacity(64 * 1024);
            exposition::encode(&self.families, format, &mut out);
            Arc::from(out.into_bytes())
        }))
    }

    /// The family named `name`, if any source produced it.
    pub fn family(&self, name: &str) -> Option<&MetricFamily> {
        self.families
            .binary_search_by(|f| f.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.families[i])
    }
}

impl Collector {
    pub fn new(sources: Vec<Arc<dyn Source>>, timeout: Duration) -> Self {
        Self {
            slots: sources
                .into_iter()
                .map(|source| Slot {
                    source,
                    busy: Arc::new(AtomicBool::new(false)),
                    failing: AtomicBool::new(false),
                })
                .collect(),
            timeout,
            cycles: AtomicU64::new(0),
            started_unix_secs: unix_secs(SystemTime::now()),
        }
    }

    /// Runs every source once and builds the snapshot.
    pub async fn collect_once(&self) -> Snapshot {
        let cycle_start = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pending = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            if slot.busy.swap(true, Ordering::AcqRel) {
                pending.push(None);
                continue;
            }
            let source = Arc::clone(&slot.source);
            let busy = Arc::clone(&slot.busy);
            pending.push(Some(tokio::task::spawn_blocking(move || {
                let start = Instant::now();
                let mut out = Vec::new();
                let result = source.collect(&mut out);
                busy.store(false, Ordering::Release);
                (result, out, start.elapsed())
            })));
        }

        let mut families = Vec::new();
        let mut reports = Vec::with_capacity(self.slots.len());
        for (slot, handle) in self.slots.iter().zip(pending) {
            let name = slot.source.name();
            let report = match handle {
                None => SourceReport {
                    name,
                    success: false,
                    duration: self.timeout,
                    error: Some("still running from an earlier cycle".to_owned()),
                },
                Some(handle) => match tokio::time::timeout_at(deadline, handle).await {
                    Ok(Ok((result, out, duration))) => {
                        // A source that errors after producing part of its families keeps
                        // them: one unreadable mount must not hide the others.
                        families.extend(out);
                        SourceReport {
                            name,
                            success: result.is_ok(),
                            duration,
                            error: result.err().map(|e: SourceError| e.to_string()),
                        }
                    }
                    Ok(Err(join_error)) => {
                        slot.busy.store(false, Ordering::Release);
                        SourceReport {
                            name,
                            success: false,
                            duration: cycle_start.elapsed(),
                            error: Some(format!("source panicked: {join_error}")),
                        }
                    }
                    Err(_) => SourceReport {
                        name,
                        success: false,
                        duration: self.timeout,
                        error: Some(format!(
                            "no answer within {:.1}s",
                            self.timeout.as_secs_f64()
                        )),
                    },
                },
            };
            let was_failing = slot.failing.swap(!report.success, Ordering::Relaxed);
            match (&report.error, was_failing) {
                (Some(error), false) => {
                    tracing::error!(collector = name, error = %error, "collector failed")
                }
                (None, true) => tracing::info!(collector = name, "collector recovered"),
                _ => {}
            }
            reports.push(report);
        }

        let cycles = self.cycles.fetch_add(1, Ordering::Relaxed) + 1;
        families.extend(self.health_families(&reports, cycles, cycle_start.elapsed()));
        Snapshot::new(merge_families(families), reports)
    }

    fn health_families(
        &self,
        reports: &[SourceReport],
        cycles: u64,
        cycle: Duration,
    ) -> Vec<MetricFamily> {
        let mut success = MetricFamily::gauge(
            "node_scrape_collector_success",
            "node_exporter: Whether a collector succeeded.",
        );
        let mut duration = MetricFamily::gauge(
            "node_scrape_collector_duration_seconds",
            "node_exporter: Duration of a collector scrape.",
        );
        for r in reports {
            success.push(&[("collector", r.name)], if r.success { 1.0 } else { 0.0 });
            duration.push(&[("collector", r.name)], r.duration.as_secs_f64());
        }
        let mut total = MetricFamily::counter(
            "vigil_agent_collections_total",
            "Collection cycles the agent has run.",
        );
        total.push_counter(&[], cycles as f64, self.started_unix_secs);
        let last = MetricFamily::gauge(
            "vigil_agent_collection_duration_seconds",
            "Wall time of the latest collection cycle.",
        )
        .with(&[], cycle.as_secs_f64());
        let info = MetricFamily::gauge("vigil_agent_build_info", "The agent's version.")
            .with(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        vec![success, duration, total, last, info]
    }
}

/// Sorts families by name and merges families of the same name and type, so two sources
/// may contribute to one family. A clash of types keeps the first and drops the other
/// with an error, because the exposition formats cannot carry both.
pub fn merge_families(mut families: Vec<MetricFamily>) -> Vec<MetricFamily> {
    families.sort_by(|a, b| a.name.cmp(&b.name));
    let mut merged: Vec<MetricFamily> = Vec::with_capacity(families.len());
    for family in families {
        match merged.last_mut() {
            Some(last) if last.name == family.name => {
                if last.kind == family.kind {
                    last.samples.extend(family.samples);
                } else {
                    tracing::error!(
                        family = %family.name,
                        "two sources exposed one family with different types; dropping one"
                    );
                }
            }
            _ => merged.push(family),
        }
    }
    merged
}

pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
