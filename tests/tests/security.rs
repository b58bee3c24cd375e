//! Known holes, one test each, pinned by the behaviour the fix must give.
//! On the code as it stands every test here fails; each says which hole it
//! covers and why it fails today.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use sluice::auth::{unix_now, Claims, TokenKey};
use sluice_bench::client::{self, MediaSpec};
use sluice_tests::attack::{
    closed_within, dtls_client_hello, get_metrics, nack, rss_kib, sdp_attr, stun_request,
    Integrity, RawPeer, RogueSsrc, VideoTx, RAW_VIDEO_TRACK,
};
use sluice_tests::room::{connect_ws, Participant};
use sluice_tests::{session_counts, start, wait_until, whip};
use str0m::media::{Direction, MediaKind};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "s3cret";

fn token(c: Claims) -> String {
    TokenKey::new(SECRET.as_bytes()).mint(&Claims {
        exp: unix_now() + 600,
        ..c
    })
}

fn stream_token(stream: &str, publish: bool, subscribe: bool) -> String {
    token(Claims {
        stream: Some(stream.into()),
        publish,
        subscribe,
        ..Default::default()
    })
}

fn room_token(room: &str) -> String {
    token(Claims {
        room: Some(room.into()),
        publish: true,
        subscribe: true,
        ..Default::default()
    })
}

/// Hole 1 (capabilities in public output): with `admin_token` set, `/metrics`
/// without a token must not list session ids, which are the resource URLs'
/// only secret. Fails today: per-session series carry `session="<id>"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_without_the_admin_token_show_no_session_ids() {
    let server = start(1, |c| {
        c.secret = Some(SECRET.into());
        c.admin_token = Some("admin".into());
    })
    .await;
    let http = client::http_client(true);
    let mut ep = whip(&server, "cam");
    ep.token = Some(stream_token("cam", true, false));
    let publisher = client::publish(&http, &ep, MediaSpec::default())
        .await
        .unwrap();
    // The resource name is the session id then the URL's key, 16 hex digits each.
    let name = publisher
        .location
        .clone()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(name.len(), 32, "resource name {name}");
    let id = name[..16].to_string();
    // Per-session series appear once the shard has measured the session.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = get_metrics(&http, &server, None).await;
    if status == 200 {
        assert!(
            !body.contains(&id),
            "unauthenticated /metrics shows session id {id}"
        );
    } else {
        assert!(status == 401 || status == 403, "{status}");
    }
    publisher.close().await.unwrap();
    server.shutdown().await;
}

