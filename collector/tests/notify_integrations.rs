//! Delivery against real peers: an HTTP receiver (axum on 127.0.0.1:0) for webhooks
//! and the robot formats, and a real SMTP server (python3-aiosmtpd, run from
//! tests/python/smtp_sink.py) for email, plain, STARTTLS with a private CA, and AUTH.
//!
//! The SMTP tests are skipped, saying so, only when python3-aiosmtpd is missing and
//! VIGIL_E2E_REQUIRE_PEERS is unset; with it set they fail instead.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use vigil_collector::notify::config::{
    EmailConfig, Global, HttpConfig, Receiver, Secret, SlackConfig, SmtpDefaults, TlsConfig,
    WebhookConfig, WebhookFormat,
};
use vigil_collector::notify::integrations::{self, RetryPolicy, alertmanager_body, deliver};
use vigil_collector::notify::{Integration, LabelMap, Message, MessageAlert, Status, fingerprint};

// ---------------------------------------------------------------- messages

fn lm(v: &Value) -> LabelMap {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn parse_ms(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The Message that carries a sample body's data (times at our millisecond precision).
fn message_from_sample(s: &Value) -> Message {
    let status = |v: &Value| match v.as_str() {
        Some("firing") => Status::Firing,
        _ => Status::Resolved,
    };
    Message {
        receiver: s["receiver"].as_str().unwrap().into(),
        status: status(&s["status"]),
        alerts: s["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let ends = a["endsAt"].as_str().unwrap();
                MessageAlert {
                    status: status(&a["status"]),
                    labels: lm(&a["labels"]),
                    annotations: lm(&a["annotations"]),
                    starts_at_ms: parse_ms(a["startsAt"].as_str().unwrap()),
                    ends_at_ms: (!ends.starts_with("0001-")).then(|| parse_ms(ends)),
                    generator_url: a["generatorURL"].as_str().unwrap().into(),
                    fingerprint: format!("{:016x}", fingerprint(&lm(&a["labels"]))),
                }
            })
            .collect(),
        group_labels: lm(&s["groupLabels"]),
        common_labels: lm(&s["commonLabels"]),
        common_annotations: lm(&s["commonAnnotations"]),
        external_url: s["externalURL"].as_str().unwrap().into(),
        group_key: s["groupKey"].as_str().unwrap().into(),
        truncated_alerts: s["truncatedAlerts"].as_u64().unwrap(),
    }
}

fn sample() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/notify/alertmanager-webhook-v4-sample.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn gpu_message(firing: usize, resolved: usize) -> Message {
    let mut alerts = Vec::new();
    for i in 0..firing + resolved {
        let st = if i < firing {
            Status::Firing
        } else {
            Status::Resolved
        };
        let labels: LabelMap = [
            ("alertname", "GpuFellOffBus"),
            ("instance", "gpu-node-17"),
            ("gpu", &i.to_string()),
            ("severity", "critical"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        alerts.push(MessageAlert {
            status: st,
            fingerprint: format!("{:016x}", fingerprint(&labels)),
            labels,
            annotations: [
                ("summary", format!("GPU {i} fell off the bus")),
                ("description", "Xid 79 on gpu-node-17 <PCIe>".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            starts_at_ms: 1_795_000_000_000,
            ends_at_ms: (st == Status::Resolved).then_some(1_795_000_090_000),
            generator_url: "http://vigil:9436/graph?g0.expr=gpu_xid&g0.tab=1".into(),
        });
    }
    let group: LabelMap = [("alertname", "GpuFellOffBus"), ("instance", "gpu-node-17")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut common = group.clone();
    common.insert("severity".into(), "critical".into());
    Message {
        receiver: "team-gpu".into(),
        status: if firing > 0 {
            Status::Firing
        } else {
            Status::Resolved
        },
        alerts,
        group_labels: group,
        common_labels: common,
        common_annotations: LabelMap::new(),
        external_url: "http://vigil:9436".into(),
        group_key: "{}:{alertname=\"GpuFellOffBus\", instance=\"gpu-node-17\"}".into(),
        truncated_alerts: 0,
    }
}

// ---------------------------------------------------------------- configs

fn global() -> Global {
    Global {
        resolve_timeout_ms: 300_000,
        smtp: SmtpDefaults::default(),
        slack_api_url: None,
        http_config: HttpConfig::default(),
    }
}

fn receiver() -> Receiver {
    Receiver {
        name: "team-gpu".into(),
        email_configs: vec![],
        webhook_configs: vec![],
        slack_configs: vec![],
        fallback_receiver: None,
        line: 1,
    }
}

fn webhook(url: String, format: WebhookFormat) -> WebhookConfig {
    WebhookConfig {
        send_resolved: true,
        url: Secret(url),
        http_config: HttpConfig {
            follow_redirects: true,
            ..HttpConfig::default()
        },
        max_alerts: 0,
        timeout_ms: 5_000,
        format,
        signature_secret: None,
        signature_header: "X-Vigil-Signature".into(),
        line: 7,
    }
}

fn one(r: Receiver) -> Box<dyn Integration> {
    let mut v = integrations::build(&r, &global()).unwrap();
    assert_eq!(v.len(), 1);
    v.remove(0)
}

fn webhook_integration(c: WebhookConfig) -> Box<dyn Integration> {
    let mut r = receiver();
    r.webhook_configs.push(c);
    one(r)
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(80),
        max_elapsed: Duration::from_secs(5),
    }
}

// ---------------------------------------------------------------- HTTP receiver

#[derive(Clone, Debug)]
struct Seen {
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

/// What the receiver answers to its n-th request (0-based).
type Behaviour = Arc<dyn Fn(usize) -> (StatusCode, String, Duration) + Send + Sync>;

#[derive(Clone)]
struct Rx {
    seen: Arc<Mutex<Vec<Seen>>>,
    behaviour: Behaviour,
}

async fn handle(State(rx): State<Rx>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let n = {
        let mut seen = rx.seen.lock().unwrap();
        seen.push(Seen {
            uri: uri.to_string(),
            headers,
            body,
        });
        seen.len() - 1
    };
    let (status, answer, delay) = (rx.behaviour)(n);
    tokio::time::sleep(delay).await;
    (status, answer).into_response()
}

async fn receiver_http(
    behaviour: impl Fn(usize) -> (StatusCode, String, Duration) + Send + Sync + 'static,
) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let rx = Rx {
        seen: Arc::default(),
        behaviour: Arc::new(behaviour),
    };
    let seen = rx.seen.clone();
    let app = Router::new().fallback(handle).with_state(rx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

fn ok(_: usize) -> (StatusCode, String, Duration) {
    (StatusCode::OK, "ok".into(), Duration::ZERO)
}

fn taken(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    seen.lock().unwrap().clone()
}

// ---------------------------------------------------------------- webhook body

/// Compact JSON of the sample file's text, keeping its key order, escaped as Go's
/// encoder does, with its newline: the bytes Alertmanager POSTed.
fn go_compact(v: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut esc = false;
    for c in v.chars() {
        if in_str {
            match c {
                '&' => out.push_str("\\u0026"),
                '<' => out.push_str("\\u003c"),
                '>' => out.push_str("\\u003e"),
                _ => out.push(c),
            }
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if !c.is_whitespace() {
            if c == '"' {
                in_str = true;
            }
            out.push(c);
        }
    }
    out.push('\n');
    out
}

/// The text of one top-level entry of the sample file, as written there.
fn sample_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/notify/alertmanager-webhook-v4-sample.json");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find(&format!("\"{name}\": {{")).unwrap() + name.len() + 4;
    let mut depth = 0;
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return text[start..start + i + 1].to_string();
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced sample {name}")
}

fn compare(path: &str, ours: &Value, theirs: &Value) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            let ka: Vec<&String> = a.keys().collect();
            let kb: Vec<&String> = b.keys().collect();
            assert_eq!(ka, kb, "{path}: field names differ");
            for k in kb {
                compare(&format!("{path}.{k}"), &a[k], &b[k]);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: lengths differ");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                compare(&format!("{path}[{i}]"), x, y);
            }
        }
        _ => assert_eq!(ours, theirs, "{path}"),
    }
}

#[test]
fn webhook_body_is_alertmanagers_v4_field_by_field_and_byte_for_byte() {
    let s = sample();
    for name in [
        "api_posted_firing",
        "api_posted_resolved",
        "prometheus_rule_firing",
    ] {
        let mut expected = s[name].clone();
        let mut text = sample_text(name);
        // Alertmanager keeps nanoseconds; our alerts carry milliseconds.
        for a in expected["alerts"].as_array_mut().unwrap() {
            let t = a["startsAt"].as_str().unwrap().to_string();
            let ms = integrations::format_time(parse_ms(&t));
            text = text.replace(&t, &ms);
            a["startsAt"] = Value::String(ms);
        }
        let body = alertmanager_body(&message_from_sample(&s[name]), 0);
        let ours: Value = serde_json::from_slice(&body).unwrap();
        compare(name, &ours, &expected);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            go_compact(&text),
            "{name}"
        );
    }
}

#[test]
fn max_alerts_truncates_and_counts() {
    let m = gpu_message(3, 2);
    let v: Value = serde_json::from_slice(&alertmanager_body(&m, 2)).unwrap();
    assert_eq!(v["alerts"].as_array().unwrap().len(), 2);
    assert_eq!(v["truncatedAlerts"], 3);
    assert_eq!(v["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    let v: Value = serde_json::from_slice(&alertmanager_body(&m, 0)).unwrap();
    assert_eq!(v["alerts"].as_array().unwrap().len(), 5);
    assert_eq!(v["alerts"][4]["endsAt"], "2026-11-18T11:08:10Z");
    assert_eq!(v["truncatedAlerts"], 0);
}

// ---------------------------------------------------------------- webhook delivery

#[tokio::test]
async fn webhook_posts_the_signed_v4_body() {
    let (addr, seen) = receiver_http(ok).await;
    let mut c = webhook(format!("http://{addr}/hook"), WebhookFormat::Alertmanager);
    c.signature_secret = Some(Secret("hmac-key".into()));
    c.http_config.authorization = Some(("Bearer".into(), Secret("tok3n".into())));
    let i = webhook_integration(c);
    assert_eq!(i.kind(), "webhook");
    assert!(i.send_resolved());
    let m = gpu_message(2, 1);
    deliver(i.as_ref(), &m, &fast()).await.unwrap();
    let got = taken(&seen);
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.uri, "/hook");
    assert_eq!(r.body.as_ref(), alertmanager_body(&m, 0).as_slice());
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(
        r.headers["user-agent"],
        format!("Vigil/{}", env!("CARGO_PKG_VERSION")).as_str()
    );
    assert_eq!(r.headers["authorization"], "Bearer tok3n");
    let sig = r.headers["x-vigil-signature"].to_str().unwrap();
    let hex = sig.strip_prefix("sha256=").expect("sha256= prefix");
    let tag: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"hmac-key");
    ring::hmac::verify(&key, &r.body, &tag).expect("signature verifies over the body");
    assert!(ring::hmac::verify(&key, b"tampered", &tag).is_err());
}

#[tokio::test]
async fn webhook_timeout_is_retryable_and_hides_the_url() {
    let (addr, seen) =
        receiver_http(|_| (StatusCode::OK, "late".into(), Duration::from_secs(3))).await;
    let mut c = webhook(
        format!("http://{addr}/hook/SECRETPATH?key=SECRETKEY"),
        WebhookFormat::Alertmanager,
    );
    c.timeout_ms = 200;
    let i = webhook_integration(c);
    let start = Instant::now();
    let e = i.notify(&gpu_message(1, 0)).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(e.retryable, "{e:?}");
    assert!(e.message.contains("timed out"), "{e:?}");
    assert!(e.message.contains(&format!("http://{addr}")), "{e:?}");
    assert!(!e.message.contains("SECRET"), "{e:?}");
    assert_eq!(taken(&seen).len(), 1);
}

#[tokio::test]
async fn webhook_retries_until_the_receiver_is_back() {
    let (addr, seen) = receiver_http(|n| {
        if n < 3 {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "down".into(),
                Duration::ZERO,
            )
        } else {
            ok(n)
        }
    })
    .await;
    let i = webhook_integration(webhook(
        format!("http://{addr}/"),
        WebhookFormat::Alertmanager,
    ));
    deliver(i.as_ref(), &gpu_message(1, 0), &fast())
        .await
        .unwrap();
    assert_eq!(taken(&seen).len(), 4);
}

