//! The shard's side of relay links: commands that open and steer them,
//! relay datagrams before the session demux, and what they produce
//! (packets for the local fan-out, keyframe requests for a stream).

use std::net::SocketAddr;
use std::time::Instant;

use super::api::ShardEvent;
use super::Shard;
use crate::relay::{RelayDirection, RelayLinkId, RelayOutput};

impl Shard {
    pub(super) fn relay_open(
        &mut self,
        now: Instant,
        link: RelayLinkId,
        peer: SocketAddr,
        material: &[u8],
        direction: RelayDirection,
    ) {
        if !self.relays.open(now, link, peer, material, direction) {
            // Refused (bad key, id in use, too many links): say it closed.
            self.events.push(ShardEvent::RelayClosed { link });
        }
    }

    pub(super) fn relay_add_stream(
        &mut self,
        now: Instant,
        link: RelayLinkId,
        tag: u32,
        stream: std::sync::Arc<crate::fanout::StreamShared>,
    ) {
        if self.relays.add_stream(link, tag, stream.clone()) {
            // A new downstream, or a stream fed anew: both start with a keyframe.
            self.request_keyframe(now, &stream, None);
        }
    }

    pub(super) fn relay_close(&mut self, link: RelayLinkId) {
        self.relays.close(link);
    }

    /// A datagram that may be a relay peer's; false if it is not.
    pub(super) fn relay_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) -> bool {
        let mut out = std::mem::take(&mut self.relay_out);
        let mine = self.relays.handle_datagram(
            now,
            source,
            data,
            &mut out,
            &mut self.transmits,
            &mut self.counters,
        );
        self.relay_outputs(now, &mut out);
        self.relay_out = out;
        mine
    }

    fn relay_outputs(&mut self, now: Instant, out: &mut Vec<RelayOutput>) {
        for o in out.drain(..) {
            match o {
                RelayOutput::Media(stream, fwd) => self.egress.route(self.cfg.id, &stream, fwd),
                RelayOutput::Keyframe(stream, rid) => self.request_keyframe(now, &stream, rid),
            }
        }
    }

    /// Relay keepalives, NACK retries, rates; links that fell silent close.
    pub(super) fn relay_timeout(&mut self, now: Instant) {
        if self.relays.len() == 0 {
            return;
        }
        for link in self
            .relays
            .handle_timeout(now, &mut self.transmits, &mut self.counters)
        {
            self.events.push(ShardEvent::RelayClosed { link });
        }
    }
}
