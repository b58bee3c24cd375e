//! Broadcast fan-out end to end over loopback: a str0m WHIP publisher, WHEP
//! viewers on several shards, every payload byte checked.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_bench::client::{self, MediaSpec, VideoCodec, ViewerMode, TRACK_AUDIO, TRACK_VIDEO};
use sluice_dataplane::Role;
use sluice_tests::{assert_contiguous, eventually, session_counts, start, wait_until, whep, whip};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_fans_out_to_viewers_on_every_shard_byte_exact() {
    let server = start(3, |_| {}).await;
    let http = client::http_client(true);
    let publisher = client::publish(&http, &whip(&server, "live"), MediaSpec::default())
        .await
        .expect("publish");
    assert!(
        wait_until(Duration::from_secs(10), || publisher
            .stats
            .connected
            .load(Ordering::Relaxed))
        .await,
        "publisher connects"
    );
    let mut viewers = Vec::new();
    for _ in 0..3 {
        viewers.push(
            client::view(&http, &whep(&server, "live"), ViewerMode::Full)
                .await
                .expect("view"),
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || viewers
            .iter()
            .all(|v| v.stats.connected.load(Ordering::Relaxed)))
        .await,
        "viewers connect"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Placement: the viewers are spread over all three shards, so at least two
    // are on shards other than the publisher's, and fan-out crossed shards.
    let sessions = server.app.registry().sessions();
    let pub_shard = sessions
        .iter()
        .find(|s| s.role == "publisher")
        .unwrap()
        .shard;
    let viewer_shards: Vec<u16> = sessions
        .iter()
        .filter(|s| s.role == "viewer")
        .map(|s| s.shard)
        .collect();
    assert_eq!(viewer_shards.len(), 3);
    assert!(
        viewer_shards.iter().filter(|&&s| s != pub_shard).count() >= 2,
        "viewers {viewer_shards:?} vs publisher {pub_shard}"
    );
    let cross_in: u64 = server
        .app
        .dataplane
        .shards
        .iter()
        .filter(|s| s.id.0 != pub_shard)
        .map(|s| s.counters.snapshot().fanout_packets_in)
        .sum();
    assert!(cross_in > 100, "packets crossed shards: {cross_in}");

    for (i, v) in viewers.iter().enumerate() {
        let r = v.stats.received.lock().unwrap().clone();
        assert_eq!(r.corrupt, 0, "viewer {i}: corrupt payloads");
        // 3 s of 1 Mbps/30 fps video (~4 packets a frame) and 50 pkt/s audio.
        assert_contiguous(&r, TRACK_VIDEO, 200, &format!("viewer {i}"));
        assert_contiguous(&r, TRACK_AUDIO, 100, &format!("viewer {i}"));
        let (lost, expected) = v.stats.loss();
        assert_eq!(lost, 0, "viewer {i}: lost {lost} of {expected}");
    }
    // Joining viewers asked for a keyframe, throttled to far fewer than one per viewer.
    let kf = publisher.stats.keyframe_requests.load(Ordering::Relaxed);
    assert!(kf >= 1, "publisher saw a keyframe request");

    for v in viewers {
        v.close().await.unwrap();
    }
    publisher.close().await.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || session_counts(&server) == (0, 0)).await,
        "sessions removed after DELETE: {:?}",
        session_counts(&server)
    );
    assert_eq!(server.app.registry().stream_count(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_is_forwarded_like_vp8() {
    let server = start(2, |_| {}).await;
    let http = client::http_client(true);
    let spec = MediaSpec {
        video_codec: VideoCodec::H264,
        ..MediaSpec::default()
    };
    let publisher = client::publish(&http, &whip(&server, "h"), spec)
        .await
        .unwrap();
    let viewer = client::view(&http, &whep(&server, "h"), ViewerMode::Full)
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            viewer
                .stats
                .received
                .lock()
                .unwrap()
                .stamps
                .iter()
                .filter(|s| s.0 == TRACK_VIDEO)
                .count()
                > 100
        })
        .await,
        "H264 video reaches the viewer"
    );
    let r = viewer.stats.received.lock().unwrap().clone();
    assert_eq!(r.corrupt, 0);
    assert_contiguous(&r, TRACK_VIDEO, 100, "h264 viewer");
    viewer.close().await.unwrap();
    publisher.close().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_joining_viewers_cause_one_throttled_keyframe_request() {
    let server = start(2, |c| c.keyframe_interval_ms = 2000).await;
    let http = client::http_client(true);
    let publisher = client::publish(&http, &whip(&server, "kf"), MediaSpec::default())
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || publisher
            .stats
            .connected
            .load(Ordering::Relaxed))
        .await
    );
    // Let the publisher's first packets register its video track.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut viewers = Vec::new();
    for _ in 0..6 {
        viewers.push(
            client::view(&http, &whep(&server, "kf"), ViewerMode::CountOnly)
                .await
                .unwrap(),
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || viewers
            .iter()
            .all(|v| v.stats.connected.load(Ordering::Relaxed)))
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kf = publisher.stats.keyframe_requests.load(Ordering::Relaxed);
    // Six joins inside one 2 s throttle window: exactly one PLI reaches the publisher
    // (two if the joins straddled the window edge).
    assert!(
        (1..=2).contains(&kf),
        "keyframe requests at publisher: {kf}"
    );
    for v in viewers {
        v.close().await.unwrap();
    }
    publisher.close().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sessions_are_removed_after_the_idle_timeout() {
    let server = start(2, |c| c.idle_timeout_secs = 1.5).await;
    let http = client::http_client(true);
    let publisher = client::publish(&http, &whip(&server, "idle"), MediaSpec::default())
        .await
        .unwrap();
    let viewer = client::view(&http, &whep(&server, "idle"), ViewerMode::CountOnly)
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || viewer
            .stats
            .connected
            .load(Ordering::Relaxed))
        .await
    );
    assert_eq!(session_counts(&server), (2, 2));
    // Both vanish without DELETE: no more packets reach the server.
    viewer.vanish().await;
    publisher.vanish().await;
    assert!(
        wait_until(Duration::from_secs(8), || session_counts(&server) == (0, 0)).await,
        "silent sessions removed: {:?}",
        session_counts(&server)
    );
    let timed_out: u64 = server
        .app
        .dataplane
        .shards
        .iter()
        .map(|s| s.counters.snapshot().sessions_timed_out)
        .sum();
    assert_eq!(timed_out, 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_wait_for_a_publisher_and_survive_its_replacement() {
    let server = start(2, |_| {}).await;
    let http = client::http_client(true);
    // The viewer comes first and waits.
    let viewer = client::view(&http, &whep(&server, "relay"), ViewerMode::Full)
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || viewer
            .stats
            .connected
            .load(Ordering::Relaxed))
        .await
    );
    assert_eq!(server.app.registry().count_by_role(Role::Viewer), 1);

    let first = client::publish(&http, &whip(&server, "relay"), MediaSpec::default())
        .await
        .unwrap();
    let got = |n: usize| {
        let v = &viewer;
        move || v.stats.received.lock().unwrap().stamps.len() >= n
    };
    assert!(
        wait_until(Duration::from_secs(10), got(100)).await,
        "media from the first publisher"
    );
    first.close().await.unwrap();
    // The stream stays (the viewer waits); a new publisher may take it.
    let second = client::publish(&http, &whip(&server, "relay"), MediaSpec::default())
        .await
        .unwrap();
    let before = viewer.stats.received.lock().unwrap().stamps.len();
    assert!(
        wait_until(Duration::from_secs(10), got(before + 100)).await,
        "media from the replacement publisher"
    );
    // Sequence numbers continue across the switch: no gap the viewer would see as loss.
    let (lost, expected) = viewer.stats.loss();
    assert!(expected > 200);
    assert_eq!(
        lost, 0,
        "viewer saw a sequence gap across the publisher switch"
    );
    assert_eq!(viewer.stats.received.lock().unwrap().corrupt, 0);
    viewer.close().await.unwrap();
    second.close().await.unwrap();
    server.shutdown().await;
}

