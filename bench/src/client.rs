//! WHIP publishers and WHEP viewers built on str0m, one tokio task and one UDP
//! socket each: what `sluice-bench` drives load with and what the integration
//! tests check media with.
//!
//! A publisher sends synthetic media whose payloads carry a stamp (track,
//! counter, send time) followed by a fill derived from the counter, so a
//! viewer can check every byte and measure latency without a codec.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_dataplane::is_rtp;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::gro;
use crate::pacer::Pacer;
use crate::stats::{Histogram, SeqTracker};
use publisher::{PubState, TrackTx};

mod publisher;
mod tcp;

/// How a session's media reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// A UDP socket and a UDP host candidate.
    #[default]
    Udp,
    /// ICE over TCP: a connection to the server's passive TCP candidate.
    Tcp,
}

/// Where and how to signal.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Full WHIP or WHEP URL, e.g. `https://127.0.0.1:8443/whip/cam`.
    pub url: String,
    /// Bearer token sent with the offer and the DELETE.
    pub token: Option<String>,
    /// Accept self-signed certificates.
    pub insecure: bool,
}

/// Where a session's socket binds and which media addresses it may send to.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Local IP to bind and offer as the host candidate; 127.0.0.1 when `None`.
    pub local_ip: Option<IpAddr>,
    /// When set, an answer whose ICE candidates name any other IP is refused,
    /// so no media goes anywhere but the target.
    pub allowed_media_ips: Option<Vec<IpAddr>>,
    /// Receive with UDP GRO (see [`crate::gro`]), so that a server's GSO sends
    /// reach the session whole instead of being cut up on the server's core.
    /// On by default; a kernel that refuses it leaves the session without it
    /// ([`SessionHandle::udp_gro`] tells).
    pub udp_gro: bool,
    /// UDP, or ICE over TCP.
    pub transport: Transport,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            local_ip: None,
            allowed_media_ips: None,
            udp_gro: true,
            transport: Transport::Udp,
        }
    }
}

/// Which video codec a synthetic publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8.
    Vp8,
    /// H.264.
    H264,
}

/// Synthetic media settings.
#[derive(Debug, Clone)]
pub struct MediaSpec {
    /// Send an Opus audio track.
    pub audio: bool,
    /// Send a video track.
    pub video: bool,
    /// Codec of the video track.
    pub video_codec: VideoCodec,
    /// Video bits per second.
    pub bitrate: u64,
    /// Video frames per second.
    pub fps: u32,
    /// Seconds between keyframes.
    pub keyframe_interval: Duration,
    /// When in the keyframe interval this publisher's periodic keyframes
    /// fall, counted from its start: publishers of one run get different
    /// phases, as independent encoders have, instead of all sending their
    /// keyframes together every interval.
    pub keyframe_phase: Duration,
    /// Largest RTP payload.
    pub max_payload: usize,
    /// The video is paced at this many times its bitrate, as libwebrtc
    /// paces at 2.5 times its target (see [`crate::pacer`]); 0 writes each
    /// frame's packets at once.
    pub pacing_factor: f64,
}

impl Default for MediaSpec {
    fn default() -> Self {
        MediaSpec {
            audio: true,
            video: true,
            video_codec: VideoCodec::Vp8,
            bitrate: 1_000_000,
            fps: 30,
            keyframe_interval: Duration::from_secs(2),
            keyframe_phase: Duration::ZERO,
            max_payload: 1150,
            pacing_factor: 2.5,
        }
    }
}

/// Errors while setting up a session.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WHIP/WHEP request did not complete (connect, TLS, timeout).
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The server refused the offer.
    #[error("server answered {status}: {reason}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// First line of the response body.
        reason: String,
    },
    /// The answer does not parse as SDP or names a media address not allowed.
    #[error("bad SDP answer: {0}")]
    Answer(String),
    /// The session's UDP socket could not be bound or used.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// str0m refused the offer, answer or input, or the session task failed.
    #[error("webrtc: {0}")]
    Rtc(String),
}

/// Track byte of the stamp of an audio payload.
pub const TRACK_AUDIO: u8 = 0;
/// Track byte of the stamp of a video payload.
pub const TRACK_VIDEO: u8 = 1;
const MAGIC: &[u8; 4] = b"SLCE";
/// Codec-shaped prefix before the stamp.
const PREFIX: usize = 4;
/// Prefix + magic + track + counter + send time.
pub const STAMP_LEN: usize = PREFIX + 4 + 1 + 4 + 8;

/// A payload's stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// [`TRACK_AUDIO`] or [`TRACK_VIDEO`].
    pub track: u8,
    /// Number of the payload within its track, from 0.
    pub counter: u32,
    /// Send time, in microseconds since the Unix epoch.
    pub sent_us: u64,
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn fill_byte(counter: u32, i: usize) -> u8 {
    (counter as u8).wrapping_mul(31).wrapping_add(i as u8)
}

