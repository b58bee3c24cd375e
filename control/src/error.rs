//! Every HTTP refusal as one [`ApiError`], grouped by whose fault it is, and
//! how it becomes a response: a status plus a one-line plain-text reason.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::AuthError;
use crate::negotiate::NegotiateError;
use crate::sessions::PlaceError;

/// Why an HTTP request was refused. `Display` is the reason sent in the body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    // The request itself is wrong.
    /// 415: a WHIP/WHEP POST that is not `application/sdp`.
    #[error("Content-Type must be application/sdp, got {0:?}")]
    NotSdp(String),
    /// 400: a stream name outside the allowed alphabet or length.
    #[error("stream name must be 1-128 characters of A-Z a-z 0-9 - _ .")]
    BadStreamName,
    /// 400: the offer's bytes are not UTF-8.
    #[error("SDP offer is not UTF-8")]
    OfferNotUtf8,
    /// 400 or 422: an offer that cannot be answered.
    #[error("{}", .0.reason())]
    Negotiate(NegotiateError),
    /// 400: a simulcast layer name that is not one of the known ones.
    #[error("layer {0:?} is not one of auto, low, mid, high, 0, 1, 2")]
    BadLayer(String),
    /// 400: a VP8 temporal layer that is not one of the known ones.
    #[error("temporal layer {0:?} is not one of auto, 0, 1, 2")]
    BadTemporal(String),
    /// 400: a layer change for a publisher.
    #[error("layer applies to WHEP viewers only")]
    LayerNotForPublisher,
    /// 400: `/ws` without its room and peer.
    #[error("roomId and peerId query parameters are required")]
    RoomQueryMissing,
    /// 400: `/ws` with a room or peer id outside the allowed alphabet or length.
    #[error("roomId and peerId must be 1-64 characters of A-Z a-z 0-9 - _ .")]
    RoomQueryInvalid,
    /// 413: a body over `max_body`.
    #[error("request body too large (over max_body)")]
    BodyTooLarge,
    /// 408: a body that did not arrive in time.
    #[error("request body not received within {0} s")]
    BodyTimeout(u64),
    /// 415: a WHIP/WHEP PATCH that is not `application/trickle-ice-sdpfrag`.
    #[error("Content-Type must be application/trickle-ice-sdpfrag, got {0:?}")]
    NotSdpFrag(String),
    /// 413: an ICE fragment over [`crate::icefrag::MAX_FRAGMENT`].
    #[error("ICE fragment too large (over 8 KiB)")]
    FragmentTooLarge,
    /// 400: an ICE fragment that cannot be read, or a restart without a password.
    #[error("{0}")]
    BadFragment(String),
    /// 428: a trickle PATCH without `If-Match` (RFC 9725 §4.3.1).
    #[error("If-Match with the ICE session's ETag is required; an ICE restart sends If-Match: *")]
    IfMatchMissing,

    // The request names something that is not there, or not this way.
    /// 404: no route for the path.
    #[error("no such resource")]
    NoSuchResource,
    /// 404: a session id that is unknown (or of another stream).
    #[error("no such session")]
    NoSuchSession,
    /// 404: `/admin/cluster` on a single node.
    #[error("not in a cluster (cluster.redis_url is unset)")]
    NotInCluster,
    /// 404: a stream name that is unknown.
    #[error("no such stream")]
    NoSuchStream,
    /// 405: a method the route does not serve.
    #[error("method not allowed here")]
    MethodNotAllowed,
    /// 405: trickle ICE or an ICE restart (RFC 9725 §4.3.1) of a session
    /// that has no WHIP/WHEP ICE state, with `Allow`.
    #[error("trickle ICE and ICE restart are not supported for this session")]
    TrickleNotSupported,
    /// 412: a PATCH whose `If-Match` names another ICE session (RFC 9725 §4.3.1).
    #[error("If-Match does not name the current ICE session; use the latest ETag, or If-Match: * to restart ICE")]
    IceSessionChanged,

    // Credentials.
    /// 401 (with `WWW-Authenticate: Bearer`) or 403: a stream or room token refused.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// 401: the admin API was called without a bearer token.
    #[error("missing bearer token: send Authorization: Bearer <admin_token>")]
    AdminTokenMissing,
    /// 403: the admin API was called with another token.
    #[error("wrong admin token")]
    AdminTokenWrong,
    /// 403: a valid token for the stream that did not create this session.
    #[error("this token did not create the session; use the token that did, or the admin token")]
    NotOwner,
    /// 403: tokens are on but no admin token is configured.
    #[error("admin API disabled: set admin_token to enable it")]
    AdminDisabled,

    // Conflicts with what exists.
    /// 409: the stream has a publisher already.
    #[error("stream {0:?} is already published")]
    AlreadyPublished(String),
    /// 421 with `Location`: a room join on a node that is not the room's home.
    #[error("room {room:?} lives on node {node}; join at {url}")]
    RoomElsewhere {
        /// The room.
        room: String,
        /// The node hosting it.
        node: String,
        /// That node's `/ws` URL for the room.
        url: String,
    },
    /// 409: a second WebSocket for a peer id already in the room.
    #[error("peer id already in use in this room")]
    PeerIdInUse,

    // Over a limit on what one source may take.
    /// 429 with `Retry-After`: WHIP/WHEP POSTs, ICE restarts or room joins over `signal_rate`.
    #[error("too many requests from this address; retry after {0} s")]
    RateLimited(u32),
    /// 503 with `Retry-After: 30`: `max_sessions_per_ip` reached.
    #[error("too many sessions from this address (max_sessions_per_ip)")]
    SessionsPerIp,
    /// 503 with `Retry-After: 10`: `max_room_peers` reached.
    #[error("room is full (max_room_peers)")]
    RoomFull,
    /// 503 with `Retry-After: 10`: `max_rooms` reached.
    #[error("too many rooms (max_rooms)")]
    TooManyRooms,

    // The server cannot take it now.
    /// 503 with `Retry-After: 30`: the node drains; another node should take it.
    #[error("server is draining; try another node")]
    Draining,
    /// 503 with `Retry-After: 30`: a room join while the node drains.
    #[error("server is draining")]
    RoomsDraining,
    /// 503 with `Retry-After: 5`: `max_sessions` reached.
    #[error("server at capacity (max_sessions)")]
    AtCapacity,
    /// 503 with `Retry-After: 5`: no shard to place the session on.
    #[error("no dataplane shard available")]
    NoShard,
    /// 503 with `Retry-After: 5`: the cluster registry cannot be asked, so a stream or
    /// room claim cannot be guaranteed.
    #[error("cluster registry unreachable; cannot claim {0} now")]
    RegistryUnavailable(&'static str),
    /// 503 with `Retry-After: 5`: a room held by a node whose record has expired.
    #[error("room {0:?} is held by a node that is not answering; retry shortly")]
    RoomHomeGone(String),
    /// 503 with `Retry-After: 5`: the chosen shard stopped taking commands.
    #[error("dataplane shard stopped")]
    ShardStopped,
    /// 503 with `Retry-After: 1`: the shard did not apply an ICE restart; the
    /// session keeps its ICE credentials (RFC 9725 §4.3.2).
    #[error("ICE restart not applied ({0}); the session keeps its ICE credentials, retry")]
    RestartNotApplied(String),
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            NotSdp(_) | NotSdpFrag(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BadStreamName | OfferNotUtf8 | BadLayer(_) | BadTemporal(_) | LayerNotForPublisher
            | RoomQueryMissing | RoomQueryInvalid | BadFragment(_) => StatusCode::BAD_REQUEST,
            Negotiate(NegotiateError::Malformed(_)) => StatusCode::BAD_REQUEST,
            Negotiate(NegotiateError::Unsupported(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            BodyTooLarge | FragmentTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            IfMatchMissing => StatusCode::PRECONDITION_REQUIRED,
            IceSessionChanged => StatusCode::PRECONDITION_FAILED,
            BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            SessionsPerIp | RoomFull | TooManyRooms => StatusCode::SERVICE_UNAVAILABLE,
            NoSuchResource | NoSuchSession | NoSuchStream | NotInCluster => StatusCode::NOT_FOUND,
            MethodNotAllowed | TrickleNotSupported => StatusCode::METHOD_NOT_ALLOWED,
            Auth(e) if e.is_forbidden() => StatusCode::FORBIDDEN,
            Auth(_) | AdminTokenMissing => StatusCode::UNAUTHORIZED,
            AdminTokenWrong | AdminDisabled | NotOwner => StatusCode::FORBIDDEN,
            AlreadyPublished(_) | PeerIdInUse => StatusCode::CONFLICT,
            RoomElsewhere { .. } => StatusCode::MISDIRECTED_REQUEST,
            Draining
            | RoomsDraining
            | AtCapacity
            | NoShard
            | ShardStopped
            | RegistryUnavailable(_)
            | RoomHomeGone(_)
            | RestartNotApplied(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Seconds a client should wait before trying again, for 503s that say so.
    fn retry_after(&self) -> Option<u32> {
        match self {
            ApiError::Draining | ApiError::RoomsDraining | ApiError::SessionsPerIp => Some(30),
            ApiError::RateLimited(secs) => Some(*secs),
            ApiError::RestartNotApplied(_) => Some(1),
            ApiError::RoomFull | ApiError::TooManyRooms => Some(10),
            ApiError::AtCapacity
            | ApiError::NoShard
            | ApiError::ShardStopped
            | ApiError::RegistryUnavailable(_)
            | ApiError::RoomHomeGone(_) => Some(5),
            _ => None,
        }
    }
}

impl From<PlaceError> for ApiError {
    fn from(e: PlaceError) -> Self {
        match e {
            PlaceError::AlreadyPublished(stream) => ApiError::AlreadyPublished(stream),
            PlaceError::AtCapacity => ApiError::AtCapacity,
            PlaceError::SessionsPerIp => ApiError::SessionsPerIp,
            PlaceError::NoShard => ApiError::NoShard,
            PlaceError::Negotiate(e) => ApiError::Negotiate(e),
            PlaceError::ShardStopped => ApiError::ShardStopped,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut res = plain(status, self.to_string());
        let h = res.headers_mut();
        if let Some(secs) = self.retry_after() {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ApiError::RoomElsewhere { url, .. } = &self {
            if let Ok(v) = HeaderValue::from_str(url) {
                h.insert(header::LOCATION, v);
            }
        }
        match self {
            ApiError::Auth(_) | ApiError::AdminTokenMissing
                if status == StatusCode::UNAUTHORIZED =>
            {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TrickleNotSupported => {
                h.insert(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS"));
            }
            _ => {}
        }
        res
    }
}

/// A status with the first line of `reason` as a plain-text body.
pub fn plain(status: StatusCode, reason: impl AsRef<str>) -> Response {
    let line = reason.as_ref().lines().next().unwrap_or("");
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{line}\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_refusal_says_when_to_retry() {
        let res = ApiError::AtCapacity.into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "5");
        let res = ApiError::Draining.into_response();
        assert_eq!(res.headers()[header::RETRY_AFTER], "30");
        let res = ApiError::RoomsDraining.into_response();
        assert_eq!(res.headers()[header::RETRY_AFTER], "30");
        let res = ApiError::RateLimited(2).into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn missing_tokens_ask_for_a_bearer_and_a_denied_grant_does_not() {
        let res = ApiError::Auth(AuthError::Missing).into_response();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let res = ApiError::Auth(AuthError::Forbidden("x".into())).into_response();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert!(!res.headers().contains_key(header::WWW_AUTHENTICATE));
        let res = ApiError::AdminTokenMissing.into_response();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn negotiation_reason_is_the_bare_message() {
        let e = ApiError::Negotiate(NegotiateError::Malformed("no m= section".into()));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.to_string(), "no m= section");
    }
}
