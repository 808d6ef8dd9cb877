//! The notifier's grouping, timers, muting, fallback and restart behaviour, with a
//! recording integration in place of the real email and webhook ones (which have
//! their own end-to-end tests). Timers are tens of milliseconds, so each test takes
//! well under a second.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigil_collector::notify::config::{self, AlertmanagerConfig, Global, Receiver};
use vigil_collector::notify::dispatch::{Notifier, NotifierOptions};
use vigil_collector::notify::integrations::RetryPolicy;
use vigil_collector::notify::silence::PostableSilence;
use vigil_collector::notify::{
    AlertSink, HistoryEvent, HistoryKind, HistorySink, Integration, LabelMap, Message, NotifyError,
    NotifyFuture, PostableAlert, Status,
};

/// One integration that records what it is sent.
struct Recorder {
    send_resolved: bool,
    sent: Mutex<Vec<Message>>,
    fail: AtomicBool,
    delay: Mutex<Duration>,
    inflight: AtomicUsize,
    max_inflight: AtomicUsize,
}

impl Recorder {
    fn sent(&self) -> Vec<Message> {
        self.sent.lock().unwrap().clone()
    }
}

struct Handle(Arc<Recorder>);

impl Integration for Handle {
    fn kind(&self) -> &'static str {
        "webhook"
    }
    fn send_resolved(&self) -> bool {
        self.0.send_resolved
    }
    fn notify<'a>(&'a self, message: &'a Message) -> NotifyFuture<'a> {
        Box::pin(async move {
            let r = &self.0;
            let now = r.inflight.fetch_add(1, Ordering::SeqCst) + 1;
            r.max_inflight.fetch_max(now, Ordering::SeqCst);
            let delay = *r.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            r.inflight.fetch_sub(1, Ordering::SeqCst);
            if r.fail.load(Ordering::SeqCst) {
                return Err(NotifyError {
                    retryable: false,
                    message: "refused".into(),
                });
            }
            r.sent.lock().unwrap().push(message.clone());
            Ok(())
        })
    }
}

/// The recorders of every receiver, by receiver name, in configuration order.
#[derive(Clone, Default)]
struct Registry(Arc<Mutex<HashMap<String, Vec<Arc<Recorder>>>>>);

impl Registry {
    fn get(&self, receiver: &str, i: usize) -> Arc<Recorder> {
        self.0.lock().unwrap()[receiver][i].clone()
    }
}

#[derive(Default)]
struct History(Mutex<Vec<HistoryEvent>>);

impl HistorySink for History {
    fn record(&self, event: HistoryEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl History {
    fn count(&self, kind: HistoryKind) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.kind == kind)
            .count()
    }
}

struct Setup {
    n: Arc<Notifier>,
    reg: Registry,
    history: Arc<History>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

fn options(dir: &Path, reg: &Registry, history: &Arc<History>) -> NotifierOptions {
    let reg = reg.clone();
    let mut o = NotifierOptions::new(dir);
    o.external_url = "http://vigil.test:9090".into();
    o.history = Some(history.clone());
    o.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(10),
        max_elapsed: Duration::from_millis(20),
    };
    o.persist_delay = Duration::from_millis(5);
    o.build_integrations = Arc::new(move |r: &Receiver, _g: &Global| {
        let recs: Vec<Arc<Recorder>> = r
            .webhook_configs
            .iter()
            .map(|w| {
                Arc::new(Recorder {
                    send_resolved: w.send_resolved,
                    sent: Mutex::new(Vec::new()),
                    fail: AtomicBool::new(false),
                    delay: Mutex::new(Duration::ZERO),
                    inflight: AtomicUsize::new(0),
                    max_inflight: AtomicUsize::new(0),
                })
            })
            .collect();
        reg.0.lock().unwrap().insert(r.name.clone(), recs.clone());
        Ok(recs
            .into_iter()
            .map(|x| Box::new(Handle(x)) as Box<dyn Integration>)
            .collect())
    });
    o
}

fn start(dir: &Path, yaml: &str) -> Setup {
    let cfg = config::parse(Path::new("am.yml"), yaml).unwrap();
    start_with(dir, cfg)
}

