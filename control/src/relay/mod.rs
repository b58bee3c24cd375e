//! The cascade's media relay, control side: an edge pulls a stream it has
//! viewers for (or a downstream node asks for) from the stream's origin,
//! or from `cluster.parent` when one is set, over one relay link per node
//! pair; the upstream serves it; a pull nobody needs any more is released
//! after a linger; an origin that changes or dies is followed.
//!
//! The links themselves live in the shards (`sluice_dataplane::RelayLinkId`);
//! this module opens them, adds and removes streams, and makes the signed
//! node-to-node calls ([`call`]) that set them up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_dataplane::{Command, RelayDirection, RelayLinkId, ShardId, StreamShared};

use crate::app::App;
use crate::cluster::NodeRecord;

pub mod book;
pub mod call;
pub mod http;

use book::{LinkIn, LinkOut, Pull};
use call::{LinkIds, PullRequest, PullResponse, ReleaseRequest};

/// How often the relay task looks for streams to pull and pulls to release.
const TICK: Duration = Duration::from_millis(250);
/// A pull with no local viewers and no downstream node is released after this.
pub const LINGER: Duration = Duration::from_secs(5);
/// How often a pull from the origin checks that the origin still holds the stream.
const ORIGIN_CHECK: Duration = Duration::from_secs(1);
/// Checks in a row that must find no claim before a pull lets its origin go
/// (a registry that restarted empty is re-claimed by the origin meanwhile).
const ORIGIN_MISSES: u8 = 3;
/// A node-to-node call that takes longer fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a pull could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry cannot be reached: no new cross-node pulls.
    #[error("cluster registry unavailable")]
    Unavailable,
    /// No node publishes the stream (or its origin record has expired).
    #[error("stream is not published on any node")]
    NotPublished,
    /// The upstream refused or did not answer.
    #[error("upstream node {0}: {1}")]
    Upstream(String, String),
    /// Too many relay hops (a loop of parents).
    #[error("too many relay hops")]
    TooDeep,
    /// No shard to hold the link.
    #[error("no dataplane shard")]
    NoShard,
}

/// The HTTP client for node-to-node calls. Peers' certificates are not
/// verified: every call and answer is signed with the cluster secret and
/// link keys are derived, never sent (see [`call`]).
fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(CALL_TIMEOUT)
            .build()
            .expect("a TLS client with the default provider")
    })
}

/// The relay task: runs while the process does, on a cluster node.
pub async fn run(app: Arc<App>) {
    let mut last_origin_check = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = app.relays.wake.notified() => {}
        }
        if app.cluster.is_none() {
            continue;
        }
        start_wanted_pulls(&app);
        release_idle_pulls(&app);
        if last_origin_check.elapsed() >= ORIGIN_CHECK {
            last_origin_check = Instant::now();
            follow_origins(&app).await;
        }
    }
}

/// Pull every stream that has local viewers and no publisher here.
fn start_wanted_pulls(app: &Arc<App>) {
    for name in app.registry().streams_waiting() {
        if app.relays.pulls(&name) {
            continue;
        }
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(e) = pull(&app, &name, 0).await {
                tracing::debug!(stream = %name, error = %e, "relay pull not set up");
            }
        });
    }
}

/// Release pulls that served nobody for [`LINGER`].
fn release_idle_pulls(app: &Arc<App>) {
    let now = Instant::now();
    let pulled: Vec<String> = app.relays.lock().pulls.keys().cloned().collect();
    let mut users = Vec::with_capacity(pulled.len());
    {
        let reg = app.registry();
        for name in &pulled {
            users.push(reg.viewer_count(name));
        }
    }
    let mut done = Vec::new();
    {
        let mut b = app.relays.lock();
        for (name, viewers) in pulled.iter().zip(users) {
            let edges = b.edges_of(name).len();
            let Some(p) = b.pulls.get_mut(name) else {
                continue;
            };
            if viewers + edges > 0 {
                p.idle_since = None;
            } else if now.saturating_duration_since(*p.idle_since.get_or_insert(now)) >= LINGER {
                done.push(name.clone());
            }
        }
    }
    for name in done {
        tracing::info!(stream = %name, "relay pull released: no viewers");
        release_pull(app, &name);
    }
}

