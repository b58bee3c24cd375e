//! An in-memory harness around one [`Shard`]: str0m peers (publishers and
//! viewers) connected to it with a fake clock and no sockets. Used by tests,
//! simulations and benchmarks of the forward path.

/// For test peers that seal and open SRTP themselves: the keying material a
/// DTLS endpoint of this thread exported last (see the `dtls` module).
pub use crate::dtls::take_exported;
pub use crate::srtp::{Exported, SrtpSession};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo, VideoOrientation};
use str0m::{Candidate, Event, IceCreds, Input, Output, Rtc, RtcConfig};

use crate::fanout::StreamShared;
use crate::ids::{Role, SessionId, ShardId, StreamId};
use crate::shard::{Command, NewSession, Shard, ShardConfig};

/// The ICE password of every session the harness places on its shard.
const SERVER_ICE_PASS: &str = "simulationpassword0123456";

/// Rids of a simulcast publisher's layers, lowest first.
pub const LAYERS: [&str; 3] = ["l", "m", "h"];

/// A client-side peer.
pub struct Peer {
    /// The peer's str0m session.
    pub rtc: Rtc,
    /// Its address.
    pub addr: SocketAddr,
    /// The address the shard sees its datagrams come from and sends to, when
    /// a NAT in between maps `addr` to another (a rebinding, a network
    /// change); `None` = `addr`.
    pub nat: Option<SocketAddr>,
    /// Publisher or viewer.
    pub role: Role,
    /// Its session id on the shard.
    pub id: SessionId,
    /// The ICE credentials its session on the shard answered with.
    pub server_ice: IceCreds,
    /// ICE and DTLS are up.
    pub connected: bool,
    /// Its audio media section.
    pub audio: Option<Mid>,
    /// Its video media section.
    pub video: Option<Mid>,
    /// RTP packets received (viewers): (ssrc, seq, payload length).
    pub received: Vec<(u32, u16, usize)>,
    /// Keyframe requests received (publishers).
    pub keyframe_requests: u64,
    /// Count received packets without keeping them.
    pub count_only: bool,
    /// Fraction of datagrams from the shard to this peer that are lost.
    pub loss: f64,
    /// The next datagram from the shard to this peer that this matches is
    /// lost, once.
    pub drop_next: Option<fn(&[u8]) -> bool>,
    /// A bottleneck on the way from the shard to this peer, if any.
    pub link: Option<Link>,
    /// Datagrams lost on the way to this peer.
    pub lost: u64,
    /// RTP packets it received.
    pub received_count: u64,
    /// When `Some`, every RTP payload it receives, in order.
    pub payloads: Option<Vec<Vec<u8>>>,
    seq: u64,
    layer_seq: [u64; 3],
    layer_frames: [u32; 3],
    /// Layer byte (`payload[9]`) of each received video packet, for simulcast checks.
    pub layers_seen: Vec<u8>,
    /// Video orientation a publisher stamps on the last packet of each frame.
    pub send_orientation: Option<VideoOrientation>,
    /// Video orientations received (viewers): (seq, orientation).
    pub orientations: Vec<(u16, VideoOrientation)>,
    /// Per received mid, the packet count the sender's last RTCP sender
    /// report gave (viewers).
    pub reported_sent: Vec<(Mid, u64)>,
    inbox: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
}

impl Peer {
    /// The address the shard knows this peer by.
    pub fn seen_at(&self) -> SocketAddr {
        self.nat.unwrap_or(self.addr)
    }
}

/// A rate-limited link with a drop-tail queue, from the shard to one peer.
#[derive(Debug, Clone)]
pub struct Link {
    /// Bits per second the link carries.
    pub rate_bps: u64,
    /// Datagrams that would wait longer than this in the queue are dropped.
    pub max_queue_delay: Duration,
    /// Datagrams dropped because the queue was full.
    pub queue_drops: u64,
    busy_until: Option<Instant>,
    queue: VecDeque<(Instant, Vec<u8>)>,
}

impl Link {
    /// A link of `rate_bps` that drops what would wait longer than `max_queue_delay`.
    pub fn new(rate_bps: u64, max_queue_delay: Duration) -> Self {
        Link {
            rate_bps: rate_bps.max(1),
            max_queue_delay,
            queue_drops: 0,
            busy_until: None,
            queue: VecDeque::new(),
        }
    }

