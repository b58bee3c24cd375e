//! Relay links: media between sluice nodes, origin → edge.
//!
//! A link joins one shard of an upstream node to one shard of a downstream
//! node (one UDP flow per node pair) and carries every track and simulcast
//! layer of the streams the downstream pulls. Keys come from the control
//! plane (agreed over an authenticated node-to-node call); there is no
//! ICE or DTLS on the hop. The upstream end ([`out`]) is a subscriber of
//! each stream it carries and keeps what it sent for repairs; the
//! downstream end ([`inbound`]) feeds each stream as its publisher would,
//! asks for what it missed and passes keyframe requests up, throttled.
//!
//! Sans-IO like the shard: the shard hands datagrams and time in and
//! gets datagrams, forwarded packets and keyframe requests out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::crypto::dtls::SrtpProfile;
use str0m::media::Rid;

use crate::fanout::{FwdPacket, StreamShared};
use crate::ids::{ShardId, StreamId};
use crate::packet::{is_rtcp, is_rtp, Datagram};
use crate::srtp::{Exported, SrtpSession};
use crate::stats::Counters;

mod inbound;
mod out;
mod wire;

use inbound::RelayIn;
use out::RelayOut;

/// Length of a link's key material: AES-128-GCM keys and salts for both
/// directions, laid out as the DTLS-SRTP exporter's (RFC 5764 §4.2).
pub const RELAY_KEY_LEN: usize = 2 * (16 + 12);
/// A link that hears nothing authentic from its peer for this long closes.
pub const RELAY_IDLE: Duration = Duration::from_secs(5);
/// Each end tells the other it is alive this often.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// Links one shard holds.
const MAX_LINKS: usize = 256;

/// The control plane's id of one relay link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayLinkId(pub u64);

/// Which end of a link a shard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayDirection {
    /// Upstream: sends the streams it carries to the peer.
    Send,
    /// Downstream: receives them and feeds the local streams.
    Receive,
}

/// What a relay datagram gave the shard to do.
#[derive(Debug)]
pub(crate) enum RelayOutput {
    /// A packet for a stream this shard feeds from a link.
    Media(Arc<StreamShared>, FwdPacket),
    /// The downstream asked for a keyframe of a stream this link carries.
    Keyframe(Arc<StreamShared>, Option<Rid>),
}

/// The two ends a link may be.
enum End {
    Out(RelayOut),
    In(RelayIn),
}

struct Link {
    peer: SocketAddr,
    srtp: SrtpSession,
    end: End,
    last_rx: Instant,
    last_keepalive: Instant,
    rtcp_replay: wire::ReplayWindow,
}

/// A shard's relay links.
pub(crate) struct Relays {
    own: ShardId,
    links: HashMap<RelayLinkId, Link>,
    by_peer: HashMap<SocketAddr, Vec<RelayLinkId>>,
    scratch: Vec<u8>,
    feedback: Vec<wire::Feedback>,
}

impl Relays {
    pub fn new(own: ShardId) -> Self {
        Relays {
            own,
            links: HashMap::new(),
            by_peer: HashMap::new(),
            scratch: Vec::with_capacity(2048),
            feedback: Vec::new(),
        }
    }

    /// Links held now.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Open a link to `peer` with `material` ([`RELAY_KEY_LEN`] bytes).
    /// Refused (false) for bad material, a link id in use or too many links.
    pub fn open(
        &mut self,
        now: Instant,
        id: RelayLinkId,
        peer: SocketAddr,
        material: &[u8],
        dir: RelayDirection,
    ) -> bool {
        if self.links.contains_key(&id) || self.links.len() >= MAX_LINKS {
            return false;
        }
        let Some(srtp) = SrtpSession::new(&Exported {
            material: material.to_vec(),
            profile: SrtpProfile::AEAD_AES_128_GCM,
            active: dir == RelayDirection::Send,
        }) else {
            return false;
        };
        let end = match dir {
            RelayDirection::Send => End::Out(RelayOut::new(id)),
            RelayDirection::Receive => End::In(RelayIn::new(id)),
        };
        self.links.insert(
            id,
            Link {
                peer,
                srtp,
                end,
                last_rx: now,
                last_keepalive: now - KEEPALIVE,
                rtcp_replay: wire::ReplayWindow::default(),
            },
        );
        self.by_peer.entry(peer).or_default().push(id);
        true
    }

