//! Shard counters: kept as plain integers in the Sans-IO core, published once
//! per loop turn to atomics that the control plane reads for /metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::ids::SessionId;

macro_rules! counters {
    ($($name:ident: $help:literal),* $(,)?) => {
        /// Counters owned by one shard's core.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Counters {
            $(#[doc = $help] pub $name: u64,)*
        }

        /// The published copy of [`Counters`], readable from any thread.
        #[derive(Debug, Default)]
        pub struct SharedCounters {
            $(#[doc = $help] pub $name: AtomicU64,)*
        }

        impl SharedCounters {
            /// Overwrite with the core's latest values.
            pub fn publish(&self, c: &Counters) {
                $(self.$name.store(c.$name, Ordering::Relaxed);)*
            }

            /// Read a consistent-enough copy.
            pub fn snapshot(&self) -> Counters {
                Counters { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl Counters {
            /// Add every counter of `other` to this one.
            pub fn add(&mut self, other: &Counters) {
                $(self.$name += other.$name;)*
            }

            /// (name, help, value) of every counter, for exposition.
            pub fn fields(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), $help, self.$name),)*]
            }
        }
    };
}

counters! {
    rx_packets: "datagrams received",
    rx_bytes: "bytes received",
    tx_packets: "datagrams sent",
    tx_bytes: "bytes sent",
    tx_sends: "send operations (a GSO send of several datagrams counts once)",
    rtp_in: "RTP packets received from publishers (after SRTP)",
    rtp_forwarded: "RTP packets written to viewers",
    viewer_visits: "viewer visits that wrote packets (one str0m drive each)",
    timer_drives: "sessions driven because their own timer came due",
    frames_held_expired: "video frames released by the frame-hold time limit instead of their last packet",
    direct_sessions: "viewers moved to sluice's own SRTP send path once DTLS gave their keys",
    direct_refused: "viewers kept on str0m's send path: their SRTP profile is not AES-GCM",
    srtp_aes128_gcm: "sessions whose DTLS handshake agreed on SRTP AEAD_AES_128_GCM (preferred when offered)",
    srtp_aes256_gcm: "sessions whose DTLS handshake agreed on SRTP AEAD_AES_256_GCM",
    srtp_aes_cm: "sessions whose DTLS handshake agreed on SRTP AES128_CM_SHA1_80",
    rtx_sent: "packets resent (RTX) by the direct send path on NACK",
    nack_misses: "NACKed packets the direct send path no longer had",
    drop_rtx_over_budget: "NACKed packets not resent: the viewer's retransmission budget (rtx_budget_percent of its media) was spent",
    sender_reports: "RTCP sender reports written by the direct send path",
    rtcp_unreadable: "viewer RTCP datagrams the direct send path could not authenticate (str0m reads them too)",
    rtcp_replaced: "str0m RTCP datagrams not sent for direct-path sessions (their reports come from the direct path)",
    drop_malformed: "datagrams dropped: not STUN/DTLS/RTP/RTCP",
    drop_unknown_flow: "datagrams dropped: from an address no session owns",
    drop_stun_unauthenticated: "STUN binding requests naming a session's ufrag from an unbound address that the session did not answer (no valid MESSAGE-INTEGRITY): the address stays unbound",
    session_addrs_evicted: "addresses unbound from a session to keep it within its limit of bound addresses",
    ice_restarts: "ICE restarts (WHIP/WHEP PATCH): sessions given new ICE credentials, keeping their DTLS session and SRTP keys",
    drop_session_error: "datagrams a session rejected",
    drop_oversized: "publisher RTP dropped: datagram over 1500 bytes (no WebRTC sender fragments)",
    drop_rogue_ssrc: "publisher RTP dropped: a new SSRC claimed a (mid, rid) whose SSRC is still live",
    drop_fanout_full: "fan-out batches dropped: destination shard's queue full",
    drop_fanout_video_shed: "video packets not sent to a shard whose fan-out queue is 3/4 full (audio still is)",
    drop_handshake_backlog: "DTLS handshake datagrams dropped: 256 of them, 512 KiB, or 16 of the same session's already waited for a turn (the peer retransmits)",
    handshakes_deferred: "DTLS handshake datagrams kept for a later turn, past the turn's budget of 2",
    drop_local_backlog: "packets not queued for this shard's own viewers: its backlog was 3/4 full (video) or full (everything)",
    drop_no_codec: "packets dropped: the viewer did not negotiate the codec",
    drop_send_error: "datagrams the kernel refused to send",
    fanout_batches_out: "fan-out batches sent to other shards",
    fanout_packets_in: "packets received from other shards",
    keyframe_requests: "keyframe requests (PLI) sent to publishers",
    layer_switch_requests: "simulcast layer changes asked for by viewers",
    layer_packets_suppressed: "simulcast packets not forwarded: no viewer takes their layer",
    temporal_left_out: "VP8 packet copies not sent to a viewer: their temporal layer is above the viewer's cap or what its bandwidth estimate allows",
    sessions_added: "sessions placed on this shard",
    sessions_removed: "sessions removed from this shard",
    sessions_timed_out: "sessions removed for silence or failed setup",
    loop_turns: "event loop turns",
    relay_packets_out: "relay datagrams sent to other nodes (media, repairs, feedback, keepalives)",
    relay_bytes_out: "relay bytes sent to other nodes",
    relay_packets_in: "relay datagrams from other nodes that authenticated",
    relay_bytes_in: "relay bytes from other nodes that authenticated",
    relay_repairs_sent: "relay packets resent on a downstream node's NACK",
    relay_repair_misses: "packets a downstream node NACKed that the relay no longer had",
    relay_nacks_sent: "NACKs sent upstream for relay packets that went missing",
    relay_repaired: "missing relay packets that arrived after a NACK",
    relay_lost: "missing relay packets given up on",
    relay_plis_sent: "keyframe requests sent upstream over relays",
    relay_keyframe_requests_in: "keyframe requests from downstream nodes",
    drop_relay_unauthenticated: "datagrams from a relay peer's address that did not authenticate with the link's key",
    drop_relay_replayed: "relay datagrams dropped: already received (replay window)",
    drop_relay_malformed: "relay datagrams dropped: authentic but malformed, or over the link's track limit",
    drop_relay_unknown_stream: "relay packets dropped: for a stream the link no longer feeds",
    tcp_accepted: "ICE-TCP connections accepted",
    tcp_refused: "ICE-TCP connections refused: the shard's or the source address's connection cap",
    tcp_frames_in: "RFC 4571 frames read from ICE-TCP connections",
    tcp_frames_out: "RFC 4571 frames queued to ICE-TCP connections",
    tcp_writes: "write syscalls to ICE-TCP connections (each carries every frame queued to one connection in a turn)",
    tcp_congested: "times an ICE-TCP connection's write queue passed its soft limit (its viewer then gets audio only until it drains)",
    tcp_drop_queue_full: "frames dropped: an ICE-TCP connection's write queue was at its hard limit",
    tcp_drop_budget: "frames dropped: the shard's ICE-TCP write queues together were at their budget (or past half of it, for a connection past its soft limit)",
    tcp_drop_no_conn: "frames dropped: their ICE-TCP connection had closed",
    tcp_closed_by_peer: "ICE-TCP connections closed by the peer or a socket error",
    tcp_closed_unanswered: "ICE-TCP connections closed: no authenticated STUN binding request within the time allowed",
    tcp_closed_idle: "ICE-TCP connections closed: silent for the idle timeout",
    tcp_closed_bad_frame: "ICE-TCP connections closed: a frame of length 0, over the limit, or not STUN before the connection was answered",
    tcp_closed_stalled: "ICE-TCP connections closed: their writes made no progress for the stall timeout",
    drop_tcp_video_congested: "video packets not sent to a viewer whose ICE-TCP connection is congested (until it drains and a keyframe arrives)",
    session_addr_changes: "sessions whose peer moved to another address after connecting (network change, NAT rebinding, UDP to TCP)",
    xdp_rx: "datagrams received through AF_XDP (io xdp)",
    xdp_kernel_rx: "datagrams io xdp received through the kernel's UDP socket: they arrived on a queue that is not their shard's",
    xdp_tx: "datagrams sent through AF_XDP (io xdp)",
    xdp_kernel_tx: "datagrams io xdp sent through the kernel's UDP socket: no link-layer address known for the destination yet",
    xdp_tx_full: "times the AF_XDP TX ring or its free frames were exhausted (the turn kicks the ring and tries once more; a second refusal drops the datagram)",
    xdp_tx_invalid: "datagrams dropped by io xdp: no source address of the destination's family, or over the MTU",
    xdp_rx_ring_full: "frames the kernel dropped: the AF_XDP RX ring was full",
    xdp_fill_empty: "times the kernel found the AF_XDP fill ring empty",
    xdp_rx_malformed: "AF_XDP frames that were not a well-formed Ethernet/IP/UDP datagram",
}

