//! Media over a lossy link: run inside a network namespace whose loopback
//! drops a share of the datagrams sent to clients (see tests/suites/netloss.sh).
//! A WHIP publisher and a decrypting WHEP viewer; the viewer must end up with
//! every video packet, repaired by NACK and RTX from the server's cache.
//! Exits non-zero with the reason when it does not.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_bench::client::{self, MediaSpec, ViewerMode, TRACK_VIDEO};
use sluice_tests::{start, wait_until, whep, whip};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let media_port: u16 = std::env::var("MEDIA_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(41000);
    let server = start(1, |c| c.media_port = media_port).await;
    let http = client::http_client(true);
    let spec = MediaSpec {
        bitrate: 800_000,
        ..MediaSpec::default()
    };
    let publisher = client::publish(&http, &whip(&server, "lossy"), spec)
        .await
        .expect("publish");
    let viewer = client::view(&http, &whep(&server, "lossy"), ViewerMode::Full)
        .await
        .expect("view");
    let connected = wait_until(Duration::from_secs(20), || {
        viewer.stats.connected.load(Ordering::Relaxed)
    })
    .await;
    if !connected {
        eprintln!("netloss: viewer did not connect over the lossy link");
        println!("netloss: 0 passed, 1 failed");
        std::process::exit(1);
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Stop sending, then give repairs time to land.
    publisher.close().await.ok();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = viewer.stats.received.lock().unwrap().clone();
    let video: BTreeSet<u32> = r
        .stamps
        .iter()
        .filter(|(t, _)| *t == TRACK_VIDEO)
        .map(|(_, c)| *c)
        .collect();
    let (first, last) = (*video.first().unwrap_or(&0), *video.last().unwrap_or(&0));
    let expected = (last - first + 1) as usize;
    let missing = expected - video.len();
    let sent: u64 = server
        .app
        .dataplane
        .shards
        .iter()
        .map(|s| s.counters.snapshot().tx_packets)
        .sum();
    println!(
        "netloss: video packets {first}..={last}: received {} of {expected}, corrupt {}, server sent {sent} datagrams",
        video.len(),
        r.corrupt
    );
    let mut failed = Vec::new();
    if video.len() < 300 {
        failed.push(format!("too little video: {}", video.len()));
    }
    if missing > 0 {
        failed.push(format!("{missing} video packets never repaired"));
    }
    if r.corrupt > 0 {
        failed.push(format!("{} corrupt payloads", r.corrupt));
    }
    viewer.close().await.ok();
    server.shutdown().await;
    if failed.is_empty() {
        println!("netloss: 1 passed, 0 failed");
    } else {
        for f in &failed {
            eprintln!("netloss: {f}");
        }
        println!("netloss: 0 passed, 1 failed");
        std::process::exit(1);
    }
}
