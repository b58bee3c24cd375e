//! SDP offer/answer for new sessions: a str0m `Rtc` (ICE-lite, RTP mode, the process's
//! one DTLS certificate) answering with the chosen shard's host candidates (UDP on
//! each announced address, then passive TCP ones).

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use ring::rand::{SecureRandom, SystemRandom};
use str0m::change::{SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::{Candidate, IceCreds, Rtc, RtcConfig};

/// Why an offer cannot be answered; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum NegotiateError {
    /// 400: not SDP at all.
    #[error("malformed SDP offer: {0}")]
    Malformed(String),
    /// 422: SDP, but nothing sluice can do with it.
    #[error("{0}")]
    Unsupported(String),
}

impl NegotiateError {
    /// The message alone, without the kind's prefix: the one-line reason clients get.
    pub fn reason(&self) -> &str {
        match self {
            NegotiateError::Malformed(m) | NegotiateError::Unsupported(m) => m,
        }
    }
}

/// Codecs sluice forwards, for error messages.
pub const CODECS: &str = "Opus, VP8, H264, VP9, AV1";

/// Builds sessions with shared, expensive-to-make parts.
pub struct Negotiator {
    cert: DtlsCert,
    rng: SystemRandom,
    /// Initial TWCC estimate for viewers, or `None` to leave estimation off.
    pub viewer_bwe: Option<u64>,
}

/// A session whose offer we made; the answer is applied on its shard.
pub struct Offered {
    /// The session, to move to its shard.
    pub rtc: Rtc,
    /// Local ICE username fragment, for STUN demux.
    pub ufrag: String,
    /// The offer awaiting the client's answer.
    pub pending: SdpPendingOffer,
    /// The offer to send to the client.
    pub sdp: String,
    /// Mids of the offered media, in the order of `kinds`.
    pub mids: Vec<Mid>,
}

/// A negotiated session ready to move to its shard.
pub struct Negotiated {
    /// The session, to move to its shard.
    pub rtc: Rtc,
    /// Local ICE username fragment, for STUN demux.
    pub ufrag: String,
    /// The SDP answer to send to the client.
    pub answer: String,
}