/// Hole 1 (who may end a session): only the credential that created a
/// session, or the admin, may DELETE it or change its layer. Open mode has
/// no credentials, so there the resource URL itself is the capability: its
/// id must be unguessable. Fails today: any valid token, for any stream or
/// role, ends any session whose URL it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_or_admin_may_end_a_session() {
    // Open mode: the session id and the key in Location are each random
    // 64-bit values, not a sequence.
    let open = start(1, |_| {}).await;
    let http = client::http_client(true);
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    for i in 0..6 {
        let v = RawPeer::signal(
            &http,
            &format!("{}/whep/open{i}", open.url()),
            None,
            &[MediaKind::Video],
            Direction::RecvOnly,
        )
        .await
        .unwrap();
        let loc = v.location.unwrap();
        let name = loc.rsplit('/').next().unwrap();
        assert_eq!(name.len(), 32, "resource name {name}");
        ids.push(u64::from_str_radix(&name[..16], 16).unwrap());
        keys.push(u64::from_str_radix(&name[16..], 16).unwrap());
    }
    for ids in [&ids, &keys] {
        for w in ids.windows(2) {
            let d = w[0].abs_diff(w[1]);
            assert!(
                d > 1 << 20,
                "consecutive ids {:x} and {:x} are close",
                w[0],
                w[1]
            );
        }
        let ones: u32 = ids.iter().map(|i| i.count_ones()).sum();
        assert!(
            (96..=288).contains(&ones),
            "ids do not look like 64 random bits: {ids:x?}"
        );
    }
    open.shutdown().await;

    let server = start(1, |c| {
        c.secret = Some(SECRET.into());
        c.admin_token = Some("admin".into());
    })
    .await;
    let victim = RawPeer::signal(
        &http,
        &format!("{}/whep/cam", server.url()),
        Some(&stream_token("cam", false, true)),
        &[MediaKind::Video],
        Direction::RecvOnly,
    )
    .await
    .unwrap();
    let url = victim.location.clone().unwrap();
    let attackers = [
        (
            "a viewer token for another stream",
            stream_token("other", false, true),
        ),
        (
            "a publisher token for another stream",
            stream_token("other", true, false),
        ),
        (
            "a publisher token for this stream",
            stream_token("cam", true, false),
        ),
        (
            "a viewer token for this stream (not the owner's)",
            // Another subject, so not byte-identical to the owner's token when
            // minted within the same second.
            token(Claims {
                stream: Some("cam".into()),
                subscribe: true,
                sub: Some("mallory".into()),
                ..Default::default()
            }),
        ),
        ("a room token", room_token("cam")),
    ];
    for (what, t) in &attackers {
        let res = http
            .post(format!("{url}/layer?max=low"))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        let s = res.status().as_u16();
        assert!(s == 403 || s == 404, "layer change with {what}: {s}");
        let res = http.delete(&url).bearer_auth(t).send().await.unwrap();
        let s = res.status().as_u16();
        assert!(s == 403 || s == 404, "DELETE with {what}: {s}");
        assert_eq!(
            session_counts(&server).0,
            1,
            "the victim's session ended after DELETE with {what}"
        );
    }
    // The admin may.
    let res = http.delete(&url).bearer_auth("admin").send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    server.shutdown().await;
}

/// Hole 2 (token scope): a room grant is not a stream grant. Fails today:
/// `Claims` with `room` set and no `stream` grants every stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_token_does_not_publish_a_whip_stream() {
    let server = start(1, |c| c.secret = Some(SECRET.into())).await;
    let http = client::http_client(true);
    let r = RawPeer::signal(
        &http,
        &format!("{}/whip/r1", server.url()),
        Some(&room_token("r1")),
        &[MediaKind::Video],
        Direction::SendOnly,
    )
    .await;
    assert_eq!(
        r.as_ref().err().map(|e| e.0),
        Some(403),
        "a token for room r1 published WHIP stream r1"
    );
    server.shutdown().await;
}

/// Hole 2 (token scope): a stream grant is not a room grant. Fails today:
/// `Claims` with `stream` set and no `room` joins every room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_token_does_not_join_a_room() {
    let server = start(1, |c| c.secret = Some(SECRET.into())).await;
    let t = stream_token("s1", true, true);
    let r = connect_ws(&server.url(), &format!("roomId=s1&peerId=p&token={t}")).await;
    assert_eq!(r.err(), Some(403), "a token for stream s1 joined room s1");
    server.shutdown().await;
}

