//! The relay's books: the links this node holds to upstream and downstream
//! nodes, the streams it pulls and the streams it serves. Data only; the
//! relay engine (`relay/mod.rs`) acts on it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;
use sluice_dataplane::{RelayLinkId, ShardId, StreamShared};

/// The receiving end of a link from one upstream node.
#[derive(Debug)]
pub struct LinkIn {
    /// Our id of the link (the shard's).
    pub id: RelayLinkId,
    /// The shard holding it.
    pub shard: ShardId,
    /// Our link nonce, sent with every call for this link.
    pub nonce: u64,
    /// What the upstream answered the first call with: its process
    /// instance, link id and nonce (the key depends on them).
    pub upstream: Option<(u64, u64, u64)>,
    /// The upstream's media address.
    pub peer: Option<SocketAddr>,
    /// The next stream tag.
    pub next_tag: u32,
}

/// A stream this node pulls from an upstream node.
#[derive(Debug)]
pub struct Pull {
    /// The local stream it feeds.
    pub stream: Arc<StreamShared>,
    /// The upstream node's id.
    pub upstream: String,
    /// The origin's id when pulled from it directly (its claim is watched).
    pub origin: Option<String>,
    /// The stream's tag on the link.
    pub tag: u32,
    /// When the stream last had nobody to serve (local viewers or downstream
    /// nodes); `None` while it has.
    pub idle_since: Option<Instant>,
    /// When the pull started.
    pub since: Instant,
    /// Origin checks in a row that found no claim.
    pub origin_misses: u8,
}

/// The sending end of a link to one downstream node.
#[derive(Debug)]
pub struct LinkOut {
    /// Our id of the link.
    pub id: RelayLinkId,
    /// The shard holding it.
    pub shard: ShardId,
    /// The downstream's process instance and link nonce.
    pub down: (u64, u64),
    /// Our link nonce.
    pub nonce: u64,
    /// Our shard's media address, told to the downstream.
    pub media: SocketAddr,
    /// Streams carried: name → (tag, local stream).
    pub streams: HashMap<String, (u32, Arc<StreamShared>)>,
}

/// Everything the relay holds, under one lock.
#[derive(Debug, Default)]
pub struct Book {
    /// Link ids handed out so far.
    pub next_link: u64,
    /// By upstream node id.
    pub links_in: HashMap<String, LinkIn>,
    /// By downstream node id.
    pub links_out: HashMap<String, LinkOut>,
    /// By stream name.
    pub pulls: HashMap<String, Pull>,
    /// Streams a pull is being set up for.
    pub pending: HashSet<String>,
}

impl Book {
    /// A fresh link id.
    pub fn link_id(&mut self) -> RelayLinkId {
        self.next_link += 1;
        RelayLinkId(self.next_link)
    }

    /// Downstream nodes that take `stream` from this node.
    pub fn edges_of(&self, stream: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .links_out
            .iter()
            .filter(|(_, l)| l.streams.contains_key(stream))
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// The upstream node `stream` is pulled from, if it is.
    pub fn upstream_of(&self, stream: &str) -> Option<&str> {
        self.pulls.get(stream).map(|p| p.upstream.as_str())
    }
}

/// How many links, pulls and served streams, for /metrics.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct RelayCounts {
    /// Links from upstream nodes.
    pub links_in: usize,
    /// Links to downstream nodes.
    pub links_out: usize,
    /// Streams pulled.
    pub pulls: usize,
    /// (stream, downstream node) pairs served.
    pub served: usize,
}

/// The relay's state, held by the app.
#[derive(Debug)]
pub struct RelayBook {
    /// This process's instance: a restart is a new one, so peers re-key.
    pub instance: u64,
    book: Mutex<Book>,
    /// Wakes the relay task (a viewer arrived, a link closed).
    pub wake: tokio::sync::Notify,
}

impl RelayBook {
    /// Empty books for the process `instance`.
    pub fn new(instance: u64) -> Self {
        RelayBook {
            instance,
            book: Mutex::new(Book::default()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// The books, locked (a poisoned lock is taken over).
    pub fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this node pulls `stream` (or is setting a pull up).
    pub fn pulls(&self, stream: &str) -> bool {
        let b = self.lock();
        b.pulls.contains_key(stream) || b.pending.contains(stream)
    }

    /// Counts for /metrics.
    pub fn counts(&self) -> RelayCounts {
        let b = self.lock();
        RelayCounts {
            links_in: b.links_in.len(),
            links_out: b.links_out.len(),
            pulls: b.pulls.len(),
            served: b.links_out.values().map(|l| l.streams.len()).sum(),
        }
    }
}
