//! HTTP routes: WHIP (RFC 9725) and WHEP ingest/egress, the embedded web
//! client, /metrics and the admin API. Every error is a status plus a one-line
//! plain-text reason.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sluice_dataplane::{Command, NewSession, Role, SessionId};

use crate::auth::{unix_now, AuthError, Claims};
use crate::negotiate::NegotiateError;
use crate::registry::{RegisterError, SessionEntry};
use crate::server::App;

type AppState = Arc<App>;

pub fn router(app: AppState) -> Router {
    let max_body = app.config.max_body;
    Router::new()
        .route("/", get(crate::web::room))
        .route("/room.js", get(crate::web::room_js))
        .route("/room.css", get(crate::web::room_css))
        .route("/broadcast", get(crate::web::index))
        .route("/dashboard", get(crate::web::dashboard))
        .route("/dashboard.js", get(crate::web::dashboard_js))
        .route("/ws", get(crate::rooms::ws_handler))
        .route("/app.js", get(crate::web::app_js))
        .route("/style.css", get(crate::web::style_css))
        .route("/healthz", get(healthz))
        .route("/metrics", get(crate::metrics::metrics))
        .route(
            "/whip/{stream}",
            post(whip_post)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .route(
            "/whep/{stream}",
            post(whep_post)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .route(
            "/whip/{stream}/{id}",
            axum::routing::delete(resource_delete)
                .patch(resource_patch)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .route(
            "/whep/{stream}/{id}",
            axum::routing::delete(resource_delete)
                .patch(resource_patch)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .route("/whep/{stream}/{id}/layer", post(whep_layer))
        .route("/admin/shards", get(crate::admin::shards))
        .route("/admin/streams", get(crate::admin::streams))
        .route(
            "/admin/streams/{stream}",
            axum::routing::delete(crate::admin::close_stream),
        )
        .route("/admin/sessions", get(crate::admin::sessions))
        .route(
            "/admin/sessions/{id}",
            get(crate::admin::session).delete(crate::admin::kick),
        )
        .route("/admin/drain", post(crate::admin::drain))
        .route("/admin/rooms", get(crate::admin::rooms))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::map_response(cors))
        .with_state(app)
}

/// A status with a one-line plain-text reason.
pub fn error(status: StatusCode, reason: impl AsRef<str>) -> Response {
    let line = reason.as_ref().lines().next().unwrap_or("").to_string();
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{line}\n"),
    )
        .into_response()
}

async fn cors(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("Location, ETag, Link, Accept-Patch, Retry-After"),
    );
    // axum's own body-limit rejection has a multi-line-free but vague text; make it say what to do.
    if res.status() == StatusCode::PAYLOAD_TOO_LARGE
        && res.headers().get(header::CONTENT_TYPE).is_none_or(|v| {
            v.to_str()
                .map(|s| !s.starts_with("text/plain; charset=utf-8"))
                .unwrap_or(true)
        })
    {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    res
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such resource")
}

async fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
}

async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            ("accept-post", "application/sdp"),
            (
                "access-control-allow-methods",
                "GET, POST, PATCH, DELETE, OPTIONS",
            ),
            (
                "access-control-allow-headers",
                "Authorization, Content-Type, If-Match",
            ),
            ("access-control-max-age", "86400"),
        ],
    )
        .into_response()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Bearer token from the Authorization header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Verify the request's token when a secret is configured.
#[allow(clippy::result_large_err)] // The error is the ready HTTP response.
pub fn authorize(app: &App, headers: &HeaderMap) -> Result<Option<Claims>, Response> {
    let Some(key) = &app.tokens else {
        return Ok(None);
    };
    let token = bearer(headers).ok_or_else(|| auth_error(AuthError::Missing))?;
    key.verify(token, unix_now()).map(Some).map_err(auth_error)
}

pub fn auth_error(e: AuthError) -> Response {
    let status = if e.is_forbidden() {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::UNAUTHORIZED
    };
    let mut res = error(status, e.to_string());
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    res
}

