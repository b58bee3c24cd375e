//! Operating the appliance: metrics that parse and move, admin API access,
//! drain, configuration precedence and errors.

use std::time::Duration;

use sluice_bench::client::{self, ViewerMode};
use sluice_tests::{
    packets, publish_and_view, receives_more_than, session_counts, start, wait_until, whep,
};

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
    let (publisher, viewer) =
        publish_and_view(&server, &http, "m", ViewerMode::CountOnly, 100).await;
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
    // Histograms per shard: the total count over shards.
    let histogram_count = |name: &str| -> f64 {
        after
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| match &s.value {
                prometheus_parse::Value::Histogram(h) => {
                    let last = h.last().expect("buckets");
                    assert!(last.less_than.is_infinite(), "+Inf bucket last");
                    last.count
                }
                v => panic!("{name} is not a histogram: {v:?}"),
            })
            .sum()
    };
    // Busy loop turns are timed.
    let turns = histogram_count("sluice_shard_loop_turn_seconds");
    assert!(turns > 0.0, "no loop turn was timed");
    // Every forwarded copy's time in sluice is measured, once (media still
    // flows while the scrape reads counters and histograms one after the
    // other, so allow the turns in between).
    let copies = histogram_count("sluice_shard_forward_delay_seconds");
    let forwarded = sum(&after, "sluice_shard_rtp_forwarded_total");
    assert!(
        copies > 0.0 && (copies - forwarded).abs() <= forwarded * 0.05 + 20.0,
        "{copies} forwarding delays for {forwarded} copies written to viewers"
    );
    for name in [
        "sluice_shard_fanout_queue_depth",
        "sluice_shard_fanout_queue_capacity",
        "sluice_shard_command_queue_depth",
    ] {
        let n = after.samples.iter().filter(|s| s.metric == name).count();
        assert_eq!(n, 2, "{name} per shard");
    }
    assert_eq!(
        sum(&after, "sluice_shard_fanout_queue_capacity"),
        2.0 * 4096.0
    );
    // Per-stream and per-session rates appear within a few report intervals.
    let mut seen = None;
    for _ in 0..50 {
        let s = parse(&http.get(&url).send().await.unwrap().text().await.unwrap());
        if sum(&s, "sluice_stream_bitrate_bps") > 0.0
            && sum(&s, "sluice_track_packets_total") > 0.0
            && sum(&s, "sluice_session_bitrate_bps") > 0.0
        {
            seen = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = seen.expect("stream, session and track series with rates");
    assert!(sum(&s, "sluice_stream_received_bytes_total") > 0.0);
    let bps = sum(&s, "sluice_stream_bitrate_bps");
    // The default publisher sends ~1 Mbps of video plus audio.
    assert!(bps > 200_000.0 && bps < 5_000_000.0, "stream bitrate {bps}");
    let out_tracks = s
        .samples
        .iter()
        .filter(|x| x.metric == "sluice_track_packets_total")
        .filter(|x| {
            x.labels.get("direction") == Some("out") && x.labels.get("role") == Some("viewer")
        })
        .count();
    assert!(out_tracks >= 1, "viewer's outgoing tracks in /metrics");
    // The same figures per session in the admin API (open dev mode).
    let sessions: serde_json::Value = serde_json::from_str(
        &http
            .get(format!("{}/admin/sessions", server.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    for sess in sessions {
        let stats = &sess["stats"];
        let role = sess["role"].as_str().unwrap();
        let dir = if role == "publisher" { "in" } else { "out" };
        let tracks = stats["tracks"].as_array().expect("tracks");
        assert!(
            tracks
                .iter()
                .any(|t| t["direction"] == dir && t["packets"].as_u64().unwrap_or(0) > 0),
            "{role} has {dir} tracks with packets: {stats}"
        );
        assert!(stats["bytes_in"].as_u64().unwrap() > 0, "{stats}");
        let one = http
            .get(format!(
                "{}/admin/sessions/{}",
                server.url(),
                sess["id"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(one.status().as_u16(), 200);
    }
    // Every series the shipped Grafana dashboard queries is exposed.
    let text = http.get(&url).send().await.unwrap().text().await.unwrap();
    let dashboard = include_str!("../../tuning/grafana-dashboard.json");
    let mut names: Vec<&str> = dashboard
        .match_indices("sluice_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() > 20, "{names:?}");
    for name in names {
        let family = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which /metrics does not expose"
        );
    }
    let missing = http
        .get(format!("{}/admin/sessions/00000000deadbeef", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    // Closing the stream ends its publisher and its viewer.
    let stream_url = format!("{}/admin/streams/m", server.url());
    let r = http.delete(&stream_url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["sessions"], 2, "{body}");
    assert!(
        wait_until(Duration::from_secs(5), || session_counts(&server) == (0, 0)).await,
        "sessions left: {:?}",
        session_counts(&server)
    );
    let r = http.delete(&stream_url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404, "the stream is gone");
    viewer.close().await.ok();
    publisher.close().await.ok();
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
    let r = http
        .delete(format!("{}/admin/streams/any", server.url()))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
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
    let (publisher, viewer) =
        publish_and_view(&server, &http, "d", ViewerMode::CountOnly, 50).await;
    let r = http
        .post(format!("{}/admin/drain", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The serving process is told to drain and exit, as on SIGTERM.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), server.drain_requested())
            .await
            .is_ok(),
        "admin drain signals the process"
    );
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
    let before = packets(&viewer);
    assert!(receives_more_than(&viewer, before + 50, Duration::from_secs(5)).await);
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
