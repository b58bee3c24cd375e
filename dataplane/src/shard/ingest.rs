//! Publisher ingest: a publisher's RTP from str0m becomes a [`FwdPacket`]
//! (track lookup, codec, keyframe, layer demand, audio level), routed at
//! once or held until its video frame is complete.

use std::time::Instant;

use str0m::media::{MediaKind, Mid, Rid};
use str0m::rtp::RtpPacket;
use str0m::rtp::{Extension, Ssrc};

use super::api::ShardConfig;
use super::egress::Egress;
use super::session::{AudioPeak, Session, SessionTable};
use super::track::{PubTrack, SSRC_TAKEOVER};
use crate::codec::{is_keyframe, temporal_layer};
use crate::fanout::{FwdPacket, StreamShared};
use crate::packet::{rtp_extension, rtp_ssrc};
use crate::stats::Counters;

/// Whether an RTP datagram from a publisher may reach its str0m session.
/// Each (mid, rid) is locked to the SSRC its media flows on: a datagram on
/// another SSRC that claims a locked (mid, rid) through its mid/rid header
/// extensions would make str0m move the receive stream to that SSRC (and
/// the real SSRC, whose packets no longer carry the mid, would map to
/// nothing), so it is refused while the locked SSRC is live. Known SSRCs
/// cost one scan of the session's few tracks.
#[inline]
pub(super) fn admit_rtp(s: &mut Session, now: Instant, data: &[u8]) -> bool {
    let Some(ssrc) = rtp_ssrc(data).map(Ssrc::from) else {
        return true;
    };
    if s.pub_tracks
        .iter()
        .any(|t| t.ssrc == ssrc || t.rtx == Some(ssrc))
    {
        return true;
    }
    admit_new_ssrc(s, now, ssrc, data)
}

/// [`admit_rtp`] for an SSRC no track has: what (mid, rid) it claims.
#[cold]
fn admit_new_ssrc(s: &mut Session, now: Instant, ssrc: Ssrc, data: &[u8]) -> bool {
    let Some(exts) = s
        .pub_tracks
        .first()
        .and_then(|t| s.rtc.media(t.mid))
        .map(|m| m.remote_extmap())
    else {
        return true;
    };
    let id = |e| exts.id_of(e).unwrap_or(0);
    let (mid_id, rid_id, rrid_id) = (
        id(Extension::RtpMid),
        id(Extension::RtpStreamId),
        id(Extension::RepairedRtpStreamId),
    );
    // Without a mid str0m maps an SSRC only if it was signalled.
    let Some(mid) = rtp_extension(data, mid_id).and_then(|v| std::str::from_utf8(v).ok()) else {
        return true;
    };
    let mid = Mid::from(mid);
    let text = |v: &[u8]| std::str::from_utf8(v).ok().map(Rid::from);
    let (rid, main) = match (
        rtp_extension(data, rid_id).and_then(text),
        rtp_extension(data, rrid_id).and_then(text),
    ) {
        (Some(r), _) => (Some(r), true),
        (None, Some(r)) => (Some(r), false),
        (None, None) => {
            let pt = data[1] & 0x7f;
            let params = s.rtc.codec_config().params();
            let main = params.iter().any(|p| *p.pt() == pt)
                || !params.iter().any(|p| p.resend().is_some_and(|r| *r == pt));
            (None, main)
        }
    };
    let Some(t) = s
        .pub_tracks
        .iter_mut()
        .find(|t| t.mid == mid && t.rid == rid)
    else {
        // A (mid, rid) with no media yet: nothing to protect.
        return true;
    };
    let live = now.saturating_duration_since(t.last_rx) < SSRC_TAKEOVER;
    if main {
        if live {
            return false;
        }
        // The old SSRC went silent: an encoder restart takes the track over.
        t.ssrc = ssrc;
        t.rtx = None;
        t.last_rx = now;
        return true;
    }
    let paired = s.rtc.direct_api().stream_rx(&t.ssrc).and_then(|r| r.rtx());
    match paired {
        Some(r) if r == ssrc => {
            t.rtx = Some(ssrc);
            true
        }
        Some(_) => !live,
        None => true,
    }
}

