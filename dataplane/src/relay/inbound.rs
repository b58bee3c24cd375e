//! The downstream end of a relay link: opens the upstream's packets, feeds
//! each stream it pulls as that stream's publisher would (this shard
//! becomes the stream's publisher shard), asks again for what went missing
//! (NACK, a few times, then gives up), measures each layer's rate for the
//! local viewers' layer choice, and sends keyframe requests up.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Rid};

use super::wire::{self, ReplayWindow, RTP_HEADER};
use super::{RelayLinkId, RelayOutput};
use crate::codec::temporal_layer;
use crate::fanout::{FwdPacket, StreamShared};
use crate::ids::{ShardId, StreamId};
use crate::packet::{take_buffer, Datagram};
use crate::srtp::SrtpSession;
use crate::stats::Counters;

/// The SSRC this end's RTCP carries.
pub(super) const SENDER_SSRC: u32 = 2;
/// Tracks one link may bring.
const MAX_TRACKS: usize = 1024;
/// Missing packets remembered per track.
const MISSING_MAX: usize = 512;
/// At most this many packets of one gap are asked for.
const GAP_MAX: u64 = 128;
/// A NACK is repeated this long after the last one while the packet is missing.
const NACK_RETRY: Duration = Duration::from_millis(40);
/// A missing packet is asked for at most this many times.
const NACK_TRIES: u8 = 3;
/// And given up after this long.
const GIVE_UP: Duration = Duration::from_millis(500);
/// Layer rates are measured over this window.
const RATE_WINDOW: Duration = Duration::from_secs(1);

struct Missing {
    index: u64,
    since: Instant,
    tries: u8,
    next: Instant,
}

struct Track {
    ssrc: u32,
    window: ReplayWindow,
    missing: VecDeque<Missing>,
    /// Learned from its first packet.
    tag: Option<u32>,
    rid: Option<Rid>,
    video: bool,
    last_pli: Option<Instant>,
    bytes: u64,
}

pub(super) struct RelayIn {
    /// Mixed into publisher tags, so viewers rebase when the link changes
    /// even if two upstream nodes' publishers had the same tag.
    salt: u32,
    streams: Vec<(u32, Arc<StreamShared>)>,
    tracks: Vec<Track>,
    next_nack: Option<Instant>,
    last_rates: Option<Instant>,
}

impl RelayIn {
    pub fn new(id: RelayLinkId) -> Self {
        let salt = id.0.to_be_bytes().iter().fold(0x811c_9dc5u32, |h, b| {
            (h ^ *b as u32).wrapping_mul(0x0100_0193)
        });
        RelayIn {
            salt,
            streams: Vec::new(),
            tracks: Vec::new(),
            next_nack: None,
            last_rates: None,
        }
    }

    /// Feed `stream` from the packets tagged `tag`: this shard becomes its
    /// publisher shard (keyframe requests come here).
    pub fn add(&mut self, own: ShardId, tag: u32, stream: Arc<StreamShared>) -> bool {
        if self
            .streams
            .iter()
            .any(|(t, s)| *t == tag || s.id == stream.id)
        {
            return false;
        }
        stream.set_publisher(Some(own));
        self.streams.push((tag, stream));
        true
    }

    pub fn remove(&mut self, own: ShardId, tag: u32) {
        if let Some(i) = self.streams.iter().position(|(t, _)| *t == tag) {
            let (_, stream) = self.streams.swap_remove(i);
            release(own, &stream);
            self.tracks.retain(|t| t.tag != Some(tag));
        }
    }

    pub fn remove_all(&mut self, own: ShardId) {
        for (_, stream) in self.streams.drain(..) {
            release(own, &stream);
        }
        self.tracks.clear();
    }

    pub fn feeds(&self, stream: StreamId) -> bool {
        self.streams.iter().any(|(_, s)| s.id == stream)
    }

