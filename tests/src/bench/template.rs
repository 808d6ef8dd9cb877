//! One node's series as the real agent exposes them, and how each series' value moves.
//!
//! The template is read from a running `vigil-agent --simulate-gpus 8`: two scrapes of
//! its classic text exposition some seconds apart give every family's name, help, type
//! and label sets, and for each series whether and how fast its value moved. A third
//! scrape in OpenMetrics format tells which counters the agent ships with a start time.
//! The fleet simulation then moves each series the way it was seen to move — counters
//! rise at the observed rate, gauges wander around the observed value in steps of the
//! observed size and precision, series that did not move stay put — because Gorilla
//! compression (ours and Prometheus's) is sensitive to exactly these dynamics: random
//! noise would overstate both stores' memory, constants would understate it.

use std::collections::HashSet;

use anyhow::{Context as _, bail};
use vigil_proto::MetricKind;

/// How a series' value moves from one 1-second step to the next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dynamics {
    /// Did not move between the scrapes (info metrics, error counters at 0, sizes).
    Constant,
    /// Monotonic: rises by about `rate_per_s` each second, rounded to `decimals`.
    Counter {
        rate_per_s: f64,
        decimals: Option<u32>,
    },
    /// A gauge that wanders around its value in steps of about `step`, rounded to
    /// `decimals`, never below 0 when it was not negative.
    Walk { step: f64, decimals: Option<u32> },
}

/// One series of the template.
#[derive(Debug, Clone)]
pub struct TemplateSeries {
    /// Label pairs in the agent's order.
    pub labels: Vec<(String, String)>,
    /// The value at the later scrape; each simulated node starts near it.
    pub value: f64,
    pub dynamics: Dynamics,
    /// The agent sends this counter with a start time (OpenMetrics `_created`).
    pub has_start_time: bool,
}

/// One metric family of the template.
#[derive(Debug, Clone)]
pub struct TemplateFamily {
    pub name: String,
    pub help: String,
    pub kind: MetricKind,
    pub series: Vec<TemplateSeries>,
}

/// Every family one agent exposes, in the agent's order.
#[derive(Debug, Clone)]
pub struct Template {
    pub families: Vec<TemplateFamily>,
}

impl Template {
    /// Builds the template from two classic-text scrapes `interval_secs` apart and an
    /// OpenMetrics scrape (for start times).
    pub fn from_scrapes(
        earlier: &str,
        later: &str,
        interval_secs: f64,
        openmetrics: &str,
    ) -> anyhow::Result<Self> {
        if interval_secs <= 0.0 {
            bail!("the scrapes must be apart in time");
        }
        let first = parse_text(earlier).context("parsing the earlier scrape")?;
        let second = parse_text(later).context("parsing the later scrape")?;
        let with_start = created_series(openmetrics);
        let earlier_values: std::collections::HashMap<&str, &ParsedSample> = first
            .iter()
            .flat_map(|f| f.samples.iter())
            .map(|s| (s.key.as_str(), s))
            .collect();
        let mut families = Vec::new();
        for family in &second {
            let mut series = Vec::new();
            for sample in &family.samples {
                let dynamics = match earlier_values.get(sample.key.as_str()) {
                    Some(before) => dynamics_of(family.kind, before, sample, interval_secs),
                    // New between the scrapes (a GPU event counter): treat as constant.
                    None => Dynamics::Constant,
                };
                series.push(TemplateSeries {
                    labels: sample.labels.clone(),
                    value: sample.value,
                    dynamics,
                    has_start_time: with_start.contains(sample.key.as_str()),
                });
            }
            if !series.is_empty() {
                families.push(TemplateFamily {
                    name: family.name.clone(),
                    help: family.help.clone(),
                    kind: family.kind,
                    series,
                });
            }
        }
        if families.is_empty() {
            bail!("the agent exposed no series");
        }
        Ok(Self { families })
    }

    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.series.len()).sum()
    }

    /// How many series move at all (the rest are constant).
    pub fn moving_series(&self) -> usize {
        self.families
            .iter()
            .flat_map(|f| &f.series)
            .filter(|s| s.dynamics != Dynamics::Constant)
            .count()
    }
}