/// Hole 3 (NACK amplification): a viewer with valid SRTCP that NACKs the
/// last ~270 sequence numbers every 20 ms gets at most twice its media in
/// retransmissions (plus 64 KiB), and the excess is counted. Fails today:
/// every NACKed packet still in the cache is resent, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_floods_get_retransmissions_within_a_budget() {
    let server = start(1, |_| {}).await;
    let http = client::http_client(true);
    let publisher = client::publish(&http, &whip(&server, "n"), MediaSpec::default())
        .await
        .unwrap();
    let mut viewer = RawPeer::signal(
        &http,
        &format!("{}/whep/n", server.url()),
        None,
        &[MediaKind::Video],
        Direction::RecvOnly,
    )
    .await
    .unwrap();
    let media_addr = server.shard_addrs()[0];
    let viewer = tokio::task::spawn_blocking(move || {
        viewer.pump(
            Duration::from_secs(10),
            |_, _| {},
            |p| p.exported.is_some() && p.by_ssrc.values().any(|(n, _)| *n > 100),
        );
        // Media alone, for a baseline.
        let (b0, t0) = (viewer.rx_bytes, Instant::now());
        viewer.pump(Duration::from_secs(2), |_, _| {}, |_| false);
        let media_rate = (viewer.rx_bytes - b0) as f64 / t0.elapsed().as_secs_f64();
        let exported = viewer.exported.clone().expect("the viewer's SRTP keys");
        let mut srtp = sluice_dataplane::testkit::SrtpSession::new(&exported)
            .expect("the viewer negotiated AES-GCM");
        let (b1, t1) = (viewer.rx_bytes, Instant::now());
        let mut next = Instant::now();
        viewer.pump(
            Duration::from_secs(2),
            |p, now| {
                if now < next {
                    return;
                }
                next = now + Duration::from_millis(20);
                let Some((&ssrc, &(_, last))) = p.by_ssrc.iter().max_by_key(|(_, (n, _))| *n)
                else {
                    return;
                };
                let mut pkt = nack(0x1234_5678, ssrc, last, 270);
                srtp.protect_rtcp(&mut pkt);
                let _ = p.sock.send_to(&pkt, media_addr);
            },
            |_| false,
        );
        let window = t1.elapsed().as_secs_f64();
        (viewer.rx_bytes - b1, media_rate * window)
    })
    .await
    .unwrap();
    let (received, media) = viewer;
    let counters = server.app.dataplane.shards[0].counters.snapshot();
    let rtx = received as f64 - media;
    assert!(
        rtx <= 2.0 * media + 64.0 * 1024.0,
        "NACK flood: {received} bytes received in the window, {media:.0} of them media; \
         rtx_sent {}",
        counters.rtx_sent
    );
    let (_, text) = get_metrics(&http, &server, None).await;
    assert!(
        text.lines().any(|l| l.starts_with("sluice_shard_drop_")
            && (l.contains("nack") || l.contains("rtx"))
            && !l.ends_with(" 0")),
        "no drop counter for NACKs over budget"
    );
    publisher.close().await.unwrap();
    server.shutdown().await;
}

/// Hole 4 (a rogue SSRC): a publisher with valid SRTP that sends ~150
/// random VP8 packets on a second SSRC claiming its video mid must not
/// break the real stream: viewers receive its frames again within 2 s, and
/// the rogue packets are dropped and counted. The real stream runs 3 s
/// first and carries the mid extension only in its first second, as
/// browsers send; the rogue packets have random numbering and timestamps.
/// Failed before the SSRC lock: str0m moved the mid's receive stream to the
/// rogue SSRC on its first packet, and the real SSRC's packets, carrying no
/// mid, mapped to nothing from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ssrc_on_the_video_mid_does_not_break_the_stream() {
    let server = start(1, |_| {}).await;
    let http = client::http_client(true);
    let mut publisher = RawPeer::signal(
        &http,
        &format!("{}/whip/v", server.url()),
        None,
        &[MediaKind::Video],
        Direction::SendOnly,
    )
    .await
    .unwrap();
    let mut viewer = RawPeer::signal(
        &http,
        &format!("{}/whep/v", server.url()),
        None,
        &[MediaKind::Video],
        Direction::RecvOnly,
    )
    .await
    .unwrap();
    let mid = publisher.mids[0].0;
    let (good_before, good_after) = tokio::task::spawn_blocking(move || {
        let mut video = VideoTx::like_a_browser(mid);
        let mut rogue = RogueSsrc::new(mid, 150);
        // Both peers in one loop, a turn each.
        let until = |d| Instant::now() + d;
        let step = |p: &mut RawPeer, v: &mut VideoTx, r: Option<&mut RogueSsrc>| {
            p.pump(
                Duration::from_millis(2),
                |p, now| {
                    v.tick(p, now);
                },
                |_| false,
            );
            if let Some(r) = r {
                p.pump(Duration::from_millis(1), |p, now| r.tick(p, now), |_| false);
            }
        };
        let end = until(Duration::from_secs(10));
        let warm = until(Duration::from_secs(3));
        while Instant::now() < end && (viewer.good(RAW_VIDEO_TRACK) < 60 || Instant::now() < warm) {
            step(&mut publisher, &mut video, None);
            viewer.pump(Duration::from_millis(2), |_, _| {}, |_| false);
        }
        let before = viewer.good(RAW_VIDEO_TRACK);
        let end = until(Duration::from_secs(3));
        while Instant::now() < end && rogue.left > 0 {
            step(&mut publisher, &mut video, Some(&mut rogue));
            viewer.pump(Duration::from_millis(2), |_, _| {}, |_| false);
        }
        let mark = viewer.good(RAW_VIDEO_TRACK);
        let end = until(Duration::from_secs(2));
        while Instant::now() < end {
            step(&mut publisher, &mut video, None);
            viewer.pump(Duration::from_millis(2), |_, _| {}, |_| false);
        }
        (before, viewer.good(RAW_VIDEO_TRACK) - mark)
    })
    .await
    .unwrap();
    assert!(good_before >= 60, "the viewer never received the stream");
    assert!(
        good_after >= 60,
        "after 150 rogue packets the viewer got {good_after} good packets in 2 s"
    );
    let counters = server.app.dataplane.shards[0].counters.snapshot();
    assert!(
        counters.drop_rogue_ssrc > 0,
        "no rogue packet was counted as dropped"
    );
    server.shutdown().await;
}