impl Negotiator {
    /// A negotiator with a fresh DTLS certificate (installing the DTLS crypto provider).
    pub fn new() -> anyhow::Result<Self> {
        let provider = sluice_dataplane::crypto_provider();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| anyhow::anyhow!("could not generate the DTLS certificate"))?;
        provider.install_process_default();
        Ok(Negotiator {
            cert,
            rng: SystemRandom::new(),
            viewer_bwe: Some(2_500_000),
        })
    }

    /// Random token of `len` characters from the ICE alphabet.
    pub fn random_token(&self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut bytes = vec![0u8; len];
        self.rng.fill(&mut bytes).expect("system randomness");
        bytes
            .iter()
            .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
            .collect()
    }

    /// A random 64-bit value (session ids).
    pub fn random_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        self.rng.fill(&mut b).expect("system randomness");
        u64::from_le_bytes(b)
    }

    fn config(&self, ufrag: &str) -> RtcConfig {
        RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_dtls_cert(self.cert.clone())
            .set_stats_interval(Some(std::time::Duration::from_secs(1)))
            .set_local_ice_credentials(IceCreds {
                ufrag: ufrag.to_string(),
                pass: self.random_token(24),
            })
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .enable_vp9(true)
            .enable_av1(true)
    }

    /// Make an offer that sends media of `kinds` (a room's receive transport),
    /// with `candidates` (the shard's, [`ShardHandle::candidates`]).
    ///
    /// [`ShardHandle::candidates`]: sluice_dataplane::ShardHandle::candidates
    pub fn offer(
        &self,
        kinds: &[MediaKind],
        candidates: &[Candidate],
    ) -> Result<Offered, NegotiateError> {
        let ufrag = self.random_token(8);
        // A room's receive transport runs no bandwidth estimation.
        let mut rtc = self
            .config(&ufrag)
            .set_extension_map(sluice_dataplane::forwarding_extensions())
            .build(Instant::now());
        add_candidates(&mut rtc, candidates);
        let mut api = rtc.sdp_api();
        let mids = kinds
            .iter()
            .map(|k| api.add_media(*k, Direction::SendOnly, None, None, None))
            .collect();
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| NegotiateError::Unsupported("nothing to offer".into()))?;
        Ok(Offered {
            rtc,
            ufrag,
            pending,
            sdp: offer.to_sdp_string(),
            mids,
        })
    }

    /// Answer `offer` with `candidates`. `publish` says which way media must flow.
    pub fn answer(
        &self,
        offer: &str,
        publish: bool,
        candidates: &[Candidate],
    ) -> Result<Negotiated, NegotiateError> {
        self.answer_with(offer, publish, false, candidates)
    }

    /// Answer `offer`; `estimate` turns on TWCC bandwidth estimation (and
    /// pacing) for a viewer, which its simulcast layer choice follows.
    pub fn answer_with(
        &self,
        offer: &str,
        publish: bool,
        estimate: bool,
        candidates: &[Candidate],
    ) -> Result<Negotiated, NegotiateError> {
        let media = media_sections(offer);
        if media.is_empty() {
            return Err(NegotiateError::Malformed(
                "no m= section; send an offer with audio and/or video".into(),
            ));
        }
        let parsed = SdpOffer::from_sdp_string(offer)
            .map_err(|e| NegotiateError::Malformed(first_line(&e.to_string())))?;
        let av = media.iter().filter(|m| m.kind != "application").count();
        if av == 0 {
            return Err(NegotiateError::Unsupported(
                "offer has no audio or video section".into(),
            ));
        }
        // Port 0 rejects a section (RFC 3264 §8.2): such sections do not count.
        let live: Vec<&MediaSection> = media
            .iter()
            .filter(|m| m.kind != "application" && m.port != "0")
            .collect();
        if live.is_empty() {
            return Err(NegotiateError::Unsupported(
                "every audio and video section has port 0 (rejected): nothing to negotiate".into(),
            ));
        }
        if publish && !live.iter().any(|m| m.sends) {
            return Err(NegotiateError::Unsupported(
                "WHIP offer has no sendonly/sendrecv audio or video to publish".into(),
            ));
        }
        if !publish && !live.iter().any(|m| m.receives) {
            return Err(NegotiateError::Unsupported(
                "WHEP offer has no recvonly/sendrecv audio or video to receive".into(),
            ));
        }
        let ufrag = self.random_token(8);
        let mut cfg = self.config(&ufrag);
        match (publish, estimate, self.viewer_bwe) {
            (false, true, Some(bps)) => {
                // Viewers' simulcast layer follows the TWCC estimate.
                cfg = cfg.enable_bwe(Some(str0m::bwe::Bitrate::from(bps)));
            }
            (false, _, _) => cfg = cfg.set_extension_map(sluice_dataplane::forwarding_extensions()),
            // Publishers keep transport-cc: their browsers' congestion control
            // runs on the feedback sluice sends.
            (true, _, _) => {}
        }
        let mut rtc = cfg.build(Instant::now());
        add_candidates(&mut rtc, candidates);
        // str0m 0.25 panics on some hostile offers ("Pt locked multiple times",
        // format/payload_params.rs:41); such an offer is refused like any other.
        let answer =
            std::panic::catch_unwind(AssertUnwindSafe(|| rtc.sdp_api().accept_offer(parsed)))
                .map_err(|_| {
                    NegotiateError::Unsupported(
                        "offer could not be answered: check its payload types".into(),
                    )
                })?
                .map_err(|e| NegotiateError::Unsupported(first_line(&e.to_string())))?;
        let answer = answer.to_sdp_string();
        let accepted = media_sections(&answer)
            .iter()
            .filter(|m| m.kind != "application" && m.port != "0")
            .count();
        if accepted == 0 {
            return Err(NegotiateError::Unsupported(format!(
                "no common codec: sluice forwards {CODECS}"
            )));
        }
        Ok(Negotiated { rtc, ufrag, answer })
    }
}

