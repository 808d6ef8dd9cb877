//! node_exporter's `uname` collector: `node_uname_info`, labelled with uname(2).

use std::ffi::CStr;

use vigil_proto::MetricFamily;

use super::{Source, SourceError};

/// The fields of uname(2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uname {
    pub sysname: String,
    pub release: String,
    pub version: String,
    pub machine: String,
    pub nodename: String,
    pub domainname: String,
}

fn field(chars: &[libc::c_char]) -> String {
    // SAFETY: the kernel NUL-terminates every utsname field within its array.
    unsafe { CStr::from_ptr(chars.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

pub fn uname() -> Result<Uname, SourceError> {
    let mut u = std::mem::MaybeUninit::<libc::utsname>::zeroed();
    // SAFETY: `u` is writable memory of the size uname expects.
    if unsafe { libc::uname(u.as_mut_ptr()) } != 0 {
        return Err(SourceError::Other(format!(
            "uname: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: uname returned 0, so the struct is filled.
    let u = unsafe { u.assume_init() };
    Ok(Uname {
        sysname: field(&u.sysname),
        release: field(&u.release),
        version: field(&u.version),
        machine: field(&u.machine),
        nodename: field(&u.nodename),
        domainname: field(&u.domainname),
    })
}

pub fn uname_family(u: &Uname) -> MetricFamily {
    MetricFamily::gauge(
        "node_uname_info",
        "Labeled system information as provided by the uname system call.",
    )
    .with(
        &[
            ("sysname", &u.sysname),
            ("release", &u.release),
            ("version", &u.version),
            ("machine", &u.machine),
            ("nodename", &u.nodename),
            ("domainname", &u.domainname),
        ],
        1.0,
    )
}

#[derive(Debug, Default)]
pub struct UnameSource;

impl Source for UnameSource {
    fn name(&self) -> &'static str {
        "uname"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        out.push(uname_family(&uname()?));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uname_matches_proc() {
        let u = uname().unwrap();
        assert_eq!(u.sysname, "Linux");
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(u.release, release.trim());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(u.nodename, host.trim());
        let fam = uname_family(&u);
        let names: Vec<&str> = fam.samples[0].labels.iter().map(|(k, _)| &**k).collect();
        assert_eq!(
            names,
            [
                "sysname",
                "release",
                "version",
                "machine",
                "nodename",
                "domainname"
            ]
        );
    }
}
