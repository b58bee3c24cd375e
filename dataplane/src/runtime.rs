//! Shard threads: each pinned to a core, owning a socket and an io backend,
//! running the Sans-IO [`Shard`] core in a loop. Thin glue by design.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TrySendError};
use str0m::net::TcpType;
use str0m::Candidate;

use crate::fanout::{FwdPacket, MAX_SHARDS};
use crate::ids::{Role, ShardId};
use crate::io::tcp::{TcpLimits, TcpMedia, TcpNotice};
use crate::io::xdp::{XdpAttachment, XdpBackend, XdpSettings};
use crate::io::{bind_udp, make_backend, Backend, IoKind, Waker};
use crate::shard::{Command, CrossShard, Shard, ShardConfig, ShardEvent};
use crate::stats::{SessionStatsTable, SharedCounters, TurnHistogram};

/// How the dataplane is laid out.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// Number of shards (threads).
    pub shards: usize,
    /// Address the media sockets bind to.
    pub bind_ip: IpAddr,
    /// Addresses put in ICE candidates, each with the shard's UDP and TCP
    /// ports; the first is the primary one. Empty means `bind_ip`.
    pub announce_ips: Vec<IpAddr>,
    /// Shard i binds `media_port + i`; 0 picks ephemeral ports (tests).
    pub media_port: u16,
    /// ICE-TCP: shard i listens on `tcp_port + i` (0 picks ephemeral
    /// ports); `None` turns TCP candidates off.
    pub tcp_port: Option<u16>,
    /// Limits of each shard's TCP listener.
    pub tcp_limits: TcpLimits,
    /// CPU for each shard, in order; empty = do not pin.
    pub cores: Vec<usize>,
    /// Which io backend the shards use.
    pub io: IoKind,
    /// See [`ShardConfig::idle_timeout`].
    pub idle_timeout: Duration,
    /// See [`ShardConfig::setup_timeout`].
    pub setup_timeout: Duration,
    /// See [`ShardConfig::keyframe_throttle`].
    pub keyframe_throttle: Duration,
    /// See [`ShardConfig::frame_hold`].
    pub frame_hold: Duration,
    /// See [`ShardConfig::direct_send`].
    pub direct_send: bool,
    /// See [`ShardConfig::rtx_budget_percent`].
    pub rtx_budget_percent: u32,
    /// Fan-out batches queued per shard before new ones are dropped.
    pub fanout_queue: usize,
    /// Socket send and receive buffer size, bytes.
    pub socket_buffer: usize,
    /// Interface and queues for `io = xdp`.
    pub xdp: XdpSettings,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            shards: 1,
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            announce_ips: vec![IpAddr::from([127, 0, 0, 1])],
            media_port: 40000,
            tcp_port: None,
            tcp_limits: TcpLimits::default(),
            cores: Vec::new(),
            io: IoKind::Auto,
            idle_timeout: Duration::from_secs(30),
            setup_timeout: Duration::from_secs(30),
            keyframe_throttle: Duration::from_millis(500),
            frame_hold: Duration::ZERO,
            direct_send: true,
            rtx_budget_percent: 25,
            fanout_queue: 4096,
            socket_buffer: 8 << 20,
            xdp: XdpSettings::default(),
        }
    }
}

