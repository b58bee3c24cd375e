//! The control plane's books: streams by name, sessions by id, and where each
//! session lives. Shards own the sessions themselves; this is the index.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use sluice_dataplane::{Role, SessionId, ShardId, StreamId, StreamShared};

use crate::icefrag::IceSession;

/// One session as the control plane knows it.
#[derive(Debug, Clone)]
pub struct SessionEntry {
    /// The session's id (its resource name).
    pub id: SessionId,
    /// Publisher or viewer.
    pub role: Role,
    /// The stream name it belongs to (`room:…` for room transports).
    pub stream: String,
    /// The shard it lives on.
    pub shard: ShardId,
    /// When it was placed.
    pub created: SystemTime,
    /// Whether DTLS has connected.
    pub connected: bool,
    /// What the session's resource URL must carry, and which token created it.
    pub capability: Capability,
    /// The address that asked for it (WHIP/WHEP), for `max_sessions_per_ip`.
    pub source: Option<IpAddr>,
    /// A WHIP/WHEP session's ICE credentials and candidates, for `PATCH`;
    /// the lock keeps one `PATCH` of a session at a time.
    pub ice: Option<Arc<tokio::sync::Mutex<IceSession>>>,
}

/// Session limits a registration is checked against; 0 = no limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Max {
    /// `max_sessions`.
    pub sessions: usize,
    /// `max_sessions_per_ip`.
    pub per_source: usize,
}

impl From<usize> for Max {
    fn from(sessions: usize) -> Max {
        Max {
            sessions,
            per_source: 0,
        }
    }
}

/// The secret half of a WHIP/WHEP resource URL and the credential that made it.
/// Never shown: `Debug` prints neither.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Capability {
    /// 64 bits from the OS RNG, appended to the session id in the resource URL.
    pub key: u64,
    /// SHA-256 of the bearer token that created the session (when a secret is set).
    pub owner: Option<[u8; 32]>,
}

impl std::fmt::Debug for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Capability(..)")
    }
}

/// One named stream.
#[derive(Debug)]
pub struct StreamEntry {
    /// State shared with the shards.
    pub shared: Arc<StreamShared>,
    /// The publishing session, if any.
    pub publisher: Option<SessionId>,
    /// The viewing sessions.
    pub viewers: HashSet<SessionId>,
    /// Relay links that feed or carry the stream: it stays while any does.
    pub holds: u32,
}

/// Why a session could not be registered.
#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// The stream already has a publisher.
    AlreadyPublished,
    /// `max_sessions` reached.
    AtCapacity,
    /// `max_sessions_per_ip` reached for the source address.
    SessionsPerIp,
}

/// Streams and sessions of the process, and the load of each shard.
#[derive(Debug, Default)]
pub struct Registry {
    streams: HashMap<String, StreamEntry>,
    sessions: HashMap<SessionId, SessionEntry>,
    next_stream: u32,
    /// Sessions per shard, for placement.
    load: HashMap<ShardId, usize>,
    /// Sessions per source address (only addresses with sessions: bounded by them).
    by_source: HashMap<IpAddr, usize>,
}

/// Summary for the admin API.
#[derive(Debug, Serialize)]
pub struct StreamInfo {
    /// Stream name.
    pub name: String,
    /// Numeric stream id.
    pub id: u32,
    /// The publisher's session id.
    pub publisher: Option<String>,
    /// The publisher's shard.
    pub publisher_shard: Option<u16>,
    /// Number of viewers.
    pub viewers: usize,
    /// Viewers on each shard.
    pub viewers_per_shard: BTreeMap<u16, u32>,
    /// The publisher's RTP payload rate, bits/s (about the last half second).
    pub bitrate_bps: u64,
    /// RTP payload bytes received from publishers of this stream.
    pub bytes_in: u64,
    /// Simulcast layers, lowest first, with their rates.
    pub layers: Vec<LayerInfo>,
}

