//! Who may call the HTTP API, decided in one layer over the whole router so that no
//! handler checks anything itself and a new route gets a role without a line of code.
//!
//! Tokens come from the file named by `api_token_file` (`--api-token-file`), one per
//! line as `ROLE TOKEN`, where ROLE is `read` (every GET, and the POST forms of the
//! query endpoints) or `admin` (all of that, and every route that changes state).
//! With no file the API is open, which [`check_exposure`] allows only on loopback
//! addresses or with `--insecure`.
//!
//! Roles per route: `/healthz` and `/readyz` need nothing (probes carry no token);
//! [`ADMIN_ROUTES`] and every other request whose method is not GET or HEAD need
//! admin, except [`READ_POSTS`]; the rest needs read. An unknown future route that
//! changes state is therefore admin until someone decides otherwise.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ingest::auth::{bearer, constant_time_eq};

/// What a token may do. `Admin` includes `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Admin,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Routes that change what the collector does, as `(method, path pattern)`; `{x}`
/// matches one path segment. Each needs an admin token. The default rule (anything but
/// GET/HEAD outside [`READ_POSTS`]) would catch them too, and catches the remediation
/// kill switch whatever path it gets; listing them keeps the decision visible and is
/// what the tests walk. Add a route here when it is a GET that must still need admin.
pub const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/silences"),
    ("DELETE", "/api/v1/silences/{id}"),
    ("POST", "/api/v1/actions/{id}/approve"),
    ("POST", "/api/v1/actions/{id}/reject"),
    ("POST", "/api/v1/actions/kill-switch"),
];

/// POST routes that only read: Prometheus's API accepts its parameters as form bodies.
pub const READ_POSTS: &[&str] = &[
    "/api/v1/query",
    "/api/v1/query_range",
    "/api/v1/series",
    "/api/v1/labels",
    "/api/v1/query_exemplars",
    "/api/v1/format_query",
    "/api/v1/rules",
    "/api/v1/alerts",
    "/api/v1/alerts/history",
    "/api/v1/logs/search",
];

/// Routes open to anyone: liveness and readiness probes.
pub const PUBLIC_PATHS: &[&str] = &["/healthz", "/readyz"];

/// The role a request needs; `None` for the public probes.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    if PUBLIC_PATHS.contains(&path) && (method == Method::GET || method == Method::HEAD) {
        return None;
    }
    if ADMIN_ROUTES
        .iter()
        .any(|(m, pattern)| method.as_str() == *m && matches_pattern(pattern, path))
    {
        return Some(Role::Admin);
    }
    if method == Method::GET || method == Method::HEAD {
        return Some(Role::Read);
    }
    if method == Method::POST && READ_POSTS.contains(&path) {
        return Some(Role::Read);
    }
    Some(Role::Admin)
}

/// `/api/v1/silences/{id}` against `/api/v1/silences/abc`: literal segments equal,
/// `{..}` any one non-empty segment.
fn matches_pattern(pattern: &str, path: &str) -> bool {
    let mut p = pattern.split('/');
    let mut s = path.split('/');
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.starts_with('{') && a.ends_with('}') => {
                if b.is_empty() {
                    return false;
                }
            }
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Why an API token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ApiTokensError {
    #[error("reading API token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("API token file {path} line {line}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("API token file {path} holds no token (only blank lines and comments)")]
    Empty { path: PathBuf },
}

/// The API's tokens and their roles. Its `Debug` never shows a token.
#[derive(Clone)]
pub struct ApiTokens {
    tokens: Vec<(Role, Box<[u8]>)>,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let admins = self
            .tokens
            .iter()
            .filter(|(r, _)| *r == Role::Admin)
            .count();
        write!(
            f,
            "ApiTokens({} read, {admins} admin)",
            self.tokens.len() - admins
        )
    }
}

