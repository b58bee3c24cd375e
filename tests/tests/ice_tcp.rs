//! ICE over TCP end to end: str0m viewers that reach the server only over
//! TCP (RFC 6544 active candidates, RFC 4571 framing) receive every packet
//! byte-exact and in order; a viewer that stops reading its connection does
//! not slow the others and gets audio only while it is behind; connections
//! that misbehave are closed and counted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sluice::Server;
use sluice_bench::client::{
    self, MediaSpec, SessionHandle, SessionOptions, Transport, ViewerMode, ViewerStats,
    TRACK_AUDIO, TRACK_VIDEO,
};
use sluice_tests::{assert_contiguous, shard_counter, start, wait_until, whep, whip};

fn tcp_opts() -> SessionOptions {
    SessionOptions {
        transport: Transport::Tcp,
        ..SessionOptions::default()
    }
}

fn tcp_addr(server: &Server) -> SocketAddr {
    *server.app.dataplane.shards[0]
        .tcp_addrs
        .first()
        .expect("the shard has a TCP candidate")
}

async fn tcp_viewer(
    server: &Server,
    http: &reqwest::Client,
    stream: &str,
) -> SessionHandle<ViewerStats> {
    client::view_with(http, &whep(server, stream), ViewerMode::Full, &tcp_opts())
        .await
        .expect("a TCP viewer starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_over_tcp_receive_every_packet_in_order() {
    let server = start(2, |_| {}).await;
    let http = client::http_client(true);
    let publisher = client::publish(&http, &whip(&server, "tcp"), MediaSpec::default())
        .await
        .expect("publish");
    let mut viewers = Vec::new();
    for _ in 0..4 {
        viewers.push(tcp_viewer(&server, &http, "tcp").await);
    }
    assert!(
        wait_until(Duration::from_secs(10), || viewers
            .iter()
            .all(|v| v.stats.connected.load(Ordering::Relaxed)))
        .await,
        "TCP viewers connect"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, v) in viewers.iter().enumerate() {
        let r = v.stats.received.lock().unwrap().clone();
        assert_eq!(r.corrupt, 0, "viewer {i}: corrupt payloads");
        assert_contiguous(&r, TRACK_VIDEO, 200, &format!("TCP viewer {i}"));
        assert_contiguous(&r, TRACK_AUDIO, 100, &format!("TCP viewer {i}"));
    }
    assert!(shard_counter(&server, |c| c.tcp_accepted) >= 4);
    assert!(shard_counter(&server, |c| c.tcp_writes) > 0);
    // Every viewer's session reports TCP with its real remote address.
    let locals: Vec<SocketAddr> = viewers.iter().map(|v| v.local_addr).collect();
    assert!(
        wait_until(Duration::from_secs(3), || {
            let mut tcp = Vec::new();
            for s in &server.app.dataplane.shards {
                for st in s.session_stats.lock().unwrap().values() {
                    if st.transport == "tcp" {
                        tcp.extend(st.remote);
                    }
                }
            }
            locals.iter().all(|l| tcp.contains(l))
        })
        .await,
        "sessions report transport tcp and the viewers' addresses"
    );
    for v in viewers {
        v.close().await.unwrap();
    }
    publisher.close().await.unwrap();
    sluice_tests::empties_then_stops(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_stops_reading_does_not_slow_the_others() {
    let server = start(1, |_| {}).await;
    let http = client::http_client(true);
    let spec = MediaSpec {
        bitrate: 8_000_000,
        ..MediaSpec::default()
    };
    let publisher = client::publish(&http, &whip(&server, "slow"), spec)
        .await
        .expect("publish");
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(tcp_viewer(&server, &http, "slow").await);
    }
    let stuck = tcp_viewer(&server, &http, "slow").await;
    let all_connected = || {
        others
            .iter()
            .chain(Some(&stuck))
            .all(|v| v.stats.connected.load(Ordering::Relaxed))
    };
    assert!(wait_until(Duration::from_secs(10), all_connected).await);
    tokio::time::sleep(Duration::from_secs(1)).await;

    stuck.paused.store(true, Ordering::Relaxed);
    // Until its connection is congested: the kernel's buffers fill first.
    assert!(
        wait_until(Duration::from_secs(20), || shard_counter(&server, |c| c
            .tcp_congested)
            > 0)
        .await,
        "the stuck viewer's connection became congested"
    );
    // What it does not read waits in its queue, past the soft limit, and
    // the shard's gauge shows it (`sluice_shard_tcp_queued_bytes`).
    assert!(
        wait_until(Duration::from_secs(2), || server.app.dataplane.shards[0]
            .tcp_queued
            .load(Ordering::Relaxed)
            >= 64 << 10)
        .await,
        "the shard publishes the bytes its TCP queues hold"
    );
    let sent = |p: &SessionHandle<client::PublisherStats>| {
        p.stats.video_sent.load(Ordering::Relaxed) + p.stats.audio_sent.load(Ordering::Relaxed)
    };
    let got: Vec<u64> = others.iter().map(sluice_tests::packets).collect();
    let sent0 = sent(&publisher);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = sent(&publisher) - sent0;
    for (i, v) in others.iter().enumerate() {
        let n = sluice_tests::packets(v) - got[i];
        assert!(
            n as f64 >= sent as f64 * 0.97,
            "viewer {i} got {n} of {sent} packets in {:?} beside a stuck viewer",
            t0.elapsed()
        );
        let r = v.stats.received.lock().unwrap().clone();
        assert_eq!(r.corrupt, 0);
        assert_contiguous(&r, TRACK_VIDEO, 100, &format!("viewer {i}"));
    }
    assert!(
        shard_counter(&server, |c| c.drop_tcp_video_congested) > 0,
        "video to the stuck viewer is held back"
    );

    // It reads again: it catches up and gets video from a keyframe on.
    let before = sluice_tests::packets(&stuck);
    let kf = publisher.stats.keyframe_requests.load(Ordering::Relaxed);
    stuck.paused.store(false, Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(10), || sluice_tests::packets(&stuck)
            > before + 500)
        .await,
        "the viewer receives again once it reads"
    );
    assert!(
        wait_until(Duration::from_secs(5), || publisher
            .stats
            .keyframe_requests
            .load(Ordering::Relaxed)
            > kf)
        .await,
        "a keyframe is asked for when the viewer catches up"
    );
    for v in others {
        v.close().await.unwrap();
    }
    stuck.close().await.unwrap();
    publisher.close().await.unwrap();
    sluice_tests::empties_then_stops(server).await;
}

/// Whether the server closes `s` within `limit` (a read returns 0 or fails).
fn closed_within(mut s: TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    let until = Instant::now() + limit;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
        if Instant::now() >= until {
            return false;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tcp_connections_are_closed_and_counted() {
    let server = start(1, |_| {}).await;
    let at = tcp_addr(&server);
    let quick = Duration::from_secs(3);

    // A zero-length frame.
    let mut s = TcpStream::connect(at).unwrap();
    s.write_all(&[0, 0]).unwrap();
    assert!(
        closed_within(s, quick),
        "a zero-length frame closes the connection"
    );
    // A frame longer than any datagram.
    let mut s = TcpStream::connect(at).unwrap();
    s.write_all(&[0xff, 0xff, 0, 1]).unwrap();
    assert!(
        closed_within(s, quick),
        "an oversized frame closes the connection"
    );
    // DTLS before any STUN.
    let mut s = TcpStream::connect(at).unwrap();
    let mut frame = vec![0, 20];
    frame.extend_from_slice(&[0x16; 20]);
    s.write_all(&frame).unwrap();
    assert!(
        closed_within(s, quick),
        "DTLS before STUN closes the connection"
    );
    // STUN naming no session: dropped; the connection never answered.
    let mut s = TcpStream::connect(at).unwrap();
    let stun = sluice_tests::attack::stun_request(
        "nosuchufrag:peer",
        sluice_tests::attack::Integrity::Missing,
        [7; 12],
    );
    s.write_all(&(stun.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&stun).unwrap();
    let silent = TcpStream::connect(at).unwrap();
    let t0 = Instant::now();
    assert!(
        closed_within(s, Duration::from_secs(15)),
        "a connection the server never answered is closed"
    );
    assert!(
        closed_within(silent, Duration::from_secs(5)),
        "a silent connection is closed"
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(5),
        "not before the time allowed"
    );
    // Counters are published at the end of the turn that closed the connection.
    assert!(
        wait_until(Duration::from_secs(2), || {
            shard_counter(&server, |c| c.tcp_closed_bad_frame) >= 3
                && shard_counter(&server, |c| c.tcp_closed_unanswered) >= 2
                && shard_counter(&server, |c| c.drop_unknown_flow) >= 1
        })
        .await,
        "bad frames, unanswered connections and the unknown ufrag are counted"
    );
    assert!(
        wait_until(Duration::from_secs(2), || server.app.dataplane.shards[0]
            .tcp_conns
            .load(Ordering::Relaxed)
            == 0)
        .await
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_cap_are_refused() {
    let server = start(1, |c| c.tcp_max_conns_per_ip = 2).await;
    let at = tcp_addr(&server);
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(at).unwrap()).collect();
    assert!(
        wait_until(Duration::from_secs(2), || server.app.dataplane.shards[0]
            .tcp_conns
            .load(Ordering::Relaxed)
            == 2)
        .await
    );
    let third = TcpStream::connect(at).unwrap();
    assert!(
        closed_within(third, Duration::from_secs(3)),
        "a third connection from the address is closed"
    );
    assert!(
        wait_until(Duration::from_secs(2), || shard_counter(&server, |c| c
            .tcp_refused)
            == 1)
        .await,
        "and counted"
    );
    // The two held ones are still open.
    for s in &held {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let r = (&*s).read(&mut b);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{r:?}"
        );
    }
    // With TCP off there is no TCP candidate and no listener.
    let off = start(1, |c| c.media_tcp_port = Some(0)).await;
    assert!(off.app.dataplane.shards[0].tcp_addrs.is_empty());
    off.shutdown().await;
    drop(held);
    server.shutdown().await;
}