/// One media track of a session as the shard last measured it (about once a second).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrackStats {
    /// The media section.
    pub mid: String,
    /// Simulcast layer of an incoming track.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// "in" (from the peer) or "out" (to the peer).
    pub direction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// "audio" or "video".
    pub kind: Option<&'static str>,
    /// RTP packets.
    pub packets: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Over the last interval.
    pub bitrate_bps: u64,
    /// NACKs sent (in) or received (out).
    pub nacks: u64,
    /// PLIs sent (in) or received (out).
    pub plis: u64,
    /// FIRs sent (in) or received (out).
    pub firs: u64,
    /// Fraction lost, from the last receiver report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Round trip, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Outgoing simulcast track: the layer forwarded, the one wanted, the cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The layer it switches to.
    pub target_layer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The viewer's cap.
    pub max_layer: Option<u8>,
    /// VP8 temporal layers: the highest forwarded now (none: all of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporal_layer: Option<u8>,
    /// The viewer's temporal cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_temporal: Option<u8>,
    /// When `bytes` was measured, for the next rate.
    #[serde(skip)]
    pub measured_at: Option<std::time::Instant>,
}

/// A session's media byte totals at one moment, for the next rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ByteTotals {
    /// When they were read.
    pub at: std::time::Instant,
    /// Bytes received.
    pub rx: u64,
    /// Bytes sent.
    pub tx: u64,
}

