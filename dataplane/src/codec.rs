//! Codec payload parsing the forwarder needs: keyframe detection for VP8,
//! H.264, VP9 and AV1, VP8 temporal layers, and VP8 picture ids (read,
//! rebased across simulcast layer switches and dropped pictures, and written
//! back).

use str0m::format::Codec;

/// Does this payload start a keyframe? Cheap header checks per codec.
#[inline]
pub fn is_keyframe(codec: Codec, p: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => {
            // RFC 7741 descriptor: S bit and partition 0, then the frame tag's P bit clear.
            let Some(&b0) = p.first() else { return false };
            if b0 & 0x10 == 0 || b0 & 0x0f != 0 {
                return false;
            }
            let mut i = 1;
            if b0 & 0x80 != 0 {
                let Some(&x) = p.get(1) else { return false };
                i = 2;
                if x & 0x80 != 0 {
                    i += if p.get(i).is_some_and(|b| b & 0x80 != 0) {
                        2
                    } else {
                        1
                    };
                }
                if x & 0x40 != 0 {
                    i += 1;
                }
                if x & 0x30 != 0 {
                    i += 1;
                }
            }
            p.get(i).is_some_and(|b| b & 0x01 == 0)
        }
        Codec::H264 => {
            let Some(&b0) = p.first() else { return false };
            match b0 & 0x1f {
                5 | 7 => true,
                // STAP-A: look at each aggregated NAL unit.
                24 => {
                    let mut i = 1;
                    while i + 2 < p.len() {
                        let len = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                        if matches!(p[i + 2] & 0x1f, 5 | 7) {
                            return true;
                        }
                        i += 2 + len;
                    }
                    false
                }
                // FU-A: the start fragment of an IDR slice.
                28 => p.get(1).is_some_and(|b| b & 0x80 != 0 && b & 0x1f == 5),
                _ => false,
            }
        }
        // RFC 9628: not inter-predicted (P=0) and the start of a frame (B=1).
        Codec::Vp9 => p.first().is_some_and(|b| b & 0x40 == 0 && b & 0x08 != 0),
        // AV1 aggregation header: N = first packet of a new coded video sequence.
        Codec::Av1 => p.first().is_some_and(|b| b & 0x08 != 0),
        _ => false,
    }
}

/// VP8 payload descriptor fields to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Ids {
    /// The picture id to write (7 or 15 bits, as the descriptor has it).
    pub picture_id: Option<u16>,
    /// The TL0PICIDX to write.
    pub tl0: Option<u8>,
}

/// A VP8 picture id as the descriptor carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PictureId {
    pub value: u16,
    /// Carried in 15 bits (M set), else 7.
    pub wide: bool,
}

/// What a VP8 payload descriptor says of picture numbering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Vp8Numbering {
    pub picture_id: Option<PictureId>,
    pub tl0: Option<u8>,
}

/// Rewrites VP8 picture ids and TL0PICIDX for one viewer track: continuous
/// across simulcast layer switches, and across pictures left out for the
/// viewer ([`Vp8Rebase::skip`]).
#[derive(Debug, Default, Clone)]
pub(crate) struct Vp8Rebase {
    tag: Option<u32>,
    pid_delta: u16,
    tl0_delta: u8,
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
    /// The (input) picture id last left out, counted once for all its packets.
    skipped_pid: Option<u16>,
}

/// Picture id and TL0PICIDX of a VP8 payload descriptor.
pub(crate) fn vp8_numbering(p: &[u8]) -> Vp8Numbering {
    let none = Vp8Numbering::default();
    let Some(&b0) = p.first() else {
        return none;
    };
    if b0 & 0x80 == 0 {
        return none;
    }
    let Some(&x) = p.get(1) else {
        return none;
    };
    let mut i = 2;
    let mut picture_id = None;
    if x & 0x80 != 0 {
        match p.get(i) {
            Some(&m) if m & 0x80 != 0 => {
                let Some(&lo) = p.get(i + 1) else {
                    return none;
                };
                picture_id = Some(PictureId {
                    value: (((m & 0x7f) as u16) << 8) | lo as u16,
                    wide: true,
                });
                i += 2;
            }
            Some(&m) => {
                picture_id = Some(PictureId {
                    value: m as u16,
                    wide: false,
                });
                i += 1;
            }
            None => return none,
        }
    }
    let tl0 = if x & 0x40 != 0 {
        p.get(i).copied()
    } else {
        None
    };
    Vp8Numbering { picture_id, tl0 }
}

