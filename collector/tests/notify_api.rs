//! `/api/v1/silences` and `/api/v1/notifications` over real HTTP.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vigil_collector::notify::config;
use vigil_collector::notify::dispatch::{Notifier, NotifierOptions};
use vigil_collector::notify::{AlertSink, PostableAlert};

async fn request(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_round_trip_through_the_api() {
    let d = tempfile::tempdir().unwrap();
    let yaml = r#"
route:
  receiver: quiet
receivers:
  - name: quiet
silences:
  - matchers: ['node="n7"']
    starts_at: 2026-01-01T00:00:00Z
    ends_at: 2099-01-01T00:00:00Z
    comment: window
"#;
    let cfg = config::parse(Path::new("am.yml"), yaml).unwrap();
    let n: Arc<Notifier> =
        Notifier::start(cfg, NotifierOptions::new(d.path()), std::future::pending()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = vigil_collector::notify::api::routes(n.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let now = chrono::Utc::now().timestamp_millis();
    let body = json!({
        "matchers": [{"name": "alertname", "value": "Gpu.*", "isRegex": true, "isEqual": true}],
        "startsAt": rfc3339(now),
        "endsAt": rfc3339(now + 3_600_000),
        "createdBy": "alice",
        "comment": "swap GPU"
    });
    let (st, v) = request(addr, "POST", "/api/v1/silences", &body.to_string()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "success");
    let id = v["data"]["silenceID"].as_str().unwrap().to_string();

    let (st, v) = request(addr, "GET", "/api/v1/silences", "").await;
    assert_eq!(st, 200);
    let list = v["data"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let ours = list.iter().find(|s| s["id"] == id.as_str()).unwrap();
    assert_eq!(ours["status"]["state"], "active");
    assert_eq!(ours["createdBy"], "alice");
    assert_eq!(
        ours["matchers"][0],
        json!({"name": "alertname", "value": "Gpu.*", "isRegex": true, "isEqual": true})
    );
    assert!(ours["updatedAt"].as_str().unwrap().ends_with('Z'));
    let cfg_silence = list.iter().find(|s| s["id"] != id.as_str()).unwrap();
    assert_eq!(cfg_silence["createdBy"], "config");

    // Update in place: same matchers, later end. The start is the stored one, as
    // amtool sends it: the collector moved a start in the past up to its own "now",
    // which may be in the next second from the one this test sent.
    let mut upd = body.clone();
    upd["id"] = json!(id);
    upd["startsAt"] = ours["startsAt"].clone();
    upd["endsAt"] = json!(rfc3339(now + 7_200_000));
    let (st, v) = request(addr, "POST", "/api/v1/silences", &upd.to_string()).await;
    assert_eq!(
        (st, v["data"]["silenceID"].as_str()),
        (200, Some(id.as_str()))
    );

    // Validation errors are 400 and name the field.
    let mut bad = body.clone();
    bad["endsAt"] = json!(rfc3339(now - 1_000));
    bad["startsAt"] = json!(rfc3339(now - 2_000));
    let (st, v) = request(addr, "POST", "/api/v1/silences", &bad.to_string()).await;
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().starts_with("endsAt:"), "{v}");
    let mut bad = body.clone();
    bad["matchers"] = json!([{"name": "a", "value": "(", "isRegex": true}]);
    let (st, v) = request(addr, "POST", "/api/v1/silences", &bad.to_string()).await;
    assert_eq!(st, 400);
    assert!(
        v["error"].as_str().unwrap().starts_with("matchers[0]:"),
        "{v}"
    );
    let (st, v) = request(addr, "POST", "/api/v1/silences", "{\"matchers\": []}").await;
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().starts_with("endsAt:"), "{v}");

    // Expire; a second expiry and unknown ids are errors; config silences are read-only.
    let (st, _) = request(addr, "DELETE", &format!("/api/v1/silences/{id}"), "").await;
    assert_eq!(st, 200);
    let (st, v) = request(addr, "GET", &format!("/api/v1/silences/{id}"), "").await;
    assert_eq!(
        (st, v["data"]["status"]["state"].as_str()),
        (200, Some("expired"))
    );
    let (st, _) = request(addr, "DELETE", &format!("/api/v1/silences/{id}"), "").await;
    assert_eq!(st, 400);
    let (st, _) = request(addr, "DELETE", "/api/v1/silences/nope", "").await;
    assert_eq!(st, 404);
    let cid = cfg_silence["id"].as_str().unwrap();
    let (st, _) = request(addr, "DELETE", &format!("/api/v1/silences/{cid}"), "").await;
    assert_eq!(st, 403);

    // Status: the group with its muted alert.
    n.send(vec![PostableAlert {
        labels: [("alertname", "Down"), ("node", "n7")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: Default::default(),
        starts_at_ms: now,
        ends_at_ms: now + 60_000,
        generator_url: String::new(),
    }]);
    let (st, v) = request(addr, "GET", "/api/v1/notifications", "").await;
    assert_eq!(st, 200);
    let g = &v["data"]["groups"][0];
    assert_eq!(g["receiver"], "quiet");
    assert_eq!(g["groupKey"], "{}:{}");
    assert_eq!(g["alerts"][0]["status"]["state"], "suppressed");
    assert_eq!(g["alerts"][0]["status"]["silencedBy"][0], cid);
    assert_eq!(v["data"]["receivers"][0]["name"], "quiet");
}
