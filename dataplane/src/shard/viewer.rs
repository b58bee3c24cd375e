//! A viewer's outgoing track: which publisher track it forwards, the
//! rewriting of each packet for it (numbering, payload type, VP8 ids), and
//! the write to str0m or to the SRTP sender.

use std::time::Instant;

use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::rtp::{Extension, ExtensionValues, RtpWrite, SeqNo, Ssrc};
use str0m::Rtc;

use super::session::Session;
use super::track::PtMapping;
use crate::codec::vp8_patch;
use crate::fanout::{FwdPacket, StreamShared};
use crate::ids::rid_hash;
use crate::packet::Datagram;
use crate::srtp_sender::{self, ExtIds, TrackInfo};

/// What became of one packet offered to a viewer.
pub(super) enum WriteResult {
    Written,
    NoCodec,
    /// Its temporal layer is above the viewer's limit.
    LeftOut,
    Skipped,
}

/// Offer `p` to a viewer session: rewrite it for the track that takes it
/// and write it to the SRTP sender (datagram into `out`) or to str0m.
#[inline]
pub(super) fn write_to_viewer(
    s: &mut Session,
    p: &FwdPacket,
    now: Instant,
    out: &mut Vec<Datagram>,
) -> WriteResult {
    let Some(i) = s.viewer_tracks.iter_mut().position(|t| t.takes(p)) else {
        return WriteResult::Skipped;
    };
    let track = &mut s.viewer_tracks[i];
    let pt = match track
        .pt_cache
        .iter()
        .find(|m| m.publisher_tag == p.publisher_tag && m.publisher_pt == p.pt)
    {
        Some(m) => m.ours,
        None => {
            let stream = s.subscriptions.iter().find(|x| x.id == p.stream);
            let ours = resolve_pt(&s.rtc, stream.map(|x| &**x), track.mid, p);
            track.pt_cache.push(PtMapping {
                publisher_tag: p.publisher_tag,
                publisher_pt: p.pt,
                ours,
            });
            ours
        }
    };
    let Some(pt) = pt else {
        return WriteResult::NoCodec;
    };
    let ssrc = match track.ssrc {
        Some(ssrc) => ssrc,
        None => {
            let Some(ssrc) = s
                .rtc
                .direct_api()
                .stream_tx_by_mid(track.mid, None)
                .map(|t| t.ssrc())
            else {
                return WriteResult::Skipped;
            };
            track.ssrc = Some(ssrc);
            ssrc
        }
    };
    let ts_gap = if p.kind == MediaKind::Audio {
        960
    } else {
        3000
    };
    // Each simulcast layer has its own numbering: a layer switch rebases like a new source.
    let tag = p.publisher_tag ^ p.rid.map(rid_hash).unwrap_or(0);
    if let Some(t) = p.temporal {
        if track.leaves_out(p.ts, t, p.keyframe) {
            // Numbering closes up behind it: the viewer sees no loss.
            track.rebase.skip(tag, p.seq, p.ts, ts_gap);
            track.vp8.skip(tag, &p.payload);
            return WriteResult::LeftOut;
        }
    }
    let Some((seq, ts)) = track.rebase.map(tag, p.seq, p.ts, ts_gap) else {
        return WriteResult::Skipped;
    };
    // Each simulcast layer numbers VP8 pictures on its own, and pictures of
    // temporal layers left out leave gaps: the viewer's numbering continues.
    let vp8 = if p.codec == Codec::Vp8 && (p.rid.is_some() || p.temporal.is_some()) {
        track.vp8.rebase(tag, &p.payload)
    } else {
        None
    };
    if let Some(d) = s.sender.as_mut() {
        // Once a session has an SRTP sender, str0m never sends media on it:
        // both hold the same keys, and only one may number packets.
        let Some(dest) = s.peer else {
            return WriteResult::Skipped;
        };
        if !d.has_track(*ssrc) {
            let Some(info) = sender_track_info(&mut s.rtc, track.mid, ssrc, track.kind) else {
                return WriteResult::Skipped;
            };
            d.add_track(info);
        }
        let packet = srtp_sender::Packet {
            pt: *pt,
            seq,
            ts,
            marker: p.marker,
            audio_level: p
                .audio_level
                .map(|l| (l.unsigned_abs() & 0x7f, p.voice_activity.unwrap_or(false))),
            video_orientation: p.video_orientation.map(|o| o as u8),
            payload: &p.payload,
            vp8,
            wallclock: p.received,
        };
        return if d.send(now, *ssrc, &packet, dest, out) {
            WriteResult::Written
        } else {
            WriteResult::Skipped
        };
    }
    let mut direct = s.rtc.direct_api();
    let Some(tx) = direct.stream_tx(&ssrc) else {
        return WriteResult::Skipped;
    };
    // Patched at serialization (no copy).
    let vp8_patch = vp8.and_then(|ids| vp8_patch(ids, &p.payload));
    let mut ext = ExtensionValues::default();
    if p.kind == MediaKind::Audio {
        ext.audio_level = p.audio_level;
        ext.voice_activity = p.voice_activity;
    } else {
        ext.video_orientation = p.video_orientation;
    }
    let seq: SeqNo = seq.into();
    let mut write = RtpWrite::new(pt, seq, ts, p.received, p.payload.clone())
        .marker(p.marker)
        .ext_vals(ext)
        .nackable(p.kind == MediaKind::Video);
    if let Some(patch) = vp8_patch {
        write = write.vp8_patch(patch);
    }
    tx.write_rtp(write);
    WriteResult::Written
}

