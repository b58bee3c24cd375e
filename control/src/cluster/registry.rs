//! The cluster registry: node records with a heartbeat lease, stream → origin and
//! room → node claims with a lease and a fencing epoch. [`Registry::Redis`] is the
//! real one (every call bounded by [`CALL_TIMEOUT`] and counted); [`Registry::Memory`]
//! keeps the same semantics in-process for tests, with a switch that plays "Redis is down".
//!
//! Keys (prefix `sluice:`): `nodes` (set of ids), `node:{id}` (record JSON, PX lease),
//! `stream:{name}` / `room:{name}` (`"{node}|{epoch}"`, PX lease), `stream-epoch:{name}` /
//! `room-epoch:{name}` (the epoch counter).
//!
//! The in-memory twin is in `registry/memory.rs`; `impl Registry` below
//! dispatches each operation to one or the other.

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

mod memory;
pub use memory::MemoryRegistry;

/// Longest one registry call may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// Prefix of every key sluice writes.
pub const KEY_PREFIX: &str = "sluice:";
/// How long an epoch counter outlives its last claim. Epochs never go back even when
/// the counter is lost, since a claim's epoch is at least the registry's clock in ms.
const EPOCH_TTL_MS: u64 = 24 * 3600 * 1000;

/// One node as the others see it: written by its heartbeat with a lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's id (`cluster.node_id`).
    pub id: String,
    /// HTTPS base URL other nodes and redirected clients reach it on.
    pub advertise: String,
    /// Address of its media (and relay) sockets.
    pub media_ip: IpAddr,
    /// Sessions it holds (WHIP, WHEP, room transports).
    pub sessions: u64,
    /// WHEP viewers and room receive transports among them.
    pub viewers: u64,
    /// Sessions over capacity: `sessions / max_sessions`, or `sessions / (1000 × shards)`
    /// when `max_sessions` is 0 (about 1000 viewers of a 1 Mbit/s stream per core).
    /// 0 is idle, 1 is full; may exceed 1 when no limit is set.
    pub load: f64,
    /// The sluice version it runs.
    pub version: String,
    /// The lease its record was written with, ms (for the heartbeat's age).
    pub lease_ms: u64,
    /// Streams it pulls over relays, with the node each comes from.
    #[serde(default)]
    pub pulls: Vec<(String, String)>,
}

/// Who holds a stream (or a room) and with which fencing epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamClaim {
    /// The holding node's id.
    pub node_id: String,
    /// The claim's epoch: strictly greater than every earlier claim of the same name.
    pub epoch: u64,
}

/// What a claim attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The name is ours (new, or already ours and extended) with this epoch.
    Claimed {
        /// The fencing token to renew and release with.
        epoch: u64,
    },
    /// Another node holds it.
    Held {
        /// That node's id.
        owner: String,
    },
}

/// A registry call that did not give an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The registry cannot be reached (connection refused, reset, authentication).
    #[error("cluster registry unreachable: {0}")]
    Unavailable(String),
    /// The registry did not answer within [`CALL_TIMEOUT`].
    #[error("cluster registry did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The registry answered something sluice did not write (another program's keys?).
    #[error("cluster registry holds unexpected data: {0}")]
    Corrupt(String),
}

/// Requests, failures and time spent, for `/metrics`.
#[derive(Debug, Default)]
pub struct RegistryStats {
    requests: AtomicU64,
    errors: AtomicU64,
    latency_us: AtomicU64,
}

