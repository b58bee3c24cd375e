//! The relay's datagrams between nodes.
//!
//! Media is SRTP (RFC 7714 AES-GCM): a 12-byte RTP header in clear (the
//! link's SSRC for one (stream, mid, rid) and the link's own sequence
//! number, so the receiver finds gaps and asks for them), then, sealed, a
//! 24-byte relay header carrying what a viewer's rewriting needs of the
//! publisher's packet (stream tag, publisher tag, extended sequence number,
//! codec, payload type, keyframe, audio level, orientation, mid and rid),
//! then the publisher's payload. Feedback is SRTCP: a receiver report as
//! keepalive, generic NACK and PLI.

use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::VideoOrientation;

/// The RTP header every relay packet carries in clear.
pub(crate) const RTP_HEADER: usize = 12;
/// The sealed relay header's fixed part.
pub(crate) const RELAY_HEADER: usize = 24;
/// Payload type of relay media (the publisher's is in the relay header):
/// a dynamic one, never read as RTCP whatever the marker bit.
const RELAY_PT: u8 = 110;
const VERSION: u8 = 1;

const F_VIDEO: u8 = 1;
const F_KEYFRAME: u8 = 2;
const F_LEVEL: u8 = 4;
const F_VOICE_KNOWN: u8 = 8;
const F_VOICE: u8 = 16;
const F_ORIENTATION: u8 = 32;

/// Codecs a relay carries, by their code on the wire (index + 1).
const CODECS: [Codec; 12] = [
    Codec::Opus,
    Codec::PCMU,
    Codec::PCMA,
    Codec::G722,
    Codec::CN,
    Codec::AmrWb,
    Codec::H264,
    Codec::H265,
    Codec::H266,
    Codec::Vp8,
    Codec::Vp9,
    Codec::Av1,
];

fn codec_code(c: Codec) -> Option<u8> {
    CODECS.iter().position(|x| *x == c).map(|i| i as u8 + 1)
}

fn codec_of(code: u8) -> Option<Codec> {
    CODECS.get((code as usize).checked_sub(1)?).copied()
}

fn orientation_of(v: u8) -> VideoOrientation {
    match v & 3 {
        0 => VideoOrientation::Deg0,
        1 => VideoOrientation::Deg270,
        2 => VideoOrientation::Deg180,
        _ => VideoOrientation::Deg90,
    }
}

/// What the relay header says of one packet.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Meta {
    /// The stream's tag on this link.
    pub tag: u32,
    pub publisher_tag: u32,
    pub seq: u64,
    pub kind: MediaKind,
    pub keyframe: bool,
    pub codec: Codec,
    pub pt: Pt,
    pub marker: bool,
    pub ts: u32,
    pub audio_level: Option<i8>,
    pub voice_activity: Option<bool>,
    pub video_orientation: Option<VideoOrientation>,
    pub mid: Mid,
    pub rid: Option<Rid>,
}

/// Write a relay media packet, unsealed, into `buf` (cleared): RTP header
/// with `ssrc` and `seq`, relay header, payload. `None` if the codec has no
/// relay code or a mid/rid is too long.
pub(crate) fn write_media(
    buf: &mut Vec<u8>,
    ssrc: u32,
    seq: u16,
    m: &Meta,
    payload: &[u8],
) -> Option<()> {
    let code = codec_code(m.codec)?;
    let mid: &str = &m.mid;
    let rid: &str = m.rid.as_deref().unwrap_or("");
    if mid.len() > 255 || rid.len() > 255 {
        return None;
    }
    buf.clear();
    buf.push(0x80);
    buf.push(if m.marker { 0x80 | RELAY_PT } else { RELAY_PT });
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&m.ts.to_be_bytes());
    buf.extend_from_slice(&ssrc.to_be_bytes());
    let mut flags = 0;
    if m.kind == MediaKind::Video {
        flags |= F_VIDEO;
    }
    if m.keyframe {
        flags |= F_KEYFRAME;
    }
    if m.audio_level.is_some() {
        flags |= F_LEVEL;
    }
    if let Some(v) = m.voice_activity {
        flags |= F_VOICE_KNOWN;
        if v {
            flags |= F_VOICE;
        }
    }
    if m.video_orientation.is_some() {
        flags |= F_ORIENTATION;
    }
    buf.extend_from_slice(&[VERSION, flags, code, *m.pt]);
    buf.extend_from_slice(&m.tag.to_be_bytes());
    buf.extend_from_slice(&m.publisher_tag.to_be_bytes());
    buf.extend_from_slice(&m.seq.to_be_bytes());
    buf.push(m.audio_level.unwrap_or(0) as u8);
    buf.push(m.video_orientation.map(|o| o as u8).unwrap_or(0));
    buf.push(mid.len() as u8);
    buf.push(rid.len() as u8);
    buf.extend_from_slice(mid.as_bytes());
    buf.extend_from_slice(rid.as_bytes());
    buf.extend_from_slice(payload);
    Some(())
}

