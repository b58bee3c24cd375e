//! Reaching every viewer: a server announcing 127.0.0.1 and ::1 answers with a
//! UDP and a passive TCP candidate per address (TCP ranked below UDP), none
//! over TCP when ICE-TCP is off; and sessions over IPv6 and IPv4 on one
//! dual-stack bind connect, receive media, and show up by transport and
//! address family in the admin API and /metrics.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sluice::Server;
use sluice_bench::client::{self, MediaSpec, SessionOptions, Transport, ViewerMode, TRACK_VIDEO};
use sluice_dataplane::str0m::media::Direction;
use sluice_tests::{assert_contiguous, receives_more_than, sdp_offer, start, whep, whip};

const V4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);

/// One server on ::, announcing 127.0.0.1 then ::1; `tweak` changes the rest.
async fn dual_stack(tweak: impl FnOnce(&mut sluice::Config)) -> Server {
    start(1, |c| {
        c.announce_ip = vec![V4, V6];
        c.signal_rate = 0.0;
        tweak(c);
    })
    .await
}

/// A candidate line's transport, priority and address, and whether it is a
/// passive TCP host candidate.
#[derive(Debug)]
struct Cand {
    transport: String,
    priority: u64,
    addr: SocketAddr,
    passive: bool,
}

fn candidates(sdp: &str) -> Vec<Cand> {
    let mut out: Vec<Cand> = Vec::new();
    for line in sdp.lines() {
        let Some(rest) = line.trim().strip_prefix("a=candidate:") else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        assert!(f.len() >= 8 && f[6] == "typ" && f[7] == "host", "{line}");
        let c = Cand {
            transport: f[2].to_ascii_lowercase(),
            priority: f[3].parse().unwrap(),
            addr: SocketAddr::new(f[4].parse().unwrap(), f[5].parse().unwrap()),
            passive: f.windows(2).any(|w| w == ["tcptype", "passive"]),
        };
        // Each media section may repeat the candidates: count each once.
        if !out
            .iter()
            .any(|o| o.transport == c.transport && o.addr == c.addr)
        {
            out.push(c);
        }
    }
    out
}

async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let text = http.get(url).send().await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

