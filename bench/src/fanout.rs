//! The fan-out measurement: one WHIP publisher of synthetic media (or K, each
//! of its own stream), N WHEP viewers spread over the streams, and what
//! reached them, at a fixed viewer count or as a ramp.
//!
//! A run owns its sessions from setup to teardown: it sets viewers up with
//! bounded concurrency, lets them settle, then reads counters at the start and
//! end of each measurement window (viewers' sequence trackers, decrypting
//! viewers' latency, and `/proc` figures of the server and of this process).
//! Every phase is bounded in time, and media goes only to addresses of the
//! target host (see [`SessionOptions::allowed_media_ips`]).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{
    self, ClientError, Endpoint, MediaSpec, PublisherStats, SessionHandle, SessionOptions,
    Transport, VideoCodec, ViewerMode, ViewerStats,
};
use crate::report::{
    bar, group_digits, BenchCpu, ErrorCount, FanoutReport, Percentiles, RampReport, ServerReport,
    Settings, SetupReport, Spread, StepReport, ThreadGroup,
};
use crate::stats::{
    allowed_cpu_count, diff_snapshots, runqueue_wait_seconds, summarize, Histogram, ProcSnapshot,
};
use crate::units::{expand_template, url_host_port};

/// Default WHIP URL template.
pub const DEFAULT_WHIP: &str = "{base}/whip/{stream}";
/// Default WHEP URL template.
pub const DEFAULT_WHEP: &str = "{base}/whep/{stream}";

/// Most viewers one run may create.
pub const MAX_VIEWERS: usize = 100_000;

/// How long the publisher may take to connect.
const PUBLISHER_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest teardown before the remaining sessions are dropped without DELETE.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a setting-up viewer's state is looked at.
const SETUP_POLL: Duration = Duration::from_millis(5);
/// How often progress is shown and decrypting viewers' stamp logs are trimmed.
const TICK: Duration = Duration::from_millis(500);

/// The server under test and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL, `{base}` in the templates, e.g. `https://127.0.0.1:8443`.
    pub base: String,
    /// Stream name, `{stream}` in the templates.
    pub stream: String,
    /// WHIP URL template, e.g. [`DEFAULT_WHIP`].
    pub whip_template: String,
    /// WHEP URL template, e.g. [`DEFAULT_WHEP`].
    pub whep_template: String,
    /// Bearer token sent with every WHIP/WHEP request.
    pub token: Option<String>,
    /// Accept self-signed certificates.
    pub insecure: bool,
    /// Local IP for media sockets; chosen from the route to the target when `None`.
    pub bind_ip: Option<IpAddr>,
    /// Media addresses accepted besides the target host's own.
    pub extra_media_ips: Vec<IpAddr>,
}

impl Target {
    /// WHIP URL of the configured stream.
    pub fn whip_url(&self) -> String {
        self.whip_url_for(&self.stream)
    }

    /// WHEP URL of the configured stream.
    pub fn whep_url(&self) -> String {
        self.whep_url_for(&self.stream)
    }

    /// WHIP URL of `stream`.
    pub fn whip_url_for(&self, stream: &str) -> String {
        expand_template(&self.whip_template, &self.base, stream)
    }

    /// WHEP URL of `stream`.
    pub fn whep_url_for(&self, stream: &str) -> String {
        expand_template(&self.whep_template, &self.base, stream)
    }

    /// Name of stream `index` of `streams`: the configured name itself when
    /// there is one stream, `{stream}-{index}` when there are several.
    pub fn stream_name(&self, index: usize, streams: usize) -> String {
        if streams <= 1 {
            self.stream.clone()
        } else {
            format!("{}-{index}", self.stream)
        }
    }

    /// The name for the record: the stream's, or `{stream}-{0..K-1}` for K.
    fn streams_label(&self, streams: usize) -> String {
        if streams <= 1 {
            self.stream.clone()
        } else {
            format!("{}-{{0..{}}}", self.stream, streams - 1)
        }
    }

