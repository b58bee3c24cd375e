//! The room WebSocket: `GET /ws` checks and upgrades, then one task per
//! participant reads its messages (size-capped, paced to `ws_rate`) and writes
//! what is queued for it (bounded), pings it every `ws_ping_secs` and removes it
//! when it is silent for `ws_timeout_secs` or lets its queue fill.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::oneshot;

use super::peer::PeerSession;
use super::protocol::{err, RoomError};
use super::{outbox, OutboxRx};
use crate::app::App;
use crate::auth::Claims;
use crate::authz;
use crate::cluster::{ClaimError, ClaimGuard};
use crate::error::ApiError;
use crate::limits::{Bucket, Refusal};

/// Oversized messages after which a participant is disconnected.
const MAX_OVERSIZED: u32 = 8;

/// The query of `GET /ws`.
#[derive(Deserialize)]
pub struct WsQuery {
    #[serde(rename = "roomId")]
    room_id: Option<String>,
    #[serde(rename = "peerId")]
    peer_id: Option<String>,
    token: Option<String>,
}

/// `GET /ws?roomId=&peerId=`: checks happen before the upgrade so a refused
/// client gets an HTTP status and a reason.
pub async fn ws_handler(
    State(app): State<Arc<App>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // A plain GET (no upgrade) gets the same checks, so a browser, which cannot read a
    // refused upgrade, can learn why and where the room lives.
    let (room, peer, claims) = match admit(&app, q, &headers, source) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let home = match home(&app, &room, &peer).await {
        Ok(guard) => guard,
        Err(e) => return e.into_response(),
    };
    match ws {
        Ok(ws) => ws
            // Larger frames are cut off by the library; up to this, with a reason.
            .max_message_size(app.config.ws_max_message * 4)
            .on_upgrade(move |socket| run_peer(app, room, peer, claims, socket, home)),
        // Whatever the protocol version made of the missing upgrade: one clear answer.
        Err(_) => crate::error::plain(
            axum::http::StatusCode::UPGRADE_REQUIRED,
            "the join would be accepted; open this URL as a WebSocket",
        ),
    }
}

/// On a cluster: make this node the room's home for this connection, or say where it lives.
async fn home(app: &App, room: &str, peer: &str) -> Result<Option<ClaimGuard>, ApiError> {
    let Some(cluster) = &app.cluster else {
        return Ok(None);
    };
    match cluster.claim_room(room).await {
        Ok(guard) => Ok(Some(guard)),
        Err(ClaimError::Registry(_)) => Err(ApiError::RegistryUnavailable("the room")),
        Err(ClaimError::Held {
            owner,
            node: Some(node),
        }) => Err(ApiError::RoomElsewhere {
            room: room.to_string(),
            node: owner,
            url: format!("{}/ws?roomId={room}&peerId={peer}", node.advertise),
        }),
        Err(ClaimError::Held { node: None, .. }) => Err(ApiError::RoomHomeGone(room.to_string())),
    }
}

