//! Hostile inputs for the security suites: builders for STUN, DTLS, RTP and
//! RTCP datagrams (well-formed, truncated, or with bad tags), raw TLS
//! connections for requests an HTTP library would not send, a str0m peer
//! driven by hand so a test can inject what a normal client never sends,
//! and the checks that follow every group of inputs.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::Server;
use sluice_bench::client::{self, check_payload, make_payload, ViewerMode};
use sluice_bench::client::{PublisherStats, SessionHandle, ViewerStats};
use sluice_dataplane::testkit::Exported;
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

use crate::{packets, publish_and_view, session_counts, wait_until};

/// A small deterministic generator, so every run sends the same junk.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u32() as u8).collect()
    }
}

// ---------------------------------------------------------------- TLS and HTTP

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `addr` with the handshake done (HTTP/1.1 only).
pub fn tls_connect(addr: SocketAddr) -> TlsStream {
    let mut cfg = crate::tls::any_cert_client();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).expect("TLS handshake");
    }
    rustls::StreamOwned::new(conn, sock)
}

/// Send `request` as is over TLS and read until the server closes or 5 s
/// pass; returns the status (if any) and the body after the blank line.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> (Option<u16>, String) {
    let mut s = tls_connect(addr);
    let _ = s.write_all(request);
    let _ = s.flush();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                // One response is enough: stop once its body is complete.
                if response_complete(&buf) {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok());
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn response_complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    match len {
        Some(n) => body.len() >= n,
        None => false,
    }
}

/// Complete TLS, send `bytes`, then wait (reading and discarding) for the
/// server to close the connection; the time it took, or `None` if it was
/// still open after `limit`.
pub fn closed_within(addr: SocketAddr, bytes: &[u8], limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut s = tls_connect(addr);
    s.sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    if !bytes.is_empty() {
        s.write_all(bytes).unwrap();
        s.flush().unwrap();
    }
    let mut chunk = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut chunk) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

/// Sum of every sample of metric `name` in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// GET /metrics, optionally with a bearer token: (status, body).
pub async fn get_metrics(
    http: &reqwest::Client,
    server: &Server,
    token: Option<&str>,
) -> (u16, String) {
    let mut req = http.get(format!("{}/metrics", server.url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// Resident memory of this process (the server runs in it), KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------- datagrams

const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// What a hostile binding request carries where MESSAGE-INTEGRITY belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// No MESSAGE-INTEGRITY attribute.
    Missing,
    /// 20 bytes that are not the HMAC of the message.
    Wrong,
    /// An attribute that claims 20 bytes but the datagram ends after 8.
    Truncated,
}

/// A STUN binding request with USERNAME `username` and an ICE PRIORITY.
pub fn stun_request(username: &str, integrity: Integrity, txid: [u8; 12]) -> Vec<u8> {
    let mut attrs = Vec::new();
    let mut attr = |t: u16, v: &[u8]| {
        attrs.extend_from_slice(&t.to_be_bytes());
        attrs.extend_from_slice(&(v.len() as u16).to_be_bytes());
        attrs.extend_from_slice(v);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
    };
    attr(0x0006, username.as_bytes());
    attr(0x0024, &[0x6e, 0x00, 0x01, 0xff]);
    attr(0x802a, &[1, 2, 3, 4, 5, 6, 7, 8]); // ICE-CONTROLLING
    match integrity {
        Integrity::Missing => {}
        Integrity::Wrong => attr(0x0008, &[0xab; 20]),
        Integrity::Truncated => {}
    }
    let mut msg = Vec::new();
    msg.extend_from_slice(&1u16.to_be_bytes());
    let claimed = attrs.len()
        + if integrity == Integrity::Truncated {
            24
        } else {
            0
        };
    msg.extend_from_slice(&(claimed as u16).to_be_bytes());
    msg.extend_from_slice(&COOKIE);
    msg.extend_from_slice(&txid);
    msg.extend_from_slice(&attrs);
    if integrity == Integrity::Truncated {
        msg.extend_from_slice(&[0x00, 0x08, 0x00, 0x14, 1, 2, 3, 4]);
    }
    msg
}

/// A STUN header of `msg_type` with no attributes but a claimed body length.
pub fn stun_header(msg_type: u16, claimed_len: u16) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&msg_type.to_be_bytes());
    m.extend_from_slice(&claimed_len.to_be_bytes());
    m.extend_from_slice(&COOKIE);
    m.extend_from_slice(&[9; 12]);
    m
}

