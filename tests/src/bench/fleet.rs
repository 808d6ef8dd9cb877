//! Simulated nodes: the agent's template, given each node its own identity and its own
//! but deterministic value history.
//!
//! A node's values depend only on the fleet seed, the node's index and the step, so the
//! OTLP load and the Prometheus exporter, each walking a node from step 0, produce the
//! same values for the same step: both stores hold exactly the same data.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use vigil_proto::exposition::write_float;
use vigil_proto::{MetricFamily, MetricKind, Sample};

use super::template::{Dynamics, Template};

/// Labels whose value names the host: they become the node's name.
const HOST_NAME_LABELS: &[&str] = &["Hostname", "nodename"];
/// Labels whose value is unique per device in a real fleet (GPU UUIDs, MAC addresses,
/// disk serials): their hex digits are redrawn per node so the label index sees a
/// fleet's real cardinality, not one node's values 1,000 times.
const UNIQUE_LABELS: &[&str] = &["UUID", "address", "serial", "wwn"];

/// A fleet of nodes built from one template.
#[derive(Debug, Clone)]
pub struct Fleet {
    template: Arc<Template>,
    seed: u64,
}

impl Fleet {
    pub fn new(template: Template, seed: u64) -> Self {
        Self {
            template: Arc::new(template),
            seed,
        }
    }

    pub fn template(&self) -> &Template {
        &self.template
    }

    pub fn series_per_node(&self) -> usize {
        self.template.series_count()
    }

    pub fn node_name(index: usize) -> String {
        format!("gpu-node-{index:04}")
    }

