//! Ready-made bodies for chat webhooks, each as its vendor documents it:
//!
//! - Slack incoming webhook, one attachment with title, text and color, as
//!   Alertmanager's `slack_configs` sends:
//!   <https://api.slack.com/messaging/webhooks>,
//!   <https://api.slack.com/reference/messaging/attachments>.
//! - WeCom (企业微信) group robot, `msgtype: markdown`, content at most 4096 bytes:
//!   <https://developer.work.weixin.qq.com/document/path/91770>.
//! - DingTalk (钉钉) custom robot, `msgtype: markdown` with title and text; a signed
//!   robot takes `timestamp` (ms) and `sign` = base64(HMAC-SHA256(secret,
//!   "timestamp\nsecret")) as query parameters:
//!   <https://open.dingtalk.com/document/robots/custom-robot-access>,
//!   <https://open.dingtalk.com/document/robots/customize-robot-security-settings>.
//! - Feishu/Lark (飞书) custom bot, `msg_type: interactive` (a card with a colored
//!   header); a signed bot takes `timestamp` (s) and `sign` = base64(HMAC-SHA256 keyed
//!   with "timestamp\nsecret" over nothing) in the body:
//!   <https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot>.
//!
//! The robots answer HTTP 200 with an error code in the body (`errcode` for WeCom and
//! DingTalk, `code` or `StatusCode` for Feishu); a non-zero code is a failure,
//! retryable only for their rate limits and "system busy".

use std::time::Duration;

use serde_json::{Value, json};

use super::fail;
use super::http::{self, check_url};
use super::render::{Tmpl, markdown_alerts, subject};
use super::webhook::go_json;
use crate::notify::config::{Global, SlackConfig, WebhookFormat};
use crate::notify::{Integration, Message, NotifyError, NotifyFuture, Status};

/// WeCom's limit on a markdown message's content.
const WECOM_MAX_BYTES: usize = 4096;
/// DingTalk's and Feishu's messages are limited to 20 000 bytes; stay well below.
const ROBOT_MAX_BYTES: usize = 16_000;

/// `s` cut to at most `max` bytes on a character boundary, marked when cut.
fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    const MARK: &str = "\n...";
    let mut end = max.saturating_sub(MARK.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &s[..end])
}

fn status_color(m: &Message) -> &'static str {
    match m.status {
        Status::Firing => "danger",
        Status::Resolved => "good",
    }
}

/// The Slack body with Vigil's defaults (`format: slack` on a webhook).
pub fn slack_default_body(m: &Message) -> Vec<u8> {
    slack_body(
        "",
        "Vigil",
        &subject(m),
        &m.external_url,
        &markdown_alerts(m, true),
        status_color(m),
        &subject(m),
    )
}

fn slack_body(
    channel: &str,
    username: &str,
    title: &str,
    title_link: &str,
    text: &str,
    color: &str,
    fallback: &str,
) -> Vec<u8> {
    let mut attachment = serde_json::Map::new();
    for (k, v) in [
        ("title", title),
        ("title_link", title_link),
        ("text", text),
        ("fallback", fallback),
        ("color", color),
    ] {
        if !v.is_empty() {
            attachment.insert(k.into(), Value::String(v.into()));
        }
    }
    attachment.insert("mrkdwn_in".into(), json!(["fallback", "pretext", "text"]));
    let mut body = serde_json::Map::new();
    if !channel.is_empty() {
        body.insert("channel".into(), Value::String(channel.into()));
    }
    if !username.is_empty() {
        body.insert("username".into(), Value::String(username.into()));
    }
    body.insert("attachments".into(), json!([attachment]));
    go_json(&Value::Object(body))
}

/// The WeCom group robot's markdown body.
pub fn wecom_body(m: &Message) -> Vec<u8> {
    let color = match m.status {
        Status::Firing => "warning",
        Status::Resolved => "info",
    };
    let content = format!(
        "<font color=\"{color}\">**{}**</font>\n{}",
        subject(m),
        markdown_alerts(m, false)
    );
    go_json(&json!({
        "msgtype": "markdown",
        "markdown": {"content": cap(&content, WECOM_MAX_BYTES)},
    }))
}

/// The DingTalk robot's markdown body. DingTalk's Markdown needs blank lines between
/// lines to break them.
pub fn dingtalk_body(m: &Message) -> Vec<u8> {
    let title = subject(m);
    let text = format!(
        "#### {title}\n\n{}",
        markdown_alerts(m, false).replace('\n', "\n\n")
    );
    go_json(&json!({
        "msgtype": "markdown",
        "markdown": {"title": title, "text": cap(&text, ROBOT_MAX_BYTES)},
    }))
}

