//! The upstream end of a relay link: one subscriber of every stream it
//! carries (all layers), one copy per packet to the downstream node, the
//! last packets of each track kept to answer its NACKs, and its PLIs
//! turned into keyframe requests for the stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{Mid, Rid};

use super::wire::{self, Feedback, Meta};
use super::{RelayLinkId, RelayOutput};
use crate::fanout::{Demand, FwdPacket, StreamShared};
use crate::ids::{ShardId, StreamId};
use crate::packet::{take_buffer, Datagram};
use crate::srtp::SrtpSession;
use crate::stats::Counters;

/// The SSRC this end's RTCP carries.
pub(super) const SENDER_SSRC: u32 = 1;
/// Packets kept per track for repairs: about a second of 2.5 Mbit/s video.
const CACHE: usize = 256;
/// A packet is resent at most once in this long, however often it is NACKed.
const RESEND_GAP: Duration = Duration::from_millis(100);
/// Tracks one link carries (streams × media sections × layers).
const MAX_TRACKS: usize = 1024;

/// One (stream, mid, rid) on the link: its SSRC, numbering and repair cache.
struct Track {
    tag: u32,
    mid: Mid,
    rid: Option<Rid>,
    ssrc: u32,
    /// The next SRTP index (the link's own sequence numbers).
    next: u64,
    cache: Vec<Option<Cached>>,
}

struct Cached {
    index: u64,
    packet: FwdPacket,
    resent: Option<Instant>,
}

pub(super) struct RelayOut {
    streams: Vec<(u32, Arc<StreamShared>)>,
    tracks: Vec<Track>,
    next_ssrc: u32,
}

fn any_layer() -> Demand {
    Demand {
        any: true,
        rids: [None, None],
    }
}

impl RelayOut {
    pub fn new(id: RelayLinkId) -> Self {
        RelayOut {
            streams: Vec::new(),
            tracks: Vec::new(),
            next_ssrc: 0x5100_0000 ^ ((id.0 as u32) << 8),
        }
    }

    /// Carry `stream` as `tag`: this shard becomes one of its viewers, taking
    /// every simulcast layer.
    pub fn add(&mut self, own: ShardId, tag: u32, stream: Arc<StreamShared>) -> bool {
        if self
            .streams
            .iter()
            .any(|(t, s)| *t == tag || s.id == stream.id)
        {
            return false;
        }
        stream.add_viewer(own);
        stream.change_demand(&any_layer(), true);
        self.streams.push((tag, stream));
        true
    }

    pub fn remove(&mut self, own: ShardId, tag: u32) {
        if let Some(i) = self.streams.iter().position(|(t, _)| *t == tag) {
            let (_, stream) = self.streams.swap_remove(i);
            stream.remove_viewer(own);
            stream.change_demand(&any_layer(), false);
            self.tracks.retain(|t| t.tag != tag);
        }
    }

    pub fn remove_all(&mut self, own: ShardId) {
        for (_, stream) in self.streams.drain(..) {
            stream.remove_viewer(own);
            stream.change_demand(&any_layer(), false);
        }
        self.tracks.clear();
    }

    /// Send a run of `stream`'s packets, if this link carries it.
    pub fn forward(
        &mut self,
        stream: StreamId,
        packets: &[FwdPacket],
        srtp: &SrtpSession,
        peer: SocketAddr,
        transmits: &mut Vec<Datagram>,
        counters: &mut Counters,
    ) {
        let Some(tag) = self
            .streams
            .iter()
            .find(|(_, s)| s.id == stream)
            .map(|(t, _)| *t)
        else {
            return;
        };
        for p in packets {
            let Some(ti) = self.track(tag, p) else {
                counters.drop_relay_malformed += 1;
                continue;
            };
            let t = &mut self.tracks[ti];
            let index = t.next;
            t.next += 1;
            let slot = (index % CACHE as u64) as usize;
            t.cache[slot] = Some(Cached {
                index,
                packet: p.clone(),
                resent: None,
            });
            if let Some(d) = seal(tag, t.ssrc, index, p, srtp, peer) {
                counters.relay_packets_out += 1;
                counters.relay_bytes_out += d.contents.len() as u64;
                transmits.push(d);
            } else {
                counters.drop_relay_malformed += 1;
            }
        }
    }

