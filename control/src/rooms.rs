//! Conference rooms over a WebSocket (docs/rooms.md): participants, their
//! producers, and the consumers each participant's receive transport carries.
//!
//! Each participant has a send transport (a publisher session of its own
//! stream) and a receive transport (a session whose sending mids are bound,
//! one by one, to other participants' tracks). Sessions live on shards like
//! WHIP/WHEP ones; this module only steers them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_dataplane::str0m::change::SdpAnswer;
use sluice_dataplane::str0m::media::{MediaKind, Mid};
use sluice_dataplane::{Command, NewSession, Role, SessionId, ShardId, StreamShared};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::auth::{unix_now, Claims};
use crate::http::{auth_error, bearer, error};
use crate::negotiate::{media_sections, NegotiateError};
use crate::registry::SessionEntry;
use crate::server::App;

/// Largest accepted WebSocket message.
pub const MAX_MESSAGE: usize = 64 * 1024;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
const SPEAKER_HOLD: Duration = Duration::from_millis(1500);

type Outbox = mpsc::UnboundedSender<String>;

#[derive(Debug, Clone)]
struct Producer {
    id: String,
    kind: MediaKind,
    source: String,
    mid: Mid,
    paused: bool,
}

#[derive(Debug, Clone)]
struct Consumer {
    id: String,
    peer: String,
    producer: String,
    kind: MediaKind,
    mid: Mid,
    /// Highest simulcast layer asked for with setConsumerPreferredLayers.
    max_layer: Option<u8>,
}

/// A participant's send transport: its publisher session and the mids it offered.
struct SendTransport {
    id: SessionId,
    shard: ShardId,
    stream: Arc<StreamShared>,
    mids: Vec<(String, MediaKind)>,
}

struct Peer {
    display_name: String,
    out: Outbox,
    send: Option<SendTransport>,
    recv: Option<(SessionId, ShardId)>,
    producers: Vec<Producer>,
    consumers: Vec<Consumer>,
    free_mids: Vec<(Mid, MediaKind)>,
    sync: Arc<Notify>,
    requests: HashMap<u64, oneshot::Sender<Result<Value, String>>>,
    next_request: u64,
    level: Option<(u8, Instant)>,
}

#[derive(Default)]
struct Room {
    peers: HashMap<String, Peer>,
    speaker: Option<String>,
    speaker_since: Option<Instant>,
}

/// All rooms of the process.
#[derive(Default)]
pub struct Rooms {
    rooms: Mutex<HashMap<String, Room>>,
    /// Send-session id → (room, peer), for audio levels.
    senders: Mutex<HashMap<SessionId, (String, String)>>,
}

impl Rooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Participants across rooms.
    pub fn peer_count(&self) -> usize {
        self.lock().values().map(|r| r.peers.len()).sum()
    }

    pub fn room_count(&self) -> usize {
        self.lock().len()
    }

    /// (room, participants) for the admin API.
    pub fn summary(&self) -> Vec<Value> {
        let rooms = self.lock();
        let mut v: Vec<Value> = rooms
            .iter()
            .map(|(name, r)| {
                json!({
                    "name": name,
                    "peers": r.peers.iter().map(|(id, p)| json!({
                        "id": id,
                        "displayName": p.display_name,
                        "producers": p.producers.len(),
                        "consumers": p.consumers.len(),
                    })).collect::<Vec<_>>(),
                    "activeSpeaker": r.speaker,
                })
            })
            .collect();
        v.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        v
    }

    /// A publisher's audio level from its shard: pick the room's active speaker.
    pub fn handle_level(&self, id: SessionId, level: u8) {
        let Some((room_name, peer_id)) = self
            .senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
        else {
            return;
        };
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&room_name) else {
            return;
        };
        let now = Instant::now();
        if let Some(p) = room.peers.get_mut(&peer_id) {
            p.level = Some((level, now));
        }
        // Loudest recent speaker above the noise floor (-dBov: lower is louder).
        let fresh = |p: &Peer| {
            p.level
                .filter(|(l, t)| now.duration_since(*t) < Duration::from_secs(1) && *l < 50)
                .map(|(l, _)| l)
        };
        let loudest = room
            .peers
            .iter()
            .filter_map(|(id, p)| fresh(p).map(|l| (l, id.clone())))
            .min();
        let current = room
            .speaker
            .as_ref()
            .and_then(|s| room.peers.get(s))
            .and_then(fresh);
        // Hold a speaker at least SPEAKER_HOLD while they keep talking, so
        // equal voices do not make the highlight flicker.
        let held = room
            .speaker_since
            .is_some_and(|t| now.duration_since(t) < SPEAKER_HOLD);
        let next = match (loudest, current) {
            (Some((l, id)), Some(c))
                if Some(&id) != room.speaker.as_ref() && !held && l + 3 <= c =>
            {
                Some((id, l))
            }
            (Some((l, id)), None) if Some(&id) != room.speaker.as_ref() => Some((id, l)),
            _ => None,
        };
        if let Some((id, level)) = next {
            room.speaker = Some(id.clone());
            room.speaker_since = Some(now);
            let msg = notification(
                "activeSpeaker",
                json!({"peerId": id, "level": -(level as i32)}),
            );
            for p in room.peers.values() {
                let _ = p.out.send(msg.clone());
            }
        }
    }
}

