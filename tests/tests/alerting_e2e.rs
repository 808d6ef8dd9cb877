//! Alerting end to end, with real processes only: two `vigil-agent --simulate-gpus 8`
//! nodes ship to the real collector, which evaluates the GPU rule pack
//! (`rules/packs/gpu.yml`, every group each second and every `for:` 2 s so the test
//! takes seconds, not minutes) and notifies through an Alertmanager configuration file:
//! email to two real SMTP servers (aiosmtpd: plain and STARTTLS with a private CA) and
//! webhooks to real HTTP listeners.
//!
//! One collector runs every scenario at once, each on GPUs of its own:
//! - `e2e-fault` GPU 0 at 95 °C and GPU 1 with Xid 79: email over both transports and
//!   a webhook whose body has Alertmanager 0.25's shape; cooling GPU 0 sends the
//!   resolve by both.
//! - `e2e-mute` GPU 0 at 95 °C under a silence made with `vigil silence add`: nothing
//!   is sent (the history says silenced) until `vigil silence expire` ends it.
//! - `e2e-mute` GPU 2 with Xid 79 and then 95 °C: the inhibit rule (GpuFellOffBus
//!   mutes warnings of the same node and GPU) holds the temperature alert back, while
//!   GPU 5's temperature alert, with no Xid, goes out.
//! - `e2e-mute` GPU 7 at 95 °C routes to a receiver that is down for 60 s; when it is
//!   back it gets the notification once.
//!
//! The 60 s outage sets the test's length (about 90 s).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;
use vigil_e2e::alerting::{
    FaultFile, Faults, SmtpSink, TestCertificate, WebhookListener, aiosmtpd_installed, bodies_with,
    check_webhook_shape, gpu_pack_with_timers, peers_present,
};
use vigil_e2e::collector::{
    Collector, ShippingAgent, TestDir, series_of, sum_of, url_encode, wait_for,
};

const FAULT_NODE: &str = "e2e-fault";
const MUTE_NODE: &str = "e2e-mute";
const HOT: &str = "GpuTemperatureNearSlowdown";
const OFF_BUS: &str = "GpuFellOffBus";
/// How long the outage receiver stays down after its alert fired.
const OUTAGE: Duration = Duration::from_secs(60);
/// The route's group_interval: a failed or changed group is flushed again this often.
const GROUP_INTERVAL: Duration = Duration::from_secs(2);
/// How long a notification may take: rule `for` 2 s, evaluation and agent every 1 s,
/// group_wait 1 s, with room for a loaded CI machine.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(45);

#[test]
fn gpu_faults_notify_by_email_and_webhook_with_silence_inhibition_and_outage() -> anyhow::Result<()>
{
    if !peers_present(&[("python3-aiosmtpd", aiosmtpd_installed())])? {
        return Ok(());
    }
    let dir = TestDir::new("alerting-e2e")?;
    let result = scenario(dir.path());
    dir.finish(result)
}

fn alertmanager_config(
    plain: &SmtpSink,
    tls: &SmtpSink,
    oncall: &WebhookListener,
    outage: &WebhookListener,
) -> String {
    let cert = TestCertificate::get();
    format!(
        r#"global:
  smtp_from: vigil@e2e.test
  smtp_smarthost: '{plain}'
  smtp_require_tls: false
route:
  receiver: oncall
  group_by: [alertname, node, gpu]
  group_wait: 1s
  group_interval: {group_interval}s
  repeat_interval: 1h
  routes:
    - receiver: outage
      matchers: ['node="{MUTE_NODE}"', 'gpu="7"']
receivers:
  - name: oncall
    email_configs:
      - to: oncall@e2e.test
        send_resolved: true
      - to: oncall-tls@e2e.test
        smarthost: '{tls}'
        require_tls: true
        tls_config:
          ca_file: '{ca}'
        send_resolved: true
    webhook_configs:
      - url: '{oncall_url}'
  - name: outage
    webhook_configs:
      - url: '{outage_url}'
inhibit_rules:
  - source_matchers: ['alertname="{OFF_BUS}"']
    target_matchers: ['severity="warning"']
    equal: [node, gpu]
"#,
        plain = plain.addr,
        tls = tls.addr,
        group_interval = GROUP_INTERVAL.as_secs(),
        ca = cert.ca.display(),
        oncall_url = oncall.url("/oncall"),
        outage_url = outage.url("/outage"),
    )
}

fn labels<'a>(alertname: &'a str, node: &'a str, gpu: &'a str) -> [(&'a str, &'a str); 3] {
    [("alertname", alertname), ("node", node), ("gpu", gpu)]
}