/// Build a synthetic payload of `len` bytes (at least [`STAMP_LEN`]).
pub fn make_payload(track: u8, counter: u32, len: usize, prefix: [u8; PREFIX]) -> Vec<u8> {
    let len = len.max(STAMP_LEN);
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&prefix);
    p.extend_from_slice(MAGIC);
    p.push(track);
    p.extend_from_slice(&counter.to_be_bytes());
    p.extend_from_slice(&unix_us().to_be_bytes());
    for i in STAMP_LEN..len {
        p.push(fill_byte(counter, i));
    }
    p
}

/// Read a payload's stamp and check every fill byte; `None` if it is not ours or damaged.
pub fn check_payload(p: &[u8]) -> Option<Stamp> {
    if p.len() < STAMP_LEN || &p[PREFIX..PREFIX + 4] != MAGIC {
        return None;
    }
    let track = p[PREFIX + 4];
    let counter = u32::from_be_bytes(p[PREFIX + 5..PREFIX + 9].try_into().ok()?);
    let sent_us = u64::from_be_bytes(p[PREFIX + 9..PREFIX + 17].try_into().ok()?);
    for (i, b) in p.iter().enumerate().skip(STAMP_LEN) {
        if *b != fill_byte(counter, i) {
            return None;
        }
    }
    Some(Stamp {
        track,
        counter,
        sent_us,
    })
}

/// IP addresses of the ICE candidates in an SDP (`a=candidate:` lines).
pub fn candidate_ips(sdp: &str) -> Vec<IpAddr> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        // foundation component transport priority address port typ ...
        .filter_map(|c| c.split_whitespace().nth(4)?.parse().ok())
        .collect()
}

fn check_candidates(answer: &str, opts: &SessionOptions) -> Result<(), ClientError> {
    let Some(allowed) = &opts.allowed_media_ips else {
        return Ok(());
    };
    match candidate_ips(answer).into_iter().find(|ip| !allowed.contains(ip)) {
        Some(ip) => Err(ClientError::Answer(format!(
            "candidate {ip} is not an address of the target ({allowed:?}); refusing to send media there"
        ))),
        None => Ok(()),
    }
}

/// Best-effort DELETE of a session's resource.
async fn delete_resource(http: &reqwest::Client, ep: &Endpoint, location: Option<&str>) {
    let Some(loc) = location else { return };
    let mut req = http.delete(loc);
    if let Some(t) = &ep.token {
        req = req.bearer_auth(t);
    }
    let _ = req.send().await;
}

/// One DTLS certificate for every session of the process: making one costs
/// about a millisecond of CPU, which would otherwise bound the setup rate.
fn shared_cert() -> Option<DtlsCert> {
    static CERT: OnceLock<Option<DtlsCert>> = OnceLock::new();
    CERT.get_or_init(|| {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    })
    .clone()
}

/// The crypto provider of every client session: str0m's, with one shared
/// (validated once) DTLS configuration instead of one per session.
fn shared_provider() -> Arc<str0m::crypto::CryptoProvider> {
    static P: OnceLock<Arc<str0m::crypto::CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(sluice_dataplane::crypto_provider()))
        .clone()
}

fn with_shared_cert(cfg: RtcConfig) -> RtcConfig {
    let cfg = cfg.set_crypto_provider(shared_provider());
    match shared_cert() {
        Some(cert) => cfg.set_dtls_cert(cert),
        None => cfg,
    }
}

/// A session's way to the server before the answer: its UDP socket (with
/// whether GRO is on), whose host candidate `rtc` now has; or, for TCP,
/// nothing yet (the connection goes to a candidate of the answer).
enum Conn {
    Udp(UdpSocket, bool),
    Tcp,
}

async fn prepare(rtc: &mut Rtc, opts: &SessionOptions) -> Result<Conn, ClientError> {
    match opts.transport {
        Transport::Udp => {
            let (socket, gro) = bind(opts).await?;
            let local = socket.local_addr()?;
            rtc.add_local_candidate(
                Candidate::host(local, "udp").map_err(|e| ClientError::Rtc(e.to_string()))?,
            );
            Ok(Conn::Udp(socket, gro))
        }
        Transport::Tcp => Ok(Conn::Tcp),
    }
}

/// What [`launch`] started.
struct Launched {
    task: tokio::task::JoinHandle<Result<(), ClientError>>,
    local: SocketAddr,
    udp_gro: bool,
}

