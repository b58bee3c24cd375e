//! WHIP/WHEP `PATCH` (RFC 9725 §4.3) over real HTTP: the entity tag of a
//! session's ICE, the 428/412/415/400 answers, trickle (204), an ICE
//! restart by a str0m viewer that also moves to another local port (its
//! media goes on without a new DTLS handshake), and restarts taken from the
//! per-address signal rate while trickle is not.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use sluice_bench::client::{self, MediaSpec};
use sluice_dataplane::str0m::media::{Direction, MediaKind};
use sluice_dataplane::str0m::{
    change::{SdpAnswer, SdpPendingOffer},
    net::Protocol,
    net::Receive,
    Candidate, Event, IceCreds, Input, Output, Rtc,
};
use sluice_tests::{sdp_offer, start, whep, whip};

const FRAG: &str = "application/trickle-ice-sdpfrag";

/// A str0m viewer driven by hand over a UDP socket it can swap.
struct Viewer {
    rtc: Rtc,
    sock: UdpSocket,
    /// The host candidate str0m knows (the first socket's address).
    local: SocketAddr,
    media: u64,
    connected: usize,
}

impl Viewer {
    fn bind() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        s
    }

    fn new() -> (Viewer, String, SdpPendingOffer) {
        let sock = Viewer::bind();
        let mut rtc = Rtc::new(Instant::now());
        let cand = Candidate::host(sock.local_addr().unwrap(), "udp").unwrap();
        rtc.add_local_candidate(cand);
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let sdp = offer.to_sdp_string();
        let v = Viewer {
            rtc,
            local: sock.local_addr().unwrap(),
            sock,
            media: 0,
            connected: 0,
        };
        (v, sdp, pending)
    }

    /// Move to a new local port, as a NAT that rebinds or a phone on another
    /// network shows it to the server: the old socket is closed, str0m goes on
    /// with the candidate it has, and the server sees a new source address.
    fn rebind(&mut self) -> SocketAddr {
        self.sock = Viewer::bind();
        self.sock.local_addr().unwrap()
    }

    /// Run the str0m client for `dur` over its socket.
    fn run(&mut self, dur: Duration) {
        let end = Instant::now() + dur;
        let local = self.local;
        let mut buf = vec![0u8; 2000];
        while Instant::now() < end {
            loop {
                match self.rtc.poll_output().unwrap() {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => {
                        let _ = self.sock.send_to(&t.contents, t.destination);
                    }
                    Output::Event(Event::MediaData(_)) => self.media += 1,
                    Output::Event(Event::Connected) => self.connected += 1,
                    Output::Event(_) => {}
                }
            }
            let input = match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => Input::Receive(
                    Instant::now(),
                    Receive::new(Protocol::Udp, from, local, &buf[..n]).unwrap(),
                ),
                Err(_) => Input::Timeout(Instant::now()),
            };
            self.rtc.handle_input(input).unwrap();
        }
    }
}

fn line<'a>(sdp: &'a str, key: &str) -> Option<&'a str> {
    sdp.lines().find_map(|l| l.trim_end().strip_prefix(key))
}

