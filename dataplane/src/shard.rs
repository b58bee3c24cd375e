//! The Sans-IO core of one shard: a slab of str0m sessions, the demux table,
//! the timer wheel and the forwarding tables.
//!
//! Everything here is a function of (now, input) → (datagrams, cross-shard
//! messages, events, next deadline). No sockets, threads or clock reads; the
//! runtime (`runtime.rs`) and tests drive it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionValues, RtpPacket, RtpWrite, SeqNo, Ssrc};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use crate::direct::{DirectTx, ExtIds, TrackInfo, Vp8Ids};
use crate::fanout::{Demand, FwdPacket, Rebase, SourceInfo, StreamShared};
use crate::ids::{Role, SessionId, ShardId, StreamId};
use crate::packet::{is_rtcp, is_rtp, Datagram};
use crate::stats::{Counters, SessionStats, SessionStatsTable, TrackStats};
use crate::stun;
use crate::timer::{TimerEntry, TimerWheel};

/// Static settings of a shard core.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub id: ShardId,
    pub shard_count: usize,
    /// The address sessions were told (the ICE candidate); str0m matches it.
    pub local_addr: SocketAddr,
    /// At most one keyframe request per stream in this interval.
    pub keyframe_throttle: Duration,
    /// A session that receives nothing for this long is removed.
    pub idle_timeout: Duration,
    /// A session that has not connected within this long is removed.
    pub setup_timeout: Duration,
    /// Hold a video frame's packets until its last one (RTP marker) arrives,
    /// at most this long, then fan the frame out in one visit per viewer.
    /// Zero forwards every packet as it arrives.
    pub frame_hold: Duration,
    /// Viewers that estimate no bandwidth send media through sluice's own
    /// RTP/SRTP path (`direct.rs`) instead of str0m's.
    pub direct_send: bool,
}

impl ShardConfig {
    pub fn new(id: ShardId, shard_count: usize, local_addr: SocketAddr) -> Self {
        ShardConfig {
            id,
            shard_count,
            local_addr,
            keyframe_throttle: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(30),
            setup_timeout: Duration::from_secs(30),
            frame_hold: Duration::ZERO,
            direct_send: true,
        }
    }
}

/// A negotiated session handed to a shard by the control plane.
pub struct NewSession {
    pub id: SessionId,
    pub role: Role,
    /// A publisher's stream, or the one stream a WHEP viewer watches (its
    /// tracks bind by kind). `None` for a room's receive transport, whose
    /// tracks are bound one by one with [`Command::Subscribe`].
    pub stream: Option<Arc<StreamShared>>,
    /// Our ICE ufrag; a new flow's STUN USERNAME names it.
    pub ice_ufrag: String,
    pub rtc: Rtc,
    /// When we made the offer: the answer arrives later with [`Command::AcceptAnswer`].
    pub pending: Option<SdpPendingOffer>,
    /// Cap on the simulcast layer this viewer receives (0 = lowest).
    pub max_layer: Option<u8>,
}

/// Called once with the outcome of a command that needs an answer.
pub type Reply<T> = Box<dyn FnOnce(Result<T, String>) + Send>;

/// A new offer from the server side of a session and the mids it added.
#[derive(Debug, Clone)]
pub struct ServerOffer {
    pub sdp: String,
    pub mids: Vec<Mid>,
}

/// Instructions from the control plane or from other shards.
pub enum Command {
    AddSession(Box<NewSession>),
    /// End a session (DELETE, kick).
    RemoveSession(SessionId),
    /// A viewer somewhere wants a keyframe of this stream's publisher (on this
    /// shard), of one simulcast layer or of every video track.
    RequestKeyframe(StreamId, Option<Rid>),
    /// Cap the simulcast layer a viewer receives (0 = lowest); `None` = no cap.
    /// `mid` `None` applies to every video track of the session.
    SetMaxLayer {
        id: SessionId,
        mid: Option<Mid>,
        max: Option<u8>,
    },
    /// Bind a sending `mid` of a receive session to a publisher's track.
    Subscribe {
        id: SessionId,
        mid: Mid,
        kind: MediaKind,
        stream: Arc<StreamShared>,
        source_mid: Mid,
    },
    /// Stop forwarding to `mid`; it may be bound again later.
    Unsubscribe {
        id: SessionId,
        mid: Mid,
    },
    /// Renegotiate: add sending media of these kinds; replies with the offer.
    AddMedia {
        id: SessionId,
        kinds: Vec<MediaKind>,
        reply: Reply<ServerOffer>,
    },
    /// Complete an offer this side made.
    AcceptAnswer {
        id: SessionId,
        answer: SdpAnswer,
        reply: Reply<()>,
    },
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Removed on request (DELETE, kick, shutdown).
    Removed,
    /// No traffic within the idle timeout, or ICE reported disconnection.
    Timeout,
    /// Never connected within the setup timeout.
    SetupTimeout,
    /// The peer closed DTLS, or str0m reported an error.
    Closed,
}

/// What a shard tells the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardEvent {
    Connected {
        id: SessionId,
    },
    Closed {
        id: SessionId,
        reason: CloseReason,
    },
    /// A publisher's loudest audio level (RFC 6464, -dBov: 0 loudest, 127 silence)
    /// over the last interval, with voice activity if the sender flags it.
    AudioLevel {
        id: SessionId,
        level: u8,
        voice: bool,
    },
}

/// Messages for other shards, produced by the core and sent by the runtime.
#[derive(Debug)]
pub enum CrossShard {
    Fanout(ShardId, Vec<FwdPacket>),
    Keyframe(ShardId, StreamId, Option<Rid>),
}

struct PubTrack {
    ssrc: Ssrc,
    kind: MediaKind,
    mid: Mid,
    rid: Option<Rid>,
    last_pli: Option<Instant>,
    /// Payload bytes since the last layer-rate report.
    bytes: u64,
    /// Packets of the video frame being held until its last packet (all of
    /// one RTP timestamp), and when the first of them arrived.
    held: Vec<FwdPacket>,
    held_since: Option<Instant>,
    /// RTP timestamp of the frame released last: its late packets (repaired
    /// by retransmission) go out at once.
    released_ts: Option<u32>,
}

struct ViewerTrack {
    mid: Mid,
    kind: MediaKind,
    /// (stream, publisher mid, publisher epoch) currently forwarded to this mid.
    source: Option<(StreamId, Mid, u32)>,
    /// Binds to whichever track of the session's stream has this kind (WHEP).
    auto: bool,
    /// Simulcast: the layer being forwarded, the one wanted, and the cap.
    layer: Option<Rid>,
    target: Option<Rid>,
    target_since: Option<Instant>,
    cap_changed: bool,
    max_layer: Option<u8>,
    ssrc: Option<Ssrc>,
    rebase: Rebase,
    /// VP8 picture id / TL0PICIDX continuity across simulcast layer switches.
    vp8: Vp8Rebase,
    /// (publisher epoch, publisher pt) → our pt; None when we lack that codec.
    pt_cache: Vec<(u32, Pt, Option<Pt>)>,
    /// The simulcast layers this track has registered as wanted, and where.
    demand: Option<(Arc<StreamShared>, Demand)>,
}

struct Session {
    id: SessionId,
    role: Role,
    stream: Option<Arc<StreamShared>>,
    initial_max_layer: Option<u8>,
    /// Streams this viewer receives from (counted in their per-shard viewer counts).
    subscriptions: Vec<Arc<StreamShared>>,
    pending: Option<SdpPendingOffer>,
    /// Loudest audio level since the last report, and voice activity.
    audio_peak: Option<(u8, bool)>,
    /// Latest bandwidth estimate toward this viewer (TWCC), bits/s.
    estimate: Option<u64>,
    next_layer_eval: Instant,
    last_rate_report: Instant,
    ufrag: String,
    rtc: Box<Rtc>,
    addrs: Vec<SocketAddr>,
    created: Instant,
    last_rx: Instant,
    connected: bool,
    /// Deadline currently in the wheel and its generation.
    deadline: Instant,
    timer_gen: u32,
    epoch: u32,
    pub_tracks: Vec<PubTrack>,
    viewer_tracks: Vec<ViewerTrack>,
    stats: SessionStats,
    /// Where str0m last sent DTLS or RTCP: the peer's selected address.
    peer: Option<SocketAddr>,
    /// sluice's own send path for this viewer's media (`direct.rs`), once
    /// DTLS has given the keys; `None` keeps str0m's.
    direct: Option<Box<DirectTx>>,
}

