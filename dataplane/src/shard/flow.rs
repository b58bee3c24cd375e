//! Datagrams from the socket: which session each belongs to, the binding
//! of a new address only after the session answered its authenticated ICE
//! check, and the publisher SSRC check before str0m sees the datagram.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::net::{Protocol, Receive};
use str0m::Input;

use super::handshake::{Admit, Deferred};
use super::{ingest, Shard};
use crate::ids::Role;
use crate::packet::{is_dtls, is_rtcp, is_rtp, is_tcp_flow, MAX_PUBLISHER_RTP};
use crate::stun;

/// How a datagram reached the shard, as str0m must be told: the protocol,
/// the peer's real address and the local candidate it was sent to.
#[derive(Clone, Copy)]
pub(super) struct Via {
    pub proto: Protocol,
    pub from: SocketAddr,
    pub to: SocketAddr,
}

/// The first of `addrs` in the address family of `peer` (an IPv4-mapped
/// IPv6 peer counts as IPv4), else the first; `None` when `addrs` is empty.
pub(super) fn local_for(addrs: &[SocketAddr], peer: SocketAddr) -> Option<SocketAddr> {
    let v4 = peer.ip().to_canonical().is_ipv4();
    addrs
        .iter()
        .find(|a| a.ip().to_canonical().is_ipv4() == v4)
        .or(addrs.first())
        .copied()
}

impl Shard {
    /// One datagram from the socket.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += data.len() as u64;
        if is_tcp_flow(&source) {
            // Only the TCP layer hands these out; no real peer has one.
            self.counters.drop_malformed += 1;
            return;
        }
        if self.relays.len() > 0 && self.relay_datagram(now, source, data) {
            return;
        }
        let to = local_for(&self.cfg.local_addrs, source).unwrap_or(self.cfg.local_addr);
        let via = Via {
            proto: Protocol::Udp,
            from: source,
            to,
        };
        self.receive(now, source, via, data);
    }

    /// One datagram, from a UDP peer or a TCP frame, known to the shard by
    /// `source` (a flow address for TCP) and to str0m by `via`.
    pub(super) fn receive(&mut self, now: Instant, source: SocketAddr, via: Via, data: &[u8]) {
        let Some((key, bound)) = self.sessions.key_for_flow(source, data) else {
            if stun::is_stun(data) {
                self.counters.drop_unknown_flow += 1;
            } else if Receive::new(via.proto, via.from, via.to, data).is_err() {
                self.counters.drop_malformed += 1;
            } else {
                self.counters.drop_unknown_flow += 1;
            }
            return;
        };
        let receive = match Receive::new(via.proto, via.from, via.to, data) {
            Ok(r) => r,
            Err(_) => {
                self.counters.drop_malformed += 1;
                return;
            }
        };
        if !bound {
            self.handle_new_flow(key, now, source, receive);
            return;
        }
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if session.role == Role::Publisher && is_rtp(data) {
            if data.len() > MAX_PUBLISHER_RTP {
                self.counters.drop_oversized += 1;
                return;
            }
            if !ingest::admit_rtp(session, now, data) {
                self.counters.drop_rogue_ssrc += 1;
                return;
            }
        }
        session.last_rx = now;
        if !session.connected && is_dtls(data) {
            let id = session.id;
            match self.handshakes.admit(key, id, data.len(), || Deferred {
                key,
                id,
                proto: via.proto,
                from: via.from,
                to: via.to,
                data: data.to_vec(),
            }) {
                Admit::Now => {}
                Admit::Deferred => {
                    self.counters.handshakes_deferred += 1;
                    return;
                }
                Admit::Dropped => {
                    self.counters.drop_handshake_backlog += 1;
                    return;
                }
            }
        }
        if let (Some(d), true) = (session.sender.as_mut(), is_rtcp(data)) {
            // NACKs and reception reports for what the SRTP sender sent;
            // str0m reads the same datagram for the rest.
            let dest = session.peer.unwrap_or(source);
            d.handle_rtcp(now, data, dest, &mut self.transmits, &mut self.counters);
        }
        if !self.input(key, now, Input::Receive(now, receive)) {
            self.counters.drop_session_error += 1;
        }
    }

    /// Hand str0m the handshake datagrams that waited, while this turn's
    /// budget lasts.
    pub(super) fn run_deferred_handshakes(&mut self, now: Instant) {
        while let Some(d) = self.handshakes.next_deferred() {
            if self.sessions.get_mut(d.key).is_none_or(|s| s.id != d.id) {
                continue;
            }
            let Ok(receive) = Receive::new(d.proto, d.from, d.to, &d.data) else {
                continue;
            };
            if !self.input(d.key, now, Input::Receive(now, receive)) {
                self.counters.drop_session_error += 1;
            }
        }
    }

    /// A binding request naming a session's ufrag from an address not bound
    /// to it: str0m checks its MESSAGE-INTEGRITY. Only when str0m answers it
    /// with a success response is the address bound; otherwise whatever
    /// str0m would send there is withheld, so the sender learns nothing.
    fn handle_new_flow(&mut self, key: u32, now: Instant, source: SocketAddr, receive: Receive) {
        let first = self.transmits.len();
        self.input(key, now, Input::Receive(now, receive));
        let answered = self.transmits[first..]
            .iter()
            .any(|t| t.destination == source && stun::is_binding_success(&t.contents));
        if answered {
            if let Some(s) = self.sessions.get_mut(key) {
                s.last_rx = now;
            }
            if self.sessions.bind(key, source) {
                self.counters.session_addrs_evicted += 1;
            }
            return;
        }
        self.counters.drop_stun_unauthenticated += 1;
        let mut i = first;
        while i < self.transmits.len() {
            if self.transmits[i].destination == source {
                self.transmits.remove(i);
            } else {
                i += 1;
            }
        }
    }
}