/// Run the session: on its UDP socket, or over a TCP connection to the
/// answer's passive candidate.
async fn launch(
    mut rtc: Rtc,
    conn: Conn,
    answer: &str,
    opts: &SessionOptions,
    role: Role,
    stop: Arc<Notify>,
    paused: Arc<AtomicBool>,
) -> Result<Launched, ClientError> {
    match conn {
        Conn::Udp(socket, udp_gro) => Ok(Launched {
            local: socket.local_addr()?,
            task: tokio::spawn(run(rtc, socket, role, stop)),
            udp_gro,
        }),
        Conn::Tcp => {
            let servers = tcp::passive_candidates(answer, opts);
            let stream = tcp::connect(&mut rtc, &servers).await?;
            Ok(Launched {
                local: stream.local_addr()?,
                task: tokio::spawn(tcp::run(rtc, stream, role, stop, paused)),
                udp_gro: false,
            })
        }
    }
}

/// A session's socket, and whether UDP GRO is on for it.
async fn bind(opts: &SessionOptions) -> Result<(UdpSocket, bool), ClientError> {
    let ip = opts.local_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    // A refusal (kernels before 5.0) is not an error: the session receives
    // as it would have without the option, and the handle reports it.
    let gro = opts.udp_gro && gro::enable(&socket).is_ok();
    // Without it latency is timed at the read instead, bench delays and all.
    let _ = gro::enable_timestamps(&socket);
    Ok((socket, gro))
}

async fn signal(
    http: &reqwest::Client,
    ep: &Endpoint,
    offer: String,
) -> Result<(String, Option<String>), ClientError> {
    let mut req = http
        .post(&ep.url)
        .header("content-type", "application/sdp")
        .body(offer);
    if let Some(t) = &ep.token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await?;
    let status = res.status();
    // Against the URL that answered: a redirected POST (307) made the
    // session on another node.
    let answered = res.url().to_string();
    let location = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(|l| resolve_location(&answered, l));
    let body = res.text().await?;
    if status.as_u16() != 201 && !status.is_success() {
        return Err(ClientError::Status {
            status: status.as_u16(),
            reason: body.lines().next().unwrap_or("").to_string(),
        });
    }
    Ok((body, location))
}

/// Resolve a Location header against the endpoint URL.
pub fn resolve_location(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.to_string();
    }
    // scheme://authority from the base
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let auth_end = base[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(base.len());
    if loc.starts_with('/') {
        format!("{}{}", &base[..auth_end], loc)
    } else {
        let dir_end = base.rfind('/').unwrap_or(base.len());
        format!("{}/{}", &base[..dir_end], loc)
    }
}

/// An HTTP client for signaling.
pub fn http_client(insecure: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(insecure)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("HTTP client")
}

fn rtc_config(video_codec: VideoCodec) -> RtcConfig {
    let cfg = with_shared_cert(RtcConfig::new())
        .set_rtp_mode(true)
        .set_stats_interval(None)
        .clear_codecs()
        .enable_opus(true, false);
    match video_codec {
        VideoCodec::Vp8 => cfg.enable_vp8(true),
        VideoCodec::H264 => cfg.enable_h264(true),
    }
}

/// Shared counters of one publisher.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// ICE and DTLS are up and media flows.
    pub connected: AtomicBool,
    /// Audio RTP packets written.
    pub audio_sent: AtomicU64,
    /// Video RTP packets written.
    pub video_sent: AtomicU64,
    /// RTP payload bytes written, audio and video together.
    pub bytes_sent: AtomicU64,
    /// Keyframe requests (PLI/FIR) received from the server.
    pub keyframe_requests: AtomicU64,
}

/// Per-track received media, in arrival order, for tests that check bytes.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// (track, counter) of each payload that passed the integrity check.
    pub stamps: Vec<(u8, u32)>,
    /// Per video SSRC: the RTP timestamp of the frame being received and
    /// the latest send time of its packets seen so far.
    frames: Vec<(u32, u32, u64)>,
    /// Payloads that failed the check.
    pub corrupt: u64,
}

impl Received {
    /// Note a video packet of the frame with RTP timestamp `ts` on `ssrc`,
    /// sent at `sent_us`; returns when the publisher had sent the frame as
    /// far as this viewer saw (the latest send time among its packets).
    pub fn frame_sent(&mut self, ssrc: u32, ts: u32, sent_us: u64) -> u64 {
        match self.frames.iter_mut().find(|f| f.0 == ssrc) {
            Some(f) if f.1 == ts => {
                f.2 = f.2.max(sent_us);
                f.2
            }
            Some(f) => {
                *f = (ssrc, ts, sent_us);
                sent_us
            }
            None => {
                self.frames.push((ssrc, ts, sent_us));
                sent_us
            }
        }
    }
}