/// The shard core.
pub struct Shard {
    cfg: ShardConfig,
    slab: Vec<Option<Session>>,
    free: Vec<u32>,
    by_id: HashMap<SessionId, u32>,
    by_addr: HashMap<SocketAddr, u32>,
    by_ufrag: HashMap<String, u32>,
    /// Local viewers per stream, in join order.
    viewers: HashMap<StreamId, Vec<u32>>,
    /// Local publisher per stream.
    publishers: HashMap<StreamId, u32>,
    wheel: TimerWheel,
    expired: Vec<TimerEntry>,
    /// Packets due to local viewers this turn, from local publishers and other shards.
    pending: Vec<FwdPacket>,
    /// Per destination shard, the batch being built this turn.
    out_batches: Vec<Vec<FwdPacket>>,
    /// Publisher sessions that hold part of a video frame.
    holding: Vec<u32>,
    /// This turn's forwarded packets: when the publisher's shard received
    /// each, and how many viewers it was written to.
    forward_delays: Vec<(Instant, u32)>,
    scratch_copies: Vec<u32>,
    cross: Vec<CrossShard>,
    transmits: Vec<Datagram>,
    events: Vec<ShardEvent>,
    counters: Counters,
    /// Viewers of the run being forwarded, as they were when it started.
    fwd_keys: Vec<u32>,
    /// A run at the front of `pending` cut short by the turn's send budget:
    /// its length (frozen: packets of its stream that arrive later are a
    /// new run) and the index in `fwd_keys` of the next viewer to visit.
    fwd_resume: Option<(usize, usize)>,
    last_level_report: Instant,
    session_stats: SessionStatsTable,
    last_stats_publish: Instant,
    last_layer_refresh: Instant,
}

/// How often each viewer's simulcast layer choice is revisited.
const LAYER_EVAL_INTERVAL: Duration = Duration::from_millis(500);
/// A layer choice stands at least this long unless the viewer's cap changes.
const LAYER_HOLD: Duration = Duration::from_secs(3);

/// Datagrams a turn writes before it lets the runtime send them (see
/// `Shard::flush_pending`): about a millisecond of fan-out.
const TURN_SEND_BUDGET: usize = 128;

/// Packets kept per outgoing track for NACK answers (see `send_stream`).
const RTX_CACHE_PACKETS: usize = 256;

/// How often per-session stats are published to the control plane.
const STATS_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// How often publishers' audio levels are reported.
const LEVEL_INTERVAL: Duration = Duration::from_millis(300);

impl Shard {
    pub fn new(cfg: ShardConfig, now: Instant) -> Self {
        let shards = cfg.shard_count.max(1);
        Shard {
            cfg,
            slab: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            viewers: HashMap::new(),
            publishers: HashMap::new(),
            wheel: TimerWheel::new(now),
            expired: Vec::new(),
            pending: Vec::new(),
            out_batches: (0..shards).map(|_| Vec::new()).collect(),
            holding: Vec::new(),
            forward_delays: Vec::new(),
            scratch_copies: Vec::new(),
            cross: Vec::new(),
            transmits: Vec::new(),
            events: Vec::new(),
            counters: Counters::default(),
            fwd_keys: Vec::new(),
            fwd_resume: None,
            last_level_report: now,
            session_stats: SessionStatsTable::default(),
            last_stats_publish: now,
            last_layer_refresh: now,
        }
    }

    /// Per-session stats, refreshed about once a second while sessions report them.
    pub fn session_stats(&self) -> SessionStatsTable {
        self.session_stats.clone()
    }

    pub fn id(&self) -> ShardId {
        self.cfg.id
    }

