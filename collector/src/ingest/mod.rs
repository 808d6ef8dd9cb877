//! OTLP receivers (gRPC and HTTP), their authentication and limits, and the path from
//! a decoded request into the store.
//!
//! A request is acknowledged only after its samples are appended and the store's WAL
//! is synced, so an acknowledged sample survives a kill -9 or a power cut; a store
//! failure answers UNAVAILABLE / 503 so the agent keeps the batch in its spool and
//! retries. Decoding, interning, appending and syncing run on tokio's blocking pool.
//!
//! An agent's resource (`service.name = vigil-agent`) is a full snapshot of its node:
//! a series it sent last time and not this time gets a staleness marker at this
//! snapshot's time, as a Prometheus scrape would write. Foreign senders get none.
//!
//! # Layout
//! - [`auth`]: the fleet token file and bearer checks.
//! - `intern`: the cache from a series' raw identity to its interned label set.
//! - [`grpc`], [`http`]: the two receivers; `json` reads OTLP/JSON bodies.
//! - [`logs`]: OTLP logs on both receivers, into the log index.
//! - `stats`: the receivers' own counters.

pub mod auth;
pub mod grpc;
pub mod http;
mod intern;
mod json;
pub mod logs;
mod stats;

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use vigil_proto::MetricFamily;
use vigil_proto::otlp::{Decoded, ExportMetricsServiceRequest, WireError, decode, decode_protobuf};
use vigil_rules::promql::{Labels, is_stale_nan};

pub use auth::{Principal, Tokens, TokensError};
pub use intern::LabelLimits;
pub use stats::{Outcome, Protocol};

use crate::registry::{NodeObservation, Registry};
use crate::store::{Store, StoreError};
use intern::{FxBuild, SeriesCache};
use stats::{RejectReason, Stats};

/// Settings of the receivers.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Accepted bearer tokens; `None` accepts every request (logged as a warning).
    pub tokens: Option<Tokens>,
    /// Largest request body, both as sent and after gzip decompression (a small gzip
    /// body can inflate a thousandfold).
    pub max_request_bytes: usize,
    /// How long the label-set cache keeps a series that is no longer sent.
    pub series_cache_idle: Duration,
    /// Upper bound on cached series identities.
    pub series_cache_max_entries: usize,
    /// Series over these are refused (`partial_success`) and not stored.
    pub label_limits: LabelLimits,
    /// Bumped after every request whose samples are stored and synced: the rule
    /// evaluator's cue that new data is there (eager evaluation).
    pub arrivals: Option<Arc<tokio::sync::watch::Sender<u64>>>,
    /// Where OTLP logs go; `None` answers logs requests UNAVAILABLE.
    pub logs: Option<Arc<crate::index::LogIndex>>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            tokens: None,
            max_request_bytes: 16 << 20,
            series_cache_idle: Duration::from_secs(10 * 60),
            series_cache_max_entries: 4_000_000,
            label_limits: LabelLimits::default(),
            arrivals: None,
            logs: None,
        }
    }
}

/// What happened to an accepted request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exported {
    /// Samples stored.
    pub accepted: u64,
    /// Data points (or samples) refused; OTLP's `rejected_data_points`.
    pub rejected: u64,
    /// Why, for `partial_success.error_message`; empty when nothing was refused.
    pub message: String,
}