    /// Close a link, withdrawing it from every stream it carried or fed.
    pub fn close(&mut self, id: RelayLinkId) -> bool {
        let Some(mut link) = self.links.remove(&id) else {
            return false;
        };
        if let Some(ids) = self.by_peer.get_mut(&link.peer) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                self.by_peer.remove(&link.peer);
            }
        }
        match &mut link.end {
            End::Out(o) => o.remove_all(self.own),
            End::In(i) => i.remove_all(self.own),
        }
        true
    }

    /// Carry (on a sending link) or feed (on a receiving one) `stream` as `tag`.
    pub fn add_stream(&mut self, id: RelayLinkId, tag: u32, stream: Arc<StreamShared>) -> bool {
        match self.links.get_mut(&id).map(|l| &mut l.end) {
            Some(End::Out(o)) => o.add(self.own, tag, stream),
            Some(End::In(i)) => i.add(self.own, tag, stream),
            None => false,
        }
    }

    /// Stop carrying or feeding the stream of `tag`.
    pub fn remove_stream(&mut self, id: RelayLinkId, tag: u32) {
        match self.links.get_mut(&id).map(|l| &mut l.end) {
            Some(End::Out(o)) => o.remove(self.own, tag),
            Some(End::In(i)) => i.remove(self.own, tag),
            None => {}
        }
    }

    /// A datagram from `source`. `false` if no link has that peer (the
    /// datagram is not the relay's); otherwise it was handled and counted.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        data: &[u8],
        out: &mut Vec<RelayOutput>,
        transmits: &mut Vec<Datagram>,
        counters: &mut Counters,
    ) -> bool {
        let Some(ids) = self.by_peer.get(&source) else {
            return false;
        };
        // One peer address may hold a link each way; the right key opens it.
        for id in ids {
            let Some(link) = self.links.get_mut(id) else {
                continue;
            };
            let opened = if is_rtp(data) {
                match &mut link.end {
                    End::In(i) => {
                        i.handle_rtp(now, &link.srtp, data, &mut self.scratch, out, counters)
                    }
                    End::Out(_) => false,
                }
            } else if is_rtcp(data) {
                if !link.srtp.unprotect_rtcp(data, &mut self.scratch) {
                    false
                } else {
                    let index = srtcp_index(data);
                    if !link.rtcp_replay.fresh(index) {
                        counters.drop_relay_replayed += 1;
                        return true;
                    }
                    link.rtcp_replay.record(index);
                    self.feedback.clear();
                    wire::read_feedback(&self.scratch, &mut self.feedback);
                    if let End::Out(o) = &mut link.end {
                        for f in self.feedback.drain(..) {
                            o.handle_feedback(
                                now, f, &link.srtp, link.peer, out, transmits, counters,
                            );
                        }
                    }
                    true
                }
            } else {
                false
            };
            if opened {
                link.last_rx = now;
                counters.relay_packets_in += 1;
                counters.relay_bytes_in += data.len() as u64;
                return true;
            }
        }
        counters.drop_relay_unauthenticated += 1;
        true
    }

    /// A run of packets of one stream, as every local viewer gets them:
    /// each sending link that carries the stream gets one copy.
    pub fn forward(
        &mut self,
        packets: &[FwdPacket],
        transmits: &mut Vec<Datagram>,
        counters: &mut Counters,
    ) {
        let Some(stream) = packets.first().map(|p| p.stream) else {
            return;
        };
        for link in self.links.values_mut() {
            if let End::Out(o) = &mut link.end {
                o.forward(stream, packets, &link.srtp, link.peer, transmits, counters);
            }
        }
    }

    /// Ask upstream for a keyframe of a stream a link feeds (one layer's, or
    /// every video track's), each track at most once per `throttle`.
    /// `false` if no link feeds the stream.
    pub fn request_keyframe(
        &mut self,
        now: Instant,
        stream: StreamId,
        rid: Option<Rid>,
        throttle: Duration,
        transmits: &mut Vec<Datagram>,
        counters: &mut Counters,
    ) -> bool {
        for link in self.links.values_mut() {
            if let End::In(i) = &mut link.end {
                if i.feeds(stream) {
                    i.request_keyframe(
                        now,
                        stream,
                        rid,
                        throttle,
                        &mut link.srtp,
                        link.peer,
                        transmits,
                        counters,
                    );
                    return true;
                }
            }
        }
        false
    }

    /// Keepalives, NACK retries, layer rates and idle links: what is due at
    /// `now`. Returns the links that closed for silence.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        transmits: &mut Vec<Datagram>,
        counters: &mut Counters,
    ) -> Vec<RelayLinkId> {
        let mut closed = Vec::new();
        for (id, link) in self.links.iter_mut() {
            if now.saturating_duration_since(link.last_rx) >= RELAY_IDLE {
                closed.push(*id);
                continue;
            }
            if now.saturating_duration_since(link.last_keepalive) >= KEEPALIVE {
                link.last_keepalive = now;
                let sender = match &link.end {
                    End::Out(_) => out::SENDER_SSRC,
                    End::In(_) => inbound::SENDER_SSRC,
                };
                let mut buf = crate::packet::take_buffer();
                wire::write_keepalive(&mut buf, sender);
                link.srtp.protect_rtcp(&mut buf);
                counters.relay_packets_out += 1;
                counters.relay_bytes_out += buf.len() as u64;
                transmits.push(Datagram {
                    destination: link.peer,
                    contents: buf,
                });
            }
            if let End::In(i) = &mut link.end {
                i.handle_timeout(now, &mut link.srtp, link.peer, transmits, counters);
            }
        }
        for id in &closed {
            self.close(*id);
        }
        closed
    }

    /// When `handle_timeout` next has work, if any link is open.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.links
            .values()
            .map(|l| {
                let mut at = (l.last_keepalive + KEEPALIVE).min(l.last_rx + RELAY_IDLE);
                if let End::In(i) = &l.end {
                    if let Some(t) = i.poll_timeout() {
                        at = at.min(t);
                    }
                }
                at
            })
            .min()
    }
}

