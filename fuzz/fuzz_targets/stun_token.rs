//! The cheap checks every new flow and request goes through: the local ICE
//! ufrag of a STUN binding request, the bearer token of an Authorization
//! header, and HS256 token verification.
//!
//! Input: first byte picks the check, the rest is its input.

#![no_main]

use axum::http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sluice::auth::{AuthError, TokenKey};
use sluice_dataplane::fuzzing::{binding_request_local_ufrag, is_stun};

/// 2001-09-09: tokens in the seeds expire later, some earlier.
const NOW: u64 = 1_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Some(ufrag) = binding_request_local_ufrag(rest) {
                assert!(is_stun(rest));
                assert!(!ufrag.contains(&b':'));
                // A sub-slice of the datagram's USERNAME, past the 20-byte header.
                let start = ufrag.as_ptr() as usize - rest.as_ptr() as usize;
                assert!(start >= 24 && start + ufrag.len() <= rest.len());
            }
        }
        1 => {
            let Ok(v) = HeaderValue::from_bytes(rest) else {
                return;
            };
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v);
            if let Some(t) = sluice::authz::bearer(&h) {
                verify(t);
            }
        }
        _ => {
            if let Ok(t) = std::str::from_utf8(rest) {
                verify(t);
            }
        }
    }
});

fn verify(token: &str) {
    let key = TokenKey::new(b"fuzz-secret");
    match key.verify(token, NOW) {
        Ok(claims) => {
            assert!(claims.exp > NOW);
            // What verifies re-mints to a token that verifies to the same claims.
            assert_eq!(key.verify(&key.mint(&claims), NOW), Ok(claims.clone()));
            let _ = claims.allows_stream("cam", true);
            let _ = claims.allows_room("room");
        }
        Err(AuthError::Forbidden(_)) => panic!("verify does not check grants"),
        Err(_) => {}
    }
}
