//! Shipping to the collector: an on-disk spool and the OTLP/gRPC client that drains it.
//!
//! # Layout
//! - [`spool`]: the durable queue (one FIFO per [`spool::RecordKind`], a shared size cap
//!   and its drop policy); `queue` holds one kind's segment files.
//! - `client`: the Export calls (gzip, bearer token, TLS), batches sent as raw bytes.
//! - `sender`: the drain loop with backoff, jitter and the rate limit.
//! - `stats`: the `vigil_agent_spool_*` and `vigil_agent_ship_*` families.
//!
//! The collection loop hands each snapshot to [`Shipper::offer`], which never waits: a
//! writer task encodes it and appends it to the spool on a blocking thread, and the
//! sender drains the spool. The collector down, slow or restarting shows only as records
//! queued in the spool. The log readers append their own batches, from their threads,
//! through [`Shipper::log_output`].

pub(crate) mod client;
mod queue;
mod segment;
mod sender;
pub mod spool;
mod stats;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use vigil_proto::MetricFamily;
use vigil_proto::otlp::{AgentResource, ExportMetricsServiceRequest, snapshot_to_resource_metrics};

use crate::collect::Snapshot;
use crate::config::AgentConfig;
use crate::logs::LogOutput;
use sender::{Backoff, RateLimit, Sender};
use spool::{RecordKind, Spool, SpoolError, SpoolOptions};
pub use stats::ShipStats;

/// Snapshots waiting for the spool writer. Only a spool stuck on its disk fills this;
/// then snapshots are dropped (and counted) rather than held in memory or waited for.
const PENDING_SNAPSHOTS: usize = 16;
/// First retry wait; doubles up to `retry_max_secs`.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// How long shutdown waits for snapshots already handed over to reach the spool.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// Why shipping could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("token file {path}: {message}")]
    Token { path: PathBuf, message: String },
    #[error("collector CA file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("collector {url}: {message}")]
    Collector { url: String, message: String },
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("opening the spool: {0}")]
    Task(String),
}