    /// Queue a datagram sent at `now`; false when the queue is full.
    fn offer(&mut self, now: Instant, d: Vec<u8>) -> bool {
        let start = self.busy_until.map_or(now, |b| b.max(now));
        if start.saturating_duration_since(now) > self.max_queue_delay {
            self.queue_drops += 1;
            return false;
        }
        // Wire size: UDP/IP headers on top of the datagram.
        let bits = (d.len() as u64 + 28) * 8;
        let done = start + Duration::from_nanos(bits * 1_000_000_000 / self.rate_bps);
        self.busy_until = Some(done);
        self.queue.push_back((done, d));
        true
    }
}

/// One shard and its peers on a fake clock.
pub struct Harness {
    /// The fake clock.
    pub now: Instant,
    /// Clock step of [`Harness::advance`].
    pub step: Duration,
    /// Initial TWCC estimate toward viewers; `None` = no estimation (the default).
    pub viewer_bwe: Option<u64>,
    /// [`Harness::publisher_datagrams`] writes VP8 descriptors of an L1T3
    /// stream (temporal layers 0, 2, 1, 2 by frame) instead of bare bytes.
    pub l1t3: bool,
    /// The shard under test.
    pub shard: Shard,
    /// The peers, in the order they were added.
    pub peers: Vec<Peer>,
    /// The stream every peer publishes or watches.
    pub stream: Arc<StreamShared>,
    /// Datagrams from the shard that were addressed to no peer.
    pub undeliverable: u64,
    /// Seeded state of the loss generator.
    pub rng: u64,
    cert: DtlsCert,
    server_addr: SocketAddr,
    next_id: u64,
}