impl ApiTokens {
    /// Reads `ROLE TOKEN` lines; blank lines and `#` comments are skipped.
    pub fn from_file(path: &Path) -> Result<ApiTokens, ApiTokensError> {
        let lines =
            crate::ingest::auth::token_file_lines(path).map_err(|source| ApiTokensError::Read {
                path: path.to_owned(),
                source,
            })?;
        let mut tokens = Vec::new();
        for (i, line) in lines.iter().map(|(i, l)| (*i, l.as_str())) {
            let invalid = |reason: String| ApiTokensError::Invalid {
                path: path.to_owned(),
                line: i + 1,
                reason,
            };
            let mut words = line.split_whitespace();
            let (Some(role), Some(token), None) = (words.next(), words.next(), words.next()) else {
                return Err(invalid(
                    "expected `ROLE TOKEN` (ROLE is read or admin)".into(),
                ));
            };
            let role = Role::parse(role).ok_or_else(|| {
                invalid(format!(
                    "unknown role {role:?}: the roles are read and admin"
                ))
            })?;
            if !token.chars().all(|c| c.is_ascii_graphic()) {
                return Err(invalid("a token must be printable ASCII".into()));
            }
            tokens.push((role, token.as_bytes().into()));
        }
        if tokens.is_empty() {
            return Err(ApiTokensError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(ApiTokens { tokens })
    }

    /// Tokens given directly (tests, embedding).
    pub fn from_list<S: AsRef<str>>(tokens: impl IntoIterator<Item = (Role, S)>) -> ApiTokens {
        ApiTokens {
            tokens: tokens
                .into_iter()
                .map(|(r, t)| (r, t.as_ref().as_bytes().into()))
                .collect(),
        }
    }

    /// The highest role of the presented `Bearer` token; every token is compared in
    /// full so timing says nothing about which bytes matched.
    pub fn role_of(&self, authorization: Option<&[u8]>) -> Option<Role> {
        let presented = authorization.and_then(bearer)?;
        let mut best = None;
        for (role, t) in &self.tokens {
            if constant_time_eq(t, presented) {
                best = best.max(Some(*role));
            }
        }
        best
    }
}

/// The API's authentication: tokens, or open (no token file).
#[derive(Debug, Clone, Default)]
pub struct ApiAuth {
    tokens: Option<ApiTokens>,
}

impl ApiAuth {
    pub fn open() -> ApiAuth {
        ApiAuth { tokens: None }
    }

    pub fn with_tokens(tokens: ApiTokens) -> ApiAuth {
        ApiAuth {
            tokens: Some(tokens),
        }
    }

    /// From `api_token_file`; an empty path leaves the API open.
    pub fn from_file(path: &Path) -> Result<ApiAuth, ApiTokensError> {
        if path.as_os_str().is_empty() {
            return Ok(ApiAuth::open());
        }
        ApiTokens::from_file(path).map(ApiAuth::with_tokens)
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_none()
    }

    /// What to answer a request needing `needed` that presented `authorization`: `None`
    /// lets it through.
    fn refusal(&self, needed: Role, authorization: Option<&[u8]>) -> Option<Refusal> {
        let tokens = self.tokens.as_ref()?;
        match tokens.role_of(authorization) {
            None => Some(Refusal::Unauthenticated),
            Some(role) if role < needed => Some(Refusal::Forbidden),
            Some(_) => None,
        }
    }
}

enum Refusal {
    Unauthenticated,
    Forbidden,
}

/// The layer: `Router::layer(axum::middleware::from_fn_with_state(auth, auth::require))`.
pub async fn require(State(auth): State<Arc<ApiAuth>>, request: Request, next: Next) -> Response {
    let Some(needed) = required_role(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match auth.refusal(needed, authorization) {
        None => next.run(request).await,
        Some(Refusal::Unauthenticated) => {
            let mut r = refusal_body(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or unknown bearer token (authorization: Bearer <token>)",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        Some(Refusal::Forbidden) => refusal_body(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this route changes the collector's state and needs an admin token",
        ),
    }
}

/// Prometheus's error envelope, so API clients read the refusal as any other error.
fn refusal_body(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "status": "error",
        "errorType": error_type,
        "error": message,
    });
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Refuses a listener on a non-loopback address that accepts anyone: each entry is
/// `(address, flag that set it, whether its receiver has tokens)`. `--insecure`
/// (`insecure = true`) turns the refusal into a warning.
pub fn check_exposure(
    listeners: &[(SocketAddr, &'static str, bool)],
    insecure: bool,
) -> Result<(), ExposureError> {
    for &(addr, flag, has_tokens) in listeners {
        if has_tokens || addr.ip().is_loopback() {
            continue;
        }
        let token_flag = if flag == "--listen" {
            "--api-token-file"
        } else {
            "--token-file"
        };
        if insecure {
            tracing::warn!(
                %addr,
                flag,
                "listening on a non-loopback address without a token (--insecure)"
            );
            continue;
        }
        return Err(ExposureError {
            addr,
            flag,
            token_flag,
        });
    }
    Ok(())
}

/// A listener that would accept anyone from the network.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to listen on {addr} ({flag}) without a token: anyone who can reach it could \
     use it; give {token_flag}, listen on 127.0.0.1, or pass --insecure to allow it"
)]
pub struct ExposureError {
    pub addr: SocketAddr,
    pub flag: &'static str,
    pub token_flag: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_per_route() {
        let read = Some(Role::Read);
        let admin = Some(Role::Admin);
        assert_eq!(required_role(&Method::GET, "/healthz"), None);
        assert_eq!(required_role(&Method::GET, "/readyz"), None);
        assert_eq!(required_role(&Method::GET, "/metrics"), read);
        assert_eq!(required_role(&Method::GET, "/api/v1/query"), read);
        assert_eq!(required_role(&Method::POST, "/api/v1/query"), read);
        assert_eq!(required_role(&Method::GET, "/api/v1/silences"), read);
        assert_eq!(required_role(&Method::POST, "/api/v1/silences"), admin);
        assert_eq!(
            required_role(&Method::DELETE, "/api/v1/silences/abc-1"),
            admin
        );
        assert_eq!(
            required_role(&Method::POST, "/api/v1/actions/42/approve"),
            admin
        );
        // Fail closed: a route nobody listed that changes state.
        assert_eq!(required_role(&Method::PUT, "/api/v1/anything"), admin);
        assert_eq!(required_role(&Method::POST, "/healthz"), admin);
        for (m, p) in ADMIN_ROUTES {
            let path = p.replace("{id}", "x");
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(required_role(&method, &path), admin, "{m} {path}");
        }
    }

    #[test]
    fn patterns_match_one_segment() {
        assert!(matches_pattern("/a/{id}/b", "/a/1/b"));
        assert!(!matches_pattern("/a/{id}/b", "/a//b"));
        assert!(!matches_pattern("/a/{id}/b", "/a/1/2/b"));
        assert!(!matches_pattern("/a/{id}", "/a/1/"));
    }

    #[test]
    fn token_file_roles_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("api-tokens");
        std::fs::write(&p, "# ops\nread r-123\n\nadmin a-456\n").unwrap();
        let t = ApiTokens::from_file(&p).unwrap();
        assert_eq!(t.role_of(Some(b"Bearer r-123")), Some(Role::Read));
        assert_eq!(t.role_of(Some(b"Bearer a-456")), Some(Role::Admin));
        assert_eq!(t.role_of(Some(b"Bearer a-45")), None);
        assert_eq!(t.role_of(None), None);
        assert_eq!(format!("{t:?}"), "ApiTokens(1 read, 1 admin)");

        std::fs::write(&p, "read ok\nwrite nope\n").unwrap();
        let e = ApiTokens::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("\"write\""), "{e}");
        std::fs::write(&p, "lonely-token\n").unwrap();
        let e = ApiTokens::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("ROLE TOKEN"), "{e}");
        std::fs::write(&p, "# none\n").unwrap();
        assert!(matches!(
            ApiTokens::from_file(&p),
            Err(ApiTokensError::Empty { .. })
        ));
    }

