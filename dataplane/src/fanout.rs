//! What crosses shards: forwarded packets (payload shared by `Arc`, never
//! copied per viewer) and the per-stream state every shard can read.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use str0m::format::{Codec, PayloadParams};
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::VideoOrientation;

use crate::codec::Vp8Temporal;
use crate::ids::{rid_hash, ShardId, StreamId};

/// Upper bound on shards; per-stream viewer counts are a fixed array of this size.
pub const MAX_SHARDS: usize = 64;

/// One decrypted RTP packet from a publisher, on its way to viewers.
#[derive(Debug, Clone)]
pub struct FwdPacket {
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The publisher's media section this packet belongs to.
    pub mid: Mid,
    /// Simulcast layer, when the publisher sends several.
    pub rid: Option<Rid>,
    /// Starts a video keyframe (a point where a viewer may switch layers).
    pub keyframe: bool,
    /// VP8 temporal layer, when the payload descriptor gives one.
    pub temporal: Option<Vp8Temporal>,
    /// Identifies the publisher session the packet came from; viewers rebase
    /// sequence numbers and timestamps when it changes.
    pub publisher_tag: u32,
    /// Payload type as the publisher negotiated it.
    pub pt: Pt,
    /// The codec of `pt`.
    pub codec: Codec,
    /// Extended (64-bit) sequence number from the publisher.
    pub seq: u64,
    /// RTP timestamp.
    pub ts: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// Audio level header extension (RFC 6464), as received.
    pub audio_level: Option<i8>,
    /// Voice activity flag of the audio level extension.
    pub voice_activity: Option<bool>,
    /// Rotation the viewer must apply (RFC 7742 video orientation, sent by
    /// phones on the last packet of each frame).
    pub video_orientation: Option<VideoOrientation>,
    /// When the publisher's shard received it; used as wallclock and for latency.
    pub received: Instant,
    /// The RTP payload, shared by every copy.
    pub payload: Arc<[u8]>,
}

#[cfg(test)]
impl FwdPacket {
    /// A packet of `stream` for unit tests: `kind`'s usual codec (Opus or
    /// VP8), sequence number `seq`, a 4-byte payload, received now.
    pub(crate) fn for_test(stream: StreamId, kind: MediaKind, seq: u64) -> FwdPacket {
        FwdPacket {
            stream,
            kind,
            mid: "0".into(),
            rid: None,
            keyframe: false,
            temporal: None,
            publisher_tag: 1,
            pt: 96.into(),
            codec: if kind == MediaKind::Audio {
                Codec::Opus
            } else {
                Codec::Vp8
            },
            seq,
            ts: 0,
            marker: false,
            audio_level: None,
            voice_activity: None,
            video_orientation: None,
            received: Instant::now(),
            payload: Arc::from(&[0u8; 4][..]),
        }
    }
}

/// The publisher currently feeding a stream, as viewers need to know it.
#[derive(Debug)]
pub struct SourceInfo {
    /// The publisher session's tag (see [`FwdPacket::publisher_tag`]).
    pub publisher_tag: u32,
    /// The publisher's negotiated payload types, to map onto each viewer's.
    pub params: Vec<PayloadParams>,
}

/// Per-stream state shared by the control plane and every shard.
///
/// The publisher's shard reads `viewers` per packet to know which shards to
/// send a batch to; viewer shards update their own slot as viewers come and go.
#[derive(Debug)]
pub struct StreamShared {
    /// The stream's id.
    pub id: StreamId,
    /// The stream's name as clients know it.
    pub name: String,
    viewers: [AtomicU32; MAX_SHARDS],
    publisher_shard: AtomicU32,
    source: Mutex<Option<Arc<SourceInfo>>>,
    /// Simulcast layers of the current publisher with their measured bits/s.
    layers: Mutex<Vec<(Rid, u64)>>,
    /// RTP payload bytes received from publishers of this stream.
    bytes_in: AtomicU64,
    /// The current publisher's RTP payload rate, bits/s, all tracks.
    bitrate: AtomicU64,
    /// Simulcast layers viewers take: per slot a rid tag (0 = free) and the
    /// number of viewer tracks that want that layer; plus tracks that take any.
    demand_tags: [AtomicU32; DEMAND_SLOTS],
    demand: [AtomicU32; DEMAND_SLOTS],
    demand_any: AtomicU32,
}

/// Distinct simulcast layers tracked per stream; more count as "any layer".
const DEMAND_SLOTS: usize = 4;

/// What one viewer track needs of a simulcast stream: any layer (it has not
/// chosen yet) or up to two (the one it gets and the one it switches to).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demand {
    pub any: bool,
    pub rids: [Option<Rid>; 2],
}

