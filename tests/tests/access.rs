//! Who sees and may change what: per-session metrics only for the admin, and a
//! session resource only for the token that created it (or the admin).

use std::time::Duration;

use sluice::auth::{unix_now, Claims, TokenKey};
use sluice_bench::client::{self, MediaSpec};
use sluice_tests::attack::get_metrics;
use sluice_tests::{session_counts, start, wait_until, whip};

const SECRET: &str = "s3cret";

fn stream_token(stream: &str, publish: bool, subscribe: bool) -> String {
    TokenKey::new(SECRET.as_bytes()).mint(&Claims {
        exp: unix_now() + 600,
        stream: Some(stream.into()),
        publish,
        subscribe,
        ..Default::default()
    })
}

/// The session id of a resource URL (its last segment: the id, then the key).
fn session_id(location: &str) -> String {
    let name = location.rsplit('/').next().unwrap();
    assert_eq!(name.len(), 32, "{location}");
    name[..16].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_session_metrics_go_to_the_admin_only() {
    for admin in [true, false] {
        let server = start(1, |c| {
            c.secret = Some(SECRET.into());
            c.admin_token = admin.then(|| "admin".into());
        })
        .await;
        let http = client::http_client(true);
        let mut ep = whip(&server, "cam");
        ep.token = Some(stream_token("cam", true, false));
        let publisher = client::publish(&http, &ep, MediaSpec::default())
            .await
            .unwrap();
        let id = session_id(publisher.location.as_deref().unwrap());
        let mut shown = false;
        for _ in 0..40 {
            let (status, body) = get_metrics(&http, &server, Some("admin")).await;
            assert_eq!(status, 200);
            if body.contains(&id) {
                shown = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // With an admin token the admin sees the session; with a secret and no
        // admin token nobody does.
        assert_eq!(shown, admin, "admin token configured: {admin}");
        for token in [None, Some("nope"), ep.token.as_deref()] {
            let (status, body) = get_metrics(&http, &server, token).await;
            assert_eq!(status, 200);
            assert!(!body.contains(&id), "{token:?} sees session {id}");
            assert!(!body.contains("sluice_session_"), "{token:?}");
            assert!(body.contains("sluice_sessions{role=\"publisher\"} 1"));
        }
        publisher.close().await.unwrap();
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_creating_token_ends_its_session_and_a_wrong_key_finds_nothing() {
    let server = start(1, |c| c.secret = Some(SECRET.into())).await;
    let http = client::http_client(true);
    let mut ep = whip(&server, "cam");
    let owner = stream_token("cam", true, false);
    ep.token = Some(owner.clone());
    let publisher = client::publish(&http, &ep, MediaSpec::default())
        .await
        .unwrap();
    let url = publisher.location.clone().unwrap();
    // The right id with another key is no resource at all.
    let mut forged = url.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let res = http
        .delete(&forged)
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    assert_eq!(session_counts(&server).0, 1);
    // A viewer token for the stream is the wrong role.
    let res = http
        .delete(&url)
        .bearer_auth(stream_token("cam", false, true))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    assert_eq!(res.text().await.unwrap().lines().count(), 1);
    let res = http.delete(&url).bearer_auth(&owner).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(wait_until(Duration::from_secs(3), || session_counts(&server).0 == 0).await);
    publisher.close().await.unwrap();
    server.shutdown().await;
}