/// Adds DingTalk's `timestamp` and `sign` query parameters for a signed robot.
pub fn dingtalk_sign_url(url: &mut reqwest::Url, secret: &str, now_ms: i64) {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{now_ms}\n{secret}").as_bytes());
    url.query_pairs_mut()
        .append_pair("timestamp", &now_ms.to_string())
        .append_pair("sign", &base64(tag.as_ref()));
}

/// Feishu's `sign` for a signed bot at `now_s`.
pub fn feishu_sign(secret: &str, now_s: i64) -> String {
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        format!("{now_s}\n{secret}").as_bytes(),
    );
    base64(ring::hmac::sign(&key, b"").as_ref())
}

/// The Feishu bot's interactive card; `signed` is the secret and the time in seconds.
pub fn feishu_body(m: &Message, signed: Option<(&str, i64)>) -> Vec<u8> {
    let template = match m.status {
        Status::Firing => "red",
        Status::Resolved => "green",
    };
    let mut body = serde_json::Map::new();
    if let Some((secret, now_s)) = signed {
        body.insert("timestamp".into(), Value::String(now_s.to_string()));
        body.insert("sign".into(), Value::String(feishu_sign(secret, now_s)));
    }
    body.insert("msg_type".into(), json!("interactive"));
    body.insert(
        "card".into(),
        json!({
            "config": {"wide_screen_mode": true},
            "header": {
                "template": template,
                "title": {"tag": "plain_text", "content": subject(m)},
            },
            "elements": [
                {"tag": "markdown", "content": cap(&markdown_alerts(m, false), ROBOT_MAX_BYTES)},
            ],
        }),
    );
    go_json(&Value::Object(body))
}

/// Checks a robot's HTTP 200 answer for an error code in its body.
pub fn check_answer(
    format: WebhookFormat,
    shown_url: &str,
    body: &[u8],
) -> Result<(), NotifyError> {
    let (fields, rate_limited): (&[&str], &[i64]) = match format {
        WebhookFormat::Alertmanager | WebhookFormat::Slack => return Ok(()),
        // 45009: API frequency out of limit; -1: system busy.
        WebhookFormat::Wecom => (&["errcode"], &[45009, -1]),
        // 130101: sending too fast; -1: system busy.
        WebhookFormat::Dingtalk => (&["errcode"], &[130101, -1]),
        // 11232: frequency limited; 9499 is also answered to over-eager senders.
        WebhookFormat::Feishu => (&["code", "StatusCode"], &[11232, 9499]),
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        fail(
            false,
            format!(
                "POST {shown_url}: answer is not JSON: {}",
                http::snippet(body)
            ),
        )
    })?;
    let Some(code) = fields
        .iter()
        .find_map(|f| v.get(*f).and_then(Value::as_i64))
    else {
        return Err(fail(
            false,
            format!(
                "POST {shown_url}: answer has no error code: {}",
                http::snippet(body)
            ),
        ));
    };
    if code == 0 {
        return Ok(());
    }
    let msg = ["errmsg", "msg", "StatusMessage"]
        .iter()
        .find_map(|f| v.get(*f).and_then(Value::as_str))
        .unwrap_or("");
    Err(fail(
        rate_limited.contains(&code),
        format!("POST {shown_url}: robot answered error {code}: {msg}"),
    ))
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// One `slack_configs` entry: Alertmanager's Slack notifier, its strings templated.
pub struct SlackIntegration {
    send_resolved: bool,
    url: reqwest::Url,
    http: crate::notify::config::HttpConfig,
    client: reqwest::Client,
    channel: Tmpl,
    username: Tmpl,
    title: Tmpl,
    text: Tmpl,
    color: Tmpl,
}

