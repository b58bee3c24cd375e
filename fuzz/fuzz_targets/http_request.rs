//! The HTTPS request path in-process: the axum router over a real `App`
//! (one shard on loopback), driven with `tower::ServiceExt::oneshot`, so
//! WHIP/WHEP (content type, stream names, offers, layers, resource ids),
//! tokens, admin and the fallbacks all see fuzzed requests.
//!
//! Input: `o` or `s` (open dev mode or token mode), then a request as text:
//! `METHOD TARGET\nName: value\n...\n\nbody`.

#![no_main]

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use libfuzzer_sys::fuzz_target;
use sluice::app::App;
use tower::ServiceExt;

struct Env {
    rt: tokio::runtime::Runtime,
    open: (Arc<App>, Router),
    tokens: (Arc<App>, Router),
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        sluice_fuzz::abort_on_uncaught_panics();
        let make = |tokens| {
            let app = sluice_fuzz::app(tokens);
            (app.clone(), sluice::routes::router(app))
        };
        Env {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            open: make(false),
            tokens: make(true),
        }
    })
}

/// The request the text describes, if it is one `http` can build.
fn request(text: &[u8]) -> Option<Request<Body>> {
    let split = text.windows(2).position(|w| w == b"\n\n");
    let (head, body) = match split {
        Some(i) => (&text[..i], text[i + 2..].to_vec()),
        None => (text, Vec::new()),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split('\n');
    let (method, target) = lines.next()?.split_once(' ')?;
    let mut b = Request::builder().method(method).uri(target);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        b = b.header(name.trim(), value.trim_start());
    }
    // What the server's listener attaches to every request: the peer's address.
    let peer: std::net::SocketAddr = ([127, 0, 0, 1], 40_000).into();
    b = b.extension(axum::extract::ConnectInfo(peer));
    b.body(Body::from(body)).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some(req) = request(rest) else {
        return;
    };
    let env = env();
    let (app, router) = if mode == b's' { &env.tokens } else { &env.open };
    env.rt.block_on(async {
        let res = router.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(res.headers().contains_key("access-control-allow-origin"));
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("response body");
        if status.is_client_error() || status.is_server_error() {
            // Errors are a status and a one-line reason (README).
            let text = String::from_utf8_lossy(&body);
            assert!(
                !text.trim().is_empty() && text.trim_end().lines().count() == 1,
                "{status} without a one-line reason: {text:?}"
            );
        }
    });
    // POST /admin/drain would refuse every later request.
    app.draining.store(false, Ordering::Relaxed);
});