impl RegistryStats {
    fn record(&self, took: Duration, ok: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.latency_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Calls made.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Calls that failed or timed out.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Seconds spent in calls, summed.
    pub fn latency_sum_secs(&self) -> f64 {
        self.latency_us.load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// Which of the two claim tables a call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Stream,
    Room,
}

impl Kind {
    fn key(self, name: &str) -> String {
        match self {
            Kind::Stream => format!("{KEY_PREFIX}stream:{name}"),
            Kind::Room => format!("{KEY_PREFIX}room:{name}"),
        }
    }

    fn epoch_key(self, name: &str) -> String {
        match self {
            Kind::Stream => format!("{KEY_PREFIX}stream-epoch:{name}"),
            Kind::Room => format!("{KEY_PREFIX}room-epoch:{name}"),
        }
    }
}

fn node_key(id: &str) -> String {
    format!("{KEY_PREFIX}node:{id}")
}

fn nodes_key() -> String {
    format!("{KEY_PREFIX}nodes")
}

/// The registry: Redis, or an in-process stand-in with the same semantics.
pub enum Registry {
    /// A Redis server shared by the cluster.
    Redis(RedisRegistry),
    /// In-process, for tests.
    Memory(MemoryRegistry),
}

impl Registry {
    /// A Redis registry at `url` (`redis://` or `rediss://`, with password if any).
    /// Connects lazily: a node starts while Redis is away and connects when it returns.
    pub fn redis(url: &str) -> Result<Registry, RegistryError> {
        RedisRegistry::new(url).map(Registry::Redis)
    }

    /// An empty in-process registry.
    pub fn memory() -> Registry {
        Registry::Memory(MemoryRegistry::default())
    }

    /// Calls made and failed, and their time.
    pub fn stats(&self) -> &RegistryStats {
        match self {
            Registry::Redis(r) => &r.stats,
            Registry::Memory(m) => &m.stats,
        }
    }

    /// Does the registry answer (PING)?
    pub async fn ping(&self) -> Result<(), RegistryError> {
        match self {
            Registry::Redis(r) => r.ping().await,
            Registry::Memory(m) => m.op(|_| Ok(())),
        }
    }

    /// Write `rec` with a lease of `lease` and list its id among the nodes.
    pub async fn register_node(
        &self,
        rec: &NodeRecord,
        lease: Duration,
    ) -> Result<(), RegistryError> {
        match self {
            Registry::Redis(r) => r.register_node(rec, lease).await,
            Registry::Memory(m) => m.register_node(rec, lease),
        }
    }

    /// Remove this node's record now (a clean shutdown).
    pub async fn deregister_node(&self, id: &str) -> Result<(), RegistryError> {
        match self {
            Registry::Redis(r) => r.deregister_node(id).await,
            Registry::Memory(m) => m.op(|s| {
                s.nodes.remove(id);
                s.node_ids.remove(id);
                Ok(())
            }),
        }
    }

    /// Every live node with the age of its last heartbeat; ids whose record
    /// expired are dropped from the set.
    pub async fn nodes(&self) -> Result<Vec<(NodeRecord, Duration)>, RegistryError> {
        match self {
            Registry::Redis(r) => r.nodes().await,
            Registry::Memory(m) => m.nodes(),
        }
    }

    /// The live record of node `id`.
    pub async fn node(&self, id: &str) -> Result<Option<NodeRecord>, RegistryError> {
        match self {
            Registry::Redis(r) => r.node(id).await,
            Registry::Memory(m) => m.node(id),
        }
    }

    /// Claim stream `name` for `node_id` with a lease; see [`ClaimOutcome`].
    pub async fn claim_stream(
        &self,
        name: &str,
        node_id: &str,
        lease: Duration,
    ) -> Result<ClaimOutcome, RegistryError> {
        self.claim(Kind::Stream, name, node_id, lease).await
    }

    /// Extend our claim of stream `name`; false when it is not ours at `epoch` any more.
    pub async fn renew_stream(
        &self,
        name: &str,
        node_id: &str,
        epoch: u64,
        lease: Duration,
    ) -> Result<bool, RegistryError> {
        self.renew(Kind::Stream, name, node_id, epoch, lease).await
    }

    /// Drop our claim of stream `name` if it is still ours at `epoch`; true when dropped.
    pub async fn release_stream(
        &self,
        name: &str,
        node_id: &str,
        epoch: u64,
    ) -> Result<bool, RegistryError> {
        self.release(Kind::Stream, name, node_id, epoch).await
    }

    /// Who holds stream `name`.
    pub async fn stream_origin(&self, name: &str) -> Result<Option<StreamClaim>, RegistryError> {
        self.holder(Kind::Stream, name).await
    }

    /// Every claimed stream.
    pub async fn streams(&self) -> Result<Vec<(String, StreamClaim)>, RegistryError> {
        self.list(Kind::Stream).await
    }

    /// Claim room `name` for `node_id` with a lease.
    pub async fn claim_room(
        &self,
        name: &str,
        node_id: &str,
        lease: Duration,
    ) -> Result<ClaimOutcome, RegistryError> {
        self.claim(Kind::Room, name, node_id, lease).await
    }

    /// Extend our claim of room `name`; false when it is not ours at `epoch` any more.
    pub async fn renew_room(
        &self,
        name: &str,
        node_id: &str,
        epoch: u64,
        lease: Duration,
    ) -> Result<bool, RegistryError> {
        self.renew(Kind::Room, name, node_id, epoch, lease).await
    }

    /// Drop our claim of room `name` if it is still ours at `epoch`; true when dropped.
    pub async fn release_room(
        &self,
        name: &str,
        node_id: &str,
        epoch: u64,
    ) -> Result<bool, RegistryError> {
        self.release(Kind::Room, name, node_id, epoch).await
    }

    /// Which node room `name` lives on.
    pub async fn room_home(&self, name: &str) -> Result<Option<StreamClaim>, RegistryError> {
        self.holder(Kind::Room, name).await
    }

    /// Every claimed room.
    pub async fn rooms(&self) -> Result<Vec<(String, StreamClaim)>, RegistryError> {
        self.list(Kind::Room).await
    }

    async fn claim(
        &self,
        kind: Kind,
        name: &str,
        node_id: &str,
        lease: Duration,
    ) -> Result<ClaimOutcome, RegistryError> {
        match self {
            Registry::Redis(r) => r.claim(kind, name, node_id, lease).await,
            Registry::Memory(m) => m.claim(kind, name, node_id, lease),
        }
    }

    async fn renew(
        &self,
        kind: Kind,
        name: &str,
        node_id: &str,
        epoch: u64,
        lease: Duration,
    ) -> Result<bool, RegistryError> {
        match self {
            Registry::Redis(r) => r.renew(kind, name, node_id, epoch, lease).await,
            Registry::Memory(m) => m.renew(kind, name, node_id, epoch, lease),
        }
    }

    async fn release(
        &self,
        kind: Kind,
        name: &str,
        node_id: &str,
        epoch: u64,
    ) -> Result<bool, RegistryError> {
        match self {
            Registry::Redis(r) => r.release(kind, name, node_id, epoch).await,
            Registry::Memory(m) => m.release(kind, name, node_id, epoch),
        }
    }

    async fn holder(&self, kind: Kind, name: &str) -> Result<Option<StreamClaim>, RegistryError> {
        match self {
            Registry::Redis(r) => r.holder(kind, name).await,
            Registry::Memory(m) => m.holder(kind, name),
        }
    }

    async fn list(&self, kind: Kind) -> Result<Vec<(String, StreamClaim)>, RegistryError> {
        match self {
            Registry::Redis(r) => r.list(kind).await,
            Registry::Memory(m) => m.list(kind),
        }
    }
}

/// `"{node}|{epoch}"`, as claims are stored.
fn claim_value(node_id: &str, epoch: u64) -> String {
    format!("{node_id}|{epoch}")
}

fn parse_claim(v: &str) -> Result<StreamClaim, RegistryError> {
    v.rsplit_once('|')
        .and_then(|(node, epoch)| {
            Some(StreamClaim {
                node_id: node.to_string(),
                epoch: epoch.parse().ok()?,
            })
        })
        .ok_or_else(|| RegistryError::Corrupt(format!("claim {v:?} is not node|epoch")))
}

fn parse_record(json: &str) -> Result<NodeRecord, RegistryError> {
    serde_json::from_str(json).map_err(|e| RegistryError::Corrupt(format!("node record: {e}")))
}

fn ms(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

// Free → a new epoch, at least the registry clock in ms so that epochs keep
// rising when the counter is lost (a Redis restart without persistence).
const CLAIM_LUA: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  local owner = string.sub(cur, 1, sep - 1)
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, string.sub(cur, sep + 1)}
  end
  return {0, owner}
end
local e = redis.call('INCR', KEYS[2])
local t = redis.call('TIME')
local floor = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if e < floor then e = floor end
local es = string.format('%d', e)
redis.call('SET', KEYS[2], es, 'PX', ARGV[3])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. es, 'PX', ARGV[2])
return {1, es}
";

const RENEW_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

// Records with their remaining lease; ids whose record is gone leave the set.
const NODES_LUA: &str = r"
local ids = redis.call('SMEMBERS', KEYS[1])
local out = {}
for _, id in ipairs(ids) do
  local k = ARGV[1] .. id
  local v = redis.call('GET', k)
  if v then
    table.insert(out, v)
    table.insert(out, tostring(redis.call('PTTL', k)))
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out
";

/// The Redis registry over one reconnecting connection.
pub struct RedisRegistry {
    con: ConnectionManager,
    stats: RegistryStats,
    claim: redis::Script,
    renew: redis::Script,
    release: redis::Script,
    nodes: redis::Script,
}

impl RedisRegistry {
    fn new(url: &str) -> Result<RedisRegistry, RegistryError> {
        let client = redis::Client::open(url)
            .map_err(|e| RegistryError::Unavailable(format!("redis_url: {e}")))?;
        // Reconnects with jittered exponential backoff from 100 ms up to 2 s.
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(3);
        let con = client
            .get_connection_manager_lazy(cfg)
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        Ok(RedisRegistry {
            con,
            stats: RegistryStats::default(),
            claim: redis::Script::new(CLAIM_LUA),
            renew: redis::Script::new(RENEW_LUA),
            release: redis::Script::new(RELEASE_LUA),
            nodes: redis::Script::new(NODES_LUA),
        })
    }