/// Release pulls whose origin no longer holds the stream (it died, or the
/// stream moved): the next tick pulls from the new origin, if any.
async fn follow_origins(app: &Arc<App>) {
    let Some(cluster) = app.cluster.clone() else {
        return;
    };
    let direct: Vec<(String, String)> = app
        .relays
        .lock()
        .pulls
        .iter()
        .filter_map(|(n, p)| p.origin.clone().map(|o| (n.clone(), o)))
        .collect();
    for (name, origin) in direct {
        let gone = match cluster.stream_origin(&name).await {
            Ok(Some(rec)) if rec.id == origin => {
                if let Some(p) = app.relays.lock().pulls.get_mut(&name) {
                    p.origin_misses = 0;
                }
                false
            }
            Ok(Some(_)) => true,
            Ok(None) => {
                let mut b = app.relays.lock();
                let Some(p) = b.pulls.get_mut(&name) else {
                    continue;
                };
                p.origin_misses += 1;
                p.origin_misses >= ORIGIN_MISSES
            }
            // Registry away: keep what we serve.
            Err(_) => false,
        };
        if gone {
            tracing::info!(stream = %name, %origin, "origin no longer holds the stream; following");
            release_pull(app, &name);
        }
    }
}

/// Pull `name` to this node (`hops` relay hops below the origin) unless it is
/// pulled or published here already.
pub async fn pull(app: &Arc<App>, name: &str, hops: u8) -> Result<(), PullError> {
    if hops >= call::MAX_HOPS {
        return Err(PullError::TooDeep);
    }
    {
        let mut b = app.relays.lock();
        if b.pulls.contains_key(name) || !b.pending.insert(name.to_string()) {
            return Ok(());
        }
    }
    let stream = app.registry().hold(name);
    let result = pull_from_upstream(app, name, hops, &stream).await;
    app.relays.lock().pending.remove(name);
    if result.is_err() {
        app.registry().unhold(name, &stream);
    }
    result
}

