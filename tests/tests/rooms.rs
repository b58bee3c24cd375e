//! Room signaling and media over loopback: three participants each receive
//! the other two; leaving, rejoining and every protocol error; capping the
//! simulcast layer of one consumer.

use std::time::Duration;

use serde_json::json;
use sluice_tests::room::{connect_ws, Participant, SIMULCAST_TRACK};
use sluice_tests::{empties_then_stops, session_counts, start, wait_until};

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
    empties_then_stops(server).await;
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

/// Stamp tracks of the simulcast layers, lowest first.
const LOW: u8 = SIMULCAST_TRACK;
const MID: u8 = SIMULCAST_TRACK + 1;
const HIGH: u8 = SIMULCAST_TRACK + 2;

/// Layer packets `p` has received of `from`'s camera: (last layer, count per layer).
fn cam_layers(p: &Participant, from: &str) -> (Option<u8>, [u64; 3]) {
    let s = p.state.lock().unwrap();
    let Some(m) = s.media_from(from, "video") else {
        return (None, [0; 3]);
    };
    let n = |t: u8| m.by_track.get(&t).copied().unwrap_or(0);
    (m.last_track(), [n(LOW), n(MID), n(HIGH)])
}

/// Wait until `p` receives `from`'s camera on `layer` only: the latest packet
/// is of that layer and, over the next half second, only that layer grows.
/// Ask for a consumer's layer cap; the request must succeed.
async fn set_layers(p: &Participant, data: serde_json::Value) -> serde_json::Value {
    let r = p.request("setConsumerPreferredLayers", data).await;
    assert_eq!(r["ok"], true, "{r}");
    r
}

