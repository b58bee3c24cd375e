//! This node's part in a cluster: its identity and secret, the claims it holds (streams it
//! originates, rooms it hosts) and the agent task that heartbeats, renews and releases
//! them in the [`Registry`]. Absent (`App::cluster` is `None`) in single-node mode.
//!
//! While the registry is unreachable the node keeps serving what it has; claims it
//! holds stay in its books and are renewed, or taken again, when the registry returns.

pub mod registry;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use registry::{ClaimOutcome, NodeRecord, Registry, RegistryError, RegistryStats, StreamClaim};

use crate::config::Config;

/// What the node serves now, as the agent needs it each turn.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// Sessions held.
    pub sessions: u64,
    /// Viewers among them.
    pub viewers: u64,
    /// See [`NodeRecord::load`].
    pub load: f64,
    /// Streams with a local publisher.
    pub published: HashSet<String>,
    /// Streams pulled over a relay: (stream, upstream node id).
    pub pulls: Vec<(String, String)>,
}

/// Why a claim was not granted.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another node holds the name.
    #[error("held by node {owner}")]
    Held {
        /// That node's id.
        owner: String,
        /// Its record, when it is alive (for a room: where to send the client).
        node: Option<NodeRecord>,
    },
    /// The registry could not be asked: no claim can be guaranteed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// A claim held in this node's books, and how many local users keep it.
#[derive(Debug, Clone, Copy)]
struct Hold {
    epoch: u64,
    users: usize,
}

#[derive(Debug, Default)]
struct Holds {
    streams: HashMap<String, Hold>,
    rooms: HashMap<String, Hold>,
}

/// Which table a guard counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Streams,
    Rooms,
}

/// This node in the cluster.
pub struct Cluster {
    registry: Registry,
    node_id: String,
    secret: Vec<u8>,
    advertise: Mutex<String>,
    media_ip: IpAddr,
    lease: Duration,
    redirect: bool,
    healthy: AtomicBool,
    holds: Mutex<Holds>,
    wake: tokio::sync::Notify,
    claims_lost: AtomicU64,
    nodes_seen: AtomicUsize,
}

impl Cluster {
    /// The cluster part of `config`; `None` without `cluster.redis_url`.
    pub fn from_config(config: &Config) -> Result<Option<Arc<Cluster>>, RegistryError> {
        let Some(url) = &config.cluster.redis_url else {
            return Ok(None);
        };
        let registry = Registry::redis(url)?;
        Ok(Some(Arc::new(Cluster::new(registry, config))))
    }