    #[test]
    fn refusals() {
        let auth = ApiAuth::with_tokens(ApiTokens::from_list([
            (Role::Read, "r"),
            (Role::Admin, "a"),
        ]));
        assert!(auth.refusal(Role::Read, Some(b"Bearer r")).is_none());
        assert!(matches!(
            auth.refusal(Role::Admin, Some(b"Bearer r")),
            Some(Refusal::Forbidden)
        ));
        assert!(matches!(
            auth.refusal(Role::Read, Some(b"Bearer x")),
            Some(Refusal::Unauthenticated)
        ));
        assert!(auth.refusal(Role::Admin, Some(b"Bearer a")).is_none());
        assert!(ApiAuth::open().refusal(Role::Admin, None).is_none());
    }

    #[test]
    fn exposure_needs_a_token_or_loopback_or_insecure() {
        let any: SocketAddr = "0.0.0.0:4317".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:4317".parse().unwrap();
        assert!(check_exposure(&[(lo, "--otlp-grpc", false)], false).is_ok());
        assert!(check_exposure(&[(any, "--otlp-grpc", true)], false).is_ok());
        assert!(check_exposure(&[(any, "--otlp-grpc", false)], true).is_ok());
        let e = check_exposure(&[(any, "--otlp-grpc", false)], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("0.0.0.0:4317") && e.contains("--insecure") && e.contains("--token-file"),
            "{e}"
        );
        let api: SocketAddr = "[::]:9436".parse().unwrap();
        let e = check_exposure(&[(api, "--listen", false)], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--api-token-file"), "{e}");
    }
}
