//! A viewer's source address changes mid-stream, with and without an ICE
//! restart (WHIP/WHEP `PATCH`): media goes on, on the same DTLS session.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use sluice_dataplane::str0m::ice::{StunMessage, TransId};
use sluice_dataplane::str0m::IceCreds;
use sluice_dataplane::testkit::Harness;
use sluice_dataplane::{Command, IceRestart, ShardError, ShardEvent};

/// `frames` frames of a publisher's video: 4 packets of 900 bytes every 20 ms.
fn send_video(h: &mut Harness, publisher: usize, frames: usize) {
    for _ in 0..frames {
        let d = h.publisher_datagrams(publisher, 4, 900);
        h.feed(publisher, &d);
        h.advance(Duration::from_millis(20));
    }
}

/// A publisher and two viewers, connected, keeping the payloads they receive.
fn stream() -> (Harness, usize, usize, usize) {
    let mut h = Harness::new();
    let publisher = h.add_publisher();
    let moving = h.add_viewer();
    let staying = h.add_viewer();
    h.connect_all(Duration::from_secs(5));
    for v in [moving, staying] {
        h.peers[v].payloads = Some(Vec::new());
    }
    send_video(&mut h, publisher, 10);
    (h, publisher, moving, staying)
}

fn payloads(h: &Harness, v: usize) -> &[Vec<u8>] {
    h.peers[v].payloads.as_deref().unwrap_or_default()
}

/// DTLS handshakes the shard completed (one per keying material export).
fn handshakes(h: &Harness) -> u64 {
    let c = h.shard.counters();
    c.srtp_aes128_gcm + c.srtp_aes256_gcm + c.srtp_aes_cm
}

fn connected_events(h: &mut Harness) -> usize {
    std::iter::from_fn(|| h.shard.poll_event())
        .filter(|e| matches!(e, ShardEvent::Connected { .. }))
        .count()
}

/// Restart the ICE of `peer`'s session with new server credentials, and
/// give the peer's str0m its new ones and the server's; returns the old
/// (client, server) credentials.
fn restart(h: &mut Harness, peer: usize, server: IceCreds) -> (IceCreds, IceCreds) {
    let client = IceCreds::new();
    let old_client = h.peers[peer].rtc.direct_api().local_ice_credentials();
    let old_server = h.peers[peer].server_ice.clone();
    let (tx, rx) = mpsc::channel();
    h.shard.handle_command(
        h.now,
        Command::IceRestart(Box::new(IceRestart {
            id: h.peers[peer].id,
            local: server.clone(),
            remote: client.clone(),
            reply: Box::new(move |r| tx.send(r).unwrap()),
        })),
    );
    rx.try_recv().expect("answered at once").expect("restarted");
    let mut api = h.peers[peer].rtc.direct_api();
    api.set_local_ice_credentials(client);
    api.set_remote_ice_credentials(server.clone());
    h.peers[peer].server_ice = server;
    (old_client, old_server)
}

fn new_server_creds(n: u32) -> IceCreds {
    IceCreds {
        ufrag: format!("restart{n}"),
        pass: format!("restartedserverpassword{n}"),
    }
}

/// A binding request as a controlling agent with `client` credentials sends
/// to a server with `server` credentials, nominating the pair.
fn binding_request(client: &IceCreds, server: &IceCreds) -> Vec<u8> {
    let username = format!("{}:{}", server.ufrag, client.ufrag);
    let msg = StunMessage::binding_request(&username, TransId::new(), true, 7, 1_845_501_695, true);
    let mut buf = vec![0u8; 1500];
    let hmac = |key: &[u8], parts: &[&[u8]]| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        let mut ctx = ring::hmac::Context::with_key(&key);
        for p in parts {
            ctx.update(p);
        }
        let mut out = [0u8; 20];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    };
    let n = msg
        .to_bytes(Some(server.pass.as_bytes()), &mut buf, hmac)
        .expect("STUN");
    buf.truncate(n);
    buf
}