fn add_candidates(rtc: &mut Rtc, candidates: &[Candidate]) {
    for c in candidates {
        rtc.add_local_candidate(c.clone());
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

pub(crate) struct MediaSection {
    pub kind: String,
    pub port: String,
    pub sends: bool,
    pub receives: bool,
    pub mid: Option<String>,
}

/// The m= sections of an SDP and their direction (session-level default sendrecv).
pub(crate) fn media_sections(sdp: &str) -> Vec<MediaSection> {
    let mut out: Vec<MediaSection> = Vec::new();
    let mut dir_seen = false;
    let finish = |out: &mut Vec<MediaSection>, dir_seen: bool| {
        if let Some(m) = out.last_mut() {
            if !dir_seen {
                m.sends = true;
                m.receives = true;
            }
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("m=") {
            finish(&mut out, dir_seen);
            dir_seen = false;
            let mut it = rest.split_whitespace();
            out.push(MediaSection {
                kind: it.next().unwrap_or("").to_string(),
                port: it.next().unwrap_or("").to_string(),
                sends: false,
                receives: false,
                mid: None,
            });
        } else if let Some(m) = out.last_mut() {
            if let Some(mid) = line.strip_prefix("a=mid:") {
                m.mid = Some(mid.trim().to_string());
                continue;
            }
            let (s, r) = match line {
                "a=sendrecv" => (true, true),
                "a=sendonly" => (true, false),
                "a=recvonly" => (false, true),
                "a=inactive" => (false, false),
                _ => continue,
            };
            m.sends = s;
            m.receives = r;
            dir_seen = true;
        }
    }
    finish(&mut out, dir_seen);
    out
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn udp(addr: &str) -> Vec<Candidate> {
        vec![Candidate::host(addr.parse::<SocketAddr>().unwrap(), "udp").unwrap()]
    }

    #[test]
    fn media_sections_read_kind_port_and_direction() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=recvonly\r\n";
        let m = media_sections(sdp);
        assert_eq!(m.len(), 3);
        assert_eq!(
            (m[0].kind.as_str(), m[0].sends, m[0].receives),
            ("audio", true, false)
        );
        assert_eq!(
            (m[1].port.as_str(), m[1].sends, m[1].receives),
            ("0", true, true)
        );
        assert_eq!(
            (m[2].kind.as_str(), m[2].sends, m[2].receives),
            ("application", false, true)
        );
    }

    #[test]
    fn random_tokens_use_the_ice_alphabet() {
        let n = Negotiator::new().unwrap();
        let t = n.random_token(32);
        assert_eq!(t.len(), 32);
        assert!(t.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(t, n.random_token(32));
    }

    #[test]
    fn an_offer_str0m_cannot_answer_is_refused_not_a_panic() {
        // Found by fuzzing (fuzz/ targets sdp_answer and http_request): str0m
        // panics while accepting it.
        let offer = include_str!("../testdata/offer-pt-locked-twice.sdp");
        let n = Negotiator::new().unwrap();
        let cand = udp("127.0.0.1:40000");
        for (publish, estimate) in [(false, true), (false, false)] {
            assert!(matches!(
                n.answer_with(offer, publish, estimate, &cand),
                Err(NegotiateError::Unsupported(_))
            ));
        }
    }

    /// A str0m client's offer (standard extensions, transport-cc included).
    fn client_offer(dir: Direction) -> String {
        let mut rtc = RtcConfig::new().build(Instant::now());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, dir, None, None, None);
        api.add_media(MediaKind::Video, dir, None, None, None);
        api.apply().unwrap().0.to_sdp_string()
    }

    #[test]
    fn an_offer_whose_every_section_has_port_0_is_unsupported() {
        let n = Negotiator::new().unwrap();
        let cand = udp("127.0.0.1:40000");
        for (dir, publish) in [(Direction::SendOnly, true), (Direction::RecvOnly, false)] {
            let zeroed: String = client_offer(dir)
                .lines()
                .map(|l| match l.strip_prefix("m=") {
                    Some(rest) => {
                        let mut f: Vec<&str> = rest.split(' ').collect();
                        f[1] = "0";
                        format!("m={}\r\n", f.join(" "))
                    }
                    None => format!("{l}\r\n"),
                })
                .collect();
            let e = n.answer(&zeroed, publish, &cand).err().expect("refused");
            assert!(
                matches!(&e, NegotiateError::Unsupported(m) if m.contains("port 0")),
                "{e}"
            );
        }
    }

    #[test]
    fn the_answer_and_the_offer_carry_every_candidate_given() {
        let n = Negotiator::new().unwrap();
        let mut cands = udp("127.0.0.1:40000");
        cands.extend(udp("[::1]:40000"));
        let tcp = Candidate::builder()
            .tcp()
            .host("127.0.0.1:40001".parse().unwrap())
            .tcptype(str0m::net::TcpType::Passive)
            .build()
            .unwrap();
        cands.push(tcp);
        // Transport, priority, address, port and type of each distinct candidate.
        let lines = |sdp: &str| -> Vec<String> {
            let mut v: Vec<String> = Vec::new();
            for l in sdp.lines().filter(|l| l.starts_with("a=candidate:")) {
                let c = l.split(' ').skip(2).collect::<Vec<_>>().join(" ");
                if !v.contains(&c) {
                    v.push(c);
                }
            }
            v
        };
        let view = n
            .answer(&client_offer(Direction::RecvOnly), false, &cands)
            .unwrap();
        let offered = n.offer(&[MediaKind::Video], &cands).unwrap();
        for sdp in [&view.answer, &offered.sdp] {
            let got = lines(sdp);
            assert_eq!(got.len(), 3, "{sdp}");
            assert!(
                got[0].starts_with("udp ") && got[0].contains(" 127.0.0.1 40000 typ host"),
                "{got:?}"
            );
            assert!(
                got[1].starts_with("udp ") && got[1].contains(" ::1 40000 typ host"),
                "{got:?}"
            );
            assert!(
                got[2].starts_with("tcp ")
                    && got[2].contains(" 127.0.0.1 40001 typ host tcptype passive"),
                "{got:?}"
            );
        }
    }

    #[test]
    fn transport_cc_only_where_someone_estimates_bandwidth() {
        const TWCC: &str = "transport-wide-cc";
        let n = Negotiator::new().unwrap();
        let cand = udp("127.0.0.1:40000");
        let view = client_offer(Direction::RecvOnly);
        let plain = n.answer_with(&view, false, false, &cand).unwrap();
        assert!(!plain.answer.contains(TWCC), "{}", plain.answer);
        let estimating = n.answer_with(&view, false, true, &cand).unwrap();
        assert!(estimating.answer.contains(TWCC), "{}", estimating.answer);
        let publish = n
            .answer(&client_offer(Direction::SendOnly), true, &cand)
            .unwrap();
        assert!(publish.answer.contains(TWCC), "{}", publish.answer);
        let offered = n.offer(&[MediaKind::Video], &cand).unwrap();
        assert!(!offered.sdp.contains(TWCC), "{}", offered.sdp);
        // What forwarding needs stays; per-packet extensions nobody reads go.
        for sdp in [&plain.answer, &offered.sdp] {
            assert!(sdp.contains("urn:ietf:params:rtp-hdrext:sdes:mid"), "{sdp}");
            assert!(sdp.contains("urn:3gpp:video-orientation"), "{sdp}");
            assert!(!sdp.contains("abs-send-time"), "{sdp}");
            assert!(!sdp.contains("rtp-stream-id"), "{sdp}");
        }
        assert!(
            plain.answer.contains("ssrc-audio-level"),
            "{}",
            plain.answer
        );
    }
}
