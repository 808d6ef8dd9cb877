//! GPU metrics and health through NVML (nvml-wrapper), with dcgm-exporter's names.
//!
//! NVML is loaded at run time: a node without the NVIDIA driver runs fine and says once
//! that GPU collection is off. `--simulate-gpus` writes the simulated library (built
//! from `agent/nvml-sim/` by build.rs and embedded here) into the state directory and
//! loads it through the same `Nvml::builder().lib_path(..)` path as `--nvml-lib`, so
//! tests and demos exercise the real code path.
//!
//! Per cycle each GPU costs one NVML call per field: a dozen typed calls and one
//! `nvmlDeviceGetFieldValues` for the rest ([`gpu_fields::FIELD_VALUES`]). Xid events
//! arrive on a dedicated thread ([`gpu_events`]).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use nvml_wrapper::enum_wrappers::device::{Clock, PerformancePolicy, TemperatureSensor};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::device::FieldValueSample;
use nvml_wrapper::{Device, Nvml};
use vigil_proto::MetricFamily;

use super::gpu_events::{self, XidCounts, lock};
pub use super::gpu_events::{GpuXids, KnownGpu, XID_DEDUPE_WINDOW};
use super::gpu_fields::{self, Fam, THROTTLE_REASONS};
use super::{Source, SourceError};
use crate::config::AgentConfig;

/// The simulated NVML library, built by build.rs from `agent/nvml-sim/`.
static SIMULATED_NVML: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libnvidia-ml-sim.so"));

/// The most GPUs the simulated library models (`SIM_MAX_GPUS` in nvml_sim.h).
pub const MAX_SIMULATED_GPUS: u32 = 64;

/// A GPU's identity: dcgm-exporter's labels, read once.
#[derive(Debug, Clone)]
pub(super) struct GpuInfo {
    pub index: u32,
    pub uuid: String,
    pub pci_bus_id: String,
    pub device: String,
    pub model: String,
    /// NVML's device handle as a number, to attribute events to the GPU.
    pub handle: usize,
}

/// What the collector and the event thread share.
pub(super) struct Shared {
    pub nvml: Nvml,
    pub count: u32,
    /// Identity per GPU index; `None` until the GPU first answered.
    pub devices: Mutex<Vec<Option<GpuInfo>>>,
    pub xids: Mutex<XidCounts>,
    pub stop: AtomicBool,
}

/// The `gpu` source.
pub struct GpuSource {
    shared: Arc<Shared>,
    node_name: String,
    expected_count: u32,
    field_ids: Vec<nvml_wrapper::structs::device::FieldId>,
    events: Mutex<Option<JoinHandle<()>>>,
}

/// Opens NVML (the simulated library when `config.gpu.simulate_gpus > 0`, else
/// `config.gpu.nvml_lib` or the loader's `libnvidia-ml.so.1`). `Ok(None)` when GPU
/// collection is off (disabled, or no driver: logged once at info). `Err` only for a
/// broken setup the operator asked for: simulation requested but not preparable, or an
/// explicit `nvml_lib` that does not load. Starts the Xid event thread.
pub fn open(config: &AgentConfig, node_name: &str) -> Result<Option<Arc<dyn Source>>, String> {
    Ok(open_with_xids(config, node_name)?.map(|(source, _)| source))
}

/// The GPU source and the handle to its Xid counters.
pub type GpuWithXids = (Arc<dyn Source>, GpuXids);

/// [`open`], with the handle through which the kernel log reader counts the Xids it
/// parses into the same (de-duplicated) counters.
pub fn open_with_xids(
    config: &AgentConfig,
    node_name: &str,
) -> Result<Option<GpuWithXids>, String> {
    let gpu = &config.gpu;
    if !gpu.enabled {
        tracing::info!("GPU collection is off: disabled in the configuration");
        return Ok(None);
    }
    let nvml = if gpu.simulate_gpus > 0 {
        let lib = prepare_simulation(
            &config.state_dir,
            gpu.simulate_gpus,
            &gpu.simulate_faults,
            node_name,
        )?;
        init_from(&lib).map_err(|e| format!("loading the simulated NVML {}: {e}", lib.display()))?
    } else if !gpu.nvml_lib.as_os_str().is_empty() {
        init_from(&gpu.nvml_lib)
            .map_err(|e| format!("loading NVML from {}: {e}", gpu.nvml_lib.display()))?
    } else {
        match Nvml::init() {
            Ok(nvml) => nvml,
            Err(e @ (NvmlError::LibloadingError(_) | NvmlError::DriverNotLoaded)) => {
                tracing::info!("GPU collection is off: {e}");
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!("GPU collection is off: NVML did not initialise: {e}");
                return Ok(None);
            }
        }
    };
    let source = GpuSource::start(nvml, node_name, gpu.expected_count)
        .map_err(|e| format!("counting GPUs: {e}"))?;
    let xids = GpuXids::new(Arc::clone(&source.shared));
    Ok(Some((Arc::new(source), xids)))
}