    fn endpoint(&self, url: String) -> Endpoint {
        Endpoint {
            url,
            token: self.token.clone(),
            insecure: self.insecure,
        }
    }
}

/// Stepping for `--ramp`.
#[derive(Debug, Clone)]
pub struct RampConfig {
    /// Viewers added per step.
    pub step: usize,
    /// Measurement window of each step.
    pub step_duration: Duration,
    /// Stop once a step's overall loss, or its delivery shortfall (see
    /// [`shortfall_percent`]), exceeds this, in percent.
    pub max_loss_percent: f64,
    /// Stop once the server is this busy (cores used / cores allowed).
    pub max_server_load: f64,
    /// A step over the loss limit is measured again this many times (with the
    /// same viewers) before the ramp stops: on a shared machine a moment of
    /// CPU contention should not end it.
    pub retries: u32,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// The server and how to reach it.
    pub target: Target,
    /// Viewers (for a ramp: the most it goes to).
    pub viewers: usize,
    /// Publishers, each of its own stream (see [`Target::stream_name`]), all
    /// sending `media`; viewers are dealt to them round-robin ([`stream_of`]).
    pub streams: usize,
    /// Viewers (and publishers) receive with UDP GRO; see [`crate::gro`].
    pub udp_gro: bool,
    /// How viewers reach the server (publishers always use UDP).
    pub viewer_transport: Transport,
    /// What each publisher sends.
    pub media: MediaSpec,
    /// Measurement window.
    pub duration: Duration,
    /// Settling time between setup and measurement.
    pub warmup: Duration,
    /// Share of viewers that decrypt and check payloads, in percent: of each
    /// stream's viewers, so at least one per stream (see [`is_sample_of`]).
    pub sample_percent: f64,
    /// Viewers set up at once.
    pub setup_concurrency: usize,
    /// Longest a viewer may take from POST to connected.
    pub setup_timeout: Duration,
    /// Server process on this host to read CPU and memory of.
    pub server_pid: Option<u32>,
    /// Add viewers step by step instead of all at once; see [`RampConfig`].
    pub ramp: Option<RampConfig>,
    /// Worker threads of the runtime the run is on, for the report.
    pub worker_threads: usize,
    /// Keep `worker_threads` runtime threads busy for the run instead of
    /// letting them sleep in epoll (see `sluice-bench fanout --spin`).
    pub spin: bool,
    /// Show a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

impl FanoutConfig {
    fn validate(&self) -> Result<(), FanoutError> {
        let bad = |m: String| Err(FanoutError::Config(m));
        if self.viewers == 0 || self.viewers > MAX_VIEWERS {
            return bad(format!(
                "--viewers {} is outside 1..={MAX_VIEWERS}",
                self.viewers
            ));
        }
        if self.streams == 0 || self.streams > self.viewers {
            return bad(format!(
                "--streams {} is outside 1..={} (--viewers): every stream needs a viewer",
                self.streams, self.viewers
            ));
        }
        if self.duration.is_zero() {
            return bad("--duration must be above zero".into());
        }
        if !(self.sample_percent > 0.0 && self.sample_percent <= 100.0) {
            return bad(format!(
                "--sample-percent {} is outside (0, 100]",
                self.sample_percent
            ));
        }
        if self.setup_concurrency == 0 {
            return bad("--setup-concurrency must be at least 1".into());
        }
        if self.media.fps == 0 || self.media.bitrate == 0 {
            return bad("--fps and --bitrate must be above zero".into());
        }
        let pf = self.media.pacing_factor;
        if !pf.is_finite() || (pf != 0.0 && !(1.0..=100.0).contains(&pf)) {
            // Below 1 the queue would grow without end.
            return bad(format!(
                "--pacing-factor {pf} must be 0 (off) or within [1, 100]"
            ));
        }
        if let Some(r) = &self.ramp {
            if r.step == 0 || r.step_duration.is_zero() {
                return bad("--ramp-step and --step-duration must be above zero".into());
            }
        }
        if url_host_port(&self.target.whip_url()).is_none()
            || url_host_port(&self.target.whep_url()).is_none()
        {
            return bad(format!(
                "WHIP/WHEP URLs must be http:// or https:// URLs, got {} and {}",
                self.target.whip_url(),
                self.target.whep_url()
            ));
        }
        Ok(())
    }
}

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
    fn read(stats: &ViewerStats) -> ViewerMark {
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

struct Viewer {
    handle: SessionHandle<ViewerStats>,
    full: bool,
    /// Index of the stream it watches.
    stream: usize,
}

#[derive(Default)]
struct SetupTotals {
    attempted: usize,
    connected: usize,
    seconds: f64,
    /// `None` without `--server-pid`.
    server_cpu: Option<f64>,
    bench_cpu: Option<f64>,
    latency: Histogram,
    errors: BTreeMap<String, u64>,
}

impl SetupTotals {
    fn report(&self, concurrency: usize) -> SetupReport {
        let mut errors: Vec<ErrorCount> = self
            .errors
            .iter()
            .map(|(e, n)| ErrorCount {
                error: e.clone(),
                count: *n,
            })
            .collect();
        errors.sort_by(|a, b| b.count.cmp(&a.count).then(a.error.cmp(&b.error)));
        SetupReport {
            attempted: self.attempted,
            connected: self.connected,
            failed: self.attempted - self.connected,
            seconds: self.seconds,
            rate_per_second: if self.seconds > 0.0 {
                self.connected as f64 / self.seconds
            } else {
                0.0
            },
            latency_ms: Percentiles::from_us(&self.latency),
            errors,
            concurrency,
            server_cpu_seconds: self.server_cpu,
            bench_cpu_seconds: self.bench_cpu,
        }
    }
}

/// A line redrawn in place on stderr while stderr is a terminal; elsewhere
/// (a log file) the same line every [`LOG_EVERY`] at most.
struct Progress {
    enabled: bool,
    log: bool,
    last_log: std::sync::Mutex<Option<Instant>>,
}

/// How often progress goes to a non-terminal stderr.
const LOG_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    fn new(wanted: bool) -> Progress {
        let tty = std::io::stderr().is_terminal();
        Progress {
            enabled: wanted && tty,
            log: wanted && !tty,
            last_log: std::sync::Mutex::new(None),
        }
    }

    fn show(&self, line: &str) {
        if self.enabled {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K{line}");
            let _ = e.flush();
        } else if self.log {
            let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                *last = Some(Instant::now());
                eprintln!("{line}");
            }
        }
    }

