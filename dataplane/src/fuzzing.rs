//! Crate-private parsers reachable by the fuzz targets in `fuzz/` (feature
//! `fuzzing`): codec payload parsing, STUN ufrag extraction and the SRTP
//! sender. Not an API.

pub use crate::codec::{is_keyframe, vp8_rewrite, vp8_temporal, Vp8Ids, Vp8Temporal};
pub use crate::fanout::Rebase;
pub use crate::srtp_sender::{ExtIds, Packet, SrtpSender, TrackInfo};
pub use crate::stun::{binding_request_local_ufrag, is_stun};

/// Picture id (value, carried in 15 bits) and TL0PICIDX of a VP8 payload descriptor.
pub fn vp8_numbering(p: &[u8]) -> (Option<(u16, bool)>, Option<u8>) {
    let n = crate::codec::vp8_numbering(p);
    (n.picture_id.map(|x| (x.value, x.wide)), n.tl0)
}

/// One viewer track's VP8 picture-id rebase across layer switches.
#[derive(Debug, Default)]
pub struct Vp8Rebase(crate::codec::Vp8Rebase);

impl Vp8Rebase {
    /// The ids `payload` of layer `tag` goes out with, when rewritten.
    pub fn rebase(&mut self, tag: u32, payload: &[u8]) -> Option<Vp8Ids> {
        self.0.rebase(tag, payload)
    }

    /// `payload` of layer `tag` is left out for the viewer.
    pub fn skip(&mut self, tag: u32, payload: &[u8]) {
        self.0.skip(tag, payload)
    }
}

/// Whether str0m's serializer accepts the rewrite of `payload` to `ids`.
pub fn vp8_patch(ids: Vp8Ids, payload: &[u8]) -> bool {
    crate::codec::vp8_patch(ids, payload).is_some()
}
