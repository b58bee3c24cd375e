//! What one source address may take: connections, request rate, sessions,
//! and how each refusal answers and is counted.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sluice_bench::client;
use sluice_bench::client::ViewerMode;
use sluice_tests::attack::{get_metrics, metric_sum, tls_connect};
use sluice_tests::{start, whep};

fn refused(text: &str, reason: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("sluice_refused_total{{reason=\"{reason}\"}}")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Read until the server closes the connection or `limit` passes; true if it closed.
fn closes_within(s: &mut impl Read, limit: Duration) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_cap_are_closed_and_counted() {
    let server = start(1, |c| c.max_conns_per_ip = 4).await;
    let addr = server.https_addr;
    let (held, over_closed) = tokio::task::spawn_blocking(move || {
        let held: Vec<_> = (0..4).map(|_| tls_connect(addr)).collect();
        // The fifth is closed before its handshake completes.
        let mut over = TcpStream::connect(addr).unwrap();
        over.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let _ = over.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0]);
        (held, closes_within(&mut over, Duration::from_secs(3)))
    })
    .await
    .unwrap();
    assert!(
        over_closed,
        "a fifth connection from one address stayed open"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let http = client::http_client(true);
    let (status, text) = get_metrics(&http, &server, None).await;
    assert_eq!(
        status, 200,
        "the address may connect again once it closed its others"
    );
    assert!(refused(&text, "conns_per_ip") >= 1.0, "{text}");
    assert!(metric_sum(&text, "sluice_http_connections") >= 1.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_gets_408_within_its_time_and_is_counted() {
    let server = start(1, |_| {}).await;
    let addr = server.https_addr;
    let (head, took) = tokio::task::spawn_blocking(move || {
        let mut s = tls_connect(addr);
        s.sock
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let start = Instant::now();
        s.write_all(b"POST /whip/s HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 2000\r\n\r\nv=0\r\n")
            .unwrap();
        s.flush().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while start.elapsed() < Duration::from_secs(20) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        (String::from_utf8_lossy(&got).to_string(), start.elapsed())
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        took < Duration::from_secs(15),
        "closed after {took:?}: {head}"
    );
    let http = client::http_client(true);
    let (_, text) = get_metrics(&http, &server, None).await;
    assert_eq!(refused(&text, "body_timeout"), 1.0, "{text}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_max_body_gets_the_servers_reason_and_cors_headers() {
    let server = start(1, |c| c.max_body = 4096).await;
    let http = client::http_client(true);
    let res = http
        .post(format!("{}/whip/s", server.url()))
        .header("content-type", "application/sdp")
        .body("v=0\r\n".repeat(2000))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let body = res.text().await.unwrap();
    assert_eq!(body, "request body too large (over max_body)\n");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_over_the_per_address_rate_get_429_with_retry_after() {
    let server = start(1, |c| {
        c.signal_rate = 0.2;
        c.signal_burst = 2.0;
    })
    .await;
    let http = client::http_client(true);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        // A body that is no SDP: refused after the rate check, so no session is made.
        let res = http
            .post(format!("{}/whep/r", server.url()))
            .header("content-type", "application/sdp")
            .body("v=0\r\n")
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        if res.status().as_u16() == 429 {
            let wait: u64 = res.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=5).contains(&wait), "Retry-After {wait}");
            assert_eq!(res.text().await.unwrap().lines().count(), 1);
        }
    }
    assert_eq!(statuses[2], 429, "{statuses:?}");
    assert_ne!(statuses[0], 429, "{statuses:?}");
    let (_, text) = get_metrics(&http, &server, None).await;
    assert_eq!(refused(&text, "rate"), 1.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_changes_over_the_per_address_rate_get_429() {
    let server = start(1, |c| {
        c.signal_rate = 0.01;
        c.signal_burst = 3.0;
    })
    .await;
    let http = client::http_client(true);
    let viewer = client::view(&http, &whep(&server, "r"), ViewerMode::Full)
        .await
        .expect("view");
    let url = format!("{}/layer", viewer.location.as_deref().expect("Location"));
    let post = |query: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.post(format!("{url}?{query}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // A bad value costs nothing; the POST took one token of three: two
    // changes pass, then 429.
    assert_eq!(post("temporal=9").await, 400);
    assert_eq!(post("temporal=0").await, 204);
    assert_eq!(post("max=low").await, 204);
    assert_eq!(post("max=high&temporal=auto").await, 429);
    let (_, text) = get_metrics(&http, &server, None).await;
    assert_eq!(refused(&text, "rate"), 1.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_room_refuses_one_more_participant_with_503() {
    use sluice_tests::room::Participant;
    let server = start(1, |c| c.max_room_peers = 2).await;
    let base = server.url();
    let (a, _) = Participant::join(&base, "small", "a", false).await;
    let (b, _) = Participant::join(&base, "small", "b", false).await;
    let third = sluice_tests::room::connect_ws(&base, "roomId=small&peerId=c").await;
    assert_eq!(third.err(), Some(503));
    // Another room is not affected.
    assert!(
        sluice_tests::room::connect_ws(&base, "roomId=other&peerId=c")
            .await
            .is_ok()
    );
    let http = client::http_client(true);
    let (_, text) = get_metrics(&http, &server, None).await;
    assert_eq!(refused(&text, "room_full"), 1.0);
    a.leave().await;
    b.leave().await;
    server.shutdown().await;
}
