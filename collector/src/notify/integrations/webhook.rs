//! `webhook_configs`: Alertmanager's webhook v4 body byte for byte as Alertmanager
//! 0.25 writes it (Go's `json.Encoder`: fields in struct order, map keys sorted,
//! `<`, `>`, `&` escaped as `\u003c`..., a trailing newline), so existing receivers
//! work unchanged; or, with `format:`, one of the ready-made robot bodies.
//!
//! With `signature_secret`, the header `signature_header` (default
//! `X-Vigil-Signature`) carries `sha256=<hex>` of HMAC-SHA256 over the exact body
//! bytes, as GitHub signs its webhooks, so receivers can reuse a GitHub-style check.
//! No timestamp is signed: a replayed body is an identical notification, which
//! receivers already deduplicate by `groupKey` and the alerts' fingerprints.

use std::time::Duration;

use serde::Serialize;

use super::http::{self, check_url};
use super::render::format_time;
use super::robots;
use crate::notify::config::{WebhookConfig, WebhookFormat};
use crate::notify::{Integration, LabelMap, Message, NotifyFuture, Status};

/// Go's zero `time.Time`, which Alertmanager prints as the `endsAt` of a firing alert.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    receiver: &'a str,
    status: Status,
    alerts: Vec<Alert<'a>>,
    group_labels: &'a LabelMap,
    common_labels: &'a LabelMap,
    common_annotations: &'a LabelMap,
    #[serde(rename = "externalURL")]
    external_url: &'a str,
    version: &'static str,
    group_key: &'a str,
    truncated_alerts: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Alert<'a> {
    status: Status,
    labels: &'a LabelMap,
    annotations: &'a LabelMap,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: &'a str,
    fingerprint: &'a str,
}

/// Alertmanager's webhook v4 body for `m`, keeping at most `max_alerts` alerts (0:
/// all) and counting the rest in `truncatedAlerts`.
pub fn alertmanager_body(m: &Message, max_alerts: u64) -> Vec<u8> {
    let keep = match usize::try_from(max_alerts) {
        Ok(0) | Err(_) => m.alerts.len(),
        Ok(n) => n.min(m.alerts.len()),
    };
    let dropped = (m.alerts.len() - keep) as u64;
    let body = Body {
        receiver: &m.receiver,
        status: m.status,
        alerts: m.alerts[..keep]
            .iter()
            .map(|a| Alert {
                status: a.status,
                labels: &a.labels,
                annotations: &a.annotations,
                starts_at: format_time(a.starts_at_ms),
                ends_at: a
                    .ends_at_ms
                    .map(format_time)
                    .unwrap_or_else(|| ZERO_TIME.to_string()),
                generator_url: &a.generator_url,
                fingerprint: &a.fingerprint,
            })
            .collect(),
        group_labels: &m.group_labels,
        common_labels: &m.common_labels,
        common_annotations: &m.common_annotations,
        external_url: &m.external_url,
        version: "4",
        group_key: &m.group_key,
        truncated_alerts: m.truncated_alerts + dropped,
    };
    go_json(&body)
}

/// JSON as Go's `json.NewEncoder(w).Encode(v)` writes it: HTML-sensitive characters
/// and the JavaScript line separators escaped, a newline at the end.
pub fn go_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing plain structs of strings and maps cannot fail.
    let s = serde_json::to_string(v).unwrap_or_default();
    // Outside strings, JSON has none of these characters, so replacing them
    // everywhere escapes exactly the ones inside strings.
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('\n');
    out.into_bytes()
}

/// `sha256=<hex>`: HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    format!("sha256={}", hex(ring::hmac::sign(&k, body).as_ref()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One `webhook_configs` entry.
pub struct WebhookIntegration {
    cfg: WebhookConfig,
    url: reqwest::Url,
    client: reqwest::Client,
}

impl WebhookIntegration {
    pub fn new(cfg: &WebhookConfig) -> Result<WebhookIntegration, String> {
        let url = check_url("url", &cfg.url)?;
        let timeout = if cfg.timeout_ms > 0 {
            Duration::from_millis(cfg.timeout_ms as u64)
        } else {
            Duration::from_secs(10)
        };
        if cfg.signature_secret.is_some() && cfg.signature_header.trim().is_empty() {
            return Err("signature_header is empty while signature_secret is set".into());
        }
        if cfg.signature_secret.is_some() {
            reqwest::header::HeaderName::try_from(cfg.signature_header.as_str()).map_err(|_| {
                format!(
                    "signature_header {:?} is not a valid header name",
                    cfg.signature_header
                )
            })?;
        }
        let client = http::client(&cfg.http_config, timeout)?;
        Ok(WebhookIntegration {
            cfg: cfg.clone(),
            url,
            client,
        })
    }

    async fn send(&self, m: &Message) -> Result<(), crate::notify::NotifyError> {
        let secret = self.cfg.signature_secret.as_ref().filter(|s| !s.is_empty());
        let now_ms = chrono::Utc::now().timestamp_millis();
        let (url, body) = match self.cfg.format {
            WebhookFormat::Alertmanager => {
                (self.url.clone(), alertmanager_body(m, self.cfg.max_alerts))
            }
            WebhookFormat::Slack => (self.url.clone(), robots::slack_default_body(m)),
            WebhookFormat::Wecom => (self.url.clone(), robots::wecom_body(m)),
            WebhookFormat::Dingtalk => {
                let mut url = self.url.clone();
                if let Some(s) = secret {
                    robots::dingtalk_sign_url(&mut url, s.expose(), now_ms);
                }
                (url, robots::dingtalk_body(m))
            }
            WebhookFormat::Feishu => (
                self.url.clone(),
                robots::feishu_body(m, secret.map(|s| (s.expose(), now_ms / 1000))),
            ),
        };
        let mut headers = Vec::new();
        if let Some(s) = secret
            && !matches!(
                self.cfg.format,
                WebhookFormat::Dingtalk | WebhookFormat::Feishu
            )
        {
            headers.push((
                self.cfg.signature_header.as_str(),
                signature(s.expose().as_bytes(), &body),
            ));
        }
        let answer = http::post(&self.client, &url, &self.cfg.http_config, &headers, body).await?;
        robots::check_answer(self.cfg.format, &http::redact(url.as_str()), &answer.body)
    }
}

impl Integration for WebhookIntegration {
    fn kind(&self) -> &'static str {
        match self.cfg.format {
            WebhookFormat::Alertmanager => "webhook",
            WebhookFormat::Slack => "slack",
            WebhookFormat::Wecom => "wecom",
            WebhookFormat::Dingtalk => "dingtalk",
            WebhookFormat::Feishu => "feishu",
        }
    }

    fn send_resolved(&self) -> bool {
        self.cfg.send_resolved
    }

    fn notify<'a>(&'a self, message: &'a Message) -> NotifyFuture<'a> {
        Box::pin(self.send(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_json_escapes_like_encoding_json() {
        let v = serde_json::json!({"a": "x<y>&z\u{2028}"});
        assert_eq!(
            String::from_utf8(go_json(&v)).unwrap(),
            "{\"a\":\"x\\u003cy\\u003e\\u0026z\\u2028\"}\n"
        );
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
