//! The alert state machine and the group evaluator, step by step, against what
//! Prometheus's rules/alerting.go and rules/group.go do.

use std::path::Path;

use vigil_rules::alerting::AlertState;
use vigil_rules::group::{Group, GroupOptions, GroupResult};
use vigil_rules::promql::{Engine, Labels, MemoryStorage, is_stale_nan};
use vigil_rules::rulefile::parse_rule_file;

const MIN: i64 = 60_000;

fn group(yaml: &str, opts: &GroupOptions) -> Group {
    let f = parse_rule_file(Path::new("t.yml"), yaml).unwrap_or_else(|e| panic!("{e:?}"));
    Group::new("t.yml".into(), &f.groups[0], opts)
}

fn no_restore() -> GroupOptions {
    GroupOptions {
        restore_for_state: false,
        ..GroupOptions::default()
    }
}

fn up(st: &mut MemoryStorage, job: &str, t: i64, v: f64) {
    st.add(Labels::from_pairs([("__name__", "up"), ("job", job)]), t, v);
}

/// Evaluates and appends the result, as the collector's loop does.
fn step(g: &mut Group, st: &mut MemoryStorage, t: i64) -> GroupResult {
    let res = g.eval(&Engine::default(), st, t);
    assert!(res.errors.is_empty(), "{:?}", res.errors);
    for s in &res.samples {
        st.add(s.labels.clone(), s.t_ms, s.v);
    }
    res
}

fn states(g: &Group) -> Vec<(String, AlertState)> {
    g.alerting_rules()
        .flat_map(|r| {
            r.alerts()
                .into_iter()
                .map(|a| (a.labels.get("job").unwrap_or("").to_string(), a.state))
        })
        .collect()
}

const DOWN: &str = r#"
groups:
- name: g
  rules:
  - alert: Down
    expr: up == 0
    for: 2m
    labels: {severity: page, team: '{{ $labels.job }}-team'}
    annotations:
      summary: '{{ $labels.job }} down, value {{ $value }}, {{ $externalLabels.dc }}'
"#;

#[test]
fn pending_firing_resolved_retained_forgotten() {
    let opts = GroupOptions {
        external_labels: vec![("dc".into(), "east".into())],
        ..no_restore()
    };
    let mut g = group(DOWN, &opts);
    let mut st = MemoryStorage::new();
    for i in 0..=3 {
        up(&mut st, "a", i * MIN, 0.0);
    }
    let r0 = step(&mut g, &mut st, 0);
    assert_eq!(states(&g), vec![("a".into(), AlertState::Pending)]);
    assert_eq!(r0.transitions.len(), 1);
    assert_eq!(
        (r0.transitions[0].from, r0.transitions[0].to),
        (AlertState::Inactive, AlertState::Pending)
    );
    let alerts_series = r0
        .samples
        .iter()
        .find(|s| s.labels.name() == Some("ALERTS"))
        .expect("ALERTS written");
    assert_eq!(alerts_series.labels.get("alertstate"), Some("pending"));
    assert_eq!(alerts_series.labels.get("team"), Some("a-team"));
    let for_state = r0
        .samples
        .iter()
        .find(|s| s.labels.name() == Some("ALERTS_FOR_STATE"))
        .expect("for state");
    assert_eq!(for_state.v, 0.0);
    assert_eq!(for_state.labels.get("alertstate"), None);

    step(&mut g, &mut st, MIN);
    assert_eq!(states(&g), vec![("a".into(), AlertState::Pending)]);
    let r2 = step(&mut g, &mut st, 2 * MIN);
    assert_eq!(states(&g), vec![("a".into(), AlertState::Firing)]);
    assert_eq!(
        (r2.transitions[0].from, r2.transitions[0].to),
        (AlertState::Pending, AlertState::Firing)
    );
    let a = g.alerting_rules().next().unwrap().alerts()[0].clone();
    assert_eq!(
        a.annotations,
        vec![("summary".to_string(), "a down, value 0, east".to_string())]
    );
    assert_eq!(a.labels.get("alertname"), Some("Down"));
    assert_eq!(a.labels.get("severity"), Some("page"));
    // The pending series goes stale when the firing one replaces it.
    assert!(
        r2.samples
            .iter()
            .any(|s| s.labels.get("alertstate") == Some("pending") && is_stale_nan(s.v))
    );

    up(&mut st, "a", 4 * MIN, 1.0);
    let r4 = step(&mut g, &mut st, 4 * MIN);
    assert_eq!(states(&g), vec![("a".into(), AlertState::Inactive)]);
    assert_eq!(
        (r4.transitions[0].from, r4.transitions[0].to),
        (AlertState::Firing, AlertState::Inactive)
    );
    assert!(
        r4.samples.iter().all(|s| is_stale_nan(s.v)),
        "only stale markers once resolved"
    );
    // Kept 15 minutes after resolving, then forgotten.
    step(&mut g, &mut st, 19 * MIN);
    assert_eq!(states(&g).len(), 1);
    step(&mut g, &mut st, 19 * MIN + 1);
    assert!(states(&g).is_empty());
}

