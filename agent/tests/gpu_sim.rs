//! The GPU source against the simulated NVML, loaded exactly as a real driver is:
//! `gpu::open` writes the library built by build.rs into the state directory and
//! nvml-wrapper loads it from there. Faults are injected by rewriting the faults file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use vigil_agent::AgentConfig;
use vigil_agent::sources::Source;
use vigil_agent::sources::gpu;
use vigil_proto::{MetricFamily, MetricKind};

const NODE: &str = "node-a";

struct Sim {
    _dir: tempfile::TempDir,
    faults: PathBuf,
    source: Arc<dyn Source>,
}

fn config(state_dir: &Path, gpus: u32, faults: &Path) -> AgentConfig {
    let mut config = AgentConfig {
        state_dir: state_dir.to_owned(),
        ..AgentConfig::default()
    };
    config.gpu.simulate_gpus = gpus;
    config.gpu.simulate_faults = faults.to_owned();
    config
}

/// Opens a simulated node whose faults file starts with `faults`.
fn start(gpus: u32, faults: &str) -> Result<Sim> {
    let dir = tempfile::tempdir()?;
    let faults_path = dir.path().join("faults.toml");
    write_faults(&faults_path, faults)?;
    let config = config(&dir.path().join("state"), gpus, &faults_path);
    let source = gpu::open(&config, NODE)
        .map_err(anyhow::Error::msg)?
        .context("simulation asked for, but GPU collection is off")?;
    Ok(Sim {
        _dir: dir,
        faults: faults_path,
        source,
    })
}

/// Replaces the faults file in one step, as the README advises.
fn write_faults(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn collect(source: &dyn Source) -> Result<Vec<MetricFamily>> {
    let mut out = Vec::new();
    source.collect(&mut out)?;
    Ok(out)
}

fn family<'a>(out: &'a [MetricFamily], name: &str) -> Option<&'a MetricFamily> {
    out.iter().find(|f| f.name == name)
}

fn label<'a>(
    labels: &'a [(vigil_proto::metrics::LabelName, String)],
    name: &str,
) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The value of the sample of `name` whose labels include all of `want`.
fn value(out: &[MetricFamily], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    family(out, name)?
        .samples
        .iter()
        .find(|s| want.iter().all(|(k, v)| label(&s.labels, k) == Some(*v)))
        .map(|s| s.value)
}