fn notification(method: &str, data: Value) -> String {
    json!({"notification": true, "method": method, "data": data}).to_string()
}

fn ok(id: u64, data: Value) -> String {
    json!({"response": true, "id": id, "ok": true, "data": data}).to_string()
}

fn err(id: u64, code: u16, reason: impl Into<String>) -> String {
    json!({"response": true, "id": id, "ok": false, "errorCode": code, "errorReason": reason.into()})
        .to_string()
}

fn kind_str(k: MediaKind) -> &'static str {
    if k == MediaKind::Audio {
        "audio"
    } else {
        "video"
    }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

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
    let (Some(room), Some(peer)) = (q.room_id, q.peer_id) else {
        return error(
            StatusCode::BAD_REQUEST,
            "roomId and peerId query parameters are required",
        );
    };
    if !valid_id(&room) || !valid_id(&peer) {
        return error(
            StatusCode::BAD_REQUEST,
            "roomId and peerId must be 1-64 characters of A-Z a-z 0-9 - _ .",
        );
    }
    let claims = match &app.tokens {
        None => None,
        Some(key) => {
            let token = q.token.as_deref().or_else(|| bearer(&headers));
            let Some(token) = token else {
                return auth_error(crate::auth::AuthError::Missing);
            };
            match key.verify(token, unix_now()) {
                Ok(c) => {
                    if let Err(e) = c.allows_room(&room) {
                        return auth_error(e);
                    }
                    Some(c)
                }
                Err(e) => return auth_error(e),
            }
        }
    };
    if app.is_draining() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "server is draining");
    }
    if app
        .rooms
        .lock()
        .get(&room)
        .is_some_and(|r| r.peers.contains_key(&peer))
    {
        return error(StatusCode::CONFLICT, "peer id already in use in this room");
    }
    ws.max_message_size(MAX_MESSAGE * 4)
        .on_upgrade(move |socket| run_peer(app, room, peer, claims, socket))
}

