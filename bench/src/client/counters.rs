//! What sessions count as they run, shared with whoever holds their
//! handles: a publisher's packets and keyframe requests; a viewer's packets,
//! sequence gaps, latency and checked payloads.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;
use std::time::Duration;

use crate::stats::{Histogram, SeqTracker};

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
}
