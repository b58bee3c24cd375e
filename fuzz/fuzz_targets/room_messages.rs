//! The room protocol (docs/rooms.md) past the WebSocket: JSON messages read
//! into requests and responses and dispatched (join, createSendTransport,
//! produce, layers, chat, leave) for two participants of one room, over a
//! real `App` with one shard. A participant answers the server's
//! `receiveOffer` as a str0m client would, so consumers get bound.
//!
//! Input: UTF-8 lines, each a message; a line starting `b ` is from the
//! second participant, any other (an `a ` prefix is dropped) from the first.

#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use sluice::app::App;
use sluice::rooms::fuzzing::Participant;
use str0m::change::SdpOffer;
use str0m::RtcConfig;

struct Env {
    rt: tokio::runtime::Runtime,
    app: Arc<App>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        sluice_fuzz::abort_on_uncaught_panics();
        Env {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            app: sluice_fuzz::app(false),
        }
    })
}

struct Side {
    p: Participant,
    rx: sluice::rooms::fuzzing::Outgoing,
    open: bool,
}

/// What the server queued for a participant: every message is JSON; the
/// request `id` just sent (if any) got exactly one response; `receiveOffer`
/// requests are answered.
async fn drain(side: &mut Side, asked: Option<u64>) {
    let mut responses = 0;
    while let Ok(m) = side.rx.try_recv() {
        let v: Value = serde_json::from_str(&m).expect("server sent JSON");
        if v["response"] == true && asked.is_some() && v["id"].as_u64() == asked {
            responses += 1;
            if v["ok"] == false {
                let reason = v["errorReason"].as_str().expect("errorReason");
                assert!(!reason.contains('\n'), "{reason}");
            }
        }
        if v["request"] == true && v["method"] == "receiveOffer" && side.open {
            let sdp = v["data"]["sdp"].as_str().expect("offer sdp");
            let offer = SdpOffer::from_sdp_string(sdp).expect("server offer parses");
            let mut rtc = RtcConfig::new().build(Instant::now());
            let answer = rtc.sdp_api().accept_offer(offer).expect("answerable offer");
            let reply = json!({"response": true, "id": v["id"], "ok": true,
                "data": {"sdp": answer.to_sdp_string()}});
            side.open = side.p.handle_text(&reply.to_string()).await;
        }
    }
    if asked.is_some() {
        assert_eq!(responses, 1, "a request got {responses} responses");
    }
}

/// The request id a message carries, when the server reads it as a request.
fn request_id(msg: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(msg).ok()?;
    if v.get("response").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let id = v.get("id").and_then(Value::as_u64);
    // A message that is no request is refused with its id (or 0).
    Some(id.unwrap_or(0))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = env();
    env.rt.block_on(async {
        let mut sides: Vec<Side> = ["a", "b"]
            .into_iter()
            .map(|peer| {
                let (p, rx) = Participant::new(env.app.clone(), "room", peer);
                Side { p, rx, open: true }
            })
            .collect();
        for line in text.lines() {
            let (i, msg) = match line.strip_prefix("b ") {
                Some(m) => (1, m),
                None => (0, line.strip_prefix("a ").unwrap_or(line)),
            };
            let side = &mut sides[i];
            if !side.open || msg.len() > 64 * 1024 {
                continue;
            }
            side.open = side.p.handle_text(msg).await;
            // Let the consumer sync tasks run.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            let asked = if serde_json::from_str::<Value>(msg).is_err() {
                Some(0)
            } else {
                request_id(msg)
            };
            drain(side, asked).await;
            let other = &mut sides[1 - i];
            drain(other, None).await;
        }
        for side in &mut sides {
            side.p.leave();
        }
        tokio::task::yield_now().await;
    });
    // Leaving ends every session the participants had.
    assert_eq!(env.app.rooms.peer_count(), 0);
    assert_eq!(env.app.registry().session_count(), 0);
});
