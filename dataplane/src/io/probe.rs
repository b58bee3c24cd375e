//! Host capability probes for `sluice doctor`: can this process use io_uring,
//! how much memory may it lock, does the kernel take UDP GSO. Each probe asks
//! the kernel directly and leaves nothing behind.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// Ring size for the io_uring probe; any small power of two will do.
const PROBE_RING_ENTRIES: u32 = 8;

/// Segment size offered in the GSO probe: a typical media datagram.
const PROBE_GSO_SEGMENT: libc::c_int = 1200;

/// Whether this process can set up an io_uring. The error says why not and,
/// where it can, what to change.
pub fn io_uring_available() -> Result<(), String> {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    let group = std::fs::read_to_string("/proc/sys/kernel/io_uring_group").ok();
    uring_sysctl_verdict(disabled.as_deref(), group.as_deref())?;
    match io_uring::IoUring::new(PROBE_RING_ENTRIES) {
        Ok(ring) => {
            drop(ring);
            Ok(())
        }
        Err(e) => Err(match e.raw_os_error() {
            Some(libc::ENOSYS) => "io_uring_setup is not implemented by this kernel (needs 5.1+, \
                                   CONFIG_IO_URING=y)"
                .into(),
            Some(libc::EPERM) => "io_uring_setup refused (EPERM): blocked by a seccomp filter, \
                                  a container runtime or kernel.io_uring_disabled"
                .into(),
            Some(libc::ENOMEM) => {
                "io_uring_setup failed (ENOMEM): RLIMIT_MEMLOCK too small for the ring".into()
            }
            _ => format!("io_uring_setup failed: {e}"),
        }),
    }
}

/// What `kernel.io_uring_disabled` (and `kernel.io_uring_group`) allow an
/// unprivileged service; absent files mean a kernel without the switch.
fn uring_sysctl_verdict(disabled: Option<&str>, group: Option<&str>) -> Result<(), String> {
    match disabled.and_then(|s| s.trim().parse::<u8>().ok()) {
        Some(2) => Err(
            "disabled by sysctl kernel.io_uring_disabled=2; set it to 0 to allow io_uring".into(),
        ),
        Some(1) => Err(format!(
            "restricted by sysctl kernel.io_uring_disabled=1 to CAP_SYS_ADMIN and group {} \
             (kernel.io_uring_group); set it to 0 or run sluice in that group",
            group.map(str::trim).unwrap_or("-1")
        )),
        _ => Ok(()),
    }
}

/// The soft RLIMIT_MEMLOCK in bytes; `u64::MAX` when unlimited, `None` when it
/// cannot be read.
pub fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the live, initialised struct we
    // pass and keeps no reference to it; a non-zero return leaves it unread.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if r != 0 {
        return None;
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        Some(u64::MAX)
    } else {
        // rlim_t is narrower than u64 on some 32-bit targets.
        #[allow(clippy::useless_conversion)]
        Some(u64::from(lim.rlim_cur))
    }
}

/// Why the UDP GSO probe said no.
#[derive(Debug, thiserror::Error)]
pub enum GsoProbeError {
    /// No UDP socket at all: the host (or a sandbox) forbids what sluice needs.
    #[error("cannot bind a UDP socket on 127.0.0.1: {0}")]
    Bind(io::Error),
    /// The kernel predates UDP_SEGMENT (4.18).
    #[error("UDP_SEGMENT not supported by this kernel (needs 4.18+)")]
    Unsupported,
    /// The option exists but was refused.
    #[error("setsockopt(UDP_SEGMENT) failed: {0}")]
    Refused(io::Error),
}

/// Whether the kernel accepts UDP_SEGMENT (GSO) on a UDP socket, probed on a
/// socket bound to 127.0.0.1:0.
pub fn udp_gso_available() -> Result<(), GsoProbeError> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(GsoProbeError::Bind)?;
    let val: libc::c_int = PROBE_GSO_SEGMENT;
    // SAFETY: setsockopt on the live socket `sock` owns, with a pointer to a live
    // c_int and its exact size; the kernel copies the value and keeps no reference.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            &val as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    Err(match e.raw_os_error() {
        Some(libc::ENOPROTOOPT) => GsoProbeError::Unsupported,
        _ => GsoProbeError::Refused(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_limit_reads_a_value() {
        // getrlimit cannot fail for a valid resource; 0 is a legal limit.
        assert!(memlock_limit().is_some());
    }

    #[test]
    fn uring_sysctl_zero_or_absent_allows() {
        assert!(uring_sysctl_verdict(Some("0\n"), None).is_ok());
        assert!(uring_sysctl_verdict(None, None).is_ok());
    }

    #[test]
    fn uring_sysctl_one_names_the_group() {
        let e = uring_sysctl_verdict(Some("1\n"), Some("1001\n")).unwrap_err();
        assert!(
            e.contains("io_uring_disabled=1") && e.contains("group 1001"),
            "{e}"
        );
    }

    #[test]
    fn uring_sysctl_two_refuses() {
        let e = uring_sysctl_verdict(Some("2"), None).unwrap_err();
        assert!(e.contains("io_uring_disabled=2"), "{e}");
    }
}
