//! Delivery: one [`Integration`] per configured `email_configs`, `webhook_configs` or
//! `slack_configs` entry, made by [`build`], and [`deliver`], which retries one
//! integration's attempts with exponential backoff and jitter within a bounded total.
//!
//! # Layout
//! - `render`: the message's text for people: Alertmanager's default subject, Vigil's
//!   text, HTML and Markdown bodies, RFC 3339 times, and configured Go templates
//!   (through `vigil_rules::template`).
//! - `email`: SMTP through lettre (STARTTLS, implicit TLS, plain; PLAIN/LOGIN auth).
//! - `http`: the reqwest client with an explicit rustls (ring) configuration, one POST
//!   with its error classified, and URLs reduced to scheme and host for messages.
//! - `webhook`: Alertmanager's v4 body, the optional HMAC signature, and the
//!   integration that posts any [`WebhookFormat`](super::config::WebhookFormat).
//! - `robots`: the Slack, WeCom, DingTalk and Feishu bodies, their signing schemes and
//!   their answers (an error code inside an HTTP 200).
//!
//! Secrets (passwords, URLs with tokens, signing keys) never reach a log line or an
//! error message: URLs are printed as scheme and host only.

mod email;
mod http;
mod render;
mod robots;
mod webhook;

use std::time::{Duration, Instant};

use super::config::{Global, Receiver};
use super::{Integration, Message, NotifyError};

pub use render::{format_time, subject};
pub use webhook::{alertmanager_body, signature};

/// Makes the integrations of one receiver, in configuration order: its email entries,
/// then its webhooks, then its Slack entries. Everything that can be checked before
/// sending is checked here (addresses, templates, CA files, URLs), so a bad entry is
/// refused when the configuration loads, naming the receiver, the entry and its line.
pub fn build(receiver: &Receiver, global: &Global) -> Result<Vec<Box<dyn Integration>>, String> {
    let mut out: Vec<Box<dyn Integration>> = Vec::new();
    let at = |kind: &str, i: usize, line: usize| {
        format!("receiver {:?} {kind}[{i}] (line {line})", receiver.name)
    };
    for (i, c) in receiver.email_configs.iter().enumerate() {
        let e = email::EmailIntegration::new(c, global)
            .map_err(|e| format!("{}: {e}", at("email_configs", i, c.line)))?;
        out.push(Box::new(e));
    }
    for (i, c) in receiver.webhook_configs.iter().enumerate() {
        let w = webhook::WebhookIntegration::new(c)
            .map_err(|e| format!("{}: {e}", at("webhook_configs", i, c.line)))?;
        out.push(Box::new(w));
    }
    for (i, c) in receiver.slack_configs.iter().enumerate() {
        let s = robots::SlackIntegration::new(c, global)
            .map_err(|e| format!("{}: {e}", at("slack_configs", i, c.line)))?;
        out.push(Box::new(s));
    }
    Ok(out)
}

/// How [`deliver`] retries: the first wait is `initial_backoff`, each next one twice
/// the last up to `max_backoff`, each drawn at random between half and all of it (so
/// many groups failing together do not retry in step), and no attempt starts after
/// `max_elapsed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// 1 s, 30 s, 5 min: a receiver down for a minute still gets the notification
    /// within about 30 s of coming back, and one that stays down costs at most a dozen
    /// attempts per notification.
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
        }
    }
}

/// Sends `message` through `integration`, retrying what may succeed later (timeouts,
/// refused connections, 5xx, 429, SMTP 4xx, a robot's rate limit) until it succeeds or
/// `policy.max_elapsed` has passed; an error that will not go away (a 4xx, a rejected
/// recipient, a bad template) ends it at once. Every failed attempt is logged with
/// the integration, receiver and attempt number; the error text never holds secrets.
pub async fn deliver(
    integration: &dyn Integration,
    message: &Message,
    policy: &RetryPolicy,
) -> Result<(), NotifyError> {
    let start = Instant::now();
    let mut backoff = policy.initial_backoff;
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let err = match integration.notify(message).await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(
                        integration = integration.kind(),
                        receiver = %message.receiver,
                        attempt,
                        "notification delivered after retries"
                    );
                }
                return Ok(());
            }
            Err(e) => e,
        };
        let elapsed = start.elapsed();
        let will_retry = err.retryable && elapsed < policy.max_elapsed;
        tracing::warn!(
            integration = integration.kind(),
            receiver = %message.receiver,
            group_key = %message.group_key,
            attempt,
            retryable = err.retryable,
            will_retry,
            error = %err.message,
            "notification attempt failed"
        );
        if !err.retryable {
            return Err(err);
        }
        if !will_retry {
            return Err(NotifyError {
                retryable: true,
                message: format!(
                    "{} (gave up after {attempt} attempts in {:.1}s)",
                    err.message,
                    elapsed.as_secs_f64()
                ),
            });
        }
        let wait = jittered(backoff).min(policy.max_elapsed - elapsed);
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(policy.max_backoff.max(policy.initial_backoff));
    }
}

/// A duration drawn uniformly between half of `d` and `d`.
fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 4];
    // The system RNG failing leaves the fixed midpoint, which is still a valid wait.
    let r = match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    };
    d.mul_f64(0.5 + 0.5 * r)
}

/// A [`NotifyError`].
fn fail(retryable: bool, message: impl Into<String>) -> NotifyError {
    NotifyError {
        retryable,
        message: message.into(),
    }
}

/// Whether a TLS handshake failed (an untrusted certificate, a protocol mismatch):
/// lettre and reqwest report it as a connection error, but it will not pass by itself.
pub(crate) fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // io::Error's source() skips the error it wraps (often another io::Error).
        cur = match c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_whole() {
        for _ in 0..100 {
            let j = jittered(Duration::from_millis(1000));
            assert!(j >= Duration::from_millis(500) && j <= Duration::from_millis(1000));
        }
    }
}