/// Waits for a body carrying the alert with `labels` in `status`; returns that body.
fn wait_body(
    hook: &WebhookListener,
    labels: &[(&str, &str)],
    status: &str,
) -> anyhow::Result<Value> {
    hook.wait_for(
        NOTIFY_TIMEOUT,
        &format!("a webhook with {status} {labels:?}"),
        |received| Ok(bodies_with(received, labels, status).into_iter().next()),
    )
}

/// Waits for an email in `sink` whose subject starts with `subject` and names `node`.
fn wait_mail(sink: &mut SmtpSink, subject: &str, node: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + NOTIFY_TIMEOUT;
    loop {
        let found = sink.messages()?.into_iter().find(|m| {
            let s = m["headers"]["subject"].as_str().unwrap_or_default();
            s.starts_with(subject) && s.contains(node)
        });
        if let Some(m) = found {
            return Ok(m);
        }
        if Instant::now() > deadline {
            let subjects: Vec<String> = sink
                .messages()?
                .iter()
                .map(|m| m["headers"]["subject"].to_string())
                .collect();
            bail!(
                "no email {subject:?} for {node} in {} after {NOTIFY_TIMEOUT:?}; got {subjects:?}",
                sink.dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The history events of `alertname` on `node` and `gpu` of one `kind`.
fn history(
    collector: &Collector,
    alertname: &str,
    node: &str,
    gpu: &str,
    kind: &str,
) -> anyhow::Result<Vec<Value>> {
    let data = collector.api(&format!(
        "/api/v1/alerts/history?alertname={}&node={}&kind={kind}",
        url_encode(alertname),
        url_encode(node)
    ))?;
    Ok(data["events"]
        .as_array()
        .context("no events in the history")?
        .iter()
        .filter(|e| e["labels"]["gpu"] == gpu)
        .cloned()
        .collect())
}

fn check_mail(mail: &Value, tls: bool, alertname: &str, node: &str) -> anyhow::Result<()> {
    ensure!(mail["tls"] == tls, "tls {} in {mail}", mail["tls"]);
    let text = mail["text"].as_str().unwrap_or_default();
    let html = mail["html"].as_str().unwrap_or_default();
    for part in [text, html] {
        ensure!(
            part.contains(alertname) && part.contains(node),
            "a body part does not name {alertname} and {node}: {part:.400}"
        );
    }
    Ok(())
}

fn scenario(dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let oncall = WebhookListener::start()?;
    let mut outage = WebhookListener::start()?;
    outage.down();
    let cert = TestCertificate::get();
    let (cert_path, key_path) = (
        cert.cert.display().to_string(),
        cert.key.display().to_string(),
    );
    let mut plain = SmtpSink::start(dir, "smtp-plain", &[])?;
    let mut tls = SmtpSink::start(
        dir,
        "smtp-starttls",
        &[
            "--tls-cert",
            &cert_path,
            "--tls-key",
            &key_path,
            "--require-starttls",
        ],
    )?;

    let rules = dir.join("gpu.yml");
    std::fs::write(&rules, gpu_pack_with_timers("1s", "2s")?)?;
    let am = dir.join("alertmanager.yml");
    std::fs::write(&am, alertmanager_config(&plain, &tls, &oncall, &outage))?;
    let (rules_arg, am_arg) = (rules.display().to_string(), am.display().to_string());
    let collector = Collector::start(
        dir,
        None,
        &["--rules", &rules_arg, "--alertmanager-config", &am_arg],
    )?;

    let fault_file = FaultFile::new(dir.join("faults-fault.toml"));
    let mute_file = FaultFile::new(dir.join("faults-mute.toml"));
    fault_file.write(&Faults::default())?;
    mute_file.write(&Faults::default())?;
    let fault_path = fault_file.path.display().to_string();
    let mute_path = mute_file.path.display().to_string();
    let _fault_agent = ShippingAgent::start(
        dir,
        FAULT_NODE,
        &collector,
        &["--simulate-faults", &fault_path],
    )?;
    let _mute_agent = ShippingAgent::start(
        dir,
        MUTE_NODE,
        &collector,
        &["--simulate-faults", &mute_path],
    )?;
    wait_for(Duration::from_secs(60), "16 GPUs in the collector", || {
        let n = series_of(&collector.query("DCGM_FI_DEV_GPU_TEMP", None)?)?.len();
        Ok((n >= 16).then_some(()))
    })?;

    // The fault node's faults, the inhibiting Xid and the outage receiver's alert.
    let mut fault_faults = Faults::default().temperature(0, 95).xid(1, 79);
    fault_file.write(&fault_faults)?;
    let mut mute_faults = Faults::default().xid(2, 79).temperature(7, 95);
    mute_file.write(&mute_faults)?;

    // The outage receiver's alert: the 60 s count from when it fires.
    let outage_fired = wait_for(NOTIFY_TIMEOUT, "the outage GPU's alert firing", || {
        let data = collector.api("/api/v1/alerts")?;
        let firing = data["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| {
                a["state"] == "firing"
                    && a["labels"]["alertname"] == HOT
                    && a["labels"]["node"] == MUTE_NODE
                    && a["labels"]["gpu"] == "7"
            })
        });
        Ok(firing.then(Instant::now))
    })?;

    // 1. Email over both transports and a webhook in Alertmanager's shape.
    let hot = labels(HOT, FAULT_NODE, "0");
    let body = wait_body(&oncall, &hot, "firing")?;
    check_webhook_shape(&body, "api_posted_firing")?;
    ensure!(
        body["receiver"] == "oncall",
        "receiver {}",
        body["receiver"]
    );
    ensure!(
        body["groupLabels"]
            == serde_json::json!({"alertname": HOT, "node": FAULT_NODE, "gpu": "0"}),
        "groupLabels {}",
        body["groupLabels"]
    );
    let alert = &body["alerts"][0];
    ensure!(
        alert["labels"]["severity"] == "warning"
            && alert["annotations"]["summary"]
                .as_str()
                .is_some_and(|s| s.contains("95")),
        "{alert}"
    );
    let bus = labels(OFF_BUS, FAULT_NODE, "1");
    let bus_body = wait_body(&oncall, &bus, "firing")?;
    check_webhook_shape(&bus_body, "api_posted_firing")?;
    ensure!(
        bus_body["commonLabels"]["severity"] == "critical",
        "{bus_body}"
    );
    for (sink, over_tls) in [(&mut plain, false), (&mut tls, true)] {
        let mail = wait_mail(sink, &format!("[FIRING:1] {HOT}"), FAULT_NODE)?;
        check_mail(&mail, over_tls, HOT, FAULT_NODE)?;
        let mail = wait_mail(sink, &format!("[FIRING:1] {OFF_BUS}"), FAULT_NODE)?;
        check_mail(&mail, over_tls, OFF_BUS, FAULT_NODE)?;
    }

    // 2. Inhibition: GPU 2's Xid is out; now GPU 2 (inhibited) and GPU 5 (not) run hot.
    wait_body(&oncall, &labels(OFF_BUS, MUTE_NODE, "2"), "firing")?;
    mute_faults = mute_faults.temperature(2, 95).temperature(5, 95);
    mute_file.write(&mute_faults)?;
    wait_body(&oncall, &labels(HOT, MUTE_NODE, "5"), "firing")?;
    wait_for(NOTIFY_TIMEOUT, "an inhibited event for GPU 2", || {
        Ok((!history(&collector, HOT, MUTE_NODE, "2", "inhibited")?.is_empty()).then_some(()))
    })?;

    // 3. A silence made as an operator would, then GPU 0 runs hot under it while GPU 1
    // (not silenced) reports Xid 79.
    let silence_id = collector
        .vigil(&[
            "silence",
            "add",
            &format!("alertname={HOT}"),
            &format!("node=~\"{MUTE_NODE}\""),
            "gpu=0",
            "--duration",
            "10m",
            "--comment",
            "e2e: GPU 0 under maintenance",
            "--author",
            "e2e",
        ])?
        .trim()
        .to_owned();
    ensure!(!silence_id.is_empty(), "vigil silence add printed no id");
    let listed: Value = serde_json::from_str(&collector.vigil(&["silence", "list", "--json"])?)?;
    let silence = listed
        .as_array()
        .and_then(|l| l.iter().find(|s| s["id"] == silence_id.as_str()))
        .with_context(|| format!("silence {silence_id} not in `vigil silence list`: {listed}"))?;
    ensure!(
        silence["status"]["state"] == "active" && silence["createdBy"] == "e2e",
        "{silence}"
    );
    let table = collector.vigil(&["silence", "list"])?;
    ensure!(
        table.contains(&silence_id) && table.contains("alertname=\"GpuTemperatureNearSlowdown\""),
        "{table}"
    );

    mute_faults = mute_faults.temperature(0, 95).xid(1, 79);
    mute_file.write(&mute_faults)?;
    wait_body(&oncall, &labels(OFF_BUS, MUTE_NODE, "1"), "firing")?;
    let silenced = wait_for(NOTIFY_TIMEOUT, "a silenced event for GPU 0", || {
        let events = history(&collector, HOT, MUTE_NODE, "0", "silenced")?;
        Ok((!events.is_empty()).then_some(events))
    })?;
    ensure!(
        silenced.iter().any(|e| e["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&silence_id))),
        "the silenced events do not name silence {silence_id}: {silenced:?}"
    );
    // Two more group intervals: had the silence or the inhibition leaked, it shows now.
    std::thread::sleep(GROUP_INTERVAL * 2);
    let received = oncall.received();
    for gpu in ["0", "2"] {
        let leaked = bodies_with(&received, &labels(HOT, MUTE_NODE, gpu), "firing");
        ensure!(
            leaked.is_empty(),
            "GPU {gpu} of {MUTE_NODE} was notified although muted: {leaked:?}"
        );
    }
    let expired = collector.vigil(&["silence", "expire", &silence_id])?;
    ensure!(expired.contains(&silence_id), "{expired}");
    wait_body(&oncall, &labels(HOT, MUTE_NODE, "0"), "firing")?;
    let listed: Value =
        serde_json::from_str(&collector.vigil(&["silence", "list", "--expired", "--json"])?)?;
    ensure!(
        listed.as_array().is_some_and(|l| l
            .iter()
            .any(|s| s["id"] == silence_id.as_str() && s["status"]["state"] == "expired")),
        "silence {silence_id} not expired: {listed}"
    );

    // 4. Cooling GPU 0 of the fault node sends the resolve by webhook and email.
    fault_faults.gpus.clear();
    fault_file.write(&fault_faults)?;
    let resolved = wait_body(&oncall, &hot, "resolved")?;
    check_webhook_shape(&resolved, "api_posted_resolved")?;
    ensure!(resolved["status"] == "resolved", "{resolved}");
    for (sink, over_tls) in [(&mut plain, false), (&mut tls, true)] {
        let mail = wait_mail(sink, &format!("[RESOLVED] {HOT}"), FAULT_NODE)?;
        check_mail(&mail, over_tls, HOT, FAULT_NODE)?;
    }

    // The CLI's view of the same.
    let table = collector.vigil(&["alerts"])?;
    ensure!(
        table.lines().any(|l| l.starts_with("firing")
            && l.contains(OFF_BUS)
            && l.contains(FAULT_NODE)
            && l.contains("critical")),
        "`vigil alerts` lacks the firing {OFF_BUS} of {FAULT_NODE}:\n{table}"
    );
    let json: Value = serde_json::from_str(&collector.vigil(&["alerts", "--json"])?)?;
    ensure!(
        json.as_array()
            .is_some_and(|a| a.iter().any(|a| a["labels"]["alertname"] == OFF_BUS)),
        "{json}"
    );
    let events: Value = serde_json::from_str(&collector.vigil(&[
        "alerts",
        "history",
        "--since",
        "10m",
        "--alertname",
        HOT,
        "--node",
        FAULT_NODE,
        "--json",
    ])?)?;
    let kinds: Vec<&str> = events
        .as_array()
        .context("history --json is not a list")?
        .iter()
        .filter(|e| e["labels"]["gpu"] == "0")
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for kind in ["firing", "resolved", "notified"] {
        ensure!(kinds.contains(&kind), "no {kind} in the history: {kinds:?}");
    }
    let table = collector.vigil(&[
        "alerts",
        "history",
        "--alertname",
        HOT,
        "--node",
        FAULT_NODE,
    ])?;
    ensure!(
        table.contains("resolved") && table.contains(FAULT_NODE),
        "{table}"
    );

    // 5. The receiver that was down gets the notification once it is back, once.
    let outage_labels = labels(HOT, MUTE_NODE, "7");
    let back_at = outage_fired + OUTAGE;
    std::thread::sleep(back_at.saturating_duration_since(Instant::now()));
    let metrics = collector.self_metrics()?;
    let attempts = sum_of(
        &metrics,
        "vigil_notifications_total",
        &[("receiver", "outage")],
    );
    outage.up()?;
    wait_body(&outage, &outage_labels, "firing")?;
    // Any duplicate would come with the next flushes or a retry still in flight.
    std::thread::sleep(GROUP_INTERVAL * 3 + Duration::from_secs(2));
    let got = bodies_with(&outage.received(), &outage_labels, "firing");
    ensure!(
        got.len() == 1,
        "the receiver that was down got {} notifications of the alert, not 1 \
         (attempts counted while it was down: {attempts:?}): {got:?}",
        got.len()
    );
    check_webhook_shape(&got[0], "api_posted_firing")?;
    println!("alerting e2e took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
