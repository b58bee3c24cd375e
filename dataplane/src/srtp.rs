//! SRTP with AEAD AES-GCM (RFC 7714) for sluice's own send path
//! (`srtp_sender`): keys derived from the DTLS exporter's material (RFC 5764,
//! RFC 3711 §4.3), RTP and RTCP sealed in place in the output buffer, and
//! the viewer's RTCP opened to read its NACKs and reports.
//!
//! Only the GCM profiles are handled here; a session that negotiated
//! AES-CM with HMAC-SHA1 keeps str0m's send path.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use str0m::crypto::dtls::SrtpProfile;

/// AEAD tag length of both GCM profiles.
pub const TAG_LEN: usize = 16;
/// The SRTCP trailer: E flag and 31-bit index.
const SRTCP_INDEX_LEN: usize = 4;
/// What sealing adds to an RTP packet.
pub const RTP_OVERHEAD: usize = TAG_LEN;
/// What sealing adds to an RTCP packet.
pub const RTCP_OVERHEAD: usize = TAG_LEN + SRTCP_INDEX_LEN;

const SALT_LEN: usize = 12;

/// The first SRTCP index this side uses. str0m holds the same keys and
/// counts its own SRTCP from 0: whatever it sent before a session moved to
/// the SRTP sender must never share an index (so a GCM nonce) with ours.
const SRTCP_FIRST_INDEX: u32 = 0x4000_0000;

// RFC 3711 §4.3.1 key derivation labels.
const LABEL_RTP_KEY: u8 = 0;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_KEY: u8 = 3;
const LABEL_RTCP_SALT: u8 = 5;

/// The DTLS exporter's output for one session, as the DTLS endpoint saw it.
#[derive(Clone)]
pub struct Exported {
    /// Keying material from the exporter (RFC 5764 §4.2): both sides' keys and salts.
    pub material: Vec<u8>,
    /// The SRTP protection profile DTLS agreed on.
    pub profile: SrtpProfile,
    /// This side was the DTLS client: its keys are the "client write" half.
    pub active: bool,
}

impl std::fmt::Debug for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exported")
            .field("profile", &self.profile)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// One direction's session keys and salts.
struct Keys {
    rtp: LessSafeKey,
    rtp_salt: [u8; SALT_LEN],
    rtcp: LessSafeKey,
    rtcp_salt: [u8; SALT_LEN],
}

/// The send and receive contexts of one session.
pub struct SrtpSession {
    tx: Keys,
    rx: Keys,
    srtcp_index: u32,
}

impl std::fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpSession")
            .field("srtcp_index", &self.srtcp_index)
            .finish_non_exhaustive()
    }
}

impl SrtpSession {
    /// Keys for a session that negotiated a GCM profile; `None` for any other
    /// profile or material of the wrong length.
    pub fn new(e: &Exported) -> Option<Self> {
        let (key_len, alg, ecb): (usize, _, EcbRound) = match e.profile {
            SrtpProfile::AEAD_AES_128_GCM => (16, &AES_128_GCM, ecb_128),
            SrtpProfile::AEAD_AES_256_GCM => (32, &AES_256_GCM, ecb_256),
            _ => return None,
        };
        // RFC 5764 §4.2: client key, server key, client salt, server salt.
        if e.material.len() != 2 * (key_len + SALT_LEN) {
            return None;
        }
        let m = &e.material;
        let client = (&m[..key_len], &m[2 * key_len..2 * key_len + SALT_LEN]);
        let server = (
            &m[key_len..2 * key_len],
            &m[2 * key_len + SALT_LEN..2 * (key_len + SALT_LEN)],
        );
        let (local, remote) = if e.active {
            (client, server)
        } else {
            (server, client)
        };
        let keys = |(master, salt): (&[u8], &[u8])| -> Option<Keys> {
            let derive_key = |label| -> Option<LessSafeKey> {
                let mut k = [0u8; 32];
                derive(ecb, master, salt, label, &mut k[..key_len]);
                Some(LessSafeKey::new(UnboundKey::new(alg, &k[..key_len]).ok()?))
            };
            let derive_salt = |label| {
                let mut s = [0u8; SALT_LEN];
                derive(ecb, master, salt, label, &mut s);
                s
            };
            Some(Keys {
                rtp: derive_key(LABEL_RTP_KEY)?,
                rtp_salt: derive_salt(LABEL_RTP_SALT),
                rtcp: derive_key(LABEL_RTCP_KEY)?,
                rtcp_salt: derive_salt(LABEL_RTCP_SALT),
            })
        };
        Some(SrtpSession {
            tx: keys(local)?,
            rx: keys(remote)?,
            srtcp_index: SRTCP_FIRST_INDEX,
        })
    }

