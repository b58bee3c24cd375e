//! The sender loops of each [`UdpMode`](super::UdpMode) and the receiver
//! that drains and counts, over raw `sendmmsg`/`sendmsg`/`recvmmsg` calls and
//! io_uring: the only `unsafe` code of the UDP benchmark.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// Datagrams the receiver asks for per `recvmmsg`.
const RECV_BATCH: usize = 64;

/// How long the receiver waits for a datagram before looking at the stop flag.
const RECV_POLL: Duration = Duration::from_millis(50);

/// Longest the receiver keeps draining after the sender stopped.
const MAX_DRAIN: Duration = Duration::from_secs(1);

/// Sends between two looks at the clock in `send` mode.
const SENDS_PER_CLOCK_READ: u32 = 64;

/// What a sender loop achieved.
pub(super) struct Sent {
    /// Datagrams the kernel accepted.
    pub(super) packets: u64,
    /// The error that ended the loop before its deadline.
    pub(super) error: Option<io::Error>,
}

/// Errors after which the next send may well succeed.
pub(super) fn is_transient(errno: i32) -> bool {
    errno == libc::EINTR || errno == libc::EAGAIN || errno == libc::ENOBUFS
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

fn sockaddr_v4(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A `msghdr` with one buffer, addressed to `addr`. The pointers it holds are
/// only read by the kernel, so `addr` and `iov` merely have to outlive its use.
fn msghdr_to(addr: &libc::sockaddr_in, iov: &libc::iovec) -> libc::msghdr {
    // SAFETY: msghdr is a plain C struct for which all zero bytes is a valid
    // value (null pointers, zero lengths, no flags); zeroing also covers the
    // padding fields some libcs add.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = ptr::from_ref(addr).cast_mut().cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = ptr::from_ref(iov).cast_mut();
    msg.msg_iovlen = 1;
    msg
}

fn iovec_of(buf: &[u8]) -> libc::iovec {
    libc::iovec {
        // The kernel only reads send buffers; the `*mut` is the C signature's.
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    }
}

pub(super) fn send_plain(
    sock: &UdpSocket,
    dest: SocketAddrV4,
    size: usize,
    deadline: Instant,
) -> Sent {
    let buf = payload(size);
    let mut packets = 0;
    loop {
        for _ in 0..SENDS_PER_CLOCK_READ {
            match sock.send_to(&buf, dest) {
                Ok(_) => packets += 1,
                Err(e) if e.raw_os_error().is_some_and(is_transient) => {}
                Err(e) => {
                    return Sent {
                        packets,
                        error: Some(e),
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Sent {
                packets,
                error: None,
            };
        }
    }
}

pub(super) fn send_mmsg(
    sock: &UdpSocket,
    dest: SocketAddrV4,
    size: usize,
    batch: usize,
    deadline: Instant,
) -> Sent {
    let buf = payload(size);
    let addr = sockaddr_v4(dest);
    let iov = iovec_of(&buf);
    let mut msgs: Vec<libc::mmsghdr> = (0..batch)
        .map(|_| libc::mmsghdr {
            msg_hdr: msghdr_to(&addr, &iov),
            msg_len: 0,
        })
        .collect();
    let fd = sock.as_raw_fd();
    let mut packets = 0;
    loop {
        // SAFETY: `msgs` holds `batch` initialised headers whose name, iovec and
        // payload pointers refer to `addr`, `iov` and `buf`, which live until the
        // end of this function and are not moved; the kernel writes only the
        // `msg_len` fields, which belong to `msgs`.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), batch as libc::c_uint, 0) };
        if n >= 0 {
            packets += n as u64;
        } else {
            let e = io::Error::last_os_error();
            if !e.raw_os_error().is_some_and(is_transient) {
                return Sent {
                    packets,
                    error: Some(e),
                };
            }
        }
        if Instant::now() >= deadline {
            return Sent {
                packets,
                error: None,
            };
        }
    }
}

/// Control-message buffer aligned for `cmsghdr`, large enough for one u16 option.
#[repr(C, align(8))]
struct CmsgBuf([u8; 32]);

pub(super) fn send_gso(
    sock: &UdpSocket,
    dest: SocketAddrV4,
    size: usize,
    segments: usize,
    deadline: Instant,
) -> Sent {
    let buf = payload(size * segments);
    let addr = sockaddr_v4(dest);
    let iov = iovec_of(&buf);
    let mut control = CmsgBuf([0; 32]);
    let mut msg = msghdr_to(&addr, &iov);
    // SAFETY: CMSG_SPACE only does arithmetic on its argument.
    let space = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as libc::c_uint) } as usize;
    debug_assert!(space <= control.0.len());
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points to `control`, which is 8-byte aligned, zeroed
    // and at least CMSG_SPACE(2) bytes long, so CMSG_FIRSTHDR returns a non-null
    // pointer to a whole cmsghdr inside it, and CMSG_DATA points to 2 bytes
    // still inside it (written unaligned to make no claim about alignment).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as libc::c_uint) as _;
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size as u16);
    }
    let fd = sock.as_raw_fd();
    let mut packets = 0;
    loop {
        // SAFETY: `msg` points to `addr`, `iov` (and through it `buf`) and
        // `control`, all alive and unmoved until the end of this function; the
        // kernel only reads them.
        let n = unsafe { libc::sendmsg(fd, &msg, 0) };
        if n >= 0 {
            packets += (n as usize).div_ceil(size) as u64;
        } else {
            let e = io::Error::last_os_error();
            if !e.raw_os_error().is_some_and(is_transient) {
                return Sent {
                    packets,
                    error: Some(e),
                };
            }
        }
        if Instant::now() >= deadline {
            return Sent {
                packets,
                error: None,
            };
        }
    }
}

pub(super) fn send_uring(
    sock: &UdpSocket,
    dest: SocketAddrV4,
    size: usize,
    batch: usize,
    deadline: Instant,
) -> Sent {
    use io_uring::{opcode, types, IoUring};

    let buf = payload(size);
    let addr = sockaddr_v4(dest);
    let iov = iovec_of(&buf);
    let msgs: Vec<libc::msghdr> = (0..batch).map(|_| msghdr_to(&addr, &iov)).collect();
    let fd = types::Fd(sock.as_raw_fd());
    let failed = |packets, e| Sent {
        packets,
        error: Some(e),
    };
    // Declared after the buffers so it is dropped, and any operation still in
    // flight on an error path torn down, before they are.
    let mut ring = match IoUring::new(batch.next_power_of_two() as u32) {
        Ok(ring) => ring,
        Err(e) => return failed(0, e),
    };
    let mut packets = 0;
    loop {
        {
            let mut sq = ring.submission();
            for (i, msg) in msgs.iter().enumerate() {
                let entry = opcode::SendMsg::new(fd, msg).build().user_data(i as u64);
                // SAFETY: the entry points to `msgs[i]`, which points to `addr`,
                // `iov` and `buf`; all outlive the ring (declared before it) and
                // are never moved or written while operations are in flight.
                // Every batch is reaped below before the next one is queued.
                if unsafe { sq.push(&entry) }.is_err() {
                    let e = io::Error::other("io_uring submission queue full");
                    return failed(packets, e);
                }
            }
        }
        let mut pending = batch;
        let mut error = None;
        while pending > 0 {
            match ring.submit_and_wait(pending) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return failed(packets, e),
            }
            for cqe in ring.completion() {
                pending = pending.saturating_sub(1);
                match cqe.result() {
                    n if n >= 0 => packets += 1,
                    n if is_transient(-n) => {}
                    n => error = Some(io::Error::from_raw_os_error(-n)),
                }
            }
        }
        if let Some(e) = error {
            return failed(packets, e);
        }
        if Instant::now() >= deadline {
            return Sent {
                packets,
                error: None,
            };
        }
    }
}

