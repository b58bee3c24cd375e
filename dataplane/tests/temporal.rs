//! VP8 temporal layers: a viewer capped below the top gets fewer frames, with
//! sequence numbers and picture ids that close up behind the frames left out.

use std::time::Duration;

use sluice_dataplane::testkit::Harness;
use sluice_dataplane::Command;

/// One VP8 frame as Chrome's L1T3 encoder describes it: X, I (15-bit picture
/// id), L and T set; `tid` and the layer sync bit in the T byte; the frame
/// tag's P bit clear on a keyframe. Two packets, the second a continuation.
fn frame(pid: u16, tl0: u8, tid: u8, sync: bool, keyframe: bool, len: usize) -> Vec<Vec<u8>> {
    let t = tid << 6 | if sync { 0x20 } else { 0 };
    let first = vec![
        0x90,
        0xe0,
        0x80 | (pid >> 8) as u8,
        pid as u8,
        tl0,
        t,
        if keyframe { 0x00 } else { 0x01 },
        0xaa,
    ];
    let rest = vec![0x80, 0xe0, 0x80 | (pid >> 8) as u8, pid as u8, tl0, t, 0xbb];
    [first, rest]
        .into_iter()
        .map(|mut p| {
            p.resize(len.max(p.len()), 0x55);
            p
        })
        .collect()
}

/// What a viewer's payloads say: (picture id, TL0PICIDX, TID) per packet.
fn described(payloads: &[Vec<u8>]) -> Vec<(u16, u8, u8)> {
    payloads
        .iter()
        .map(|p| (((p[2] & 0x7f) as u16) << 8 | p[3] as u16, p[4], p[5] >> 6))
        .collect()
}

/// The publisher's stream: frames in the L1T3 pattern 0, 2, 1, 2 with
/// picture ids from 1000 and TL0PICIDX counting base frames.
struct Publisher {
    peer: usize,
    pid: u16,
    tl0: u8,
    ts: u32,
    /// Bytes per packet.
    len: usize,
}

impl Publisher {
    /// Send `frames` frames; `sync` marks the layer-1 and layer-2 frames as
    /// layer sync frames, `keyframe_first` makes the first a keyframe.
    fn send(&mut self, h: &mut Harness, frames: usize, sync: bool, keyframe_first: bool) {
        for f in 0..frames {
            let tid = [0, 2, 1, 2][(self.pid % 4) as usize];
            if tid == 0 {
                self.tl0 = self.tl0.wrapping_add(1);
            }
            let key = keyframe_first && f == 0;
            let d = h.video_frame(
                self.peer,
                self.ts,
                frame(self.pid, self.tl0, tid, sync && tid > 0, key, self.len),
            );
            h.feed(self.peer, &d);
            h.exchange();
            self.pid += 1;
            self.ts += 3000;
            h.advance(Duration::from_millis(33));
        }
    }
}

/// Sequence numbers, 15-bit picture ids (one per two-packet frame) and
/// TL0PICIDX run on without a gap.
fn assert_closed_up(h: &Harness, v: usize) {
    let seqs: Vec<u16> = h.peers[v].received.iter().map(|x| x.1).collect();
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0].wrapping_add(1), "sequence numbers close up");
    }
    let d = described(h.peers[v].payloads.as_deref().unwrap_or_default());
    for w in d.chunks(2).collect::<Vec<_>>().windows(2) {
        let (a, b) = (w[0][0], w[1][0]);
        assert_eq!(
            b.0,
            (a.0 + 1) & 0x7fff,
            "picture ids close up: {a:?} then {b:?}"
        );
        assert!(b.1 == a.1 || b.1 == a.1.wrapping_add(1), "TL0PICIDX kept");
    }
}

#[test]
fn a_temporal_cap_leaves_out_upper_layers_and_numbering_closes_up() {
    capped_and_lifted(None);
}

/// Viewers that estimate bandwidth stay on str0m's send path, which writes
/// the picture ids as it serializes: the same holds there.
#[test]
fn on_str0ms_send_path_too() {
    capped_and_lifted(Some(2_500_000));
}