    /// Node `index` at step 0.
    pub fn node(&self, index: usize) -> NodeSim {
        let mut rng = Rng::new(self.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut state = Vec::with_capacity(self.template.series_count());
        for series in self.template.families.iter().flat_map(|f| &f.series) {
            let v = series.value;
            let s = match series.dynamics {
                Dynamics::Constant => SeriesState {
                    x: v,
                    base: v,
                    rate: 0.0,
                    dynamics: series.dynamics,
                },
                Dynamics::Counter { rate_per_s, .. } => SeriesState {
                    // Nodes booted at different times and work at different paces.
                    x: v * (0.5 + rng.unit()),
                    base: 0.0,
                    rate: rate_per_s * (0.5 + rng.unit()),
                    dynamics: series.dynamics,
                },
                Dynamics::Walk { .. } => {
                    let base = v * (0.85 + 0.3 * rng.unit());
                    SeriesState {
                        x: base,
                        base,
                        rate: 0.0,
                        dynamics: series.dynamics,
                    }
                }
            };
            state.push(s);
        }
        NodeSim {
            index,
            name: Self::node_name(index),
            template: Arc::clone(&self.template),
            state,
            rng,
            step: 0,
            seed: self.seed,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct SeriesState {
    /// The unrounded value; what is exposed is this rounded to the series' precision.
    x: f64,
    /// Where a gauge returns to.
    base: f64,
    /// A counter's mean increase per second.
    rate: f64,
    dynamics: Dynamics,
}

/// One simulated node.
#[derive(Debug, Clone)]
pub struct NodeSim {
    index: usize,
    name: String,
    template: Arc<Template>,
    state: Vec<SeriesState>,
    rng: Rng,
    step: u64,
    seed: u64,
}

impl NodeSim {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many 1-second steps this node has advanced.
    pub fn step(&self) -> u64 {
        self.step
    }

    pub fn series_count(&self) -> usize {
        self.state.len()
    }

    /// Moves every series one second forward.
    pub fn advance(&mut self) {
        for s in &mut self.state {
            match s.dynamics {
                Dynamics::Constant => {}
                Dynamics::Counter { .. } => s.x += s.rate * 2.0 * self.rng.unit(),
                Dynamics::Walk {
                    step,
                    decimals: None,
                } => {
                    // Full-precision readings (durations) are independent jitter around
                    // their level, as measured timings are.
                    s.x = (s.base + step * 2.0 * (self.rng.unit() - 0.5)).max(0.0);
                }
                Dynamics::Walk {
                    step,
                    decimals: Some(_),
                } => {
                    // A mean-reverting walk: slow drift, bounded around the level.
                    let drift = step * 3.0_f64.sqrt() * (2.0 * self.rng.unit() - 1.0);
                    s.x += drift - 0.02 * (s.x - s.base);
                    if s.base >= 0.0 {
                        s.x = s.x.max(0.0);
                    }
                }
            }
        }
        self.step += 1;
    }

    /// The exposed values, in template order (families, then series).
    pub fn values(&self, out: &mut Vec<f64>) {
        out.clear();
        out.extend(self.state.iter().map(exposed));
    }

    /// The node's families with its current values, as the agent's snapshot would hold
    /// them; counters the agent ships with a start time get `start_unix_secs` when given.
    pub fn families(&self, start_unix_secs: Option<f64>) -> Vec<MetricFamily> {
        let mut state = self.state.iter();
        self.template
            .families
            .iter()
            .map(|family| {
                let samples = family
                    .series
                    .iter()
                    .map(|series| {
                        let value = state.next().map_or(series.value, exposed);
                        Sample {
                            labels: self
                                .labels(&series.labels)
                                .into_iter()
                                .map(|(k, v)| (Cow::Owned(k), v))
                                .collect(),
                            value,
                            created_unix_secs: start_unix_secs.filter(|_| {
                                series.has_start_time && family.kind == MetricKind::Counter
                            }),
                        }
                    })
                    .collect();
                MetricFamily {
                    name: Cow::Owned(family.name.clone()),
                    help: Cow::Owned(family.help.clone()),
                    kind: family.kind,
                    samples,
                }
            })
            .collect()
    }

    /// The template's labels with this node's identity.
    fn labels(&self, labels: &[(String, String)]) -> Vec<(String, String)> {
        labels
            .iter()
            .map(|(k, v)| {
                let value = if HOST_NAME_LABELS.contains(&k.as_str()) {
                    self.name.clone()
                } else if UNIQUE_LABELS.contains(&k.as_str()) {
                    redraw_hex(v, self.seed ^ self.index as u64)
                } else {
                    v.clone()
                };
                (k.clone(), value)
            })
            .collect()
    }

    /// A writer of this node's classic text exposition with explicit timestamps.
    pub fn text_writer(&self) -> TextWriter {
        let mut families = Vec::new();
        for family in &self.template.families {
            let kind = match family.kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
                MetricKind::Unknown => "untyped",
            };
            let mut header = String::new();
            let _ = writeln!(
                header,
                "# HELP {} {}",
                family.name,
                escape_help(&family.help)
            );
            let _ = writeln!(header, "# TYPE {} {kind}", family.name);
            let prefixes = family
                .series
                .iter()
                .map(|series| {
                    let mut p = family.name.clone();
                    let labels = self.labels(&series.labels);
                    if !labels.is_empty() {
                        p.push('{');
                        for (i, (k, v)) in labels.iter().enumerate() {
                            if i > 0 {
                                p.push(',');
                            }
                            let _ = write!(p, "{k}=\"{}\"", escape_label_value(v));
                        }
                        p.push('}');
                    }
                    p.push(' ');
                    p
                })
                .collect();
            families.push((header, prefixes));
        }
        TextWriter { families }
    }
}

/// Renders one node's exposition quickly: the header lines and series names are built
/// once, each scrape only writes values and timestamps.
#[derive(Debug)]
pub struct TextWriter {
    families: Vec<(String, Vec<String>)>,
}

impl TextWriter {
    /// Writes the node's exposition with every sample at `timestamp_ms`.
    pub fn write(&self, node: &NodeSim, timestamp_ms: i64, out: &mut String) {
        let mut values = node.state.iter();
        for (header, prefixes) in &self.families {
            out.push_str(header);
            for prefix in prefixes {
                out.push_str(prefix);
                write_float(values.next().map_or(f64::NAN, exposed), out);
                let _ = writeln!(out, " {timestamp_ms}");
            }
        }
    }
}

fn exposed(s: &SeriesState) -> f64 {
    let decimals = match s.dynamics {
        Dynamics::Constant => return s.x,
        Dynamics::Counter { decimals, .. } | Dynamics::Walk { decimals, .. } => decimals,
    };
    match decimals {
        Some(d) => {
            let scale = 10f64.powi(d as i32);
            (s.x * scale).round() / scale
        }
        None => s.x,
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label_value(v: &str) -> Cow<'_, str> {
    if v.bytes().any(|b| matches!(b, b'\\' | b'\n' | b'"')) {
        Cow::Owned(
            v.replace('\\', "\\\\")
                .replace('\n', "\\n")
                .replace('"', "\\\""),
        )
    } else {
        Cow::Borrowed(v)
    }
}

/// Replaces every hex digit of `v` by one drawn from `seed` and the original value, so
/// the shape (`GPU-xxxxxxxx-…`, `aa:bb:…`) stays and the value is unique per node.
fn redraw_hex(v: &str, seed: u64) -> String {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for b in v.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = Rng::new(h);
    v.chars()
        .map(|c| {
            if c.is_ascii_hexdigit() {
                let digit = (rng.next() % 16) as u32;
                let d = char::from_digit(digit, 16).unwrap_or('0');
                if c.is_ascii_uppercase() {
                    d.to_ascii_uppercase()
                } else {
                    d
                }
            } else {
                c
            }
        })
        .collect()
}

/// xorshift64*: deterministic, fast, good enough for load shapes.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Template {
        let earlier = "# HELP c_total C.\n# TYPE c_total counter\nc_total{UUID=\"GPU-ab12\",Hostname=\"vm\"} 10\n# HELP g G.\n# TYPE g gauge\ng 50\n# HELP k K.\n# TYPE k gauge\nk 3\n";
        let later = "# HELP c_total C.\n# TYPE c_total counter\nc_total{UUID=\"GPU-ab12\",Hostname=\"vm\"} 20\n# HELP g G.\n# TYPE g gauge\ng 48\n# HELP k K.\n# TYPE k gauge\nk 3\n";
        Template::from_scrapes(earlier, later, 2.0, "").expect("template")
    }

    #[test]
    fn same_node_same_values_counters_rise_constants_stay() {
        let fleet = Fleet::new(template(), 7);
        let (mut a, mut b) = (fleet.node(3), fleet.node(3));
        let (mut va, mut vb) = (Vec::new(), Vec::new());
        let mut last_counter = f64::MIN;
        let mut gauge_values = std::collections::HashSet::new();
        for _ in 0..500 {
            a.values(&mut va);
            b.values(&mut vb);
            assert_eq!(va, vb);
            assert!(va[0] >= last_counter, "counter fell");
            assert_eq!(va[0], va[0].round(), "counter keeps integer precision");
            last_counter = va[0];
            assert_eq!(va[1], va[1].round());
            assert!(va[1] >= 0.0);
            gauge_values.insert(va[1] as i64);
            assert_eq!(va[2], 3.0);
            a.advance();
            b.advance();
        }
        assert!(
            gauge_values.len() > 3,
            "gauge should move: {gauge_values:?}"
        );
        assert!(gauge_values.len() < 200, "gauge should not be noise");
        let mut other = Vec::new();
        fleet.node(4).values(&mut other);
        assert_ne!(other[0], fleet.node(3).state[0].x.round());
    }

    #[test]
    fn nodes_get_their_own_identity() {
        let fleet = Fleet::new(template(), 7);
        let node = fleet.node(12);
        let families = node.families(None);
        let labels = &families[0].samples[0].labels;
        assert_eq!(labels[1].1, "gpu-node-0012");
        assert!(labels[0].1.starts_with("GPU-") && labels[0].1.len() == 8);
        assert_ne!(labels[0].1, "GPU-ab12");
        assert_ne!(
            fleet.node(13).families(None)[0].samples[0].labels[0].1,
            labels[0].1
        );

        let mut text = String::new();
        node.text_writer().write(&node, 1_000, &mut text);
        assert!(text.contains("# TYPE c_total counter\n"), "{text}");
        assert!(text.contains(&format!(
            "c_total{{UUID=\"{}\",Hostname=\"gpu-node-0012\"}} ",
            labels[0].1
        )));
        assert!(text.ends_with("k 3 1000\n"), "{text}");
    }
}
