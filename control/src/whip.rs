//! WHIP (RFC 9725) and WHEP handlers: create a session from an SDP offer, end it
//! (`DELETE`), restart its ICE (`PATCH`), change a viewer's simulcast cap.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sluice_dataplane::str0m::IceCreds;
use sluice_dataplane::{Command, IceRestart, Role, SessionId, ShardError};

use crate::app::App;
use crate::authz::{self, authorize};
use crate::cluster::ClaimError;
use crate::error::ApiError;
use crate::icefrag::{self, Fragment, IfMatch};
use crate::registry::SessionEntry;
use crate::sessions;

/// Take one WHIP/WHEP POST, ICE restart or room join of `source` from its
/// rate budget: 429 over it.
pub fn take_signal(app: &App, source: SocketAddr) -> Result<(), ApiError> {
    app.limits
        .take_signal(source.ip(), Instant::now())
        .map_err(|wait| ApiError::RateLimited(wait.as_secs_f64().ceil().max(1.0) as u32))
}

/// `POST /whip/{stream}`: publish.
pub async fn whip_post(
    State(app): State<Arc<App>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    create_session(
        &app,
        source,
        &stream,
        Role::Publisher,
        &headers,
        &body,
        (None, None),
        None,
    )
    .await
}

/// `POST /whep/{stream}`: watch. `?layer=low|mid|high` (or 0, 1, 2) caps the
/// simulcast layer, `?temporal=0|1|2` the VP8 temporal layer (frame rate).
pub async fn whep_post(
    State(app): State<Arc<App>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    Path(stream): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let max_layer = parse_layer(q.get("layer").map(String::as_str))?;
    let max_temporal = parse_temporal(q.get("temporal").map(String::as_str))?;
    create_session(
        &app,
        source,
        &stream,
        Role::Viewer,
        &headers,
        &body,
        (max_layer, max_temporal),
        Some(uri.query().unwrap_or("")),
    )
    .await
}

