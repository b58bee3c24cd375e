//! Who may make a request: the bearer token of a request, stream and room
//! tokens checked against the configured secret, the admin token, and who may
//! act on an existing WHIP/WHEP resource.

use axum::http::{header, HeaderMap};
use ring::digest;
use sluice_dataplane::Role;

use crate::app::App;
use crate::auth::{unix_now, AuthError, Claims};
use crate::error::ApiError;
use crate::registry::SessionEntry;

/// Bearer token from the Authorization header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Verify `token` when a secret is configured; `None` claims in open dev mode.
pub fn verify(app: &App, token: Option<&str>) -> Result<Option<Claims>, AuthError> {
    let Some(key) = &app.tokens else {
        return Ok(None);
    };
    let token = token.ok_or(AuthError::Missing)?;
    key.verify(token, unix_now()).map(Some)
}

/// Verify the request's bearer token when a secret is configured.
pub fn authorize(app: &App, headers: &HeaderMap) -> Result<Option<Claims>, AuthError> {
    verify(app, bearer(headers))
}

/// Admin access: the admin token when set; in open dev mode anyone; otherwise no one.
pub fn admin(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    match (&app.config.admin_token, &app.config.secret) {
        (Some(t), _) => match bearer(headers) {
            Some(b) if constant_time_eq(b.as_bytes(), t.as_bytes()) => Ok(()),
            Some(_) => Err(ApiError::AdminTokenWrong),
            None => Err(ApiError::AdminTokenMissing),
        },
        (None, None) => Ok(()),
        (None, Some(_)) => Err(ApiError::AdminDisabled),
    }
}

/// Does the request carry the configured admin token?
pub fn is_admin_token(app: &App, headers: &HeaderMap) -> bool {
    match (&app.config.admin_token, bearer(headers)) {
        (Some(t), Some(b)) => constant_time_eq(b.as_bytes(), t.as_bytes()),
        _ => false,
    }
}

/// SHA-256 of a bearer token: what a session remembers of the token that created it.
pub fn token_digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    out
}

/// The digest of the request's token when tokens are checked, for [`Capability::owner`](crate::registry::Capability).
pub fn owner_of(app: &App, headers: &HeaderMap) -> Option<[u8; 32]> {
    app.tokens.as_ref()?;
    bearer(headers).map(token_digest)
}

/// Who asks to act on an existing resource (DELETE, PATCH, layer).
pub enum Caller {
    /// The admin token: may act on any session.
    Admin,
    /// Open dev mode: the resource URL alone is the capability.
    Open,
    /// A verified token and its digest.
    Token(Claims, [u8; 32]),
}

/// Identify the caller of a resource request: 401 for a missing or invalid token.
pub fn resource_caller(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    if is_admin_token(app, headers) {
        return Ok(Caller::Admin);
    }
    match authorize(app, headers)? {
        None => Ok(Caller::Open),
        Some(claims) => {
            let digest = token_digest(bearer(headers).unwrap_or(""));
            Ok(Caller::Token(claims, digest))
        }
    }
}

impl Caller {
    /// May this caller end or change `entry`? A token must grant the session's
    /// stream in its role (publish for WHIP, subscribe for WHEP) and be the one
    /// that created it.
    pub fn may_act_on(&self, entry: &SessionEntry) -> Result<(), ApiError> {
        let Caller::Token(claims, digest) = self else {
            return Ok(());
        };
        claims.allows_stream(&entry.stream, entry.role == Role::Publisher)?;
        match &entry.capability.owner {
            Some(owner) if constant_time_eq(owner, digest) => Ok(()),
            _ => Err(ApiError::NotOwner),
        }
    }
}

/// Compare without an early exit, so timing does not reveal the matching prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_others_are_ignored() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bEaReR  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