impl Vp8Rebase {
    /// The picture id and TL0PICIDX this payload goes out with, when they
    /// differ from the publisher's.
    #[inline]
    pub(crate) fn rebase(&mut self, tag: u32, payload: &[u8]) -> Option<Vp8Ids> {
        let Vp8Numbering {
            picture_id: pid,
            tl0,
        } = vp8_numbering(payload);
        self.enter(tag, pid, tl0);
        if self.pid_delta == 0 && self.tl0_delta == 0 {
            self.last_pid = pid.map(|x| x.value);
            self.last_tl0 = tl0;
            return None;
        }
        let mut ids = Vp8Ids {
            picture_id: None,
            tl0: None,
        };
        if let Some(p) = pid {
            let mask = if p.wide { 0x7fff } else { 0x7f };
            let out = p.value.wrapping_add(self.pid_delta) & mask;
            self.last_pid = Some(out);
            ids.picture_id = Some(out);
        }
        if let Some(t) = tl0 {
            let out = t.wrapping_add(self.tl0_delta);
            self.last_tl0 = Some(out);
            ids.tl0 = Some(out);
        }
        Some(ids)
    }

    /// Numbering of a new source continues the viewer's.
    fn enter(&mut self, tag: u32, pid: Option<PictureId>, tl0: Option<u8>) {
        if self.tag == Some(tag) {
            return;
        }
        self.tag = Some(tag);
        self.skipped_pid = None;
        self.pid_delta = match (self.last_pid, pid) {
            (Some(last), Some(p)) => last.wrapping_add(1).wrapping_sub(p.value),
            _ => 0,
        };
        self.tl0_delta = match (self.last_tl0, tl0) {
            (Some(last), Some(t)) => last.wrapping_add(1).wrapping_sub(t),
            _ => 0,
        };
    }

    /// A packet left out for the viewer: the pictures after its picture
    /// close up. Only non-base temporal layers are left out, so TL0PICIDX
    /// (which counts base pictures) needs nothing.
    pub(crate) fn skip(&mut self, tag: u32, payload: &[u8]) {
        let n = vp8_numbering(payload);
        self.enter(tag, n.picture_id, n.tl0);
        let Some(p) = n.picture_id else { return };
        if self.skipped_pid != Some(p.value) {
            self.skipped_pid = Some(p.value);
            self.pid_delta = self.pid_delta.wrapping_sub(1);
        }
    }
}

/// The temporal layer of a VP8 packet (RFC 7741 §4.2: TID, and the Y bit
/// saying the frame depends only on TL0 frames, where a viewer may move up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Temporal {
    /// TID, 0 to 3.
    pub tid: u8,
    /// Y: a layer sync frame.
    pub sync: bool,
}

/// The temporal layer of a packet of `codec`, when its payload says
/// (VP8 only; VP9 and AV1 layers are not read).
#[inline]
pub fn temporal_layer(codec: Codec, p: &[u8]) -> Option<Vp8Temporal> {
    match codec {
        Codec::Vp8 => vp8_temporal(p),
        _ => None,
    }
}

/// The temporal layer a VP8 payload descriptor gives, when it has one (X and T set).
pub fn vp8_temporal(p: &[u8]) -> Option<Vp8Temporal> {
    let b0 = *p.first()?;
    if b0 & 0x80 == 0 {
        return None;
    }
    let x = *p.get(1)?;
    if x & 0x20 == 0 {
        return None;
    }
    let mut i = 2;
    if x & 0x80 != 0 {
        i += if *p.get(i)? & 0x80 != 0 { 2 } else { 1 };
    }
    if x & 0x40 != 0 {
        i += 1;
    }
    let t = *p.get(i)?;
    Some(Vp8Temporal {
        tid: t >> 6,
        sync: t & 0x20 != 0,
    })
}

