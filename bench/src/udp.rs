//! Raw UDP send throughput of this host over loopback, the ceiling against
//! which the SFU's packet rates are read.
//!
//! [`run`] sends fixed-size datagrams from one thread to a receiver socket it
//! binds on 127.0.0.1, once per [`UdpMode`]: one `send_to` per packet,
//! `sendmmsg` batches, UDP GSO (`UDP_SEGMENT`) super-packets, and batches of
//! `SendMsg` operations on io_uring. A receiver thread drains the socket with
//! `recvmmsg` and counts what arrived. Modes the kernel refuses are reported
//! as [`Outcome::Unavailable`], not as errors. This module owns the syscall
//! glue for those modes; the receive side of the WebRTC clients has its own
//! in [`crate::gro`].
//!
//! Traffic goes only to 127.0.0.1 and each mode stops after its configured
//! duration (plus at most about one second of draining).

use std::fmt;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// Largest UDP payload over IPv4.
pub const MAX_PAYLOAD: usize = 65_507;

/// Kernel limit on segments per UDP GSO send (`UDP_MAX_SEGMENTS`).
const MAX_GSO_SEGMENTS: usize = 64;

/// Kernel limit on messages per `sendmmsg`/`recvmmsg` call (`UIO_MAXIOV`).
const MAX_BATCH: usize = 1024;

/// Datagrams the receiver asks for per `recvmmsg`.
const RECV_BATCH: usize = 64;

/// How long the receiver waits for a datagram before looking at the stop flag.
const RECV_POLL: Duration = Duration::from_millis(50);

/// Longest the receiver keeps draining after the sender stopped.
const MAX_DRAIN: Duration = Duration::from_secs(1);

/// Sends between two looks at the clock in `send` mode.
const SENDS_PER_CLOCK_READ: u32 = 64;

/// How the sender hands datagrams to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UdpMode {
    /// One `send_to` syscall per datagram.
    Send,
    /// `sendmmsg` with [`UdpBenchConfig::batch`] datagrams per call.
    Sendmmsg,
    /// `sendmsg` with a `UDP_SEGMENT` control message: one super-packet the
    /// kernel cuts into [`UdpBenchConfig::gso_segments`] datagrams.
    Gso,
    /// io_uring `SendMsg` operations, [`UdpBenchConfig::batch`] per submission.
    IoUring,
}

impl UdpMode {
    /// Every mode, in the order [`run`] measures them by default.
    pub const ALL: [UdpMode; 4] = [
        UdpMode::Send,
        UdpMode::Sendmmsg,
        UdpMode::Gso,
        UdpMode::IoUring,
    ];

    /// Name used in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            UdpMode::Send => "send",
            UdpMode::Sendmmsg => "sendmmsg",
            UdpMode::Gso => "gso",
            UdpMode::IoUring => "io_uring",
        }
    }
}

impl fmt::Display for UdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mode name that is none of `send`, `sendmmsg`, `gso`, `io_uring`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMode(pub String);

impl fmt::Display for UnknownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown UDP mode {:?}: use send, sendmmsg, gso or io_uring",
            self.0
        )
    }
}

impl std::error::Error for UnknownMode {}

impl FromStr for UdpMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "send" => Ok(UdpMode::Send),
            "sendmmsg" | "mmsg" => Ok(UdpMode::Sendmmsg),
            "gso" => Ok(UdpMode::Gso),
            "io_uring" | "uring" => Ok(UdpMode::IoUring),
            other => Err(UnknownMode(other.to_string())),
        }
    }
}

/// What to measure. The destination is always a socket on 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpBenchConfig {
    /// UDP payload bytes per datagram, 1..=65507 (default 1200, a typical RTP packet).
    pub packet_size: usize,
    /// How long each mode sends (default 2 s).
    pub duration: Duration,
    /// Datagrams per `sendmmsg` call and per io_uring submission, 1..=1024 (default 32).
    pub batch: usize,
    /// Segments per GSO send (default 64); lowered to what fits in one
    /// 64 KiB datagram, see [`UdpBenchConfig::effective_gso_segments`].
    pub gso_segments: usize,
    /// Modes to measure, in order (default all).
    pub modes: Vec<UdpMode>,
}

impl Default for UdpBenchConfig {
    fn default() -> Self {
        Self {
            packet_size: 1200,
            duration: Duration::from_secs(2),
            batch: 32,
            gso_segments: MAX_GSO_SEGMENTS,
            modes: UdpMode::ALL.to_vec(),
        }
    }
}

impl UdpBenchConfig {
    /// Segments per GSO send actually used: the kernel takes at most 64 and the
    /// super-packet must fit in one UDP datagram (54 for 1200-byte packets).
    pub fn effective_gso_segments(&self) -> usize {
        let fit = MAX_PAYLOAD / self.packet_size.max(1);
        self.gso_segments.min(MAX_GSO_SEGMENTS).min(fit).max(1)
    }