/// Collects until `check` holds, for at most 10 s.
fn wait_for(
    source: &dyn Source,
    what: &str,
    check: impl Fn(&[MetricFamily]) -> bool,
) -> Result<Vec<MetricFamily>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = collect(source)?;
        if check(&out) {
            return Ok(out);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const DCGM_FAMILIES: &[&str] = &[
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_ENC_UTIL",
    "DCGM_FI_DEV_DEC_UTIL",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_RESERVED",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_CLOCK",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
    "DCGM_FI_DEV_RETIRED_SBE",
    "DCGM_FI_DEV_RETIRED_DBE",
    "DCGM_FI_DEV_RETIRED_PENDING",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE",
    "DCGM_FI_DEV_ROW_REMAP_PENDING",
    "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_THERMAL_VIOLATION",
    "DCGM_FI_DEV_POWER_VIOLATION",
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
    "DCGM_FI_DEV_XID_ERRORS",
];

fn is_uuid(s: &str) -> bool {
    let Some(hex) = s.strip_prefix("GPU-") else {
        return false;
    };
    let groups: Vec<&str> = hex.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && hex.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

#[test]
fn eight_gpus_with_dcgm_labels_and_every_family() -> Result<()> {
    let sim = start(8, "")?;
    assert_eq!(sim.source.name(), "gpu");
    let out = collect(sim.source.as_ref())?;

    assert_eq!(value(&out, "vigil_gpu_count", &[]), Some(8.0));
    assert!(
        family(&out, "vigil_gpu_expected_count").is_none(),
        "expected_count 0 leaves it out"
    );
    for name in DCGM_FAMILIES {
        let fam = family(&out, name).with_context(|| format!("{name} missing"))?;
        assert_eq!(fam.samples.len(), 8, "{name}");
        assert_ne!(
            fam.kind,
            MetricKind::Counter,
            "{name} must keep dcgm's name, so it is not a counter"
        );
    }
    let util = family(&out, "DCGM_FI_DEV_GPU_UTIL").context("util")?;
    let mut uuids = BTreeSet::new();
    let mut buses = BTreeSet::new();
    for (i, s) in util.samples.iter().enumerate() {
        let names: Vec<&str> = s.labels.iter().map(|(k, _)| &**k).collect();
        assert_eq!(
            names,
            [
                "gpu",
                "UUID",
                "pci_bus_id",
                "device",
                "modelName",
                "Hostname"
            ]
        );
        assert_eq!(label(&s.labels, "gpu"), Some(i.to_string().as_str()));
        assert_eq!(
            label(&s.labels, "device"),
            Some(format!("nvidia{i}").as_str())
        );
        assert_eq!(label(&s.labels, "modelName"), Some("NVIDIA H100 80GB HBM3"));
        assert_eq!(label(&s.labels, "Hostname"), Some(NODE));
        let uuid = label(&s.labels, "UUID").context("uuid")?;
        assert!(is_uuid(uuid), "{uuid}");
        uuids.insert(uuid.to_owned());
        let bus = label(&s.labels, "pci_bus_id").context("bus")?;
        assert_eq!(bus.len(), "00000000:18:00.0".len(), "{bus}");
        buses.insert(bus.to_owned());
        assert!((0.0..=100.0).contains(&s.value));
    }
    assert_eq!(uuids.len(), 8, "UUIDs must be distinct");
    assert_eq!(buses.len(), 8, "PCI bus ids must be distinct");
    for i in 0..8 {
        let gpu = i.to_string();
        assert_eq!(value(&out, "vigil_gpu_up", &[("gpu", &gpu)]), Some(1.0));
        let temp = value(&out, "DCGM_FI_DEV_GPU_TEMP", &[("gpu", &gpu)]).context("temp")?;
        assert!((30.0..=75.0).contains(&temp), "temperature {temp}");
    }

    let xids = family(&out, "vigil_gpu_xid_errors_total").context("xid counter")?;
    assert_eq!(xids.kind, MetricKind::Counter);
    assert_eq!(
        xids.samples.len(),
        8 * 15,
        "every GPU x every alerting Xid starts at 0"
    );
    assert!(
        xids.samples
            .iter()
            .all(|s| s.value == 0.0 && s.created_unix_secs.is_some())
    );
    assert_eq!(
        family(&out, "vigil_gpu_throttle_active").map(|f| f.samples.len()),
        Some(8 * 9)
    );

    // Counters rise: energy integrates power over time.
    let energy = value(
        &out,
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        &[("gpu", "0")],
    )
    .context("energy")?;
    std::thread::sleep(Duration::from_millis(300));
    let later = collect(sim.source.as_ref())?;
    let energy2 = value(
        &later,
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        &[("gpu", "0")],
    )
    .context("energy")?;
    assert!(energy2 > energy, "energy {energy} -> {energy2}");
    Ok(())
}

#[test]
fn appended_xid_counts_exactly_once_and_unknown_codes_appear() -> Result<()> {
    let sim = start(8, "# no faults yet\n")?;
    let out = collect(sim.source.as_ref())?;
    let xid79 = [("gpu", "0"), ("xid", "79")];
    assert_eq!(value(&out, "vigil_gpu_xid_errors_total", &xid79), Some(0.0));
    assert_eq!(
        value(&out, "DCGM_FI_DEV_XID_ERRORS", &[("gpu", "0")]),
        Some(0.0)
    );

    let one = "[[xid]]\ngpu = 0\ncode = 79\n";
    write_faults(&sim.faults, one)?;
    wait_for(sim.source.as_ref(), "xid 79 on gpu 0", |out| {
        value(out, "vigil_gpu_xid_errors_total", &xid79) == Some(1.0)
    })?;
    // Rewritten with the same first entry plus a new one: only the new one arrives.
    write_faults(
        &sim.faults,
        &format!("{one}\n[[xid]]\ngpu = 2\ncode = 31337\n"),
    )?;
    let out = wait_for(sim.source.as_ref(), "xid 31337 on gpu 2", |out| {
        value(
            out,
            "vigil_gpu_xid_errors_total",
            &[("gpu", "2"), ("xid", "31337")],
        ) == Some(1.0)
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let out2 = collect(sim.source.as_ref())?;
    for out in [&out, &out2] {
        assert_eq!(value(out, "vigil_gpu_xid_errors_total", &xid79), Some(1.0));
        assert_eq!(
            value(out, "DCGM_FI_DEV_XID_ERRORS", &[("gpu", "2")]),
            Some(31337.0)
        );
        assert_eq!(
            value(out, "DCGM_FI_DEV_XID_ERRORS", &[("gpu", "0")]),
            Some(79.0)
        );
    }
    let uuid = value(
        &out2,
        "vigil_gpu_xid_errors_total",
        &[("gpu", "2"), ("xid", "31337")],
    );
    assert_eq!(uuid, Some(1.0));
    Ok(())
}

#[test]
fn lost_gpu_is_down_and_the_others_are_fully_reported() -> Result<()> {
    let sim = start(8, "")?;
    write_faults(&sim.faults, "[[gpu]]\nindex = 3\nlost = true\n")?;
    let out = wait_for(sim.source.as_ref(), "gpu 3 lost", |out| {
        value(out, "vigil_gpu_up", &[("gpu", "3")]) == Some(0.0)
    })?;
    for i in (0..8).filter(|i| *i != 3) {
        assert_eq!(
            value(&out, "vigil_gpu_up", &[("gpu", &i.to_string())]),
            Some(1.0)
        );
    }
    for name in DCGM_FAMILIES {
        let fam = family(&out, name).with_context(|| format!("{name} missing"))?;
        assert_eq!(fam.samples.len(), 7, "{name}");
        assert!(
            fam.samples
                .iter()
                .all(|s| label(&s.labels, "gpu") != Some("3")),
            "{name}"
        );
    }
    assert_eq!(value(&out, "vigil_gpu_count", &[]), Some(8.0));

    // The lost GPU's Xid 79 still counts against it, matched by its handle.
    write_faults(
        &sim.faults,
        "[[gpu]]\nindex = 3\nlost = true\n\n[[xid]]\ngpu = 3\ncode = 79\n",
    )?;
    wait_for(sim.source.as_ref(), "xid 79 on lost gpu 3", |out| {
        value(
            out,
            "vigil_gpu_xid_errors_total",
            &[("gpu", "3"), ("xid", "79")],
        ) == Some(1.0)
    })?;

    // Back on the bus: reported again.
    write_faults(&sim.faults, "[[xid]]\ngpu = 3\ncode = 79\n")?;
    wait_for(sim.source.as_ref(), "gpu 3 back", |out| {
        value(out, "vigil_gpu_up", &[("gpu", "3")]) == Some(1.0)
            && family(out, "DCGM_FI_DEV_GPU_UTIL").is_some_and(|f| f.samples.len() == 8)
    })?;
    Ok(())
}

#[test]
fn overrides_show_up_and_a_malformed_file_keeps_the_last_state() -> Result<()> {
    let sim = start(4, "")?;
    let faults = r#"
[[gpu]]
index = 1
temperature_c = 95
power_w = 690
utilization_pct = 100
ecc_sbe_volatile = 12
ecc_dbe_volatile = 1
retired_pages_pending = true
row_remap_failure = true
nvlink_crc_errors = 40
throttle = ["hw_slowdown", "hw_thermal"]
"#;
    write_faults(&sim.faults, faults)?;
    let gpu1 = [("gpu", "1")];
    let out = wait_for(sim.source.as_ref(), "gpu 1 at 95 C", |out| {
        value(out, "DCGM_FI_DEV_GPU_TEMP", &gpu1) == Some(95.0)
    })?;
    assert_eq!(value(&out, "DCGM_FI_DEV_POWER_USAGE", &gpu1), Some(690.0));
    assert_eq!(value(&out, "DCGM_FI_DEV_GPU_UTIL", &gpu1), Some(100.0));
    assert_eq!(
        value(&out, "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", &gpu1),
        Some(12.0)
    );
    assert_eq!(
        value(&out, "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", &gpu1),
        Some(1.0)
    );
    assert_eq!(value(&out, "DCGM_FI_DEV_RETIRED_PENDING", &gpu1), Some(1.0));
    assert_eq!(
        value(&out, "DCGM_FI_DEV_ROW_REMAP_FAILURE", &gpu1),
        Some(1.0)
    );
    assert_eq!(
        value(&out, "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", &gpu1),
        Some(1.0)
    );
    assert_eq!(
        value(&out, "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", &gpu1),
        Some(40.0)
    );
    assert_eq!(
        value(&out, "DCGM_FI_DEV_CLOCKS_EVENT_REASONS", &gpu1),
        Some((0x8 | 0x40) as f64)
    );
    for (reason, active) in [
        ("hw_slowdown", 1.0),
        ("hw_thermal", 1.0),
        ("sw_thermal", 0.0),
        ("gpu_idle", 0.0),
    ] {
        assert_eq!(
            value(
                &out,
                "vigil_gpu_throttle_active",
                &[("gpu", "1"), ("reason", reason)]
            ),
            Some(active),
            "{reason}"
        );
    }
    // The other GPUs are untouched.
    assert_eq!(
        value(&out, "DCGM_FI_DEV_ROW_REMAP_FAILURE", &[("gpu", "0")]),
        Some(0.0)
    );
    // Thermal throttling accumulates violation time.
    let violation = value(&out, "DCGM_FI_DEV_THERMAL_VIOLATION", &gpu1).context("violation")?;
    std::thread::sleep(Duration::from_millis(200));
    let later = collect(sim.source.as_ref())?;
    assert!(
        value(&later, "DCGM_FI_DEV_THERMAL_VIOLATION", &gpu1).context("violation")? > violation
    );

    // A file that does not parse changes nothing.
    let malformed = [
        "[[gpu]]\nindex = 1\ntemperature_c = hot\n",
        "[[gpu]]\nindex = 1\ntemprature_c = 20\n",
        "[[gpu]]\ntemperature_c = 20\n",
        "[[gpu]]\nindex = 1\nthrottle = [\"too_hot\"]\n",
        "temperature_c = 20\n",
        "[gpu]\nindex = 1\n",
        "[[xid]]\ngpu = 1\n",
    ];
    for text in malformed {
        write_faults(&sim.faults, text)?;
        std::thread::sleep(Duration::from_millis(250));
        let out = collect(sim.source.as_ref())?;
        assert_eq!(
            value(&out, "DCGM_FI_DEV_GPU_TEMP", &gpu1),
            Some(95.0),
            "{text}"
        );
        let failure = value(&out, "DCGM_FI_DEV_ROW_REMAP_FAILURE", &gpu1);
        assert_eq!(failure, Some(1.0), "{text}");
    }
    // And the next good file applies.
    write_faults(&sim.faults, "[[gpu]]\nindex = 1\ntemperature_c = 41\n")?;
    wait_for(sim.source.as_ref(), "gpu 1 at 41 C", |out| {
        value(out, "DCGM_FI_DEV_GPU_TEMP", &gpu1) == Some(41.0)
            && value(out, "DCGM_FI_DEV_ROW_REMAP_FAILURE", &gpu1) == Some(0.0)
    })?;
    Ok(())
}

#[test]
fn simulated_nodes_in_one_process_are_independent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let none = PathBuf::new();
    let a = gpu::open(&config(&dir.path().join("a"), 2, &none), "node-a")
        .map_err(anyhow::Error::msg)?
        .context("a")?;
    let b = gpu::open(&config(&dir.path().join("b"), 3, &none), "node-b")
        .map_err(anyhow::Error::msg)?
        .context("b")?;
    let out_a = collect(a.as_ref())?;
    let out_b = collect(b.as_ref())?;
    assert_eq!(value(&out_a, "vigil_gpu_count", &[]), Some(2.0));
    assert_eq!(value(&out_b, "vigil_gpu_count", &[]), Some(3.0));
    let uuid = |out: &[MetricFamily]| -> Option<String> {
        let s = family(out, "DCGM_FI_DEV_GPU_UTIL")?.samples.first()?;
        label(&s.labels, "UUID").map(str::to_owned)
    };
    assert_ne!(uuid(&out_a), uuid(&out_b), "the node name seeds the UUIDs");
    assert!(value(&out_b, "DCGM_FI_DEV_GPU_UTIL", &[("Hostname", "node-b")]).is_some());

    // The same node name gives the same UUIDs: stable across restarts.
    drop(a);
    let again = gpu::open(&config(&dir.path().join("c"), 2, &none), "node-a")
        .map_err(anyhow::Error::msg)?
        .context("again")?;
    assert_eq!(uuid(&collect(again.as_ref())?), uuid(&out_a));
    Ok(())
}

#[test]
fn expected_count_is_exported_when_configured() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = config(dir.path(), 2, Path::new(""));
    config.gpu.expected_count = 8;
    let source = gpu::open(&config, NODE)
        .map_err(anyhow::Error::msg)?
        .context("source")?;
    let out = collect(source.as_ref())?;
    assert_eq!(value(&out, "vigil_gpu_expected_count", &[]), Some(8.0));
    assert_eq!(value(&out, "vigil_gpu_count", &[]), Some(2.0));
    Ok(())
}

#[test]
fn off_and_broken_setups() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = AgentConfig {
        state_dir: dir.path().to_owned(),
        ..AgentConfig::default()
    };

    config.gpu.enabled = false;
    config.gpu.simulate_gpus = 8;
    assert!(
        gpu::open(&config, NODE)
            .map_err(anyhow::Error::msg)?
            .is_none(),
        "disabled wins"
    );

    // An operator who names a library expects it to load.
    config.gpu.enabled = true;
    config.gpu.simulate_gpus = 0;
    config.gpu.nvml_lib = dir.path().join("missing/libnvidia-ml.so.1");
    let err = gpu::open(&config, NODE)
        .err()
        .context("a missing nvml_lib must be an error")?;
    assert!(err.contains("missing/libnvidia-ml.so.1"), "{err}");

    // Simulation that cannot be prepared: the state dir is a file.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "")?;
    config.gpu.nvml_lib = PathBuf::new();
    config.gpu.simulate_gpus = 2;
    config.state_dir = file.clone();
    let err = gpu::open(&config, NODE)
        .err()
        .context("an unpreparable simulation must be an error")?;
    assert!(err.contains("not-a-dir"), "{err}");

    config.state_dir = dir.path().to_owned();
    config.gpu.simulate_gpus = 65;
    assert!(
        gpu::open(&config, NODE).is_err(),
        "more GPUs than simulated"
    );

    // The loader's default: no driver here is "off", a driver is "on"; never an error.
    config.gpu.simulate_gpus = 0;
    match gpu::open(&config, NODE).map_err(anyhow::Error::msg)? {
        None => {}
        Some(source) => assert_eq!(source.name(), "gpu"),
    }
    Ok(())
}

/// The GPU families pass `promtool check metrics` (tests/run.sh
/// installs promtool). Its lint objects to names the contract fixes: dcgm-exporter's
/// camelCase labels (`modelName`, `Hostname`, `UUID`), its `..._REPLAY_COUNTER` name,
/// and issue 2's `vigil_gpu_count`/`vigil_gpu_expected_count`; exactly those findings
/// are tolerated, any other (and any parse error) fails.
#[test]
fn exposition_passes_promtool() -> Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    use vigil_proto::exposition::{self, Format};

    let sim = start(
        8,
        "[[gpu]]\nindex = 2\nthrottle = [\"sw_power_cap\"]\n[[xid]]\ngpu = 1\ncode = 13\n",
    )?;
    wait_for(sim.source.as_ref(), "xid 13", |out| {
        value(
            out,
            "vigil_gpu_xid_errors_total",
            &[("gpu", "1"), ("xid", "13")],
        ) == Some(1.0)
    })?;
    let mut out = collect(sim.source.as_ref())?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    // promtool's parser reads only the classic text format (OpenMetrics' `unknown`
    // type is a parse error to it), so that is the format checked.
    let format = Format::Text;
    let mut text = String::new();
    exposition::encode(&out, format, &mut text);
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool (tests/run.sh installs it)")?;
    // promtool stops reading at a parse error; its report says why.
    let _ = child
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes());
    let result = child.wait_with_output()?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    let unexpected: Vec<&str> = report
        .lines()
        .filter(|line| !tolerated_lint(line))
        .collect();
    // Exit code 3 is "lint problems only"; 1 is a parse error.
    let code = result.status.code();
    assert!(
        (code == Some(0) || code == Some(3)) && unexpected.is_empty(),
        "{format:?}, exit {code:?}: {}",
        unexpected.join("\n")
    );

    // OpenMetrics carries each Xid counter's start time.
    let mut om = String::new();
    exposition::encode(&out, Format::OpenMetrics, &mut om);
    assert!(om.contains("# TYPE vigil_gpu_xid_errors counter\n"), "{om}");
    let created = om
        .lines()
        .filter(|l| l.starts_with("vigil_gpu_xid_errors_created{"))
        .count();
    assert_eq!(created, 8 * 15, "one _created per Xid series");
    assert!(om.ends_with("# EOF\n"));
    Ok(())
}

/// promtool lint findings that the names fixed by dcgm-exporter and issue 2 cause.
fn tolerated_lint(line: &str) -> bool {
    let line = line.trim();
    line.is_empty()
        || (line.starts_with("DCGM_FI_DEV_")
            && line.ends_with("label names should be written in 'snake_case' not 'camelCase'"))
        || line == "DCGM_FI_DEV_PCIE_REPLAY_COUNTER metric name should not include type 'counter'"
        || [
            "vigil_gpu_count non-histogram and non-summary metrics should not have \"_count\" suffix",
            "vigil_gpu_expected_count non-histogram and non-summary metrics should not have \"_count\" suffix",
        ]
        .contains(&line)
}
