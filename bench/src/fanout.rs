//! The fan-out measurement: one WHIP publisher of synthetic media (or K, each
//! of its own stream), N WHEP viewers spread over the streams, and what
//! reached them, at a fixed viewer count or as a ramp.
//!
//! A run owns its sessions from setup to teardown: it sets viewers up with
//! bounded concurrency, lets them settle, then reads counters at the start and
//! end of each measurement window (viewers' sequence trackers, decrypting
//! viewers' latency, and `/proc` figures of the server and of this process).
//! Every phase is bounded in time, and media goes only to addresses of the
//! target host (see
//! [`SessionOptions::allowed_media_ips`](crate::client::SessionOptions::allowed_media_ips)).
//!
//! [`run`] drives the phases; the pieces are in submodules: `config` (what
//! to run), `setup` (the target resolved into session options, the setup
//! tally, the progress line), `sessions` (starting the publishers, closing
//! sessions), `viewers` (setting viewers up and letting them settle), `ramp`
//! (one window, or a ramp of them), `measure` (one window's figures) and
//! `accounting` (the arithmetic behind those figures).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::client::{
    self, ClientError, Endpoint, PublisherStats, SessionHandle, SessionOptions, Transport,
    VideoCodec, ViewerStats,
};
use crate::report::{FanoutReport, Settings};

mod accounting;
mod config;
mod measure;
mod ramp;
mod sessions;
mod setup;
mod viewers;

pub use accounting::{
    expected_deliveries, is_sample, is_sample_of, loss_figures, over_loss_limit, published_between,
    shortfall_percent, step_notes, stream_of, viewer_window, ViewerMark, ViewerWindow,
};
pub use config::{FanoutConfig, RampConfig, Target, DEFAULT_WHEP, DEFAULT_WHIP, MAX_VIEWERS};
use sessions::{close_all, start_publishers, PUBLISHER_CLOSE_TIMEOUT};
use setup::{read_proc, resolve_target, Progress, SetupTotals};

/// How often progress is shown and decrypting viewers' stamp logs are trimmed.
const TICK: Duration = Duration::from_millis(500);

/// Why a run could not produce figures.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// The settings contradict themselves or are out of range; says which.
    #[error("invalid settings: {0}")]
    Config(String),
    /// The target's host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// Host of the WHIP or WHEP URL.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// A publisher's WHIP request failed.
    #[error("publisher could not start at {url}: {source}")]
    Publish {
        /// The WHIP URL posted to.
        url: String,
        /// Why it failed.
        source: ClientError,
    },
    /// Publishers were answered but their media path never connected.
    #[error("{count} publisher(s) did not connect within {timeout:?} (ICE/DTLS): is the server's media port reachable from here?")]
    PublisherTimeout {
        /// Publishers still not connected.
        count: usize,
        /// How long they were given.
        timeout: Duration,
    },
    /// The `--server-pid` process cannot be read.
    #[error("cannot read server process {pid} in /proc: {source} (is --server-pid right?)")]
    ServerPid {
        /// The process id given.
        pid: u32,
        /// Why /proc refused.
        source: std::io::Error,
    },
    /// Every viewer's setup failed; carries the first error.
    #[error("no viewer connected; first error: {0}")]
    NoViewers(String),
}

/// A viewer the run set up.
struct Viewer {
    handle: SessionHandle<ViewerStats>,
    full: bool,
    /// Index of the stream it watches.
    stream: usize,
}

/// What a run holds from setup to teardown; its phases are `impl Run`
/// blocks in the submodules.
struct Run<'a> {
    cfg: &'a FanoutConfig,
    http: reqwest::Client,
    opts: SessionOptions,
    /// One per stream.
    wheps: Vec<Endpoint>,
    /// One per stream; taken at teardown.
    publishers: Vec<SessionHandle<PublisherStats>>,
    /// Most publishers seen ended at the end of a window.
    publishers_ended: usize,
    /// Sessions whose socket the kernel would not give UDP GRO although asked.
    gro_refused: usize,
    gro_refusal_shown: bool,
    viewers: Vec<Viewer>,
    setup: SetupTotals,
    rss_baseline: u64,
    progress: Progress,
    cancel: Arc<AtomicBool>,
    notes: Vec<String>,
}

impl Run<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Runs a fan-out measurement (or a ramp when `cfg.ramp` is set) against the
/// target, tears every session down, and reports. `cancel` set from outside
/// (e.g. Ctrl-C) cuts the current phase short; the report then covers what ran.
pub async fn run(cfg: &FanoutConfig, cancel: Arc<AtomicBool>) -> Result<FanoutReport, FanoutError> {
    cfg.validate()?;
    let spinning = Arc::new(AtomicBool::new(cfg.spin));
    if cfg.spin {
        for _ in 0..cfg.worker_threads.max(1) {
            let spinning = spinning.clone();
            tokio::spawn(async move {
                while spinning.load(Ordering::Relaxed) {
                    tokio::task::yield_now().await;
                }
            });
        }
    }
    let report = run_inner(cfg, cancel).await;
    spinning.store(false, Ordering::Relaxed);
    report
}