/// Hand `req` to the shard from `from`: did the shard answer with a binding
/// success there? The shard's other datagrams stay queued.
fn answered(h: &mut Harness, from: SocketAddr, req: &[u8]) -> bool {
    h.shard.handle_datagram(h.now, from, req);
    let out = h.shard.transmits();
    let before = out.len();
    out.retain(|d| d.destination != from);
    before != out.len()
}

/// Send video until the viewer gets some again (at most `limit`); returns
/// how long that took.
fn until_received(h: &mut Harness, publisher: usize, v: usize, limit: Duration) -> Duration {
    let (start, before) = (h.now, payloads(h, v).len());
    while h.now - start < limit {
        send_video(h, publisher, 1);
        if payloads(h, v).len() > before {
            return h.now - start;
        }
    }
    panic!(
        "viewer received nothing within {limit:?} (shard: {:?})",
        h.shard.counters()
    );
}

/// The moving viewer got each of the last `n` packets the staying viewer
/// got, with the same bytes (RTX repairs may reorder them).
fn assert_last_packets_match(h: &Harness, moving: usize, staying: usize, n: usize) {
    // Bytes 1..9 of a test payload number it.
    let numbered = |v: usize| -> BTreeMap<u64, Vec<u8>> {
        payloads(h, v)
            .iter()
            .map(|p| (u64::from_be_bytes(p[1..9].try_into().unwrap()), p.clone()))
            .collect()
    };
    let (m, s) = (numbered(moving), numbered(staying));
    assert!(s.len() >= n, "{}", s.len());
    let missing: Vec<u64> = s
        .iter()
        .rev()
        .take(n)
        .filter(|(k, p)| m.get(k) != Some(p))
        .map(|(k, _)| *k)
        .collect();
    assert!(missing.is_empty(), "missing or different: {missing:?}");
}

#[test]
fn an_ice_restart_from_a_new_address_keeps_the_media_and_the_dtls_session() {
    let (mut h, publisher, moving, staying) = stream();
    assert_eq!(payloads(&h, moving).len(), 40);
    assert_eq!(connected_events(&mut h), 3);
    let dtls = handshakes(&h);
    restart(&mut h, moving, new_server_creds(1));
    h.peers[moving].nat = Some("10.9.9.9:5555".parse().unwrap());
    let took = until_received(&mut h, publisher, moving, Duration::from_secs(10));
    // The client checks its selected pair every few seconds.
    assert!(took < Duration::from_secs(5), "media back after {took:?}");
    send_video(&mut h, publisher, 50);
    assert_last_packets_match(&h, moving, staying, 200);
    assert_eq!(handshakes(&h), dtls, "no new DTLS handshake");
    assert_eq!(connected_events(&mut h), 0);
    assert_eq!(h.shard.counters().ice_restarts, 1);
    assert_eq!(h.shard.session_count(), 3);
}

#[test]
fn a_viewer_that_restarts_ice_where_it_is_misses_nothing() {
    let (mut h, publisher, moving, staying) = stream();
    restart(&mut h, moving, new_server_creds(2));
    send_video(&mut h, publisher, 250);
    assert_eq!(payloads(&h, moving), payloads(&h, staying));
    assert_eq!(payloads(&h, moving).len(), 1040);
}