#[tokio::test]
async fn webhook_429_is_retried_and_400_is_not() {
    let (addr, seen) = receiver_http(|n| {
        if n == 0 {
            (
                StatusCode::TOO_MANY_REQUESTS,
                "slow down".into(),
                Duration::ZERO,
            )
        } else {
            (StatusCode::BAD_REQUEST, "bad body".into(), Duration::ZERO)
        }
    })
    .await;
    let i = webhook_integration(webhook(
        format!("http://{addr}/"),
        WebhookFormat::Alertmanager,
    ));
    let e = deliver(i.as_ref(), &gpu_message(1, 0), &fast())
        .await
        .unwrap_err();
    assert!(!e.retryable, "{e:?}");
    assert!(
        e.message.contains("400") && e.message.contains("bad body"),
        "{e:?}"
    );
    assert_eq!(taken(&seen).len(), 2);
}

#[tokio::test]
async fn retries_stop_at_max_elapsed() {
    let (addr, seen) =
        receiver_http(|_| (StatusCode::BAD_GATEWAY, "no".into(), Duration::ZERO)).await;
    let i = webhook_integration(webhook(
        format!("http://{addr}/"),
        WebhookFormat::Alertmanager,
    ));
    let policy = RetryPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(40),
        max_elapsed: Duration::from_millis(300),
    };
    let start = Instant::now();
    let e = deliver(i.as_ref(), &gpu_message(1, 0), &policy)
        .await
        .unwrap_err();
    assert!(e.retryable && e.message.contains("gave up after"), "{e:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    let n = taken(&seen).len();
    // 20, 40, 40, ... ms apart within 300 ms: a handful, never a storm.
    assert!((3..=20).contains(&n), "{n} attempts");
}