    /// A line that stays, printed whether or not the bar is shown.
    fn say(&self, line: &str) {
        if self.enabled {
            eprint!("\r\x1b[2K");
        }
        eprintln!("{line}");
    }

    fn clear(&self) {
        if self.enabled {
            eprint!("\r\x1b[2K");
        }
    }
}

fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Status { status, reason } => format!("HTTP {status}: {reason}"),
        ClientError::Http(e) if e.is_timeout() => "HTTP request timed out".into(),
        ClientError::Http(e) if e.is_connect() => format!("HTTP connect failed: {e}"),
        other => other.to_string(),
    }
}

async fn resolve_target(cfg: &FanoutConfig) -> Result<SessionOptions, FanoutError> {
    let mut allowed: Vec<IpAddr> = cfg.target.extra_media_ips.clone();
    let mut first = None;
    for url in [cfg.target.whip_url(), cfg.target.whep_url()] {
        let (host, port) = url_host_port(&url).expect("validated");
        let addrs = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|source| FanoutError::Resolve {
                host: host.clone(),
                source,
            })?;
        for a in addrs {
            first.get_or_insert(a);
            if !allowed.contains(&a.ip()) {
                allowed.push(a.ip());
            }
        }
    }
    let local_ip = match (cfg.target.bind_ip, first) {
        (Some(ip), _) => Some(ip),
        (None, Some(a)) if a.ip().is_loopback() => Some(a.ip()),
        // The address the kernel would send from toward the target; connecting
        // a UDP socket sends nothing.
        (None, Some(a)) => std::net::UdpSocket::bind((
            if a.is_ipv4() {
                IpAddr::from([0u8; 4])
            } else {
                IpAddr::from([0u16; 8])
            },
            0,
        ))
        .and_then(|s| {
            s.connect(a)?;
            s.local_addr()
        })
        .ok()
        .map(|l| l.ip()),
        (None, None) => None,
    };
    Ok(SessionOptions {
        local_ip,
        allowed_media_ips: Some(allowed),
        udp_gro: cfg.udp_gro,
        transport: client::Transport::Udp,
    })
}

