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

use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo, Ssrc};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use crate::fanout::{FwdPacket, Rebase, SourceInfo, StreamShared};
use crate::ids::{Role, SessionId, ShardId, StreamId};
use crate::stats::Counters;
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
        }
    }
}

/// A negotiated session handed to a shard by the control plane.
pub struct NewSession {
    pub id: SessionId,
    pub role: Role,
    pub stream: Arc<StreamShared>,
    /// Our ICE ufrag; a new flow's STUN USERNAME names it.
    pub ice_ufrag: String,
    pub rtc: Rtc,
}

/// Instructions from the control plane or from other shards.
pub enum Command {
    AddSession(Box<NewSession>),
    /// End a session (DELETE, kick).
    RemoveSession(SessionId),
    /// A viewer somewhere wants a keyframe of this stream's publisher (on this shard).
    RequestKeyframe(StreamId),
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
    Connected { id: SessionId },
    Closed { id: SessionId, reason: CloseReason },
}

/// Messages for other shards, produced by the core and sent by the runtime.
#[derive(Debug)]
pub enum CrossShard {
    Fanout(ShardId, Vec<FwdPacket>),
    Keyframe(ShardId, StreamId),
}

/// A datagram to send.
#[derive(Debug)]
pub struct Datagram {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

struct PubTrack {
    ssrc: Ssrc,
    kind: MediaKind,
}

struct ViewerTrack {
    mid: Mid,
    kind: MediaKind,
    ssrc: Option<Ssrc>,
    rebase: Rebase,
    /// (publisher epoch, publisher pt) → our pt; None when we lack that codec.
    pt_cache: Vec<(u32, Pt, Option<Pt>)>,
}

struct Session {
    id: SessionId,
    role: Role,
    stream: Arc<StreamShared>,
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
    last_keyframe_request: Option<Instant>,
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
    cross: Vec<CrossShard>,
    transmits: Vec<Datagram>,
    events: Vec<ShardEvent>,
    counters: Counters,
    scratch_keys: Vec<u32>,
}

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
            cross: Vec::new(),
            transmits: Vec::new(),
            events: Vec::new(),
            counters: Counters::default(),
            scratch_keys: Vec::new(),
        }
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
            Command::RequestKeyframe(stream) => self.request_keyframe_local(now, stream),
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
        if session
            .rtc
            .handle_input(Input::Receive(now, receive))
            .is_err()
        {
            self.counters.drop_session_error += 1;
        }
        self.drive(key, now);
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
                let s = self.slab[e.key as usize].as_mut().expect("live");
                let _ = s.rtc.handle_input(Input::Timeout(now));
                self.drive(e.key, now);
            }
        }
        self.expired = expired;
        self.flush_pending(now);
        self.flush_out_batches();
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
        self.wheel.next_deadline()
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
        let stream_id = new.stream.id;
        match new.role {
            Role::Viewer => {
                new.stream.add_viewer(self.cfg.id);
                self.viewers.entry(stream_id).or_default().push(key);
            }
            Role::Publisher => {
                // The control plane guarantees one publisher per stream.
                self.publishers.insert(stream_id, key);
            }
        }
        self.by_ufrag.insert(new.ice_ufrag.clone(), key);
        self.by_id.insert(new.id, key);
        self.slab[key as usize] = Some(Session {
            id: new.id,
            role: new.role,
            stream: new.stream,
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
            last_keyframe_request: None,
        });
        self.counters.sessions_added += 1;
        let s = self.slab[key as usize].as_mut().expect("just inserted");
        let _ = s.rtc.handle_input(Input::Timeout(now));
        self.drive(key, now);
    }

    fn key_for_new_flow(&self, data: &[u8]) -> Option<u32> {
        let ufrag = stun::binding_request_local_ufrag(data)?;
        let ufrag = std::str::from_utf8(ufrag).ok()?;
        self.by_ufrag.get(ufrag).copied()
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
        let stream_id = s.stream.id;
        match s.role {
            Role::Viewer => {
                s.stream.remove_viewer(self.cfg.id);
                if let Some(v) = self.viewers.get_mut(&stream_id) {
                    v.retain(|&k| k != key);
                    if v.is_empty() {
                        self.viewers.remove(&stream_id);
                    }
                }
            }
            Role::Publisher => {
                if self.publishers.get(&stream_id) == Some(&key) {
                    self.publishers.remove(&stream_id);
                    if s.stream.publisher_shard() == Some(self.cfg.id) {
                        s.stream.set_publisher(None);
                    }
                    s.stream.clear_source(s.epoch);
                }
            }
        }
        self.counters.sessions_removed += 1;
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
                let stream = s.stream.clone();
                match s.role {
                    Role::Publisher => {
                        let params = s.rtc.codec_config().params().to_vec();
                        stream.set_source(Some(Arc::new(SourceInfo {
                            epoch: s.epoch,
                            params,
                        })));
                        stream.set_publisher(Some(self.cfg.id));
                    }
                    Role::Viewer => self.request_keyframe(now, stream.id, &stream),
                }
                self.events.push(ShardEvent::Connected { id });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.counters.sessions_timed_out += 1;
                self.close_session(key, CloseReason::Timeout);
            }
            Event::Closed => self.close_session(key, CloseReason::Closed),
            Event::MediaAdded(m) => {
                if s.role == Role::Viewer && m.direction.is_sending() {
                    let ssrc = s
                        .rtc
                        .direct_api()
                        .stream_tx_by_mid(m.mid, None)
                        .map(|t| t.ssrc());
                    if let Some(ssrc) = ssrc {
                        if let Some(tx) = s.rtc.direct_api().stream_tx(&ssrc) {
                            // Bound NACK memory by time: payloads are shared, so this is headers only.
                            tx.set_rtx_cache(512, Duration::from_secs(1), Some(0.15));
                        }
                    }
                    s.viewer_tracks.push(ViewerTrack {
                        mid: m.mid,
                        kind: m.kind,
                        ssrc,
                        rebase: Rebase::new(),
                        pt_cache: Vec::new(),
                    });
                }
            }
            Event::KeyframeRequest(_) => {
                if s.role == Role::Viewer {
                    let stream = s.stream.clone();
                    self.request_keyframe(now, stream.id, &stream);
                }
            }
            Event::RtpPacket(pkt) => {
                if s.role == Role::Publisher {
                    self.handle_publisher_rtp(key, pkt);
                }
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------ forwarding

    fn handle_publisher_rtp(&mut self, key: u32, pkt: RtpPacket) {
        let shard_id = self.cfg.id;
        let Some(s) = self.slab[key as usize].as_mut() else {
            return;
        };
        self.counters.rtp_in += 1;
        let ssrc = pkt.header.ssrc;
        let kind = match s.pub_tracks.iter().find(|t| t.ssrc == ssrc) {
            Some(t) => t.kind,
            None => {
                let mid = s.rtc.direct_api().stream_rx(&ssrc).map(|r| r.mid());
                let Some(kind) = mid.and_then(|mid| s.rtc.media(mid)).map(|m| m.kind()) else {
                    return;
                };
                s.pub_tracks.push(PubTrack { ssrc, kind });
                kind
            }
        };
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
        let stream = &s.stream;
        let fwd = FwdPacket {
            stream: stream.id,
            kind,
            epoch: s.epoch,
            pt,
            codec,
            seq: *pkt.seq_no,
            ts: pkt.header.timestamp,
            marker: pkt.header.marker,
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            received: pkt.timestamp,
            payload: pkt.payload,
        };
        for shard in 0..self.cfg.shard_count {
            let sid = ShardId(shard as u16);
            if stream.viewers_on(sid) == 0 {
                continue;
            }
            if sid == shard_id {
                self.pending.push(fwd.clone());
            } else {
                self.out_batches[shard].push(fwd.clone());
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

    /// Write this turn's packets to local viewers, viewer-major: one visit and
    /// one drive (so one contiguous run of datagrams) per viewer.
    fn flush_pending(&mut self, now: Instant) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        // Packets are usually all of one stream; group by stream without sorting.
        let mut start = 0;
        while start < pending.len() {
            let stream = pending[start].stream;
            let mut end = start + 1;
            while end < pending.len() && pending[end].stream == stream {
                end += 1;
            }
            self.forward_run(now, stream, &pending[start..end]);
            start = end;
        }
        let mut pending = pending;
        pending.clear();
        self.pending = pending;
    }

    fn forward_run(&mut self, now: Instant, stream: StreamId, packets: &[FwdPacket]) {
        let Some(keys) = self.viewers.get(&stream) else {
            return;
        };
        let mut keys_buf = std::mem::take(&mut self.scratch_keys);
        keys_buf.clear();
        keys_buf.extend_from_slice(keys);
        for &key in &keys_buf {
            let Some(s) = self.slab[key as usize].as_mut() else {
                continue;
            };
            if !s.connected {
                continue;
            }
            let mut wrote = false;
            for p in packets {
                match write_to_viewer(s, p) {
                    WriteResult::Written => {
                        wrote = true;
                        self.counters.rtp_forwarded += 1;
                    }
                    WriteResult::NoCodec => self.counters.drop_no_codec += 1,
                    WriteResult::Skipped => {}
                }
            }
            if wrote {
                let _ = s.rtc.handle_input(Input::Timeout(now));
                self.drive(key, now);
            }
        }
        self.scratch_keys = keys_buf;
    }

    // ------------------------------------------------------------- keyframes

    /// Ask the stream's publisher for a keyframe, wherever it lives.
    fn request_keyframe(&mut self, now: Instant, stream_id: StreamId, stream: &StreamShared) {
        match stream.publisher_shard() {
            Some(shard) if shard == self.cfg.id => self.request_keyframe_local(now, stream_id),
            Some(shard) => self.cross.push(CrossShard::Keyframe(shard, stream_id)),
            None => {}
        }
    }

    fn request_keyframe_local(&mut self, now: Instant, stream: StreamId) {
        let Some(&key) = self.publishers.get(&stream) else {
            return;
        };
        let throttle = self.cfg.keyframe_throttle;
        let Some(s) = self.slab[key as usize].as_mut() else {
            return;
        };
        if let Some(last) = s.last_keyframe_request {
            if now.saturating_duration_since(last) < throttle {
                return;
            }
        }
        let video: Vec<Ssrc> = s
            .pub_tracks
            .iter()
            .filter(|t| t.kind == MediaKind::Video)
            .map(|t| t.ssrc)
            .collect();
        if video.is_empty() {
            return;
        }
        s.last_keyframe_request = Some(now);
        for ssrc in video {
            if let Some(rx) = s.rtc.direct_api().stream_rx(&ssrc) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                self.counters.keyframe_requests += 1;
            }
        }
        self.drive(key, now);
    }
}

enum WriteResult {
    Written,
    NoCodec,
    Skipped,
}

fn write_to_viewer(s: &mut Session, p: &FwdPacket) -> WriteResult {
    let Some(track) = s.viewer_tracks.iter_mut().find(|t| t.kind == p.kind) else {
        return WriteResult::Skipped;
    };
    let pt = match track
        .pt_cache
        .iter()
        .find(|(e, pt, _)| *e == p.epoch && *pt == p.pt)
    {
        Some(&(_, _, out)) => out,
        None => {
            let out = resolve_pt(&s.rtc, &s.stream, track.mid, p);
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
    let Some((seq, ts)) = track.rebase.map(p.epoch, p.seq, p.ts, ts_gap) else {
        return WriteResult::Skipped;
    };
    let mut direct = s.rtc.direct_api();
    let Some(tx) = direct.stream_tx(&ssrc) else {
        return WriteResult::Skipped;
    };
    let mut ext = ExtensionValues::default();
    if p.kind == MediaKind::Audio {
        ext.audio_level = p.audio_level;
        ext.voice_activity = p.voice_activity;
    }
    let seq: SeqNo = seq.into();
    tx.write_rtp(
        RtpWrite::new(pt, seq, ts, p.received, p.payload.clone())
            .marker(p.marker)
            .ext_vals(ext)
            .nackable(p.kind == MediaKind::Video),
    );
    WriteResult::Written
}

/// The viewer's payload type for a publisher's: same codec and parameters if
/// negotiated, else the same codec with other parameters, else none.
fn resolve_pt(rtc: &Rtc, stream: &StreamShared, mid: Mid, p: &FwdPacket) -> Option<Pt> {
    let remote = rtc.media(mid)?.remote_pts();
    let ours: Vec<_> = rtc
        .codec_config()
        .params()
        .iter()
        .filter(|x| remote.contains(&x.pt()))
        .collect();
    let source = stream.source().filter(|s| s.epoch == p.epoch);
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
