//! A session's str0m and its way to the server: the DTLS certificate and
//! crypto provider every session shares, str0m's configuration, the UDP
//! socket (or, over TCP, the connection made once the answer names the
//! server's candidate), and the task that runs the session on it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use str0m::config::DtlsCert;
use str0m::{Candidate, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use super::role::Role;
use super::{tcp, udp, ClientError, SessionOptions, Transport, VideoCodec};
use crate::gro;

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

pub(super) fn with_shared_cert(cfg: RtcConfig) -> RtcConfig {
    let cfg = cfg.set_crypto_provider(shared_provider());
    match shared_cert() {
        Some(cert) => cfg.set_dtls_cert(cert),
        None => cfg,
    }
}

/// A session's way to the server before the answer: its UDP socket (with
/// whether GRO is on), whose host candidate `rtc` now has; or, for TCP,
/// nothing yet (the connection goes to a candidate of the answer).
pub(super) enum Conn {
    Udp(UdpSocket, bool),
    Tcp,
}

pub(super) async fn prepare(rtc: &mut Rtc, opts: &SessionOptions) -> Result<Conn, ClientError> {
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
pub(super) struct Launched {
    pub(super) task: tokio::task::JoinHandle<Result<(), ClientError>>,
    pub(super) local: SocketAddr,
    pub(super) udp_gro: bool,
}

/// Run the session: on its UDP socket, or over a TCP connection to the
/// answer's passive candidate.
pub(super) async fn launch(
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
            task: tokio::spawn(udp::run(rtc, socket, role, stop)),
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
pub(super) async fn bind(opts: &SessionOptions) -> Result<(UdpSocket, bool), ClientError> {
    let ip = opts.local_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    // A refusal (kernels before 5.0) is not an error: the session receives
    // as it would have without the option, and the handle reports it.
    let gro = opts.udp_gro && gro::enable(&socket).is_ok();
    // Without it latency is timed at the read instead, bench delays and all.
    let _ = gro::enable_timestamps(&socket);
    Ok((socket, gro))
}

pub(super) fn rtc_config(video_codec: VideoCodec) -> RtcConfig {
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