    /// Run one call within [`CALL_TIMEOUT`], counted.
    async fn call<T>(
        &self,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RegistryError> {
        let t0 = Instant::now();
        let r = match tokio::time::timeout(CALL_TIMEOUT, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_timeout() => Err(RegistryError::Timeout(CALL_TIMEOUT)),
            Ok(Err(e)) => Err(RegistryError::Unavailable(e.to_string())),
            Err(_) => Err(RegistryError::Timeout(CALL_TIMEOUT)),
        };
        self.stats.record(t0.elapsed(), r.is_ok());
        r
    }

    async fn ping(&self) -> Result<(), RegistryError> {
        let mut con = self.con.clone();
        let pong: String = self.call(redis::cmd("PING").query_async(&mut con)).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(RegistryError::Corrupt(format!("PING answered {pong:?}")))
        }
    }

    async fn register_node(&self, rec: &NodeRecord, lease: Duration) -> Result<(), RegistryError> {
        let json = serde_json::to_string(rec).unwrap_or_default();
        let mut con = self.con.clone();
        let mut p = redis::pipe();
        p.atomic()
            .cmd("SET")
            .arg(node_key(&rec.id))
            .arg(json)
            .arg("PX")
            .arg(ms(lease))
            .ignore()
            .cmd("SADD")
            .arg(nodes_key())
            .arg(&rec.id)
            .ignore();
        self.call(p.query_async::<()>(&mut con)).await
    }

