//! The Sans-IO forward path, driven in memory on a fake clock.

use std::time::Duration;

use sluice_dataplane::is_rtp;
use sluice_dataplane::testkit::Harness;

#[test]
fn every_viewer_gets_every_packet_in_order_on_a_fake_clock() {
    let mut h = Harness::new();
    let publisher = h.add_publisher();
    let viewers: Vec<usize> = (0..3).map(|_| h.add_viewer()).collect();
    h.connect_all(Duration::from_secs(5));
    let datagrams = h.publisher_datagrams(publisher, 100, 1000);
    assert_eq!(datagrams.len(), 100);
    h.feed(publisher, &datagrams);
    h.exchange();
    for &v in &viewers {
        let got = &h.peers[v].received;
        assert_eq!(got.len(), 100, "viewer {v}");
        assert!(got.iter().all(|(_, _, len)| *len == 1000));
        for w in got.windows(2) {
            assert_eq!(w[1].1, w[0].1.wrapping_add(1), "viewer {v} in order");
        }
    }
    assert_eq!(h.shard.counters().rtp_forwarded, 300);
    assert_eq!(h.undeliverable, 0);
}

#[test]
fn a_viewer_that_leaves_stops_receiving_and_frees_its_slot() {
    let mut h = Harness::new();
    let publisher = h.add_publisher();
    let a = h.add_viewer();
    let b = h.add_viewer();
    h.connect_all(Duration::from_secs(5));
    let id = h.peers[b].id;
    h.shard
        .handle_command(h.now, sluice_dataplane::Command::RemoveSession(id));
    assert_eq!(h.shard.session_count(), 2);
    let d = h.publisher_datagrams(publisher, 10, 500);
    h.feed(publisher, &d);
    h.exchange();
    assert_eq!(h.peers[a].received.len(), 10);
    assert_eq!(h.peers[b].received.len(), 0);
    assert_eq!(h.stream.viewer_total(), 1);
    assert_eq!(
        h.shard.poll_event(),
        Some(sluice_dataplane::ShardEvent::Connected { id: h.peers[0].id })
    );
}

#[test]
fn joining_viewer_triggers_one_throttled_pli_at_the_publisher() {
    let mut h = Harness::new();
    let publisher = h.add_publisher();
    h.connect_all(Duration::from_secs(5));
    // The publisher's video track becomes known with its first packet.
    let d = h.publisher_datagrams(publisher, 4, 500);
    h.feed(publisher, &d);
    for _ in 0..5 {
        h.add_viewer();
    }
    h.connect_all(Duration::from_secs(5));
    h.advance(Duration::from_millis(100));
    assert_eq!(h.peers[publisher].keyframe_requests, 1);
    assert_eq!(h.shard.counters().keyframe_requests, 1);
    // After the throttle window a new joiner may ask again.
    h.advance(Duration::from_millis(600));
    h.add_viewer();
    h.connect_all(Duration::from_secs(5));
    h.advance(Duration::from_millis(100));
    assert_eq!(h.peers[publisher].keyframe_requests, 2);
}

#[test]
fn lost_packets_are_repaired_from_the_sfu_cache_with_rtx() {
    let mut h = Harness::new();
    let publisher = h.add_publisher();
    let clean = h.add_viewer();
    let lossy = h.add_viewer();
    h.connect_all(Duration::from_secs(5));
    h.peers[lossy].loss = 0.05;
    send_video(&mut h, publisher, 100);
    h.advance(Duration::from_millis(500));
    assert!(
        h.peers[lossy].lost > 5,
        "the link dropped packets: {}",
        h.peers[lossy].lost
    );
    let distinct = |v: usize| {
        let mut seqs: Vec<u16> = h.peers[v].received.iter().map(|x| x.1).collect();
        seqs.sort_unstable();
        seqs.dedup();
        seqs.len()
    };
    assert_eq!(distinct(clean), 400);
    assert_eq!(
        distinct(lossy),
        400,
        "every lost packet was resent (lost {})",
        h.peers[lossy].lost
    );
    // Resent by sluice's own send path, on the RTX stream.
    let c = h.shard.counters();
    assert_eq!(c.direct_sessions, 2);
    assert!(c.rtx_sent > 0 && c.nack_misses == 0, "{c:?}");
}

