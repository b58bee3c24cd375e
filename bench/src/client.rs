//! WHIP publishers and WHEP viewers built on str0m, one tokio task and one UDP
//! socket each: what `sluice-bench` drives load with and what the integration
//! tests check media with.
//!
//! A publisher sends synthetic media whose payloads carry a stamp (track,
//! counter, send time) followed by a fill derived from the counter, so a
//! viewer can check every byte and measure latency without a codec.
//!
//! The pieces are in submodules: `session` starts sessions and hands out
//! their [`SessionHandle`]s; `signal` is WHIP/WHEP over HTTP; `connect` makes
//! a session's str0m and its way to the server; `role` is what a publisher
//! or viewer does with str0m's output, whichever loop runs it, `udp` or
//! `tcp`; `publisher` makes a publisher's media, `payload` its stamped
//! payloads; `counters` holds what sessions count.

use std::net::IpAddr;
use std::time::Duration;

mod connect;
mod counters;
mod payload;
mod publisher;
mod role;
mod session;
mod signal;
mod tcp;
mod udp;

pub use counters::{PublisherStats, Received, ViewerStats};
pub use payload::{check_payload, make_payload, Stamp, STAMP_LEN, TRACK_AUDIO, TRACK_VIDEO};
pub use session::{publish, publish_with, view, view_with, SessionHandle};
pub use signal::{candidate_ips, http_client, resolve_location};

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
    /// Where in each track's period (a video frame's, an audio packet's)
    /// this publisher's packets fall, as a fraction of it from its start
    /// (0 to 1; anything else counts as 0):
    /// publishers of one run get different phases, as independent senders
    /// have, instead of sending their frames at the same instants (they
    /// connect within milliseconds of each other).
    pub phase: f64,
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
            phase: 0.0,
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

/// How much a viewer inspects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerMode {
    /// Decrypt everything; check payload bytes and latency.
    Full,
    /// Count packets from cleartext RTP headers only; no decryption.
    CountOnly,
}
