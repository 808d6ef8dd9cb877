//! The drain loop: reads batches from the spool's head, sends them, deletes what the
//! collector acknowledged, and waits (backoff with jitter) when it does not.
//!
//! One request is in flight at a time, so records arrive in the order they were
//! spooled; a live snapshot queues behind any backlog. A backlog (after a failed send,
//! or found at start) is paced by a token bucket of `drain_max_bytes_per_sec` so that a
//! fleet reconnecting after an outage drains it over minutes instead of all at once;
//! once a batch takes all that is queued the sender is at the live edge again and sends
//! unpaced, so a node that logs tens of MB/s is not held to the backlog's rate.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::client::{Client, Outcome};
use super::spool::{Batch, RecordKind, Spool, SpoolError};
use super::stats::ShipStats;

pub(crate) type SharedSpool = Arc<Mutex<Spool>>;

/// Runs `f` on the spool from a blocking thread and copies its counters out after.
pub(crate) async fn with_spool<T: Send + 'static>(
    spool: &SharedSpool,
    stats: &Arc<ShipStats>,
    f: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, String> {
    let spool = Arc::clone(spool);
    let stats = Arc::clone(stats);
    tokio::task::spawn_blocking(move || {
        let mut guard = spool
            .lock()
            .map_err(|_| "spool lock poisoned by an earlier panic".to_owned())?;
        let result = f(&mut guard).map_err(|e| e.to_string());
        stats.observe(&guard);
        result
    })
    .await
    .map_err(|e| format!("spool task failed: {e}"))?
}

/// How long a stopping sender waits for the answer to the request it has in flight.
const STOP_ANSWER_WAIT: Duration = Duration::from_secs(5);

pub(crate) struct Sender {
    pub spool: SharedSpool,
    pub client: Client,
    pub stats: Arc<ShipStats>,
    /// Woken when a record was appended.
    pub wake: Arc<Notify>,
    pub batch_max_bytes: u64,
    pub rate: RateLimit,
    pub backoff: Backoff,
}

impl Sender {
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // One record per request after the collector refused a batch as malformed or too
        // large, to find the record at fault; back to batches after a success.
        let mut single = false;
        let mut next_kind = 0;
        let mut failing_since: Option<Instant> = None;
        // Whether the spool may hold a backlog: at start, and after any failed send.
        let mut catching_up = true;
        while !*stop.borrow() {
            let appended = self.wake.notified();
            let max_bytes = if single { 1 } else { self.batch_max_bytes };
            let start = next_kind;
            let peeked = with_spool(&self.spool, &self.stats, move |spool| {
                for i in 0..RecordKind::ALL.len() {
                    let kind = RecordKind::ALL[(start + i) % RecordKind::ALL.len()];
                    let batch = spool.peek(kind, max_bytes)?;
                    if !batch.records.is_empty() {
                        let whole = spool.stats(kind).queued_records == batch.records.len() as u64;
                        return Ok(Some((batch, whole)));
                    }
                }
                Ok(None)
            })
            .await;
            let mut batch = match peeked {
                Ok(Some((batch, whole))) => {
                    if whole {
                        catching_up = false;
                    }
                    batch
                }
                Ok(None) => {
                    catching_up = false;
                    tokio::select! {
                        _ = appended => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the spool failed");
                    if !sleep_or_stop(self.backoff.next(), &mut stop).await {
                        break;
                    }
                    continue;
                }
            };
            next_kind = (RecordKind::ALL
                .iter()
                .position(|k| *k == batch.kind)
                .unwrap_or(0)
                + 1)
                % RecordKind::ALL.len();

            if catching_up {
                let wait = self.rate.reserve(batch.frame_bytes(), Instant::now());
                if !sleep_or_stop(wait, &mut stop).await {
                    break;
                }
            }
            let payloads: Vec<Vec<u8>> = batch
                .records
                .iter_mut()
                .map(|r| std::mem::take(&mut r.payload))
                .collect();
            let export = self.client.export(batch.kind, payloads);
            tokio::pin!(export);
            let outcome = tokio::select! {
                o = &mut export => o,
                // The collector may already hold this batch (it stores what it received
                // even when the sender goes away), so wait for its answer: a batch
                // acknowledged is deleted instead of sent again after the restart.
                _ = stop.changed() => match tokio::time::timeout(STOP_ANSWER_WAIT, export).await {
                    Ok(o) => o,
                    // Not acknowledged, so sent again after the restart.
                    Err(_) => break,
                },
            };
            match outcome {
                Outcome::Accepted { rejected, message } => {
                    if rejected > 0 {
                        tracing::warn!(kind = batch.kind.as_str(), rejected, message = %message, "collector refused part of a batch");
                    }
                    let records = batch.records.len() as u64;
                    if let Err(e) = self.ack(batch).await {
                        tracing::error!(error = %e, "deleting acknowledged records failed; they will be sent again");
                    }
                    self.stats.count_success(records, rejected.max(0) as u64);
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            after_secs = since.elapsed().as_secs(),
                            "collector accepts again"
                        );
                    }
                    self.backoff.reset();
                    single = false;
                }
                Outcome::Retry { result, status } => {
                    self.stats.count_request(result);
                    catching_up = true;
                    if failing_since.is_none() {
                        failing_since = Some(Instant::now());
                        tracing::warn!(result, code = ?status.code(), message = status.message(), "shipping failed; keeping the records and retrying");
                    } else {
                        tracing::debug!(
                            result,
                            message = status.message(),
                            "shipping failed again"
                        );
                    }
                    if result == "resource_exhausted" {
                        single = true;
                    }
                    if !sleep_or_stop(self.backoff.next(), &mut stop).await {
                        break;
                    }
                }
                Outcome::Invalid { status } => {
                    self.stats.count_request("rejected");
                    if batch.records.len() > 1 {
                        single = true;
                        continue;
                    }
                    tracing::error!(
                        kind = batch.kind.as_str(),
                        message = status.message(),
                        "collector refused a record as malformed; dropping it"
                    );
                    let result =
                        with_spool(&self.spool, &self.stats, move |spool| spool.reject(&batch))
                            .await;
                    if let Err(e) = result {
                        tracing::error!(error = %e, "dropping the refused record failed");
                    }
                    single = false;
                }
            }
        }
    }

    async fn ack(&self, batch: Batch) -> Result<(), String> {
        with_spool(&self.spool, &self.stats, move |spool| spool.ack(&batch)).await
    }
}

