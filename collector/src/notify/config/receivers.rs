//! The `global` section and the receivers (`email_configs`, `webhook_configs`,
//! `slack_configs`, `http_config`, `tls_config`): decoding, defaults and what a
//! receiver inherits from `global`, as Alertmanager's `config.Load` does it.

use std::collections::HashMap;

use vigil_rules::yaml::Node;

use super::parse::P;
use super::*;

const UNSUPPORTED_GLOBAL: &[&str] = &[
    "pagerduty_url",
    "opsgenie_api_url",
    "opsgenie_api_key",
    "opsgenie_api_key_file",
    "wechat_api_url",
    "wechat_api_secret",
    "wechat_api_corp_id",
    "victorops_api_url",
    "victorops_api_key",
    "victorops_api_key_file",
    "telegram_api_url",
    "webex_api_url",
];
const UNSUPPORTED_RECEIVER: &[&str] = &[
    "pagerduty_configs",
    "opsgenie_configs",
    "wechat_configs",
    "pushover_configs",
    "victorops_configs",
    "sns_configs",
    "telegram_configs",
    "webex_configs",
    "discord_configs",
    "msteams_configs",
];
const UNSUPPORTED_SLACK: &[&str] = &[
    "title_link",
    "pretext",
    "fields",
    "short_fields",
    "footer",
    "fallback",
    "callback_id",
    "icon_emoji",
    "icon_url",
    "image_url",
    "thumb_url",
    "link_names",
    "mrkdwn_in",
    "actions",
];

impl P {
    pub(super) fn global(&mut self, n: &Node) -> Global {
        let ctx = "global";
        let f = self.fields(
            n,
            ctx,
            &[
                "resolve_timeout",
                "smtp_from",
                "smtp_smarthost",
                "smtp_hello",
                "smtp_auth_username",
                "smtp_auth_password",
                "smtp_auth_password_file",
                "smtp_auth_identity",
                "smtp_auth_secret",
                "smtp_require_tls",
                "smtp_tls_config",
                "slack_api_url",
                "slack_api_url_file",
                "http_config",
            ],
            UNSUPPORTED_GLOBAL,
        );
        let mut g = Global::default();
        if let Some(ms) = self.duration(ctx, &f, "resolve_timeout") {
            g.resolve_timeout_ms = ms;
        }
        g.smtp.from = self.string(ctx, &f, "smtp_from");
        g.smtp.smarthost = self.string(ctx, &f, "smtp_smarthost");
        if !g.smtp.smarthost.is_empty() {
            self.check_host_port(ctx, &f, "smtp_smarthost", &g.smtp.smarthost);
        }
        if let Some(h) = self.opt_string(ctx, &f, "smtp_hello") {
            g.smtp.hello = h;
        }
        g.smtp.auth_username = self.string(ctx, &f, "smtp_auth_username");
        g.smtp.auth_password = self
            .secret(ctx, &f, "smtp_auth_password", "smtp_auth_password_file")
            .unwrap_or_default();
        g.smtp.auth_identity = self.string(ctx, &f, "smtp_auth_identity");
        g.smtp.auth_secret = Secret(self.string(ctx, &f, "smtp_auth_secret"));
        if let Some(b) = self.bool(ctx, &f, "smtp_require_tls") {
            g.smtp.require_tls = b;
        }
        if let Some(t) = f.get("smtp_tls_config") {
            g.smtp.tls_config = self.tls(ctx, t);
        }
        g.slack_api_url = self.secret(ctx, &f, "slack_api_url", "slack_api_url_file");
        if let Some(h) = f.get("http_config") {
            g.http_config = self.http_config(ctx, h);
        }
        g
    }

    fn check_host_port(&mut self, ctx: &str, f: &HashMap<&str, &Node>, key: &str, v: &str) {
        let ok = v
            .rsplit_once(':')
            .is_some_and(|(h, p)| !p.is_empty() && p.parse::<u16>().is_ok() && !h.is_empty());
        if !ok {
            let line = f.get(key).map_or(0, |n| n.line);
            self.err(
                ctx,
                line,
                format!("{key}: address {v}: missing port in address"),
            );
        }
    }

