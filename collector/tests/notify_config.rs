//! The Alertmanager configuration parser against real-world files in
//! testdata/alertmanager/, and, where `amtool` (Debian's prometheus-alertmanager) is
//! installed, against Alertmanager's own verdict on each file.

use std::path::{Path, PathBuf};

use vigil_collector::notify::config::{self, GroupBy, WebhookFormat};

fn dir(sub: &str) -> Vec<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/alertmanager")
        .join(sub);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no files in {}", d.display());
    files
}

fn amtool_accepts(path: &Path) -> Option<bool> {
    let out = std::process::Command::new("amtool")
        .arg("check-config")
        .arg(path)
        .output()
        .ok()?;
    Some(out.status.success())
}

#[test]
fn good_files_load() {
    for f in dir("good") {
        if let Err(errs) = config::load(&f) {
            panic!("{}: {errs:#?}", f.display());
        }
    }
}

#[test]
fn bad_files_are_refused_with_file_and_line() {
    for f in dir("bad") {
        let errs = config::load(&f).expect_err(&f.display().to_string());
        for e in &errs {
            let text = e.to_string();
            assert!(text.starts_with(&f.display().to_string()), "{text}");
            assert!(e.line > 0, "{text}");
        }
    }
}

#[test]
fn unsupported_features_are_refused_by_name() {
    for f in dir("unsupported") {
        let errs = config::load(&f).expect_err(&f.display().to_string());
        assert!(
            errs.iter()
                .all(|e| e.to_string().contains("not supported by Vigil yet")),
            "{}: {errs:#?}",
            f.display()
        );
    }
    let f = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/alertmanager/unsupported/debian-sample.yml");
    let errs = config::load(&f).unwrap_err();
    let texts: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(
        texts.iter().any(|t| t.ends_with(
            "receiver \"team-X-pager\" line 103: pagerduty_configs is not supported by Vigil yet"
        )),
        "{texts:#?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("line 13: templates")),
        "{texts:#?}"
    );
}

#[test]
fn verdicts_match_amtool() {
    if amtool_accepts(Path::new("/nonexistent")).is_none() {
        println!("note: amtool not on PATH; skipping the comparison with Alertmanager's verdicts");
        return;
    }
    for f in dir("good") {
        assert_eq!(amtool_accepts(&f), Some(true), "amtool on {}", f.display());
    }
    for f in dir("bad") {
        assert_eq!(amtool_accepts(&f), Some(false), "amtool on {}", f.display());
    }
    // Valid for Alertmanager, refused (by name) by Vigil.
    for f in dir("unsupported") {
        assert_eq!(amtool_accepts(&f), Some(true), "amtool on {}", f.display());
    }
}

#[test]
fn defaults_and_inheritance_are_alertmanagers() {
    let f =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/alertmanager/good/gpu-cluster.yml");
    let c = config::load(&f).unwrap();
    assert_eq!(c.global.resolve_timeout_ms, 300_000);
    assert_eq!(c.global.smtp.hello, "localhost");
    let mail = c.receiver("ops-mail").unwrap();
    let e = &mail.email_configs[0];
    assert_eq!(e.smarthost, "smtp.example.org:587");
    assert_eq!(e.from, "alertmanager@example.org");
    assert_eq!(e.auth_username, "alertmanager");
    assert_eq!(e.auth_password.expose(), "hunter2");
    assert!(e.require_tls && e.send_resolved);
    assert_eq!(
        e.headers,
        vec![("Reply-To".to_string(), "ops@example.org".to_string())]
    );
    let storage = &c.receiver("storage-mail").unwrap().email_configs[0];
    assert!(!storage.require_tls && !storage.send_resolved);
    let hook = &c.receiver("oncall-hook").unwrap().webhook_configs[0];
    assert!(hook.send_resolved);
    assert_eq!(hook.timeout_ms, 10_000);
    assert_eq!(hook.max_alerts, 20);
    assert_eq!(hook.format, WebhookFormat::Alertmanager);
    assert_eq!(
        hook.http_config.basic_auth.as_ref().unwrap().0,
        "alertmanager"
    );
    assert!(
        !format!("{hook:?}").contains("secret\""),
        "secrets are redacted"
    );
    let r = &c.route;
    assert_eq!(
        (r.group_wait_ms, r.group_interval_ms, r.repeat_interval_ms),
        (30_000, 300_000, 14_400_000)
    );
    let crit = &r.routes[0];
    assert!(crit.continue_matching);
    assert_eq!(crit.group_wait_ms, 10_000);
    assert_eq!(crit.group_interval_ms, 300_000);
    assert_eq!(crit.matchers.len(), 2);
    let storage_route = &r.routes[2];
    assert_eq!(
        storage_route.group_by,
        GroupBy::Labels(vec!["alertname".into(), "cluster".into()])
    );
    assert_eq!(c.inhibit_rules.len(), 2);
    assert_eq!(
        c.inhibit_rules[1].source_matchers[0].to_string(),
        "severity=\"critical\""
    );

    let all = config::load(&f.with_file_name("group-by-all.yml")).unwrap();
    assert_eq!(all.route.group_by, GroupBy::All);
    assert!(!all.receivers[0].webhook_configs[0].send_resolved);
    let slack = config::load(&f.with_file_name("slack-global.yml")).unwrap();
    let s = &slack.receivers[0].slack_configs[0];
    assert!(s.api_url.expose().starts_with("https://hooks.slack.com/"));
    assert_eq!(s.channel, "#alerts");
}

