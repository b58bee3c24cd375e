//! What a shard reports: per-session and per-track stats from str0m's
//! events (and the SRTP sender's counts), publishers' layer rates, and
//! audio levels.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Mid, Rid};
use str0m::stats::{MediaEgressStats, MediaIngressStats, PeerStats};

use super::api::ShardEvent;
use super::session::{Session, SessionTable};
use super::track::ALL_TEMPORAL;
use crate::packet::is_tcp_flow;
use crate::stats::{ByteTotals, SessionStats, SessionStatsTable, TrackStats};

/// How often per-session stats are published to the control plane.
pub(super) const STATS_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// How often publishers' audio levels are reported.
pub(super) const LEVEL_INTERVAL: Duration = Duration::from_millis(300);

/// A publisher's layer rates are measured over at least this long.
const RATE_WINDOW: Duration = Duration::from_millis(500);

fn kind_name(k: MediaKind) -> &'static str {
    match k {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

/// Feedback counts of one track.
#[derive(Debug, Clone, Copy)]
struct FeedbackCounts {
    nacks: u64,
    plis: u64,
    firs: u64,
}

/// One str0m media stats event, either direction.
struct TrackSample {
    at: Instant,
    bytes: u64,
    packets: u64,
    counts: FeedbackCounts,
    loss: Option<f32>,
    rtt: Option<Duration>,
}

/// A session's transport stats from str0m, with what its SRTP sender sent
/// (str0m did not see that) added in.
pub(super) fn record_peer_stats(s: &mut Session, p: &PeerStats) {
    let st = &mut s.stats;
    let sender_bytes = s.sender.as_ref().map_or(0, |d| d.bytes);
    let bytes_tx = p.bytes_tx + sender_bytes;
    if let Some(m) = st.measured {
        let secs = p.timestamp.saturating_duration_since(m.at).as_secs_f64();
        if secs > 0.0 {
            st.bitrate_in_bps = (p.bytes_rx.saturating_sub(m.rx) as f64 * 8.0 / secs) as u64;
            st.bitrate_out_bps = (bytes_tx.saturating_sub(m.tx) as f64 * 8.0 / secs) as u64;
        }
    }
    st.measured = Some(ByteTotals {
        at: p.timestamp,
        rx: p.bytes_rx,
        tx: bytes_tx,
    });
    st.bytes_in = p.peer_bytes_rx;
    st.bytes_out = p.peer_bytes_tx + sender_bytes;
    st.rtt_ms = p.rtt.map(|d| d.as_secs_f64() * 1e3);
    st.loss_in = p.ingress_loss_fraction;
    st.loss_out = p.egress_loss_fraction;
    st.bwe_bps = p.bwe_tx.map(|b| b.as_u64()).or(s.estimate);
    // str0m reports no track it did not send on itself: the SRTP sender's
    // tracks are reported here, at the same pace.
    if let Some(d) = s.sender.as_ref() {
        let sent: Vec<_> = s
            .viewer_tracks
            .iter()
            .filter_map(|t| Some((t.mid, d.sent(*t.ssrc?)?)))
            .collect();
        for (mid, sent) in sent {
            let fb = sent.feedback;
            let sample = TrackSample {
                at: p.timestamp,
                bytes: sent.bytes,
                packets: sent.packets,
                counts: FeedbackCounts {
                    nacks: fb.nacks,
                    plis: fb.plis,
                    firs: fb.firs,
                },
                loss: fb.loss,
                rtt: fb.rtt,
            };
            if s.stats.rtt_ms.is_none() {
                s.stats.rtt_ms = fb.rtt.map(|d| d.as_secs_f64() * 1e3);
            }
            record_track(s, "out", mid, None, sample);
        }
    }
}

/// A track's incoming media stats from str0m.
pub(super) fn record_ingress(s: &mut Session, m: &MediaIngressStats) {
    let sample = TrackSample {
        at: m.timestamp,
        bytes: m.bytes,
        packets: m.packets,
        counts: FeedbackCounts {
            nacks: m.nacks,
            plis: m.plis,
            firs: m.firs,
        },
        loss: m.loss,
        rtt: m.rtt,
    };
    record_track(s, "in", m.mid, m.rid, sample);
}

/// A track's outgoing media stats from str0m.
pub(super) fn record_egress(s: &mut Session, m: &MediaEgressStats) {
    let sample = TrackSample {
        at: m.timestamp,
        bytes: m.bytes,
        packets: m.packets,
        counts: FeedbackCounts {
            nacks: m.nacks,
            plis: m.plis,
            firs: m.firs,
        },
        loss: m.loss,
        rtt: m.rtt,
    };
    record_track(s, "out", m.mid, None, sample);
}

fn record_track(
    s: &mut Session,
    direction: &'static str,
    mid: Mid,
    rid: Option<Rid>,
    m: TrackSample,
) {
    let kind = s.rtc.media(mid).map(|x| kind_name(x.kind()));
    let t = track_stats(&mut s.stats, direction, mid, rid);
    t.kind = kind;
    t.update_rate(m.at, m.bytes);
    t.packets = m.packets;
    (t.nacks, t.plis, t.firs) = (m.counts.nacks, m.counts.plis, m.counts.firs);
    t.loss = m.loss.or(t.loss);
    t.rtt_ms = m.rtt.map(|d| d.as_secs_f64() * 1e3).or(t.rtt_ms);
}

/// The stats entry of one track of a session, created on first use.
fn track_stats<'a>(
    st: &'a mut SessionStats,
    direction: &'static str,
    mid: Mid,
    rid: Option<Rid>,
) -> &'a mut TrackStats {
    let (mid, rid) = (mid.to_string(), rid.map(|r| r.to_string()));
    let i = match st
        .tracks
        .iter()
        .position(|t| t.direction == direction && t.mid == mid && t.rid == rid)
    {
        Some(i) => i,
        None => {
            st.tracks.push(TrackStats {
                mid,
                rid,
                direction,
                ..Default::default()
            });
            st.tracks.len() - 1
        }
    };
    &mut st.tracks[i]
}

