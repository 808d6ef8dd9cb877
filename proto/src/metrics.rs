//! Metric families as sources produce them.
//!
//! A family is named the way it is exposed in the classic text format: a counter's name
//! ends in `_total` (`node_cpu_seconds_total`), and the OpenMetrics encoder derives the
//! family name from it. A monotonically rising value whose established name does not end
//! in `_total` (node_exporter's vmstat fields, dcgm-exporter's `..._TOTAL` fields) is
//! [`MetricKind::Unknown`], exactly as those exporters' untyped metrics are, so that the
//! name stays the one dashboards and rules already use.

use std::borrow::Cow;

/// The type a family is exposed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Monotonic; the name ends in `_total`.
    Counter,
    Gauge,
    /// `untyped` in the classic format, `unknown` in OpenMetrics.
    Unknown,
}

/// A label name: nearly always a literal, so it is borrowed rather than allocated on
/// every collection.
pub type LabelName = Cow<'static, str>;

/// One series' value in a family.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Label pairs in the order they are exposed; names are unique within a sample.
    pub labels: Vec<(LabelName, String)>,
    pub value: f64,
    /// When a counter started counting, in seconds since the Unix epoch; exposed as the
    /// OpenMetrics `_created` line so that `increase()` can count the first increment.
    pub created_unix_secs: Option<f64>,
}

/// A metric family: one name, one type, any number of labelled samples.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    /// Literal for nearly every family, so borrowed: a collection cycle builds hundreds
    /// of families and should not allocate their names and help texts each time.
    pub name: Cow<'static, str>,
    pub help: Cow<'static, str>,
    pub kind: MetricKind,
    pub samples: Vec<Sample>,
}

impl MetricFamily {
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        help: impl Into<Cow<'static, str>>,
        kind: MetricKind,
    ) -> Self {
        let family = Self {
            name: name.into(),
            help: help.into(),
            kind,
            samples: Vec::new(),
        };
        debug_assert!(
            kind != MetricKind::Counter || family.name.ends_with("_total"),
            "counter {} must end in _total",
            family.name
        );
        family
    }

    pub fn gauge(name: impl Into<Cow<'static, str>>, help: impl Into<Cow<'static, str>>) -> Self {
        Self::new(name, help, MetricKind::Gauge)
    }

    pub fn counter(name: impl Into<Cow<'static, str>>, help: impl Into<Cow<'static, str>>) -> Self {
        Self::new(name, help, MetricKind::Counter)
    }

    pub fn unknown(name: impl Into<Cow<'static, str>>, help: impl Into<Cow<'static, str>>) -> Self {
        Self::new(name, help, MetricKind::Unknown)
    }

    /// Adds a sample; label values are copied in the order given.
    pub fn push(&mut self, labels: &[(&'static str, &str)], value: f64) {
        self.samples.push(Sample {
            labels: labels
                .iter()
                .map(|(k, v)| (Cow::Borrowed(*k), (*v).to_owned()))
                .collect(),
            value,
            created_unix_secs: None,
        });
    }

    /// Adds a counter sample with the time the counter started.
    pub fn push_counter(
        &mut self,
        labels: &[(&'static str, &str)],
        value: f64,
        created_unix_secs: f64,
    ) {
        self.push(labels, value);
        if let Some(last) = self.samples.last_mut() {
            last.created_unix_secs = Some(created_unix_secs);
        }
    }

    /// Adds a sample whose labels are already owned.
    pub fn push_owned(&mut self, labels: Vec<(LabelName, String)>, value: f64) {
        self.samples.push(Sample {
            labels,
            value,
            created_unix_secs: None,
        });
    }

    /// Builder form of [`MetricFamily::push`] for single-sample families.
    pub fn with(mut self, labels: &[(&'static str, &str)], value: f64) -> Self {
        self.push(labels, value);
        self
    }
}
