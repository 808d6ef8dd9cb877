//! The Xid event thread: NVML delivers Xids as events on an event set, and waiting on
//! one blocks the calling thread, so a dedicated std thread waits with a short timeout
//! (to notice shutdown) and counts what arrives into [`XidCounts`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, EventSet, Nvml};

use super::gpu::Shared;
use super::gpu_fields::PREINITIALISED_XIDS;

/// How long one wait blocks; bounds how long shutdown waits for the thread.
const WAIT_TIMEOUT_MS: u32 = 250;
/// How often GPUs that could not be registered (lost, not yet seen) are tried again.
const REREGISTER_EVERY: Duration = Duration::from_secs(10);
/// NVML reports an Xid it cannot decode as 999.
const UNKNOWN_XID: u64 = 999;

/// How long an Xid seen by one path (NVML event, kernel log) waits for the same Xid
/// from the other path, which then counts once instead of twice.
pub const XID_DEDUPE_WINDOW: Duration = Duration::from_secs(5);
/// Most Xids waiting for their twin; a burst beyond it is counted as distinct events.
const XID_DEDUPE_MAX: usize = 4096;

/// Which path reported an Xid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XidOrigin {
    Nvml,
    Kernel,
}

/// One `vigil_gpu_xid_errors_total` series.
#[derive(Debug, Clone, PartialEq)]
pub struct XidCounter {
    pub count: u64,
    pub created_unix_secs: f64,
}

/// Xid counts per (GPU index, Xid code), and the last Xid per GPU for dcgm's
/// `DCGM_FI_DEV_XID_ERRORS`.
#[derive(Debug, Default)]
pub struct XidCounts {
    pub counters: BTreeMap<(u32, u64), XidCounter>,
    pub last: BTreeMap<u32, u64>,
    /// Xids counted recently that the other path has not reported yet:
    /// (gpu, xid, who counted it, when).
    unmatched: VecDeque<(u32, u64, XidOrigin, Instant)>,
}

impl XidCounts {
    /// Starts the alerting codes at 0 for a GPU, once, when its identity is first known.
    pub fn preinitialise(&mut self, gpu: u32, now_unix_secs: f64) {
        for &xid in PREINITIALISED_XIDS {
            self.counters.entry((gpu, xid)).or_insert(XidCounter {
                count: 0,
                created_unix_secs: now_unix_secs,
            });
        }
    }

    /// Counts an Xid reported by `origin`, unless the other path reported the same Xid
    /// for the same GPU within [`XID_DEDUPE_WINDOW`] and it has not been paired yet (the
    /// driver logs each Xid it also sends as an NVML event). Pairs one to one, so a
    /// burst of N identical Xids seen by both paths counts N. True when counted.
    pub fn record_from(
        &mut self,
        gpu: u32,
        xid: u64,
        origin: XidOrigin,
        at: Instant,
        now_unix_secs: f64,
    ) -> bool {
        while self
            .unmatched
            .front()
            .is_some_and(|e| at.saturating_duration_since(e.3) > XID_DEDUPE_WINDOW)
        {
            self.unmatched.pop_front();
        }
        if let Some(twin) = self
            .unmatched
            .iter()
            .position(|e| e.0 == gpu && e.1 == xid && e.2 != origin)
        {
            self.unmatched.remove(twin);
            return false;
        }
        if self.unmatched.len() >= XID_DEDUPE_MAX {
            self.unmatched.pop_front();
        }
        self.unmatched.push_back((gpu, xid, origin, at));
        self.record(gpu, xid, now_unix_secs);
        true
    }

