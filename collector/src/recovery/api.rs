//! `/api/v1/actions` and its operator requests, in Prometheus's envelope (the JSON is
//! [`vigil_proto::actions`]). Approve, reject and the kill switch need an admin token
//! ([`crate::auth::ADMIN_ROUTES`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use vigil_proto::actions::{
    Action, ActionList, ActionState, ApproveRequest, KillSwitch, KillSwitchRequest, logs_query,
};

use super::policy::{KillSwitchState, PolicyError, Record};
use super::{Remediation, RequestError};
use crate::http::AppState;
use crate::timefmt::rfc3339_millis;

/// The most entries one listing returns without `limit`.
const DEFAULT_LIMIT: usize = 500;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/actions", get(list))
        .route("/api/v1/actions/kill-switch", post(kill_switch))
        .route("/api/v1/actions/{id}/approve", post(approve))
        .route("/api/v1/actions/{id}/reject", post(reject))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn success(data: impl serde::Serialize) -> Response {
    json_response(StatusCode::OK, &json!({"status": "success", "data": data}))
}

fn error(status: StatusCode, kind: &str, msg: &str) -> Response {
    json_response(
        status,
        &json!({"status": "error", "errorType": kind, "error": msg}),
    )
}

/// A refused request, turned into its response at the end.
struct Fail(StatusCode, &'static str, String);

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        error(self.0, self.1, &self.2)
    }
}

fn remediation(state: &AppState) -> Result<Arc<Remediation>, Fail> {
    state.recovery().ok_or_else(|| {
        Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "recovery is not running yet".into(),
        )
    })
}

/// An audit entry as the API shows it.
pub fn view(r: &Record) -> Action {
    let ran = matches!(
        r.state,
        ActionState::Running
            | ActionState::Succeeded
            | ActionState::Failed
            | ActionState::Lost
            | ActionState::Dispatched
    );
    Action {
        id: r.id.clone(),
        node: r.node.clone(),
        script: r.script.clone(),
        alertname: r.alertname.clone(),
        labels: r.labels.clone(),
        args: r.args.clone(),
        decision: r.decision,
        state: r.state,
        reason: r.reason.clone(),
        attempt: r.attempt,
        created_at: rfc3339_millis(r.created_ms),
        updated_at: rfc3339_millis(r.updated_ms),
        approved_by: r.approved_by.clone(),
        started_at: r.started_ms.map(rfc3339_millis),
        finished_at: r.finished_ms.map(rfc3339_millis),
        exit_code: r.exit_code,
        signal: r.signal,
        timed_out: r.timed_out,
        message: r.message.clone(),
        logs_query: if ran {
            logs_query(&r.id)
        } else {
            String::new()
        },
    }
}

fn kill_view(k: &KillSwitchState) -> KillSwitch {
    KillSwitch {
        engaged: k.engaged,
        by: k.by.clone(),
        reason: k.reason.clone(),
        since: (k.since_ms > 0).then(|| rfc3339_millis(k.since_ms)),
    }
}

/// `GET /api/v1/actions?node=&state=&decision=&limit=`, newest first.
async fn list(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    let rem = match remediation(&state) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let params: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let limit = match get("limit").map(str::parse::<usize>) {
        None => DEFAULT_LIMIT,
        Some(Ok(0)) => usize::MAX,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                "invalid parameter \"limit\": not a non-negative integer",
            );
        }
    };
    let wanted_state = match get("state") {
        None | Some("") => None,
        Some(s) => match ActionState::ALL.iter().find(|x| x.as_str() == s) {
            Some(x) => Some(*x),
            None => {
                let names: Vec<&str> = ActionState::ALL.iter().map(|x| x.as_str()).collect();
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    &format!("invalid parameter \"state\": {s:?} is not one of {names:?}"),
                );
            }
        },
    };
    let node = get("node").filter(|n| !n.is_empty());
    let (kill, records) = rem.snapshot();
    let actions = records
        .iter()
        .filter(|r| node.is_none_or(|n| r.node == n))
        .filter(|r| wanted_state.is_none_or(|s| r.state == s))
        .take(limit)
        .map(view)
        .collect();
    success(ActionList {
        kill_switch: kill_view(&kill),
        actions,
    })
}

fn body_json<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, Fail> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Fail(
            StatusCode::BAD_REQUEST,
            "bad_data",
            format!("request body: {e}"),
        )
    })
}

fn request_error(e: &RequestError) -> Response {
    let msg = e.to_string();
    match e {
        RequestError::Policy(PolicyError::NotFound(_)) => {
            error(StatusCode::NOT_FOUND, "not_found", &msg)
        }
        RequestError::Policy(PolicyError::NotAwaiting { .. }) => {
            error(StatusCode::CONFLICT, "conflict", &msg)
        }
        RequestError::Policy(PolicyError::KillSwitch) => {
            error(StatusCode::CONFLICT, "conflict", &msg)
        }
        RequestError::Journal(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &msg),
    }
}

fn who(by: &str) -> String {
    if by.trim().is_empty() {
        "api".to_string()
    } else {
        by.trim().to_string()
    }
}

async fn approve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    decide(state, id, body, true).await
}

async fn reject(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    decide(state, id, body, false).await
}

async fn decide(state: Arc<AppState>, id: String, body: Bytes, approve: bool) -> Response {
    let rem = match remediation(&state) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let req: ApproveRequest = match body_json(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let by = who(&req.by);
    let done = tokio::task::spawn_blocking(move || {
        if approve {
            rem.approve(&id, &by)
        } else {
            rem.reject(&id, &by)
        }
    })
    .await;
    match done {
        Ok(Ok(r)) => success(view(&r)),
        Ok(Err(e)) => request_error(&e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("{e}"),
        ),
    }
}

async fn kill_switch(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let rem = match remediation(&state) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "request body: expected {\"engaged\": true|false, \"by\": .., \"reason\": ..}",
        );
    }
    let req: KillSwitchRequest = match body_json(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let by = who(&req.by);
    let done = tokio::task::spawn_blocking(move || {
        rem.set_kill_switch(req.engaged, &by, req.reason.trim())
    })
    .await;
    match done {
        Ok(Ok(k)) => success(kill_view(&k)),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("{e}; the kill switch is unchanged"),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("{e}"),
        ),
    }
}