#[test]
fn after_an_ice_restart_the_old_credentials_bind_no_new_address() {
    let (mut h, _, v, _) = stream();
    let probe: SocketAddr = "10.7.7.7:7000".parse().unwrap();
    let (old_client, old_server) = {
        let p = &mut h.peers[v];
        (
            p.rtc.direct_api().local_ice_credentials(),
            p.server_ice.clone(),
        )
    };
    // The same request is answered before the restart: it is a valid one.
    assert!(answered(
        &mut h,
        probe,
        &binding_request(&old_client, &old_server)
    ));
    let new_server = new_server_creds(3);
    restart(&mut h, v, new_server.clone());
    let new_client = h.peers[v].rtc.direct_api().local_ice_credentials();
    let elsewhere: SocketAddr = "10.7.7.8:7000".parse().unwrap();
    let unknown = h.shard.counters().drop_unknown_flow;
    assert!(!answered(
        &mut h,
        elsewhere,
        &binding_request(&old_client, &old_server)
    ));
    assert_eq!(h.shard.counters().drop_unknown_flow, unknown + 1);
    // Nor from an address bound before: str0m refuses the old credentials.
    let bound = h.peers[v].seen_at();
    assert!(!answered(
        &mut h,
        bound,
        &binding_request(&old_client, &old_server)
    ));
    // A new ufrag with the old password is refused too.
    let forged = IceCreds {
        ufrag: new_server.ufrag.clone(),
        pass: old_server.pass.clone(),
    };
    assert!(!answered(
        &mut h,
        elsewhere,
        &binding_request(&new_client, &forged)
    ));
    assert!(answered(
        &mut h,
        elsewhere,
        &binding_request(&new_client, &new_server)
    ));
}

#[test]
fn a_restart_of_an_unknown_session_or_onto_a_ufrag_in_use_is_refused() {
    let (mut h, _, moving, staying) = stream();
    let taken = h.peers[staying].server_ice.clone();
    let (tx, rx) = mpsc::channel();
    for (id, ufrag) in [
        (sluice_dataplane::SessionId(999), "fresh000".to_string()),
        (h.peers[moving].id, taken.ufrag.clone()),
    ] {
        let tx = tx.clone();
        h.shard.handle_command(
            h.now,
            Command::IceRestart(Box::new(IceRestart {
                id,
                local: IceCreds {
                    ufrag,
                    pass: "somepasswordsomepassword".into(),
                },
                remote: IceCreds::new(),
                reply: Box::new(move |r| tx.send(r).unwrap()),
            })),
        );
    }
    assert!(matches!(rx.try_recv(), Ok(Err(ShardError::NoSuchSession))));
    assert!(matches!(rx.try_recv(), Ok(Err(ShardError::UfragInUse))));
    // Both sessions still answer with their own credentials.
    for (v, probe) in [(moving, "10.7.7.9:7000"), (staying, "10.7.7.9:7001")] {
        let probe: SocketAddr = probe.parse().unwrap();
        let client = h.peers[v].rtc.direct_api().local_ice_credentials();
        let server = h.peers[v].server_ice.clone();
        assert!(answered(&mut h, probe, &binding_request(&client, &server)));
    }
}

#[test]
fn a_viewer_whose_nat_rebinds_keeps_receiving_on_its_new_address() {
    let (mut h, publisher, moving, staying) = stream();
    let dtls = handshakes(&h);
    h.peers[moving].nat = Some("10.9.9.10:6000".parse().unwrap());
    let took = until_received(&mut h, publisher, moving, Duration::from_secs(20));
    assert!(took < Duration::from_secs(5), "media back after {took:?}");
    send_video(&mut h, publisher, 50);
    assert_last_packets_match(&h, moving, staying, 200);
    assert_eq!(handshakes(&h), dtls);
    assert_eq!(h.shard.counters().session_addr_changes, 1);
}

#[test]
fn a_nominating_check_replayed_from_elsewhere_does_not_divert_a_peer_that_still_sends() {
    let (mut h, publisher, v, staying) = stream();
    let client = h.peers[v].rtc.direct_api().local_ice_credentials();
    let server = h.peers[v].server_ice.clone();
    let spoofed: SocketAddr = "10.6.6.6:6666".parse().unwrap();
    let lost = h.undeliverable;
    for _ in 0..12 {
        // Answered (the check is valid), so the address binds for ingress.
        assert!(answered(
            &mut h,
            spoofed,
            &binding_request(&client, &server)
        ));
        send_video(&mut h, publisher, 25);
    }
    assert_eq!(h.undeliverable, lost, "media went to the spoofed address");
    assert_last_packets_match(&h, v, staying, 1200);
    assert_eq!(h.shard.counters().session_addr_changes, 0);
}
