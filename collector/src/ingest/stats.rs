//! The receivers' own counters, for the collector's `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use vigil_proto::MetricFamily;

/// Which receiver a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl Protocol {
    const ALL: [Protocol; 3] = [Protocol::Grpc, Protocol::HttpProtobuf, Protocol::HttpJson];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http_protobuf",
            Protocol::HttpJson => "http_json",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every data point stored.
    Success,
    /// Stored, with some points refused (`partial_success`).
    Partial,
    Unauthenticated,
    TooLarge,
    /// The body did not decode (bad protobuf, JSON or gzip).
    Malformed,
    /// Wrong content type or encoding, method or path.
    Unsupported,
    /// The store failed; the sender should retry.
    Unavailable,
    /// A per-node token sent data for another node.
    Forbidden,
}

impl Outcome {
    const ALL: [Outcome; 8] = [
        Outcome::Success,
        Outcome::Partial,
        Outcome::Unauthenticated,
        Outcome::TooLarge,
        Outcome::Malformed,
        Outcome::Unsupported,
        Outcome::Unavailable,
        Outcome::Forbidden,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Partial => "partial",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::TooLarge => "too_large",
            Outcome::Malformed => "malformed",
            Outcome::Unsupported => "unsupported",
            Outcome::Unavailable => "unavailable",
            Outcome::Forbidden => "forbidden",
        }
    }
}

/// Why samples were refused, as the counter's `reason` label.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RejectReason {
    /// The OTLP point cannot become a Prometheus sample (delta, exponential, ...).
    Unsupported,
    OutOfOrder,
    DuplicateConflict,
    TooOld,
    /// Over a label limit (count, name or value length).
    LabelLimits,
}

impl RejectReason {
    const ALL: [RejectReason; 5] = [
        RejectReason::Unsupported,
        RejectReason::OutOfOrder,
        RejectReason::DuplicateConflict,
        RejectReason::TooOld,
        RejectReason::LabelLimits,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RejectReason::Unsupported => "unsupported",
            RejectReason::OutOfOrder => "out_of_order",
            RejectReason::DuplicateConflict => "duplicate_conflict",
            RejectReason::TooOld => "too_old",
            RejectReason::LabelLimits => "label_limits",
        }
    }
}

#[derive(Default)]
pub(crate) struct Stats {
    requests: [[AtomicU64; 8]; 3],
    request_micros: [AtomicU64; 3],
    rejected: [AtomicU64; 5],
    pub(crate) accepted: AtomicU64,
    pub(crate) stale_markers: AtomicU64,
    pub(crate) created_zeros: AtomicU64,
    pub(crate) series_cache_entries: AtomicU64,
}

impl Stats {
    pub(crate) fn request(&self, protocol: Protocol, outcome: Outcome, micros: u64) {
        self.requests[protocol as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
        self.request_micros[protocol as usize].fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn reject(&self, reason: RejectReason, n: u64) {
        if n > 0 {
            self.rejected[reason as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn requests(&self, protocol: Protocol, outcome: Outcome) -> u64 {
        self.requests[protocol as usize][outcome as usize].load(Ordering::Relaxed)
    }

    pub(crate) fn families(&self) -> Vec<MetricFamily> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let mut requests = MetricFamily::counter(
            "vigil_ingest_requests_total",
            "OTLP export requests by receiver and how they ended.",
        );
        let mut unauthenticated = MetricFamily::counter(
            "vigil_ingest_unauthenticated_total",
            "OTLP requests refused for a missing or unknown bearer token.",
        );
        let mut too_large = MetricFamily::counter(
            "vigil_ingest_payload_too_large_total",
            "OTLP requests refused for exceeding the size limit (compressed or decompressed).",
        );
        let mut malformed = MetricFamily::counter(
            "vigil_ingest_decode_errors_total",
            "OTLP requests whose body did not decode (protobuf, JSON or gzip).",
        );
        let mut seconds = MetricFamily::counter(
            "vigil_ingest_request_duration_seconds_total",
            "Time spent answering OTLP requests; divide by the request rate for the mean.",
        );
        for p in Protocol::ALL {
            let row = &self.requests[p as usize];
            for o in Outcome::ALL {
                requests.push(
                    &[("protocol", p.as_str()), ("result", o.as_str())],
                    get(&row[o as usize]),
                );
            }
            let proto = [("protocol", p.as_str())];
            unauthenticated.push(&proto, get(&row[Outcome::Unauthenticated as usize]));
            too_large.push(&proto, get(&row[Outcome::TooLarge as usize]));
            malformed.push(&proto, get(&row[Outcome::Malformed as usize]));
            seconds.push(&proto, get(&self.request_micros[p as usize]) / 1e6);
        }
        let mut rejected = MetricFamily::counter(
            "vigil_ingest_samples_rejected_total",
            "Samples (or OTLP points that could not become samples) refused, by reason.",
        );
        for r in RejectReason::ALL {
            rejected.push(&[("reason", r.as_str())], get(&self.rejected[r as usize]));
        }
        vec![
            requests,
            unauthenticated,
            too_large,
            malformed,
            seconds,
            MetricFamily::counter(
                "vigil_ingest_samples_accepted_total",
                "Samples stored from OTLP requests (staleness markers and created zeros excluded).",
            )
            .with(&[], get(&self.accepted)),
            rejected,
            MetricFamily::counter(
                "vigil_ingest_stale_markers_total",
                "Staleness markers written for series missing from an agent's snapshot.",
            )
            .with(&[], get(&self.stale_markers)),
            MetricFamily::counter(
                "vigil_ingest_created_zero_samples_total",
                "Zero samples written at a cumulative series' start time.",
            )
            .with(&[], get(&self.created_zeros)),
            MetricFamily::gauge(
                "vigil_ingest_series_cache_entries",
                "Series identities in the ingest's label-set cache.",
            )
            .with(&[], get(&self.series_cache_entries)),
        ]
    }
}
