//! Sessions on a shard: the session record, the table that finds one by
//! key, id, remote address or ICE ufrag, and the lifecycle rules (liveness,
//! renegotiation, which streams a viewer is subscribed to).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::Rtc;

use super::api::{CloseReason, ServerOffer, ShardConfig, ShardError};
use super::track::{send_stream, PubTrack, TrackSource, ViewerTrack};
use crate::fanout::StreamShared;
use crate::ids::{Role, SessionId, StreamId};
use crate::srtp_sender::SrtpSender;
use crate::stats::SessionStats;
use crate::stun;

/// Addresses bound to one session at most: a client's candidates and its
/// NAT rebindings, not a table a remote party can grow.
pub(super) const MAX_ADDRS: usize = 8;

/// A publisher's loudest audio level since the last report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AudioPeak {
    /// RFC 6464 -dBov: 0 loudest, 127 silence.
    pub level: u8,
    /// Voice activity, if the sender flagged it on any packet.
    pub voice: bool,
}

/// One session on a shard.
pub(super) struct Session {
    pub id: SessionId,
    pub role: Role,
    pub stream: Option<Arc<StreamShared>>,
    pub initial_max_layer: Option<u8>,
    pub initial_max_temporal: Option<u8>,
    /// Streams this viewer receives from (counted in their per-shard viewer counts).
    pub subscriptions: Vec<Arc<StreamShared>>,
    pub pending: Option<SdpPendingOffer>,
    pub audio_peak: Option<AudioPeak>,
    /// Latest bandwidth estimate toward this viewer (TWCC), bits/s.
    pub estimate: Option<u64>,
    pub next_layer_eval: Instant,
    pub last_rate_report: Instant,
    pub ufrag: String,
    pub rtc: Box<Rtc>,
    pub addrs: Vec<SocketAddr>,
    pub created: Instant,
    pub last_rx: Instant,
    pub connected: bool,
    /// Deadline currently in the wheel and its generation.
    pub deadline: Instant,
    pub timer_gen: u32,
    /// Tags this publisher's packets (see [`crate::FwdPacket::publisher_tag`]).
    pub publisher_tag: u32,
    pub pub_tracks: Vec<PubTrack>,
    pub viewer_tracks: Vec<ViewerTrack>,
    pub stats: SessionStats,
    /// Where str0m last sent DTLS or RTCP: the peer's selected address.
    pub peer: Option<SocketAddr>,
    /// sluice's own send path for this viewer's media ([`crate::srtp_sender`]),
    /// once DTLS has given the keys; `None` keeps str0m's.
    pub sender: Option<Box<SrtpSender>>,
    /// Its ICE-TCP connection cannot keep up: video is held back.
    pub congested: bool,
    /// Video waits for a keyframe (after congestion).
    pub video_gated: bool,
    /// Times the peer moved to another address after connecting.
    pub addr_changes: u32,
}

/// What rebinding a viewer track changed in the session's subscriptions.
pub(super) struct Rebound {
    /// Streams no track points at any more.
    pub dropped: Vec<Arc<StreamShared>>,
    /// A stream the session now receives from for the first time.
    pub added: Option<Arc<StreamShared>>,
}

impl Session {
    /// Has the session gone silent (or never connected) for too long?
    pub fn expiry(&self, now: Instant, cfg: &ShardConfig) -> Option<CloseReason> {
        if !self.connected && now.saturating_duration_since(self.created) >= cfg.setup_timeout {
            return Some(CloseReason::SetupTimeout);
        }
        if now.saturating_duration_since(self.last_rx) >= cfg.idle_timeout {
            return Some(CloseReason::Timeout);
        }
        None
    }

    /// The latest the session's timer may fire: when it would expire.
    pub fn timer_limit(&self, cfg: &ShardConfig) -> Instant {
        if self.connected {
            self.last_rx + cfg.idle_timeout
        } else {
            self.created + cfg.setup_timeout
        }
    }

