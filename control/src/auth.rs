//! HS256 JSON Web Tokens, verified with ring's HMAC: who may publish or
//! subscribe to which stream or room, until when.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Claims {
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Stream the token grants (`"*"` = any stream); `None` grants no stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Room the token grants (`"*"` = any room); `None` grants no room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// May publish (within the stream or room scope).
    #[serde(default)]
    pub publish: bool,
    /// May subscribe (within the stream or room scope).
    #[serde(default)]
    pub subscribe: bool,
    /// Free-form subject (a user or peer id), for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

/// Why a token was refused; `Unauthorized` maps to 401, `Forbidden` to 403.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token where one is required (401).
    #[error("missing bearer token: send Authorization: Bearer <token>")]
    Missing,
    /// Not a well-formed HS256 JWT (401).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Signed with another secret, or altered (401).
    #[error("token signature does not verify with this server's secret")]
    BadSignature,
    /// Past its `exp` (401).
    #[error("token expired")]
    Expired,
    /// Valid, but not for this stream, room or right (403).
    #[error("token does not grant {0}")]
    Forbidden(String),
}

impl AuthError {
    /// Is this a 403 (a valid token without the grant) rather than a 401?
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::Forbidden(_))
    }
}

/// Signs and verifies tokens with one shared secret.
#[derive(Clone)]
pub struct TokenKey {
    key: hmac::Key,
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

impl TokenKey {
    /// A key for `secret`.
    pub fn new(secret: &[u8]) -> Self {
        TokenKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Sign `claims` into a token.
    pub fn mint(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(HEADER);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let signing_input = format!("{header}.{body}");
        let sig = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// Verify signature and expiry (at `now_unix`); the caller checks the grant.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(b), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("expected three dot-separated parts"));
        };
        let header = URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| AuthError::Malformed("header is not base64url"))?;
        let header: serde_json::Value = serde_json::from_slice(&header)
            .map_err(|_| AuthError::Malformed("header is not JSON"))?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(AuthError::Malformed("only alg HS256 is accepted"));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| AuthError::Malformed("signature is not base64url"))?;
        let signing_input = &token[..h.len() + 1 + b.len()];
        hmac::verify(&self.key, signing_input.as_bytes(), &sig)
            .map_err(|_| AuthError::BadSignature)?;
        let body = URL_SAFE_NO_PAD
            .decode(b)
            .map_err(|_| AuthError::Malformed("claims are not base64url"))?;
        let claims: Claims = serde_json::from_slice(&body)
            .map_err(|_| AuthError::Malformed("claims are not the expected JSON"))?;
        if claims.exp <= now_unix {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }
}

/// Does a scope claim cover `name`? An absent claim covers nothing, so a room
/// grant never passes for a stream grant or the other way round.
fn matches(scope: &Option<String>, name: &str) -> bool {
    match scope.as_deref() {
        None => false,
        Some("*") => true,
        Some(s) => s == name,
    }
}

impl Claims {
    /// May this token publish (or subscribe to) `stream`?
    pub fn allows_stream(&self, stream: &str, publish: bool) -> Result<(), AuthError> {
        if !matches(&self.stream, stream) {
            return Err(AuthError::Forbidden(format!("access to stream {stream:?}")));
        }
        if publish && !self.publish {
            return Err(AuthError::Forbidden("the publish right".into()));
        }
        if !publish && !self.subscribe {
            return Err(AuthError::Forbidden("the subscribe right".into()));
        }
        Ok(())
    }

    /// May this token join `room`?
    pub fn allows_room(&self, room: &str) -> Result<(), AuthError> {
        if !matches(&self.room, room) {
            return Err(AuthError::Forbidden(format!("access to room {room:?}")));
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            exp: 2_000,
            stream: Some("cam".into()),
            publish: true,
            ..Default::default()
        }
    }

    #[test]
    fn minted_token_verifies_and_round_trips_claims() {
        let k = TokenKey::new(b"secret");
        let t = k.mint(&claims());
        assert_eq!(k.verify(&t, 1_000), Ok(claims()));
    }

    #[test]
    fn token_from_another_secret_is_refused() {
        let t = TokenKey::new(b"other").mint(&claims());
        assert_eq!(
            TokenKey::new(b"secret").verify(&t, 1_000),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn expired_token_is_refused() {
        let k = TokenKey::new(b"secret");
        let t = k.mint(&claims());
        assert_eq!(k.verify(&t, 2_000), Err(AuthError::Expired));
    }

    #[test]
    fn tampered_claims_fail_the_signature() {
        let k = TokenKey::new(b"secret");
        let t = k.mint(&claims());
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"exp":9999999999,"publish":true}"#);
        parts[1] = &forged;
        assert_eq!(
            k.verify(&parts.join("."), 1_000),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let k = TokenKey::new(b"secret");
        for t in ["", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.e30"] {
            assert!(
                matches!(
                    k.verify(t, 0),
                    Err(AuthError::Malformed(_)) | Err(AuthError::BadSignature)
                ),
                "{t}"
            );
        }
    }

    #[test]
    fn an_absent_scope_claim_grants_nothing_of_that_kind() {
        let room_only = Claims {
            exp: 2_000,
            room: Some("r".into()),
            publish: true,
            subscribe: true,
            ..Default::default()
        };
        assert!(room_only.allows_room("r").is_ok());
        assert!(room_only
            .allows_stream("r", true)
            .unwrap_err()
            .is_forbidden());
        assert!(room_only
            .allows_stream("r", false)
            .unwrap_err()
            .is_forbidden());
        let stream_only = Claims {
            room: None,
            stream: Some("s".into()),
            ..room_only.clone()
        };
        assert!(stream_only.allows_stream("s", true).is_ok());
        assert!(stream_only.allows_room("s").unwrap_err().is_forbidden());
        let neither = Claims {
            stream: None,
            room: None,
            ..room_only
        };
        assert!(neither.allows_room("r").is_err());
        let any_room = Claims {
            room: Some("*".into()),
            ..neither
        };
        assert!(any_room.allows_room("anything").is_ok());
        assert!(any_room.allows_stream("anything", true).is_err());
    }

    #[test]
    fn grants_are_checked_per_stream_and_right() {
        let c = claims();
        assert!(c.allows_stream("cam", true).is_ok());
        assert!(c.allows_stream("other", true).unwrap_err().is_forbidden());
        assert!(c.allows_stream("cam", false).unwrap_err().is_forbidden());
        let any = Claims {
            stream: Some("*".into()),
            subscribe: true,
            ..c
        };
        assert!(any.allows_stream("x", false).is_ok());
    }
}