async fn pull_from_upstream(
    app: &Arc<App>,
    name: &str,
    hops: u8,
    stream: &Arc<StreamShared>,
) -> Result<(), PullError> {
    let cluster = app.cluster.clone().ok_or(PullError::NotPublished)?;
    if !cluster.healthy() {
        return Err(PullError::Unavailable);
    }
    let origin = cluster
        .stream_origin(name)
        .await
        .map_err(|_| PullError::Unavailable)?
        .filter(|o| o.id != cluster.node_id())
        .ok_or(PullError::NotPublished)?;
    let parent = Some(app.config.cluster.parent.as_str())
        .filter(|p| !p.is_empty() && *p != cluster.node_id() && *p != origin.id);
    let upstream: NodeRecord = match parent {
        Some(p) => cluster
            .node(p)
            .await
            .map_err(|_| PullError::Unavailable)?
            .ok_or_else(|| PullError::Upstream(p.to_string(), "no live record".into()))?,
        None => origin.clone(),
    };
    let from_origin = upstream.id == origin.id;
    let shard = app.registry().least_loaded(app.dataplane.shards.len());
    let (link, shard, nonce, tag) = {
        let mut b = app.relays.lock();
        let fresh = b.link_id();
        let l = b
            .links_in
            .entry(upstream.id.clone())
            .or_insert_with(|| LinkIn {
                id: fresh,
                shard,
                nonce: app.negotiator.random_u64(),
                upstream: None,
                peer: None,
                next_tag: 1,
            });
        let tag = l.next_tag;
        l.next_tag = l.next_tag.wrapping_add(1).max(1);
        (l.id, l.shard, l.nonce, tag)
    };
    let media = app
        .dataplane
        .shard(shard)
        .map(|h| h.addr)
        .ok_or(PullError::NoShard)?;
    let req = PullRequest {
        stream: name.to_string(),
        from: cluster.node_id().to_string(),
        instance: app.relays.instance,
        nonce,
        media: media.to_string(),
        tag,
        hops,
    };
    let resp: PullResponse = signed_call(cluster.secret(), &upstream, call::PULL_PATH, &req)
        .await
        .map_err(|e| PullError::Upstream(upstream.id.clone(), e))?;
    let peer: SocketAddr = resp
        .media
        .parse()
        .map_err(|_| PullError::Upstream(upstream.id.clone(), "bad media address".into()))?;
    let mut b = app.relays.lock();
    let Some(l) = b.links_in.get_mut(&upstream.id).filter(|l| l.id == link) else {
        return Err(PullError::Upstream(
            upstream.id,
            "link closed meanwhile".into(),
        ));
    };
    let answered = (resp.instance, resp.link, resp.nonce);
    match l.upstream {
        None => {
            let material = call::link_key(
                cluster.secret(),
                &LinkIds {
                    up: (&resp.node, resp.instance, resp.link, resp.nonce),
                    down: (cluster.node_id(), app.relays.instance, nonce),
                },
            );
            send(
                app,
                shard,
                Command::RelayOpen {
                    link,
                    peer,
                    material,
                    direction: RelayDirection::Receive,
                },
            );
            l.upstream = Some(answered);
            l.peer = Some(peer);
        }
        Some(known) if known == answered => {}
        Some(_) => {
            // The upstream restarted and made a new link: start ours over.
            drop(b);
            close_link_in(app, &upstream.id);
            return Err(PullError::Upstream(
                upstream.id,
                "upstream restarted".into(),
            ));
        }
    }
    send(
        app,
        shard,
        Command::RelayAddStream {
            link,
            tag,
            stream: stream.clone(),
        },
    );
    b.pulls.insert(
        name.to_string(),
        Pull {
            stream: stream.clone(),
            upstream: upstream.id.clone(),
            origin: from_origin.then(|| origin.id.clone()),
            tag,
            idle_since: None,
            since: Instant::now(),
            origin_misses: 0,
        },
    );
    tracing::info!(stream = %name, upstream = %upstream.id, hops, "relay pull started");
    Ok(())
}

/// Stop pulling `name`: the link drops it (and closes when it carries
/// nothing else) and the upstream is told, best effort.
pub fn release_pull(app: &Arc<App>, name: &str) {
    let (pull, link, close, nonce) = {
        let mut b = app.relays.lock();
        let Some(p) = b.pulls.remove(name) else {
            return;
        };
        let others = b.pulls.values().any(|x| x.upstream == p.upstream);
        let Some(l) = b.links_in.get(&p.upstream) else {
            drop(b);
            app.registry().unhold(name, &p.stream);
            return;
        };
        let (id, shard, nonce) = (l.id, l.shard, l.nonce);
        if !others {
            b.links_in.remove(&p.upstream);
        }
        (p, (id, shard), !others, nonce)
    };
    send(
        app,
        link.1,
        Command::RelayRemoveStream {
            link: link.0,
            tag: pull.tag,
        },
    );
    if close {
        send(app, link.1, Command::RelayClose(link.0));
    }
    app.registry().unhold(name, &pull.stream);
    let Some(cluster) = app.cluster.clone() else {
        return;
    };
    let req = ReleaseRequest {
        stream: name.to_string(),
        from: cluster.node_id().to_string(),
        instance: app.relays.instance,
        nonce,
    };
    let upstream = pull.upstream.clone();
    tokio::spawn(async move {
        let Ok(Some(node)) = cluster.node(&upstream).await else {
            return;
        };
        let r: Result<serde_json::Value, String> =
            signed_call(cluster.secret(), &node, call::RELEASE_PATH, &req).await;
        if let Err(e) = r {
            tracing::debug!(%upstream, error = %e, "relay release not delivered");
        }
    });
}