/// One simulcast layer of a stream.
#[derive(Debug, Serialize)]
pub struct LayerInfo {
    /// The layer's rid.
    pub rid: String,
    /// Its rate, bits/s.
    pub bitrate_bps: u64,
}

/// Summary of one session for the admin API and metrics.
#[derive(Debug, Serialize)]
pub struct SessionInfo {
    /// Session id, 16 hex digits.
    pub id: String,
    /// `publisher` or `viewer`.
    pub role: &'static str,
    /// Stream name.
    pub stream: String,
    /// Shard number.
    pub shard: u16,
    /// Whether DTLS has connected.
    pub connected: bool,
    /// Seconds since it was placed.
    pub age_secs: f64,
    /// Filled from the shard's table by the caller; absent until first measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<sluice_dataplane::SessionStats>,
    /// The id, typed.
    #[serde(skip)]
    pub sid: SessionId,
    /// The shard, typed.
    #[serde(skip)]
    pub shard_id: ShardId,
}

impl Registry {
    /// Sessions registered.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions registered in `role`.
    pub fn count_by_role(&self, role: Role) -> usize {
        self.sessions.values().filter(|s| s.role == role).count()
    }

    /// Streams with a publisher or viewers.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// The session with `id`.
    pub fn session(&self, id: SessionId) -> Option<&SessionEntry> {
        self.sessions.get(&id)
    }

    /// Is `name` live with a simulcast publisher (layers measured)?
    pub fn stream_has_layers(&self, name: &str) -> bool {
        self.streams
            .get(name)
            .is_some_and(|s| !s.shared.layers().is_empty())
    }

    /// The publisher and viewers of `name`; `None` when no such stream exists.
    pub fn stream_sessions(&self, name: &str) -> Option<Vec<SessionEntry>> {
        let s = self.streams.get(name)?;
        Some(
            s.publisher
                .iter()
                .chain(s.viewers.iter())
                .filter_map(|id| self.sessions.get(id).cloned())
                .collect(),
        )
    }

    /// Keep `name` (created if new) while a relay link feeds or carries it;
    /// returns its shared state. Undone by [`Registry::unhold`].
    pub fn hold(&mut self, name: &str) -> Arc<StreamShared> {
        let shared = self.stream_shared(name);
        if let Some(s) = self.streams.get_mut(name) {
            s.holds += 1;
        }
        shared
    }

    /// Drop one hold of `name` taken on `shared` (a stream since replaced is
    /// left alone); the stream goes when nothing else keeps it.
    pub fn unhold(&mut self, name: &str, shared: &Arc<StreamShared>) {
        let Some(s) = self.streams.get_mut(name) else {
            return;
        };
        if !Arc::ptr_eq(&s.shared, shared) {
            return;
        }
        s.holds = s.holds.saturating_sub(1);
        if s.holds == 0 && s.publisher.is_none() && s.viewers.is_empty() {
            self.streams.remove(name);
        }
    }