    /// Renegotiate: offer sending media of these kinds.
    pub fn add_media(&mut self, kinds: &[MediaKind]) -> Result<ServerOffer, ShardError> {
        if self.pending.is_some() {
            return Err(ShardError::OfferPending);
        }
        let mut api = self.rtc.sdp_api();
        let mids: Vec<Mid> = kinds
            .iter()
            .map(|k| api.add_media(*k, Direction::SendOnly, None, None, None))
            .collect();
        let (offer, pending) = api.apply().ok_or(ShardError::NothingToOffer)?;
        self.pending = Some(pending);
        for (mid, kind) in mids.iter().zip(kinds) {
            self.viewer_tracks
                .push(ViewerTrack::new(*mid, *kind, false));
        }
        Ok(ServerOffer {
            sdp: offer.to_sdp_string(),
            mids,
        })
    }

    /// Complete the offer this side made.
    pub fn accept_answer(&mut self, answer: SdpAnswer) -> Result<(), ShardError> {
        let pending = self.pending.take().ok_or(ShardError::NoOfferPending)?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(ShardError::AnswerRejected)?;
        // Tracks offered before the answer now have their send streams.
        let sender = self.sender.is_some();
        for t in &mut self.viewer_tracks {
            if t.ssrc.is_none() {
                t.ssrc = send_stream(&mut self.rtc, t.mid, sender);
            }
        }
        Ok(())
    }

    /// Point `mid` at a publisher's track (or at nothing), keeping the
    /// session's subscriptions to the set of streams its tracks point at.
    pub fn rebind(
        &mut self,
        mid: Mid,
        kind: MediaKind,
        source: Option<&(Arc<StreamShared>, Mid)>,
    ) -> Rebound {
        if !self.viewer_tracks.iter().any(|t| t.mid == mid) {
            let mut t = ViewerTrack::new(mid, kind, false);
            t.ssrc = send_stream(&mut self.rtc, mid, self.sender.is_some());
            self.viewer_tracks.push(t);
        }
        let t = self
            .viewer_tracks
            .iter_mut()
            .find(|t| t.mid == mid)
            .expect("just ensured");
        t.bind(source.map(|(st, m)| TrackSource {
            stream: st.id,
            mid: *m,
            publisher_tag: 0,
        }));
        let wanted: Vec<StreamId> = self
            .viewer_tracks
            .iter()
            .filter_map(|t| t.source.map(|x| x.stream))
            .collect();
        let auto_stream = self.stream.as_ref().map(|x| x.id);
        let (keep, dropped): (Vec<_>, Vec<_>) = std::mem::take(&mut self.subscriptions)
            .into_iter()
            .partition(|x| wanted.contains(&x.id) || Some(x.id) == auto_stream);
        self.subscriptions = keep;
        let mut added = None;
        if let Some((stream, _)) = source {
            if !self.subscriptions.iter().any(|x| x.id == stream.id) {
                self.subscriptions.push(stream.clone());
                added = Some(stream.clone());
            }
        }
        self.sync_demand();
        Rebound { dropped, added }
    }

    /// Bring every track's registered layer demand in line with its state.
    #[inline]
    pub fn sync_demand(&mut self) {
        for t in &mut self.viewer_tracks {
            t.sync_demand(&self.subscriptions, self.stream.as_ref());
        }
    }
}

/// The sessions of a shard, in a slab indexed by key, with the lookups the
/// demux and the control plane need.
#[derive(Default)]
pub(super) struct SessionTable {
    slab: Vec<Option<Session>>,
    free: Vec<u32>,
    by_id: HashMap<SessionId, u32>,
    by_addr: HashMap<SocketAddr, u32>,
    by_ufrag: HashMap<String, u32>,
}

impl SessionTable {
    /// A free key for a new session.
    pub fn reserve(&mut self) -> u32 {
        match self.free.pop() {
            Some(k) => k,
            None => {
                self.slab.push(None);
                (self.slab.len() - 1) as u32
            }
        }
    }

    /// Put `s` at a key from [`SessionTable::reserve`].
    pub fn insert(&mut self, key: u32, s: Session) {
        self.by_ufrag.insert(s.ufrag.clone(), key);
        self.by_id.insert(s.id, key);
        self.slab[key as usize] = Some(s);
    }

