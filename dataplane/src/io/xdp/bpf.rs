//! Minimal bpf(2) wrapper: map creation, program loading with verifier log,
//! map updates, XDP link creation and program test runs.
//!
//! The attribute structs below mirror the prefixes of `union bpf_attr` in
//! linux/bpf.h that each command reads. The kernel accepts a shorter attr
//! as long as the bytes it does not know about are zero, and zero-fills the
//! rest, so passing only the prefix is the documented way to use it.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_PROG_LOAD: u32 = 5;
#[cfg(test)]
const BPF_PROG_TEST_RUN: u32 = 10;
#[cfg(test)]
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_LINK_CREATE: u32 = 28;
const BPF_LINK_DETACH: u32 = 34;

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;

/// Attach flag: generic XDP, after the kernel built an skb.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// Attach flag: native XDP in the driver.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// XDP action: drop the frame.
#[cfg(test)]
pub const XDP_DROP: u32 = 1;
/// XDP action: hand the frame to the kernel stack.
pub const XDP_PASS: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

#[cfg(test)]
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
}

/// `struct xdp_md` as BPF_PROG_TEST_RUN takes it for the program context.
#[cfg(test)]
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

fn sys_bpf<T>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a live, properly aligned repr(C) struct whose size we
    // pass along; the kernel copies at most that many bytes in and out.
    // Any pointers stored inside it are set by the callers to buffers that
    // outlive this call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_long,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_from(r: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor to us and nothing else
    // owns it, so taking ownership is sound.
    unsafe { OwnedFd::from_raw_fd(r as RawFd) }
}

fn name16(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    // Object names are limited to 15 bytes of [A-Za-z0-9_.] plus a NUL.
    for (i, b) in s.bytes().take(15).enumerate() {
        n[i] = b;
    }
    n
}

/// Create an XSKMAP with `entries` slots (one per RX queue).
pub fn create_xskmap(entries: u32) -> io::Result<OwnedFd> {
    let mut a = MapCreateAttr {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        map_name: name16("xsks_map"),
        ..Default::default()
    };
    sys_bpf(BPF_MAP_CREATE, &mut a).map(fd_from)
}

/// Put `value_fd` (an AF_XDP socket) into `map` at `key`.
pub fn map_update_u32(map: &OwnedFd, key: u32, value: u32) -> io::Result<()> {
    let k = key;
    let v = value;
    let mut a = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &k as *const u32 as u64,
        value: &v as *const u32 as u64,
        flags: 0, // BPF_ANY
        ..Default::default()
    };
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
}

/// Empty slot `key` of `map`.
pub fn map_delete_u32(map: &OwnedFd, key: u32) -> io::Result<()> {
    let k = key;
    let mut a = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &k as *const u32 as u64,
        ..Default::default()
    };
    sys_bpf(BPF_MAP_DELETE_ELEM, &mut a).map(|_| ())
}

/// Load an XDP program. On failure the verifier log is included in the
/// error text so a rejected program can be diagnosed from the message.
pub fn load_xdp_prog(insns: &[super::asm::Insn], name: &str) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let try_load = |log: Option<&mut Vec<u8>>| -> io::Result<OwnedFd> {
        let mut a = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name16(name),
            expected_attach_type: BPF_XDP,
            ..Default::default()
        };
        if let Some(buf) = log {
            a.log_level = 1;
            a.log_size = buf.len() as u32;
            a.log_buf = buf.as_mut_ptr() as u64;
        }
        sys_bpf(BPF_PROG_LOAD, &mut a).map(fd_from)
    };
    // Load without a log first: a successful load does not need one and the
    // kernel rejects too small log buffers for large programs with ENOSPC.
    match try_load(None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut log = vec![0u8; 256 * 1024];
            match try_load(Some(&mut log)) {
                Ok(fd) => Ok(fd),
                Err(e) => {
                    let text = CStr::from_bytes_until_nul(&log)
                        .map(|c| c.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    Err(io::Error::new(
                        e.kind(),
                        format!("BPF_PROG_LOAD failed: {first}; verifier log:\n{text}"),
                    ))
                }
            }
        }
    }
}

/// Attach an XDP program to an interface through a bpf link. Closing the
/// returned descriptor detaches the program.
pub fn link_create_xdp(prog: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut a = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
    };
    sys_bpf(BPF_LINK_CREATE, &mut a).map(fd_from)
}

/// Detach a link without closing it, for an explicit detach while other
/// holders of the descriptor (e.g. a forked child) may still exist.
pub fn link_detach(link: &OwnedFd) -> io::Result<()> {
    let mut a = [link.as_raw_fd() as u32, 0u32];
    sys_bpf(BPF_LINK_DETACH, &mut a).map(|_| ())
}

/// Run a program once over `data` with BPF_PROG_TEST_RUN and return its
/// return code. Used to test the packet filter without a network.
///
/// With `rx = Some((ifindex, queue))` the program sees the frame as received
/// on that interface and RX queue (`ctx->ingress_ifindex`,
/// `ctx->rx_queue_index`). The kernel looks the interface up in the calling
/// thread's network namespace and refuses a queue index the interface does
/// not have. Without it the frame arrives on queue 0 of loopback.
#[cfg(test)]
pub fn test_run(prog: &OwnedFd, data: &[u8], rx: Option<(u32, u32)>) -> io::Result<u32> {
    let mut out = vec![0u8; data.len() + 256];
    let md = rx.map(|(ifindex, queue)| XdpMd {
        data_end: data.len() as u32,
        ingress_ifindex: ifindex,
        rx_queue_index: queue,
        ..Default::default()
    });
    let mut a = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data.len() as u32,
        data_size_out: out.len() as u32,
        data_in: data.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    if let Some(md) = &md {
        a.ctx_size_in = std::mem::size_of::<XdpMd>() as u32;
        a.ctx_in = md as *const XdpMd as u64;
    }
    sys_bpf(BPF_PROG_TEST_RUN, &mut a)?;
    Ok(a.retval)
}

/// Kernel-assigned id of a program, read with BPF_OBJ_GET_INFO_BY_FD.
#[cfg(test)]
pub fn prog_id(prog: &OwnedFd) -> io::Result<u32> {
    // struct bpf_prog_info starts with `__u32 type; __u32 id;`. We ask for
    // a short prefix; the kernel fills only the bytes we provide.
    let mut info = [0u32; 4];
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut a = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(info[1])
}
