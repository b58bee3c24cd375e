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
}
