//! The embedded web client: plain HTML, JS and CSS compiled into the binary.
//!
//! Pages: `/` the room (conferencing) page, `/broadcast` the WHIP/WHEP
//! publish-and-watch page, `/dashboard` the live dashboard. Their scripts are
//! classic scripts that share one global scope, loaded in the order the page
//! lists them.

use axum::http::header;
use axum::routing::{get, MethodRouter};

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every embedded file: the path it is served at, its content type, its text.
pub const FILES: &[(&str, &str, &str)] = &[
    ("/", HTML, include_str!("../web/room.html")),
    (
        "/room-signaling.js",
        JS,
        include_str!("../web/room-signaling.js"),
    ),
    ("/room-tiles.js", JS, include_str!("../web/room-tiles.js")),
    (
        "/room-session.js",
        JS,
        include_str!("../web/room-session.js"),
    ),
    ("/room.js", JS, include_str!("../web/room.js")),
    ("/room.css", CSS, include_str!("../web/room.css")),
    ("/broadcast", HTML, include_str!("../web/index.html")),
    ("/app.js", JS, include_str!("../web/app.js")),
    ("/style.css", CSS, include_str!("../web/style.css")),
    ("/dashboard", HTML, include_str!("../web/dashboard.html")),
    ("/dashboard.js", JS, include_str!("../web/dashboard.js")),
    // What the broadcast and room pages share (ICE gathering).
    ("/webrtc.js", JS, include_str!("../web/webrtc.js")),
];

/// The GET handler that serves one embedded file.
pub fn serve<S: Clone + Send + Sync + 'static>(
    content_type: &'static str,
    text: &'static str,
) -> MethodRouter<S> {
    get(move || async move { ([(header::CONTENT_TYPE, content_type)], text) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every script and style sheet a page names is one of the embedded files.
    #[test]
    fn every_file_a_page_names_is_served() {
        let served: Vec<&str> = FILES.iter().map(|f| f.0).collect();
        for (_, _, text) in FILES.iter().filter(|f| f.1 == HTML) {
            for attr in ["src=\"", "href=\""] {
                for part in text.split(attr).skip(1) {
                    let path = &part[..part.find('"').expect("closing quote")];
                    if path.ends_with(".js") || path.ends_with(".css") {
                        assert!(served.contains(&path), "{path} is not served");
                    }
                }
            }
        }
    }
}