/// Forget the link from `upstream` and every pull on it.
fn close_link_in(app: &Arc<App>, upstream: &str) {
    let (link, pulls) = {
        let mut b = app.relays.lock();
        let Some(l) = b.links_in.remove(upstream) else {
            return;
        };
        let names: Vec<String> = b
            .pulls
            .iter()
            .filter(|(_, p)| p.upstream == upstream)
            .map(|(n, _)| n.clone())
            .collect();
        let pulls: Vec<(String, Pull)> = names
            .into_iter()
            .filter_map(|n| b.pulls.remove(&n).map(|p| (n, p)))
            .collect();
        (l, pulls)
    };
    send(app, link.shard, Command::RelayClose(link.id));
    let mut reg = app.registry();
    for (name, p) in pulls {
        reg.unhold(&name, &p.stream);
    }
}

/// A shard closed a link (silence, or it refused to open it).
pub fn link_closed(app: &Arc<App>, link: RelayLinkId) {
    let (upstream, downstream) = {
        let b = app.relays.lock();
        (
            b.links_in
                .iter()
                .find(|(_, l)| l.id == link)
                .map(|(n, _)| n.clone()),
            b.links_out
                .iter()
                .find(|(_, l)| l.id == link)
                .map(|(n, _)| n.clone()),
        )
    };
    if let Some(up) = upstream {
        tracing::info!(upstream = %up, "relay link from upstream closed");
        close_link_in(app, &up);
        app.relays.wake.notify_one();
    }
    if let Some(down) = downstream {
        tracing::info!(downstream = %down, "relay link to downstream closed");
        close_link_out(app, &down, false);
    }
}

/// Forget the link to `downstream` and what it carried; `tell_shard` when the
/// shard still holds it.
fn close_link_out(app: &Arc<App>, downstream: &str, tell_shard: bool) {
    let Some(l) = app.relays.lock().links_out.remove(downstream) else {
        return;
    };
    if tell_shard {
        send(app, l.shard, Command::RelayClose(l.id));
    }
    let mut reg = app.registry();
    for (name, (_, stream)) in l.streams {
        reg.unhold(&name, &stream);
    }
}

