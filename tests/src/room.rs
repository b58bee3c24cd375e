//! A room participant for protocol tests: the WebSocket signaling of
//! docs/rooms.md plus str0m send and receive transports on loopback, sending
//! stamped synthetic audio and video and checking what it receives.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sluice_bench::client::{check_payload, make_payload};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// Open the room WebSocket; `Err` carries the HTTP status when refused.
pub async fn connect_ws(base: &str, query: &str) -> Result<Ws, u16> {
    let cfg = crate::tls::any_cert_client();
    let url = format!("{}/ws?{query}", base.replacen("https://", "wss://", 1));
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(cfg))),
    );
    // A server that never answers fails the test instead of hanging it.
    let answered = tokio::time::timeout(std::time::Duration::from_secs(15), connect).await;
    match answered.expect("websocket connect: no answer within 15 s") {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("websocket connect: {e}"),
    }
}

/// Rids of a simulcast camera's layers, lowest first.
pub const LAYERS: [&str; 3] = ["l", "m", "h"];
/// Stamp track of simulcast layer `i` is `SIMULCAST_TRACK + i`.
pub const SIMULCAST_TRACK: u8 = 10;

/// Media seen on one receive mid.
#[derive(Debug, Default, Clone)]
pub struct MidStats {
    pub packets: u64,
    pub corrupt: u64,
    /// Counter gaps (lost or reordered packets).
    pub gaps: u64,
    /// Good packets per stamp track (for simulcast, the layer sent).
    pub by_track: BTreeMap<u8, u64>,
    last: Option<(u8, u32)>,
}

impl MidStats {
    /// Stamp track of the latest good packet.
    pub fn last_track(&self) -> Option<u8> {
        self.last.map(|(t, _)| t)
    }
}

/// What a participant has seen.
#[derive(Debug, Default)]
pub struct State {
    pub notifications: Vec<Value>,
    /// mid → (peer, kind) from newConsumer; removed on consumerClosed.
    pub consumers: HashMap<String, (String, String)>,
    pub media: HashMap<String, MidStats>,
    pub send_connected: bool,
    pub recv_connected: bool,
    pub offers_answered: u64,
}

impl State {
    /// Good packets received from `peer` of `kind`.
    pub fn packets_from(&self, peer: &str, kind: &str) -> u64 {
        self.consumers
            .iter()
            .filter(|(_, (p, k))| p == peer && k == kind)
            .filter_map(|(mid, _)| self.media.get(mid))
            .map(|m| m.packets)
            .sum()
    }

    /// (consumer id, mid) of the live consumer of `peer`'s `kind` track.
    pub fn consumer(&self, peer: &str, kind: &str) -> Option<(String, String)> {
        self.notifications.iter().rev().find_map(|n| {
            let d = &n["data"];
            if n["method"] != "newConsumer" || d["peerId"] != peer || d["kind"] != kind {
                return None;
            }
            let (id, mid) = (d["id"].as_str()?, d["mid"].as_str()?);
            let live = self
                .consumers
                .get(mid)
                .is_some_and(|(p, k)| p == peer && k == kind);
            live.then(|| (id.to_string(), mid.to_string()))
        })
    }

    /// Media seen on the mid of `peer`'s `kind` consumer.
    pub fn media_from(&self, peer: &str, kind: &str) -> Option<&MidStats> {
        let (_, mid) = self.consumer(peer, kind)?;
        self.media.get(&mid)
    }

    pub fn corrupt(&self) -> u64 {
        self.media.values().map(|m| m.corrupt).sum()
    }

    pub fn has(&self, method: &str, key: &str, value: &str) -> bool {
        self.notifications
            .iter()
            .any(|n| n["method"] == method && n["data"][key] == value)
    }
}

enum Cmd {
    /// Make the send transport's offer; true makes the camera simulcast.
    SendOffer(bool, oneshot::Sender<String>),
    SendAnswer(String, oneshot::Sender<Vec<(Mid, MediaKind)>>),
}

