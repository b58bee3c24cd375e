//! The admin API (`/admin/…`): list shards, streams, sessions and rooms, kick
//! a session, close a stream, drain. Guarded by `admin_token`; open only in dev mode.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use sluice_dataplane::SessionId;

use crate::app::App;
use crate::authz;
use crate::error::ApiError;
use crate::sessions;
use crate::transports::ShardTransports;

#[derive(Serialize)]
struct ShardInfo {
    id: u16,
    addr: String,
    addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    tcp_conns: usize,
    /// Bytes waiting in its ICE-TCP write queues together.
    tcp_queued_bytes: usize,
    core: Option<usize>,
    io: &'static str,
    publishers: usize,
    viewers: usize,
    /// Connected sessions by transport and address family.
    transports: ShardTransports,
    counters: BTreeMap<&'static str, u64>,
}

/// `GET /admin/shards`: each shard's addresses, core, io backend, load (with
/// connected sessions by transport) and counters.
pub async fn shards(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authz::admin(&app, &headers)?;
    let transports = crate::transports::by_shard(&app);
    let v: Vec<ShardInfo> = app
        .dataplane
        .shards
        .iter()
        .zip(transports)
        .map(|(s, transports)| ShardInfo {
            id: s.id.0,
            addr: s.addr.to_string(),
            addrs: s.addrs.clone(),
            tcp_addrs: s.tcp_addrs.clone(),
            tcp_conns: s.tcp_conns.load(Ordering::Relaxed),
            tcp_queued_bytes: s.tcp_queued.load(Ordering::Relaxed),
            core: s.core,
            io: s.io,
            publishers: s.publishers.load(Ordering::Relaxed),
            viewers: s.viewers.load(Ordering::Relaxed),
            transports,
            counters: s
                .counters
                .snapshot()
                .fields()
                .into_iter()
                .map(|(n, _, v)| (n, v))
                .collect(),
        })
        .collect();
    Ok(json(v))
}

/// `GET /admin/streams`: every stream with its publisher, viewers and rates.
pub async fn streams(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authz::admin(&app, &headers)?;
    Ok(json(app.registry().streams()))
}

/// `DELETE /admin/streams/{stream}`: end a stream, its publisher and every viewer.
pub async fn close_stream(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authz::admin(&app, &headers)?;
    let sessions = app
        .registry()
        .stream_sessions(&name)
        .ok_or(ApiError::NoSuchStream)?;
    for e in &sessions {
        sessions::end(&app, e.id, e.shard);
    }
    Ok(json(
        serde_json::json!({"closed": name, "sessions": sessions.len()}),
    ))
}

/// `GET /admin/sessions`: every session with its latest stats (transport,
/// remote address and address changes among them).
pub async fn sessions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authz::admin(&app, &headers)?;
    Ok(json(app.sessions_with_stats()))
}

/// `GET /admin/sessions/{id}`: one session with its latest stats.
pub async fn session(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authz::admin(&app, &headers)?;
    let s = app
        .sessions_with_stats()
        .into_iter()
        .find(|s| s.id == id)
        .ok_or(ApiError::NoSuchSession)?;
    Ok(json(s))
}

/// `DELETE /admin/sessions/{id}`: end one session.
pub async fn kick(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authz::admin(&app, &headers)?;
    let entry = u64::from_str_radix(&id, 16)
        .ok()
        .and_then(|id| app.registry().session(SessionId(id)).cloned())
        .ok_or(ApiError::NoSuchSession)?;
    sessions::end(&app, entry.id, entry.shard);
    Ok(json(serde_json::json!({"kicked": id})))
}

/// `POST /admin/drain`: stop placing sessions; the process drains and exits.
pub async fn drain(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authz::admin(&app, &headers)?;
    app.draining.store(true, Ordering::SeqCst);
    // The serving process drains and exits as on SIGTERM (a stored permit if
    // nothing waits yet).
    app.drain_requested.notify_one();
    Ok(json(serde_json::json!({
        "draining": true,
        "sessions": app.registry().session_count(),
        "deadline_secs": app.config.drain_timeout_secs,
    })))
}

/// `GET /admin/rooms`: every room with its participants.
pub async fn rooms(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authz::admin(&app, &headers)?;
    Ok(json(app.rooms.summary()))
}

/// `GET /admin/cluster`: this node's id, the live nodes, claimed streams and rooms.
/// `edges` of a stream lists nodes relaying it; filled by the relay.
pub async fn cluster(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authz::admin(&app, &headers)?;
    let Some(c) = &app.cluster else {
        return Err(ApiError::NotInCluster);
    };
    let unreachable = |_| ApiError::RegistryUnavailable("a listing");
    let reg = c.registry();
    let live = reg.nodes().await.map_err(unreachable)?;
    // Each node's record lists what it pulls and from whom: the relay tree.
    let edges_of = |stream: &str| -> Vec<serde_json::Value> {
        let mut v: Vec<serde_json::Value> = live
            .iter()
            .flat_map(|(n, _)| {
                n.pulls
                    .iter()
                    .filter(|(s, _)| s == stream)
                    .map(|(_, up)| serde_json::json!({"node": n.id, "upstream": up}))
            })
            .collect();
        v.sort_by_key(|e| e["node"].as_str().unwrap_or_default().to_string());
        v
    };
    let nodes: Vec<_> = live
        .iter()
        .map(|(n, age)| {
            serde_json::json!({
                "id": n.id,
                "advertise": n.advertise,
                "load": n.load,
                "sessions": n.sessions,
                "viewers": n.viewers,
                "heartbeat_age_ms": age.as_millis() as u64,
                "lease_ms": n.lease_ms,
            })
        })
        .collect();
    let streams: Vec<_> = reg
        .streams()
        .await
        .map_err(unreachable)?
        .into_iter()
        .map(|(name, claim)| {
            serde_json::json!({
                "name": name,
                "origin": claim.node_id,
                "epoch": claim.epoch,
                "edges": edges_of(&name),
            })
        })
        .collect();
    let rooms: Vec<_> = reg
        .rooms()
        .await
        .map_err(unreachable)?
        .into_iter()
        .map(|(name, claim)| serde_json::json!({"name": name, "node": claim.node_id}))
        .collect();
    Ok(json(serde_json::json!({
        "node_id": c.node_id(),
        "healthy": c.healthy(),
        "nodes": nodes,
        "streams": streams,
        "rooms": rooms,
    })))
}

fn json<T: Serialize>(v: T) -> Response {
    Json(v).into_response()
}
