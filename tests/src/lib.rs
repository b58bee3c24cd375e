//! Shared helpers for sluice's integration tests: an in-process server on
//! loopback with ephemeral ports, and clients pointed at it.

// Helpers for this workspace's own tests (publish = false), named after what
// they do; the workspace's unsafe-code lints still hold here.
#![allow(missing_docs)]

pub mod attack;
pub mod cluster;
pub mod room;
pub mod tls;

use std::time::{Duration, Instant};

use sluice::{Config, Server};
use std::sync::atomic::Ordering;

use sluice_bench::client::{
    self, Endpoint, MediaSpec, PublisherStats, Received, SessionHandle, ViewerMode, ViewerStats,
};

/// Start a server on 127.0.0.1 with ephemeral HTTPS and media ports.
pub async fn start(shards: usize, tweak: impl FnOnce(&mut Config)) -> Server {
    let mut cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        media_port: 0,
        shards,
        ..Config::default()
    };
    tweak(&mut cfg);
    Server::start(cfg, false).await.expect("server starts")
}

pub fn whip(server: &Server, stream: &str) -> Endpoint {
    Endpoint {
        url: format!("{}/whip/{stream}", server.url()),
        token: None,
        insecure: true,
    }
}

pub fn whep(server: &Server, stream: &str) -> Endpoint {
    Endpoint {
        url: format!("{}/whep/{stream}", server.url()),
        token: None,
        insecure: true,
    }
}

/// Poll `f` every 50 ms until it is true or `limit` passes; returns whether it became true.
pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// [`wait_until`] for a condition that must be awaited (an HTTP call).
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f().await
}

/// A dataplane counter summed over the server's shards.
pub fn shard_counter(server: &Server, f: impl Fn(&sluice_dataplane::Counters) -> u64) -> u64 {
    server
        .app
        .dataplane
        .shards
        .iter()
        .map(|s| f(&s.counters.snapshot()))
        .sum()
}

/// Sessions the server's registry and its shards still hold.
pub fn session_counts(server: &Server) -> (usize, usize) {
    let reg = server.app.registry().session_count();
    let shards = server
        .app
        .dataplane
        .shards
        .iter()
        .map(|s| s.sessions())
        .sum();
    (reg, shards)
}

/// Every session leaves the registry and the shards within 10 s; then the server stops.
pub async fn empties_then_stops(server: Server) {
    assert!(
        wait_until(Duration::from_secs(10), || session_counts(&server)
            == (0, 0))
        .await,
        "sessions left: {:?}",
        session_counts(&server)
    );
    server.shutdown().await;
}

/// Packets `viewer` has received.
pub fn packets(viewer: &SessionHandle<ViewerStats>) -> u64 {
    viewer.stats.packets.load(Ordering::Relaxed)
}

/// Whether `viewer` has received more than `count` packets within `limit`.
pub async fn receives_more_than(
    viewer: &SessionHandle<ViewerStats>,
    count: u64,
    limit: Duration,
) -> bool {
    wait_until(limit, || packets(viewer) > count).await
}

/// A default publisher of `stream` and one viewer of it, returned once the viewer has
/// received more than `packets` packets (10 s at most).
pub async fn publish_and_view(
    server: &Server,
    http: &reqwest::Client,
    stream: &str,
    mode: ViewerMode,
    packets: u64,
) -> (SessionHandle<PublisherStats>, SessionHandle<ViewerStats>) {
    let publisher = client::publish(http, &whip(server, stream), MediaSpec::default())
        .await
        .unwrap();
    let viewer = client::view(http, &whep(server, stream), mode)
        .await
        .unwrap();
    assert!(
        receives_more_than(&viewer, packets, Duration::from_secs(10)).await,
        "the viewer of {stream} got {} packets in 10 s",
        self::packets(&viewer)
    );
    (publisher, viewer)
}

/// Counters of one track must be contiguous and increasing: in order, no loss.
pub fn assert_contiguous(r: &Received, track: u8, min: usize, who: &str) {
    let c: Vec<u32> = r
        .stamps
        .iter()
        .filter(|(t, _)| *t == track)
        .map(|(_, c)| *c)
        .collect();
    assert!(
        c.len() >= min,
        "{who}: track {track} got {} packets, want >= {min}",
        c.len()
    );
    for w in c.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "{who}: track {track} jumps {} -> {}",
            w[0],
            w[1]
        );
    }
}

/// An SDP offer of audio and video in direction `dir` from a str0m peer, for
/// requests whose answers a test reads itself.
pub fn sdp_offer(dir: sluice_dataplane::str0m::media::Direction) -> String {
    use sluice_dataplane::str0m::media::MediaKind;
    let mut rtc = sluice_dataplane::str0m::Rtc::new(Instant::now());
    let cand =
        sluice_dataplane::str0m::Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap();
    rtc.add_local_candidate(cand);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}
