//! Every io backend carries a broadcast end to end: the server is started with
//! each `io` setting, must really use that backend (a silent fallback fails),
//! and a publisher's media reaches two viewers byte-exact and without loss.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_bench::client::{self, MediaSpec, Received, ViewerMode, TRACK_AUDIO, TRACK_VIDEO};
use sluice_tests::{session_counts, start, wait_until, whep, whip};

/// Payloads of one track that passed the integrity check: in order, no gaps.
fn contiguous(r: &Received, track: u8) -> usize {
    let c: Vec<u32> = r
        .stamps
        .iter()
        .filter(|(t, _)| *t == track)
        .map(|(_, c)| *c)
        .collect();
    for w in c.windows(2) {
        assert_eq!(w[1], w[0] + 1, "track {track} jumps {} -> {}", w[0], w[1]);
    }
    c.len()
}

async fn broadcast_through(io: &str) {
    let server = start(2, |c| c.io = io.into()).await;
    for s in &server.app.dataplane.shards {
        assert_eq!(s.io, io, "shard {} runs the requested backend", s.id.0);
    }
    let http = client::http_client(true);
    let publisher = client::publish(&http, &whip(&server, "io"), MediaSpec::default())
        .await
        .expect("publish");
    let mut viewers = Vec::new();
    for _ in 0..2 {
        viewers.push(
            client::view(&http, &whep(&server, "io"), ViewerMode::Full)
                .await
                .expect("view"),
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || publisher
            .stats
            .connected
            .load(Ordering::Relaxed)
            && viewers
                .iter()
                .all(|v| v.stats.connected.load(Ordering::Relaxed)))
        .await,
        "{io}: publisher and viewers connect"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    for (i, v) in viewers.iter().enumerate() {
        let r = v.stats.received.lock().unwrap().clone();
        assert_eq!(r.corrupt, 0, "{io}: viewer {i} got corrupt payloads");
        // 2 s of 30 fps video (several packets a frame) and 50 pkt/s audio.
        let video = contiguous(&r, TRACK_VIDEO);
        let audio = contiguous(&r, TRACK_AUDIO);
        assert!(video >= 150, "{io}: viewer {i} got {video} video packets");
        assert!(audio >= 70, "{io}: viewer {i} got {audio} audio packets");
        let (lost, expected) = v.stats.loss();
        assert_eq!(lost, 0, "{io}: viewer {i} lost {lost} of {expected}");
    }
    let c: Vec<_> = server
        .app
        .dataplane
        .shards
        .iter()
        .map(|s| s.counters.snapshot())
        .collect();
    let forwarded: u64 = c.iter().map(|c| c.rtp_forwarded).sum();
    let send_errors: u64 = c.iter().map(|c| c.drop_send_error).sum();
    assert!(forwarded >= 440, "{io}: forwarded {forwarded}");
    assert_eq!(send_errors, 0, "{io}: send errors");

    for v in viewers {
        v.close().await.unwrap();
    }
    publisher.close().await.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || session_counts(&server) == (0, 0)).await,
        "{io}: sessions removed: {:?}",
        session_counts(&server)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn std_backend_carries_a_broadcast_byte_exact() {
    broadcast_through("std").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mmsg_backend_carries_a_broadcast_byte_exact() {
    broadcast_through("mmsg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uring_backend_carries_a_broadcast_byte_exact() {
    broadcast_through("uring").await;
}