async fn run_peer(
    app: Arc<App>,
    room: String,
    peer: String,
    claims: Option<Claims>,
    socket: WebSocket,
) {
    use futures_util::{SinkExt, StreamExt};
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
    let mut session = PeerSession {
        app: app.clone(),
        room: room.clone(),
        peer: peer.clone(),
        out: tx.clone(),
        claims,
        joined: false,
        sync_task: None,
    };
    while let Some(msg) = stream.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t.to_string(),
            Ok(Message::Binary(_)) => {
                let _ = tx.send(err(
                    0,
                    400,
                    "binary messages are not supported; send JSON text",
                ));
                continue;
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        if text.len() > MAX_MESSAGE {
            let _ = tx.send(err(0, 413, format!("message over {MAX_MESSAGE} bytes")));
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

struct PeerSession {
    app: Arc<App>,
    room: String,
    peer: String,
    out: Outbox,
    claims: Option<Claims>,
    joined: bool,
    sync_task: Option<tokio::task::JoinHandle<()>>,
}

impl PeerSession {
    /// Handle one message; false to close the socket.
    async fn handle_text(&mut self, text: &str) -> bool {
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let _ = self.out.send(err(0, 400, format!("malformed JSON: {e}")));
                return true;
            }
        };
        if v.get("response").and_then(Value::as_bool) == Some(true) {
            self.handle_response(&v);
            return true;
        }
        let (Some(true), Some(id), Some(method)) = (
            v.get("request").and_then(Value::as_bool),
            v.get("id").and_then(Value::as_u64),
            v.get("method").and_then(Value::as_str),
        ) else {
            let _ = self.out.send(err(
                v.get("id").and_then(Value::as_u64).unwrap_or(0),
                400,
                "expected {\"request\":true,\"id\":N,\"method\":...,\"data\":{...}}",
            ));
            return true;
        };
        let data = v.get("data").cloned().unwrap_or(json!({}));
        let reply = match self.handle_request(method, &data).await {
            Ok(d) => ok(id, d),
            Err((code, reason)) => err(id, code, reason),
        };
        let _ = self.out.send(reply);
        method != "leave"
    }

    fn handle_response(&mut self, v: &Value) {
        let Some(id) = v.get("id").and_then(Value::as_u64) else {
            return;
        };
        let mut rooms = self.app.rooms.lock();
        let Some(p) = rooms
            .get_mut(&self.room)
            .and_then(|r| r.peers.get_mut(&self.peer))
        else {
            return;
        };
        if let Some(tx) = p.requests.remove(&id) {
            let result = if v.get("ok").and_then(Value::as_bool) == Some(true) {
                Ok(v.get("data").cloned().unwrap_or(json!({})))
            } else {
                Err(v
                    .get("errorReason")
                    .and_then(Value::as_str)
                    .unwrap_or("client refused")
                    .to_string())
            };
            let _ = tx.send(result);
        }
    }

    async fn handle_request(&mut self, method: &str, data: &Value) -> Result<Value, (u16, String)> {
        if method == "join" {
            return self.join(data);
        }
        if !self.joined {
            return Err((409, format!("{method} before join: send join first")));
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
            _ => Err((404, format!("unknown method {method:?}"))),
        }
    }

    fn join(&mut self, data: &Value) -> Result<Value, (u16, String)> {
        if self.joined {
            return Err((409, "already joined".into()));
        }
        let name = data
            .get("displayName")
            .and_then(Value::as_str)
            .unwrap_or(&self.peer)
            .chars()
            .take(64)
            .collect::<String>();
        let mut rooms = self.app.rooms.lock();
        let room = rooms.entry(self.room.clone()).or_default();
        if room.peers.contains_key(&self.peer) {
            return Err((409, "peer id already in use in this room".into()));
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
        let sync = Arc::new(Notify::new());
        room.peers.insert(
            self.peer.clone(),
            Peer {
                display_name: name,
                out: self.out.clone(),
                send: None,
                recv: None,
                producers: Vec::new(),
                consumers: Vec::new(),
                free_mids: Vec::new(),
                sync: sync.clone(),
                requests: HashMap::new(),
                next_request: 1000,
                level: None,
            },
        );
        drop(rooms);
        self.joined = true;
        if self.claims.as_ref().is_none_or(|c| c.subscribe) {
            let app = self.app.clone();
            let (room, peer) = (self.room.clone(), self.peer.clone());
            self.sync_task = Some(tokio::spawn(sync_loop(app, room, peer, sync.clone())));
            sync.notify_one();
        }
        tracing::info!(room = %self.room, peer = %self.peer, "joined");
        Ok(json!({"peers": peers}))
    }

    fn create_send_transport(&mut self, data: &Value) -> Result<Value, (u16, String)> {
        if self.claims.as_ref().is_some_and(|c| !c.publish) {
            return Err((403, "token does not grant the publish right".into()));
        }
        let sdp = data
            .get("sdp")
            .and_then(Value::as_str)
            .ok_or((400, "data.sdp (the offer) is required".to_string()))?;
        let app = &self.app;
        let stream_name = format!("room:{}:{}", self.room, self.peer);
        let max = app.config.max_sessions;
        let shard = {
            let reg = app.registry();
            if reg.check(&stream_name, Role::Publisher, max).is_err() {
                return Err((409, "send transport exists or server at capacity".into()));
            }
            reg.least_loaded(app.dataplane.shards.len())
        };
        let handle = app
            .dataplane
            .shard(shard)
            .ok_or((503, "no shard".to_string()))?;
        let n = app
            .negotiator
            .answer(sdp, true, handle.addr)
            .map_err(|e| match e {
                NegotiateError::Malformed(m) => (400, m),
                NegotiateError::Unsupported(m) => (422, m),
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
        let id = SessionId(app.negotiator.random_u64());
        let shared = app
            .registry()
            .register(
                SessionEntry {
                    id,
                    role: Role::Publisher,
                    stream: stream_name,
                    shard,
                    created: SystemTime::now(),
                    connected: false,
                },
                max,
            )
            .map_err(|_| {
                (
                    409,
                    "send transport exists or server at capacity".to_string(),
                )
            })?;
        {
            let mut rooms = app.rooms.lock();
            let Some(p) = rooms
                .get_mut(&self.room)
                .and_then(|r| r.peers.get_mut(&self.peer))
            else {
                app.registry().remove(id);
                return Err((409, "not in the room".into()));
            };
            if p.send.is_some() {
                app.registry().remove(id);
                return Err((409, "send transport already created".into()));
            }
            p.send = Some(SendTransport {
                id,
                shard,
                stream: shared.clone(),
                mids,
            });
        }
        app.rooms
            .senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (self.room.clone(), self.peer.clone()));
        handle.send(Command::AddSession(Box::new(NewSession {
            id,
            role: Role::Publisher,
            stream: Some(shared),
            ice_ufrag: n.ufrag,
            rtc: n.rtc,
            pending: None,
            max_layer: None,
        })));
        Ok(json!({"sdp": n.answer}))
    }

    fn produce(&mut self, data: &Value) -> Result<Value, (u16, String)> {
        let kind = match data.get("kind").and_then(Value::as_str) {
            Some("audio") => MediaKind::Audio,
            Some("video") => MediaKind::Video,
            _ => return Err((400, "data.kind must be \"audio\" or \"video\"".into())),
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
        let mid_str = data.get("mid").and_then(Value::as_str).ok_or((
            400,
            "data.mid (the send transceiver's mid) is required".to_string(),
        ))?;
        let producer_id = self.app.negotiator.random_token(10);
        {
            let mut rooms = self.app.rooms.lock();
            let room = rooms
                .get_mut(&self.room)
                .ok_or((409, "not in the room".to_string()))?;
            let p = room
                .peers
                .get_mut(&self.peer)
                .ok_or((409, "not in the room".to_string()))?;
            let Some(SendTransport { mids, .. }) = &p.send else {
                return Err((409, "createSendTransport first".into()));
            };
            match mids.iter().find(|(m, _)| m == mid_str) {
                None => return Err((400, format!("mid {mid_str:?} is not in the send transport"))),
                Some((_, k)) if *k != kind => {
                    return Err((400, format!("mid {mid_str:?} is not {}", kind_str(kind))))
                }
                _ => {}
            }
            if p.producers.iter().any(|x| x.mid.to_string() == mid_str) {
                return Err((409, format!("mid {mid_str:?} already has a producer")));
            }
            p.producers.push(Producer {
                id: producer_id.clone(),
                kind,
                source,
                mid: Mid::from(mid_str),
                paused: false,
            });
            for (id, other) in &room.peers {
                if id != &self.peer {
                    other.sync.notify_one();
                }
            }
        }
        Ok(json!({"id": producer_id}))
    }

    fn close_producer(&mut self, data: &Value) -> Result<Value, (u16, String)> {
        let pid = data
            .get("producerId")
            .and_then(Value::as_str)
            .ok_or((400, "data.producerId is required".to_string()))?;
        let mut rooms = self.app.rooms.lock();
        let room = rooms
            .get_mut(&self.room)
            .ok_or((409, "not in the room".to_string()))?;
        let p = room
            .peers
            .get_mut(&self.peer)
            .ok_or((409, "not in the room".to_string()))?;
        let before = p.producers.len();
        p.producers.retain(|x| x.id != pid);
        if p.producers.len() == before {
            return Err((404, format!("no producer {pid:?}")));
        }
        for (id, other) in &room.peers {
            if id != &self.peer {
                other.sync.notify_one();
            }
        }
        Ok(json!({}))
    }

    fn pause_producer(&mut self, data: &Value, paused: bool) -> Result<Value, (u16, String)> {
        let pid = data
            .get("producerId")
            .and_then(Value::as_str)
            .ok_or((400, "data.producerId is required".to_string()))?;
        let mut rooms = self.app.rooms.lock();
        let room = rooms
            .get_mut(&self.room)
            .ok_or((409, "not in the room".to_string()))?;
        let p = room
            .peers
            .get_mut(&self.peer)
            .ok_or((409, "not in the room".to_string()))?;
        let prod = p
            .producers
            .iter_mut()
            .find(|x| x.id == pid)
            .ok_or((404, format!("no producer {pid:?}")))?;
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

    /// Cap the simulcast layer one of this participant's video consumers
    /// receives (0 = lowest); a null or missing `spatialLayer` lifts the cap.
    fn set_consumer_preferred_layers(&mut self, data: &Value) -> Result<Value, (u16, String)> {
        let cid = data
            .get("consumerId")
            .and_then(Value::as_str)
            .ok_or((400, "data.consumerId is required".to_string()))?;
        let max = match data.get("spatialLayer") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64().map(u8::try_from) {
                Some(Ok(n)) => Some(n),
                _ => {
                    return Err((
                        400,
                        "data.spatialLayer must be null or an integer from 0 (lowest) to 255"
                            .into(),
                    ))
                }
            },
        };
        let mut rooms = self.app.rooms.lock();
        let p = rooms
            .get_mut(&self.room)
            .and_then(|r| r.peers.get_mut(&self.peer))
            .ok_or((409, "not in the room".to_string()))?;
        let recv = p.recv;
        let (Some(c), Some((id, shard))) = (p.consumers.iter_mut().find(|c| c.id == cid), recv)
        else {
            return Err((404, format!("no consumer {cid:?}")));
        };
        if c.kind != MediaKind::Video {
            return Err((
                400,
                format!("consumer {cid:?} is audio; layers apply to video consumers"),
            ));
        }
        c.max_layer = max;
        // Sent under the room lock so it stays ordered with the consumer's
        // Subscribe and Unsubscribe on the shard.
        if let Some(h) = self.app.dataplane.shard(shard) {
            h.send(Command::SetMaxLayer {
                id,
                mid: Some(c.mid),
                max,
            });
        }
        Ok(json!({"consumerId": cid, "spatialLayer": max}))
    }

    fn chat(&mut self, data: &Value) -> Result<Value, (u16, String)> {
        let text = data
            .get("text")
            .and_then(Value::as_str)
            .ok_or((400, "data.text is required".to_string()))?;
        if text.chars().count() > 1000 {
            return Err((400, "chat messages are at most 1000 characters".into()));
        }
        let rooms = self.app.rooms.lock();
        let room = rooms
            .get(&self.room)
            .ok_or((409, "not in the room".to_string()))?;
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
    fn leave(&mut self) {
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
            self.app
                .rooms
                .senders
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            end(&self.app, id, shard);
        }
        if let Some((id, shard)) = p.recv {
            end(&self.app, id, shard);
        }
        tracing::info!(room = %self.room, peer = %self.peer, "left");
    }
}

fn end(app: &App, id: SessionId, shard: ShardId) {
    app.registry().remove(id);
    if let Some(h) = app.dataplane.shard(shard) {
        h.send(Command::RemoveSession(id));
    }
}

/// One wanted consumer: (producer's peer, producer).
struct Want {
    peer: String,
    producer: Producer,
    stream: Arc<StreamShared>,
}

/// Keep one participant's receive transport in step with the room's producers.
async fn sync_loop(app: Arc<App>, room: String, peer: String, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        if let Err(e) = sync_once(&app, &room, &peer).await {
            tracing::warn!(room = %room, peer = %peer, "receive transport: {e}");
            tokio::time::sleep(Duration::from_millis(500)).await;
            wake.notify_one();
        }
    }
}

async fn sync_once(app: &Arc<App>, room_name: &str, peer_id: &str) -> Result<(), String> {
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
                    if c.max_layer.is_some() {
                        // A later consumer of this mid starts without the cap.
                        h.send(Command::SetMaxLayer {
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
            let max = app.config.max_sessions;
            let shard = app.registry().least_loaded(app.dataplane.shards.len());
            let handle = app.dataplane.shard(shard).ok_or("no shard")?;
            let offered = app
                .negotiator
                .offer(&kinds, handle.addr)
                .map_err(|e| e.to_string())?;
            let id = SessionId(app.negotiator.random_u64());
            app.registry()
                .register_unindexed(
                    SessionEntry {
                        id,
                        role: Role::Viewer,
                        stream: format!("room:{room_name}"),
                        shard,
                        created: SystemTime::now(),
                        connected: false,
                    },
                    max,
                )
                .map_err(|_| "server at capacity".to_string())?;
            handle.send(Command::AddSession(Box::new(NewSession {
                id,
                role: Role::Viewer,
                stream: None,
                ice_ufrag: offered.ufrag,
                rtc: offered.rtc,
                pending: Some(offered.pending),
                max_layer: None,
            })));
            let mut rooms = app.rooms.lock();
            match rooms
                .get_mut(room_name)
                .and_then(|r| r.peers.get_mut(peer_id))
            {
                Some(me) => me.recv = Some((id, shard)),
                None => {
                    drop(rooms);
                    end(app, id, shard);
                    return Ok(());
                }
            }
            (id, shard, offered.sdp, offered.mids)
        }
        Some((id, shard)) => {
            let (tx, rx) = oneshot::channel();
            let handle = app.dataplane.shard(shard).ok_or("no shard")?;
            handle.send(Command::AddMedia {
                id,
                kinds: kinds.clone(),
                reply: Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            });
            let offer = rx
                .await
                .map_err(|_| "shard dropped the request")?
                .map_err(|e| e.to_string())?;
            (id, shard, offer.sdp, offer.mids)
        }
    };
    // 3. Ask the client for an answer, apply it on the shard, then bind the mids.
    let answer = request(app, room_name, peer_id, "receiveOffer", json!({"sdp": sdp})).await?;
    let answer_sdp = answer
        .get("sdp")
        .and_then(Value::as_str)
        .ok_or("receiveOffer response lacks data.sdp")?;
    let answer = SdpAnswer::from_sdp_string(answer_sdp).map_err(|e| format!("bad answer: {e}"))?;
    let (tx, rx) = oneshot::channel();
    let handle = app.dataplane.shard(shard).ok_or("no shard")?;
    handle.send(Command::AcceptAnswer {
        id,
        answer,
        reply: Box::new(move |r| {
            let _ = tx.send(r);
        }),
    });
    rx.await
        .map_err(|_| "shard dropped the request")?
        .map_err(|e| e.to_string())?;
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
async fn request(
    app: &App,
    room: &str,
    peer: &str,
    method: &str,
    data: Value,
) -> Result<Value, String> {
    let (tx, rx) = oneshot::channel();
    {
        let mut rooms = app.rooms.lock();
        let p = rooms
            .get_mut(room)
            .and_then(|r| r.peers.get_mut(peer))
            .ok_or("participant left")?;
        p.next_request += 1;
        let id = p.next_request;
        p.requests.insert(id, tx);
        let msg = json!({"request": true, "id": id, "method": method, "data": data}).to_string();
        p.out.send(msg).map_err(|_| "participant left")?;
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err("participant left".into()),
        Err(_) => Err(format!("no response to {method} within {ANSWER_TIMEOUT:?}")),
    }
}
