//! `/api/v1/query` and `/api/v1/query_range`: parameters checked in Prometheus's order
//! with its messages, then the expression evaluated by vigil-rules' [`Engine`] over the
//! store on a blocking thread, under a deadline, a sample budget and a concurrency cap.
//!
//! The engine has no cancellation of its own, so the limits live in the [`Storage`] it
//! reads through: every select first checks the deadline and then counts the samples it
//! hands over. A query past its deadline is answered at the deadline; its thread stops
//! at its next select (or when it finishes) and holds its concurrency slot until then,
//! so runaway queries cannot pile up threads.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use vigil_proto::MetricFamily;
use vigil_rules::promql::{
    Annotated, Engine, EngineOptions, EvalError, Expr, Labels, METRIC_NAME, MatchOp, Matcher,
    Matchers, Series, Storage, StorageError, is_stale_nan,
};

use super::error::{ApiError, ErrorType};
use super::json;
use super::params::Params;
use crate::config::QueryConfig;
use crate::store::Store;

/// Prometheus's limit on steps per range query.
const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// Which endpoint a counter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Instant,
    Range,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Endpoint::Instant => "query",
            Endpoint::Range => "query_range",
        }
    }
}

const OUTCOMES: [Option<ErrorType>; 6] = [
    None,
    Some(ErrorType::BadData),
    Some(ErrorType::Execution),
    Some(ErrorType::Timeout),
    Some(ErrorType::Internal),
    Some(ErrorType::Unavailable),
];

/// The query engine with the API's limits, and counters for `/metrics`.
#[derive(Debug)]
pub struct Queries {
    engine: Engine,
    timeout: Duration,
    max_samples: usize,
    slots: Arc<Semaphore>,
    /// Requests by endpoint (index 0 instant, 1 range) and outcome (index into OUTCOMES).
    outcomes: [[AtomicU64; OUTCOMES.len()]; 2],
    duration_micros: [AtomicU64; 2],
    samples_loaded: AtomicU64,
}

impl Queries {
    pub fn new(config: &QueryConfig) -> Self {
        Queries {
            engine: Engine::new(EngineOptions {
                lookback_delta_ms: config.lookback_delta_ms(),
                ..EngineOptions::default()
            }),
            timeout: config.timeout(),
            max_samples: config.max_samples,
            slots: Arc::new(Semaphore::new(config.max_concurrency)),
            outcomes: Default::default(),
            duration_micros: Default::default(),
            samples_loaded: AtomicU64::new(0),
        }
    }

    pub fn lookback_delta_ms(&self) -> i64 {
        self.engine.options.lookback_delta_ms
    }

    /// Counts one answered request.
    pub fn record(&self, endpoint: Endpoint, outcome: Option<ErrorType>, took: Duration) {
        let e = endpoint as usize;
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.outcomes[e][i].fetch_add(1, Ordering::Relaxed);
        }
        self.duration_micros[e].fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn metric_families(&self) -> Vec<MetricFamily> {
        let mut requests = MetricFamily::counter(
            "vigil_collector_api_queries_total",
            "Query API requests by endpoint and outcome (success or Prometheus's errorType).",
        );
        let mut seconds = MetricFamily::counter(
            "vigil_collector_api_query_seconds_total",
            "Time spent answering query API requests, queueing included.",
        );
        for endpoint in [Endpoint::Instant, Endpoint::Range] {
            let e = endpoint as usize;
            for (i, outcome) in OUTCOMES.iter().enumerate() {
                let outcome = outcome.map_or("success", ErrorType::as_str);
                requests.push(
                    &[("endpoint", endpoint.label()), ("outcome", outcome)],
                    self.outcomes[e][i].load(Ordering::Relaxed) as f64,
                );
            }
            seconds.push(
                &[("endpoint", endpoint.label())],
                self.duration_micros[e].load(Ordering::Relaxed) as f64 / 1e6,
            );
        }
        let samples = MetricFamily::counter(
            "vigil_collector_api_query_samples_total",
            "Samples queries read from the store.",
        )
        .with(&[], self.samples_loaded.load(Ordering::Relaxed) as f64);
        vec![requests, seconds, samples]
    }

    /// `/api/v1/query`: the `data` envelope as JSON text.
    pub async fn instant(
        &self,
        store: Arc<Store>,
        params: &Params,
        now_ms: i64,
    ) -> Result<String, ApiError> {
        let t_ms = params.time_or("time", now_ms)?;
        let timeout = self.timeout(params)?;
        let expr = parse_query(params)?;
        let engine = self.engine.clone();
        self.evaluate(store, timeout, move |st| {
            let result = engine.instant_annotated(st, &expr, t_ms)?;
            Ok(encode(result, json::write_value))
        })
        .await
    }

