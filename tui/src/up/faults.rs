//! The demo's fault injector: now and then a fault on one GPU of one simulated node,
//! written into that node's faults file (format: agent/nvml-sim/README.md), held for a
//! while and cleared again, so the embedded GPU rule pack's alerts fire and resolve.
//!
//! Which fault comes next and what a faults file says are pure functions ([`plan`],
//! [`NodeFaults::render`]); [`run`] only sleeps, writes files and says what it did.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::Say;

/// When faults come and go.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// After start, so a newcomer sees an alert within a minute.
    pub first_after: Duration,
    /// Time between two faults.
    pub every: Duration,
    /// How long a fault stays in its file before it is cleared; longer than `every`, so
    /// two faults overlap for a while.
    pub held_for: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            first_after: Duration::from_secs(8),
            every: Duration::from_secs(45),
            held_for: Duration::from_secs(60),
        }
    }
}

/// GPUs of a simulated node (`vigil up --demo` gives each node eight).
pub const GPUS_PER_NODE: u32 = 8;

/// A fault the GPU pack recognises without a long `for:`, so its alert fires within
/// one or two rule evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `ecc_dbe_volatile`: GpuEccDoubleBitError, resolved as soon as it is cleared.
    EccDoubleBit,
    /// Xid 48: GpuXidUncorrectableMemoryError, resolved once the Xid is 5 min old.
    XidUncorrectableMemory,
    /// `row_remap_failure`: GpuRowRemapFailure, resolved as soon as it is cleared.
    RowRemapFailure,
    /// NVLink CRC errors: GpuNvlinkCrcErrors and GpuNvlinkReplayErrors, resolved once
    /// the counters have not grown for 10 min.
    NvlinkCrcErrors,
    /// Xid 13: GpuXidApplicationError, resolved once the Xid is 5 min old.
    XidApplication,
}

/// The order faults come in; the first one fires and resolves fastest.
const ROTATION: [FaultKind; 5] = [
    FaultKind::EccDoubleBit,
    FaultKind::XidUncorrectableMemory,
    FaultKind::RowRemapFailure,
    FaultKind::NvlinkCrcErrors,
    FaultKind::XidApplication,
];

impl FaultKind {
    pub fn describe(self) -> &'static str {
        match self {
            Self::EccDoubleBit => "double-bit ECC error",
            Self::XidUncorrectableMemory => "Xid 48 (uncorrectable memory error)",
            Self::RowRemapFailure => "row remap failure",
            Self::NvlinkCrcErrors => "NVLink CRC errors",
            Self::XidApplication => "Xid 13 (application error)",
        }
    }

    /// The alert the GPU pack raises for it.
    pub fn alert(self) -> &'static str {
        match self {
            Self::EccDoubleBit => "GpuEccDoubleBitError",
            Self::XidUncorrectableMemory => "GpuXidUncorrectableMemoryError",
            Self::RowRemapFailure => "GpuRowRemapFailure",
            Self::NvlinkCrcErrors => "GpuNvlinkCrcErrors",
            Self::XidApplication => "GpuXidApplicationError",
        }
    }

    /// When its alert resolves after the fault is cleared.
    pub fn resolves(self) -> &'static str {
        match self {
            Self::EccDoubleBit | Self::RowRemapFailure => "at the next evaluation",
            Self::XidUncorrectableMemory | Self::XidApplication => "once the Xid is 5 minutes old",
            Self::NvlinkCrcErrors => "once the counters have not grown for 10 minutes",
        }
    }

    /// The Xid code it delivers as an event, if it is one.
    fn xid(self) -> Option<u32> {
        match self {
            Self::XidUncorrectableMemory => Some(48),
            Self::XidApplication => Some(13),
            _ => None,
        }
    }

    /// Its `[[gpu]]` keys, if it overrides a GPU's state.
    fn gpu_keys(self) -> Option<&'static str> {
        match self {
            Self::EccDoubleBit => Some("ecc_dbe_volatile = 1"),
            Self::RowRemapFailure => Some("row_remap_failure = true"),
            Self::NvlinkCrcErrors => Some("nvlink_crc_errors = 40"),
            _ => None,
        }
    }
}