/// The SRTCP index of a sealed packet (its last four bytes, E flag off).
fn srtcp_index(data: &[u8]) -> u64 {
    let t = &data[data.len() - 4..];
    (u32::from_be_bytes([t[0], t[1], t[2], t[3]]) & 0x7fff_ffff) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::media::{MediaKind, Mid};

    const ORIGIN: &str = "127.0.0.1:40000";
    const EDGE: &str = "127.0.0.2:40000";

    fn packet(stream: &StreamShared, seq: u64, rid: Option<&str>) -> FwdPacket {
        FwdPacket {
            mid: Mid::from("1"),
            rid: rid.map(Rid::from),
            keyframe: seq == 100,
            publisher_tag: 77,
            ts: seq as u32 * 3000,
            marker: true,
            payload: Arc::from(vec![seq as u8; 300]),
            ..FwdPacket::for_test(stream.id, MediaKind::Video, seq)
        }
    }

    struct Pair {
        now: Instant,
        origin: Relays,
        edge: Relays,
        up: Arc<StreamShared>,
        down: Arc<StreamShared>,
        c: Counters,
    }

    fn pair() -> Pair {
        let now = Instant::now();
        let key: Vec<u8> = (0..RELAY_KEY_LEN as u8).collect();
        let mut origin = Relays::new(ShardId(0));
        let mut edge = Relays::new(ShardId(1));
        assert!(origin.open(
            now,
            RelayLinkId(1),
            EDGE.parse().unwrap(),
            &key,
            RelayDirection::Send
        ));
        assert!(edge.open(
            now,
            RelayLinkId(9),
            ORIGIN.parse().unwrap(),
            &key,
            RelayDirection::Receive
        ));
        let up = Arc::new(StreamShared::new(StreamId(1), "s"));
        let down = Arc::new(StreamShared::new(StreamId(5), "s"));
        assert!(origin.add_stream(RelayLinkId(1), 3, up.clone()));
        assert!(edge.add_stream(RelayLinkId(9), 3, down.clone()));
        // A viewer on the edge that takes any layer.
        down.change_demand(
            &crate::fanout::Demand {
                any: true,
                rids: [None, None],
            },
            true,
        );
        Pair {
            now,
            origin,
            edge,
            up,
            down,
            c: Counters::default(),
        }
    }

    impl Pair {
        /// Origin → edge: what the edge fed its stream with.
        fn deliver(&mut self, datagrams: Vec<Datagram>) -> Vec<FwdPacket> {
            let mut out = Vec::new();
            let mut tx = Vec::new();
            for d in datagrams {
                assert_eq!(d.destination, EDGE.parse().unwrap());
                assert!(self.edge.handle_datagram(
                    self.now,
                    ORIGIN.parse().unwrap(),
                    &d.contents,
                    &mut out,
                    &mut tx,
                    &mut self.c
                ));
            }
            assert!(tx.is_empty());
            out.into_iter()
                .map(|o| match o {
                    RelayOutput::Media(s, p) => {
                        assert_eq!(s.id, self.down.id);
                        p
                    }
                    o => panic!("unexpected {o:?}"),
                })
                .collect()
        }

        /// Edge → origin: what the origin did with the edge's datagrams.
        fn feed_back(&mut self, datagrams: Vec<Datagram>) -> (Vec<RelayOutput>, Vec<Datagram>) {
            let mut out = Vec::new();
            let mut tx = Vec::new();
            for d in datagrams {
                assert_eq!(d.destination, ORIGIN.parse().unwrap());
                assert!(self.origin.handle_datagram(
                    self.now,
                    EDGE.parse().unwrap(),
                    &d.contents,
                    &mut out,
                    &mut tx,
                    &mut self.c
                ));
            }
            (out, tx)
        }
    }

    #[test]
    fn packets_cross_byte_exact_and_the_edge_feeds_its_stream() {
        let mut p = pair();
        // The origin end is one viewer of the stream, taking every layer.
        assert_eq!(p.up.viewers_on(ShardId(0)), 1);
        assert!(p.up.layer_wanted(Rid::from("q")));
        assert_eq!(p.down.publisher_shard(), Some(ShardId(1)));
        let sent: Vec<FwdPacket> = (100..110).map(|s| packet(&p.up, s, Some("h"))).collect();
        let mut tx = Vec::new();
        p.origin.forward(&sent, &mut tx, &mut p.c);
        assert_eq!(tx.len(), 10);
        // Sealed: the payload bytes are not in clear.
        assert!(!tx[0].contents.windows(8).any(|w| w == [100u8; 8]));
        // The edge only feeds packets once it has a stream for the tag.
        let got = p.deliver(tx);
        assert_eq!(got.len(), 10);
        for (a, b) in sent.iter().zip(&got) {
            assert_eq!(a.payload, b.payload);
            assert_eq!(
                (a.seq, a.ts, a.marker, a.pt, a.rid, a.keyframe),
                (b.seq, b.ts, b.marker, b.pt, b.rid, b.keyframe)
            );
            assert_eq!(b.stream, p.down.id);
            assert_ne!(b.publisher_tag, a.publisher_tag, "salted per link");
        }
        assert_eq!(p.c.relay_packets_in, 10);
    }

    #[test]
    fn a_lost_packet_is_nacked_and_resent_once() {
        let mut p = pair();
        let sent: Vec<FwdPacket> = (100..105).map(|s| packet(&p.up, s, None)).collect();
        let mut tx = Vec::new();
        p.origin.forward(&sent, &mut tx, &mut p.c);
        tx.remove(2);
        assert_eq!(p.deliver(tx).len(), 4);
        // The edge asks at once.
        let mut fb = Vec::new();
        p.edge.handle_timeout(p.now, &mut fb, &mut p.c);
        assert_eq!(p.c.relay_nacks_sent, 1);
        let nacks: Vec<Datagram> = fb.into_iter().filter(|d| d.contents.len() < 60).collect();
        let (_, resent) = p.feed_back(nacks);
        assert_eq!(resent.len(), 1);
        assert_eq!(p.c.relay_repairs_sent, 1);
        let got = p.deliver(resent);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].seq, 102);
        assert_eq!(p.c.relay_repaired, 1);
        // Delivered twice is a replay: dropped and counted.
        let mut again = Vec::new();
        p.origin
            .forward(&[packet(&p.up, 105, None)], &mut again, &mut p.c);
        let copy = Datagram {
            destination: again[0].destination,
            contents: again[0].contents.clone(),
        };
        assert_eq!(p.deliver(vec![again.remove(0), copy]).len(), 1);
        assert_eq!(p.c.drop_relay_replayed, 1);
    }

    #[test]
    fn keyframe_requests_go_up_throttled_and_become_the_streams() {
        let mut p = pair();
        let mut tx = Vec::new();
        p.origin
            .forward(&[packet(&p.up, 100, Some("h"))], &mut tx, &mut p.c);
        p.deliver(tx);
        let throttle = Duration::from_millis(500);
        let mut fb = Vec::new();
        assert!(p
            .edge
            .request_keyframe(p.now, p.down.id, None, throttle, &mut fb, &mut p.c));
        assert!(p
            .edge
            .request_keyframe(p.now, p.down.id, None, throttle, &mut fb, &mut p.c));
        assert_eq!(fb.len(), 1, "the second is within the throttle");
        let (out, _) = p.feed_back(fb);
        match &out[..] {
            [RelayOutput::Keyframe(s, rid)] => {
                assert_eq!(s.id, p.up.id);
                assert_eq!(*rid, Some(Rid::from("h")));
            }
            o => panic!("unexpected {o:?}"),
        }
    }

    #[test]
    fn forged_and_foreign_datagrams_are_dropped_and_counted() {
        let mut p = pair();
        let mut tx = Vec::new();
        p.origin
            .forward(&[packet(&p.up, 100, None)], &mut tx, &mut p.c);
        let mut forged = tx[0].contents.clone();
        let n = forged.len();
        forged[n - 20] ^= 1;
        let (mut out, mut t) = (Vec::new(), Vec::new());
        let origin: SocketAddr = ORIGIN.parse().unwrap();
        assert!(p
            .edge
            .handle_datagram(p.now, origin, &forged, &mut out, &mut t, &mut p.c));
        assert_eq!(p.c.drop_relay_unauthenticated, 1);
        // Sealed with another key.
        let mut other = Relays::new(ShardId(0));
        other.open(
            p.now,
            RelayLinkId(2),
            EDGE.parse().unwrap(),
            &[7; RELAY_KEY_LEN],
            RelayDirection::Send,
        );
        other.add_stream(RelayLinkId(2), 3, p.up.clone());
        let mut tx2 = Vec::new();
        other.forward(&[packet(&p.up, 100, None)], &mut tx2, &mut p.c);
        assert!(p.edge.handle_datagram(
            p.now,
            origin,
            &tx2[0].contents,
            &mut out,
            &mut t,
            &mut p.c
        ));
        assert_eq!(p.c.drop_relay_unauthenticated, 2);
        // The real packet from another address is not the relay's.
        let stranger: SocketAddr = "127.0.0.9:1".parse().unwrap();
        assert!(!p.edge.handle_datagram(
            p.now,
            stranger,
            &tx[0].contents,
            &mut out,
            &mut t,
            &mut p.c
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn silent_links_close_and_withdraw_from_their_streams() {
        let mut p = pair();
        let mut tx = Vec::new();
        assert!(p
            .edge
            .handle_timeout(p.now + RELAY_IDLE / 2, &mut tx, &mut p.c)
            .is_empty());
        assert_eq!(
            p.edge.handle_timeout(p.now + RELAY_IDLE, &mut tx, &mut p.c),
            vec![RelayLinkId(9)]
        );
        assert_eq!(p.down.publisher_shard(), None);
        assert!(p.origin.close(RelayLinkId(1)));
        assert_eq!(p.up.viewers_on(ShardId(0)), 0);
        assert!(!p.up.layer_wanted(Rid::from("q")));
    }
}