/// Serve `req` (a downstream node's pull): open or reuse the link to it and
/// add the stream, pulling it here first when this node does not have it.
pub async fn serve(app: &Arc<App>, req: PullRequest) -> Result<PullResponse, PullError> {
    let cluster = app.cluster.clone().ok_or(PullError::NotPublished)?;
    let peer: SocketAddr = req
        .media
        .parse()
        .map_err(|_| PullError::Upstream(req.from.clone(), "bad media address".into()))?;
    if req.from == cluster.node_id() {
        return Err(PullError::TooDeep);
    }
    let published_here = app.registry().has_publisher(&req.stream);
    if !published_here && !app.relays.pulls(&req.stream) {
        pull(app, &req.stream, req.hops + 1).await?;
    }
    let shard = app.registry().least_loaded(app.dataplane.shards.len());
    let media = app
        .dataplane
        .shard(shard)
        .map(|h| h.addr)
        .ok_or(PullError::NoShard)?;
    let stream = app.registry().hold(&req.stream);
    let mut unhold = Vec::new();
    let resp = {
        let mut b = app.relays.lock();
        let stale = b
            .links_out
            .get(&req.from)
            .is_some_and(|l| l.down != (req.instance, req.nonce));
        if stale {
            // The downstream restarted or started a new link: the old one goes.
            let old = b.links_out.remove(&req.from).expect("checked");
            send(app, old.shard, Command::RelayClose(old.id));
            unhold.extend(old.streams.into_iter().map(|(n, (_, s))| (n, s)));
        }
        if !b.links_out.contains_key(&req.from) {
            let id = b.link_id();
            let nonce = app.negotiator.random_u64();
            let material = call::link_key(
                cluster.secret(),
                &LinkIds {
                    up: (cluster.node_id(), app.relays.instance, id.0, nonce),
                    down: (&req.from, req.instance, req.nonce),
                },
            );
            send(
                app,
                shard,
                Command::RelayOpen {
                    link: id,
                    peer,
                    material,
                    direction: RelayDirection::Send,
                },
            );
            b.links_out.insert(
                req.from.clone(),
                LinkOut {
                    id,
                    shard,
                    down: (req.instance, req.nonce),
                    nonce,
                    media,
                    streams: Default::default(),
                },
            );
        }
        let l = b.links_out.get_mut(&req.from).expect("just made");
        match l.streams.get(&req.stream) {
            Some((tag, _)) if *tag == req.tag => unhold.push((req.stream.clone(), stream.clone())),
            Some((tag, old)) => {
                send(
                    app,
                    l.shard,
                    Command::RelayRemoveStream {
                        link: l.id,
                        tag: *tag,
                    },
                );
                unhold.push((req.stream.clone(), old.clone()));
                l.streams
                    .insert(req.stream.clone(), (req.tag, stream.clone()));
                send(
                    app,
                    l.shard,
                    Command::RelayAddStream {
                        link: l.id,
                        tag: req.tag,
                        stream: stream.clone(),
                    },
                );
            }
            None => {
                l.streams
                    .insert(req.stream.clone(), (req.tag, stream.clone()));
                send(
                    app,
                    l.shard,
                    Command::RelayAddStream {
                        link: l.id,
                        tag: req.tag,
                        stream: stream.clone(),
                    },
                );
            }
        }
        PullResponse {
            node: cluster.node_id().to_string(),
            instance: app.relays.instance,
            link: l.id.0,
            nonce: l.nonce,
            media: l.media.to_string(),
        }
    };
    let mut reg = app.registry();
    for (name, s) in unhold {
        reg.unhold(&name, &s);
    }
    tracing::info!(stream = %req.stream, downstream = %req.from, "relay serving");
    Ok(resp)
}

/// A downstream node no longer wants a stream.
pub fn serve_release(app: &Arc<App>, req: ReleaseRequest) -> bool {
    let (released, close) = {
        let mut b = app.relays.lock();
        let Some(l) = b
            .links_out
            .get_mut(&req.from)
            .filter(|l| l.down == (req.instance, req.nonce))
        else {
            return false;
        };
        let Some((tag, stream)) = l.streams.remove(&req.stream) else {
            return false;
        };
        send(app, l.shard, Command::RelayRemoveStream { link: l.id, tag });
        (stream, l.streams.is_empty())
    };
    app.registry().unhold(&req.stream, &released);
    if close {
        close_link_out(app, &req.from, true);
    }
    true
}

/// Send a command to a shard; a stopped shard is logged (the process is
/// shutting down).
fn send(app: &App, shard: ShardId, cmd: Command) {
    if !app.dataplane.shard(shard).is_some_and(|h| h.send(cmd)) {
        tracing::warn!(shard = %shard, "relay command not delivered: shard stopped");
    }
}

/// POST `body` to `node` at `path`, signed; the answer must be signed too.
async fn signed_call<B: serde::Serialize, R: serde::de::DeserializeOwned>(
    secret: &[u8],
    node: &NodeRecord,
    path: &str,
    body: &B,
) -> Result<R, String> {
    let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let url = format!("{}{}", node.advertise.trim_end_matches('/'), path);
    let resp = client()
        .post(&url)
        .header(call::AUTH_HEADER, call::sign(secret, path, &body))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let auth = resp
        .headers()
        .get(call::AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).trim()
        ));
    }
    call::verify(secret, &call::answer_path(path), &bytes, auth.as_deref())
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}
