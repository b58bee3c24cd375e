//! The embedded web client: plain HTML, JS and CSS compiled into the binary.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE: &str = include_str!("../web/style.css");
const DASHBOARD: &str = include_str!("../web/dashboard.html");
const DASHBOARD_JS: &str = include_str!("../web/dashboard.js");

/// `/dashboard`: the live dashboard page.
pub async fn dashboard() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DASHBOARD,
    )
}

/// `/dashboard.js`: the dashboard's script.
pub async fn dashboard_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        DASHBOARD_JS,
    )
}

const ROOM: &str = include_str!("../web/room.html");
const ROOM_JS: &str = include_str!("../web/room.js");
const ROOM_CSS: &str = include_str!("../web/room.css");

/// `/`: the room (conferencing) page.
pub async fn room() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], ROOM)
}

/// `/room.js`: the room page's script.
pub async fn room_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        ROOM_JS,
    )
}

/// `/room.css`: the room page's style.
pub async fn room_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        ROOM_CSS,
    )
}

/// `/broadcast`: the WHIP/WHEP publish-and-watch page.
pub async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX)
}

/// `/app.js`: the broadcast page's script.
pub async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

/// `/style.css`: the broadcast page's style.
pub async fn style_css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

const WEBRTC_JS: &str = include_str!("../web/webrtc.js");

/// `/webrtc.js`: what the broadcast and room pages share (ICE gathering).
pub async fn webrtc_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        WEBRTC_JS,
    )
}
