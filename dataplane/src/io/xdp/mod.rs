//! AF_XDP UDP I/O: an AF_XDP socket with its own UMEM, an XDP program that
//! steers each shard's UDP port arriving on that shard's queue to it, and
//! Ethernet/IP/UDP framing.
//!
//! Nothing here links libbpf or needs a BPF compiler: the XDP program is
//! emitted instruction by instruction (`asm`) and loaded with bpf(2). Why
//! not a crate: libbpf bindings bring a C library and a clang-built object
//! into the build, and aya or the `xdp` crate a larger dependency tree whose
//! loaders do far more than this needs; the program is about fifty
//! instructions, the kernel's verifier checks it at load, and the whole
//! interface is four system calls (`BPF_MAP_CREATE`, `BPF_PROG_LOAD`,
//! `BPF_MAP_UPDATE_ELEM`, `BPF_LINK_CREATE`) plus the AF_XDP socket options.

mod asm;
mod backend;
mod bpf;
mod frame;
mod neigh;
mod prog;
mod ring;
mod socket;
mod sys;

#[cfg(test)]
mod tests_filter;
#[cfg(test)]
mod tests_netns;
#[cfg(test)]
mod tests_veth;

pub use backend::{XdpAttachment, XdpBackend, XdpSettings};
pub use prog::{AttachMode, XdpProgram};
pub use socket::{BindMode, Queued, XdpConfig, XdpCounters, XdpSocket};
pub use sys::ifindex;

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

fn effective_caps() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// Check that this process can use AF_XDP. On failure the message is one
/// line naming everything that is missing.
pub fn capability_check() -> Result<(), String> {
    let mut missing: Vec<&str> = Vec::new();
    match effective_caps() {
        Some(caps) => {
            let has = |c: u32| caps & (1u64 << c) != 0;
            if !has(CAP_NET_ADMIN) {
                missing.push("CAP_NET_ADMIN (attach XDP program)");
            }
            // Kernels before 5.8 have no CAP_BPF and want CAP_SYS_ADMIN.
            if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
                missing.push("CAP_BPF (load program, create map)");
            }
            if !has(CAP_NET_RAW) {
                missing.push("CAP_NET_RAW (AF_XDP socket)");
            }
        }
        None => missing.push("capabilities unreadable (/proc/self/status)"),
    }
    // SAFETY: plain socket(2) call; the descriptor is closed right away.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd >= 0 {
        // SAFETY: fd is ours and not used after this.
        unsafe { libc::close(fd) };
    } else {
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAFNOSUPPORT) => missing.push(
                "kernel AF_XDP support (socket(AF_XDP) gives EAFNOSUPPORT; needs CONFIG_XDP_SOCKETS)",
            ),
            // Permission errors are already covered by the capability list.
            Some(libc::EPERM) | Some(libc::EACCES) => {}
            _ => return Err(format!("socket(AF_XDP) failed: {e}")),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "AF_XDP unavailable, missing: {}",
            missing.join(", ")
        ))
    }
}
