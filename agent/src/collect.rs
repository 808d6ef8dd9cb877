//! One collection cycle: every source on its own blocking thread, each with a deadline.
//!
//! A source that is still running from an earlier cycle (a hung statvfs, a driver call
//! that never returns) is not started again: that would pile up a thread per cycle. It
//! is reported as failed until it returns, and everything else carries on.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use vigil_proto::MetricFamily;
use vigil_proto::exposition::{self, Format};

use crate::sources::{Source, SourceError};

/// One cycle's work, shared between the collecting task and its worker threads.
struct Cycle {
    state: Mutex<CycleState>,
    /// Woken when the queue is empty and nothing runs.
    finished: tokio::sync::Notify,
}

type Finished = (usize, Result<(), String>, Vec<MetricFamily>, Duration);

struct CycleState {
    /// Slots not yet started.
    queue: VecDeque<usize>,
    /// Started and not done: slot, start, the abandon flag of the worker running it.
    running: Vec<(usize, Instant, Arc<AtomicBool>)>,
    done: Vec<Finished>,
}

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
    /// Wall-clock start of the collection, in ms since the epoch: the samples' timestamp
    /// when shipped, however late the spool sends them.
    pub collected_at_ms: i64,
    text: OnceLock<Bytes>,
    openmetrics: OnceLock<Bytes>,
}

impl Snapshot {
    /// A snapshot collected now.
    pub fn new(families: Vec<MetricFamily>) -> Self {
        Self::collected_at(families, unix_ms(SystemTime::now()))
    }

    pub fn collected_at(families: Vec<MetricFamily>, collected_at_ms: i64) -> Self {
        Self {
            families,
            collected_at_ms,
            text: OnceLock::new(),
            openmetrics: OnceLock::new(),
        }
    }

    /// This snapshot with `extra` families merged in, keeping its collection time.
    pub fn extended(self, extra: Vec<MetricFamily>) -> Self {
        let mut families = self.families;
        families.extend(extra);
        Self::collected_at(merge_families(families), self.collected_at_ms)
    }

    /// The exposition in `format`, encoded on first use and shared by later scrapes.
    pub fn encoded(&self, format: Format) -> Bytes {
        let cell = match format {
            Format::Text => &self.text,
            Format::OpenMetrics => &self.openmetrics,
        };
        cell.get_or_init(|| {
            let mut out = String::with_capacity(64 * 1024);
            exposition::encode(&self.families, format, &mut out);
            Bytes::from(out.into_bytes())
        })
        .clone()
    }