    /// Streams with viewers here and no publisher here: a cluster node pulls them.
    pub fn streams_waiting(&self) -> Vec<String> {
        self.streams
            .iter()
            .filter(|(_, s)| s.publisher.is_none() && !s.viewers.is_empty())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Viewers of `name` on this node.
    pub fn viewer_count(&self, name: &str) -> usize {
        self.streams.get(name).map_or(0, |s| s.viewers.len())
    }

    /// Whether `name` has a publisher on this node.
    pub fn has_publisher(&self, name: &str) -> bool {
        self.streams
            .get(name)
            .is_some_and(|s| s.publisher.is_some())
    }

    /// The shared state of `name`, created if new.
    pub fn stream_shared(&mut self, name: &str) -> Arc<StreamShared> {
        if let Some(s) = self.streams.get(name) {
            return s.shared.clone();
        }
        self.next_stream = self.next_stream.wrapping_add(1);
        let shared = Arc::new(StreamShared::new(StreamId(self.next_stream), name));
        self.streams.insert(
            name.to_string(),
            StreamEntry {
                shared: shared.clone(),
                publisher: None,
                viewers: HashSet::new(),
                holds: 0,
            },
        );
        shared
    }

    /// Check a session may be added before negotiating it.
    pub fn check(
        &self,
        stream: &str,
        role: Role,
        source: Option<IpAddr>,
        max: impl Into<Max>,
    ) -> Result<(), RegisterError> {
        let max = max.into();
        if max.sessions > 0 && self.sessions.len() >= max.sessions {
            return Err(RegisterError::AtCapacity);
        }
        if let Some(ip) = source {
            if max.per_source > 0 && self.by_source.get(&ip).copied().unwrap_or(0) >= max.per_source
            {
                return Err(RegisterError::SessionsPerIp);
            }
        }
        if role == Role::Publisher
            && self
                .streams
                .get(stream)
                .is_some_and(|s| s.publisher.is_some())
        {
            return Err(RegisterError::AlreadyPublished);
        }
        Ok(())
    }

    /// Record a session; returns the stream's shared state.
    pub fn register(
        &mut self,
        entry: SessionEntry,
        max: impl Into<Max>,
    ) -> Result<Arc<StreamShared>, RegisterError> {
        self.check(&entry.stream, entry.role, entry.source, max)?;
        let shared = self.stream_shared(&entry.stream);
        let s = self.streams.get_mut(&entry.stream).expect("just made");
        match entry.role {
            Role::Publisher => s.publisher = Some(entry.id),
            Role::Viewer => {
                s.viewers.insert(entry.id);
            }
        }
        *self.load.entry(entry.shard).or_insert(0) += 1;
        if let Some(ip) = entry.source {
            *self.by_source.entry(ip).or_insert(0) += 1;
        }
        self.sessions.insert(entry.id, entry);
        Ok(shared)
    }

    /// The shard among `0..shards` with the fewest sessions (ties: lowest id).
    pub fn least_loaded(&self, shards: usize) -> ShardId {
        (0..shards.max(1))
            .map(|i| ShardId(i as u16))
            .min_by_key(|s| (self.load.get(s).copied().unwrap_or(0), *s))
            .unwrap_or(ShardId(0))
    }

    /// Record a session that belongs to no single stream (a room's receive transport).
    pub fn register_unindexed(
        &mut self,
        entry: SessionEntry,
        max: impl Into<Max>,
    ) -> Result<(), RegisterError> {
        let max = max.into();
        if max.sessions > 0 && self.sessions.len() >= max.sessions {
            return Err(RegisterError::AtCapacity);
        }
        *self.load.entry(entry.shard).or_insert(0) += 1;
        self.sessions.insert(entry.id, entry);
        Ok(())
    }

    /// Note that DTLS has connected.
    pub fn mark_connected(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.connected = true;
        }
    }

