//! Operating the appliance: metrics that parse and move, admin API access,
//! drain, configuration precedence and errors.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_bench::client::{self, MediaSpec, ViewerMode};
use sluice_tests::{session_counts, start, wait_until, whep, whip};

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("exposition parses")
}

fn sum(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_counters_move_with_media() {
    let server = start(2, |_| {}).await;
    let http = client::http_client(true);
    let url = format!("{}/metrics", server.url());
    let before = parse(&http.get(&url).send().await.unwrap().text().await.unwrap());
    assert_eq!(sum(&before, "sluice_shard_rtp_forwarded_total"), 0.0);
    let publisher = client::publish(&http, &whip(&server, "m"), MediaSpec::default())
        .await
        .unwrap();
    let viewer = client::view(&http, &whep(&server, "m"), ViewerMode::CountOnly)
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || viewer
            .stats
            .packets
            .load(Ordering::Relaxed)
            > 100)
        .await
    );
    let after = parse(&http.get(&url).send().await.unwrap().text().await.unwrap());
    assert!(sum(&after, "sluice_shard_rtp_forwarded_total") > 100.0);
    assert!(
        sum(&after, "sluice_shard_tx_packets_total")
            > sum(&before, "sluice_shard_tx_packets_total")
    );
    assert_eq!(sum(&after, "sluice_streams"), 1.0);
    assert!(sum(&after, "process_resident_memory_bytes") > 0.0);
    let shards: Vec<_> = after
        .samples
        .iter()
        .filter(|s| s.metric == "sluice_shard_info")
        .collect();
    assert_eq!(shards.len(), 2);
    viewer.close().await.unwrap();
    publisher.close().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_the_admin_token() {
    let server = start(1, |c| {
        c.secret = Some("s".into());
        c.admin_token = Some("adm".into());
    })
    .await;
    let http = client::http_client(true);
    let url = format!("{}/admin/sessions", server.url());
    assert_eq!(http.get(&url).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(
        http.get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    let ok = http.get(&url).bearer_auth("adm").send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let body: serde_json::Value = serde_json::from_str(&ok.text().await.unwrap()).unwrap();
    assert!(body.is_array());
    for path in ["shards", "streams", "rooms"] {
        let r = http
            .get(format!("{}/admin/{path}", server.url()))
            .bearer_auth("adm")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let r = http
        .post(format!("{}/admin/drain", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    server.shutdown().await;

    // With a token secret but no admin token the admin API is closed.
    let server = start(1, |c| c.secret = Some("s".into())).await;
    let r = http
        .get(format!("{}/admin/sessions", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_refuses_new_sessions_while_active_ones_keep_flowing() {
    let server = start(1, |_| {}).await;
    let http = client::http_client(true);
    let publisher = client::publish(&http, &whip(&server, "d"), MediaSpec::default())
        .await
        .unwrap();
    let viewer = client::view(&http, &whep(&server, "d"), ViewerMode::CountOnly)
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || viewer
            .stats
            .packets
            .load(Ordering::Relaxed)
            > 50)
        .await
    );
    let r = http
        .post(format!("{}/admin/drain", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // New sessions are refused with 503 and Retry-After ...
    let err = client::view(&http, &whep(&server, "d"), ViewerMode::CountOnly)
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(err, client::ClientError::Status { status: 503, .. }),
        "{err}"
    );
    // ... while the active viewer keeps receiving.
    let before = viewer.stats.packets.load(Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(5), || viewer
            .stats
            .packets
            .load(Ordering::Relaxed)
            > before + 50)
        .await
    );
    // The drain ends when the last session does.
    let draining = {
        let s = &server;
        async move { s.drain(Duration::from_secs(10)).await }
    };
    let ending = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        viewer.close().await.unwrap();
        publisher.close().await.unwrap();
    };
    let started = std::time::Instant::now();
    tokio::join!(draining, ending);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "drain returned once sessions ended"
    );
    assert_eq!(session_counts(&server), (0, 0));
    server.shutdown().await;
}
