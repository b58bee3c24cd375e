//! The arithmetic of a measurement window: which viewers decrypt and which
//! stream each watches, what each should have received, a viewer's counters
//! at the window's ends and what they say it lost, and what a window's
//! figures mean for a ramp's loss limit and for the reader.

use std::sync::atomic::Ordering;

use crate::client::ViewerStats;
use crate::report::{Spread, StepReport};
use crate::stats::summarize;

/// Packets published but not delivered in a window, in percent of what all
/// viewers should have received; 0 when nothing was published. Unlike
/// sequence-number loss this also shows a server that falls behind and
/// queues (no gap, yet fewer packets than were sent).
pub fn shortfall_percent(step: &StepReport) -> f64 {
    step.delivery_percent.map_or(0.0, |d| (100.0 - d).max(0.0))
}

/// Did a window lose, or fall behind by, more than `limit` percent?
pub fn over_loss_limit(step: &StepReport, limit: f64) -> bool {
    step.loss_percent > limit || shortfall_percent(step) > limit
}

/// What a reader of a window's figures should know.
pub fn step_notes(m: &StepReport) -> Vec<String> {
    let mut notes = Vec::new();
    let shortfall = shortfall_percent(m);
    if shortfall > 2.0 && m.loss_percent < shortfall / 2.0 {
        notes.push(format!(
            "viewers received {:.1}% of what was published, with {:.3}% sequence loss: the server is falling behind and queueing, so latency grows",
            100.0 - shortfall,
            m.loss_percent
        ));
    }
    if let Some(wait) = m
        .server
        .as_ref()
        .and_then(|s| s.runqueue_wait_seconds)
        .filter(|&w| w > 0.05 * m.seconds)
    {
        notes.push(format!(
            "the server's threads waited {wait:.2} s for a CPU in a {:.1} s window: other processes share its cores, so loss, latency and delivery understate what it can do (packets per CPU-second and memory per viewer still hold)",
            m.seconds
        ));
    }
    if m.bench.saturated {
        notes.push(format!(
            "the load generator used {:.2} cores of what it may use: delivered rate, loss and latency may be bounded by it, not by the server",
            m.bench.cores
        ));
    }
    notes
}

/// Is viewer `index` one of the decrypting sample? Every k-th from the first,
/// so there is always at least one.
pub fn is_sample(index: usize, percent: f64) -> bool {
    let every = (100.0 / percent.clamp(1e-6, 100.0)).round().max(1.0) as usize;
    index.is_multiple_of(every)
}

/// The stream viewer `index` watches: viewers are dealt round-robin.
pub fn stream_of(index: usize, streams: usize) -> usize {
    index % streams.max(1)
}

/// Is viewer `index`, of a run of `streams` streams, one of the decrypting
/// sample? [`is_sample`] over each stream's own viewers, so every stream has
/// latency samples: every k-th viewer overall would all watch the same stream
/// whenever k is a multiple of the stream count.
pub fn is_sample_of(index: usize, streams: usize, percent: f64) -> bool {
    is_sample(index / streams.max(1), percent)
}

/// Packets the publishers sent between two readings, per stream.
pub fn published_between(before: &[u64], after: &[u64]) -> Vec<u64> {
    after
        .iter()
        .enumerate()
        .map(|(i, a)| a.saturating_sub(before.get(i).copied().unwrap_or(0)))
        .collect()
}

/// Packets all viewers should have received: what the publisher of each
/// viewer's stream sent. Streams past the end of `published` count as silent.
pub fn expected_deliveries(published: &[u64], viewer_streams: &[usize]) -> u64 {
    viewer_streams
        .iter()
        .map(|&s| published.get(s).copied().unwrap_or(0))
        .sum()
}

/// A viewer's counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewerMark {
    /// RTP packets received so far.
    pub packets: u64,
    /// Packets missing from its sequence numbers so far.
    pub lost: u64,
    /// Packets its sequence numbers span so far.
    pub expected: u64,
    /// Payloads that failed the integrity check so far.
    pub corrupt: u64,
}

impl ViewerMark {
    pub(super) fn read(stats: &ViewerStats) -> ViewerMark {
        let (lost, expected) = stats.loss();
        ViewerMark {
            packets: stats.packets.load(Ordering::Relaxed),
            lost,
            expected,
            corrupt: stats
                .received
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .corrupt,
        }
    }
}

