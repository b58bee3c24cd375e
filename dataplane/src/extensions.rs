//! RTP header extensions negotiated with the sessions sluice sends media to.

use str0m::rtp::{Extension, ExtensionMap};

/// The header extensions of a session that sends media and estimates no
/// bandwidth: str0m's standard set without
/// - transport-wide sequence numbers: str0m keeps a 1,000-packet TWCC send
///   history for every session that negotiates it, and stamps and
///   records every packet, for feedback only an estimator would read;
/// - abs-send-time: a send timestamp computed for every packet, read only by
///   a receiver's REMB estimator, whose REMB sluice does not act on;
/// - rid and repaired-rid: a viewer's streams are never simulcast.
///
/// What is left: mid, audio level (for the receiver's speaker detection) and
/// video orientation (rotation from phones).
pub fn forwarding() -> ExtensionMap {
    let mut m = ExtensionMap::empty();
    for (id, ext) in ExtensionMap::standard().iter() {
        if !matches!(
            ext,
            Extension::TransportSequenceNumber
                | Extension::AbsoluteSendTime
                | Extension::RtpStreamId
                | Extension::RepairedRtpStreamId
        ) {
            m.set(id, ext.clone());
        }
    }
    m
}