#[tokio::test]
async fn refused_connection_is_retryable() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let i = webhook_integration(webhook(
        format!("http://{addr}/x?token=SECRET"),
        WebhookFormat::Alertmanager,
    ));
    let e = i.notify(&gpu_message(1, 0)).await.unwrap_err();
    assert!(e.retryable, "{e:?}");
    assert!(!e.message.contains("SECRET"), "{e:?}");
}

// ---------------------------------------------------------------- robots

async fn robot(
    format: WebhookFormat,
    answer: &'static str,
    secret: Option<&str>,
    m: &Message,
) -> (Result<(), vigil_collector::notify::NotifyError>, Seen) {
    let (addr, seen) =
        receiver_http(move |_| (StatusCode::OK, answer.to_string(), Duration::ZERO)).await;
    let mut c = webhook(format!("http://{addr}/robot/send?access_token=tok"), format);
    c.signature_secret = secret.map(|s| Secret(s.into()));
    let i = webhook_integration(c);
    let r = i.notify(m).await;
    let got = taken(&seen);
    assert_eq!(got.len(), 1);
    (r, got[0].clone())
}

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    // Standard base64, written out here to check the integration's own encoder.
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), msg);
    let a = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bits: String = tag.as_ref().iter().map(|b| format!("{b:08b}")).collect();
    let mut out: String = bits
        .as_bytes()
        .chunks(6)
        .map(|c| {
            let s = format!("{:0<6}", std::str::from_utf8(c).unwrap());
            a[usize::from_str_radix(&s, 2).unwrap()] as char
        })
        .collect();
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