    /// The family named `name`, if any source produced it.
    pub fn family(&self, name: &str) -> Option<&MetricFamily> {
        self.families
            .binary_search_by(|f| (*f.name).cmp(name))
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
    ///
    /// The sources run one after another on one blocking thread, which wakes this task
    /// once, when all are done: a cycle costs two thread wake-ups, not two per source.
    /// When a source overruns its deadline, that thread is abandoned to it (it exits
    /// once the source returns) and a fresh one carries on with the sources not yet
    /// started.
    pub async fn collect_once(&self) -> Snapshot {
        let cycle_start = Instant::now();
        let collected_at_ms = unix_ms(SystemTime::now());
        let mut reports: Vec<Option<SourceReport>> = (0..self.slots.len()).map(|_| None).collect();
        let mut queue = VecDeque::with_capacity(self.slots.len());
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.busy.swap(true, Ordering::AcqRel) {
                reports[i] = Some(SourceReport {
                    name: slot.source.name(),
                    success: false,
                    duration: Duration::ZERO,
                    error: Some("still running from an earlier cycle".to_owned()),
                });
            } else {
                queue.push_back(i);
            }
        }
        let mut outstanding = queue.len();
        let cycle = Arc::new(Cycle {
            state: Mutex::new(CycleState {
                queue,
                running: Vec::new(),
                done: Vec::new(),
            }),
            finished: tokio::sync::Notify::new(),
        });
        if outstanding > 0 {
            self.spawn_worker(&cycle);
        }

        let mut families = Vec::new();
        while outstanding > 0 {
            let next_deadline = {
                let Ok(mut state) = cycle.state.lock() else {
                    break;
                };
                for (i, result, out, duration) in state.done.drain(..) {
                    if reports[i].is_some() {
                        // Answered after its deadline: already reported as failed.
                        continue;
                    }
                    outstanding -= 1;
                    // A source that errors after producing part of its families keeps
                    // them: one unreadable mount must not hide the others.
                    families.extend(out);
                    reports[i] = Some(SourceReport {
                        name: self.slots[i].source.name(),
                        success: result.is_ok(),
                        duration,
                        error: result.err(),
                    });
                }
                let now = Instant::now();
                let mut abandoned_one = false;
                state.running.retain(|(i, started, flag)| {
                    if now.duration_since(*started) < self.timeout {
                        return true;
                    }
                    flag.store(true, Ordering::Release);
                    abandoned_one = true;
                    if reports[*i].is_none() {
                        outstanding -= 1;
                        reports[*i] = Some(SourceReport {
                            name: self.slots[*i].source.name(),
                            success: false,
                            duration: self.timeout,
                            error: Some(format!(
                                "no answer within {:.1}s",
                                self.timeout.as_secs_f64()
                            )),
                        });
                    }
                    false
                });
                if abandoned_one && !state.queue.is_empty() {
                    self.spawn_worker(&cycle);
                }
                let oldest = state.running.iter().map(|r| r.1).min().unwrap_or(now);
                oldest + self.timeout
            };
            if outstanding == 0 {
                break;
            }
            let _ = tokio::time::timeout_at(next_deadline.into(), cycle.finished.notified()).await;
        }

        // Every slot has a report unless the cycle's lock was poisoned, which only a
        // panic while holding it could cause; such a slot counts as failed.
        let reports: Vec<SourceReport> = reports
            .into_iter()
            .zip(&self.slots)
            .map(|(report, slot)| {
                report.unwrap_or_else(|| SourceReport {
                    name: slot.source.name(),
                    success: false,
                    duration: cycle_start.elapsed(),
                    error: Some("collection state was lost".to_owned()),
                })
            })
            .collect();
        for (slot, report) in self.slots.iter().zip(&reports) {
            let was_failing = slot.failing.swap(!report.success, Ordering::Relaxed);
            match (&report.error, was_failing) {
                (Some(error), false) => {
                    tracing::error!(collector = report.name, error = %error, "collector failed")
                }
                (None, true) => tracing::info!(collector = report.name, "collector recovered"),
                _ => {}
            }
        }
        let cycles = self.cycles.fetch_add(1, Ordering::Relaxed) + 1;
        families.extend(self.health_families(&reports, cycles, cycle_start.elapsed()));
        Snapshot::collected_at(merge_families(families), collected_at_ms)
    }

    /// Starts a blocking worker that runs queued sources until the queue is empty or it
    /// is abandoned.
    fn spawn_worker(&self, cycle: &Arc<Cycle>) {
        let jobs: Vec<(Arc<dyn Source>, Arc<AtomicBool>)> = self
            .slots
            .iter()
            .map(|s| (Arc::clone(&s.source), Arc::clone(&s.busy)))
            .collect();
        let cycle = Arc::clone(cycle);
        tokio::task::spawn_blocking(move || {
            let abandoned = Arc::new(AtomicBool::new(false));
            loop {
                let i = {
                    let Ok(mut state) = cycle.state.lock() else {
                        return;
                    };
                    if abandoned.load(Ordering::Acquire) {
                        return;
                    }
                    let Some(i) = state.queue.pop_front() else {
                        return;
                    };
                    state
                        .running
                        .push((i, Instant::now(), Arc::clone(&abandoned)));
                    i
                };
                let (source, busy) = &jobs[i];
                let start = Instant::now();
                let mut out = Vec::new();
                let result =
                    std::panic::catch_unwind(AssertUnwindSafe(|| source.collect(&mut out)));
                let result = match result {
                    Ok(r) => r.map_err(|e: SourceError| e.to_string()),
                    Err(_) => Err("source panicked".to_owned()),
                };
                busy.store(false, Ordering::Release);
                let Ok(mut state) = cycle.state.lock() else {
                    return;
                };
                state.running.retain(|r| r.0 != i);
                state.done.push((i, result, out, start.elapsed()));
                if state.queue.is_empty() && state.running.is_empty() {
                    cycle.finished.notify_one();
                }
            }
        });
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

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn unix_secs(t: SystemTime) -> f64 {
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
        let snapshot = Snapshot::new(vec![MetricFamily::gauge("x", "y").with(&[], 1.0)]);
        let first = snapshot.encoded(Format::Text);
        let second = snapshot.encoded(Format::Text);
        // The second scrape shares the first one's buffer.
        assert_eq!(first.as_ptr(), second.as_ptr());
        assert!(snapshot.encoded(Format::OpenMetrics).ends_with(b"# EOF\n"));
    }
}