async fn settles_on(p: &Participant, from: &str, layer: u8) -> bool {
    let on = wait_until(Duration::from_secs(10), || {
        cam_layers(p, from).0 == Some(layer)
    })
    .await;
    if !on {
        return false;
    }
    let (_, before) = cam_layers(p, from);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (last, after) = cam_layers(p, from);
    let i = (layer - LOW) as usize;
    last == Some(layer)
        && after[i] >= before[i] + 10
        && (0..3).all(|j| j == i || after[j] == before[j])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_consumer_preferred_layers_caps_one_consumers_simulcast_layer() {
    let server = start(2, |_| {}).await;
    let base = server.url();
    let (a, _) = Participant::join(&base, "r3", "a", true).await;
    a.publish_simulcast().await;
    let (b, _) = Participant::join(&base, "r3", "b", true).await;
    let (c, _) = Participant::join(&base, "r3", "c", true).await;
    // Without a cap (and no bandwidth estimate on room receive transports) the top layer.
    for p in [&b, &c] {
        assert!(
            settles_on(p, "a", HIGH).await,
            "{} gets the high layer: {:?}",
            p.peer,
            cam_layers(p, "a")
        );
    }
    let (consumer, _) = b
        .state
        .lock()
        .unwrap()
        .consumer("a", "video")
        .expect("b consumes a's camera");

    let r = set_layers(&b, json!({"consumerId": consumer, "spatialLayer": 0})).await;
    assert_eq!(
        r["data"],
        json!({"consumerId": consumer, "spatialLayer": 0, "temporalLayer": null}),
        "{r}"
    );
    assert!(
        settles_on(&b, "a", LOW).await,
        "b gets the low layer: {:?}",
        cam_layers(&b, "a")
    );
    // c's consumer of the same producer keeps the top layer.
    assert!(
        settles_on(&c, "a", HIGH).await,
        "c is unaffected: {:?}",
        cam_layers(&c, "a")
    );

    set_layers(&b, json!({"consumerId": consumer, "spatialLayer": 1})).await;
    assert!(
        settles_on(&b, "a", MID).await,
        "b gets the mid layer: {:?}",
        cam_layers(&b, "a")
    );

    // null lifts the cap.
    let r = set_layers(&b, json!({"consumerId": consumer, "spatialLayer": null})).await;
    assert_eq!(r["data"]["spatialLayer"], json!(null), "{r}");
    assert!(
        settles_on(&b, "a", HIGH).await,
        "b is back on the high layer: {:?}",
        cam_layers(&b, "a")
    );

    // A cap above the top layer is the top layer; a missing spatialLayer lifts the cap.
    set_layers(&b, json!({"consumerId": consumer, "spatialLayer": 0})).await;
    assert!(settles_on(&b, "a", LOW).await);
    set_layers(&b, json!({"consumerId": consumer, "spatialLayer": 200})).await;
    assert!(settles_on(&b, "a", HIGH).await);
    set_layers(&b, json!({"consumerId": consumer, "spatialLayer": 0})).await;
    assert!(settles_on(&b, "a", LOW).await);
    set_layers(&b, json!({"consumerId": consumer})).await;
    assert!(
        settles_on(&b, "a", HIGH).await,
        "no spatialLayer lifts the cap: {:?}",
        cam_layers(&b, "a")
    );

    // The cap belongs to the consumer: when a leaves and publishes again, b's
    // new consumer reuses the freed mid and starts on the top layer.
    let (consumer, mid) = b.state.lock().unwrap().consumer("a", "video").unwrap();
    set_layers(&b, json!({"consumerId": consumer, "spatialLayer": 0})).await;
    assert!(settles_on(&b, "a", LOW).await);
    a.leave().await;
    assert!(
        wait_until(Duration::from_secs(5), || b
            .state
            .lock()
            .unwrap()
            .consumer("a", "video")
            .is_none())
        .await,
        "b's consumer of a's camera closes"
    );
    let (a, _) = Participant::join(&base, "r3", "a", true).await;
    a.publish_simulcast().await;
    assert!(
        wait_until(Duration::from_secs(10), || b
            .state
            .lock()
            .unwrap()
            .consumer("a", "video")
            .is_some())
        .await,
        "b consumes a's camera again"
    );
    let (again, again_mid) = b.state.lock().unwrap().consumer("a", "video").unwrap();
    assert_ne!(again, consumer);
    assert_eq!(again_mid, mid, "the freed mid is reused");
    assert!(
        settles_on(&b, "a", HIGH).await,
        "the new consumer has no cap: {:?}",
        cam_layers(&b, "a")
    );
    let r = b
        .request(
            "setConsumerPreferredLayers",
            json!({"consumerId": consumer, "spatialLayer": 0}),
        )
        .await;
    assert_eq!(r["errorCode"], 404, "the closed consumer is gone: {r}");

    for p in [&b, &c] {
        let s = p.state.lock().unwrap();
        assert_eq!(s.corrupt(), 0, "{}: corrupt payloads", p.peer);
    }
    for p in [a, b, c] {
        p.leave().await;
    }
    empties_then_stops(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_consumer_preferred_layers_errors_hurt_no_one() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let server = start(1, |_| {}).await;
    let base = server.url();

    // Before join: 409.
    let mut ws = connect_ws(&base, "roomId=r4&peerId=early")
        .await
        .expect("websocket accepted");
    let req = json!({"request": true, "id": 5, "method": "setConsumerPreferredLayers",
        "data": {"consumerId": "x", "spatialLayer": 0}});
    ws.send(Message::Text(req.to_string().into()))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    break serde_json::from_str::<serde_json::Value>(&t).unwrap()
                }
                Some(Ok(_)) => continue,
                other => panic!("no response: {other:?}"),
            }
        }
    })
    .await
    .expect("response in time");
    assert_eq!(
        (reply["id"].as_u64(), reply["errorCode"].as_u64()),
        (Some(5), Some(409)),
        "{reply}"
    );
    let _ = ws.close(None).await;

    let (a, _) = Participant::join(&base, "r4", "a", true).await;
    a.publish().await;
    let (b, _) = Participant::join(&base, "r4", "b", true).await;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = b.state.lock().unwrap();
            s.consumer("a", "video").is_some() && s.consumer("a", "audio").is_some()
        })
        .await,
        "b consumes a's microphone and camera"
    );
    let (video, audio) = {
        let s = b.state.lock().unwrap();
        (
            s.consumer("a", "video").unwrap().0,
            s.consumer("a", "audio").unwrap().0,
        )
    };

    // A consumer of a camera without simulcast takes a cap too (it has no effect).
    set_layers(&b, json!({"consumerId": video, "spatialLayer": 0})).await;

    let bad = [
        (json!({"consumerId": "nope", "spatialLayer": 0}), 404),
        (json!({"consumerId": video.clone() + "x"}), 404),
        (json!({"spatialLayer": 0}), 400),
        (json!({"consumerId": 7, "spatialLayer": 0}), 400),
        (json!({"consumerId": video, "spatialLayer": -1}), 400),
        (json!({"consumerId": video, "spatialLayer": 256}), 400),
        (json!({"consumerId": video, "spatialLayer": 1.5}), 400),
        (json!({"consumerId": video, "spatialLayer": "low"}), 400),
        (json!({"consumerId": video, "spatialLayer": [0]}), 400),
        (json!({"consumerId": audio, "spatialLayer": 0}), 400),
    ];
    for (data, code) in bad {
        let r = b.request("setConsumerPreferredLayers", data.clone()).await;
        assert_eq!(r["ok"], false, "{data}: {r}");
        assert_eq!(r["errorCode"], code, "{data}: {r}");
        let reason = r["errorReason"].as_str().unwrap_or("");
        assert!(
            !reason.is_empty() && !reason.contains('\n'),
            "{data}: one-line reason: {r}"
        );
    }
    // a's own consumers are not b's.
    let r = a
        .request(
            "setConsumerPreferredLayers",
            json!({"consumerId": video, "spatialLayer": 0}),
        )
        .await;
    assert_eq!(r["errorCode"], 404, "{r}");

    // Media keeps flowing both ways and the connection stays usable.
    let before = b.state.lock().unwrap().packets_from("a", "video");
    assert!(
        wait_until(Duration::from_secs(5), || b
            .state
            .lock()
            .unwrap()
            .packets_from("a", "video")
            > before + 50)
        .await,
        "b still receives a"
    );
    let r = b.request("chat", json!({"text": "still here"})).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(b.state.lock().unwrap().corrupt(), 0);
    a.leave().await;
    b.leave().await;
    empties_then_stops(server).await;
}