/// The room, peer and claims of a client that may join.
fn admit(
    app: &App,
    q: WsQuery,
    headers: &HeaderMap,
    source: SocketAddr,
) -> Result<(String, String, Option<Claims>), ApiError> {
    let (Some(room), Some(peer)) = (q.room_id, q.peer_id) else {
        return Err(ApiError::RoomQueryMissing);
    };
    if !valid_id(&room) || !valid_id(&peer) {
        return Err(ApiError::RoomQueryInvalid);
    }
    let token = q.token.as_deref().or_else(|| authz::bearer(headers));
    let claims = authz::verify(app, token)?;
    if let Some(c) = &claims {
        c.allows_room(&room)?;
    }
    if app.is_draining() {
        return Err(ApiError::RoomsDraining);
    }
    if app.rooms.has_peer(&room, &peer) {
        return Err(ApiError::PeerIdInUse);
    }
    // Checked again at join, under the rooms' lock; here for an HTTP answer.
    let (max_rooms, max_peers) = (app.config.max_rooms, app.config.max_room_peers);
    let here = app.rooms.peers_in(&room);
    if max_peers > 0 && here >= max_peers {
        app.limits.refuse(Refusal::RoomFull);
        return Err(ApiError::RoomFull);
    }
    if max_rooms > 0 && here == 0 && app.rooms.room_count() >= max_rooms {
        app.limits.refuse(Refusal::Rooms);
        return Err(ApiError::TooManyRooms);
    }
    crate::whip::take_signal(app, source)?;
    Ok((room, peer, claims))
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

async fn run_peer(
    app: Arc<App>,
    room: String,
    peer: String,
    claims: Option<Claims>,
    socket: WebSocket,
    // Keeps this node the room's home while the participant is connected.
    _home: Option<ClaimGuard>,
) {
    let cfg = &app.config;
    let (ping_every, timeout, max_message) = (cfg.ws_ping(), cfg.ws_timeout(), cfg.ws_max_message);
    let (rate, burst) = (cfg.ws_rate, (cfg.ws_rate * 2.0).max(1.0));
    let (sink, mut stream) = socket.split();
    let (out, rx, full) = outbox(cfg.ws_queue);
    let (close_tx, close_rx) = oneshot::channel();
    let mut writer = tokio::spawn(write_peer(sink, rx, close_rx, ping_every));
    let mut session = PeerSession::new(app.clone(), room, peer, out.clone(), claims);
    let mut heard = Instant::now();
    let mut bucket = Bucket::full(burst, heard);
    let mut oversized = 0;
    let why: Option<(Refusal, &'static str)> = loop {
        let deadline = tokio::time::Instant::from_std(heard + timeout);
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = full.notified() => break Some((Refusal::WsSlowReader, "not reading; queue full")),
            _ = tokio::time::sleep_until(deadline) => break Some((Refusal::WsTimeout, "no pong or message in time")),
        };
        heard = Instant::now();
        let text = match msg {
            Some(Ok(Message::Text(t))) => t.to_string(),
            Some(Ok(Message::Binary(_))) => {
                if !session.reply(err(0, &RoomError::Binary)).await {
                    break Some((Refusal::WsSlowReader, "not reading; queue full"));
                }
                continue;
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
            Some(Ok(_)) => continue,
        };
        if text.len() > max_message {
            app.limits.refuse(Refusal::WsMessageSize);
            oversized += 1;
            if oversized >= MAX_OVERSIZED {
                break Some((Refusal::WsMessageSize, "too many oversized messages"));
            }
            if !session
                .reply(err(0, &RoomError::TooLarge(max_message)))
                .await
            {
                break Some((Refusal::WsSlowReader, "not reading; queue full"));
            }
            continue;
        }
        if rate > 0.0 {
            // Over the rate, stop reading for a while: the sender waits, nothing piles up here.
            if let Err(wait) = bucket.take(rate, burst, Instant::now()) {
                app.limits.refuse(Refusal::WsRate);
                tokio::time::sleep(wait).await;
                let _ = bucket.take(rate, burst, Instant::now());
            }
        }
        if !session.handle_text(&text).await {
            if full_now(&full) {
                break Some((Refusal::WsSlowReader, "not reading; queue full"));
            }
            break None;
        }
    };
    if let Some((refusal, reason)) = why {
        if refusal != Refusal::WsMessageSize {
            app.limits.refuse(refusal);
        }
        tracing::info!(reason, "room participant disconnected");
    }
    session.leave();
    drop(session);
    drop(out);
    let _ = close_tx.send(why.map(|(_, r)| r));
    if tokio::time::timeout(Duration::from_secs(2), &mut writer)
        .await
        .is_err()
    {
        // A peer that does not read cannot take a close frame either.
        writer.abort();
    }
}

/// Has the participant's queue been reported full (consuming the report)?
fn full_now(full: &tokio::sync::Notify) -> bool {
    use futures_util::FutureExt;
    full.notified().now_or_never().is_some()
}

/// Write what is queued for a participant, ping it, and close with a reason.
async fn write_peer(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: OutboxRx,
    mut close: oneshot::Receiver<Option<&'static str>>,
    ping_every: Duration,
) {
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let mut closing = false;
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => {
                    if sink.send(Message::Text(m.into())).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            r = &mut close, if !closing => {
                if let Ok(Some(reason)) = r {
                    let frame = CloseFrame { code: 1008, reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    return;
                }
                // A normal end: send what is still queued, then close.
                closing = true;
            }
        }
    }
    let _ = sink.close().await;
}
