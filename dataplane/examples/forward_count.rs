//! Forward `PACKETS` packets to `VIEWERS` viewers through the Sans-IO core,
//! for instruction counting under callgrind:
//!
//! ```text
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect=forward_phase \
//!     target/release/examples/forward_count 100 400 [PER_TURN [HOLD_MS [DIRECT [TEMPORAL]]]]
//! ```
//! PER_TURN (default 8) is how many publisher packets each shard turn carries,
//! so how many each viewer visit writes; HOLD_MS (default 0) turns on frame
//! holding, so a frame's packets reach each viewer in one visit; DIRECT
//! (default 1) 0 keeps viewers on str0m's send path instead of sluice's;
//! TEMPORAL (default 0) 1 makes the publisher an L1T3 VP8 stream, 2 that
//! too with every viewer capped at the base temporal layer. Only
//! `forward_phase` (the shard turn) is counted; divide by VIEWERS×PACKETS.

use std::time::Duration;

use sluice_dataplane::testkit::Harness;

/// The measured phase: feed the publisher's datagrams and forward them.
#[inline(never)]
#[allow(unsafe_code)] // no_mangle: callgrind toggles collection on this symbol.
#[no_mangle]
pub fn forward_phase(h: &mut Harness, publisher: usize, d: &[Vec<u8>]) -> usize {
    h.feed(publisher, d)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let viewers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let packets: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(400);
    // Packets of the publisher per shard turn (so per viewer visit).
    let per_turn: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    // Frame hold in milliseconds (0: every packet fans out in its own turn).
    let hold_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let direct = args.next().map(|a| a != "0").unwrap_or(true);
    let temporal: u8 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let mut h = Harness::with_config(|c| {
        c.frame_hold = Duration::from_millis(hold_ms);
        c.direct_send = direct;
    });
    h.l1t3 = temporal > 0;
    let publisher = h.add_publisher();
    for _ in 0..viewers {
        let v = h.add_viewer();
        h.peers[v].count_only = true;
    }
    h.connect_all(Duration::from_secs(30));
    if temporal == 2 {
        for v in 1..=viewers {
            let id = h.peers[v].id;
            h.shard.handle_command(
                h.now,
                sluice_dataplane::Command::SetMaxTemporal {
                    id,
                    mid: None,
                    max: Some(0),
                },
            );
        }
    }
    // Warm up.
    for _ in 0..10 {
        let d = h.publisher_datagrams(publisher, 8, 1100);
        h.feed(publisher, &d);
        h.shard.transmits().clear();
        h.now += Duration::from_millis(1);
    }
    // Steady state: let receiver reports reach the shard, as browsers send
    // them every second or so; until a viewer's first report str0m writes
    // the MID header extension on every packet.
    h.advance(Duration::from_secs(3));
    let before = h.shard.counters().rtp_forwarded;
    let left_before = h.shard.counters().temporal_left_out;
    let mut sent = 0;
    while sent < packets {
        let d = h.publisher_datagrams(publisher, per_turn, 1100);
        sent += d.len();
        forward_phase(&mut h, publisher, &d);
        h.shard.transmits().clear();
        h.now += Duration::from_millis(1);
    }
    let forwarded = h.shard.counters().rtp_forwarded - before;
    let left_out = h.shard.counters().temporal_left_out - left_before;
    println!("viewers {viewers} packets {sent} forwarded {forwarded} left out {left_out}");
}