    pub fn record(&mut self, gpu: u32, xid: u64, now_unix_secs: f64) {
        self.counters
            .entry((gpu, xid))
            .or_insert(XidCounter {
                count: 0,
                created_unix_secs: now_unix_secs,
            })
            .count += 1;
        self.last.insert(gpu, xid);
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain counters behind, still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The thread's body: registers every GPU for Xid events and counts them until
/// `shared.stop` is set.
pub(super) fn run(shared: Arc<Shared>) {
    let nvml = &shared.nvml;
    let set = match nvml.create_event_set() {
        Ok(set) => set,
        Err(e) => {
            tracing::warn!(error = %e, "gpu: cannot create an NVML event set; Xid counters will not move");
            return;
        }
    };
    let mut registered = vec![false; shared.count as usize];
    register_new(&shared, &set, &mut registered);
    let mut last_register = Instant::now();
    let mut failing = false;
    while !shared.stop.load(Ordering::Acquire) {
        match set.wait(WAIT_TIMEOUT_MS) {
            Ok(event) => {
                failing = false;
                if let Some(xid) = event.event_data {
                    let code = match xid {
                        XidError::Value(v) => v,
                        XidError::Unknown => UNKNOWN_XID,
                    };
                    count_event(&shared, &event.device, code);
                }
            }
            Err(NvmlError::Timeout) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "gpu: waiting for NVML events failed");
                    failing = true;
                }
                std::thread::sleep(Duration::from_millis(u64::from(WAIT_TIMEOUT_MS)));
            }
        }
        if last_register.elapsed() >= REREGISTER_EVERY && registered.iter().any(|r| !r) {
            register_new(&shared, &set, &mut registered);
            last_register = Instant::now();
        }
    }
}

/// Registers the GPUs not registered yet. The raw call is used because nvml-wrapper's
/// `register_events` frees the whole set when one GPU refuses (a lost GPU does), which
/// would silence the healthy ones.
fn register_new(shared: &Shared, set: &EventSet<'_>, registered: &mut [bool]) {
    let nvml: &Nvml = &shared.nvml;
    let Ok(register) = nvml.lib().nvmlDeviceRegisterEvents.as_ref() else {
        tracing::warn!(
            "gpu: the NVML library has no nvmlDeviceRegisterEvents; Xid counters will not move"
        );
        registered.fill(true);
        return;
    };
    for (index, done) in (0u32..).zip(registered.iter_mut()) {
        if *done {
            continue;
        }
        let Ok(device) = nvml.device_by_index(index) else {
            continue;
        };
        match device.supported_event_types() {
            Ok(types) if types.contains(EventTypes::CRITICAL_XID_ERROR) => {}
            Ok(_) | Err(NvmlError::NotSupported) => {
                *done = true;
                continue;
            }
            Err(_) => continue,
        }
        // SAFETY: `device` and `set` are live handles of this `Nvml` for the whole call,
        // and registering does not take ownership of either.
        let rc = unsafe {
            register(
                device.handle(),
                EventTypes::CRITICAL_XID_ERROR.bits(),
                set.handle(),
            )
        };
        if rc == 0 {
            *done = true;
        } else {
            tracing::debug!(
                gpu = index,
                code = rc,
                "gpu: registering for Xid events failed"
            );
        }
    }
}

/// Counts one Xid against the GPU it came from: by handle first (works for a GPU that
/// has since fallen off the bus and answers nothing), then by UUID and index for an
/// event whose handle was never seen.
fn count_event(shared: &Shared, device: &Device<'_>, code: u64) {
    // SAFETY: the handle is only compared as a number, never dereferenced.
    let handle = unsafe { device.handle() } as usize;
    let now = super::gpu::unix_now();
    let gpu = {
        let devices = lock(&shared.devices);
        let by_handle = devices
            .iter()
            .flatten()
            .find(|d| d.handle == handle)
            .map(|d| d.index);
        by_handle.or_else(|| {
            let uuid = device.uuid().ok()?;
            devices
                .iter()
                .flatten()
                .find(|d| d.uuid == uuid)
                .map(|d| d.index)
        })
    }
    .or_else(|| device.index().ok());
    match gpu {
        Some(gpu) => {
            tracing::warn!(gpu, xid = code, "gpu: Xid error");
            lock(&shared.xids).record_from(gpu, code, XidOrigin::Nvml, Instant::now(), now);
        }
        None => tracing::warn!(
            xid = code,
            "gpu: Xid error from a GPU that cannot be identified"
        ),
    }
}

