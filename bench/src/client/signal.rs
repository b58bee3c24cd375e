//! WHIP/WHEP signalling over HTTP: posting the offer, resolving the
//! answer's Location, the best-effort DELETE, and refusing answers whose
//! candidates name addresses other than the target's.

use std::net::IpAddr;
use std::time::Duration;

use super::{ClientError, Endpoint, SessionOptions};

/// IP addresses of the ICE candidates in an SDP (`a=candidate:` lines).
pub fn candidate_ips(sdp: &str) -> Vec<IpAddr> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        // foundation component transport priority address port typ ...
        .filter_map(|c| c.split_whitespace().nth(4)?.parse().ok())
        .collect()
}

pub(super) fn check_candidates(answer: &str, opts: &SessionOptions) -> Result<(), ClientError> {
    let Some(allowed) = &opts.allowed_media_ips else {
        return Ok(());
    };
    match candidate_ips(answer).into_iter().find(|ip| !allowed.contains(ip)) {
        Some(ip) => Err(ClientError::Answer(format!(
            "candidate {ip} is not an address of the target ({allowed:?}); refusing to send media there"
        ))),
        None => Ok(()),
    }
}

/// Best-effort DELETE of a session's resource.
pub(super) async fn delete_resource(http: &reqwest::Client, ep: &Endpoint, location: Option<&str>) {
    let Some(loc) = location else { return };
    let mut req = http.delete(loc);
    if let Some(t) = &ep.token {
        req = req.bearer_auth(t);
    }
    let _ = req.send().await;
}

pub(super) async fn signal(
    http: &reqwest::Client,
    ep: &Endpoint,
    offer: String,
) -> Result<(String, Option<String>), ClientError> {
    let mut req = http
        .post(&ep.url)
        .header("content-type", "application/sdp")
        .body(offer);
    if let Some(t) = &ep.token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await?;
    let status = res.status();
    // Against the URL that answered: a redirected POST (307) made the
    // session on another node.
    let answered = res.url().to_string();
    let location = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(|l| resolve_location(&answered, l));
    let body = res.text().await?;
    if status.as_u16() != 201 && !status.is_success() {
        return Err(ClientError::Status {
            status: status.as_u16(),
            reason: body.lines().next().unwrap_or("").to_string(),
        });
    }
    Ok((body, location))
}

/// Resolve a Location header against the endpoint URL.
pub fn resolve_location(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.to_string();
    }
    // scheme://authority from the base
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let auth_end = base[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(base.len());
    if loc.starts_with('/') {
        format!("{}{}", &base[..auth_end], loc)
    } else {
        let dir_end = base.rfind('/').unwrap_or(base.len());
        format!("{}/{}", &base[..dir_end], loc)
    }
}

/// An HTTP client for signaling.
pub fn http_client(insecure: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(insecure)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_resolves_against_the_endpoint() {
        assert_eq!(
            resolve_location("https://h:1/whip/s", "/whip/s/abc"),
            "https://h:1/whip/s/abc"
        );
        assert_eq!(
            resolve_location("https://h:1/whip/s", "s/abc"),
            "https://h:1/whip/s/abc"
        );
        assert_eq!(
            resolve_location("https://h:1/x", "http://o/y"),
            "http://o/y"
        );
    }

    #[test]
    fn answers_naming_other_hosts_are_refused() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n\
                   a=candidate:2 1 udp 2130706431 10.9.8.7 40000 typ host\r\n";
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "10.9.8.7".parse().unwrap();
        assert_eq!(candidate_ips(sdp), vec![lo, other]);
        let only_lo = SessionOptions {
            allowed_media_ips: Some(vec![lo]),
            ..SessionOptions::default()
        };
        assert!(check_candidates(sdp, &only_lo).is_err());
        let both = SessionOptions {
            allowed_media_ips: Some(vec![lo, other]),
            ..SessionOptions::default()
        };
        assert!(check_candidates(sdp, &both).is_ok());
        assert!(check_candidates(sdp, &SessionOptions::default()).is_ok());
    }
}