    /// Seal the RTP packet in `buf` (header of `header_len` bytes, then the
    /// payload) in place and append its tag. `index` is the 48-bit SRTP
    /// index (rollover counter and sequence number).
    pub fn protect_rtp(&self, buf: &mut Vec<u8>, header_len: usize, ssrc: u32, index: u64) {
        let nonce = rtp_nonce(&self.tx.rtp_salt, ssrc, index);
        let (head, body) = buf.split_at_mut(header_len);
        let tag = self
            .tx
            .rtp
            .seal_in_place_separate_tag(nonce, Aad::from(&*head), body)
            .expect("AES-GCM seals any RTP-sized input");
        buf.extend_from_slice(tag.as_ref());
    }

    /// Seal the compound RTCP packet in `buf` in place (RFC 7714 §9) and
    /// append its tag and SRTCP index.
    pub fn protect_rtcp(&mut self, buf: &mut Vec<u8>) {
        let index = self.srtcp_index;
        self.srtcp_index = (self.srtcp_index + 1) & 0x7fff_ffff;
        seal_rtcp(&self.tx, buf, index);
    }

    /// Open an SRTCP packet from the peer into `out` (cleared first).
    /// `false` if it does not authenticate or is not encrypted.
    pub fn unprotect_rtcp(&self, packet: &[u8], out: &mut Vec<u8>) -> bool {
        if packet.len() < 8 + RTCP_OVERHEAD {
            return false;
        }
        let (sealed, trailer) = packet.split_at(packet.len() - SRTCP_INDEX_LEN);
        let e_index = u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        if e_index & 0x8000_0000 == 0 {
            // Unencrypted SRTCP: nothing sluice's peers send.
            return false;
        }
        let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let nonce = rtcp_nonce(&self.rx.rtcp_salt, ssrc, e_index & 0x7fff_ffff);
        let mut aad = [0u8; 12];
        aad[..8].copy_from_slice(&packet[..8]);
        aad[8..].copy_from_slice(trailer);
        out.clear();
        out.extend_from_slice(sealed);
        match self
            .rx
            .rtcp
            .open_in_place(nonce, Aad::from(aad), &mut out[8..])
        {
            Ok(plain) => {
                let n = 8 + plain.len();
                out.truncate(n);
                true
            }
            Err(_) => false,
        }
    }

    /// Open an SRTP packet from the peer (header of `header_len` bytes, then
    /// the sealed payload and tag) into `out` (cleared first: header, then
    /// plaintext payload). `index` is the 48-bit SRTP index the receiver
    /// estimated. `false` if it does not authenticate.
    pub fn unprotect_rtp(
        &self,
        packet: &[u8],
        header_len: usize,
        index: u64,
        out: &mut Vec<u8>,
    ) -> bool {
        if packet.len() < header_len + RTP_OVERHEAD || header_len < 12 {
            return false;
        }
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        let nonce = rtp_nonce(&self.rx.rtp_salt, ssrc, index);
        out.clear();
        out.extend_from_slice(packet);
        let (head, body) = out.split_at_mut(header_len);
        match self.rx.rtp.open_in_place(nonce, Aad::from(&*head), body) {
            Ok(plain) => {
                let n = header_len + plain.len();
                out.truncate(n);
                true
            }
            Err(_) => false,
        }
    }

    /// Seal with the peer's keys, as the peer would: for tests.
    #[cfg(test)]
    fn peer_protect_rtcp(&self, buf: &mut Vec<u8>, index: u32) {
        seal_rtcp(&self.rx, buf, index);
    }
}

/// Seal an RTCP compound packet with `keys` as SRTCP index `index`.
fn seal_rtcp(keys: &Keys, buf: &mut Vec<u8>, index: u32) {
    debug_assert!(buf.len() >= 8);
    let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let e_index = (index | 0x8000_0000).to_be_bytes();
    let nonce = rtcp_nonce(&keys.rtcp_salt, ssrc, index);
    let mut aad = [0u8; 12];
    aad[..8].copy_from_slice(&buf[..8]);
    aad[8..].copy_from_slice(&e_index);
    let tag = keys
        .rtcp
        .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut buf[8..])
        .expect("AES-GCM seals any RTCP-sized input");
    buf.extend_from_slice(tag.as_ref());
    buf.extend_from_slice(&e_index);
}

/// RFC 7714 §8.1: 00 00 || SSRC || ROC || SEQ, XOR the salt.
fn rtp_nonce(salt: &[u8; SALT_LEN], ssrc: u32, index: u64) -> Nonce {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    Nonce::assume_unique_for_key(iv)
}

