//! Seeded network simulation, no sockets: a simulcast publisher and viewers
//! behind rate-limited, lossy links. Each viewer's layer must follow what its
//! link carries (TWCC bandwidth estimation), lost packets must be repaired
//! (NACK/RTX from the shard's cache) and no viewer's video may stall.

use std::time::Duration;

use sluice_dataplane::testkit::{Harness, Link};

/// Packets per frame and per layer (payloads of 300, 600, 900 bytes):
/// ~144 kbps, ~576 kbps and ~1.5 Mbps of payload at 30 frames/s.
const PACKETS: [usize; 3] = [2, 4, 7];
const FRAME: Duration = Duration::from_millis(33);
const SECONDS: usize = 40;

struct Viewer {
    peer: usize,
    rate: Option<u64>,
    loss: f64,
    /// The layer the link carries: the highest whose rate fits with headroom.
    expect: u8,
    /// Index into `layers_seen` at the end of each simulated second.
    marks: Vec<usize>,
}

/// Video packets in a viewer's `received` list that arrived after a later
/// sequence number: retransmissions (the links never reorder).
fn late_arrivals(h: &Harness, peer: usize) -> u64 {
    let mut max: Option<u16> = None;
    let mut late = 0;
    for &(_, seq, _) in h.peers[peer].received.iter().filter(|x| x.2 >= 300) {
        match max {
            Some(m) if (seq.wrapping_sub(m) as i16) < 0 => late += 1,
            _ => max = Some(seq),
        }
    }
    late
}

#[test]
fn viewers_on_limited_lossy_links_settle_on_the_layer_their_link_carries() {
    let mut h = Harness::new();
    h.step = Duration::from_millis(1);
    h.viewer_bwe = Some(2_500_000);
    let publisher = h.add_simulcast_publisher();
    let mut viewers = Vec::new();
    for (rate, expect) in [(Some(300_000), 0u8), (Some(1_500_000), 1), (None, 2)] {
        for loss in [0.0, 0.02, 0.05] {
            let peer = h.add_viewer();
            viewers.push(Viewer {
                peer,
                rate,
                loss,
                expect,
                marks: Vec::new(),
            });
        }
    }
    h.connect_all(Duration::from_secs(5));
    for v in &viewers {
        let p = &mut h.peers[v.peer];
        p.loss = v.loss;
        p.link = v.rate.map(|r| Link::new(r, Duration::from_millis(250)));
    }

    // The publisher answers keyframe requests on its next frame, like a browser.
    let mut seen_requests = h.peers[publisher].keyframe_requests;
    let mut frame = 0usize;
    for _second in 0..SECONDS {
        for _ in 0..30 {
            let requests = h.peers[publisher].keyframe_requests;
            let key = frame == 0 || requests != seen_requests;
            seen_requests = requests;
            for (layer, &n) in PACKETS.iter().enumerate() {
                let d = h.layer_frame(publisher, layer, n, key);
                h.feed(publisher, &d);
            }
            frame += 1;
            h.advance(FRAME);
        }
        for v in &mut viewers {
            v.marks.push(h.peers[v.peer].layers_seen.len());
        }
    }
    h.advance(Duration::from_secs(1));

    // Nominal packets per second on each layer.
    let nominal: Vec<usize> = PACKETS.iter().map(|n| n * 30).collect();
    let mut report = String::new();
    let mut failures = Vec::new();
    for v in &viewers {
        let seen = &h.peers[v.peer].layers_seen;
        // Per second: packets received on each layer.
        let mut per_sec = Vec::new();
        let mut start = 0;
        for &m in &v.marks {
            let mut counts = [0usize; 3];
            for &l in &seen[start..m] {
                counts[l as usize] += 1;
            }
            per_sec.push(counts);
            start = m;
        }
        let settled_at = per_sec
            .iter()
            .rposition(|c| (0..3).any(|l| l != v.expect as usize && c[l] > 0))
            .map_or(0, |i| i + 1);
        let lost = h.peers[v.peer].lost;
        let late = late_arrivals(&h, v.peer);
        let want = nominal[v.expect as usize];
        let after: Vec<usize> = per_sec[settled_at.min(SECONDS)..]
            .iter()
            .map(|c| c[v.expect as usize])
            .collect();
        let total: usize = after.iter().sum();
        report.push_str(&format!(
            "link {:>9} loss {:.2}: layer {} from second {settled_at:>2}; lost on link {lost:>4} \
             (queue {:>3}), repaired {late:>3}; {total} of {} packets after settling\n",
            v.rate.map_or("unlimited".to_string(), |r| r.to_string()),
            v.loss,
            v.expect,
            h.peers[v.peer].link.as_ref().map_or(0, |l| l.queue_drops),
            want * after.len(),
        ));
        if settled_at > 12 {
            failures.push(format!(
                "{:?}/{}: settled only at {settled_at} s",
                v.rate, v.loss
            ));
        }
        if after.len() < SECONDS - 12 {
            failures.push(format!("{:?}/{}: too little settled time", v.rate, v.loss));
        }
        // No stall: every settled second carries (nearly) its layer's full rate.
        if let Some(s) = after.iter().position(|&n| n * 10 < want * 9) {
            failures.push(format!(
                "{:?}/{}: second {} carried {} of {want} packets",
                v.rate,
                v.loss,
                settled_at + s,
                after[s]
            ));
        }
        // Complete: losses after settling were repaired (a 5% hole would show).
        if total * 100 < want * after.len() * 99 {
            failures.push(format!(
                "{:?}/{}: {total} of {} packets after settling",
                v.rate,
                v.loss,
                want * after.len()
            ));
        }
        if v.loss > 0.0 && late == 0 {
            failures.push(format!("{:?}/{}: nothing was repaired", v.rate, v.loss));
        }
    }
    println!("{report}");
    assert!(failures.is_empty(), "{failures:#?}\n{report}");
    let c = h.shard.counters();
    assert!(c.layer_switch_requests >= 6, "{c:?}");
}
