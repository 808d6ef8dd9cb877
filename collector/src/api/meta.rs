//! The metadata endpoints: `/api/v1/series`, `/labels`, `/label/<name>/values`, and the
//! small ones Grafana's data source calls while it sets up (`status/buildinfo`,
//! `metadata`, `query_exemplars`, `format_query`).

use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::error::{ApiError, ErrorType};
use super::json::{success_envelope, write_labels, write_str};
use super::params::{MAX_TIME_MS, MIN_TIME_MS, Params, is_valid_label_name};
use crate::store::{Store, TimeRange};
use vigil_rules::promql::{Annotations, Matchers};

/// The Prometheus version whose API and PromQL this collector answers like. Grafana
/// reads `version` to decide which API features it may use.
pub const PROMETHEUS_COMPAT_VERSION: &str = "3.0.0";

/// Prometheus's warning when `limit` cut a result short.
const TRUNCATED: &str = "results truncated due to limit";

/// `start`/`end` as a store time range; both absent is "all time" (the store answers
/// label queries without selectors from its index alone then).
fn time_range(params: &Params) -> Result<TimeRange, ApiError> {
    if params.get("start").is_none() && params.get("end").is_none() {
        return Ok(TimeRange::ALL);
    }
    let start = params.time_or("start", MIN_TIME_MS)?;
    let end = params.time_or("end", MAX_TIME_MS)?;
    Ok(TimeRange::new(start, end))
}

/// Cuts `items` to `limit` (0: no limit) and says so in a warning.
fn apply_limit<T>(items: &mut Vec<T>, limit: usize) -> Annotations {
    let mut a = Annotations::default();
    if limit > 0 && items.len() > limit {
        items.truncate(limit);
        a.warnings.push(TRUNCATED.into());
    }
    a
}

/// Runs a store read on a blocking thread: walking many series must not hold up the
/// runtime's worker.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(ErrorType::Internal, format!("store read failed: {e}")))
}

fn string_list(values: &[String], annotations: &Annotations) -> String {
    let mut data = String::from("[");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        write_str(v, &mut data);
    }
    data.push(']');
    success_envelope(&data, annotations)
}

/// `/api/v1/series`: `match[]` required.
pub async fn series(store: Arc<Store>, params: &Params) -> Result<String, ApiError> {
    let selectors = params.matchers(true)?;
    let limit = params.limit()?;
    let range = time_range(params)?;
    blocking(move || {
        let mut series = store.series(&selectors, range);
        let annotations = apply_limit(&mut series, limit);
        let mut data = String::from("[");
        for (i, labels) in series.iter().enumerate() {
            if i > 0 {
                data.push(',');
            }
            write_labels(labels, &mut data);
        }
        data.push(']');
        success_envelope(&data, &annotations)
    })
    .await
}

/// `/api/v1/labels`: `match[]` optional.
pub async fn label_names(store: Arc<Store>, params: &Params) -> Result<String, ApiError> {
    let selectors: Vec<Matchers> = params.matchers(false)?;
    let limit = params.limit()?;
    let range = time_range(params)?;
    blocking(move || {
        let mut names = store.label_names(&selectors, range);
        let annotations = apply_limit(&mut names, limit);
        string_list(&names, &annotations)
    })
    .await
}

/// `/api/v1/label/<name>/values`.
pub async fn label_values(
    store: Arc<Store>,
    name: String,
    params: &Params,
) -> Result<String, ApiError> {
    if !is_valid_label_name(&name) {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let selectors = params.matchers(false)?;
    let limit = params.limit()?;
    let range = time_range(params)?;
    blocking(move || {
        let mut values = store.label_values(&name, &selectors, range);
        let annotations = apply_limit(&mut values, limit);
        string_list(&values, &annotations)
    })
    .await
}

/// `/api/v1/status/buildinfo`'s `data`, in Prometheus's field names.
pub fn buildinfo() -> Json {
    json!({
        "version": PROMETHEUS_COMPAT_VERSION,
        "revision": concat!("vigil-collector ", env!("CARGO_PKG_VERSION")),
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    })
}

/// `/api/v1/metadata`: the store keeps no metric types or help texts yet; an empty
/// object is what Prometheus answers when it knows none.
pub fn metadata() -> Json {
    json!({})
}

/// `/api/v1/query_exemplars`: no exemplars are stored. The query is still checked, so a
/// bad one is refused as Prometheus refuses it.
pub fn query_exemplars(params: &Params) -> Result<Json, ApiError> {
    vigil_rules::promql::parse(params.get("query").unwrap_or(""))
        .map_err(|e| ApiError::invalid_param("query", e.to_string()))?;
    Ok(json!([]))
}

/// `/api/v1/format_query`: the expression pretty-printed.
pub fn format_query(params: &Params) -> Result<Json, ApiError> {
    let expr = vigil_rules::promql::parse(params.get("query").unwrap_or(""))
        .map_err(|e| ApiError::invalid_param("query", e.to_string()))?;
    Ok(Json::String(expr.prettify()))
}
