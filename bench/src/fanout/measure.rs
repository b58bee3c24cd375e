//! One measurement window: counters read at its start and end (viewers'
//! sequence trackers and latency, the publishers' packets, `/proc` figures of
//! the server and of this process), turned into the window's report.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::accounting::{
    expected_deliveries, loss_figures, published_between, viewer_window, ViewerMark, ViewerWindow,
};
use super::setup::read_proc;
use super::{FanoutError, Run, TICK};
use crate::client::ViewerStats;
use crate::report::{
    bar, group_digits, BenchCpu, Percentiles, ServerReport, StepReport, ThreadGroup,
};
use crate::stats::{
    allowed_cpu_count, diff_snapshots, runqueue_wait_seconds, Histogram, ProcSnapshot,
};

impl Run<'_> {
    /// RTP packets each stream's publisher has sent so far.
    fn published(&self) -> Vec<u64> {
        self.publishers
            .iter()
            .map(|p| {
                p.stats.audio_sent.load(Ordering::Relaxed)
                    + p.stats.video_sent.load(Ordering::Relaxed)
            })
            .collect()
    }

    /// Decrypting viewers keep a log of stamps for tests; the bench only needs
    /// the corrupt count, so the log is cut to bound memory.
    fn trim_stamp_logs(&self) {
        for v in self.viewers.iter().filter(|v| v.full) {
            v.handle
                .stats
                .received
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .stamps
                .clear();
        }
    }

    /// Every decrypting viewer's latency samples of one kind (`pick`),
    /// merged, and emptied for the next window.
    fn take_latency(&self, pick: fn(&ViewerStats) -> &std::sync::Mutex<Histogram>) -> Histogram {
        let mut all = Histogram::new();
        for v in self.viewers.iter().filter(|v| v.full) {
            let h = std::mem::take(
                &mut *pick(&v.handle.stats)
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
            all.merge(&h);
        }
        all
    }

    /// One measurement window over the viewers connected now.
    pub(super) async fn measure(
        &mut self,
        duration: Duration,
        label: Option<&str>,
    ) -> Result<StepReport, FanoutError> {
        let me = std::process::id();
        let server0 = self.cfg.server_pid.map(read_proc).transpose()?;
        let bench0 = ProcSnapshot::read(me).ok();
        let server_wait0 = self
            .cfg
            .server_pid
            .and_then(|p| runqueue_wait_seconds(p).ok());
        let bench_wait0 = runqueue_wait_seconds(me).ok();
        let marks0: Vec<ViewerMark> = self
            .viewers
            .iter()
            .map(|v| ViewerMark::read(&v.handle.stats))
            .collect();
        let ended0 = self
            .viewers
            .iter()
            .filter(|v| v.handle.is_finished())
            .count();
        self.take_latency(|s| &s.latency);
        self.take_latency(|s| &s.frame_latency);
        self.trim_stamp_logs();
        let published0 = self.published();
        let start = Instant::now();
        let until = start + duration;
        let total0: u64 = marks0.iter().map(|m| m.packets).sum();
        loop {
            let now = Instant::now();
            if now >= until || self.cancelled() {
                break;
            }
            tokio::time::sleep(TICK.min(until - now)).await;
            self.trim_stamp_logs();
            if self.progress.enabled || self.progress.log {
                let total: u64 = self
                    .viewers
                    .iter()
                    .map(|v| v.handle.stats.packets.load(Ordering::Relaxed))
                    .sum();
                let elapsed = start.elapsed().as_secs_f64();
                self.progress.show(&format!(
                    "measuring{} {} {:.1}/{:.0} s  {} pkt/s",
                    label.map(|l| format!(" {l} viewers")).unwrap_or_default(),
                    bar(elapsed / duration.as_secs_f64(), 30),
                    elapsed,
                    duration.as_secs_f64(),
                    group_digits(((total - total0) as f64 / elapsed.max(1e-3)) as u64)
                ));
            }
        }
        let published = published_between(&published0, &self.published());
        let marks1: Vec<ViewerMark> = self
            .viewers
            .iter()
            .map(|v| ViewerMark::read(&v.handle.stats))
            .collect();
        let seconds = start.elapsed().as_secs_f64();
        let server1 = self.cfg.server_pid.map(read_proc).transpose()?;
        let bench1 = ProcSnapshot::read(me).ok();
        let server_wait1 = self
            .cfg
            .server_pid
            .and_then(|p| runqueue_wait_seconds(p).ok());
        let bench_wait1 = runqueue_wait_seconds(me).ok();
        let waited = |a: Option<f64>, b: Option<f64>| Some((b? - a?).max(0.0));
        let latency = self.take_latency(|s| &s.latency);
        let frame_latency = self.take_latency(|s| &s.frame_latency);
        self.progress.clear();

        let streams: Vec<usize> = self.viewers.iter().map(|v| v.stream).collect();
        let windows: Vec<ViewerWindow> = marks0
            .iter()
            .zip(&marks1)
            .zip(&streams)
            .map(|((a, b), &s)| viewer_window(a, b, published.get(s).copied().unwrap_or(0)))
            .collect();
        let expected = expected_deliveries(&published, &streams);
        let (loss_percent, spread) = loss_figures(&windows);
        let delivered: u64 = windows.iter().map(|w| w.packets).sum();
        let corrupt: u64 = marks0
            .iter()
            .zip(&marks1)
            .map(|(a, b)| b.corrupt.saturating_sub(a.corrupt))
            .sum();
        let viewers = self.viewers.len();
        let ended = self
            .viewers
            .iter()
            .filter(|v| v.handle.is_finished())
            .count()
            - ended0;
        let publishers_ended = self.publishers.iter().filter(|p| p.is_finished()).count();
        self.publishers_ended = self.publishers_ended.max(publishers_ended);
        let server = match (server0, server1) {
            (Some(a), Some(b)) => {
                let d = diff_snapshots(&a, &b);
                let allowed = allowed_cpu_count(b.pid).unwrap_or(1).max(1);
                let cores = d.cores();
                Some(ServerReport {
                    pid: b.pid,
                    cpu_seconds: d.cpu_seconds,
                    cores,
                    allowed_cpus: allowed,
                    load: cores / allowed as f64,
                    runqueue_wait_seconds: waited(server_wait0, server_wait1),
                    threads: d
                        .by_name
                        .iter()
                        .map(|g| ThreadGroup {
                            name: g.name.clone(),
                            threads: g.threads,
                            cpu_seconds: g.cpu_seconds,
                            cores: if d.wall_seconds > 0.0 {
                                g.cpu_seconds / d.wall_seconds
                            } else {
                                0.0
                            },
                        })
                        .collect(),
                    rss_bytes: b.rss_bytes,
                    rss_baseline_bytes: self.rss_baseline,
                    memory_per_viewer_bytes: (viewers > 0)
                        .then(|| (b.rss_bytes as f64 - self.rss_baseline as f64) / viewers as f64),
                    packets_per_cpu_second: (d.cpu_seconds > 0.0)
                        .then(|| delivered as f64 / d.cpu_seconds),
                })
            }
            _ => None,
        };
        let allowed = allowed_cpu_count(me).unwrap_or(1).max(1);
        let (cpu_seconds, cores) = match (bench0, bench1) {
            (Some(a), Some(b)) => {
                let d = diff_snapshots(&a, &b);
                (d.cpu_seconds, d.cores())
            }
            _ => (0.0, 0.0),
        };
        let capacity = allowed.min(self.cfg.worker_threads.max(1)) as f64;
        Ok(StepReport {
            viewers,
            sample_viewers: self.viewers.iter().filter(|v| v.full).count(),
            seconds,
            published_packets: published.iter().sum(),
            delivered_packets: delivered,
            delivered_pps: delivered as f64 / seconds.max(1e-9),
            delivery_percent: (expected > 0).then(|| 100.0 * delivered as f64 / expected as f64),
            loss_percent,
            loss_per_viewer_percent: spread,
            silent_viewers: windows.iter().filter(|w| w.packets == 0).count(),
            viewers_ended: ended,
            corrupt_payloads: corrupt,
            latency_ms: Percentiles::from_us(&latency),
            frame_latency_ms: Percentiles::from_us(&frame_latency),
            server,
            bench: BenchCpu {
                cpu_seconds,
                cores,
                allowed_cpus: allowed,
                worker_threads: self.cfg.worker_threads,
                runqueue_wait_seconds: waited(bench_wait0, bench_wait1),
                // A spinning bench uses all of its cores whatever its load.
                saturated: !self.cfg.spin && cores >= 0.9 * capacity,
            },
        })
    }
}
