//! The Sans-IO core of one shard: a slab of str0m sessions, the demux table,
//! the timer wheel and the forwarding tables.
//!
//! Everything here is a function of (now, input) → (datagrams, cross-shard
//! messages, events, next deadline). No sockets, threads or clock reads; the
//! runtime (`runtime.rs`) and tests drive it. This file orchestrates: the
//! child modules hold the parts and return what the shard must do next.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use str0m::media::{MediaKind, Mid, Rid};
use str0m::{Input, Output};

use crate::fanout::{FwdPacket, StreamShared};
use crate::ids::{Role, SessionId, ShardId, StreamId};
use crate::packet::{is_rtcp, Datagram};
use crate::relay::{RelayOutput, Relays};
use crate::stats::{Counters, SessionStats, SessionStatsTable};
use crate::stun;
use crate::timer::{TimerEntry, TimerWheel};

mod api;
mod egress;
mod events;
mod flow;
mod handshake;
mod ingest;
mod keyframe;
mod relay;
mod report;
mod restart;
mod session;
mod simulcast;
mod tcp;
mod track;
mod viewer;

pub use api::{
    CloseReason, Command, CrossShard, IceRestart, NewSession, Reply, ServerOffer, ShardConfig,
    ShardError, ShardEvent,
};
pub use egress::ForwardDelay;

use egress::{group_by_ssrc, Egress, TURN_SEND_BUDGET};
use keyframe::KeyframeRoute;
use session::{Session, SessionTable};
use simulcast::{evaluate_layers, LayerRequest, LAYER_EVAL_INTERVAL};
use viewer::{write_to_viewer, WriteResult};

/// The shard core.
pub struct Shard {
    cfg: ShardConfig,
    sessions: SessionTable,
    /// Local viewers per stream, in join order.
    viewers: HashMap<StreamId, Vec<u32>>,
    /// Local publisher per stream.
    publishers: HashMap<StreamId, u32>,
    wheel: TimerWheel,
    expired: Vec<TimerEntry>,
    egress: Egress,
    /// Publisher sessions that hold part of a video frame.
    holding: Vec<u32>,
    cross: Vec<CrossShard>,
    transmits: Vec<Datagram>,
    events: Vec<ShardEvent>,
    counters: Counters,
    last_level_report: Instant,
    session_stats: SessionStatsTable,
    last_stats_publish: Instant,
    last_layer_refresh: Instant,
    /// Relay links to other nodes held by this shard.
    relays: Relays,
    relay_out: Vec<RelayOutput>,
    /// This shard's ICE-TCP connections.
    tcp: tcp::TcpFlows,
    /// DTLS handshake datagrams waiting for a turn's budget.
    handshakes: handshake::Handshakes,
}

impl Shard {
    /// A shard with no sessions, its clock starting at `now`.
    pub fn new(cfg: ShardConfig, now: Instant) -> Self {
        let shards = cfg.shard_count.max(1);
        let cfg_id = cfg.id;
        Shard {
            cfg,
            sessions: SessionTable::default(),
            viewers: HashMap::new(),
            publishers: HashMap::new(),
            wheel: TimerWheel::new(now),
            expired: Vec::new(),
            egress: Egress::new(shards),
            holding: Vec::new(),
            cross: Vec::new(),
            transmits: Vec::new(),
            events: Vec::new(),
            counters: Counters::default(),
            last_level_report: now,
            session_stats: SessionStatsTable::default(),
            last_stats_publish: now,
            last_layer_refresh: now,
            relays: Relays::new(cfg_id),
            relay_out: Vec::new(),
            tcp: tcp::TcpFlows::default(),
            handshakes: handshake::Handshakes::default(),
        }
    }

