//! Datagrams as the core hands them to the io layer: the [`Datagram`] type,
//! the per-thread pool of recycled send buffers, and telling RTP from RTCP.
//!
//! Both the Sans-IO core and the io backends import this; neither imports
//! the other.

use std::cell::RefCell;
use std::net::SocketAddr;

/// A datagram to send.
#[derive(Debug)]
pub struct Datagram {
    /// Where it goes.
    pub destination: SocketAddr,
    /// The bytes on the wire.
    pub contents: Vec<u8>,
}

/// Capacity of a pooled datagram buffer: any RTP packet sluice writes.
pub const BUFFER_CAPACITY: usize = 2048;
/// The largest publisher RTP datagram the shard forwards: what fits a
/// 1500-byte path without IP fragmentation, which no WebRTC sender uses.
/// Larger payloads would not fit str0m's send buffers for viewers on its path.
pub const MAX_PUBLISHER_RTP: usize = 1500;
/// Buffers kept per thread for reuse.
const POOL_LIMIT: usize = 1024;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty datagram buffer of [`BUFFER_CAPACITY`], reused from one a
/// backend sent on this thread when there is one: the forward path writes
/// each packet into one of these, so steady-state forwarding allocates none.
#[inline]
pub fn take_buffer() -> Vec<u8> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(BUFFER_CAPACITY))
}

/// Clear `out`, keeping its datagrams' buffers for `take_buffer`.
pub fn recycle(out: &mut Vec<Datagram>) {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        for d in out.drain(..) {
            if d.contents.capacity() >= BUFFER_CAPACITY && pool.len() < POOL_LIMIT {
                let mut b = d.contents;
                b.clear();
                pool.push(b);
            }
        }
    });
}

/// The address by which the shard core knows an ICE-TCP connection: an
/// IPv6 address in `100::/64`, the discard-only prefix (RFC 6666) that no
/// datagram comes from, holding the shard (16 bits) and a serial number
/// that is never reused (48 bits), with the peer's real port. The core's
/// tables, the send path and the relay key everything by address; these
/// give each TCP connection its own, which no UDP peer (or another TCP
/// connection from the same NAT address and port) can share. The io layer
/// frames datagrams sent to one onto its connection.
pub fn tcp_flow_addr(shard: u16, serial: u64, port: u16) -> SocketAddr {
    let low = (u64::from(shard) << 48) | (serial & 0xffff_ffff_ffff);
    let ip = std::net::Ipv6Addr::from((0x0100u128 << 112) | u128::from(low));
    SocketAddr::new(ip.into(), port)
}

/// Is `addr` a [`tcp_flow_addr`]?
#[inline]
pub fn is_tcp_flow(addr: &SocketAddr) -> bool {
    match addr {
        SocketAddr::V6(a) => u128::from(*a.ip()) >> 64 == 0x0100u128 << 48,
        SocketAddr::V4(_) => false,
    }
}

/// Is this datagram RTCP (not RTP, STUN or DTLS)? RFC 7983 + RFC 5761.
#[inline]
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 8 && (128..=191).contains(&buf[0]) && (192..=223).contains(&buf[1])
}

/// Is this datagram RTP (not RTCP, STUN or DTLS)? RFC 7983 + RFC 5761.
#[inline]
pub fn is_rtp(buf: &[u8]) -> bool {
    buf.len() >= 12 && (128..=191).contains(&buf[0]) && !(192..=223).contains(&buf[1])
}

/// Is this datagram DTLS (a record type in 20..=63)? RFC 7983.
#[inline]
pub fn is_dtls(buf: &[u8]) -> bool {
    matches!(buf.first(), Some(20..=63))
}

/// The SSRC of an RTP datagram (cleartext in SRTP).
#[inline]
pub fn rtp_ssrc(buf: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(buf.get(8..12)?.try_into().ok()?))
}