/// One room participant.
pub struct Participant {
    pub peer: String,
    pub state: Arc<Mutex<State>>,
    sink: Arc<tokio::sync::Mutex<SplitSink<Ws, Message>>>,
    pending: Pending,
    next_id: Arc<Mutex<u64>>,
    cmd: mpsc::UnboundedSender<Cmd>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Participant {
    /// Connect and join; returns the join response data too.
    pub async fn join(
        base: &str,
        room: &str,
        peer: &str,
        answer_offers: bool,
    ) -> (Participant, Value) {
        let ws = connect_ws(base, &format!("roomId={room}&peerId={peer}"))
            .await
            .expect("websocket accepted");
        let (sink, stream) = ws.split();
        let state = Arc::new(Mutex::new(State::default()));
        let pending: Pending = Arc::default();
        let sink = Arc::new(tokio::sync::Mutex::new(sink));
        let (srv_tx, srv_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(stream, pending.clone(), state.clone(), srv_tx));
        let media = tokio::spawn(media_loop(
            state.clone(),
            sink.clone(),
            srv_rx,
            cmd_rx,
            answer_offers,
        ));
        let p = Participant {
            peer: peer.to_string(),
            state,
            sink,
            pending,
            next_id: Arc::new(Mutex::new(0)),
            cmd: cmd_tx,
            tasks: vec![reader, media],
        };
        let joined = p
            .request("join", json!({"displayName": format!("name-{peer}")}))
            .await;
        assert_eq!(joined["ok"], true, "join: {joined}");
        (p, joined["data"].clone())
    }

    /// Send a request and wait for its response message.
    pub async fn request(&self, method: &str, data: Value) -> Value {
        let id = {
            let mut n = self.next_id.lock().unwrap();
            *n += 1;
            *n
        };
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let msg = json!({"request": true, "id": id, "method": method, "data": data});
        self.send_raw(msg.to_string()).await;
        tokio::time::timeout(Duration::from_secs(15), rx)
            .await
            .expect("response in time")
            .expect("response")
    }

    /// Send a raw text frame.
    pub async fn send_raw(&self, text: String) {
        self.sink
            .lock()
            .await
            .send(Message::Text(text.into()))
            .await
            .expect("ws send");
    }

    /// Send a raw text frame and wait for the response that carries `id`
    /// (0 for errors about frames the server could not read). The waiter is
    /// registered before sending so a fast response cannot be missed.
    pub async fn send_raw_for_response(&self, text: String, id: u64) -> Value {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.send_raw(text).await;
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("response in time")
            .expect("response")
    }

    /// Create the send transport and produce microphone and camera.
    pub async fn publish(&self) {
        self.publish_with(false).await
    }

    /// Like [`Participant::publish`], with the camera simulcast in the three
    /// [`LAYERS`]; layer `i`'s payloads carry stamp track `SIMULCAST_TRACK + i`.
    pub async fn publish_simulcast(&self) {
        self.publish_with(true).await
    }

    async fn publish_with(&self, simulcast: bool) {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::SendOffer(simulcast, tx)).unwrap();
        let offer = rx.await.unwrap();
        let r = self
            .request("createSendTransport", json!({"sdp": offer}))
            .await;
        assert_eq!(r["ok"], true, "createSendTransport: {r}");
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::SendAnswer(
                r["data"]["sdp"].as_str().unwrap().to_string(),
                tx,
            ))
            .unwrap();
        let mids = rx.await.unwrap();
        for (i, (mid, kind)) in mids.iter().enumerate().take(2) {
            let (k, source) = if *kind == MediaKind::Audio {
                ("audio", "mic")
            } else {
                ("video", "cam")
            };
            let r = self
                .request(
                    "produce",
                    json!({"kind": k, "source": source, "mid": mid.to_string()}),
                )
                .await;
            assert_eq!(r["ok"], true, "produce {i}: {r}");
        }
    }

    /// Leave cleanly.
    pub async fn leave(self) {
        let _ = self.request("leave", json!({})).await;
        let _ = self.sink.lock().await.close().await;
        for t in self.tasks {
            t.abort();
        }
    }

    /// Drop the connection without a word, as a crashed client would.
    pub async fn vanish(self) {
        for t in self.tasks {
            t.abort();
        }
        drop(self.sink);
    }
}