#[test]
fn a_lost_final_dtls_flight_is_resent_after_the_handshake_state_is_released() {
    // The shard's DTLS server sends its last flight (ChangeCipherSpec and
    // Finished, a datagram whose first record is a ChangeCipherSpec, type 20)
    // and then gives back what only the handshake needed
    // (third_party/README.md, dimpl). Lose that flight once per viewer: the
    // viewer's retransmitted flight must get it resent, and media must flow.
    let mut h = Harness::new();
    let publisher = h.add_publisher();
    let viewers: Vec<usize> = (0..4).map(|_| h.add_viewer()).collect();
    for &v in &viewers {
        h.peers[v].drop_next = Some(|d: &[u8]| d.first() == Some(&20));
    }
    h.connect_all(Duration::from_secs(30));
    for &v in &viewers {
        assert!(
            h.peers[v].drop_next.is_none(),
            "viewer {v}: no flight was lost"
        );
        assert_eq!(h.peers[v].lost, 1);
    }
    send_video(&mut h, publisher, 50);
    h.advance(Duration::from_millis(500));
    every_viewer_received_at_least(&h, &viewers, 200);
}

/// Each of `viewers` received at least `n` packets.
fn every_viewer_received_at_least(h: &Harness, viewers: &[usize], n: usize) {
    for &v in viewers {
        let got = h.peers[v].received.len();
        assert!(got >= n, "viewer {v} received {got}");
    }
}

/// `frames` frames of a publisher's video: 4 packets of 900 bytes every 20 ms.
fn send_video(h: &mut Harness, publisher: usize, frames: usize) {
    for _ in 0..frames {
        let d = h.publisher_datagrams(publisher, 4, 900);
        h.feed(publisher, &d);
        h.advance(Duration::from_millis(20));
    }
}

/// 1 s of a publisher's video and 1.5 s more of exchange.
fn one_second_of_video(h: &mut Harness, publisher: usize) {
    send_video(h, publisher, 50);
    h.advance(Duration::from_millis(1500));
}

#[test]
fn viewers_that_estimate_nothing_get_media_and_sender_reports_from_sluices_own_send_path() {
    let mut h = Harness::new();
    let publisher = h.add_publisher();
    let viewers: Vec<usize> = (0..3).map(|_| h.add_viewer()).collect();
    h.connect_all(Duration::from_secs(5));
    one_second_of_video(&mut h, publisher);
    let c = *h.shard.counters();
    assert_eq!(c.direct_sessions, 3, "{c:?}");
    assert_eq!(c.direct_refused, 0);
    for &v in &viewers {
        let p = &h.peers[v];
        assert_eq!(
            p.received.len(),
            200,
            "viewer {v}: str0m decrypted every packet"
        );
        for w in p.received.windows(2) {
            assert_eq!(w[1].1, w[0].1.wrapping_add(1), "viewer {v} in order");
        }
        // The viewer's str0m read our sender reports, one per second while
        // media flows: the last counts what was sent up to then.
        let video = p.video.expect("video mid");
        let reported = p
            .reported_sent
            .iter()
            .find(|(m, _)| *m == video)
            .map_or(0, |x| x.1);
        assert!(
            (190..=200).contains(&reported),
            "viewer {v}: {:?}",
            p.reported_sent
        );
    }
    assert!(c.sender_reports >= 3, "{c:?}");
    // str0m makes no reports of streams it never sent on (third_party/str0m),
    // so the shard had none to hold back.
    assert_eq!(c.rtcp_replaced, 0, "{c:?}");
}

#[test]
fn with_the_direct_path_off_str0m_sends_as_before() {
    let mut h = Harness::with_config(|c| c.direct_send = false);
    let publisher = h.add_publisher();
    let viewers: Vec<usize> = (0..2).map(|_| h.add_viewer()).collect();
    h.connect_all(Duration::from_secs(5));
    one_second_of_video(&mut h, publisher);
    let c = *h.shard.counters();
    assert_eq!(
        (c.direct_sessions, c.sender_reports, c.rtcp_replaced),
        (0, 0, 0)
    );
    for &v in &viewers {
        assert_eq!(h.peers[v].received.len(), 200, "viewer {v}");
    }
}

#[test]
fn viewers_that_estimate_bandwidth_stay_on_str0ms_send_path() {
    let mut h = Harness::new();
    h.viewer_bwe = Some(1_000_000);
    let publisher = h.add_publisher();
    let v = h.add_viewer();
    h.connect_all(Duration::from_secs(5));
    one_second_of_video(&mut h, publisher);
    assert_eq!(h.shard.counters().direct_sessions, 0);
    assert_eq!(h.peers[v].received.len(), 200);
}

/// One frame on every layer, then exchange and let time pass.
fn simulcast_frames(h: &mut Harness, publisher: usize, frames: usize, key_every: usize) {
    for f in 0..frames {
        for layer in 0..3 {
            let d = h.layer_frame(publisher, layer, 2, f % key_every == 0);
            h.feed(publisher, &d);
        }
        h.advance(Duration::from_millis(33));
    }
}

