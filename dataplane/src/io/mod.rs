//! UDP I/O for shards: socket setup, the wake-up eventfd, and the backends
//! behind one trait, chosen at run time (`--io auto|uring|mmsg|std`).
//!
//! All `unsafe` in the project lives under this module.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

use crate::packet::Datagram;
use crate::stats::Counters;

mod batch;
mod mmsg;
mod plain;
pub mod probe;
pub mod tcp;
mod uring;
pub mod xdp;

use mmsg::MmsgBackend;
use plain::StdBackend;
use uring::UringBackend;

/// Which backend a shard uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// The fastest measured (BENCHMARKS.md "io backends"): `uring`, else
    /// `mmsg`, else `std`.
    Auto,
    /// io_uring with provided buffers (falls back when the kernel refuses it).
    Uring,
    /// recvmmsg, and one sendmmsg per turn with a GSO message per destination run.
    Mmsg,
    /// One recvfrom/sendto per datagram.
    Std,
    /// AF_XDP: frames straight from and to the interface's queues, past the
    /// kernel's socket, UDP/IP and qdisc layers (needs an interface and
    /// CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW; never picked by `auto`).
    Xdp,
}

impl IoKind {
    /// The kind named by `s` (`auto`, `uring`/`io_uring`, `mmsg`, `std`, `xdp`).
    pub fn parse(s: &str) -> Option<IoKind> {
        match s {
            "auto" => Some(IoKind::Auto),
            "uring" | "io_uring" => Some(IoKind::Uring),
            "mmsg" => Some(IoKind::Mmsg),
            "std" => Some(IoKind::Std),
            "xdp" | "af_xdp" => Some(IoKind::Xdp),
            _ => None,
        }
    }

    /// The name [`IoKind::parse`] takes.
    pub fn as_str(self) -> &'static str {
        match self {
            IoKind::Auto => "auto",
            IoKind::Uring => "uring",
            IoKind::Mmsg => "mmsg",
            IoKind::Std => "std",
            IoKind::Xdp => "xdp",
        }
    }
}

/// A shard's socket I/O.
pub trait Backend: Send {
    /// The backend's name, for logs and metrics.
    fn name(&self) -> &'static str;
    /// Receive what is queued (without blocking), up to one batch; returns the
    /// number of datagrams handed to `f`.
    fn recv(&mut self, f: &mut dyn FnMut(SocketAddr, &[u8])) -> io::Result<usize>;
    /// Send and clear `out` (its buffers go to [`crate::packet::recycle`]), counting what
    /// went out and what was refused.
    fn send(&mut self, out: &mut Vec<Datagram>, counters: &mut Counters);
    /// The socket's descriptor, to wait on.
    fn fd(&self) -> RawFd;
    /// Whether the backend already took datagrams from the kernel that `recv`
    /// has not handed out yet. Waiting on [`Backend::fd`] cannot see those, so
    /// the loop must not park while this holds.
    fn holds_input(&self) -> bool {
        false
    }
    /// A second descriptor to wait on, if the backend has one (AF_XDP also
    /// reads the kernel's UDP socket).
    fn extra_fd(&self) -> Option<RawFd> {
        None
    }
}

/// Build the backend for `kind` on `socket`, falling back (with a log line) when
/// the kernel refuses it. An AF_XDP backend needs its interface, so the
/// runtime builds it (`xdp::XdpBackend`); here `Xdp` is its kernel half.
pub fn make_backend(kind: IoKind, socket: UdpSocket) -> Box<dyn Backend> {
    match kind {
        IoKind::Xdp => make_backend(IoKind::Mmsg, socket),
        IoKind::Std => Box::new(StdBackend::new(socket)),
        IoKind::Auto => match UringBackend::new(socket.try_clone().expect("dup")) {
            Ok(b) => Box::new(b),
            Err(e) => {
                tracing::info!("io_uring unavailable ({e}); io auto uses mmsg");
                make_backend(IoKind::Mmsg, socket)
            }
        },
        IoKind::Mmsg => match MmsgBackend::new(socket.try_clone().expect("dup")) {
            Ok(b) => Box::new(b),
            Err(e) => {
                tracing::warn!("mmsg backend unavailable ({e}); using std");
                Box::new(StdBackend::new(socket))
            }
        },
        IoKind::Uring => match UringBackend::new(socket.try_clone().expect("dup")) {
            Ok(b) => Box::new(b),
            Err(e) => {
                tracing::warn!("io_uring backend unavailable ({e}); using mmsg");
                make_backend(IoKind::Mmsg, socket)
            }
        },
    }
}

