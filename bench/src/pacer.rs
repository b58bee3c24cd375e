//! The publisher's pacer: spreads a frame's packets over time as a browser's
//! sender does instead of writing them all at once.
//!
//! libwebrtc's pacer (the one in Chrome, Edge and Safari) sends media at a
//! pacing rate of 2.5 times the target bitrate (its `kDefaultPaceMultiplier`)
//! through a leaky bucket: sending a packet adds its size to a debt that
//! drains at the pacing rate, and the next packet waits until the debt is
//! paid. Audio goes ahead of video and its bytes count toward the same debt.
//! A keyframe three times a frame's size at 1 Mbit/s thus leaves over about
//! 40 ms, not in one burst; that is what an SFU's fan-out sees from a browser.
//!
//! The pacer here holds what is due to be sent; the payload (and with it the
//! send stamp the viewers time latency from) is made when the packet leaves.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Bytes a packet takes on the wire beyond its RTP payload, counted toward
/// the pacing debt: the RTP header with its extensions and the SRTP tag.
pub const OVERHEAD: usize = 40;

/// One packet waiting for its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    /// RTP sequence number.
    pub seq: u64,
    /// RTP timestamp.
    pub ts: u32,
    /// Payload length.
    pub len: usize,
    /// Last packet of its frame.
    pub marker: bool,
    /// The codec prefix of the payload.
    pub prefix: [u8; 4],
}

/// A leaky-bucket pacer; a rate of 0 lets everything through at once.
#[derive(Debug)]
pub struct Pacer {
    rate_bps: u64,
    /// When the debt of what was sent is paid: the next packet may leave then.
    free_at: Option<Instant>,
    queue: VecDeque<Queued>,
}

impl Pacer {
    /// A pacer sending at `rate_bps` bits per second (0: not paced).
    pub fn new(rate_bps: u64) -> Self {
        Pacer {
            rate_bps,
            free_at: None,
            queue: VecDeque::new(),
        }
    }

    /// Queue a packet behind those already waiting.
    pub fn push(&mut self, p: Queued) {
        self.queue.push_back(p);
    }

    /// Count `bytes` sent outside the queue (audio, which goes first) toward
    /// the debt. Unpaced, there is no debt: `free_at` stays `None`.
    pub fn charge(&mut self, now: Instant, bytes: usize) {
        if self.rate_bps == 0 {
            return;
        }
        let start = self.free_at.map_or(now, |t| t.max(now));
        self.free_at = Some(start + self.time_for(bytes));
    }

    /// The next packet if it may leave at `now`; its bytes are charged.
    pub fn pop_due(&mut self, now: Instant) -> Option<Queued> {
        if self.free_at.is_some_and(|t| t > now) {
            return None;
        }
        let p = self.queue.pop_front()?;
        self.charge(now, p.len + OVERHEAD);
        Some(p)
    }

    /// When the next queued packet may leave, if any waits.
    pub fn next_due(&self) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        // Not paced, or nothing sent yet: at once.
        Some(self.free_at.unwrap_or_else(Instant::now))
    }

    fn time_for(&self, bytes: usize) -> Duration {
        Duration::from_nanos((bytes as u64 * 8).saturating_mul(1_000_000_000) / self.rate_bps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u64, len: usize) -> Queued {
        Queued {
            seq,
            ts: 0,
            len,
            marker: false,
            prefix: [0; 4],
        }
    }

    #[test]
    fn a_burst_leaves_one_packet_per_size_over_rate() {
        // 1,000 bytes with overhead at 8 Mbit/s: one per millisecond.
        let mut p = Pacer::new(8_000_000);
        let t0 = Instant::now();
        for s in 0..3 {
            p.push(packet(s, 1_000 - OVERHEAD));
        }
        assert_eq!(p.pop_due(t0).map(|q| q.seq), Some(0));
        assert_eq!(p.pop_due(t0), None);
        assert_eq!(p.next_due(), Some(t0 + Duration::from_millis(1)));
        assert_eq!(p.pop_due(t0 + Duration::from_micros(999)), None);
        assert_eq!(
            p.pop_due(t0 + Duration::from_millis(1)).map(|q| q.seq),
            Some(1)
        );
        assert_eq!(
            p.pop_due(t0 + Duration::from_millis(2)).map(|q| q.seq),
            Some(2)
        );
        assert_eq!(p.next_due(), None, "nothing waits");
    }

    #[test]
    fn a_packet_after_a_pause_leaves_at_once() {
        let mut p = Pacer::new(8_000_000);
        let t0 = Instant::now();
        p.push(packet(0, 1_000 - OVERHEAD));
        assert!(p.pop_due(t0).is_some());
        // The debt was paid long ago: no wait, and no credit saved up either.
        let later = t0 + Duration::from_secs(1);
        p.push(packet(1, 1_000 - OVERHEAD));
        p.push(packet(2, 1_000 - OVERHEAD));
        assert_eq!(p.pop_due(later).map(|q| q.seq), Some(1));
        assert_eq!(p.pop_due(later), None);
    }

    #[test]
    fn audio_sent_first_delays_the_video_behind_it() {
        let mut p = Pacer::new(8_000_000);
        let t0 = Instant::now();
        p.charge(t0, 500);
        p.push(packet(0, 100));
        assert_eq!(p.pop_due(t0), None);
        assert_eq!(p.next_due(), Some(t0 + Duration::from_micros(500)));
    }

    #[test]
    fn rate_zero_lets_everything_through() {
        let mut p = Pacer::new(0);
        let t0 = Instant::now();
        for s in 0..5 {
            p.push(packet(s, 1_200));
        }
        p.charge(t0, 10_000);
        assert_eq!(std::iter::from_fn(|| p.pop_due(t0)).count(), 5);
    }
}