fn demand_tag(rid: Rid) -> u32 {
    rid_hash(rid).max(1)
}

const NO_SHARD: u32 = u32::MAX;

impl StreamShared {
    /// A stream with no publisher and no viewers.
    pub fn new(id: StreamId, name: impl Into<String>) -> Self {
        StreamShared {
            id,
            name: name.into(),
            viewers: std::array::from_fn(|_| AtomicU32::new(0)),
            publisher_shard: AtomicU32::new(NO_SHARD),
            source: Mutex::new(None),
            layers: Mutex::new(Vec::new()),
            bytes_in: AtomicU64::new(0),
            bitrate: AtomicU64::new(0),
            demand_tags: std::array::from_fn(|_| AtomicU32::new(0)),
            demand: std::array::from_fn(|_| AtomicU32::new(0)),
            demand_any: AtomicU32::new(0),
        }
    }

    /// Does any viewer, on any shard, take this simulcast layer now? Layers no
    /// one takes are not forwarded.
    pub fn layer_wanted(&self, rid: Rid) -> bool {
        if self.demand_any.load(Ordering::Relaxed) > 0 {
            return true;
        }
        let tag = demand_tag(rid);
        for i in 0..DEMAND_SLOTS {
            if self.demand_tags[i].load(Ordering::Relaxed) == tag {
                return self.demand[i].load(Ordering::Relaxed) > 0;
            }
        }
        false
    }

    /// Add (`up`) or withdraw one track's demand.
    pub(crate) fn change_demand(&self, d: &Demand, up: bool) {
        let apply = |c: &AtomicU32| {
            if up {
                c.fetch_add(1, Ordering::Relaxed);
            } else {
                c.fetch_sub(1, Ordering::Relaxed);
            }
        };
        if d.any {
            apply(&self.demand_any);
        }
        for rid in d.rids.iter().flatten() {
            match self.demand_slot(demand_tag(*rid)) {
                Some(i) => apply(&self.demand[i]),
                // Out of slots: count it as taking any layer.
                None => apply(&self.demand_any),
            }
        }
    }

    fn demand_slot(&self, tag: u32) -> Option<usize> {
        for i in 0..DEMAND_SLOTS {
            let t = &self.demand_tags[i];
            match t.compare_exchange(0, tag, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(i),
                Err(cur) if cur == tag => return Some(i),
                Err(_) => {}
            }
        }
        None
    }

    /// RTP payload bytes received from this stream's publishers so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    pub(crate) fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// The publisher's RTP payload rate over the last report interval, bits/s.
    pub fn bitrate(&self) -> u64 {
        self.bitrate.load(Ordering::Relaxed)
    }

    pub(crate) fn set_bitrate(&self, bps: u64) {
        self.bitrate.store(bps, Ordering::Relaxed);
    }

    /// Viewers of this stream on `shard`.
    pub fn viewers_on(&self, shard: ShardId) -> u32 {
        self.viewers[shard.0 as usize].load(Ordering::Relaxed)
    }

    /// Viewers on all shards.
    pub fn viewer_total(&self) -> u32 {
        self.viewers.iter().map(|v| v.load(Ordering::Relaxed)).sum()
    }