/// Read an opened relay media packet: its metadata and where its payload
/// starts. `None` for anything malformed.
pub(crate) fn read_media(p: &[u8]) -> Option<(Meta, usize)> {
    if p.len() < RTP_HEADER + RELAY_HEADER || p[0] != 0x80 || p[1] & 0x7f != RELAY_PT {
        return None;
    }
    let h = &p[RTP_HEADER..];
    if h[0] != VERSION {
        return None;
    }
    let flags = h[1];
    let codec = codec_of(h[2])?;
    let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let (mid_len, rid_len) = (h[22] as usize, h[23] as usize);
    let ids = RELAY_HEADER..RELAY_HEADER + mid_len + rid_len;
    let id_bytes = h.get(ids.clone())?;
    let mid = std::str::from_utf8(&id_bytes[..mid_len]).ok()?;
    let rid = std::str::from_utf8(&id_bytes[mid_len..]).ok()?;
    if mid.is_empty() || mid.len() > 16 || rid.len() > 16 {
        return None;
    }
    let meta = Meta {
        tag: u32_at(4),
        publisher_tag: u32_at(8),
        seq: u64::from_be_bytes(h[12..20].try_into().ok()?),
        kind: if flags & F_VIDEO != 0 {
            MediaKind::Video
        } else {
            MediaKind::Audio
        },
        keyframe: flags & F_KEYFRAME != 0,
        codec,
        pt: Pt::from(h[3]),
        marker: p[1] & 0x80 != 0,
        ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        audio_level: (flags & F_LEVEL != 0).then_some(h[20] as i8),
        voice_activity: (flags & F_VOICE_KNOWN != 0).then_some(flags & F_VOICE != 0),
        video_orientation: (flags & F_ORIENTATION != 0).then(|| orientation_of(h[21])),
        mid: Mid::from(mid),
        rid: (!rid.is_empty()).then(|| Rid::from(rid)),
    };
    Some((meta, RTP_HEADER + ids.end))
}

/// The RTP sequence number and SSRC of a relay media packet (clear text).
pub(crate) fn rtp_seq_ssrc(p: &[u8]) -> Option<(u16, u32)> {
    if p.len() < RTP_HEADER {
        return None;
    }
    Some((
        u16::from_be_bytes([p[2], p[3]]),
        u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
    ))
}

/// The 48-bit SRTP index nearest `highest` whose low 16 bits are `seq`
/// (RFC 3711 §3.3.1).
pub(crate) fn extend_index(highest: u64, seq: u16) -> u64 {
    let base = highest & !0xffff;
    let cand = base | seq as u64;
    if cand + 0x8000 < highest {
        cand + 0x1_0000
    } else if cand > highest + 0x8000 && cand >= 0x1_0000 {
        cand - 0x1_0000
    } else {
        cand
    }
}

/// One piece of relay feedback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Feedback {
    /// The sender is alive (a receiver report with no blocks).
    Keepalive,
    /// Resend these sequence numbers of `ssrc`.
    Nack { ssrc: u32, seqs: Vec<u16> },
    /// A keyframe of `ssrc`'s track, please.
    Pli { ssrc: u32 },
}