/// One fault: which node (index into the demo nodes), which GPU, what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub node: usize,
    pub gpu: u32,
    pub kind: FaultKind,
}

/// The `n`th fault (from 0) among `nodes` nodes: nodes in turn, kinds in turn, and a
/// GPU that moves on by three each time, so overlapping faults never share a GPU.
pub fn plan(n: usize, nodes: usize) -> Fault {
    Fault {
        node: n % nodes.max(1),
        gpu: u32::try_from((n * 3 + 1) % GPUS_PER_NODE as usize).unwrap_or(0),
        kind: ROTATION[n % ROTATION.len()],
    }
}

/// What one node's faults file holds: the faults in force and every Xid injected so
/// far. Xids stay in the file after their fault is cleared, because the simulated
/// library delivers each entry once and its cursor never moves back: dropping an old
/// entry would shift the list under it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFaults {
    active: Vec<(u32, FaultKind)>,
    xids: Vec<(u32, u32)>,
}

impl NodeFaults {
    pub fn inject(&mut self, gpu: u32, kind: FaultKind) {
        if let Some(code) = kind.xid() {
            self.xids.push((gpu, code));
        }
        self.active.push((gpu, kind));
    }

    pub fn clear(&mut self, gpu: u32, kind: FaultKind) {
        if let Some(i) = self.active.iter().position(|&f| f == (gpu, kind)) {
            self.active.remove(i);
        }
    }

    /// The faults file's text.
    pub fn render(&self) -> String {
        let mut text = String::from(
            "# Written by `vigil up --demo`'s fault injector; format: agent/nvml-sim/README.md\n",
        );
        for &(gpu, kind) in &self.active {
            if let Some(keys) = kind.gpu_keys() {
                text.push_str(&format!("\n[[gpu]]\nindex = {gpu}\n{keys}\n"));
            }
        }
        for &(gpu, code) in &self.xids {
            text.push_str(&format!("\n[[xid]]\ngpu = {gpu}\ncode = {code}\n"));
        }
        text
    }
}

/// A simulated node as the injector sees it.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub faults_file: PathBuf,
    /// Where the node's demo `reset-gpu` leaves reset requests: one file per action,
    /// holding the GPU index. `None`: no resets.
    pub resets_dir: Option<PathBuf>,
}

/// How often the injector looks for reset requests.
const RESET_POLL: Duration = Duration::from_millis(250);

impl FaultKind {
    /// A GPU reset clears it (the volatile ECC counters start again from 0).
    fn cleared_by_reset(self) -> bool {
        self == Self::EccDoubleBit
    }
}

/// The reset requests waiting in `dir`, as GPU indices; each request file is removed.
/// A file that does not hold a GPU index is removed and ignored.
fn take_resets(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut gpus = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        // A request being written is a dot-file until it is renamed.
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = e.path();
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(gpu) = text.trim().parse::<u32>()
        {
            gpus.push(gpu);
        }
        let _ = std::fs::remove_file(&path);
    }
    gpus
}