    fn validate(&self) -> io::Result<()> {
        let invalid = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if !(1..=MAX_PAYLOAD).contains(&self.packet_size) {
            return invalid(format!(
                "packet size {} is outside 1..={MAX_PAYLOAD} bytes",
                self.packet_size
            ));
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return invalid(format!("batch {} is outside 1..={MAX_BATCH}", self.batch));
        }
        if self.duration.is_zero() {
            return invalid("duration must be above zero".to_string());
        }
        Ok(())
    }
}

/// Whether a mode could be measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The mode ran for the whole duration.
    Measured,
    /// The kernel refused the mode before any datagram left (e.g. no GSO, io_uring disabled).
    Unavailable(String),
    /// The mode stopped early on an error; the counts cover the time until then.
    Failed(String),
}

/// Figures of one mode.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpResult {
    /// Mode measured.
    pub mode: UdpMode,
    /// Whether the figures mean anything.
    pub outcome: Outcome,
    /// Datagrams the kernel accepted from the sender.
    pub packets_sent: u64,
    /// Datagrams the receiver read (the rest were dropped at its socket).
    pub packets_received: u64,
    /// Time spent sending.
    pub seconds: f64,
    /// `packets_sent / seconds`.
    pub pps_sent: f64,
    /// `packets_received / seconds`.
    pub pps_received: f64,
    /// UDP payload sent, in gigabits per second.
    pub gbit_s: f64,
}

/// Measures each configured mode in turn.
///
/// Errors are for what stops the whole run (an invalid config, no loopback
/// socket, no thread); a mode the kernel refuses is a result with
/// [`Outcome::Unavailable`].
pub fn run(cfg: &UdpBenchConfig) -> io::Result<Vec<UdpResult>> {
    cfg.validate()?;
    cfg.modes.iter().map(|&mode| run_mode(mode, cfg)).collect()
}

fn run_mode(mode: UdpMode, cfg: &UdpBenchConfig) -> io::Result<UdpResult> {
    let receiver = Receiver::start(cfg.packet_size)?;
    let sender = loopback_socket(SocketBuffer::Send)?;
    let dest = receiver.addr;
    let started = Instant::now();
    let deadline = started + cfg.duration;
    let sent = match mode {
        UdpMode::Send => send_plain(&sender, dest, cfg.packet_size, deadline),
        UdpMode::Sendmmsg => send_mmsg(&sender, dest, cfg.packet_size, cfg.batch, deadline),
        UdpMode::Gso => send_gso(
            &sender,
            dest,
            cfg.packet_size,
            cfg.effective_gso_segments(),
            deadline,
        ),
        UdpMode::IoUring => send_uring(&sender, dest, cfg.packet_size, cfg.batch, deadline),
    };
    let seconds = started.elapsed().as_secs_f64();
    let packets_received = receiver.finish()?;

    let outcome = match sent.error {
        None => Outcome::Measured,
        Some(e) if sent.packets == 0 => Outcome::Unavailable(unavailable_reason(mode, &e)),
        Some(e) => Outcome::Failed(e.to_string()),
    };
    let per_second = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    Ok(UdpResult {
        mode,
        outcome,
        packets_sent: sent.packets,
        packets_received,
        seconds,
        pps_sent: per_second(sent.packets),
        pps_received: per_second(packets_received),
        gbit_s: per_second(sent.packets) * cfg.packet_size as f64 * 8.0 / 1e9,
    })
}

fn unavailable_reason(mode: UdpMode, e: &io::Error) -> String {
    let unsupported = matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP | libc::ENOSYS)
    );
    match mode {
        UdpMode::Gso if unsupported => format!("UDP GSO not supported here ({e})"),
        UdpMode::IoUring if unsupported || e.raw_os_error() == Some(libc::EPERM) => {
            format!("io_uring not available here ({e})")
        }
        _ => e.to_string(),
    }
}