/// Hole 5 (unauthenticated binding): STUN binding requests that name the
/// session's ufrag but carry no valid MESSAGE-INTEGRITY, and DTLS
/// ClientHellos, from another address for 4 s, must not stop the real
/// client from connecting. Fails today: the shard binds the attacker's
/// address to the session on the ufrag alone and its ClientHellos reach the
/// session's DTLS endpoint (the same client connects without them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_stun_and_dtls_from_elsewhere_do_not_stop_the_real_client() {
    let server = start(1, |_| {}).await;
    let http = client::http_client(true);
    // The same client connects when nobody interferes.
    let mut control = RawPeer::signal(
        &http,
        &format!("{}/whep/x0", server.url()),
        None,
        &[MediaKind::Video],
        Direction::RecvOnly,
    )
    .await
    .unwrap();
    let control = tokio::task::spawn_blocking(move || {
        control.pump(Duration::from_secs(10), |_, _| {}, |p| p.connected);
        control.connected
    })
    .await
    .unwrap();
    assert!(
        control,
        "the client does not connect even without an attacker"
    );
    let mut real = RawPeer::signal(
        &http,
        &format!("{}/whep/x", server.url()),
        None,
        &[MediaKind::Video],
        Direction::RecvOnly,
    )
    .await
    .unwrap();
    let ufrag = sdp_attr(&real.answer, "ice-ufrag").unwrap();
    let media = server.shard_addrs()[0];
    let attacker = std::thread::spawn(move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let end = Instant::now() + Duration::from_secs(4);
        let mut n = 0u32;
        while Instant::now() < end {
            let integrity = if n.is_multiple_of(2) {
                Integrity::Missing
            } else {
                Integrity::Wrong
            };
            let mut tx = [0u8; 12];
            tx[..4].copy_from_slice(&n.to_be_bytes());
            let _ = sock.send_to(
                &stun_request(&format!("{ufrag}:evil"), integrity, tx),
                media,
            );
            let _ = sock.send_to(&dtls_client_hello(n as u16), media);
            n += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        n
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let real = tokio::task::spawn_blocking(move || {
        real.pump(Duration::from_secs(10), |_, _| {}, |p| p.connected);
        real
    })
    .await
    .unwrap();
    let sent = attacker.join().unwrap();
    assert!(sent > 100);
    assert!(
        real.connected,
        "the real client did not connect while {sent} forged STUN requests and ClientHellos came from elsewhere"
    );
    server.shutdown().await;
}

/// Hole 6 (rooms, a vanished peer): a participant whose connection goes
/// silent without a FIN (it never reads, never answers pings) is removed
/// within 30 s. Fails today: the server never pings, so the peer stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_peer_that_goes_silent_is_removed_within_30_s() {
    let server = start(1, |_| {}).await;
    let base = server.url();
    let (a, _) = Participant::join(&base, "q", "a", true).await;
    let mut ws = connect_ws(&base, "roomId=q&peerId=ghost").await.unwrap();
    let join = json!({"request": true, "id": 1, "method": "join", "data": {}});
    ws.send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    // Read the join response, then never touch the socket again.
    let _ = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(
        wait_until(Duration::from_secs(3), || a
            .state
            .lock()
            .unwrap()
            .has("newPeer", "id", "ghost"))
        .await
    );
    let gone = wait_until(Duration::from_secs(30), || {
        a.state.lock().unwrap().has("peerClosed", "peerId", "ghost")
    })
    .await;
    drop(ws);
    assert!(gone, "a silent peer is still in the room after 30 s");
    a.leave().await;
    server.shutdown().await;
}