fn unavailable(reason: &str, retry_after: u32) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, reason);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    r
}

async fn whip_post(
    State(app): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create_session(&app, &stream, Role::Publisher, &headers, &body, None)
}

/// WHEP options: `?layer=low|mid|high` (or 0, 1, 2) caps the simulcast layer.
async fn whep_post(
    State(app): State<AppState>,
    Path(stream): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let max_layer = match parse_layer(q.get("layer").map(String::as_str)) {
        Ok(m) => m,
        Err(r) => return r,
    };
    create_session(&app, &stream, Role::Viewer, &headers, &body, max_layer)
}

fn create_session(
    app: &App,
    stream: &str,
    role: Role,
    headers: &HeaderMap,
    body: &[u8],
    max_layer: Option<u8>,
) -> Response {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ctype.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/sdp") {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/sdp, got {ctype:?}"),
        );
    }
    if !valid_name(stream) {
        return error(
            StatusCode::BAD_REQUEST,
            "stream name must be 1-128 characters of A-Z a-z 0-9 - _ .",
        );
    }
    match authorize(app, headers) {
        Ok(Some(claims)) => {
            if let Err(e) = claims.allows_stream(stream, role == Role::Publisher) {
                return auth_error(e);
            }
        }
        Ok(None) => {}
        Err(res) => return res,
    }
    if app.is_draining() {
        return unavailable("server is draining; try another node", 30);
    }
    let Ok(offer) = std::str::from_utf8(body) else {
        return error(StatusCode::BAD_REQUEST, "SDP offer is not UTF-8");
    };
    let max = app.config.max_sessions;
    let shard = {
        let reg = app.registry();
        match reg.check(stream, role, max) {
            Ok(()) => {}
            Err(RegisterError::AlreadyPublished) => {
                return error(
                    StatusCode::CONFLICT,
                    format!("stream {stream:?} is already published"),
                )
            }
            Err(RegisterError::AtCapacity) => {
                return unavailable("server at capacity (max_sessions)", 5)
            }
        }
        // Estimation costs CPU and pacing; only simulcast viewers need it.
        let simulcast = reg.stream_has_layers(stream);
        (reg.least_loaded(app.dataplane.shards.len()), simulcast)
    };
    let (shard, simulcast) = shard;
    let Some(handle) = app.dataplane.shard(shard) else {
        return unavailable("no dataplane shard available", 5);
    };
    let negotiated =
        match app
            .negotiator
            .answer_with(offer, role == Role::Publisher, simulcast, handle.addr)
        {
            Ok(n) => n,
            Err(NegotiateError::Malformed(m)) => return error(StatusCode::BAD_REQUEST, m),
            Err(NegotiateError::Unsupported(m)) => {
                return error(StatusCode::UNPROCESSABLE_ENTITY, m)
            }
        };
    let id = SessionId(app.negotiator.random_u64());
    let entry = SessionEntry {
        id,
        role,
        stream: stream.to_string(),
        shard,
        created: SystemTime::now(),
        connected: false,
    };
    // Registering re-checks under the lock: a racing publisher gets 409 here.
    let shared = match app.registry().register(entry, max) {
        Ok(s) => s,
        Err(RegisterError::AlreadyPublished) => {
            return error(
                StatusCode::CONFLICT,
                format!("stream {stream:?} is already published"),
            )
        }
        Err(RegisterError::AtCapacity) => {
            return unavailable("server at capacity (max_sessions)", 5)
        }
    };
    let sent = handle.send(Command::AddSession(Box::new(NewSession {
        id,
        role,
        stream: Some(shared),
        ice_ufrag: negotiated.ufrag,
        rtc: negotiated.rtc,
        pending: None,
        max_layer,
    })));
    if !sent {
        app.registry().remove(id);
        return unavailable("dataplane shard stopped", 5);
    }
    let kind = if role == Role::Publisher {
        "whip"
    } else {
        "whep"
    };
    let location = format!("/{kind}/{stream}/{id}");
    tracing::info!(session = %id, role = role.as_str(), stream, shard = %shard, "session created");
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, location),
            (header::ETAG, format!("\"{id}\"")),
        ],
        negotiated.answer,
    )
        .into_response()
}