/// What the SRTP sender needs of a track, from its session's `Rtc`.
fn sender_track_info(rtc: &mut Rtc, mid: Mid, ssrc: Ssrc, kind: MediaKind) -> Option<TrackInfo> {
    let media = rtc.media(mid)?;
    let exts = media.remote_extmap();
    let id = |e: Extension| exts.id_of(e).unwrap_or(0);
    let ext = ExtIds {
        mid: id(Extension::RtpMid),
        audio_level: id(Extension::AudioLevel),
        video_orientation: id(Extension::VideoOrientation),
    };
    let cname = media.cname().to_string();
    let remote_pts = media.remote_pts().to_vec();
    let params: Vec<_> = rtc
        .codec_config()
        .params()
        .iter()
        .filter(|x| remote_pts.contains(&x.pt()))
        .cloned()
        .collect();
    let clock_rate =
        params
            .first()
            .map(|x| x.spec().clock_rate.get())
            .unwrap_or(if kind == MediaKind::Audio {
                48_000
            } else {
                90_000
            });
    let pairs: Vec<(u8, u8)> = params
        .iter()
        .filter_map(|x| x.resend().map(|r| (*x.pt(), *r)))
        .collect();
    let rtx_ssrc = rtc.direct_api().stream_tx(&ssrc)?.rtx();
    let rtx = match (rtx_ssrc, pairs.is_empty()) {
        (Some(r), false) => Some((*r, pairs)),
        _ => None,
    };
    Some(TrackInfo {
        ssrc: *ssrc,
        mid: mid.to_string(),
        cname,
        ext,
        clock_rate,
        video: kind == MediaKind::Video,
        rtx,
    })
}

/// The viewer's payload type for a publisher's: same codec and parameters if
/// negotiated, else the same codec with other parameters, else none.
fn resolve_pt(rtc: &Rtc, stream: Option<&StreamShared>, mid: Mid, p: &FwdPacket) -> Option<Pt> {
    let remote = rtc.media(mid)?.remote_pts();
    let ours: Vec<_> = rtc
        .codec_config()
        .params()
        .iter()
        .filter(|x| remote.contains(&x.pt()))
        .collect();
    let source = stream
        .and_then(|s| s.source())
        .filter(|s| s.publisher_tag == p.publisher_tag);
    if let Some(src) = source
        .as_ref()
        .and_then(|s| s.params.iter().find(|x| x.pt() == p.pt))
    {
        if let Some(m) = ours.iter().find(|x| x.spec() == src.spec()) {
            return Some(m.pt());
        }
    }
    ours.iter()
        .find(|x| x.spec().codec == p.codec)
        .map(|x| x.pt())
}