    pub fn config(&self) -> &ShardConfig {
        &self.cfg
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// Sessions on this shard.
    pub fn session_count(&self) -> usize {
        self.by_id.len()
    }

    /// Sessions on this shard by role.
    pub fn session_count_by_role(&self, role: Role) -> usize {
        self.slab
            .iter()
            .flatten()
            .filter(|s| s.role == role)
            .count()
    }

    // ---------------------------------------------------------------- inputs

    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::AddSession(new) => self.add_session(now, *new),
            Command::RemoveSession(id) => {
                if let Some(&key) = self.by_id.get(&id) {
                    self.close_session(key, CloseReason::Removed);
                }
            }
            Command::RequestKeyframe(stream, rid) => self.request_keyframe_local(now, stream, rid),
            Command::SetMaxLayer { id, mid, max } => {
                if let Some(&key) = self.by_id.get(&id) {
                    let s = self.slab[key as usize].as_mut().expect("indexed");
                    for t in &mut s.viewer_tracks {
                        if mid.is_none_or(|m| m == t.mid) {
                            t.max_layer = max;
                            t.cap_changed = true;
                        }
                    }
                    s.next_layer_eval = now;
                }
            }
            Command::Subscribe {
                id,
                mid,
                kind,
                stream,
                source_mid,
            } => {
                if let Some(&key) = self.by_id.get(&id) {
                    self.bind_track(now, key, mid, kind, Some((stream, source_mid)));
                }
            }
            Command::Unsubscribe { id, mid } => {
                if let Some(&key) = self.by_id.get(&id) {
                    let kind = self.slab[key as usize]
                        .as_ref()
                        .and_then(|s| s.viewer_tracks.iter().find(|t| t.mid == mid))
                        .map(|t| t.kind);
                    if let Some(kind) = kind {
                        self.bind_track(now, key, mid, kind, None);
                    }
                }
            }
            Command::AddMedia { id, kinds, reply } => {
                let Some(&key) = self.by_id.get(&id) else {
                    return reply(Err("no such session".into()));
                };
                let s = self.slab[key as usize].as_mut().expect("indexed");
                if s.pending.is_some() {
                    return reply(Err("an offer is already pending".into()));
                }
                let mut api = s.rtc.sdp_api();
                let mids: Vec<Mid> = kinds
                    .iter()
                    .map(|k| api.add_media(*k, Direction::SendOnly, None, None, None))
                    .collect();
                match api.apply() {
                    Some((offer, pending)) => {
                        s.pending = Some(pending);
                        for (mid, kind) in mids.iter().zip(&kinds) {
                            s.viewer_tracks.push(ViewerTrack::new(*mid, *kind, false));
                        }
                        reply(Ok(ServerOffer {
                            sdp: offer.to_sdp_string(),
                            mids,
                        }));
                    }
                    None => reply(Err("nothing to offer".into())),
                }
                self.drive(key, now);
            }
            Command::AcceptAnswer { id, answer, reply } => {
                let Some(&key) = self.by_id.get(&id) else {
                    return reply(Err("no such session".into()));
                };
                let s = self.slab[key as usize].as_mut().expect("indexed");
                let Some(pending) = s.pending.take() else {
                    return reply(Err("no offer is pending".into()));
                };
                match s.rtc.sdp_api().accept_answer(pending, answer) {
                    Ok(()) => {
                        // Tracks offered before the answer now have their send streams.
                        for t in &mut s.viewer_tracks {
                            if t.ssrc.is_none() {
                                t.ssrc = send_stream(&mut s.rtc, t.mid, s.direct.is_some());
                            }
                        }
                        reply(Ok(()))
                    }
                    Err(e) => reply(Err(e.to_string())),
                }
                self.drive(key, now);
            }
        }
    }

    /// One datagram from the socket.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += data.len() as u64;
        let key = match self.by_addr.get(&source) {
            Some(&k) => k,
            None => match self.key_for_new_flow(data) {
                Some(k) => {
                    self.by_addr.insert(source, k);
                    if let Some(s) = self.slab[k as usize].as_mut() {
                        s.addrs.push(source);
                    }
                    k
                }
                None => {
                    if stun::is_stun(data) {
                        self.counters.drop_unknown_flow += 1;
                    } else if Receive::new(Protocol::Udp, source, self.cfg.local_addr, data)
                        .is_err()
                    {
                        self.counters.drop_malformed += 1;
                    } else {
                        self.counters.drop_unknown_flow += 1;
                    }
                    return;
                }
            },
        };
        let receive = match Receive::new(Protocol::Udp, source, self.cfg.local_addr, data) {
            Ok(r) => r,
            Err(_) => {
                self.counters.drop_malformed += 1;
                return;
            }
        };
        let Some(session) = self.slab[key as usize].as_mut() else {
            return;
        };
        session.last_rx = now;
        if let (Some(d), true) = (session.direct.as_mut(), is_rtcp(data)) {
            // NACKs and reception reports for what this path sent; str0m
            // reads the same datagram for the rest.
            let dest = session.peer.unwrap_or(source);
            d.handle_rtcp(now, data, dest, &mut self.transmits, &mut self.counters);
        }
        if !self.input(key, now, Input::Receive(now, receive)) {
            self.counters.drop_session_error += 1;
        }
    }

    /// Hand `input` to a session's `Rtc` and drain its output. Returns
    /// false if str0m rejected the input. Keying material a DTLS endpoint
    /// exports during the call is this session's (see `dtls::take_exported`).
    fn input(&mut self, key: u32, now: Instant, input: Input) -> bool {
        let Some(s) = self.slab[key as usize].as_mut() else {
            return false;
        };
        crate::dtls::take_exported();
        let ok = s.rtc.handle_input(input).is_ok();
        self.drive(key, now);
        if let Some(e) = crate::dtls::take_exported() {
            self.adopt_keys(key, &e);
        }
        ok
    }

    /// Sender reports due on a session's direct send path.
    fn direct_reports(&mut self, key: u32, now: Instant) {
        let Some(s) = self.slab[key as usize].as_mut() else {
            return;
        };
        if let (Some(d), Some(dest)) = (s.direct.as_mut(), s.peer) {
            d.sender_reports(now, dest, &mut self.transmits, &mut self.counters);
        }
    }

    /// DTLS has given a session its SRTP keys: a viewer that estimates no
    /// bandwidth, with a GCM profile, moves to sluice's own send path.
    fn adopt_keys(&mut self, key: u32, e: &crate::srtp::Exported) {
        let Some(s) = self.slab[key as usize].as_mut() else {
            return;
        };
        if s.role != Role::Viewer || s.direct.is_some() || !self.cfg.direct_send {
            return;
        }
        // Viewers that estimate bandwidth need str0m's transport-wide
        // sequence numbers and pacing on every packet.
        let estimating = s.viewer_tracks.iter().any(|t| {
            s.rtc.media(t.mid).is_some_and(|m| {
                m.remote_extmap()
                    .id_of(Extension::TransportSequenceNumber)
                    .is_some()
            })
        });
        if estimating {
            return;
        }
        let Some(srtp) = crate::srtp::SrtpSession::new(e) else {
            self.counters.direct_refused += 1;
            return;
        };
        s.direct = Some(Box::new(DirectTx::new(srtp)));
        self.counters.direct_sessions += 1;
        // str0m sends nothing on these streams: its RTX caches may go.
        for t in &s.viewer_tracks {
            let mut api = s.rtc.direct_api();
            if let Some(tx) = t.ssrc.and_then(|x| api.stream_tx(&x)) {
                set_rtx_cache(tx, true);
            }
        }
    }

    /// A batch of packets from a publisher on another shard.
    pub fn handle_fanout(&mut self, batch: Vec<FwdPacket>) {
        self.counters.fanout_packets_in += batch.len() as u64;
        if self.pending.is_empty() {
            self.pending = batch;
        } else {
            self.pending.extend(batch);
        }
    }

    /// Run what is due at `now`: expired timers, then this turn's forwarding,
    /// visiting each local viewer once with all packets due to it.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.counters.loop_turns += 1;
        self.forward_delays.clear();
        self.expired.clear();
        self.wheel.expire(now, &mut self.expired);
        let mut expired = std::mem::take(&mut self.expired);
        for e in expired.drain(..) {
            let live = matches!(
                self.slab.get(e.key as usize),
                Some(Some(s)) if s.timer_gen == e.generation
            );
            if !live {
                continue;
            }
            if self.check_liveness(e.key, now) {
                self.counters.timer_drives += 1;
                self.input(e.key, now, Input::Timeout(now));
                self.direct_reports(e.key, now);
            }
        }
        self.expired = expired;
        self.release_held(now);
        self.flush_pending(now);
        self.flush_out_batches();
        self.report_levels(now);
        self.refresh_layers(now);
        self.publish_stats(now);
    }

    /// Re-pick layers of viewers that no packet visited lately (their layer
    /// may be one nobody forwards any more), so their demand stays current.
    fn refresh_layers(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_layer_refresh) < LAYER_EVAL_INTERVAL {
            return;
        }
        self.last_layer_refresh = now;
        let mut requests = Vec::new();
        for s in self.slab.iter_mut().flatten() {
            if s.role != Role::Viewer || !s.connected || now < s.next_layer_eval {
                continue;
            }
            s.next_layer_eval = now + LAYER_EVAL_INTERVAL;
            evaluate_layers(s, now, &mut requests);
            for t in &mut s.viewer_tracks {
                t.sync_demand(&s.subscriptions, s.stream.as_ref());
            }
        }
        for (stream, rid) in requests {
            self.counters.layer_switch_requests += 1;
            self.request_keyframe(now, stream.id, &stream, Some(rid));
        }
    }

    /// Copy every session's stats, with its tracks' current layers, to the shared table.
    fn publish_stats(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_stats_publish) < STATS_PUBLISH_INTERVAL {
            return;
        }
        self.last_stats_publish = now;
        let mut table = self.session_stats.lock().unwrap_or_else(|e| e.into_inner());
        for s in self.slab.iter_mut().flatten() {
            for t in s.stats.tracks.iter_mut().filter(|t| t.direction == "out") {
                if let Some(v) = s.viewer_tracks.iter().find(|v| *v.mid == *t.mid) {
                    t.layer = v.layer.map(|r| r.to_string());
                    t.target_layer = v.target.map(|r| r.to_string());
                    t.max_layer = v.max_layer;
                }
            }
            if table.get(&s.id) != Some(&s.stats) {
                table.insert(s.id, s.stats.clone());
            }
        }
    }

    // --------------------------------------------------------------- outputs

    /// Datagrams to send, in order. The runtime drains this every turn.
    pub fn transmits(&mut self) -> &mut Vec<Datagram> {
        &mut self.transmits
    }

    /// The pending datagrams and the counters, borrowed together for the io backend.
    pub fn io_parts(&mut self) -> (&mut Vec<Datagram>, &mut Counters) {
        (&mut self.transmits, &mut self.counters)
    }

    pub fn poll_cross(&mut self) -> Option<CrossShard> {
        self.cross.pop()
    }

    pub fn poll_event(&mut self) -> Option<ShardEvent> {
        if self.events.is_empty() {
            None
        } else {
            Some(self.events.remove(0))
        }
    }

    /// When `handle_timeout` next has work, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let wheel = self.wheel.next_deadline();
        match (wheel, self.hold_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // -------------------------------------------------------------- sessions

    fn add_session(&mut self, now: Instant, new: NewSession) {
        if self.by_id.contains_key(&new.id) {
            return;
        }
        let key = match self.free.pop() {
            Some(k) => k,
            None => {
                self.slab.push(None);
                (self.slab.len() - 1) as u32
            }
        };
        let mut subscriptions = Vec::new();
        if let Some(stream) = &new.stream {
            match new.role {
                Role::Viewer => {
                    stream.add_viewer(self.cfg.id);
                    self.viewers.entry(stream.id).or_default().push(key);
                    subscriptions.push(stream.clone());
                }
                Role::Publisher => {
                    // The control plane guarantees one publisher per stream.
                    self.publishers.insert(stream.id, key);
                }
            }
        }
        self.by_ufrag.insert(new.ice_ufrag.clone(), key);
        self.by_id.insert(new.id, key);
        self.slab[key as usize] = Some(Session {
            id: new.id,
            role: new.role,
            stream: new.stream,
            initial_max_layer: new.max_layer,
            subscriptions,
            pending: new.pending,
            audio_peak: None,
            estimate: None,
            next_layer_eval: now,
            last_rate_report: now,
            ufrag: new.ice_ufrag,
            rtc: Box::new(new.rtc),
            addrs: Vec::new(),
            created: now,
            last_rx: now,
            connected: false,
            deadline: now,
            timer_gen: 0,
            epoch: (new.id.0 as u32) | 1,
            pub_tracks: Vec::new(),
            viewer_tracks: Vec::new(),
            stats: SessionStats::default(),
            peer: None,
            direct: None,
        });
        self.counters.sessions_added += 1;
        self.input(key, now, Input::Timeout(now));
    }

    fn key_for_new_flow(&self, data: &[u8]) -> Option<u32> {
        let ufrag = stun::binding_request_local_ufrag(data)?;
        let ufrag = std::str::from_utf8(ufrag).ok()?;
        self.by_ufrag.get(ufrag).copied()
    }

    fn unsubscribe_stream(&mut self, key: u32, stream: &StreamShared) {
        stream.remove_viewer(self.cfg.id);
        if let Some(v) = self.viewers.get_mut(&stream.id) {
            v.retain(|&k| k != key);
            if v.is_empty() {
                self.viewers.remove(&stream.id);
            }
        }
    }

    /// Point `mid` of a receive session at a publisher's track (or at nothing),
    /// keeping the session's stream subscriptions and the shared counts right.
    fn bind_track(
        &mut self,
        now: Instant,
        key: u32,
        mid: Mid,
        kind: MediaKind,
        source: Option<(Arc<StreamShared>, Mid)>,
    ) {
        let Some(s) = self.slab[key as usize].as_mut() else {
            return;
        };
        if !s.viewer_tracks.iter().any(|t| t.mid == mid) {
            let mut t = ViewerTrack::new(mid, kind, false);
            t.ssrc = send_stream(&mut s.rtc, mid, s.direct.is_some());
            s.viewer_tracks.push(t);
        }
        let t = s
            .viewer_tracks
            .iter_mut()
            .find(|t| t.mid == mid)
            .expect("just ensured");
        t.auto = false;
        t.source = source.as_ref().map(|(st, m)| (st.id, *m, 0));
        t.pt_cache.clear();
        // Subscriptions follow the set of streams the tracks point at.
        let wanted: Vec<StreamId> = s
            .viewer_tracks
            .iter()
            .filter_map(|t| t.source.map(|x| x.0))
            .collect();
        let auto_stream = s.stream.as_ref().map(|x| x.id);
        let (keep, drop): (Vec<_>, Vec<_>) = std::mem::take(&mut s.subscriptions)
            .into_iter()
            .partition(|x| wanted.contains(&x.id) || Some(x.id) == auto_stream);
        s.subscriptions = keep;
        let mut added = None;
        if let Some((stream, _)) = &source {
            if !s.subscriptions.iter().any(|x| x.id == stream.id) {
                s.subscriptions.push(stream.clone());
                added = Some(stream.clone());
            }
        }
        for t in &mut s.viewer_tracks {
            t.sync_demand(&s.subscriptions, s.stream.as_ref());
        }
        for stream in drop {
            self.unsubscribe_stream(key, &stream);
        }
        if let Some(stream) = added {
            stream.add_viewer(self.cfg.id);
            self.viewers.entry(stream.id).or_default().push(key);
        }
        if let Some((stream, _)) = source {
            // The new consumer needs a keyframe to start decoding.
            self.request_keyframe(now, stream.id, &stream, None);
        }
    }

    /// Returns false (and removes the session) when it has gone silent.
    fn check_liveness(&mut self, key: u32, now: Instant) -> bool {
        let Some(s) = self.slab[key as usize].as_ref() else {
            return false;
        };
        if !s.connected && now.saturating_duration_since(s.created) >= self.cfg.setup_timeout {
            self.counters.sessions_timed_out += 1;
            self.close_session(key, CloseReason::SetupTimeout);
            return false;
        }
        if now.saturating_duration_since(s.last_rx) >= self.cfg.idle_timeout {
            self.counters.sessions_timed_out += 1;
            self.close_session(key, CloseReason::Timeout);
            return false;
        }
        true
    }

    fn close_session(&mut self, key: u32, reason: CloseReason) {
        let Some(mut s) = self.slab[key as usize].take() else {
            return;
        };
        if reason == CloseReason::Removed {
            // Tell the peer (DTLS close_notify, RTCP BYE) on a best-effort basis.
            if s.rtc.close().is_ok() {
                let mut guard = 0;
                while let Ok(out) = s.rtc.poll_output() {
                    guard += 1;
                    match out {
                        Output::Transmit(t) => self.transmits.push(Datagram {
                            destination: t.destination,
                            contents: t.contents.into(),
                        }),
                        Output::Timeout(_) => break,
                        Output::Event(_) => {}
                    }
                    if guard > 64 {
                        break;
                    }
                }
            }
        }
        self.free.push(key);
        self.by_id.remove(&s.id);
        self.by_ufrag.remove(&s.ufrag);
        for a in &s.addrs {
            if self.by_addr.get(a) == Some(&key) {
                self.by_addr.remove(a);
            }
        }
        for t in &mut s.viewer_tracks {
            t.release_demand();
        }
        for stream in s.subscriptions.drain(..) {
            self.unsubscribe_stream(key, &stream);
        }
        if let (Role::Publisher, Some(stream)) = (s.role, &s.stream) {
            if self.publishers.get(&stream.id) == Some(&key) {
                self.publishers.remove(&stream.id);
                if stream.publisher_shard() == Some(self.cfg.id) {
                    stream.set_publisher(None);
                }
                stream.clear_source(s.epoch);
                stream.set_bitrate(0);
            }
        }
        self.counters.sessions_removed += 1;
        self.session_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&s.id);
        self.events.push(ShardEvent::Closed { id: s.id, reason });
    }

    /// Drain a session's output until its next timeout; schedule that timeout.
    fn drive(&mut self, key: u32, now: Instant) {
        loop {
            let Some(s) = self.slab[key as usize].as_mut() else {
                return;
            };
            let out = match s.rtc.poll_output() {
                Ok(o) => o,
                Err(_) => {
                    self.close_session(key, CloseReason::Closed);
                    return;
                }
            };
            match out {
                Output::Transmit(t) => {
                    if !stun::is_stun(&t.contents) {
                        s.peer = Some(t.destination);
                    }
                    if s.direct.is_some() && is_rtcp(&t.contents) {
                        // Reports of streams str0m never sent on (see `direct.rs`).
                        self.counters.rtcp_replaced += 1;
                        continue;
                    }
                    self.transmits.push(Datagram {
                        destination: t.destination,
                        contents: t.contents.into(),
                    });
                }
                Output::Timeout(at) => {
                    if !s.rtc.is_alive() {
                        self.close_session(key, CloseReason::Closed);
                        return;
                    }
                    let limit = if s.connected {
                        s.last_rx + self.cfg.idle_timeout
                    } else {
                        s.created + self.cfg.setup_timeout
                    };
                    let at = at.min(limit).max(now);
                    if at != s.deadline || s.timer_gen == 0 {
                        s.timer_gen = s.timer_gen.wrapping_add(1).max(1);
                        s.deadline = at;
                        self.wheel.schedule(
                            at,
                            TimerEntry {
                                key,
                                generation: s.timer_gen,
                            },
                        );
                    }
                    return;
                }
                Output::Event(e) => self.handle_event(key, now, e),
            }
        }
    }

    fn handle_event(&mut self, key: u32, now: Instant, event: Event) {
        let Some(s) = self.slab[key as usize].as_mut() else {
            return;
        };
        match event {
            Event::Connected => {
                s.connected = true;
                let id = s.id;
                match (s.role, s.stream.clone()) {
                    (Role::Publisher, Some(stream)) => {
                        let params = s.rtc.codec_config().params().to_vec();
                        stream.set_source(Some(Arc::new(SourceInfo {
                            epoch: s.epoch,
                            params,
                        })));
                        stream.set_publisher(Some(self.cfg.id));
                    }
                    (Role::Viewer, _) => {
                        let subs = s.subscriptions.clone();
                        for stream in subs {
                            self.request_keyframe(now, stream.id, &stream, None);
                        }
                    }
                    _ => {}
                }
                self.events.push(ShardEvent::Connected { id });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.counters.sessions_timed_out += 1;
                self.close_session(key, CloseReason::Timeout);
            }
            Event::Closed => self.close_session(key, CloseReason::Closed),
            Event::MediaAdded(m)
                if s.role == Role::Viewer
                    && m.direction.is_sending()
                    && !s.viewer_tracks.iter().any(|t| t.mid == m.mid) =>
            {
                let mut t = ViewerTrack::new(m.mid, m.kind, s.stream.is_some());
                t.max_layer = s.initial_max_layer;
                t.ssrc = send_stream(&mut s.rtc, m.mid, s.direct.is_some());
                t.sync_demand(&s.subscriptions, s.stream.as_ref());
                s.viewer_tracks.push(t);
            }
            Event::KeyframeRequest(req) if s.role == Role::Viewer => {
                {
                    // Ask the publisher of whatever this mid forwards.
                    let source = s
                        .viewer_tracks
                        .iter()
                        .find(|t| t.mid == req.mid)
                        .and_then(|t| t.source.map(|x| x.0));
                    let stream = s
                        .subscriptions
                        .iter()
                        .find(|x| Some(x.id) == source)
                        .or(s.stream.as_ref())
                        .cloned();
                    if let Some(stream) = stream {
                        self.request_keyframe(now, stream.id, &stream, None);
                    }
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                s.estimate = Some(estimate.as_u64());
            }
            Event::RtpPacket(pkt) if s.role == Role::Publisher => {
                self.handle_publisher_rtp(key, pkt);
            }
            Event::PeerStats(p) => {
                let st = &mut s.stats;
                // What the direct send path sent, str0m did not count.
                let direct_bytes = s.direct.as_ref().map_or(0, |d| d.bytes);
                let bytes_tx = p.bytes_tx + direct_bytes;
                if let Some((at, rx, tx)) = st.measured {
                    let secs = p.timestamp.saturating_duration_since(at).as_secs_f64();
                    if secs > 0.0 {
                        st.bitrate_in_bps =
                            (p.bytes_rx.saturating_sub(rx) as f64 * 8.0 / secs) as u64;
                        st.bitrate_out_bps =
                            (bytes_tx.saturating_sub(tx) as f64 * 8.0 / secs) as u64;
                    }
                }
                st.measured = Some((p.timestamp, p.bytes_rx, bytes_tx));
                st.bytes_in = p.peer_bytes_rx;
                st.bytes_out = p.peer_bytes_tx + direct_bytes;
                st.rtt_ms = p.rtt.map(|d| d.as_secs_f64() * 1e3);
                st.loss_in = p.ingress_loss_fraction;
                st.loss_out = p.egress_loss_fraction;
                st.bwe_bps = p.bwe_tx.map(|b| b.as_u64()).or(s.estimate);
                // str0m reports no track it did not send on itself: the
                // direct path's tracks are reported here, at the same pace.
                if let Some(d) = s.direct.as_ref() {
                    let sent: Vec<_> = s
                        .viewer_tracks
                        .iter()
                        .filter_map(|t| Some((t.mid, d.sent(*t.ssrc?)?)))
                        .collect();
                    for (mid, (packets, bytes, fb)) in sent {
                        let sample = TrackSample {
                            at: p.timestamp,
                            bytes,
                            packets,
                            counts: (fb.nacks, fb.plis, fb.firs),
                            loss: fb.loss,
                            rtt: fb.rtt,
                        };
                        if s.stats.rtt_ms.is_none() {
                            s.stats.rtt_ms = fb.rtt.map(|d| d.as_secs_f64() * 1e3);
                        }
                        record_track(s, "out", mid, None, sample);
                    }
                }
            }
            Event::MediaIngressStats(m) => {
                let sample = TrackSample {
                    at: m.timestamp,
                    bytes: m.bytes,
                    packets: m.packets,
                    counts: (m.nacks, m.plis, m.firs),
                    loss: m.loss,
                    rtt: m.rtt,
                };
                record_track(s, "in", m.mid, m.rid, sample);
            }
            Event::MediaEgressStats(m) => {
                let sample = TrackSample {
                    at: m.timestamp,
                    bytes: m.bytes,
                    packets: m.packets,
                    counts: (m.nacks, m.plis, m.firs),
                    loss: m.loss,
                    rtt: m.rtt,
                };
                record_track(s, "out", m.mid, None, sample);
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------ forwarding

    fn handle_publisher_rtp(&mut self, key: u32, pkt: RtpPacket) {
        let Some(s) = self.slab[key as usize].as_mut() else {
            return;
        };
        let Some(stream) = s.stream.as_ref() else {
            return;
        };
        self.counters.rtp_in += 1;
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
                    bytes: 0,
                    held: Vec::new(),
                    held_since: None,
                    released_ts: None,
                });
                s.pub_tracks.len() - 1
            }
        };
        let track = &mut s.pub_tracks[ti];
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
                    Some((l, v)) => (l.min(level), v || voice),
                    None => (level, voice),
                });
            }
        }
        if let Some(rid) = rid {
            if !stream.layer_wanted(rid) {
                self.counters.layer_packets_suppressed += 1;
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
            epoch: s.epoch,
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
        let hold = self.cfg.frame_hold;
        if kind != MediaKind::Video || hold.is_zero() {
            route(
                &self.cfg,
                stream,
                &mut self.pending,
                &mut self.out_batches,
                fwd,
            );
            return;
        }
        let t = &mut s.pub_tracks[ti];
        if t.held.first().is_some_and(|h| h.ts != fwd.ts) {
            // A new frame began before the last one's marker (lost or never
            // set): what was held goes now.
            release_frame(
                t,
                &self.cfg,
                stream,
                &mut self.pending,
                &mut self.out_batches,
            );
        }
        if fwd.marker || t.released_ts == Some(fwd.ts) {
            release_frame(
                t,
                &self.cfg,
                stream,
                &mut self.pending,
                &mut self.out_batches,
            );
            t.released_ts = Some(fwd.ts);
            route(
                &self.cfg,
                stream,
                &mut self.pending,
                &mut self.out_batches,
                fwd,
            );
        } else {
            if t.held.is_empty() {
                t.held_since = Some(fwd.received);
            }
            t.held.push(fwd);
            if !self.holding.contains(&key) {
                self.holding.push(key);
            }
        }
    }

    /// Release held frames whose time is up.
    fn release_held(&mut self, now: Instant) {
        if self.holding.is_empty() {
            return;
        }
        let hold = self.cfg.frame_hold;
        let mut i = 0;
        while i < self.holding.len() {
            let key = self.holding[i];
            let mut still = false;
            if let Some(s) = self.slab[key as usize].as_mut() {
                if let Some(stream) = s.stream.as_ref() {
                    for t in &mut s.pub_tracks {
                        let Some(since) = t.held_since else {
                            continue;
                        };
                        if now.saturating_duration_since(since) < hold {
                            still = true;
                            continue;
                        }
                        self.counters.frames_held_expired += 1;
                        release_frame(
                            t,
                            &self.cfg,
                            stream,
                            &mut self.pending,
                            &mut self.out_batches,
                        );
                    }
                }
            }
            if still {
                i += 1;
            } else {
                self.holding.swap_remove(i);
            }
        }
    }

    /// When the earliest held frame must go, if any.
    fn hold_deadline(&self) -> Option<Instant> {
        self.holding
            .iter()
            .filter_map(|&k| self.slab.get(k as usize)?.as_ref())
            .flat_map(|s| s.pub_tracks.iter().filter_map(|t| t.held_since))
            .min()
            .map(|since| since + self.cfg.frame_hold)
    }

    /// Report each local publisher's loudest audio level since the last report.
    fn report_levels(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_level_report) < LEVEL_INTERVAL {
            return;
        }
        self.last_level_report = now;
        for s in self.slab.iter_mut().flatten() {
            if s.role == Role::Publisher
                && now.saturating_duration_since(s.last_rate_report) >= Duration::from_millis(500)
            {
                let secs = now
                    .saturating_duration_since(s.last_rate_report)
                    .as_secs_f64();
                s.last_rate_report = now;
                let mut total = 0;
                let layers: Vec<(Rid, u64)> = s
                    .pub_tracks
                    .iter_mut()
                    .filter_map(|t| {
                        let bps = (t.bytes as f64 * 8.0 / secs) as u64;
                        t.bytes = 0;
                        total += bps;
                        t.rid.map(|r| (r, bps))
                    })
                    .collect();
                if let Some(stream) = &s.stream {
                    stream.set_bitrate(total);
                    if !layers.is_empty() {
                        // Smooth (keyframes inflate single windows), keep a stable order.
                        let old = stream.layers();
                        let smoothed = layers
                            .into_iter()
                            .map(|(rid, bps)| {
                                let prev = old.iter().find(|l| l.0 == rid).map(|l| l.1);
                                (rid, prev.map(|p| (p * 3 + bps) / 4).unwrap_or(bps))
                            })
                            .collect();
                        stream.set_layers(smoothed);
                    }
                }
            }
            if let Some((level, voice)) = s.audio_peak.take() {
                self.events.push(ShardEvent::AudioLevel {
                    id: s.id,
                    level,
                    voice,
                });
            }
        }
    }

    fn flush_out_batches(&mut self) {
        for (shard, batch) in self.out_batches.iter_mut().enumerate() {
            if !batch.is_empty() {
                let cap = batch.capacity();
                let b = std::mem::replace(batch, Vec::with_capacity(cap.min(1024)));
                self.cross
                    .push(CrossShard::Fanout(ShardId(shard as u16), b));
                self.counters.fanout_batches_out += 1;
            }
        }
    }

    /// Write pending packets to local viewers, viewer-major: one visit and
    /// one drive (so one contiguous run of datagrams) per viewer. A turn
    /// stops visiting once it has [`TURN_SEND_BUDGET`] datagrams to send, and
    /// the next turn goes on where it stopped: so the runtime sends, reads
    /// its socket and runs timers at least that often, and a copy waits for
    /// the send of its own part of a large fan-out, not for all of it.
    fn flush_pending(&mut self, now: Instant) {
        if self.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        let budget = self.transmits.len() + TURN_SEND_BUDGET;
        let mut start = 0;
        while start < pending.len() {
            let stream = pending[start].stream;
            let (end, from) = match self.fwd_resume.take() {
                Some((len, next)) => (start + len, next),
                None => {
                    // Packets are usually all of one stream; group by stream without sorting.
                    let mut end = start + 1;
                    while end < pending.len() && pending[end].stream == stream {
                        end += 1;
                    }
                    self.fwd_keys.clear();
                    if let Some(keys) = self.viewers.get(&stream) {
                        self.fwd_keys.extend_from_slice(keys);
                    }
                    (end, 0)
                }
            };
            if let Some(next) = self.forward_run(now, &pending[start..end], from, budget) {
                self.fwd_resume = Some((end - start, next));
                pending.drain(..start);
                break;
            }
            start = end;
        }
        if self.fwd_resume.is_none() {
            pending.clear();
        }
        // Whatever was queued meanwhile goes after what is left.
        pending.append(&mut self.pending);
        self.pending = pending;
    }

    /// Whether packets wait for viewers the last turn did not reach.
    pub fn forward_backlog(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Visit the run's viewers in `fwd_keys` from index `from`; stop before
    /// a viewer once `transmits` holds `budget` datagrams, returning the
    /// index of that viewer.
    fn forward_run(
        &mut self,
        now: Instant,
        packets: &[FwdPacket],
        from: usize,
        budget: usize,
    ) -> Option<usize> {
        let keys_buf = std::mem::take(&mut self.fwd_keys);
        let mut copies = std::mem::take(&mut self.scratch_copies);
        copies.clear();
        copies.resize(packets.len(), 0);
        let mut cut = None;
        for (idx, &key) in keys_buf.iter().enumerate().skip(from) {
            if self.transmits.len() >= budget {
                cut = Some(idx);
                break;
            }
            let Some(s) = self.slab[key as usize].as_mut() else {
                continue;
            };
            if !s.connected {
                continue;
            }
            let mut switch_requests = Vec::new();
            if now >= s.next_layer_eval {
                s.next_layer_eval = now + LAYER_EVAL_INTERVAL;
                evaluate_layers(s, now, &mut switch_requests);
            }
            let mut wrote = false;
            let first = self.transmits.len();
            for (i, p) in packets.iter().enumerate() {
                match write_to_viewer(s, p, now, &mut self.transmits) {
                    WriteResult::Written => {
                        wrote = true;
                        copies[i] += 1;
                        self.counters.rtp_forwarded += 1;
                    }
                    WriteResult::NoCodec => self.counters.drop_no_codec += 1,
                    WriteResult::Skipped => {}
                }
            }
            for t in &mut s.viewer_tracks {
                t.sync_demand(&s.subscriptions, s.stream.as_ref());
            }
            if wrote {
                self.counters.viewer_visits += 1;
                if s.direct.is_some() {
                    self.direct_reports(key, now);
                } else {
                    self.input(key, now, Input::Timeout(now));
                }
                group_by_ssrc(&mut self.transmits[first..]);
            }
            for (stream, rid) in switch_requests {
                self.counters.layer_switch_requests += 1;
                self.request_keyframe(now, stream.id, &stream, Some(rid));
            }
        }
        self.fwd_keys = keys_buf;
        for (p, &n) in packets.iter().zip(&copies) {
            if n > 0 {
                self.forward_delays.push((p.received, n));
            }
        }
        self.scratch_copies = copies;
        cut
    }

    /// The packets this turn forwarded: when each reached the publisher's
    /// shard and to how many viewers it was written. The runtime measures
    /// their time in sluice when the turn's sends are done.
    pub fn forward_delays(&self) -> &[(Instant, u32)] {
        &self.forward_delays
    }

    // ------------------------------------------------------------- keyframes

    /// Ask the stream's publisher for a keyframe, wherever it lives.
    fn request_keyframe(
        &mut self,
        now: Instant,
        stream_id: StreamId,
        stream: &StreamShared,
        rid: Option<Rid>,
    ) {
        match stream.publisher_shard() {
            Some(shard) if shard == self.cfg.id => self.request_keyframe_local(now, stream_id, rid),
            Some(shard) => self.cross.push(CrossShard::Keyframe(shard, stream_id, rid)),
            None => {}
        }
    }

    /// PLI to the publisher's video tracks (one layer's, or all), each track
    /// throttled on its own so a layer switch is not blocked by another's request.
    fn request_keyframe_local(&mut self, now: Instant, stream: StreamId, rid: Option<Rid>) {
        let Some(&key) = self.publishers.get(&stream) else {
            return;
        };
        let throttle = self.cfg.keyframe_throttle;
        let Some(s) = self.slab[key as usize].as_mut() else {
            return;
        };
        let mut sent = false;
        for t in &mut s.pub_tracks {
            if t.kind != MediaKind::Video || (rid.is_some() && t.rid != rid) {
                continue;
            }
            if t.last_pli
                .is_some_and(|last| now.saturating_duration_since(last) < throttle)
            {
                continue;
            }
            if let Some(rx) = s.rtc.direct_api().stream_rx(&t.ssrc) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                t.last_pli = Some(now);
                self.counters.keyframe_requests += 1;
                sent = true;
            }
        }
        if sent {
            self.drive(key, now);
        }
    }
}