/// Create a session for an offer. `redirect_query` (WHEP: the request's
/// query) lets a request that passed every check be redirected to a less
/// loaded node (`cluster.redirect`) instead.
#[allow(clippy::too_many_arguments)]
async fn create_session(
    app: &App,
    source: SocketAddr,
    stream: &str,
    role: Role,
    headers: &HeaderMap,
    body: &[u8],
    (max_layer, max_temporal): (Option<u8>, Option<u8>),
    redirect_query: Option<&str>,
) -> Result<Response, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ctype.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/sdp") {
        return Err(ApiError::NotSdp(ctype.to_string()));
    }
    if !valid_name(stream) {
        return Err(ApiError::BadStreamName);
    }
    if let Some(claims) = authorize(app, headers)? {
        claims.allows_stream(stream, role == Role::Publisher)?;
    }
    if app.is_draining() {
        return Err(ApiError::Draining);
    }
    take_signal(app, source)?;
    if let Some(r) = match redirect_query {
        Some(query) => redirect(app, stream, query).await,
        None => None,
    } {
        return Ok(r);
    }
    let offer = std::str::from_utf8(body).map_err(|_| ApiError::OfferNotUtf8)?;
    let owner = authz::owner_of(app, headers);
    // On a cluster a publisher first claims the stream; the guard holds it through placement.
    let _claim = match (&app.cluster, role) {
        (Some(c), Role::Publisher) => Some(c.claim_stream(stream).await.map_err(|e| match e {
            ClaimError::Held { .. } => ApiError::AlreadyPublished(stream.to_string()),
            ClaimError::Registry(_) => ApiError::RegistryUnavailable("the stream"),
        })?),
        _ => None,
    };
    if role == Role::Viewer {
        admit_remote_viewer(app, stream)?;
    }
    let (placed, answer) = sessions::answer(app, stream, role, offer, owner, Some(source.ip()))
        .map_err(|e| {
            if matches!(e, sessions::PlaceError::SessionsPerIp) {
                app.limits.refuse(crate::limits::Refusal::SessionsPerIp);
            }
            e
        })?;
    let (id, shard, name, etag) = (
        placed.id,
        placed.shard,
        placed.resource_name(),
        placed.etag(),
    );
    placed.start(app, max_layer, max_temporal)?;
    if role == Role::Viewer && app.cluster.is_some() {
        // The relay task pulls the stream from its origin now, not at its next tick.
        app.relays.wake.notify_one();
    }
    let kind = if role == Role::Publisher {
        "whip"
    } else {
        "whep"
    };
    let location = format!("/{kind}/{stream}/{name}");
    tracing::info!(session = %id, role = role.as_str(), stream, shard = %shard, "session created");
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, location),
            (header::ETAG, etag),
            (
                header::HeaderName::from_static("accept-patch"),
                icefrag::SDPFRAG.to_string(),
            ),
        ],
        answer,
    )
        .into_response())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn parse_hex16(s: &str) -> Option<u64> {
    // from_str_radix alone would take a leading '+'.
    (s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

/// A resource URL's last segment: the session id then its key, 16 hex digits each.
fn parse_resource_name(name: &str) -> Option<(SessionId, u64)> {
    if name.len() != 32 || !name.is_ascii() {
        return None;
    }
    let (id, key) = name.split_at(16);
    Some((SessionId(parse_hex16(id)?), parse_hex16(key)?))
}

/// The session a resource URL names (stream and key must match, the key compared in
/// constant time), for a caller allowed to act on it. A layer change (`viewer_only`)
/// on a publisher is a 400 before the grant is looked at.
fn resource(
    app: &App,
    headers: &HeaderMap,
    stream: &str,
    name: &str,
    viewer_only: bool,
) -> Result<SessionEntry, ApiError> {
    let caller = authz::resource_caller(app, headers)?;
    let (id, key) = parse_resource_name(name).ok_or(ApiError::NoSuchSession)?;
    let entry = {
        let reg = app.registry();
        match reg.session(id) {
            Some(e)
                if e.stream == stream
                    && authz::constant_time_eq(
                        &e.capability.key.to_be_bytes(),
                        &key.to_be_bytes(),
                    ) =>
            {
                e.clone()
            }
            _ => return Err(ApiError::NoSuchSession),
        }
    };
    if viewer_only && entry.role != Role::Viewer {
        return Err(ApiError::LayerNotForPublisher);
    }
    caller.may_act_on(&entry)?;
    Ok(entry)
}

/// `DELETE /whip|whep/{stream}/{id}`: end the session.
pub async fn resource_delete(
    State(app): State<Arc<App>>,
    Path((stream, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let entry = resource(&app, &headers, &stream, &name, false)?;
    sessions::end(&app, entry.id, entry.shard);
    Ok((StatusCode::OK, "session ended\n").into_response())
}

/// `PATCH /whip|whep/{stream}/{id}` with an ICE fragment (RFC 9725 §4.3):
/// new client credentials restart ICE (`200`, the server's new ones); a
/// trickled candidate needs nothing from an ICE-lite server (`204`). A
/// restart costs new credentials and a round trip to the shard, so it is
/// taken from the source's signal rate as a POST is; trickle is not.
pub async fn resource_patch(
    State(app): State<Arc<App>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    Path((stream, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let entry = resource(&app, &headers, &stream, &name, false)?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case(icefrag::SDPFRAG)
    {
        return Err(ApiError::NotSdpFrag(ctype.to_string()));
    }
    if body.len() > icefrag::MAX_FRAGMENT {
        return Err(ApiError::FragmentTooLarge);
    }
    let frag = Fragment::parse(&body).map_err(ApiError::BadFragment)?;
    let Some(ice) = entry.ice.clone() else {
        return Err(ApiError::TrickleNotSupported);
    };
    // One PATCH of a session at a time, so its ETag follows its shard's credentials.
    let mut ice = ice.lock().await;
    let cond = IfMatch::of(&headers);
    if !cond.matches(&ice.etag()) {
        return Err(ApiError::IceSessionChanged);
    }
    let client_ufrag = match frag.ufrag {
        Some(u) if u != ice.remote_ufrag => u,
        _ if cond == IfMatch::Absent => return Err(ApiError::IfMatchMissing),
        // Candidates only: an ICE-lite server answers whatever checks come.
        _ => return Ok(StatusCode::NO_CONTENT.into_response()),
    };
    let client_pwd = frag.pwd.ok_or_else(|| {
        ApiError::BadFragment("an ICE restart (a new a=ice-ufrag) needs a=ice-pwd".into())
    })?;
    take_signal(&app, source)?;
    let local = IceCreds {
        ufrag: app.negotiator.random_token(8),
        pass: app.negotiator.random_token(24),
    };
    let remote = IceCreds {
        ufrag: client_ufrag.clone(),
        pass: client_pwd,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sent = app.dataplane.shard(entry.shard).is_some_and(|h| {
        h.send(Command::IceRestart(Box::new(IceRestart {
            id: entry.id,
            local: local.clone(),
            remote,
            reply: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })))
    });
    if !sent {
        return Err(ApiError::ShardStopped);
    }
    match rx.await {
        Ok(Ok(())) => {}
        Ok(Err(ShardError::NoSuchSession)) => return Err(ApiError::NoSuchSession),
        Ok(Err(e)) => return Err(ApiError::RestartNotApplied(e.to_string())),
        Err(_) => return Err(ApiError::ShardStopped),
    }
    ice.local_ufrag = local.ufrag;
    ice.remote_ufrag = client_ufrag;
    tracing::info!(session = %entry.id, stream = %stream, "ICE restarted");
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, icefrag::SDPFRAG.to_string()),
            (header::ETAG, ice.etag()),
        ],
        ice.restart_answer(&local.pass),
    )
        .into_response())
}

/// `POST /whep/{stream}/{id}/layer?max=low|mid|high|auto&temporal=0|1|2|auto`:
/// change a viewer's simulcast cap (the switch happens at the next keyframe)
/// and its VP8 temporal cap (down at the next frame, up at a keyframe or a
/// layer sync frame). A parameter left out stays as it was, except that a
/// request with neither lifts the simulcast cap.
pub async fn whep_layer(
    State(app): State<Arc<App>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    Path((stream, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let entry = resource(&app, &headers, &stream, &name, true)?;
    let temporal = q.get("temporal").map(String::as_str);
    let max = match (q.get("max").map(String::as_str), temporal) {
        (None, Some(_)) => None,
        (max, _) => Some(parse_layer(max)?),
    };
    let temporal = temporal.map(|t| parse_temporal(Some(t))).transpose()?;
    // Each change is work for the shard and may ask the publisher for a
    // keyframe: taken from the address's signalling rate like a POST.
    take_signal(&app, source)?;
    if let Some(h) = app.dataplane.shard(entry.shard) {
        if let Some(max) = max {
            h.send(Command::SetMaxLayer {
                id: entry.id,
                mid: None,
                max,
            });
        }
        if let Some(max) = temporal {
            h.send(Command::SetMaxTemporal {
                id: entry.id,
                mid: None,
                max,
            });
        }
    }
    Ok((StatusCode::NO_CONTENT, "").into_response())
}

fn parse_layer(v: Option<&str>) -> Result<Option<u8>, ApiError> {
    match v {
        None | Some("auto") => Ok(None),
        Some("low" | "l" | "q" | "0") => Ok(Some(0)),
        Some("mid" | "m" | "h" | "1") => Ok(Some(1)),
        Some("high" | "f" | "2") => Ok(Some(2)),
        Some(other) => Err(ApiError::BadLayer(other.to_string())),
    }
}

fn parse_temporal(v: Option<&str>) -> Result<Option<u8>, ApiError> {
    match v {
        None | Some("auto") => Ok(None),
        Some(t @ ("0" | "1" | "2")) => Ok(t.parse().ok()),
        Some(other) => Err(ApiError::BadTemporal(other.to_string())),
    }
}

/// On a cluster, a viewer of a stream neither published nor pulled here needs
/// a new cross-node pull, which needs the registry: refused while it is away.
fn admit_remote_viewer(app: &App, stream: &str) -> Result<(), ApiError> {
    let Some(c) = &app.cluster else {
        return Ok(());
    };
    if c.healthy() || app.registry().has_publisher(stream) || app.relays.pulls(stream) {
        return Ok(());
    }
    Err(ApiError::RegistryUnavailable("a relay for the stream"))
}

/// With `cluster.redirect`, the base URL of a node to send a WHEP viewer to:
/// the least loaded live node, when this node's load exceeds it by more than
/// [`REDIRECT_MARGIN`]. Load is the nodes' `sessions / capacity` figure
/// (`cluster::NodeRecord::load`); this node's own is read live, the others'
/// from their last heartbeat. No redirect when the registry cannot answer.
async fn redirect_target(app: &App) -> Option<String> {
    let c = app.cluster.as_ref().filter(|c| c.redirect())?;
    let own = app.cluster_local().load;
    let nodes = c.nodes().await.ok()?;
    let (best, _) = nodes
        .iter()
        .filter(|(n, age)| n.id != c.node_id() && age.as_millis() < u128::from(n.lease_ms))
        .min_by(|a, b| a.0.load.total_cmp(&b.0.load))?;
    (own > best.load + REDIRECT_MARGIN).then(|| best.advertise.trim_end_matches('/').to_string())
}

/// A 307 to [`redirect_target`] for a WHEP request of `stream` with `query`,
/// or `None` to serve it here.
async fn redirect(app: &App, stream: &str, query: &str) -> Option<Response> {
    let to = redirect_target(app).await?;
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let location = HeaderValue::from_str(&format!("{to}/whep/{stream}{query}")).ok()?;
    tracing::info!(stream, location = ?location, "WHEP redirected to a less loaded node");
    let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
    r.headers_mut().insert(header::LOCATION, location);
    Some(r)
}

/// How much more loaded (in `load` units: 0.1 = a tenth of a node's
/// capacity) this node must be than another before WHEP is redirected there.
const REDIRECT_MARGIN: f64 = 0.1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_are_an_id_and_a_key_of_sixteen_hex_digits_each() {
        assert_eq!(
            parse_resource_name("00000000000000ff0123456789abcdef"),
            Some((SessionId(0xff), 0x0123_4567_89ab_cdef))
        );
        assert_eq!(parse_resource_name("00000000000000ff"), None);
        assert_eq!(
            parse_resource_name("zz000000000000ff0123456789abcdef"),
            None
        );
        assert_eq!(
            parse_resource_name("+0000000000000ff0123456789abcdef"),
            None
        );
        assert_eq!(
            parse_resource_name("00000000000000ff0123456789abcdef0"),
            None
        );
    }

    #[test]
    fn layer_names_and_numbers_map_to_the_same_cap() {
        assert_eq!(parse_layer(Some("low")).unwrap(), Some(0));
        assert_eq!(parse_layer(Some("1")).unwrap(), Some(1));
        assert_eq!(parse_layer(Some("auto")).unwrap(), None);
        assert!(matches!(
            parse_layer(Some("ultra")),
            Err(ApiError::BadLayer(_))
        ));
    }

    #[test]
    fn temporal_caps_are_0_to_2_or_auto() {
        assert_eq!(parse_temporal(None).unwrap(), None);
        assert_eq!(parse_temporal(Some("auto")).unwrap(), None);
        assert_eq!(parse_temporal(Some("0")).unwrap(), Some(0));
        assert_eq!(parse_temporal(Some("2")).unwrap(), Some(2));
        for bad in ["3", "-1", "low", "", "00"] {
            assert!(matches!(
                parse_temporal(Some(bad)),
                Err(ApiError::BadTemporal(_))
            ));
        }
    }
}
