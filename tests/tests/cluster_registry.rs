//! The cluster registry's semantics, against the in-memory registry and a real
//! `redis-server` this test starts; then two `sluice serve` processes sharing one Redis.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use sluice::cluster::{ClaimOutcome, NodeRecord, Registry, RegistryError};
use sluice_bench::client::{self, ClientError, Endpoint, MediaSpec};
use sluice_tests::cluster::{Node, RedisServer};
use sluice_tests::wait_until;

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
    assert_eq!(epoch(reg.claim_stream("cam", "a", LEASE).await.unwrap()), e1);
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
    assert!(e4 > e2, "after expiry the epoch still rises: {e2} then {e4}");
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
