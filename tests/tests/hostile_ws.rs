//! Hostile input on the rooms WebSocket: refused upgrades, malformed and
//! ill-typed messages, requests on other peers' producers and consumers,
//! ids that do not exist, oversized frames and floods. Each gets an error
//! response (or a refused upgrade, or a closed socket) and hurts no one.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_bench::client;
use sluice_tests::attack::Bystander;
use sluice_tests::room::{connect_ws, Participant};
use sluice_tests::{start, wait_until};

fn assert_error(r: &Value, code: u64, what: &str) {
    assert_eq!(r["ok"], false, "{what}: {r}");
    assert_eq!(r["errorCode"], code, "{what}: {r}");
    let reason = r["errorReason"].as_str().unwrap_or("");
    assert!(
        !reason.is_empty() && !reason.contains('\n'),
        "{what}: one-line reason: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_room_messages_get_error_responses_and_hurt_no_one() {
    let server = start(1, |_| {}).await;
    let http = client::http_client(true);
    let base = server.url();
    let (a, _) = Participant::join(&base, "h", "a", true).await;
    a.publish().await;
    let (b, _) = Participant::join(&base, "h", "b", true).await;
    assert!(
        wait_until(Duration::from_secs(10), || b
            .state
            .lock()
            .unwrap()
            .packets_from("a", "video")
            > 20)
        .await
    );
    let by = Bystander::start(&server, &http, "wsb").await;
    let (a_video, _) = b.state.lock().unwrap().consumer("a", "video").unwrap();

    // Refused upgrades.
    let refused: Vec<(&str, &str, u16)> = vec![
        ("no peerId", "roomId=h", 400),
        ("no roomId", "peerId=z", 400),
        ("empty roomId", "roomId=&peerId=z", 400),
        (
            "65-character peerId",
            &*Box::leak(format!("roomId=h&peerId={}", "p".repeat(65)).into_boxed_str()),
            400,
        ),
        ("unicode roomId", "roomId=h%C3%A9&peerId=z", 400),
        (
            "dot-dot roomId with a slash",
            "roomId=..%2Fadmin&peerId=z",
            400,
        ),
        ("NUL in peerId", "roomId=h&peerId=z%00", 400),
        ("peer id in use", "roomId=h&peerId=a", 409),
    ];
    for (what, q, code) in &refused {
        assert_eq!(connect_ws(&base, q).await.err(), Some(*code), "{what}");
    }

    // Messages from a joined peer.
    let frames: Vec<(&str, String, u64, u64)> = vec![
        ("JSON array", "[]".into(), 0, 400),
        ("JSON string", "\"hi\"".into(), 0, 400),
        ("JSON number", "42".into(), 0, 400),
        ("JSON null", "null".into(), 0, 400),
        (
            "request without id",
            json!({"request": true, "method": "chat", "data": {"text": "x"}}).to_string(),
            0,
            400,
        ),
        (
            "string id",
            json!({"request": true, "id": "7", "method": "chat"}).to_string(),
            0,
            400,
        ),
        (
            "negative id",
            json!({"request": true, "id": -7, "method": "chat"}).to_string(),
            0,
            400,
        ),
        (
            "fractional id",
            json!({"request": true, "id": 7.5, "method": "chat"}).to_string(),
            0,
            400,
        ),
        (
            "no method",
            json!({"request": true, "id": 11}).to_string(),
            11,
            400,
        ),
        (
            "numeric method",
            json!({"request": true, "id": 12, "method": 3}).to_string(),
            12,
            400,
        ),
        (
            "request: false",
            json!({"request": false, "id": 13, "method": "chat"}).to_string(),
            13,
            400,
        ),
        (
            "nesting 10 000 deep",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            0,
            400,
        ),
        ("malformed JSON", "{\"request\": tru".into(), 0, 400),
        (
            "a lone surrogate escape",
            r#"{"request":true,"id":14,"method":"\ud800"}"#.into(),
            0,
            400,
        ),
    ];
    for (what, text, id, code) in &frames {
        let r = b.send_raw_for_response(text.clone(), *id).await;
        assert_error(&r, *code, what);
    }
    let requests: Vec<(&str, &str, Value, u64)> = vec![
        ("unknown method", "fly", json!({}), 404),
        ("prototype-looking method", "__proto__", json!({}), 404),
        ("empty method", "", json!({}), 404),
        ("join twice", "join", json!({}), 409),
        (
            "produce before a send transport",
            "produce",
            json!({"kind": "video", "mid": "1"}),
            409,
        ),
        (
            "createSendTransport without sdp",
            "createSendTransport",
            json!({}),
            400,
        ),
        (
            "createSendTransport with a numeric sdp",
            "createSendTransport",
            json!({"sdp": 5}),
            400,
        ),
        (
            "createSendTransport with garbage",
            "createSendTransport",
            json!({"sdp": "v=0\r\nx"}),
            400,
        ),
        (
            "createSendTransport with data null",
            "createSendTransport",
            Value::Null,
            400,
        ),
        (
            "close another peer's producer id",
            "closeProducer",
            json!({"producerId": a_video.clone()}),
            404,
        ),
        (
            "close an unknown producer",
            "closeProducer",
            json!({"producerId": "nope"}),
            404,
        ),
        ("close without producerId", "closeProducer", json!({}), 400),
        (
            "close with a numeric producerId",
            "closeProducer",
            json!({"producerId": 1}),
            400,
        ),
        (
            "pause an unknown producer",
            "pauseProducer",
            json!({"producerId": "nope"}),
            404,
        ),
        (
            "resume without producerId",
            "resumeProducer",
            json!({}),
            400,
        ),
        (
            "layers of an unknown consumer",
            "setConsumerPreferredLayers",
            json!({"consumerId": "nope", "spatialLayer": 0}),
            404,
        ),
        (
            "a negative temporalLayer",
            "setConsumerPreferredLayers",
            json!({"consumerId": "nope", "temporalLayer": -1}),
            400,
        ),
        (
            "a temporalLayer past 255",
            "setConsumerPreferredLayers",
            json!({"consumerId": "nope", "spatialLayer": 0, "temporalLayer": 300}),
            400,
        ),
        (
            "a temporalLayer that is text",
            "setConsumerPreferredLayers",
            json!({"consumerId": "nope", "temporalLayer": "2"}),
            400,
        ),
        (
            "chat over 1000 characters",
            "chat",
            json!({"text": "x".repeat(1001)}),
            400,
        ),
        ("chat with a numeric text", "chat", json!({"text": 5}), 400),
        ("chat without text", "chat", json!({}), 400),
    ];
    for (what, method, data, code) in &requests {
        let r = b.request(method, data.clone()).await;
        assert_error(&r, *code, what);
    }
    // a's consumers are not b's: a may not cap them.
    let r = a
        .request(
            "setConsumerPreferredLayers",
            json!({"consumerId": a_video, "spatialLayer": 0}),
        )
        .await;
    assert_error(&r, 404, "another peer's consumer");
    let r = b
        .send_raw_for_response(
            json!({"request": true, "id": 90, "method": "chat", "data": {"text": "y".repeat(70_000)}}).to_string(),
            0,
        )
        .await;
    assert_error(&r, 413, "a 70 KB message");
    // A response to a request the server never made changes nothing.
    b.send_raw(
        json!({"response": true, "id": 424242, "ok": true, "data": {"sdp": "v=0"}}).to_string(),
    )
    .await;
    // A flood of 2000 bad requests: 2000 error responses, and the peer still works.
    let before = b.state.lock().unwrap().notifications.len();
    for i in 0..2000u64 {
        b.send_raw(json!({"request": true, "id": 50_000 + i, "method": "nope"}).to_string())
            .await;
    }
    let r = b.request("chat", json!({"text": "after the flood"})).await;
    assert_eq!(r["ok"], true, "chat after the flood: {r}");
    assert_eq!(
        b.state.lock().unwrap().notifications.len() - before,
        1,
        "only the chat echo"
    );

    // A binary frame, a request before join, and a frame over the socket's
    // limit, each on a connection of its own.
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = connect_ws(&base, "roomId=h&peerId=bin").await.unwrap();
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let r = next_text(&mut ws)
        .await
        .expect("a response to a binary frame");
    assert_error(&r, 400, "binary frame");
    let chat = json!({"request": true, "id": 3, "method": "chat", "data": {"text": "hi"}});
    ws.send(Message::Text(chat.to_string().into()))
        .await
        .unwrap();
    let r = next_text(&mut ws).await.expect("a response before join");
    assert_error(&r, 409, "chat before join");
    let _ = ws.close(None).await;

    let mut big = connect_ws(&base, "roomId=h&peerId=big").await.unwrap();
    let join = json!({"request": true, "id": 1, "method": "join", "data": {}});
    big.send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || a
            .state
            .lock()
            .unwrap()
            .has("newPeer", "id", "big"))
        .await
    );
    let _ = big.send(Message::Text("x".repeat(1 << 20).into())).await;
    assert!(
        wait_until(Duration::from_secs(5), || a.state.lock().unwrap().has(
            "peerClosed",
            "peerId",
            "big"
        ))
        .await,
        "a 1 MB frame did not close its connection"
    );
    drop(big);

    let inputs = refused.len() + frames.len() + requests.len() + 3 + 1 + 3;
    eprintln!("hostile WebSocket inputs: {inputs}");
    // The room still works: b receives a, chat flows.
    let before = b.state.lock().unwrap().packets_from("a", "video");
    assert!(
        wait_until(Duration::from_secs(5), || b
            .state
            .lock()
            .unwrap()
            .packets_from("a", "video")
            > before + 50)
        .await,
        "b stopped receiving a"
    );
    assert_eq!(b.state.lock().unwrap().corrupt(), 0);
    by.check(&server, &http, "WebSocket").await;
    by.close().await;
    a.leave().await;
    b.leave().await;
    sluice_tests::empties_then_stops(server).await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message as JSON, within 5 s.
async fn next_text(ws: &mut Ws) -> Option<Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => break serde_json::from_str::<Value>(&t).ok(),
                Some(Ok(_)) => continue,
                _ => break None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}
