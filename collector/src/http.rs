//! The HTTP server on `--listen`: `/healthz`, `/readyz`, `/metrics` and the query API.
//!
//! It serves from the moment the listener is handed over, before the store has finished
//! replaying its WAL: `/healthz` answers 200 at once (the process is alive), `/readyz`
//! and the API answer 503 until the store is open (the process cannot answer queries
//! yet), which is the distinction a load balancer or Kubernetes probe needs.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use vigil_proto::exposition::{self, Format};
use vigil_proto::{MetricFamily, MetricKind};

use crate::api::{self, Queries};
use crate::auth::{self, ApiAuth};
use crate::store::{Store, StoreStats};
use crate::tls::Incoming;

/// Something that reports metric families on the collector's own `/metrics`.
pub trait MetricSource: Send + Sync {
    fn metric_families(&self) -> Vec<MetricFamily>;
}

/// What `/api/v1/nodes` lists (the fleet registry).
pub trait NodeSource: Send + Sync {
    /// The nodes as the JSON array that goes under `data`.
    fn nodes_json(&self) -> serde_json::Value;
}

impl MetricSource for crate::ingest::Ingest {
    fn metric_families(&self) -> Vec<MetricFamily> {
        crate::ingest::Ingest::metric_families(self)
    }
}

impl MetricSource for crate::notify::dispatch::Notifier {
    fn metric_families(&self) -> Vec<MetricFamily> {
        crate::notify::dispatch::Notifier::metric_families(self)
    }
}

impl MetricSource for crate::registry::Registry {
    fn metric_families(&self) -> Vec<MetricFamily> {
        crate::registry::Registry::metric_families(self)
    }
}

impl NodeSource for crate::registry::Registry {
    fn nodes_json(&self) -> serde_json::Value {
        serde_json::to_value(self.nodes()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "encoding the node list failed");
            serde_json::json!([])
        })
    }
}

/// Shared by every handler.
pub struct AppState {
    store: OnceLock<Arc<Store>>,
    pub(crate) queries: Queries,
    fleet_metrics: bool,
    sources: RwLock<Vec<Arc<dyn MetricSource>>>,
    node_source: OnceLock<Arc<dyn NodeSource>>,
    /// The rule evaluator: `/api/v1/rules`, `/api/v1/alerts`, the alert history.
    alerting: OnceLock<Arc<crate::alerting::Evaluator>>,
    /// Who may call what; applied as one layer over every route (see [`crate::auth`]).
    api_auth: Arc<ApiAuth>,
    /// Silences and notification status, when the notifier runs.
    notifier: Option<Arc<crate::notify::dispatch::Notifier>>,
    /// The log index: `/api/v1/logs/*`.
    logs: OnceLock<Arc<crate::index::LogIndex>>,
    /// The remediation policy: `/api/v1/actions`.
    recovery: OnceLock<Arc<crate::recovery::Remediation>>,
}

impl AppState {
    pub fn new(queries: Queries, fleet_metrics: bool) -> Self {
        AppState {
            store: OnceLock::new(),
            queries,
            fleet_metrics,
            sources: RwLock::new(Vec::new()),
            node_source: OnceLock::new(),
            alerting: OnceLock::new(),
            api_auth: Arc::new(ApiAuth::open()),
            notifier: None,
            logs: OnceLock::new(),
            recovery: OnceLock::new(),
        }
    }

    /// Serves the recovery audit and its operator requests from now on.
    pub fn set_recovery(&self, recovery: Arc<crate::recovery::Remediation>) {
        let _ = self.recovery.set(recovery);
    }

    pub fn recovery(&self) -> Option<Arc<crate::recovery::Remediation>> {
        self.recovery.get().cloned()
    }

    /// Serves log search and tail from now on.
    pub fn set_logs(&self, logs: Arc<crate::index::LogIndex>) {
        let _ = self.logs.set(logs);
    }

    pub fn logs(&self) -> Option<Arc<crate::index::LogIndex>> {
        self.logs.get().cloned()
    }

