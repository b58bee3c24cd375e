//! Who may make a request: the bearer token of a request, stream and room
//! tokens checked against the configured secret, and the admin token.

use axum::http::{header, HeaderMap};

use crate::app::App;
use crate::auth::{unix_now, AuthError, Claims};
use crate::error::ApiError;

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

/// Compare without an early exit, so timing does not reveal the matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