/// A DTLS 1.2 record holding a ClientHello (handshake type 1), as a DTLS
/// client's first flight: offers ECDHE-ECDSA-AES128-GCM and use_srtp.
pub fn dtls_client_hello(seq: u16) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[0xfe, 0xfd]); // client_version DTLS 1.2
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // session id
    body.push(0); // cookie
    body.extend_from_slice(&[0x00, 0x02, 0xc0, 0x2b]); // cipher suites
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    let exts: &[u8] = &[
        0x00, 0x0e, 0x00, 0x05, 0x00, 0x02, 0x00, 0x07, 0x00, // use_srtp: AEAD_AES_128_GCM
        0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17, // supported_groups: secp256r1
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats
        0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03, // signature_algorithms
        0x00, 0x17, 0x00, 0x00, // extended_master_secret
    ];
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(exts);
    let len = body.len() as u32;
    let mut hs = vec![1u8];
    hs.extend_from_slice(&len.to_be_bytes()[1..]);
    hs.extend_from_slice(&seq.to_be_bytes()); // message_seq
    hs.extend_from_slice(&[0, 0, 0]); // fragment_offset
    hs.extend_from_slice(&len.to_be_bytes()[1..]); // fragment_length
    hs.extend_from_slice(&body);
    let mut rec = vec![22u8, 0xfe, 0xfd, 0, 0];
    rec.extend_from_slice(&[0, 0, 0, 0, 0, seq as u8]); // sequence number
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// An RTP packet (version 2) of `payload_len` random bytes and a `tag_len`
/// byte tag that authenticates nothing.
pub fn rtp(
    rng: &mut Lcg,
    ssrc: u32,
    seq: u16,
    pt: u8,
    payload_len: usize,
    tag_len: usize,
) -> Vec<u8> {
    let mut p = vec![0x80, pt & 0x7f];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&rng.bytes(payload_len + tag_len));
    p
}

/// An SRTCP-shaped receiver report from `ssrc`: a forged 16-byte tag and an
/// E-flagged index.
pub fn srtcp_rr(rng: &mut Lcg, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0x00, 0x01];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&rng.bytes(16));
    p.extend_from_slice(&[0x80, 0, 0, 1]);
    p
}

/// A generic NACK (RFC 4585 §6.2.1) for the `count` sequence numbers before
/// `last`, as compact FCI entries (a PID and a 16-bit mask each).
pub fn nack(sender: u32, media: u32, last: u16, count: u16) -> Vec<u8> {
    let first = last.wrapping_sub(count);
    let mut fci = Vec::new();
    let mut at = 0;
    while at < count {
        let pid = first.wrapping_add(at);
        let rest = (count - at - 1).min(16);
        let blp: u16 = if rest == 16 {
            0xffff
        } else {
            (1u16 << rest) - 1
        };
        fci.extend_from_slice(&pid.to_be_bytes());
        fci.extend_from_slice(&blp.to_be_bytes());
        at += 17;
    }
    let words = (8 + fci.len()) / 4;
    let mut p = vec![0x81, 205];
    p.extend_from_slice(&(words as u16).to_be_bytes());
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p.extend_from_slice(&fci);
    p
}

/// Send every datagram in `pkts` from a fresh loopback socket to `dest`,
/// then collect what comes back for `listen`: the sizes of the replies.
pub fn send_and_listen(dest: SocketAddr, pkts: &[Vec<u8>], listen: Duration) -> Vec<usize> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for p in pkts {
        sock.send_to(p, dest).unwrap();
    }
    replies(&sock, listen)
}

/// Sizes of the datagrams `sock` receives within `listen`.
pub fn replies(sock: &UdpSocket, listen: Duration) -> Vec<usize> {
    let until = Instant::now() + listen;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => got.push(n),
            Err(_) => break,
        }
    }
    got
}

/// The value of `a=<attr>:` in an SDP.
pub fn sdp_attr(sdp: &str, attr: &str) -> Option<String> {
    let prefix = format!("a={attr}:");
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix(&prefix).map(str::to_string))
}

// ---------------------------------------------------------------- bystanders

/// A legitimate publisher and viewer set up before a group of hostile
/// inputs, and the server's state then: after the group, the server must
/// still answer, the viewer must still receive, and sessions and memory
/// must be back where they were.
pub struct Bystander {
    pub publisher: SessionHandle<PublisherStats>,
    pub viewer: SessionHandle<ViewerStats>,
    pub sessions: (usize, usize),
    pub rss_kib: u64,
}

/// Memory a group may leave behind (allocator caches, lazily built tables).
pub const RSS_SLACK_KIB: u64 = 48 * 1024;

