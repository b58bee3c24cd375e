//! A viewer's outgoing track: which publisher track it forwards, the
//! rewriting of each packet for it (numbering, payload type, VP8 ids), and
//! the write to str0m or to the SRTP sender.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::{Extension, ExtensionValues, RtpWrite, SeqNo, Ssrc};
use str0m::Rtc;

use super::session::Session;
use crate::codec::{vp8_patch, Vp8Rebase};
use crate::fanout::{Demand, FwdPacket, Rebase, StreamShared};
use crate::ids::{rid_hash, StreamId};
use crate::packet::Datagram;
use crate::srtp_sender::{self, ExtIds, TrackInfo, RTX_CACHE_PACKETS};

/// The publisher track a viewer track forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TrackSource {
    pub stream: StreamId,
    /// The publisher's media section.
    pub mid: Mid,
    /// The publisher session (see [`FwdPacket::publisher_tag`]); 0 until a
    /// packet has been taken.
    pub publisher_tag: u32,
}

/// One learnt payload type mapping: a publisher's pt to ours.
#[derive(Debug, Clone, Copy)]
struct PtMapping {
    publisher_tag: u32,
    publisher_pt: Pt,
    /// `None` when the viewer lacks that codec.
    ours: Option<Pt>,
}

/// The simulcast layers a track has registered as wanted, and on which stream.
#[derive(Debug)]
struct RegisteredDemand {
    stream: Arc<StreamShared>,
    demand: Demand,
}

/// One sending media section of a viewer session.
pub(super) struct ViewerTrack {
    pub mid: Mid,
    pub kind: MediaKind,
    /// The publisher track currently forwarded to this mid.
    pub source: Option<TrackSource>,
    /// Binds to whichever track of the session's stream has this kind (WHEP).
    pub auto: bool,
    /// Simulcast: the layer being forwarded, the one wanted, and the cap.
    pub layer: Option<Rid>,
    pub target: Option<Rid>,
    pub target_since: Option<Instant>,
    pub cap_changed: bool,
    pub max_layer: Option<u8>,
    pub ssrc: Option<Ssrc>,
    rebase: Rebase,
    /// VP8 picture id / TL0PICIDX continuity across simulcast layer switches.
    vp8: Vp8Rebase,
    pt_cache: Vec<PtMapping>,
    demand: Option<RegisteredDemand>,
}

/// What became of one packet offered to a viewer.
pub(super) enum WriteResult {
    Written,
    NoCodec,
    Skipped,
}

impl ViewerTrack {
    pub fn new(mid: Mid, kind: MediaKind, auto: bool) -> Self {
        ViewerTrack {
            mid,
            kind,
            source: None,
            auto,
            layer: None,
            target: None,
            target_since: None,
            cap_changed: false,
            max_layer: None,
            vp8: Vp8Rebase::default(),
            ssrc: None,
            rebase: Rebase::new(),
            pt_cache: Vec::new(),
            demand: None,
        }
    }

    /// Point this track at a publisher track (or at nothing): payload types
    /// are learnt again.
    pub fn bind(&mut self, source: Option<TrackSource>) {
        self.auto = false;
        self.source = source;
        self.pt_cache.clear();
    }

    /// Bring this track's registered layer demand in line with its state:
    /// a video track with a source wants its current and target layers, or
    /// any layer until it has one. `auto_stream` is the session's WHEP stream.
    pub fn sync_demand(
        &mut self,
        subs: &[Arc<StreamShared>],
        auto_stream: Option<&Arc<StreamShared>>,
    ) {
        let stream = match self.source {
            _ if self.kind != MediaKind::Video => None,
            Some(src) => subs.iter().find(|x| x.id == src.stream),
            None if self.auto => auto_stream,
            None => None,
        };
        let want = stream.map(|st| {
            let d = if self.layer.is_none() && self.target.is_none() {
                Demand {
                    any: true,
                    rids: [None, None],
                }
            } else {
                let second = self.target.filter(|t| Some(*t) != self.layer);
                Demand {
                    any: false,
                    rids: [self.layer.or(self.target), second],
                }
            };
            (st, d)
        });
        let same = match (&self.demand, &want) {
            (Some(a), Some((b, db))) => a.stream.id == b.id && a.demand == *db,
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        self.release_demand();
        if let Some((st, d)) = want {
            st.change_demand(&d, true);
            self.demand = Some(RegisteredDemand {
                stream: st.clone(),
                demand: d,
            });
        }
    }

    /// Withdraw this track's layer demand.
    pub fn release_demand(&mut self) {
        if let Some(r) = self.demand.take() {
            r.stream.change_demand(&r.demand, false);
        }
    }

    /// Does this track take `p`? Auto tracks follow the first track of their
    /// kind from each new publisher of the session's stream.
    #[inline]
    fn takes(&mut self, p: &FwdPacket) -> bool {
        if self.kind != p.kind || !self.takes_source(p) {
            return false;
        }
        let Some(rid) = p.rid else {
            return true;
        };
        if self.layer == Some(rid) {
            return true;
        }
        // Switch (or start) only where the wanted layer has a keyframe.
        let wanted = self.target.or(self.layer);
        if p.keyframe && (wanted == Some(rid) || (wanted.is_none() && self.layer.is_none())) {
            self.layer = Some(rid);
            return true;
        }
        false
    }

    #[inline]
    fn takes_source(&mut self, p: &FwdPacket) -> bool {
        let from_packet = TrackSource {
            stream: p.stream,
            mid: p.mid,
            publisher_tag: p.publisher_tag,
        };
        match self.source {
            Some(src) if src.stream == p.stream && src.mid == p.mid => {
                if !self.auto || src.publisher_tag == p.publisher_tag {
                    return true;
                }
                self.source = Some(from_packet);
                true
            }
            Some(src) if self.auto && src.publisher_tag != p.publisher_tag => {
                self.source = Some(from_packet);
                true
            }
            None if self.auto => {
                self.source = Some(from_packet);
                true
            }
            _ => false,
        }
    }
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
    let Some((seq, ts)) = track.rebase.map(tag, p.seq, p.ts, ts_gap) else {
        return WriteResult::Skipped;
    };
    // Each simulcast layer numbers VP8 pictures on its own: continue the
    // viewer's numbering across a switch.
    let vp8 = if p.codec == Codec::Vp8 && p.rid.is_some() {
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

/// The send stream of `mid`, if negotiated, with its RTX cache bounded by
/// time (1 s) and count ([`RTX_CACHE_PACKETS`]; what a slot costs is in
/// BENCHMARKS.md). A session with an SRTP sender keeps its own cache
/// ([`crate::srtp_sender`]), and str0m's is cut to one slot.
pub(super) fn send_stream(rtc: &mut Rtc, mid: Mid, sender: bool) -> Option<Ssrc> {
    let mut api = rtc.direct_api();
    let tx = api.stream_tx_by_mid(mid, None)?;
    set_rtx_cache(tx, sender);
    Some(tx.ssrc())
}

/// The RTX cache of a send stream: str0m's own, or a single slot when the
/// session sends through its SRTP sender (which keeps its own).
pub(super) fn set_rtx_cache(tx: &mut str0m::rtp::StreamTx, sender: bool) {
    if sender {
        tx.set_rtx_cache(1, Duration::from_millis(1), None);
    } else {
        tx.set_rtx_cache(RTX_CACHE_PACKETS, Duration::from_secs(1), Some(0.15));
    }
}