fn dynamics_of(
    kind: MetricKind,
    before: &ParsedSample,
    after: &ParsedSample,
    interval_secs: f64,
) -> Dynamics {
    let delta = after.value - before.value;
    if delta == 0.0 || !delta.is_finite() {
        return Dynamics::Constant;
    }
    let decimals = match (before.decimals, after.decimals) {
        (Some(a), Some(b)) if a.max(b) < 6 => Some(a.max(b)),
        _ => None,
    };
    // node_exporter and dcgm-exporter expose many monotonic values untyped
    // (node_vmstat_*, *_TOTAL, energy); a rising untyped value is taken as a counter.
    let monotonic = kind == MetricKind::Counter || (kind == MetricKind::Unknown && delta > 0.0);
    if monotonic {
        Dynamics::Counter {
            rate_per_s: delta / interval_secs,
            decimals,
        }
    } else {
        // A random walk's spread grows with the square root of time.
        Dynamics::Walk {
            step: delta.abs() / interval_secs.sqrt(),
            decimals,
        }
    }
}

#[derive(Debug)]
struct ParsedFamily {
    name: String,
    help: String,
    kind: MetricKind,
    samples: Vec<ParsedSample>,
}

#[derive(Debug)]
struct ParsedSample {
    /// `name{labels}` exactly as exposed; identifies the series across scrapes.
    key: String,
    labels: Vec<(String, String)>,
    value: f64,
    /// Digits after the decimal point as written; `None` for exponent notation.
    decimals: Option<u32>,
}

/// Parses the classic text format as the agent writes it: `# HELP`, `# TYPE`, then the
/// family's samples, without timestamps.
fn parse_text(text: &str) -> anyhow::Result<Vec<ParsedFamily>> {
    let mut families: Vec<ParsedFamily> = Vec::new();
    let mut help = String::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest
                .split_once(' ')
                .map_or("", |(_, h)| h)
                .replace("\\n", "\n")
                .replace("\\\\", "\\");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .with_context(|| format!("line {line_no}: TYPE without a type"))?;
            let kind = match kind {
                "counter" => MetricKind::Counter,
                "gauge" => MetricKind::Gauge,
                "untyped" | "unknown" => MetricKind::Unknown,
                other => bail!("line {line_no}: type {other} is not one the agent exposes"),
            };
            families.push(ParsedFamily {
                name: name.to_owned(),
                help: std::mem::take(&mut help),
                kind,
                samples: Vec::new(),
            });
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let sample = parse_sample(line).with_context(|| format!("line {line_no}: {line:?}"))?;
        let family = families
            .last_mut()
            .with_context(|| format!("line {line_no}: sample before any TYPE line"))?;
        family.samples.push(sample);
    }
    Ok(families)
}

fn parse_sample(line: &str) -> anyhow::Result<ParsedSample> {
    let (key, value_text) = match line.rfind('}') {
        Some(close) => {
            let (key, rest) = line.split_at(close + 1);
            (key, rest.trim())
        }
        None => line
            .split_once(' ')
            .map(|(k, v)| (k, v.trim()))
            .context("no value")?,
    };
    // A timestamp after the value would be a second field; the agent writes none.
    let value_text = value_text.split_whitespace().next().context("no value")?;
    let value: f64 = value_text
        .parse()
        .with_context(|| format!("value {value_text:?} is not a number"))?;
    let decimals = if value_text.contains(['e', 'E']) || !value.is_finite() {
        None
    } else {
        Some(
            value_text
                .split_once('.')
                .map_or(0, |(_, f)| f.len() as u32),
        )
    };
    let labels = match key.find('{') {
        Some(open) => parse_labels(&key[open + 1..key.len() - 1])?,
        None => Vec::new(),
    };
    Ok(ParsedSample {
        key: key.to_owned(),
        labels,
        value,
        decimals,
    })
}