    /// Requires the API's tokens (the default is an open API).
    /// Serves the notifier's silences and notification status.
    pub fn with_notifier(mut self, notifier: Arc<crate::notify::dispatch::Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    pub fn with_api_auth(mut self, auth: ApiAuth) -> Self {
        self.api_auth = Arc::new(auth);
        self
    }

    /// Marks the collector ready: from now on queries read `store`.
    pub fn set_store(&self, store: Arc<Store>) {
        // Set once by `run` after opening; a second call has nothing to change.
        let _ = self.store.set(store);
    }

    pub fn store(&self) -> Option<Arc<Store>> {
        self.store.get().cloned()
    }

    /// Adds a part whose metrics `/metrics` shows (ingest, registry).
    pub fn add_metric_source(&self, source: Arc<dyn MetricSource>) {
        self.sources
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(source);
    }

    pub fn set_node_source(&self, source: Arc<dyn NodeSource>) {
        let _ = self.node_source.set(source);
    }

    /// Serves the evaluator's rules, alerts and history from now on.
    pub fn set_alerting(&self, evaluator: Arc<crate::alerting::Evaluator>) {
        let _ = self.alerting.set(evaluator);
    }

    pub fn alerting(&self) -> Option<Arc<crate::alerting::Evaluator>> {
        self.alerting.get().cloned()
    }

    pub(crate) fn nodes(&self) -> serde_json::Value {
        self.node_source
            .get()
            .map_or_else(|| serde_json::json!([]), |s| s.nodes_json())
    }
}

/// Serves the HTTP API on `listener` (plain TCP or TLS) until `shutdown` resolves.
/// Every route passes [`auth::require`] first, so a handler never checks a token.
pub async fn serve(
    listener: impl Into<Incoming>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api::routes())
        .merge(crate::alerting::api::routes())
        .merge(crate::recovery::api::routes())
        .merge(
            state
                .notifier
                .clone()
                .map(crate::notify::api::routes)
                .unwrap_or_default(),
        )
        // Keep this layer after every route and merge: it covers only what is above.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.api_auth),
            auth::require,
        ))
        .with_state(state);
    axum::serve(listener.into().into_listener()?, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.store.get().is_some() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is still opening (replaying its write-ahead log)\n",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    // The fleet section is plain Prometheus series of any name; the classic format
    // carries them without OpenMetrics' naming rules.
    let format = if state.fleet_metrics {
        Format::Text
    } else {
        Format::from_accept(accept)
    };
    let task = tokio::task::spawn_blocking(move || render_metrics(&state, format));
    match task.await {
        Ok(body) => {
            let mut r = body.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering /metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Walks every source (and, for the fleet section, every series): a blocking call.
fn render_metrics(state: &AppState, format: Format) -> String {
    let mut families = Vec::new();
    let store = state.store();
    families.push(
        MetricFamily::gauge(
            "vigil_collector_ready",
            "1 once the store has replayed its WAL and queries are answered.",
        )
        .with(&[], if store.is_some() { 1.0 } else { 0.0 }),
    );
    if let Some(store) = &store {
        families.extend(store_families(&store.stats()));
    }
    for source in state
        .sources
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        families.extend(source.metric_families());
    }
    families.extend(state.queries.metric_families());
    families.extend(process_families());
    families.sort_by(|a, b| a.name.cmp(&b.name));
    families.dedup_by(|a, b| a.name == b.name);

    if state.fleet_metrics
        && let Some(store) = &store
    {
        let own: std::collections::HashSet<String> =
            families.iter().map(|f| f.name.to_string()).collect();
        match fleet_families(store, state.queries.lookback_delta_ms()) {
            Ok(fleet) => families.extend(fleet.into_iter().filter(|f| !own.contains(&*f.name))),
            Err(e) => tracing::warn!(error = %e, "reading the fleet's latest values failed"),
        }
        families.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let mut out = String::new();
    exposition::encode(&families, format, &mut out);
    out
}

/// The latest value of every stored series, grouped by name (untyped: the store keeps
/// no metric types).
fn fleet_families(
    store: &Store,
    lookback_ms: i64,
) -> Result<Vec<MetricFamily>, vigil_rules::promql::StorageError> {
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX);
    let mut by_name: BTreeMap<String, MetricFamily> = BTreeMap::new();
    for (labels, v) in api::query::latest_values(store, lookback_ms, now_ms)? {
        let Some(name) = labels.name() else { continue };
        let family = by_name.entry(name.to_string()).or_insert_with(|| {
            MetricFamily::new(
                name.to_string(),
                "Latest value received from the fleet.",
                MetricKind::Unknown,
            )
        });
        let pairs = labels
            .iter()
            .filter(|(n, _)| *n != vigil_rules::promql::METRIC_NAME)
            .map(|(n, v)| (Cow::Owned(n.to_string()), v.to_string()))
            .collect();
        family.push_owned(pairs, v);
    }
    Ok(by_name.into_values().collect())
}

fn store_families(s: &StoreStats) -> Vec<MetricFamily> {
    let g = |name: &'static str, help: &'static str, v: u64| {
        MetricFamily::gauge(name, help).with(&[], v as f64)
    };
    let c = |name: &'static str, help: &'static str, v: u64| {
        MetricFamily::counter(name, help).with(&[], v as f64)
    };
    let mut rejected = MetricFamily::counter(
        "vigil_collector_store_samples_rejected_total",
        "Samples the store refused, by reason.",
    );
    for (reason, v) in [
        ("out_of_order", s.out_of_order_rejected),
        ("duplicate_conflict", s.duplicate_conflicts),
        ("too_old", s.too_old_rejected),
    ] {
        rejected.push(&[("reason", reason)], v as f64);
    }
    vec![
        g(
            "vigil_collector_store_series",
            "Series in the head.",
            s.series,
        ),
        g(
            "vigil_collector_store_head_samples",
            "Samples held in the head.",
            s.head_samples,
        ),
        c(
            "vigil_collector_store_samples_appended_total",
            "Samples accepted since start (WAL replay not included).",
            s.samples_appended,
        ),
        c(
            "vigil_collector_store_duplicate_samples_total",
            "Samples repeating a stored timestamp and value, accepted as no-ops.",
            s.duplicates,
        ),
        rejected,
        g(
            "vigil_collector_store_wal_bytes",
            "Bytes of WAL segments on disk.",
            s.wal_bytes,
        ),
        g(
            "vigil_collector_store_checkpoint_bytes",
            "Bytes of the newest checkpoint on disk.",
            s.checkpoint_bytes,
        ),
        g(
            "vigil_collector_store_chunk_bytes",
            "Compressed sample bytes in the head.",
            s.chunk_bytes,
        ),
        c(
            "vigil_collector_store_series_created_total",
            "Series created since start.",
            s.series_created,
        ),
        c(
            "vigil_collector_store_series_removed_total",
            "Series removed by retention since start.",
            s.series_removed,
        ),
        c(
            "vigil_collector_store_retention_dropped_samples_total",
            "Samples dropped by retention since start.",
            s.retention_dropped_samples,
        ),
    ]
}

/// client_golang's process collector, from /proc/self: what every Prometheus
/// dashboard for a Go or Rust daemon already graphs.
fn process_families() -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return out;
    };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return out;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    // SAFETY: sysconf only reads a system constant.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK) as f64,
            libc::sysconf(libc::_SC_PAGESIZE) as f64,
        )
    };
    if let (Some(utime), Some(stime), true) = (field(14), field(15), ticks > 0.0) {
        out.push(
            MetricFamily::counter(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
            )
            .with(&[], (utime + stime) / ticks),
        );
    }
    if let Some(vsize) = field(23) {
        out.push(
            MetricFamily::gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            )
            .with(&[], vsize),
        );
    }
    if let (Some(rss), true) = (field(24), page > 0.0) {
        out.push(
            MetricFamily::gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            )
            .with(&[], rss * page),
        );
    }
    let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let (Some(start), Some(boot), true) = (field(22), boot_time, ticks > 0.0) {
        out.push(
            MetricFamily::gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            )
            .with(&[], boot + start / ticks),
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.push(
            MetricFamily::gauge("process_open_fds", "Number of open file descriptors.")
                .with(&[], fds.count() as f64),
        );
    }
    out
}
