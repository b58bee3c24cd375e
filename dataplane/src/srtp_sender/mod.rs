//! The SRTP sender: sluice's own RTP/SRTP send path for forwarded media
//! (next to str0m's `direct_api`), with its RTX cache and sender reports.
//!
//! A viewer that runs no bandwidth estimation needs nothing from an RTP
//! stack per packet but a rewritten header and SRTP. str0m's send path
//! gives it much more: a packet record and a copy into its send queue, an
//! RTX cache entry, a fresh zeroed buffer and a second copy around
//! encryption, a timeout/poll cycle per visit: most of the forwarding cost
//! (BENCHMARKS.md). Here each copy is one buffer: the
//! header is written, the shared payload copied once behind it, and the
//! payload sealed in place (AES-GCM).
//!
//! The session's str0m `Rtc` keeps everything else: ICE, DTLS, SDP, and the
//! viewer's RTCP (receiver reports, PLI and FIR become str0m's events as
//! before). What sending media takes over from it is here too:
//! - retransmission: a cache of the last packets per video track (shared
//!   payloads), answered on NACK with RFC 4588 RTX where negotiated;
//! - sender reports: one per track per second with the RTP/NTP mapping the
//!   viewer's lip sync needs, and SDES CNAME;
//! - the MID header extension, until the viewer reports on the SSRC.
//!
//! str0m's own RTCP for such a session (sender reports of streams it never
//! sent on) is not sent; the shard drops it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::{vp8_rewrite, Vp8Ids};
use crate::packet::Datagram;
use crate::srtp::{SrtpSession, RTCP_OVERHEAD, RTP_OVERHEAD};
use crate::stats::Counters;

mod cache;
mod wire;

use cache::{RtxRing, Sent};
use wire::{be32, ntp_time, write_header, write_sdes};

/// Packets str0m keeps per video track for NACK answers on its own send
/// path: a second of video up to ~2.5 Mbit/s. (sluice's send path sizes its
/// cache by the stream's rate, see `cache.rs`.)
pub const RTX_CACHE_PACKETS: usize = 256;
/// A packet is not resent again within one round trip, this long when no
/// round trip is known, and never within [`RESEND_GAP_MIN`].
const RESEND_GAP: Duration = Duration::from_millis(100);
const RESEND_GAP_MIN: Duration = Duration::from_millis(20);
/// Retransmission bytes a viewer may use at once beyond its budget's share
/// of media: one loss burst on a keyframe is repaired in full.
pub const RTX_BURST_BYTES: u64 = 48 * 1024;
/// One sender report per track per this interval.
pub const SR_INTERVAL: Duration = Duration::from_secs(1);

/// Header extension ids agreed with the viewer (0 = not negotiated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtIds {
    pub mid: u8,
    pub audio_level: u8,
    pub video_orientation: u8,
}

/// What the shard knows of a track when it first sends on it.
#[derive(Debug, Clone)]
pub struct TrackInfo {
    pub ssrc: u32,
    pub mid: String,
    pub cname: String,
    pub ext: ExtIds,
    pub clock_rate: u32,
    pub video: bool,
    /// RTX SSRC and (media pt, RTX pt) pairs, where RTX is negotiated.
    pub rtx: Option<(u32, Vec<(u8, u8)>)>,
}

/// One packet to send.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub pt: u8,
    /// Extended sequence number: the SRTP index.
    pub seq: u64,
    pub ts: u32,
    pub marker: bool,
    /// Audio level (RFC 6464: -dBov) and voice activity.
    pub audio_level: Option<(u8, bool)>,
    /// RFC 7742 byte (C, F, R1, R0).
    pub video_orientation: Option<u8>,
    pub payload: &'a Arc<[u8]>,
    /// VP8 picture id (value, 15-bit) and TL0PICIDX to write into the
    /// payload descriptor (see [`crate::codec::vp8_rewrite`]).
    pub vp8: Option<Vp8Ids>,
    /// When the publisher's shard received it: the RTP/NTP mapping of sender
    /// reports follows it.
    pub wallclock: Instant,
}

