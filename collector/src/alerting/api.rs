//! `/api/v1/rules` and `/api/v1/alerts` with Prometheus's JSON shapes, and
//! `/api/v1/alerts/history`.
//!
//! Handlers read the snapshot each group leaves after an evaluation, never a group
//! itself, so an answer does not wait for a running evaluation.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use vigil_rules::alerting::AlertState;
use vigil_rules::group::{Group, RuleOutcome, RuleRef};

use super::history::{HistoryQuery, kind_name, parse_kind};
use crate::api::params::{Params, parse_time};
use crate::api::{ApiError, ErrorType, json};
use crate::http::AppState;
use crate::timefmt::go_rfc3339;

/// Events a history query returns when it names no `limit`.
const DEFAULT_HISTORY_LIMIT: usize = 1000;

/// What the API shows of one group, as of its last evaluation.
#[derive(Debug, Clone)]
pub struct GroupSnapshot {
    pub name: String,
    pub file: String,
    pub interval_ms: i64,
    pub limit: u64,
    pub eval_seconds: f64,
    pub last_eval_ms: Option<i64>,
    pub rules: Vec<RuleSnapshot>,
}

#[derive(Debug, Clone)]
pub struct RuleSnapshot {
    pub alerting: bool,
    pub name: String,
    pub query: String,
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    /// Pending and firing alerts (resolved ones are not active), sorted by labels.
    pub alerts: Vec<AlertSnapshot>,
    /// `None` before the first evaluation (health `unknown`).
    pub outcome: Option<RuleOutcome>,
    pub last_eval_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct AlertSnapshot {
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub state: AlertState,
    pub active_at_ms: i64,
    pub keep_firing_since_ms: Option<i64>,
    pub value: f64,
}

impl GroupSnapshot {
    /// What `group` shows now; `outcomes` are its last evaluation's, one per rule.
    pub fn build(
        group: &Group,
        outcomes: Option<&[RuleOutcome]>,
        eval_seconds: f64,
        last_eval_ms: Option<i64>,
    ) -> GroupSnapshot {
        let rules = group
            .rules()
            .enumerate()
            .map(|(i, r)| {
                let outcome = outcomes.and_then(|o| o.get(i)).cloned();
                let last = outcome.as_ref().and(last_eval_ms);
                match r {
                    RuleRef::Recording(r) => RuleSnapshot {
                        alerting: false,
                        name: r.name.clone(),
                        query: r.parsed.to_string(),
                        for_ms: 0,
                        keep_firing_for_ms: 0,
                        labels: r.labels.clone(),
                        annotations: Vec::new(),
                        alerts: Vec::new(),
                        outcome,
                        last_eval_ms: last,
                    },
                    RuleRef::Alerting(a) => RuleSnapshot {
                        alerting: true,
                        name: a.rule.name.clone(),
                        query: a.rule.parsed.to_string(),
                        for_ms: a.rule.for_ms,
                        keep_firing_for_ms: a.rule.keep_firing_for_ms,
                        labels: a.rule.labels.clone(),
                        annotations: a.rule.annotations.clone(),
                        alerts: a
                            .alerts()
                            .into_iter()
                            .filter(|x| x.state != AlertState::Inactive)
                            .map(|x| AlertSnapshot {
                                labels: x
                                    .labels
                                    .iter()
                                    .map(|(k, v)| (k.to_string(), v.to_string()))
                                    .collect(),
                                annotations: x.annotations.clone(),
                                state: x.state,
                                active_at_ms: x.active_at_ms,
                                keep_firing_since_ms: x.keep_firing_since_ms,
                                value: x.value,
                            })
                            .collect(),
                        outcome,
                        last_eval_ms: last,
                    },
                }
            })
            .collect();
        GroupSnapshot {
            name: group.name.clone(),
            file: group.file.display().to_string(),
            interval_ms: group.interval_ms,
            limit: group.limit,
            eval_seconds,
            last_eval_ms,
            rules,
        }
    }
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`: `9.5e+01`, `1e+00`, `NaN`, `+Inf`.
pub fn format_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{v:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    let pad = if digits.len() < 2 { "0" } else { "" };
    format!("{mantissa}e{sign}{pad}{digits}")
}

fn pairs_map(pairs: &[(String, String)]) -> std::collections::BTreeMap<&str, &str> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

type Map<'a> = std::collections::BTreeMap<&'a str, &'a str>;

#[derive(Serialize)]
struct ApiAlert<'a> {
    labels: Map<'a>,
    annotations: Map<'a>,
    state: &'static str,
    #[serde(rename = "activeAt")]
    active_at: String,
    #[serde(rename = "keepFiringSince", skip_serializing_if = "Option::is_none")]
    keep_firing_since: Option<String>,
    value: String,
}

fn api_alert(a: &AlertSnapshot) -> ApiAlert<'_> {
    ApiAlert {
        labels: pairs_map(&a.labels),
        annotations: pairs_map(&a.annotations),
        state: a.state.as_str(),
        active_at: go_rfc3339(Some(a.active_at_ms)),
        keep_firing_since: a.keep_firing_since_ms.map(|t| go_rfc3339(Some(t))),
        value: format_e(a.value),
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum ApiRule<'a> {
    Alerting {
        state: &'static str,
        name: &'a str,
        query: &'a str,
        duration: f64,
        #[serde(rename = "keepFiringFor")]
        keep_firing_for: f64,
        labels: Map<'a>,
        annotations: Map<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        alerts: Option<Vec<ApiAlert<'a>>>,
        health: &'static str,
        #[serde(rename = "lastError", skip_serializing_if = "Option::is_none")]
        last_error: Option<&'a str>,
        #[serde(rename = "evaluationTime")]
        evaluation_time: f64,
        #[serde(rename = "lastEvaluation")]
        last_evaluation: String,
        #[serde(rename = "type")]
        kind: &'static str,
    },
    Recording {
        name: &'a str,
        query: &'a str,
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        labels: Map<'a>,
        health: &'static str,
        #[serde(rename = "lastError", skip_serializing_if = "Option::is_none")]
        last_error: Option<&'a str>,
        #[serde(rename = "evaluationTime")]
        evaluation_time: f64,
        #[serde(rename = "lastEvaluation")]
        last_evaluation: String,
        #[serde(rename = "type")]
        kind: &'static str,
    },
}

#[derive(Serialize)]
struct ApiGroup<'a> {
    name: &'a str,
    file: &'a str,
    rules: Vec<ApiRule<'a>>,
    interval: f64,
    limit: u64,
    #[serde(rename = "evaluationTime")]
    evaluation_time: f64,
    #[serde(rename = "lastEvaluation")]
    last_evaluation: String,
}

fn rule_state(r: &RuleSnapshot) -> AlertState {
    r.alerts
        .iter()
        .map(|a| a.state)
        .max()
        .unwrap_or(AlertState::Inactive)
}

fn api_rule<'a>(r: &'a RuleSnapshot, with_alerts: bool) -> ApiRule<'a> {
    let (health, last_error, evaluation_time) = match &r.outcome {
        None => ("unknown", None, 0.0),
        Some(o) => (
            if o.error.is_some() { "err" } else { "ok" },
            o.error.as_deref(),
            o.eval_seconds,
        ),
    };
    let last_evaluation = go_rfc3339(r.last_eval_ms);
    if r.alerting {
        ApiRule::Alerting {
            state: rule_state(r).as_str(),
            name: &r.name,
            query: &r.query,
            duration: r.for_ms as f64 / 1000.0,
            keep_firing_for: r.keep_firing_for_ms as f64 / 1000.0,
            labels: pairs_map(&r.labels),
            annotations: pairs_map(&r.annotations),
            alerts: with_alerts.then(|| r.alerts.iter().map(api_alert).collect()),
            health,
            last_error,
            evaluation_time,
            last_evaluation,
            kind: "alerting",
        }
    } else {
        ApiRule::Recording {
            name: &r.name,
            query: &r.query,
            labels: pairs_map(&r.labels),
            health,
            last_error,
            evaluation_time,
            last_evaluation,
            kind: "recording",
        }
    }
}

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/rules", get(rules).post(rules))
        .route("/api/v1/alerts", get(alerts).post(alerts))
        .route("/api/v1/alerts/history", get(history).post(history))
}

fn answer<T: Serialize>(data: Result<T, ApiError>) -> Response {
    match data.and_then(|d| {
        serde_json::to_string(&d)
            .map_err(|e| ApiError::new(ErrorType::Internal, format!("encoding: {e}")))
    }) {
        Ok(body) => {
            let mut r = json::success_envelope(&body, &Default::default()).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => e.into_response(),
    }
}

fn evaluator(state: &AppState) -> Result<Arc<super::Evaluator>, ApiError> {
    state.alerting().ok_or_else(ApiError::not_ready)
}

/// Prometheus's `/api/v1/rules` with its `type`, `rule_name[]`, `rule_group[]`,
/// `file[]` and `exclude_alerts` filters.
async fn rules(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = (|| {
        let params = Params::parse(uri.query(), &headers, &body)?;
        let ev = evaluator(&state)?;
        let (want_alerting, want_recording) = match params.get("type") {
            None => (true, true),
            Some(t) if t.eq_ignore_ascii_case("alert") => (true, false),
            Some(t) if t.eq_ignore_ascii_case("record") => (false, true),
            Some(t) => {
                return Err(ApiError::invalid_param(
                    "type",
                    format!("not supported value {t:?}"),
                ));
            }
        };
        let exclude_alerts = match params.get("exclude_alerts") {
            None => false,
            Some(v) => v.parse::<bool>().map_err(|_| {
                ApiError::invalid_param("exclude_alerts", format!("not a boolean: {v:?}"))
            })?,
        };
        let names = params.all("rule_name[]");
        let group_names = params.all("rule_group[]");
        let files = params.all("file[]");
        let filtered = !names.is_empty() || !group_names.is_empty() || !files.is_empty();
        let snapshots = ev.groups();
        let mut groups = Vec::new();
        for g in &snapshots {
            if (!group_names.is_empty() && !group_names.contains(&g.name.as_str()))
                || (!files.is_empty() && !files.contains(&g.file.as_str()))
            {
                continue;
            }
            let rules: Vec<ApiRule<'_>> = g
                .rules
                .iter()
                .filter(|r| {
                    if r.alerting {
                        want_alerting
                    } else {
                        want_recording
                    }
                })
                .filter(|r| names.is_empty() || names.contains(&r.name.as_str()))
                .map(|r| api_rule(r, !exclude_alerts))
                .collect();
            if rules.is_empty() && (filtered || !(want_alerting && want_recording)) {
                continue;
            }
            groups.push(ApiGroup {
                name: &g.name,
                file: &g.file,
                rules,
                interval: g.interval_ms as f64 / 1000.0,
                limit: g.limit,
                evaluation_time: g.eval_seconds,
                last_evaluation: go_rfc3339(g.last_eval_ms),
            });
        }
        #[derive(Serialize)]
        struct Data<'a> {
            groups: Vec<ApiGroup<'a>>,
        }
        serde_json::to_value(Data { groups })
            .map_err(|e| ApiError::new(ErrorType::Internal, format!("encoding: {e}")))
    })();
    answer(result)
}

/// Prometheus's `/api/v1/alerts`: every active (pending or firing) alert.
async fn alerts(State(state): State<Arc<AppState>>) -> Response {
    let result = (|| {
        let ev = evaluator(&state)?;
        let snapshots = ev.groups();
        let alerts: Vec<ApiAlert<'_>> = snapshots
            .iter()
            .flat_map(|g| g.rules.iter())
            .flat_map(|r| r.alerts.iter())
            .map(api_alert)
            .collect();
        serde_json::to_value(serde_json::json!({ "alerts": alerts }))
            .map_err(|e| ApiError::new(ErrorType::Internal, format!("encoding: {e}")))
    })();
    answer(result)
}

fn history_query(params: &Params) -> Result<HistoryQuery, ApiError> {
    let time = |name: &'static str| {
        params
            .get(name)
            .map(|s| parse_time(s).map_err(|e| ApiError::invalid_param(name, e)))
            .transpose()
    };
    let mut kinds = Vec::new();
    for k in params.all("kind") {
        for k in k.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            kinds.push(parse_kind(k).ok_or_else(|| {
                ApiError::invalid_param(
                    "kind",
                    format!(
                        "unknown kind {k:?}; one of pending, firing, resolved, silenced, inhibited, notified"
                    ),
                )
            })?);
        }
    }
    let limit = match params.limit()? {
        0 => DEFAULT_HISTORY_LIMIT,
        n => n,
    };
    Ok(HistoryQuery {
        start_ms: time("start")?,
        end_ms: time("end")?,
        alertname: params.get("alertname").map(str::to_string),
        node: params.get("node").map(str::to_string),
        kinds,
        limit,
    })
}

/// `/api/v1/alerts/history?start=&end=&alertname=&node=&kind=&limit=`: transitions and
/// notification events, newest first.
async fn history(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let params = Params::parse(uri.query(), &headers, &body)?;
        let q = history_query(&params)?;
        let ev = evaluator(&state)?;
        let history = Arc::clone(ev.history());
        let events = tokio::task::spawn_blocking(move || history.query(&q))
            .await
            .map_err(|e| ApiError::new(ErrorType::Internal, e.to_string()))?
            .map_err(|e| ApiError::new(ErrorType::Internal, e.to_string()))?;
        #[derive(Serialize)]
        struct Event<'a> {
            time: String,
            kind: &'static str,
            labels: &'a crate::notify::LabelMap,
            annotations: &'a crate::notify::LabelMap,
            detail: &'a str,
        }
        let events: Vec<Event<'_>> = events
            .iter()
            .map(|e| Event {
                time: go_rfc3339(Some(e.at_ms)),
                kind: kind_name(e.kind),
                labels: &e.labels,
                annotations: &e.annotations,
                detail: &e.detail,
            })
            .collect();
        serde_json::to_value(serde_json::json!({ "events": events }))
            .map_err(|e| ApiError::new(ErrorType::Internal, format!("encoding: {e}")))
    }
    .await;
    answer(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats() {
        assert_eq!(format_e(95.0), "9.5e+01");
        assert_eq!(format_e(1.0), "1e+00");
        assert_eq!(format_e(0.5), "5e-01");
        assert_eq!(format_e(1234567.0), "1.234567e+06");
        assert_eq!(format_e(1e-120), "1e-120");
        assert_eq!(format_e(f64::INFINITY), "+Inf");
        assert_eq!(go_rfc3339(None), "0001-01-01T00:00:00Z");
        assert_eq!(go_rfc3339(Some(1_700_000_000_000)), "2023-11-14T22:13:20Z");
        assert_eq!(
            go_rfc3339(Some(1_700_000_000_120)),
            "2023-11-14T22:13:20.12Z"
        );
        assert_eq!(
            go_rfc3339(Some(1_700_000_000_001)),
            "2023-11-14T22:13:20.001Z"
        );
    }
}