#[tokio::test]
async fn wecom_body_and_errcode_in_200() {
    let m = gpu_message(2, 0);
    let (r, seen) = robot(
        WebhookFormat::Wecom,
        r#"{"errcode":0,"errmsg":"ok"}"#,
        None,
        &m,
    )
    .await;
    r.unwrap();
    let v: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(v["msgtype"], "markdown");
    let content = v["markdown"]["content"].as_str().unwrap();
    assert!(
        content.contains("[FIRING:2] GpuFellOffBus gpu-node-17 (critical)"),
        "{content}"
    );
    assert!(content.contains("GPU 1 fell off the bus"), "{content}");

    let (r, _) = robot(
        WebhookFormat::Wecom,
        r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#,
        None,
        &m,
    )
    .await;
    let e = r.unwrap_err();
    assert!(!e.retryable && e.message.contains("93000"), "{e:?}");
    assert!(!e.message.contains("tok"), "{e:?}");

    let (r, _) = robot(
        WebhookFormat::Wecom,
        r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#,
        None,
        &m,
    )
    .await;
    assert!(r.unwrap_err().retryable);
}

#[tokio::test]
async fn dingtalk_signed_robot() {
    let m = gpu_message(1, 1);
    let (r, seen) = robot(
        WebhookFormat::Dingtalk,
        r#"{"errcode":0,"errmsg":"ok"}"#,
        Some("SECdemo"),
        &m,
    )
    .await;
    r.unwrap();
    let v: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(v["msgtype"], "markdown");
    assert_eq!(
        v["markdown"]["title"],
        "[FIRING:1] GpuFellOffBus gpu-node-17 (critical)"
    );
    let text = v["markdown"]["text"].as_str().unwrap();
    assert!(
        text.find("[FIRING]").unwrap() < text.find("[RESOLVED]").unwrap(),
        "{text}"
    );
    let url = reqwest::Url::parse(&format!("http://h{}", seen.uri)).unwrap();
    let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["access_token"], "tok");
    let ts: i64 = q["timestamp"].parse().unwrap();
    assert!((chrono::Utc::now().timestamp_millis() - ts).abs() < 60_000);
    let expected = hmac_b64(b"SECdemo", format!("{ts}\nSECdemo").as_bytes());
    assert_eq!(q["sign"], expected);
    // No Vigil signature header: DingTalk's own scheme uses the key.
    assert!(seen.headers.get("x-vigil-signature").is_none());

    let (r, _) = robot(
        WebhookFormat::Dingtalk,
        r#"{"errcode":310000,"errmsg":"sign not match"}"#,
        Some("SECdemo"),
        &m,
    )
    .await;
    let e = r.unwrap_err();
    assert!(
        !e.retryable && e.message.contains("sign not match"),
        "{e:?}"
    );
    assert!(!e.message.contains("SECdemo"), "{e:?}");
}

