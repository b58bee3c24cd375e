//! A publisher's media: audio every 20 ms, video frames at the spec's rate
//! with a keyframe on the publisher's own grid (and when asked), split into
//! packets and let out by the pacer as a browser's sender would.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{Mid, Pt};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::Rtc;

use super::{make_payload, MediaSpec, PublisherStats, VideoCodec, STAMP_LEN};
use crate::pacer::{self, Pacer, Queued};

pub(super) struct TrackTx {
    mid: Mid,
    track: u8,
    pt: Option<Pt>,
    seq: u64,
    counter: u32,
    next: Option<Instant>,
    last_key: Option<Instant>,
    /// The next periodic keyframe: on a fixed grid, whatever keyframes
    /// requests (PLI) add in between.
    next_key: Option<Instant>,
    pub(super) force_key: bool,
    frame: u32,
}

impl TrackTx {
    pub(super) fn new(mid: Mid, track: u8) -> Self {
        TrackTx {
            mid,
            track,
            pt: None,
            seq: 1000,
            counter: 0,
            next: None,
            last_key: None,
            next_key: None,
            force_key: false,
            frame: 0,
        }
    }
}

pub(super) struct PubState {
    pub(super) spec: MediaSpec,
    /// Video packets waiting for their turn on the wire.
    pub(super) pacer: Pacer,
    pub(super) audio: Option<TrackTx>,
    pub(super) video: Option<TrackTx>,
    pub(super) stats: Arc<PublisherStats>,
}

/// Time between a publisher's audio packets (20 ms Opus frames).
const AUDIO_PERIOD: Duration = Duration::from_millis(20);

/// Time between video frames at `fps`.
fn frame_gap(fps: u32) -> Duration {
    Duration::from_secs(1) / fps.max(1)
}

fn find_pt(rtc: &Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    let remote = rtc.media(mid)?.remote_pts().to_vec();
    rtc.codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == codec && remote.contains(&p.pt()))
        .map(|p| p.pt())
}

impl PubState {
    /// Write what is due at `now`; returns whether anything was written.
    pub(super) fn write_due(&mut self, rtc: &mut Rtc, now: Instant) -> bool {
        let mut wrote = false;
        let video_codec = match self.spec.video_codec {
            VideoCodec::Vp8 => Codec::Vp8,
            VideoCodec::H264 => Codec::H264,
        };
        if let Some(a) = self.audio.as_mut() {
            if a.pt.is_none() {
                a.pt = find_pt(rtc, a.mid, Codec::Opus);
            }
            while let (Some(pt), true) = (a.pt, a.next.is_some_and(|t| t <= now)) {
                let payload = make_payload(a.track, a.counter, 80, [0xfc, 0, 0, 0]);
                let ts = (a.counter as u64 * 960) as u32;
                let mut direct = rtc.direct_api();
                let Some(tx) = direct.stream_tx_by_mid(a.mid, None) else {
                    break;
                };
                let seq: SeqNo = a.seq.into();
                let len = payload.len();
                self.stats
                    .bytes_sent
                    .fetch_add(len as u64, Ordering::Relaxed);
                tx.write_rtp(RtpWrite::new(pt, seq, ts, now, payload).marker(true));
                self.stats.audio_sent.fetch_add(1, Ordering::Relaxed);
                // Audio goes ahead of the video waiting in the pacer, and
                // counts toward its debt.
                self.pacer.charge(now, len + pacer::OVERHEAD);
                a.seq += 1;
                a.counter += 1;
                a.next = a.next.map(|t| t + AUDIO_PERIOD);
                wrote = true;
            }
        }
        if let Some(v) = self.video.as_mut() {
            if v.pt.is_none() {
                v.pt = find_pt(rtc, v.mid, video_codec);
            }
            let frame_gap = frame_gap(self.spec.fps);
            while let (Some(_), true) = (v.pt, v.next.is_some_and(|t| t <= now)) {
                let periodic = periodic_key_due(&mut v.next_key, now, self.spec.keyframe_interval);
                let key = v.force_key || v.last_key.is_none() || periodic;
                if key {
                    v.last_key = Some(now);
                    v.force_key = false;
                }
                let mut frame_bytes =
                    (self.spec.bitrate / 8 / self.spec.fps.max(1) as u64) as usize;
                if key {
                    frame_bytes *= 3;
                }
                let per = self.spec.max_payload.max(STAMP_LEN + 8);
                let npkts = frame_bytes.div_ceil(per).max(1);
                let ts = (v.frame as u64 * 90_000 / self.spec.fps.max(1) as u64) as u32;
                for i in 0..npkts {
                    let len = if i + 1 == npkts {
                        (frame_bytes - per * (npkts - 1)).max(STAMP_LEN)
                    } else {
                        per
                    };
                    let prefix = match self.spec.video_codec {
                        // VP8 descriptor (S bit on the first packet) + frame tag (P bit clear = key).
                        VideoCodec::Vp8 => [
                            if i == 0 { 0x10 } else { 0x00 },
                            if key { 0x00 } else { 0x01 },
                            0,
                            0,
                        ],
                        // A single NAL unit header: IDR (5) or non-IDR slice (1).
                        VideoCodec::H264 => [if key { 0x65 } else { 0x41 }, 0, 0, 0],
                    };
                    self.pacer.push(Queued {
                        seq: v.seq,
                        ts,
                        len,
                        marker: i + 1 == npkts,
                        prefix,
                    });
                    v.seq += 1;
                }
                v.frame += 1;
                v.next = v.next.map(|t| t + frame_gap);
            }
            // What the pacer lets out now; the payload, and with it the send
            // stamp, is made as the packet leaves.
            while let Some(pt) = v.pt {
                let Some(q) = self.pacer.pop_due(now) else {
                    break;
                };
                let payload = make_payload(v.track, v.counter, q.len, q.prefix);
                let mut direct = rtc.direct_api();
                let Some(tx) = direct.stream_tx_by_mid(v.mid, None) else {
                    break;
                };
                self.stats
                    .bytes_sent
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                tx.write_rtp(
                    RtpWrite::new(pt, q.seq.into(), q.ts, now, payload)
                        .marker(q.marker)
                        .nackable(true),
                );
                self.stats.video_sent.fetch_add(1, Ordering::Relaxed);
                v.counter += 1;
                wrote = true;
            }
        }
        wrote
    }