fn read_proc(pid: u32) -> Result<ProcSnapshot, FanoutError> {
    ProcSnapshot::read(pid).map_err(|source| FanoutError::ServerPid { pid, source })
}

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

/// How long closing the publishers may take at the end.
const PUBLISHER_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts one publisher per stream, `setup_concurrency` at a time, and waits
/// until every one is connected; on failure closes those it started. Returns
/// them with the time from the last answer to the last connection (ICE and
/// DTLS).
async fn start_publishers(
    cfg: &FanoutConfig,
    http: &reqwest::Client,
    opts: &SessionOptions,
) -> Result<(Vec<SessionHandle<PublisherStats>>, Duration), FanoutError> {
    let sem = Arc::new(Semaphore::new(cfg.setup_concurrency));
    let mut set = JoinSet::new();
    for i in 0..cfg.streams {
        let url = cfg
            .target
            .whip_url_for(&cfg.target.stream_name(i, cfg.streams));
        let ep = cfg.target.endpoint(url.clone());
        let (http, opts, mut media, sem) =
            (http.clone(), opts.clone(), cfg.media.clone(), sem.clone());
        // Spread the publishers' periodic keyframes over the interval.
        media.keyframe_phase = cfg.media.keyframe_interval * i as u32 / cfg.streams.max(1) as u32;
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            client::publish_with(&http, &ep, media, &opts)
                .await
                .map(|h| (i, h))
                .map_err(|source| FanoutError::Publish { url, source })
        });
    }
    let mut started: Vec<(usize, SessionHandle<PublisherStats>)> = Vec::new();
    let mut failed = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(p)) => started.push(p),
            Ok(Err(e)) => {
                failed.get_or_insert(e);
            }
            Err(e) => {
                failed.get_or_insert(FanoutError::Publish {
                    url: cfg.target.whip_url(),
                    source: ClientError::Rtc(format!("publisher task: {e}")),
                });
            }
        }
    }
    started.sort_by_key(|(i, _)| *i);
    let publishers: Vec<_> = started.into_iter().map(|(_, p)| p).collect();
    if let Some(e) = failed {
        close_all(publishers, cfg.setup_concurrency, PUBLISHER_CLOSE_TIMEOUT).await;
        return Err(e);
    }
    let t0 = Instant::now();
    loop {
        let waiting = publishers
            .iter()
            .filter(|p| !p.stats.connected.load(Ordering::Relaxed))
            .count();
        if waiting == 0 {
            return Ok((publishers, t0.elapsed()));
        }
        let gave_up = publishers
            .iter()
            .any(|p| !p.stats.connected.load(Ordering::Relaxed) && p.is_finished());
        if t0.elapsed() > PUBLISHER_TIMEOUT || gave_up {
            close_all(publishers, cfg.setup_concurrency, PUBLISHER_CLOSE_TIMEOUT).await;
            return Err(FanoutError::PublisherTimeout {
                count: waiting,
                timeout: PUBLISHER_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Closes sessions, `concurrency` at a time, within `limit`; whatever is
/// left then is dropped without DELETE. Returns whether all were closed.
async fn close_all<S: Send + Sync + 'static>(
    handles: Vec<SessionHandle<S>>,
    concurrency: usize,
    limit: Duration,
) -> bool {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for h in handles {
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            let _ = h.close().await;
        });
    }
    let all = async { while set.join_next().await.is_some() {} };
    if tokio::time::timeout(limit, all).await.is_err() {
        set.abort_all();
        return false;
    }
    true
}

impl Run<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    async fn measure_all(
        &mut self,
    ) -> Result<(Option<StepReport>, Option<RampReport>), FanoutError> {
        let Some(ramp) = self.cfg.ramp.clone() else {
            self.add_viewers(self.cfg.viewers).await;
            if self.viewers.is_empty() {
                return Err(self.no_viewers());
            }
            self.settle().await;
            let m = self.measure(self.cfg.duration, None).await?;
            return Ok((Some(m), None));
        };
        let mut steps: Vec<StepReport> = Vec::new();
        let mut held = 0;
        let mut held_step = None;
        let mut retried = Vec::new();
        let stop_reason = loop {
            if self.cancelled() {
                break "cancelled".to_string();
            }
            let target = (self.viewers.len() + ramp.step).min(self.cfg.viewers);
            let before = self.setup.connected;
            self.add_viewers(target - self.viewers.len()).await;
            if self.viewers.is_empty() {
                return Err(self.no_viewers());
            }
            let failed_now = target - self.viewers.len();
            let label = format!("{}/{}", self.viewers.len(), self.cfg.viewers);
            self.settle().await;
            let mut step = self.measure(ramp.step_duration, Some(&label)).await?;
            for _ in 0..ramp.retries {
                if !over_loss_limit(&step, ramp.max_loss_percent) || self.cancelled() {
                    break;
                }
                self.progress.say(&format!(
                    "step {:>6} viewers: loss {:.3}%, delivery shortfall {:.2}%; measuring again",
                    step.viewers,
                    step.loss_percent,
                    shortfall_percent(&step)
                ));
                retried.push(step.viewers);
                self.settle().await;
                step = self.measure(ramp.step_duration, Some(&label)).await?;
            }
            let load = step.server.as_ref().map(|s| s.load);
            self.progress.say(&format!(
                "step {:>6} viewers: {} pkt/s, loss {:.3}%, latency p99 {}, server {}, bench {:.2} cores",
                step.viewers,
                group_digits(step.delivered_pps.round() as u64),
                step.loss_percent,
                step.latency_ms
                    .as_ref()
                    .map_or("-".into(), |l| format!("{:.2} ms", l.p99)),
                load.map_or("-".into(), |l| format!("{:.0}% busy", l * 100.0)),
                step.bench.cores
            ));
            let shortfall = shortfall_percent(&step);
            let lossy = over_loss_limit(&step, ramp.max_loss_percent);
            if !lossy {
                held = step.viewers;
                held_step = Some(steps.len());
            }
            let bench_saturated = step.bench.saturated;
            steps.push(step);
            if lossy {
                let s = steps.last().expect("just pushed");
                break format!(
                    "at {} viewers loss {:.3}% and delivery shortfall {shortfall:.2}%, above {}%",
                    s.viewers, s.loss_percent, ramp.max_loss_percent
                );
            }
            if let Some(l) = load.filter(|&l| l >= ramp.max_server_load) {
                break format!(
                    "server load {:.0}% reached the {:.0}% limit",
                    l * 100.0,
                    ramp.max_server_load * 100.0
                );
            }
            if bench_saturated {
                break "the load generator saturated its CPU: more viewers would measure it, not the server".into();
            }
            if failed_now > 0 && self.setup.connected == before {
                break "no viewer of the last step could be set up".into();
            }
            if self.viewers.len() >= self.cfg.viewers || target >= self.cfg.viewers {
                break format!("reached --viewers {}", self.cfg.viewers);
            }
        };
        self.progress.say(&format!("ramp stopped: {stop_reason}"));
        let measurement = held_step.map(|i| steps[i].clone());
        Ok((
            measurement,
            Some(RampReport {
                steps,
                held_viewers: held,
                stop_reason,
                max_loss_percent: ramp.max_loss_percent,
                max_server_load: ramp.max_server_load,
                retried_steps: retried,
            }),
        ))
    }

    fn no_viewers(&self) -> FanoutError {
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
    async fn add_viewers(&mut self, count: usize) {
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
    async fn settle(&self) {
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
    async fn measure(
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

    /// DELETEs every session, a bounded number at a time, within [`TEARDOWN_TIMEOUT`].
    async fn teardown(&mut self) {
        let viewers: Vec<_> = std::mem::take(&mut self.viewers)
            .into_iter()
            .map(|v| v.handle)
            .collect();
        self.progress
            .show(&format!("closing {} viewers", viewers.len()));
        if !close_all(viewers, self.cfg.setup_concurrency, TEARDOWN_TIMEOUT).await {
            self.notes.push(format!(
                "teardown took over {TEARDOWN_TIMEOUT:?}; remaining viewers were dropped without DELETE"
            ));
        }
        let publishers = std::mem::take(&mut self.publishers);
        close_all(
            publishers,
            self.cfg.setup_concurrency,
            PUBLISHER_CLOSE_TIMEOUT,
        )
        .await;
        self.progress.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn config(viewers: usize) -> FanoutConfig {
        FanoutConfig {
            target: Target {
                base: "https://127.0.0.1:8443".into(),
                stream: "s".into(),
                whip_template: DEFAULT_WHIP.into(),
                whep_template: DEFAULT_WHEP.into(),
                token: None,
                insecure: true,
                bind_ip: None,
                extra_media_ips: Vec::new(),
            },
            viewers,
            streams: 1,
            udp_gro: true,
            viewer_transport: Transport::Udp,
            media: MediaSpec::default(),
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            sample_percent: 1.0,
            setup_concurrency: 32,
            setup_timeout: Duration::from_secs(5),
            server_pid: None,
            ramp: None,
            worker_threads: 1,
            spin: false,
            progress: false,
        }
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        assert!(config(10).validate().is_ok());
        assert!(config(0).validate().is_err());
        assert!(config(MAX_VIEWERS + 1).validate().is_err());
        let mut c = config(10);
        c.sample_percent = 0.0;
        assert!(c.validate().is_err());
        let mut c = config(10);
        c.target.whep_template = "udp://{base}".into();
        assert!(c.validate().is_err());
        let mut c = config(10);
        c.ramp = Some(RampConfig {
            step: 0,
            step_duration: Duration::from_secs(1),
            max_loss_percent: 1.0,
            max_server_load: 0.95,
            retries: 1,
        });
        assert!(c.validate().is_err());
    }

    #[test]
    fn stream_count_must_be_between_one_and_the_viewers() {
        let with = |viewers, streams| {
            let mut c = config(viewers);
            c.streams = streams;
            c.validate()
        };
        assert!(with(10, 1).is_ok());
        assert!(with(10, 10).is_ok());
        let e = with(10, 0).unwrap_err().to_string();
        assert!(e.contains("--streams 0"), "{e}");
        let e = with(10, 11).unwrap_err().to_string();
        assert!(e.contains("--streams 11 is outside 1..=10"), "{e}");
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
    fn streams_are_named_after_the_base_only_when_there_are_several() {
        let t = config(4).target;
        assert_eq!(t.stream_name(0, 1), "s");
        assert_eq!(t.stream_name(2, 3), "s-2");
        assert_eq!(
            t.whep_url_for(&t.stream_name(1, 2)),
            "https://127.0.0.1:8443/whep/s-1"
        );
        assert_eq!(t.whip_url_for(&t.streams_label(1)), t.whip_url());
        assert_eq!(
            t.whip_url_for(&t.streams_label(4)),
            "https://127.0.0.1:8443/whip/s-{0..3}"
        );
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

    #[tokio::test]
    async fn loopback_target_binds_loopback_and_allows_only_itself() {
        let opts = resolve_target(&config(1)).await.unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(opts.local_ip, Some(lo));
        assert_eq!(opts.allowed_media_ips, Some(vec![lo]));
        assert!(opts.udp_gro);
        let mut no_gro = config(1);
        no_gro.udp_gro = false;
        assert!(!resolve_target(&no_gro).await.unwrap().udp_gro);
    }
}