#[derive(Debug)]
struct Track {
    info: TrackInfo,
    /// The viewer reported on this SSRC: it has bound it, MID is no longer needed.
    acked: bool,
    rtx_acked: bool,
    rtx_seq: u64,
    packets: u64,
    octets: u64,
    /// RTP timestamp and wallclock of the newest packet sent.
    last: Option<(u32, Instant)>,
    next_sr: Option<Instant>,
    /// Packet counts at the last two reports: a sender that has sent
    /// nothing since the one before last stops reporting (RFC 3550 §6.4).
    reported: [u64; 2],
    /// Sent packets for NACK answers; video tracks only.
    cache: Option<RtxRing>,
    feedback: TrackFeedback,
}

/// What a viewer's RTCP said of one track, as str0m would report it for a
/// track it sent itself.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct TrackFeedback {
    pub nacks: u64,
    pub plis: u64,
    pub firs: u64,
    /// Fraction lost in the last reception report.
    pub loss: Option<f32>,
    /// Round trip from the last reception report that named one of our
    /// sender reports (RFC 3550 §6.4.1).
    pub rtt: Option<Duration>,
}

/// What the SRTP sender sent on one track, and what the viewer said of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SentCounts {
    /// RTP packets sent.
    pub packets: u64,
    /// Payload bytes sent.
    pub bytes: u64,
    /// The viewer's RTCP about the track.
    pub feedback: TrackFeedback,
}

/// One session's SRTP send state.
#[derive(Debug)]
pub struct SrtpSender {
    srtp: SrtpSession,
    tracks: Vec<Track>,
    rtcp_scratch: Vec<u8>,
    /// Bytes of media and RTCP sent by this path (str0m does not see them).
    pub bytes: u64,
    /// Retransmission budget in hundredths of a byte: each media byte sent
    /// adds `rtx_percent`, each byte resent takes 100, capped at
    /// [`RTX_BURST_BYTES`]. NACKs cannot make sluice send more than that
    /// share of a viewer's media.
    rtx_tokens: u64,
    rtx_percent: u64,
}

impl SrtpSender {
    /// A sender whose retransmissions may use `rtx_percent` of the media
    /// bytes it sends (plus [`RTX_BURST_BYTES`] at once).
    pub fn new(srtp: SrtpSession, rtx_percent: u32) -> Self {
        SrtpSender {
            srtp,
            tracks: Vec::new(),
            rtcp_scratch: Vec::new(),
            bytes: 0,
            rtx_tokens: RTX_BURST_BYTES * 100,
            rtx_percent: rtx_percent as u64,
        }
    }

    /// Whether the track with this SSRC has been set up.
    pub fn has_track(&self, ssrc: u32) -> bool {
        self.tracks.iter().any(|t| t.info.ssrc == ssrc)
    }

    pub fn add_track(&mut self, info: TrackInfo) {
        if self.has_track(info.ssrc) {
            return;
        }
        let cache = info.video.then(RtxRing::default);
        self.tracks.push(Track {
            info,
            acked: false,
            rtx_acked: false,
            rtx_seq: 0,
            packets: 0,
            octets: 0,
            last: None,
            next_sr: None,
            reported: [u64::MAX; 2],
            cache,
            feedback: TrackFeedback::default(),
        });
    }

    /// Packets and payload bytes sent on the track with this SSRC, and
    /// what the viewer reported of it.
    pub fn sent(&self, ssrc: u32) -> Option<SentCounts> {
        self.tracks
            .iter()
            .find(|t| t.info.ssrc == ssrc)
            .map(|t| SentCounts {
                packets: t.packets,
                bytes: t.octets,
                feedback: t.feedback,
            })
    }

    /// Write `p` on track `ssrc` as one SRTP datagram to `dest`; `false` if
    /// the track is unknown.
    pub fn send(
        &mut self,
        now: Instant,
        ssrc: u32,
        p: &Packet<'_>,
        dest: SocketAddr,
        out: &mut Vec<Datagram>,
    ) -> bool {
        let Some(t) = self.tracks.iter_mut().find(|t| t.info.ssrc == ssrc) else {
            return false;
        };
        let mid = (!t.acked).then_some(t.info.mid.as_bytes());
        let mut buf = crate::packet::take_buffer();
        buf.reserve(12 + 28 + p.payload.len() + RTP_OVERHEAD);
        write_header(
            &mut buf,
            p.pt,
            p.marker,
            p.seq as u16,
            p.ts,
            ssrc,
            &t.info.ext,
            mid,
            p.audio_level,
            p.video_orientation,
        );
        let header_len = buf.len();
        append_payload(&mut buf, p.payload, p.vp8);
        self.srtp.protect_rtp(&mut buf, header_len, ssrc, p.seq);
        t.packets += 1;
        t.octets += p.payload.len() as u64;
        self.rtx_tokens = (self.rtx_tokens + p.payload.len() as u64 * self.rtx_percent)
            .min(RTX_BURST_BYTES * 100);
        if t.last.is_none_or(|(ts, _)| p.ts.wrapping_sub(ts) < 1 << 31) {
            t.last = Some((p.ts, p.wallclock));
        }
        if t.next_sr.is_none() {
            // The first report goes out with the first packets.
            t.next_sr = Some(now);
        }
        if let Some(cache) = &mut t.cache {
            let sent = Sent {
                seq: p.seq,
                pt: p.pt,
                ts: p.ts,
                marker: p.marker,
                with_mid: mid.is_some(),
                orientation: p.video_orientation,
                vp8: p.vp8,
            };
            cache.insert(now, &sent, p.payload);
        }
        emit(&mut self.bytes, out, dest, buf);
        true
    }