    fn tls(&mut self, ctx: &str, n: &Node) -> TlsConfig {
        let f = self.fields(
            n,
            ctx,
            &[
                "ca_file",
                "cert_file",
                "key_file",
                "server_name",
                "insecure_skip_verify",
            ],
            &["ca", "cert", "key", "min_version", "max_version"],
        );
        TlsConfig {
            ca_file: self.opt_string(ctx, &f, "ca_file").map(|p| self.path(&p)),
            cert_file: self.opt_string(ctx, &f, "cert_file").map(|p| self.path(&p)),
            key_file: self.opt_string(ctx, &f, "key_file").map(|p| self.path(&p)),
            server_name: self.opt_string(ctx, &f, "server_name"),
            insecure_skip_verify: self.bool(ctx, &f, "insecure_skip_verify").unwrap_or(false),
        }
    }

    fn http_config(&mut self, ctx: &str, n: &Node) -> HttpConfig {
        let f = self.fields(
            n,
            ctx,
            &[
                "authorization",
                "basic_auth",
                "bearer_token",
                "bearer_token_file",
                "tls_config",
                "proxy_url",
                "follow_redirects",
            ],
            &[
                "oauth2",
                "enable_http2",
                "no_proxy",
                "proxy_from_environment",
                "proxy_connect_header",
            ],
        );
        let mut h = HttpConfig {
            follow_redirects: self.bool(ctx, &f, "follow_redirects").unwrap_or(true),
            proxy_url: self.opt_string(ctx, &f, "proxy_url"),
            ..HttpConfig::default()
        };
        if let Some(t) = f.get("tls_config") {
            h.tls_config = self.tls(ctx, t);
        }
        if let Some(b) = f.get("basic_auth") {
            let bf = self.fields(b, ctx, &["username", "password", "password_file"], &[]);
            let user = self.string(ctx, &bf, "username");
            let pass = self
                .secret(ctx, &bf, "password", "password_file")
                .unwrap_or_default();
            h.basic_auth = Some((user, pass));
        }
        let bearer = self.secret(ctx, &f, "bearer_token", "bearer_token_file");
        if let Some(a) = f.get("authorization") {
            let af = self.fields(a, ctx, &["type", "credentials", "credentials_file"], &[]);
            let kind = self
                .opt_string(ctx, &af, "type")
                .unwrap_or_else(|| "Bearer".into());
            let cred = self
                .secret(ctx, &af, "credentials", "credentials_file")
                .unwrap_or_default();
            h.authorization = Some((kind, cred));
        }
        if let Some(tok) = bearer {
            if h.authorization.is_some() {
                self.err(
                    ctx,
                    n.line,
                    "http_config: at most one of bearer_token & authorization must be configured",
                );
            }
            h.authorization = Some(("Bearer".into(), tok));
        }
        if h.basic_auth.is_some() && h.authorization.is_some() {
            self.err(
                ctx,
                n.line,
                "http_config: at most one of basic_auth & authorization must be configured",
            );
        }
        h
    }

    pub(super) fn receiver(&mut self, n: &Node, global: &Global) -> Receiver {
        let name_hint = n
            .fields_collect("", &["name"])
            .0
            .get("name")
            .and_then(|n| n.scalar())
            .unwrap_or("")
            .to_string();
        let ctx = format!("receiver {name_hint:?}");
        let f = self.fields(
            n,
            &ctx,
            &[
                "name",
                "email_configs",
                "webhook_configs",
                "slack_configs",
                "fallback_receiver",
            ],
            UNSUPPORTED_RECEIVER,
        );
        let name = self.string(&ctx, &f, "name");
        if name.is_empty() {
            self.err(&ctx, n.line, "name: missing name in receiver");
        }
        let email_configs = self
            .seq(&ctx, &f, "email_configs")
            .iter()
            .map(|c| self.email(&ctx, c, global))
            .collect();
        let webhook_configs = self
            .seq(&ctx, &f, "webhook_configs")
            .iter()
            .map(|c| self.webhook(&ctx, c, global))
            .collect();
        let slack_configs = self
            .seq(&ctx, &f, "slack_configs")
            .iter()
            .map(|c| self.slack(&ctx, c, global))
            .collect();
        Receiver {
            name,
            email_configs,
            webhook_configs,
            slack_configs,
            fallback_receiver: self.opt_string(&ctx, &f, "fallback_receiver"),
            line: n.line,
        }
    }

