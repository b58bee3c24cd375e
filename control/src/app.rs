//! The control plane's shared state ([`App`]: config, shards, registry, rooms' tables,
//! negotiator, tokens), how shard events update it, and the shard/core plan.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use sluice_dataplane::allowed_cpus;
use sluice_dataplane::{Dataplane, ShardEvent};

use crate::auth::TokenKey;
use crate::cluster::{Cluster, Local};
use crate::config::Config;
use crate::limits::Limits;
use crate::negotiate::Negotiator;
use crate::registry::{Registry, SessionInfo};
use crate::relay::book::RelayBook;
use crate::rooms::Rooms;

/// Shared state of the control plane.
pub struct App {
    /// The configuration the server started with.
    pub config: Config,
    /// The running shards.
    pub dataplane: Dataplane,
    /// Streams and sessions by name and id; see [`App::registry`].
    pub registry: Mutex<Registry>,
    /// Conference rooms and their participants.
    pub rooms: Rooms,
    /// Builds and answers SDP with the process's DTLS certificate.
    pub negotiator: Negotiator,
    /// The key tokens are verified with; `None` in open dev mode.
    pub tokens: Option<TokenKey>,
    /// Set while the server drains: no new sessions are placed.
    pub draining: AtomicBool,
    /// Signalled by `POST /admin/drain`: the process drains and exits as on SIGTERM.
    pub drain_requested: tokio::sync::Notify,
    /// When the server started, for uptime.
    pub started: Instant,
    /// SHA-256 fingerprint of the HTTPS certificate, for logs.
    pub tls_fingerprint: String,
    /// Per-address limits and refusal counters.
    pub limits: Arc<Limits>,
    /// This node's part in a cluster; `None` for a single node.
    pub cluster: Option<Arc<Cluster>>,
    /// Relay links to other nodes, pulls and served streams (cluster only).
    pub relays: RelayBook,
}

impl App {
    /// State for a server over `dataplane`, with no sessions or rooms yet.
    pub fn new(
        config: Config,
        dataplane: Dataplane,
        negotiator: Negotiator,
        tls_fingerprint: String,
    ) -> App {
        let tokens = config.secret.as_ref().map(|s| TokenKey::new(s.as_bytes()));
        let limits = Arc::new(Limits::new(&config));
        let negotiator_instance = negotiator.random_u64();
        App {
            limits,
            config,
            dataplane,
            registry: Mutex::new(Registry::default()),
            rooms: Rooms::default(),
            negotiator,
            tokens,
            draining: AtomicBool::new(false),
            drain_requested: tokio::sync::Notify::new(),
            started: Instant::now(),
            tls_fingerprint,
            cluster: None,
            relays: RelayBook::new(negotiator_instance),
        }
    }

    /// The same state as a node of `cluster`.
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> App {
        self.cluster = cluster;
        self
    }

    /// What the cluster agent reports and keeps claimed: sessions, viewers, load
    /// (see [`crate::cluster::NodeRecord::load`]) and the streams published here.
    pub fn cluster_local(&self) -> Local {
        let reg = self.registry();
        let sessions = reg.session_count() as u64;
        let viewers = reg.count_by_role(sluice_dataplane::Role::Viewer) as u64;
        let published = reg
            .streams()
            .into_iter()
            .filter(|s| s.publisher.is_some())
            .map(|s| s.name)
            .collect();
        drop(reg);
        let capacity = match self.config.max_sessions {
            0 => 1000 * self.dataplane.shards.len().max(1),
            n => n,
        };
        Local {
            sessions,
            viewers,
            load: sessions as f64 / capacity as f64,
            published,
            pulls: {
                let b = self.relays.lock();
                let mut v: Vec<(String, String)> = b
                    .pulls
                    .iter()
                    .map(|(n, p)| (n.clone(), p.upstream.clone()))
                    .collect();
                v.sort();
                v
            },
        }
    }

    /// A session has ended: a publisher's end may free its stream's cluster claim.
    pub fn session_ended(&self, role: sluice_dataplane::Role) {
        if let (Some(c), sluice_dataplane::Role::Publisher) = (&self.cluster, role) {
            c.wake();
        }
    }

    /// The registry, locked (a poisoned lock is taken over: the books stay usable).
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Is the server draining?
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Every session with its shard's latest stats.
    pub fn sessions_with_stats(&self) -> Vec<SessionInfo> {
        let mut v = self.registry().sessions();
        for s in &mut v {
            if let Some(shard) = self.dataplane.shard(s.shard_id) {
                s.stats = shard
                    .session_stats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&s.sid)
                    .cloned();
            }
        }
        v
    }

    /// An event from a shard: audio levels go to the rooms, the rest to the registry.
    pub fn handle_shard_event(&self, ev: ShardEvent) {
        if let ShardEvent::AudioLevel { id, level, .. } = ev {
            self.rooms.handle_level(id, level);
            return;
        }
        let mut reg = self.registry();
        match ev {
            ShardEvent::Connected { id } => reg.mark_connected(id),
            ShardEvent::Closed { id, reason } => {
                if let Some(e) = reg.remove(id) {
                    tracing::info!(session = %id, role = e.role.as_str(), stream = %e.stream, ?reason, "session ended");
                    self.session_ended(e.role);
                }
            }
            ShardEvent::AudioLevel { .. } | ShardEvent::RelayClosed { .. } => {}
        }
    }
}

/// Shard count and cores from the config and the process's CPU mask.
pub fn plan_cores(config: &Config) -> (usize, Vec<usize>) {
    let allowed = allowed_cpus();
    let cores = if config.cores.is_empty() {
        allowed.clone()
    } else {
        config.cores.clone()
    };
    let shards = if config.shards == 0 {
        cores.len().max(1)
    } else {
        config.shards
    };
    let pinned = (0..shards).map(|i| cores[i % cores.len().max(1)]).collect();
    (shards, pinned)
}

/// CPUs left for the control plane: allowed CPUs that host no shard, if any.
pub fn control_cpus(shard_cores: &[usize]) -> Vec<usize> {
    allowed_cpus()
        .into_iter()
        .filter(|c| !shard_cores.contains(c))
        .collect()
}