/// The viewer's VP8 temporal cap, as the admin API lists it on its video track.
async fn max_temporal(http: &reqwest::Client, base: &str, id: &str) -> serde_json::Value {
    let url = format!("{base}/admin/sessions/{id}");
    let text = http.get(&url).send().await.unwrap().text().await.unwrap();
    let s: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"));
    s["stats"]["tracks"]
        .as_array()
        .and_then(|ts| {
            ts.iter()
                .find(|t| t["direction"] == "out" && t["kind"] == "video")
        })
        .map_or(serde_json::Value::Null, |t| {
            t.get("max_temporal")
                .cloned()
                .unwrap_or(serde_json::Value::Null)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_temporal_cap_is_the_viewers_and_the_layer_endpoint_changes_it() {
    let server = start(1, |_| {}).await;
    let http = client::http_client(true);
    let _publisher = client::publish(&http, &whip(&server, "t"), MediaSpec::default())
        .await
        .expect("publish");
    let mut capped_ep = whep(&server, "t");
    capped_ep.url.push_str("?temporal=0");
    let capped = client::view(&http, &capped_ep, ViewerMode::Full)
        .await
        .expect("view");
    let plain = client::view(&http, &whep(&server, "t"), ViewerMode::Full)
        .await
        .expect("view");
    // A resource name is the session id then a key, 16 hex digits each.
    let id_of = |loc: &Option<String>| {
        let name = loc
            .as_deref()
            .expect("Location")
            .rsplit('/')
            .next()
            .unwrap();
        name[..16].to_string()
    };
    let (capped_id, plain_id) = (id_of(&capped.location), id_of(&plain.location));
    let base = server.url();
    let layer = |query: &str| {
        let url = format!("{}/layer?{query}", capped.location.as_deref().unwrap());
        let http = http.clone();
        async move { http.post(url).send().await.unwrap().status() }
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            max_temporal(&http, &base, &capped_id).await == 0
        })
        .await,
        "the cap asked for with ?temporal=0"
    );
    assert_eq!(
        max_temporal(&http, &base, &plain_id).await,
        serde_json::Value::Null,
        "no cap for the other viewer"
    );

    assert_eq!(layer("temporal=2").await, 204);
    assert!(
        eventually(Duration::from_secs(5), || async {
            max_temporal(&http, &base, &capped_id).await == 2
        })
        .await,
        "raised by the layer endpoint"
    );
    // Only `max` given: the temporal cap stays.
    assert_eq!(layer("max=low").await, 204);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(max_temporal(&http, &base, &capped_id).await, 2);
}