/// Queue a publisher's packet for the local viewers of its stream and for
/// every other shard that has some.
fn route(
    cfg: &ShardConfig,
    stream: &StreamShared,
    pending: &mut Vec<FwdPacket>,
    out_batches: &mut [Vec<FwdPacket>],
    fwd: FwdPacket,
) {
    for (shard, batch) in out_batches.iter_mut().enumerate() {
        let sid = ShardId(shard as u16);
        if stream.viewers_on(sid) == 0 {
            continue;
        }
        if sid == cfg.id {
            pending.push(fwd.clone());
        } else {
            batch.push(fwd.clone());
        }
    }
}

/// Send what a track holds of a frame (see [`ShardConfig::frame_hold`]) and
/// remember the frame as sent, so its late packets are not held.
fn release_frame(
    t: &mut PubTrack,
    cfg: &ShardConfig,
    stream: &StreamShared,
    pending: &mut Vec<FwdPacket>,
    out_batches: &mut [Vec<FwdPacket>],
) {
    if let Some(first) = t.held.first() {
        t.released_ts = Some(first.ts);
    }
    t.held_since = None;
    for p in t.held.drain(..) {
        route(cfg, stream, pending, out_batches, p);
    }
}

/// Make each RTP stream's datagrams in one viewer's output contiguous, keeping
/// their order within the stream (a stable insertion sort on the SSRC; other
/// datagrams go last). str0m's pacer alternates between a viewer's audio and
/// video queues, which splits what could be one GSO send (one destination,
/// equal sizes) into several; order across streams means nothing to RTP.
fn group_by_ssrc(out: &mut [Datagram]) {
    fn key(d: &Datagram) -> u64 {
        let b = &d.contents;
        if is_rtp(b) {
            u64::from(u32::from_be_bytes([b[8], b[9], b[10], b[11]]))
        } else {
            u64::MAX
        }
    }
    for i in 1..out.len() {
        let k = key(&out[i]);
        let mut j = i;
        while j > 0 && key(&out[j - 1]) > k {
            j -= 1;
        }
        if j < i {
            out[j..=i].rotate_right(1);
        }
    }
}