/// str0m's form of a VP8 rewrite, applied as it serializes.
pub(crate) fn vp8_patch(ids: Vp8Ids, payload: &[u8]) -> Option<str0m::rtp::Vp8Patch> {
    let mut b = str0m::rtp::Vp8Descriptor::parse(payload).ok()?.patch();
    if let Some(p) = ids.picture_id {
        b = b.picture_id(p);
    }
    if let Some(t) = ids.tl0 {
        b = b.tl0_pic_idx(t);
    }
    b.build().ok()
}

/// Write picture id and TL0PICIDX into a VP8 payload descriptor, where the
/// descriptor carries them (the positions `vp8_numbering` reads).
pub fn vp8_rewrite(p: &mut [u8], ids: Vp8Ids) {
    if p.len() < 2 || p[0] & 0x80 == 0 {
        return;
    }
    let x = p[1];
    let mut i = 2;
    if x & 0x80 != 0 {
        let Some(&m) = p.get(i) else { return };
        if m & 0x80 != 0 {
            if i + 1 >= p.len() {
                return;
            }
            if let Some(pid) = ids.picture_id {
                p[i] = 0x80 | ((pid >> 8) as u8 & 0x7f);
                p[i + 1] = pid as u8;
            }
            i += 2;
        } else {
            if let Some(pid) = ids.picture_id {
                p[i] = pid as u8 & 0x7f;
            }
            i += 1;
        }
    }
    if x & 0x40 != 0 {
        if let (Some(tl0), Some(b)) = (ids.tl0, p.get_mut(i)) {
            *b = tl0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_picture_ids_continue_across_a_layer_switch() {
        // X=1, I=1 (15-bit id), L=1, T=1: [desc, ext, pid hi, pid lo, tl0, tid, frame tag]
        let pkt = |pid: u16, tl0: u8| {
            vec![
                0x90,
                0xe0,
                0x80 | (pid >> 8) as u8,
                pid as u8,
                tl0,
                0x20,
                0x00,
                1,
                2,
                3,
            ]
        };
        let wide = |value| Some(PictureId { value, wide: true });
        assert_eq!(
            vp8_numbering(&pkt(300, 9)),
            Vp8Numbering {
                picture_id: wide(300),
                tl0: Some(9)
            }
        );
        let mut r = Vp8Rebase::default();
        assert!(
            r.rebase(1, &pkt(300, 9)).is_none(),
            "first layer passes through"
        );
        assert!(r.rebase(1, &pkt(301, 10)).is_none());
        // Switch to a layer numbering from 5000: the viewer sees 302 / 11.
        let ids = r.rebase(2, &pkt(5000, 77)).expect("rewritten");
        assert_eq!((r.last_pid, r.last_tl0), (Some(302), Some(11)));
        // Both send paths write the same: the direct path in the copy, str0m
        // as it serializes.
        let mut copy = pkt(5000, 77);
        vp8_rewrite(&mut copy, ids);
        assert_eq!(
            vp8_numbering(&copy),
            Vp8Numbering {
                picture_id: wide(302),
                tl0: Some(11)
            }
        );
        assert!(vp8_patch(ids, &pkt(5000, 77)).is_some());
        assert!(r.rebase(2, &pkt(5001, 78)).is_some());
        assert_eq!((r.last_pid, r.last_tl0), (Some(303), Some(12)));
    }

    #[test]
    fn vp8_temporal_layer_is_read_behind_picture_id_and_tl0picidx() {
        // X; I (15-bit), L, T: TID 2, Y set.
        let p = [0x90, 0xe0, 0x81, 0x02, 7, 0xa0, 0x00];
        assert_eq!(vp8_temporal(&p), Some(Vp8Temporal { tid: 2, sync: true }));
        // 7-bit picture id, no L: TID 1, Y clear, KEYIDX bits ignored.
        let p = [0x90, 0xa0, 0x05, 0x5f, 0x00];
        assert_eq!(
            vp8_temporal(&p),
            Some(Vp8Temporal {
                tid: 1,
                sync: false
            })
        );
        // Only L and T.
        assert_eq!(
            vp8_temporal(&[0x80, 0x60, 9, 0x00, 0x00]),
            Some(Vp8Temporal {
                tid: 0,
                sync: false
            })
        );
        // K without T: no temporal layer; no X; truncated.
        assert_eq!(vp8_temporal(&[0x80, 0x10, 0x00]), None);
        assert_eq!(vp8_temporal(&[0x10, 0x00]), None);
        assert_eq!(vp8_temporal(&[0x90, 0xe0, 0x81, 0x02, 7]), None);
        assert_eq!(vp8_temporal(&[0x90, 0xe0, 0x81]), None);
    }

    #[test]
    fn vp8_rewrite_writes_where_the_descriptor_has_the_fields() {
        // X set, I and L set, 15-bit picture id, TL0PICIDX.
        let mut p = [0x90, 0xc0, 0x80 | 0x12, 0x34, 9, 0xff];
        vp8_rewrite(
            &mut p,
            Vp8Ids {
                picture_id: Some(0x0456),
                tl0: Some(42),
            },
        );
        assert_eq!(p, [0x90, 0xc0, 0x84, 0x56, 42, 0xff]);
        // 7-bit picture id, no TL0PICIDX.
        let mut p = [0x90, 0x80, 0x05, 0xff];
        vp8_rewrite(
            &mut p,
            Vp8Ids {
                picture_id: Some(0x7f),
                tl0: Some(1),
            },
        );
        assert_eq!(p, [0x90, 0x80, 0x7f, 0xff]);
    }

    #[test]
    fn vp8_keyframes_are_found_behind_extended_descriptors() {
        assert!(is_keyframe(Codec::Vp8, &[0x10, 0x00, 0x9d]));
        assert!(!is_keyframe(Codec::Vp8, &[0x10, 0x01, 0x9d]));
        // Continuation packet: S bit clear.
        assert!(!is_keyframe(Codec::Vp8, &[0x00, 0x00]));
        // X, I with a 15-bit picture id, L, T/K: header after 5 descriptor bytes.
        assert!(is_keyframe(
            Codec::Vp8,
            &[0x90, 0xf0, 0x80, 0x01, 0x02, 0x03, 0x00]
        ));
        assert!(!is_keyframe(
            Codec::Vp8,
            &[0x90, 0xf0, 0x80, 0x01, 0x02, 0x03, 0x01]
        ));
        assert!(!is_keyframe(Codec::Vp8, &[0x90]));
    }

    #[test]
    fn h264_idr_is_found_in_single_stap_a_and_fu_a_packets() {
        assert!(is_keyframe(Codec::H264, &[0x65, 0]));
        assert!(!is_keyframe(Codec::H264, &[0x41, 0]));
        assert!(is_keyframe(
            Codec::H264,
            &[0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68]
        ));
        assert!(is_keyframe(Codec::H264, &[0x7c, 0x85]));
        assert!(!is_keyframe(Codec::H264, &[0x7c, 0x05]));
        assert!(!is_keyframe(Codec::H264, &[0x78, 0, 9]));
    }

    #[test]
    fn vp9_and_av1_keyframe_bits() {
        assert!(is_keyframe(Codec::Vp9, &[0x08]));
        assert!(!is_keyframe(Codec::Vp9, &[0x48]));
        assert!(is_keyframe(Codec::Av1, &[0x18]));
        assert!(!is_keyframe(Codec::Opus, &[0x18]));
        assert!(!is_keyframe(Codec::Av1, &[0x10]));
    }
}