/// The control plane's view of one shard.
pub struct ShardHandle {
    /// The shard's id.
    pub id: ShardId,
    /// The primary candidate address sessions on this shard are told (UDP).
    pub addr: SocketAddr,
    /// Every UDP candidate address, `addr` first.
    pub addrs: Vec<SocketAddr>,
    /// Its ICE-TCP candidate addresses (passive); empty when TCP is off.
    pub tcp_addrs: Vec<SocketAddr>,
    /// Open ICE-TCP connections, as last published.
    pub tcp_conns: Arc<AtomicUsize>,
    /// Bytes waiting in its ICE-TCP write queues together, as last
    /// published (bounded by `tcp_queue_budget_bytes`).
    pub tcp_queued: Arc<AtomicUsize>,
    /// The core its thread is pinned to, if any.
    pub core: Option<usize>,
    /// The io backend it runs.
    pub io: &'static str,
    /// Its counters, as last published.
    pub counters: Arc<SharedCounters>,
    /// Live sessions, by role.
    pub publishers: Arc<AtomicUsize>,
    /// Viewer sessions on it.
    pub viewers: Arc<AtomicUsize>,
    /// Time taken by busy loop turns.
    pub turns: Arc<TurnHistogram>,
    /// Per forwarded copy: from its packet's arrival at the publisher's shard
    /// to the end of the send that carried it.
    pub forward_delay: Arc<TurnHistogram>,
    /// Stats of this shard's sessions.
    pub session_stats: SessionStatsTable,
    /// Capacity of the fan-out queue into this shard, in batches.
    pub fanout_capacity: usize,
    ctl: Sender<Command>,
    fanout: Sender<Vec<FwdPacket>>,
    waker: Arc<Waker>,
    join: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl ShardHandle {
    /// Hand a command to the shard; false when the shard has stopped.
    pub fn send(&self, cmd: Command) -> bool {
        let ok = self.ctl.send(cmd).is_ok();
        self.waker.wake();
        ok
    }

    /// Fan-out batches from other shards waiting to be forwarded here.
    pub fn fanout_depth(&self) -> usize {
        self.fanout.len()
    }

    /// Commands waiting for this shard.
    pub fn command_depth(&self) -> usize {
        self.ctl.len()
    }

    /// Sessions on this shard.
    pub fn sessions(&self) -> usize {
        self.publishers.load(Ordering::Relaxed) + self.viewers.load(Ordering::Relaxed)
    }

    /// The ICE candidates a session on this shard is told: a UDP host
    /// candidate per address, then a passive TCP one per address, which
    /// str0m gives a lower priority (RFC 8445 §5.1.2.2 with libwebrtc's
    /// type preferences), so a browser uses TCP only when UDP fails.
    pub fn candidates(&self) -> Vec<Candidate> {
        let udp = self
            .addrs
            .iter()
            .filter_map(|a| Candidate::host(*a, "udp").ok());
        let tcp = self.tcp_addrs.iter().filter_map(|a| {
            Candidate::builder()
                .tcp()
                .host(*a)
                .tcptype(TcpType::Passive)
                .build()
                .ok()
        });
        udp.chain(tcp).collect()
    }
}

/// All shards of the process.
pub struct Dataplane {
    /// One handle per shard, indexed by [`ShardId`].
    pub shards: Vec<ShardHandle>,
    stop: Arc<AtomicBool>,
    /// With `io = xdp`, the program steering the shards' ports to their
    /// sockets; dropping it detaches it from the interface.
    xdp: Option<XdpAttachment>,
}

struct Peer {
    ctl: Sender<Command>,
    fanout: Sender<Vec<FwdPacket>>,
    waker: Arc<Waker>,
}

impl Dataplane {
    /// Bind sockets and start one pinned thread per shard. Shard events go to `events`.
    pub fn start(
        cfg: &DataplaneConfig,
        events: Sender<(ShardId, ShardEvent)>,
    ) -> io::Result<Dataplane> {
        let n = cfg.shards.clamp(1, MAX_SHARDS);
        let stop = Arc::new(AtomicBool::new(false));
        let mut sockets = Vec::new();
        for i in 0..n {
            let port = if cfg.media_port == 0 {
                0
            } else {
                cfg.media_port.checked_add(i as u16).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "media port range overflows")
                })?
            };
            let sock =
                bind_udp(SocketAddr::new(cfg.bind_ip, port), cfg.socket_buffer).map_err(|e| {
                    io::Error::new(e.kind(), format!("binding UDP {}:{port}: {e}", cfg.bind_ip))
                })?;
            let tcp = match cfg.tcp_port {
                None => None,
                Some(base) => {
                    let port = if base == 0 {
                        0
                    } else {
                        base.checked_add(i as u16).ok_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::InvalidInput,
                                "media TCP port range overflows",
                            )
                        })?
                    };
                    let at = SocketAddr::new(cfg.bind_ip, port);
                    let t = TcpMedia::bind(at, i as u16, cfg.tcp_limits.clone())
                        .map_err(|e| io::Error::new(e.kind(), format!("binding TCP {at}: {e}")))?;
                    Some(t)
                }
            };
            sockets.push((sock, tcp));
        }
        let xdp = match cfg.io {
            IoKind::Xdp if cfg.media_port == 0 => return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "io = xdp needs a fixed media_port: its program steers media_port + i to shard i",
            )),
            IoKind::Xdp => Some(XdpAttachment::attach(
                &cfg.xdp,
                cfg.media_port,
                cfg.media_port + (n as u16 - 1),
            )?),
            _ => None,
        };
        // Every backend before any thread starts, so a refusal stops nothing half-started.
        let mut opened = Vec::new();
        for (i, (sock, tcp)) in sockets.into_iter().enumerate() {
            let port = sock.local_addr()?.port();
            let backend: Box<dyn Backend> = match &xdp {
                Some(att) => Box::new(XdpBackend::open(&cfg.xdp, att, i as u32, sock)?),
                None => make_backend(cfg.io, sock),
            };
            opened.push((backend, port, tcp));
        }
        let mut receivers = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..n {
            let (ctl_tx, ctl_rx) = unbounded();
            let (fan_tx, fan_rx) = bounded(cfg.fanout_queue.max(1));
            let waker = Arc::new(Waker::new()?);
            peers.push(Peer {
                ctl: ctl_tx,
                fanout: fan_tx,
                waker,
            });
            receivers.push((ctl_rx, fan_rx));
        }
        let peers: Arc<Vec<Peer>> = Arc::new(peers);
        let mut shards = Vec::new();
        let ips = if cfg.announce_ips.is_empty() {
            vec![cfg.bind_ip]
        } else {
            cfg.announce_ips.clone()
        };
        for (i, ((backend, port, tcp), (ctl_rx, fan_rx))) in
            opened.into_iter().zip(receivers).enumerate()
        {
            let id = ShardId(i as u16);
            let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
            let addr = addrs[0];
            let tcp_addrs: Vec<SocketAddr> = match &tcp {
                Some(t) => {
                    let port = t.local_addr()?.port();
                    ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
                }
                None => Vec::new(),
            };
            let mut scfg = ShardConfig::new(id, n, addr);
            scfg.local_addrs = addrs.clone();
            scfg.tcp_addrs = tcp_addrs.clone();
            scfg.idle_timeout = cfg.idle_timeout;
            scfg.setup_timeout = cfg.setup_timeout;
            scfg.keyframe_throttle = cfg.keyframe_throttle;
            scfg.frame_hold = cfg.frame_hold;
            scfg.direct_send = cfg.direct_send;
            scfg.rtx_budget_percent = cfg.rtx_budget_percent;
            let io_name = backend.name();
            let counters = Arc::new(SharedCounters::default());
            let publishers = Arc::new(AtomicUsize::new(0));
            let viewers = Arc::new(AtomicUsize::new(0));
            let turns = Arc::new(TurnHistogram::default());
            let forward_delay = Arc::new(TurnHistogram::default());
            let tcp_conns = Arc::new(AtomicUsize::new(0));
            let tcp_queued = Arc::new(AtomicUsize::new(0));
            let core = cfg.cores.get(i).copied();
            let shard_core = Shard::new(scfg, Instant::now());
            let session_stats = shard_core.session_stats();
            let ctx = ShardThread {
                core: shard_core,
                backend,
                tcp,
                tcp_conns: tcp_conns.clone(),
                tcp_queued: tcp_queued.clone(),
                ctl: ctl_rx,
                fanout: fan_rx,
                peers: peers.clone(),
                events: events.clone(),
                counters: counters.clone(),
                publishers: publishers.clone(),
                viewers: viewers.clone(),
                turns: turns.clone(),
                forward_delay: forward_delay.clone(),
                fanout_capacity: cfg.fanout_queue.max(1),
                stop: stop.clone(),
            };
            let join = std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || {
                    if let Some(c) = core {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
                            tracing::warn!(shard = i, core = c, "could not pin shard to core");
                        }
                    }
                    ctx.run()
                })?;
            shards.push(ShardHandle {
                id,
                addr,
                addrs,
                tcp_addrs,
                tcp_conns,
                tcp_queued,
                core,
                io: io_name,
                counters,
                publishers,
                viewers,
                turns,
                forward_delay,
                session_stats,
                fanout_capacity: cfg.fanout_queue.max(1),
                ctl: peers[i].ctl.clone(),
                fanout: peers[i].fanout.clone(),
                waker: peers[i].waker.clone(),
                join: std::sync::Mutex::new(Some(join)),
            });
        }
        Ok(Dataplane { shards, stop, xdp })
    }

    /// With `io = xdp`, how the program is attached (`drv` or `skb`).
    pub fn xdp_mode(&self) -> Option<&'static str> {
        self.xdp.as_ref().map(|x| x.mode.as_str())
    }

    /// The handle of shard `id`.
    pub fn shard(&self, id: ShardId) -> Option<&ShardHandle> {
        self.shards.get(id.0 as usize)
    }

    /// Stop every shard thread and wait for them.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in &self.shards {
            s.waker.signal();
        }
        for s in &self.shards {
            let j = s.join.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(j) = j {
                let _ = j.join();
            }
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct ShardThread {
    core: Shard,
    backend: Box<dyn Backend>,
    tcp: Option<TcpMedia>,
    tcp_conns: Arc<AtomicUsize>,
    tcp_queued: Arc<AtomicUsize>,
    ctl: Receiver<Command>,
    fanout: Receiver<Vec<FwdPacket>>,
    peers: Arc<Vec<Peer>>,
    events: Sender<(ShardId, ShardEvent)>,
    counters: Arc<SharedCounters>,
    publishers: Arc<AtomicUsize>,
    viewers: Arc<AtomicUsize>,
    turns: Arc<TurnHistogram>,
    forward_delay: Arc<TurnHistogram>,
    fanout_capacity: usize,
    stop: Arc<AtomicBool>,
}

/// Tell the core what the TCP layer saw: closed and congested connections.
fn apply_notices(tcp: &mut TcpMedia, core: &mut Shard, now: Instant) {
    while let Some(n) = tcp.poll_notice() {
        match n {
            TcpNotice::Closed(flow) => core.tcp_closed(flow),
            TcpNotice::Congested(flow, on) => core.tcp_congested(now, flow, on),
        }
    }
}

/// When a shard's fan-out queue is three quarters full, it is not keeping
/// up: batches to it carry audio only, so calls stay audible while video
/// degrades. Returns the number of video packets removed.
fn shed_video(batch: &mut Vec<FwdPacket>, depth: usize, capacity: usize) -> usize {
    if depth * 4 < capacity * 3 {
        return 0;
    }
    let before = batch.len();
    batch.retain(|p| p.kind == str0m::media::MediaKind::Audio);
    before - batch.len()
}

const MAX_PARK: Duration = Duration::from_millis(100);

impl ShardThread {
    fn run(mut self) {
        let id = self.core.id();
        let my_waker = self.peers[id.0 as usize].waker.clone();
        let mut last_sessions = usize::MAX;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut work = 0usize;

            // Commands first: a new session's command is queued before its
            // peer learns the answer, so its first STUN request may already
            // be in the socket and must find the session (else it is dropped
            // and the peer retries ~250 ms later).
            while let Ok(cmd) = self.ctl.try_recv() {
                work += 1;
                self.core.handle_command(now, cmd);
            }
            let core = &mut self.core;
            match self
                .backend
                .recv(&mut |src, data| core.handle_datagram(now, src, data))
            {
                Ok(n) => work += n,
                Err(e) => tracing::warn!(shard = %id, "recv: {e}"),
            }
            if let Some(tcp) = self.tcp.as_mut() {
                work += tcp.poll(now, &mut |flow, real, data| {
                    core.handle_tcp_frame(now, flow, real, data)
                });
                apply_notices(tcp, core, now);
            }
            while let Ok(batch) = self.fanout.try_recv() {
                work += 1;
                self.core.handle_fanout(batch);
            }
            self.core.handle_timeout(now);
            if self.core.forward_backlog() || self.core.handshake_backlog() {
                // Viewers still to visit, or handshakes past the turn's
                // budget: go on after this turn's sends.
                work += 1;
            }

            let (transmits, counters) = self.core.io_parts();
            if let Some(tcp) = self.tcp.as_mut() {
                tcp.take_sends(transmits, now);
                tcp.take_counts(counters);
            }
            self.backend.send(transmits, counters);
            if let Some(tcp) = self.tcp.as_mut() {
                apply_notices(tcp, &mut self.core, now);
                self.tcp_conns.store(tcp.len(), Ordering::Relaxed);
                self.tcp_queued.store(tcp.queued(), Ordering::Relaxed);
                if tcp.pending() {
                    work += 1;
                }
            }
            if !self.core.forward_delays().is_empty() {
                let sent = Instant::now();
                for f in self.core.forward_delays() {
                    let d = sent.saturating_duration_since(f.received);
                    self.forward_delay
                        .record_n(d.as_nanos() as u64, u64::from(f.copies));
                }
            }
            self.send_cross();
            while let Some(ev) = self.core.poll_event() {
                let _ = self.events.send((id, ev));
            }
            if self.core.session_count() != last_sessions {
                last_sessions = self.core.session_count();
                self.publishers.store(
                    self.core.session_count_by_role(Role::Publisher),
                    Ordering::Relaxed,
                );
                self.viewers.store(
                    self.core.session_count_by_role(Role::Viewer),
                    Ordering::Relaxed,
                );
            }
            self.counters.publish(self.core.counters());

            if work > 0 {
                self.turns.record(now.elapsed().as_nanos() as u64);
                continue;
            }
            my_waker.prepare_park();
            if !self.ctl.is_empty()
                || !self.fanout.is_empty()
                || self.backend.holds_input()
                || self.stop.load(Ordering::SeqCst)
            {
                my_waker.unpark();
                continue;
            }
            let timeout = self
                .core
                .poll_timeout()
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(MAX_PARK)
                .min(MAX_PARK);
            let fds = [
                Some(self.backend.fd()),
                self.backend.extra_fd(),
                self.tcp.as_ref().map(TcpMedia::fd),
            ];
            let mut wait = [0; 3];
            let mut n = 0;
            for fd in fds.into_iter().flatten() {
                wait[n] = fd;
                n += 1;
            }
            my_waker.park(&wait[..n], timeout);
        }
        // Close sessions so peers see a clean end.
        tracing::debug!(shard = %id, "stopping");
    }

    fn send_cross(&mut self) {
        while let Some(msg) = self.core.poll_cross() {
            match msg {
                CrossShard::Fanout(to, mut batch) => {
                    let peer = &self.peers[to.0 as usize];
                    let shed = shed_video(&mut batch, peer.fanout.len(), self.fanout_capacity);
                    self.core.counters_mut().drop_fanout_video_shed += shed as u64;
                    if batch.is_empty() {
                        continue;
                    }
                    match peer.fanout.try_send(batch) {
                        Ok(()) => peer.waker.wake(),
                        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                            self.core.counters_mut().drop_fanout_full += 1;
                        }
                    }
                }
                CrossShard::Keyframe(to, stream, rid) => {
                    let peer = &self.peers[to.0 as usize];
                    if peer.ctl.send(Command::RequestKeyframe(stream, rid)).is_ok() {
                        peer.waker.wake();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::StreamId;
    use str0m::media::MediaKind;

    fn pkt(kind: MediaKind) -> FwdPacket {
        FwdPacket::for_test(StreamId(1), kind, 1)
    }

    #[test]
    fn a_congested_fanout_queue_gets_audio_only() {
        let batch = || {
            vec![
                pkt(MediaKind::Video),
                pkt(MediaKind::Audio),
                pkt(MediaKind::Video),
                pkt(MediaKind::Audio),
            ]
        };
        let mut b = batch();
        assert_eq!(shed_video(&mut b, 10, 100), 0);
        assert_eq!(b.len(), 4);
        let mut b = batch();
        assert_eq!(shed_video(&mut b, 75, 100), 2);
        assert!(b.iter().all(|p| p.kind == MediaKind::Audio));
        assert_eq!(b.len(), 2);
    }
}