fn parse_labels(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").context("label without =\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => bail!("label value ends in a backslash"),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.context("unterminated label value")?;
        labels.push((name.trim_start_matches(',').to_owned(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Ok(labels)
}

/// The `name_total{labels}` keys of counters that carry an OpenMetrics `_created` line.
fn created_series(openmetrics: &str) -> HashSet<String> {
    openmetrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let key = l.rsplit_once(' ')?.0;
            let split = key.find('{').unwrap_or(key.len());
            let base = key[..split].strip_suffix("_created")?;
            Some(format!("{base}_total{}", &key[split..]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EARLIER: &str = "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 3302.2
node_cpu_seconds_total{cpu=\"0\",mode=\"irq\"} 0
# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).
# TYPE DCGM_FI_DEV_GPU_TEMP gauge
DCGM_FI_DEV_GPU_TEMP{gpu=\"0\",Hostname=\"vm\",modelName=\"a \\\"b\\\"\"} 55
# HELP node_vmstat_pgfault /proc/vmstat information field pgfault.
# TYPE node_vmstat_pgfault untyped
node_vmstat_pgfault 100
# HELP vigil_gpu_xid_errors_total Xid errors.
# TYPE vigil_gpu_xid_errors_total counter
vigil_gpu_xid_errors_total{gpu=\"0\",xid=\"13\"} 0
# HELP d Duration.
# TYPE d gauge
d 1.5e-05
";

    const LATER: &str = "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 3304.25
node_cpu_seconds_total{cpu=\"0\",mode=\"irq\"} 0
# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).
# TYPE DCGM_FI_DEV_GPU_TEMP gauge
DCGM_FI_DEV_GPU_TEMP{gpu=\"0\",Hostname=\"vm\",modelName=\"a \\\"b\\\"\"} 51
# HELP node_vmstat_pgfault /proc/vmstat information field pgfault.
# TYPE node_vmstat_pgfault untyped
node_vmstat_pgfault 140
# HELP vigil_gpu_xid_errors_total Xid errors.
# TYPE vigil_gpu_xid_errors_total counter
vigil_gpu_xid_errors_total{gpu=\"0\",xid=\"13\"} 0
# HELP d Duration.
# TYPE d gauge
d 2.5e-05
";

    const OPENMETRICS: &str = "# TYPE vigil_gpu_xid_errors counter
vigil_gpu_xid_errors_total{gpu=\"0\",xid=\"13\"} 0
vigil_gpu_xid_errors_created{gpu=\"0\",xid=\"13\"} 1795788930.75
# EOF
";

    #[test]
    fn dynamics_follow_what_the_agent_was_seen_doing() -> anyhow::Result<()> {
        let t = Template::from_scrapes(EARLIER, LATER, 4.0, OPENMETRICS)?;
        assert_eq!(t.series_count(), 6);
        assert_eq!(t.moving_series(), 4);
        let cpu = &t.families[0];
        assert_eq!(cpu.kind, MetricKind::Counter);
        assert_eq!(
            cpu.series[0].dynamics,
            Dynamics::Counter {
                rate_per_s: (3304.25 - 3302.2) / 4.0,
                decimals: Some(2)
            }
        );
        assert_eq!(cpu.series[1].dynamics, Dynamics::Constant);
        let temp = &t.families[1].series[0];
        assert_eq!(
            temp.dynamics,
            Dynamics::Walk {
                step: 2.0,
                decimals: Some(0)
            }
        );
        assert_eq!(
            temp.labels[2],
            ("modelName".to_owned(), "a \"b\"".to_owned())
        );
        assert!(matches!(
            t.families[2].series[0].dynamics,
            Dynamics::Counter {
                decimals: Some(0),
                ..
            }
        ));
        let xid = &t.families[3].series[0];
        assert!(xid.has_start_time);
        assert!(!cpu.series[0].has_start_time);
        assert!(matches!(
            t.families[4].series[0].dynamics,
            Dynamics::Walk { decimals: None, .. }
        ));
        Ok(())
    }

    #[test]
    fn malformed_exposition_names_the_line() {
        let err = Template::from_scrapes("# TYPE a gauge\na{x=\"1} 2\n", LATER, 1.0, "")
            .expect_err("unterminated label");
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }
}
