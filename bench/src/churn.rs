//! The churn soak: one publisher, then many WHEP viewers that each connect,
//! receive media and leave, a few at a time; the server's resident memory,
//! sessions and open files are compared before and after.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::client::{self, Endpoint, MediaSpec, ViewerMode};
use crate::stats::ProcSnapshot;

/// What one soak does.
#[derive(Debug, Clone)]
pub struct ChurnConfig {
    /// WHIP endpoint of the stream's publisher.
    pub whip: Endpoint,
    /// WHEP endpoint the viewers use.
    pub whep: Endpoint,
    /// `/metrics` URL, for the server's session gauge.
    pub metrics_url: String,
    /// Bearer token for `/metrics`, if the server wants the admin token there.
    pub metrics_token: Option<String>,
    /// PID of the server on this host: RSS and open files are read from /proc.
    pub server_pid: u32,
    /// Viewers created and ended during the measured soak.
    pub sessions: usize,
    /// Viewers churned before the baseline is taken, so the allocator's and
    /// the kernel's caches are warm when it is.
    pub warmup_sessions: usize,
    /// Viewers alive at once.
    pub concurrency: usize,
    /// How long a viewer stays after its first media packet.
    pub hold: Duration,
    /// Longest a viewer may wait for its first media packet.
    pub media_timeout: Duration,
}

/// The server's resources at one instant.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Resources {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Sessions the server reports (`sluice_sessions`, all roles).
    pub sessions: u64,
}

/// How a batch of viewers went.
#[derive(Debug, Default, Clone, Serialize)]
pub struct BatchOutcome {
    /// Viewers asked for.
    pub attempted: u64,
    /// Viewers whose session was set up (answer received, ICE and DTLS done).
    pub connected: u64,
    /// Viewers that received media before leaving.
    pub received_media: u64,
    /// Viewers whose setup failed.
    pub failed: u64,
    /// Wall time of the batch, seconds.
    pub seconds: f64,
}

/// The soak's report.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnReport {
    /// Before any viewer: the publisher alone.
    pub initial: Resources,
    /// The warm-up viewers.
    pub warmup: BatchOutcome,
    /// After the warm-up viewers left: the baseline the soak is held against.
    pub baseline: Resources,
    /// The measured viewers.
    pub soak: BatchOutcome,
    /// After the measured viewers left.
    pub after: Resources,
    /// Seconds the server took to drop the last viewer's session after it left.
    pub settle_seconds: f64,
    /// `after` against `baseline`, percent, for RSS and open files.
    pub rss_change_percent: f64,
    /// Open-file change, percent.
    pub fds_change_percent: f64,
}

fn open_fds(pid: u32) -> std::io::Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

async fn session_gauge(http: &reqwest::Client, cfg: &ChurnConfig) -> anyhow::Result<u64> {
    let mut req = http.get(&cfg.metrics_url);
    if let Some(t) = &cfg.metrics_token {
        req = req.bearer_auth(t);
    }
    let text = req.send().await?.error_for_status()?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("sluice_sessions{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

async fn resources(http: &reqwest::Client, cfg: &ChurnConfig) -> anyhow::Result<Resources> {
    Ok(Resources {
        rss_bytes: ProcSnapshot::read(cfg.server_pid)?.rss_bytes,
        open_fds: open_fds(cfg.server_pid)?,
        sessions: session_gauge(http, cfg).await?,
    })
}

/// Churn `count` viewers through the stream, `concurrency` at a time.
async fn batch(http: &reqwest::Client, cfg: &ChurnConfig, count: usize) -> BatchOutcome {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let connected = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let permit = gate.clone().acquire_owned().await.expect("semaphore open");
        let (http, ep) = (http.clone(), cfg.whep.clone());
        let (connected, received, failed) = (connected.clone(), received.clone(), failed.clone());
        let (hold, media_timeout) = (cfg.hold, cfg.media_timeout);
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let viewer = match client::view(&http, &ep, ViewerMode::CountOnly).await {
                Ok(v) => v,
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let until = Instant::now() + media_timeout;
            while Instant::now() < until && viewer.stats.packets.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if viewer.stats.connected.load(Ordering::Relaxed) {
                connected.fetch_add(1, Ordering::Relaxed);
            }
            if viewer.stats.packets.load(Ordering::Relaxed) > 0 {
                received.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(hold).await;
            }
            let _ = viewer.close().await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    BatchOutcome {
        attempted: count as u64,
        connected: connected.load(Ordering::Relaxed),
        received_media: received.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Wait until the server reports `sessions` sessions (the publisher's), up
/// to 60 s; returns the seconds it took.
async fn settle(http: &reqwest::Client, cfg: &ChurnConfig, sessions: u64) -> f64 {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if matches!(session_gauge(http, cfg).await, Ok(n) if n <= sessions) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed().as_secs_f64()
}

fn change_percent(before: u64, after: u64) -> f64 {
    if before == 0 {
        return 0.0;
    }
    (after as f64 - before as f64) * 100.0 / before as f64
}

/// Run the soak: publisher up, warm-up churn, baseline, measured churn, after.
pub async fn run(cfg: &ChurnConfig) -> anyhow::Result<ChurnReport> {
    let http = client::http_client(cfg.whep.insecure);
    let publisher = client::publish(&http, &cfg.whip, MediaSpec::default()).await?;
    let until = Instant::now() + Duration::from_secs(10);
    while !publisher.stats.connected.load(Ordering::Relaxed) {
        if Instant::now() > until {
            anyhow::bail!("the publisher did not connect within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let initial = resources(&http, cfg).await?;
    let warmup = batch(&http, cfg, cfg.warmup_sessions).await;
    settle(&http, cfg, initial.sessions).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = resources(&http, cfg).await?;
    let soak = batch(&http, cfg, cfg.sessions).await;
    let settle_seconds = settle(&http, cfg, baseline.sessions).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = resources(&http, cfg).await?;
    let _ = publisher.close().await;
    Ok(ChurnReport {
        initial,
        warmup,
        baseline,
        soak,
        after,
        settle_seconds,
        rss_change_percent: change_percent(baseline.rss_bytes, after.rss_bytes),
        fds_change_percent: change_percent(baseline.open_fds, after.open_fds),
    })
}

/// The report as a few lines of text.
pub fn format(r: &ChurnReport) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let row = |name: &str, x: &Resources| {
        format!(
            "{name:<9} RSS {:8.1} MiB   open files {:5}   sessions {:6}\n",
            mib(x.rss_bytes),
            x.open_fds,
            x.sessions
        )
    };
    let batch = |name: &str, b: &BatchOutcome| {
        format!(
            "{name:<9} {} viewers in {:.1} s: {} connected, {} received media, {} failed\n",
            b.attempted, b.seconds, b.connected, b.received_media, b.failed
        )
    };
    let mut s = String::new();
    s += &row("initial", &r.initial);
    s += &batch("warm-up", &r.warmup);
    s += &row("baseline", &r.baseline);
    s += &batch("soak", &r.soak);
    s += &row("after", &r.after);
    s += &format!(
        "change    RSS {:+.1}%   open files {:+.1}%   sessions back to {} in {:.1} s\n",
        r.rss_change_percent, r.fds_change_percent, r.after.sessions, r.settle_seconds
    );
    s
}