/// Lays out the results as an aligned text table, one line per mode.
pub fn format_table(results: &[UdpResult]) -> String {
    let mut out = format!(
        "{:<9} {:>12} {:>12} {:>7} {:>12} {:>12} {:>7}  note\n",
        "mode", "sent", "received", "seconds", "sent pkt/s", "recv pkt/s", "Gbit/s"
    );
    for r in results {
        let figures = match r.outcome {
            Outcome::Unavailable(_) => ["-"; 6].map(String::from),
            _ => [
                r.packets_sent.to_string(),
                r.packets_received.to_string(),
                format!("{:.2}", r.seconds),
                format!("{:.0}", r.pps_sent),
                format!("{:.0}", r.pps_received),
                format!("{:.2}", r.gbit_s),
            ],
        };
        let note = match &r.outcome {
            Outcome::Measured if r.packets_received < r.packets_sent => {
                let dropped = r.packets_sent - r.packets_received;
                format!(
                    "{:.1}% dropped at the receiver",
                    100.0 * dropped as f64 / r.packets_sent as f64
                )
            }
            Outcome::Measured => String::new(),
            Outcome::Unavailable(why) => format!("unavailable: {why}"),
            Outcome::Failed(why) => format!("stopped early: {why}"),
        };
        let [sent, received, seconds, pps_sent, pps_received, gbit_s] = figures;
        let line = format!(
            "{:<9} {sent:>12} {received:>12} {seconds:>7} {pps_sent:>12} {pps_received:>12} {gbit_s:>7}  {note}",
            r.mode.name(),
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// What a sender loop achieved.
struct Sent {
    packets: u64,
    /// The error that ended the loop before its deadline.
    error: Option<io::Error>,
}

/// Errors after which the next send may well succeed.
fn is_transient(errno: i32) -> bool {
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

fn send_plain(sock: &UdpSocket, dest: SocketAddrV4, size: usize, deadline: Instant) -> Sent {
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

fn send_mmsg(
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

fn send_gso(
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

fn send_uring(
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

enum SocketBuffer {
    Send,
    Receive,
}

/// A UDP socket bound to an ephemeral port on 127.0.0.1 with an enlarged
/// kernel buffer (best effort: the kernel caps it at its configured maximum).
fn loopback_socket(buffer: SocketBuffer) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = match buffer {
        SocketBuffer::Send => socket.set_send_buffer_size(4 << 20),
        SocketBuffer::Receive => socket.set_recv_buffer_size(16 << 20),
    };
    socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    Ok(socket.into())
}

/// The counting end: a socket on 127.0.0.1 and the thread draining it.
struct Receiver {
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<u64>>,
}

impl Receiver {
    fn start(packet_size: usize) -> io::Result<Receiver> {
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
    fn finish(self) -> io::Result<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn short(modes: Vec<UdpMode>) -> UdpBenchConfig {
        UdpBenchConfig {
            duration: Duration::from_millis(200),
            modes,
            ..UdpBenchConfig::default()
        }
    }

    #[test]
    fn every_mode_runs_briefly_and_plain_send_reaches_the_receiver() {
        let results = run(&short(UdpMode::ALL.to_vec())).unwrap();
        let modes: Vec<UdpMode> = results.iter().map(|r| r.mode).collect();
        assert_eq!(modes, UdpMode::ALL);

        let send = &results[0];
        assert_eq!(send.outcome, Outcome::Measured);
        assert!(send.packets_received > 0, "{send:?}");
        assert!(send.pps_sent > 0.0 && send.gbit_s > 0.0, "{send:?}");

        for r in &results {
            assert!(r.packets_received <= r.packets_sent, "{r:?}");
            assert!(r.seconds < 2.0, "mode overran its duration: {r:?}");
            match &r.outcome {
                Outcome::Measured => {
                    assert!(r.packets_sent > 0, "{r:?}");
                    assert!(r.seconds >= 0.2, "{r:?}");
                }
                Outcome::Unavailable(why) => assert_eq!(r.packets_sent, 0, "{why}"),
                Outcome::Failed(why) => panic!("{} failed: {why}", r.mode),
            }
        }

        let table = format_table(&results);
        assert_eq!(table.lines().count(), 1 + results.len());
        for mode in UdpMode::ALL {
            assert!(table.contains(mode.name()), "{table}");
        }
    }

    #[test]
    fn gso_segments_fit_one_datagram_and_the_kernel_limit() {
        let cfg = UdpBenchConfig::default();
        assert_eq!(cfg.effective_gso_segments(), 54);
        let small = UdpBenchConfig {
            packet_size: 100,
            ..cfg.clone()
        };
        assert_eq!(small.effective_gso_segments(), 64);
        let huge = UdpBenchConfig {
            packet_size: MAX_PAYLOAD,
            ..cfg
        };
        assert_eq!(huge.effective_gso_segments(), 1);
    }

    #[test]
    fn invalid_config_is_refused_before_sending() {
        for cfg in [
            UdpBenchConfig {
                packet_size: 0,
                ..short(vec![UdpMode::Send])
            },
            UdpBenchConfig {
                packet_size: MAX_PAYLOAD + 1,
                ..short(vec![UdpMode::Send])
            },
            UdpBenchConfig {
                batch: 0,
                ..short(vec![UdpMode::Send])
            },
            UdpBenchConfig {
                duration: Duration::ZERO,
                ..short(vec![UdpMode::Send])
            },
        ] {
            let err = run(&cfg).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{cfg:?}");
        }
    }

    #[test]
    fn mode_names_round_trip() {
        for mode in UdpMode::ALL {
            assert_eq!(mode.name().parse::<UdpMode>(), Ok(mode));
        }
        assert!("tcp".parse::<UdpMode>().is_err());
    }

    #[test]
    fn unavailable_mode_is_shown_without_figures() {
        let r = UdpResult {
            mode: UdpMode::Gso,
            outcome: Outcome::Unavailable("UDP GSO not supported here".into()),
            packets_sent: 0,
            packets_received: 0,
            seconds: 0.2,
            pps_sent: 0.0,
            pps_received: 0.0,
            gbit_s: 0.0,
        };
        let table = format_table(&[r]);
        let line = table.lines().nth(1).unwrap();
        assert!(line.starts_with("gso "), "{line}");
        assert!(
            line.ends_with("unavailable: UDP GSO not supported here"),
            "{line}"
        );
    }
}
