//! The room WebSocket: `GET /ws` checks and upgrades, then one task per
//! participant reads its messages and writes what is queued for it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::peer::PeerSession;
use super::protocol::{err, RoomError, MAX_MESSAGE};
use crate::app::App;
use crate::auth::Claims;
use crate::authz;
use crate::error::ApiError;

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
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    match admit(&app, q, &headers) {
        Ok((room, peer, claims)) => ws
            .max_message_size(MAX_MESSAGE * 4)
            .on_upgrade(move |socket| run_peer(app, room, peer, claims, socket)),
        Err(e) => e.into_response(),
    }
}

/// The room, peer and claims of a client that may join.
fn admit(
    app: &App,
    q: WsQuery,
    headers: &HeaderMap,
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
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(Message::Text(m.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut session = PeerSession::new(app, room, peer, tx.clone(), claims);
    while let Some(msg) = stream.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t.to_string(),
            Ok(Message::Binary(_)) => {
                let _ = tx.send(err(0, &RoomError::Binary));
                continue;
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        if text.len() > MAX_MESSAGE {
            let _ = tx.send(err(0, &RoomError::TooLarge));
            continue;
        }
        if !session.handle_text(&text).await {
            break;
        }
    }
    session.leave();
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}