fn init_from(path: &Path) -> Result<Nvml, NvmlError> {
    Nvml::builder()
        .lib_path(OsStr::new(path.as_os_str()))
        .init()
}

/// Writes the simulated library and its settings to `<state_dir>/nvml-sim/` and
/// returns the library's path. Each state directory gets its own copy, and the
/// loader gives each file its own instance, so simulated nodes stay independent.
pub fn prepare_simulation(
    state_dir: &Path,
    gpus: u32,
    faults: &Path,
    node_name: &str,
) -> Result<PathBuf, String> {
    if gpus > MAX_SIMULATED_GPUS {
        return Err(format!(
            "simulate_gpus is {gpus}; the simulation models at most {MAX_SIMULATED_GPUS}"
        ));
    }
    let faults = if faults.as_os_str().is_empty() {
        PathBuf::new()
    } else {
        std::path::absolute(faults).map_err(|e| format!("resolving {}: {e}", faults.display()))?
    };
    let faults_text = faults
        .to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", faults.display()))?;
    if faults_text.contains('\n') || node_name.contains('\n') {
        return Err("the faults path and node name must not contain a newline".to_owned());
    }
    let dir = state_dir.join("nvml-sim");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let settings = format!("gpus={gpus}\nfaults={faults_text}\nseed={node_name}\n");
    write_replacing(&dir.join("nvml-sim.conf"), settings.as_bytes())?;
    let lib = dir.join("libnvidia-ml.so.1");
    write_replacing(&lib, SIMULATED_NVML)?;
    Ok(lib)
}

/// Writes through a temporary file and a rename, so a copy that another process (an
/// earlier agent still running) has mapped is replaced, never overwritten in place.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {}: {e}", path.display())
    })
}

pub(super) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Reads a GPU's identity (dcgm-exporter's labels).
fn read_info(device: &Device<'_>, index: u32) -> Result<GpuInfo, NvmlError> {
    let uuid = device.uuid()?;
    let pci_bus_id = device.pci_info()?.bus_id;
    let minor = device.minor_number()?;
    let model = device.name()?;
    // SAFETY: the handle is kept only as a number to compare event handles against.
    let handle = unsafe { device.handle() } as usize;
    Ok(GpuInfo {
        index,
        uuid,
        pci_bus_id,
        device: format!("nvidia{minor}"),
        model,
        handle,
    })
}

impl GpuSource {
    fn start(nvml: Nvml, node_name: &str, expected_count: u32) -> Result<Self, NvmlError> {
        let count = nvml.device_count()?;
        let now = unix_now();
        let mut devices = Vec::with_capacity(count as usize);
        let mut xids = XidCounts::default();
        for index in 0..count {
            let info = nvml
                .device_by_index(index)
                .and_then(|d| read_info(&d, index));
            match info {
                Ok(info) => {
                    xids.preinitialise(index, now);
                    devices.push(Some(info));
                }
                Err(e) => {
                    tracing::warn!(gpu = index, error = %e, "gpu: GPU does not answer");
                    devices.push(None);
                }
            }
        }
        tracing::info!(gpus = count, "GPU collection is on");
        let shared = Arc::new(Shared {
            nvml,
            count,
            devices: Mutex::new(devices),
            xids: Mutex::new(xids),
            stop: AtomicBool::new(false),
        });
        let thread_shared = Arc::clone(&shared);
        let events = std::thread::Builder::new()
            .name("gpu-xid-events".to_owned())
            .spawn(move || gpu_events::run(thread_shared))
            .map_err(|e| {
                tracing::warn!(error = %e, "gpu: cannot start the Xid event thread");
            })
            .ok();
        Ok(Self {
            shared,
            node_name: node_name.to_owned(),
            expected_count,
            field_ids: gpu_fields::field_ids(),
            events: Mutex::new(events),
        })
    }

