//! The collector's HTTP API as the CLI's subcommands use it: one client, a bearer
//! token from a file, and errors that say what failed and where.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::Value;

/// Where the collector is and how to authenticate; shared by `alerts` and `silence`.
#[derive(Debug, Clone, Args)]
pub struct CollectorArgs {
    /// The collector's HTTP address.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:9436",
        value_name = "URL"
    )]
    pub collector: String,
    /// A file whose first token is sent as `Authorization: Bearer`: a line with the
    /// token alone, or `ROLE TOKEN` as in the collector's API token file; `#` starts
    /// a comment line.
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Print the collector's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// How long one request may take before the CLI gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(args: &CollectorArgs) -> anyhow::Result<Self> {
        let base = args.collector.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--collector {base:?}: expected an http:// or https:// URL");
        }
        let token = args.token_file.as_deref().map(read_token).transpose()?;
        // reqwest is built without a crypto provider of its own: the workspace uses
        // ring's everywhere. Installing fails only when one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Self { base, token, http })
    }

    /// GET `path_and_query`; the response body as JSON.
    pub async fn get(&self, path_and_query: &str) -> anyhow::Result<Value> {
        let request = self.http.get(self.url(path_and_query));
        self.send(request, "GET", path_and_query).await
    }

    /// GET `path_and_query` as a stream with no overall deadline (`vigil logs tail`):
    /// the response once its status says success.
    pub async fn get_stream(&self, path_and_query: &str) -> anyhow::Result<reqwest::Response> {
        let mut request = self
            .http
            .get(self.url(path_and_query))
            .timeout(Duration::from_secs(365 * 24 * 3600));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, "GET", path_and_query))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let reason = serde_json::from_str::<Value>(&text)
                .ok()
                .as_ref()
                .and_then(server_error)
                .unwrap_or_else(|| excerpt(&text));
            bail!(
                "GET {path_and_query} on the collector at {}: {status}: {reason}",
                self.base
            );
        }
        Ok(response)
    }

    /// POST a JSON body to `path`; the response body as JSON.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let request = self
            .http
            .post(self.url(path))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        self.send(request, "POST", path).await
    }

    /// DELETE `path`; the response body as JSON (`Null` when it is empty).
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let request = self.http.delete(self.url(path));
        self.send(request, "DELETE", path).await
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        method: &str,
        path: &str,
    ) -> anyhow::Result<Value> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, method, path))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| self.transport_error(&e, method, path))?;
        let json: Option<Value> = if text.trim().is_empty() {
            Some(Value::Null)
        } else {
            serde_json::from_str(&text).ok()
        };
        if !status.is_success() {
            let reason = json
                .as_ref()
                .and_then(server_error)
                .unwrap_or_else(|| excerpt(&text));
            let hint = match status {
                reqwest::StatusCode::UNAUTHORIZED => {
                    " (give the collector's token with --token-file)"
                }
                // An empty 404 comes from the router, not from a handler.
                reqwest::StatusCode::NOT_FOUND if text.trim().is_empty() => {
                    " (this collector has no such endpoint: an older version, or silences \
                     without a notifier, which needs --alertmanager-config)"
                }
                _ => "",
            };
            bail!(
                "{method} {path} on the collector at {}: {status}: {reason}{hint}",
                self.base
            );
        }
        json.with_context(|| {
            format!(
                "{method} {path} on the collector at {}: the answer is not JSON: {}",
                self.base,
                excerpt(&text)
            )
        })
    }

    fn transport_error(&self, e: &reqwest::Error, method: &str, path: &str) -> anyhow::Error {
        let cause = root_cause(e);
        if e.is_connect() {
            anyhow::anyhow!("cannot reach the collector at {}: {cause}", self.base)
        } else if e.is_timeout() {
            anyhow::anyhow!(
                "{method} {path}: the collector at {} did not answer within {}s",
                self.base,
                REQUEST_TIMEOUT.as_secs()
            )
        } else {
            anyhow::anyhow!("{method} {path} on the collector at {}: {cause}", self.base)
        }
    }
}