#[tokio::test]
async fn feishu_signed_card() {
    let m = gpu_message(0, 2);
    let (r, seen) = robot(
        WebhookFormat::Feishu,
        r#"{"code":0,"msg":"success","data":{}}"#,
        Some("fs-secret"),
        &m,
    )
    .await;
    r.unwrap();
    let v: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(v["msg_type"], "interactive");
    assert_eq!(v["card"]["header"]["template"], "green");
    assert_eq!(
        v["card"]["header"]["title"]["content"],
        "[RESOLVED] GpuFellOffBus gpu-node-17 (critical)"
    );
    let ts: i64 = v["timestamp"].as_str().unwrap().parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
    assert_eq!(
        v["sign"].as_str().unwrap(),
        hmac_b64(format!("{ts}\nfs-secret").as_bytes(), b"")
    );

    let (r, _) = robot(
        WebhookFormat::Feishu,
        r#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}"#,
        Some("fs-secret"),
        &m,
    )
    .await;
    assert!(!r.unwrap_err().retryable);
    let (r, _) = robot(
        WebhookFormat::Feishu,
        r#"{"code":11232,"msg":"frequency limited"}"#,
        None,
        &m,
    )
    .await;
    assert!(r.unwrap_err().retryable);
}

#[tokio::test]
async fn slack_format_and_slack_configs() {
    let m = gpu_message(2, 0);
    let (r, seen) = robot(WebhookFormat::Slack, "ok", None, &m).await;
    r.unwrap();
    let v: Value = serde_json::from_slice(&seen.body).unwrap();
    let a = &v["attachments"][0];
    assert_eq!(a["color"], "danger");
    assert_eq!(
        a["title"],
        "[FIRING:2] GpuFellOffBus gpu-node-17 (critical)"
    );
    assert!(
        a["text"]
            .as_str()
            .unwrap()
            .contains("*[FIRING] GpuFellOffBus*")
    );

    let (addr, seen) = receiver_http(ok).await;
    let mut r = receiver();
    r.slack_configs.push(SlackConfig {
        send_resolved: true,
        api_url: Secret(String::new()),
        http_config: HttpConfig::default(),
        channel: "#gpu".into(),
        username: "{{ template \"slack.default.username\" . }}".into(),
        title:
            "{{ .Status | toUpper }}: {{ .CommonLabels.alertname }} on {{ .GroupLabels.instance }}"
                .into(),
        text: "{{ .CommonAnnotations.summary }}".into(),
        color: "{{ if eq .Status \"firing\" }}danger{{ else }}good{{ end }}".into(),
        line: 30,
    });
    let mut g = global();
    g.slack_api_url = Some(Secret(format!("http://{addr}/services/T0/B0/XYZ")));
    let i = integrations::build(&r, &g).unwrap().remove(0);
    assert_eq!(i.kind(), "slack");
    let mut resolved = gpu_message(0, 1);
    resolved
        .common_annotations
        .insert("summary".into(), "back".into());
    i.notify(&resolved).await.unwrap();
    let got = taken(&seen);
    let v: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(v["channel"], "#gpu");
    assert_eq!(v["username"], "Vigil");
    let a = &v["attachments"][0];
    assert_eq!(a["title"], "RESOLVED: GpuFellOffBus on gpu-node-17");
    assert_eq!(a["text"], "back");
    assert_eq!(a["color"], "good");
    assert_eq!(got[0].uri, "/services/T0/B0/XYZ");
}

