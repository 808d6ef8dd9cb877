//! Inhibit rules with Alertmanager's `inhibit/inhibit.go` semantics: an alert that
//! matches a rule's target matchers is muted while a firing alert matching its source
//! matchers has the same values for every `equal` label (a label both lack counts as
//! equal). When the target also matches the source matchers, sources that also match
//! the target matchers are not considered, so an alert that matches both sides never
//! inhibits itself or its like.

use super::LabelMap;
use super::config::InhibitRule;
use super::matchers::Matcher;

#[derive(Debug, Clone, Default)]
pub struct Inhibitor {
    rules: Vec<InhibitRule>,
}

/// What inhibits an alert: the rule (its 0-based index and line) and the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inhibition {
    pub rule: usize,
    pub rule_line: usize,
    pub source_fingerprint: u64,
}

impl Inhibition {
    /// How the history and the API name it: `inhibit_rules[0]` and the source.
    pub fn describe(&self) -> String {
        format!(
            "inhibit_rules[{}] (line {}) by {:016x}",
            self.rule, self.rule_line, self.source_fingerprint
        )
    }
}

impl Inhibitor {
    pub fn new(rules: &[InhibitRule]) -> Inhibitor {
        Inhibitor {
            rules: rules.to_vec(),
        }
    }

    /// Whether an alert with `labels` is inhibited, given every alert the notifier
    /// holds as `(fingerprint, labels, firing now)`.
    pub fn inhibited_by<'a>(
        &self,
        labels: &LabelMap,
        alerts: impl Iterator<Item = (u64, &'a LabelMap, bool)>,
    ) -> Option<Inhibition> {
        self.check(labels, &self.sources(alerts))
    }

    /// The firing alerts on each rule's source side (Alertmanager's source cache),
    /// gathered once for checking many alerts.
    pub fn sources<'a>(
        &self,
        alerts: impl Iterator<Item = (u64, &'a LabelMap, bool)>,
    ) -> Sources<'a> {
        let mut out: Vec<Vec<(u64, &'a LabelMap)>> = vec![Vec::new(); self.rules.len()];
        for (fp, labels, firing) in alerts {
            if !firing {
                continue;
            }
            for (i, r) in self.rules.iter().enumerate() {
                if Matcher::all_match(&r.source_matchers, labels) {
                    out[i].push((fp, labels));
                }
            }
        }
        Sources(out)
    }

    /// Whether an alert with `labels` is inhibited by one of `sources`.
    pub fn check(&self, labels: &LabelMap, sources: &Sources<'_>) -> Option<Inhibition> {
        for (i, r) in self.rules.iter().enumerate() {
            if !Matcher::all_match(&r.target_matchers, labels) {
                continue;
            }
            let exclude_two_sided = Matcher::all_match(&r.source_matchers, labels);
            let candidates = sources.0.get(i).map_or(&[][..], Vec::as_slice);
            for (fp, src) in candidates {
                if !r.equal.iter().all(|n| src.get(n) == labels.get(n)) {
                    continue;
                }
                if exclude_two_sided && Matcher::all_match(&r.target_matchers, src) {
                    continue;
                }
                return Some(Inhibition {
                    rule: i,
                    rule_line: r.line,
                    source_fingerprint: *fp,
                });
            }
        }
        None
    }
}

/// What [`Inhibitor::sources`] gathers: per rule, the firing source alerts.
#[derive(Debug, Clone, Default)]
pub struct Sources<'a>(Vec<Vec<(u64, &'a LabelMap)>>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::fingerprint;
    use crate::notify::matchers::parse_matchers;

    fn labels(pairs: &[(&str, &str)]) -> LabelMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn rule(src: &str, tgt: &str, equal: &[&str]) -> InhibitRule {
        InhibitRule {
            source_matchers: parse_matchers(src).unwrap(),
            target_matchers: parse_matchers(tgt).unwrap(),
            equal: equal.iter().map(|s| s.to_string()).collect(),
            line: 7,
        }
    }

    #[test]
    fn source_mutes_target_with_equal_labels() {
        let inh = Inhibitor::new(&[rule("severity=critical", "severity=warning", &["node"])]);
        let crit = labels(&[
            ("alertname", "GpuFellOffBus"),
            ("severity", "critical"),
            ("node", "n1"),
        ]);
        let warn_n1 = labels(&[
            ("alertname", "GpuHot"),
            ("severity", "warning"),
            ("node", "n1"),
        ]);
        let warn_n2 = labels(&[
            ("alertname", "GpuHot"),
            ("severity", "warning"),
            ("node", "n2"),
        ]);
        let fp = fingerprint(&crit);
        let store = [(fp, &crit, true)];
        let got = inh.inhibited_by(&warn_n1, store.iter().copied()).unwrap();
        assert_eq!(got.source_fingerprint, fp);
        assert_eq!(got.rule_line, 7);
        assert!(inh.inhibited_by(&warn_n2, store.iter().copied()).is_none());
        // A resolved source inhibits nothing.
        let resolved = [(fp, &crit, false)];
        assert!(
            inh.inhibited_by(&warn_n1, resolved.iter().copied())
                .is_none()
        );
        // The source itself is not a target.
        assert!(inh.inhibited_by(&crit, store.iter().copied()).is_none());
    }

    #[test]
    fn an_alert_matching_both_sides_does_not_inhibit_itself() {
        // Any NodeDown mutes everything on the node, including other NodeDowns?
        // Not itself nor its like: sources that also match the target are skipped.
        let inh = Inhibitor::new(&[rule("alertname=NodeDown", "node=~.+", &["node"])]);
        let down = labels(&[("alertname", "NodeDown"), ("node", "n1")]);
        let other = labels(&[("alertname", "GpuHot"), ("node", "n1")]);
        let store = [(fingerprint(&down), &down, true)];
        assert!(inh.inhibited_by(&down, store.iter().copied()).is_none());
        assert!(inh.inhibited_by(&other, store.iter().copied()).is_some());
        // A label missing on both sides counts as equal.
        let inh = Inhibitor::new(&[rule("a=1", "b=2", &["zone"])]);
        let src = labels(&[("a", "1")]);
        let tgt = labels(&[("b", "2")]);
        let store = [(1, &src, true)];
        assert!(inh.inhibited_by(&tgt, store.iter().copied()).is_some());
    }
}
