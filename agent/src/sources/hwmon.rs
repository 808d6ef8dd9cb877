//! node_exporter's `hwmon` collector: sensors under /sys/class/hwmon, named as
//! node_exporter names them (`node_hwmon_temp_celsius{chip,sensor}`,
//! `node_hwmon_temp_max_celsius`, `node_hwmon_fan_rpm`, `node_hwmon_chip_names`, ...).
//!
//! The `chip` label is built from the device the sensor belongs to
//! (`platform_coretemp_0`, `nvme_nvme0`), which stays stable across reboots, unlike the
//! `hwmonN` numbering. A machine without /sys/class/hwmon (most VMs) reports nothing
//! and succeeds.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use vigil_proto::MetricFamily;

use super::{HostPaths, Source, SourceError};

/// The sensor types node_exporter reads; other files in a hwmon directory are skipped.
const SENSOR_TYPES: [&str; 13] = [
    "vrm",
    "beep_enable",
    "update_interval",
    "in",
    "cpu",
    "fan",
    "pwm",
    "temp",
    "curr",
    "power",
    "energy",
    "humidity",
    "intrusion",
];

/// Splits a sensor file name into (type, number, property): `temp1_crit_alarm` is
/// (`temp`, 1, `crit_alarm`), `name` is (`name`, 0, ``), as node_exporter's
/// `^([^0-9]+)([0-9]*)?(_(.+))?$` does.
pub fn explode_sensor_filename(name: &str) -> Option<(&str, u32, &str)> {
    let type_end = name
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(name.len());
    if type_end == 0 {
        return None;
    }
    let (sensor_type, rest) = name.split_at(type_end);
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (digits, rest) = rest.split_at(digits_end);
    let number = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let property = match rest.strip_prefix('_') {
        Some(p) if !p.is_empty() => p,
        None if rest.is_empty() => "",
        _ => return None,
    };
    Some((sensor_type, number, property))
}

/// node_exporter's cleanMetricName: lower case, anything outside `[a-z0-9:_]` becomes
/// `_`, leading and trailing `_` trimmed.
pub fn clean_name(name: &str) -> String {
    let lower = name.to_lowercase();
    let replaced: String = lower
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == ':' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    replaced.trim_matches('_').to_owned()
}

/// One hwmon chip: sensor (`temp1`) → property (`input`, `max`, `label`, ``) → raw text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chip {
    /// The `chip` label.
    pub chip: String,
    /// The `name` file, cleaned, for `node_hwmon_chip_names`.
    pub chip_name: Option<String>,
    pub sensors: BTreeMap<String, BTreeMap<String, String>>,
}

/// Where a value goes: family name, help, scale, whether a counter.
fn classify(sensor_type: &str, element: &str, has_bare: bool) -> (String, String, f64, bool) {
    let mut name = format!("node_hwmon_{sensor_type}");
    if element == "input" {
        if has_bare {
            name.push_str("_input");
        }
    } else if !element.is_empty() {
        name.push('_');
        name.push_str(&clean_name(element));
    }
    let g = |n: String, h: String, scale: f64| (n, h, scale, false);
    match (sensor_type, element) {
        (_, "fault" | "alarm") => g(
            name,
            format!("Hardware sensor {element} status ({sensor_type})"),
            1.0,
        ),
        (_, "beep") => g(
            name + "_enabled",
            "Hardware monitor sensor has beeping enabled".into(),
            1.0,
        ),
        ("in" | "cpu", _) => g(
            name + "_volts",
            format!("Hardware monitor for voltage ({element})"),
            0.001,
        ),
        ("temp", e) if e != "type" => {
            let e = if e.is_empty() { "input" } else { e };
            g(
                name + "_celsius",
                format!("Hardware monitor for temperature ({e})"),
                0.001,
            )
        }
        ("curr", _) => g(
            name + "_amps",
            format!("Hardware monitor for current ({element})"),
            0.001,
        ),
        ("energy", _) => (
            name + "_joule_total",
            format!("Hardware monitor for joules used so far ({element})"),
            1e-6,
            true,
        ),
        ("power", "accuracy") => g(
            name,
            "Hardware monitor power meter accuracy, as a ratio".into(),
            1e-6,
        ),
        ("power", "average_interval" | "average_interval_min" | "average_interval_max") => g(
            name + "_seconds",
            format!("Hardware monitor power usage update interval ({element})"),
            0.001,
        ),
        ("power", _) => g(
            name + "_watt",
            format!("Hardware monitor for power usage in watts ({element})"),
            1e-6,
        ),
        ("humidity", _) => g(
            name,
            format!(
                "Hardware monitor for humidity, as a ratio (multiply with 100.0 to get the humidity as a percentage) ({element})"
            ),
            1e-6,
        ),
        ("fan", "input" | "min" | "max" | "target") => g(
            name + "_rpm",
            format!("Hardware monitor for fan revolutions per minute ({element})"),
            1.0,
        ),
        _ => g(
            name,
            format!("Hardware monitor {sensor_type} element {element}"),
            1.0,
        ),
    }
}

