//! The node-to-node relay endpoints: `POST /cluster/v1/relay` (a downstream
//! node pulls a stream) and `POST /cluster/v1/relay/release`. Both are
//! signed with the cluster secret; on a single node they do not exist (404).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::call::{self, PullRequest, ReleaseRequest};
use super::{serve, serve_release, PullError};
use crate::app::App;
use crate::error::plain;

/// The signature check and body of a node-to-node call, or the refusal.
fn check<T: serde::de::DeserializeOwned>(
    app: &App,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, (StatusCode, String)> {
    let Some(cluster) = app.cluster.as_ref() else {
        return Err((StatusCode::NOT_FOUND, "not in a cluster".into()));
    };
    let auth = headers.get(call::AUTH_HEADER).and_then(|v| v.to_str().ok());
    call::verify(cluster.secret(), path, body, auth)
        .map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))?;
    serde_json::from_slice(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad relay call: {e}")))
}

/// `POST /cluster/v1/relay`.
pub async fn pull(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: PullRequest = match check(&app, call::PULL_PATH, &headers, &body) {
        Ok(r) => r,
        Err((status, reason)) => return plain(status, reason),
    };
    match serve(&app, req).await {
        Ok(answer) => signed_json(&app, call::PULL_PATH, &answer),
        Err(e) => {
            let status = match e {
                PullError::NotPublished => StatusCode::NOT_FOUND,
                PullError::TooDeep => StatusCode::LOOP_DETECTED,
                PullError::Upstream(..) => StatusCode::BAD_GATEWAY,
                PullError::Unavailable | PullError::NoShard => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut r = plain(status, e.to_string());
            if status == StatusCode::SERVICE_UNAVAILABLE {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            r
        }
    }
}

/// `POST /cluster/v1/relay/release`.
pub async fn release(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: ReleaseRequest = match check(&app, call::RELEASE_PATH, &headers, &body) {
        Ok(r) => r,
        Err((status, reason)) => return plain(status, reason),
    };
    let released = serve_release(&app, req);
    signed_json(
        &app,
        call::RELEASE_PATH,
        &serde_json::json!({ "released": released }),
    )
}

/// A JSON answer signed for the call to `path`.
fn signed_json<T: serde::Serialize>(app: &App, path: &str, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let secret = app.cluster.as_ref().map(|c| c.secret()).unwrap_or_default();
    let sig = call::sign(secret, &call::answer_path(path), &body);
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&sig) {
        h.insert(call::AUTH_HEADER, v);
    }
    r
}
