//! The bytes the SRTP sender writes around a payload: the RTP header with
//! one-byte extensions (RFC 8285), SDES, NTP time (RFC 3550).

use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use super::ExtIds;

/// Big-endian u32 at `i`.
pub(super) fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// RTP fixed header and one-byte header extensions (RFC 8285).
#[allow(clippy::too_many_arguments)]
pub(super) fn write_header(
    buf: &mut Vec<u8>,
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    ext: &ExtIds,
    mid: Option<&[u8]>,
    audio_level: Option<(u8, bool)>,
    orientation: Option<u8>,
) {
    buf.extend_from_slice(&[0x80, pt & 0x7f | if marker { 0x80 } else { 0 }]);
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&ts.to_be_bytes());
    buf.extend_from_slice(&ssrc.to_be_bytes());
    let start = buf.len();
    buf.extend_from_slice(&[0xbe, 0xde, 0, 0]);
    let mut element = |id: u8, value: &[u8]| {
        if id != 0 && id < 15 && !value.is_empty() && value.len() <= 16 {
            buf.push(id << 4 | (value.len() as u8 - 1));
            buf.extend_from_slice(value);
        }
    };
    if let Some(mid) = mid {
        element(ext.mid, mid);
    }
    if let Some((level, voice)) = audio_level {
        element(
            ext.audio_level,
            &[level & 0x7f | if voice { 0x80 } else { 0 }],
        );
    }
    if let Some(o) = orientation {
        element(ext.video_orientation, &[o]);
    }
    if buf.len() == start + 4 {
        buf.truncate(start);
        return;
    }
    pad_to_word(buf, start);
    let words = ((buf.len() - start - 4) / 4) as u16;
    buf[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
    buf[0] |= 0x10;
}

/// Zeros up to a 32-bit boundary counted from `start`.
fn pad_to_word(buf: &mut Vec<u8>, start: usize) {
    while !(buf.len() - start).is_multiple_of(4) {
        buf.push(0);
    }
}

/// SDES with one chunk: CNAME, then the end item, padded to 32 bits.
pub(super) fn write_sdes(buf: &mut Vec<u8>, ssrc: u32, cname: &[u8]) {
    let cname = &cname[..cname.len().min(255)];
    let start = buf.len();
    buf.extend_from_slice(&[0x81, 202, 0, 0]);
    buf.extend_from_slice(&ssrc.to_be_bytes());
    buf.push(1);
    buf.push(cname.len() as u8);
    buf.extend_from_slice(cname);
    // At least one zero octet ends the item list.
    buf.push(0);
    pad_to_word(buf, start);
    let words = ((buf.len() - start) / 4 - 1) as u16;
    buf[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
}

/// NTP time (RFC 3550 §4: seconds since 1900 in 32.32 fixed point) of `now`.
pub fn ntp_time(now: Instant) -> u64 {
    const SECS_1900_TO_1970: u64 = 2_208_988_800;
    static BASE: OnceLock<(Instant, SystemTime)> = OnceLock::new();
    let (i0, s0) = *BASE.get_or_init(|| (Instant::now(), SystemTime::now()));
    let wall = if now >= i0 {
        s0 + (now - i0)
    } else {
        s0 - (i0 - now)
    };
    let d = wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + SECS_1900_TO_1970;
    let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn header_extensions_are_one_byte_elements_padded_to_words() {
        let ext = ExtIds {
            mid: 1,
            audio_level: 3,
            video_orientation: 0,
        };
        let mut b = Vec::new();
        write_header(
            &mut b,
            111,
            true,
            0x1234,
            7,
            0xaabbccdd,
            &ext,
            Some(b"0"),
            Some((30, true)),
            Some(1),
        );
        assert_eq!(
            b,
            [
                0x90,
                0x80 | 111,
                0x12,
                0x34,
                0,
                0,
                0,
                7,
                0xaa,
                0xbb,
                0xcc,
                0xdd,
                0xbe,
                0xde,
                0,
                1,
                0x10,
                b'0',
                0x30,
                0x80 | 30
            ]
        );
        // Nothing negotiated or nothing to say: no extension block.
        let mut b = Vec::new();
        write_header(
            &mut b,
            96,
            false,
            1,
            2,
            3,
            &ExtIds::default(),
            Some(b"0"),
            None,
            None,
        );
        assert_eq!(b.len(), 12);
        assert_eq!(b[0], 0x80);
    }

    #[test]
    fn sdes_is_padded_and_its_length_counts_words() {
        let mut b = Vec::new();
        write_sdes(&mut b, 5, b"abcdef");
        // 4 header + 4 ssrc + 2 + 6 + 1 end = 17, padded to 20.
        assert_eq!(b.len(), 20);
        assert_eq!(u16::from_be_bytes([b[2], b[3]]), 4);
        assert_eq!(&b[10..16], b"abcdef");
        assert_eq!(b[16], 0);
    }

    #[test]
    fn ntp_time_follows_the_instant() {
        let now = Instant::now();
        let a = ntp_time(now);
        let b = ntp_time(now + Duration::from_millis(1500));
        let diff = b - a;
        // 1.5 s in 32.32 fixed point, to within rounding.
        assert!((diff as i64 - (3u64 << 31) as i64).abs() < 4, "{diff}");
        assert!(a >> 32 > 3_900_000_000, "after 2023");
    }
}
