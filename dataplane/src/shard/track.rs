//! The tracks of a session: a publisher's incoming tracks and a viewer's
//! outgoing ones, with what each keeps (source, layers, numbering, layer
//! demand) and the send stream setup. The work on sessions that uses them
//! is in `ingest` and `viewer`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::Ssrc;
use str0m::Rtc;

use crate::codec::{Vp8Rebase, Vp8Temporal};
use crate::fanout::{Demand, FwdPacket, Rebase, StreamShared};
use crate::ids::StreamId;
use crate::srtp_sender::RTX_CACHE_PACKETS;

/// The highest VP8 temporal layer id (TID has two bits): no limit.
pub const ALL_TEMPORAL: u8 = 3;

/// How long a publisher track's SSRC must be silent before another SSRC
/// may take its (mid, rid): an encoder restart, not a stray burst.
pub(super) const SSRC_TAKEOVER: Duration = Duration::from_secs(2);

/// One incoming track of a publisher.
pub(super) struct PubTrack {
    pub ssrc: Ssrc,
    pub kind: MediaKind,
    pub mid: Mid,
    pub rid: Option<Rid>,
    pub last_pli: Option<Instant>,
    /// When the track's last packet arrived: another SSRC claiming its
    /// (mid, rid) is refused until it has been silent for [`SSRC_TAKEOVER`].
    pub last_rx: Instant,
    /// The repair SSRC str0m paired with this track, once seen.
    pub rtx: Option<Ssrc>,
    /// Payload bytes since the last layer-rate report.
    pub bytes: u64,
    /// Packets of the video frame being held until its last packet (all of
    /// one RTP timestamp), and when the first of them arrived.
    pub held: Vec<FwdPacket>,
    pub held_since: Option<Instant>,
    /// RTP timestamp of the frame released last: its late packets (repaired
    /// by retransmission) go out at once.
    pub released_ts: Option<u32>,
}

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
pub(super) struct PtMapping {
    pub publisher_tag: u32,
    pub publisher_pt: Pt,
    /// `None` when the viewer lacks that codec.
    pub ours: Option<Pt>,
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
    pub rebase: Rebase,
    /// VP8 picture id / TL0PICIDX continuity across simulcast layer
    /// switches and pictures left out.
    pub vp8: Vp8Rebase,
    /// VP8 temporal layers: the cap set through the API (`None`: every layer).
    pub max_temporal: Option<u8>,
    /// The temporal limit applied now ([`ALL_TEMPORAL`]: none), and the
    /// frame last decided on (its timestamp, and whether it is left out).
    pub temporal: u8,
    frame: Option<(u32, bool)>,
    pub pt_cache: Vec<PtMapping>,
    demand: Option<RegisteredDemand>,
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
            max_temporal: None,
            temporal: ALL_TEMPORAL,
            frame: None,
            ssrc: None,
            rebase: Rebase::new(),
            pt_cache: Vec::new(),
            demand: None,
        }
    }

    /// The highest temporal layer the cap allows.
    pub fn max_temporal(&self) -> u8 {
        self.max_temporal.unwrap_or(ALL_TEMPORAL)
    }

    /// Is this packet, of temporal layer `t`, left out for the viewer? The
    /// limit changes only where a frame begins: down at once (no lower layer
    /// refers to a higher one); up at a keyframe, or one layer at a time at a
    /// layer sync frame of the next layer (Y: it refers only to the base
    /// layer, so what that layer's frames refer to from then on is forwarded).
    #[inline]
    pub fn leaves_out(&mut self, ts: u32, t: Vp8Temporal, keyframe: bool) -> bool {
        if let Some((frame_ts, out)) = self.frame {
            if frame_ts == ts {
                return out;
            }
        }
        let want = self.max_temporal();
        if want < self.temporal || (want > self.temporal && keyframe) {
            self.temporal = want;
        } else if want > self.temporal && t.sync && t.tid == self.temporal + 1 {
            self.temporal = t.tid;
        }
        let out = t.tid > self.temporal;
        self.frame = Some((ts, out));
        out
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
    pub fn takes(&mut self, p: &FwdPacket) -> bool {
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