    /// An RTP datagram from the peer. `false` if it does not authenticate.
    pub fn handle_rtp(
        &mut self,
        now: Instant,
        srtp: &SrtpSession,
        data: &[u8],
        scratch: &mut Vec<u8>,
        out: &mut Vec<RelayOutput>,
        counters: &mut Counters,
    ) -> bool {
        let Some((seq, ssrc)) = wire::rtp_seq_ssrc(data) else {
            return false;
        };
        let known = self.tracks.iter().position(|t| t.ssrc == ssrc);
        let index = match known.and_then(|i| self.tracks[i].window.highest()) {
            Some(h) => wire::extend_index(h, seq),
            None => seq as u64,
        };
        if known.is_some_and(|i| !self.tracks[i].window.fresh(index)) {
            counters.drop_relay_replayed += 1;
            return true;
        }
        if !srtp.unprotect_rtp(data, RTP_HEADER, index, scratch) {
            return false;
        }
        let ti = match known {
            Some(i) => i,
            None if self.tracks.len() >= MAX_TRACKS => {
                counters.drop_relay_malformed += 1;
                return true;
            }
            None => {
                self.tracks.push(Track {
                    ssrc,
                    window: ReplayWindow::default(),
                    missing: VecDeque::new(),
                    tag: None,
                    rid: None,
                    video: false,
                    last_pli: None,
                    bytes: 0,
                });
                self.tracks.len() - 1
            }
        };
        let t = &mut self.tracks[ti];
        let prev = t.window.highest();
        t.window.record(index);
        match prev {
            Some(h) if index > h + 1 => {
                let from = (h + 1).max(index.saturating_sub(GAP_MAX));
                for i in from..index {
                    if t.missing.len() == MISSING_MAX {
                        t.missing.pop_front();
                        counters.relay_lost += 1;
                    }
                    t.missing.push_back(Missing {
                        index: i,
                        since: now,
                        tries: 0,
                        next: now,
                    });
                }
                self.next_nack = Some(now);
            }
            Some(h) if index < h => {
                if let Some(i) = t.missing.iter().position(|m| m.index == index) {
                    t.missing.remove(i);
                    counters.relay_repaired += 1;
                }
            }
            _ => {}
        }
        let Some((meta, at)) = wire::read_media(scratch) else {
            counters.drop_relay_malformed += 1;
            return true;
        };
        let Some(stream) = self
            .streams
            .iter()
            .find(|(tag, _)| *tag == meta.tag)
            .map(|(_, s)| s)
        else {
            counters.drop_relay_unknown_stream += 1;
            return true;
        };
        let payload = &scratch[at..];
        t.tag = Some(meta.tag);
        t.rid = meta.rid;
        t.video = meta.kind == MediaKind::Video;
        t.bytes += payload.len() as u64;
        stream.add_bytes_in(payload.len() as u64);
        if let Some(rid) = meta.rid {
            if !stream.layer_wanted(rid) {
                counters.layer_packets_suppressed += 1;
                return true;
            }
        }
        out.push(RelayOutput::Media(
            stream.clone(),
            FwdPacket {
                stream: stream.id,
                kind: meta.kind,
                mid: meta.mid,
                rid: meta.rid,
                keyframe: meta.keyframe,
                temporal: temporal_layer(meta.codec, payload),
                publisher_tag: (meta.publisher_tag ^ self.salt) | 1,
                pt: meta.pt,
                codec: meta.codec,
                seq: meta.seq,
                ts: meta.ts,
                marker: meta.marker,
                audio_level: meta.audio_level,
                voice_activity: meta.voice_activity,
                video_orientation: meta.video_orientation,
                received: now,
                payload: Arc::from(payload),
            },
        ));
        true
    }