    /// The track of `p` on this link, made on its first packet.
    fn track(&mut self, tag: u32, p: &FwdPacket) -> Option<usize> {
        if let Some(i) = self
            .tracks
            .iter()
            .position(|t| t.tag == tag && t.mid == p.mid && t.rid == p.rid)
        {
            return Some(i);
        }
        if self.tracks.len() >= MAX_TRACKS {
            return None;
        }
        self.next_ssrc = self.next_ssrc.wrapping_add(1);
        self.tracks.push(Track {
            tag,
            mid: p.mid,
            rid: p.rid,
            ssrc: self.next_ssrc,
            next: 1,
            cache: (0..CACHE).map(|_| None).collect(),
        });
        Some(self.tracks.len() - 1)
    }

    /// One piece of the downstream's feedback.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_feedback(
        &mut self,
        now: Instant,
        f: Feedback,
        srtp: &SrtpSession,
        peer: SocketAddr,
        out: &mut Vec<RelayOutput>,
        transmits: &mut Vec<Datagram>,
        counters: &mut Counters,
    ) {
        match f {
            Feedback::Keepalive => {}
            Feedback::Pli { ssrc } => {
                let Some(t) = self.tracks.iter().find(|t| t.ssrc == ssrc) else {
                    return;
                };
                if let Some((_, s)) = self.streams.iter().find(|(tag, _)| *tag == t.tag) {
                    counters.relay_keyframe_requests_in += 1;
                    out.push(RelayOutput::Keyframe(s.clone(), t.rid));
                }
            }
            Feedback::Nack { ssrc, seqs } => {
                let Some(t) = self.tracks.iter_mut().find(|t| t.ssrc == ssrc) else {
                    return;
                };
                let highest = t.next.saturating_sub(1);
                for seq in seqs {
                    let index = wire::extend_index(highest, seq);
                    let slot = (index % CACHE as u64) as usize;
                    let Some(c) = t.cache[slot].as_mut().filter(|c| c.index == index) else {
                        counters.relay_repair_misses += 1;
                        continue;
                    };
                    if c.resent
                        .is_some_and(|r| now.saturating_duration_since(r) < RESEND_GAP)
                    {
                        continue;
                    }
                    c.resent = Some(now);
                    // The same index and plaintext: the same ciphertext again.
                    if let Some(d) = seal(t.tag, t.ssrc, index, &c.packet, srtp, peer) {
                        counters.relay_repairs_sent += 1;
                        counters.relay_packets_out += 1;
                        counters.relay_bytes_out += d.contents.len() as u64;
                        transmits.push(d);
                    }
                }
            }
        }
    }
}

/// One sealed relay datagram of `p` as `index` of track `ssrc`.
fn seal(
    tag: u32,
    ssrc: u32,
    index: u64,
    p: &FwdPacket,
    srtp: &SrtpSession,
    peer: SocketAddr,
) -> Option<Datagram> {
    let meta = Meta {
        tag,
        publisher_tag: p.publisher_tag,
        seq: p.seq,
        kind: p.kind,
        keyframe: p.keyframe,
        codec: p.codec,
        pt: p.pt,
        marker: p.marker,
        ts: p.ts,
        audio_level: p.audio_level,
        voice_activity: p.voice_activity,
        video_orientation: p.video_orientation,
        mid: p.mid,
        rid: p.rid,
    };
    let mut buf = take_buffer();
    wire::write_media(&mut buf, ssrc, index as u16, &meta, &p.payload)?;
    srtp.protect_rtp(&mut buf, wire::RTP_HEADER, ssrc, index);
    Some(Datagram {
        destination: peer,
        contents: buf,
    })
}