#[test]
fn pending_alert_that_clears_is_dropped_and_can_restart() {
    let mut g = group(DOWN, &no_restore());
    let mut st = MemoryStorage::new();
    up(&mut st, "a", 0, 0.0);
    step(&mut g, &mut st, 0);
    up(&mut st, "a", MIN, 1.0);
    let r = step(&mut g, &mut st, MIN);
    assert!(states(&g).is_empty());
    assert_eq!(
        (r.transitions[0].from, r.transitions[0].to),
        (AlertState::Pending, AlertState::Inactive)
    );
    up(&mut st, "a", 2 * MIN, 0.0);
    step(&mut g, &mut st, 2 * MIN);
    let a = g.alerting_rules().next().unwrap().alerts()[0].clone();
    assert_eq!((a.state, a.active_at_ms), (AlertState::Pending, 2 * MIN));
}

#[test]
fn keep_firing_for_holds_a_resolved_condition() {
    let yaml =
        "groups:\n- name: g\n  rules:\n  - alert: X\n    expr: up == 0\n    keep_firing_for: 3m\n";
    let mut g = group(yaml, &no_restore());
    let mut st = MemoryStorage::new();
    up(&mut st, "a", 0, 0.0);
    step(&mut g, &mut st, 0);
    assert_eq!(
        states(&g),
        vec![("a".into(), AlertState::Firing)],
        "no `for`: fires at once"
    );
    for i in 1..=3 {
        up(&mut st, "a", i * MIN, 1.0);
        step(&mut g, &mut st, i * MIN);
        assert_eq!(
            states(&g),
            vec![("a".into(), AlertState::Firing)],
            "minute {i}"
        );
    }
    up(&mut st, "a", 4 * MIN, 1.0);
    step(&mut g, &mut st, 4 * MIN);
    assert_eq!(states(&g), vec![("a".into(), AlertState::Inactive)]);
}

#[test]
fn recording_rules_feed_later_rules_and_go_stale() {
    let yaml = r#"
groups:
- name: g
  labels: {team: gpu}
  rules:
  - record: job:up:sum
    expr: sum by (job) (up)
    labels: {source: vigil}
  - alert: NoneUp
    expr: job:up:sum == 0
"#;
    let mut g = group(yaml, &no_restore());
    let mut st = MemoryStorage::new();
    up(&mut st, "a", 0, 0.0);
    let r = step(&mut g, &mut st, 0);
    let rec = &r.samples[0];
    assert_eq!(
        rec.labels.to_string(),
        "job:up:sum{job=\"a\", source=\"vigil\", team=\"gpu\"}"
    );
    assert_eq!((rec.t_ms, rec.v), (0, 0.0));
    // The alert saw the value recorded at the same instant.
    assert_eq!(states(&g), vec![("a".into(), AlertState::Firing)]);
    let a = g.alerting_rules().next().unwrap().alerts()[0].clone();
    assert_eq!(
        a.labels.get("team"),
        Some("gpu"),
        "group labels reach alerts"
    );
    // Ten minutes later `up` is gone: the recorded series gets a staleness marker.
    let r = step(&mut g, &mut st, 10 * MIN);
    assert!(
        r.samples
            .iter()
            .any(|s| s.labels.name() == Some("job:up:sum") && is_stale_nan(s.v))
    );
}