/// An unsealed RTCP receiver report with no blocks from `sender`.
pub(crate) fn write_keepalive(buf: &mut Vec<u8>, sender: u32) {
    buf.clear();
    buf.extend_from_slice(&[0x80, 201, 0, 1]);
    buf.extend_from_slice(&sender.to_be_bytes());
}

/// An unsealed PLI (RFC 4585 §6.3.1) for `ssrc`.
pub(crate) fn write_pli(buf: &mut Vec<u8>, sender: u32, ssrc: u32) {
    buf.clear();
    buf.extend_from_slice(&[0x81, 206, 0, 2]);
    buf.extend_from_slice(&sender.to_be_bytes());
    buf.extend_from_slice(&ssrc.to_be_bytes());
}

/// An unsealed generic NACK (RFC 4585 §6.2.1) for `seqs` of `ssrc`, at
/// most 32 FCI entries.
pub(crate) fn write_nack(buf: &mut Vec<u8>, sender: u32, ssrc: u32, seqs: &[u16]) {
    buf.clear();
    buf.extend_from_slice(&[0x81, 205, 0, 0]);
    buf.extend_from_slice(&sender.to_be_bytes());
    buf.extend_from_slice(&ssrc.to_be_bytes());
    let mut fci: Vec<(u16, u16)> = Vec::new();
    for &s in seqs {
        if let Some(last) = fci.last_mut() {
            let d = s.wrapping_sub(last.0);
            if (1..=16).contains(&d) {
                last.1 |= 1 << (d - 1);
                continue;
            }
        }
        if fci.len() == 32 {
            break;
        }
        fci.push((s, 0));
    }
    for (pid, blp) in fci {
        buf.extend_from_slice(&pid.to_be_bytes());
        buf.extend_from_slice(&blp.to_be_bytes());
    }
    let words = (buf.len() / 4 - 1) as u16;
    buf[2..4].copy_from_slice(&words.to_be_bytes());
}

/// Read an opened SRTCP compound packet into feedback; unknown packets are
/// skipped, a malformed length ends the read.
pub(crate) fn read_feedback(p: &[u8], out: &mut Vec<Feedback>) {
    let mut at = 0;
    while p.len() >= at + 8 {
        let h = &p[at..];
        if h[0] >> 6 != 2 {
            return;
        }
        let len = 4 * (u16::from_be_bytes([h[2], h[3]]) as usize + 1);
        if len > h.len() {
            return;
        }
        let fmt = h[0] & 0x1f;
        let ssrc = || u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        match (h[1], fmt) {
            (201, _) => out.push(Feedback::Keepalive),
            (206, 1) if len >= 12 => out.push(Feedback::Pli { ssrc: ssrc() }),
            (205, 1) if len >= 12 => {
                let mut seqs = Vec::new();
                for f in h[12..len].chunks_exact(4).take(64) {
                    let pid = u16::from_be_bytes([f[0], f[1]]);
                    let blp = u16::from_be_bytes([f[2], f[3]]);
                    seqs.push(pid);
                    for b in 0..16 {
                        if blp & (1 << b) != 0 {
                            seqs.push(pid.wrapping_add(b + 1));
                        }
                    }
                }
                out.push(Feedback::Nack { ssrc: ssrc(), seqs });
            }
            _ => {}
        }
        at += len;
    }
}

/// A sliding replay window over 64 indices (RFC 3711 §3.3.2).
#[derive(Debug, Default, Clone)]
pub(crate) struct ReplayWindow {
    highest: Option<u64>,
    seen: u64,
}

impl ReplayWindow {
    /// Whether `index` is new (not seen, not older than the window); does
    /// not record it.
    pub fn fresh(&self, index: u64) -> bool {
        match self.highest {
            None => true,
            Some(h) if index > h => true,
            Some(h) => {
                let back = h - index;
                back < 64 && self.seen & (1 << back) == 0
            }
        }
    }