    /// Reads one GPU's values into `values` and returns its clock event reason bits when
    /// NVML gave them; `Err` only when the GPU is gone (lost, fell off the bus), in
    /// which case nothing of it is reported.
    fn read_gpu(
        &self,
        device: &Device<'_>,
        values: &mut Vec<(Fam, f64)>,
    ) -> Result<Option<u64>, NvmlError> {
        let mut throttle_bits = None;
        {
            let mut put = |fam: Fam, r: Result<f64, NvmlError>| -> Result<(), NvmlError> {
                match r {
                    Ok(v) => values.push((fam, v)),
                    Err(e) => fail_field(fam, e)?,
                }
                Ok(())
            };
            match device.utilization_rates() {
                Ok(u) => {
                    put(Fam::GpuUtil, Ok(f64::from(u.gpu)))?;
                    put(Fam::MemCopyUtil, Ok(f64::from(u.memory)))?;
                }
                Err(e) => fail_field(Fam::GpuUtil, e)?,
            }
            put(
                Fam::EncUtil,
                device
                    .encoder_utilization()
                    .map(|u| f64::from(u.utilization)),
            )?;
            put(
                Fam::DecUtil,
                device
                    .decoder_utilization()
                    .map(|u| f64::from(u.utilization)),
            )?;
            match device.memory_info() {
                Ok(m) => {
                    put(Fam::FbFree, Ok(mib(m.free)))?;
                    put(Fam::FbUsed, Ok(mib(m.used)))?;
                    put(Fam::FbReserved, Ok(mib(m.reserved)))?;
                }
                Err(e) => fail_field(Fam::FbUsed, e)?,
            }
            put(
                Fam::GpuTemp,
                device.temperature(TemperatureSensor::Gpu).map(f64::from),
            )?;
            put(
                Fam::PowerUsage,
                device.power_usage().map(|mw| f64::from(mw) / 1000.0),
            )?;
            put(
                Fam::TotalEnergy,
                device.total_energy_consumption().map(|mj| mj as f64),
            )?;
            put(Fam::SmClock, device.clock_info(Clock::SM).map(f64::from))?;
            put(
                Fam::MemClock,
                device.clock_info(Clock::Memory).map(f64::from),
            )?;
            // NVML reports violation time in ns; dcgm-exporter in µs.
            put(
                Fam::ThermalViolation,
                device
                    .violation_status(PerformancePolicy::Thermal)
                    .map(|v| (v.violation_time / 1000) as f64),
            )?;
            put(
                Fam::PowerViolation,
                device
                    .violation_status(PerformancePolicy::Power)
                    .map(|v| (v.violation_time / 1000) as f64),
            )?;
            match device.current_throttle_reasons() {
                Ok(r) => {
                    throttle_bits = Some(r.bits());
                    put(Fam::ClocksEventReasons, Ok(r.bits() as f64))?;
                }
                Err(e) => fail_field(Fam::ClocksEventReasons, e)?,
            }
            match device.field_values_for(&self.field_ids) {
                Ok(samples) => {
                    for ((_, fam), sample) in gpu_fields::FIELD_VALUES.iter().zip(samples) {
                        put(*fam, field_value(sample))?;
                    }
                }
                Err(e) => fail_field(Fam::MemoryTemp, e)?,
            }
        }
        Ok(throttle_bits)
    }
}

/// A field that failed: left out, unless the whole GPU is gone.
fn fail_field(fam: Fam, e: NvmlError) -> Result<(), NvmlError> {
    match e {
        NvmlError::GpuLost => Err(e),
        NvmlError::NotSupported => Ok(()),
        other => {
            tracing::debug!(field = ?fam, error = %other, "gpu: field unavailable");
            Ok(())
        }
    }
}

fn field_value(sample: Result<FieldValueSample, NvmlError>) -> Result<f64, NvmlError> {
    Ok(match sample?.value? {
        SampleValue::F64(v) => v,
        SampleValue::U32(v) => f64::from(v),
        SampleValue::U64(v) => v as f64,
        SampleValue::I64(v) => v as f64,
    })
}

fn mib(bytes: u64) -> f64 {
    (bytes / (1024 * 1024)) as f64
}