/// The value of header extension `id` of an RTP datagram, one-byte (RFC
/// 8285 §4.2) or two-byte (§4.3) form; extensions are cleartext in SRTP.
pub fn rtp_extension(buf: &[u8], id: u8) -> Option<&[u8]> {
    if !is_rtp(buf) || buf[0] & 0x10 == 0 || id == 0 {
        return None;
    }
    let at = 12 + 4 * (buf[0] & 0x0f) as usize;
    let profile = u16::from_be_bytes(buf.get(at..at + 2)?.try_into().ok()?);
    let words = u16::from_be_bytes(buf.get(at + 2..at + 4)?.try_into().ok()?) as usize;
    let ext = buf.get(at + 4..at + 4 + 4 * words)?;
    let two_byte = match profile {
        0xbede => false,
        p if p & 0xfff0 == 0x1000 => true,
        _ => return None,
    };
    let mut i = 0;
    while i < ext.len() {
        let (eid, len, head) = if two_byte {
            if ext[i] == 0 {
                i += 1;
                continue;
            }
            (ext[i], *ext.get(i + 1)? as usize, 2)
        } else {
            let b = ext[i];
            if b == 0 {
                i += 1;
                continue;
            }
            if b >> 4 == 15 {
                return None;
            }
            (b >> 4, (b & 0x0f) as usize + 1, 1)
        };
        let value = ext.get(i + head..i + head + len)?;
        if eid == id {
            return Some(value);
        }
        i += head + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_is_told_apart_from_rtcp_stun_and_dtls() {
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 96;
        assert!(is_rtp(&rtp));
        assert!(!is_rtcp(&rtp));
        rtp[1] = 200; // SR
        assert!(!is_rtp(&rtp));
        assert!(is_rtcp(&rtp));
        assert!(!is_rtp(&[0x16; 20])); // DTLS
        assert!(!is_rtp(&[0x00; 20])); // STUN
    }

    #[test]
    fn dtls_is_told_by_its_first_byte() {
        assert!(is_dtls(&[22, 254, 253]));
        assert!(is_dtls(&[20]));
        assert!(!is_dtls(&[0, 1])); // STUN
        assert!(!is_dtls(&[128, 96])); // RTP
        assert!(!is_dtls(&[]));
    }

    #[test]
    fn tcp_flow_addresses_are_unique_and_never_real() {
        let a = tcp_flow_addr(3, 7, 5000);
        assert!(is_tcp_flow(&a));
        assert_eq!(a.to_string(), "[100::3:0:0:7]:5000");
        assert_ne!(a, tcp_flow_addr(3, 8, 5000));
        assert_ne!(a, tcp_flow_addr(4, 7, 5000));
        for real in [
            "127.0.0.1:5000",
            "[::1]:5000",
            "[2001:db8::1]:1",
            "[101::1]:1",
        ] {
            assert!(!is_tcp_flow(&real.parse().unwrap()), "{real}");
        }
    }

    #[test]
    fn recycled_buffers_are_reused_empty() {
        let mut out = vec![Datagram {
            destination: "127.0.0.1:9".parse().unwrap(),
            contents: {
                let mut b = take_buffer();
                b.extend_from_slice(&[1, 2, 3]);
                b
            },
        }];
        let ptr = out[0].contents.as_ptr();
        recycle(&mut out);
        assert!(out.is_empty());
        let b = take_buffer();
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr);
    }

    #[test]
    fn rtp_extensions_are_found_in_both_forms_and_never_overrun() {
        // One-byte form: id 1 "ab", id 3 "x", padding.
        let mut one = vec![0x90, 96, 0, 1, 0, 0, 0, 1, 0xaa, 0xbb, 0xcc, 0xdd];
        one.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x11, b'a', b'b', 0x30, b'x', 0, 0, 0]);
        one.extend_from_slice(&[9; 20]);
        assert_eq!(rtp_ssrc(&one), Some(0xaabb_ccdd));
        assert_eq!(rtp_extension(&one, 1), Some(&b"ab"[..]));
        assert_eq!(rtp_extension(&one, 3), Some(&b"x"[..]));
        assert_eq!(rtp_extension(&one, 2), None);
        // Two-byte form: id 5 "mid".
        let mut two = vec![0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        two.extend_from_slice(&[0x10, 0x00, 0, 2, 5, 3, b'm', b'i', b'd', 0, 0, 0]);
        assert_eq!(rtp_extension(&two, 5), Some(&b"mid"[..]));
        for cut in 0..one.len() {
            let _ = rtp_extension(&one[..cut], 1);
            let _ = rtp_extension(&two[..cut.min(two.len())], 5);
        }
    }
}
