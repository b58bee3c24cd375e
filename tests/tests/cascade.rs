//! The origin → edge cascade end to end: nodes on 127.0.0.1, .2 and .3
//! sharing a `redis-server` this test starts, str0m publishers and viewers,
//! every payload byte checked; then the failures: an edge killed, the origin
//! killed and the stream published again elsewhere, Redis stopped and
//! restarted, forged relay traffic and unsigned node-to-node calls.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice::{Config, Server};
use sluice_bench::client::{
    self, MediaSpec, SessionHandle, ViewerMode, ViewerStats, TRACK_AUDIO, TRACK_VIDEO,
};
use sluice_tests::cluster::{Node, RedisServer};
use sluice_tests::{
    assert_contiguous, eventually, packets, shard_counter, start, wait_until, whep, whip,
};

const SECRET: &str = "cascade-test-secret-0123";

/// An in-process node on `ip` in the cluster of `redis`.
async fn node(redis: &RedisServer, ip: &str, id: &str, tweak: impl FnOnce(&mut Config)) -> Server {
    start(1, |c| {
        c.listen = format!("{ip}:0").parse().unwrap();
        c.announce_ip = vec![ip.parse().unwrap()];
        c.signal_rate = 0.0;
        c.max_sessions_per_ip = 0;
        c.cluster.redis_url = Some(redis.url());
        c.cluster.node_id = id.into();
        c.cluster.secret = Some(SECRET.into());
        c.cluster.lease_ms = 2000;
        tweak(c);
    })
    .await
}

/// The arguments that make a `sluice serve` process a node of `redis`'s cluster.
fn node_args(redis: &RedisServer, id: &str) -> Vec<String> {
    sluice_tests::cluster::node_args(redis, id, SECRET)
}

fn connected(v: &SessionHandle<ViewerStats>) -> bool {
    v.stats.connected.load(Ordering::Relaxed)
}

/// POST a receive-only offer to `url` as it is, answer and all.
async fn post_offer(http: &reqwest::Client, url: String) -> reqwest::Response {
    http.post(url)
        .header("content-type", "application/sdp")
        .body(sluice_tests::sdp_offer(
            sluice_dataplane::str0m::media::Direction::RecvOnly,
        ))
        .send()
        .await
        .unwrap()
}