    /// Sender reports (with SDES CNAME) of the tracks whose report is due.
    /// Called after each visit that wrote media and when the session's
    /// timer runs.
    pub fn sender_reports(
        &mut self,
        now: Instant,
        dest: SocketAddr,
        out: &mut Vec<Datagram>,
        counters: &mut Counters,
    ) {
        for i in 0..self.tracks.len() {
            let t = &mut self.tracks[i];
            let (Some(due), Some((ts, wall))) = (t.next_sr, t.last) else {
                continue;
            };
            if now < due {
                continue;
            }
            t.next_sr = Some(now + SR_INTERVAL);
            if t.reported[0] == t.packets {
                continue;
            }
            t.reported = [t.reported[1], t.packets];
            // RTP time now, from the newest packet's timestamp and wallclock.
            let elapsed = now.saturating_duration_since(wall);
            let rtp_now = ts.wrapping_add(
                (elapsed.as_nanos() * t.info.clock_rate as u128 / 1_000_000_000) as u32,
            );
            let mut buf = crate::packet::take_buffer();
            buf.reserve(28 + 12 + t.info.cname.len() + 4 + RTCP_OVERHEAD);
            let ntp = ntp_time(now);
            buf.extend_from_slice(&[0x80, 200, 0, 6]);
            buf.extend_from_slice(&t.info.ssrc.to_be_bytes());
            buf.extend_from_slice(&ntp.to_be_bytes());
            buf.extend_from_slice(&rtp_now.to_be_bytes());
            buf.extend_from_slice(&(t.packets as u32).to_be_bytes());
            buf.extend_from_slice(&(t.octets as u32).to_be_bytes());
            write_sdes(&mut buf, t.info.ssrc, t.info.cname.as_bytes());
            self.srtp.protect_rtcp(&mut buf);
            counters.sender_reports += 1;
            emit(&mut self.bytes, out, dest, buf);
        }
    }

