//! statvfs with a timeout per mount, for the filesystem source.
//!
//! One helper thread performs the calls in order, so a cycle costs two thread wake-ups
//! however many mounts there are. When a call does not answer within the timeout, its
//! mount is marked stuck and the helper is abandoned (it stays blocked in the kernel);
//! the remaining mounts go to a fresh helper. The abandoned helper, if the call ever
//! returns, clears the stuck mark and exits. A stuck mount is not asked again while
//! marked, so each hung mount holds at most one thread, and a recovered one is asked
//! again on the next cycle — node_exporter's "stuck mounts" behaviour.

use std::collections::{HashSet, VecDeque};
use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// What statvfs says about one file system, in node_exporter's units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FsStats {
    pub size_bytes: f64,
    pub free_bytes: f64,
    pub avail_bytes: f64,
    pub files: f64,
    pub files_free: f64,
    /// ST_RDONLY: the file system is mounted read-only.
    pub read_only: bool,
}

/// One mount's result.
#[derive(Debug, Clone, PartialEq)]
pub enum StatOutcome {
    Ok(FsStats),
    /// statvfs failed; the error as node_exporter words it (`permission denied`).
    Failed(String),
    /// No answer within the timeout, now or in an earlier cycle.
    Stuck,
}

/// statvfs(3) of one path.
pub fn statvfs(path: &Path) -> Result<FsStats, String> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| "mount point contains a NUL byte".to_owned())?;
    let mut buf = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is NUL-terminated and outlives the call; `buf` is writable memory
    // of the size statvfs expects.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(errno_text(std::io::Error::last_os_error()));
    }
    // SAFETY: statvfs returned 0, so it filled the whole struct.
    let s = unsafe { buf.assume_init() };
    let block = s.f_frsize as f64;
    Ok(FsStats {
        size_bytes: s.f_blocks as f64 * block,
        free_bytes: s.f_bfree as f64 * block,
        avail_bytes: s.f_bavail as f64 * block,
        files: s.f_files as f64,
        files_free: s.f_ffree as f64,
        read_only: s.f_flag & libc::ST_RDONLY != 0,
    })
}

