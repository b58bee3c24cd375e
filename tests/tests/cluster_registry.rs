//! The cluster registry's semantics, against the in-memory registry and a real
//! `redis-server` this test starts; then two `sluice serve` processes sharing one Redis.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use sluice::cluster::{ClaimOutcome, NodeRecord, Registry, RegistryError};
use sluice_bench::client::{self, ClientError, Endpoint, MediaSpec};
use sluice_tests::cluster::{Node, RedisServer};

const LEASE: Duration = Duration::from_millis(300);

fn record(id: &str) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        advertise: format!("https://{id}.test:8443"),
        media_ip: IpAddr::from([127, 0, 0, 1]),
        sessions: 3,
        viewers: 2,
        load: 0.25,
        version: "test".into(),
        lease_ms: LEASE.as_millis() as u64,
        pulls: Vec::new(),
    }
}

fn epoch(o: ClaimOutcome) -> u64 {
    match o {
        ClaimOutcome::Claimed { epoch } => epoch,
        held => panic!("expected a claim, got {held:?}"),
    }
}

/// Claim, held, renew, release, expiry and fencing of streams.
async fn streams_claim_and_fence(reg: &Registry) {
    let e1 = epoch(reg.claim_stream("cam", "a", LEASE).await.unwrap());
    assert_eq!(
        reg.claim_stream("cam", "b", LEASE).await.unwrap(),
        ClaimOutcome::Held { owner: "a".into() }
    );
    // Ours already: extended, same epoch.
    assert_eq!(
        epoch(reg.claim_stream("cam", "a", LEASE).await.unwrap()),
        e1
    );
    let origin = reg.stream_origin("cam").await.unwrap().unwrap();
    assert_eq!((origin.node_id.as_str(), origin.epoch), ("a", e1));
    assert!(reg.renew_stream("cam", "a", e1, LEASE).await.unwrap());
    assert!(!reg.renew_stream("cam", "b", e1, LEASE).await.unwrap());
    assert!(!reg.release_stream("cam", "b", e1).await.unwrap());
    assert!(reg.release_stream("cam", "a", e1).await.unwrap());
    assert_eq!(reg.stream_origin("cam").await.unwrap(), None);

    // A newer claim fences the older epoch out, even of the same node.
    let e2 = epoch(reg.claim_stream("cam", "b", LEASE).await.unwrap());
    assert!(e2 > e1, "epochs rise: {e1} then {e2}");
    assert!(!reg.renew_stream("cam", "a", e1, LEASE).await.unwrap());
    assert!(!reg.release_stream("cam", "a", e1).await.unwrap());
    assert!(!reg.release_stream("cam", "b", e1).await.unwrap());
    let names: Vec<_> = reg.streams().await.unwrap();
    assert_eq!(names.len(), 1);
    assert_eq!(names[0].0, "cam");
    assert_eq!(names[0].1.node_id, "b");

    // Unrenewed, it lapses within the lease; renewed, it stays.
    let e3 = epoch(reg.claim_stream("other", "a", LEASE).await.unwrap());
    for _ in 0..4 {
        tokio::time::sleep(LEASE / 3).await;
        assert!(reg.renew_stream("other", "a", e3, LEASE).await.unwrap());
    }
    tokio::time::sleep(LEASE + Duration::from_millis(100)).await;
    assert_eq!(reg.stream_origin("cam").await.unwrap(), None);
    assert!(!reg.renew_stream("cam", "b", e2, LEASE).await.unwrap());
    assert!(reg.streams().await.unwrap().is_empty());
    let e4 = epoch(reg.claim_stream("cam", "a", LEASE).await.unwrap());
    assert!(
        e4 > e2,
        "after expiry the epoch still rises: {e2} then {e4}"
    );
    assert!(!reg.renew_stream("cam", "b", e2, LEASE).await.unwrap());
}