impl Bystander {
    pub async fn start(server: &Server, http: &reqwest::Client, stream: &str) -> Bystander {
        let (publisher, viewer) =
            publish_and_view(server, http, stream, ViewerMode::Full, 20).await;
        Bystander::with(server, publisher, viewer)
    }

    /// A bystander on a server with a secret: `publish` and `view` are the tokens.
    pub async fn start_with_tokens(
        server: &Server,
        http: &reqwest::Client,
        stream: &str,
        publish: String,
        view: String,
    ) -> Bystander {
        let mut ep = crate::whip(server, stream);
        ep.token = Some(publish);
        let publisher = client::publish(http, &ep, client::MediaSpec::default())
            .await
            .unwrap();
        let mut ep = crate::whep(server, stream);
        ep.token = Some(view);
        let viewer = client::view(http, &ep, ViewerMode::Full).await.unwrap();
        assert!(crate::receives_more_than(&viewer, 20, Duration::from_secs(10)).await);
        Bystander::with(server, publisher, viewer)
    }

    fn with(
        server: &Server,
        publisher: SessionHandle<PublisherStats>,
        viewer: SessionHandle<ViewerStats>,
    ) -> Bystander {
        Bystander {
            publisher,
            viewer,
            sessions: session_counts(server),
            rss_kib: rss_kib(),
        }
    }