fn start_with(dir: &Path, cfg: AlertmanagerConfig) -> Setup {
    let reg = Registry::default();
    let history = Arc::new(History::default());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let n = Notifier::start(cfg, options(dir, &reg, &history), async move {
        let _ = rx.await;
    })
    .unwrap();
    Setup {
        n,
        reg,
        history,
        stop: Some(tx),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn alert(pairs: &[(&str, &str)], starts_at_ms: i64, ends_at_ms: i64) -> PostableAlert {
    PostableAlert {
        labels: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: [("summary".to_string(), "something broke".to_string())].into(),
        starts_at_ms,
        ends_at_ms,
        generator_url: "http://vigil.test/graph".into(),
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn settle(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

const BASIC: &str = r#"
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 300ms
  group_interval: 150ms
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:9/a
      - url: http://127.0.0.1:9/b
        send_resolved: false
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_wait_then_batch_then_resolve() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), BASIC);
    let now = now_ms();
    let far = now + 3_600_000;
    s.n.send(vec![
        alert(&[("alertname", "GpuHot"), ("node", "n1")], now, far),
        alert(&[("alertname", "GpuHot"), ("node", "n2")], now, far),
        alert(&[("alertname", "NodeDown"), ("node", "n3")], now, far),
    ]);
    let a = s.reg.get("hook", 0);
    let b = s.reg.get("hook", 1);
    // Nothing before group_wait.
    settle(20).await;
    assert!(a.sent().is_empty());
    wait_for("first flush", || a.sent().len() == 2).await;
    let mut sent = a.sent();
    sent.sort_by(|x, y| x.group_key.cmp(&y.group_key));
    let m = &sent[0];
    assert_eq!(m.group_key, r#"{}:{alertname="GpuHot"}"#);
    assert_eq!(m.receiver, "hook");
    assert_eq!(m.status, Status::Firing);
    assert_eq!(m.alerts.len(), 2);
    assert_eq!(
        m.common_labels.get("alertname").map(String::as_str),
        Some("GpuHot")
    );
    assert!(!m.common_labels.contains_key("node"));
    assert_eq!(m.group_labels.len(), 1);
    assert_eq!(m.external_url, "http://vigil.test:9090");
    assert_eq!(m.alerts[0].ends_at_ms, None);
    assert_eq!(m.alerts[0].fingerprint.len(), 16);
    wait_for("second integration", || b.sent().len() == 2).await;
    // Unchanged groups are not sent again before repeat_interval.
    settle(400).await;
    assert_eq!(a.sent().len(), 2);

    // A new alert joins at the next group_interval, not before group_wait again.
    s.n.send(vec![alert(
        &[("alertname", "GpuHot"), ("node", "n4")],
        now,
        far,
    )]);
    wait_for("update flush", || a.sent().len() == 3).await;
    assert_eq!(a.sent()[2].alerts.len(), 3);

    // Resolve: only the send_resolved integration hears of it; the group then goes.
    let t = now_ms();
    s.n.send(vec![alert(
        &[("alertname", "NodeDown"), ("node", "n3")],
        now,
        t,
    )]);
    wait_for("resolve", || a.sent().len() == 4).await;
    let r = &a.sent()[3];
    assert_eq!(r.status, Status::Resolved);
    assert_eq!(r.alerts[0].ends_at_ms, Some(t));
    wait_for("group removed", || s.n.groups().len() == 1).await;
    settle(300).await;
    assert_eq!(b.sent().len(), 3, "send_resolved: false gets no resolve");
    assert_eq!(a.sent().len(), 4);
    assert_eq!(
        s.history.count(HistoryKind::Notified),
        2 + 2 + 3 + 1 + 2 + 3
    );

    let fams = s.n.metric_families();
    let total = fams
        .iter()
        .find(|f| f.name == "vigil_notifications_total")
        .unwrap();
    assert_eq!(total.samples[0].value, 7.0);
    let received = fams
        .iter()
        .find(|f| f.name == "vigil_alerts_received_total")
        .unwrap();
    assert_eq!(received.samples[0].value, 5.0);
    drop(s.stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_interval_and_old_alerts_flush_at_once() {
    let d = tempfile::tempdir().unwrap();
    let s = start(
        d.path(),
        r#"
route:
  receiver: hook
  group_by: ['...']
  group_wait: 10s
  group_interval: 100ms
  repeat_interval: 300ms
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:9/
"#,
    );
    let now = now_ms();
    // Started a minute ago: older than group_wait, so the first flush is immediate.
    s.n.send(vec![alert(
        &[("alertname", "X"), ("node", "n1")],
        now - 60_000,
        now + 3_600_000,
    )]);
    let a = s.reg.get("hook", 0);
    wait_for("immediate flush", || a.sent().len() == 1).await;
    assert_eq!(a.sent()[0].group_key, r#"{}:{alertname="X", node="n1"}"#);
    // Unchanged and firing: sent again once repeat_interval has passed.
    wait_for("repeat", || a.sent().len() == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_and_inhibition_mute_and_are_recorded_once() {
    let d = tempfile::tempdir().unwrap();
    let s = start(
        d.path(),
        r#"
route:
  receiver: hook
  group_by: ['...']
  group_wait: 20ms
  group_interval: 60ms
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:9/
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [node]
"#,
    );
    let now = now_ms();
    let far = now + 3_600_000;
    let id =
        s.n.upsert_silence(PostableSilence {
            id: None,
            matchers: vigil_collector::notify::matchers::parse_matchers(r#"node="n9""#).unwrap(),
            starts_at_ms: now,
            ends_at_ms: far,
            created_by: "test".into(),
            comment: "maintenance".into(),
        })
        .unwrap();
    s.n.send(vec![
        alert(&[("alertname", "Down"), ("node", "n9")], now, far),
        alert(
            &[
                ("alertname", "Xid"),
                ("node", "n1"),
                ("severity", "critical"),
            ],
            now,
            far,
        ),
        alert(
            &[
                ("alertname", "Hot"),
                ("node", "n1"),
                ("severity", "warning"),
            ],
            now,
            far,
        ),
        alert(
            &[
                ("alertname", "Hot"),
                ("node", "n2"),
                ("severity", "warning"),
            ],
            now,
            far,
        ),
    ]);
    let a = s.reg.get("hook", 0);
    wait_for("unmuted alerts", || a.sent().len() == 2).await;
    settle(250).await;
    let names: Vec<String> = a
        .sent()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m.alerts[0].labels["alertname"], m.alerts[0].labels["node"]
            )
        })
        .collect();
    assert!(
        names.contains(&"Xid/n1".to_string()) && names.contains(&"Hot/n2".to_string()),
        "{names:?}"
    );
    assert_eq!(a.sent().len(), 2);
    // Several flushes, one record each.
    assert_eq!(s.history.count(HistoryKind::Silenced), 1);
    assert_eq!(s.history.count(HistoryKind::Inhibited), 1);
    let groups = s.n.groups();
    let muted: Vec<_> = groups
        .iter()
        .flat_map(|g| g.alerts.iter())
        .filter(|a| a.state == "suppressed")
        .collect();
    assert_eq!(muted.len(), 2);
    assert!(muted.iter().any(|a| a.silenced_by == vec![id.clone()]));

    // Expiring the silence lets its alert through at the next flush.
    s.n.expire_silence(&id).unwrap();
    wait_for("unsilenced", || a.sent().len() == 3).await;
    // The critical source resolving ends the inhibition.
    s.n.send(vec![alert(
        &[
            ("alertname", "Xid"),
            ("node", "n1"),
            ("severity", "critical"),
        ],
        now,
        now_ms(),
    )]);
    wait_for("uninhibited", || {
        a.sent()
            .iter()
            .any(|m| m.alerts[0].labels["alertname"] == "Hot" && m.alerts[0].labels["node"] == "n1")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_never_gets_concurrent_sends_of_a_group() {
    let d = tempfile::tempdir().unwrap();
    let s = start(
        d.path(),
        r#"
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 10ms
  group_interval: 20ms
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:9/
"#,
    );
    let a = s.reg.get("hook", 0);
    *a.delay.lock().unwrap() = Duration::from_millis(150);
    let now = now_ms();
    for i in 0..6 {
        let node = format!("n{i}");
        s.n.send(vec![alert(
            &[("alertname", "X"), ("node", &node)],
            now,
            now + 3_600_000,
        )]);
        settle(40).await;
    }
    wait_for("deliveries", || a.sent().len() >= 2).await;
    assert_eq!(a.max_inflight.load(Ordering::SeqCst), 1);
    // The last flush carries every alert.
    wait_for("all alerts", || {
        a.sent().last().is_some_and(|m| m.alerts.len() == 6)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_receiver_gets_what_the_primary_could_not_take() {
    let d = tempfile::tempdir().unwrap();
    let s = start(
        d.path(),
        r#"
route:
  receiver: primary
  group_wait: 10ms
  group_interval: 50ms
receivers:
  - name: primary
    fallback_receiver: backup
    webhook_configs:
      - url: http://127.0.0.1:9/
  - name: backup
    webhook_configs:
      - url: http://127.0.0.1:9/
"#,
    );
    let p = s.reg.get("primary", 0);
    let b = s.reg.get("backup", 0);
    p.fail.store(true, Ordering::SeqCst);
    let now = now_ms();
    s.n.send(vec![alert(&[("alertname", "X")], now, now + 3_600_000)]);
    wait_for("fallback delivery", || b.sent().len() == 1).await;
    assert_eq!(b.sent()[0].receiver, "backup");
    // The backup was told; it is not told again every group_interval.
    settle(250).await;
    assert_eq!(b.sent().len(), 1);
    // The primary comes back: it gets the notification once.
    p.fail.store(false, Ordering::SeqCst);
    wait_for("primary delivery", || p.sent().len() == 1).await;
    settle(200).await;
    assert_eq!(p.sent().len(), 1);
    let fams = s.n.metric_families();
    let failed = fams
        .iter()
        .find(|f| f.name == "vigil_notifications_failed_total")
        .unwrap();
    let primary_failed = failed
        .samples
        .iter()
        .find(|x| {
            x.labels
                .iter()
                .any(|(k, v)| k == "receiver" && v == "primary")
        })
        .unwrap();
    assert!(primary_failed.value >= 1.0);
}

const RESTART: &str = r#"
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 10ms
  group_interval: 100ms
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:9/
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_neither_resends_nor_loses_the_resolve() {
    let d = tempfile::tempdir().unwrap();
    let now = now_ms();
    let s = start(d.path(), RESTART);
    // Valid for 3 s (long enough that a loaded machine restarts before it ends): the
    // evaluator will not send it again after the restart.
    s.n.send(vec![alert(
        &[("alertname", "X"), ("node", "n1")],
        now,
        now + 3_000,
    )]);
    let a = s.reg.get("hook", 0);
    wait_for("first notification", || a.sent().len() == 1).await;
    s.n.shutdown().await;
    assert!(d.path().join("notify/nflog.json").exists());
    assert!(d.path().join("notify/alerts.json").exists());

    let s2 = start(d.path(), RESTART);
    let a2 = s2.reg.get("hook", 0);
    // The group comes back (its alert is older than group_wait, so it flushes at
    // once) but the log knows it was sent: no repeat.
    settle(200).await;
    assert!(
        a2.sent().is_empty(),
        "resent after restart: {:?}",
        a2.sent()
    );
    assert_eq!(s2.n.groups().len(), 1);
    // The alert's endsAt passes: the resolve goes out.
    wait_for("resolve after restart", || a2.sent().len() == 1).await;
    assert_eq!(a2.sent()[0].status, Status::Resolved);
    wait_for("group removed", || s2.n.groups().is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_survive_a_restart_and_reload_keeps_state() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), RESTART);
    let now = now_ms();
    let id =
        s.n.upsert_silence(PostableSilence {
            id: None,
            matchers: vigil_collector::notify::matchers::parse_matchers("node=n1").unwrap(),
            starts_at_ms: now,
            ends_at_ms: now + 3_600_000,
            created_by: "test".into(),
            comment: String::new(),
        })
        .unwrap();
    s.n.send(vec![alert(
        &[("alertname", "X"), ("node", "n2")],
        now,
        now + 3_600_000,
    )]);
    let a = s.reg.get("hook", 0);
    wait_for("sent", || a.sent().len() == 1).await;
    // A reload with another group_interval regroups without resending.
    let cfg = config::parse(Path::new("am.yml"), &RESTART.replace("100ms", "50ms")).unwrap();
    s.n.reload(cfg).unwrap();
    let a_new = s.reg.get("hook", 0);
    settle(200).await;
    assert!(a_new.sent().is_empty());
    s.n.shutdown().await;
    let s2 = start(d.path(), RESTART);
    let list = s2.n.silences();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].0.id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_config_shows_alerts_without_sending() {
    let d = tempfile::tempdir().unwrap();
    let s = start_with(d.path(), AlertmanagerConfig::default_config());
    let now = now_ms();
    s.n.send(vec![alert(&[("alertname", "X")], now, now + 60_000)]);
    let groups = s.n.groups();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].receiver, config::DEFAULT_RECEIVER_NAME);
    assert_eq!(groups[0].alerts[0].state, "active");
    let _ = LabelMap::new();
}