#[test]
fn vigil_extensions() {
    let f =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/alertmanager/vigil/extensions.yml");
    let c = config::load(&f).unwrap();
    let r = c.receiver("robots").unwrap();
    assert_eq!(r.fallback_receiver.as_deref(), Some("ops-mail"));
    let formats: Vec<WebhookFormat> = r.webhook_configs.iter().map(|w| w.format).collect();
    assert_eq!(
        formats,
        [
            WebhookFormat::Wecom,
            WebhookFormat::Dingtalk,
            WebhookFormat::Alertmanager
        ]
    );
    assert_eq!(r.webhook_configs[2].signature_header, "X-Hub-Signature-256");
    assert_eq!(r.webhook_configs[1].signature_header, "X-Vigil-Signature");
    assert_eq!(r.webhook_configs[2].timeout_ms, 3_000);
    assert_eq!(c.silences.len(), 1);
    let s = &c.silences[0];
    assert_eq!(s.starts_at_ms, 1_796_090_400_000);
    assert_eq!(s.ends_at_ms - s.starts_at_ms, 4 * 3_600_000);
    assert_eq!(s.matchers.len(), 2);
}

fn errors(yaml: &str) -> Vec<String> {
    config::parse(Path::new("am.yml"), yaml)
        .expect_err("should be refused")
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn messages_name_file_line_and_key() {
    let e = errors(
        "route:\n  receiver: a\nreceivers:\n  - name: a\n    opsgenie_configs:\n      - api_key: x\n",
    );
    assert_eq!(
        e,
        ["am.yml: receiver \"a\" line 5: opsgenie_configs is not supported by Vigil yet"]
    );
    let e = errors("route:\n  receiver: a\n  group_wait: soon\nreceivers:\n  - name: a\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("am.yml: route line 3: group_wait:"),
        "{e:?}"
    );
    let e = errors(
        "route:\n  receiver: a\nreceivers:\n  - name: a\n    webhook_configs:\n      - url: http://x/\n        url_file: /f\n",
    );
    assert!(e[0].contains("at most one of url & url_file"), "{e:?}");
    let e = errors("route:\n  receiver: b\nreceivers:\n  - name: a\n");
    assert_eq!(
        e,
        ["am.yml: route line 2: receiver: undefined receiver \"b\" used in route"]
    );
    let e = errors("route:\n  receiver: a\nreceivers:\n  - name: a\n    fallback_receiver: zz\n");
    assert!(
        e[0].contains("fallback_receiver: undefined receiver \"zz\""),
        "{e:?}"
    );
    let e = errors(
        "route:\n  receiver: a\nreceivers:\n  - name: a\nsilences:\n  - matchers: ['a=~\".*\"']\n    starts_at: 2026-01-01T00:00:00Z\n    ends_at: yesterday\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].contains("silences[0] line 6: matchers: at least one matcher must not match"),
        "{e:?}"
    );
    assert!(e[1].contains("line 8: ends_at:"), "{e:?}");
    let e = errors(
        "route:\n  receiver: a\nreceivers:\n  - name: a\n    email_configs:\n      - to: x@y\n        from: a@b\n        smarthost: nohost\n",
    );
    assert!(
        e[0].contains("line 8: smarthost: address nohost: missing port"),
        "{e:?}"
    );
    let e = errors("route: [\n");
    assert!(e[0].starts_with("am.yml: line"), "{e:?}");
}

#[test]
fn secrets_from_files_relative_to_the_config() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("url"), "http://127.0.0.1:9/hook\n").unwrap();
    std::fs::write(d.path().join("pw"), "s3cret\n").unwrap();
    let yaml = "global:\n  smtp_smarthost: 'h:25'\n  smtp_from: a@b\n  smtp_auth_password_file: pw\nroute:\n  receiver: a\nreceivers:\n  - name: a\n    webhook_configs:\n      - url_file: url\n    email_configs:\n      - to: x@y\n";
    let c = config::parse(&d.path().join("am.yml"), yaml).unwrap();
    assert_eq!(
        c.receivers[0].webhook_configs[0].url.expose(),
        "http://127.0.0.1:9/hook"
    );
    assert_eq!(
        c.receivers[0].email_configs[0].auth_password.expose(),
        "s3cret"
    );
    let e = errors(
        "route:\n  receiver: a\nreceivers:\n  - name: a\n    webhook_configs:\n      - url_file: /nonexistent/url\n",
    );
    assert!(e[0].contains("url_file: cannot read"), "{e:?}");
}