    pub(crate) fn add_viewer(&self, shard: ShardId) {
        self.viewers[shard.0 as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remove_viewer(&self, shard: ShardId) {
        self.viewers[shard.0 as usize].fetch_sub(1, Ordering::Relaxed);
    }

    /// The shard holding the live publisher, if any.
    pub fn publisher_shard(&self) -> Option<ShardId> {
        match self.publisher_shard.load(Ordering::Acquire) {
            NO_SHARD => None,
            s => Some(ShardId(s as u16)),
        }
    }

    pub(crate) fn set_publisher(&self, shard: Option<ShardId>) {
        let v = shard.map(|s| s.0 as u32).unwrap_or(NO_SHARD);
        self.publisher_shard.store(v, Ordering::Release);
    }

    pub(crate) fn set_source(&self, source: Option<Arc<SourceInfo>>) {
        *self.source.lock().unwrap_or_else(|e| e.into_inner()) = source;
    }

    /// Clear the source only if it is still the one with `publisher_tag`.
    pub(crate) fn clear_source(&self, publisher_tag: u32) {
        let mut s = self.source.lock().unwrap_or_else(|e| e.into_inner());
        if s.as_ref().map(|s| s.publisher_tag) == Some(publisher_tag) {
            *s = None;
        }
    }

    /// Simulcast layers, lowest bitrate first.
    pub fn layers(&self) -> Vec<(Rid, u64)> {
        self.layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_layers(&self, mut layers: Vec<(Rid, u64)>) {
        // Well-known rid names give the order; otherwise the measured rate does.
        let names: Vec<String> = layers.iter().map(|l| l.0.to_string()).collect();
        let rank = |rid: &Rid| -> Option<u8> {
            let r = rid.to_string();
            let three = names.iter().any(|n| n == "q" || n == "f");
            match r.as_str() {
                "q" | "l" | "low" | "0" => Some(0),
                "m" | "mid" | "1" => Some(1),
                "h" if three => Some(1),
                "f" | "h" | "high" | "2" => Some(2),
                _ => None,
            }
        };
        if layers.iter().all(|l| rank(&l.0).is_some()) {
            layers.sort_by_key(|l| rank(&l.0));
        } else {
            layers.sort_by_key(|l| l.1);
        }
        *self.layers.lock().unwrap_or_else(|e| e.into_inner()) = layers;
    }

    /// Record a publisher's measured rate, in total and per simulcast layer
    /// (layers smoothed: keyframes inflate single windows).
    pub(crate) fn report_rates(&self, total: u64, layers: Vec<(Rid, u64)>) {
        self.set_bitrate(total);
        if layers.is_empty() {
            return;
        }
        let old = self.layers();
        let smoothed = layers
            .into_iter()
            .map(|(rid, bps)| {
                let prev = old.iter().find(|l| l.0 == rid).map(|l| l.1);
                (rid, prev.map(|p| (p * 3 + bps) / 4).unwrap_or(bps))
            })
            .collect();
        self.set_layers(smoothed);
    }

    pub(crate) fn source(&self) -> Option<Arc<SourceInfo>> {
        self.source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Rewrites a forwarded track's sequence numbers and timestamps for one viewer,
/// so the viewer sees one continuous stream starting near zero even when it
/// joins late, the publisher is replaced, or packets are left out for it
/// (temporal layers above its limit, [`Rebase::skip`]).
#[derive(Debug, Clone)]
pub struct Rebase {
    /// The source being mapped: a publisher tag, mixed with the layer's.
    source: Option<u32>,
    first_in: u64,
    /// The highest input sequence number mapped or skipped.
    highest_in: u64,
    seq_delta: u64,
    ts_delta: u32,
    last_out_seq: u64,
    last_out_ts: u32,
    started: bool,
    /// The latest inputs skipped, oldest first: a reordered packet from
    /// before them is numbered as if they were still there to close up.
    skipped: [u64; SKIP_MEMORY],
    skipped_len: u8,
}

/// Skipped inputs remembered for reordered packets; a packet older than all
/// of them (with the memory full) is not forwarded.
const SKIP_MEMORY: usize = 8;

impl Default for Rebase {
    fn default() -> Self {
        Self::new()
    }
}

impl Rebase {
    pub fn new() -> Self {
        Rebase {
            source: None,
            first_in: 0,
            highest_in: 0,
            seq_delta: 0,
            ts_delta: 0,
            last_out_seq: 0,
            last_out_ts: 0,
            started: false,
            skipped: [0; SKIP_MEMORY],
            skipped_len: 0,
        }
    }

    /// Start numbering a new source after what the viewer has seen.
    fn enter(&mut self, source: u32, seq: u64, ts: u32, ts_gap: u32) {
        if self.source == Some(source) {
            return;
        }
        let next = if self.started {
            self.last_out_seq + 1
        } else {
            // Start within the first 16-bit cycle so the viewer needs no ROC signalling.
            (seq & 0xffff).max(1)
        };
        self.seq_delta = next.wrapping_sub(seq);
        self.ts_delta = if self.started {
            self.last_out_ts.wrapping_add(ts_gap).wrapping_sub(ts)
        } else {
            0
        };
        self.first_in = seq;
        self.highest_in = seq.wrapping_sub(1);
        self.skipped_len = 0;
        self.source = Some(source);
    }

    /// Map an input (source tag, extended seq, timestamp) to the viewer's numbering.
    /// `None` for packets older than the first one this viewer saw of a source.
    #[inline]
    pub fn map(&mut self, source: u32, seq: u64, ts: u32, ts_gap: u32) -> Option<(u64, u32)> {
        self.enter(source, seq, ts, ts_gap);
        if seq < self.first_in {
            return None;
        }
        let mut delta = self.seq_delta;
        if seq > self.highest_in {
            self.highest_in = seq;
        } else if self.skipped_len > 0 {
            // Reordered: inputs skipped after it have not closed up for it.
            let skipped = &self.skipped[..self.skipped_len as usize];
            // Left out once, left out for good: its number went to the next.
            if skipped.contains(&seq) || (seq < skipped[0] && skipped.len() == SKIP_MEMORY) {
                return None;
            }
            let later = skipped.iter().filter(|&&x| x > seq).count() as u64;
            delta = delta.wrapping_add(later);
        }
        let out_seq = seq.wrapping_add(delta);
        let out_ts = ts.wrapping_add(self.ts_delta);
        if !self.started || out_seq > self.last_out_seq {
            self.last_out_seq = out_seq;
            self.last_out_ts = out_ts;
        }
        self.started = true;
        Some((out_seq, out_ts))
    }

    /// Leave an input out of the viewer's numbering: the packets after it
    /// close up, so the viewer sees no gap to ask about, and a copy of it
    /// arriving later is not mapped. A reordered input (older than one
    /// already mapped) leaves its gap.
    pub fn skip(&mut self, source: u32, seq: u64, ts: u32, ts_gap: u32) {
        self.enter(source, seq, ts, ts_gap);
        if seq < self.first_in || seq <= self.highest_in {
            return;
        }
        self.highest_in = seq;
        self.seq_delta = self.seq_delta.wrapping_sub(1);
        if self.skipped_len as usize == SKIP_MEMORY {
            self.skipped.copy_within(1.., 0);
            self.skipped_len -= 1;
        }
        self.skipped[self.skipped_len as usize] = seq;
        self.skipped_len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_joiner_starts_in_first_cycle_and_stays_contiguous() {
        let mut r = Rebase::new();
        let base = 5 * 65536 + 100;
        assert_eq!(r.map(1, base, 1000, 3000), Some((100, 1000)));
        assert_eq!(r.map(1, base + 1, 1000, 3000), Some((101, 1000)));
        assert_eq!(r.map(1, base + 3, 4000, 3000), Some((103, 4000)));
        // Reordered but after join: still mapped.
        assert_eq!(r.map(1, base + 2, 4000, 3000), Some((102, 4000)));
        // From before the join: dropped.
        assert_eq!(r.map(1, base - 1, 0, 3000), None);
    }

    #[test]
    fn skipped_inputs_close_up_also_for_reordered_packets() {
        let mut r = Rebase::new();
        assert_eq!(r.map(1, 100, 0, 3000), Some((100, 0)));
        r.skip(1, 101, 3000, 3000);
        assert_eq!(r.map(1, 102, 6000, 3000), Some((101, 6000)));
        // 103 is late; 104 and 105 are skipped before it arrives.
        r.skip(1, 104, 9000, 3000);
        r.skip(1, 105, 9000, 3000);
        assert_eq!(r.map(1, 106, 12_000, 3000), Some((103, 12_000)));
        assert_eq!(r.map(1, 103, 9000, 3000), Some((102, 9000)));
        // A skipped input that arrives late (after later ones were mapped) leaves its gap.
        r.skip(1, 104, 9000, 3000);
        assert_eq!(r.map(1, 107, 15_000, 3000), Some((104, 15_000)));
        // A skipped input offered again (a repair, after the limit rose) stays out.
        assert_eq!(r.map(1, 105, 9000, 3000), None);
        // Older than every skip remembered: not forwarded rather than numbered twice.
        for seq in 108..108 + SKIP_MEMORY as u64 {
            r.skip(1, seq, 18_000, 3000);
        }
        assert_eq!(r.map(1, 107, 15_000, 3000), None);
        assert_eq!(r.map(1, 120, 21_000, 3000), Some((109, 21_000)));
        // Skips do not cross to a new source: it continues after the last output.
        r.skip(1, 121, 24_000, 3000);
        assert_eq!(r.map(2, 7, 0, 3000), Some((110, 24_000)));
    }

    #[test]
    fn a_new_publisher_continues_the_viewers_numbering() {
        let mut r = Rebase::new();
        r.map(1, 10, 90_000, 3000);
        r.map(1, 11, 93_000, 3000);
        // New source with unrelated numbers.
        assert_eq!(r.map(2, 40_000, 7, 3000), Some((12, 96_000)));
        assert_eq!(r.map(2, 40_001, 3007, 3000), Some((13, 99_000)));
    }

    #[test]
    fn viewer_counts_are_per_shard() {
        let s = StreamShared::new(StreamId(1), "s");
        s.add_viewer(ShardId(0));
        s.add_viewer(ShardId(3));
        s.add_viewer(ShardId(3));
        assert_eq!(s.viewers_on(ShardId(3)), 2);
        assert_eq!(s.viewer_total(), 3);
        s.remove_viewer(ShardId(3));
        assert_eq!(s.viewers_on(ShardId(3)), 1);
        assert_eq!(s.publisher_shard(), None);
        s.set_publisher(Some(ShardId(2)));
        assert_eq!(s.publisher_shard(), Some(ShardId(2)));
    }
}