/// Rooms follow the same rules in a table of their own.
async fn rooms_claim_and_fence(reg: &Registry) {
    let e1 = epoch(reg.claim_room("lobby", "a", LEASE).await.unwrap());
    assert_eq!(
        reg.claim_room("lobby", "b", LEASE).await.unwrap(),
        ClaimOutcome::Held { owner: "a".into() }
    );
    // A stream of the same name is another thing.
    epoch(reg.claim_stream("lobby", "b", LEASE).await.unwrap());
    assert_eq!(reg.room_home("lobby").await.unwrap().unwrap().node_id, "a");
    assert!(reg.renew_room("lobby", "a", e1, LEASE).await.unwrap());
    assert!(!reg.renew_room("lobby", "a", e1 + 1, LEASE).await.unwrap());
    assert!(!reg.release_room("lobby", "b", e1).await.unwrap());
    assert_eq!(reg.rooms().await.unwrap().len(), 1);
    assert!(reg.release_room("lobby", "a", e1).await.unwrap());
    assert_eq!(reg.room_home("lobby").await.unwrap(), None);
    let e2 = epoch(reg.claim_room("lobby", "b", LEASE).await.unwrap());
    assert!(e2 > e1);
    tokio::time::sleep(LEASE + Duration::from_millis(100)).await;
    assert_eq!(reg.room_home("lobby").await.unwrap(), None);
}

/// Node records live for their lease and leave the listing when it lapses.
async fn nodes_expire(reg: &Registry) {
    reg.register_node(&record("a"), LEASE).await.unwrap();
    reg.register_node(&record("b"), LEASE * 10).await.unwrap();
    let nodes = reg.nodes().await.unwrap();
    let ids: Vec<_> = nodes.iter().map(|(n, _)| n.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(nodes[0].0, record("a"));
    assert!(nodes[0].1 < LEASE, "heartbeat age {:?}", nodes[0].1);
    assert_eq!(reg.node("a").await.unwrap(), Some(record("a")));
    tokio::time::sleep(LEASE + Duration::from_millis(100)).await;
    assert_eq!(reg.node("a").await.unwrap(), None);
    let ids: Vec<_> = reg
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n.id)
        .collect();
    assert_eq!(ids, ["b"]);
    reg.deregister_node("b").await.unwrap();
    assert!(reg.nodes().await.unwrap().is_empty());
}

#[tokio::test]
async fn memory_registry_claims_fence_and_expire() {
    let reg = Registry::memory();
    streams_claim_and_fence(&reg).await;
    rooms_claim_and_fence(&reg).await;
    nodes_expire(&reg).await;
    assert!(reg.stats().requests() > 20);
    assert_eq!(reg.stats().errors(), 0);
}

#[tokio::test]
async fn memory_registry_down_fails_every_call_and_counts_it() {
    let reg = Registry::memory();
    let Registry::Memory(m) = &reg else {
        unreachable!()
    };
    m.set_down(true);
    assert!(matches!(
        reg.claim_stream("cam", "a", LEASE).await,
        Err(RegistryError::Unavailable(_))
    ));
    assert!(reg.nodes().await.is_err());
    assert_eq!(reg.stats().errors(), 2);
    m.set_down(false);
    epoch(reg.claim_stream("cam", "a", LEASE).await.unwrap());
}

#[tokio::test]
async fn redis_registry_claims_fence_and_expire() {
    let redis = RedisServer::start();
    let reg = Registry::redis(&redis.url()).unwrap();
    reg.ping().await.unwrap();
    streams_claim_and_fence(&reg).await;
    rooms_claim_and_fence(&reg).await;
    nodes_expire(&reg).await;
    assert_eq!(reg.stats().errors(), 0);
}