/// A GPU as the kernel log path needs it: its index, UUID and NVML PCI bus id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownGpu {
    pub index: u32,
    pub uuid: String,
    pub pci_bus_id: String,
}

/// The GPU source's Xid counters as the kernel log reader feeds them: one counter for
/// both paths, de-duplicated (see [`XidCounts::record_from`]).
#[derive(Clone)]
pub struct GpuXids {
    shared: Arc<Shared>,
}

impl GpuXids {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The GPUs whose identity is known so far.
    pub fn gpus(&self) -> Vec<KnownGpu> {
        lock(&self.shared.devices)
            .iter()
            .flatten()
            .map(|d| KnownGpu {
                index: d.index,
                uuid: d.uuid.clone(),
                pci_bus_id: d.pci_bus_id.clone(),
            })
            .collect()
    }

    /// Counts an Xid read from the kernel log; false when NVML already counted it.
    pub fn record_kernel_xid(&self, gpu: u32, xid: u64) -> bool {
        let counted = lock(&self.shared.xids).record_from(
            gpu,
            xid,
            XidOrigin::Kernel,
            Instant::now(),
            super::gpu::unix_now(),
        );
        if counted {
            tracing::warn!(gpu, xid, "gpu: Xid error in the kernel log");
        }
        counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_counts_and_remembers_the_last() {
        let mut counts = XidCounts::default();
        counts.preinitialise(0, 10.0);
        assert_eq!(counts.counters[&(0, 79)].count, 0);
        counts.record(0, 79, 20.0);
        counts.record(0, 31337, 21.0);
        assert_eq!(counts.counters[&(0, 79)].count, 1);
        assert_eq!(counts.counters[&(0, 79)].created_unix_secs, 10.0);
        assert_eq!(counts.counters[&(0, 31337)].count, 1);
        assert_eq!(counts.counters[&(0, 31337)].created_unix_secs, 21.0);
        assert_eq!(counts.last[&0], 31337);
        counts.preinitialise(0, 30.0);
        assert_eq!(
            counts.counters[&(0, 79)].count,
            1,
            "preinitialising again resets nothing"
        );
    }

    #[test]
    fn the_same_xid_from_both_paths_counts_once() {
        let mut counts = XidCounts::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // NVML first, the kernel line 40 ms later: one event.
        assert!(counts.record_from(0, 79, XidOrigin::Nvml, ms(0), 1.0));
        assert!(!counts.record_from(0, 79, XidOrigin::Kernel, ms(40), 1.0));
        assert_eq!(counts.counters[&(0, 79)].count, 1);
        // Kernel first works the same way.
        assert!(counts.record_from(1, 13, XidOrigin::Kernel, ms(100), 1.0));
        assert!(!counts.record_from(1, 13, XidOrigin::Nvml, ms(120), 1.0));
        assert_eq!(counts.counters[&(1, 13)].count, 1);
        // A burst: three from each path pair one to one.
        for i in 0..3 {
            counts.record_from(1, 13, XidOrigin::Nvml, ms(200 + i), 1.0);
        }
        for i in 0..3 {
            counts.record_from(1, 13, XidOrigin::Kernel, ms(210 + i), 1.0);
        }
        assert_eq!(counts.counters[&(1, 13)].count, 4);
        // Two from the same path are two events; another GPU or code is not a twin.
        assert!(counts.record_from(0, 79, XidOrigin::Kernel, ms(300), 1.0));
        assert!(counts.record_from(0, 79, XidOrigin::Kernel, ms(301), 1.0));
        assert!(counts.record_from(2, 79, XidOrigin::Nvml, ms(302), 1.0));
        assert!(counts.record_from(0, 48, XidOrigin::Nvml, ms(303), 1.0));
        assert_eq!(counts.counters[&(0, 79)].count, 3);
        // Outside the window the other path's report is a new event.
        assert!(counts.record_from(
            0,
            79,
            XidOrigin::Nvml,
            ms(300) + XID_DEDUPE_WINDOW + Duration::from_millis(302),
            1.0
        ));
        assert_eq!(counts.counters[&(0, 79)].count, 4);
    }
}
