//! Keeps each participant's receive transport in step with the room's producers: drops
//! stale consumers, binds free mids, renegotiates (server offers) when it needs new ones.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_dataplane::str0m::change::SdpAnswer;
use sluice_dataplane::str0m::media::{MediaKind, Mid};
use sluice_dataplane::{Command, SessionId, ShardId, StreamShared};
use tokio::sync::{oneshot, Notify};

use super::protocol::{kind_str, notification, request};
use super::{Consumer, Peer, Producer};
use crate::app::App;
use crate::sessions::{self, PlaceError};

const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
const RETRY_AFTER_REFUSAL: Duration = Duration::from_secs(2);

/// Why a receive transport could not be brought in step (logged, then retried).
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Place(#[from] PlaceError),
    #[error("no shard")]
    NoShard,
    #[error("shard dropped the request")]
    ShardDropped,
    #[error(transparent)]
    Shard(#[from] sluice_dataplane::ShardError),
    #[error("participant left")]
    ParticipantLeft,
    #[error("no response to {0} within {ANSWER_TIMEOUT:?}")]
    NoResponse(&'static str),
    #[error("{0}")]
    Refused(String),
    #[error("receiveOffer response lacks data.sdp")]
    NoAnswerSdp,
    #[error("bad answer: {0}")]
    BadAnswer(String),
}

/// One wanted consumer: (producer's peer, producer).
struct Want {
    peer: String,
    producer: Producer,
    stream: Arc<StreamShared>,
}

/// Keep one participant's receive transport in step with the room's producers.
pub(super) async fn sync_loop(app: Arc<App>, room: String, peer: String, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        if let Err(e) = sync_once(&app, &room, &peer).await {
            tracing::warn!(room = %room, peer = %peer, "receive transport: {e}");
            // A participant that refused or ignored an offer gets the next one later.
            let wait = match e {
                SyncError::Refused(_) | SyncError::NoResponse(_) => RETRY_AFTER_REFUSAL,
                _ => Duration::from_millis(500),
            };
            tokio::time::sleep(wait).await;
            wake.notify_one();
        }
    }
}

async fn sync_once(app: &Arc<App>, room_name: &str, peer_id: &str) -> Result<(), SyncError> {
    // 1. Under the lock: drop stale consumers, bind free mids, list what needs new mids.
    let mut need: Vec<Want> = Vec::new();
    let recv;
    {
        let mut rooms = app.rooms.lock();
        let Some(room) = rooms.get_mut(room_name) else {
            return Ok(());
        };
        let wanted: Vec<Want> = room
            .peers
            .iter()
            .filter(|(id, _)| id.as_str() != peer_id)
            .flat_map(|(id, p)| {
                let stream = p.send.as_ref().map(|s| s.stream.clone());
                p.producers.iter().filter_map(move |x| {
                    Some(Want {
                        peer: id.clone(),
                        producer: x.clone(),
                        stream: stream.clone()?,
                    })
                })
            })
            .collect();
        let Some(me) = room.peers.get_mut(peer_id) else {
            return Ok(());
        };
        recv = me.recv;
        let mut closed = Vec::new();
        me.consumers.retain(|c| {
            let keep = wanted
                .iter()
                .any(|w| w.peer == c.peer && w.producer.id == c.producer);
            if !keep {
                closed.push(c.clone());
            }
            keep
        });
        for c in closed {
            me.free_mids.push((c.mid, c.kind));
            let _ = me.out.send(notification(
                "consumerClosed",
                json!({"consumerId": c.id, "peerId": c.peer, "producerId": c.producer, "mid": c.mid.to_string()}),
            ));
            if let Some((id, shard)) = recv {
                if let Some(h) = app.dataplane.shard(shard) {
                    h.send(Command::Unsubscribe { id, mid: c.mid });
                    // A later consumer of this mid starts without the caps.
                    if c.max_layer.is_some() {
                        h.send(Command::SetMaxLayer {
                            id,
                            mid: Some(c.mid),
                            max: None,
                        });
                    }
                    if c.max_temporal.is_some() {
                        h.send(Command::SetMaxTemporal {
                            id,
                            mid: Some(c.mid),
                            max: None,
                        });
                    }
                }
            }
        }
        for w in wanted {
            if me
                .consumers
                .iter()
                .any(|c| c.peer == w.peer && c.producer == w.producer.id)
            {
                continue;
            }
            let free = me.free_mids.iter().position(|(_, k)| *k == w.producer.kind);
            match (free, recv) {
                (Some(i), Some((id, shard))) => {
                    let (mid, _) = me.free_mids.remove(i);
                    bind(app, me, id, shard, mid, w);
                }
                _ => need.push(w),
            }
        }
    }
    if need.is_empty() {
        return Ok(());
    }
    // 2. New mids: a first offer (new session) or a renegotiation on its shard.
    let kinds: Vec<MediaKind> = need.iter().map(|w| w.producer.kind).collect();
    let (id, shard, sdp, mids) = match recv {
        None => {
            let (placed, sdp, mids) = sessions::offer(app, format!("room:{room_name}"), &kinds)?;
            let (id, shard) = (placed.id, placed.shard);
            // A stopped shard means the process is stopping; the answer below fails then.
            let _ = placed.start(app, None, None);
            let mut rooms = app.rooms.lock();
            match rooms
                .get_mut(room_name)
                .and_then(|r| r.peers.get_mut(peer_id))
            {
                Some(me) => me.recv = Some((id, shard)),
                None => {
                    drop(rooms);
                    sessions::end(app, id, shard);
                    return Ok(());
                }
            }
            (id, shard, sdp, mids)
        }
        Some((id, shard)) => {
            let (tx, rx) = oneshot::channel();
            let handle = app.dataplane.shard(shard).ok_or(SyncError::NoShard)?;
            handle.send(Command::AddMedia {
                id,
                kinds: kinds.clone(),
                reply: Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            });
            let offer = rx
                .await
                .map_err(|_| SyncError::ShardDropped)?
                .map_err(SyncError::Shard)?;
            (id, shard, offer.sdp, offer.mids)
        }
    };
    // 3. Ask the client for an answer, apply it on the shard, then bind the mids.
    if let Err(e) = answer_offer(app, room_name, peer_id, id, shard, sdp).await {
        // The offer stays pending on the shard, which would refuse every later
        // one: start over with a new receive transport on the next attempt.
        reset_receive(app, room_name, peer_id);
        return Err(e);
    }
    let mut rooms = app.rooms.lock();
    let Some(me) = rooms
        .get_mut(room_name)
        .and_then(|r| r.peers.get_mut(peer_id))
    else {
        return Ok(());
    };
    for (w, mid) in need.into_iter().zip(mids) {
        bind(app, me, id, shard, mid, w);
    }
    // Producers may have changed while we negotiated.
    me.sync.notify_one();
    Ok(())
}

/// Ask the participant to answer `sdp` and apply its answer on the shard.
async fn answer_offer(
    app: &App,
    room_name: &str,
    peer_id: &str,
    id: SessionId,
    shard: ShardId,
    sdp: String,
) -> Result<(), SyncError> {
    let answer = ask(app, room_name, peer_id, "receiveOffer", json!({"sdp": sdp})).await?;
    let answer_sdp = answer
        .get("sdp")
        .and_then(Value::as_str)
        .ok_or(SyncError::NoAnswerSdp)?;
    let answer =
        SdpAnswer::from_sdp_string(answer_sdp).map_err(|e| SyncError::BadAnswer(e.to_string()))?;
    let (tx, rx) = oneshot::channel();
    let handle = app.dataplane.shard(shard).ok_or(SyncError::NoShard)?;
    handle.send(Command::AcceptAnswer {
        id,
        answer,
        reply: Box::new(move |r| {
            let _ = tx.send(r);
        }),
    });
    rx.await
        .map_err(|_| SyncError::ShardDropped)?
        .map_err(SyncError::Shard)
}

/// End a participant's receive transport and forget its consumers (telling it),
/// so the next sync offers everything afresh.
fn reset_receive(app: &App, room_name: &str, peer_id: &str) {
    let mut rooms = app.rooms.lock();
    let Some(me) = rooms
        .get_mut(room_name)
        .and_then(|r| r.peers.get_mut(peer_id))
    else {
        return;
    };
    let recv = me.recv.take();
    me.free_mids.clear();
    for c in me.consumers.drain(..) {
        let _ = me.out.send(notification(
            "consumerClosed",
            json!({"consumerId": c.id, "peerId": c.peer, "producerId": c.producer, "mid": c.mid.to_string()}),
        ));
    }
    drop(rooms);
    if let Some((id, shard)) = recv {
        sessions::end(app, id, shard);
    }
}

/// Bind `mid` of the receive session to a producer and tell the client.
fn bind(app: &App, me: &mut Peer, id: SessionId, shard: ShardId, mid: Mid, w: Want) {
    if let Some(h) = app.dataplane.shard(shard) {
        h.send(Command::Subscribe {
            id,
            mid,
            kind: w.producer.kind,
            stream: w.stream.clone(),
            source_mid: w.producer.mid,
        });
    }
    let consumer = Consumer {
        id: app.negotiator.random_token(10),
        peer: w.peer.clone(),
        producer: w.producer.id.clone(),
        kind: w.producer.kind,
        mid,
        max_layer: None,
        max_temporal: None,
    };
    let _ = me.out.send(notification(
        "newConsumer",
        json!({
            "id": consumer.id,
            "peerId": w.peer,
            "producerId": w.producer.id,
            "kind": kind_str(w.producer.kind),
            "source": w.producer.source,
            "mid": mid.to_string(),
            "paused": w.producer.paused,
        }),
    ));
    me.consumers.push(consumer);
}

/// Send a request to a participant and wait for its response.
async fn ask(
    app: &App,
    room: &str,
    peer: &str,
    method: &'static str,
    data: Value,
) -> Result<Value, SyncError> {
    let (tx, rx) = oneshot::channel();
    {
        let mut rooms = app.rooms.lock();
        let p = rooms
            .get_mut(room)
            .and_then(|r| r.peers.get_mut(peer))
            .ok_or(SyncError::ParticipantLeft)?;
        p.next_request += 1;
        let id = p.next_request;
        p.requests.insert(id, tx);
        p.out
            .send(request(id, method, data))
            .map_err(|_| SyncError::ParticipantLeft)?;
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(r)) => r.map_err(SyncError::Refused),
        Ok(Err(_)) => Err(SyncError::ParticipantLeft),
        Err(_) => Err(SyncError::NoResponse(method)),
    }
}