#[tokio::test]
async fn redis_registry_down_answers_an_error_within_the_timeout_and_recovers() {
    let mut redis = RedisServer::start();
    let reg = Registry::redis(&redis.url()).unwrap();
    let e1 = epoch(reg.claim_stream("cam", "a", LEASE * 100).await.unwrap());
    redis.stop();
    let t0 = Instant::now();
    assert!(reg.claim_stream("cam", "a", LEASE).await.is_err());
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(reg.stats().errors() >= 1);
    // Back, empty (no persistence): the old claim is gone and a new one has a higher epoch.
    redis.restart();
    let mut again = None;
    for _ in 0..50 {
        if let Ok(o) = reg.claim_stream("cam", "b", LEASE).await {
            again = Some(epoch(o));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e2 = again.expect("the registry answers again after the restart");
    assert!(e2 > e1, "epoch after a restart {e2} > {e1}");
}

const SECRET: &str = "cluster-secret-for-tests";

fn node(ip: &str, id: &str, redis: &RedisServer) -> Node {
    Node::start(
        ip,
        &[
            "--cluster-redis-url",
            &redis.url(),
            "--cluster-secret",
            SECRET,
            "--cluster-node-id",
            id,
            "--cluster-lease-ms",
            "1000",
        ],
    )
}

fn endpoint(node: &Node, kind: &str, stream: &str) -> Endpoint {
    Endpoint {
        url: format!("{}/{kind}/{stream}", node.url),
        token: None,
        insecure: true,
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let text = http.get(url).send().await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

/// Poll `/admin/cluster` of `node` until `f` holds (10 s at most); returns the last listing.
async fn cluster_until(
    http: &reqwest::Client,
    node: &Node,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let res = http.get(format!("{}/admin/cluster", node.url)).send().await;
        let v = match res {
            Ok(r) if r.status() == 200 => {
                serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default()
            }
            _ => serde_json::Value::Null,
        };
        if f(&v) || Instant::now() > until {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ids(v: &serde_json::Value, list: &str, key: &str) -> Vec<String> {
    v[list]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n[key].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn refused_with(r: Result<impl Sized, ClientError>) -> Option<(u16, String)> {
    match r {
        Err(ClientError::Status { status, reason }) => Some((status, reason)),
        _ => None,
    }
}

#[tokio::test]
async fn two_nodes_share_stream_claims_and_survive_a_registry_restart() {
    let mut redis = RedisServer::start();
    let a = node("127.0.0.1", "node-a", &redis);
    let b = node("127.0.0.2", "node-b", &redis);
    let http = client::http_client(true);

    let listing = cluster_until(&http, &a, |v| ids(v, "nodes", "id").len() == 2).await;
    assert_eq!(
        ids(&listing, "nodes", "id"),
        ["node-a", "node-b"],
        "{listing}"
    );
    assert_eq!(listing["node_id"], "node-a");
    let advertised: Vec<_> = ids(&listing, "nodes", "advertise");
    assert_eq!(advertised, [a.url.clone(), b.url.clone()]);

    // A publishes; the same stream on B is refused as a second publisher on one node is.
    let on_a = client::publish(&http, &endpoint(&a, "whip", "cam"), MediaSpec::default())
        .await
        .expect("publish on A");
    let (status, reason) = refused_with(
        client::publish(&http, &endpoint(&b, "whip", "cam"), MediaSpec::default()).await,
    )
    .expect("B refuses");
    assert_eq!(
        (status, reason.as_str()),
        (409, "stream \"cam\" is already published")
    );
    let listing = cluster_until(&http, &b, |v| ids(v, "streams", "origin") == ["node-a"]).await;
    assert_eq!(ids(&listing, "streams", "name"), ["cam"], "{listing}");
    assert_eq!(listing["streams"][0]["edges"], serde_json::json!([]));

    // kill -9 A: its claim holds until the lease lapses, then B may publish.
    a.kill();
    let killed = Instant::now();
    let first = client::publish(&http, &endpoint(&b, "whip", "cam"), MediaSpec::default()).await;
    assert_eq!(
        refused_with(first).map(|r| r.0),
        Some(409),
        "claim held within the lease"
    );
    let mut on_b = None;
    while on_b.is_none() && killed.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        on_b = client::publish(&http, &endpoint(&b, "whip", "cam"), MediaSpec::default())
            .await
            .ok();
    }
    let on_b = on_b.expect("B publishes once A's lease has lapsed");
    assert!(
        killed.elapsed() >= Duration::from_millis(500),
        "{:?}",
        killed.elapsed()
    );
    drop(on_a);

    // Redis down: a new publish cannot be claimed (503 + Retry-After); B keeps its publisher.
    redis.stop();
    let res = http
        .post(format!("{}/whip/cam2", b.url))
        .header("content-type", "application/sdp")
        .body(sluice_tests::sdp_offer(str0m::media::Direction::SendOnly))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
    let body = res.text().await.unwrap();
    assert!(body.contains("registry unreachable"), "{body}");
    let cam_on_b = || async {
        let streams = get_json(&http, &format!("{}/admin/streams", b.url)).await;
        let cam = streams
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "cam")
            .cloned();
        cam.unwrap_or_else(|| panic!("B dropped its stream while Redis was down: {streams}"))
    };
    let before = cam_on_b().await["bytes_in"].as_u64().unwrap();
    // Past the lease: nothing B serves depends on the registry answering.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let cam = cam_on_b().await;
    assert!(cam["publisher"].is_string(), "{cam}");
    assert!(cam["bytes_in"].as_u64().unwrap() > before, "{cam}");
    assert!(!on_b.is_finished());

    // Redis back, empty: B registers again, takes its stream again, and publishing works.
    redis.restart();
    let listing = cluster_until(&http, &b, |v| {
        ids(v, "nodes", "id") == ["node-b"] && ids(v, "streams", "origin") == ["node-b"]
    })
    .await;
    assert_eq!(ids(&listing, "nodes", "id"), ["node-b"], "{listing}");
    assert_eq!(ids(&listing, "streams", "name"), ["cam"], "{listing}");
    let cam2 = client::publish(&http, &endpoint(&b, "whip", "cam2"), MediaSpec::default())
        .await
        .expect("publishing works again");
    let metrics = http
        .get(format!("{}/metrics", b.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let errors = sluice_tests::attack::metric_sum(&metrics, "sluice_registry_errors_total");
    assert!(errors >= 1.0, "registry errors counted: {errors}");
    assert_eq!(
        sluice_tests::attack::metric_sum(&metrics, "sluice_cluster_nodes"),
        1.0
    );

    // A publisher that ends frees its claim at once, not after the lease.
    cam2.close().await.unwrap();
    let listing = cluster_until(&http, &b, |v| ids(v, "streams", "name") == ["cam"]).await;
    assert_eq!(
        ids(&listing, "streams", "name"),
        ["cam"],
        "{listing}; log {}",
        b.log.display()
    );
    let _ = b.log_text();
}

#[tokio::test]
async fn a_room_join_on_another_node_is_told_where_the_room_lives() {
    let redis = RedisServer::start();
    let a = node("127.0.0.1", "node-a", &redis);
    let b = node("127.0.0.2", "node-b", &redis);
    let http = client::http_client(true);
    cluster_until(&http, &b, |v| ids(v, "nodes", "id").len() == 2).await;

    let on_a = sluice_tests::room::connect_ws(&a.url, "roomId=lobby&peerId=p1")
        .await
        .expect("join on A");
    assert_eq!(
        sluice_tests::room::connect_ws(&b.url, "roomId=lobby&peerId=p2")
            .await
            .err(),
        Some(421)
    );
    // Without an upgrade, the same refusal with its reason and where to go.
    let res = http
        .get(format!("{}/ws?roomId=lobby&peerId=p2", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 421);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(location, format!("{}/ws?roomId=lobby&peerId=p2", a.url));
    let body = res.text().await.unwrap();
    assert!(body.contains("node-a") && body.contains(&a.url), "{body}");
    let listing = cluster_until(&http, &b, |v| ids(v, "rooms", "node") == ["node-a"]).await;
    assert_eq!(ids(&listing, "rooms", "name"), ["lobby"], "{listing}");

    // The last participant leaves A: the room is free for any node.
    drop(on_a);
    cluster_until(&http, &b, |v| ids(v, "rooms", "name").is_empty()).await;
    let res = http
        .get(format!("{}/ws?roomId=lobby&peerId=p2", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 426, "a plain GET B would admit");
    let on_b = sluice_tests::room::connect_ws(&b.url, "roomId=lobby&peerId=p2").await;
    assert!(on_b.is_ok(), "join on B once the room left A");
}
