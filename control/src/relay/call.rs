//! The node-to-node relay calls: what an edge asks its upstream node, how
//! each call is signed with the cluster secret, and how both ends derive a
//! link's SRTP keys from that secret and the call's nonces.
//!
//! Keys never travel: each end computes them from the cluster secret and
//! values in the call (node ids, process instances, link id, two nonces),
//! so someone who reads the call without the secret learns nothing, and
//! someone without the secret cannot make a valid call. TLS between nodes
//! is therefore not relied on for either.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::hmac;
use serde::{Deserialize, Serialize};

/// The header a node-to-node call is signed in.
pub const AUTH_HEADER: &str = "x-sluice-node-auth";
/// Path of the call that opens (or extends) a relay.
pub const PULL_PATH: &str = "/cluster/v1/relay";
/// Path of the call that ends a stream's relay.
pub const RELEASE_PATH: &str = "/cluster/v1/relay/release";
/// A signed call older or newer than this is refused (clocks of a
/// cluster's nodes are expected to agree within it).
pub const MAX_SKEW_MS: u64 = 30_000;
/// The deepest a chain of edges may go.
pub const MAX_HOPS: u8 = 4;

/// An edge asks its upstream for a stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullRequest {
    /// The stream's name.
    pub stream: String,
    /// The asking node's id.
    pub from: String,
    /// The asking process (a restart is a new one).
    pub instance: u64,
    /// The asking node's link nonce: the same for every stream on one link.
    pub nonce: u64,
    /// Where the asking node's shard receives the link (ip:port).
    pub media: String,
    /// The stream's tag on the link.
    pub tag: u32,
    /// Relay hops between the origin and the asking node so far.
    pub hops: u8,
}

/// The upstream's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullResponse {
    /// The answering node's id.
    pub node: String,
    /// The answering process.
    pub instance: u64,
    /// The upstream's id of the link.
    pub link: u64,
    /// The upstream's link nonce.
    pub nonce: u64,
    /// Where the upstream's shard sends from (ip:port).
    pub media: String,
}

/// An edge no longer wants a stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRequest {
    /// The stream's name.
    pub stream: String,
    /// The asking node's id.
    pub from: String,
    /// The asking process.
    pub instance: u64,
    /// The asking node's link nonce.
    pub nonce: u64,
}

/// Why a signed call was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No signature header.
    #[error("node-to-node call without {AUTH_HEADER}")]
    Missing,
    /// The header is not `<unix ms>:<hex signature>`.
    #[error("malformed {AUTH_HEADER}")]
    Malformed,
    /// Too old or from the future.
    #[error("node-to-node call outside the allowed clock skew")]
    Stale,
    /// The signature does not verify with this cluster's secret.
    #[error("node-to-node call not signed with this cluster's secret")]
    BadSignature,
}

/// What an answer to a call to `path` is signed as (so a call's signature
/// never passes for an answer's).
pub fn answer_path(path: &str) -> String {
    format!("answer {path}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn signing_input(path: &str, at_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut m = format!("sluice-node-call v1\n{path}\n{at_ms}\n").into_bytes();
    m.extend_from_slice(body);
    m
}

/// The value of [`AUTH_HEADER`] for a call to `path` with `body`, now.
pub fn sign(secret: &[u8], path: &str, body: &[u8]) -> String {
    sign_at(secret, path, body, now_ms())
}

fn sign_at(secret: &[u8], path: &str, body: &[u8], at_ms: u64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, &signing_input(path, at_ms, body));
    format!("{at_ms}:{}", hex(tag.as_ref()))
}

/// Check a call's signature header.
pub fn verify(
    secret: &[u8],
    path: &str,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), AuthError> {
    verify_at(secret, path, body, header, now_ms())
}

fn verify_at(
    secret: &[u8],
    path: &str,
    body: &[u8],
    header: Option<&str>,
    now: u64,
) -> Result<(), AuthError> {
    let header = header.ok_or(AuthError::Missing)?;
    let (at, sig) = header.split_once(':').ok_or(AuthError::Malformed)?;
    let at: u64 = at.parse().map_err(|_| AuthError::Malformed)?;
    let sig = unhex(sig).ok_or(AuthError::Malformed)?;
    if at.abs_diff(now) > MAX_SKEW_MS {
        return Err(AuthError::Stale);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &signing_input(path, at, body), &sig).map_err(|_| AuthError::BadSignature)
}

/// Both ends of one link, as the key derivation names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkIds<'a> {
    /// Upstream node id, process instance, link id and nonce.
    pub up: (&'a str, u64, u64, u64),
    /// Downstream node id, process instance and nonce.
    pub down: (&'a str, u64, u64),
}

/// The link's key material (`sluice_dataplane::RELAY_KEY_LEN` bytes): HMAC-SHA256
/// of the cluster secret over the link's ids, expanded (HKDF-expand style).
pub fn link_key(secret: &[u8], ids: &LinkIds<'_>) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let info = format!(
        "sluice relay key v1\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        ids.up.0, ids.up.1, ids.up.2, ids.up.3, ids.down.0, ids.down.1, ids.down.2
    );
    let prk = hmac::sign(&key, info.as_bytes());
    let expand = hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref());
    let mut out = Vec::with_capacity(64);
    let mut prev: Vec<u8> = Vec::new();
    for i in 1u8..=2 {
        let mut m = prev.clone();
        m.push(i);
        prev = hmac::sign(&expand, &m).as_ref().to_vec();
        out.extend_from_slice(&prev);
    }
    out.truncate(sluice_dataplane::RELAY_KEY_LEN);
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_call_verifies_and_nothing_else_does() {
        let body = br#"{"stream":"s"}"#;
        let h = sign_at(b"secret", PULL_PATH, body, 1_000_000);
        assert_eq!(
            verify_at(b"secret", PULL_PATH, body, Some(&h), 1_000_500),
            Ok(())
        );
        assert_eq!(
            verify_at(b"other", PULL_PATH, body, Some(&h), 1_000_500),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_at(b"secret", RELEASE_PATH, body, Some(&h), 1_000_500),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_at(b"secret", PULL_PATH, b"{}", Some(&h), 1_000_500),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_at(
                b"secret",
                PULL_PATH,
                body,
                Some(&h),
                1_000_000 + MAX_SKEW_MS + 1
            ),
            Err(AuthError::Stale)
        );
        assert_eq!(
            verify_at(b"secret", PULL_PATH, body, None, 0),
            Err(AuthError::Missing)
        );
        for bad in ["", "x", "1:zz", "1:abc", "nope:00"] {
            assert_eq!(
                verify_at(b"secret", PULL_PATH, body, Some(bad), 1),
                Err(AuthError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn both_ends_derive_the_same_key_and_any_change_changes_it() {
        let ids = LinkIds {
            up: ("a", 1, 2, 3),
            down: ("b", 4, 5),
        };
        let k = link_key(b"s", &ids);
        assert_eq!(k.len(), sluice_dataplane::RELAY_KEY_LEN);
        assert_eq!(k, link_key(b"s", &ids.clone()));
        assert_ne!(k, link_key(b"t", &ids));
        let other = LinkIds {
            down: ("b", 4, 6),
            ..ids.clone()
        };
        assert_ne!(k, link_key(b"s", &other));
    }
}