/// The running shipper: a spool writer and a sender, with their counters.
pub struct Shipper {
    snapshots: mpsc::Sender<Arc<Snapshot>>,
    spool: sender::SharedSpool,
    wake: Arc<Notify>,
    stats: Arc<ShipStats>,
    writer: JoinHandle<()>,
    sender: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Shipper {
    /// Starts shipping when `[shipper] collector` is set; None when it is not. Fails on a
    /// token file that cannot be read or is empty, a bad CA file or URL, or a spool that
    /// cannot be opened; a collector that is down is not a failure.
    pub async fn start(config: &AgentConfig, node: &str) -> Result<Option<Self>, ShipError> {
        let ship = &config.shipper;
        if ship.collector.is_empty() {
            return Ok(None);
        }
        let token_file = ship.token_file.clone();
        let dir = config.state_dir.join("spool");
        let options = SpoolOptions::with_max_bytes(ship.spool_max_bytes);
        let (token, spool) = tokio::task::spawn_blocking(move || {
            let token = read_token(&token_file)?;
            let spool = Spool::open(&dir, options)?;
            Ok::<_, ShipError>((token, spool))
        })
        .await
        .map_err(|e| ShipError::Task(e.to_string()))??;
        let client = client::Client::new(ship, token.as_deref(), &ship.token_file)?;

        let stats = Arc::new(ShipStats::new());
        stats.observe(&spool);
        let spool = Arc::new(Mutex::new(spool));
        let wake = Arc::new(Notify::new());
        let (snapshots, pending) = mpsc::channel(PENDING_SNAPSHOTS);
        let (stop, stop_rx) = watch::channel(false);
        let resource = OwnedResource {
            node: node.to_owned(),
            interval_secs: config.interval_secs,
        };
        let writer = tokio::spawn(write_spool(
            pending,
            Arc::clone(&spool),
            Arc::clone(&stats),
            Arc::clone(&wake),
            resource,
        ));
        let sender = Sender {
            spool: Arc::clone(&spool),
            client,
            stats: Arc::clone(&stats),
            wake: Arc::clone(&wake),
            batch_max_bytes: ship.batch_max_bytes,
            rate: RateLimit::new(ship.drain_max_bytes_per_sec),
            backoff: Backoff::new(FIRST_RETRY, Duration::from_secs_f64(ship.retry_max_secs)),
        };
        let sender = tokio::spawn(sender.run(stop_rx));
        tracing::info!(collector = %ship.collector, "shipping to the collector");
        Ok(Some(Self {
            snapshots,
            spool,
            wake,
            stats,
            writer,
            sender,
            stop,
        }))
    }

    /// Hands a snapshot over for spooling and shipping; never waits.
    pub fn offer(&self, snapshot: Arc<Snapshot>) {
        if self.snapshots.try_send(snapshot).is_err() {
            self.stats.count_unspooled();
            tracing::warn!("spool writer is behind; dropped a snapshot");
        }
    }

    /// Where the log readers append their batches: the spool's `logs` queue.
    pub fn log_output(&self) -> Arc<dyn LogOutput> {
        Arc::new(LogSpool {
            spool: Arc::clone(&self.spool),
            stats: Arc::clone(&self.stats),
            wake: Arc::clone(&self.wake),
        })
    }

    /// The shipper's own metric families, for the snapshot.
    pub fn families(&self) -> Vec<MetricFamily> {
        self.stats.families()
    }

    pub fn stats(&self) -> &ShipStats {
        &self.stats
    }

    /// Spools what was already handed over, then stops sending; what is unacknowledged
    /// stays in the spool for the next start.
    pub async fn shutdown(self) {
        drop(self.snapshots);
        if tokio::time::timeout(SHUTDOWN_FLUSH, self.writer)
            .await
            .is_err()
        {
            tracing::warn!("spool writer did not finish in time");
        }
        let _ = self.stop.send(true);
        let _ = self.sender.await;
    }
}

/// Appends encoded log batches to the spool, from the log readers' threads.
struct LogSpool {
    spool: sender::SharedSpool,
    stats: Arc<ShipStats>,
    wake: Arc<Notify>,
}

impl LogOutput for LogSpool {
    fn append(&self, payload: &[u8]) -> Result<(), String> {
        let mut spool = self
            .spool
            .lock()
            .map_err(|_| "spool lock poisoned by an earlier panic".to_owned())?;
        let result = spool.append(RecordKind::Logs, payload);
        self.stats.observe(&spool);
        drop(spool);
        result.map_err(|e| e.to_string())?;
        self.wake.notify_one();
        Ok(())
    }
}

struct OwnedResource {
    node: String,
    interval_secs: f64,
}

/// Encodes each snapshot as an ExportMetricsServiceRequest stamped with its collection
/// time, and appends it to the spool (both on a blocking thread).
async fn write_spool(
    mut pending: mpsc::Receiver<Arc<Snapshot>>,
    spool: sender::SharedSpool,
    stats: Arc<ShipStats>,
    wake: Arc<Notify>,
    resource: OwnedResource,
) {
    let resource = Arc::new(resource);
    let mut failing = false;
    while let Some(snapshot) = pending.recv().await {
        let (resource, spool, stats_copy) = (
            Arc::clone(&resource),
            Arc::clone(&spool),
            Arc::clone(&stats),
        );
        let appended = tokio::task::spawn_blocking(move || {
            // Encoded before taking the lock, so the sender is not held up by it.
            let agent = AgentResource {
                node: &resource.node,
                agent_version: env!("CARGO_PKG_VERSION"),
                interval_secs: resource.interval_secs,
            };
            let metrics =
                snapshot_to_resource_metrics(&snapshot.families, &agent, snapshot.collected_at_ms);
            let payload = ExportMetricsServiceRequest {
                resource_metrics: vec![metrics],
            }
            .encode_to_vec();
            drop(snapshot);
            let mut spool = spool
                .lock()
                .map_err(|_| "spool lock poisoned by an earlier panic".to_owned())?;
            let result = spool.append(RecordKind::Metrics, &payload);
            stats_copy.observe(&spool);
            match result {
                Ok(_) => Ok(()),
                // Counted by the spool as dropped.
                Err(e @ SpoolError::TooLarge { .. }) => Err(e.to_string()),
                Err(e) => {
                    stats_copy.count_unspooled();
                    Err(e.to_string())
                }
            }
        })
        .await
        .map_err(|e| format!("spool task failed: {e}"))
        .and_then(|r| r);
        match appended {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("spooling works again");
                }
                wake.notify_one();
            }
            Err(e) if !failing => {
                failing = true;
                tracing::error!(error = %e, "spooling a snapshot failed; it is not shipped");
            }
            Err(_) => {}
        }
    }
}

/// The bearer token: the file's content, trimmed. None when no file is configured.
pub(crate) fn read_token(path: &Path) -> Result<Option<String>, ShipError> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| ShipError::Token {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ShipError::Token {
            path: path.to_owned(),
            message: "file is empty".to_owned(),
        });
    }
    Ok(Some(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_trimmed_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cret\n").unwrap();
        assert_eq!(read_token(&path).unwrap().as_deref(), Some("s3cret"));
        std::fs::write(&path, "\n \n").unwrap();
        let err = read_token(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("empty"),
            "{err}"
        );
        let missing = dir.path().join("missing");
        let err = read_token(&missing).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
        assert_eq!(read_token(Path::new("")).unwrap(), None);
    }
}