    /// Read an SRTCP datagram from the viewer: NACKs are answered from the
    /// cache, reception reports mark SSRCs as bound. str0m reads the same
    /// datagram for everything else.
    pub fn handle_rtcp(
        &mut self,
        now: Instant,
        datagram: &[u8],
        dest: SocketAddr,
        out: &mut Vec<Datagram>,
        counters: &mut Counters,
    ) {
        let mut plain = std::mem::take(&mut self.rtcp_scratch);
        if !self.srtp.unprotect_rtcp(datagram, &mut plain) {
            counters.rtcp_unreadable += 1;
            self.rtcp_scratch = plain;
            return;
        }
        let mut at = 0;
        while plain.len() >= at + 4 {
            let b0 = plain[at];
            let pt = plain[at + 1];
            let words = u16::from_be_bytes([plain[at + 2], plain[at + 3]]) as usize;
            let end = at + 4 + words * 4;
            if b0 >> 6 != 2 || end > plain.len() {
                break;
            }
            let body = &plain[at + 4..end];
            let count = (b0 & 0x1f) as usize;
            match pt {
                // SR (after 20 bytes of sender info) and RR: report blocks.
                200 | 201 => {
                    let skip = if pt == 200 { 24 } else { 4 };
                    for block in body.get(skip..).unwrap_or(&[]).chunks_exact(24).take(count) {
                        let word = |i: usize| be32(block, i);
                        let ssrc = word(0);
                        for t in &mut self.tracks {
                            if t.info.ssrc == ssrc {
                                t.acked = true;
                                t.feedback.loss = Some(block[4] as f32 / 256.0);
                                let (lsr, dlsr) = (word(16), word(20));
                                if lsr != 0 {
                                    // Middle 32 bits of NTP time, in 1/65536 s.
                                    let now_mid = (ntp_time(now) >> 16) as u32;
                                    let rtt = now_mid.wrapping_sub(lsr).wrapping_sub(dlsr);
                                    if rtt < 1 << 31 {
                                        t.feedback.rtt = Some(Duration::from_micros(
                                            rtt as u64 * 1_000_000 / 65_536,
                                        ));
                                    }
                                }
                            }
                            if t.info.rtx.as_ref().is_some_and(|r| r.0 == ssrc) {
                                t.rtx_acked = true;
                            }
                        }
                    }
                }
                // PLI and FIR (RFC 4585 §6.3.1, RFC 5104 §4.3.1): counted;
                // str0m turns them into keyframe requests.
                206 if (count == 1 || count == 4) && body.len() >= 8 => {
                    let media = be32(body, 4);
                    for t in &mut self.tracks {
                        if count == 1 && t.info.ssrc == media {
                            t.feedback.plis += 1;
                        } else if count == 4
                            && body[8..].chunks_exact(8).any(|c| be32(c, 0) == t.info.ssrc)
                        {
                            t.feedback.firs += 1;
                        }
                    }
                }
                // Generic NACK (RFC 4585 §6.2.1).
                205 if count == 1 && body.len() >= 8 => {
                    let ssrc = be32(body, 4);
                    if let Some(t) = self.tracks.iter_mut().find(|t| t.info.ssrc == ssrc) {
                        t.feedback.nacks += 1;
                    }
                    for fci in body[8..].chunks_exact(4) {
                        let pid = u16::from_be_bytes([fci[0], fci[1]]);
                        let blp = u16::from_be_bytes([fci[2], fci[3]]);
                        self.resend(now, ssrc, pid, dest, out, counters);
                        for bit in 0..16u16 {
                            if blp & (1 << bit) != 0 {
                                let seq = pid.wrapping_add(bit + 1);
                                self.resend(now, ssrc, seq, dest, out, counters);
                            }
                        }
                    }
                }
                _ => {}
            }
            at = end;
        }
        self.rtcp_scratch = plain;
    }

    /// Resend packet `seq` of track `ssrc` from the cache, on the RTX stream
    /// where negotiated, else as it was.
    fn resend(
        &mut self,
        now: Instant,
        ssrc: u32,
        seq: u16,
        dest: SocketAddr,
        out: &mut Vec<Datagram>,
        counters: &mut Counters,
    ) {
        let Some(t) = self.tracks.iter_mut().find(|t| t.info.ssrc == ssrc) else {
            return;
        };
        let gap = t.feedback.rtt.unwrap_or(RESEND_GAP).max(RESEND_GAP_MIN);
        let Some(cache) = &mut t.cache else {
            counters.nack_misses += 1;
            return;
        };
        let c = match cache.take_for_resend(now, seq, gap) {
            Ok(c) => c,
            // Resent within a round trip: the viewer asked again too soon.
            Err(true) => return,
            Err(false) => {
                counters.nack_misses += 1;
                return;
            }
        };
        // What the datagram will take at least; its real size is charged below.
        if self.rtx_tokens < (c.payload.len() + 14 + RTP_OVERHEAD) as u64 * 100 {
            counters.drop_rtx_over_budget += 1;
            return;
        }
        cache.mark_resent(now, c.seq);
        let rtx = t
            .info
            .rtx
            .as_ref()
            .and_then(|(rs, pts)| pts.iter().find(|(m, _)| *m == c.pt).map(|(_, r)| (*rs, *r)));
        let mut buf = crate::packet::take_buffer();
        buf.reserve(12 + 20 + 2 + c.payload.len() + RTP_OVERHEAD);
        let (out_ssrc, index) = match rtx {
            Some((rtx_ssrc, rtx_pt)) => {
                // RFC 4588: own sequence numbers, the original one first in the payload.
                t.rtx_seq += 1;
                let index = t.rtx_seq;
                let mid = (!t.rtx_acked).then_some(t.info.mid.as_bytes());
                write_header(
                    &mut buf,
                    rtx_pt,
                    c.marker(),
                    index as u16,
                    c.ts,
                    rtx_ssrc,
                    &t.info.ext,
                    mid,
                    None,
                    None,
                );
                (rtx_ssrc, index)
            }
            None => {
                let mid = c.with_mid().then_some(t.info.mid.as_bytes());
                write_header(
                    &mut buf,
                    c.pt,
                    c.marker(),
                    seq,
                    c.ts,
                    ssrc,
                    &t.info.ext,
                    mid,
                    None,
                    c.orientation(),
                );
                (ssrc, c.seq)
            }
        };
        let header_len = buf.len();
        if rtx.is_some() {
            buf.extend_from_slice(&seq.to_be_bytes());
        }
        append_payload(&mut buf, &c.payload, c.vp8());
        self.srtp.protect_rtp(&mut buf, header_len, out_ssrc, index);
        self.rtx_tokens = self.rtx_tokens.saturating_sub(buf.len() as u64 * 100);
        counters.rtx_sent += 1;
        emit(&mut self.bytes, out, dest, buf);
    }
}