    /// The checks after a group named `group`.
    pub async fn check(&self, server: &Server, http: &reqwest::Client, group: &str) {
        let res = http
            .get(format!("{}/healthz", server.url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{group}: /healthz: {e}"));
        assert_eq!(res.status().as_u16(), 200, "{group}: /healthz");
        let before = packets(&self.viewer);
        assert!(
            wait_until(Duration::from_secs(5), || packets(&self.viewer)
                > before + 30)
            .await,
            "{group}: the bystander viewer stopped receiving ({before} packets)"
        );
        assert_eq!(
            self.viewer.stats.received.lock().unwrap().corrupt,
            0,
            "{group}: corrupt payloads reached the bystander"
        );
        assert!(
            wait_until(Duration::from_secs(10), || session_counts(server)
                == self.sessions)
            .await,
            "{group}: sessions {:?}, baseline {:?}",
            session_counts(server),
            self.sessions
        );
        let rss = rss_kib();
        assert!(
            rss <= self.rss_kib + RSS_SLACK_KIB,
            "{group}: RSS {rss} KiB, baseline {} KiB",
            self.rss_kib
        );
    }

    pub async fn close(self) {
        self.viewer.close().await.unwrap();
        self.publisher.close().await.unwrap();
    }
}

// ---------------------------------------------------------------- a hand-driven peer

/// A str0m peer on a blocking loopback socket, driven by the test: it can
/// write what a normal client would not (a second SSRC, raw SRTCP sealed
/// with its own keys) and counts what it receives.
pub struct RawPeer {
    pub rtc: Rtc,
    pub sock: UdpSocket,
    pub local: SocketAddr,
    pub answer: String,
    pub location: Option<String>,
    /// This peer's SRTP keying material, once DTLS has exported it.
    pub exported: Option<Exported>,
    pub connected: bool,
    pub rx_bytes: u64,
    pub rx_datagrams: u64,
    /// Received RTP packets whose payload carries an intact stamp, by stamp track.
    pub good: HashMap<u8, u64>,
    /// Received RTP packets by SSRC and the latest sequence number seen.
    pub by_ssrc: HashMap<u32, (u64, u16)>,
    pub mids: Vec<(Mid, MediaKind)>,
    /// Where this peer's str0m last sent a datagram: the server's media port.
    pub remote: Option<SocketAddr>,
}

/// Stamp track of a [`VideoTx`]'s packets.
pub const RAW_VIDEO_TRACK: u8 = 7;

impl RawPeer {
    /// POST an offer of `kinds` in direction `dir` to `url`; on 201 the
    /// peer has accepted the answer and waits to be driven.
    pub async fn signal(
        http: &reqwest::Client,
        url: &str,
        token: Option<&str>,
        kinds: &[MediaKind],
        dir: Direction,
    ) -> Result<RawPeer, (u16, String)> {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = sock.local_addr().unwrap();
        let provider = Arc::new(sluice_dataplane::crypto_provider());
        let mut rtc = RtcConfig::new()
            .set_crypto_provider(provider)
            .set_rtp_mode(true)
            .set_stats_interval(None)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let mids: Vec<_> = kinds
            .iter()
            .map(|k| (api.add_media(*k, dir, None, None, None), *k))
            .collect();
        let (offer, pending) = api.apply().unwrap();
        let mut req = http
            .post(url)
            .header("content-type", "application/sdp")
            .body(offer.to_sdp_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| client::resolve_location(url, l));
        let body = res.text().await.unwrap();
        if status != 201 {
            return Err((status, body));
        }
        let answer = SdpAnswer::from_sdp_string(&body).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        Ok(RawPeer {
            rtc,
            sock,
            local,
            answer: body,
            location,
            exported: None,
            connected: false,
            rx_bytes: 0,
            rx_datagrams: 0,
            good: HashMap::new(),
            by_ssrc: HashMap::new(),
            mids,
            remote: None,
        })
    }

    /// Drive the peer for `dur` (or until `stop` says so), calling `tick`
    /// before each turn so the test can write media or inject datagrams.
    pub fn pump(
        &mut self,
        dur: Duration,
        mut tick: impl FnMut(&mut RawPeer, Instant),
        mut stop: impl FnMut(&RawPeer) -> bool,
    ) {
        let end = Instant::now() + dur;
        let mut buf = vec![0u8; 2048];
        loop {
            let now = Instant::now();
            if now >= end || stop(self) {
                return;
            }
            tick(self, now);
            let next = self.drain();
            let wait = next
                .min(now + Duration::from_millis(5))
                .min(end)
                .saturating_duration_since(Instant::now())
                .max(Duration::from_micros(200));
            self.sock.set_read_timeout(Some(wait)).unwrap();
            if let Ok((n, src)) = self.sock.recv_from(&mut buf) {
                self.rx_bytes += n as u64;
                self.rx_datagrams += 1;
                if let Ok(r) = Receive::new(Protocol::Udp, src, self.local, &buf[..n]) {
                    sluice_dataplane::testkit::take_exported();
                    let _ = self.rtc.handle_input(Input::Receive(Instant::now(), r));
                    self.take_keys();
                }
            }
            let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        }
    }

    fn take_keys(&mut self) {
        if let Some(e) = sluice_dataplane::testkit::take_exported() {
            self.exported = Some(e);
        }
    }

    /// Poll str0m's output: send datagrams, note events; the next timeout.
    fn drain(&mut self) -> Instant {
        loop {
            let out = self.rtc.poll_output();
            self.take_keys();
            match out {
                Ok(Output::Timeout(t)) => return t,
                Ok(Output::Transmit(t)) => {
                    self.remote = Some(t.destination);
                    let _ = self.sock.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => self.connected = true,
                Ok(Output::Event(Event::RtpPacket(p))) => {
                    let e = self.by_ssrc.entry(*p.header.ssrc).or_default();
                    e.0 += 1;
                    e.1 = p.header.sequence_number;
                    if let Some(s) = check_payload(&p.payload) {
                        *self.good.entry(s.track).or_default() += 1;
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return Instant::now() + Duration::from_millis(50),
            }
        }
    }

    /// Seal and send one RTP packet with this peer's SRTP keys, bypassing
    /// its str0m: any SSRC, numbering and payload, the mid extension if given.
    #[allow(clippy::too_many_arguments)]
    pub fn send_raw_rtp(
        &mut self,
        ssrc: u32,
        pt: u8,
        seq: u64,
        ts: u32,
        marker: bool,
        mid: Option<Mid>,
        payload: &[u8],
    ) {
        let (Some(e), Some(dest)) = (self.exported.as_ref(), self.remote) else {
            return;
        };
        let Some(srtp) = sluice_dataplane::testkit::SrtpSession::new(e) else {
            return;
        };
        let mid_id = mid.and_then(|m| {
            self.rtc
                .media(m)?
                .remote_extmap()
                .id_of(str0m::rtp::Extension::RtpMid)
        });
        let mut buf = vec![0x80, pt | if marker { 0x80 } else { 0 }];
        buf.extend_from_slice(&(seq as u16).to_be_bytes());
        buf.extend_from_slice(&ts.to_be_bytes());
        buf.extend_from_slice(&ssrc.to_be_bytes());
        if let (Some(m), Some(id)) = (mid, mid_id) {
            let m = m.as_bytes();
            buf[0] |= 0x10;
            let words = (1 + m.len()).div_ceil(4);
            buf.extend_from_slice(&[0xbe, 0xde, 0, words as u8]);
            buf.push((id << 4) | (m.len() as u8 - 1));
            buf.extend_from_slice(m);
            buf.resize(16 + 4 * words, 0);
        }
        let header_len = buf.len();
        buf.extend_from_slice(payload);
        srtp.protect_rtp(&mut buf, header_len, ssrc, seq);
        let _ = self.sock.send_to(&buf, dest);
    }

    /// Good packets received of stamp track `track`.
    pub fn good(&self, track: u8) -> u64 {
        self.good.get(&track).copied().unwrap_or(0)
    }

    /// The payload type this peer's answer gave `codec` on `mid`.
    pub fn pt(&self, mid: Mid, codec: Codec) -> Option<Pt> {
        let remote = self.rtc.media(mid)?.remote_pts().to_vec();
        self.rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == codec && remote.contains(&p.pt()))
            .map(|p| p.pt())
    }
}

/// Synthetic VP8 at 30 frames/s (three stamped packets a frame, a keyframe
/// every second) written on a [`RawPeer`]'s video mid.
pub struct VideoTx {
    pub mid: Mid,
    seq: u64,
    counter: u32,
    frame: u32,
    next: Option<Instant>,
    /// Write sealed datagrams itself on the negotiated SSRC (see
    /// [`VideoTx::like_a_browser`]), with the mid extension until then.
    raw_mid_until: Option<Instant>,
}

impl VideoTx {
    pub fn new(mid: Mid) -> Self {
        VideoTx {
            mid,
            seq: 5000,
            counter: 0,
            frame: 0,
            next: None,
            raw_mid_until: None,
        }
    }

    /// Video as browsers send it: the mid extension only on the first
    /// second of packets (libwebrtc stops once receiver reports arrive;
    /// str0m never stops on a stream with RTX), then the SSRC alone.
    pub fn like_a_browser(mid: Mid) -> Self {
        VideoTx {
            raw_mid_until: Some(Instant::now() + Duration::from_secs(1)),
            ..VideoTx::new(mid)
        }
    }

    pub fn tick(&mut self, peer: &mut RawPeer, now: Instant) {
        if !peer.connected {
            return;
        }
        let Some(pt) = peer.pt(self.mid, Codec::Vp8) else {
            return;
        };
        let next = *self.next.get_or_insert(now);
        if now < next {
            return;
        }
        self.next = Some(next + Duration::from_millis(33));
        let key = self.frame.is_multiple_of(30);
        let ts = self.frame.wrapping_mul(3000);
        for i in 0..3 {
            let prefix = [if i == 0 { 0x10 } else { 0 }, if key { 0 } else { 1 }, 0, 0];
            let payload = make_payload(RAW_VIDEO_TRACK, self.counter, 900, prefix);
            let mut api = peer.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(self.mid, None) else {
                return;
            };
            if let Some(until) = self.raw_mid_until {
                let ssrc = *tx.ssrc();
                let mid = (now < until).then_some(self.mid);
                peer.send_raw_rtp(ssrc, *pt, self.seq, ts, i == 2, mid, &payload);
                self.seq += 1;
                self.counter += 1;
                continue;
            }
            let seq: SeqNo = self.seq.into();
            tx.write_rtp(
                RtpWrite::new(pt, seq, ts, now, payload)
                    .marker(i == 2)
                    .nackable(true),
            );
            self.seq += 1;
            self.counter += 1;
        }
        self.frame += 1;
    }
}

/// A second SSRC on `mid` carrying random VP8-typed payloads: `count`
/// packets, written a few per call until done.
pub struct RogueSsrc {
    pub ssrc: Ssrc,
    pub mid: Mid,
    pub left: u32,
    seq: u64,
    rng: Lcg,
}

impl RogueSsrc {
    pub fn new(mid: Mid, count: u32) -> Self {
        RogueSsrc {
            ssrc: 0x0bad_5eed.into(),
            mid,
            left: count,
            seq: 100,
            rng: Lcg(99),
        }
    }

    pub fn tick(&mut self, peer: &mut RawPeer, _now: Instant) {
        if self.left == 0 || !peer.connected {
            return;
        }
        let Some(pt) = peer.pt(self.mid, Codec::Vp8) else {
            return;
        };
        for _ in 0..3.min(self.left) {
            let len = 50 + (self.rng.next_u32() % 1000) as usize;
            let payload = self.rng.bytes(len);
            // Random sequence numbers and timestamps, the mid on every packet.
            let seq = (self.rng.next_u32() & 0xffff) as u64;
            let ts = self.rng.next_u32();
            let marker = self.rng.next_u32().is_multiple_of(2);
            peer.send_raw_rtp(*self.ssrc, *pt, seq, ts, marker, Some(self.mid), &payload);
            self.seq += 1;
            self.left -= 1;
        }
    }
}
