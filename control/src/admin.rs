//! The admin API (`/admin/…`): list shards, streams and sessions, kick a
//! session, drain. Guarded by `admin_token`; open only in dev mode.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;

use crate::http::{bearer, end_session, error, json};
use crate::registry::SessionInfo;
use crate::server::App;

/// Admin access: the admin token when set; in open dev mode anyone; otherwise no one.
#[allow(clippy::result_large_err)] // The error is the ready HTTP response.
fn check(app: &App, headers: &HeaderMap) -> Result<(), Response> {
    match (&app.config.admin_token, &app.config.secret) {
        (Some(t), _) => match bearer(headers) {
            Some(b) if constant_time_eq(b.as_bytes(), t.as_bytes()) => Ok(()),
            Some(_) => Err(error(StatusCode::FORBIDDEN, "wrong admin token")),
            None => Err(error(
                StatusCode::UNAUTHORIZED,
                "missing bearer token: send Authorization: Bearer <admin_token>",
            )),
        },
        (None, None) => Ok(()),
        (None, Some(_)) => Err(error(
            StatusCode::FORBIDDEN,
            "admin API disabled: set admin_token to enable it",
        )),
    }
}

/// Compare without an early exit, so timing does not reveal the matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Serialize)]
struct ShardInfo {
    id: u16,
    addr: String,
    core: Option<usize>,
    io: &'static str,
    publishers: usize,
    viewers: usize,
    counters: std::collections::BTreeMap<&'static str, u64>,
}

pub async fn shards(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = check(&app, &headers) {
        return r;
    }
    let v: Vec<ShardInfo> = app
        .dataplane
        .shards
        .iter()
        .map(|s| ShardInfo {
            id: s.id.0,
            addr: s.addr.to_string(),
            core: s.core,
            io: s.io,
            publishers: s.publishers.load(Ordering::Relaxed),
            viewers: s.viewers.load(Ordering::Relaxed),
            counters: s
                .counters
                .snapshot()
                .fields()
                .into_iter()
                .map(|(n, _, v)| (n, v))
                .collect(),
        })
        .collect();
    json(v)
}

pub async fn streams(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = check(&app, &headers) {
        return r;
    }
    json(app.registry().streams())
}

/// End a stream: its publisher and every viewer.
pub async fn close_stream(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check(&app, &headers) {
        return r;
    }
    let Some(sessions) = app.registry().stream_sessions(&name) else {
        return error(StatusCode::NOT_FOUND, "no such stream");
    };
    for e in &sessions {
        end_session(&app, e);
    }
    json(serde_json::json!({"closed": name, "sessions": sessions.len()}))
}

pub async fn sessions(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = check(&app, &headers) {
        return r;
    }
    json(sessions_with_stats(&app))
}

/// Every session with its shard's latest stats.
pub fn sessions_with_stats(app: &App) -> Vec<SessionInfo> {
    let mut v = app.registry().sessions();
    for s in &mut v {
        if let Some(shard) = app.dataplane.shard(s.shard_id) {
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

pub async fn session(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check(&app, &headers) {
        return r;
    }
    match sessions_with_stats(&app).into_iter().find(|s| s.id == id) {
        Some(s) => json(s),
        None => error(StatusCode::NOT_FOUND, "no such session"),
    }
}

pub async fn kick(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check(&app, &headers) {
        return r;
    }
    let entry = u64::from_str_radix(&id, 16).ok().and_then(|id| {
        app.registry()
            .session(sluice_dataplane::SessionId(id))
            .cloned()
    });
    match entry {
        Some(e) => {
            end_session(&app, &e);
            json(serde_json::json!({"kicked": id}))
        }
        None => error(StatusCode::NOT_FOUND, "no such session"),
    }
}

pub async fn drain(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = check(&app, &headers) {
        return r;
    }
    app.draining.store(true, Ordering::SeqCst);
    // The serving process drains and exits as on SIGTERM (a stored permit if
    // nothing waits yet).
    app.drain_requested.notify_one();
    json(serde_json::json!({
        "draining": true,
        "sessions": app.registry().session_count(),
        "deadline_secs": app.config.drain_timeout_secs,
    }))
}

pub async fn rooms(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = check(&app, &headers) {
        return r;
    }
    json(app.rooms.summary())
}
