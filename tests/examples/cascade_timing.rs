//! How long the cascade takes to start and to recover, measured on nodes on
//! 127.0.0.1-3 sharing a `redis-server` this program starts (BENCHMARKS.md,
//! "Cascade"). Not a test: it prints figures and asserts nothing about them.
//!
//! ```sh
//! cargo build --release -p sluice
//! cargo run --release -p sluice-tests --example cascade_timing -- [rounds]
//! ```
//!
//! Each round, on a fresh stream:
//! - **direct**: a viewer on the origin itself, from its WHEP POST to its first
//!   media packet and to its first video packet;
//! - **first on an edge**: the same for the first viewer of the stream on an
//!   edge, which makes the edge pull the stream from the origin;
//! - **second on an edge**: a viewer on an edge that already pulls the stream;
//! - **recovery**: the origin (a `sluice serve` process) is killed with -9 and
//!   the publisher publishes again on another node, retrying every 100 ms
//!   while the dead origin's claim lasts (`lease_ms` 2000 here): the time from
//!   the kill to the edge's viewer getting media again, and from the accepted
//!   republish to that.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sluice_bench::client::{self, Endpoint, MediaSpec, SessionHandle, ViewerMode, ViewerStats};
use sluice_tests::cluster::{Node, RedisServer};

const SECRET: &str = "cascade-timing-secret-0123";

fn start(redis: &RedisServer, ip: &str, id: &str) -> Node {
    let a = sluice_tests::cluster::node_args(redis, id, SECRET);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    Node::start(ip, &a)
}

fn ep(node: &Node, kind: &str, stream: &str) -> Endpoint {
    Endpoint {
        url: format!("{}/{kind}/{stream}", node.url),
        token: None,
        insecure: true,
    }
}

fn video_packets(v: &SessionHandle<ViewerStats>) -> usize {
    v.stats
        .received
        .lock()
        .unwrap()
        .stamps
        .iter()
        .filter(|(t, _)| *t == client::TRACK_VIDEO)
        .count()
}

/// Poll every millisecond until `f` holds; the time it took, or `None` after 15 s.
async fn until(from: Instant, mut f: impl FnMut() -> bool) -> Option<Duration> {
    while from.elapsed() < Duration::from_secs(15) {
        if f() {
            return Some(from.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// A viewer of `stream` on `node`: (POST → first packet, POST → first video packet).
async fn first_media(
    http: &reqwest::Client,
    node: &Node,
    stream: &str,
) -> (
    SessionHandle<ViewerStats>,
    Option<Duration>,
    Option<Duration>,
) {
    let t0 = Instant::now();
    let v = client::view(http, &ep(node, "whep", stream), ViewerMode::Full)
        .await
        .expect("viewer");
    let any = until(t0, || v.stats.packets.load(Ordering::Relaxed) > 0).await;
    let video = until(t0, || video_packets(&v) > 0).await;
    (v, any, video)
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("timeout".into(), |d| {
        format!("{:.1}", d.as_secs_f64() * 1e3)
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("rounds: a number"))
        .unwrap_or(5);
    let redis = RedisServer::start();
    let b = start(&redis, "127.0.0.2", "b");
    let c = start(&redis, "127.0.0.3", "c");
    let http = client::http_client(true);
    println!("round | direct first packet / video ms | edge first packet / video ms | edge second packet / video ms | recovery from kill / from republish ms");
    for round in 0..rounds {
        let a = start(&redis, "127.0.0.1", "a");
        let stream = format!("t{round}");
        let publisher = client::publish(&http, &ep(&a, "whip", &stream), MediaSpec::default())
            .await
            .expect("publish on a");
        until(Instant::now(), || {
            publisher.stats.connected.load(Ordering::Relaxed)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (d, d_any, d_video) = first_media(&http, &a, &stream).await;
        let (e1, e1_any, e1_video) = first_media(&http, &b, &stream).await;
        let (e2, e2_any, e2_video) = first_media(&http, &b, &stream).await;
        // Recovery: kill the origin, publish again on c.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let killed = Instant::now();
        a.kill();
        let before = e1.stats.packets.load(Ordering::Relaxed);
        let mut accepted = None;
        let mut republished = None;
        while killed.elapsed() < Duration::from_secs(15) {
            let t = Instant::now();
            if let Ok(p) =
                client::publish(&http, &ep(&c, "whip", &stream), MediaSpec::default()).await
            {
                accepted = Some(t);
                republished = Some(p);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Media from before the kill may still be in flight for a moment.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let floor = before.max(e1.stats.packets.load(Ordering::Relaxed));
        let resumed = match accepted {
            Some(_) => until(killed, || e1.stats.packets.load(Ordering::Relaxed) > floor).await,
            None => None,
        };
        let from_republish = resumed
            .zip(accepted)
            .map(|(r, acc)| (killed + r).saturating_duration_since(acc));
        println!(
            "{round} | {} / {} | {} / {} | {} / {} | {} / {}",
            ms(d_any),
            ms(d_video),
            ms(e1_any),
            ms(e1_video),
            ms(e2_any),
            ms(e2_video),
            ms(resumed),
            ms(from_republish)
        );
        for v in [d, e1, e2] {
            let _ = v.close().await;
        }
        if let Some(p) = republished {
            let _ = p.close().await;
        }
        let _ = publisher.close().await;
        // Let the edge's pull linger out before the next round.
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    drop((b, c, redis));
}