impl Source for GpuSource {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        let shared = &self.shared;
        let now = unix_now();
        let mut dcgm = gpu_fields::new_dcgm_families();
        let mut up = MetricFamily::gauge(
            "vigil_gpu_up",
            "1 when the GPU answers NVML, 0 when it fell off the bus or NVML reports it lost.",
        );
        let mut throttle = MetricFamily::gauge(
            "vigil_gpu_throttle_active",
            "1 while the GPU's clocks are held down for this reason (NVML clock event reasons).",
        );
        let mut values = Vec::with_capacity(gpu_fields::DCGM_FAMILIES.len());
        for index in 0..shared.count {
            let gpu_label = index.to_string();
            values.clear();
            let result = shared.nvml.device_by_index(index).and_then(|device| {
                let info = self.known_info(&device, index, now)?;
                let bits = self.read_gpu(&device, &mut values)?;
                Ok((info, bits))
            });
            let (info, bits) = match result {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::debug!(gpu = index, error = %e, "gpu: GPU does not answer");
                    up.push(&[("gpu", &gpu_label)], 0.0);
                    continue;
                }
            };
            up.push(&[("gpu", &gpu_label)], 1.0);
            let labels = [
                ("gpu", gpu_label.as_str()),
                ("UUID", info.uuid.as_str()),
                ("pci_bus_id", info.pci_bus_id.as_str()),
                ("device", info.device.as_str()),
                ("modelName", info.model.as_str()),
                ("Hostname", self.node_name.as_str()),
            ];
            for (fam, value) in &values {
                dcgm[*fam as usize].push(&labels, *value);
            }
            let last_xid = lock(&shared.xids).last.get(&index).copied().unwrap_or(0);
            dcgm[Fam::XidErrors as usize].push(&labels, last_xid as f64);
            if let Some(bits) = bits {
                for (reason, bit) in THROTTLE_REASONS {
                    let active = if bits & bit != 0 { 1.0 } else { 0.0 };
                    throttle.push(&[("gpu", &gpu_label), ("reason", reason)], active);
                }
            }
        }

        out.extend(dcgm.into_iter().filter(|f| !f.samples.is_empty()));
        out.push(
            MetricFamily::gauge("vigil_gpu_count", "GPUs that NVML reports on this node.")
                .with(&[], f64::from(shared.count)),
        );
        if self.expected_count > 0 {
            out.push(
                MetricFamily::gauge(
                    "vigil_gpu_expected_count",
                    "GPUs this node should have (configuration); compare with vigil_gpu_count.",
                )
                .with(&[], f64::from(self.expected_count)),
            );
        }
        out.push(up);
        if !throttle.samples.is_empty() {
            out.push(throttle);
        }
        out.push(self.xid_family());
        Ok(())
    }
}

impl GpuSource {
    /// The GPU's identity, read on first success (a GPU lost at start is learnt when it
    /// comes back), and its Xid counters started then.
    fn known_info(&self, device: &Device<'_>, index: u32, now: f64) -> Result<GpuInfo, NvmlError> {
        let mut devices = lock(&self.shared.devices);
        if let Some(Some(info)) = devices.get(index as usize) {
            return Ok(info.clone());
        }
        let info = read_info(device, index)?;
        if let Some(slot) = devices.get_mut(index as usize) {
            *slot = Some(info.clone());
        }
        lock(&self.shared.xids).preinitialise(index, now);
        Ok(info)
    }

    fn xid_family(&self) -> MetricFamily {
        let mut family = MetricFamily::counter(
            "vigil_gpu_xid_errors_total",
            "Xid errors reported by the NVIDIA driver (NVML events and kernel log NVRM lines, the same event counted once), by GPU and Xid code.",
        );
        let devices = lock(&self.shared.devices);
        let xids = lock(&self.shared.xids);
        for (&(gpu, xid), counter) in &xids.counters {
            let uuid = devices
                .get(gpu as usize)
                .and_then(|d| d.as_ref())
                .map_or("", |d| d.uuid.as_str());
            family.push_counter(
                &[
                    ("gpu", &gpu.to_string()),
                    ("UUID", uuid),
                    ("xid", &xid.to_string()),
                ],
                counter.count as f64,
                counter.created_unix_secs,
            );
        }
        family
    }
}

impl Drop for GpuSource {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = lock(&self.events).take() {
            // Returns within one event wait (250 ms).
            let _ = thread.join();
        }
    }
}