async fn patch(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, reqwest::header::HeaderMap) {
    let mut req = http.patch(url).body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let h = res.headers().clone();
    (status, res.text().await.unwrap(), h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_str0m_viewer_restarts_ice_from_a_new_port_and_keeps_its_media() {
    let server = start(1, |_| {}).await;
    let http = client::http_client(true);
    let publisher = client::publish(&http, &whip(&server, "r"), MediaSpec::default())
        .await
        .unwrap();

    let (mut viewer, offer, pending) = Viewer::new();
    let res = http
        .post(whep(&server, "r").url)
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(res.headers()["accept-patch"], FRAG);
    let loc = res.headers()["location"].to_str().unwrap().to_string();
    let answer = res.text().await.unwrap();
    let ufrag = line(&answer, "a=ice-ufrag:").unwrap();
    assert_eq!(
        etag,
        format!("\"{ufrag}\""),
        "the ETag names the ICE session"
    );
    let answer_sdp = SdpAnswer::from_sdp_string(&answer).unwrap();
    viewer
        .rtc
        .sdp_api()
        .accept_answer(pending, answer_sdp)
        .unwrap();

    let v = tokio::task::spawn_blocking(move || {
        viewer.run(Duration::from_secs(3));
        viewer
    });
    let mut viewer = v.await.unwrap();
    assert_eq!(viewer.connected, 1, "media {}", viewer.media);
    assert!(viewer.media > 50, "media before: {}", viewer.media);

    let url = format!("{}{loc}", server.url());
    let ct = ("content-type", FRAG);
    // Trickle without If-Match: 428; with another tag: 412; with the tag: 204.
    let (s, body, _) = patch(&http, &url, &[ct], "a=end-of-candidates").await;
    assert_eq!(s, 428, "{body}");
    let (s, body, _) = patch(&http, &url, &[ct, ("if-match", "\"nope\"")], "").await;
    assert_eq!(s, 412, "{body}");
    let (s, _, _) = patch(
        &http,
        &url,
        &[ct, ("if-match", &etag)],
        "a=end-of-candidates",
    )
    .await;
    assert_eq!(s, 204);
    // Wrong type, bad fragment, restart without a password.
    let (s, _, _) = patch(&http, &url, &[("if-match", "*")], "a=ice-ufrag:abcd").await;
    assert_eq!(s, 415);
    let (s, _, _) = patch(&http, &url, &[ct, ("if-match", "*")], "hello").await;
    assert_eq!(s, 400);
    let (s, _, _) = patch(&http, &url, &[ct, ("if-match", "*")], "a=ice-ufrag:abcd").await;
    assert_eq!(s, 400);

    // The restart: new client credentials, from a new local port.
    let creds = IceCreds::new();
    let frag = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n",
        creds.ufrag, creds.pass
    );
    let (s, body, h) = patch(&http, &url, &[ct, ("if-match", "*")], &frag).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(h["content-type"], FRAG);
    let new_ufrag = line(&body, "a=ice-ufrag:").unwrap().to_string();
    let new_pwd = line(&body, "a=ice-pwd:").unwrap().to_string();
    assert_ne!(new_ufrag, ufrag);
    assert_eq!(h["etag"].to_str().unwrap(), format!("\"{new_ufrag}\""));
    assert!(
        body.contains("a=candidate:") && body.contains("a=ice-lite"),
        "{body}"
    );
    // The old tag names an ICE session that is gone.
    let (s, _, _) = patch(&http, &url, &[ct, ("if-match", &etag)], "").await;
    assert_eq!(s, 412);

    {
        let mut api = viewer.rtc.direct_api();
        api.set_local_ice_credentials(creds);
        api.set_remote_ice_credentials(IceCreds {
            ufrag: new_ufrag,
            pass: new_pwd,
        });
    }
    let moved_to = viewer.rebind();
    assert_ne!(moved_to, viewer.local);
    let before = viewer.media;
    let v = tokio::task::spawn_blocking(move || {
        viewer.run(Duration::from_secs(6));
        viewer
    });
    let viewer = v.await.unwrap();
    assert!(
        viewer.media > before + 50,
        "media after the restart: {} -> {}",
        before,
        viewer.media
    );
    let c = server.app.dataplane.shards[0].counters.snapshot();
    assert_eq!(c.ice_restarts, 1);
    assert!(c.session_addr_changes >= 1, "{c:?}");
    assert_eq!(
        c.srtp_aes128_gcm + c.srtp_aes256_gcm + c.srtp_aes_cm,
        2,
        "one DTLS handshake each for the publisher and the viewer"
    );
    drop(publisher);
    server.shutdown().await;
}

/// A restart's fragment: new client credentials each time.
fn restart_fragment() -> String {
    let creds = IceCreds::new();
    format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n",
        creds.ufrag, creds.pass
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restarts_over_the_signal_rate_get_429_and_trickle_does_not() {
    let server = start(1, |c| {
        c.signal_rate = 0.01;
        c.signal_burst = 3.0;
    })
    .await;
    let http = client::http_client(true);
    let res = http
        .post(whip(&server, "rate").url)
        .header("content-type", "application/sdp")
        .body(sdp_offer(Direction::SendOnly))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let url = format!(
        "{}{}",
        server.url(),
        res.headers()["location"].to_str().unwrap()
    );
    let ct = ("content-type", FRAG);
    // The POST took one token of three: two restarts pass, then 429.
    let mut etag = String::new();
    for i in 0..2 {
        let (s, body, h) = patch(&http, &url, &[ct, ("if-match", "*")], &restart_fragment()).await;
        assert_eq!(s, 200, "restart {i}: {body}");
        etag = h["etag"].to_str().unwrap().to_string();
    }
    let (s, body, h) = patch(&http, &url, &[ct, ("if-match", "*")], &restart_fragment()).await;
    assert_eq!(s, 429, "{body}");
    let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait >= 1, "Retry-After {wait}");
    // Naming the current tag instead of `*` is a restart all the same.
    let (s, _, _) = patch(&http, &url, &[ct, ("if-match", &etag)], &restart_fragment()).await;
    assert_eq!(s, 429);
    // Trickle is not taken from the rate; the refused restarts changed nothing.
    for _ in 0..10 {
        let (s, body, _) = patch(
            &http,
            &url,
            &[ct, ("if-match", &etag)],
            "a=end-of-candidates",
        )
        .await;
        assert_eq!(s, 204, "{body}");
    }
    assert!(server.app.limits.refused().contains(&("rate", 2)));
    let c = server.app.dataplane.shards[0].counters.snapshot();
    assert_eq!(c.ice_restarts, 2);
    server.shutdown().await;
}