/// Hole 6 (rooms, a stalled reader): a participant that never reads while
/// others chat must not grow the server's memory without bound. Fails
/// today: each peer's outbox is an unbounded queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_peer_that_never_reads_costs_bounded_memory() {
    let server = start(1, |_| {}).await;
    let base = server.url();
    let mut stall = connect_ws(&base, "roomId=c&peerId=stall").await.unwrap();
    let join = json!({"request": true, "id": 1, "method": "join", "data": {}});
    stall
        .send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    // The talker keeps nothing it receives (it runs in this process too, so
    // its own copies of 40 000 echoes would count as the server's growth).
    let talker = connect_ws(&base, "roomId=c&peerId=talker").await.unwrap();
    let (mut talk, mut heard) = talker.split();
    let (last_tx, last_rx) = tokio::sync::oneshot::channel();
    let drain = tokio::spawn(async move {
        let mut last_tx = Some(last_tx);
        while let Some(Ok(m)) = heard.next().await {
            if let Message::Text(t) = m {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                if v["response"] == true && v["id"] == 999_999 {
                    if let Some(tx) = last_tx.take() {
                        let _ = tx.send(v);
                    }
                }
            }
        }
    });
    talk.send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    let before = rss_kib();
    let text = "z".repeat(1000);
    // 40 000 chats of 1000 characters: about 44 MB of notifications for the staller.
    for i in 0..40_000u64 {
        let msg =
            json!({"request": true, "id": 100_000 + i, "method": "chat", "data": {"text": text}});
        talk.send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
    }
    let last = json!({"request": true, "id": 999_999, "method": "chat", "data": {"text": "last"}});
    talk.send(Message::Text(last.to_string().into()))
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), last_rx)
        .await
        .expect("a response to the last chat in time")
        .unwrap();
    assert_eq!(r["ok"], true, "{r}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss_kib().saturating_sub(before);
    drop(stall);
    assert!(
        grown <= 16 * 1024,
        "server memory grew {grown} KiB while one peer did not read"
    );
    let _ = talk.close().await;
    drain.abort();
    server.shutdown().await;
}