/// What one viewer saw in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewerWindow {
    /// RTP packets received in the window.
    pub packets: u64,
    /// Packets lost in the window, from sequence numbers.
    pub lost: u64,
    /// Packets expected in the window, from sequence numbers.
    pub expected: u64,
}

/// A viewer's window from its marks. A viewer that received nothing is
/// charged with everything published meanwhile; a late packet filling an old
/// gap can make `lost` shrink, which counts as none lost.
pub fn viewer_window(before: &ViewerMark, after: &ViewerMark, published: u64) -> ViewerWindow {
    let packets = after.packets.saturating_sub(before.packets);
    if packets == 0 {
        return ViewerWindow {
            packets: 0,
            lost: published,
            expected: published,
        };
    }
    let expected = after.expected.saturating_sub(before.expected);
    let lost = after.lost.saturating_sub(before.lost).min(expected);
    ViewerWindow {
        packets,
        lost,
        expected,
    }
}

/// Overall loss in percent and the per-viewer spread.
pub fn loss_figures(windows: &[ViewerWindow]) -> (f64, Option<Spread>) {
    let (lost, expected) = windows
        .iter()
        .fold((0u64, 0u64), |(l, e), w| (l + w.lost, e + w.expected));
    let overall = if expected > 0 {
        100.0 * lost as f64 / expected as f64
    } else {
        0.0
    };
    let mut each: Vec<f64> = windows
        .iter()
        .filter(|w| w.expected > 0)
        .map(|w| 100.0 * w.lost as f64 / w.expected as f64)
        .collect();
    let spread = summarize(&mut each).map(|s| Spread {
        min: s.min,
        median: s.median,
        max: s.max,
    });
    (overall, spread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::BenchCpu;

    #[test]
    fn sample_takes_the_first_and_every_kth() {
        let picked: Vec<usize> = (0..300).filter(|&i| is_sample(i, 1.0)).collect();
        assert_eq!(picked, vec![0, 100, 200]);
        assert!((0..5).all(|i| is_sample(i, 100.0)));
        assert_eq!((0..10).filter(|&i| is_sample(i, 50.0)).count(), 5);
        // Fewer viewers than one in a hundred still get one decrypting viewer.
        assert!(is_sample(0, 0.1));
    }

    #[test]
    fn window_counts_only_what_happened_inside_it() {
        let a = ViewerMark {
            packets: 100,
            lost: 2,
            expected: 102,
            corrupt: 0,
        };
        let b = ViewerMark {
            packets: 300,
            lost: 5,
            expected: 305,
            corrupt: 0,
        };
        let w = viewer_window(&a, &b, 203);
        assert_eq!(
            w,
            ViewerWindow {
                packets: 200,
                lost: 3,
                expected: 203
            }
        );
    }

    #[test]
    fn late_packet_filling_an_old_gap_is_not_negative_loss() {
        let a = ViewerMark {
            packets: 100,
            lost: 4,
            expected: 104,
            corrupt: 0,
        };
        let b = ViewerMark {
            packets: 201,
            lost: 3,
            expected: 204,
            corrupt: 0,
        };
        assert_eq!(viewer_window(&a, &b, 100).lost, 0);
    }

    #[test]
    fn silent_viewer_lost_everything_published() {
        let a = ViewerMark {
            packets: 50,
            lost: 0,
            expected: 50,
            corrupt: 0,
        };
        let w = viewer_window(&a, &a, 400);
        assert_eq!((w.lost, w.expected), (400, 400));
        let (overall, spread) = loss_figures(&[
            w,
            ViewerWindow {
                packets: 400,
                lost: 0,
                expected: 400,
            },
        ]);
        assert!((overall - 50.0).abs() < 1e-9);
        let s = spread.unwrap();
        assert_eq!((s.min, s.max), (0.0, 100.0));
    }

    #[test]
    fn loss_figures_weigh_overall_by_packets_and_spread_by_viewer() {
        let w = |lost, expected| ViewerWindow {
            packets: expected - lost,
            lost,
            expected,
        };
        let (overall, spread) = loss_figures(&[w(0, 100), w(1, 100), w(10, 800)]);
        assert!((overall - 11.0 / 10.0).abs() < 1e-9, "{overall}");
        let s = spread.unwrap();
        assert_eq!(s.min, 0.0);
        assert!((s.median - 1.0).abs() < 1e-9);
        assert!((s.max - 1.25).abs() < 1e-9);
        assert_eq!(loss_figures(&[]), (0.0, None));
    }

    fn step(delivery: Option<f64>, loss: f64, bench_saturated: bool) -> StepReport {
        StepReport {
            viewers: 10,
            sample_viewers: 1,
            seconds: 1.0,
            published_packets: 100,
            delivered_packets: 1000,
            delivered_pps: 1000.0,
            delivery_percent: delivery,
            loss_percent: loss,
            loss_per_viewer_percent: None,
            silent_viewers: 0,
            viewers_ended: 0,
            corrupt_payloads: 0,
            latency_ms: None,
            frame_latency_ms: None,
            server: None,
            bench: BenchCpu {
                cpu_seconds: 1.0,
                cores: 1.0,
                allowed_cpus: 1,
                worker_threads: 1,
                runqueue_wait_seconds: None,
                saturated: bench_saturated,
            },
        }
    }

    #[test]
    fn shortfall_without_gaps_is_called_falling_behind() {
        assert_eq!(shortfall_percent(&step(None, 0.0, false)), 0.0);
        assert_eq!(shortfall_percent(&step(Some(100.3), 0.0, false)), 0.0);
        let behind = step(Some(88.0), 0.0, false);
        assert!((shortfall_percent(&behind) - 12.0).abs() < 1e-9);
        let notes = step_notes(&behind);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("falling behind"), "{notes:?}");
        // Real loss explains the shortfall: no queueing note.
        assert!(step_notes(&step(Some(88.0), 12.0, false)).is_empty());
        assert!(step_notes(&step(Some(99.5), 0.0, false)).is_empty());
        assert!(over_loss_limit(&behind, 1.0));
        assert!(over_loss_limit(&step(Some(100.0), 1.5, false), 1.0));
        assert!(!over_loss_limit(&step(Some(99.5), 0.5, false), 1.0));
        let saturated = step_notes(&step(Some(100.0), 0.0, true));
        assert!(saturated[0].contains("load generator"), "{saturated:?}");
    }

    #[test]
    fn viewers_are_dealt_round_robin_and_sampled_on_every_stream() {
        let streams: Vec<usize> = (0..7).map(|i| stream_of(i, 3)).collect();
        assert_eq!(streams, vec![0, 1, 2, 0, 1, 2, 0]);
        assert!((0..5).all(|i| stream_of(i, 1) == 0));
        // One stream: the sample is what it always was.
        for i in 0..500 {
            assert_eq!(is_sample_of(i, 1, 1.0), is_sample(i, 1.0));
        }
        // 1% of 400 viewers over 4 streams: four samples, one per stream,
        // where every 100th viewer overall would all be on stream 0.
        let picked: Vec<usize> = (0..400).filter(|&i| is_sample_of(i, 4, 1.0)).collect();
        assert_eq!(picked, vec![0, 1, 2, 3]);
        let picked: Vec<usize> = (0..1000).filter(|&i| is_sample_of(i, 4, 1.0)).collect();
        assert_eq!(
            picked,
            vec![0, 1, 2, 3, 400, 401, 402, 403, 800, 801, 802, 803]
        );
        // Half of each stream's viewers.
        assert_eq!((0..40).filter(|&i| is_sample_of(i, 4, 50.0)).count(), 20);
    }

    #[test]
    fn viewers_are_held_to_what_their_own_stream_published() {
        let published = published_between(&[100, 50, 7], &[400, 60, 7]);
        assert_eq!(published, vec![300, 10, 0]);
        // Two viewers of stream 0, one of 1, one of the silent stream 2.
        assert_eq!(expected_deliveries(&published, &[0, 1, 0, 2]), 610);
        assert_eq!(expected_deliveries(&published, &[]), 0);
        // A stream index without a publisher expects nothing, without panicking.
        assert_eq!(expected_deliveries(&published, &[9]), 0);
        assert_eq!(published_between(&[], &[5, 6]), vec![5, 6]);
        // A viewer of the small stream that got nothing is charged with its
        // stream's packets, not with the big stream's.
        let mark = ViewerMark::default();
        let w = viewer_window(&mark, &mark, published[1]);
        assert_eq!((w.lost, w.expected), (10, 10));
    }
}
