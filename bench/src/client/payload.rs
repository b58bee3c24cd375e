//! The synthetic payloads publishers send: a stamp (track, counter, send
//! time) after a codec-shaped prefix, then a fill derived from the counter,
//! so a viewer can check every byte and measure latency without a codec.

use std::time::{SystemTime, UNIX_EPOCH};

/// Track byte of the stamp of an audio payload.
pub const TRACK_AUDIO: u8 = 0;
/// Track byte of the stamp of a video payload.
pub const TRACK_VIDEO: u8 = 1;
const MAGIC: &[u8; 4] = b"SLCE";
/// Codec-shaped prefix before the stamp.
const PREFIX: usize = 4;
/// Prefix + magic + track + counter + send time.
pub const STAMP_LEN: usize = PREFIX + 4 + 1 + 4 + 8;

/// A payload's stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// [`TRACK_AUDIO`] or [`TRACK_VIDEO`].
    pub track: u8,
    /// Number of the payload within its track, from 0.
    pub counter: u32,
    /// Send time, in microseconds since the Unix epoch.
    pub sent_us: u64,
}

pub(super) fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn fill_byte(counter: u32, i: usize) -> u8 {
    (counter as u8).wrapping_mul(31).wrapping_add(i as u8)
}

/// Build a synthetic payload of `len` bytes (at least [`STAMP_LEN`]).
pub fn make_payload(track: u8, counter: u32, len: usize, prefix: [u8; PREFIX]) -> Vec<u8> {
    let len = len.max(STAMP_LEN);
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&prefix);
    p.extend_from_slice(MAGIC);
    p.push(track);
    p.extend_from_slice(&counter.to_be_bytes());
    p.extend_from_slice(&unix_us().to_be_bytes());
    for i in STAMP_LEN..len {
        p.push(fill_byte(counter, i));
    }
    p
}

/// Read a payload's stamp and check every fill byte; `None` if it is not ours or damaged.
pub fn check_payload(p: &[u8]) -> Option<Stamp> {
    if p.len() < STAMP_LEN || &p[PREFIX..PREFIX + 4] != MAGIC {
        return None;
    }
    let track = p[PREFIX + 4];
    let counter = u32::from_be_bytes(p[PREFIX + 5..PREFIX + 9].try_into().ok()?);
    let sent_us = u64::from_be_bytes(p[PREFIX + 9..PREFIX + 17].try_into().ok()?);
    for (i, b) in p.iter().enumerate().skip(STAMP_LEN) {
        if *b != fill_byte(counter, i) {
            return None;
        }
    }
    Some(Stamp {
        track,
        counter,
        sent_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_detects_damage() {
        let p = make_payload(TRACK_VIDEO, 77, 1000, [0x10, 0, 0, 0]);
        assert_eq!(p.len(), 1000);
        let s = check_payload(&p).unwrap();
        assert_eq!((s.track, s.counter), (TRACK_VIDEO, 77));
        let mut bad = p.clone();
        bad[500] ^= 1;
        assert_eq!(check_payload(&bad), None);
        assert_eq!(check_payload(&p[..10]), None);
    }
}