    async fn deregister_node(&self, id: &str) -> Result<(), RegistryError> {
        let mut con = self.con.clone();
        let mut p = redis::pipe();
        p.atomic()
            .cmd("DEL")
            .arg(node_key(id))
            .ignore()
            .cmd("SREM")
            .arg(nodes_key())
            .arg(id)
            .ignore();
        self.call(p.query_async::<()>(&mut con)).await
    }

    async fn nodes(&self) -> Result<Vec<(NodeRecord, Duration)>, RegistryError> {
        let mut con = self.con.clone();
        let mut inv = self.nodes.key(nodes_key());
        inv.arg(format!("{KEY_PREFIX}node:"));
        let flat: Vec<String> = self.call(inv.invoke_async(&mut con)).await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks_exact(2) {
            let rec = parse_record(&pair[0])?;
            let left: i64 = pair[1].parse().unwrap_or(0);
            let age = rec.lease_ms.saturating_sub(left.max(0) as u64);
            out.push((rec, Duration::from_millis(age)));
        }
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(out)
    }

    async fn node(&self, id: &str) -> Result<Option<NodeRecord>, RegistryError> {
        let mut con = self.con.clone();
        let v: Option<String> = self
            .call(redis::cmd("GET").arg(node_key(id)).query_async(&mut con))
            .await?;
        v.as_deref().map(parse_record).transpose()
    }