/// Shared counters of one viewer.
#[derive(Debug, Default)]
pub struct ViewerStats {
    /// ICE and DTLS are up.
    pub connected: AtomicBool,
    /// RTP packets received.
    pub packets: AtomicU64,
    /// Bytes received: whole SRTP packets when counting only, decrypted payloads otherwise.
    pub bytes: AtomicU64,
    /// Filled by viewers that decrypt.
    pub received: Mutex<Received>,
    /// Publisher-to-viewer delay of each checked payload, in microseconds.
    pub latency: Mutex<Histogram>,
    /// What the path added to a video frame: from the publisher's send of
    /// its last packet to the arrival of its marker packet, in
    /// microseconds. A paced publisher spreads a frame's packets over tens
    /// of milliseconds; that spread is the sender's, not the server's, and
    /// a viewer can decode the frame once its last packet is in.
    pub frame_latency: Mutex<Histogram>,
    /// Per-SSRC sequence tracking (count-only and decrypting viewers alike).
    pub seq: Mutex<Vec<(u32, SeqTracker)>>,
    /// From the start of setup to connected, once connected.
    pub setup: Mutex<Option<Duration>>,
}

impl ViewerStats {
    /// Lost and expected packets over all SSRCs.
    pub fn loss(&self) -> (u64, u64) {
        let seq = self.seq.lock().unwrap();
        seq.iter()
            .fold((0, 0), |(l, e), (_, t)| (l + t.lost(), e + t.expected()))
    }
}

/// A running session; dropping it does not stop it, `close` does.
pub struct SessionHandle<S> {
    /// Counters the session updates as it runs.
    pub stats: Arc<S>,
    /// The resource URL of the `Location` header, DELETEd on close.
    pub location: Option<String>,
    /// Local address of the session's UDP socket.
    pub local_addr: SocketAddr,
    /// The socket receives with UDP GRO: asked for and accepted by the kernel.
    pub udp_gro: bool,
    /// Over TCP: while set, the session reads nothing from its connection.
    pub paused: Arc<AtomicBool>,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<Result<(), ClientError>>,
    http: reqwest::Client,
    endpoint: Endpoint,
}

impl<S> SessionHandle<S> {
    /// Stop media, DELETE the resource, and wait for the task.
    pub async fn close(self) -> Result<(), ClientError> {
        self.stop.notify_one();
        let r = self.task.await;
        if let Some(loc) = &self.location {
            let mut req = self.http.delete(loc);
            if let Some(t) = &self.endpoint.token {
                req = req.bearer_auth(t);
            }
            let _ = req.send().await;
        }
        match r {
            Ok(r) => r,
            Err(e) => Err(ClientError::Rtc(format!("task: {e}"))),
        }
    }