#[test]
fn simulcast_viewers_get_their_capped_layer_and_switch_up_on_a_keyframe() {
    let mut h = Harness::new();
    let publisher = h.add_simulcast_publisher();
    let low = h.add_viewer();
    let high = h.add_viewer();
    h.connect_all(Duration::from_secs(5));
    let low_id = h.peers[low].id;
    h.shard.handle_command(
        h.now,
        sluice_dataplane::Command::SetMaxLayer {
            id: low_id,
            mid: None,
            max: Some(0),
        },
    );
    // Layer rates are learned from traffic first, then choices settle.
    simulcast_frames(&mut h, publisher, 60, 10);
    let tail = |v: usize, h: &Harness| {
        h.peers[v]
            .layers_seen
            .iter()
            .rev()
            .take(20)
            .copied()
            .collect::<Vec<u8>>()
    };
    assert!(
        tail(low, &h).iter().all(|&l| l == 0),
        "capped viewer on layer 0: {:?}",
        tail(low, &h)
    );
    assert!(
        tail(high, &h).iter().all(|&l| l == 2),
        "uncapped viewer on layer 2: {:?}",
        tail(high, &h)
    );
    assert!(h.peers[low].layers_seen.len() > 40);

    // No one takes the middle layer: its packets stop at the publisher's shard
    // (2 per frame), the others are forwarded.
    let suppressed = h.shard.counters().layer_packets_suppressed;
    simulcast_frames(&mut h, publisher, 10, 1000);
    assert_eq!(
        h.shard.counters().layer_packets_suppressed - suppressed,
        20,
        "only the unused layer is held back"
    );

    // Lift the cap: the viewer moves to the top layer at the next keyframe, and
    // its sequence numbers stay contiguous across the switch.
    h.shard.handle_command(
        h.now,
        sluice_dataplane::Command::SetMaxLayer {
            id: low_id,
            mid: None,
            max: None,
        },
    );
    simulcast_frames(&mut h, publisher, 30, 10);
    assert!(
        tail(low, &h).iter().all(|&l| l == 2),
        "switched up: {:?}",
        tail(low, &h)
    );
    let video: Vec<u16> = {
        let p = &h.peers[low];
        let vssrc = p.received.iter().find(|x| x.2 >= 300).unwrap().0;
        p.received
            .iter()
            .filter(|x| x.0 == vssrc)
            .map(|x| x.1)
            .collect()
    };
    for w in video.windows(2) {
        assert_eq!(
            w[1],
            w[0].wrapping_add(1),
            "contiguous across the layer switch"
        );
    }
    assert!(h.shard.counters().layer_switch_requests >= 1);
}

#[test]
fn video_orientation_reaches_viewers() {
    use str0m::rtp::VideoOrientation;
    let mut h = Harness::new();
    let publisher = h.add_publisher();
    let viewer = h.add_viewer();
    h.connect_all(Duration::from_secs(5));
    h.peers[publisher].send_orientation = Some(VideoOrientation::Deg90);
    let d = h.publisher_datagrams(publisher, 8, 800);
    h.feed(publisher, &d);
    h.exchange();
    let got = &h.peers[viewer].received;
    assert_eq!(got.len(), 8);
    // Stamped on the last packet of each of the two frames, and only there.
    let last_of_frames: Vec<u16> = vec![got[3].1, got[7].1];
    let seen = &h.peers[viewer].orientations;
    assert_eq!(
        seen.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        last_of_frames
    );
    assert!(seen.iter().all(|(_, o)| *o == VideoOrientation::Deg90));
}

/// A harness with frame holding on, one publisher and one viewer, connected.
fn holding(hold_ms: u64) -> (Harness, usize, usize) {
    let mut h = Harness::with_config(|c| c.frame_hold = Duration::from_millis(hold_ms));
    let publisher = h.add_publisher();
    let viewer = h.add_viewer();
    h.connect_all(Duration::from_secs(5));
    (h, publisher, viewer)
}

/// Sequence numbers the viewer has received, in arrival order.
fn seqs(h: &Harness, viewer: usize) -> Vec<u16> {
    h.peers[viewer].received.iter().map(|r| r.1).collect()
}

