//! Hostile HTTP requests against a server with a token secret and an admin
//! token: each gets its status and a one-line reason, none creates or ends
//! a session, and a publisher and viewer set up before keep flowing.
//!
//! Over 800 lines: it is one table of hostile requests with the answer each
//! must get, run against one server whose bystanders are checked once after
//! all of them.

use std::time::Instant;

use base64::Engine;
use sluice::auth::{unix_now, Claims, TokenKey};
use sluice_bench::client;
use sluice_tests::attack::{raw_request, Bystander};
use sluice_tests::start;
use str0m::media::{Direction, MediaKind};
use str0m::RtcConfig;

const SECRET: &str = "k";
const ADMIN: &str = "adm";

fn offer(dir: Direction) -> String {
    let mut rtc = RtcConfig::new().build(Instant::now());
    rtc.add_local_candidate(str0m::Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}

fn mint(key: &[u8], stream: &str, publish: bool, subscribe: bool, exp: u64) -> String {
    TokenKey::new(key).mint(&Claims {
        exp,
        stream: Some(stream.into()),
        publish,
        subscribe,
        ..Default::default()
    })
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// One request and the answer it must get.
struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Acceptable statuses.
    want: &'static [u16],
}

fn case(
    name: &'static str,
    method: &'static str,
    path: impl Into<String>,
    headers: Vec<(&'static str, String)>,
    body: impl Into<Vec<u8>>,
    want: &'static [u16],
) -> Case {
    Case {
        name,
        method,
        path: path.into(),
        headers,
        body: body.into(),
        want,
    }
}

fn sdp_ct() -> (&'static str, String) {
    ("content-type", "application/sdp".into())
}

fn bearer(t: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {t}"))
}

/// Headers of a WHIP/WHEP `PATCH` with an ICE fragment, and `If-Match` if given.
fn ice_patch(t: &str, if_match: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![
        bearer(t),
        ("content-type", "application/trickle-ice-sdpfrag".into()),
    ];
    h.extend(if_match.map(|m| ("if-match", m.to_string())));
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http_requests_get_clear_answers_and_hurt_no_one() {
    let server = start(1, |c| {
        c.secret = Some(SECRET.into());
        c.admin_token = Some(ADMIN.into());
        c.max_body = 8 * 1024;
    })
    .await;
    let http = client::http_client(true);
    let later = unix_now() + 600;
    let key = SECRET.as_bytes();
    let pub_t = mint(key, "cam", true, false, later);
    let view_t = mint(key, "cam", false, true, later);
    let by =
        Bystander::start_with_tokens(&server, &http, "cam", pub_t.clone(), view_t.clone()).await;
    let pub_id = by.publisher.location.clone().unwrap();
    let pub_id = pub_id.rsplit('/').next().unwrap().to_string();
    let view_id = by.viewer.location.clone().unwrap();
    let view_id = view_id.rsplit('/').next().unwrap().to_string();

    let send = offer(Direction::SendOnly);
    let recv = offer(Direction::RecvOnly);
    let hs256 = b64(r#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = b64(&format!(
        r#"{{"exp":{later},"stream":"cam","publish":true}}"#
    ));
    let good_sig = pub_t.rsplit('.').next().unwrap().to_string();
    let none_token = format!("{}.{claims}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
    let hs512 = format!(
        "{}.{claims}.{good_sig}",
        b64(r#"{"alg":"HS512","typ":"JWT"}"#)
    );
    let tampered = {
        let mut p: Vec<String> = pub_t.split('.').map(str::to_string).collect();
        p[1] = b64(&format!(
            r#"{{"exp":{later},"stream":"*","publish":true,"subscribe":true}}"#
        ));
        p.join(".")
    };
    let exp_string = {
        let body = b64(r#"{"exp":"never","stream":"cam","publish":true}"#);
        let input = format!("{hs256}.{body}");
        // Signed correctly, so only the claim type is wrong.
        let k = ring_hmac(key, input.as_bytes());
        format!("{input}.{k}")
    };
    // A stream nobody publishes, so bodies are read rather than refused with 409.
    let whip = "/whip/s2".to_string();
    let star_t = mint(key, "*", true, false, later);
    let t = || vec![sdp_ct(), bearer(&star_t)];

    let cases = vec![
        // Content types and bodies.
        case(
            "no content type",
            "POST",
            &whip,
            vec![bearer(&pub_t)],
            send.clone(),
            &[415],
        ),
        case(
            "text/plain",
            "POST",
            &whip,
            vec![("content-type", "text/plain".into()), bearer(&pub_t)],
            send.clone(),
            &[415],
        ),
        case(
            "application/json",
            "POST",
            &whip,
            vec![("content-type", "application/json".into()), bearer(&pub_t)],
            send.clone(),
            &[415],
        ),
        case(
            "application/sdp-evil",
            "POST",
            &whip,
            vec![
                ("content-type", "application/sdp-evil".into()),
                bearer(&pub_t),
            ],
            send.clone(),
            &[415],
        ),
        case(
            "multipart",
            "POST",
            &whip,
            vec![
                ("content-type", "multipart/form-data; boundary=x".into()),
                bearer(&pub_t),
            ],
            send.clone(),
            &[415],
        ),
        case("empty body", "POST", &whip, t(), "", &[400, 422]),
        case("not SDP", "POST", &whip, t(), "hello", &[400]),
        case(
            "binary, not UTF-8",
            "POST",
            &whip,
            t(),
            vec![0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28],
            &[400],
        ),
        case(
            "SDP truncated in half",
            "POST",
            &whip,
            t(),
            send[..send.len() / 2].to_string(),
            &[400, 422],
        ),
        case("only v=0", "POST", &whip, t(), "v=0\r\n", &[400, 422]),
        case(
            "SDP with NUL bytes",
            "POST",
            &whip,
            t(),
            send.replace("a=", "a\0="),
            &[400, 422],
        ),
        case(
            "SDP with a 4 KB line",
            "POST",
            &whip,
            t(),
            format!("{send}a=x-{}\r\n", "y".repeat(4000)),
            &[400, 413, 422],
        ),
        case(
            "body over max_body",
            "POST",
            &whip,
            t(),
            "v=0\r\n".repeat(4000),
            &[413],
        ),
        case(
            "charset parameter, garbage body",
            "POST",
            &whip,
            vec![
                ("content-type", "application/sdp; charset=utf-8".into()),
                bearer(&star_t),
            ],
            "nope",
            &[400],
        ),
        case(
            "recvonly offer on WHIP",
            "POST",
            &whip,
            t(),
            recv.clone(),
            &[422],
        ),
        case(
            "sendonly offer on WHEP",
            "POST",
            "/whep/cam",
            vec![sdp_ct(), bearer(&view_t)],
            send.clone(),
            &[422],
        ),
        // Stream names.
        case(
            "space in name",
            "POST",
            "/whip/a%20b",
            t(),
            send.clone(),
            &[400],
        ),
        case(
            "129-character name",
            "POST",
            format!("/whip/{}", "n".repeat(129)),
            t(),
            send.clone(),
            &[400],
        ),
        case(
            "unicode name",
            "POST",
            "/whip/cam%C3%A9ra",
            t(),
            send.clone(),
            &[400],
        ),
        case(
            "encoded slashes",
            "POST",
            "/whip/%2fetc%2fpasswd",
            t(),
            send.clone(),
            &[400],
        ),
        case(
            "NUL in name",
            "POST",
            "/whip/cam%00",
            t(),
            send.clone(),
            &[400],
        ),
        case(
            "colon (room streams' separator)",
            "POST",
            "/whip/room:r:p",
            t(),
            send.clone(),
            &[400],
        ),
        case(
            "newline in name",
            "POST",
            "/whip/a%0d%0aX-Evil:%201",
            t(),
            send.clone(),
            &[400],
        ),
        case(
            "unknown layer on WHEP",
            "POST",
            "/whep/cam?layer=ultra",
            vec![sdp_ct(), bearer(&view_t)],
            recv.clone(),
            &[400],
        ),
        case(
            "unknown temporal layer on WHEP",
            "POST",
            "/whep/cam?temporal=7",
            vec![sdp_ct(), bearer(&view_t)],
            recv.clone(),
            &[400],
        ),
        // Tokens.
        case(
            "no token",
            "POST",
            &whip,
            vec![sdp_ct()],
            send.clone(),
            &[401],
        ),
        case(
            "empty bearer",
            "POST",
            &whip,
            vec![sdp_ct(), ("authorization", "Bearer ".into())],
            send.clone(),
            &[401],
        ),
        case(
            "Basic scheme",
            "POST",
            &whip,
            vec![sdp_ct(), ("authorization", "Basic YTpi".into())],
            send.clone(),
            &[401],
        ),
        case(
            "garbage token",
            "POST",
            &whip,
            vec![sdp_ct(), bearer("garbage")],
            send.clone(),
            &[401],
        ),
        case(
            "four-part token",
            "POST",
            &whip,
            vec![sdp_ct(), bearer(&format!("{pub_t}.x"))],
            send.clone(),
            &[401],
        ),
        case(
            "alg none",
            "POST",
            &whip,
            vec![sdp_ct(), bearer(&none_token)],
            send.clone(),
            &[401],
        ),
        case(
            "alg HS512 header",
            "POST",
            &whip,
            vec![sdp_ct(), bearer(&hs512)],
            send.clone(),
            &[401],
        ),
        case(
            "signed with another secret",
            "POST",
            &whip,
            vec![sdp_ct(), bearer(&mint(b"other", "cam", true, false, later))],
            send.clone(),
            &[401],
        ),
        case(
            "expired",
            "POST",
            &whip,
            vec![
                sdp_ct(),
                bearer(&mint(key, "cam", true, false, unix_now() - 1)),
            ],
            send.clone(),
            &[401],
        ),
        case(
            "claims swapped under a valid signature",
            "POST",
            &whip,
            vec![sdp_ct(), bearer(&tampered)],
            send.clone(),
            &[401],
        ),
        case(
            "exp of the wrong type",
            "POST",
            &whip,
            vec![sdp_ct(), bearer(&exp_string)],
            send.clone(),
            &[401],
        ),
        case(
            "7 KB token",
            "POST",
            &whip,
            vec![sdp_ct(), bearer(&"a.b.".repeat(1800))],
            send.clone(),
            &[401],
        ),
        case(
            "token for another stream",
            "POST",
            &whip,
            vec![sdp_ct(), bearer(&mint(key, "other", true, false, later))],
            send.clone(),
            &[403],
        ),
        case(
            "viewer token on WHIP",
            "POST",
            &whip,
            vec![sdp_ct(), bearer(&mint(key, "s2", false, true, later))],
            send.clone(),
            &[403],
        ),
        case(
            "publisher token on WHEP",
            "POST",
            "/whep/cam",
            vec![sdp_ct(), bearer(&pub_t)],
            recv.clone(),
            &[403],
        ),
        case(
            "second publisher of a live stream",
            "POST",
            "/whip/cam",
            t(),
            send.clone(),
            &[409],
        ),
        // Resources.
        case(
            "DELETE with a malformed id",
            "DELETE",
            "/whip/cam/zzzz",
            vec![bearer(&pub_t)],
            "",
            &[404],
        ),
        case(
            "DELETE with an unknown id",
            "DELETE",
            "/whip/cam/0000000000000001",
            vec![bearer(&pub_t)],
            "",
            &[404],
        ),
        case(
            "DELETE with a 17-digit id",
            "DELETE",
            format!("/whip/cam/0{pub_id}"),
            vec![bearer(&pub_t)],
            "",
            &[404],
        ),
        case(
            "DELETE a real id under another stream",
            "DELETE",
            format!("/whip/other/{pub_id}"),
            vec![bearer(&pub_t)],
            "",
            &[404],
        ),
        case(
            "DELETE without a token",
            "DELETE",
            format!("/whip/cam/{pub_id}"),
            vec![],
            "",
            &[401],
        ),
        case(
            "DELETE with an expired token",
            "DELETE",
            format!("/whep/cam/{view_id}"),
            vec![bearer(&mint(key, "cam", false, true, unix_now() - 5))],
            "",
            &[401],
        ),
        case(
            "PATCH an unknown id",
            "PATCH",
            "/whip/cam/00000000000000ff",
            ice_patch(&pub_t, None),
            "a=end-of-candidates",
            &[404],
        ),
        case(
            "PATCH without a token",
            "PATCH",
            format!("/whip/cam/{pub_id}"),
            vec![],
            "a=end-of-candidates",
            &[401],
        ),
        case(
            "PATCH (ICE restart) without a content type",
            "PATCH",
            format!("/whip/cam/{pub_id}"),
            vec![bearer(&pub_t)],
            "a=ice-ufrag:x\r\na=ice-pwd:y",
            &[415],
        ),
        case(
            "PATCH with credentials too short",
            "PATCH",
            format!("/whip/cam/{pub_id}"),
            ice_patch(&pub_t, Some("*")),
            "a=ice-ufrag:x\r\na=ice-pwd:y",
            &[400],
        ),
        case(
            "PATCH (trickle) without If-Match",
            "PATCH",
            format!("/whip/cam/{pub_id}"),
            ice_patch(&pub_t, None),
            "a=end-of-candidates",
            &[428],
        ),
        case(
            "PATCH with a stale ETag",
            "PATCH",
            format!("/whip/cam/{pub_id}"),
            ice_patch(&pub_t, Some("\"stale\"")),
            "a=end-of-candidates",
            &[412],
        ),
        case(
            "PATCH with a fragment over 8 KiB",
            "PATCH",
            format!("/whip/cam/{pub_id}"),
            ice_patch(&pub_t, Some("*")),
            "a=candidate:1 1 udp 1 10.0.0.1 5000 typ host\r\n".repeat(200),
            &[413],
        ),
        case(
            "layer on an unknown id",
            "POST",
            "/whep/cam/00000000000000aa/layer?max=low",
            vec![bearer(&view_t)],
            "",
            &[404],
        ),
        case(
            "layer with a bad value",
            "POST",
            format!("/whep/cam/{view_id}/layer?max=9"),
            vec![bearer(&view_t)],
            "",
            &[400],
        ),
        case(
            "temporal layer with a bad value",
            "POST",
            format!("/whep/cam/{view_id}/layer?temporal=3"),
            vec![bearer(&view_t)],
            "",
            &[400],
        ),
        case(
            "temporal layer with a bad value beside a good layer",
            "POST",
            format!("/whep/cam/{view_id}/layer?max=low&temporal=x"),
            vec![bearer(&view_t)],
            "",
            &[400],
        ),
        case(
            "layer on a publisher",
            "POST",
            format!("/whep/cam/{pub_id}/layer?max=low"),
            vec![bearer(&view_t)],
            "",
            &[400],
        ),
        case(
            "layer without a token",
            "POST",
            format!("/whep/cam/{view_id}/layer?max=low"),
            vec![],
            "",
            &[401],
        ),
        // Methods.
        case(
            "GET a resource",
            "GET",
            format!("/whip/cam/{pub_id}"),
            vec![bearer(&pub_t)],
            "",
            &[405],
        ),
        case("PUT an endpoint", "PUT", &whip, t(), send.clone(), &[405]),
        case(
            "DELETE an endpoint",
            "DELETE",
            &whip,
            vec![bearer(&pub_t)],
            "",
            &[405],
        ),
        case("made-up method", "FROB", &whip, t(), send.clone(), &[405]),
        // Admin and metrics.
        case(
            "admin without a token",
            "GET",
            "/admin/sessions",
            vec![],
            "",
            &[401],
        ),
        case(
            "admin with a wrong token",
            "GET",
            "/admin/sessions",
            vec![bearer("nope")],
            "",
            &[403],
        ),
        case(
            "admin with a prefix of the token",
            "GET",
            "/admin/shards",
            vec![bearer("ad")],
            "",
            &[403],
        ),
        case(
            "admin with a stream token",
            "GET",
            "/admin/streams",
            vec![bearer(&pub_t)],
            "",
            &[403],
        ),
        case(
            "kick with a wrong token",
            "DELETE",
            format!("/admin/sessions/{pub_id}"),
            vec![bearer("nope")],
            "",
            &[403],
        ),
        case(
            "close a stream without a token",
            "DELETE",
            "/admin/streams/cam",
            vec![],
            "",
            &[401],
        ),
        case(
            "drain with a wrong token",
            "POST",
            "/admin/drain",
            vec![bearer("nope")],
            "",
            &[403],
        ),
        case(
            "admin rooms with a lowercase-scheme wrong token",
            "GET",
            "/admin/rooms",
            vec![("authorization", "bearer x".into())],
            "",
            &[403],
        ),
        case(
            "kick an unknown session (admin)",
            "DELETE",
            "/admin/sessions/ffffffffffffffff",
            vec![bearer(ADMIN)],
            "",
            &[404],
        ),
        case("unknown path", "GET", "/etc/passwd", vec![], "", &[404]),
        case(
            "healthz with a junk query",
            "GET",
            "/healthz?%%%%&&==",
            vec![],
            "",
            &[200, 400],
        ),
        case(
            "metrics with a 4 KB query",
            "GET",
            format!("/metrics?{}", "q=1&".repeat(1000)),
            vec![],
            "",
            &[200],
        ),
    ];
    let mut reasonless = Vec::new();
    for c in &cases {
        let method = reqwest::Method::from_bytes(c.method.as_bytes()).unwrap();
        let mut req = http
            .request(method, format!("{}{}", server.url(), c.path))
            .body(c.body.clone());
        for (k, v) in &c.headers {
            req = req.header(*k, v);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let www = res.headers().get("www-authenticate").cloned();
        let body = res.text().await.unwrap();
        assert!(
            c.want.contains(&status),
            "{}: {status} {body:?}, want {:?}",
            c.name,
            c.want
        );
        // Every 401, admin included, carries the Bearer challenge.
        if status == 401 {
            assert_eq!(
                www.as_ref().map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{}",
                c.name
            );
        }
        if status >= 400 && (body.trim().is_empty() || body.trim_end().lines().count() != 1) {
            reasonless.push((c.name, status, body.clone()));
        }
    }
    assert!(
        reasonless.is_empty(),
        "errors without a one-line reason: {reasonless:?}"
    );
    assert!(
        !server.app.is_draining(),
        "a refused drain request drained the server"
    );

    // Requests an HTTP library would not send.
    let addr = server.https_addr;
    let raw: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("dot segments to admin", b"GET /whip/../admin/sessions HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &[404]),
        ("dot segments to metrics", b"GET /whip/cam/../../metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &[404, 405]),
        ("absolute-form target", b"GET https://evil.example/admin/sessions HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &[401]),
        ("200 headers", {
            let mut r = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
            for i in 0..200 {
                r.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
            }
            r.extend_from_slice(b"\r\n");
            r
        }, &[431, 400]),
        ("one 1 MB header", {
            let mut r = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
            r.extend_from_slice(&vec![b'a'; 1 << 20]);
            r.extend_from_slice(b"\r\n\r\n");
            r
        }, &[431, 400]),
        ("header without a colon", b"GET /healthz HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n".to_vec(), &[400]),
        ("HTTP/9.9", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(), &[505, 400]),
        ("binary request line", vec![0x00, 0x01, 0x02, 0xff, b'\r', b'\n', b'\r', b'\n'], &[400]),
        ("Content-Length and chunked together", b"POST /whip/cam HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), &[400, 401]),
        ("two Content-Lengths", b"POST /whip/cam HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(), &[400]),
        ("negative Content-Length", b"POST /whip/cam HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(), &[400]),
        ("chunked body over max_body", {
            let mut r = b"POST /whip/cam HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nTransfer-Encoding: chunked\r\nAuthorization: Bearer ".to_vec();
            r.extend_from_slice(pub_t.as_bytes());
            r.extend_from_slice(b"\r\n\r\n");
            for _ in 0..10 {
                r.extend_from_slice(b"400\r\n");
                r.extend_from_slice(&[b'v'; 1024]);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\n\r\n");
            r
        }, &[413]),
    ];
    for (name, bytes, want) in &raw {
        let (status, body) = tokio::task::spawn_blocking({
            let bytes = bytes.clone();
            move || raw_request(addr, &bytes)
        })
        .await
        .unwrap();
        // A connection closed without an answer is a clear refusal too.
        assert!(
            status.is_none_or(|s| want.contains(&s)),
            "{name}: {status:?} {body:?}, want {want:?}"
        );
        assert!(
            status.is_some() || *name != "dot segments to admin",
            "{name}: no answer"
        );
    }
    eprintln!(
        "hostile HTTP inputs: {} requests + {} raw = {}",
        cases.len(),
        raw.len(),
        cases.len() + raw.len()
    );
    by.check(&server, &http, "HTTP").await;
    by.close().await;
    server.shutdown().await;
}

/// HMAC-SHA256 of `input`, base64url: a correctly signed token of any claims.
fn ring_hmac(key: &[u8], input: &[u8]) -> String {
    // Mint signs whatever claims serialize; to sign a wrong-typed claim we
    // sign by hand with the same primitive.
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    b64_bytes(ring::hmac::sign(&k, input).as_ref())
}

fn b64_bytes(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
