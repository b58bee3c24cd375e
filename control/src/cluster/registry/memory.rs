//! The in-process registry: the semantics of the Redis one (leases, fencing
//! epochs, claims) kept in a map, for tests and single-process clusters, with
//! a switch that plays "Redis is down".

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{unix_ms, ClaimOutcome, Kind, NodeRecord, RegistryError, RegistryStats, StreamClaim};

/// The in-process registry: the same semantics with expiry by [`Instant`].
#[derive(Default)]
pub struct MemoryRegistry {
    state: Mutex<MemState>,
    down: AtomicBool,
    pub(super) stats: RegistryStats,
}

#[derive(Default)]
pub(super) struct MemState {
    pub(super) nodes: HashMap<String, (NodeRecord, Instant)>,
    pub(super) node_ids: HashSet<String>,
    pub(super) claims: HashMap<(Kind, String), (StreamClaim, Instant)>,
    pub(super) epochs: HashMap<(Kind, String), u64>,
}

impl MemState {
    pub(super) fn live_claim(
        &mut self,
        kind: Kind,
        name: &str,
        now: Instant,
    ) -> Option<&mut StreamClaim> {
        let key = (kind, name.to_string());
        if self
            .claims
            .get(&key)
            .is_some_and(|(_, until)| *until <= now)
        {
            self.claims.remove(&key);
        }
        self.claims.get_mut(&key).map(|(c, _)| c)
    }
}

impl MemoryRegistry {
    /// Play "the registry is unreachable" (`true`) or back (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub(super) fn op<T>(
        &self,
        f: impl FnOnce(&mut MemState) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let t0 = Instant::now();
        let r = if self.down.load(Ordering::SeqCst) {
            Err(RegistryError::Unavailable(
                "registry is down (simulated)".into(),
            ))
        } else {
            f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
        };
        self.stats.record(t0.elapsed(), r.is_ok());
        r
    }

    pub(super) fn register_node(
        &self,
        rec: &NodeRecord,
        lease: Duration,
    ) -> Result<(), RegistryError> {
        self.op(|s| {
            s.nodes
                .insert(rec.id.clone(), (rec.clone(), Instant::now() + lease));
            s.node_ids.insert(rec.id.clone());
            Ok(())
        })
    }

    pub(super) fn nodes(&self) -> Result<Vec<(NodeRecord, Duration)>, RegistryError> {
        self.op(|s| {
            let now = Instant::now();
            s.nodes.retain(|_, (_, until)| *until > now);
            let MemState {
                nodes, node_ids, ..
            } = s;
            node_ids.retain(|id| nodes.contains_key(id));
            let mut out: Vec<_> = nodes
                .values()
                .map(|(rec, until)| {
                    let left = until.saturating_duration_since(now);
                    let lease = Duration::from_millis(rec.lease_ms);
                    (rec.clone(), lease.saturating_sub(left))
                })
                .collect();
            out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
            Ok(out)
        })
    }

    pub(super) fn node(&self, id: &str) -> Result<Option<NodeRecord>, RegistryError> {
        self.op(|s| {
            Ok(s.nodes
                .get(id)
                .filter(|(_, until)| *until > Instant::now())
                .map(|(r, _)| r.clone()))
        })
    }

    pub(super) fn claim(
        &self,
        kind: Kind,
        name: &str,
        node_id: &str,
        lease: Duration,
    ) -> Result<ClaimOutcome, RegistryError> {
        self.op(|s| {
            let now = Instant::now();
            if let Some(c) = s.live_claim(kind, name, now) {
                if c.node_id == node_id {
                    let epoch = c.epoch;
                    s.claims.get_mut(&(kind, name.to_string())).unwrap().1 = now + lease;
                    return Ok(ClaimOutcome::Claimed { epoch });
                }
                return Ok(ClaimOutcome::Held {
                    owner: c.node_id.clone(),
                });
            }
            let counter = s.epochs.entry((kind, name.to_string())).or_default();
            *counter = (*counter + 1).max(unix_ms());
            let epoch = *counter;
            let claim = StreamClaim {
                node_id: node_id.to_string(),
                epoch,
            };
            s.claims
                .insert((kind, name.to_string()), (claim, now + lease));
            Ok(ClaimOutcome::Claimed { epoch })
        })
    }

    pub(super) fn renew(
        &self,
        kind: Kind,
        name: &str,
        node_id: &str,
        epoch: u64,
        lease: Duration,
    ) -> Result<bool, RegistryError> {
        self.op(|s| {
            let now = Instant::now();
            let ours = s
                .live_claim(kind, name, now)
                .is_some_and(|c| c.node_id == node_id && c.epoch == epoch);
            if ours {
                s.claims.get_mut(&(kind, name.to_string())).unwrap().1 = now + lease;
            }
            Ok(ours)
        })
    }

    pub(super) fn release(
        &self,
        kind: Kind,
        name: &str,
        node_id: &str,
        epoch: u64,
    ) -> Result<bool, RegistryError> {
        self.op(|s| {
            let ours = s
                .live_claim(kind, name, Instant::now())
                .is_some_and(|c| c.node_id == node_id && c.epoch == epoch);
            if ours {
                s.claims.remove(&(kind, name.to_string()));
            }
            Ok(ours)
        })
    }

    pub(super) fn holder(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<StreamClaim>, RegistryError> {
        self.op(|s| Ok(s.live_claim(kind, name, Instant::now()).cloned()))
    }

    pub(super) fn list(&self, kind: Kind) -> Result<Vec<(String, StreamClaim)>, RegistryError> {
        self.op(|s| {
            let now = Instant::now();
            s.claims.retain(|_, (_, until)| *until > now);
            let mut v: Vec<_> = s
                .claims
                .iter()
                .filter(|((k, _), _)| *k == kind)
                .map(|((_, name), (c, _))| (name.clone(), c.clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(v)
        })
    }
}