    async fn claim(
        &self,
        kind: Kind,
        name: &str,
        node_id: &str,
        lease: Duration,
    ) -> Result<ClaimOutcome, RegistryError> {
        let mut con = self.con.clone();
        let mut inv = self.claim.key(kind.key(name));
        inv.key(kind.epoch_key(name))
            .arg(node_id)
            .arg(ms(lease))
            .arg(EPOCH_TTL_MS);
        let (won, v): (i64, String) = self.call(inv.invoke_async(&mut con)).await?;
        if won == 1 {
            let epoch = v
                .parse()
                .map_err(|_| RegistryError::Corrupt(format!("epoch {v:?}")))?;
            Ok(ClaimOutcome::Claimed { epoch })
        } else {
            Ok(ClaimOutcome::Held { owner: v })
        }
    }

    async fn renew(
        &self,
        kind: Kind,
        name: &str,
        node_id: &str,
        epoch: u64,
        lease: Duration,
    ) -> Result<bool, RegistryError> {
        let mut con = self.con.clone();
        let mut inv = self.renew.key(kind.key(name));
        inv.arg(claim_value(node_id, epoch)).arg(ms(lease));
        let n: i64 = self.call(inv.invoke_async(&mut con)).await?;
        Ok(n == 1)
    }

    async fn release(
        &self,
        kind: Kind,
        name: &str,
        node_id: &str,
        epoch: u64,
    ) -> Result<bool, RegistryError> {
        let mut con = self.con.clone();
        let mut inv = self.release.key(kind.key(name));
        inv.arg(claim_value(node_id, epoch));
        let n: i64 = self.call(inv.invoke_async(&mut con)).await?;
        Ok(n == 1)
    }

    async fn holder(&self, kind: Kind, name: &str) -> Result<Option<StreamClaim>, RegistryError> {
        let mut con = self.con.clone();
        let v: Option<String> = self
            .call(redis::cmd("GET").arg(kind.key(name)).query_async(&mut con))
            .await?;
        v.as_deref().map(parse_claim).transpose()
    }

    async fn list(&self, kind: Kind) -> Result<Vec<(String, StreamClaim)>, RegistryError> {
        let prefix = kind.key("");
        let mut con = self.con.clone();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .call(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{prefix}*"))
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut con),
                )
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = self
            .call(redis::cmd("MGET").arg(&keys).query_async(&mut con))
            .await?;
        let mut out = Vec::with_capacity(keys.len());
        for (k, v) in keys.iter().zip(values) {
            // Expired between SCAN and MGET.
            let Some(v) = v else { continue };
            out.push((k[prefix.len()..].to_string(), parse_claim(&v)?));
        }
        Ok(out)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_parse_with_the_last_bar_as_separator() {
        assert_eq!(
            parse_claim("node-a|17").unwrap(),
            StreamClaim {
                node_id: "node-a".into(),
                epoch: 17
            }
        );
        assert!(parse_claim("node-a").is_err());
        assert!(parse_claim("node-a|x").is_err());
    }
}
