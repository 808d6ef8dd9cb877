//! The notifier's HTTP API: silences in Alertmanager's shapes (what `amtool` and the
//! Alertmanager UI's people know), and the notifier's status.
//!
//! - `GET /api/v1/silences`: every silence as Alertmanager's v2 `GettableSilence`
//!   (`id`, `matchers[{name,value,isRegex,isEqual}]`, `startsAt`, `endsAt`,
//!   `updatedAt`, `createdBy`, `comment`, `status.state`), in `{"status":"success",
//!   "data":[...]}`.
//! - `GET /api/v1/silences/{id}`: one of them.
//! - `POST /api/v1/silences`: a v2 `PostableSilence`; with an `id`, an update. Answers
//!   `{"status":"success","data":{"silenceID":"..."}}`.
//! - `DELETE /api/v1/silences/{id}`: expires it.
//! - `GET /api/v1/notifications`: the aggregation groups with their alerts, what
//!   mutes each, the last notification, and the receivers' last delivery attempts.
//!
//! Errors answer `{"status":"error","errorType":...,"error":...}` naming the field:
//! 400 for a bad body, 404 for an unknown silence, 403 for a configuration-file one.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::dispatch::Notifier;
use super::matchers::{MatchType, Matcher};
use super::silence::{MatcherRecord, PostableSilence, Silence, SilenceError, SilenceState};

/// The notifier's routes, ready to merge into the collector's router.
pub fn routes<S: Clone + Send + Sync + 'static>(notifier: Arc<Notifier>) -> Router<S> {
    Router::new()
        .route("/api/v1/silences", get(list_silences).post(post_silence))
        .route(
            "/api/v1/silences/{id}",
            get(get_silence).delete(delete_silence),
        )
        .route("/api/v1/notifications", get(notifications))
        .with_state(notifier)
}

/// Milliseconds since the epoch as RFC 3339 with milliseconds, in UTC.
pub use crate::timefmt::rfc3339_millis as rfc3339;

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn success(data: Value) -> Response {
    json_response(StatusCode::OK, &json!({"status": "success", "data": data}))
}

fn error(status: StatusCode, kind: &str, msg: &str) -> Response {
    json_response(
        status,
        &json!({"status": "error", "errorType": kind, "error": msg}),
    )
}

fn silence_error(e: &SilenceError) -> Response {
    let msg = e.to_string();
    match e {
        SilenceError::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", &msg),
        SilenceError::ReadOnly(_) => error(StatusCode::FORBIDDEN, "forbidden", &msg),
        SilenceError::Invalid { .. } | SilenceError::AlreadyExpired(_) => {
            error(StatusCode::BAD_REQUEST, "bad_data", &msg)
        }
    }
}

fn silence_json(s: &Silence, state: SilenceState) -> Value {
    let matchers: Vec<MatcherRecord> = s.matchers.iter().map(MatcherRecord::from).collect();
    json!({
        "id": s.id,
        "matchers": matchers,
        "startsAt": rfc3339(s.starts_at_ms),
        "endsAt": rfc3339(s.ends_at_ms),
        "updatedAt": rfc3339(s.updated_at_ms),
        "createdBy": s.created_by,
        "comment": s.comment,
        "status": {"state": state.as_str()},
    })
}

async fn list_silences(State(n): State<Arc<Notifier>>) -> Response {
    let mut list = n.silences();
    let rank = |s: SilenceState| match s {
        SilenceState::Active => 0,
        SilenceState::Pending => 1,
        SilenceState::Expired => 2,
    };
    list.sort_by(|(a, sa), (b, sb)| {
        (rank(*sa), a.ends_at_ms, &a.id).cmp(&(rank(*sb), b.ends_at_ms, &b.id))
    });
    success(Value::Array(
        list.iter().map(|(s, st)| silence_json(s, *st)).collect(),
    ))
}

async fn get_silence(State(n): State<Arc<Notifier>>, Path(id): Path<String>) -> Response {
    match n.silences().into_iter().find(|(s, _)| s.id == id) {
        Some((s, st)) => success(silence_json(&s, st)),
        None => silence_error(&SilenceError::NotFound(id)),
    }
}

async fn delete_silence(State(n): State<Arc<Notifier>>, Path(id): Path<String>) -> Response {
    match n.expire_silence(&id) {
        Ok(()) => json_response(StatusCode::OK, &json!({"status": "success"})),
        Err(e) => silence_error(&e),
    }
}

