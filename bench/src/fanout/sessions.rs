//! Starting a run's publishers, and closing sessions a bounded number at a
//! time: at teardown, or when a run fails before it has measured.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::config::FanoutConfig;
use super::{FanoutError, Run};
use crate::client::{self, ClientError, PublisherStats, SessionHandle, SessionOptions};

/// How long the publisher may take to connect.
const PUBLISHER_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest teardown before the remaining sessions are dropped without DELETE.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long closing the publishers may take at the end.
pub(super) const PUBLISHER_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts one publisher per stream, `setup_concurrency` at a time, and waits
/// until every one is connected; on failure closes those it started. Returns
/// them with the time from the last answer to the last connection (ICE and
/// DTLS).
pub(super) async fn start_publishers(
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
        // And their frames and audio packets over their periods.
        media.phase = i as f64 / cfg.streams.max(1) as f64;
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
pub(super) async fn close_all<S: Send + Sync + 'static>(
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
    /// DELETEs every session, a bounded number at a time, within [`TEARDOWN_TIMEOUT`].
    pub(super) async fn teardown(&mut self) {
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