#[test]
fn a_held_frame_goes_out_whole_when_its_last_packet_arrives() {
    let (mut h, publisher, viewer) = holding(20);
    // One frame: four packets, the marker on the fourth.
    let d = h.publisher_datagrams(publisher, 4, 900);
    let visits = h.shard.counters().viewer_visits;
    for (i, dg) in d.iter().enumerate() {
        h.feed(publisher, std::slice::from_ref(dg));
        h.exchange();
        let got = h.peers[viewer].received.len();
        if i < 3 {
            assert_eq!(got, 0, "packet {i} must wait for the frame's last");
        } else {
            assert_eq!(got, 4);
        }
    }
    let s = seqs(&h, viewer);
    assert!(s.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "{s:?}");
    assert_eq!(
        h.shard.counters().viewer_visits - visits,
        1,
        "one visit per frame"
    );
    assert_eq!(h.shard.counters().frames_held_expired, 0);
}

#[test]
fn a_frame_whose_last_packet_is_lost_goes_at_the_next_frame_or_the_time_limit() {
    let (mut h, publisher, viewer) = holding(20);
    // Two frames; the first frame's marker packet (index 3) is lost.
    let d = h.publisher_datagrams(publisher, 8, 900);
    for (i, dg) in d.iter().enumerate() {
        if i == 3 {
            continue;
        }
        h.feed(publisher, std::slice::from_ref(dg));
        h.exchange();
        let got = h.peers[viewer].received.len();
        match i {
            0..=2 => assert_eq!(got, 0),
            // The second frame's first packet releases the first frame's three.
            4..=6 => assert_eq!(got, 3, "after packet {i}"),
            _ => assert_eq!(got, 7),
        }
    }
    // A frame that never completes goes when the limit passes.
    let d = h.publisher_datagrams(publisher, 2, 900);
    h.feed(publisher, &d);
    h.exchange();
    assert_eq!(h.peers[viewer].received.len(), 7);
    assert!(h.shard.poll_timeout().is_some());
    h.advance(Duration::from_millis(25));
    assert_eq!(h.peers[viewer].received.len(), 9);
    assert_eq!(h.shard.counters().frames_held_expired, 1);
}

#[test]
fn a_late_packet_of_a_frame_already_sent_is_not_held() {
    let (mut h, publisher, viewer) = holding(20);
    let d = h.publisher_datagrams(publisher, 4, 900);
    // The third packet arrives after the marker (reordered or repaired).
    for i in [0, 1, 3] {
        h.feed(publisher, std::slice::from_ref(&d[i]));
    }
    h.exchange();
    assert_eq!(h.peers[viewer].received.len(), 3);
    h.feed(publisher, std::slice::from_ref(&d[2]));
    h.exchange();
    assert_eq!(h.peers[viewer].received.len(), 4);
    assert_eq!(h.shard.counters().frames_held_expired, 0);
}

/// A publisher and 40 viewers, connected, and 8 packets of the publisher
/// handed to the shard and forwarded in one turn: 320 copies, more than a
/// turn writes, so the turn stops partway round. Returns the harness, the
/// publisher, the viewers and how many datagrams that turn wrote (still in
/// the shard's output).
fn fan_out_stopped_partway() -> (Harness, usize, Vec<usize>, usize) {
    let mut h = Harness::new();
    let publisher = h.add_publisher();
    let viewers: Vec<usize> = (0..40).map(|_| h.add_viewer()).collect();
    h.connect_all(Duration::from_secs(5));
    feed_without_a_turn(&mut h, publisher, 8);
    h.shard.handle_timeout(h.now);
    let part = h.shard.transmits().len();
    (h, publisher, viewers, part)
}

/// Hand `n` more of the publisher's packets to the shard without running a
/// turn, as datagrams read in the middle of a fan-out.
fn feed_without_a_turn(h: &mut Harness, publisher: usize, n: usize) {
    use sluice_dataplane::testkit::sluice_testkit_shard_datagram as datagram;
    let from = h.peers[publisher].addr;
    for d in &h.publisher_datagrams(publisher, n, 600) {
        datagram(&mut h.shard, h.now, from, d);
    }
}

/// Deliver the shard's output and run turns until nothing waits for a
/// viewer; returns how many turns that took.
fn finish_fan_out(h: &mut Harness) -> usize {
    let mut turns = 0;
    h.deliver_shard_output();
    while h.shard.forward_backlog() {
        h.shard.handle_timeout(h.now);
        h.deliver_shard_output();
        turns += 1;
    }
    h.exchange();
    turns
}

/// Every viewer has `n` packets, with consecutive sequence numbers.
fn assert_each_viewer_got_in_order(h: &Harness, viewers: &[usize], n: usize) {
    for &v in viewers {
        let s = seqs(h, v);
        assert_eq!(s.len(), n, "viewer {v}: {s:?}");
        assert!(
            s.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "viewer {v}: {s:?}"
        );
    }
}