#[test]
fn limits_and_duplicate_label_sets_fail_the_rule() {
    let yaml = "groups:\n- name: g\n  limit: 1\n  rules:\n  - alert: X\n    expr: up == 0\n";
    let mut g = group(yaml, &no_restore());
    let mut st = MemoryStorage::new();
    up(&mut st, "a", 0, 0.0);
    up(&mut st, "b", 0, 0.0);
    let r = g.eval(&Engine::default(), &st, 0);
    assert_eq!(r.errors[0].error, "exceeded limit of 1 with 2 alerts");
    assert!(states(&g).is_empty());

    let yaml =
        "groups:\n- name: g\n  rules:\n  - alert: X\n    expr: up == 0\n    labels: {job: same}\n";
    let mut g = group(yaml, &no_restore());
    let r = g.eval(&Engine::default(), &st, 0);
    assert_eq!(
        r.errors[0].error,
        "vector contains metrics with the same labelset after applying alert labels"
    );
}

const SLOW: &str =
    "groups:\n- name: g\n  rules:\n  - alert: Slow\n    expr: up == 0\n    for: 30m\n";

/// Runs a first "process" from 0 to `crash`, then a restarted one from `restart`.
fn restart_scenario(crash: i64, restart: i64) -> (Group, MemoryStorage) {
    let mut st = MemoryStorage::new();
    for i in 0..=200 {
        up(&mut st, "a", i * MIN, 0.0);
    }
    let mut first = group(SLOW, &no_restore());
    let mut t = 0;
    while t <= crash {
        step(&mut first, &mut st, t);
        t += MIN;
    }
    let mut second = group(SLOW, &GroupOptions::default());
    // Not restored yet: the first two evaluations write no alert series.
    let r = step(&mut second, &mut st, restart);
    assert!(r.samples.iter().all(|s| s.labels.name() != Some("ALERTS")));
    step(&mut second, &mut st, restart + MIN);
    (second, st)
}

#[test]
fn restore_shifts_active_at_by_the_outage() {
    // Pending 10 of 30 minutes when it crashed at 10m; back at 20m, restored at 21m:
    // 20 minutes remain, more than the 10m grace period, so ActiveAt moves by the
    // 11 minutes since the last ALERTS_FOR_STATE sample.
    let (mut g, mut st) = restart_scenario(10 * MIN, 20 * MIN);
    let a = g.alerting_rules().next().unwrap().alerts()[0].clone();
    assert_eq!(a.active_at_ms, 11 * MIN);
    let mut t = 22 * MIN;
    while t < 41 * MIN {
        step(&mut g, &mut st, t);
        assert_eq!(
            states(&g),
            vec![("a".into(), AlertState::Pending)],
            "at {t}"
        );
        t += MIN;
    }
    step(&mut g, &mut st, 41 * MIN);
    assert_eq!(states(&g), vec![("a".into(), AlertState::Firing)]);
}

#[test]
fn restore_waits_at_least_the_grace_period() {
    // Pending 25 of 30 minutes at the crash: only 5 minutes remain, less than the grace
    // period, so the alert fires 10 minutes after the restore (21m + 10m).
    let (g, _) = restart_scenario(25 * MIN, 30 * MIN);
    let a = g.alerting_rules().next().unwrap().alerts()[0].clone();
    assert_eq!(a.active_at_ms, 31 * MIN + 10 * MIN - 30 * MIN);
}

#[test]
fn restore_ignores_state_older_than_the_outage_tolerance() {
    let (g, _) = restart_scenario(5 * MIN, 5 * MIN + 2 * 60 * MIN);
    let a = g.alerting_rules().next().unwrap().alerts()[0].clone();
    assert_eq!(
        a.active_at_ms,
        5 * MIN + 2 * 60 * MIN,
        "starts over from the restart"
    );
}

#[test]
fn transitions_carry_the_recovery_block() {
    let yaml = "groups:\n- name: g\n  rules:\n  - alert: GpuFellOffBus\n    expr: up == 0\n    recovery:\n      script: reset-gpu\n      args_from_labels: [job]\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("recovery.yml");
    std::fs::write(&path, yaml).expect("write");
    let mut groups =
        vigil_rules::group::load_groups(std::slice::from_ref(&path), &no_restore()).expect("loads");
    let mut st = MemoryStorage::new();
    up(&mut st, "a", 0, 0.0);
    let r = step(&mut groups[0], &mut st, 0);
    let fired = r
        .transitions
        .iter()
        .find(|t| t.to == AlertState::Firing)
        .expect("fired");
    let rec = fired.recovery.as_ref().expect("recovery");
    assert_eq!(
        (rec.script.as_str(), rec.args_from_labels.as_slice()),
        ("reset-gpu", &["job".to_string()][..])
    );
    assert_eq!(fired.alert.labels.get("job"), Some("a"));

    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "groups:\n- name: g\n  rules:\n  - alert: X\n    expr: up ==\n",
    )
    .expect("write");
    let errs = vigil_rules::group::load_groups(&[path, bad], &no_restore()).expect_err("bad file");
    assert!(
        errs[0]
            .to_string()
            .contains("bad.yml: 5:11: group \"g\", rule 1, \"X\": could not parse expression"),
        "{errs:?}"
    );
}

