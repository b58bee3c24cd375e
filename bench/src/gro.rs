//! UDP GRO on the bench's receiving sockets.
//!
//! The server sends a viewer several equal-size datagrams at once as one UDP
//! GSO send (`UDP_SEGMENT`). When the receiving socket does not accept GRO,
//! the kernel cuts such a send back into datagrams on the way, and on
//! loopback that happens in the sender's `sendmsg`, on the server's core: the
//! bench's receive work would be charged to the server it measures, which a
//! remote receiver never costs it. With `UDP_GRO` on, the kernel hands the
//! whole send over in one read, with a control message carrying the segment
//! size, and the receiver splits it itself ([`Read::datagrams`]).
//!
//! Control messages are parsed from bytes in the layout of the kernel's
//! `struct cmsghdr` rather than through the libc `CMSG_*` pointer macros, so
//! the parsing is safe code that a malformed buffer cannot make misbehave.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::AsFd;

/// Bytes a receive buffer needs to hold any UDP datagram or GRO read: the
/// kernel coalesces at most 64 KiB into one.
pub const RECV_BUFFER: usize = 64 * 1024;

/// Room for the control messages a read may carry (`UDP_GRO`'s and the
/// receive time's; the rest is slack).
const CONTROL_BUFFER: usize = 128;

const USIZE: usize = mem::size_of::<usize>();
const INT: usize = mem::size_of::<libc::c_int>();

/// `CMSG_ALIGN`: control messages start at multiples of the size of `size_t`.
const fn cmsg_align(len: usize) -> usize {
    (len + USIZE - 1) & !(USIZE - 1)
}

/// Length of the kernel's `struct cmsghdr` (a `size_t` length, then level
/// and type as `int`s), padded as `CMSG_LEN(0)` is: where data begins.
const CMSG_HEADER: usize = cmsg_align(USIZE + 2 * INT);

/// Asks the kernel to deliver GSO sends to `socket` whole (`UDP_GRO`).
/// Kernels before 5.0 refuse it; the socket then keeps working without it.
pub fn enable(socket: &impl AsFd) -> io::Result<()> {
    sluice_dataplane::set_int_option(socket, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// What one [`recv`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Bytes at the start of the buffer.
    pub len: usize,
    /// Sender of the datagrams.
    pub src: SocketAddr,
    /// From the `UDP_GRO` control message: the buffer holds datagrams of this
    /// size, the last possibly shorter. `None`: it holds one datagram.
    pub segment_size: Option<usize>,
    /// The datagram did not fit the buffer and was cut (never with a buffer
    /// of [`RECV_BUFFER`] bytes).
    pub truncated: bool,
    /// When the kernel received it, in microseconds since the Unix epoch, on
    /// a socket with [`enable_timestamps`].
    pub rx_unix_us: Option<u64>,
}

impl Read {
    /// The datagrams of this read in `buf`, the buffer [`recv`] filled.
    pub fn datagrams<'a>(&self, buf: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        segments(&buf[..self.len.min(buf.len())], self.segment_size)
    }
}

/// Splits a read into its datagrams: runs of `segment_size` bytes, the last
/// possibly shorter. Without a segment size, or with one of zero or not
/// smaller than the buffer, the whole buffer is one datagram (an empty one
/// included: UDP allows them).
pub fn segments(buf: &[u8], segment_size: Option<usize>) -> impl Iterator<Item = &[u8]> {
    let size = match segment_size {
        Some(s) if s > 0 && s < buf.len() => s,
        _ => buf.len().max(1),
    };
    let count = buf.len().div_ceil(size).max(1);
    (0..count).map(move |i| &buf[i * size..((i + 1) * size).min(buf.len())])
}

/// The control messages among `control` (the filled part of a `recvmsg`
/// control buffer) as (level, type, data); ends early at bytes that are not
/// a well-formed control message.
fn cmsgs(control: &[u8]) -> impl Iterator<Item = (libc::c_int, libc::c_int, &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let header = control.get(at..at.checked_add(CMSG_HEADER)?)?;
        let len = usize::from_ne_bytes(header[..USIZE].try_into().ok()?);
        let level = libc::c_int::from_ne_bytes(header[USIZE..USIZE + INT].try_into().ok()?);
        let kind =
            libc::c_int::from_ne_bytes(header[USIZE + INT..USIZE + 2 * INT].try_into().ok()?);
        if len < CMSG_HEADER {
            return None;
        }
        let data = control.get(at + CMSG_HEADER..at.checked_add(len)?)?;
        at = at.checked_add(cmsg_align(len))?;
        Some((level, kind, data))
    })
}