    /// Per-session stats, refreshed about once a second while sessions report them.
    pub fn session_stats(&self) -> SessionStatsTable {
        self.session_stats.clone()
    }

    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.cfg.id
    }

    /// What this shard has counted.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// What this shard has counted, for the runtime to add its own.
    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// Sessions on this shard.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions on this shard by role.
    pub fn session_count_by_role(&self, role: Role) -> usize {
        self.sessions.iter().filter(|s| s.role == role).count()
    }

    // ---------------------------------------------------------------- inputs

    /// An instruction from the control plane or another shard.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::AddSession(new) => self.add_session(now, *new),
            Command::RemoveSession(id) => {
                if let Some(key) = self.sessions.key_of(id) {
                    self.close_session(key, CloseReason::Removed);
                }
            }
            Command::RequestKeyframe(stream, rid) => self.request_keyframe_local(now, stream, rid),
            Command::SetMaxLayer { id, mid, max } => {
                let Some(s) = self.session_by_id(id) else {
                    return;
                };
                for t in &mut s.viewer_tracks {
                    if mid.is_none_or(|m| m == t.mid) {
                        t.max_layer = max;
                        t.cap_changed = true;
                    }
                }
                s.next_layer_eval = now;
            }
            Command::SetMaxTemporal { id, mid, max } => {
                let Some(s) = self.session_by_id(id) else {
                    return;
                };
                let mut raised = Vec::new();
                for t in &mut s.viewer_tracks {
                    if mid.is_none_or(|m| m == t.mid) {
                        t.max_temporal = max;
                        // Going up waits for a keyframe or a layer sync
                        // frame: ask for the keyframe rather than wait.
                        let stream = t
                            .source
                            .and_then(|src| s.subscriptions.iter().find(|x| x.id == src.stream));
                        if let Some(stream) = stream.filter(|_| t.temporal < t.max_temporal()) {
                            raised.push((stream.clone(), t.layer));
                        }
                    }
                }
                for (stream, rid) in raised {
                    self.request_keyframe(now, &stream, rid);
                }
            }
            Command::Subscribe {
                id,
                mid,
                kind,
                stream,
                source_mid,
            } => {
                if let Some(key) = self.sessions.key_of(id) {
                    self.bind_track(now, key, mid, kind, Some((stream, source_mid)));
                }
            }
            Command::Unsubscribe { id, mid } => {
                let Some(key) = self.sessions.key_of(id) else {
                    return;
                };
                let kind = self
                    .sessions
                    .get(key)
                    .and_then(|s| s.viewer_tracks.iter().find(|t| t.mid == mid))
                    .map(|t| t.kind);
                if let Some(kind) = kind {
                    self.bind_track(now, key, mid, kind, None);
                }
            }
            Command::AddMedia { id, kinds, reply } => {
                let Some(key) = self.sessions.key_of(id) else {
                    return reply(Err(ShardError::NoSuchSession));
                };
                let s = self.sessions.get_mut(key).expect("indexed");
                reply(s.add_media(&kinds));
                self.drive(key, now);
            }
            Command::RelayOpen {
                link,
                peer,
                material,
                direction,
            } => self.relay_open(now, link, peer, &material, direction),
            Command::RelayAddStream { link, tag, stream } => {
                self.relay_add_stream(now, link, tag, stream)
            }
            Command::RelayRemoveStream { link, tag } => self.relays.remove_stream(link, tag),
            Command::RelayClose(link) => self.relay_close(link),
            Command::AcceptAnswer { id, answer, reply } => {
                let Some(key) = self.sessions.key_of(id) else {
                    return reply(Err(ShardError::NoSuchSession));
                };
                let s = self.sessions.get_mut(key).expect("indexed");
                reply(s.accept_answer(answer));
                self.drive(key, now);
            }
            Command::IceRestart(restart) => self.ice_restart(now, *restart),
        }
    }

    fn session_by_id(&mut self, id: SessionId) -> Option<&mut Session> {
        let key = self.sessions.key_of(id)?;
        self.sessions.get_mut(key)
    }

    /// Hand `input` to a session's `Rtc` and drain its output. Returns
    /// false if str0m rejected the input. Keying material the session's
    /// DTLS endpoint exported during the call is adopted.
    fn input(&mut self, key: u32, now: Instant, input: Input) -> bool {
        let Some(s) = self.sessions.get_mut(key) else {
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

    /// Sender reports due on a session's SRTP sender.
    fn sender_reports(&mut self, key: u32, now: Instant) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if let (Some(d), Some(dest)) = (s.sender.as_mut(), s.peer) {
            d.sender_reports(now, dest, &mut self.transmits, &mut self.counters);
        }
    }

    /// A batch of packets from a publisher on another shard.
    pub fn handle_fanout(&mut self, batch: Vec<FwdPacket>) {
        self.counters.fanout_packets_in += batch.len() as u64;
        self.egress.take_fanout(batch);
    }

    /// Run what is due at `now`: expired timers, then this turn's forwarding,
    /// visiting each local viewer once with all packets due to it.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.counters.loop_turns += 1;
        self.handshakes.next_turn();
        self.run_deferred_handshakes(now);
        self.egress.delays.clear();
        self.expired.clear();
        self.wheel.expire(now, &mut self.expired);
        let mut expired = std::mem::take(&mut self.expired);
        for e in expired.drain(..) {
            let live = self
                .sessions
                .get(e.key)
                .is_some_and(|s| s.timer_gen == e.generation);
            if !live {
                continue;
            }
            if self.check_liveness(e.key, now) {
                self.counters.timer_drives += 1;
                self.input(e.key, now, Input::Timeout(now));
                self.sender_reports(e.key, now);
            }
        }
        self.expired = expired;
        self.relay_timeout(now);
        ingest::release_held(
            &mut self.sessions,
            &mut self.holding,
            now,
            &self.cfg,
            &mut self.egress,
            &mut self.counters,
        );
        self.flush_pending(now);
        self.egress
            .flush_out_batches(&mut self.cross, &mut self.counters);
        if now.saturating_duration_since(self.last_level_report) >= report::LEVEL_INTERVAL {
            self.last_level_report = now;
            report::report_levels(&mut self.sessions, now, &mut self.events);
        }
        self.refresh_layers(now);
        if now.saturating_duration_since(self.last_stats_publish) >= report::STATS_PUBLISH_INTERVAL
        {
            self.last_stats_publish = now;
            let tcp = &self.tcp;
            report::publish_stats(&mut self.sessions, &self.session_stats, |f| tcp.real_of(f));
        }
    }

    /// Re-pick layers of viewers that no packet visited lately (their layer
    /// may be one nobody forwards any more), so their demand stays current.
    fn refresh_layers(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_layer_refresh) < LAYER_EVAL_INTERVAL {
            return;
        }
        self.last_layer_refresh = now;
        let mut requests = Vec::new();
        for s in self.sessions.iter_mut() {
            if s.role != Role::Viewer || !s.connected || now < s.next_layer_eval {
                continue;
            }
            s.next_layer_eval = now + LAYER_EVAL_INTERVAL;
            evaluate_layers(s, now, &mut requests);
            s.sync_demand();
        }
        self.request_layers(now, requests);
    }

    /// Ask for keyframes of the layers viewers switch to.
    fn request_layers(&mut self, now: Instant, requests: Vec<LayerRequest>) {
        for r in requests {
            self.counters.layer_switch_requests += 1;
            self.request_keyframe(now, &r.stream, Some(r.rid));
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

    /// The next message for another shard, if any.
    pub fn poll_cross(&mut self) -> Option<CrossShard> {
        self.cross.pop()
    }

    /// The next event for the control plane, if any.
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
        let hold = ingest::hold_deadline(&self.sessions, &self.holding, &self.cfg);
        [wheel, hold, self.relays.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether packets wait for viewers the last turn did not reach.
    pub fn forward_backlog(&self) -> bool {
        self.egress.backlog()
    }

    /// Whether DTLS handshake datagrams wait for a turn's budget.
    pub fn handshake_backlog(&self) -> bool {
        self.handshakes.backlog()
    }

    /// The packets this turn forwarded: when each reached the publisher's
    /// shard and to how many viewers it was written. The runtime measures
    /// their time in sluice when the turn's sends are done.
    pub fn forward_delays(&self) -> &[ForwardDelay] {
        &self.egress.delays
    }

    // -------------------------------------------------------------- sessions

    fn add_session(&mut self, now: Instant, new: NewSession) {
        if self.sessions.contains(new.id) {
            return;
        }
        let key = self.sessions.reserve();
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
        self.sessions.insert(
            key,
            Session {
                id: new.id,
                role: new.role,
                stream: new.stream,
                initial_max_layer: new.max_layer,
                initial_max_temporal: new.max_temporal,
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
                publisher_tag: (new.id.0 as u32) | 1,
                pub_tracks: Vec::new(),
                viewer_tracks: Vec::new(),
                stats: SessionStats::default(),
                peer: None,
                sender: None,
                congested: false,
                video_gated: false,
                addr_changes: 0,
            },
        );
        self.counters.sessions_added += 1;
        self.input(key, now, Input::Timeout(now));
    }

    fn unsubscribe_stream(&mut self, key: u32, stream: &StreamShared) {
        stream.remove_viewer(self.cfg.id);
        // A run of the stream may still name the key.
        self.egress.left.push(stream.id);
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
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let rebound = s.rebind(mid, kind, source.as_ref());
        for stream in rebound.dropped {
            self.unsubscribe_stream(key, &stream);
        }
        if let Some(stream) = rebound.added {
            stream.add_viewer(self.cfg.id);
            self.viewers.entry(stream.id).or_default().push(key);
        }
        if let Some((stream, _)) = source {
            // The new consumer needs a keyframe to start decoding.
            self.request_keyframe(now, &stream, None);
        }
    }

    /// Returns false (and removes the session) when it has gone silent.
    fn check_liveness(&mut self, key: u32, now: Instant) -> bool {
        let Some(s) = self.sessions.get(key) else {
            return false;
        };
        match s.expiry(now, &self.cfg) {
            Some(reason) => {
                self.counters.sessions_timed_out += 1;
                self.close_session(key, reason);
                false
            }
            None => true,
        }
    }

    fn close_session(&mut self, key: u32, reason: CloseReason) {
        let Some(mut s) = self.sessions.remove(key) else {
            return;
        };
        if reason == CloseReason::Removed {
            // Tell the peer (DTLS close_notify, RTCP BYE) on a best-effort basis.
            if s.rtc.close().is_ok() {
                let mut guard = 0;
                while let Ok(out) = s.rtc.poll_output() {
                    guard += 1;
                    match out {
                        Output::Transmit(t) => {
                            if let Some(destination) = self.tcp.destination(&t) {
                                self.transmits.push(Datagram {
                                    destination,
                                    contents: t.contents.into(),
                                });
                            }
                        }
                        Output::Timeout(_) => break,
                        Output::Event(_) => {}
                    }
                    if guard > 64 {
                        break;
                    }
                }
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
                stream.clear_source(s.publisher_tag);
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
            let Some(s) = self.sessions.get_mut(key) else {
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
                    let Some(destination) = self.tcp.destination(&t) else {
                        self.counters.tcp_drop_no_conn += 1;
                        continue;
                    };
                    if !stun::is_stun(&t.contents) && s.peer != Some(destination) {
                        if s.connected && s.peer.is_some() {
                            s.addr_changes += 1;
                            self.counters.session_addr_changes += 1;
                        }
                        s.peer = Some(destination);
                    }
                    if s.sender.is_some() && is_rtcp(&t.contents) {
                        // Reports of streams str0m never sent on (see `srtp_sender`).
                        self.counters.rtcp_replaced += 1;
                        continue;
                    }
                    self.transmits.push(Datagram {
                        destination,
                        contents: t.contents.into(),
                    });
                }
                Output::Timeout(at) => {
                    if !s.rtc.is_alive() {
                        self.close_session(key, CloseReason::Closed);
                        return;
                    }
                    let at = at.min(s.timer_limit(&self.cfg)).max(now);
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

    // ------------------------------------------------------------ forwarding

    /// Write pending packets to local viewers, viewer-major: one visit and
    /// one drive (so one contiguous run of datagrams) per viewer, with every
    /// packet of the run (see [`egress::Run`]). A turn stops visiting once
    /// it has [`TURN_SEND_BUDGET`] datagrams to send, and the next turn goes
    /// on where it stopped: so the runtime sends, reads its socket and runs
    /// timers at least that often, a copy waits for the send of its own part
    /// of a large fan-out, not for all of it, and what arrived meanwhile
    /// joins the run.
    fn flush_pending(&mut self, now: Instant) {
        self.counters.drop_local_backlog += std::mem::take(&mut self.egress.shed);
        if !self.egress.backlog() {
            self.egress.left.clear();
            return;
        }
        let budget = self.transmits.len() + TURN_SEND_BUDGET;
        let mut run = std::mem::take(&mut self.egress.run);
        // Viewers that left since: between turns, or in the last turn's
        // visits (str0m refusing input ends a session).
        self.egress.note_left(&mut run);
        let mut pending = std::mem::take(&mut self.egress.pending);
        loop {
            if run.packets.is_empty() {
                let Some(first) = pending.first() else {
                    break;
                };
                let stream = first.stream;
                run.start(stream, self.viewers.get(&stream).map_or(&[], Vec::as_slice));
            }
            // Arrival order across streams holds: only packets at the front
            // of `pending` join.
            let joining = pending.iter().take_while(|p| run.admits(p)).count();
            if joining > 0 {
                // Downstream nodes first: their viewers wait one more hop.
                self.relays
                    .forward(&pending[..joining], &mut self.transmits, &mut self.counters);
                for p in pending.drain(..joining) {
                    run.push(p);
                }
            }
            if self.forward_run(now, &mut run, budget) {
                break;
            }
        }
        run.record_turn(&mut self.egress.delays);
        self.egress.run = run;
        // Whatever was queued meanwhile goes after what is left.
        pending.append(&mut self.egress.pending);
        self.egress.pending = pending;
    }

    /// Take the run round its viewers until every packet in it has been
    /// round or `transmits` holds `budget` datagrams (then true: the run
    /// goes on next turn from the viewer it stopped before).
    fn forward_run(&mut self, now: Instant, run: &mut egress::Run, budget: usize) -> bool {
        while let Some(stop) = run.retire(&mut self.egress.delays) {
            // Until `stop` the run's packets stay as they are.
            let mut left = stop - run.step();
            while left > 0 {
                if self.transmits.len() >= budget {
                    return true;
                }
                left -= 1;
                let key = run.advance();
                self.visit(now, key, run);
            }
        }
        false
    }

    /// Write every packet of the run to the viewer at `key`.
    #[inline]
    fn visit(&mut self, now: Instant, key: u32, run: &mut egress::Run) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if !s.connected || (run.stale && !s.subscriptions.iter().any(|x| Some(x.id) == run.stream))
        {
            return;
        }
        let mut switch_requests = Vec::new();
        if now >= s.next_layer_eval {
            s.next_layer_eval = now + LAYER_EVAL_INTERVAL;
            evaluate_layers(s, now, &mut switch_requests);
        }
        let mut wrote = false;
        let first = self.transmits.len();
        let (older, newer) = run.packets.as_mut_slices();
        for p in older.iter_mut().chain(newer) {
            if s.video_gated
                && !tcp::admits(s.congested, &mut s.video_gated, p.fwd.kind, p.fwd.keyframe)
            {
                self.counters.drop_tcp_video_congested += 1;
                continue;
            }
            match write_to_viewer(s, &p.fwd, now, &mut self.transmits) {
                WriteResult::Written => {
                    wrote = true;
                    p.copies += 1;
                    self.counters.rtp_forwarded += 1;
                }
                WriteResult::NoCodec => self.counters.drop_no_codec += 1,
                WriteResult::LeftOut => self.counters.temporal_left_out += 1,
                WriteResult::Skipped => {}
            }
        }
        s.sync_demand();
        if wrote {
            self.counters.viewer_visits += 1;
            if s.sender.is_some() {
                self.sender_reports(key, now);
            } else {
                self.input(key, now, Input::Timeout(now));
            }
            group_by_ssrc(&mut self.transmits[first..]);
        }
        self.request_layers(now, switch_requests);
    }

    // ------------------------------------------------------------- keyframes

    /// Ask the stream's publisher for a keyframe, wherever it lives.
    fn request_keyframe(&mut self, now: Instant, stream: &StreamShared, rid: Option<Rid>) {
        match keyframe::route(stream, self.cfg.id) {
            KeyframeRoute::Local => self.request_keyframe_local(now, stream.id, rid),
            KeyframeRoute::Remote(shard) => {
                self.cross.push(CrossShard::Keyframe(shard, stream.id, rid))
            }
            KeyframeRoute::Nowhere => {}
        }
    }

    /// PLI to the publisher's video tracks (one layer's, or all).
    fn request_keyframe_local(&mut self, now: Instant, stream: StreamId, rid: Option<Rid>) {
        let Some(&key) = self.publishers.get(&stream) else {
            // Fed by a relay link: the request goes upstream, throttled per track.
            self.relays.request_keyframe(
                now,
                stream,
                rid,
                self.cfg.keyframe_throttle,
                &mut self.transmits,
                &mut self.counters,
            );
            return;
        };
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let sent = keyframe::request_from_publisher(s, now, rid, self.cfg.keyframe_throttle);
        self.counters.keyframe_requests += sent;
        if sent > 0 {
            self.drive(key, now);
        }
    }
}