/// Go's wording of an errno (`no such file or directory`), which node_exporter puts in
/// the `device_error` label, rather than Rust's `No such file or directory (os error 2)`.
fn errno_text(e: std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

struct Job {
    index: usize,
    path: PathBuf,
    mountpoint: String,
}

struct Done {
    index: usize,
    result: Result<FsStats, String>,
}

struct Worker {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Done>,
    abandoned: Arc<AtomicBool>,
}

/// Runs statvfs calls with a timeout each; see the module documentation.
pub struct Statter {
    timeout: Duration,
    worker: Mutex<Option<Worker>>,
    /// Mount points whose call has not returned. Also the lock that orders a helper's
    /// "answered" against the caller's "gave up" so a mount is never left marked stuck
    /// without a thread that will clear it.
    stuck: Arc<Mutex<HashSet<String>>>,
    /// Test hook: a function run instead of statvfs.
    stat_fn: fn(&Path) -> Result<FsStats, String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data (a set of names, an optional helper) stays consistent even if a
    // holder panicked, so poisoning is not a reason to stop reporting file systems.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Statter {
    pub fn new(timeout: Duration) -> Self {
        Self::with_stat_fn(timeout, statvfs)
    }

    pub fn with_stat_fn(timeout: Duration, stat_fn: fn(&Path) -> Result<FsStats, String>) -> Self {
        Self {
            timeout,
            worker: Mutex::new(None),
            stuck: Arc::new(Mutex::new(HashSet::new())),
            stat_fn,
        }
    }

    /// The mount points currently marked stuck, sorted.
    pub fn stuck(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.stuck).iter().cloned().collect();
        v.sort();
        v
    }

    fn spawn(&self) -> Result<Worker, String> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let abandoned = Arc::new(AtomicBool::new(false));
        let stuck = Arc::clone(&self.stuck);
        let flag = Arc::clone(&abandoned);
        let stat_fn = self.stat_fn;
        std::thread::Builder::new()
            .name("vigil-statvfs".to_owned())
            .spawn(move || {
                while let Ok(job) = jobs_rx.recv() {
                    let result = stat_fn(&job.path);
                    let mut stuck = lock(&stuck);
                    stuck.remove(&job.mountpoint);
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    let sent = done_tx.send(Done {
                        index: job.index,
                        result,
                    });
                    drop(stuck);
                    if sent.is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("starting statvfs thread: {e}"))?;
        Ok(Worker {
            jobs: jobs_tx,
            done: done_rx,
            abandoned,
        })
    }

    /// statvfs of each (path, mount point), in order; mount points already stuck are
    /// not asked.
    pub fn stat_all(&self, targets: Vec<(PathBuf, String)>) -> Vec<StatOutcome> {
        let mut outcomes = vec![StatOutcome::Stuck; targets.len()];
        let mut pending: VecDeque<Job> = {
            let stuck = lock(&self.stuck);
            targets
                .into_iter()
                .enumerate()
                .filter(|(_, (_, mp))| !stuck.contains(mp))
                .map(|(index, (path, mountpoint))| Job {
                    index,
                    path,
                    mountpoint,
                })
                .collect()
        };
        let mut slot = lock(&self.worker);
        while !pending.is_empty() {
            if slot.is_none() {
                match self.spawn() {
                    Ok(w) => *slot = Some(w),
                    Err(e) => {
                        for job in pending.drain(..) {
                            outcomes[job.index] = StatOutcome::Failed(e.clone());
                        }
                        break;
                    }
                }
            }
            let Some(worker) = slot.as_ref() else { break };
            let mut sent_all = true;
            for job in &pending {
                let copy = Job {
                    index: job.index,
                    path: job.path.clone(),
                    mountpoint: job.mountpoint.clone(),
                };
                if worker.jobs.send(copy).is_err() {
                    sent_all = false;
                    break;
                }
            }
            if !sent_all {
                // The helper is gone (it can only exit when abandoned or on panic).
                *slot = None;
                if let Some(job) = pending.pop_front() {
                    outcomes[job.index] = StatOutcome::Failed("statvfs thread exited".to_owned());
                }
                continue;
            }
            // Collect answers in order; on a timeout, the first unanswered job is the
            // one the helper is blocked on.
            let mut abandon = false;
            while let Some(front) = pending.front() {
                let answer = match worker.done.recv_timeout(self.timeout) {
                    Ok(done) => Some(done),
                    Err(RecvTimeoutError::Timeout) => {
                        let mut stuck = lock(&self.stuck);
                        match worker.done.try_recv() {
                            Ok(done) => Some(done),
                            Err(_) => {
                                stuck.insert(front.mountpoint.clone());
                                worker.abandoned.store(true, Ordering::Release);
                                None
                            }
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        outcomes[front.index] =
                            StatOutcome::Failed("statvfs thread exited".to_owned());
                        pending.pop_front();
                        abandon = true;
                        break;
                    }
                };
                match answer {
                    Some(done) => {
                        outcomes[done.index] = match done.result {
                            Ok(s) => StatOutcome::Ok(s),
                            Err(e) => StatOutcome::Failed(e),
                        };
                        pending.retain(|j| j.index != done.index);
                    }
                    None => {
                        tracing::warn!(
                            mountpoint = %front.mountpoint,
                            "statvfs timed out; mount marked stuck until it answers"
                        );
                        outcomes[front.index] = StatOutcome::Stuck;
                        pending.pop_front();
                        abandon = true;
                        break;
                    }
                }
            }
            if abandon {
                *slot = None;
            }
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn statvfs_of_root_and_a_missing_path() {
        let root = statvfs(Path::new("/")).unwrap();
        assert!(root.size_bytes > 0.0);
        assert!(root.avail_bytes <= root.free_bytes && root.free_bytes <= root.size_bytes);
        let err = statvfs(Path::new("/definitely/not/here")).unwrap_err();
        assert_eq!(err, "no such file or directory");
    }

    fn fake(path: &Path) -> Result<FsStats, String> {
        let name = path.to_string_lossy();
        if name.contains("hang") {
            std::thread::sleep(Duration::from_millis(600));
        }
        if name.contains("bad") {
            return Err("permission denied".to_owned());
        }
        Ok(FsStats {
            size_bytes: name.len() as f64,
            free_bytes: 0.0,
            avail_bytes: 0.0,
            files: 0.0,
            files_free: 0.0,
            read_only: false,
        })
    }

    fn targets(names: &[&str]) -> Vec<(PathBuf, String)> {
        names
            .iter()
            .map(|n| (PathBuf::from(n), (*n).to_owned()))
            .collect()
    }

    #[test]
    fn a_hung_mount_is_stuck_the_others_still_answer_and_it_recovers() {
        let statter = Statter::with_stat_fn(Duration::from_millis(100), fake);
        let start = Instant::now();
        let out = statter.stat_all(targets(&["/a", "/hang", "/bad", "/cc"]));
        assert!(matches!(out[0], StatOutcome::Ok(s) if s.size_bytes == 2.0));
        assert_eq!(out[1], StatOutcome::Stuck);
        assert_eq!(out[2], StatOutcome::Failed("permission denied".to_owned()));
        assert!(matches!(out[3], StatOutcome::Ok(s) if s.size_bytes == 3.0));
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(statter.stuck(), vec!["/hang".to_owned()]);

        // While stuck, the mount is not asked again: this cycle is immediate.
        let start = Instant::now();
        let out = statter.stat_all(targets(&["/a", "/hang"]));
        assert_eq!(out[1], StatOutcome::Stuck);
        assert!(start.elapsed() < Duration::from_millis(100));

        // Once the abandoned call returns, the mark is cleared and it is asked again.
        std::thread::sleep(Duration::from_millis(700));
        assert!(statter.stuck().is_empty());
    }
}