    pub(super) fn next_due(&self) -> Option<Instant> {
        [&self.audio, &self.video]
            .into_iter()
            .flatten()
            .filter(|t| t.pt.is_some() || t.next.is_some())
            .filter_map(|t| t.next)
            .chain(self.pacer.next_due())
            .min()
    }

    pub(super) fn start(&mut self, now: Instant) {
        // A fraction of the period; anything else starts at once.
        let phase = if (0.0..=1.0).contains(&self.spec.phase) {
            self.spec.phase
        } else {
            0.0
        };
        if let Some(a) = self.audio.as_mut() {
            a.next = Some(now + AUDIO_PERIOD.mul_f64(phase));
        }
        if let Some(v) = self.video.as_mut() {
            v.next = Some(now + frame_gap(self.spec.fps).mul_f64(phase));
        }
        if let Some(v) = self.video.as_mut() {
            // The first frame is a keyframe; periodic ones follow on the
            // publisher's phase of the interval.
            let interval = self.spec.keyframe_interval.max(Duration::from_millis(1));
            let phase = Duration::from_nanos(
                (self.spec.keyframe_phase.as_nanos() % interval.as_nanos()) as u64,
            );
            v.next_key = Some(now + if phase.is_zero() { interval } else { phase });
        }
    }
}

/// Whether a periodic keyframe is due at `now`; if so, moves `next` to the
/// next point of its grid after `now` (frames missed in between do not
/// bunch up keyframes).
fn periodic_key_due(next: &mut Option<Instant>, now: Instant, interval: Duration) -> bool {
    let Some(t) = *next else {
        return false;
    };
    if t > now {
        return false;
    }
    let interval = interval.max(Duration::from_millis(1));
    let mut t = t;
    while t <= now {
        t += interval;
    }
    *next = Some(t);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(phase: f64) -> PubState {
        let spec = MediaSpec {
            phase,
            ..MediaSpec::default()
        };
        PubState {
            pacer: Pacer::new((spec.bitrate as f64 * spec.pacing_factor) as u64),
            spec,
            audio: Some(TrackTx::new(Mid::from("0"), 1)),
            video: Some(TrackTx::new(Mid::from("1"), 2)),
            stats: Arc::default(),
        }
    }

    #[test]
    fn a_publishers_phase_shifts_its_first_frame_and_audio_packet() {
        let t0 = Instant::now();
        let mut first = state(0.0);
        first.start(t0);
        assert_eq!(first.next_due(), Some(t0));
        let mut half = state(0.5);
        half.start(t0);
        // 30 frames/s and 20 ms audio: half of each period.
        let video = half.video.as_ref().and_then(|v| v.next).unwrap();
        let audio = half.audio.as_ref().and_then(|a| a.next).unwrap();
        assert_eq!(video - t0, Duration::from_secs(1) / 60);
        assert_eq!(audio - t0, Duration::from_millis(10));
        assert_eq!(half.next_due(), Some(audio));
        for odd in [f64::NAN, -0.5, 2.0] {
            let mut s = state(odd);
            s.start(t0);
            assert_eq!(s.next_due(), Some(t0), "phase {odd}");
        }
    }

    #[test]
    fn periodic_keyframes_stay_on_their_grid() {
        let t0 = Instant::now();
        let s = Duration::from_secs(2);
        let mut next = Some(t0 + Duration::from_millis(500));
        assert!(!periodic_key_due(&mut next, t0, s));
        assert!(periodic_key_due(
            &mut next,
            t0 + Duration::from_millis(500),
            s
        ));
        assert_eq!(next, Some(t0 + Duration::from_millis(2500)));
        assert!(!periodic_key_due(
            &mut next,
            t0 + Duration::from_millis(2400),
            s
        ));
        // Late by more than an interval: one keyframe, then back on the grid.
        assert!(periodic_key_due(
            &mut next,
            t0 + Duration::from_millis(7000),
            s
        ));
        assert_eq!(next, Some(t0 + Duration::from_millis(8500)));
        let mut none = None;
        assert!(!periodic_key_due(&mut none, t0, s));
    }
}