async fn post_silence(State(n): State<Arc<Notifier>>, body: Bytes) -> Response {
    let parsed = match parse_postable(&body, super::dispatch::now_ms()) {
        Ok(p) => p,
        Err(msg) => return error(StatusCode::BAD_REQUEST, "bad_data", &msg),
    };
    match n.upsert_silence(parsed) {
        Ok(id) => success(json!({"silenceID": id})),
        Err(e) => silence_error(&e),
    }
}

/// Alertmanager's v2 `PostableSilence`; errors name the field.
pub fn parse_postable(body: &[u8], now_ms: i64) -> Result<PostableSilence, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body: invalid JSON: {e}"))?;
    let obj = v.as_object().ok_or("body: expected a JSON object")?;
    for k in obj.keys() {
        if !matches!(
            k.as_str(),
            "id" | "matchers" | "startsAt" | "endsAt" | "createdBy" | "comment"
        ) {
            return Err(format!("{k}: unknown field"));
        }
    }
    let string = |k: &str| -> Result<Option<String>, String> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{k}: expected a string")),
        }
    };
    let time = |k: &str| -> Result<Option<i64>, String> {
        string(k)?
            .map(|t| {
                chrono::DateTime::parse_from_rfc3339(&t)
                    .map(|d| d.timestamp_millis())
                    .map_err(|e| format!("{k}: {t:?} is not an RFC 3339 time: {e}"))
            })
            .transpose()
    };
    let id = string("id")?.filter(|s| !s.is_empty());
    let raw = obj
        .get("matchers")
        .and_then(Value::as_array)
        .ok_or("matchers: missing or not a list")?;
    let mut matchers = Vec::new();
    for (i, m) in raw.iter().enumerate() {
        let r: MatcherRecord =
            serde_json::from_value(m.clone()).map_err(|e| format!("matchers[{i}]: {e}"))?;
        let kind = match (r.is_regex, r.is_equal) {
            (false, true) => MatchType::Equal,
            (false, false) => MatchType::NotEqual,
            (true, true) => MatchType::Regexp,
            (true, false) => MatchType::NotRegexp,
        };
        matchers.push(
            Matcher::new(&r.name, kind, &r.value).map_err(|e| format!("matchers[{i}]: {e}"))?,
        );
    }
    let ends_at_ms = time("endsAt")?.ok_or("endsAt: missing")?;
    Ok(PostableSilence {
        id,
        matchers,
        starts_at_ms: time("startsAt")?.unwrap_or(now_ms),
        ends_at_ms,
        created_by: string("createdBy")?.ok_or("createdBy: missing")?,
        comment: string("comment")?.ok_or("comment: missing")?,
    })
}

async fn notifications(State(n): State<Arc<Notifier>>) -> Response {
    let groups: Vec<Value> = n
        .groups()
        .into_iter()
        .map(|g| {
            let alerts: Vec<Value> = g
                .alerts
                .iter()
                .map(|a| {
                    json!({
                        "fingerprint": a.fingerprint,
                        "labels": a.labels,
                        "annotations": a.annotations,
                        "startsAt": rfc3339(a.starts_at_ms),
                        "endsAt": rfc3339(a.ends_at_ms),
                        "status": {
                            "state": a.state,
                            "silencedBy": a.silenced_by,
                            "inhibitedBy": a.inhibited_by,
                        },
                    })
                })
                .collect();
            json!({
                "groupKey": g.group_key,
                "receiver": g.receiver,
                "labels": g.labels,
                "lastNotifiedAt": g.last_notified_at_ms.map(rfc3339),
                "alerts": alerts,
            })
        })
        .collect();
    let receivers: Vec<Value> = n
        .receivers()
        .into_iter()
        .map(|(name, last)| {
            let kinds = n.integration_kinds(&name);
            let integrations: Vec<Value> = kinds
                .iter()
                .zip(last)
                .map(|(kind, l)| {
                    json!({
                        "kind": kind,
                        "lastAttempt": l.map(|l| json!({
                            "at": rfc3339(l.at_ms),
                            "groupKey": l.group_key,
                            "ok": l.ok,
                            "error": l.error,
                        })),
                    })
                })
                .collect();
            json!({"name": name, "integrations": integrations})
        })
        .collect();
    success(json!({"groups": groups, "receivers": receivers}))
}