async fn whep_answer(server: &Server, http: &reqwest::Client, stream: &str) -> String {
    let res = http
        .post(format!("{}/whep/{stream}", server.url()))
        .header("content-type", "application/sdp")
        .body(sdp_offer(Direction::RecvOnly))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    res.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_has_udp_then_passive_tcp_candidates_for_every_announced_address() {
    let server = dual_stack(|_| {}).await;
    assert_eq!(
        server.app.config.media_bind_ip(),
        "::".parse::<IpAddr>().unwrap(),
        "two families announced: one dual-stack bind"
    );
    let http = client::http_client(true);
    let answer = whep_answer(&server, &http, "c").await;
    let udp_port = server.shard_addrs()[0].port();
    let tcp_port = server.shard_tcp_addrs()[0][0].port();
    let got = candidates(&answer);
    let find = |t: &str, ip: IpAddr| got.iter().find(|c| c.transport == t && c.addr.ip() == ip);
    for ip in [V4, V6] {
        let u = find("udp", ip).unwrap_or_else(|| panic!("udp {ip}:\n{answer}"));
        assert_eq!(u.addr.port(), udp_port, "{answer}");
        let t = find("tcp", ip).unwrap_or_else(|| panic!("tcp {ip}:\n{answer}"));
        assert_eq!(t.addr.port(), tcp_port, "{answer}");
        assert!(t.passive, "tcptype passive:\n{answer}");
    }
    assert_eq!(got.len(), 4, "{got:?}");
    let lowest_udp = got
        .iter()
        .filter(|c| c.transport == "udp")
        .map(|c| c.priority)
        .min();
    let highest_tcp = got
        .iter()
        .filter(|c| c.transport == "tcp")
        .map(|c| c.priority)
        .max();
    assert!(highest_tcp < lowest_udp, "TCP ranks below UDP: {got:?}");
    // The primary address comes first.
    assert_eq!(got[0].addr.ip(), V4, "{got:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_tcp_port_0_leaves_tcp_candidates_out() {
    let server = dual_stack(|c| c.media_tcp_port = Some(0)).await;
    assert!(server.shard_tcp_addrs().iter().all(Vec::is_empty));
    let http = client::http_client(true);
    let answer = whep_answer(&server, &http, "c").await;
    let got = candidates(&answer);
    assert!(got.iter().all(|c| c.transport == "udp"), "{answer}");
    let ips: Vec<IpAddr> = got.iter().map(|c| c.addr.ip()).collect();
    assert_eq!(ips, [V4, V6], "{answer}");
    server.shutdown().await;
}

fn gauge(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_over_ipv6_udp_and_tcp_receive_an_ipv4_publisher() {
    let server = dual_stack(|_| {}).await;
    let http = client::http_client(true);
    let publisher = client::publish(&http, &whip(&server, "six"), MediaSpec::default())
        .await
        .expect("publish over IPv4");
    let on_v6 = |transport| SessionOptions {
        local_ip: Some(V6),
        transport,
        ..SessionOptions::default()
    };
    let udp = client::view_with(
        &http,
        &whep(&server, "six"),
        ViewerMode::Full,
        &on_v6(Transport::Udp),
    )
    .await
    .expect("view over IPv6 UDP");
    assert!(udp.local_addr.is_ipv6(), "{}", udp.local_addr);
    let tcp = client::view_with(
        &http,
        &whep(&server, "six"),
        ViewerMode::Full,
        &on_v6(Transport::Tcp),
    )
    .await
    .expect("view over IPv6 TCP");
    assert!(tcp.local_addr.is_ipv6(), "{}", tcp.local_addr);
    for (v, what) in [(&udp, "udp"), (&tcp, "tcp")] {
        assert!(
            receives_more_than(v, 200, Duration::from_secs(10)).await,
            "the IPv6 {what} viewer gets media"
        );
        let r = v.stats.received.lock().unwrap().clone();
        assert_eq!(r.corrupt, 0, "{what}: corrupt payloads");
        assert_contiguous(&r, TRACK_VIDEO, 50, what);
    }

    // The admin listing names each session's transport and remote address.
    let sessions_url = format!("{}/admin/sessions", server.url());
    let mut listed = serde_json::Value::Null;
    for _ in 0..50 {
        listed = get_json(&http, &sessions_url).await;
        let ready = listed
            .as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().all(|s| s["stats"]["remote"].is_string()));
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let remote_of = |s: &serde_json::Value| -> SocketAddr {
        s["stats"]["remote"].as_str().unwrap().parse().unwrap()
    };
    let mut seen: Vec<(String, String, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["stats"]["addr_changes"], 0, "{s}");
            (
                s["role"].as_str().unwrap().to_string(),
                s["stats"]["transport"].as_str().unwrap().to_string(),
                remote_of(s).ip().to_canonical().is_ipv6(),
            )
        })
        .collect();
    seen.sort();
    let want = [
        ("publisher", "udp", false),
        ("viewer", "tcp", true),
        ("viewer", "udp", true),
    ]
    .map(|(r, t, v6)| (r.to_string(), t.to_string(), v6));
    assert_eq!(seen, want, "{listed}");
    let ports: Vec<u16> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| remote_of(s).port())
        .collect();
    assert!(ports.contains(&udp.local_addr.port()), "{ports:?}");
    assert!(ports.contains(&tcp.local_addr.port()), "{ports:?}");

    // /admin/shards and /metrics count them by transport and family.
    let shards = get_json(&http, &format!("{}/admin/shards", server.url())).await;
    let viewers = &shards[0]["transports"]["viewers"];
    assert_eq!(
        (&viewers["udp"], &viewers["tcp"]),
        (&1.into(), &1.into()),
        "{shards}"
    );
    assert_eq!(shards[0]["tcp_conns"], 1, "{shards}");
    assert!(shards[0]["tcp_queued_bytes"].is_u64(), "{shards}");
    let (_, text) = sluice_tests::attack::get_metrics(&http, &server, None).await;
    for (name, labels, want) in [
        (
            "sluice_sessions_by_transport",
            "role=\"viewer\",transport=\"udp\"",
            1.0,
        ),
        (
            "sluice_sessions_by_transport",
            "role=\"viewer\",transport=\"tcp\"",
            1.0,
        ),
        (
            "sluice_sessions_by_transport",
            "role=\"publisher\",transport=\"udp\"",
            1.0,
        ),
        (
            "sluice_sessions_by_transport",
            "role=\"publisher\",transport=\"tcp\"",
            0.0,
        ),
        (
            "sluice_sessions_by_family",
            "role=\"viewer\",family=\"ipv6\"",
            2.0,
        ),
        (
            "sluice_sessions_by_family",
            "role=\"viewer\",family=\"ipv4\"",
            0.0,
        ),
        (
            "sluice_sessions_by_family",
            "role=\"publisher\",family=\"ipv4\"",
            1.0,
        ),
        ("sluice_shard_tcp_connections", "shard=\"0\"", 1.0),
    ] {
        assert_eq!(gauge(&text, name, labels), Some(want), "{name}{{{labels}}}");
    }
    assert!(text.contains("# TYPE sluice_shard_tcp_accepted_total counter"));

    for v in [udp, tcp] {
        v.close().await.unwrap();
    }
    publisher.close().await.unwrap();
    sluice_tests::empties_then_stops(server).await;
}