/// Writes through a temporary file and a rename, as the simulated library asks, so it
/// never reads a half-written file.
pub fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Injects faults on `schedule` until `stop` resolves. A file that cannot be written is
/// reported and skipped; the demo carries on.
pub async fn run(
    targets: Vec<Target>,
    schedule: Schedule,
    say: Say,
    stop: impl Future<Output = ()>,
) {
    if targets.is_empty() {
        return;
    }
    tokio::pin!(stop);
    let mut files = vec![NodeFaults::default(); targets.len()];
    let mut next_fault = Instant::now() + schedule.first_after;
    let mut count = 0;
    // Faults in force, with when each is cleared; in order of injection, so the first
    // is always the next to clear.
    let mut pending: std::collections::VecDeque<(Instant, Fault)> = Default::default();
    let resets = targets.iter().any(|t| t.resets_dir.is_some());
    let mut next_poll = Instant::now() + RESET_POLL;
    loop {
        let next_clear = pending.front().map(|(at, _)| *at);
        let mut wake = next_clear.map_or(next_fault, |c| c.min(next_fault));
        if resets {
            wake = wake.min(next_poll);
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        if resets && next_poll <= now {
            next_poll = now + RESET_POLL;
            for (node, target) in targets.iter().enumerate() {
                let Some(dir) = target.resets_dir.clone() else {
                    continue;
                };
                let gpus = tokio::task::spawn_blocking(move || take_resets(&dir))
                    .await
                    .unwrap_or_default();
                for gpu in gpus {
                    let cleared: Vec<Fault> = pending
                        .iter()
                        .map(|&(_, f)| f)
                        .filter(|f| f.node == node && f.gpu == gpu && f.kind.cleared_by_reset())
                        .collect();
                    pending.retain(|(_, f)| !cleared.contains(f));
                    for f in &cleared {
                        files[node].clear(f.gpu, f.kind);
                    }
                    let (path, text) = (target.faults_file.clone(), files[node].render());
                    let written = tokio::task::spawn_blocking(move || write_file(&path, &text))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                    match (written, cleared.first()) {
                        (Err(e), _) => say.line(format_args!(
                            "demo reset: writing {} failed: {e}",
                            target.faults_file.display()
                        )),
                        (Ok(()), Some(f)) => say.line(format_args!(
                            "demo recovery: reset-gpu reset {} GPU {gpu}, clearing its {} ({} resolves {})",
                            target.name,
                            f.kind.describe(),
                            f.kind.alert(),
                            f.kind.resolves()
                        )),
                        (Ok(()), None) => say.line(format_args!(
                            "demo recovery: reset-gpu reset {} GPU {gpu} (no fault a reset clears was on it)",
                            target.name
                        )),
                    }
                }
            }
            continue;
        }
        let (fault, injecting) = match pending.front() {
            Some(&(at, fault)) if at <= now => {
                pending.pop_front();
                files[fault.node].clear(fault.gpu, fault.kind);
                (fault, false)
            }
            _ if next_fault <= now => {
                let fault = plan(count, targets.len());
                count += 1;
                next_fault += schedule.every;
                files[fault.node].inject(fault.gpu, fault.kind);
                pending.push_back((now + schedule.held_for, fault));
                (fault, true)
            }
            _ => continue,
        };
        let target = &targets[fault.node];
        let (path, text) = (target.faults_file.clone(), files[fault.node].render());
        let written = tokio::task::spawn_blocking(move || write_file(&path, &text))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            say.line(format_args!(
                "demo fault: writing {} failed: {e}",
                target.faults_file.display()
            ));
            continue;
        }
        if injecting {
            say.line(format_args!(
                "demo fault on {} GPU {}: {} ({} should fire; cleared in {} s)",
                target.name,
                fault.gpu,
                fault.kind.describe(),
                fault.kind.alert(),
                schedule.held_for.as_secs()
            ));
        } else {
            say.line(format_args!(
                "demo fault cleared on {} GPU {}: {} ({} resolves {})",
                target.name,
                fault.gpu,
                fault.kind.describe(),
                fault.kind.alert(),
                fault.kind.resolves()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_fault_is_one_that_fires_and_resolves_at_once() {
        let first = plan(0, 3);
        assert_eq!(first.kind, FaultKind::EccDoubleBit);
        assert_eq!(first.node, 0);
    }

    #[test]
    fn overlapping_faults_never_share_a_gpu_of_a_node() {
        // A fault is held longer than the gap to the next, so neighbours overlap, but
        // not as long as two gaps.
        let s = Schedule::default();
        assert!(s.held_for > s.every && s.held_for < 2 * s.every);
        for nodes in 1..=5 {
            for n in 0..100 {
                let (a, b) = (plan(n, nodes), plan(n + 1, nodes));
                assert!(
                    (a.node, a.gpu) != (b.node, b.gpu),
                    "faults {n} and {} share a GPU with {nodes} nodes",
                    n + 1
                );
                assert!(a.gpu < GPUS_PER_NODE && a.node < nodes);
            }
        }
    }

    #[test]
    fn every_kind_comes_round() {
        let kinds: Vec<FaultKind> = (0..ROTATION.len()).map(|n| plan(n, 3).kind).collect();
        for kind in ROTATION {
            assert!(kinds.contains(&kind), "{kind:?} never injected");
        }
    }

    #[test]
    fn a_cleared_xid_stays_in_the_file_and_a_cleared_override_goes() {
        let mut f = NodeFaults::default();
        f.inject(1, FaultKind::EccDoubleBit);
        f.inject(4, FaultKind::XidUncorrectableMemory);
        let text = f.render();
        assert!(
            text.contains("[[gpu]]\nindex = 1\necc_dbe_volatile = 1\n"),
            "{text}"
        );
        assert!(text.contains("[[xid]]\ngpu = 4\ncode = 48\n"), "{text}");
        f.clear(1, FaultKind::EccDoubleBit);
        f.clear(4, FaultKind::XidUncorrectableMemory);
        f.inject(7, FaultKind::XidApplication);
        let text = f.render();
        assert!(!text.contains("[[gpu]]"), "{text}");
        // The old Xid first, then the new one: the library's cursor only moves on.
        let old = text.find("code = 48").expect("old xid kept");
        let new = text.find("code = 13").expect("new xid appended");
        assert!(old < new, "{text}");
    }

    /// The injector on one node in a temporary directory, with a resets folder.
    struct Injector {
        _dir: tempfile::TempDir,
        file: PathBuf,
        resets: PathBuf,
        stop: tokio::sync::watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Injector {
        fn start(schedule: Schedule) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("faults.toml");
            let resets = dir.path().join("resets");
            std::fs::create_dir(&resets).unwrap();
            let targets = vec![Target {
                name: "demo-node-1".into(),
                faults_file: file.clone(),
                resets_dir: Some(resets.clone()),
            }];
            let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(run(targets, schedule, Say::quiet(), async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            }));
            Injector {
                _dir: dir,
                file,
                resets,
                stop,
                task,
            }
        }

        fn read(&self) -> String {
            std::fs::read_to_string(&self.file).unwrap_or_default()
        }

        /// Waits (up to 2 s) until the file does (`want`) or does not hold the ECC fault.
        async fn wait_ecc(&self, want: bool) {
            for _ in 0..200 {
                let text = self.read();
                if text.contains("ecc_dbe_volatile = 1") == want && !text.is_empty() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "the fault was never {}",
                if want { "injected" } else { "cleared" }
            );
        }

        async fn stop(self) {
            self.stop.send_replace(true);
            self.task.await.unwrap();
        }
    }

    #[tokio::test]
    async fn injects_then_clears_on_schedule() {
        let injector = Injector::start(Schedule {
            first_after: Duration::from_millis(50),
            every: Duration::from_secs(3600),
            held_for: Duration::from_millis(400),
        });
        injector.wait_ecc(true).await;
        injector.wait_ecc(false).await;
        injector.stop().await;
    }

    #[tokio::test]
    async fn a_reset_request_clears_the_ecc_fault_before_its_time() {
        // Held for an hour: only the reset can clear it within the test.
        let injector = Injector::start(Schedule {
            first_after: Duration::from_millis(10),
            every: Duration::from_secs(3600),
            held_for: Duration::from_secs(3600),
        });
        injector.wait_ecc(true).await;
        let gpu = plan(0, 1).gpu;
        assert!(
            injector
                .read()
                .contains(&format!("index = {gpu}\necc_dbe_volatile = 1"))
        );
        std::fs::write(injector.resets.join("act-1"), format!("{gpu}\n")).unwrap();
        injector.wait_ecc(false).await;
        assert!(!injector.read().contains("ecc_dbe_volatile"));
        assert!(
            !injector.resets.join("act-1").exists(),
            "the request was taken"
        );
        injector.stop().await;
    }
}