#[test]
fn a_large_fan_out_goes_out_in_parts_and_later_packets_reach_every_viewer() {
    let (mut h, publisher, viewers, part) = fan_out_stopped_partway();
    assert!(
        (128..320).contains(&part),
        "first turn wrote {part} datagrams"
    );
    assert!(h.shard.forward_backlog());
    h.deliver_shard_output();
    // A packet of the same stream arrives while the first run is unfinished:
    // it must reach the viewers already visited too.
    feed_without_a_turn(&mut h, publisher, 4);
    let turns = 1 + finish_fan_out(&mut h);
    assert!(turns >= 3, "{turns} turns");
    assert_each_viewer_got_in_order(&h, &viewers, 12);
    assert_eq!(h.shard.counters().rtp_forwarded, 40 * 12);
}

#[test]
fn a_packet_arriving_during_a_large_fan_out_goes_in_the_same_send_to_the_viewers_left() {
    let (mut h, publisher, viewers, part) = fan_out_stopped_partway();
    let visited = part / 8;
    assert!(visited < 40, "{visited} viewers in the first turn");
    h.deliver_shard_output();
    feed_without_a_turn(&mut h, publisher, 2);
    h.shard.handle_timeout(h.now);
    // The next viewer gets the rest of the first packets and the two new
    // ones in one visit: ten RTP datagrams in a row to one address.
    let out = h.shard.transmits();
    let to = out[0].destination;
    let together = out
        .iter()
        .take_while(|d| d.destination == to)
        .filter(|d| is_rtp(&d.contents))
        .count();
    assert_eq!(together, 10);
    let turns = 2 + finish_fan_out(&mut h);
    assert_each_viewer_got_in_order(&h, &viewers, 10);
    assert_eq!(h.shard.counters().rtp_forwarded, 40 * 10);
    // 400 copies in turns of at least 128: the later packets added no turn.
    assert!(turns <= 4, "{turns} turns");
}

#[test]
fn oversized_publisher_rtp_is_dropped_and_counted_and_the_stream_goes_on() {
    let mut h = Harness::new();
    let publisher = h.add_publisher();
    let viewer = h.add_viewer();
    h.connect_all(Duration::from_secs(5));
    // An RTP header (version 2) and more bytes than any unfragmented path carries.
    let mut big = vec![0u8; 1600];
    big[0] = 0x80;
    big[1] = 96;
    h.feed(publisher, &[big]);
    assert_eq!(h.shard.counters().drop_oversized, 1);
    let d = h.publisher_datagrams(publisher, 10, 1000);
    h.feed(publisher, &d);
    h.exchange();
    assert_eq!(h.peers[viewer].received.len(), 10);
}

#[test]
fn dtls_agrees_on_aes_128_gcm_when_the_client_offers_it() {
    // str0m's client offers AES-256-GCM, AES-128-GCM and AES-CM; the server
    // picks AES-128-GCM (third_party/README.md) for every session.
    let mut h = Harness::new();
    let publisher = h.add_publisher();
    let viewers: Vec<usize> = (0..2).map(|_| h.add_viewer()).collect();
    h.connect_all(Duration::from_secs(5));
    let c = h.shard.counters();
    assert_eq!(
        (c.srtp_aes128_gcm, c.srtp_aes256_gcm, c.srtp_aes_cm),
        (3, 0, 0)
    );
    // And media flows on those keys, through sluice's own send path.
    assert_eq!(c.direct_sessions, 2);
    let d = h.publisher_datagrams(publisher, 20, 800);
    h.feed(publisher, &d);
    h.exchange();
    for v in viewers {
        assert_eq!(h.peers[v].received.len(), 20, "viewer {v}");
    }
}

#[test]
fn handshakes_past_a_turns_budget_wait_for_later_turns_and_all_complete() {
    // Twenty viewers handshake at once: each turn hands str0m only a few of
    // their DTLS datagrams and keeps the rest, in order, for the next turns.
    // Every viewer must still connect and get media.
    let mut h = Harness::new();
    let publisher = h.add_publisher();
    let viewers: Vec<usize> = (0..20).map(|_| h.add_viewer()).collect();
    h.connect_all(Duration::from_secs(10));
    let c = h.shard.counters();
    assert!(c.handshakes_deferred > 0, "no handshake datagram waited");
    assert_eq!(c.drop_handshake_backlog, 0);
    assert!(!h.shard.handshake_backlog());
    send_video(&mut h, publisher, 10);
    h.advance(Duration::from_millis(300));
    every_viewer_received_at_least(&h, &viewers, 40);
}