pub fn hwmon_families(chips: &[Chip]) -> Vec<MetricFamily> {
    let mut families: BTreeMap<String, MetricFamily> = BTreeMap::new();
    let mut add =
        |name: String, help: String, counter: bool, labels: &[(&'static str, &str)], v: f64| {
            families
                .entry(name)
                .or_insert_with_key(|name| {
                    if counter {
                        MetricFamily::counter(name.clone(), help)
                    } else {
                        MetricFamily::gauge(name.clone(), help)
                    }
                })
                .push(labels, v);
        };
    for chip in chips {
        if let Some(chip_name) = &chip.chip_name {
            add(
                "node_hwmon_chip_names".into(),
                "Annotation metric for human-readable chip names".into(),
                false,
                &[("chip", &chip.chip), ("chip_name", chip_name)],
                1.0,
            );
        }
        for (sensor, props) in &chip.sensors {
            let Some((sensor_type, _, _)) = explode_sensor_filename(sensor) else {
                continue;
            };
            let labels = [("chip", chip.chip.as_str()), ("sensor", sensor.as_str())];
            if let Some(label) = props
                .get("label")
                .map(|l| clean_name(l))
                .filter(|l| !l.is_empty())
            {
                add(
                    "node_hwmon_sensor_label".into(),
                    "Label for given chip and sensor".into(),
                    false,
                    &[("chip", &chip.chip), ("sensor", sensor), ("label", &label)],
                    1.0,
                );
            }
            let bare = props.get("").map(String::as_str);
            match sensor_type {
                "beep_enable" => {
                    let v = if bare == Some("1") { 1.0 } else { 0.0 };
                    add(
                        "node_hwmon_beep_enabled".into(),
                        "Hardware beep enabled".into(),
                        false,
                        &labels,
                        v,
                    );
                    continue;
                }
                "vrm" => {
                    if let Some(v) = bare.and_then(|b| b.trim().parse::<f64>().ok()) {
                        let help = "Hardware voltage regulator".into();
                        add(
                            "node_hwmon_voltage_regulator_version".into(),
                            help,
                            false,
                            &labels,
                            v,
                        );
                    }
                    continue;
                }
                "update_interval" => {
                    if let Some(v) = bare.and_then(|b| b.trim().parse::<f64>().ok()) {
                        let help = "Hardware monitor update interval".into();
                        add(
                            "node_hwmon_update_interval_seconds".into(),
                            help,
                            false,
                            &labels,
                            v * 0.001,
                        );
                    }
                    continue;
                }
                _ => {}
            }
            for (element, raw) in props {
                if element == "label" {
                    continue;
                }
                let Ok(v) = raw.trim().parse::<f64>() else {
                    continue;
                };
                let (name, help, scale, counter) = classify(sensor_type, element, bare.is_some());
                add(name, help, counter, &labels, v * scale);
            }
        }
    }
    families.into_values().collect()
}

/// Reads a sensor file with a single read, as node_exporter does: some broken drivers
/// answer EAGAIN forever to a read loop.
fn read_sensor(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = [0u8; 128];
    let n = f.read(&mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    Some(text.trim_end_matches('\n').to_owned())
}

fn collect_sensor_data(dir: &Path, sensors: &mut BTreeMap<String, BTreeMap<String, String>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let Ok(file) = entry.file_name().into_string() else {
            continue;
        };
        let Some((sensor_type, number, property)) = explode_sensor_filename(&file) else {
            continue;
        };
        if !SENSOR_TYPES.contains(&sensor_type) {
            continue;
        }
        if let Some(value) = read_sensor(&entry.path()) {
            sensors
                .entry(format!("{sensor_type}{number}"))
                .or_default()
                .insert(property.to_owned(), value);
        }
    }
}

/// The `chip` label: `<bus>_<device>` of the device the hwmon belongs to, else the
/// chip's name, else `hwmonN`.
fn chip_label(dir: &Path) -> Option<String> {
    if let Ok(device) = std::fs::canonicalize(dir.join("device")) {
        let dev_name = device.file_name().map(|n| clean_name(&n.to_string_lossy()));
        let dev_type = device
            .parent()
            .and_then(Path::file_name)
            .map(|n| clean_name(&n.to_string_lossy()));
        match (dev_type, dev_name) {
            (Some(t), Some(n)) if !t.is_empty() && !n.is_empty() => {
                return Some(format!("{t}_{n}"));
            }
            (_, Some(n)) if !n.is_empty() => return Some(n),
            _ => {}
        }
    }
    if let Some(name) = read_sensor(&dir.join("name"))
        .map(|n| clean_name(&n))
        .filter(|n| !n.is_empty())
    {
        return Some(name);
    }
    let real = std::fs::canonicalize(dir).ok()?;
    let last = clean_name(&real.file_name()?.to_string_lossy());
    (!last.is_empty()).then_some(last)
}

pub fn read_chip(dir: &Path) -> Option<Chip> {
    let chip = chip_label(dir)?;
    let chip_name = read_sensor(&dir.join("name"))
        .map(|n| clean_name(&n))
        .filter(|n| !n.is_empty());
    let mut sensors = BTreeMap::new();
    collect_sensor_data(dir, &mut sensors);
    let device = dir.join("device");
    if device.is_dir() {
        collect_sensor_data(&device, &mut sensors);
    }
    Some(Chip {
        chip,
        chip_name,
        sensors,
    })
}

pub struct HwmonSource {
    class_dir: PathBuf,
}

impl HwmonSource {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            class_dir: paths.sys("class/hwmon"),
        }
    }
}

