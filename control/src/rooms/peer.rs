//! One participant's requests: join, the send transport, producers, layer
//! preferences, chat and leave, each acting on the room tables.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value};
use sluice_dataplane::str0m::media::{MediaKind, Mid};
use sluice_dataplane::{Command, Role};
use tokio::sync::Notify;

use super::protocol::{err, kind_str, notification, ok, Incoming, RoomError};
use super::{sync, Outbox, Peer, Producer, SendTransport};
use crate::app::App;
use crate::auth::Claims;
use crate::limits::Refusal;
use crate::negotiate::media_sections;
use crate::sessions::{self, PlaceError};

/// The server's side of one participant's socket.
pub(super) struct PeerSession {
    app: Arc<App>,
    room: String,
    peer: String,
    out: Outbox,
    claims: Option<Claims>,
    joined: bool,
    sync_task: Option<tokio::task::JoinHandle<()>>,
}

/// A required string field of a request's data.
fn field<'a>(data: &'a Value, name: &str, what: &'static str) -> Result<&'a str, RoomError> {
    data.get(name)
        .and_then(Value::as_str)
        .ok_or(RoomError::Missing(what))
}

impl PeerSession {
    pub(super) fn new(
        app: Arc<App>,
        room: String,
        peer: String,
        out: Outbox,
        claims: Option<Claims>,
    ) -> PeerSession {
        PeerSession {
            app,
            room,
            peer,
            out,
            claims,
            joined: false,
            sync_task: None,
        }
    }

    /// Handle one message; false to close the socket.
    pub(super) async fn handle_text(&mut self, text: &str) -> bool {
        let (id, method, data) = match Incoming::parse(text) {
            Ok(Some(Incoming::Request { id, method, data })) => (id, method, data),
            Ok(Some(Incoming::Response { id, result })) => {
                self.handle_response(id, result);
                return true;
            }
            Ok(None) => return true,
            Err((id, e)) => return self.reply(err(id, &e)).await,
        };
        let reply = match self.handle_request(&method, &data).await {
            Ok(d) => ok(id, d),
            Err(e) => err(id, &e),
        };
        self.reply(reply).await && method != "leave"
    }

    /// Queue a response to the participant; false when it does not read them.
    pub(super) async fn reply(&self, msg: String) -> bool {
        let within = self.app.config.ws_timeout();
        self.out.send_own(msg, within).await.is_ok()
    }

    fn handle_response(&mut self, id: u64, result: Result<Value, String>) {
        let mut rooms = self.app.rooms.lock();
        let Some(p) = rooms
            .get_mut(&self.room)
            .and_then(|r| r.peers.get_mut(&self.peer))
        else {
            return;
        };
        if let Some(tx) = p.requests.remove(&id) {
            let _ = tx.send(result);
        }
    }

    async fn handle_request(&mut self, method: &str, data: &Value) -> Result<Value, RoomError> {
        if method == "join" {
            return self.join(data);
        }
        if !self.joined {
            return Err(RoomError::NotJoined(method.to_string()));
        }
        match method {
            "createSendTransport" => self.create_send_transport(data),
            "produce" => self.produce(data),
            "closeProducer" => self.close_producer(data),
            "pauseProducer" => self.pause_producer(data, true),
            "resumeProducer" => self.pause_producer(data, false),
            "setConsumerPreferredLayers" => self.set_consumer_preferred_layers(data),
            "chat" => self.chat(data),
            "leave" => Ok(json!({})),
            _ => Err(RoomError::UnknownMethod(method.to_string())),
        }
    }