    /// Take a session out of the table and forget its key, id, ufrag and addresses.
    pub fn remove(&mut self, key: u32) -> Option<Session> {
        let s = self.slab[key as usize].take()?;
        self.free.push(key);
        self.by_id.remove(&s.id);
        self.by_ufrag.remove(&s.ufrag);
        for a in &s.addrs {
            if self.by_addr.get(a) == Some(&key) {
                self.by_addr.remove(a);
            }
        }
        Some(s)
    }

    pub fn contains(&self, id: SessionId) -> bool {
        self.by_id.contains_key(&id)
    }

    pub fn key_of(&self, id: SessionId) -> Option<u32> {
        self.by_id.get(&id).copied()
    }

    /// A new flow of the session at `key` must name `ufrag` from now on (an
    /// ICE restart); its old ufrag names no one. False, changing nothing,
    /// when `ufrag` names another session.
    pub fn rekey_ufrag(&mut self, key: u32, ufrag: &str) -> bool {
        if self.by_ufrag.get(ufrag).is_some_and(|&k| k != key) {
            return false;
        }
        let Some(s) = self.slab.get_mut(key as usize).and_then(Option::as_mut) else {
            return false;
        };
        if self.by_ufrag.get(&s.ufrag) == Some(&key) {
            self.by_ufrag.remove(&s.ufrag);
        }
        s.ufrag = ufrag.to_string();
        self.by_ufrag.insert(s.ufrag.clone(), key);
        true
    }

    /// The session bound to `addr`.
    pub fn key_of_addr(&self, addr: SocketAddr) -> Option<u32> {
        self.by_addr.get(&addr).copied()
    }

    /// `addr` reaches no one any more (its TCP connection closed).
    pub fn unbind(&mut self, addr: SocketAddr) {
        let Some(key) = self.by_addr.remove(&addr) else {
            return;
        };
        if let Some(s) = self.slab[key as usize].as_mut() {
            s.addrs.retain(|a| *a != addr);
        }
    }

    #[inline]
    pub fn get(&self, key: u32) -> Option<&Session> {
        self.slab.get(key as usize)?.as_ref()
    }

    #[inline]
    pub fn get_mut(&mut self, key: u32) -> Option<&mut Session> {
        self.slab[key as usize].as_mut()
    }

    /// The session a datagram from `source` belongs to, and whether the
    /// address is bound to it: by address, or for a new flow by the ufrag
    /// its STUN binding request names. Naming a ufrag binds nothing: only
    /// [`SessionTable::bind`], once the session has answered an
    /// authenticated check, does.
    #[inline]
    pub fn key_for_flow(&self, source: SocketAddr, data: &[u8]) -> Option<(u32, bool)> {
        if let Some(&k) = self.by_addr.get(&source) {
            return Some((k, true));
        }
        let ufrag = stun::binding_request_local_ufrag(data)?;
        let k = *self.by_ufrag.get(std::str::from_utf8(ufrag).ok()?)?;
        Some((k, false))
    }

    /// Bind `source` to the session at `key`: its datagrams (DTLS, SRTP)
    /// now reach the session. At most [`MAX_ADDRS`] addresses per session:
    /// the oldest that is not the peer's selected address makes room.
    /// Returns whether one was evicted.
    pub fn bind(&mut self, key: u32, source: SocketAddr) -> bool {
        let Some(s) = self.slab[key as usize].as_mut() else {
            return false;
        };
        if s.addrs.contains(&source) {
            return false;
        }
        let mut evicted = false;
        if s.addrs.len() >= MAX_ADDRS {
            let peer = s.peer;
            if let Some(i) = s.addrs.iter().position(|a| Some(*a) != peer) {
                let old = s.addrs.remove(i);
                if self.by_addr.get(&old) == Some(&key) {
                    self.by_addr.remove(&old);
                }
                evicted = true;
            }
        }
        s.addrs.push(source);
        if let Some(other) = self.by_addr.insert(source, key) {
            // The address moved from another session (a client reusing its port).
            if let Some(o) = self.slab[other as usize].as_mut().filter(|_| other != key) {
                o.addrs.retain(|a| *a != source);
            }
        }
        evicted
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.slab.iter().flatten()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Session> {
        self.slab.iter_mut().flatten()
    }
}