/// The innermost error's message: for a refused connection "Connection refused (os
/// error 111)" rather than reqwest's "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// The message of an error body: Prometheus's `{"status":"error","error":..}`, or
/// Alertmanager's plain string, or `{"message":..}`.
fn server_error(json: &Value) -> Option<String> {
    match json {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => map
            .get("error")
            .or_else(|| map.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

fn excerpt(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut out: String = text.chars().take(300).collect();
    if out.len() < text.len() {
        out.push_str("...");
    }
    out
}

/// The first token in a token file: `TOKEN` or `ROLE TOKEN` (the collector's API
/// token file, ROLE `read` or `admin`) a line; blank lines and `#` comments skipped.
fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading token file {}", path.display()))?;
    let (number, line) = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .find(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .with_context(|| {
            format!(
                "token file {} holds no token (only blank lines and comments)",
                path.display()
            )
        })?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields[..] {
        [token] | ["read" | "admin", token] => Ok(token.to_owned()),
        _ => bail!(
            "token file {} line {number}: expected TOKEN or ROLE TOKEN (ROLE read or admin)",
            path.display()
        ),
    }
}

/// `data` of a Prometheus-style envelope; a body without one is returned as it is
/// (Alertmanager's v2 answers are bare).
pub fn unwrap_data(json: Value) -> anyhow::Result<Value> {
    match json {
        Value::Object(mut map) if map.contains_key("status") && map.contains_key("data") => {
            if map.get("status").and_then(Value::as_str) != Some("success") {
                bail!(
                    "the collector answered status {}: {}",
                    map["status"],
                    map.get("error").and_then(Value::as_str).unwrap_or("")
                );
            }
            Ok(map.remove("data").unwrap_or(Value::Null))
        }
        other => Ok(other),
    }
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters stay).
pub fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_skips_comments_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# fleet token\n\n  s3cret  \nother\n").unwrap();
        assert_eq!(read_token(&path).unwrap(), "s3cret");
        std::fs::write(&path, "# api tokens\nadmin t0k3n\nread other\n").unwrap();
        assert_eq!(read_token(&path).unwrap(), "t0k3n");
        std::fs::write(&path, "\nroot t0k3n\n").unwrap();
        let e = read_token(&path).unwrap_err().to_string();
        assert!(e.contains("line 2: expected TOKEN or ROLE TOKEN"), "{e}");
        std::fs::write(&path, "# nothing\n\n").unwrap();
        let e = read_token(&path).unwrap_err().to_string();
        assert!(e.contains("holds no token"), "{e}");
        assert!(e.contains(path.to_str().unwrap()), "{e}");
    }

    #[test]
    fn envelope_is_unwrapped_and_bare_bodies_pass() {
        let data = unwrap_data(serde_json::json!({"status":"success","data":{"alerts":[]}}));
        assert_eq!(data.unwrap(), serde_json::json!({"alerts":[]}));
        let bare = unwrap_data(serde_json::json!([{"id":"x"}])).unwrap();
        assert_eq!(bare, serde_json::json!([{"id":"x"}]));
        let e = unwrap_data(serde_json::json!({"status":"error","data":null,"error":"bad"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad"), "{e}");
    }

    #[test]
    fn server_errors_are_quoted() {
        let j =
            serde_json::json!({"status":"error","errorType":"bad_data","error":"no such silence"});
        assert_eq!(server_error(&j).as_deref(), Some("no such silence"));
        assert_eq!(
            server_error(&serde_json::json!("silence not found")).as_deref(),
            Some("silence not found")
        );
        assert_eq!(encode_query_value("a b=~\"x\""), "a%20b%3D~%22x%22");
    }

    #[tokio::test]
    async fn refused_connection_names_the_collector() {
        // A port that was free a moment ago: nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let client = Client::new(&CollectorArgs {
            collector: url.clone(),
            token_file: None,
            json: false,
        })
        .unwrap();
        let e = client.get("/api/v1/alerts").await.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot reach the collector at {url}: ")),
            "{e}"
        );
        assert!(e.to_lowercase().contains("refused"), "{e}");
    }
}