    /// `/api/v1/query_range`.
    pub async fn range(&self, store: Arc<Store>, params: &Params) -> Result<String, ApiError> {
        let start_ms = params.time("start")?;
        let end_ms = params.time("end")?;
        if end_ms < start_ms {
            return Err(ApiError::bad_data(
                "end timestamp must not be before start time",
            ));
        }
        let step_ms = params.duration("step")?.ok_or_else(|| {
            ApiError::invalid_param("step", "cannot parse \"\" to a valid duration".into())
        })?;
        if step_ms <= 0 {
            return Err(ApiError::bad_data(
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        if (end_ms - start_ms) / step_ms > MAX_POINTS_PER_SERIES {
            return Err(ApiError::bad_data(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
            ));
        }
        let timeout = self.timeout(params)?;
        let expr = parse_query(params)?;
        let vtype = expr.value_type().to_string();
        if vtype != "vector" && vtype != "scalar" {
            let documented = if vtype == "matrix" {
                "range vector"
            } else {
                &vtype
            };
            return Err(ApiError::invalid_param(
                "query",
                format!(
                    "invalid expression type {documented:?} for range query, must be Scalar or instant Vector"
                ),
            ));
        }
        let engine = self.engine.clone();
        self.evaluate(store, timeout, move |st| {
            let result = engine.range_annotated(st, &expr, start_ms, end_ms, step_ms)?;
            Ok(encode(result, |s: &Vec<Series>, out| {
                json::write_range(s, out)
            }))
        })
        .await
    }

    /// The request's `timeout`, capped by the configured one.
    fn timeout(&self, params: &Params) -> Result<Duration, ApiError> {
        Ok(match params.duration("timeout")? {
            Some(ms) => Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(self.timeout),
            None => self.timeout,
        })
    }

    /// Runs `eval` on a blocking thread once a slot is free, all within `timeout`.
    async fn evaluate(
        &self,
        store: Arc<Store>,
        timeout: Duration,
        eval: impl FnOnce(&dyn Storage) -> Result<String, EvalError> + Send + 'static,
    ) -> Result<String, ApiError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out =
            |stage: &str| ApiError::new(ErrorType::Timeout, format!("query timed out in {stage}"));
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| timed_out("query queue"))?
            .map_err(|_| ApiError::new(ErrorType::Unavailable, "the collector is shutting down"))?;
        let max_samples = self.max_samples;
        let std_deadline = deadline.into_std();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let guarded = Guarded {
                store: &store,
                deadline: std_deadline,
                max_samples,
                loaded: Cell::new(0),
                abort: Cell::new(None),
            };
            let result = eval(&guarded);
            (result, guarded.abort.get(), guarded.loaded.get())
        });
        match tokio::time::timeout_at(deadline, task).await {
            Err(_) => Err(timed_out("query execution")),
            Ok(Err(e)) => Err(ApiError::new(
                ErrorType::Internal,
                format!("query evaluation failed: {e}"),
            )),
            Ok(Ok((result, abort, loaded))) => {
                self.samples_loaded
                    .fetch_add(loaded as u64, Ordering::Relaxed);
                result.map_err(|e| eval_error(e, abort))
            }
        }
    }
}

fn parse_query(params: &Params) -> Result<Expr, ApiError> {
    vigil_rules::promql::parse(params.get("query").unwrap_or(""))
        .map_err(|e| ApiError::invalid_param("query", e.to_string()))
}

fn encode<T>(result: Annotated<T>, write: impl Fn(&T, &mut String)) -> String {
    let mut data = String::new();
    write(&result.value, &mut data);
    json::success_envelope(&data, &result.annotations)
}

/// Why [`Guarded`] refused a select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abort {
    Timeout,
    TooManySamples,
}

/// Maps an engine error onto Prometheus's `returnAPIError`.
fn eval_error(e: EvalError, abort: Option<Abort>) -> ApiError {
    match (e, abort) {
        (_, Some(Abort::Timeout)) => {
            ApiError::new(ErrorType::Timeout, "query timed out in query execution")
        }
        (_, Some(Abort::TooManySamples)) => ApiError::new(
            ErrorType::Execution,
            "query processing would load too many samples into memory in query execution",
        ),
        (EvalError::Storage(e), None) => ApiError::new(ErrorType::Internal, e.to_string()),
        (e, None) => ApiError::new(ErrorType::Execution, e.to_string()),
    }
}

/// The store as the engine sees it during one API query: selects past the deadline or
/// over the sample budget fail, and say why in `abort`.
struct Guarded<'a> {
    store: &'a Store,
    deadline: Instant,
    max_samples: usize,
    loaded: Cell<usize>,
    abort: Cell<Option<Abort>>,
}

impl Guarded<'_> {
    fn before(&self) -> Result<(), StorageError> {
        if Instant::now() >= self.deadline {
            self.abort.set(Some(Abort::Timeout));
            return Err(StorageError("query deadline passed".into()));
        }
        Ok(())
    }

    fn count(&self, samples: usize) -> Result<(), StorageError> {
        let total = self.loaded.get().saturating_add(samples);
        self.loaded.set(total);
        if total > self.max_samples {
            self.abort.set(Some(Abort::TooManySamples));
            return Err(StorageError("sample budget exceeded".into()));
        }
        Ok(())
    }
}

impl Storage for Guarded<'_> {
    fn select(
        &self,
        matchers: &Matchers,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError> {
        self.before()?;
        let series = self.store.select(matchers, start_ms, end_ms)?;
        self.count(series.iter().map(|s| s.samples.len()).sum())?;
        Ok(series)
    }

    fn select_latest(
        &self,
        matchers: &Matchers,
        t_ms: i64,
        lookback_ms: i64,
    ) -> Result<Vec<(Labels, i64, f64)>, StorageError> {
        self.before()?;
        let latest = Storage::select_latest(self.store, matchers, t_ms, lookback_ms)?;
        self.count(latest.len())?;
        Ok(latest)
    }
}

/// The newest non-stale sample within `lookback_ms` before `now_ms` of every series
/// that has a name: what an instant query for each series would return, for the fleet
/// section of `/metrics`.
pub fn latest_values(
    store: &Store,
    lookback_ms: i64,
    now_ms: i64,
) -> Result<Vec<(Labels, f64)>, StorageError> {
    let named = Matchers::new(vec![Matcher::new(MatchOp::NotEqual, METRIC_NAME, "")]);
    Ok(Storage::select_latest(store, &named, now_ms, lookback_ms)?
        .into_iter()
        .filter(|(_, _, v)| !is_stale_nan(*v))
        .map(|(l, _, v)| (l, v))
        .collect())
}
