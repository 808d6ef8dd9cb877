//! Prometheus's API error envelope, `{"status":"error","errorType":..,"error":..}`, with
//! the HTTP status Prometheus pairs with each type.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Prometheus's `errorType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// A parameter is missing or malformed: 400.
    BadData,
    /// The query ran and failed: 422.
    Execution,
    /// The query ran past its deadline: 503.
    Timeout,
    /// The store failed: 500.
    Internal,
    /// Not ready to answer yet (the store is still replaying its WAL): 503.
    Unavailable,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadData => "bad_data",
            ErrorType::Execution => "execution",
            ErrorType::Timeout => "timeout",
            ErrorType::Internal => "internal",
            ErrorType::Unavailable => "unavailable",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorType::BadData => StatusCode::BAD_REQUEST,
            ErrorType::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Timeout | ErrorType::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An API call that failed, worded as Prometheus words the same failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorType,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_data(message: impl Into<String>) -> Self {
        Self::new(ErrorType::BadData, message)
    }

    /// Prometheus's `invalidParamError`: `invalid parameter "time": <reason>`.
    pub fn invalid_param(name: &str, reason: String) -> Self {
        Self::bad_data(format!("invalid parameter {name:?}: {reason}"))
    }

    pub fn not_ready() -> Self {
        Self::new(
            ErrorType::Unavailable,
            "the store is still opening (replaying its write-ahead log)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Written by hand to keep Prometheus's key order (serde_json sorts keys).
        let mut body = String::from("{\"status\":\"error\",\"errorType\":\"");
        body.push_str(self.kind.as_str());
        body.push_str("\",\"error\":");
        super::json::write_str(&self.message, &mut body);
        body.push('}');
        let mut r = (self.kind.status(), body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}
