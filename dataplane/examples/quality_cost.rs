//! What media-quality features cost the shard, per forwarded packet, against
//! plain forwarding. Each scenario runs the same seeded simulation (publisher,
//! VIEWERS viewers, SECONDS of 30 fps video on a fake clock) through the
//! in-memory harness; count the shard's instructions with callgrind:
//!
//! ```text
//! for s in plain nack simulcast switching; do
//!   valgrind --tool=callgrind --collect-atstart=no \
//!     --toggle-collect='sluice_testkit_shard_*' --callgrind-out-file=cg.$s \
//!     target/release/examples/quality_cost $s 20 10
//! done
//! ```
//!
//! - `plain`: one 4-packet (~1 Mbps) video frame every 33 ms, no loss.
//! - `nack`: the same with 5% loss toward every viewer; the shard answers
//!   NACKs with RTX from its cache.
//! - `simulcast`: three layers (2/4/7 packets per frame), viewers capped to
//!   layers 0/1/2 in turn; no switching.
//! - `switching`: as `simulcast`, but every viewer's cap changes every 500 ms,
//!   with a keyframe every 15 frames, so layers switch all the time.
//!
//! Prints the shard's forwarded packet count to divide the total by.

use std::time::Duration;

use sluice_dataplane::testkit::Harness;
use sluice_dataplane::Command;

fn main() {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_else(|| "plain".into());
    let viewers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let seconds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let simulcast = matches!(scenario.as_str(), "simulcast" | "switching");
    if !matches!(
        scenario.as_str(),
        "plain" | "nack" | "simulcast" | "switching"
    ) {
        eprintln!("scenario must be plain, nack, simulcast or switching");
        std::process::exit(2);
    }
    let mut h = Harness::new();
    let publisher = if simulcast {
        h.add_simulcast_publisher()
    } else {
        h.add_publisher()
    };
    let vs: Vec<usize> = (0..viewers).map(|_| h.add_viewer()).collect();
    for &v in &vs {
        h.peers[v].count_only = true;
    }
    h.connect_all(Duration::from_secs(30));
    if scenario == "nack" {
        for &v in &vs {
            h.peers[v].loss = 0.05;
        }
    }
    let cap = |h: &mut Harness, i: usize, v: usize, max: u8| {
        let id = h.peers[v].id;
        let now = h.now;
        h.shard.handle_command(
            now,
            Command::SetMaxLayer {
                id,
                mid: None,
                max: Some((max + i as u8) % 3),
            },
        );
    };
    if simulcast {
        for (i, &v) in vs.iter().enumerate() {
            cap(&mut h, i, v, 0);
        }
    }
    let before = h.shard.counters().rtp_forwarded;
    for frame in 0..seconds * 30 {
        if simulcast {
            if scenario == "switching" && frame % 15 == 14 {
                for (i, &v) in vs.iter().enumerate() {
                    cap(&mut h, i, v, (frame / 15) as u8 % 3);
                }
            }
            let key = frame % 15 == 0;
            for (layer, n) in [2, 4, 7].into_iter().enumerate() {
                let d = h.layer_frame(publisher, layer, n, key);
                h.feed(publisher, &d);
            }
        } else {
            let d = h.publisher_datagrams(publisher, 4, 1100);
            h.feed(publisher, &d);
        }
        h.advance(Duration::from_millis(33));
    }
    let c = h.shard.counters();
    let lost: u64 = vs.iter().map(|&v| h.peers[v].lost).sum();
    println!(
        "scenario {scenario} viewers {viewers} seconds {seconds} forwarded {} \
         layer_switch_requests {} lost_on_links {lost}",
        c.rtp_forwarded - before,
        c.layer_switch_requests
    );
}