    /// Stop without telling the server (as a vanished client would).
    pub async fn vanish(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Whether the session has ended (closed by either side or failed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Start a WHIP publisher of synthetic media on 127.0.0.1.
pub async fn publish(
    http: &reqwest::Client,
    ep: &Endpoint,
    spec: MediaSpec,
) -> Result<SessionHandle<PublisherStats>, ClientError> {
    publish_with(http, ep, spec, &SessionOptions::default()).await
}

/// Start a WHIP publisher of synthetic media.
pub async fn publish_with(
    http: &reqwest::Client,
    ep: &Endpoint,
    spec: MediaSpec,
    opts: &SessionOptions,
) -> Result<SessionHandle<PublisherStats>, ClientError> {
    let mut rtc = rtc_config(spec.video_codec).build(Instant::now());
    let conn = prepare(&mut rtc, opts).await?;
    let mut api = rtc.sdp_api();
    let audio_mid = spec
        .audio
        .then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
    let video_mid = spec
        .video
        .then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
    let (offer, pending) = api
        .apply()
        .ok_or_else(|| ClientError::Rtc("nothing to offer".into()))?;
    let stats = Arc::new(PublisherStats::default());
    let state = PubState {
        pacer: Pacer::new((spec.bitrate as f64 * spec.pacing_factor) as u64),
        spec,
        audio: audio_mid.map(|m| TrackTx::new(m, TRACK_AUDIO)),
        video: video_mid.map(|m| TrackTx::new(m, TRACK_VIDEO)),
        stats: stats.clone(),
    };
    let offered = Offered {
        rtc,
        conn,
        offer: offer.to_sdp_string(),
        pending,
    };
    establish(http, ep, offered, opts, Role::Pub(Box::new(state)), stats).await
}

/// A session's str0m with its offer made and its connection prepared.
struct Offered {
    rtc: Rtc,
    conn: Conn,
    offer: String,
    pending: SdpPendingOffer,
}

/// Post the offer, accept the answer and run the session as `role`; the
/// server's resource is deleted again when the answer's candidates or the
/// connection to them fail.
async fn establish<S>(
    http: &reqwest::Client,
    ep: &Endpoint,
    o: Offered,
    opts: &SessionOptions,
    role: Role,
    stats: Arc<S>,
) -> Result<SessionHandle<S>, ClientError> {
    let Offered {
        mut rtc,
        conn,
        offer,
        pending,
    } = o;
    let (answer_sdp, location) = signal(http, ep, offer).await?;
    if let Err(e) = check_candidates(&answer_sdp, opts) {
        delete_resource(http, ep, location.as_deref()).await;
        return Err(e);
    }
    let answer =
        SdpAnswer::from_sdp_string(&answer_sdp).map_err(|e| ClientError::Answer(e.to_string()))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| ClientError::Rtc(e.to_string()))?;
    let stop = Arc::new(Notify::new());
    let paused = Arc::new(AtomicBool::new(false));
    let launched = match launch(
        rtc,
        conn,
        &answer_sdp,
        opts,
        role,
        stop.clone(),
        paused.clone(),
    )
    .await
    {
        Ok(l) => l,
        Err(e) => {
            delete_resource(http, ep, location.as_deref()).await;
            return Err(e);
        }
    };
    Ok(SessionHandle {
        stats,
        location,
        local_addr: launched.local,
        udp_gro: launched.udp_gro,
        paused,
        stop,
        task: launched.task,
        http: http.clone(),
        endpoint: ep.clone(),
    })
}

/// How much a viewer inspects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerMode {
    /// Decrypt everything; check payload bytes and latency.
    Full,
    /// Count packets from cleartext RTP headers only; no decryption.
    CountOnly,
}

/// Start a WHEP viewer on 127.0.0.1.
pub async fn view(
    http: &reqwest::Client,
    ep: &Endpoint,
    mode: ViewerMode,
) -> Result<SessionHandle<ViewerStats>, ClientError> {
    view_with(http, ep, mode, &SessionOptions::default()).await
}

/// Start a WHEP viewer.
pub async fn view_with(
    http: &reqwest::Client,
    ep: &Endpoint,
    mode: ViewerMode,
    opts: &SessionOptions,
) -> Result<SessionHandle<ViewerStats>, ClientError> {
    let started = Instant::now();
    // Offer both codecs so any publisher can be watched.
    let mut rtc = with_shared_cert(RtcConfig::new())
        .set_rtp_mode(true)
        .set_stats_interval(None)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_h264(true)
        .build(Instant::now());
    let conn = prepare(&mut rtc, opts).await?;
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api
        .apply()
        .ok_or_else(|| ClientError::Rtc("nothing to offer".into()))?;
    let stats = Arc::new(ViewerStats::default());
    let state = ViewState {
        mode,
        stats: stats.clone(),
        started,
        rx_unix_us: None,
    };
    let offered = Offered {
        rtc,
        conn,
        offer: offer.to_sdp_string(),
        pending,
    };
    establish(http, ep, offered, opts, Role::View(state), stats).await
}

/// Between draining str0m and waiting, shared by the UDP and TCP loops: a
/// pending kick (str0m's timeout after a publisher wrote) or a publisher
/// write that is due runs now (`None`: drain again); otherwise the time to
/// wait until, str0m's `timeout` or the publisher's next write.
fn next_wake(
    rtc: &mut Rtc,
    role: &mut Role,
    now: Instant,
    timeout: Instant,
    kick: &mut bool,
) -> Result<Option<Instant>, ClientError> {
    if *kick {
        *kick = false;
        rtc.handle_input(Input::Timeout(now))
            .map_err(|e| ClientError::Rtc(e.to_string()))?;
        return Ok(None);
    }
    let mut wake = timeout;
    if let Role::Pub(p) = role {
        if p.stats.connected.load(Ordering::Relaxed) && p.write_due(rtc, now) {
            *kick = true;
            return Ok(None);
        }
        if let Some(t) = p.next_due() {
            wake = wake.min(t);
        }
    }
    Ok(Some(wake.max(now)))
}

struct ViewState {
    mode: ViewerMode,
    stats: Arc<ViewerStats>,
    started: Instant,
    /// When the kernel received the datagram being handled, if it said.
    rx_unix_us: Option<u64>,
}

enum Role {
    Pub(Box<PubState>),
    View(ViewState),
}

async fn run(
    mut rtc: Rtc,
    socket: UdpSocket,
    mut role: Role,
    stop: Arc<Notify>,
) -> Result<(), ClientError> {
    let local = socket.local_addr()?;
    let mut kick = false;
    // Whether str0m took input since its output was last drained; a count-only
    // viewer mostly does not, and then its last timeout still holds.
    let mut dirty = true;
    let mut timeout = Instant::now();
    // Datagrams str0m asked to send, sent after each drain.
    let mut outbox: Vec<Transmit> = Vec::new();
    loop {
        if dirty {
            dirty = false;
            let next = drain(&mut rtc, &mut role, &mut outbox);
            flush(&socket, &mut outbox).await;
            match next? {
                Some(t) => timeout = t,
                None => return Ok(()),
            }
        }
        let now = Instant::now();
        let Some(wake) = next_wake(&mut rtc, &mut role, now, timeout, &mut kick)? else {
            dirty = true;
            continue;
        };
        tokio::select! {
            r = socket.readable() => {
                r?;
                // Reading and handling a read never awaits, so it can use the
                // thread's buffer; the replies str0m makes wait in `outbox`.
                let alive = RECV_BUF.with_borrow_mut(|buf| {
                    receive(&socket, buf, &mut rtc, &mut role, local, &mut outbox, &mut timeout)
                });
                flush(&socket, &mut outbox).await;
                if !alive? {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                rtc.handle_input(Input::Timeout(Instant::now()))
                    .map_err(|e| ClientError::Rtc(e.to_string()))?;
                dirty = true;
            }
            _ = stop.notified() => {
                let _ = rtc.close();
                // Let close_notify and BYE out.
                while let Ok(out) = rtc.poll_output() {
                    match out {
                        Output::Transmit(t) => { let _ = socket.send_to(&t.contents, t.destination).await; }
                        Output::Timeout(_) => break,
                        Output::Event(_) => {}
                    }
                }
                return Ok(());
            }
        }
    }
}

thread_local! {
    /// The receive buffer of the sessions running on this thread. A GRO read
    /// needs room for 64 KiB; one buffer per session would hold over 600 MiB
    /// at 10,000 viewers, while a session never awaits between reading into the
    /// buffer and handling what it read, so the sessions of a thread can
    /// share one.
    static RECV_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; gro::RECV_BUFFER]);
}