/// Bind a shard's UDP socket with large buffers (forced past the sysctl
/// maxima when we have CAP_NET_ADMIN), non-blocking.
pub fn bind_udp(addr: SocketAddr, buffer_bytes: usize) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, Type::DGRAM, Some(SockProtocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    set_buffer(&sock, buffer_bytes, true);
    set_buffer(&sock, buffer_bytes, false);
    if let Err(e) = set_dont_fragment(&sock, addr.is_ipv6()) {
        tracing::debug!("{addr}: don't-fragment not set: {e}");
    }
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// Send every datagram with Don't Fragment set and never fragment locally
/// (`IP_PMTUDISC_PROBE`), as browsers send their media.
///
/// The kernel's default (`IP_PMTUDISC_WANT`) already sets DF on the wire, but
/// it lets the kernel fragment toward a destination whose path MTU it has
/// learned (from an ICMP message anyone can forge) and so draws a hashed IP ID
/// for every datagram (`__ip_select_ident`: 4% of a shard thread's samples
/// at 1,000 viewers).
/// sluice's datagrams are one forwarded RTP packet each, sized by the
/// publisher's browser for any path; `PROBE` ignores learned path MTUs, so a
/// forged ICMP message cannot make one viewer's sends fail or fragment.
fn set_dont_fragment(sock: &Socket, ipv6: bool) -> io::Result<()> {
    // On an IPv6 socket this covers IPv4-mapped peers; it may be refused
    // there (a v6-only socket), which is fine.
    let v4 = set_int_option(
        sock,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    );
    if !ipv6 {
        return v4;
    }
    set_int_option(
        sock,
        libc::IPPROTO_IPV6,
        libc::IPV6_MTU_DISCOVER,
        libc::IPV6_PMTUDISC_PROBE,
    )
}

/// `setsockopt` of an `int`-valued option on `sock`.
pub fn set_int_option(
    sock: &impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the descriptor is borrowed from a live socket for the call; the
    // pointer is to the local `value` with its exact size, and the kernel
    // copies the value and keeps no reference.
    let r = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    os_result(r)
}

/// A libc call's result by the C convention: 0 is success, else `errno`.
fn os_result(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_buffer(sock: &Socket, bytes: usize, recv: bool) {
    let force = if recv {
        libc::SO_RCVBUFFORCE
    } else {
        libc::SO_SNDBUFFORCE
    };
    let val = bytes as libc::c_int;
    if set_int_option(sock, libc::SOL_SOCKET, force, val).is_err() {
        let _ = if recv {
            sock.set_recv_buffer_size(bytes)
        } else {
            sock.set_send_buffer_size(bytes)
        };
    }
}

/// Wakes a parked shard when another thread hands it work.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
    parked: AtomicBool,
}

impl Waker {
    /// A waker with its own eventfd.
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd has no pointer arguments; a negative return is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd, is valid and owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker {
            fd,
            parked: AtomicBool::new(false),
        })
    }

    /// Wake the owner if it is parked (a syscall only then).
    pub fn wake(&self) {
        if self.parked.load(Ordering::SeqCst) {
            self.signal();
        }
    }

    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own; a failure
        // (counter overflow) still leaves the fd readable, which is all we need.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            );
        }
    }

    fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; non-blocking fd.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                &mut v as *mut u64 as *mut libc::c_void,
                8,
            );
        }
    }

    /// Mark parked. Callers must re-check their queues after this and before `park`.
    pub fn prepare_park(&self) {
        self.parked.store(true, Ordering::SeqCst);
    }

    /// Mark running again.
    pub fn unpark(&self) {
        self.parked.store(false, Ordering::SeqCst);
    }

    /// Sleep until one of `fds` (at most four) is readable, the waker fires,
    /// or `timeout` passes.
    pub fn park(&self, fds: &[RawFd], timeout: Duration) {
        let pfd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut all = [pfd(self.fd.as_raw_fd()), pfd(-1), pfd(-1), pfd(-1), pfd(-1)];
        let n = 1 + fds.len().min(all.len() - 1);
        for (slot, fd) in all[1..].iter_mut().zip(fds) {
            slot.fd = *fd;
        }
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `all` is a live array of initialised pollfd and `n` is at most its length.
        unsafe {
            libc::poll(all.as_mut_ptr(), n as libc::nfds_t, ms);
        }
        if all[0].revents != 0 {
            self.drain();
        }
        self.unpark();
    }
}