    /// Record `index` as seen (after it authenticated).
    pub fn record(&mut self, index: u64) {
        match self.highest {
            None => {
                self.highest = Some(index);
                self.seen = 1;
            }
            Some(h) if index > h => {
                let shift = index - h;
                self.seen = if shift >= 64 { 0 } else { self.seen << shift };
                self.seen |= 1;
                self.highest = Some(index);
            }
            Some(h) => {
                let back = h - index;
                if back < 64 {
                    self.seen |= 1 << back;
                }
            }
        }
    }

    /// The highest index seen.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            tag: 7,
            publisher_tag: 0x1234_5679,
            seq: 5 * 65536 + 3,
            kind: MediaKind::Video,
            keyframe: true,
            codec: Codec::Vp8,
            pt: Pt::from(96),
            marker: true,
            ts: 90_000,
            audio_level: None,
            voice_activity: Some(false),
            video_orientation: Some(VideoOrientation::Deg90),
            mid: Mid::from("1"),
            rid: Some(Rid::from("h")),
        }
    }

    #[test]
    fn media_round_trips() {
        let mut buf = Vec::new();
        write_media(&mut buf, 42, 65535, &meta(), b"payload").unwrap();
        assert_eq!(rtp_seq_ssrc(&buf), Some((65535, 42)));
        assert!(crate::packet::is_rtp(&buf));
        let (m, at) = read_media(&buf).unwrap();
        assert_eq!(m, meta());
        assert_eq!(&buf[at..], b"payload");
        let audio = Meta {
            kind: MediaKind::Audio,
            keyframe: false,
            codec: Codec::Opus,
            audio_level: Some(-30),
            voice_activity: None,
            video_orientation: None,
            rid: None,
            marker: false,
            ..meta()
        };
        write_media(&mut buf, 1, 0, &audio, b"").unwrap();
        assert_eq!(read_media(&buf).unwrap().0, audio);
    }

    #[test]
    fn malformed_media_is_refused() {
        let mut buf = Vec::new();
        write_media(&mut buf, 1, 1, &meta(), b"x").unwrap();
        for cut in 0..RTP_HEADER + RELAY_HEADER + 2 {
            assert!(read_media(&buf[..cut]).is_none(), "cut at {cut}");
        }
        let mut bad = buf.clone();
        bad[RTP_HEADER] = 9; // version
        assert!(read_media(&bad).is_none());
        let mut bad = buf.clone();
        bad[RTP_HEADER + 2] = 200; // codec
        assert!(read_media(&bad).is_none());
        let mut bad = buf.clone();
        bad[RTP_HEADER + 22] = 0; // empty mid
        assert!(read_media(&bad).is_none());
    }

    #[test]
    fn index_extension_follows_wraps_both_ways() {
        assert_eq!(extend_index(0, 5), 5);
        assert_eq!(extend_index(65535, 0), 65536);
        assert_eq!(extend_index(65536 + 2, 65534), 65534);
        assert_eq!(extend_index(3 * 65536 + 100, 90), 3 * 65536 + 90);
    }

    #[test]
    fn feedback_round_trips() {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        write_nack(&mut buf, 1, 9, &[10, 11, 13, 40, 65535, 0]);
        read_feedback(&buf, &mut out);
        assert_eq!(
            out,
            vec![Feedback::Nack {
                ssrc: 9,
                seqs: vec![10, 11, 13, 40, 65535, 0]
            }]
        );
        out.clear();
        write_pli(&mut buf, 1, 9);
        let mut compound = buf.clone();
        write_keepalive(&mut buf, 1);
        compound.extend_from_slice(&buf);
        read_feedback(&compound, &mut out);
        assert_eq!(out, vec![Feedback::Pli { ssrc: 9 }, Feedback::Keepalive]);
        // A length past the end stops the read.
        out.clear();
        compound[3] = 200;
        read_feedback(&compound, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn replay_window_refuses_repeats_and_the_too_old() {
        let mut w = ReplayWindow::default();
        assert!(w.fresh(100));
        w.record(100);
        assert!(!w.fresh(100));
        assert!(w.fresh(99));
        w.record(99);
        assert!(!w.fresh(99));
        w.record(200);
        assert!(!w.fresh(100), "fell out of the window");
        assert!(w.fresh(199));
        assert_eq!(w.highest(), Some(200));
    }
}
