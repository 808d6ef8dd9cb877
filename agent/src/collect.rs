//! One collection cycle: every source on its own blocking thread, each with a deadline.
//!
//! A source that is still running from an earlier cycle (a hung statvfs, a driver call
//! that never returns) is not started again: that would pile up a thread per cycle. It
//! is reported as failed until it returns, and everything else carries on.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vigil_proto::MetricFamily;
use vigil_proto::exposition::{self, Format};

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
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc;

    use super::*;

    struct Fixed(&'static str);
    impl Source for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
            out.push(MetricFamily::gauge(format!("{}_value", self.0), "test").with(&[], 1.0));
            Ok(())
        }
    }

    /// Blocks until the test lets it go, counting how often it was started.
    struct Stuck {
        release: Mutex<mpsc::Receiver<()>>,
        starts: AtomicU64,
    }
    impl Source for Stuck {
        fn name(&self) -> &'static str {
            "stuck"
        }
        fn collect(&self, _out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
            self.starts.fetch_add(1, Ordering::SeqCst);
            let _ = self.release.lock().map(|r| r.recv());
            Ok(())
        }
    }

    struct Partial;
    impl Source for Partial {
        fn name(&self) -> &'static str {
            "partial"
        }
        fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
            out.push(MetricFamily::gauge("partial_value", "test").with(&[], 2.0));
            Err(SourceError::Other("one mount unreadable".into()))
        }
    }

    fn success(snapshot: &Snapshot, collector: &str) -> Option<f64> {
        snapshot
            .family("node_scrape_collector_success")?
            .samples
            .iter()
            .find(|s| s.labels[0].1 == collector)
            .map(|s| s.value)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stuck_source_is_reported_and_not_restarted() {
        let (tx, rx) = mpsc::channel();
        let stuck = Arc::new(Stuck {
            release: Mutex::new(rx),
            starts: AtomicU64::new(0),
        });
        let collector = Collector::new(
            vec![Arc::new(Fixed("a")), stuck.clone(), Arc::new(Partial)],
            Duration::from_millis(100),
        );
        for _ in 0..3 {
            let started = Instant::now();
            let snapshot = collector.collect_once().await;
            assert!(started.elapsed() < Duration::from_secs(2));
            assert_eq!(success(&snapshot, "a"), Some(1.0));
            assert_eq!(success(&snapshot, "stuck"), Some(0.0));
            assert!(snapshot.family("a_value").is_some());
            // A failing source keeps what it did produce.
            assert_eq!(success(&snapshot, "partial"), Some(0.0));
            assert!(snapshot.family("partial_value").is_some());
        }
        assert_eq!(
            stuck.starts.load(Ordering::SeqCst),
            1,
            "restarted while stuck"
        );

        // Releasing it (and every later run) lets it return; it runs again next cycle.
        drop(tx);
        let mut recovered = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if success(&collector.collect_once().await, "stuck") == Some(1.0) {
                recovered = true;
                break;
            }
        }
        assert!(recovered);
    }

    #[test]
    fn families_of_one_name_merge_and_sort() {
        let a = MetricFamily::gauge("b_metric", "x").with(&[("k", "1")], 1.0);
        let b = MetricFamily::gauge("a_metric", "x").with(&[], 1.0);
        let c = MetricFamily::gauge("b_metric", "x").with(&[("k", "2")], 2.0);
        let d = MetricFamily::unknown("b_metric", "clash").with(&[("k", "3")], 2.0);
        let merged = merge_families(vec![a, b, c]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].name, "a_metric");
        assert_eq!(merged[1].samples.len(), 2);
        let clashed = merge_families(vec![merged[1].clone(), d]);
        assert_eq!(clashed.len(), 1);
        assert_eq!(clashed[0].samples.len(), 2);
    }

    #[test]
    fn snapshot_encodes_once_per_format() {
        let snapshot = Snapshot::new(vec![MetricFamily::gauge("x", "y").with(&[], 1.0)], vec![]);
        let first = snapshot.encoded(Format::Text);
        let second = snapshot.encoded(Format::Text);
        assert!(Arc::ptr_eq(&first, &second));
        assert!(snapshot.encoded(Format::OpenMetrics).ends_with(b"# EOF\n"));
    }
}
