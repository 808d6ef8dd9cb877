//! The evaluator's own metrics on `/metrics`, named after Prometheus's
//! `prometheus_rule_*` and `prometheus_config_last_reload_*` families.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use vigil_proto::MetricFamily;
use vigil_rules::alerting::AlertState;

use super::Evaluator;
use crate::http::MetricSource;

impl MetricSource for Evaluator {
    fn metric_families(&self) -> Vec<MetricFamily> {
        let slots = self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut duration = MetricFamily::gauge(
            "vigil_rule_group_last_duration_seconds",
            "How long the last evaluation of the rule group took.",
        );
        let mut interval = MetricFamily::gauge(
            "vigil_rule_group_interval_seconds",
            "The rule group's evaluation interval.",
        );
        let mut last_eval = MetricFamily::gauge(
            "vigil_rule_group_last_evaluation_timestamp_seconds",
            "When the rule group was last evaluated.",
        );
        let mut rules = MetricFamily::gauge("vigil_rule_group_rules", "Rules in the rule group.");
        let mut iterations = MetricFamily::counter(
            "vigil_rule_group_iterations_total",
            "Scheduled evaluations of the rule group that ran.",
        );
        let mut missed = MetricFamily::counter(
            "vigil_rule_group_iterations_missed_total",
            "Scheduled evaluations of the rule group skipped because one ran too long.",
        );
        let mut failures = MetricFamily::counter(
            "vigil_rule_evaluation_failures_total",
            "Rule evaluations that failed.",
        );
        let (mut pending, mut firing) = (0u64, 0u64);
        for slot in &slots {
            let g = slot.label();
            let l: &[(&'static str, &str)] = &[("rule_group", &g)];
            let c = &slot.counters;
            duration.push(
                l,
                c.last_duration_micros.load(Ordering::Relaxed) as f64 / 1e6,
            );
            interval.push(l, slot.interval_ms as f64 / 1000.0);
            let snap = slot
                .snapshot
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            last_eval.push(l, snap.last_eval_ms.map_or(0.0, |t| t as f64 / 1000.0));
            rules.push(l, snap.rules.len() as f64);
            iterations.push(l, c.iterations.load(Ordering::Relaxed) as f64);
            missed.push(l, c.missed.load(Ordering::Relaxed) as f64);
            failures.push(l, c.failures.load(Ordering::Relaxed) as f64);
            for a in snap.rules.iter().flat_map(|r| r.alerts.iter()) {
                match a.state {
                    AlertState::Pending => pending += 1,
                    AlertState::Firing => firing += 1,
                    AlertState::Inactive => {}
                }
            }
        }
        let mut alerts = MetricFamily::gauge("vigil_alerts", "Active alerts by state.");
        alerts.push(&[("state", "pending")], pending as f64);
        alerts.push(&[("state", "firing")], firing as f64);
        let r = &self.reload;
        let (recorded, write_errors) = self.history.counts();
        vec![
            duration,
            interval,
            last_eval,
            rules,
            iterations,
            missed,
            failures,
            alerts,
            MetricFamily::gauge(
                "vigil_rules_last_reload_successful",
                "Whether the last reload of the rule files succeeded.",
            )
            .with(
                &[],
                if r.successful.load(Ordering::Relaxed) {
                    1.0
                } else {
                    0.0
                },
            ),
            MetricFamily::gauge(
                "vigil_rules_last_reload_success_timestamp_seconds",
                "When the rule files were last loaded successfully.",
            )
            .with(
                &[],
                r.last_success_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            ),
            MetricFamily::counter(
                "vigil_rules_reload_failures_total",
                "Reloads of the rule files that failed (the previous rules stayed).",
            )
            .with(&[], r.failures.load(Ordering::Relaxed) as f64),
            MetricFamily::counter(
                "vigil_alert_history_events_total",
                "Events recorded in the alert history.",
            )
            .with(&[], recorded as f64),
            MetricFamily::counter(
                "vigil_alert_history_write_errors_total",
                "Batches of alert history events that could not be written.",
            )
            .with(&[], write_errors as f64),
        ]
    }
}