/// Why a request could not be stored at all; the sender should retry.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the store is unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("the ingest task failed: {0}")]
    Task(String),
    #[error("this collector keeps no log index")]
    NoLogIndex,
    #[error(transparent)]
    Logs(#[from] crate::index::IndexError),
    /// The body is not an `ExportMetricsServiceRequest`; retrying will not help.
    #[error("{0}")]
    Malformed(#[from] WireError),
    /// A per-node token sent data for another node (or for no node).
    #[error("the token of node {token_node:?} may not send data for host.name {claimed:?}")]
    WrongNode {
        token_node: String,
        claimed: Option<String>,
    },
}

/// The series an agent sent in its latest snapshot.
struct Snapshot {
    t_ms: i64,
    series: HashSet<Labels, FxBuild>,
}

/// Shared state of both receivers.
pub struct Ingest {
    store: Arc<Store>,
    registry: Arc<Registry>,
    tokens: Option<Tokens>,
    max_request_bytes: usize,
    cache: Mutex<SeriesCache>,
    snapshots: Mutex<HashMap<String, Snapshot>>,
    stats: Stats,
    arrivals: Option<Arc<tokio::sync::watch::Sender<u64>>>,
    logs: Option<Arc<crate::index::LogIndex>>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("tokens", &self.tokens)
            .field("max_request_bytes", &self.max_request_bytes)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks mid-update; the state stays usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ingest {
    pub fn new(store: Arc<Store>, registry: Arc<Registry>, options: IngestOptions) -> Ingest {
        if options.tokens.is_none() {
            tracing::warn!("OTLP receivers accept requests without a token (no token file given)");
        }
        Ingest {
            store,
            registry,
            tokens: options.tokens,
            max_request_bytes: options.max_request_bytes,
            cache: Mutex::new(SeriesCache::new(
                options.series_cache_idle,
                options.series_cache_max_entries,
                options.label_limits,
            )),
            snapshots: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            arrivals: options.arrivals,
            logs: options.logs,
        }
    }

    /// The receivers' own metrics.
    pub fn metric_families(&self) -> Vec<MetricFamily> {
        self.stats.families()
    }

    pub fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    /// True when the `authorization` header value carries an accepted token, or when
    /// no tokens are configured.
    pub fn authorize(&self, authorization: Option<&[u8]>) -> bool {
        self.authenticate(authorization).is_some()
    }

    /// Who the `authorization` header value speaks for: `None` when it carries no
    /// accepted token; [`Principal::Fleet`] when no tokens are configured.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Option<Principal> {
        match &self.tokens {
            None => Some(Principal::Fleet),
            Some(t) => t.principal(authorization),
        }
    }

    /// Counts one answered request.
    pub fn record(&self, protocol: Protocol, outcome: Outcome, started: Instant) {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.request(protocol, outcome, micros);
    }

    /// Requests answered so far through `protocol` with `outcome`.
    pub fn requests(&self, protocol: Protocol, outcome: Outcome) -> u64 {
        self.stats.requests(protocol, outcome)
    }

    /// Stores a request on the blocking pool; returns once it is durable.
    pub async fn export(
        self: &Arc<Self>,
        request: ExportMetricsServiceRequest,
    ) -> Result<Exported, IngestError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.export_blocking(&request))
            .await
            .map_err(|e| IngestError::Task(e.to_string()))?
    }

    /// Stores a protobuf-encoded request on the blocking pool; returns once it is
    /// durable.
    pub async fn export_protobuf(
        self: &Arc<Self>,
        body: bytes::Bytes,
    ) -> Result<Exported, IngestError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.export_protobuf_blocking(&body))
            .await
            .map_err(|e| IngestError::Task(e.to_string()))?
    }

    /// Stores a protobuf-encoded request, read without copying its strings. Blocks.
    pub fn export_protobuf_blocking(&self, body: &[u8]) -> Result<Exported, IngestError> {
        self.store_decoded(&decode_protobuf(body)?)
    }

    /// [`Self::export_protobuf`] for `principal`: a per-node token's request is refused
    /// whole when any resource claims another node.
    pub async fn export_protobuf_as(
        self: &Arc<Self>,
        body: bytes::Bytes,
        principal: Principal,
    ) -> Result<Exported, IngestError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.export_protobuf_blocking_as(&body, &principal))
            .await
            .map_err(|e| IngestError::Task(e.to_string()))?
    }

    /// [`Self::export_protobuf_blocking`] for `principal`. Blocks.
    pub fn export_protobuf_blocking_as(
        &self,
        body: &[u8],
        principal: &Principal,
    ) -> Result<Exported, IngestError> {
        let decoded = decode_protobuf(body)?;
        check_principal(&decoded, principal)?;
        self.store_decoded(&decoded)
    }

    /// [`Self::export_blocking`] for `principal`. Blocks.
    pub fn export_blocking_as(
        &self,
        request: &ExportMetricsServiceRequest,
        principal: &Principal,
    ) -> Result<Exported, IngestError> {
        let decoded = decode(request);
        check_principal(&decoded, principal)?;
        self.store_decoded(&decoded)
    }

    /// Stores a prost-decoded request (OTLP/JSON arrives that way). Blocks.
    pub fn export_blocking(
        &self,
        request: &ExportMetricsServiceRequest,
    ) -> Result<Exported, IngestError> {
        self.store_decoded(&decode(request))
    }

    /// Stores a translated request: intern, append, mark stale, sync. Blocks.
    pub fn store_decoded(&self, decoded: &Decoded<'_>) -> Result<Exported, IngestError> {
        let mut batch: Vec<(Labels, i64, f64)> = Vec::with_capacity(decoded.samples.len());
        let mut zeros: Vec<(Labels, i64, f64)> = Vec::new();
        // Per agent resource: its index and the series it sent.
        let mut agent_series: Vec<(usize, Vec<Labels>)> = Vec::new();
        let mut over_limit = 0u64;
        let mut first_over_limit = None;
        {
            let mut cache = lock(&self.cache);
            cache.tick(Instant::now());
            for (ri, res) in decoded.resources.iter().enumerate() {
                let mut seen = Vec::with_capacity(if res.is_agent_snapshot {
                    res.samples.len()
                } else {
                    0
                });
                for s in &decoded.samples[res.samples.clone()] {
                    let i = match cache.intern_with(
                        decoded.name(s),
                        decoded.labels(s),
                        s.start_ms,
                        |l| self.store.canonical_labels(&l),
                    ) {
                        Ok(i) => i,
                        Err(e) => {
                            over_limit += 1;
                            first_over_limit.get_or_insert_with(|| {
                                format!("metric {:?}: {e}", decoded.name(s))
                            });
                            continue;
                        }
                    };
                    if let Some(start) = i.new_start_ms
                        && !is_stale_nan(s.value)
                    {
                        zeros.push((i.labels.clone(), start, 0.0));
                    }
                    if res.is_agent_snapshot {
                        seen.push(i.labels.clone());
                    }
                    batch.push((i.labels, s.t_ms, s.value));
                }
                if res.is_agent_snapshot && !seen.is_empty() {
                    agent_series.push((ri, seen));
                }
            }
            self.stats
                .series_cache_entries
                .store(cache.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }

        if !zeros.is_empty() {
            // A zero the store already has (or refuses as too old or out of order, after
            // a restart emptied the cache) is no error of the sender's.
            let r = self.store.append_batch(&zeros)?;
            add(&self.stats.created_zeros, r.accepted as u64);
        }
        let report = self.store.append_batch(&batch)?;
        let stale = self.staleness(decoded, agent_series)?;
        self.store.sync()?;
        if report.accepted > 0
            && let Some(arrivals) = &self.arrivals
        {
            arrivals.send_modify(|n| *n = n.wrapping_add(1));
        }

        add(&self.stats.accepted, report.accepted as u64);
        add(&self.stats.stale_markers, stale as u64);
        self.stats
            .reject(RejectReason::Unsupported, decoded.rejected_points());
        self.stats
            .reject(RejectReason::OutOfOrder, report.out_of_order as u64);
        self.stats
            .reject(RejectReason::DuplicateConflict, report.conflicts as u64);
        self.stats
            .reject(RejectReason::TooOld, report.too_old as u64);
        self.stats.reject(RejectReason::LabelLimits, over_limit);

        let mut message = decoded.rejection_message();
        if let Some(first) = first_over_limit {
            if !message.is_empty() {
                message.push_str("; ");
            }
            message.push_str(&format!(
                "{over_limit} samples refused by label limits, first: {first}"
            ));
        }
        if let Some((labels, t_ms, reason)) = &report.first_rejection {
            if !message.is_empty() {
                message.push_str("; ");
            }
            message.push_str(&format!(
                "{} samples refused by the store, first: {} for {labels} at {t_ms}",
                report.rejected(),
                reason.as_str()
            ));
        }
        Ok(Exported {
            accepted: report.accepted as u64,
            rejected: decoded.rejected_points() + over_limit + report.rejected() as u64,
            message,
        })
    }

    /// Marks stale what each agent sent last time and not now, and tells the registry
    /// about each snapshot. Returns the markers written.
    fn staleness(
        &self,
        decoded: &Decoded<'_>,
        agent_series: Vec<(usize, Vec<Labels>)>,
    ) -> Result<usize, StoreError> {
        let mut markers = 0;
        for (ri, seen) in agent_series {
            let res = &decoded.resources[ri];
            let Some(node) = res.host_name else { continue };
            let samples = &decoded.samples[res.samples.clone()];
            let t_ms = samples.iter().map(|s| s.t_ms).max().unwrap_or(i64::MIN);
            let current: HashSet<Labels, FxBuild> = seen.into_iter().collect();
            let gone: Vec<Labels> = {
                let mut snapshots = lock(&self.snapshots);
                match snapshots.get_mut(node) {
                    // A spooled snapshot older than the newest one seen: its series
                    // say nothing about what exists now.
                    Some(prev) if prev.t_ms > t_ms => continue,
                    Some(prev) => {
                        let gone = prev
                            .series
                            .iter()
                            .filter(|l| !current.contains(*l))
                            .cloned()
                            .collect();
                        prev.t_ms = t_ms;
                        prev.series = current;
                        gone
                    }
                    None => {
                        snapshots.insert(
                            node.to_owned(),
                            Snapshot {
                                t_ms,
                                series: current,
                            },
                        );
                        Vec::new()
                    }
                }
            };
            for labels in &gone {
                if self.store.mark_stale(labels, t_ms)? {
                    markers += 1;
                }
            }
            self.registry
                .observe(NodeObservation::from_snapshot(decoded, ri, node, t_ms));
        }
        Ok(markers)
    }
}

/// A per-node token speaks only for its node: every resource must name it as
/// `host.name`.
fn check_principal(decoded: &Decoded<'_>, principal: &Principal) -> Result<(), IngestError> {
    let Principal::Node(node) = principal else {
        return Ok(());
    };
    match decoded
        .resources
        .iter()
        .find(|r| r.host_name != Some(&**node))
    {
        None => Ok(()),
        Some(r) => Err(IngestError::WrongNode {
            token_node: node.to_string(),
            claimed: r.host_name.map(str::to_owned),
        }),
    }
}

fn add(counter: &std::sync::atomic::AtomicU64, n: u64) {
    counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}
