//! The Alertmanager configuration file (`--alertmanager-config`): its model here, its
//! parser in [`parse`], so an operator's existing `alertmanager.yml` works unchanged.
//!
//! Durations are milliseconds, parsed with Prometheus's notation (`30s`, `5m`, `4h`,
//! `1d`). Defaults are Alertmanager 0.25's and are filled in by the parser, including
//! what a receiver inherits from `global` (SMTP settings, the Slack URL, HTTP settings).
//! Secrets (`*_password`, `*_secret`, URLs that embed tokens) come from the file or from
//! a `*_file` key and are never logged: their `Debug` is redacted.
//!
//! Vigil's additions, all optional, are marked below; a file that uses none of them is
//! also a valid Alertmanager file.

use std::fmt;
use std::path::PathBuf;

use super::matchers::Matcher;

/// A secret: printed as `<secret>`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<secret>")
        }
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerConfig {
    /// The file it was read from (for messages); empty for the built-in default.
    pub path: PathBuf,
    pub global: Global,
    pub route: Route,
    pub receivers: Vec<Receiver>,
    pub inhibit_rules: Vec<InhibitRule>,
    /// Maintenance windows (Vigil): silences declared in the file, active between
    /// their start and end. They appear in `/api/v1/silences` with `createdBy:
    /// "config"` and cannot be expired through the API.
    pub silences: Vec<ConfigSilence>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    /// How long an alert without `endsAt` stays firing (`resolve_timeout`, 5m).
    pub resolve_timeout_ms: i64,
    pub smtp: SmtpDefaults,
    pub slack_api_url: Option<Secret>,
    pub http_config: HttpConfig,
}

/// `global.smtp_*`: what every `email_configs` entry inherits.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SmtpDefaults {
    pub from: String,
    /// `host:port`.
    pub smarthost: String,
    /// EHLO name (`smtp_hello`, default `localhost`).
    pub hello: String,
    pub auth_username: String,
    pub auth_password: Secret,
    pub auth_identity: String,
    pub auth_secret: Secret,
    /// STARTTLS is required (default true). Port 465 means implicit TLS instead.
    pub require_tls: bool,
    pub tls_config: TlsConfig,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsConfig {
    /// PEM file of the CA(s) that sign the server's certificate, beside the system's.
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Name checked against the certificate (default: the host connected to).
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
}