/// Hole 6 (rooms, a refused offer): a client that refuses one
/// `receiveOffer` still gets the offers that later producers need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_receive_offer_does_not_stop_later_offers() {
    let server = start(1, |_| {}).await;
    let base = server.url();
    let mut ws = connect_ws(&base, "roomId=o&peerId=r").await.unwrap();
    let join = json!({"request": true, "id": 1, "method": "join", "data": {}});
    ws.send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    let (a, _) = Participant::join(&base, "o", "a", true).await;
    a.publish().await;
    let mut offers = 0;
    let mut refused = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut b = None;
    while Instant::now() < deadline && offers < 2 {
        let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(500), ws.next()).await
        else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        if v["request"] == true && v["method"] == "receiveOffer" {
            offers += 1;
            let id = v["id"].as_u64().unwrap();
            let reply = if !refused {
                refused = true;
                json!({"response": true, "id": id, "ok": false, "errorCode": 500, "errorReason": "busy"})
            } else {
                json!({"response": true, "id": id, "ok": true, "data": {"sdp": "v=0"}})
            };
            ws.send(Message::Text(reply.to_string().into()))
                .await
                .unwrap();
            if b.is_none() {
                // A later producer: it needs a new offer to reach r.
                let (p, _) = Participant::join(&base, "o", "b", true).await;
                p.publish().await;
                b = Some(p);
            }
        }
    }
    assert!(refused, "no receiveOffer came at all");
    assert!(
        offers >= 2,
        "after one refusal no further receiveOffer came in 20 s"
    );
    drop(ws);
    a.leave().await;
    if let Some(b) = b {
        b.leave().await;
    }
    server.shutdown().await;
}

/// Hole 7 (slow HTTPS clients): a connection that completes TLS and sends
/// nothing, one that sends a request line and one header and stops, and one
/// that announces a 10 GB body and sends 1 KB are each closed within 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_https_clients_are_closed_within_30_s() {
    let server = start(1, |_| {}).await;
    let addr = server.https_addr;
    let limit = Duration::from_secs(30);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("TLS then nothing", Vec::new()),
        (
            "a request line and one header",
            b"POST /whip/s HTTP/1.1\r\nHost: localhost\r\n".to_vec(),
        ),
        ("a 10 GB body announced, 1 KB sent", {
            let mut r = b"POST /whip/s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/sdp\r\nContent-Length: 10000000000\r\n\r\n".to_vec();
            r.extend_from_slice(&[b'v'; 1024]);
            r
        }),
    ];
    let handles: Vec<_> = cases
        .into_iter()
        .map(|(what, bytes)| std::thread::spawn(move || (what, closed_within(addr, &bytes, limit))))
        .collect();
    let results: Vec<_> = tokio::task::spawn_blocking(move || {
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
    .await
    .unwrap();
    let open: Vec<_> = results.iter().filter(|(_, r)| r.is_none()).collect();
    assert!(open.is_empty(), "still open after {limit:?}: {results:?}");
    server.shutdown().await;
}

/// Hole 8 (an offer with nothing in it): an SDP offer whose every m-line has
/// port 0 (all sections rejected) gets 422, not a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_with_every_m_line_at_port_0_gets_422() {
    let server = start(1, |_| {}).await;
    let http = client::http_client(true);
    let zeroed_offer = |dir: Direction| {
        let mut rtc = str0m::RtcConfig::new().build(Instant::now());
        rtc.add_local_candidate(
            str0m::Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap(),
        );
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, dir, None, None, None);
        api.add_media(MediaKind::Video, dir, None, None, None);
        let offer = api.apply().unwrap().0.to_sdp_string();
        offer
            .lines()
            .map(|l| match l.strip_prefix("m=") {
                Some(rest) => {
                    let mut f: Vec<&str> = rest.split(' ').collect();
                    f[1] = "0";
                    format!("m={}", f.join(" "))
                }
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\r\n")
            + "\r\n"
    };
    for (kind, dir) in [("whip", Direction::SendOnly), ("whep", Direction::RecvOnly)] {
        let zeroed = zeroed_offer(dir);
        assert!(zeroed.contains("m=audio 0 ") && zeroed.contains("m=video 0 "));
        let res = http
            .post(format!("{}/{kind}/z", server.url()))
            .header("content-type", "application/sdp")
            .body(zeroed)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        assert_eq!(
            status, 422,
            "{kind}: every m-line at port 0: {status} {body}"
        );
    }
    server.shutdown().await;
}