pub(super) enum SocketBuffer {
    Send,
    Receive,
}

/// A UDP socket bound to an ephemeral port on 127.0.0.1 with an enlarged
/// kernel buffer (best effort: the kernel caps it at its configured maximum).
pub(super) fn loopback_socket(buffer: SocketBuffer) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = match buffer {
        SocketBuffer::Send => socket.set_send_buffer_size(4 << 20),
        SocketBuffer::Receive => socket.set_recv_buffer_size(16 << 20),
    };
    socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    Ok(socket.into())
}

/// The counting end: a socket on 127.0.0.1 and the thread draining it.
pub(super) struct Receiver {
    /// Where the sender sends to.
    pub(super) addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<u64>>,
}

impl Receiver {
    pub(super) fn start(packet_size: usize) -> io::Result<Receiver> {
        let socket = loopback_socket(SocketBuffer::Receive)?;
        socket.set_read_timeout(Some(RECV_POLL))?;
        let addr = match socket.local_addr()? {
            SocketAddr::V4(addr) => addr,
            SocketAddr::V6(_) => unreachable!("bound to an IPv4 address"),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("udp-bench-rx".into())
                .spawn(move || drain(&socket, packet_size, &stop))?
        };
        Ok(Receiver { addr, stop, thread })
    }

    /// Stops the thread once the socket is drained and returns its count.
    pub(super) fn finish(self) -> io::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| io::Error::other("UDP receiver thread panicked"))?
    }
}

/// Reads datagrams until `stop` is set and the socket stays empty for one
/// [`RECV_POLL`], or [`MAX_DRAIN`] after `stop`, whichever comes first.
fn drain(socket: &UdpSocket, packet_size: usize, stop: &AtomicBool) -> io::Result<u64> {
    let mut bufs = vec![0u8; packet_size * RECV_BATCH];
    let iovs: Vec<libc::iovec> = bufs
        .chunks_mut(packet_size)
        .map(|chunk| libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: chunk.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter()
        .map(|iov| {
            // SAFETY: as in `msghdr_to`, all-zero is a valid msghdr.
            let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
            hdr.msg_iov = ptr::from_ref(iov).cast_mut();
            hdr.msg_iovlen = 1;
            libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            }
        })
        .collect();
    let fd: RawFd = socket.as_raw_fd();
    let mut count = 0;
    let mut stopping_since: Option<Instant> = None;
    loop {
        // SAFETY: each of the RECV_BATCH headers points to its own iovec in
        // `iovs`, which points to a disjoint `packet_size` chunk of `bufs`; both
        // vectors outlive the call and are not touched by Rust meanwhile. The
        // kernel writes datagrams only within those chunks and fills in
        // `msg_len`/`msg_flags` of `msgs`. A null timeout is allowed.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                ptr::null_mut(),
            )
        };
        if n > 0 {
            count += n as u64;
        } else if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => {}
                _ => return Err(e),
            }
        }
        if stop.load(Ordering::Relaxed) {
            let since = *stopping_since.get_or_insert_with(Instant::now);
            if n <= 0 || since.elapsed() >= MAX_DRAIN {
                return Ok(count);
            }
        }
    }
}
