//! The route tree, matched as Alertmanager's `dispatch/route.go` matches it: depth
//! first; a child that matches ends the search among its siblings unless it has
//! `continue: true`; a node none of whose children match is itself the match. Group
//! keys are printed as Alertmanager prints them, so that receivers that key on
//! `groupKey` see the same strings: `{}:{alertname="NodeDiskFull"}` for the root,
//! `{}/{severity="critical"}:{alertname="X", node="n1"}` for a child.

use super::LabelMap;
use super::config::{GroupBy, Route};
use super::matchers::{Matcher, matchers_string};

/// One node of the route tree with everything inherited already resolved.
#[derive(Debug, Clone)]
pub struct RouteNode {
    /// Depth-first index in the tree; the root is 0.
    pub id: usize,
    /// Alertmanager's `Route.Key()`: the parent's key, `/`, then the sorted matchers.
    pub key: String,
    pub receiver: String,
    pub group_by: GroupBy,
    pub matchers: Vec<Matcher>,
    pub continue_matching: bool,
    pub group_wait_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
    pub children: Vec<RouteNode>,
}

#[derive(Debug, Clone)]
pub struct RouteTree {
    pub root: RouteNode,
}

impl RouteTree {
    pub fn new(route: &Route) -> RouteTree {
        let mut next_id = 0;
        RouteTree {
            root: build(route, None, &mut next_id),
        }
    }

    /// The routes an alert with these labels goes to, in tree order.
    pub fn match_labels(&self, labels: &LabelMap) -> Vec<&RouteNode> {
        self.root.match_labels(labels)
    }
}

fn build(route: &Route, parent_key: Option<&str>, next_id: &mut usize) -> RouteNode {
    let id = *next_id;
    *next_id += 1;
    let mut matchers = route.matchers.clone();
    // Alertmanager sorts a route's matchers by name, then value, then type.
    matchers.sort_by(|a, b| {
        (a.name.as_str(), a.value.as_str(), a.kind as u8).cmp(&(
            b.name.as_str(),
            b.value.as_str(),
            b.kind as u8,
        ))
    });
    let own = matchers_string(&matchers);
    let key = match parent_key {
        Some(p) => format!("{p}/{own}"),
        None => own,
    };
    let children = route
        .routes
        .iter()
        .map(|c| build(c, Some(&key), next_id))
        .collect();
    RouteNode {
        id,
        key,
        receiver: route.receiver.clone(),
        group_by: route.group_by.clone(),
        matchers,
        continue_matching: route.continue_matching,
        group_wait_ms: route.group_wait_ms,
        group_interval_ms: route.group_interval_ms,
        repeat_interval_ms: route.repeat_interval_ms,
        children,
    }
}

impl RouteNode {
    pub fn match_labels(&self, labels: &LabelMap) -> Vec<&RouteNode> {
        if !Matcher::all_match(&self.matchers, labels) {
            return Vec::new();
        }
        let mut all = Vec::new();
        for child in &self.children {
            let matched = child.match_labels(labels);
            let any = !matched.is_empty();
            all.extend(matched);
            if any && !child.continue_matching {
                break;
            }
        }
        if all.is_empty() {
            all.push(self);
        }
        all
    }

    /// The labels an alert is grouped by on this route: those of `group_by` it has
    /// (a missing label is left out, not empty), or all of them for `...`.
    pub fn group_labels(&self, labels: &LabelMap) -> LabelMap {
        match &self.group_by {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => names
                .iter()
                .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
                .collect(),
        }
    }

    /// `{route key}:{group labels}`, Alertmanager's aggregation group key.
    pub fn group_key(&self, group_labels: &LabelMap) -> String {
        format!("{}:{}", self.key, labels_string(group_labels))
    }
}

/// A label set as Prometheus's `model.LabelSet.String()` prints it:
/// `{alertname="X", node="n1"}`.
pub fn labels_string(labels: &LabelMap) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::notify::config;

    fn tree(yaml: &str) -> RouteTree {
        let cfg = config::parse(Path::new("am.yml"), yaml).unwrap();
        RouteTree::new(&cfg.route)
    }

    fn labels(pairs: &[(&str, &str)]) -> LabelMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const TREE: &str = r#"
route:
  receiver: default
  group_by: [alertname]
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
      group_by: [alertname, node]
      routes:
        - match: {team: gpu}
          receiver: gpu-pager
    - match_re: {severity: "crit.*|warning"}
      receiver: mail
      group_by: ['...']
      group_wait: 1s
    - receiver: never
receivers:
  - name: default
  - name: pager
  - name: gpu-pager
  - name: mail
  - name: never
"#;

    #[test]
    fn depth_first_with_continue() {
        let t = tree(TREE);
        let crit = labels(&[("alertname", "X"), ("severity", "critical")]);
        let got: Vec<&str> = t
            .match_labels(&crit)
            .iter()
            .map(|r| r.receiver.as_str())
            .collect();
        assert_eq!(got, ["pager", "mail"]);
        let crit_gpu = labels(&[
            ("alertname", "X"),
            ("severity", "critical"),
            ("team", "gpu"),
        ]);
        let got: Vec<&str> = t
            .match_labels(&crit_gpu)
            .iter()
            .map(|r| r.receiver.as_str())
            .collect();
        assert_eq!(got, ["gpu-pager", "mail"]);
        // The last child has no matchers: it catches everything the others did not.
        let info = labels(&[("alertname", "X"), ("severity", "info")]);
        let got: Vec<&str> = t
            .match_labels(&info)
            .iter()
            .map(|r| r.receiver.as_str())
            .collect();
        assert_eq!(got, ["never"]);
    }

    #[test]
    fn inheritance_and_group_keys() {
        let t = tree(TREE);
        let a = labels(&[
            ("alertname", "NodeDiskFull"),
            ("severity", "critical"),
            ("team", "gpu"),
            ("node", "n1"),
        ]);
        let routes = t.match_labels(&a);
        let gpu = routes[0];
        // group_by and timers are inherited from the parent.
        assert_eq!(
            gpu.group_by,
            GroupBy::Labels(vec!["alertname".into(), "node".into()])
        );
        assert_eq!(gpu.group_wait_ms, 30_000);
        assert_eq!(
            gpu.group_key(&gpu.group_labels(&a)),
            r#"{}/{severity="critical"}/{team="gpu"}:{alertname="NodeDiskFull", node="n1"}"#
        );
        let mail = routes[1];
        assert_eq!(mail.group_wait_ms, 1_000);
        assert_eq!(mail.group_labels(&a), a);
        assert_eq!(
            mail.group_key(&mail.group_labels(&a)),
            r#"{}/{severity=~"crit.*|warning"}:{alertname="NodeDiskFull", node="n1", severity="critical", team="gpu"}"#
        );
        // The root's key is the sample body's.
        let root = &t.root;
        let g = root.group_labels(&labels(&[("alertname", "NodeDiskFull"), ("job", "node")]));
        assert_eq!(root.group_key(&g), r#"{}:{alertname="NodeDiskFull"}"#);
        // A group_by label the alert lacks is left out.
        assert_eq!(root.group_labels(&labels(&[("job", "x")])), LabelMap::new());
    }
}