/// A session's transport and media figures, published by its shard.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SessionStats {
    /// How the peer's selected address reaches it: "udp" or "tcp" (empty
    /// before the session has one).
    pub transport: &'static str,
    /// The peer's selected address (for TCP, the connection's remote end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<std::net::SocketAddr>,
    /// Times the peer moved to another address after connecting.
    pub addr_changes: u32,
    /// Datagram bytes from and to the peer.
    pub bytes_in: u64,
    /// Datagram bytes to the peer.
    pub bytes_out: u64,
    /// RTP payload rates over the last interval, bits/s.
    pub bitrate_in_bps: u64,
    /// Outgoing RTP rate, bits/s.
    pub bitrate_out_bps: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Round trip, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Fraction of packets lost from the peer / toward the peer, last interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_in: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Fraction lost toward the peer.
    pub loss_out: Option<f32>,
    /// Bandwidth estimate toward the peer (TWCC), where estimation is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bwe_bps: Option<u64>,
    /// Its media tracks.
    pub tracks: Vec<TrackStats>,
    /// When the media byte totals were measured, and those totals, for the next rates.
    #[serde(skip)]
    pub measured: Option<ByteTotals>,
}

/// Per-session stats of one shard, shared with the control plane.
pub type SessionStatsTable = Arc<Mutex<HashMap<SessionId, SessionStats>>>;

/// Upper bounds (seconds) of the loop-turn-time and forwarding-delay
/// histogram buckets: millisecond steps up to 5 ms, so a p99 near the 5 ms a
/// fan-out should stay under reads from the buckets, not from interpolation.
pub const TURN_BUCKETS: [f64; 15] = [
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 7.5e-3, 10e-3,
    25e-3, 100e-3,
];

/// A histogram of durations in [`TURN_BUCKETS`], written by one shard
/// thread: how long its busy loop turns take (turns that found no work and
/// parked are not counted), or how long forwarded packets spent in it.
#[derive(Debug, Default)]
pub struct TurnHistogram {
    /// Turns per bucket of [`TURN_BUCKETS`]; the last slot is +Inf.
    buckets: [AtomicU64; TURN_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl TurnHistogram {
    /// Count one sample of `nanos`.
    pub fn record(&self, nanos: u64) {
        self.record_n(nanos, 1);
    }

    /// Record `n` observations of `nanos` each.
    pub fn record_n(&self, nanos: u64, n: u64) {
        let secs = nanos as f64 * 1e-9;
        let i = TURN_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(TURN_BUCKETS.len());
        self.buckets[i].fetch_add(n, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos * n, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket bound (the last is +Inf, the total), and the sum in seconds.
    pub fn cumulative(&self) -> (Vec<u64>, f64) {
        let mut acc = 0;
        let counts = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        (counts, self.sum_nanos.load(Ordering::Relaxed) as f64 * 1e-9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_histogram_buckets_are_cumulative() {
        let h = TurnHistogram::default();
        h.record(5_000); // 5 µs: first bucket
        h.record(300_000); // 300 µs: ≤ 500 µs
        h.record(1_000_000_000); // 1 s: +Inf only
        let (c, sum) = h.cumulative();
        assert_eq!(c.len(), TURN_BUCKETS.len() + 1);
        assert_eq!(c[0], 1);
        assert_eq!(c[4], 1); // ≤ 250 µs
        assert_eq!(c[5], 2); // ≤ 500 µs
        assert_eq!(c[TURN_BUCKETS.len() - 1], 2);
        assert_eq!(c[TURN_BUCKETS.len()], 3);
        assert!((sum - 1.000305).abs() < 1e-9);
        h.record_n(2_000_000, 3); // 2 ms, three times: ≤ 2 ms
        let (c, sum) = h.cumulative();
        assert_eq!(c[6], 2); // ≤ 1 ms
        assert_eq!(c[7], 5); // ≤ 2 ms
        assert_eq!(c[TURN_BUCKETS.len()], 6);
        assert!((sum - 1.006305).abs() < 1e-9);
    }
}