async fn read_loop(
    mut stream: SplitStream<Ws>,
    pending: Pending,
    state: Arc<Mutex<State>>,
    srv: mpsc::UnboundedSender<Value>,
) {
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).expect("server sends JSON");
        if v["response"] == true {
            let id = v["id"].as_u64().unwrap_or(0);
            if let Some(tx) = pending.lock().unwrap().remove(&id) {
                let _ = tx.send(v);
            }
        } else if v["request"] == true {
            let _ = srv.send(v);
        } else if v["notification"] == true {
            let mut s = state.lock().unwrap();
            let d = &v["data"];
            match v["method"].as_str() {
                Some("newConsumer") => {
                    s.consumers.insert(
                        d["mid"].as_str().unwrap_or("").to_string(),
                        (
                            d["peerId"].as_str().unwrap_or("").to_string(),
                            d["kind"].as_str().unwrap_or("").to_string(),
                        ),
                    );
                }
                Some("consumerClosed") => {
                    let mid = d["mid"].as_str().unwrap_or("");
                    s.consumers.remove(mid);
                    s.media.remove(mid);
                }
                _ => {}
            }
            s.notifications.push(v);
        }
    }
}

struct Sender {
    mid: Mid,
    kind: MediaKind,
    pt: Option<Pt>,
    seq: u64,
    counter: u32,
    /// Simulcast: (rid, next sequence number, counter) per layer, lowest first.
    layers: Vec<(Rid, u64, u32)>,
}

fn rtc_config() -> RtcConfig {
    RtcConfig::new()
        .set_rtp_mode(true)
        .set_stats_interval(None)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
}

fn drain(rtc: &mut Rtc, out: &mut Vec<(SocketAddr, Vec<u8>)>, events: &mut Vec<Event>) -> Instant {
    loop {
        match rtc.poll_output() {
            Ok(Output::Timeout(t)) => return t,
            Ok(Output::Transmit(t)) => out.push((t.destination, t.contents.into())),
            Ok(Output::Event(e)) => events.push(e),
            Err(_) => return Instant::now() + Duration::from_secs(3600),
        }
    }
}