impl TrackStats {
    fn update_rate(&mut self, at: Instant, bytes: u64) {
        if let Some(prev) = self.measured_at {
            let secs = at.saturating_duration_since(prev).as_secs_f64();
            if secs > 0.0 {
                self.bitrate_bps = (bytes.saturating_sub(self.bytes) as f64 * 8.0 / secs) as u64;
            }
        }
        self.measured_at = Some(at);
        self.bytes = bytes;
    }
}

/// Each local publisher's layer rates (to its stream) and loudest audio
/// level since the last report (as events).
pub(super) fn report_levels(
    sessions: &mut SessionTable,
    now: Instant,
    events: &mut Vec<ShardEvent>,
) {
    for s in sessions.iter_mut() {
        if s.role == crate::ids::Role::Publisher
            && now.saturating_duration_since(s.last_rate_report) >= RATE_WINDOW
        {
            report_layer_rates(s, now);
        }
        if let Some(peak) = s.audio_peak.take() {
            events.push(ShardEvent::AudioLevel {
                id: s.id,
                level: peak.level,
                voice: peak.voice,
            });
        }
    }
}

/// A publisher's payload rate, in total and per simulcast layer, to its stream.
fn report_layer_rates(s: &mut Session, now: Instant) {
    let secs = now
        .saturating_duration_since(s.last_rate_report)
        .as_secs_f64();
    s.last_rate_report = now;
    let mut total = 0;
    let layers: Vec<(Rid, u64)> = s
        .pub_tracks
        .iter_mut()
        .filter_map(|t| {
            let bps = (t.bytes as f64 * 8.0 / secs) as u64;
            t.bytes = 0;
            total += bps;
            t.rid.map(|r| (r, bps))
        })
        .collect();
    if let Some(stream) = &s.stream {
        stream.report_rates(total, layers);
    }
}

/// Copy every session's stats, with its tracks' current layers, to the shared table.
pub(super) fn publish_stats(
    sessions: &mut SessionTable,
    table: &SessionStatsTable,
    real_of: impl Fn(SocketAddr) -> Option<SocketAddr>,
) {
    let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
    for s in sessions.iter_mut() {
        if let Some(peer) = s.peer {
            let tcp = is_tcp_flow(&peer);
            s.stats.transport = if tcp { "tcp" } else { "udp" };
            s.stats.remote = if tcp { real_of(peer) } else { Some(peer) };
        }
        s.stats.addr_changes = s.addr_changes;
        for t in s.stats.tracks.iter_mut().filter(|t| t.direction == "out") {
            if let Some(v) = s.viewer_tracks.iter().find(|v| *v.mid == *t.mid) {
                t.layer = v.layer.map(|r| r.to_string());
                t.target_layer = v.target.map(|r| r.to_string());
                t.max_layer = v.max_layer;
                t.temporal_layer = (v.temporal != ALL_TEMPORAL).then_some(v.temporal);
                t.max_temporal = v.max_temporal;
            }
        }
        if table.get(&s.id) != Some(&s.stats) {
            table.insert(s.id, s.stats.clone());
        }
    }
}