fn kind_name(k: MediaKind) -> &'static str {
    match k {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

/// One str0m media stats event, either direction.
struct TrackSample {
    at: Instant,
    bytes: u64,
    packets: u64,
    /// NACKs, PLIs, FIRs.
    counts: (u64, u64, u64),
    loss: Option<f32>,
    rtt: Option<Duration>,
}

fn record_track(
    s: &mut Session,
    direction: &'static str,
    mid: Mid,
    rid: Option<Rid>,
    m: TrackSample,
) {
    let kind = s.rtc.media(mid).map(|x| kind_name(x.kind()));
    let t = track_stats(&mut s.stats, direction, mid, rid);
    t.kind = kind;
    t.update_rate(m.at, m.bytes);
    t.packets = m.packets;
    (t.nacks, t.plis, t.firs) = m.counts;
    t.loss = m.loss.or(t.loss);
    t.rtt_ms = m.rtt.map(|d| d.as_secs_f64() * 1e3).or(t.rtt_ms);
}

/// The stats entry of one track of a session, created on first use.
fn track_stats<'a>(
    st: &'a mut SessionStats,
    direction: &'static str,
    mid: Mid,
    rid: Option<Rid>,
) -> &'a mut TrackStats {
    let (mid, rid) = (mid.to_string(), rid.map(|r| r.to_string()));
    let i = match st
        .tracks
        .iter()
        .position(|t| t.direction == direction && t.mid == mid && t.rid == rid)
    {
        Some(i) => i,
        None => {
            st.tracks.push(TrackStats {
                mid,
                rid,
                direction,
                ..Default::default()
            });
            st.tracks.len() - 1
        }
    };
    &mut st.tracks[i]
}