impl Source for HwmonSource {
    fn name(&self) -> &'static str {
        "hwmon"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let entries = match std::fs::read_dir(&self.class_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(SourceError::io(&self.class_dir, e)),
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        let chips: Vec<Chip> = dirs.iter().filter_map(|d| read_chip(d)).collect();
        out.extend(hwmon_families(&chips));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata_source() -> HwmonSource {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        HwmonSource {
            class_dir: root.join("sys/class/hwmon"),
        }
    }

    #[test]
    fn sensor_file_names() {
        assert_eq!(
            explode_sensor_filename("temp1_input"),
            Some(("temp", 1, "input"))
        );
        assert_eq!(
            explode_sensor_filename("temp12_crit_alarm"),
            Some(("temp", 12, "crit_alarm"))
        );
        assert_eq!(
            explode_sensor_filename("update_interval"),
            Some(("update_interval", 0, ""))
        );
        assert_eq!(explode_sensor_filename("in0"), Some(("in", 0, "")));
        assert_eq!(explode_sensor_filename("temp1x"), None);
        assert_eq!(explode_sensor_filename("1abc"), None);
        assert_eq!(clean_name("Package id 0\n"), "package_id_0");
        assert_eq!(clean_name("coretemp.0"), "coretemp_0");
    }

    #[test]
    fn constructed_tree_mirrors_node_exporter_names() {
        let mut out = Vec::new();
        testdata_source().collect(&mut out).unwrap();
        let fam = |n: &str| {
            out.iter()
                .find(|f| f.name == n)
                .unwrap_or_else(|| panic!("{n} missing"))
        };
        let value = |n: &str, chip: &str, sensor: &str| {
            fam(n)
                .samples
                .iter()
                .find(|s| s.labels[0].1 == chip && s.labels[1].1 == sensor)
                .unwrap_or_else(|| panic!("{n}{{{chip},{sensor}}} missing"))
                .value
        };
        assert_eq!(
            value("node_hwmon_temp_celsius", "platform_coretemp_0", "temp1"),
            45.0
        );
        assert_eq!(
            value("node_hwmon_temp_celsius", "platform_coretemp_0", "temp2"),
            42.0
        );
        assert_eq!(
            value(
                "node_hwmon_temp_max_celsius",
                "platform_coretemp_0",
                "temp1"
            ),
            84.0
        );
        assert_eq!(
            value(
                "node_hwmon_temp_crit_celsius",
                "platform_coretemp_0",
                "temp1"
            ),
            94.0
        );
        assert_eq!(
            value(
                "node_hwmon_temp_crit_alarm_celsius",
                "platform_coretemp_0",
                "temp1"
            ),
            0.0
        );
        assert_eq!(
            value("node_hwmon_temp_celsius", "nvme_nvme0", "temp1"),
            38.85
        );
        // Same arithmetic as node_exporter (millidegrees × 0.001), so the same float.
        assert_eq!(
            value("node_hwmon_temp_min_celsius", "nvme_nvme0", "temp1"),
            -273150.0 * 0.001
        );
        assert_eq!(value("node_hwmon_temp_alarm", "nvme_nvme0", "temp1"), 0.0);
        assert_eq!(
            value("node_hwmon_temp_celsius", "thermal_thermal_zone0", "temp1"),
            27.8
        );
        assert_eq!(
            value("node_hwmon_fan_rpm", "platform_nct6775_656", "fan1"),
            1250.0
        );
        assert_eq!(
            value("node_hwmon_in_volts", "platform_nct6775_656", "in0"),
            1.008
        );
        let names = fam("node_hwmon_chip_names");
        let pairs: Vec<(&str, &str)> = names
            .samples
            .iter()
            .map(|s| (s.labels[0].1.as_str(), s.labels[1].1.as_str()))
            .collect();
        assert!(
            pairs.contains(&("platform_coretemp_0", "coretemp")),
            "{pairs:?}"
        );
        assert!(pairs.contains(&("nvme_nvme0", "nvme")), "{pairs:?}");
        let labels = fam("node_hwmon_sensor_label");
        assert!(
            labels
                .samples
                .iter()
                .any(|s| s.labels[2].1 == "package_id_0")
        );
        assert!(labels.samples.iter().any(|s| s.labels[2].1 == "composite"));
    }

    #[test]
    fn absent_hwmon_is_empty_success() {
        let source = HwmonSource {
            class_dir: PathBuf::from("/definitely/not/here"),
        };
        let mut out = Vec::new();
        source.collect(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
