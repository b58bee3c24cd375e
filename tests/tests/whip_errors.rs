//! Every WHIP/WHEP error answer, from real HTTP requests; bad input never
//! hurts other sessions.

use std::time::{Duration, Instant};

use sluice::auth::{unix_now, Claims, TokenKey};
use sluice_bench::client::{self, MediaSpec, ViewerMode};
use sluice_tests::{
    packets, publish_and_view, receives_more_than, session_counts, start, wait_until, whep, whip,
};
use str0m::media::{Direction, MediaKind};
use str0m::RtcConfig;

/// An offer from a str0m peer with the given codecs and direction.
fn offer(cfg: RtcConfig, dir: Direction) -> String {
    let mut rtc = cfg.build(Instant::now());
    rtc.add_local_candidate(str0m::Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}

fn good_offer(dir: Direction) -> String {
    offer(RtcConfig::new(), dir)
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    ctype: &str,
    body: String,
    token: Option<&str>,
) -> (u16, String, reqwest::header::HeaderMap) {
    let mut req = http.post(url).header("content-type", ctype).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, res.text().await.unwrap(), headers)
}

/// One line of text: the reason.
fn assert_one_line(body: &str) {
    assert!(!body.trim().is_empty(), "empty error body");
    assert_eq!(
        body.trim_end().lines().count(),
        1,
        "error body is one line: {body:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unsupported_offers_get_4xx_with_a_reason() {
    let server = start(1, |c| c.max_body = 8 * 1024).await;
    let http = client::http_client(true);
    let url = format!("{}/whip/s", server.url());

    let (s, body, _) = post(
        &http,
        &url,
        "text/plain",
        good_offer(Direction::SendOnly),
        None,
    )
    .await;
    assert_eq!(s, 415, "{body}");
    assert_one_line(&body);

    let (s, body, _) = post(&http, &url, "application/sdp", "hello".into(), None).await;
    assert_eq!(s, 400, "{body}");
    assert_one_line(&body);

    let (s, body, _) = post(
        &http,
        &url,
        "application/sdp",
        "v=0\r\nm=audio 9 RTP/AVP 0\r\nbroken".into(),
        None,
    )
    .await;
    assert!(s == 400 || s == 422, "{s} {body}");
    assert_one_line(&body);

    // Only PCMU offered: nothing in common.
    let pcmu = offer(
        RtcConfig::new().clear_codecs().enable_pcmu(true, false),
        Direction::SendOnly,
    );
    let (s, body, _) = post(&http, &url, "application/sdp", pcmu, None).await;
    assert_eq!(s, 422, "{body}");
    assert!(body.contains("codec"), "{body}");
    assert_one_line(&body);

    // A WHIP offer that only wants to receive has nothing to publish.
    let (s, body, _) = post(
        &http,
        &url,
        "application/sdp",
        good_offer(Direction::RecvOnly),
        None,
    )
    .await;
    assert_eq!(s, 422, "{body}");
    assert_one_line(&body);

    let (s, body, _) = post(
        &http,
        &format!("{}/whip/bad%20name", server.url()),
        "application/sdp",
        good_offer(Direction::SendOnly),
        None,
    )
    .await;
    assert_eq!(s, 400, "{body}");

    let (s, body, _) = post(&http, &url, "application/sdp", "v=0\r\n".repeat(4000), None).await;
    assert_eq!(s, 413, "{body}");
    assert_one_line(&body);

    assert_eq!(
        session_counts(&server),
        (0, 0),
        "no session was created by bad requests"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_answer_201_location_then_delete_200_then_404() {
    let server = start(1, |_| {}).await;
    let http = client::http_client(true);
    let url = format!("{}/whep/w", server.url());
    let (s, answer, headers) = post(
        &http,
        &url,
        "application/sdp",
        good_offer(Direction::RecvOnly),
        None,
    )
    .await;
    assert_eq!(s, 201, "{answer}");
    assert_eq!(headers["content-type"], "application/sdp");
    assert!(answer.contains("a=ice-lite"), "ICE-lite answer");
    assert!(
        answer.contains("a=candidate"),
        "a host candidate:\n{answer}"
    );
    assert!(
        answer.matches("typ host").count() >= 1 && !answer.contains("typ srflx"),
        "{answer}"
    );
    let shard_port = server.shard_addrs()[0].port().to_string();
    assert!(
        answer.contains(&shard_port),
        "candidate names the shard port"
    );
    let loc = headers["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with("/whep/w/"), "{loc}");
    assert_eq!(session_counts(&server).0, 1);

    let res = http
        .patch(format!("{}{loc}", server.url()))
        .header("content-type", "application/trickle-ice-sdpfrag")
        .header("if-match", headers["etag"].to_str().unwrap())
        .body("a=end-of-candidates")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status().as_u16(),
        204,
        "trickle needs nothing from ICE-lite"
    );

    let res = http
        .delete(format!("{}{loc}", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(wait_until(Duration::from_secs(3), || session_counts(&server) == (0, 0)).await);
    let res = http
        .delete(format!("{}{loc}", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    let body = res.text().await.unwrap();
    assert_one_line(&body);
    let res = http
        .delete(format!("{}/whip/w/zzzz", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);

    let res = http
        .request(reqwest::Method::OPTIONS, &url)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(res.headers()["accept-post"], "application/sdp");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_publisher_gets_409_and_capacity_gets_503_with_retry_after() {
    let server = start(1, |c| c.max_sessions = 2).await;
    let http = client::http_client(true);
    let url = format!("{}/whip/dup", server.url());
    let (s, _, _) = post(
        &http,
        &url,
        "application/sdp",
        good_offer(Direction::SendOnly),
        None,
    )
    .await;
    assert_eq!(s, 201);
    let (s, body, _) = post(
        &http,
        &url,
        "application/sdp",
        good_offer(Direction::SendOnly),
        None,
    )
    .await;
    assert_eq!(s, 409, "{body}");
    assert_one_line(&body);
    let (s, _, _) = post(
        &http,
        &format!("{}/whep/dup", server.url()),
        "application/sdp",
        good_offer(Direction::RecvOnly),
        None,
    )
    .await;
    assert_eq!(s, 201);
    let (s, body, headers) = post(
        &http,
        &format!("{}/whep/dup", server.url()),
        "application/sdp",
        good_offer(Direction::RecvOnly),
        None,
    )
    .await;
    assert_eq!(s, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert_one_line(&body);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_whip_and_whep_need_a_token_granting_the_stream() {
    let server = start(1, |c| c.secret = Some("s3cret".into())).await;
    let http = client::http_client(true);
    let key = TokenKey::new(b"s3cret");
    let claims = |stream: &str, publish: bool, subscribe: bool, exp: u64| Claims {
        exp,
        stream: Some(stream.into()),
        publish,
        subscribe,
        ..Default::default()
    };
    let url = format!("{}/whip/cam", server.url());
    let later = unix_now() + 600;

    let (s, body, headers) = post(
        &http,
        &url,
        "application/sdp",
        good_offer(Direction::SendOnly),
        None,
    )
    .await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (s, _, _) = post(
        &http,
        &url,
        "application/sdp",
        good_offer(Direction::SendOnly),
        Some("garbage"),
    )
    .await;
    assert_eq!(s, 401);
    let wrong_key = TokenKey::new(b"other").mint(&claims("cam", true, false, later));
    let (s, _, _) = post(
        &http,
        &url,
        "application/sdp",
        good_offer(Direction::SendOnly),
        Some(&wrong_key),
    )
    .await;
    assert_eq!(s, 401);
    let expired = key.mint(&claims("cam", true, false, unix_now() - 1));
    let (s, body, _) = post(
        &http,
        &url,
        "application/sdp",
        good_offer(Direction::SendOnly),
        Some(&expired),
    )
    .await;
    assert_eq!(s, 401);
    assert!(body.contains("expired"), "{body}");
    let other_stream = key.mint(&claims("other", true, false, later));
    let (s, _, _) = post(
        &http,
        &url,
        "application/sdp",
        good_offer(Direction::SendOnly),
        Some(&other_stream),
    )
    .await;
    assert_eq!(s, 403);
    let viewer_only = key.mint(&claims("cam", false, true, later));
    let (s, _, _) = post(
        &http,
        &url,
        "application/sdp",
        good_offer(Direction::SendOnly),
        Some(&viewer_only),
    )
    .await;
    assert_eq!(s, 403);

    // The right tokens work end to end.
    let pub_token = key.mint(&claims("cam", true, false, later));
    let mut ep = whip(&server, "cam");
    ep.token = Some(pub_token);
    let publisher = client::publish(&http, &ep, MediaSpec::default())
        .await
        .unwrap();
    let mut ep = whep(&server, "cam");
    ep.token = Some(viewer_only);
    let viewer = client::view(&http, &ep, ViewerMode::CountOnly)
        .await
        .unwrap();
    assert!(receives_more_than(&viewer, 50, Duration::from_secs(10)).await);
    viewer.close().await.unwrap();
    publisher.close().await.unwrap();
    assert!(wait_until(Duration::from_secs(3), || session_counts(&server) == (0, 0)).await);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_are_dropped_and_counted_while_media_flows() {
    let server = start(1, |_| {}).await;
    let http = client::http_client(true);
    let (publisher, viewer) = publish_and_view(&server, &http, "g", ViewerMode::Full, 20).await;

    let media = server.shard_addrs()[0];
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 1],
        vec![0x00; 20], // STUN-shaped without cookie
        vec![0x80; 12], // RTP-shaped from a stranger
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0x16, 0xfe, 0xfd, 0, 0], // DTLS-shaped
        vec![
            0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            0, 6, 0, 9,
        ],
    ];
    let mut x: u32 = 12345;
    let mut next = move || {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        x >> 8
    };
    for _ in 0..300 {
        let len = (next() % 1500) as usize;
        junk.push((0..len).map(|_| next() as u8).collect());
    }
    for j in &junk {
        sock.send_to(j, media).unwrap();
    }
    let dropped = || {
        let c = server.app.dataplane.shards[0].counters.snapshot();
        c.drop_malformed + c.drop_unknown_flow
    };
    assert!(
        wait_until(Duration::from_secs(3), || dropped()
            >= junk.len() as u64 - 1)
        .await,
        "dropped {} of {}: {:?}",
        dropped(),
        junk.len(),
        server.app.dataplane.shards[0].counters.snapshot()
    );
    // The stream still flows, uncorrupted, and the server still takes sessions.
    let before = packets(&viewer);
    assert!(receives_more_than(&viewer, before + 50, Duration::from_secs(5)).await);
    assert_eq!(viewer.stats.received.lock().unwrap().corrupt, 0);
    let second = client::view(&http, &whep(&server, "g"), ViewerMode::CountOnly)
        .await
        .unwrap();
    assert!(receives_more_than(&second, 20, Duration::from_secs(10)).await);
    second.close().await.unwrap();
    viewer.close().await.unwrap();
    publisher.close().await.unwrap();
    server.shutdown().await;
}
