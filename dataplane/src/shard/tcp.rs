//! ICE-TCP connections as the core sees them. The io layer knows each by a
//! flow address ([`crate::packet::tcp_flow_addr`]) that the shard's tables
//! use like any peer address; str0m is told the peer's real address and
//! protocol, so its candidates and STUN answers are true, and what it sends
//! there is turned back into the flow address here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::media::MediaKind;
use str0m::net::Protocol;

use super::flow::{local_for, Via};
use super::Shard;

/// Flow address ↔ real address of this shard's open TCP connections; as
/// many entries as the io layer has connections (which it caps).
#[derive(Default)]
pub(super) struct TcpFlows {
    real_of: HashMap<SocketAddr, SocketAddr>,
    flow_of: HashMap<SocketAddr, SocketAddr>,
}

impl TcpFlows {
    /// The flow address of the connection from `real`, for what str0m
    /// sends there over TCP.
    pub fn flow_of(&self, real: SocketAddr) -> Option<SocketAddr> {
        self.flow_of.get(&real).copied()
    }

    /// The real address behind a flow address.
    pub fn real_of(&self, flow: SocketAddr) -> Option<SocketAddr> {
        self.real_of.get(&flow).copied()
    }

    /// Where a str0m transmit goes: its destination over UDP, the flow
    /// address of the connection over TCP (`None` once that has closed).
    pub fn destination(&self, t: &str0m::net::Transmit) -> Option<SocketAddr> {
        match t.proto {
            Protocol::Udp => Some(t.destination),
            _ => self.flow_of(t.destination),
        }
    }

    fn open(&mut self, flow: SocketAddr, real: SocketAddr) {
        if self.real_of.insert(flow, real).is_none() {
            // A real address has one connection at a time (the TCP 4-tuple).
            if let Some(old) = self.flow_of.insert(real, flow) {
                self.real_of.remove(&old);
            }
        }
    }

    fn close(&mut self, flow: SocketAddr) {
        if let Some(real) = self.real_of.remove(&flow) {
            if self.flow_of.get(&real) == Some(&flow) {
                self.flow_of.remove(&real);
            }
        }
    }
}

impl Shard {
    /// One RFC 4571 frame from the TCP connection known as `flow`, whose
    /// peer is at `real`.
    pub fn handle_tcp_frame(
        &mut self,
        now: Instant,
        flow: SocketAddr,
        real: SocketAddr,
        data: &[u8],
    ) {
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += data.len() as u64;
        let Some(to) = local_for(&self.cfg.tcp_addrs, real) else {
            self.counters.drop_unknown_flow += 1;
            return;
        };
        self.tcp.open(flow, real);
        let via = Via {
            proto: Protocol::Tcp,
            from: real,
            to,
        };
        self.receive(now, flow, via, data);
    }

    /// The connection known as `flow` has closed: nothing reaches it now.
    pub fn tcp_closed(&mut self, flow: SocketAddr) {
        self.tcp.close(flow);
        self.sessions.unbind(flow);
    }

    /// The connection known as `flow` cannot keep up (`true`) or has caught
    /// up (`false`). A congested viewer gets audio only; once it catches up
    /// its video resumes at a keyframe, which is asked for now.
    pub fn tcp_congested(&mut self, now: Instant, flow: SocketAddr, on: bool) {
        let Some(key) = self.sessions.key_of_addr(flow) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if on {
            s.congested = true;
            s.video_gated = true;
            return;
        }
        s.congested = false;
        let streams: Vec<_> = s
            .viewer_tracks
            .iter()
            .filter(|t| t.kind == MediaKind::Video)
            .filter_map(|t| {
                let src = t.source?;
                s.subscriptions.iter().find(|x| x.id == src.stream).cloned()
            })
            .collect();
        for stream in streams {
            self.request_keyframe(now, &stream, None);
        }
    }
}

/// Does a viewer in this state take a packet of `kind`? Video waits while
/// its connection is congested and, after, until a keyframe.
#[inline]
pub(super) fn admits(congested: bool, gated: &mut bool, kind: MediaKind, keyframe: bool) -> bool {
    if !*gated || kind != MediaKind::Video {
        return true;
    }
    if congested || !keyframe {
        return false;
    }
    *gated = false;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_congested_viewer_gets_audio_then_video_from_a_keyframe() {
        let mut gated = true;
        assert!(admits(true, &mut gated, MediaKind::Audio, false));
        assert!(!admits(true, &mut gated, MediaKind::Video, true));
        assert!(!admits(false, &mut gated, MediaKind::Video, false));
        assert!(gated);
        assert!(admits(false, &mut gated, MediaKind::Video, true));
        assert!(!gated);
        assert!(admits(false, &mut gated, MediaKind::Video, false));
    }

    #[test]
    fn flows_map_both_ways_and_forget_on_close() {
        let mut t = TcpFlows::default();
        let real: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let f1 = crate::packet::tcp_flow_addr(0, 1, 5000);
        let f2 = crate::packet::tcp_flow_addr(0, 2, 5000);
        t.open(f1, real);
        assert_eq!(t.flow_of(real), Some(f1));
        assert_eq!(t.real_of(f1), Some(real));
        // The same real address on a new connection replaces the old.
        t.open(f2, real);
        assert_eq!(t.flow_of(real), Some(f2));
        assert_eq!(t.real_of(f1), None);
        t.close(f1);
        assert_eq!(t.flow_of(real), Some(f2));
        t.close(f2);
        assert_eq!(t.flow_of(real), None);
        assert!(t.real_of.is_empty() && t.flow_of.is_empty());
    }
}