/// RFC 7714 §9.1: 00 00 || SSRC || 00 00 || 0 || SRTCP index, XOR the salt.
fn rtcp_nonce(salt: &[u8; SALT_LEN], ssrc: u32, index: u32) -> Nonce {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..12].copy_from_slice(&index.to_be_bytes());
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    Nonce::assume_unique_for_key(iv)
}

type EcbRound = fn(&[u8], &[u8], &mut [u8]);

fn ecb_128(key: &[u8], input: &[u8], out: &mut [u8]) {
    str0m::crypto::from_feature_flags()
        .srtp_provider
        .srtp_aes_128_ecb_round(key, input, out)
}

fn ecb_256(key: &[u8], input: &[u8], out: &mut [u8]) {
    str0m::crypto::from_feature_flags()
        .srtp_provider
        .srtp_aes_256_ecb_round(key, input, out)
}

/// RFC 3711 §4.3.1 with the AES-CM PRF (key derivation rate 0): the
/// keystream of AES under the master key, counter block = (master salt XOR
/// label at byte 7) with a 16-bit block counter at the end.
fn derive(ecb: EcbRound, master: &[u8], salt: &[u8], label: u8, out: &mut [u8]) {
    let mut block = [0u8; 16];
    block[..salt.len()].copy_from_slice(salt);
    block[7] ^= label;
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        block[14..].copy_from_slice(&(i as u16).to_be_bytes());
        // The provider's ECB wants room for a padding block.
        let mut ks = [0u8; 32];
        ecb(master, &block, &mut ks);
        chunk.copy_from_slice(&ks[..chunk.len()]);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn key_derivation_matches_rfc3711_appendix_b3() {
        let master = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut key = [0u8; 16];
        derive(ecb_128, &master, &salt, 0, &mut key);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut s = [0u8; 14];
        derive(ecb_128, &master, &salt, 2, &mut s);
        assert_eq!(s.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 94];
        derive(ecb_128, &master, &salt, 1, &mut auth);
        assert_eq!(
            auth[..32].to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE")
        );
    }

    pub(crate) fn pair(profile: SrtpProfile, key_len: usize) -> (SrtpSession, SrtpSession) {
        let material: Vec<u8> = (0..2 * (key_len + SALT_LEN) as u8).collect();
        let server = SrtpSession::new(&Exported {
            material: material.clone(),
            profile,
            active: false,
        })
        .unwrap();
        let client = SrtpSession::new(&Exported {
            material,
            profile,
            active: true,
        })
        .unwrap();
        (server, client)
    }

    #[test]
    fn each_side_opens_what_the_other_seals() {
        for (profile, len) in [
            (SrtpProfile::AEAD_AES_128_GCM, 16),
            (SrtpProfile::AEAD_AES_256_GCM, 32),
        ] {
            let (mut server, client) = pair(profile, len);
            // Server to client: an SR-shaped compound.
            let plain: Vec<u8> = [0x80, 200, 0, 6, 0, 0, 0, 7]
                .into_iter()
                .chain(0..20)
                .collect();
            let mut sealed = plain.clone();
            server.protect_rtcp(&mut sealed);
            assert_eq!(sealed.len(), plain.len() + RTCP_OVERHEAD);
            assert_ne!(sealed[8..plain.len()], plain[8..]);
            let mut out = Vec::new();
            assert!(client.unprotect_rtcp(&sealed, &mut out));
            assert_eq!(out, plain);
            // A flipped bit fails.
            sealed[10] ^= 1;
            assert!(!client.unprotect_rtcp(&sealed, &mut out));
            // Client to server.
            let mut from_client = plain.clone();
            server.peer_protect_rtcp(&mut from_client, 3);
            assert!(server.unprotect_rtcp(&from_client, &mut out));
            assert_eq!(out, plain);
            // Not to itself: the directions have different keys.
            let mut own = plain.clone();
            server.protect_rtcp(&mut own);
            assert!(!server.unprotect_rtcp(&own, &mut out));
        }
    }

    #[test]
    fn other_profiles_and_bad_material_are_refused() {
        let e = Exported {
            material: vec![0; 60],
            profile: SrtpProfile::AES128_CM_SHA1_80,
            active: true,
        };
        assert!(SrtpSession::new(&e).is_none());
        let e = Exported {
            material: vec![0; 10],
            profile: SrtpProfile::AEAD_AES_128_GCM,
            active: true,
        };
        assert!(SrtpSession::new(&e).is_none());
    }
}
