//! Reading /proc and /sys files every cycle without reopening them.
//!
//! On a VM a path walk plus open and close costs more than generating the file: reading
//! /proc/stat takes ~22 µs fresh and ~10 µs through an open descriptor. procfs and
//! sysfs regenerate a file's content on every read from offset 0, so each collecting
//! thread keeps the descriptors of the pseudo files it reads open and re-reads them
//! with `pread`. Files on any other file system (captured test trees, a configured
//! rootfs) are opened fresh each time, so a file replaced by rename is always seen.
//! A cached descriptor that fails (a network device removed) is dropped and the path
//! opened again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// Descriptors a thread keeps at most; past this, files are read without caching.
const MAX_OPEN_PER_THREAD: usize = 256;

const PROC_SUPER_MAGIC: i64 = 0x9fa0;
const SYSFS_MAGIC: i64 = 0x6265_6572;

thread_local! {
    /// Per collecting thread: the pseudo files it has read, kept open.
    static OPEN: RefCell<HashMap<PathBuf, File>> = RefCell::new(HashMap::new());
}

/// Reads the whole file at `path` as UTF-8.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    OPEN.with(|open| {
        let mut open = open.borrow_mut();
        if let Some(file) = open.get(path) {
            match read_all(file) {
                Ok(text) => return Ok(text),
                Err(_) => {
                    open.remove(path);
                }
            }
        }
        let file = File::open(path)?;
        let text = read_all(&file)?;
        if open.len() < MAX_OPEN_PER_THREAD && is_pseudo_fs(&file) {
            open.insert(path.to_owned(), file);
        }
        Ok(text)
    })
}

fn read_all(file: &File) -> io::Result<String> {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(ErrorKind::InvalidData, e))
}

fn is_pseudo_fs(file: &File) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: fstatfs writes a statfs into the buffer we own; we read it only on success.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: fstatfs returned 0, so the struct is initialised.
    let st = unsafe { st.assume_init() };
    // f_type is an i64 on 64-bit glibc and narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    let f_type = st.f_type as i64;
    f_type == PROC_SUPER_MAGIC || f_type == SYSFS_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rereads_proc_files_fresh() {
        let uptime = Path::new("/proc/uptime");
        let first = read_to_string(uptime).unwrap();
        assert!(OPEN.with(|o| o.borrow().contains_key(uptime)));
        std::thread::sleep(std::time::Duration::from_millis(30));
        let second = read_to_string(uptime).unwrap();
        assert_ne!(first, second, "a kept descriptor returned stale content");
        assert!(second.ends_with('\n'));
    }

    #[test]
    fn regular_files_are_not_kept_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stat");
        std::fs::write(&path, "one\n").unwrap();
        assert_eq!(read_to_string(&path).unwrap(), "one\n");
        let replacement = dir.path().join("stat.new");
        std::fs::write(&replacement, "two\n").unwrap();
        std::fs::rename(&replacement, &path).unwrap();
        assert_eq!(read_to_string(&path).unwrap(), "two\n");
    }

    #[test]
    fn large_files_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let text = "x".repeat(100_000);
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_to_string(&path).unwrap(), text);
    }
}