    /// A node over `registry` with `config`'s identity (node id, advertise URL,
    /// secret, lease).
    pub fn new(registry: Registry, config: &Config) -> Cluster {
        let c = &config.cluster;
        Cluster {
            registry,
            node_id: c.node_id.clone(),
            secret: c.secret.clone().unwrap_or_default().into_bytes(),
            advertise: Mutex::new(config.cluster_advertise()),
            media_ip: config.primary_announce_ip(),
            lease: Duration::from_millis(c.lease_ms),
            redirect: c.redirect,
            healthy: AtomicBool::new(false),
            holds: Mutex::new(Holds::default()),
            wake: tokio::sync::Notify::new(),
            claims_lost: AtomicU64::new(0),
            nodes_seen: AtomicUsize::new(0),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The cluster secret node-to-node calls are authenticated with.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// This node's HTTPS base URL as other nodes reach it.
    pub fn advertise(&self) -> String {
        self.advertise
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Set the advertised URL once the listener's port is known (listen port 0).
    pub fn set_advertise(&self, url: String) {
        *self.advertise.lock().unwrap_or_else(|e| e.into_inner()) = url;
    }

    /// Whether WHEP may be redirected to a less loaded node (`cluster.redirect`).
    pub fn redirect(&self) -> bool {
        self.redirect
    }

    /// The claim and heartbeat lease.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// False while the registry is unreachable (set by the agent's last turn).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The registry, for listings and its counters.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Claims found taken by another node when this one went to renew them.
    pub fn claims_lost(&self) -> u64 {
        self.claims_lost.load(Ordering::Relaxed)
    }

    /// Live nodes at the last heartbeat.
    pub fn nodes_seen(&self) -> usize {
        self.nodes_seen.load(Ordering::Relaxed)
    }

    /// The record of the node that originates `stream`; `None` when no node claims it
    /// or the claiming node's record has expired.
    pub async fn stream_origin(&self, stream: &str) -> Result<Option<NodeRecord>, RegistryError> {
        match self.registry.stream_origin(stream).await? {
            Some(c) => self.registry.node(&c.node_id).await,
            None => Ok(None),
        }
    }

    /// The live record of node `id`.
    pub async fn node(&self, id: &str) -> Result<Option<NodeRecord>, RegistryError> {
        self.registry.node(id).await
    }

    /// Every live node with its heartbeat's age.
    pub async fn nodes(&self) -> Result<Vec<(NodeRecord, Duration)>, RegistryError> {
        self.registry.nodes().await
    }

    /// The epoch of our claim of `stream`, if we hold one.
    pub fn stream_epoch(&self, stream: &str) -> Option<u64> {
        self.holds().streams.get(stream).map(|h| h.epoch)
    }

    fn holds(&self) -> MutexGuard<'_, Holds> {
        self.holds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claim `stream` for a publisher about to be placed here. The guard keeps the claim
    /// while the placement runs; after it, the agent keeps it while a local publisher lives.
    pub async fn claim_stream(self: &Arc<Self>, stream: &str) -> Result<ClaimGuard, ClaimError> {
        let out = self
            .registry
            .claim_stream(stream, &self.node_id, self.lease)
            .await;
        self.claimed(Table::Streams, stream, out).await
    }

    /// Make this node the home of `room` for one participant's connection, unless it is
    /// already: the guard keeps the claim for as long as the connection lives.
    pub async fn claim_room(self: &Arc<Self>, room: &str) -> Result<ClaimGuard, ClaimError> {
        {
            // Already home: keep serving it even while the registry is away.
            let mut h = self.holds();
            if let Some(hold) = h.rooms.get_mut(room) {
                hold.users += 1;
                // The guard is made from the epoch read here: the lock is not
                // re-entrant, and a second lock in this thread would hang it.
                return Ok(ClaimGuard::new(self, Table::Rooms, room, hold.epoch));
            }
        }
        let out = self
            .registry
            .claim_room(room, &self.node_id, self.lease)
            .await;
        self.claimed(Table::Rooms, room, out).await
    }

    async fn claimed(
        self: &Arc<Self>,
        table: Table,
        name: &str,
        out: Result<ClaimOutcome, RegistryError>,
    ) -> Result<ClaimGuard, ClaimError> {
        match out? {
            ClaimOutcome::Claimed { epoch } => {
                let mut h = self.holds();
                let map = match table {
                    Table::Streams => &mut h.streams,
                    Table::Rooms => &mut h.rooms,
                };
                let hold = map
                    .entry(name.to_string())
                    .or_insert(Hold { epoch, users: 0 });
                hold.epoch = epoch;
                hold.users += 1;
                drop(h);
                Ok(ClaimGuard::new(self, table, name, epoch))
            }
            ClaimOutcome::Held { owner } => {
                let node = self.registry.node(&owner).await.ok().flatten();
                Err(ClaimError::Held { owner, node })
            }
        }
    }

    /// Something this node serves has ended: let the agent settle its claims now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Start the agent: heartbeat every lease/4 with `local()`'s figures, renew what is
    /// held, release what is no longer served. Ends when `local()` returns `None`.
    pub fn spawn_agent(
        self: &Arc<Self>,
        local: impl Fn() -> Option<Local> + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let period = me.lease / 4;
            let mut backoff = Duration::from_millis(100);
            while let Some(now) = local() {
                let wait = if me.turn(&now).await {
                    backoff = Duration::from_millis(100);
                    period
                } else {
                    let w = backoff.min(period);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    w
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = me.wake.notified() => {}
                }
            }
        })
    }

    /// One agent turn; true when every registry call succeeded.
    async fn turn(&self, local: &Local) -> bool {
        let rec = NodeRecord {
            id: self.node_id.clone(),
            advertise: self.advertise(),
            media_ip: self.media_ip,
            sessions: local.sessions,
            viewers: local.viewers,
            load: local.load,
            version: env!("CARGO_PKG_VERSION").to_string(),
            lease_ms: self.lease.as_millis() as u64,
            pulls: local.pulls.clone(),
        };
        let mut ok = match self.registry.register_node(&rec, self.lease).await {
            Ok(()) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(node = %self.node_id, "registered in the cluster registry");
                }
                true
            }
            Err(e) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!("cluster registry: {e}; serving what this node has, retrying");
                }
                return false;
            }
        };
        // Streams: kept while a local publisher lives or a placement is under way;
        // a local publisher without a claim (lost while the registry was away) takes it again.
        let (streams, rooms) = {
            let h = self.holds();
            (snapshot(&h.streams), snapshot(&h.rooms))
        };
        for (name, hold) in &streams {
            let serve = hold.users > 0 || local.published.contains(name);
            ok &= self.settle(Table::Streams, name, *hold, serve).await;
        }
        for name in &local.published {
            if !streams.iter().any(|(n, _)| n == name) {
                if let Ok(ClaimOutcome::Claimed { epoch }) = self
                    .registry
                    .claim_stream(name, &self.node_id, self.lease)
                    .await
                {
                    tracing::info!(stream = %name, epoch, "stream claimed again");
                    self.holds()
                        .streams
                        .entry(name.clone())
                        .or_insert(Hold { epoch, users: 0 });
                }
            }
        }
        for (name, hold) in &rooms {
            ok &= self.settle(Table::Rooms, name, *hold, hold.users > 0).await;
        }
        if let Ok(nodes) = self.registry.nodes().await {
            self.nodes_seen.store(nodes.len(), Ordering::Relaxed);
        }
        if !ok {
            self.healthy.store(false, Ordering::Relaxed);
        }
        ok
    }

    /// Renew one held claim, take it again if it lapsed, or release it when unused.
    async fn settle(&self, table: Table, name: &str, hold: Hold, serve: bool) -> bool {
        let reg = &self.registry;
        let (id, lease, epoch) = (self.node_id.as_str(), self.lease, hold.epoch);
        if !serve {
            // Off the books first: a new user arriving now claims afresh.
            let gone = {
                let mut h = self.holds();
                let map = table.of(&mut h);
                match map.get(name) {
                    Some(cur) if cur.users == 0 && cur.epoch == epoch => {
                        map.remove(name);
                        true
                    }
                    _ => false,
                }
            };
            if gone {
                let r = match table {
                    Table::Streams => reg.release_stream(name, id, epoch).await,
                    Table::Rooms => reg.release_room(name, id, epoch).await,
                };
                // Unreleased, it expires within the lease.
                return r.is_ok();
            }
            return true;
        }
        let renewed = match table {
            Table::Streams => reg.renew_stream(name, id, epoch, lease).await,
            Table::Rooms => reg.renew_room(name, id, epoch, lease).await,
        };
        match renewed {
            Ok(true) => true,
            Ok(false) => {
                // Lapsed (the registry was away past the lease, or lost its data): take it
                // again if free; someone else holding it means the claim is lost.
                let again = match table {
                    Table::Streams => reg.claim_stream(name, id, lease).await,
                    Table::Rooms => reg.claim_room(name, id, lease).await,
                };
                match again {
                    Ok(ClaimOutcome::Claimed { epoch: new }) => {
                        if let Some(h) = table.of(&mut self.holds()).get_mut(name) {
                            h.epoch = new;
                        }
                        tracing::info!(name, epoch = new, "claim taken again after it lapsed");
                        true
                    }
                    Ok(ClaimOutcome::Held { owner }) => {
                        self.claims_lost.fetch_add(1, Ordering::Relaxed);
                        table.of(&mut self.holds()).remove(name);
                        tracing::warn!(name, owner, "claim lost to another node");
                        true
                    }
                    Err(_) => false,
                }
            }
            Err(_) => false,
        }
    }

    /// Release every claim and remove this node's record (a clean stop), within about
    /// one registry timeout per call.
    pub async fn leave(&self) {
        let (streams, rooms) = {
            let mut h = self.holds();
            (std::mem::take(&mut h.streams), std::mem::take(&mut h.rooms))
        };
        for (name, hold) in streams {
            let _ = self
                .registry
                .release_stream(&name, &self.node_id, hold.epoch)
                .await;
        }
        for (name, hold) in rooms {
            let _ = self
                .registry
                .release_room(&name, &self.node_id, hold.epoch)
                .await;
        }
        let _ = self.registry.deregister_node(&self.node_id).await;
    }
}