async fn recv_opt(
    sock: &Option<UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn media_loop(
    state: Arc<Mutex<State>>,
    sink: Arc<tokio::sync::Mutex<SplitSink<Ws, Message>>>,
    mut srv: mpsc::UnboundedReceiver<Value>,
    mut cmd: mpsc::UnboundedReceiver<Cmd>,
    answer_offers: bool,
) {
    let mut send: Option<(Rtc, UdpSocket, Option<str0m::change::SdpPendingOffer>)> = None;
    let mut send_sock: Option<UdpSocket> = None;
    let mut recv: Option<Rtc> = None;
    let mut recv_sock: Option<UdpSocket> = None;
    let mut senders: Vec<Sender> = Vec::new();
    let mut next_media = Instant::now();
    let mut sbuf = vec![0u8; 2048];
    let mut rbuf = vec![0u8; 2048];
    loop {
        // Drain both transports.
        let mut out = Vec::new();
        let mut events = Vec::new();
        let mut wake = Instant::now() + Duration::from_millis(100);
        if let Some((rtc, _, _)) = send.as_mut() {
            wake = wake.min(drain(rtc, &mut out, &mut events));
        }
        for e in events.drain(..) {
            if matches!(e, Event::Connected) {
                state.lock().unwrap().send_connected = true;
            }
        }
        if let Some(s) = &send_sock {
            for (to, d) in out.drain(..) {
                let _ = s.send_to(&d, to).await;
            }
        }
        if let Some(rtc) = recv.as_mut() {
            wake = wake.min(drain(rtc, &mut out, &mut events));
            for e in events.drain(..) {
                match e {
                    Event::Connected => state.lock().unwrap().recv_connected = true,
                    Event::RtpPacket(pkt) => {
                        let mid = rtc
                            .direct_api()
                            .stream_rx(&pkt.header.ssrc)
                            .map(|r| r.mid());
                        let Some(mid) = mid else { continue };
                        let mut s = state.lock().unwrap();
                        let m = s.media.entry(mid.to_string()).or_default();
                        match check_payload(&pkt.payload) {
                            Some(st) => {
                                m.packets += 1;
                                *m.by_track.entry(st.track).or_default() += 1;
                                if let Some((t, c)) = m.last {
                                    if t == st.track && st.counter != c + 1 {
                                        m.gaps += 1;
                                    }
                                }
                                m.last = Some((st.track, st.counter));
                            }
                            None => m.corrupt += 1,
                        }
                    }
                    _ => {}
                }
            }
            if let Some(s) = &recv_sock {
                for (to, d) in out.drain(..) {
                    let _ = s.send_to(&d, to).await;
                }
            }
        }
        let connected = state.lock().unwrap().send_connected;
        let now = Instant::now();
        if connected && !senders.is_empty() && now >= next_media {
            if let Some((rtc, _, _)) = send.as_mut() {
                write_media(rtc, &mut senders, now);
                let _ = rtc.handle_input(Input::Timeout(now));
            }
            next_media = now + Duration::from_millis(20);
            continue;
        }
        if connected && !senders.is_empty() {
            wake = wake.min(next_media);
        }
        tokio::select! {
            r = recv_opt(&send_sock, &mut sbuf) => {
                if let (Ok((n, src)), Some((rtc, sock, _))) = (r, send.as_mut()) {
                    let local = sock.local_addr().unwrap();
                    if let Ok(r) = Receive::new(Protocol::Udp, src, local, &sbuf[..n]) {
                        let _ = rtc.handle_input(Input::Receive(Instant::now(), r));
                    }
                }
            }
            r = recv_opt(&recv_sock, &mut rbuf) => {
                if let (Ok((n, src)), Some(rtc), Some(sock)) = (r, recv.as_mut(), recv_sock.as_ref()) {
                    let local = sock.local_addr().unwrap();
                    if let Ok(r) = Receive::new(Protocol::Udp, src, local, &rbuf[..n]) {
                        let _ = rtc.handle_input(Input::Receive(Instant::now(), r));
                    }
                }
            }
            Some(req) = srv.recv() => {
                if req["method"] != "receiveOffer" || !answer_offers {
                    continue;
                }
                let id = req["id"].as_u64().unwrap();
                let offer = SdpOffer::from_sdp_string(req["data"]["sdp"].as_str().unwrap()).expect("offer parses");
                if recv.is_none() {
                    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    let mut rtc = rtc_config().build(Instant::now());
                    rtc.add_local_candidate(Candidate::host(sock.local_addr().unwrap(), "udp").unwrap());
                    recv = Some(rtc);
                    recv_sock = Some(sock);
                }
                let rtc = recv.as_mut().unwrap();
                let answer = rtc.sdp_api().accept_offer(offer).expect("answer the server's offer");
                state.lock().unwrap().offers_answered += 1;
                let msg = json!({"response": true, "id": id, "ok": true, "data": {"sdp": answer.to_sdp_string()}});
                let _ = sink.lock().await.send(Message::Text(msg.to_string().into())).await;
            }
            Some(c) = cmd.recv() => match c {
                Cmd::SendOffer(simulcast, reply) => {
                    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    let mut rtc = rtc_config().build(Instant::now());
                    rtc.add_local_candidate(Candidate::host(sock.local_addr().unwrap(), "udp").unwrap());
                    let mut api = rtc.sdp_api();
                    let a = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
                    let sim = simulcast.then(|| {
                        let mut sc = Simulcast::new();
                        for rid in LAYERS {
                            sc.send.push(SimulcastLayer::new(rid));
                        }
                        sc
                    });
                    let v = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, sim);
                    let s = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
                    let (offer, pending) = api.apply().unwrap();
                    let layers = if simulcast {
                        LAYERS.iter().enumerate().map(|(i, r)| (Rid::from(*r), 1 + 20_000 * i as u64, 0)).collect()
                    } else {
                        Vec::new()
                    };
                    senders = vec![
                        Sender { mid: a, kind: MediaKind::Audio, pt: None, seq: 1, counter: 0, layers: Vec::new() },
                        Sender { mid: v, kind: MediaKind::Video, pt: None, seq: 1, counter: 0, layers },
                    ];
                    let _ = s;
                    let _ = reply.send(offer.to_sdp_string());
                    send_sock = Some(sock.try_clone_std());
                    send = Some((rtc, sock, Some(pending)));
                }
                Cmd::SendAnswer(sdp, reply) => {
                    if let Some((rtc, _, pending)) = send.as_mut() {
                        let answer = SdpAnswer::from_sdp_string(&sdp).expect("answer parses");
                        rtc.sdp_api().accept_answer(pending.take().unwrap(), answer).expect("accept answer");
                    }
                    let _ = reply.send(senders.iter().map(|s| (s.mid, s.kind)).collect());
                }
            },
            _ = tokio::time::sleep_until(wake.max(Instant::now()).into()) => {
                let now = Instant::now();
                if let Some((rtc, _, _)) = send.as_mut() { let _ = rtc.handle_input(Input::Timeout(now)); }
                if let Some(rtc) = recv.as_mut() { let _ = rtc.handle_input(Input::Timeout(now)); }
            }
        }
    }
}