    fn email(&mut self, rctx: &str, n: &Node, g: &Global) -> EmailConfig {
        let ctx = format!("{rctx} email_configs");
        let ctx = ctx.as_str();
        let f = self.fields(
            n,
            ctx,
            &[
                "send_resolved",
                "to",
                "from",
                "hello",
                "smarthost",
                "auth_username",
                "auth_password",
                "auth_password_file",
                "auth_secret",
                "auth_identity",
                "require_tls",
                "tls_config",
                "html",
                "text",
                "headers",
            ],
            &[],
        );
        let to = self.string(ctx, &f, "to");
        if to.is_empty() {
            self.err(ctx, n.line, "to: missing to address in email config");
        }
        let mut smarthost = self.string(ctx, &f, "smarthost");
        if smarthost.is_empty() {
            smarthost = g.smtp.smarthost.clone();
            if smarthost.is_empty() {
                self.err(ctx, n.line, "smarthost: no global SMTP smarthost set");
            }
        } else {
            self.check_host_port(ctx, &f, "smarthost", &smarthost);
        }
        let mut from = self.string(ctx, &f, "from");
        if from.is_empty() {
            from = g.smtp.from.clone();
            if from.is_empty() {
                self.err(ctx, n.line, "from: no global SMTP from set");
            }
        }
        let auth_password = self
            .secret(ctx, &f, "auth_password", "auth_password_file")
            .unwrap_or_else(|| g.smtp.auth_password.clone());
        let auth_secret = self
            .opt_string(ctx, &f, "auth_secret")
            .map(Secret)
            .unwrap_or_else(|| g.smtp.auth_secret.clone());
        let mut headers: Vec<(String, String)> = Vec::new();
        if let Some(h) = f.get("headers") {
            match h.string_map("headers") {
                Ok(entries) => {
                    for (k, v) in entries {
                        let name = canonical_header(k.scalar().unwrap_or(""));
                        if headers.iter().any(|(h, _)| *h == name) {
                            self.err(
                                ctx,
                                k.line,
                                format!("headers: duplicate header {name:?} in email config"),
                            );
                        }
                        headers.push((name, v));
                    }
                }
                Err(e) => self.err(ctx, h.line, format!("headers: {}", e.msg)),
            }
        }
        EmailConfig {
            send_resolved: self.bool(ctx, &f, "send_resolved").unwrap_or(false),
            to,
            from,
            smarthost,
            hello: self
                .opt_string(ctx, &f, "hello")
                .unwrap_or_else(|| g.smtp.hello.clone()),
            auth_username: self
                .opt_string(ctx, &f, "auth_username")
                .unwrap_or_else(|| g.smtp.auth_username.clone()),
            auth_password,
            auth_identity: self
                .opt_string(ctx, &f, "auth_identity")
                .unwrap_or_else(|| g.smtp.auth_identity.clone()),
            auth_secret,
            require_tls: self
                .bool(ctx, &f, "require_tls")
                .unwrap_or(g.smtp.require_tls),
            tls_config: match f.get("tls_config") {
                Some(t) => self.tls(ctx, t),
                None => g.smtp.tls_config.clone(),
            },
            headers,
            html: self.opt_string(ctx, &f, "html"),
            text: self.opt_string(ctx, &f, "text"),
            line: n.line,
        }
    }

