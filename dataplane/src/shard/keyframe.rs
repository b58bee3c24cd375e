//! Keyframe requests toward a publisher: where the request must go, and
//! PLIs to its video tracks, each track throttled on its own.

use std::time::{Duration, Instant};

use str0m::media::{KeyframeRequestKind, MediaKind, Rid};

use super::session::Session;
use crate::fanout::StreamShared;
use crate::ids::ShardId;

/// Where a stream's keyframe request goes.
pub(super) enum KeyframeRoute {
    /// The publisher is on this shard.
    Local,
    /// The publisher is on another shard.
    Remote(ShardId),
    /// Nobody publishes the stream now.
    Nowhere,
}

/// Where a keyframe request for `stream` goes, seen from shard `own`.
pub(super) fn route(stream: &StreamShared, own: ShardId) -> KeyframeRoute {
    match stream.publisher_shard() {
        Some(shard) if shard == own => KeyframeRoute::Local,
        Some(shard) => KeyframeRoute::Remote(shard),
        None => KeyframeRoute::Nowhere,
    }
}

/// PLI to a publisher's video tracks (one layer's, or all) that were not
/// asked within `throttle`, so a layer switch is not blocked by another
/// layer's request. Returns how many were sent (str0m queues them: the
/// session needs a drive).
pub(super) fn request_from_publisher(
    s: &mut Session,
    now: Instant,
    rid: Option<Rid>,
    throttle: Duration,
) -> u64 {
    let mut sent = 0;
    for t in &mut s.pub_tracks {
        if t.kind != MediaKind::Video || (rid.is_some() && t.rid != rid) {
            continue;
        }
        if t.last_pli
            .is_some_and(|last| now.saturating_duration_since(last) < throttle)
        {
            continue;
        }
        if let Some(rx) = s.rtc.direct_api().stream_rx(&t.ssrc) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            t.last_pli = Some(now);
            sent += 1;
        }
    }
    sent
}