#[test]
fn build_refuses_bad_entries_by_name() {
    let mut r = receiver();
    let mut c = webhook("not a url/SECRET".into(), WebhookFormat::Alertmanager);
    c.line = 12;
    r.webhook_configs.push(c);
    let e = integrations::build(&r, &global()).err().unwrap();
    assert!(
        e.contains("webhook_configs[0] (line 12)") && e.contains("url"),
        "{e}"
    );
    assert!(!e.contains("SECRET"), "{e}");

    let mut r = receiver();
    let mut c = webhook("https://h/x".into(), WebhookFormat::Alertmanager);
    c.http_config.tls_config.ca_file = Some("/nonexistent/ca.pem".into());
    r.webhook_configs.push(c);
    let e = integrations::build(&r, &global()).err().unwrap();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");

    let mut r = receiver();
    let mut c = email_config("127.0.0.1:25");
    c.html = Some("{{ range .Alerts }}{{ .Labels.alertname }}{{ end }}".into());
    r.email_configs.push(c);
    let e = integrations::build(&r, &global()).err().unwrap();
    assert!(
        e.contains("email_configs[0]") && e.contains("`.Alerts`"),
        "{e}"
    );

    let mut r = receiver();
    r.email_configs.push(email_config("no-port"));
    let e = integrations::build(&r, &global()).err().unwrap();
    assert!(e.contains("smarthost"), "{e}");

    let mut r = receiver();
    let mut c = email_config("127.0.0.1:25");
    c.to = "not an address".into();
    r.email_configs.push(c);
    let e = integrations::build(&r, &global()).err().unwrap();
    assert!(e.contains("to "), "{e}");
}

// ---------------------------------------------------------------- email

fn email_config(smarthost: &str) -> EmailConfig {
    EmailConfig {
        send_resolved: false,
        to: "oncall@gpu.test, lead@gpu.test".into(),
        from: "Vigil <vigil@collector.test>".into(),
        smarthost: smarthost.into(),
        hello: "collector.test".into(),
        auth_username: String::new(),
        auth_password: Secret::default(),
        auth_identity: String::new(),
        auth_secret: Secret::default(),
        require_tls: false,
        tls_config: TlsConfig::default(),
        headers: vec![],
        html: None,
        text: None,
        line: 20,
    }
}

fn tls_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/testdata/tls")
}

/// A python that can import `module`, or None after saying why the test is skipped
/// (a failure instead when VIGIL_E2E_REQUIRE_PEERS is set).
fn python_with(module: &str, package: &str) -> Option<&'static str> {
    for py in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(py)
            .args(["-c", &format!("import {module}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(py);
        }
    }
    if std::env::var_os("VIGIL_E2E_REQUIRE_PEERS").is_some() {
        panic!("{package} is missing and VIGIL_E2E_REQUIRE_PEERS is set");
    }
    eprintln!(
        "SKIPPED: {package} is missing (apt-get install -y {package}); \
         set VIGIL_E2E_REQUIRE_PEERS to make this a failure"
    );
    None
}

fn smtp_python() -> Option<&'static str> {
    python_with("aiosmtpd", "python3-aiosmtpd")
}

