//! Which alerts go to the notifier after an evaluation, as Prometheus's
//! `AlertingRule.sendAlerts` and `rules.SendAlerts` decide: pending alerts never; a
//! firing or resolved one when it was not sent yet, resolved since it was last sent, or
//! last sent more than the resend delay ago. A firing alert is valid until four times
//! the larger of resend delay and group interval from now, so the notifier resolves it
//! on its own if the collector stops sending it.

use std::collections::HashMap;

use vigil_rules::alerting::AlertState;
use vigil_rules::group::{Group, RuleRef};
use vigil_rules::promql::Labels;

use crate::notify::{LabelMap, PostableAlert};

/// Go's `url.QueryEscape`: space as `+`, unreserved bytes as they are, the rest `%XX`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Prometheus's generator URL: `strutil.TableLinkForExpression` under the external URL.
pub fn generator_url(external_url: &str, expr: &str) -> String {
    format!(
        "{external_url}/graph?g0.expr={}&g0.tab=1",
        query_escape(expr)
    )
}

/// The alerts of `group` to hand to the sink at `t_ms`; updates `last_sent_ms`, keyed
/// by rule name and alert labels, and forgets alerts the group no longer has.
pub fn alerts_to_send(
    group: &Group,
    last_sent_ms: &mut HashMap<(String, Labels), i64>,
    t_ms: i64,
    resend_delay_ms: i64,
    external_url: &str,
) -> Vec<PostableAlert> {
    let valid_for_ms = 4 * resend_delay_ms.max(group.interval_ms);
    let mut out = Vec::new();
    let mut live = std::collections::HashSet::new();
    for rule in group.rules() {
        let RuleRef::Alerting(rule) = rule else {
            continue;
        };
        let mut url = None;
        for a in rule.alerts() {
            let key = (rule.name().to_string(), a.labels.clone());
            live.insert(key.clone());
            if a.state == AlertState::Pending {
                continue;
            }
            let last = last_sent_ms.get(&key).copied();
            let needs = match last {
                None => true,
                Some(sent) => {
                    a.resolved_at_ms.is_some_and(|r| r > sent) || sent + resend_delay_ms < t_ms
                }
            };
            if !needs {
                continue;
            }
            last_sent_ms.insert(key, t_ms);
            let url = url
                .get_or_insert_with(|| generator_url(external_url, &rule.rule.parsed.to_string()));
            out.push(PostableAlert {
                labels: a
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                annotations: a.annotations.iter().cloned().collect::<LabelMap>(),
                starts_at_ms: a.active_at_ms,
                ends_at_ms: a.resolved_at_ms.unwrap_or(t_ms + valid_for_ms),
                generator_url: url.clone(),
            });
        }
    }
    last_sent_ms.retain(|k, _| live.contains(k));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_rules::group::GroupOptions;
    use vigil_rules::promql::MemoryStorage;
    use vigil_rules::rulefile::parse_rule_file;

    const RULES: &str = "groups:\n  - name: g\n    interval: 10s\n    rules:\n      - alert: Hot\n        expr: temp > 90\n        for: 20s\n        annotations:\n          summary: 'hot {{ $value }}'\n";

    fn group() -> Group {
        let f = parse_rule_file(std::path::Path::new("r.yml"), RULES).unwrap();
        let opts = GroupOptions {
            restore_for_state: false,
            ..GroupOptions::default()
        };
        Group::new("r.yml".into(), &f.groups[0], &opts)
    }

    fn temp(st: &mut MemoryStorage, t: i64, v: f64) {
        st.add(
            Labels::from_pairs([("__name__", "temp"), ("node", "n1")]),
            t,
            v,
        );
    }

    #[test]
    fn go_query_escape() {
        assert_eq!(
            query_escape("a > 1 and b{x=\"y\"}"),
            "a+%3E+1+and+b%7Bx%3D%22y%22%7D"
        );
        assert_eq!(
            generator_url("http://h:9436", "up == 0"),
            "http://h:9436/graph?g0.expr=up+%3D%3D+0&g0.tab=1"
        );
    }

    #[test]
    fn pending_never_firing_once_per_resend_delay_resolve_at_once() {
        let (mut g, mut st, mut sent) = (group(), MemoryStorage::new(), HashMap::new());
        let engine = vigil_rules::promql::Engine::default();
        let resend = 60_000;
        let mut step = |g: &mut Group, st: &mut MemoryStorage, t: i64, v: Option<f64>| {
            if let Some(v) = v {
                temp(st, t, v);
            } else {
                st.add(
                    Labels::from_pairs([("__name__", "temp"), ("node", "n1")]),
                    t,
                    vigil_rules::promql::stale_nan(),
                );
            }
            g.eval(&engine, st, t);
            alerts_to_send(g, &mut sent, t, resend, "http://h")
        };
        assert!(step(&mut g, &mut st, 0, Some(95.0)).is_empty(), "pending");
        assert!(step(&mut g, &mut st, 10_000, Some(95.0)).is_empty());
        let fired = step(&mut g, &mut st, 20_000, Some(96.0));
        assert_eq!(fired.len(), 1);
        let a = &fired[0];
        assert_eq!(a.starts_at_ms, 0);
        assert_eq!(a.ends_at_ms, 20_000 + 4 * 60_000);
        assert_eq!(a.labels.get("alertname").map(String::as_str), Some("Hot"));
        assert_eq!(
            a.annotations.get("summary").map(String::as_str),
            Some("hot 96")
        );
        assert_eq!(
            a.generator_url,
            "http://h/graph?g0.expr=temp+%3E+90&g0.tab=1"
        );
        // Within the resend delay: nothing; after it: again.
        assert!(step(&mut g, &mut st, 30_000, Some(96.0)).is_empty());
        assert!(step(&mut g, &mut st, 80_000, Some(96.0)).is_empty());
        assert_eq!(step(&mut g, &mut st, 90_000, Some(96.0)).len(), 1);
        // Resolved: sent at once with ends_at = resolved time.
        let resolved = step(&mut g, &mut st, 100_000, None);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].ends_at_ms, 100_000);
    }
}