trait TryCloneStd {
    fn try_clone_std(&self) -> UdpSocket;
}

impl TryCloneStd for UdpSocket {
    /// A second handle on the same socket, for sending while the first receives.
    fn try_clone_std(&self) -> UdpSocket {
        let fd = socket2::SockRef::from(self)
            .try_clone()
            .expect("dup socket");
        let std: std::net::UdpSocket = fd.into();
        std.set_nonblocking(true).unwrap();
        UdpSocket::from_std(std).unwrap()
    }
}

/// One audio packet and one small video frame (two packets) per 20 ms; a
/// simulcast camera sends a one-packet keyframe on each layer instead, sized
/// 300, 600 and 900 bytes from the lowest layer up.
fn write_media(rtc: &mut Rtc, senders: &mut [Sender], now: Instant) {
    for s in senders.iter_mut() {
        if s.pt.is_none() {
            let codec = if s.kind == MediaKind::Audio {
                Codec::Opus
            } else {
                Codec::Vp8
            };
            let remote = rtc
                .media(s.mid)
                .map(|m| m.remote_pts().to_vec())
                .unwrap_or_default();
            s.pt = rtc
                .codec_config()
                .params()
                .iter()
                .find(|p| p.spec().codec == codec && remote.contains(&p.pt()))
                .map(|p| p.pt());
        }
        let Some(pt) = s.pt else { continue };
        if !s.layers.is_empty() {
            let ts = s.counter.wrapping_mul(1500);
            for (i, (rid, seq, counter)) in s.layers.iter_mut().enumerate() {
                let track = SIMULCAST_TRACK + i as u8;
                let payload = make_payload(track, *counter, 300 * (i + 1), [0x10, 0, 0, 0]);
                let mut direct = rtc.direct_api();
                if let Some(tx) = direct.stream_tx_by_mid(s.mid, Some(*rid)) {
                    let sn: SeqNo = (*seq).into();
                    tx.write_rtp(RtpWrite::new(pt, sn, ts, now, payload).marker(true));
                }
                *seq += 1;
                *counter += 1;
            }
            s.counter += 1;
            continue;
        }
        let n = if s.kind == MediaKind::Audio { 1 } else { 2 };
        for i in 0..n {
            let (track, len, prefix) = if s.kind == MediaKind::Audio {
                (0, 80, [0xfc, 0, 0, 0])
            } else {
                (1, 900, [if i == 0 { 0x10 } else { 0 }, 0, 0, 0])
            };
            let payload = make_payload(track, s.counter, len, prefix);
            let ts = s.counter.wrapping_mul(if s.kind == MediaKind::Audio {
                960
            } else {
                1500
            });
            let seq: SeqNo = s.seq.into();
            let mut direct = rtc.direct_api();
            if let Some(tx) = direct.stream_tx_by_mid(s.mid, None) {
                tx.write_rtp(RtpWrite::new(pt, seq, ts, now, payload).marker(i + 1 == n));
            }
            s.seq += 1;
            s.counter += 1;
        }
    }
}