impl Table {
    fn of(self, h: &mut Holds) -> &mut HashMap<String, Hold> {
        match self {
            Table::Streams => &mut h.streams,
            Table::Rooms => &mut h.rooms,
        }
    }
}

fn snapshot(m: &HashMap<String, Hold>) -> Vec<(String, Hold)> {
    m.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

/// One local user of a claim (a placement under way, a room connection). Dropping it
/// lets the agent release the claim when no user and no publisher is left.
pub struct ClaimGuard {
    cluster: Arc<Cluster>,
    table: Table,
    name: String,
    epoch: u64,
}

impl ClaimGuard {
    /// A guard of a claim whose hold the caller has counted (`users`); it
    /// does not lock `holds`, so a caller may hold the lock.
    fn new(cluster: &Arc<Cluster>, table: Table, name: &str, epoch: u64) -> ClaimGuard {
        ClaimGuard {
            cluster: cluster.clone(),
            table,
            name: name.to_string(),
            epoch,
        }
    }

    /// The claim's fencing epoch when it was taken.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(h) = self.table.of(&mut self.cluster.holds()).get_mut(&self.name) {
            h.users = h.users.saturating_sub(1);
        }
        self.cluster.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A room already homed here is joined again: the second claim takes the
    /// fast path under the `holds` lock. It once locked it a second time and
    /// hung the control thread.
    #[test]
    fn a_second_join_of_a_room_homed_here_does_not_hang() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let c = Arc::new(Cluster::new(Registry::memory(), &Config::default()));
                let first = c.claim_room("lobby").await.expect("first join");
                let second = c.claim_room("lobby").await.expect("second join");
                let users = c.holds().rooms["lobby"].users;
                let _ = tx.send((first.epoch(), second.epoch(), users));
            });
        });
        let (first, second, users) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the second claim of a room held here hung");
        assert!(first > 0);
        assert_eq!(second, first);
        assert_eq!(users, 2);
    }
}