fn parse_session_id(id: &str) -> Option<SessionId> {
    if id.len() != 16 {
        return None;
    }
    u64::from_str_radix(id, 16).ok().map(SessionId)
}

/// Find the session a resource URL names, checking the stream matches.
#[allow(clippy::result_large_err)] // The error is the ready HTTP response.
fn resource(app: &App, stream: &str, id: &str, method: &Method) -> Result<SessionEntry, Response> {
    let not_found = || error(StatusCode::NOT_FOUND, "no such session");
    let id = parse_session_id(id).ok_or_else(not_found)?;
    let reg = app.registry();
    let entry = reg.session(id).ok_or_else(not_found)?;
    if entry.stream != stream {
        return Err(not_found());
    }
    let _ = method;
    Ok(entry.clone())
}

async fn resource_delete(
    State(app): State<AppState>,
    Path((stream, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(res) = authorize(&app, &headers) {
        return res;
    }
    let entry = match resource(&app, &stream, &id, &Method::DELETE) {
        Ok(e) => e,
        Err(r) => return r,
    };
    end_session(&app, &entry);
    (StatusCode::OK, "session ended\n").into_response()
}

/// `POST /whep/{stream}/{id}/layer?max=low|mid|high|auto`: change a viewer's
/// simulcast cap during the session; the switch happens at the next keyframe.
async fn whep_layer(
    State(app): State<AppState>,
    Path((stream, id)): Path<(String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(res) = authorize(&app, &headers) {
        return res;
    }
    let entry = match resource(&app, &stream, &id, &Method::POST) {
        Ok(e) => e,
        Err(r) => return r,
    };
    if entry.role != Role::Viewer {
        return error(
            StatusCode::BAD_REQUEST,
            "layer applies to WHEP viewers only",
        );
    }
    let max = match parse_layer(q.get("max").map(String::as_str)) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Some(h) = app.dataplane.shard(entry.shard) {
        h.send(Command::SetMaxLayer {
            id: entry.id,
            mid: None,
            max,
        });
    }
    (StatusCode::NO_CONTENT, "").into_response()
}

#[allow(clippy::result_large_err)] // The error is the ready HTTP response.
fn parse_layer(v: Option<&str>) -> Result<Option<u8>, Response> {
    match v {
        None | Some("auto") => Ok(None),
        Some("low" | "l" | "q" | "0") => Ok(Some(0)),
        Some("mid" | "m" | "h" | "1") => Ok(Some(1)),
        Some("high" | "f" | "2") => Ok(Some(2)),
        Some(other) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("layer {other:?} is not one of auto, low, mid, high, 0, 1, 2"),
        )),
    }
}

/// Forget a session now and tell its shard to close it.
pub fn end_session(app: &App, entry: &SessionEntry) {
    app.registry().remove(entry.id);
    if let Some(h) = app.dataplane.shard(entry.shard) {
        h.send(Command::RemoveSession(entry.id));
    }
}

async fn resource_patch(
    State(app): State<AppState>,
    Path((stream, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(res) = authorize(&app, &headers) {
        return res;
    }
    if let Err(r) = resource(&app, &stream, &id, &Method::PATCH) {
        return r;
    }
    // The server is ICE-lite with its one candidate in the answer; trickle and
    // ICE restarts are not supported, which RFC 9725 §4.3.1 answers with 405.
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE and ICE restart are not supported; the answer carries the only candidate",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS"));
    r
}

/// JSON body helper for the admin API.
pub fn json<T: serde::Serialize>(v: T) -> Response {
    Json(v).into_response()
}