/// The segment size of a `UDP_GRO` control message among `control` (the
/// filled part of a `recvmsg` control buffer); `None` when there is none or
/// the bytes are not well-formed control messages.
pub fn gro_segment_size(control: &[u8]) -> Option<usize> {
    let (_, _, data) =
        cmsgs(control).find(|&(l, k, _)| l == libc::SOL_UDP && k == libc::UDP_GRO)?;
    let size = libc::c_int::from_ne_bytes(data.get(..INT)?.try_into().ok()?);
    usize::try_from(size).ok().filter(|&s| s > 0)
}

/// Asks the kernel to stamp each datagram `socket` receives with the time it
/// arrived (`SO_TIMESTAMPNS`): latency measured to that stamp leaves out how
/// long the bench itself took to get round to reading it.
pub fn enable_timestamps(socket: &impl AsFd) -> io::Result<()> {
    sluice_dataplane::set_int_option(socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// The arrival time of an `SCM_TIMESTAMPNS` control message among `control`,
/// in microseconds since the Unix epoch.
pub fn rx_timestamp_us(control: &[u8]) -> Option<u64> {
    let (_, _, data) =
        cmsgs(control).find(|&(l, k, _)| l == libc::SOL_SOCKET && k == libc::SCM_TIMESTAMPNS)?;
    // struct timespec: seconds and nanoseconds, each a 64-bit integer here.
    let sec = i64::from_ne_bytes(data.get(..8)?.try_into().ok()?);
    let nsec = i64::from_ne_bytes(data.get(8..16)?.try_into().ok()?);
    let us = sec.checked_mul(1_000_000)?.checked_add(nsec / 1_000)?;
    u64::try_from(us).ok()
}

pub use sys::recv;

/// The `recvmsg` call behind [`recv`], the module's only `unsafe` code.
#[allow(unsafe_code)]
mod sys {
    use std::io;
    use std::mem;
    use std::os::fd::{AsFd, AsRawFd};
    use std::ptr;

    use socket2::{SockAddr, SockAddrStorage};

    use super::{gro_segment_size, rx_timestamp_us, Read, CONTROL_BUFFER};

    /// Control-message buffer aligned as the kernel lays out `cmsghdr`s.
    #[repr(C, align(8))]
    struct Control([u8; CONTROL_BUFFER]);

    /// One `recvmsg` on `socket` into `buf`, with the `UDP_GRO` segment size when
    /// the kernel coalesced a GSO send. Blocks or fails with `WouldBlock` as the
    /// socket is set to; errors are the socket's (e.g. `ConnectionRefused` after
    /// an ICMP port unreachable).
    pub fn recv(socket: &impl AsFd, buf: &mut [u8]) -> io::Result<Read> {
        let mut addr = SockAddrStorage::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = Control([0; CONTROL_BUFFER]);
        // SAFETY: msghdr is a plain C struct for which all zero bytes is a valid
        // value (null pointers, zero lengths, no flags); zeroing also covers the
        // padding fields some libcs add.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = ptr::from_mut(&mut addr).cast();
        msg.msg_namelen = addr.size_of();
        msg.msg_iov = ptr::from_mut(&mut iov);
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = CONTROL_BUFFER as _;
        // SAFETY: the descriptor is borrowed from a live socket; `msg` points
        // to `addr` (a transparent wrapper of sockaddr_storage, `msg_namelen`
        // bytes), to `iov` and through it to `buf` (`buf.len()` writable
        // bytes), and to `control` (`CONTROL_BUFFER` bytes), all locals or
        // borrows that outlive the call and that Rust does not touch meanwhile.
        // The kernel writes only within those lengths and into `msg`'s own
        // length and flag fields.
        let n = unsafe { libc::recvmsg(socket.as_fd().as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let name_len = msg.msg_namelen.min(addr.size_of());
        // SAFETY: recvmsg filled `addr` with the sender's address, `name_len`
        // bytes of a sockaddr of the family it set in `ss_family` (zeroed
        // storage, and so an unknown family, if it gave none).
        let src = unsafe { SockAddr::new(addr, name_len) }
            .as_socket()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address")
            })?;
        let control_len = (msg.msg_controllen as usize).min(CONTROL_BUFFER);
        Ok(Read {
            len: n as usize,
            src,
            segment_size: gro_segment_size(&control.0[..control_len]),
            truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
            rx_unix_us: rx_timestamp_us(&control.0[..control_len]),
        })
    }
}

/// Senders of GSO runs for the tests of this crate.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use socket2::SockAddr;
    use std::io::IoSlice;
    use std::net::Ipv4Addr;

    /// One control message as the kernel lays it out, padded to its space.
    pub fn cmsg(level: libc::c_int, kind: libc::c_int, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(CMSG_HEADER + data.len()).to_ne_bytes());
        out.extend_from_slice(&level.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.resize(CMSG_HEADER, 0);
        out.extend_from_slice(data);
        out.resize(cmsg_align(out.len()), 0);
        out
    }

    /// A UDP socket on 127.0.0.1.
    pub fn loopback_sender() -> socket2::Socket {
        let sender = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        sender
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .unwrap();
        sender
    }

    /// Sends `datagrams` (all of one size but the last, which may be
    /// shorter) to `to` as one GSO send, failing the test if the kernel
    /// refuses it.
    pub fn send_gso(sender: &socket2::Socket, to: SocketAddr, datagrams: &[Vec<u8>]) {
        let segment = datagrams[0].len();
        let payload = datagrams.concat();
        let control = cmsg(
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            &u16::try_from(segment).unwrap().to_ne_bytes(),
        );
        let to = SockAddr::from(to);
        let bufs = [IoSlice::new(&payload)];
        let msg = socket2::MsgHdr::new()
            .with_addr(&to)
            .with_buffers(&bufs)
            .with_control(&control);
        let n = sender
            .sendmsg(&msg, 0)
            .expect("the kernel accepts a UDP_SEGMENT send");
        assert_eq!(n, payload.len());
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{cmsg, loopback_sender, send_gso};
    use super::*;
    use std::net::{Ipv4Addr, UdpSocket};
    use std::time::Duration;

    fn split(buf: &[u8], size: Option<usize>) -> Vec<&[u8]> {
        segments(buf, size).collect()
    }

    #[test]
    fn segments_split_by_size_with_a_short_last() {
        let buf: Vec<u8> = (0..10).collect();
        assert_eq!(split(&buf, Some(5)), vec![&buf[..5], &buf[5..]]);
        assert_eq!(split(&buf, Some(4)), vec![&buf[..4], &buf[4..8], &buf[8..]]);
        assert_eq!(split(&buf, Some(1)).len(), 10);
        assert_eq!(split(&buf, Some(9)), vec![&buf[..9], &buf[9..]]);
    }

    #[test]
    fn without_a_usable_segment_size_the_buffer_is_one_datagram() {
        let buf: Vec<u8> = (0..10).collect();
        for size in [None, Some(0), Some(10), Some(11), Some(usize::MAX)] {
            assert_eq!(split(&buf, size), vec![&buf[..]], "{size:?}");
        }
        let empty: &[u8] = &[];
        assert_eq!(split(empty, Some(4)), vec![empty]);
        assert_eq!(split(empty, None), vec![empty]);
    }

    #[test]
    fn read_splits_only_what_was_received() {
        let buf = [7u8; 100];
        let read = Read {
            len: 25,
            src: (Ipv4Addr::LOCALHOST, 1).into(),
            segment_size: Some(10),
            truncated: false,
            rx_unix_us: None,
        };
        let lens: Vec<usize> = read.datagrams(&buf).map(<[u8]>::len).collect();
        assert_eq!(lens, vec![10, 10, 5]);
    }

    #[test]
    #[allow(unsafe_code)]
    fn control_layout_matches_libc() {
        // SAFETY: CMSG_LEN and CMSG_SPACE only do arithmetic on their argument.
        let (len0, space4) = unsafe { (libc::CMSG_LEN(0), libc::CMSG_SPACE(INT as libc::c_uint)) };
        assert_eq!(CMSG_HEADER, len0 as usize);
        assert_eq!(
            cmsg(libc::SOL_UDP, libc::UDP_GRO, &[0; INT]).len(),
            space4 as usize
        );
    }

    #[test]
    fn gro_segment_size_is_found_among_control_messages() {
        let gro = cmsg(libc::SOL_UDP, libc::UDP_GRO, &1200i32.to_ne_bytes());
        assert_eq!(gro_segment_size(&gro), Some(1200));
        // After another message (a TTL, say), and with slack after it.
        let mut two = cmsg(libc::SOL_IP, libc::IP_TTL, &64i32.to_ne_bytes());
        two.extend_from_slice(&gro);
        two.extend_from_slice(&[0; 8]);
        assert_eq!(gro_segment_size(&two), Some(1200));
        assert_eq!(gro_segment_size(&[]), None);
        assert_eq!(
            gro_segment_size(&cmsg(
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                &1200u16.to_ne_bytes()
            )),
            None
        );
        assert_eq!(
            gro_segment_size(&cmsg(libc::SOL_UDP, libc::UDP_GRO, &0i32.to_ne_bytes())),
            None
        );
    }

    #[test]
    fn malformed_control_bytes_give_none() {
        let gro = cmsg(libc::SOL_UDP, libc::UDP_GRO, &1200i32.to_ne_bytes());
        // Cut short: the header promises more than is there.
        assert_eq!(gro_segment_size(&gro[..gro.len() - 5]), None);
        assert_eq!(gro_segment_size(&gro[..3]), None);
        // A length below the header's own, and one that would overflow.
        let mut bad = gro.clone();
        bad[..USIZE].copy_from_slice(&1usize.to_ne_bytes());
        assert_eq!(gro_segment_size(&bad), None);
        bad[..USIZE].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert_eq!(gro_segment_size(&bad), None);
        // No data for the int.
        let mut empty = cmsg(libc::SOL_UDP, libc::UDP_GRO, &[]);
        empty.extend_from_slice(&[0; 8]);
        assert_eq!(gro_segment_size(&empty), None);
    }

    #[test]
    fn the_receive_time_is_found_beside_the_segment_size() {
        let mut ts = Vec::new();
        ts.extend_from_slice(&1_700_000_000i64.to_ne_bytes());
        ts.extend_from_slice(&123_456_789i64.to_ne_bytes());
        let mut both = cmsg(libc::SOL_UDP, libc::UDP_GRO, &1200i32.to_ne_bytes());
        both.extend(cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &ts));
        assert_eq!(rx_timestamp_us(&both), Some(1_700_000_000_123_456));
        assert_eq!(gro_segment_size(&both), Some(1200));
        // Cut short, or before the epoch: none.
        assert_eq!(rx_timestamp_us(&both[..both.len() - 4]), None);
        let mut early = Vec::new();
        early.extend_from_slice(&(-5i64).to_ne_bytes());
        early.extend_from_slice(&0i64.to_ne_bytes());
        assert_eq!(
            rx_timestamp_us(&cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &early)),
            None
        );
    }

    #[test]
    fn a_timestamping_socket_reads_when_each_datagram_arrived() {
        let receiver = loopback_receiver();
        enable_timestamps(&receiver).expect("the kernel accepts SO_TIMESTAMPNS");
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        // The kernel turns on stamping at arrival in deferred work after the
        // first socket asks; until then it stamps at the read. Let it.
        std::thread::sleep(Duration::from_millis(200));
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        sender
            .send_to(&[1; 100], receiver.local_addr().unwrap())
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut buf = vec![0u8; RECV_BUFFER];
        let read = recv(&receiver, &mut buf).unwrap();
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let at = read.rx_unix_us.expect("a receive time");
        // Stamped on arrival, not when read 20 ms later.
        assert!(
            at >= before && at + 15_000 <= after,
            "{before} {at} {after}"
        );
    }

    /// A loopback socket whose reads give up after 2 s.
    fn loopback_receiver() -> UdpSocket {
        let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        receiver
    }

    /// One GSO send of three 1000-byte datagrams and a 300-byte one arrives
    /// at a GRO socket as one read of 3300 bytes with segment size 1000, and
    /// splits back into exactly those datagrams.
    #[test]
    fn gso_send_arrives_coalesced_and_splits_back() {
        let receiver = loopback_receiver();
        enable(&receiver).expect("the kernel accepts UDP_GRO");
        let sender = loopback_sender();
        const SEG: usize = 1000;
        let sent: Vec<Vec<u8>> = [SEG, SEG, SEG, 300]
            .iter()
            .enumerate()
            .map(|(d, &len)| (0..len).map(|i| (i * 7 + d * 31) as u8).collect())
            .collect();
        let payload = sent.concat();
        send_gso(&sender, receiver.local_addr().unwrap(), &sent);

        let mut buf = vec![0u8; RECV_BUFFER];
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut reads = Vec::new();
        while got.len() < sent.len() {
            let read = recv(&receiver, &mut buf).expect("datagrams arrive");
            assert_eq!(read.src, sender.local_addr().unwrap().as_socket().unwrap());
            assert!(!read.truncated);
            got.extend(read.datagrams(&buf).map(<[u8]>::to_vec));
            reads.push((read.len, read.segment_size));
        }
        assert_eq!(got, sent);
        assert_eq!(
            reads,
            vec![(payload.len(), Some(SEG))],
            "the GSO send should arrive as one GRO read"
        );
    }

    /// Without GRO the same socket path reads plain datagrams one by one.
    #[test]
    fn plain_datagrams_read_one_at_a_time() {
        let receiver = loopback_receiver();
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let to = receiver.local_addr().unwrap();
        sender.send_to(&[1; 500], to).unwrap();
        sender.send_to(&[2; 20], to).unwrap();
        let mut buf = vec![0u8; RECV_BUFFER];
        for (byte, len) in [(1u8, 500), (2, 20)] {
            let read = recv(&receiver, &mut buf).unwrap();
            assert_eq!(read.segment_size, None);
            assert_eq!(read.src, sender.local_addr().unwrap());
            let datagrams: Vec<&[u8]> = read.datagrams(&buf).collect();
            assert_eq!(datagrams, vec![&vec![byte; len][..]]);
        }
        // A buffer too small for the datagram says so.
        sender.send_to(&[3; 64], to).unwrap();
        let read = recv(&receiver, &mut buf[..16]).unwrap();
        assert!(read.truncated);
        assert_eq!(read.len, 16);
    }
}