/// Append a payload, with its VP8 descriptor rewritten if asked.
fn append_payload(buf: &mut Vec<u8>, payload: &[u8], vp8: Option<Vp8Ids>) {
    let at = buf.len();
    buf.extend_from_slice(payload);
    if let Some(ids) = vp8 {
        vp8_rewrite(&mut buf[at..], ids);
    }
}

/// Queue a sealed datagram, counting its bytes.
fn emit(bytes: &mut u64, out: &mut Vec<Datagram>, dest: SocketAddr, buf: Vec<u8>) {
    *bytes += buf.len() as u64;
    out.push(Datagram {
        destination: dest,
        contents: buf,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SRTP sender with one video track (SSRC 1000, mid "1") and the
    /// viewer's side of its keys.
    fn sender_with_video_track(
        ext: ExtIds,
        rtx: Option<(u32, Vec<(u8, u8)>)>,
    ) -> (SrtpSender, crate::srtp::SrtpSession) {
        let (server, client) =
            crate::srtp::tests::pair(str0m::crypto::dtls::SrtpProfile::AEAD_AES_256_GCM, 32);
        let mut d = SrtpSender::new(server, 25);
        d.add_track(TrackInfo {
            ssrc: 1000,
            mid: "1".into(),
            cname: "c".into(),
            ext,
            clock_rate: 90_000,
            video: true,
            rtx,
        });
        (d, client)
    }

    fn video_packet(seq: u64, payload: &Arc<[u8]>, now: Instant) -> Packet<'_> {
        Packet {
            pt: 96,
            seq,
            ts: 3000 * seq as u32,
            marker: true,
            audio_level: None,
            video_orientation: Some(1),
            payload,
            vp8: None,
            wallclock: now,
        }
    }

    #[test]
    fn nacks_are_answered_on_the_rtx_stream_once_per_gap_and_junk_is_ignored() {
        let (mut d, mut client) =
            sender_with_video_track(ExtIds::default(), Some((2000, vec![(96, 97)])));
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let now = Instant::now();
        let payload: Arc<[u8]> = vec![7u8; 100].into();
        let mut out = Vec::new();
        let mut c = Counters::default();
        for seq in 1..=10u64 {
            assert!(d.send(now, 1000, &video_packet(seq, &payload, now), dest, &mut out));
        }
        assert!(!d.send(now, 1234, &video_packet(1, &payload, now), dest, &mut out));
        out.clear();
        // NACK for 3 and (bitmask) 5, from the viewer.
        let nack = |client: &mut crate::srtp::SrtpSession| {
            let mut b = vec![0x81, 205, 0, 3, 0, 0, 0, 9, 0, 0, 0x03, 0xe8, 0, 3, 0, 0b10];
            client.protect_rtcp(&mut b);
            b
        };
        d.handle_rtcp(now, &nack(&mut client), dest, &mut out, &mut c);
        assert_eq!(out.len(), 2);
        for dg in &out {
            // RTX: its own SSRC and payload type, the original sequence number first.
            assert_eq!(dg.contents[1] & 0x7f, 97);
            assert_eq!(&dg.contents[8..12], &2000u32.to_be_bytes());
            assert_eq!(dg.contents.len(), 12 + 2 + 100 + RTP_OVERHEAD);
        }
        assert_eq!(c.rtx_sent, 2);
        // The same NACK again at once is not answered twice.
        out.clear();
        d.handle_rtcp(now, &nack(&mut client), dest, &mut out, &mut c);
        assert!(out.is_empty());
        // A packet never sent is a miss.
        let mut b = vec![0x81, 205, 0, 3, 0, 0, 0, 9, 0, 0, 0x03, 0xe8, 0, 200, 0, 0];
        client.protect_rtcp(&mut b);
        d.handle_rtcp(now, &b, dest, &mut out, &mut c);
        assert_eq!(c.nack_misses, 1);
        // Junk: unauthenticated, truncated, or authenticated nonsense.
        let mut seed = 0x1234_5678u32;
        for i in 0..500u32 {
            let len = (i % 90) as usize;
            let mut junk: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 24) as u8
                })
                .collect();
            d.handle_rtcp(now, &junk, dest, &mut out, &mut c);
            if junk.len() >= 8 {
                junk[0] = 0x80 | (junk[0] & 0x3f);
                client.protect_rtcp(&mut junk);
                d.handle_rtcp(now, &junk, dest, &mut out, &mut c);
            }
        }
        assert!(c.rtcp_unreadable >= 500);
    }

    #[test]
    fn a_resend_without_rtx_is_the_original_datagram_byte_for_byte() {
        let ext = ExtIds {
            mid: 1,
            audio_level: 0,
            video_orientation: 4,
        };
        let (mut d, mut client) = sender_with_video_track(ext, None);
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let now = Instant::now();
        let payload: Arc<[u8]> = vec![5u8; 60].into();
        let packet = |seq| video_packet(seq, &payload, now);
        let mut sent = Vec::new();
        assert!(d.send(now, 1000, &packet(1), dest, &mut sent));
        // The viewer reports on the SSRC: later packets leave MID out.
        let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 9, 0, 0, 0x03, 0xe8];
        rr.extend_from_slice(&[0; 20]);
        client.protect_rtcp(&mut rr);
        let mut out = Vec::new();
        let mut c = Counters::default();
        d.handle_rtcp(now, &rr, dest, &mut out, &mut c);
        assert!(d.send(now, 1000, &packet(2), dest, &mut sent));
        // Header extensions (sent in the clear): MID then orientation, then orientation only.
        assert_eq!(sent[0].contents[16..20], [0x10, b'1', 0x40, 1]);
        assert_eq!(sent[1].contents[16..20], [0x40, 1, 0, 0]);
        let mut nack = vec![0x81, 205, 0, 3, 0, 0, 0, 9, 0, 0, 0x03, 0xe8, 0, 1, 0, 0];
        client.protect_rtcp(&mut nack);
        d.handle_rtcp(now, &nack, dest, &mut out, &mut c);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].contents, sent[0].contents);
    }

    #[test]
    fn nack_floods_are_answered_within_the_budget() {
        let (mut d, mut client) =
            sender_with_video_track(ExtIds::default(), Some((2000, vec![(96, 97)])));
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut now = Instant::now();
        let payload: Arc<[u8]> = vec![7u8; 1000].into();
        let mut out = Vec::new();
        let mut c = Counters::default();
        let mut media = 0u64;
        let mut resent = 0u64;
        let mut seq = 1u64;
        // 2 s of 100 packets/s, a NACK for the last 17 packets every 20 ms.
        for turn in 0..100u64 {
            for _ in 0..2 {
                assert!(d.send(now, 1000, &video_packet(seq, &payload, now), dest, &mut out));
                media += 1000;
                seq += 1;
            }
            out.clear();
            let pid = (seq.saturating_sub(17)) as u16;
            let mut b = vec![0x81, 205, 0, 3, 0, 0, 0, 9, 0, 0, 0x03, 0xe8];
            b.extend_from_slice(&pid.to_be_bytes());
            b.extend_from_slice(&0xffffu16.to_be_bytes());
            client.protect_rtcp(&mut b);
            d.handle_rtcp(now, &b, dest, &mut out, &mut c);
            resent += out.iter().map(|x| x.contents.len() as u64).sum::<u64>();
            out.clear();
            now += Duration::from_millis(20);
            if turn == 0 {
                // The first loss burst is repaired in full, from the burst allowance.
                assert_eq!(c.rtx_sent, 2);
            }
        }
        assert!(
            resent <= media / 4 + RTX_BURST_BYTES,
            "{resent} bytes resent for {media} of media"
        );
        assert!(c.drop_rtx_over_budget > 0);
    }
}