fn shared_cert() -> DtlsCert {
    let provider = crate::dtls::crypto_provider();
    let cert = provider
        .dtls_provider
        .generate_certificate()
        .expect("DTLS certificate");
    provider.install_process_default();
    cert
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A harness with the default shard settings.
    pub fn new() -> Self {
        Self::with_config(|_| {})
    }

    /// A harness whose shard runs with `f` applied to its default config.
    pub fn with_config(f: impl FnOnce(&mut ShardConfig)) -> Self {
        let now = Instant::now();
        let server_addr: SocketAddr = "10.0.0.1:40000".parse().expect("addr");
        let mut cfg = ShardConfig::new(ShardId(0), 1, server_addr);
        f(&mut cfg);
        Harness {
            now,
            step: Duration::from_millis(5),
            viewer_bwe: None,
            l1t3: false,
            shard: Shard::new(cfg, now),
            peers: Vec::new(),
            stream: Arc::new(StreamShared::new(StreamId(1), "sim")),
            undeliverable: 0,
            rng: 0x5eed_1234_abcd_0001,
            cert: shared_cert(),
            server_addr,
            next_id: 1,
        }
    }

    fn server_rtc(&self, ufrag: &str, offer: SdpOffer, role: Role) -> (Rtc, SdpAnswer) {
        let mut cfg = RtcConfig::new();
        match (role, self.viewer_bwe) {
            (Role::Viewer, Some(bps)) => {
                cfg = cfg.enable_bwe(Some(str0m::bwe::Bitrate::from(bps)));
            }
            // As the control plane answers viewers that estimate nothing.
            (Role::Viewer, None) => cfg = cfg.set_extension_map(crate::extensions::forwarding()),
            _ => {}
        }
        let mut rtc = cfg
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_dtls_cert(self.cert.clone())
            .set_stats_interval(Some(std::time::Duration::from_secs(1)))
            .set_local_ice_credentials(IceCreds {
                ufrag: ufrag.into(),
                pass: SERVER_ICE_PASS.into(),
            })
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(self.now);
        rtc.add_local_candidate(Candidate::host(self.server_addr, "udp").expect("candidate"));
        let answer = rtc.sdp_api().accept_offer(offer).expect("answer");
        (rtc, answer)
    }

    /// A publisher whose video is simulcast in three layers, rids `l`, `m`, `h`.
    pub fn add_simulcast_publisher(&mut self) -> usize {
        self.add_peer_with(Role::Publisher, true)
    }

    fn add_peer(&mut self, role: Role) -> usize {
        self.add_peer_with(role, false)
    }

    fn add_peer_with(&mut self, role: Role, simulcast: bool) -> usize {
        let idx = self.peers.len();
        let addr: SocketAddr = format!("10.0.1.{}:{}", 1 + idx / 60000, 1000 + idx % 60000)
            .parse()
            .expect("addr");
        let mut rtc = RtcConfig::new()
            .set_rtp_mode(true)
            .set_stats_interval(Some(std::time::Duration::from_secs(1)))
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let dir = if role == Role::Publisher {
            Direction::SendOnly
        } else {
            Direction::RecvOnly
        };
        let mut api = rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, dir, None, None, None);
        let sim = simulcast.then(|| {
            let mut sc = str0m::media::Simulcast::new();
            for rid in LAYERS {
                sc.send.push(str0m::media::SimulcastLayer::new(rid));
            }
            sc
        });
        let video = api.add_media(MediaKind::Video, dir, None, None, sim);
        let (offer, pending) = api.apply().expect("offer");
        let ufrag = format!("u{:07}", self.next_id);
        let server_ice = IceCreds {
            ufrag: ufrag.clone(),
            pass: SERVER_ICE_PASS.into(),
        };
        let (server, answer) = self.server_rtc(&ufrag, offer, role);
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("accept answer");
        let id = SessionId(self.next_id);
        self.next_id += 1;
        self.shard.handle_command(
            self.now,
            Command::AddSession(Box::new(NewSession {
                id,
                role,
                stream: Some(self.stream.clone()),
                ice_ufrag: ufrag,
                rtc: server,
                pending: None,
                max_layer: None,
                max_temporal: None,
            })),
        );
        self.peers.push(Peer {
            rtc,
            addr,
            nat: None,
            role,
            id,
            server_ice,
            connected: false,
            audio: Some(audio),
            video: Some(video),
            received: Vec::new(),
            keyframe_requests: 0,
            count_only: false,
            loss: 0.0,
            drop_next: None,
            link: None,
            lost: 0,
            received_count: 0,
            payloads: None,
            seq: 1,
            layer_seq: [100, 20_000, 40_000],
            layer_frames: [0; 3],
            layers_seen: Vec::new(),
            send_orientation: None,
            orientations: Vec::new(),
            reported_sent: Vec::new(),
            inbox: VecDeque::new(),
            outbox: Vec::new(),
        });
        idx
    }

    /// Add a publisher (audio and video); returns its index.
    pub fn add_publisher(&mut self) -> usize {
        self.add_peer(Role::Publisher)
    }

    /// Add a viewer; returns its index.
    pub fn add_viewer(&mut self) -> usize {
        self.add_peer(Role::Viewer)
    }

    /// Drain every peer's output into the shard, and the shard's into the peers.
    pub fn exchange(&mut self) {
        for _ in 0..64 {
            let mut moved = 0;
            for i in 0..self.peers.len() {
                let mut out = std::mem::take(&mut self.peers[i].outbox);
                out.extend(drain_peer(&mut self.peers[i]));
                for d in out {
                    moved += 1;
                    let addr = self.peers[i].seen_at();
                    shard_datagram(&mut self.shard, self.now, addr, &d);
                }
            }
            shard_timeout(&mut self.shard, self.now);
            moved += self.deliver_shard_output();
            if moved == 0 {
                break;
            }
        }
    }

    /// Route the shard's pending datagrams to peers' inboxes and feed them.
    pub fn deliver_shard_output(&mut self) -> usize {
        let out = std::mem::take(self.shard.transmits());
        let n = out.len();
        for d in out {
            // xorshift64*: deterministic for a given seed.
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let r =
                (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
            let now = self.now;
            match self.peers.iter_mut().find(|p| p.seen_at() == d.destination) {
                Some(p) if p.drop_next.is_some_and(|f| f(&d.contents)) => {
                    p.drop_next = None;
                    p.lost += 1;
                }
                Some(p) if r < p.loss => p.lost += 1,
                Some(p) => match p.link.as_mut() {
                    Some(link) => {
                        if !link.offer(now, d.contents) {
                            p.lost += 1;
                        }
                    }
                    None => p.inbox.push_back(d.contents),
                },
                None => self.undeliverable += 1,
            }
        }
        let now = self.now;
        let server = self.server_addr;
        for p in &mut self.peers {
            if let Some(link) = p.link.as_mut() {
                while link.queue.front().is_some_and(|(at, _)| *at <= now) {
                    let (_, d) = link.queue.pop_front().expect("front");
                    p.inbox.push_back(d);
                }
            }
            while let Some(d) = p.inbox.pop_front() {
                if let Ok(r) = Receive::new(Protocol::Udp, server, p.addr, &d) {
                    // One input, then a full drain: str0m's single-mutation rule.
                    let _ = p.rtc.handle_input(Input::Receive(now, r));
                    let out = drain_peer(p);
                    p.outbox.extend(out);
                }
            }
        }
        n
    }

    /// Advance the fake clock by `d`, exchanging traffic every millisecond step.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let step = self.step.min(end - self.now);
            self.now += step;
            for p in &mut self.peers {
                let _ = p.rtc.handle_input(Input::Timeout(self.now));
                let out = drain_peer(p);
                p.outbox.extend(out);
            }
            shard_timeout(&mut self.shard, self.now);
            self.exchange();
        }
    }

    /// Run until every peer is connected, or panic after `limit` of fake time.
    pub fn connect_all(&mut self, limit: Duration) {
        let end = self.now + limit;
        while self.now < end {
            self.advance(Duration::from_millis(10));
            if self.peers.iter().all(|p| p.connected) {
                // Let MediaAdded and the viewers' stream setup settle.
                self.advance(Duration::from_millis(50));
                return;
            }
        }
        panic!("peers did not connect within {limit:?}");
    }

    fn pt(&self, peer: usize, mid: Mid, codec: Codec) -> Pt {
        let rtc = &self.peers[peer].rtc;
        let remote = rtc.media(mid).expect("media").remote_pts().to_vec();
        rtc.codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == codec && remote.contains(&p.pt()))
            .map(|p| p.pt())
            .expect("negotiated pt")
    }

    /// Have a publisher write `n` video packets of `len` bytes; returns the
    /// encrypted datagrams it would send (not yet delivered).
    pub fn publisher_datagrams(&mut self, peer: usize, n: usize, len: usize) -> Vec<Vec<u8>> {
        let mid = self.peers[peer].video.expect("video");
        let pt = self.pt(peer, mid, Codec::Vp8);
        let now = self.now;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let p = &mut self.peers[peer];
            // Frames of four packets (sequence numbers 1-4, 5-8, ...): one
            // timestamp each, the marker on the fourth, a keyframe flag on the first.
            let seq: SeqNo = p.seq.into();
            let pos = (p.seq - 1) % 4;
            let ts = ((p.seq - 1) / 4 * 3000) as u32;
            p.seq += 1;
            let mut payload = vec![0u8; len];
            payload[0] = if pos == 0 { 0x10 } else { 0 };
            payload[1..9].copy_from_slice(&(p.seq).to_be_bytes());
            if self.l1t3 {
                // X; I (15-bit picture id), L, T: the frame's number, its
                // base-frame count and its layer.
                let frame = (p.seq - 2) / 4;
                let tid = [0u8, 2, 1, 2][(frame % 4) as usize];
                payload[0] |= 0x80;
                payload[1..6].copy_from_slice(&[
                    0xe0,
                    0x80 | (frame >> 8) as u8 & 0x7f,
                    frame as u8,
                    (frame / 4) as u8,
                    tid << 6,
                ]);
            }
            let mut direct = p.rtc.direct_api();
            let tx = direct.stream_tx_by_mid(mid, None).expect("stream tx");
            let mut ext = ExtensionValues::default();
            if pos == 3 {
                ext.video_orientation = p.send_orientation;
            }
            tx.write_rtp(
                RtpWrite::new(pt, seq, ts, now, payload)
                    .marker(pos == 3)
                    .ext_vals(ext),
            );
            drain_media(p, &mut out);
            let _ = p.rtc.handle_input(Input::Timeout(now));
            drain_media(p, &mut out);
        }
        out
    }

    /// Have a publisher write one VP8 frame of the given payloads (one packet
    /// each, the marker on the last) at RTP timestamp `ts`; returns the
    /// encrypted datagrams it would send.
    pub fn video_frame(&mut self, peer: usize, ts: u32, payloads: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let mid = self.peers[peer].video.expect("video");
        let pt = self.pt(peer, mid, Codec::Vp8);
        let now = self.now;
        let mut out = Vec::new();
        let p = &mut self.peers[peer];
        let n = payloads.len();
        for (i, payload) in payloads.into_iter().enumerate() {
            let seq: SeqNo = p.seq.into();
            p.seq += 1;
            let mut direct = p.rtc.direct_api();
            let tx = direct.stream_tx_by_mid(mid, None).expect("stream tx");
            tx.write_rtp(RtpWrite::new(pt, seq, ts, now, payload).marker(i + 1 == n));
        }
        drain_media(p, &mut out);
        let _ = p.rtc.handle_input(Input::Timeout(now));
        drain_media(p, &mut out);
        out
    }

    /// Have a simulcast publisher write one frame of `n` packets on layer
    /// `layer` (index into [`LAYERS`]); byte 9 of each payload names the layer.
    pub fn layer_frame(
        &mut self,
        peer: usize,
        layer: usize,
        n: usize,
        keyframe: bool,
    ) -> Vec<Vec<u8>> {
        let mid = self.peers[peer].video.expect("video");
        let pt = self.pt(peer, mid, Codec::Vp8);
        let now = self.now;
        let rid = str0m::media::Rid::from(LAYERS[layer]);
        let mut out = Vec::with_capacity(n);
        let p = &mut self.peers[peer];
        let base = p.layer_seq[layer];
        p.layer_seq[layer] += n as u64;
        let frame = p.layer_frames[layer];
        p.layer_frames[layer] += 1;
        for i in 0..n {
            let seq: SeqNo = (base + i as u64).into();
            let mut payload = vec![0u8; 300 * (layer + 1)];
            payload[0] = if i == 0 { 0x10 } else { 0 };
            payload[1] = if keyframe { 0x00 } else { 0x01 };
            payload[9] = layer as u8;
            let mut direct = p.rtc.direct_api();
            let tx = direct
                .stream_tx_by_mid(mid, Some(rid))
                .expect("layer stream");
            tx.write_rtp(RtpWrite::new(pt, seq, frame * 3000, now, payload).marker(i + 1 == n));
        }
        drain_media(p, &mut out);
        let _ = p.rtc.handle_input(Input::Timeout(now));
        drain_media(p, &mut out);
        out
    }

    /// Hand datagrams from `peer` to the shard as one receive batch and run
    /// the turn; returns the datagrams the shard produced (left in `transmits`).
    pub fn feed(&mut self, peer: usize, datagrams: &[Vec<u8>]) -> usize {
        let addr = self.peers[peer].seen_at();
        for d in datagrams {
            shard_datagram(&mut self.shard, self.now, addr, d);
        }
        shard_timeout(&mut self.shard, self.now);
        self.shard.transmits().len()
    }
}