/// Drains str0m's output down to its next timeout: transmits are queued on
/// `outbox`, events handled. `None` when the session is over.
fn drain(
    rtc: &mut Rtc,
    role: &mut Role,
    outbox: &mut Vec<Transmit>,
) -> Result<Option<Instant>, ClientError> {
    loop {
        match rtc.poll_output() {
            Ok(Output::Timeout(t)) => return Ok(rtc.is_alive().then_some(t)),
            Ok(Output::Transmit(t)) => outbox.push(t),
            Ok(Output::Event(e)) => {
                if !handle_event(rtc, role, e) {
                    return Ok(None);
                }
            }
            Err(e) => return Err(ClientError::Rtc(e.to_string())),
        }
    }
}

/// Sends what str0m queued; a datagram that cannot be sent is dropped, as a
/// network would.
async fn flush(socket: &UdpSocket, outbox: &mut Vec<Transmit>) {
    for t in outbox.drain(..) {
        let _ = socket.send_to(&t.contents, t.destination).await;
    }
}

/// Reads what the socket has (for a connected count-only viewer up to
/// [`COUNT_BATCH`] more reads, otherwise one), splits GRO reads into their
/// datagrams and handles each as it would a datagram read on its own. Every
/// datagram str0m takes is followed by a drain of its output, as str0m
/// requires; `timeout` follows the last drain. Returns whether the session
/// goes on.
fn receive(
    socket: &UdpSocket,
    buf: &mut [u8],
    rtc: &mut Rtc,
    role: &mut Role,
    local: SocketAddr,
    outbox: &mut Vec<Transmit>,
    timeout: &mut Instant,
) -> Result<bool, ClientError> {
    let count_only = matches!(role, Role::View(v)
        if v.mode == ViewerMode::CountOnly && v.stats.connected.load(Ordering::Relaxed));
    // The count-only path must stay cheap: read what is queued now rather
    // than once per trip through the run loop, then yield.
    let reads = if count_only { 1 + COUNT_BATCH } else { 1 };
    for _ in 0..reads {
        let read = match socket.try_io(Interest::READABLE, || gro::recv(socket, buf)) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                break
            }
            Err(e) => return Err(e.into()),
        };
        if let Role::View(v) = role {
            v.rx_unix_us = read.rx_unix_us;
        }
        for data in read.datagrams(buf) {
            let fed = match &*role {
                Role::View(v) if count_only => count_or_feed(rtc, &v.stats, local, read.src, data)?,
                _ => feed(rtc, local, read.src, data)?,
            };
            if fed {
                match drain(rtc, role, outbox)? {
                    Some(t) => *timeout = t,
                    None => return Ok(false),
                }
            }
        }
    }
    Ok(true)
}

/// Reads a count-only viewer makes per wake-up after the first, before yielding.
const COUNT_BATCH: usize = 64;

