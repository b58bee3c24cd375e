//! Small syscall helpers and interface lookups shared by the socket code.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The result of a libc call that returns a negative value on error.
pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Prefix an error with the step that failed, keeping its kind.
pub fn ctx(what: &'static str) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// `setsockopt` of a value of any plain type.
pub fn setsockopt<T>(fd: RawFd, level: i32, opt: i32, val: &T) -> io::Result<()> {
    // SAFETY: val is a live value of the size we pass.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            val as *const T as *const libc::c_void,
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// Index of interface `ifname` in the calling thread's network namespace.
pub fn ifindex(ifname: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has NUL"))?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(idx)
}

/// MAC address of an interface via SIOCGIFHWADDR. This is resolved in the
/// calling thread's network namespace (unlike /sys, which follows the mount).
pub fn interface_mac(ifname: &str) -> io::Result<[u8; 6]> {
    if ifname.len() >= 16 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // struct ifreq: 16 bytes of name, then a union whose hwaddr member is a
    // struct sockaddr (2 bytes family, then the address bytes).
    let mut ifr = [0u8; 40];
    ifr[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: plain socket(2) call.
    let s = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: s was just created and is owned by nobody else.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifr is 40 bytes, the size of struct ifreq on Linux, and the
    // kernel writes at most that much.
    cvt(unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFHWADDR, ifr.as_mut_ptr()) })?;
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&ifr[18..24]);
    Ok(mac)
}