/// The shard's share of a simulation: every input the harness gives the
/// shard goes through these two, so `valgrind --tool=callgrind
/// --toggle-collect=sluice_testkit_shard_*` counts the shard alone.
#[inline(never)]
#[allow(unsafe_code)] // no_mangle: the instruction counts name this symbol.
#[no_mangle]
pub fn sluice_testkit_shard_datagram(shard: &mut Shard, now: Instant, from: SocketAddr, d: &[u8]) {
    shard.handle_datagram(now, from, d);
}

/// One shard timeout turn, under a symbol name the instruction counts find.
#[inline(never)]
#[allow(unsafe_code)] // no_mangle: the instruction counts name this symbol.
#[no_mangle]
pub fn sluice_testkit_shard_timeout(shard: &mut Shard, now: Instant) {
    shard.handle_timeout(now);
    // As the runtime does: turns until every viewer has been visited.
    while shard.forward_backlog() {
        shard.handle_timeout(now);
    }
}

use sluice_testkit_shard_datagram as shard_datagram;
use sluice_testkit_shard_timeout as shard_timeout;

/// Drain a peer's output; return its datagrams and record its events.
/// A publisher's datagrams: RTP to `out`, the rest (its sender reports)
/// to its outbox, which the next [`Harness::exchange`] delivers.
fn drain_media(p: &mut Peer, out: &mut Vec<Vec<u8>>) {
    for d in drain_peer(p) {
        if crate::packet::is_rtp(&d) {
            out.push(d);
        } else {
            p.outbox.push(d);
        }
    }
}