fn capped_and_lifted(viewer_bwe: Option<u64>) {
    let mut h = Harness::new();
    h.viewer_bwe = viewer_bwe;
    let peer = h.add_publisher();
    let capped = h.add_viewer();
    let full = h.add_viewer();
    h.connect_all(Duration::from_secs(5));
    for v in [capped, full] {
        h.peers[v].payloads = Some(Vec::new());
    }
    let id = h.peers[capped].id;
    h.shard.handle_command(
        h.now,
        Command::SetMaxTemporal {
            id,
            mid: None,
            max: Some(0),
        },
    );
    let mut p = Publisher {
        peer,
        pid: 1000,
        tl0: 0,
        ts: 0,
        len: 0,
    };
    p.send(&mut h, 24, true, true);
    // Every frame to the uncapped viewer, as sent.
    let d = described(h.peers[full].payloads.as_deref().unwrap());
    assert_eq!(d.len(), 48);
    assert_eq!(d[0].0, 1000);
    assert_eq!(d[47].0, 1023);
    // Only base frames to the capped one: a quarter of the frames.
    let d = described(h.peers[capped].payloads.as_deref().unwrap());
    assert_eq!(d.len(), 12, "{d:?}");
    assert!(d.iter().all(|x| x.2 == 0));
    assert_eq!(d[0].0, 1000);
    assert_closed_up(&h, capped);
    assert_eq!(h.shard.counters().temporal_left_out, 36);
    let direct = h.shard.counters().direct_sessions;
    assert_eq!(
        direct == 0,
        viewer_bwe.is_some(),
        "send path: {direct} direct"
    );
    assert!(
        h.shard.counters().rtp_forwarded >= 60,
        "{}",
        h.shard.counters().rtp_forwarded
    );

    // Lifted: without a sync frame or a keyframe the upper layers wait, and
    // the publisher is asked for a keyframe.
    let requests = h.peers[peer].keyframe_requests;
    h.shard.handle_command(
        h.now,
        Command::SetMaxTemporal {
            id,
            mid: None,
            max: None,
        },
    );
    p.send(&mut h, 8, false, false);
    let d = described(h.peers[capped].payloads.as_deref().unwrap());
    assert_eq!(d.len(), 16, "only base frames until a way up");
    assert!(h.peers[peer].keyframe_requests > requests);
    // Sync frames: layer 1 at its first sync frame, layer 2 at the next of its own.
    p.send(&mut h, 8, true, false);
    let d = described(h.peers[capped].payloads.as_deref().unwrap());
    let tids: Vec<u8> = d[16..].iter().step_by(2).map(|x| x.2).collect();
    assert_eq!(tids, [0, 1, 2, 0, 2, 1, 2], "sent 0, 2, 1, 2, 0, 2, 1, 2");
    assert_closed_up(&h, capped);

    // Capped again at layer 1: layer 2 goes at once, the numbering still closes up.
    h.shard.handle_command(
        h.now,
        Command::SetMaxTemporal {
            id,
            mid: None,
            max: Some(1),
        },
    );
    let before = h.peers[capped].payloads.as_ref().unwrap().len();
    p.send(&mut h, 8, false, false);
    let d = described(h.peers[capped].payloads.as_deref().unwrap());
    assert_eq!(d.len() - before, 8, "base and layer 1: half the frames");
    assert!(d[before..].iter().all(|x| x.2 <= 1));
    assert_closed_up(&h, capped);
    assert_eq!(h.undeliverable, 0);
}

#[test]
fn a_keyframe_lifts_a_lowered_limit_at_once() {
    let mut h = Harness::new();
    let peer = h.add_publisher();
    let v = h.add_viewer();
    h.connect_all(Duration::from_secs(5));
    h.peers[v].payloads = Some(Vec::new());
    let id = h.peers[v].id;
    let cap = |h: &mut Harness, max| {
        h.shard
            .handle_command(h.now, Command::SetMaxTemporal { id, mid: None, max })
    };
    cap(&mut h, Some(0));
    let mut p = Publisher {
        peer,
        pid: 0x7ff8,
        tl0: 250,
        ts: 0,
        len: 0,
    };
    // Picture ids wrap at 15 bits, TL0PICIDX at 8, on the way.
    p.send(&mut h, 16, false, true);
    cap(&mut h, None);
    p.send(&mut h, 4, false, false);
    assert_eq!(h.peers[v].received.len(), 2 * (4 + 1));
    p.send(&mut h, 4, false, true);
    let d = described(h.peers[v].payloads.as_deref().unwrap());
    let tids: Vec<u8> = d[10..].iter().step_by(2).map(|x| x.2).collect();
    assert_eq!(tids, [0, 2, 1, 2]);
    assert_closed_up(&h, v);
}
