//! Network namespaces for the tests that need real interfaces. Setup
//! failures are errors for the caller to panic on: these tests run as root
//! in CI, and a skipped test would hide a broken AF_XDP path.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::thread;

/// Run `ip` with `args`; the error carries its stderr.
pub(super) fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace named after the process and the test (so parallel
/// tests and concurrent test processes never share one), deleted on drop,
/// also when an assertion panics.
pub(super) struct Netns {
    pub(super) name: String,
}

impl Netns {
    /// Create `sxdp-<role>-<pid>-<tag>`.
    pub(super) fn create(role: &str, tag: char) -> Result<Netns, String> {
        let name = format!("sxdp-{role}-{}-{tag}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Run `f` on a new thread that has joined network namespace `ns`.
pub(super) fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a namespace file we hold open; it only changes
        // the network namespace of this thread.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}