/// `http_config` of the webhook-like integrations (a subset of Prometheus's
/// `HTTPClientConfig`; other keys are refused by name).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpConfig {
    /// `authorization: {type, credentials|credentials_file}` or `bearer_token[_file]`.
    pub authorization: Option<(String, Secret)>,
    pub basic_auth: Option<(String, Secret)>,
    pub tls_config: TlsConfig,
    pub proxy_url: Option<String>,
    pub follow_redirects: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Inherited from the parent when absent (the root must name one).
    pub receiver: String,
    /// Inherited from the parent when absent (the parser resolves it).
    pub group_by: GroupBy,
    pub matchers: Vec<Matcher>,
    pub continue_matching: bool,
    pub group_wait_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
    pub routes: Vec<Route>,
    /// Line in the file, for messages.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// `group_by: ['...']`: every label; each alert is its own group.
    All,
    Labels(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Receiver {
    pub name: String,
    pub email_configs: Vec<EmailConfig>,
    pub webhook_configs: Vec<WebhookConfig>,
    pub slack_configs: Vec<SlackConfig>,
    /// Vigil: the receiver that gets the notification when every integration of this
    /// one failed after its retries.
    pub fallback_receiver: Option<String>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmailConfig {
    /// Default false, as Alertmanager's.
    pub send_resolved: bool,
    /// Comma-separated addresses.
    pub to: String,
    pub from: String,
    pub smarthost: String,
    pub hello: String,
    pub auth_username: String,
    pub auth_password: Secret,
    pub auth_identity: String,
    pub auth_secret: Secret,
    pub require_tls: bool,
    pub tls_config: TlsConfig,
    /// Extra headers; `Subject`, `To` and `From` override the defaults. Values are Go
    /// templates over the message's data (the default subject is Alertmanager's
    /// `[FIRING:2] GpuFellOffBus gpu-node-17`).
    pub headers: Vec<(String, String)>,
    /// Custom bodies (Go templates); `None` uses Vigil's text and HTML bodies.
    pub html: Option<String>,
    pub text: Option<String>,
    pub line: usize,
}

/// The body a webhook sends (Vigil: `format:`; Alertmanager's v4 body by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    Alertmanager,
    Slack,
    Wecom,
    Dingtalk,
    Feishu,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Default true, as Alertmanager's.
    pub send_resolved: bool,
    /// `url` or the contents of `url_file`.
    pub url: Secret,
    pub http_config: HttpConfig,
    /// Most alerts in one body; 0 is all (`max_alerts`).
    pub max_alerts: u64,
    /// One attempt's timeout (`timeout`; Alertmanager's 0 means none, ours 10 s).
    pub timeout_ms: i64,
    /// Vigil: the body's shape.
    pub format: WebhookFormat,
    /// Vigil: HMAC-SHA256 of the body with this key, hex, in `signature_header`
    /// (`X-Vigil-Signature: sha256=<hex>`). DingTalk's and Feishu's own signed-robot
    /// schemes use the same key when the format is theirs.
    pub signature_secret: Option<Secret>,
    pub signature_header: String,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SlackConfig {
    /// Default false, as Alertmanager's.
    pub send_resolved: bool,
    pub api_url: Secret,
    pub http_config: HttpConfig,
    pub channel: String,
    pub username: String,
    /// Go templates; empty is Alertmanager's Slack default for the field.
    pub title: String,
    pub text: String,
    pub color: String,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InhibitRule {
    /// `source_matchers`, or the deprecated `source_match`/`source_match_re`.
    pub source_matchers: Vec<Matcher>,
    pub target_matchers: Vec<Matcher>,
    /// Labels whose values must be equal on source and target.
    pub equal: Vec<String>,
    pub line: usize,
}

/// A silence declared in the configuration file (Vigil).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigSilence {
    pub matchers: Vec<Matcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub created_by: String,
    pub comment: String,
    pub line: usize,
}

mod parse;
mod receivers;

pub use parse::{ConfigError, load, parse};

/// Alertmanager 0.25's route timers.
pub const DEFAULT_GROUP_WAIT_MS: i64 = 30_000;
pub const DEFAULT_GROUP_INTERVAL_MS: i64 = 5 * 60_000;
pub const DEFAULT_REPEAT_INTERVAL_MS: i64 = 4 * 3_600_000;
pub const DEFAULT_RESOLVE_TIMEOUT_MS: i64 = 5 * 60_000;
/// Ours: Alertmanager's 0 (no timeout) lets one hung receiver hold a group forever.
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: i64 = 10_000;
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Vigil-Signature";
/// The receiver of [`AlertmanagerConfig::default_config`].
pub const DEFAULT_RECEIVER_NAME: &str = "vigil-default-no-integrations";

impl Default for Global {
    fn default() -> Self {
        Global {
            resolve_timeout_ms: DEFAULT_RESOLVE_TIMEOUT_MS,
            smtp: SmtpDefaults {
                hello: "localhost".into(),
                require_tls: true,
                ..SmtpDefaults::default()
            },
            slack_api_url: None,
            http_config: HttpConfig {
                follow_redirects: true,
                ..HttpConfig::default()
            },
        }
    }
}

impl AlertmanagerConfig {
    /// What the collector runs without `--alertmanager-config`: every alert goes to
    /// one receiver without integrations, so alerts are grouped, muted and recorded in
    /// the history and visible through the API, but nothing is sent anywhere.
    pub fn default_config() -> AlertmanagerConfig {
        AlertmanagerConfig {
            path: PathBuf::new(),
            global: Global::default(),
            route: Route {
                receiver: DEFAULT_RECEIVER_NAME.into(),
                group_by: GroupBy::Labels(vec!["alertname".into()]),
                matchers: Vec::new(),
                continue_matching: false,
                group_wait_ms: DEFAULT_GROUP_WAIT_MS,
                group_interval_ms: DEFAULT_GROUP_INTERVAL_MS,
                repeat_interval_ms: DEFAULT_REPEAT_INTERVAL_MS,
                routes: Vec::new(),
                line: 0,
            },
            receivers: vec![Receiver {
                name: DEFAULT_RECEIVER_NAME.into(),
                email_configs: Vec::new(),
                webhook_configs: Vec::new(),
                slack_configs: Vec::new(),
                fallback_receiver: None,
                line: 0,
            }],
            inhibit_rules: Vec::new(),
            silences: Vec::new(),
        }
    }

    pub fn receiver(&self, name: &str) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.name == name)
    }
}