/// Sleeps for `wait`; false when told to stop meanwhile.
async fn sleep_or_stop(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if wait.is_zero() {
        return !*stop.borrow();
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// Token bucket over bytes sent: a second's worth may go at once, and beyond that the
/// rate holds on average.
pub(crate) struct RateLimit {
    bytes_per_sec: f64,
    burst: Duration,
    /// When the bucket is no longer in debt.
    ready_at: Option<Instant>,
}

impl RateLimit {
    pub(crate) fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            burst: Duration::from_secs(1),
            ready_at: None,
        }
    }

    /// How long to wait before sending `bytes`; charges them.
    pub(crate) fn reserve(&mut self, bytes: u64, now: Instant) -> Duration {
        let wait = self
            .ready_at
            .map_or(Duration::ZERO, |r| r.saturating_duration_since(now));
        let send_at = now + wait;
        let floor = send_at.checked_sub(self.burst).unwrap_or(send_at);
        let from = self.ready_at.map_or(floor, |r| r.max(floor));
        self.ready_at = Some(from + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec));
        wait
    }
}

/// Exponential backoff with jitter: each wait is drawn from the upper half of a window
/// that doubles up to the cap, so agents that lost the collector together do not
/// return together.
pub(crate) struct Backoff {
    first: Duration,
    cap: Duration,
    window: Duration,
    seed: u64,
}

impl Backoff {
    pub(crate) fn new(first: Duration, cap: Duration) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        Self {
            first: first.min(cap),
            cap,
            window: first.min(cap),
            seed: (nanos ^ (u64::from(std::process::id()) << 32)) | 1,
        }
    }

    pub(crate) fn next(&mut self) -> Duration {
        // xorshift64: jitter needs spread, not cryptographic randomness.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let fraction = 0.5 + (self.seed % 1000) as f64 / 2000.0;
        let wait = self.window.mul_f64(fraction);
        self.window = (self.window * 2).min(self.cap);
        wait
    }

    pub(crate) fn reset(&mut self) {
        self.window = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_lets_a_second_through_then_paces() {
        let now = Instant::now();
        let mut rate = RateLimit::new(1000);
        // Small sends within the burst go at once.
        assert_eq!(rate.reserve(300, now), Duration::ZERO);
        assert_eq!(rate.reserve(300, now), Duration::ZERO);
        assert_eq!(rate.reserve(300, now), Duration::ZERO);
        // 10 kB goes at once too; after it the bucket owes 9.9 s.
        assert_eq!(rate.reserve(10_000, now), Duration::ZERO);
        let wait = rate.reserve(1000, now);
        assert!(
            wait > Duration::from_millis(9800) && wait < Duration::from_millis(10_000),
            "{wait:?}"
        );
        // Over a long drain the average is the rate.
        let mut rate = RateLimit::new(1000);
        let mut t = now;
        for _ in 0..100 {
            t += rate.reserve(500, t);
        }
        let secs = (t - now).as_secs_f64();
        assert!((48.0..=50.0).contains(&secs), "{secs}");
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let waits: Vec<Duration> = (0..10).map(|_| b.next()).collect();
        assert!(waits[0] >= Duration::from_millis(250) && waits[0] <= Duration::from_millis(500));
        assert!(waits[3] >= Duration::from_secs(2) && waits[3] <= Duration::from_secs(4));
        for w in &waits[7..] {
            assert!(
                *w >= Duration::from_secs(15) && *w <= Duration::from_secs(30),
                "{w:?}"
            );
        }
        assert!(
            waits[7..].windows(2).any(|w| w[0] != w[1]),
            "no jitter: {waits:?}"
        );
        b.reset();
        assert!(b.next() <= Duration::from_millis(500));
    }
}