impl TrackStats {
    fn update_rate(&mut self, at: Instant, bytes: u64) {
        if let Some(prev) = self.measured_at {
            let secs = at.saturating_duration_since(prev).as_secs_f64();
            if secs > 0.0 {
                self.bitrate_bps = (bytes.saturating_sub(self.bytes) as f64 * 8.0 / secs) as u64;
            }
        }
        self.measured_at = Some(at);
        self.bytes = bytes;
    }
}

enum WriteResult {
    Written,
    NoCodec,
    Skipped,
}

impl ViewerTrack {
    fn new(mid: Mid, kind: MediaKind, auto: bool) -> Self {
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

    /// Bring this track's registered layer demand in line with its state:
    /// a video track with a source wants its current and target layers, or
    /// any layer until it has one. `auto_stream` is the session's WHEP stream.
    fn sync_demand(&mut self, subs: &[Arc<StreamShared>], auto_stream: Option<&Arc<StreamShared>>) {
        let stream = match self.source {
            _ if self.kind != MediaKind::Video => None,
            Some((id, _, _)) => subs.iter().find(|x| x.id == id),
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
            (Some((a, da)), Some((b, db))) => a.id == b.id && da == db,
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        self.release_demand();
        if let Some((st, d)) = want {
            st.change_demand(&d, true);
            self.demand = Some((st.clone(), d));
        }
    }

    fn release_demand(&mut self) {
        if let Some((st, d)) = self.demand.take() {
            st.change_demand(&d, false);
        }
    }

    /// Does this track take `p`? Auto tracks follow the first track of their
    /// kind from each new publisher (epoch) of the session's stream.
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

    fn takes_source(&mut self, p: &FwdPacket) -> bool {
        match self.source {
            Some((stream, mid, epoch)) if stream == p.stream && mid == p.mid => {
                if !self.auto || epoch == p.epoch {
                    return true;
                }
                self.source = Some((p.stream, p.mid, p.epoch));
                true
            }
            Some((_, _, epoch)) if self.auto && epoch != p.epoch => {
                self.source = Some((p.stream, p.mid, p.epoch));
                true
            }
            None if self.auto => {
                self.source = Some((p.stream, p.mid, p.epoch));
                true
            }
            _ => false,
        }
    }
}

fn write_to_viewer(
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
        .find(|(e, pt, _)| *e == p.epoch && *pt == p.pt)
    {
        Some(&(_, _, out)) => out,
        None => {
            let stream = s.subscriptions.iter().find(|x| x.id == p.stream);
            let out = resolve_pt(&s.rtc, stream.map(|x| &**x), track.mid, p);
            track.pt_cache.push((p.epoch, p.pt, out));
            out
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
    let epoch = p.epoch ^ p.rid.map(rid_tag).unwrap_or(0);
    let Some((seq, ts)) = track.rebase.map(epoch, p.seq, p.ts, ts_gap) else {
        return WriteResult::Skipped;
    };
    // Each simulcast layer numbers VP8 pictures on its own: continue the
    // viewer's numbering across a switch.
    let vp8 = if p.codec == Codec::Vp8 && p.rid.is_some() {
        track.vp8.rebase(epoch, &p.payload)
    } else {
        None
    };
    if let Some(d) = s.direct.as_mut() {
        // Once a session is on the direct path, str0m never sends media on
        // it: both hold the same keys, and only one may number packets.
        let Some(dest) = s.peer else {
            return WriteResult::Skipped;
        };
        if !d.has_track(*ssrc) {
            let Some(info) = direct_track_info(&mut s.rtc, track.mid, ssrc, track.kind) else {
                return WriteResult::Skipped;
            };
            d.add_track(info);
        }
        let packet = crate::direct::Packet {
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

/// What the direct send path needs of a track, from its session's `Rtc`.
fn direct_track_info(rtc: &mut Rtc, mid: Mid, ssrc: Ssrc, kind: MediaKind) -> Option<TrackInfo> {
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
        .filter(|s| s.epoch == p.epoch);
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

/// The layer to forward: the highest allowed by the viewer's cap whose rate
/// fits the bandwidth estimate (with headroom for audio and overhead); the
/// lowest when none fits. `layers` is sorted by rate, lowest first.
pub fn choose_layer(
    layers: &[(Rid, u64)],
    max_layer: Option<u8>,
    estimate: Option<u64>,
) -> Option<Rid> {
    let top = match max_layer {
        Some(m) => (m as usize).min(layers.len().checked_sub(1)?),
        None => layers.len().checked_sub(1)?,
    };
    let allowed = &layers[..=top];
    match estimate {
        Some(est) => allowed
            .iter()
            .rev()
            .find(|(_, bps)| (*bps as f64) * 1.15 + 64_000.0 <= est as f64)
            .or(allowed.first())
            .map(|l| l.0),
        None => allowed.last().map(|l| l.0),
    }
}

/// Re-pick each simulcast track's layer; collect keyframe requests for switches.
fn evaluate_layers(s: &mut Session, now: Instant, requests: &mut Vec<(Arc<StreamShared>, Rid)>) {
    let mut want_min = 0u64;
    let mut want_max = 0u64;
    for t in &mut s.viewer_tracks {
        if t.kind != MediaKind::Video {
            continue;
        }
        let Some((stream_id, _, _)) = t.source else {
            continue;
        };
        let Some(stream) = s.subscriptions.iter().find(|x| x.id == stream_id) else {
            continue;
        };
        let layers = stream.layers();
        if layers.is_empty() {
            continue;
        }
        want_min += layers[0].1;
        want_max += layers[layers.len() - 1].1;
        let target = choose_layer(&layers, t.max_layer, s.estimate);
        // Hold a choice a while unless the cap changed, so estimate noise and
        // keyframe-inflated rates do not make the layer flap.
        let held = t
            .target_since
            .is_some_and(|at| now.saturating_duration_since(at) < LAYER_HOLD);
        if target != t.target && (!held || t.cap_changed) {
            t.target = target;
            t.target_since = Some(now);
        }
        t.cap_changed = false;
        // Until the switch happens, keep asking (the publisher side throttles).
        if let Some(rid) = t.target {
            if t.layer != Some(rid) {
                requests.push((stream.clone(), rid));
            }
        }
    }
    if s.estimate.is_some() && want_max > 0 {
        // Keep the estimator probing toward the top layer.
        s.rtc.bwe().set_bitrate(
            Bitrate::from(want_min),
            Bitrate::from((want_max as f64 * 1.3) as u64 + 128_000),
        );
    }
}

/// Rewrites VP8 picture ids and TL0PICIDX for one viewer track.
#[derive(Debug, Default, Clone)]
struct Vp8Rebase {
    tag: Option<u32>,
    pid_delta: u16,
    tl0_delta: u8,
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
}

/// Picture id (value, 15-bit?) and TL0PICIDX of a VP8 payload descriptor.
fn vp8_ids(p: &[u8]) -> (Option<(u16, bool)>, Option<u8>) {
    let Some(&b0) = p.first() else {
        return (None, None);
    };
    if b0 & 0x80 == 0 {
        return (None, None);
    }
    let Some(&x) = p.get(1) else {
        return (None, None);
    };
    let mut i = 2;
    let mut pid = None;
    if x & 0x80 != 0 {
        match p.get(i) {
            Some(&m) if m & 0x80 != 0 => {
                let Some(&lo) = p.get(i + 1) else {
                    return (None, None);
                };
                pid = Some(((((m & 0x7f) as u16) << 8) | lo as u16, true));
                i += 2;
            }
            Some(&m) => {
                pid = Some((m as u16, false));
                i += 1;
            }
            None => return (None, None),
        }
    }
    let tl0 = if x & 0x40 != 0 {
        p.get(i).copied()
    } else {
        None
    };
    (pid, tl0)
}

impl Vp8Rebase {
    /// The picture id and TL0PICIDX this payload goes out with, when they
    /// differ from the publisher's.
    fn rebase(&mut self, tag: u32, payload: &[u8]) -> Option<Vp8Ids> {
        let (pid, tl0) = vp8_ids(payload);
        if self.tag != Some(tag) {
            self.tag = Some(tag);
            self.pid_delta = match (self.last_pid, pid) {
                (Some(last), Some((p, _))) => last.wrapping_add(1).wrapping_sub(p),
                _ => 0,
            };
            self.tl0_delta = match (self.last_tl0, tl0) {
                (Some(last), Some(t)) => last.wrapping_add(1).wrapping_sub(t),
                _ => 0,
            };
        }
        if self.pid_delta == 0 && self.tl0_delta == 0 {
            self.last_pid = pid.map(|x| x.0);
            self.last_tl0 = tl0;
            return None;
        }
        let mut ids = Vp8Ids {
            picture_id: None,
            tl0: None,
        };
        if let Some((p, wide)) = pid {
            let mask = if wide { 0x7fff } else { 0x7f };
            let out = p.wrapping_add(self.pid_delta) & mask;
            self.last_pid = Some(out);
            ids.picture_id = Some(out);
        }
        if let Some(t) = tl0 {
            let out = t.wrapping_add(self.tl0_delta);
            self.last_tl0 = Some(out);
            ids.tl0 = Some(out);
        }
        Some(ids)
    }
}

/// str0m's form of a VP8 rewrite, applied as it serializes.
fn vp8_patch(ids: Vp8Ids, payload: &[u8]) -> Option<str0m::rtp::Vp8Patch> {
    let mut b = str0m::rtp::Vp8Descriptor::parse(payload).ok()?.patch();
    if let Some(p) = ids.picture_id {
        b = b.picture_id(p);
    }
    if let Some(t) = ids.tl0 {
        b = b.tl0_pic_idx(t);
    }
    b.build().ok()
}

/// The send stream of `mid`, if negotiated, with its RTX cache bounded by
/// time (1 s) and count. Payloads are shared, but each slot still holds a
/// ~340-byte packet record and str0m reserves the ring's full count up
/// front: 256 slots (~87 KiB per video track) hold a second of video up to
/// ~2.5 Mbit/s and half a second at 5. A session on the direct send path
/// keeps its own cache (`direct.rs`), and str0m's is cut to one slot.
fn send_stream(rtc: &mut Rtc, mid: Mid, direct: bool) -> Option<Ssrc> {
    let mut api = rtc.direct_api();
    let tx = api.stream_tx_by_mid(mid, None)?;
    set_rtx_cache(tx, direct);
    Some(tx.ssrc())
}

/// The RTX cache of a send stream: str0m's own, or a single slot when the
/// session sends through the direct path (which keeps its own).
fn set_rtx_cache(tx: &mut str0m::rtp::StreamTx, direct: bool) {
    if direct {
        tx.set_rtx_cache(1, Duration::from_millis(1), None);
    } else {
        tx.set_rtx_cache(RTX_CACHE_PACKETS, Duration::from_secs(1), Some(0.15));
    }
}

fn rid_tag(rid: Rid) -> u32 {
    rid.as_bytes().iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ *b as u32).wrapping_mul(0x0100_0193)
    })
}

/// Does this payload start a keyframe? Cheap header checks per codec.
pub fn is_keyframe(codec: Codec, p: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => {
            // RFC 7741 descriptor: S bit and partition 0, then the frame tag's P bit clear.
            let Some(&b0) = p.first() else { return false };
            if b0 & 0x10 == 0 || b0 & 0x0f != 0 {
                return false;
            }
            let mut i = 1;
            if b0 & 0x80 != 0 {
                let Some(&x) = p.get(1) else { return false };
                i = 2;
                if x & 0x80 != 0 {
                    i += if p.get(i).is_some_and(|b| b & 0x80 != 0) {
                        2
                    } else {
                        1
                    };
                }
                if x & 0x40 != 0 {
                    i += 1;
                }
                if x & 0x30 != 0 {
                    i += 1;
                }
            }
            p.get(i).is_some_and(|b| b & 0x01 == 0)
        }
        Codec::H264 => {
            let Some(&b0) = p.first() else { return false };
            match b0 & 0x1f {
                5 | 7 => true,
                // STAP-A: look at each aggregated NAL unit.
                24 => {
                    let mut i = 1;
                    while i + 2 < p.len() {
                        let len = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                        if matches!(p[i + 2] & 0x1f, 5 | 7) {
                            return true;
                        }
                        i += 2 + len;
                    }
                    false
                }
                // FU-A: the start fragment of an IDR slice.
                28 => p.get(1).is_some_and(|b| b & 0x80 != 0 && b & 0x1f == 5),
                _ => false,
            }
        }
        // RFC 9628: not inter-predicted (P=0) and the start of a frame (B=1).
        Codec::Vp9 => p.first().is_some_and(|b| b & 0x40 == 0 && b & 0x08 != 0),
        // AV1 aggregation header: N = first packet of a new coded video sequence.
        Codec::Av1 => p.first().is_some_and(|b| b & 0x08 != 0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_by_ssrc_keeps_each_streams_order() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let rtp = |ssrc: u32, seq: u8, len: usize| {
            let mut b = vec![0u8; len];
            b[0] = 0x80;
            b[1] = 96;
            b[3] = seq;
            b[8..12].copy_from_slice(&ssrc.to_be_bytes());
            Datagram {
                destination: to,
                contents: b,
            }
        };
        let rtcp = Datagram {
            destination: to,
            contents: vec![0x80, 200, 0, 6, 0, 0, 0, 0, 0, 0, 0, 7, 0],
        };
        let mut out = vec![
            rtp(7, 1, 1200),
            rtp(3, 1, 100),
            rtcp,
            rtp(7, 2, 1200),
            rtp(3, 2, 100),
            rtp(7, 3, 500),
        ];
        group_by_ssrc(&mut out);
        let got: Vec<(u32, u8, usize)> = out
            .iter()
            .map(|d| {
                let b = &d.contents;
                if b[1] == 200 {
                    (0, 0, b.len())
                } else {
                    (
                        u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
                        b[3],
                        b.len(),
                    )
                }
            })
            .collect();
        assert_eq!(
            got,
            [
                (3, 1, 100),
                (3, 2, 100),
                (7, 1, 1200),
                (7, 2, 1200),
                (7, 3, 500),
                (0, 0, 13)
            ]
        );
    }

    #[test]
    fn layer_choice_follows_cap_and_estimate() {
        let l = [
            (Rid::from("q"), 150_000),
            (Rid::from("h"), 500_000),
            (Rid::from("f"), 1_500_000),
        ];
        assert_eq!(choose_layer(&l, None, None), Some(Rid::from("f")));
        assert_eq!(choose_layer(&l, Some(0), None), Some(Rid::from("q")));
        assert_eq!(choose_layer(&l, Some(7), None), Some(Rid::from("f")));
        assert_eq!(choose_layer(&l, None, Some(300_000)), Some(Rid::from("q")));
        assert_eq!(
            choose_layer(&l, None, Some(1_000_000)),
            Some(Rid::from("h"))
        );
        assert_eq!(
            choose_layer(&l, None, Some(5_000_000)),
            Some(Rid::from("f"))
        );
        assert_eq!(
            choose_layer(&l, Some(1), Some(5_000_000)),
            Some(Rid::from("h"))
        );
        // Nothing fits: the lowest layer rather than nothing.
        assert_eq!(choose_layer(&l, None, Some(10_000)), Some(Rid::from("q")));
        assert_eq!(choose_layer(&[], None, None), None);
    }

    #[test]
    fn vp8_picture_ids_continue_across_a_layer_switch() {
        // X=1, I=1 (15-bit id), L=1, T=1: [desc, ext, pid hi, pid lo, tl0, tid, frame tag]
        let pkt = |pid: u16, tl0: u8| {
            vec![
                0x90,
                0xe0,
                0x80 | (pid >> 8) as u8,
                pid as u8,
                tl0,
                0x20,
                0x00,
                1,
                2,
                3,
            ]
        };
        assert_eq!(vp8_ids(&pkt(300, 9)), (Some((300, true)), Some(9)));
        let mut r = Vp8Rebase::default();
        assert!(
            r.rebase(1, &pkt(300, 9)).is_none(),
            "first layer passes through"
        );
        assert!(r.rebase(1, &pkt(301, 10)).is_none());
        // Switch to a layer numbering from 5000: the viewer sees 302 / 11.
        let ids = r.rebase(2, &pkt(5000, 77)).expect("rewritten");
        assert_eq!((r.last_pid, r.last_tl0), (Some(302), Some(11)));
        // Both send paths write the same: the direct path in the copy, str0m
        // as it serializes.
        let mut copy = pkt(5000, 77);
        crate::direct::vp8_rewrite(&mut copy, ids);
        assert_eq!(vp8_ids(&copy), (Some((302, true)), Some(11)));
        assert!(vp8_patch(ids, &pkt(5000, 77)).is_some());
        assert!(r.rebase(2, &pkt(5001, 78)).is_some());
        assert_eq!((r.last_pid, r.last_tl0), (Some(303), Some(12)));
    }

    #[test]
    fn vp8_keyframes_are_found_behind_extended_descriptors() {
        assert!(is_keyframe(Codec::Vp8, &[0x10, 0x00, 0x9d]));
        assert!(!is_keyframe(Codec::Vp8, &[0x10, 0x01, 0x9d]));
        // Continuation packet: S bit clear.
        assert!(!is_keyframe(Codec::Vp8, &[0x00, 0x00]));
        // X, I with a 15-bit picture id, L, T/K: header after 5 descriptor bytes.
        assert!(is_keyframe(
            Codec::Vp8,
            &[0x90, 0xf0, 0x80, 0x01, 0x02, 0x03, 0x00]
        ));
        assert!(!is_keyframe(
            Codec::Vp8,
            &[0x90, 0xf0, 0x80, 0x01, 0x02, 0x03, 0x01]
        ));
        assert!(!is_keyframe(Codec::Vp8, &[0x90]));
    }

    #[test]
    fn h264_idr_is_found_in_single_stap_a_and_fu_a_packets() {
        assert!(is_keyframe(Codec::H264, &[0x65, 0]));
        assert!(!is_keyframe(Codec::H264, &[0x41, 0]));
        assert!(is_keyframe(
            Codec::H264,
            &[0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68]
        ));
        assert!(is_keyframe(Codec::H264, &[0x7c, 0x85]));
        assert!(!is_keyframe(Codec::H264, &[0x7c, 0x05]));
        assert!(!is_keyframe(Codec::H264, &[0x78, 0, 9]));
    }

    #[test]
    fn vp9_and_av1_keyframe_bits() {
        assert!(is_keyframe(Codec::Vp9, &[0x08]));
        assert!(!is_keyframe(Codec::Vp9, &[0x48]));
        assert!(is_keyframe(Codec::Av1, &[0x18]));
        assert!(!is_keyframe(Codec::Opus, &[0x18]));
        assert!(!is_keyframe(Codec::Av1, &[0x10]));
    }
}