/// The collector moves groups onto blocking threads.
#[test]
fn groups_can_move_between_threads() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Group>();
    assert_send::<GroupResult>();
}

/// Later rules read this round's alert series merged with earlier rounds' (instant and
/// range reads both).
#[test]
fn later_rules_see_this_rounds_alert_series() {
    let yaml = r#"
groups:
- name: g
  rules:
  - alert: Down
    expr: up == 0
  - record: alerts:count
    expr: count(ALERTS{alertstate="firing"})
  - record: alerts:samples10m
    expr: count_over_time(ALERTS{alertstate="firing"}[10m])
"#;
    let mut g = group(yaml, &no_restore());
    let mut st = MemoryStorage::new();
    for i in 0..3 {
        up(&mut st, "a", i * MIN, 0.0);
        let r = step(&mut g, &mut st, i * MIN);
        let get = |name: &str| {
            r.samples
                .iter()
                .find(|s| s.labels.name() == Some(name))
                .map(|s| s.v)
        };
        assert_eq!(get("alerts:count"), Some(1.0), "round {i}");
        assert_eq!(get("alerts:samples10m"), Some((i + 1) as f64), "round {i}");
    }
}

/// What a rule writes stays visible to a later rule of the same round that reaches it
/// otherwise than by metric name: a selector without one, or a template's `query`.
#[test]
fn later_rules_and_template_queries_see_this_rounds_series() {
    let yaml = r#"
groups:
- name: g
  rules:
  - record: job:up
    expr: up
  - record: seen
    expr: count({__name__=~"up|job:up"})
"#;
    let mut g = group(yaml, &no_restore());
    let mut st = MemoryStorage::new();
    for i in 0..3 {
        up(&mut st, "a", i * MIN, 1.0);
        let r = step(&mut g, &mut st, i * MIN);
        // `up` and this round's `job:up`.
        let seen = r.samples.iter().find(|s| s.labels.name() == Some("seen"));
        assert_eq!(seen.map(|s| s.v), Some(2.0), "round {i}");
    }
    let yaml = r#"
groups:
- name: g
  rules:
  - record: job:up
    expr: up
  - alert: Up
    expr: up > 0
    annotations:
      now: '{{ with query "job:up" }}{{ . | first | value }}{{ end }}'
"#;
    let mut g = group(yaml, &no_restore());
    let mut st = MemoryStorage::new();
    for i in 0..3 {
        let v = (i + 1) as f64;
        up(&mut st, "a", i * MIN, v);
        step(&mut g, &mut st, i * MIN);
        let alerts = g.alerting_rules().next().map(|a| a.alerts()).unwrap();
        assert_eq!(
            alerts[0].annotations,
            vec![("now".to_string(), v.to_string())],
            "round {i}"
        );
    }
}

/// Annotations are expanded again whenever what they print may have changed: the
/// value, or the time for a template that reads it; only an unchanged series and value
/// take the last round's text.
#[test]
fn annotations_follow_value_and_time() {
    let yaml = r#"
groups:
- name: g
  rules:
  - alert: Up
    expr: up > 0
    annotations:
      value: '{{ $value }} on {{ $labels.job }}'
  - alert: Clock
    expr: up > 0
    annotations:
      at: '{{ now }}'
"#;
    let mut g = group(yaml, &no_restore());
    let mut st = MemoryStorage::new();
    let text = |g: &Group, rule: &str| {
        let r = g.alerting_rules().find(|a| a.name() == rule).unwrap();
        r.alerts()[0].annotations[0].1.clone()
    };
    for (i, v) in [(0, 1.0), (1, 1.0), (2, 5.0), (3, 5.0), (4, 1.0)] {
        up(&mut st, "a", i * MIN, v);
        step(&mut g, &mut st, i * MIN);
        assert_eq!(text(&g, "Up"), format!("{v} on a"), "round {i}");
        assert_eq!(text(&g, "Clock"), format!("{}", i * 60), "round {i}");
    }
}