impl SlackIntegration {
    pub fn new(cfg: &SlackConfig, global: &Global) -> Result<SlackIntegration, String> {
        let url = if cfg.api_url.is_empty() {
            match &global.slack_api_url {
                Some(u) if !u.is_empty() => check_url("global.slack_api_url", u)?,
                _ => return Err("api_url is not set here nor in global.slack_api_url".into()),
            }
        } else {
            check_url("api_url", &cfg.api_url)?
        };
        // An empty string is the default, as Alertmanager's defaults render.
        let or = |field: &str, text: &str, default: Tmpl| -> Result<Tmpl, String> {
            if text.is_empty() {
                Ok(default)
            } else {
                Tmpl::compile(field, text)
            }
        };
        use super::render::Builtin;
        Ok(SlackIntegration {
            send_resolved: cfg.send_resolved,
            url,
            http: cfg.http_config.clone(),
            client: http::client(&cfg.http_config, Duration::from_secs(10))?,
            channel: Tmpl::compile("channel", &cfg.channel)?,
            username: or("username", &cfg.username, Tmpl::Builtin(Builtin::Vigil))?,
            title: or("title", &cfg.title, Tmpl::Builtin(Builtin::Subject))?,
            text: or("text", &cfg.text, Tmpl::Builtin(Builtin::Text))?,
            color: or("color", &cfg.color, Tmpl::Builtin(Builtin::Color))?,
        })
    }

    async fn send(&self, m: &Message) -> Result<(), NotifyError> {
        let r = |t: &Tmpl, field: &str| {
            t.render(m)
                .map_err(|e| fail(false, format!("slack {field} template: {e}")))
        };
        let title = r(&self.title, "title")?;
        let body = slack_body(
            &r(&self.channel, "channel")?,
            &r(&self.username, "username")?,
            &title,
            &m.external_url,
            &r(&self.text, "text")?,
            &r(&self.color, "color")?,
            &title,
        );
        http::post(&self.client, &self.url, &self.http, &[], body).await?;
        Ok(())
    }
}

impl Integration for SlackIntegration {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn send_resolved(&self) -> bool {
        self.send_resolved
    }

    fn notify<'a>(&'a self, message: &'a Message) -> NotifyFuture<'a> {
        Box::pin(self.send(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn dingtalk_sign_matches_the_documented_scheme() {
        // base64(HMAC-SHA256(key="SECtest", "1700000000000\nSECtest")), computed with
        // Python's hmac as DingTalk's documentation does.
        let mut url =
            reqwest::Url::parse("https://oapi.dingtalk.com/robot/send?access_token=t").unwrap();
        dingtalk_sign_url(&mut url, "SECtest", 1_700_000_000_000);
        let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(q[0], ("access_token".into(), "t".into()));
        assert_eq!(q[1], ("timestamp".into(), "1700000000000".into()));
        assert_eq!(q[2].1, DINGTALK_SIGN);
    }

    #[test]
    fn feishu_sign_matches_the_documented_scheme() {
        // base64(HMAC-SHA256(key="1700000000\nSECtest", "")), computed with Python.
        assert_eq!(feishu_sign("SECtest", 1_700_000_000), FEISHU_SIGN);
    }

    const DINGTALK_SIGN: &str = "aZLLrriXgn05YbwaGR7knYsLeJADjr9NwLaNNKpxh4g=";
    const FEISHU_SIGN: &str = "G7XpBpG8NgG02fJOAhX6FRAObIljmFoxVReo8I62pEk=";

    #[test]
    fn robot_answers_are_checked() {
        let ok = check_answer(
            WebhookFormat::Wecom,
            "https://h",
            br#"{"errcode":0,"errmsg":"ok"}"#,
        );
        assert!(ok.is_ok());
        let e = check_answer(
            WebhookFormat::Wecom,
            "https://h",
            br#"{"errcode":45009,"errmsg":"api freq out of limit"}"#,
        )
        .unwrap_err();
        assert!(e.retryable && e.message.contains("45009"), "{e:?}");
        let e = check_answer(
            WebhookFormat::Dingtalk,
            "https://h",
            br#"{"errcode":310000,"errmsg":"sign not match"}"#,
        )
        .unwrap_err();
        assert!(
            !e.retryable && e.message.contains("sign not match"),
            "{e:?}"
        );
        assert!(check_answer(WebhookFormat::Feishu, "https://h", br#"{"StatusCode":0}"#).is_ok());
        let e = check_answer(WebhookFormat::Feishu, "https://h", br#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}"#)
            .unwrap_err();
        assert!(!e.retryable, "{e:?}");
        assert!(check_answer(WebhookFormat::Slack, "https://h", b"ok").is_ok());
    }

    #[test]
    fn cap_cuts_on_a_char_boundary() {
        let s = "告警".repeat(2000);
        let c = cap(&s, 4096);
        assert!(c.len() <= 4096 && c.ends_with("\n..."));
    }
}