    fn join(&mut self, data: &Value) -> Result<Value, RoomError> {
        if self.joined {
            return Err(RoomError::AlreadyJoined);
        }
        let name = data
            .get("displayName")
            .and_then(Value::as_str)
            .unwrap_or(&self.peer)
            .chars()
            .take(64)
            .collect::<String>();
        let mut rooms = self.app.rooms.lock();
        let (max_rooms, max_peers) = (self.app.config.max_rooms, self.app.config.max_room_peers);
        if max_rooms > 0 && !rooms.contains_key(&self.room) && rooms.len() >= max_rooms {
            self.app.limits.refuse(Refusal::Rooms);
            return Err(RoomError::TooManyRooms);
        }
        let room = rooms.entry(self.room.clone()).or_default();
        if room.peers.contains_key(&self.peer) {
            return Err(RoomError::PeerIdInUse);
        }
        if max_peers > 0 && room.peers.len() >= max_peers {
            if room.peers.is_empty() {
                rooms.remove(&self.room);
            }
            self.app.limits.refuse(Refusal::RoomFull);
            return Err(RoomError::RoomFull);
        }
        let peers: Vec<Value> = room
            .peers
            .iter()
            .map(|(id, p)| {
                json!({
                    "id": id,
                    "displayName": p.display_name,
                    "producers": p.producers.iter().map(|x| json!({
                        "id": x.id, "kind": kind_str(x.kind), "source": x.source, "paused": x.paused,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let note = notification("newPeer", json!({"id": self.peer, "displayName": name}));
        for p in room.peers.values() {
            let _ = p.out.send(note.clone());
        }
        let wake = Arc::new(Notify::new());
        room.peers.insert(
            self.peer.clone(),
            Peer::new(name, self.out.clone(), wake.clone()),
        );
        drop(rooms);
        self.joined = true;
        if self.claims.as_ref().is_none_or(|c| c.subscribe) {
            let app = self.app.clone();
            let (room, peer) = (self.room.clone(), self.peer.clone());
            self.sync_task = Some(tokio::spawn(sync::sync_loop(app, room, peer, wake.clone())));
            wake.notify_one();
        }
        tracing::info!(room = %self.room, peer = %self.peer, "joined");
        Ok(json!({"peers": peers}))
    }

    fn create_send_transport(&mut self, data: &Value) -> Result<Value, RoomError> {
        if self.claims.as_ref().is_some_and(|c| !c.publish) {
            return Err(RoomError::PublishNotGranted);
        }
        let sdp = field(data, "sdp", "data.sdp (the offer)")?;
        let app = &self.app;
        let stream_name = format!("room:{}:{}", self.room, self.peer);
        let (placed, answer) =
            sessions::answer(app, &stream_name, Role::Publisher, sdp, None, None).map_err(|e| {
                match e {
                    PlaceError::NoShard => RoomError::NoShard,
                    PlaceError::Negotiate(e) => RoomError::Negotiate(e),
                    PlaceError::AlreadyPublished(_)
                    | PlaceError::AtCapacity
                    | PlaceError::SessionsPerIp
                    | PlaceError::ShardStopped => RoomError::SendTransportRefused,
                }
            })?;
        let mids: Vec<(String, MediaKind)> = media_sections(sdp)
            .into_iter()
            .filter_map(|m| {
                let kind = match m.kind.as_str() {
                    "audio" => MediaKind::Audio,
                    "video" => MediaKind::Video,
                    _ => return None,
                };
                Some((m.mid?, kind))
            })
            .collect();
        let stream = placed.stream.clone().expect("a publisher has a stream");
        {
            let mut rooms = app.rooms.lock();
            let Some(p) = rooms
                .get_mut(&self.room)
                .and_then(|r| r.peers.get_mut(&self.peer))
            else {
                placed.cancel(app);
                return Err(RoomError::NotInRoom);
            };
            if p.send.is_some() {
                placed.cancel(app);
                return Err(RoomError::SendTransportExists);
            }
            p.send = Some(SendTransport {
                id: placed.id,
                shard: placed.shard,
                stream,
                mids,
            });
        }
        app.rooms
            .senders()
            .insert(placed.id, (self.room.clone(), self.peer.clone()));
        // A stopped shard means the process is stopping; the socket closes with it.
        let _ = placed.start(app, None, None);
        Ok(json!({"sdp": answer}))
    }

    fn produce(&mut self, data: &Value) -> Result<Value, RoomError> {
        let kind = match data.get("kind").and_then(Value::as_str) {
            Some("audio") => MediaKind::Audio,
            Some("video") => MediaKind::Video,
            _ => return Err(RoomError::BadKind),
        };
        let source = data
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or(if kind == MediaKind::Audio {
                "mic"
            } else {
                "cam"
            })
            .chars()
            .take(16)
            .collect::<String>();
        let mid_str = field(data, "mid", "data.mid (the send transceiver's mid)")?;
        let producer_id = self.app.negotiator.random_token(10);
        let mut rooms = self.app.rooms.lock();
        let room = rooms.get_mut(&self.room).ok_or(RoomError::NotInRoom)?;
        let p = room.peers.get_mut(&self.peer).ok_or(RoomError::NotInRoom)?;
        let Some(SendTransport { mids, .. }) = &p.send else {
            return Err(RoomError::NoSendTransport);
        };
        match mids.iter().find(|(m, _)| m == mid_str) {
            None => return Err(RoomError::MidNotOffered(mid_str.to_string())),
            Some((_, k)) if *k != kind => {
                return Err(RoomError::MidOfOtherKind(
                    mid_str.to_string(),
                    kind_str(kind),
                ))
            }
            _ => {}
        }
        if p.producers.iter().any(|x| x.mid.to_string() == mid_str) {
            return Err(RoomError::MidTaken(mid_str.to_string()));
        }
        p.producers.push(Producer {
            id: producer_id.clone(),
            kind,
            source,
            mid: Mid::from(mid_str),
            paused: false,
        });
        room.wake_others(&self.peer);
        Ok(json!({"id": producer_id}))
    }

    fn close_producer(&mut self, data: &Value) -> Result<Value, RoomError> {
        let pid = field(data, "producerId", "data.producerId")?;
        let mut rooms = self.app.rooms.lock();
        let room = rooms.get_mut(&self.room).ok_or(RoomError::NotInRoom)?;
        let p = room.peers.get_mut(&self.peer).ok_or(RoomError::NotInRoom)?;
        let before = p.producers.len();
        p.producers.retain(|x| x.id != pid);
        if p.producers.len() == before {
            return Err(RoomError::NoProducer(pid.to_string()));
        }
        room.wake_others(&self.peer);
        Ok(json!({}))
    }

    fn pause_producer(&mut self, data: &Value, paused: bool) -> Result<Value, RoomError> {
        let pid = field(data, "producerId", "data.producerId")?;
        let mut rooms = self.app.rooms.lock();
        let room = rooms.get_mut(&self.room).ok_or(RoomError::NotInRoom)?;
        let p = room.peers.get_mut(&self.peer).ok_or(RoomError::NotInRoom)?;
        let prod = p
            .producers
            .iter_mut()
            .find(|x| x.id == pid)
            .ok_or_else(|| RoomError::NoProducer(pid.to_string()))?;
        prod.paused = paused;
        let method = if paused {
            "producerPaused"
        } else {
            "producerResumed"
        };
        let note = notification(method, json!({"peerId": self.peer, "producerId": pid}));
        for (id, other) in &room.peers {
            if id != &self.peer {
                let _ = other.out.send(note.clone());
            }
        }
        Ok(json!({}))
    }

    /// Cap the simulcast layer (`spatialLayer`, 0 = lowest) and the VP8
    /// temporal layer (`temporalLayer`, 0 = base) one of this participant's
    /// video consumers receives; a null or missing one lifts that cap.
    fn set_consumer_preferred_layers(&mut self, data: &Value) -> Result<Value, RoomError> {
        let cid = field(data, "consumerId", "data.consumerId")?;
        let layer = |key, bad: RoomError| match data.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64().map(u8::try_from) {
                Some(Ok(n)) => Ok(Some(n)),
                _ => Err(bad),
            },
        };
        let max = layer("spatialLayer", RoomError::BadSpatialLayer)?;
        let temporal = layer("temporalLayer", RoomError::BadTemporalLayer)?;
        let mut rooms = self.app.rooms.lock();
        let p = rooms
            .get_mut(&self.room)
            .and_then(|r| r.peers.get_mut(&self.peer))
            .ok_or(RoomError::NotInRoom)?;
        let recv = p.recv;
        let (Some(c), Some((id, shard))) = (p.consumers.iter_mut().find(|c| c.id == cid), recv)
        else {
            return Err(RoomError::NoConsumer(cid.to_string()));
        };
        if c.kind != MediaKind::Video {
            return Err(RoomError::AudioConsumer(cid.to_string()));
        }
        c.max_layer = max;
        c.max_temporal = temporal;
        // Sent under the room lock so they stay ordered with the consumer's
        // Subscribe and Unsubscribe on the shard.
        if let Some(h) = self.app.dataplane.shard(shard) {
            h.send(Command::SetMaxLayer {
                id,
                mid: Some(c.mid),
                max,
            });
            h.send(Command::SetMaxTemporal {
                id,
                mid: Some(c.mid),
                max: temporal,
            });
        }
        Ok(json!({"consumerId": cid, "spatialLayer": max, "temporalLayer": temporal}))
    }

    fn chat(&mut self, data: &Value) -> Result<Value, RoomError> {
        let text = field(data, "text", "data.text")?;
        if text.chars().count() > 1000 {
            return Err(RoomError::ChatTooLong);
        }
        let rooms = self.app.rooms.lock();
        let room = rooms.get(&self.room).ok_or(RoomError::NotInRoom)?;
        let name = room
            .peers
            .get(&self.peer)
            .map(|p| p.display_name.clone())
            .unwrap_or_default();
        let ts = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let note = notification(
            "chat",
            json!({"peerId": self.peer, "displayName": name, "text": text, "ts": ts}),
        );
        for p in room.peers.values() {
            let _ = p.out.send(note.clone());
        }
        Ok(json!({}))
    }

    /// Remove the participant: end its sessions, tell the others.
    pub(super) fn leave(&mut self) {
        if let Some(t) = self.sync_task.take() {
            t.abort();
        }
        if !self.joined {
            return;
        }
        self.joined = false;
        let mut rooms = self.app.rooms.lock();
        let Some(room) = rooms.get_mut(&self.room) else {
            return;
        };
        let Some(p) = room.peers.remove(&self.peer) else {
            return;
        };
        if room.speaker.as_deref() == Some(&self.peer) {
            room.speaker = None;
        }
        let note = notification("peerClosed", json!({"peerId": self.peer}));
        for other in room.peers.values() {
            let _ = other.out.send(note.clone());
            other.sync.notify_one();
        }
        if room.peers.is_empty() {
            rooms.remove(&self.room);
        }
        drop(rooms);
        if let Some(SendTransport { id, shard, .. }) = p.send {
            self.app.rooms.senders().remove(&id);
            sessions::end(&self.app, id, shard);
        }
        if let Some((id, shard)) = p.recv {
            sessions::end(&self.app, id, shard);
        }
        tracing::info!(room = %self.room, peer = %self.peer, "left");
    }
}
