//! Log-derived counters: each `[[logs.metrics]]` query is run, after every commit, over
//! the records that commit added (an id range, so each record is counted once), and
//! the matches are counted by node and the configured labels into ordinary counter
//! series of the metric store. A series is written when it changes, starting with a 0
//! just before its first increment (so `increase()` sees the first event), and every
//! [`REFRESH`] whether or not it changed (so it does not go stale).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_rules::promql::Labels;

use super::partition::Partition;
use super::schema::Fields;
use super::search::{Filter, Parser, between};
use super::{IndexError, LogRecord};
use crate::config::LogMetricConfig;
use crate::store::Store;

/// How often every log counter is written even when unchanged.
const REFRESH: Duration = Duration::from_secs(15);

struct Metric {
    config: LogMetricConfig,
    filter: Filter,
}

pub(crate) struct LogMetrics {
    metrics: Vec<Metric>,
    counters: HashMap<Labels, f64>,
    store: Option<Arc<Store>>,
    last_refresh: Instant,
}

impl LogMetrics {
    /// Parses every metric's query; the first bad one is the error.
    pub(crate) fn new(
        parser: &Parser,
        configs: &[LogMetricConfig],
        store: Option<Arc<Store>>,
    ) -> Result<LogMetrics, IndexError> {
        let mut metrics = Vec::with_capacity(configs.len());
        for c in configs {
            let text = parser
                .parse(&c.query)
                .map_err(|e| IndexError::BadQuery(format!("logs.metrics {}: {e}", c.name)))?;
            metrics.push(Metric {
                config: c.clone(),
                filter: Filter {
                    text,
                    node: None,
                    severity: None,
                    source: None,
                    start_ns: None,
                    end_ns: None,
                },
            });
        }
        Ok(LogMetrics {
            metrics,
            counters: HashMap::new(),
            store,
            last_refresh: Instant::now(),
        })
    }

    /// Counts the records of batches `after_seq + 1 ..= through_seq` and writes the
    /// changed series at `now_ms`.
    pub(crate) fn on_commit(
        &mut self,
        fields: &Fields,
        partitions: &[Arc<Partition>],
        after_seq: u64,
        through_seq: u64,
        now_ms: i64,
    ) -> Result<(), IndexError> {
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        let mut batch: Vec<(Labels, i64, f64)> = Vec::new();
        let mut changed: HashSet<Labels> = HashSet::new();
        if through_seq > after_seq {
            for m in &self.metrics {
                for hit in between(fields, partitions, &m.filter, after_seq, through_seq, None)? {
                    let labels = labels_of(&m.config, &hit.record);
                    let value = self.counters.entry(labels.clone()).or_insert_with(|| {
                        batch.push((labels.clone(), now_ms - 1, 0.0));
                        0.0
                    });
                    *value += 1.0;
                    changed.insert(labels);
                }
            }
        }
        let refresh = self.last_refresh.elapsed() >= REFRESH;
        if refresh {
            self.last_refresh = Instant::now();
        }
        for (labels, value) in &self.counters {
            if refresh || changed.contains(labels) {
                batch.push((labels.clone(), now_ms, *value));
            }
        }
        if !batch.is_empty() {
            store.append_batch(&batch)?;
        }
        Ok(())
    }
}

/// `__name__`, `node` and the configured labels of a matching record; a label whose
/// field or attribute is missing is left out.
fn labels_of(config: &LogMetricConfig, r: &LogRecord) -> Labels {
    let mut pairs: Vec<(String, String)> = vec![
        ("__name__".into(), config.name.clone()),
        ("node".into(), r.node.clone()),
    ];
    for (label, key) in &config.labels {
        let value = match key.as_str() {
            "source" => Some(r.source.clone()),
            "severity" => Some(r.severity.clone()),
            "node" => Some(r.node.clone()),
            key => r.attributes.get(key).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        };
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            pairs.push((label.clone(), v));
        }
    }
    Labels::from_pairs(pairs)
}
