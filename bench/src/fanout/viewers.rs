//! Setting viewers up, a bounded number at a time, each from its POST until
//! connected or timed out, and letting them settle before a window.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::accounting::{is_sample_of, stream_of};
use super::setup::describe;
use super::{FanoutError, Run, Viewer, TICK};
use crate::client::{self, Transport, ViewerMode};
use crate::report::bar;
use crate::stats::ProcSnapshot;

/// How often a setting-up viewer's state is looked at.
const SETUP_POLL: Duration = Duration::from_millis(5);

impl Run<'_> {
    pub(super) fn no_viewers(&self) -> FanoutError {
        let first = self
            .setup
            .errors
            .keys()
            .next()
            .cloned()
            .unwrap_or_else(|| "cancelled".into());
        FanoutError::NoViewers(first)
    }

    /// CPU seconds of the server (`--server-pid`) and of this process so far;
    /// `None` without a server pid or when either cannot be read.
    fn setup_cpu(&self) -> Option<(f64, f64)> {
        let server = ProcSnapshot::read(self.cfg.server_pid?).ok()?;
        let bench = ProcSnapshot::read(std::process::id()).ok()?;
        Some((server.total_cpu_seconds(), bench.total_cpu_seconds()))
    }

    /// Sets up `count` more viewers, at most `setup_concurrency` at a time,
    /// each from its POST until connected or `setup_timeout`.
    pub(super) async fn add_viewers(&mut self, count: usize) {
        if count == 0 {
            return;
        }
        let sem = Arc::new(Semaphore::new(self.cfg.setup_concurrency));
        let mut set = JoinSet::new();
        let first_index = self.setup.attempted;
        for i in 0..count {
            let index = first_index + i;
            let stream = stream_of(index, self.cfg.streams);
            let full = is_sample_of(index, self.cfg.streams, self.cfg.sample_percent);
            let sem = sem.clone();
            let http = self.http.clone();
            let ep = self.wheps[stream].clone();
            let mut opts = self.opts.clone();
            opts.transport = self.cfg.viewer_transport;
            let cancel = self.cancel.clone();
            let timeout = self.cfg.setup_timeout;
            set.spawn(async move {
                let _permit = sem.acquire_owned().await.expect("semaphore open");
                if cancel.load(Ordering::Relaxed) {
                    return Err("cancelled".to_string());
                }
                let mode = if full {
                    ViewerMode::Full
                } else {
                    ViewerMode::CountOnly
                };
                let t0 = Instant::now();
                let handle = client::view_with(&http, &ep, mode, &opts)
                    .await
                    .map_err(|e| describe(&e))?;
                loop {
                    if handle.stats.connected.load(Ordering::Relaxed) {
                        let took = handle
                            .stats
                            .setup
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .unwrap_or_else(|| t0.elapsed());
                        return Ok((
                            Viewer {
                                handle,
                                full,
                                stream,
                            },
                            took,
                        ));
                    }
                    if handle.is_finished() {
                        let e = match handle.close().await {
                            Err(e) => describe(&e),
                            Ok(()) => "session ended before it connected".into(),
                        };
                        return Err(e);
                    }
                    if t0.elapsed() > timeout {
                        let _ = tokio::time::timeout(Duration::from_secs(5), handle.close()).await;
                        return Err(format!("not connected within {timeout:?} (ICE/DTLS)"));
                    }
                    tokio::time::sleep(SETUP_POLL).await;
                }
            });
        }
        self.setup.attempted += count;
        let started = Instant::now();
        let cpu0 = self.setup_cpu();
        let (mut ok, mut failed) = (0usize, 0usize);
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                joined = set.join_next() => {
                    let Some(joined) = joined else { break };
                    match joined {
                        Ok(Ok((viewer, took))) => {
                            ok += 1;
                            let udp = self.cfg.viewer_transport == Transport::Udp;
                            if udp && self.cfg.udp_gro && !viewer.handle.udp_gro {
                                self.gro_refused += 1;
                            }
                            self.setup.latency.record(took.as_micros() as u64);
                            self.viewers.push(viewer);
                        }
                        Ok(Err(e)) => {
                            failed += 1;
                            *self.setup.errors.entry(e).or_default() += 1;
                        }
                        Err(e) => {
                            failed += 1;
                            *self.setup.errors.entry(format!("setup task: {e}")).or_default() += 1;
                        }
                    }
                }
                _ = tick.tick() => {
                    let done = ok + failed;
                    self.progress.show(&format!(
                        "setting up viewers {} {done}/{count} ({failed} failed, {:.0}/s)",
                        bar(done as f64 / count as f64, 30),
                        ok as f64 / started.elapsed().as_secs_f64().max(1e-3)
                    ));
                }
            }
        }
        if self.gro_refused > 0 && !self.gro_refusal_shown {
            self.gro_refusal_shown = true;
            self.progress.say(
                "the kernel refused UDP_GRO: viewers receive without it (GSO sends are cut up on the server's core)",
            );
        }
        let seconds = started.elapsed().as_secs_f64();
        if let (Some((s0, b0)), Some((s1, b1))) = (cpu0, self.setup_cpu()) {
            *self.setup.server_cpu.get_or_insert(0.0) += (s1 - s0).max(0.0);
            *self.setup.bench_cpu.get_or_insert(0.0) += (b1 - b0).max(0.0);
        }
        self.setup.seconds += seconds;
        self.setup.connected += ok;
        self.progress.say(&format!(
            "{ok}/{count} viewers connected in {seconds:.2} s ({:.1}/s){}",
            ok as f64 / seconds.max(1e-9),
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            }
        ));
    }

    /// Waits out the warm-up so new viewers' first keyframe and the setup's
    /// after-effects are not in the window.
    pub(super) async fn settle(&self) {
        let until = Instant::now() + self.cfg.warmup;
        while Instant::now() < until && !self.cancelled() {
            self.progress.show(&format!(
                "warming up {:.1} s",
                until
                    .saturating_duration_since(Instant::now())
                    .as_secs_f64()
            ));
            tokio::time::sleep(TICK.min(until.saturating_duration_since(Instant::now()))).await;
        }
    }
}