/// Take one RTP packet a publisher session (at `key`) sent: route it to
/// the stream's viewers, or hold it with its frame (then `key` joins `holding`).
pub(super) fn handle_publisher_rtp(
    s: &mut Session,
    key: u32,
    pkt: RtpPacket,
    cfg: &ShardConfig,
    egress: &mut Egress,
    holding: &mut Vec<u32>,
    counters: &mut Counters,
) {
    let Some(stream) = s.stream.as_ref() else {
        return;
    };
    counters.rtp_in += 1;
    let ssrc = pkt.header.ssrc;
    let ti = match s.pub_tracks.iter().position(|t| t.ssrc == ssrc) {
        Some(i) => i,
        None => {
            let rx = s
                .rtc
                .direct_api()
                .stream_rx(&ssrc)
                .map(|r| (r.mid(), r.rid()));
            let Some((kind, mid, rid)) =
                rx.and_then(|(mid, rid)| s.rtc.media(mid).map(|m| (m.kind(), mid, rid)))
            else {
                return;
            };
            s.pub_tracks.push(PubTrack {
                ssrc,
                kind,
                mid,
                rid,
                last_pli: None,
                last_rx: pkt.timestamp,
                rtx: None,
                bytes: 0,
                held: Vec::new(),
                held_since: None,
                released_ts: None,
            });
            s.pub_tracks.len() - 1
        }
    };
    let track = &mut s.pub_tracks[ti];
    track.last_rx = pkt.timestamp;
    track.bytes += pkt.payload.len() as u64;
    stream.add_bytes_in(pkt.payload.len() as u64);
    let (kind, mid, rid) = (track.kind, track.mid, track.rid);
    let pt = pkt.header.payload_type;
    let Some(codec) = s
        .rtc
        .codec_config()
        .params()
        .iter()
        .find(|p| p.pt() == pt)
        .map(|p| p.spec().codec)
    else {
        // RTX or an unknown payload type: not forwarded as media.
        return;
    };
    if kind == MediaKind::Audio {
        if let Some(level) = pkt.header.ext_vals.audio_level {
            let level = level.unsigned_abs().min(127);
            let voice = pkt.header.ext_vals.voice_activity.unwrap_or(false);
            s.audio_peak = Some(match s.audio_peak {
                Some(p) => AudioPeak {
                    level: p.level.min(level),
                    voice: p.voice || voice,
                },
                None => AudioPeak { level, voice },
            });
        }
    }
    if let Some(rid) = rid {
        if !stream.layer_wanted(rid) {
            counters.layer_packets_suppressed += 1;
            return;
        }
    }
    let keyframe = kind == MediaKind::Video && is_keyframe(codec, &pkt.payload);
    let fwd = FwdPacket {
        stream: stream.id,
        kind,
        mid,
        rid,
        keyframe,
        temporal: temporal_layer(codec, &pkt.payload),
        publisher_tag: s.publisher_tag,
        pt,
        codec,
        seq: *pkt.seq_no,
        ts: pkt.header.timestamp,
        marker: pkt.header.marker,
        audio_level: pkt.header.ext_vals.audio_level,
        voice_activity: pkt.header.ext_vals.voice_activity,
        video_orientation: pkt.header.ext_vals.video_orientation,
        received: pkt.timestamp,
        payload: pkt.payload,
    };
    if kind != MediaKind::Video || cfg.frame_hold.is_zero() {
        egress.route(cfg.id, stream, fwd);
        return;
    }
    let t = &mut s.pub_tracks[ti];
    if t.held.first().is_some_and(|h| h.ts != fwd.ts) {
        // A new frame began before the last one's marker (lost or never
        // set): what was held goes now.
        release_frame(t, cfg, stream, egress);
    }
    if fwd.marker || t.released_ts == Some(fwd.ts) {
        release_frame(t, cfg, stream, egress);
        t.released_ts = Some(fwd.ts);
        egress.route(cfg.id, stream, fwd);
    } else {
        if t.held.is_empty() {
            t.held_since = Some(fwd.received);
        }
        t.held.push(fwd);
        if !holding.contains(&key) {
            holding.push(key);
        }
    }
}

/// Release held frames whose time is up; `holding` keeps the publishers
/// that still hold one.
pub(super) fn release_held(
    sessions: &mut SessionTable,
    holding: &mut Vec<u32>,
    now: Instant,
    cfg: &ShardConfig,
    egress: &mut Egress,
    counters: &mut Counters,
) {
    let mut i = 0;
    while i < holding.len() {
        let key = holding[i];
        let mut still = false;
        if let Some(s) = sessions.get_mut(key) {
            if let Some(stream) = s.stream.as_ref() {
                for t in &mut s.pub_tracks {
                    let Some(since) = t.held_since else {
                        continue;
                    };
                    if now.saturating_duration_since(since) < cfg.frame_hold {
                        still = true;
                        continue;
                    }
                    counters.frames_held_expired += 1;
                    release_frame(t, cfg, stream, egress);
                }
            }
        }
        if still {
            i += 1;
        } else {
            holding.swap_remove(i);
        }
    }
}

/// When the earliest held frame must go, if any.
pub(super) fn hold_deadline(
    sessions: &SessionTable,
    holding: &[u32],
    cfg: &ShardConfig,
) -> Option<Instant> {
    holding
        .iter()
        .filter_map(|&k| sessions.get(k))
        .flat_map(|s| s.pub_tracks.iter().filter_map(|t| t.held_since))
        .min()
        .map(|since| since + cfg.frame_hold)
}

/// Send what a track holds of a frame (see [`ShardConfig::frame_hold`]) and
/// remember the frame as sent, so its late packets are not held.
fn release_frame(t: &mut PubTrack, cfg: &ShardConfig, stream: &StreamShared, egress: &mut Egress) {
    if let Some(first) = t.held.first() {
        t.released_ts = Some(first.ts);
    }
    t.held_since = None;
    for p in t.held.drain(..) {
        egress.route(cfg.id, stream, p);
    }
}
