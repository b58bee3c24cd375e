//! Conference rooms (docs/rooms.md): the tables of rooms, participants, their producers
//! and consumers, the admin summary and the active speaker; state only, no handler.

// Each participant has a send transport (a publisher session of its own stream) and a
// receive transport (a session whose sending mids are bound, one by one, to other
// participants' tracks). Sessions live on shards like WHIP/WHEP ones; rooms only steer
// them. `socket` (the WebSocket), `peer` (requests) and `sync` (consumers) act on these
// tables through `App`.

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod peer;
pub mod protocol;
pub mod socket;
mod sync;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_dataplane::str0m::media::{MediaKind, Mid};
use sluice_dataplane::{SessionId, ShardId, StreamShared};
use tokio::sync::{mpsc, oneshot, Notify};

use protocol::notification;

const SPEAKER_HOLD: Duration = Duration::from_millis(1500);

/// Most bytes queued for one participant's socket.
const OUTBOX_BYTES: usize = 1024 * 1024;

/// Messages queued for one participant's socket, bounded in count (`ws_queue`)
/// and bytes ([`OUTBOX_BYTES`]). A participant that lets it fill is not read
/// for: its socket task hears `full` and disconnects it.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::Sender<String>,
    bytes: Arc<AtomicUsize>,
    full: Arc<Notify>,
}

/// The socket task's end of an [`Outbox`].
struct OutboxRx {
    rx: mpsc::Receiver<String>,
    bytes: Arc<AtomicUsize>,
}

/// The participant's queue is full or its socket is gone.
#[derive(Debug)]
struct NotQueued;

fn outbox(messages: usize) -> (Outbox, OutboxRx, Arc<Notify>) {
    let (tx, rx) = mpsc::channel(messages.max(1));
    let bytes = Arc::new(AtomicUsize::new(0));
    let full = Arc::new(Notify::new());
    (
        Outbox {
            tx,
            bytes: bytes.clone(),
            full: full.clone(),
        },
        OutboxRx { rx, bytes },
        full,
    )
}

impl Outbox {
    /// Queue `msg` without waiting; a full queue tells the socket task to disconnect.
    fn send(&self, msg: String) -> Result<(), NotQueued> {
        let n = msg.len();
        if self.bytes.fetch_add(n, Ordering::Relaxed) + n > OUTBOX_BYTES {
            self.bytes.fetch_sub(n, Ordering::Relaxed);
            self.full.notify_one();
            return Err(NotQueued);
        }
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.bytes.fetch_sub(n, Ordering::Relaxed);
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    self.full.notify_one();
                }
                Err(NotQueued)
            }
        }
    }
}

impl Outbox {
    /// Queue a response to the participant's own request, waiting while the queue
    /// is over half full: a participant that sends faster than it reads is simply
    /// read slower, and the other half stays free for what others send it.
    async fn send_own(&self, msg: String, within: Duration) -> Result<(), NotQueued> {
        let half = self.tx.max_capacity() / 2;
        let until = tokio::time::Instant::now() + within;
        while self.tx.capacity() <= half {
            if tokio::time::Instant::now() >= until || self.tx.is_closed() {
                self.full.notify_one();
                return Err(NotQueued);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.send(msg)
    }
}

impl OutboxRx {
    async fn recv(&mut self) -> Option<String> {
        let m = self.rx.recv().await?;
        self.bytes.fetch_sub(m.len(), Ordering::Relaxed);
        Some(m)
    }
}

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
    /// Highest simulcast and VP8 temporal layers asked for with
    /// setConsumerPreferredLayers.
    max_layer: Option<u8>,
    max_temporal: Option<u8>,
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
    /// The server's requests to this participant awaiting a response
    /// (the participant's reason when it refuses).
    requests: HashMap<u64, oneshot::Sender<Result<Value, String>>>,
    next_request: u64,
    level: Option<(u8, Instant)>,
}

impl Peer {
    fn new(display_name: String, out: Outbox, sync: Arc<Notify>) -> Peer {
        Peer {
            display_name,
            out,
            send: None,
            recv: None,
            producers: Vec::new(),
            consumers: Vec::new(),
            free_mids: Vec::new(),
            sync,
            requests: HashMap::new(),
            next_request: 1000,
            level: None,
        }
    }
}

#[derive(Default)]
struct Room {
    peers: HashMap<String, Peer>,
    speaker: Option<String>,
    speaker_since: Option<Instant>,
}

impl Room {
    /// Wake every participant's consumer sync but `except`'s.
    fn wake_others(&self, except: &str) {
        for (id, other) in &self.peers {
            if id != except {
                other.sync.notify_one();
            }
        }
    }
}

/// All rooms of the process.
#[derive(Default)]
pub struct Rooms {
    rooms: Mutex<HashMap<String, Room>>,
    /// Send-session id → (room, peer), for audio levels.
    senders: Mutex<HashMap<SessionId, (String, String)>>,
}

impl Rooms {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn senders(&self) -> MutexGuard<'_, HashMap<SessionId, (String, String)>> {
        self.senders.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Participants across rooms.
    pub fn peer_count(&self) -> usize {
        self.lock().values().map(|r| r.peers.len()).sum()
    }

    /// Rooms with at least one participant.
    pub fn room_count(&self) -> usize {
        self.lock().len()
    }

    /// Participants of `room` (0 when it does not exist).
    pub fn peers_in(&self, room: &str) -> usize {
        self.lock().get(room).map_or(0, |r| r.peers.len())
    }

    /// Is `peer` a participant of `room`?
    pub fn has_peer(&self, room: &str, peer: &str) -> bool {
        self.lock()
            .get(room)
            .is_some_and(|r| r.peers.contains_key(peer))
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
        let Some((room_name, peer_id)) = self.senders().get(&id).cloned() else {
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