fn drain_peer(p: &mut Peer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        match p.rtc.poll_output() {
            Ok(Output::Transmit(t)) => out.push(t.contents.into()),
            Ok(Output::Timeout(_)) | Err(_) => break,
            Ok(Output::Event(e)) => match e {
                Event::Connected => p.connected = true,
                Event::RtpPacket(pkt) => {
                    p.received_count += 1;
                    if let Some(o) = pkt.header.ext_vals.video_orientation {
                        p.orientations.push((pkt.header.sequence_number, o));
                    }
                    if let Some(v) = p.payloads.as_mut() {
                        v.push(pkt.payload.to_vec());
                    }
                    if pkt.payload.len() >= 300 && pkt.payload.len() % 300 == 0 {
                        p.layers_seen.push(pkt.payload[9]);
                    }
                    if !p.count_only {
                        p.received.push((
                            *pkt.header.ssrc,
                            pkt.header.sequence_number,
                            pkt.payload.len(),
                        ));
                    }
                }
                Event::KeyframeRequest(_) => p.keyframe_requests += 1,
                Event::MediaIngressStats(m) => {
                    if let Some(r) = m.remote {
                        p.reported_sent.retain(|(mid, _)| *mid != m.mid);
                        p.reported_sent.push((m.mid, r.packets));
                    }
                }
                _ => {}
            },
        }
    }
    out
}