    fn webhook(&mut self, rctx: &str, n: &Node, g: &Global) -> WebhookConfig {
        let ctx = format!("{rctx} webhook_configs");
        let ctx = ctx.as_str();
        let f = self.fields(
            n,
            ctx,
            &[
                "send_resolved",
                "http_config",
                "url",
                "url_file",
                "max_alerts",
                "timeout",
                "format",
                "signature_secret",
                "signature_secret_file",
                "signature_header",
            ],
            &[],
        );
        let url = match self.secret(ctx, &f, "url", "url_file") {
            Some(u) => {
                let s = u.expose();
                if !(s.starts_with("http://") || s.starts_with("https://")) {
                    let line = f
                        .get("url")
                        .or(f.get("url_file"))
                        .map_or(n.line, |n| n.line);
                    self.err(
                        ctx,
                        line,
                        "url: unsupported scheme, expected http:// or https://",
                    );
                }
                u
            }
            None => {
                if !(f.contains_key("url") && f.contains_key("url_file")) {
                    self.err(
                        ctx,
                        n.line,
                        "url: one of url or url_file must be configured",
                    );
                }
                Secret::default()
            }
        };
        let format = match self.opt_string(ctx, &f, "format").as_deref() {
            None | Some("alertmanager") => WebhookFormat::Alertmanager,
            Some("slack") => WebhookFormat::Slack,
            Some("wecom") => WebhookFormat::Wecom,
            Some("dingtalk") => WebhookFormat::Dingtalk,
            Some("feishu") => WebhookFormat::Feishu,
            Some(other) => {
                let line = f.get("format").map_or(n.line, |n| n.line);
                self.err(
                    ctx,
                    line,
                    format!("format: unknown format {other:?} (alertmanager, slack, wecom, dingtalk or feishu)"),
                );
                WebhookFormat::Alertmanager
            }
        };
        let max_alerts = match f.get("max_alerts") {
            Some(m) => m.uint("max_alerts").unwrap_or_else(|_| {
                self.err(ctx, m.line, "max_alerts: expected a non-negative integer");
                0
            }),
            None => 0,
        };
        let timeout_ms = match self.duration(ctx, &f, "timeout") {
            Some(0) | None => DEFAULT_WEBHOOK_TIMEOUT_MS,
            Some(ms) => ms,
        };
        WebhookConfig {
            send_resolved: self.bool(ctx, &f, "send_resolved").unwrap_or(true),
            url,
            http_config: match f.get("http_config") {
                Some(h) => self.http_config(ctx, h),
                None => g.http_config.clone(),
            },
            max_alerts,
            timeout_ms,
            format,
            signature_secret: self.secret(ctx, &f, "signature_secret", "signature_secret_file"),
            signature_header: self
                .opt_string(ctx, &f, "signature_header")
                .unwrap_or_else(|| DEFAULT_SIGNATURE_HEADER.into()),
            line: n.line,
        }
    }

    fn slack(&mut self, rctx: &str, n: &Node, g: &Global) -> SlackConfig {
        let ctx = format!("{rctx} slack_configs");
        let ctx = ctx.as_str();
        let f = self.fields(
            n,
            ctx,
            &[
                "send_resolved",
                "http_config",
                "api_url",
                "api_url_file",
                "channel",
                "username",
                "title",
                "text",
                "color",
            ],
            UNSUPPORTED_SLACK,
        );
        let api_url = match self.secret(ctx, &f, "api_url", "api_url_file") {
            Some(u) => u,
            None => match &g.slack_api_url {
                Some(u) => u.clone(),
                None => {
                    self.err(
                        ctx,
                        n.line,
                        "api_url: no global Slack API URL set either inline or in a file",
                    );
                    Secret::default()
                }
            },
        };
        SlackConfig {
            send_resolved: self.bool(ctx, &f, "send_resolved").unwrap_or(false),
            api_url,
            http_config: match f.get("http_config") {
                Some(h) => self.http_config(ctx, h),
                None => g.http_config.clone(),
            },
            channel: self.string(ctx, &f, "channel"),
            // Empty means Alertmanager's default template for the field, which the
            // Slack integration renders itself.
            username: self.string(ctx, &f, "username"),
            title: self.string(ctx, &f, "title"),
            text: self.string(ctx, &f, "text"),
            color: self.string(ctx, &f, "color"),
            line: n.line,
        }
    }
}

/// `content-type` → `Content-Type`, as Go's `textproto.CanonicalMIMEHeaderKey`.
fn canonical_header(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}