async fn run_inner(
    cfg: &FanoutConfig,
    cancel: Arc<AtomicBool>,
) -> Result<FanoutReport, FanoutError> {
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if let Some(pid) = cfg.server_pid {
        read_proc(pid)?;
    }
    let opts = resolve_target(cfg).await?;
    let http = client::http_client(cfg.target.insecure);
    let progress = Progress::new(cfg.progress);
    let whip_url = cfg
        .target
        .whip_url_for(&cfg.target.streams_label(cfg.streams));
    let whep_url = cfg
        .target
        .whep_url_for(&cfg.target.streams_label(cfg.streams));
    let (publishers, connecting) = start_publishers(cfg, &http, &opts).await?;
    progress.say(&format!(
        "{} connected to {whip_url} in {:.0} ms",
        if cfg.streams == 1 {
            "publisher".to_string()
        } else {
            format!("{} publishers", cfg.streams)
        },
        connecting.as_secs_f64() * 1000.0
    ));
    let gro_refused = publishers
        .iter()
        .filter(|p| cfg.udp_gro && !p.udp_gro)
        .count();
    // Let the first packets register the tracks before viewers ask for them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_baseline = match cfg.server_pid.map(read_proc).transpose() {
        Ok(snapshot) => snapshot.map_or(0, |s| s.rss_bytes),
        Err(e) => {
            close_all(publishers, cfg.setup_concurrency, PUBLISHER_CLOSE_TIMEOUT).await;
            return Err(e);
        }
    };
    let mut run = Run {
        cfg,
        wheps: (0..cfg.streams)
            .map(|i| {
                cfg.target.endpoint(
                    cfg.target
                        .whep_url_for(&cfg.target.stream_name(i, cfg.streams)),
                )
            })
            .collect(),
        http,
        opts,
        publishers,
        publishers_ended: 0,
        gro_refused,
        gro_refusal_shown: false,
        viewers: Vec::new(),
        setup: SetupTotals::default(),
        rss_baseline,
        progress,
        cancel,
        notes: Vec::new(),
    };
    let outcome = run.measure_all().await;
    run.teardown().await;
    let (measurement, ramp) = outcome?;
    let mut notes = run.notes;
    if run.publishers_ended > 0 {
        notes.push(if cfg.streams == 1 {
            "the publisher's session ended during the run".to_string()
        } else {
            format!(
                "{} of {} publishers' sessions ended during the run",
                run.publishers_ended, cfg.streams
            )
        });
    }
    if run.gro_refused > 0 {
        notes.push(format!(
            "the kernel refused UDP_GRO on {} of the bench's sockets: those received without it, so on loopback the server's core cut their GSO sends up",
            run.gro_refused
        ));
    }
    let last = ramp
        .as_ref()
        .and_then(|r| r.steps.last())
        .or(measurement.as_ref());
    if let Some(m) = last {
        notes.extend(
            step_notes(m)
                .into_iter()
                .map(|n| format!("at {} viewers: {n}", m.viewers)),
        );
    }
    if cfg.server_pid.is_none() {
        notes.push(
            "no --server-pid: server CPU and memory (packets per CPU-second, memory per viewer) not measured"
                .into(),
        );
    }
    Ok(FanoutReport {
        started_unix,
        host: crate::report::HostInfo::read(),
        whip_url,
        whep_url,
        settings: Settings {
            viewers: cfg.viewers,
            streams: cfg.streams,
            udp_gro: cfg.udp_gro && run.gro_refused == 0,
            transport: match cfg.viewer_transport {
                Transport::Udp => "udp".into(),
                Transport::Tcp => "tcp".into(),
            },
            bitrate: cfg.media.bitrate,
            fps: cfg.media.fps,
            keyframe_interval_seconds: cfg.media.keyframe_interval.as_secs_f64(),
            pacing_factor: cfg.media.pacing_factor,
            audio: cfg.media.audio,
            video_codec: match cfg.media.video_codec {
                VideoCodec::Vp8 => "VP8".into(),
                VideoCodec::H264 => "H264".into(),
            },
            duration_seconds: cfg
                .ramp
                .as_ref()
                .map_or(cfg.duration, |r| r.step_duration)
                .as_secs_f64(),
            warmup_seconds: cfg.warmup.as_secs_f64(),
            sample_percent: cfg.sample_percent,
            worker_threads: cfg.worker_threads,
        },
        setup: run.setup.report(cfg.setup_concurrency),
        measurement,
        ramp,
        notes,
    })
}