struct Sink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sink {
    fn start(py: &str, args: &[&str]) -> Sink {
        Sink::script(py, "smtp_sink.py", args)
    }

    /// Runs tests/python/`name` with `--dir` and `args`; it prints `PORT <n>` first.
    fn script(py: &str, name: &str, args: &[&str]) -> Sink {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/python")
            .join(name);
        let mut child = Command::new(py)
            .arg(script)
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{name} said {line:?}"));
        Sink { child, port, dir }
    }

    fn messages(&self) -> Vec<Value> {
        let mut v: Vec<(String, Value)> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (
                    name,
                    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, m)| m).collect()
    }
}

fn email_integration(c: EmailConfig) -> Box<dyn Integration> {
    let mut r = receiver();
    r.email_configs.push(c);
    one(r)
}

#[tokio::test]
async fn email_plain_smtp_subject_recipients_and_parts() {
    let Some(py) = smtp_python() else { return };
    let sink = Sink::start(py, &[]);
    let i = email_integration(email_config(&format!("127.0.0.1:{}", sink.port)));
    assert_eq!(i.kind(), "email");
    assert!(!i.send_resolved());
    let m = gpu_message(2, 1);
    deliver(i.as_ref(), &m, &fast()).await.unwrap();
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    let got = &msgs[0];
    assert_eq!(got["mail_from"], "vigil@collector.test");
    assert_eq!(
        got["rcpt_tos"],
        serde_json::json!(["oncall@gpu.test", "lead@gpu.test"])
    );
    assert_eq!(got["tls"], false);
    assert_eq!(got["helo"], "collector.test");
    let h = &got["headers"];
    assert_eq!(
        h["subject"],
        "[FIRING:2] GpuFellOffBus gpu-node-17 (critical)"
    );
    assert!(h["to"].as_str().unwrap().contains("oncall@gpu.test"));
    assert!(h["to"].as_str().unwrap().contains("lead@gpu.test"));
    assert!(h["from"].as_str().unwrap().contains("vigil@collector.test"));
    assert_eq!(got["content_type"], "multipart/alternative");
    let text = got["text"].as_str().unwrap();
    for i in 0..3 {
        assert!(
            text.contains(&format!("GPU {i} fell off the bus")),
            "{text}"
        );
    }
    assert!(
        text.find("[FIRING]").unwrap() < text.find("[RESOLVED]").unwrap(),
        "{text}"
    );
    assert!(text.contains("Xid 79 on gpu-node-17 <PCIe>"), "{text}");
    assert!(
        text.contains("http://vigil:9436/graph?g0.expr=gpu_xid&g0.tab=1"),
        "{text}"
    );
    let html = got["html"].as_str().unwrap();
    assert!(
        html.contains("Xid 79 on gpu-node-17 &lt;PCIe&gt;"),
        "{html}"
    );
    assert_eq!(html.matches("[FIRING]").count(), 2, "{html}");
    assert_eq!(html.matches("[RESOLVED]").count(), 1, "{html}");
}