    /// Forget a session; a stream with no one left is dropped.
    pub fn remove(&mut self, id: SessionId) -> Option<SessionEntry> {
        let entry = self.sessions.remove(&id)?;
        if let Some(l) = self.load.get_mut(&entry.shard) {
            *l = l.saturating_sub(1);
        }
        if let Some(ip) = entry.source {
            if let Some(n) = self.by_source.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.by_source.remove(&ip);
                }
            }
        }
        if let Some(s) = self.streams.get_mut(&entry.stream) {
            if s.publisher == Some(id) {
                s.publisher = None;
            }
            s.viewers.remove(&id);
            if s.publisher.is_none() && s.viewers.is_empty() && s.holds == 0 {
                self.streams.remove(&entry.stream);
            }
        }
        Some(entry)
    }

    /// Every stream, by name.
    pub fn streams(&self) -> Vec<StreamInfo> {
        let mut v: Vec<StreamInfo> = self
            .streams
            .iter()
            .map(|(name, s)| StreamInfo {
                name: name.clone(),
                id: s.shared.id.0,
                publisher: s.publisher.map(|p| p.to_string()),
                publisher_shard: s
                    .publisher
                    .and_then(|p| self.sessions.get(&p))
                    .map(|e| e.shard.0),
                viewers: s.viewers.len(),
                viewers_per_shard: s.viewers.iter().filter_map(|v| self.sessions.get(v)).fold(
                    BTreeMap::new(),
                    |mut m, e| {
                        *m.entry(e.shard.0).or_insert(0) += 1;
                        m
                    },
                ),
                bitrate_bps: s.shared.bitrate(),
                bytes_in: s.shared.bytes_in(),
                layers: s
                    .shared
                    .layers()
                    .into_iter()
                    .map(|(rid, bps)| LayerInfo {
                        rid: rid.to_string(),
                        bitrate_bps: bps,
                    })
                    .collect(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Every session, by id.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let now = SystemTime::now();
        let mut v: Vec<SessionInfo> = self
            .sessions
            .values()
            .map(|s| SessionInfo {
                id: s.id.to_string(),
                role: s.role.as_str(),
                stream: s.stream.clone(),
                shard: s.shard.0,
                connected: s.connected,
                age_secs: now
                    .duration_since(s.created)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
                stats: None,
                sid: s.id,
                shard_id: s.shard,
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, role: Role, stream: &str) -> SessionEntry {
        SessionEntry {
            id: SessionId(id),
            role,
            stream: stream.into(),
            shard: ShardId(0),
            created: SystemTime::now(),
            connected: false,
            capability: Capability::default(),
            source: None,
            ice: None,
        }
    }

    #[test]
    fn sessions_per_source_address_are_capped_and_freed() {
        let mut r = Registry::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let max = Max {
            sessions: 0,
            per_source: 2,
        };
        let from = |id, ip| SessionEntry {
            source: Some(ip),
            ..entry(id, Role::Viewer, "s")
        };
        r.register(from(1, ip), max).unwrap();
        r.register(from(2, ip), max).unwrap();
        assert_eq!(
            r.register(from(3, ip), max).unwrap_err(),
            RegisterError::SessionsPerIp
        );
        r.register(from(4, [10, 0, 0, 2].into()), max).unwrap();
        r.remove(SessionId(1));
        r.register(from(5, ip), max).unwrap();
        for id in [2, 4, 5] {
            r.remove(SessionId(id));
        }
        assert!(r.by_source.is_empty(), "no entry outlives its sessions");
    }

    #[test]
    fn second_publisher_of_a_stream_is_refused() {
        let mut r = Registry::default();
        r.register(entry(1, Role::Publisher, "s"), 0).unwrap();
        assert_eq!(
            r.register(entry(2, Role::Publisher, "s"), 0).unwrap_err(),
            RegisterError::AlreadyPublished
        );
        r.register(entry(3, Role::Publisher, "t"), 0).unwrap();
    }

    #[test]
    fn stream_is_dropped_when_its_last_session_leaves() {
        let mut r = Registry::default();
        r.register(entry(1, Role::Publisher, "s"), 0).unwrap();
        r.register(entry(2, Role::Viewer, "s"), 0).unwrap();
        r.remove(SessionId(1));
        assert_eq!(r.stream_count(), 1);
        // A new publisher may take over while the viewer waits.
        r.register(entry(3, Role::Publisher, "s"), 0).unwrap();
        r.remove(SessionId(3));
        r.remove(SessionId(2));
        assert_eq!(r.stream_count(), 0);
        assert_eq!(r.session_count(), 0);
    }

    #[test]
    fn capacity_counts_every_session() {
        let mut r = Registry::default();
        r.register(entry(1, Role::Viewer, "s"), 2).unwrap();
        r.register(entry(2, Role::Viewer, "s"), 2).unwrap();
        assert_eq!(
            r.register(entry(3, Role::Viewer, "s"), 2).unwrap_err(),
            RegisterError::AtCapacity
        );
    }
}