    /// PLI upstream for the video tracks of `stream` (one layer's or all),
    /// each at most once per `throttle`.
    #[allow(clippy::too_many_arguments)]
    pub fn request_keyframe(
        &mut self,
        now: Instant,
        stream: StreamId,
        rid: Option<Rid>,
        throttle: Duration,
        srtp: &mut SrtpSession,
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
        for t in &mut self.tracks {
            if t.tag != Some(tag) || !t.video || (rid.is_some() && t.rid != rid) {
                continue;
            }
            if t.last_pli
                .is_some_and(|l| now.saturating_duration_since(l) < throttle)
            {
                continue;
            }
            t.last_pli = Some(now);
            let mut buf = take_buffer();
            wire::write_pli(&mut buf, SENDER_SSRC, t.ssrc);
            srtp.protect_rtcp(&mut buf);
            counters.relay_plis_sent += 1;
            counters.relay_packets_out += 1;
            counters.relay_bytes_out += buf.len() as u64;
            transmits.push(Datagram {
                destination: peer,
                contents: buf,
            });
        }
    }

    /// NACKs due and layer rates.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        srtp: &mut SrtpSession,
        peer: SocketAddr,
        transmits: &mut Vec<Datagram>,
        counters: &mut Counters,
    ) {
        if self.next_nack.is_some_and(|at| at <= now) {
            self.send_nacks(now, srtp, peer, transmits, counters);
        }
        match self.last_rates {
            None => self.last_rates = Some(now),
            Some(last) if now.saturating_duration_since(last) >= RATE_WINDOW => {
                self.last_rates = Some(now);
                self.report_rates(now.saturating_duration_since(last));
            }
            Some(_) => {}
        }
    }

    fn send_nacks(
        &mut self,
        now: Instant,
        srtp: &mut SrtpSession,
        peer: SocketAddr,
        transmits: &mut Vec<Datagram>,
        counters: &mut Counters,
    ) {
        let mut next: Option<Instant> = None;
        let mut seqs = Vec::new();
        for t in &mut self.tracks {
            seqs.clear();
            t.missing.retain_mut(|m| {
                if m.tries >= NACK_TRIES || now.saturating_duration_since(m.since) >= GIVE_UP {
                    counters.relay_lost += 1;
                    return false;
                }
                if m.next <= now {
                    seqs.push(m.index as u16);
                    m.tries += 1;
                    m.next = now + NACK_RETRY;
                }
                next = Some(next.map_or(m.next, |n| n.min(m.next)));
                true
            });
            for chunk in seqs.chunks(32) {
                let mut buf = take_buffer();
                wire::write_nack(&mut buf, SENDER_SSRC, t.ssrc, chunk);
                srtp.protect_rtcp(&mut buf);
                counters.relay_nacks_sent += 1;
                counters.relay_packets_out += 1;
                counters.relay_bytes_out += buf.len() as u64;
                transmits.push(Datagram {
                    destination: peer,
                    contents: buf,
                });
            }
        }
        self.next_nack = next;
    }

    /// Each stream's rate, in total and per layer, as a local publisher's
    /// shard reports it.
    fn report_rates(&mut self, window: Duration) {
        let secs = window.as_secs_f64().max(0.001);
        for (tag, stream) in &self.streams {
            let mut total = 0;
            let mut layers: Vec<(Rid, u64)> = Vec::new();
            for t in self.tracks.iter_mut().filter(|t| t.tag == Some(*tag)) {
                let bps = (t.bytes as f64 * 8.0 / secs) as u64;
                t.bytes = 0;
                total += bps;
                if let Some(rid) = t.rid {
                    layers.push((rid, bps));
                }
            }
            stream.report_rates(total, layers);
        }
    }

    /// When NACKs or rates are next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let rates = self.last_rates.map(|l| l + RATE_WINDOW);
        match (self.next_nack, rates) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A stream no longer fed by this shard.
fn release(own: ShardId, stream: &StreamShared) {
    if stream.publisher_shard() == Some(own) {
        stream.set_publisher(None);
    }
    stream.set_bitrate(0);
}