#[tokio::test]
async fn email_starttls_with_private_ca_auth_and_templates() {
    let Some(py) = smtp_python() else { return };
    let tls = tls_dir();
    let cert = tls.join("collector.pem");
    let key = tls.join("collector.key");
    let sink = Sink::start(
        py,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--require-starttls",
            "--auth",
            "alerts:s3cret-pw",
        ],
    );
    let mut c = email_config(&format!("localhost:{}", sink.port));
    c.require_tls = true;
    c.tls_config.ca_file = Some(tls.join("ca.pem"));
    c.auth_username = "alerts".into();
    c.auth_password = Secret("s3cret-pw".into());
    c.headers = vec![
        (
            "Subject".into(),
            "{{ .Status | toUpper }} {{ .GroupLabels.alertname }} ({{ .Receiver }})".into(),
        ),
        ("X-Vigil-Cluster".into(), "east".into()),
    ];
    c.text = Some("Alert {{ .CommonLabels.alertname }} is {{ .Status }}.".into());
    let i = email_integration(c);
    i.notify(&gpu_message(1, 0)).await.unwrap();
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    let got = &msgs[0];
    assert_eq!(got["tls"], true);
    assert_eq!(got["login"], "alerts");
    assert_eq!(got["headers"]["subject"], "FIRING GpuFellOffBus (team-gpu)");
    assert_eq!(got["headers"]["x-vigil-cluster"], "east");
    assert_eq!(
        got["text"].as_str().unwrap().trim_end(),
        "Alert GpuFellOffBus is firing."
    );
    assert!(
        got["html"]
            .as_str()
            .unwrap()
            .contains("GPU 0 fell off the bus")
    );

    // A wrong password is a permanent 535: not retried, and the password is not shown.
    let mut c = email_config(&format!("localhost:{}", sink.port));
    c.require_tls = true;
    c.tls_config.ca_file = Some(tls.join("ca.pem"));
    c.auth_username = "alerts".into();
    c.auth_password = Secret("wrong-pw".into());
    let i = email_integration(c);
    let e = deliver(i.as_ref(), &gpu_message(1, 0), &fast())
        .await
        .unwrap_err();
    assert!(!e.retryable, "{e:?}");
    assert!(!e.message.contains("wrong-pw"), "{e:?}");

    // Without the private CA the server's certificate is not trusted: not retried.
    let mut c = email_config(&format!("localhost:{}", sink.port));
    c.require_tls = true;
    let i = email_integration(c);
    let e = i.notify(&gpu_message(1, 0)).await.unwrap_err();
    assert!(!e.retryable, "{e:?}");
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn email_rejections_transient_and_permanent() {
    let Some(py) = smtp_python() else { return };
    let sink = Sink::start(py, &["--tempfail", "2", "--reject-rcpt", "nobody@gpu.test"]);
    let i = email_integration(email_config(&format!("127.0.0.1:{}", sink.port)));
    // 451 twice, then accepted.
    deliver(i.as_ref(), &gpu_message(1, 0), &fast())
        .await
        .unwrap();
    assert_eq!(sink.messages().len(), 1);

    let mut c = email_config(&format!("127.0.0.1:{}", sink.port));
    c.to = "nobody@gpu.test".into();
    let i = email_integration(c);
    let e = deliver(i.as_ref(), &gpu_message(1, 0), &fast())
        .await
        .unwrap_err();
    assert!(!e.retryable && e.message.contains("550"), "{e:?}");
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn email_to_a_closed_port_is_retryable() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let i = email_integration(email_config(&format!("127.0.0.1:{port}")));
    let e = i.notify(&gpu_message(1, 0)).await.unwrap_err();
    assert!(e.retryable, "{e:?}");
}

#[tokio::test]
async fn webhook_over_https_with_a_private_ca() {
    let Some(py) = python_with("ssl", "python3") else {
        return;
    };
    let tls = tls_dir();
    let cert = tls.join("collector.pem");
    let key = tls.join("collector.key");
    let sink = Sink::script(
        py,
        "https_sink.py",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = format!("https://localhost:{}/hook?token=SECRET", sink.port);
    let m = gpu_message(1, 0);

    let mut c = webhook(url.clone(), WebhookFormat::Alertmanager);
    c.http_config.tls_config.ca_file = Some(tls.join("ca.pem"));
    webhook_integration(c).notify(&m).await.unwrap();
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["receiver"], "team-gpu");

    // The system's CAs alone do not know the test CA: a TLS failure, not retried.
    let e = webhook_integration(webhook(url.clone(), WebhookFormat::Alertmanager))
        .notify(&m)
        .await
        .unwrap_err();
    assert!(!e.retryable && e.message.contains("tls"), "{e:?}");
    assert!(!e.message.contains("SECRET"), "{e:?}");

    // The name checked is server_name's when set.
    let mut c = webhook(url.clone(), WebhookFormat::Alertmanager);
    c.http_config.tls_config.ca_file = Some(tls.join("ca.pem"));
    c.http_config.tls_config.server_name = Some("other.test".into());
    let e = webhook_integration(c).notify(&m).await.unwrap_err();
    assert!(!e.retryable, "{e:?}");

    let mut c = webhook(url, WebhookFormat::Alertmanager);
    c.http_config.tls_config.insecure_skip_verify = true;
    webhook_integration(c).notify(&m).await.unwrap();
    assert_eq!(sink.messages().len(), 2);
}
