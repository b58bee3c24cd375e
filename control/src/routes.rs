//! The router: which path and method go to which handler, CORS headers on
//! every response, preflight answers and the fallbacks.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

use crate::app::App;
use crate::error::ApiError;
use crate::limits::Refusal;
use crate::{admin, metrics, relay, rooms, web, whip};

/// Every route of the HTTPS listener over `app`.
pub fn router(app: Arc<App>) -> Router {
    let max_body = app.config.max_body;
    let mut files = Router::new();
    for &(path, content_type, text) in web::FILES {
        files = files.route(path, web::serve(content_type, text));
    }
    files
        .route("/ws", get(rooms::socket::ws_handler))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route(
            "/whip/{stream}",
            post(whip::whip_post)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .route(
            "/whep/{stream}",
            post(whip::whep_post)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .route(
            "/whip/{stream}/{id}",
            delete(whip::resource_delete)
                .patch(whip::resource_patch)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .route(
            "/whep/{stream}/{id}",
            delete(whip::resource_delete)
                .patch(whip::resource_patch)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .route("/whep/{stream}/{id}/layer", post(whip::whep_layer))
        .route("/admin/shards", get(admin::shards))
        .route("/admin/streams", get(admin::streams))
        .route("/admin/streams/{stream}", delete(admin::close_stream))
        .route("/admin/sessions", get(admin::sessions))
        .route(
            "/admin/sessions/{id}",
            get(admin::session).delete(admin::kick),
        )
        .route("/admin/drain", post(admin::drain))
        .route("/admin/rooms", get(admin::rooms))
        .route(relay::call::PULL_PATH, post(relay::http::pull))
        .route(relay::call::RELEASE_PATH, post(relay::http::release))
        .route("/admin/cluster", get(admin::cluster))
        .fallback(not_found)
        // Without it, a method a route does not take gets axum's bodiless 405.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(app.clone(), read_body))
        .layer(axum::middleware::map_response(cors))
        .with_state(app)
}

/// Longest a request body may take to arrive, whatever its size.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Read the whole body (at most `max_body`) within [`BODY_TIMEOUT`] before any
/// handler runs, so a client that dribbles or stalls a body holds nothing for long.
async fn read_body(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, app.config.max_body);
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => ApiError::BodyTooLarge.into_response(),
        Err(_) => {
            app.limits.refuse(Refusal::BodyTimeout);
            let mut res = ApiError::BodyTimeout(BODY_TIMEOUT.as_secs()).into_response();
            // Most of the body is still on the wire: do not keep the connection.
            res.headers_mut()
                .insert("connection", HeaderValue::from_static("close"));
            res
        }
    }
}

async fn cors(res: Response) -> Response {
    // axum's own body-limit rejection is multi-line-free but vague; say what to do
    // (before the CORS headers go on, so the replacement has them too).
    let mut res = if res.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::BodyTooLarge.into_response()
    } else {
        res
    };
    let h = res.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("Location, ETag, Link, Accept-Patch, Retry-After"),
    );
    res
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn not_found() -> ApiError {
    ApiError::NoSuchResource
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            ("accept-post", "application/sdp"),
            ("accept-patch", crate::icefrag::SDPFRAG),
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use sluice_dataplane::{Dataplane, DataplaneConfig, IoKind};
    use tower::ServiceExt;

    use super::*;
    use crate::negotiate::Negotiator;
    use crate::Config;

    #[tokio::test]
    async fn a_method_a_route_does_not_take_gets_405_with_a_one_line_reason() {
        let dp = DataplaneConfig {
            shards: 1,
            media_port: 0,
            io: IoKind::Std,
            ..DataplaneConfig::default()
        };
        let (tx, _rx) = crossbeam_channel::unbounded();
        let dataplane = Dataplane::start(&dp, tx).unwrap();
        let app = Arc::new(App::new(
            Config::default(),
            dataplane,
            Negotiator::new().unwrap(),
            String::new(),
        ));
        let router = router(app.clone());
        // `GEV /` was found by fuzzing (fuzz/ target http_request).
        for (method, path) in [
            ("GEV", "/"),
            ("POST", "/healthz"),
            ("PUT", "/metrics"),
            ("GET", "/whep/cam/00000000000000ff/layer"),
        ] {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap();
            let res = router.clone().oneshot(req).await.unwrap();
            assert_eq!(
                res.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
            let text = String::from_utf8(body.to_vec()).unwrap();
            assert!(
                !text.trim().is_empty() && text.trim_end().lines().count() == 1,
                "{method} {path}: {text:?}"
            );
        }
        app.dataplane.shutdown();
    }
}