/// Wait until `fd` is writable or `timeout` passes.
pub(crate) fn wait_writable(fd: RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one live, initialised pollfd.
    unsafe {
        libc::poll(&mut pfd, 1, ms);
    }
}

/// The CPUs this process may run on (its affinity mask), in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: passes a live cpu_set_t and its exact size for pid 0 (this thread).
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        return (0..n).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads within the set for indices < CPU_SETSIZE.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect()
}

/// Restrict the calling thread (and threads it starts later) to `cpus`.
pub fn set_thread_cpus(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c < libc::CPU_SETSIZE as usize {
            // SAFETY: index checked against CPU_SETSIZE.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
    }
    // SAFETY: passes a live cpu_set_t and its exact size for pid 0 (this thread).
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    os_result(r)
}

/// Set the calling thread's nice value (Linux: `setpriority` of its thread
/// id changes that thread alone). Raising it needs no privilege; lowering it
/// below what the thread had needs `CAP_SYS_NICE`.
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority with integer arguments only; `tid` names this thread.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    os_result(r)
}

/// Keep transparent huge pages out of this process (`PR_SET_THP_DISABLE`),
/// whatever the host's THP mode, for mappings made now and later.
///
/// A shard's memory is many small session objects that come and go. With
/// huge pages a fault zeroes 2 MiB where a session needed a few KiB, so a
/// viewer cost 58–72 KiB of RSS instead of 53–62, and setups were about 10%
/// slower, with no gain in forwarding (BENCHMARKS.md, "Setup and memory: the
/// SDP parser, huge pages and the IP ID").
pub fn disable_transparent_huge_pages() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only; no memory is passed.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    os_result(r)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Make the kernel refuse UDP_SEGMENT on `sock` (EINVAL), to test the
    /// fallbacks: SO_NO_CHECK, 11 in asm-generic (x86, arm, riscv), which
    /// libc does not export.
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    ))]
    pub(crate) fn refuse_gso(sock: &UdpSocket) {
        const SO_NO_CHECK: libc::c_int = 11;
        set_int_option(sock, libc::SOL_SOCKET, SO_NO_CHECK, 1).expect("setsockopt(SO_NO_CHECK)");
    }

    fn int_option(sock: &UdpSocket, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the descriptor is borrowed from a live socket; `value` and
        // `len` are locals of the sizes the kernel is told.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                level,
                name,
                &mut value as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        assert_eq!(r, 0, "getsockopt: {}", io::Error::last_os_error());
        value
    }

    #[test]
    fn a_thread_can_lower_its_own_priority_and_no_other() {
        std::thread::spawn(|| {
            set_thread_nice(7).unwrap();
            // SAFETY: getpriority/gettid with integer arguments only.
            let me = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
            assert_eq!(me, 7);
        })
        .join()
        .unwrap();
        // SAFETY: as above, for this (another) thread.
        let other = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        assert_ne!(other, 7);
    }

    #[test]
    fn transparent_huge_pages_can_be_kept_out_of_the_process() {
        disable_transparent_huge_pages().unwrap();
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(r, 1);
    }

    #[test]
    fn shard_sockets_send_with_dont_fragment_and_ignore_learned_path_mtus() {
        let v4 = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        assert_eq!(
            int_option(&v4, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            libc::IP_PMTUDISC_PROBE
        );
        let v6 = bind_udp("[::1]:0".parse().unwrap(), 1 << 20).unwrap();
        assert_eq!(
            int_option(&v6, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
            libc::IPV6_PMTUDISC_PROBE
        );
        // A full-size media datagram still goes out (lo's MTU is far larger).
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        v4.send_to(&[7u8; 1400], rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 2048];
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(rx.recv_from(&mut buf).unwrap().0, 1400);
    }

    #[test]
    fn auto_picks_uring_where_the_kernel_allows_it_else_mmsg() {
        let sock = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let want = match UringBackend::new(sock.try_clone().unwrap()) {
            Ok(_) => "uring",
            Err(_) => "mmsg",
        };
        assert_eq!(make_backend(IoKind::Auto, sock).name(), want);
        let sock = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        assert_eq!(make_backend(IoKind::Mmsg, sock).name(), "mmsg");
        let sock = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        assert_eq!(make_backend(IoKind::Std, sock).name(), "std");
    }
}
