//! Room signaling and media over loopback: three participants each receive
//! the other two; leaving, rejoining and every protocol error.

use std::time::Duration;

use serde_json::json;
use sluice_tests::room::{connect_ws, Participant};
use sluice_tests::{session_counts, start, wait_until};

fn all_receive(ps: &[&Participant], min: u64) -> bool {
    ps.iter().all(|p| {
        let s = p.state.lock().unwrap();
        ps.iter().filter(|o| o.peer != p.peer).all(|o| {
            s.packets_from(&o.peer, "audio") >= min && s.packets_from(&o.peer, "video") >= 2 * min
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_participants_each_receive_the_other_two_then_one_leaves_and_rejoins() {
    let server = start(2, |_| {}).await;
    let base = server.url();
    let (a, peers) = Participant::join(&base, "r1", "a", true).await;
    assert_eq!(peers["peers"].as_array().unwrap().len(), 0);
    a.publish().await;
    let (b, peers) = Participant::join(&base, "r1", "b", true).await;
    assert_eq!(peers["peers"][0]["id"], "a");
    assert_eq!(peers["peers"][0]["producers"].as_array().unwrap().len(), 2);
    b.publish().await;
    let (c, _) = Participant::join(&base, "r1", "c", true).await;
    c.publish().await;
    assert!(
        wait_until(Duration::from_secs(15), || all_receive(&[&a, &b, &c], 50)).await,
        "every participant receives the other two: {:?}",
        [&a, &b, &c].map(|p| {
            let s = p.state.lock().unwrap();
            (
                p.peer.clone(),
                s.consumers.clone(),
                s.media
                    .iter()
                    .map(|(m, x)| (m.clone(), x.packets))
                    .collect::<Vec<_>>(),
            )
        })
    );
    for p in [&a, &b, &c] {
        let s = p.state.lock().unwrap();
        assert_eq!(s.corrupt(), 0, "{}: corrupt payloads", p.peer);
        assert!(
            s.media.values().all(|m| m.gaps == 0),
            "{}: gaps {:?}",
            p.peer,
            s.media
        );
        assert!(s.has("newPeer", "id", "c") || p.peer == "c");
    }
    // Sessions: a send and a receive transport per participant.
    assert_eq!(session_counts(&server).0, 6);

    // c leaves: the others are told and stop getting its media; their own media continues.
    c.leave().await;
    assert!(
        wait_until(Duration::from_secs(5), || {
            [&a, &b].iter().all(|p| {
                let s = p.state.lock().unwrap();
                s.has("peerClosed", "peerId", "c")
                    && s.consumers.values().all(|(peer, _)| peer != "c")
            })
        })
        .await,
        "peerClosed and consumerClosed reach the others"
    );
    assert!(wait_until(Duration::from_secs(5), || session_counts(&server).0 == 4).await);
    let before = a.state.lock().unwrap().packets_from("b", "video");
    assert!(
        wait_until(Duration::from_secs(5), || a
            .state
            .lock()
            .unwrap()
            .packets_from("b", "video")
            > before + 50)
        .await,
        "a still receives b"
    );

    // c rejoins with the same id and gets both again (freed mids are reused).
    let (c, peers) = Participant::join(&base, "r1", "c", true).await;
    assert_eq!(peers["peers"].as_array().unwrap().len(), 2);
    c.publish().await;
    assert!(
        wait_until(Duration::from_secs(15), || all_receive(&[&a, &b, &c], 50)).await,
        "after rejoin"
    );
    let offers = a.state.lock().unwrap().offers_answered;
    assert!(offers >= 1);

    // Active speaker: our synthetic audio carries no level extension, so none is chosen.
    for p in [a, b, c] {
        p.leave().await;
    }
    assert!(
        wait_until(Duration::from_secs(5), || session_counts(&server) == (0, 0)).await,
        "all sessions gone: {:?}",
        session_counts(&server)
    );
    assert_eq!(server.app.rooms.room_count(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_get_error_responses_and_hurt_no_one() {
    let server = start(1, |_| {}).await;
    let base = server.url();
    // Refused before the upgrade, with a status.
    assert_eq!(connect_ws(&base, "roomId=r").await.err(), Some(400));
    assert_eq!(
        connect_ws(&base, "roomId=r%20x&peerId=p").await.err(),
        Some(400)
    );

    let (a, _) = Participant::join(&base, "r2", "a", true).await;
    a.publish().await;
    assert_eq!(
        connect_ws(&base, "roomId=r2&peerId=a").await.err(),
        Some(409),
        "peer id in use"
    );

    // A second connection that misbehaves in every way.
    let (b, _) = Participant::join(&base, "r2", "b", true).await;
    let r = b.send_raw_for_response("{not json".into(), 0).await;
    assert_eq!(
        (r["ok"].as_bool(), r["errorCode"].as_u64()),
        (Some(false), Some(400)),
        "{r}"
    );
    let r = b.request("fly", json!({})).await;
    assert_eq!(r["errorCode"], 404, "{r}");
    let r = b.request("join", json!({})).await;
    assert_eq!(r["errorCode"], 409, "double join: {r}");
    let r = b
        .request("produce", json!({"kind": "video", "mid": "1"}))
        .await;
    assert_eq!(
        r["errorCode"], 409,
        "produce before createSendTransport: {r}"
    );
    let r = b
        .request("createSendTransport", json!({"sdp": "garbage"}))
        .await;
    assert_eq!(r["errorCode"], 400, "{r}");
    let r = b
        .request("closeProducer", json!({"producerId": "nope"}))
        .await;
    assert_eq!(r["errorCode"], 404, "{r}");
    let r = b.request("chat", json!({"text": "x".repeat(2000)})).await;
    assert_eq!(r["errorCode"], 400, "{r}");
    let r = b
        .send_raw_for_response(
            json!({"request": true, "id": 77, "method": "chat", "data": {"text": "y".repeat(70_000)}})
                .to_string(),
            0,
        )
        .await;
    assert_eq!(r["errorCode"], 413, "{r}");
    let r = b.request("chat", json!({"text": "hello"})).await;
    assert_eq!(r["ok"], true);
    assert!(
        wait_until(Duration::from_secs(3), || a
            .state
            .lock()
            .unwrap()
            .has("chat", "text", "hello"))
        .await
    );

    // A participant that never answers its offers and vanishes is cleaned up.
    let (c, _) = Participant::join(&base, "r2", "c", false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.vanish().await;
    assert!(
        wait_until(Duration::from_secs(5), || a.state.lock().unwrap().has(
            "peerClosed",
            "peerId",
            "c"
        ))
        .await
    );
    // a is unaffected: b still gets a's media.
    assert!(
        wait_until(Duration::from_secs(10), || b
            .state
            .lock()
            .unwrap()
            .packets_from("a", "video")
            > 50)
        .await
    );
    a.leave().await;
    b.leave().await;
    assert!(
        wait_until(Duration::from_secs(5), || session_counts(&server) == (0, 0)).await,
        "{:?}",
        session_counts(&server)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_joining_needs_a_token_for_the_room() {
    use sluice::auth::{unix_now, Claims, TokenKey};
    let server = start(1, |c| c.secret = Some("k".into())).await;
    let base = server.url();
    assert_eq!(
        connect_ws(&base, "roomId=r&peerId=p").await.err(),
        Some(401)
    );
    let key = TokenKey::new(b"k");
    let other = key.mint(&Claims {
        exp: unix_now() + 60,
        room: Some("other".into()),
        publish: true,
        subscribe: true,
        ..Default::default()
    });
    assert_eq!(
        connect_ws(&base, &format!("roomId=r&peerId=p&token={other}"))
            .await
            .err(),
        Some(403)
    );
    let good = key.mint(&Claims {
        exp: unix_now() + 60,
        room: Some("r".into()),
        publish: false,
        subscribe: true,
        ..Default::default()
    });
    let ws = connect_ws(&base, &format!("roomId=r&peerId=p&token={good}")).await;
    assert!(ws.is_ok());
    server.shutdown().await;
}
