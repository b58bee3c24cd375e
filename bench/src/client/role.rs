//! A session's role, publisher or viewer, and what it does with str0m
//! whichever loop carries its packets: draining str0m's output, handling its
//! events, waking for the publisher's writes, and counting the RTP headers a
//! count-only viewer does not decrypt. Shared by the UDP and TCP loops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use str0m::net::Transmit;
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use super::counters::ViewerStats;
use super::payload::{check_payload, unix_us, TRACK_VIDEO};
use super::publisher::PubState;
use super::{ClientError, ViewerMode};
use crate::stats::SeqTracker;

/// Between draining str0m and waiting, shared by the UDP and TCP loops: a
/// pending kick (str0m's timeout after a publisher wrote) or a publisher
/// write that is due runs now (`None`: drain again); otherwise the time to
/// wait until, str0m's `timeout` or the publisher's next write.
pub(super) fn next_wake(
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

pub(super) struct ViewState {
    pub(super) mode: ViewerMode,
    pub(super) stats: Arc<ViewerStats>,
    pub(super) started: Instant,
    /// When the kernel received the datagram being handled, if it said.
    pub(super) rx_unix_us: Option<u64>,
}

pub(super) enum Role {
    Pub(Box<PubState>),
    View(ViewState),
}

/// Hands str0m the timeout it asked for.
pub(super) fn time_out(rtc: &mut Rtc) -> Result<(), ClientError> {
    rtc.handle_input(Input::Timeout(Instant::now()))
        .map_err(|e| ClientError::Rtc(e.to_string()))
}

/// Closes the session and queues on `outbox` what str0m sends as it
/// closes (DTLS close_notify, RTCP BYE).
pub(super) fn close(rtc: &mut Rtc, outbox: &mut Vec<Transmit>) {
    let _ = rtc.close();
    while let Ok(out) = rtc.poll_output() {
        match out {
            Output::Transmit(t) => outbox.push(t),
            Output::Timeout(_) => break,
            Output::Event(_) => {}
        }
    }
}

/// Drains str0m's output down to its next timeout: transmits are queued on
/// `outbox`, events handled. `None` when the session is over.
pub(super) fn drain(
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

pub(super) fn count_header(stats: &ViewerStats, data: &[u8]) {
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