async fn admin_cluster(http: &reqwest::Client, base: &str) -> serde_json::Value {
    http.get(format!("{base}/admin/cluster"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap()
}

/// The edges `/admin/cluster` on `base` lists for `stream`: (node, upstream).
async fn edges(http: &reqwest::Client, base: &str, stream: &str) -> Vec<(String, String)> {
    let v = admin_cluster(http, base).await;
    let Some(s) = v["streams"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == stream))
    else {
        return Vec::new();
    };
    s["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["node"].as_str().unwrap().to_string(),
                e["upstream"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_feeds_two_edges_byte_exact_with_one_copy_per_edge() {
    let redis = RedisServer::start();
    let a = node(&redis, "127.0.0.1", "a", |_| {}).await;
    let b = node(&redis, "127.0.0.2", "b", |_| {}).await;
    let c = node(&redis, "127.0.0.3", "c", |_| {}).await;
    let http = client::http_client(true);
    let publisher = client::publish(&http, &whip(&a, "live"), MediaSpec::default())
        .await
        .expect("publish on a");
    assert!(
        wait_until(Duration::from_secs(10), || publisher
            .stats
            .connected
            .load(Ordering::Relaxed))
        .await
    );
    // One viewer on b, three on c.
    let mut viewers = vec![client::view(&http, &whep(&b, "live"), ViewerMode::Full)
        .await
        .expect("view on b")];
    for _ in 0..3 {
        viewers.push(
            client::view(&http, &whep(&c, "live"), ViewerMode::Full)
                .await
                .expect("view on c"),
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || viewers
            .iter()
            .all(|v| packets(v) > 50))
        .await,
        "every edge viewer gets media: {:?}",
        viewers.iter().map(packets).collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, v) in viewers.iter().enumerate() {
        let r = v.stats.received.lock().unwrap().clone();
        assert_eq!(r.corrupt, 0, "viewer {i}: corrupt payloads");
        assert_contiguous(&r, TRACK_VIDEO, 200, &format!("viewer {i}"));
        assert_contiguous(&r, TRACK_AUDIO, 100, &format!("viewer {i}"));
        let (lost, expected) = v.stats.loss();
        assert_eq!(lost, 0, "viewer {i}: lost {lost} of {expected}");
    }
    // One copy per edge, not per viewer: c (three viewers) takes as many relay
    // packets as b (one), and a sends about what both take.
    let into_b = shard_counter(&b, |c| c.relay_packets_in);
    let into_c = shard_counter(&c, |c| c.relay_packets_in);
    let out_of_a = shard_counter(&a, |c| c.relay_packets_out);
    let published = shard_counter(&a, |c| c.rtp_in);
    assert!(
        into_b > 500 && into_c > 500,
        "relay in: b {into_b}, c {into_c}"
    );
    let ratio = into_c as f64 / into_b as f64;
    assert!(
        (0.8..1.25).contains(&ratio),
        "c took {into_c}, b {into_b}: not one copy per edge"
    );
    assert!(
        out_of_a <= 2 * published + 100,
        "a sent {out_of_a} relay packets for {published} published: more than one copy per edge"
    );
    assert_eq!(shard_counter(&a, |c| c.drop_relay_unauthenticated), 0);
    // The edges read the relay tree from every node.
    let want = vec![
        ("b".to_string(), "a".to_string()),
        ("c".to_string(), "a".to_string()),
    ];
    assert!(
        eventually(Duration::from_secs(5), || async {
            edges(&http, &c.url(), "live").await == want
        })
        .await,
        "/admin/cluster on c lists both edges of a"
    );

    // Forged relay traffic at b's media port from a stranger's address, and
    // node-to-node calls without the cluster secret: refused and counted.
    let b_media = b.app.dataplane.shards[0].addr;
    let stranger = std::net::UdpSocket::bind("127.0.0.9:0").unwrap();
    let before = shard_counter(&b, |c| c.drop_unknown_flow + c.drop_malformed);
    for i in 0..50u8 {
        let mut pkt = vec![0x80, 110, 0, i, 0, 0, 0, 0, 0x51, 0, 0, 1];
        pkt.extend_from_slice(&[i; 200]);
        stranger.send_to(&pkt, b_media).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(3), || shard_counter(&b, |c| c
            .drop_unknown_flow
            + c.drop_malformed)
            >= before + 50)
        .await
    );
    for (header, want) in [(None, 401), (Some("1:00"), 401), (Some("garbage"), 401)] {
        let mut req = http
            .post(format!("{}/cluster/v1/relay", a.url()))
            .header("content-type", "application/json")
            .body(r#"{"stream":"live","from":"x","instance":1,"nonce":1,"media":"127.0.0.9:9","tag":1,"hops":0}"#);
        if let Some(h) = header {
            req = req.header("x-sluice-node-auth", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), want);
        let body = r.text().await.unwrap();
        assert!(
            body.trim_end().lines().count() == 1,
            "one-line reason: {body:?}"
        );
    }
    assert_eq!(
        a.app.relays.counts().links_out,
        2,
        "no link opened by an outsider"
    );
    let before = viewers.iter().map(packets).collect::<Vec<_>>();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (i, v) in viewers.iter().enumerate() {
        assert!(packets(v) > before[i] + 50, "viewer {i} unharmed");
    }

    // Viewers leave: after the linger the edges release their pulls, and the
    // origin's links and hold on the stream are gone.
    for v in viewers {
        v.close().await.unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(12), || a.app.relays.counts().links_out
            == 0
            && b.app.relays.counts().pulls == 0
            && c.app.relays.counts().pulls == 0)
        .await,
        "relays released: a {:?}, b {:?}, c {:?}",
        a.app.relays.counts(),
        b.app.relays.counts(),
        c.app.relays.counts()
    );
    let shared = a.app.registry().stream_shared("live");
    assert_eq!(
        shared.viewer_total(),
        0,
        "the origin's relay ends withdrew from the stream"
    );
    publisher.close().await.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || b.app.registry().stream_count()
            == 0
            && c.app.registry().stream_count() == 0)
        .await
    );
    for s in [a, b, c] {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_edges_relays_through_the_parent() {
    let redis = RedisServer::start();
    let a = node(&redis, "127.0.0.1", "a", |_| {}).await;
    let b = node(&redis, "127.0.0.2", "b", |_| {}).await;
    let c = node(&redis, "127.0.0.3", "c", |c| c.cluster.parent = "b".into()).await;
    let http = client::http_client(true);
    let publisher = client::publish(&http, &whip(&a, "chain"), MediaSpec::default())
        .await
        .unwrap();
    let viewer = client::view(&http, &whep(&c, "chain"), ViewerMode::Full)
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || packets(&viewer) > 100).await,
        "media over a → b → c"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = viewer.stats.received.lock().unwrap().clone();
    assert_eq!(r.corrupt, 0);
    assert_contiguous(&r, TRACK_VIDEO, 150, "viewer on c");
    assert_eq!(viewer.stats.loss().0, 0);
    // b has no viewer of its own and still pulls, for c; a serves only b.
    assert_eq!(b.app.registry().viewer_count("chain"), 0);
    assert_eq!(b.app.relays.counts().pulls, 1);
    assert_eq!(a.app.relays.lock().edges_of("chain"), vec!["b".to_string()]);
    assert_eq!(b.app.relays.lock().edges_of("chain"), vec!["c".to_string()]);
    let want = vec![
        ("b".to_string(), "a".to_string()),
        ("c".to_string(), "b".to_string()),
    ];
    assert!(
        eventually(Duration::from_secs(5), || async {
            edges(&http, &a.url(), "chain").await == want
        })
        .await,
        "/admin/cluster shows the chain"
    );
    viewer.close().await.unwrap();
    publisher.close().await.unwrap();
    for s in [a, b, c] {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_edge_leaves_nothing_behind_at_the_origin() {
    let redis = RedisServer::start();
    let a = node(&redis, "127.0.0.1", "a", |_| {}).await;
    let args = node_args(&redis, "b");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let b = Node::start("127.0.0.2", &args);
    let http = client::http_client(true);
    // b is up once its first heartbeat is in the registry: its connection to
    // Redis works (a loaded machine can take longer than a call's time limit
    // to make it, and b would rightly answer 503 meanwhile).
    assert!(
        eventually(Duration::from_secs(10), || async {
            node_ids(&http, &a.url()).await == ["a", "b"]
        })
        .await,
        "b never joined the cluster; its log:\n{}",
        b.log_text()
    );
    let publisher = client::publish(&http, &whip(&a, "edge-dies"), MediaSpec::default())
        .await
        .unwrap();
    let viewer = client::view(
        &http,
        &client::Endpoint {
            url: format!("{}/whep/edge-dies", b.url),
            token: None,
            insecure: true,
        },
        ViewerMode::CountOnly,
    )
    .await
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || packets(&viewer) > 100).await,
        "no media on b; its log:\n{}",
        b.log_text()
    );
    assert_eq!(a.app.relays.counts().links_out, 1);
    let shared = a.app.registry().stream_shared("edge-dies");
    assert_eq!(
        shared.viewer_total(),
        1,
        "the relay end is one viewer of the stream"
    );
    b.kill();
    // Within the relay's idle time (5 s) the origin closes the link and lets go.
    assert!(
        wait_until(Duration::from_secs(9), || a.app.relays.counts().links_out
            == 0)
        .await,
        "the origin still relays to a dead edge: {:?}",
        a.app.relays.counts()
    );
    assert_eq!(shared.viewer_total(), 0);
    let forwarded = shard_counter(&a, |c| c.relay_packets_out);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        shard_counter(&a, |c| c.relay_packets_out),
        forwarded,
        "nothing sent to the dead edge"
    );
    // Its node record lapses with its lease.
    assert!(
        eventually(Duration::from_secs(6), || async {
            node_ids(&http, &a.url()).await == ["a"]
        })
        .await,
        "b's record expires"
    );
    drop(viewer);
    publisher.close().await.unwrap();
    a.shutdown().await;
}

async fn node_ids(http: &reqwest::Client, base: &str) -> Vec<String> {
    let v = admin_cluster(http, base).await;
    let mut ids: Vec<String> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_viewers_resume_when_the_stream_is_published_again_after_the_origin_dies() {
    let redis = RedisServer::start();
    let args = node_args(&redis, "a");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = Node::start("127.0.0.1", &args);
    let b = node(&redis, "127.0.0.2", "b", |_| {}).await;
    let c = node(&redis, "127.0.0.3", "c", |_| {}).await;
    let http = client::http_client(true);
    let first = client::publish(
        &http,
        &client::Endpoint {
            url: format!("{}/whip/failover", a.url),
            token: None,
            insecure: true,
        },
        MediaSpec::default(),
    )
    .await
    .unwrap();
    let viewer = client::view(&http, &whep(&c, "failover"), ViewerMode::Full)
        .await
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || packets(&viewer) > 100).await);
    a.kill();
    drop(first);
    // Once a's claim lapses (2 s lease) the stream may be published on b.
    let second = {
        let mut tries = 0;
        loop {
            match client::publish(&http, &whip(&b, "failover"), MediaSpec::default()).await {
                Ok(p) => break p,
                Err(e) if tries < 40 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!("publishing on b after a died: {e}"),
            }
        }
    };
    let before = packets(&viewer);
    assert!(
        wait_until(Duration::from_secs(15), || packets(&viewer) > before + 200).await,
        "the viewer on c resumes from the new origin: {} -> {}",
        before,
        packets(&viewer)
    );
    // Sequence numbers continue across the move: no gap the viewer counts as loss.
    let (lost, expected) = viewer.stats.loss();
    assert!(expected > 300);
    assert_eq!(
        lost, 0,
        "the viewer saw a sequence gap across the origin change"
    );
    assert_eq!(viewer.stats.received.lock().unwrap().corrupt, 0);
    assert!(connected(&viewer));
    viewer.close().await.unwrap();
    second.close().await.unwrap();
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_survive_redis_going_away_and_new_pulls_wait_for_it() {
    let mut redis = RedisServer::start();
    let a = node(&redis, "127.0.0.1", "a", |_| {}).await;
    let b = node(&redis, "127.0.0.2", "b", |_| {}).await;
    let c = node(&redis, "127.0.0.3", "c", |_| {}).await;
    let http = client::http_client(true);
    let publisher = client::publish(&http, &whip(&a, "steady"), MediaSpec::default())
        .await
        .unwrap();
    let viewer = client::view(&http, &whep(&b, "steady"), ViewerMode::Full)
        .await
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || packets(&viewer) > 100).await);
    redis.stop();
    assert!(
        wait_until(Duration::from_secs(10), || !c
            .app
            .cluster
            .as_ref()
            .unwrap()
            .healthy())
        .await,
        "c notices the registry is gone"
    );
    // The relay a → b goes on.
    let before = packets(&viewer);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        packets(&viewer) > before + 200,
        "relay kept serving without Redis"
    );
    // A new cross-node pull needs the registry: 503 with Retry-After.
    let r = post_offer(&http, format!("{}/whep/steady", c.url())).await;
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    // A stream this node already pulls still takes viewers.
    let second = client::view(&http, &whep(&b, "steady"), ViewerMode::CountOnly).await;
    assert!(
        second.is_ok(),
        "a viewer of a pulled stream is placed without Redis"
    );
    redis.restart();
    assert!(
        wait_until(Duration::from_secs(10), || c
            .app
            .cluster
            .as_ref()
            .unwrap()
            .healthy())
        .await,
        "c re-registers"
    );
    let late = client::view(&http, &whep(&c, "steady"), ViewerMode::Full)
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || packets(&late) > 100).await,
        "after Redis is back, c pulls the stream"
    );
    let (lost, _) = viewer.stats.loss();
    assert_eq!(lost, 0, "b's viewer lost nothing across the outage");
    viewer.close().await.unwrap();
    late.close().await.unwrap();
    if let Ok(s) = second {
        s.close().await.unwrap();
    }
    publisher.close().await.unwrap();
    for s in [a, b, c] {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_is_redirected_to_a_less_loaded_node_and_plays_there() {
    let redis = RedisServer::start();
    let redirecting = |c: &mut Config| {
        c.cluster.redirect = true;
        // Load = sessions / 16: the publisher alone is 0.0625, with a
        // viewer 0.125, past b's 0 by more than the 0.1 margin.
        c.max_sessions = 16;
    };
    let a = node(&redis, "127.0.0.1", "a", redirecting).await;
    let b = node(&redis, "127.0.0.2", "b", redirecting).await;
    let http = client::http_client(true);
    let publisher = client::publish(&http, &whip(&a, "busy"), MediaSpec::default())
        .await
        .unwrap();
    // Below the margin nobody is redirected: a takes its own viewer.
    let first = client::view(&http, &whep(&a, "busy"), ViewerMode::CountOnly)
        .await
        .unwrap();
    assert_eq!(a.app.registry().viewer_count("busy"), 1);
    // Now a holds 2 sessions (0.125) and b none: the next WHEP goes to b.
    let raw = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = post_offer(&raw, format!("{}/whep/busy?layer=low", a.url())).await;
    assert_eq!(r.status().as_u16(), 307);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("{}/whep/busy?layer=low", b.url())
    );
    // Only a request that passes this node's checks is sent on: a bad
    // stream name is refused here.
    let bad = post_offer(&raw, format!("{}/whep/bad~name", a.url())).await;
    assert_eq!(bad.status().as_u16(), 400);
    // A client that follows it plays from b, over the relay.
    let moved = client::view(&http, &whep(&a, "busy"), ViewerMode::Full)
        .await
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || packets(&moved) > 100).await);
    assert_eq!(b.app.registry().viewer_count("busy"), 1);
    assert_eq!(a.app.registry().viewer_count("busy"), 1);
    assert_eq!(moved.stats.received.lock().unwrap().corrupt, 0);
    // Its resource is on b: ending it there ends the session there.
    let resource = moved.location.clone().unwrap();
    assert!(
        resource.starts_with(&format!("{}/whep/busy/", b.url())),
        "{resource}"
    );
    moved.close().await.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || b
            .app
            .registry()
            .viewer_count("busy")
            == 0)
        .await
    );
    first.close().await.unwrap();
    publisher.close().await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}