/// Hands a datagram to str0m; returns whether it took it.
fn feed(
    rtc: &mut Rtc,
    local: SocketAddr,
    src: SocketAddr,
    data: &[u8],
) -> Result<bool, ClientError> {
    match Receive::new(Protocol::Udp, src, local, data) {
        Ok(r) => {
            rtc.handle_input(Input::Receive(Instant::now(), r))
                .map_err(|e| ClientError::Rtc(e.to_string()))?;
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

/// Count an RTP datagram from its header, or hand anything else (RTCP, STUN,
/// DTLS) to str0m; returns whether str0m took input.
fn count_or_feed(
    rtc: &mut Rtc,
    stats: &ViewerStats,
    local: SocketAddr,
    src: SocketAddr,
    data: &[u8],
) -> Result<bool, ClientError> {
    if is_rtp(data) {
        count_header(stats, data);
        return Ok(false);
    }
    feed(rtc, local, src, data)
}

fn count_header(stats: &ViewerStats, data: &[u8]) {
    stats.packets.fetch_add(1, Ordering::Relaxed);
    stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
    let seq = u16::from_be_bytes([data[2], data[3]]);
    let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    track_seq(stats, ssrc, seq);
}

fn track_seq(stats: &ViewerStats, ssrc: u32, seq: u16) {
    let mut s = stats.seq.lock().unwrap();
    match s.iter_mut().find(|(x, _)| *x == ssrc) {
        Some((_, t)) => t.record(seq),
        None => {
            let mut t = SeqTracker::new();
            t.record(seq);
            s.push((ssrc, t));
        }
    }
}

/// Returns false when the session is over.
fn handle_event(rtc: &mut Rtc, role: &mut Role, e: Event) -> bool {
    match (role, e) {
        (Role::Pub(p), Event::Connected) => {
            p.stats.connected.store(true, Ordering::Relaxed);
            p.start(Instant::now());
        }
        (Role::Pub(p), Event::KeyframeRequest(_)) => {
            p.stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
            if let Some(v) = p.video.as_mut() {
                v.force_key = true;
            }
        }
        (Role::View(v), Event::Connected) => {
            v.stats.connected.store(true, Ordering::Relaxed);
            *v.stats.setup.lock().unwrap() = Some(v.started.elapsed());
        }
        (Role::View(v), Event::RtpPacket(pkt)) => {
            v.stats.packets.fetch_add(1, Ordering::Relaxed);
            v.stats
                .bytes
                .fetch_add(pkt.payload.len() as u64, Ordering::Relaxed);
            track_seq(&v.stats, *pkt.header.ssrc, pkt.header.sequence_number);
            let mut r = v.stats.received.lock().unwrap();
            match check_payload(&pkt.payload) {
                Some(s) => {
                    r.stamps.push((s.track, s.counter));
                    // Arrival at the viewer's socket: the path's delay, not
                    // the bench's own in reading it.
                    let now = v.rx_unix_us.unwrap_or_else(unix_us);
                    v.stats
                        .latency
                        .lock()
                        .unwrap()
                        .record(now.saturating_sub(s.sent_us));
                    if s.track == TRACK_VIDEO {
                        let done = r.frame_sent(*pkt.header.ssrc, pkt.header.timestamp, s.sent_us);
                        if pkt.header.marker {
                            v.stats
                                .frame_latency
                                .lock()
                                .unwrap()
                                .record(now.saturating_sub(done));
                        }
                    }
                }
                None => r.corrupt += 1,
            }
        }
        (_, Event::IceConnectionStateChange(IceConnectionState::Disconnected)) => return false,
        (_, Event::Closed) => return false,
        _ => {}
    }
    let _ = rtc;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_timed_from_its_latest_packet_and_a_new_timestamp_starts_another() {
        let mut r = Received::default();
        assert_eq!(r.frame_sent(7, 100, 1_000), 1_000);
        assert_eq!(r.frame_sent(7, 100, 1_300), 1_300);
        // Reordered: an earlier-sent packet after a later one.
        assert_eq!(r.frame_sent(7, 100, 1_100), 1_300);
        assert_eq!(
            r.frame_sent(9, 500, 1_200),
            1_200,
            "another SSRC, its own frame"
        );
        assert_eq!(r.frame_sent(7, 200, 2_000), 2_000, "the next frame");
        assert_eq!(r.frame_sent(7, 200, 1_900), 2_000);
        assert_eq!(r.frame_sent(9, 500, 1_150), 1_200);
    }

    #[test]
    fn payload_round_trips_and_detects_damage() {
        let p = make_payload(TRACK_VIDEO, 77, 1000, [0x10, 0, 0, 0]);
        assert_eq!(p.len(), 1000);
        let s = check_payload(&p).unwrap();
        assert_eq!((s.track, s.counter), (TRACK_VIDEO, 77));
        let mut bad = p.clone();
        bad[500] ^= 1;
        assert_eq!(check_payload(&bad), None);
        assert_eq!(check_payload(&p[..10]), None);
    }

    #[test]
    fn location_resolves_against_the_endpoint() {
        assert_eq!(
            resolve_location("https://h:1/whip/s", "/whip/s/abc"),
            "https://h:1/whip/s/abc"
        );
        assert_eq!(
            resolve_location("https://h:1/whip/s", "s/abc"),
            "https://h:1/whip/s/abc"
        );
        assert_eq!(
            resolve_location("https://h:1/x", "http://o/y"),
            "http://o/y"
        );
    }

    #[test]
    fn answers_naming_other_hosts_are_refused() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n\
                   a=candidate:2 1 udp 2130706431 10.9.8.7 40000 typ host\r\n";
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "10.9.8.7".parse().unwrap();
        assert_eq!(candidate_ips(sdp), vec![lo, other]);
        let only_lo = SessionOptions {
            allowed_media_ips: Some(vec![lo]),
            ..SessionOptions::default()
        };
        assert!(check_candidates(sdp, &only_lo).is_err());
        let both = SessionOptions {
            allowed_media_ips: Some(vec![lo, other]),
            ..SessionOptions::default()
        };
        assert!(check_candidates(sdp, &both).is_ok());
        assert!(check_candidates(sdp, &SessionOptions::default()).is_ok());
    }

    /// An RTP packet of `len` bytes: version 2, payload type 96, `seq`, SSRC 7.
    fn rtp(seq: u16, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x80;
        p[1] = 96;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[8..12].copy_from_slice(&7u32.to_be_bytes());
        p
    }

    /// A session's socket takes a GSO send as one GRO read, and a count-only
    /// viewer counts each datagram in it as it would separate ones.
    #[tokio::test]
    async fn count_only_viewer_counts_each_datagram_of_a_gro_read() {
        let (socket, gro_on) = bind(&SessionOptions::default()).await.unwrap();
        assert!(gro_on, "the kernel refused UDP_GRO");
        let local = socket.local_addr().unwrap();
        let sender = gro::test_support::loopback_sender();
        let sent = [rtp(10, 1200), rtp(11, 1200), rtp(12, 1200), rtp(13, 400)];
        gro::test_support::send_gso(&sender, local, &sent);

        let stats = Arc::new(ViewerStats::default());
        stats.connected.store(true, Ordering::Relaxed);
        let mut role = Role::View(ViewState {
            mode: ViewerMode::CountOnly,
            stats: stats.clone(),
            started: Instant::now(),
            rx_unix_us: None,
        });
        let mut rtc = rtc_config(VideoCodec::Vp8).build(Instant::now());
        let mut outbox = Vec::new();
        let mut timeout = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), socket.readable())
            .await
            .expect("the send arrives")
            .unwrap();
        let alive = RECV_BUF
            .with_borrow_mut(|buf| {
                receive(
                    &socket,
                    buf,
                    &mut rtc,
                    &mut role,
                    local,
                    &mut outbox,
                    &mut timeout,
                )
            })
            .unwrap();
        assert!(alive);
        assert_eq!(stats.packets.load(Ordering::Relaxed), 4);
        assert_eq!(stats.bytes.load(Ordering::Relaxed), 3 * 1200 + 400);
        assert_eq!(stats.loss(), (0, 4));
        assert!(outbox.is_empty(), "RTP is counted, not handed to str0m");
    }

    /// Without GRO (`--no-gro`) the kernel cuts a GSO send up before the
    /// session reads it: one datagram per read, as before GRO was used.
    #[tokio::test]
    async fn without_gro_a_gso_send_arrives_as_separate_datagrams() {
        let opts = SessionOptions {
            udp_gro: false,
            ..SessionOptions::default()
        };
        let (socket, gro_on) = bind(&opts).await.unwrap();
        assert!(!gro_on);
        let sender = gro::test_support::loopback_sender();
        let sent = [rtp(1, 1000), rtp(2, 1000), rtp(3, 200)];
        gro::test_support::send_gso(&sender, socket.local_addr().unwrap(), &sent);
        let mut buf = vec![0u8; gro::RECV_BUFFER];
        for want in &sent {
            let read = tokio::time::timeout(
                Duration::from_secs(2),
                socket.async_io(Interest::READABLE, || gro::recv(&socket, &mut buf)),
            )
            .await
            .expect("the send arrives")
            .unwrap();
            assert_eq!(read.segment_size, None);
            assert_eq!(&buf[..read.len], &want[..]);
        }
    }
}
