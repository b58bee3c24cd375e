//! The RTX cache of one video track: packets sent in the last
//! [`RESEND_MAX_AGE`] at most, by sequence number, for answering NACKs.
//!
//! Every viewer of a stream keeps one, so its size counts in what a viewer
//! costs (BENCHMARKS.md, "Memory per viewer"). An entry holds what the
//! packet's header carried and a reference to the shared payload, in 48
//! bytes (times in milliseconds from the cache's first packet, flags in a
//! byte). The ring starts at [`MIN_SLOTS`] and doubles when a packet would
//! overwrite one younger than [`KEEP_AT_LEAST`], up to [`MAX_SLOTS`]: a
//! 1 Mbit/s stream (about 110 packets a second, keyframes in bursts)
//! settles at 64 or 128 slots, a 10 Mbit/s one at 1,024; a track that
//! never sends allocates nothing. An older packet is resent while its slot
//! still holds it, up to [`RESEND_MAX_AGE`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::Vp8Ids;

/// Cached packets older than this are not resent.
const RESEND_MAX_AGE: Duration = Duration::from_secs(1);
/// The ring grows rather than overwrite a packet younger than this: a NACK
/// comes about a round trip after the loss, and a viewer's jitter buffer
/// waits a few hundred milliseconds at most for a repair.
const KEEP_AT_LEAST: Duration = Duration::from_millis(500);
/// Slots of a ring when its first packet arrives. A power of two.
const MIN_SLOTS: usize = 64;
/// Slots a ring may grow to: a second of video at ~10 Mbit/s. A power of two.
const MAX_SLOTS: usize = 1024;

const MARKER: u8 = 1;
const WITH_MID: u8 = 2;
const ORIENTATION: u8 = 4;
const PICTURE_ID: u8 = 8;
const TL0: u8 = 16;
const VP8: u8 = 32;
/// `resent_ms` of a packet never resent.
const NEVER: u32 = u32::MAX;

/// One sent packet.
#[derive(Debug, Clone)]
pub(super) struct Cached {
    pub payload: Arc<[u8]>,
    /// The SRTP index (extended sequence number) it was sealed with.
    pub seq: u64,
    pub ts: u32,
    at_ms: u32,
    resent_ms: u32,
    picture_id: u16,
    pub pt: u8,
    flags: u8,
    orientation: u8,
    tl0: u8,
}

/// What a packet's header carried when it was first sent: a resend on the
/// same SSRC must be the same packet byte for byte, since the same SRTP
/// index must never seal anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sent {
    pub seq: u64,
    pub pt: u8,
    pub ts: u32,
    pub marker: bool,
    pub with_mid: bool,
    pub orientation: Option<u8>,
    pub vp8: Option<Vp8Ids>,
}

impl Cached {
    pub fn marker(&self) -> bool {
        self.flags & MARKER != 0
    }

    pub fn with_mid(&self) -> bool {
        self.flags & WITH_MID != 0
    }

    pub fn orientation(&self) -> Option<u8> {
        (self.flags & ORIENTATION != 0).then_some(self.orientation)
    }

    pub fn vp8(&self) -> Option<Vp8Ids> {
        (self.flags & VP8 != 0).then_some(Vp8Ids {
            picture_id: (self.flags & PICTURE_ID != 0).then_some(self.picture_id),
            tl0: (self.flags & TL0 != 0).then_some(self.tl0),
        })
    }
}

/// The cache of one track.
#[derive(Debug, Default)]
pub(super) struct RtxRing {
    slots: Vec<Option<Cached>>,
    /// Time zero of the entries' millisecond clocks: the first packet.
    epoch: Option<Instant>,
}

impl RtxRing {
    /// Slots allocated now.
    #[cfg(test)]
    fn slots(&self) -> usize {
        self.slots.len()
    }

    fn ms(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        // Wraps after 49 days; ages are taken with wrapping arithmetic.
        now.saturating_duration_since(epoch).as_millis() as u32
    }

    fn young(at_ms: u32, now_ms: u32) -> bool {
        now_ms.wrapping_sub(at_ms) <= RESEND_MAX_AGE.as_millis() as u32
    }

    fn keep(at_ms: u32, now_ms: u32) -> bool {
        now_ms.wrapping_sub(at_ms) < KEEP_AT_LEAST.as_millis() as u32
    }

    /// Keep `p`, sent at `now`.
    pub fn insert(&mut self, now: Instant, p: &Sent, payload: &Arc<[u8]>) {
        let now_ms = self.ms(now);
        if self.slots.is_empty() {
            self.slots = vec![None; MIN_SLOTS];
        }
        // Grow rather than overwrite a packet that may still be asked for.
        while self.slots.len() < MAX_SLOTS {
            let slot = p.seq as usize & (self.slots.len() - 1);
            match &self.slots[slot] {
                Some(c) if c.seq != p.seq && Self::keep(c.at_ms, now_ms) => self.grow(now_ms),
                _ => break,
            }
        }
        let mut flags = 0;
        for (on, bit) in [
            (p.marker, MARKER),
            (p.with_mid, WITH_MID),
            (p.orientation.is_some(), ORIENTATION),
            (p.vp8.is_some(), VP8),
            (p.vp8.is_some_and(|v| v.picture_id.is_some()), PICTURE_ID),
            (p.vp8.is_some_and(|v| v.tl0.is_some()), TL0),
        ] {
            if on {
                flags |= bit;
            }
        }
        let slot = p.seq as usize & (self.slots.len() - 1);
        self.slots[slot] = Some(Cached {
            payload: payload.clone(),
            seq: p.seq,
            ts: p.ts,
            at_ms: now_ms,
            resent_ms: NEVER,
            picture_id: p.vp8.and_then(|v| v.picture_id).unwrap_or(0),
            pt: p.pt,
            flags,
            orientation: p.orientation.unwrap_or(0),
            tl0: p.vp8.and_then(|v| v.tl0).unwrap_or(0),
        });
    }

    /// Twice the slots, keeping the entries still young enough to resend.
    fn grow(&mut self, now_ms: u32) {
        let len = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![None; len]);
        for c in old.into_iter().flatten() {
            if Self::young(c.at_ms, now_ms) {
                let slot = c.seq as usize & (len - 1);
                self.slots[slot] = Some(c);
            }
        }
    }

    /// The packet whose sequence number ends in `seq`, if it was sent within
    /// [`RESEND_MAX_AGE`] and was not resent within `gap` (see
    /// [`RtxRing::mark_resent`]). `Err(true)` when it is there but was resent
    /// too recently.
    pub fn take_for_resend(
        &mut self,
        now: Instant,
        seq: u16,
        gap: Duration,
    ) -> Result<Cached, bool> {
        if self.slots.is_empty() {
            return Err(false);
        }
        let now_ms = self.ms(now);
        let slot = seq as usize & (self.slots.len() - 1);
        let Some(c) = self.slots[slot]
            .as_ref()
            .filter(|c| c.seq as u16 == seq && Self::young(c.at_ms, now_ms))
        else {
            return Err(false);
        };
        if c.resent_ms != NEVER && now_ms.wrapping_sub(c.resent_ms) < gap.as_millis() as u32 {
            return Err(true);
        }
        Ok(c.clone())
    }

    /// Mark the packet with sequence number `seq` resent at `now`.
    pub fn mark_resent(&mut self, now: Instant, seq: u64) {
        if self.slots.is_empty() {
            return;
        }
        let now_ms = self.ms(now);
        let slot = seq as usize & (self.slots.len() - 1);
        if let Some(c) = self.slots[slot].as_mut().filter(|c| c.seq == seq) {
            c.resent_ms = now_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(seq: u64) -> Sent {
        Sent {
            seq,
            pt: 96,
            ts: seq as u32 * 3000,
            marker: seq.is_multiple_of(3),
            with_mid: seq < 5,
            orientation: seq.is_multiple_of(2).then_some(1),
            vp8: Some(Vp8Ids {
                picture_id: Some(seq as u16 & 0x7fff),
                tl0: seq.is_multiple_of(4).then_some(seq as u8),
            }),
        }
    }

    fn back(c: &Cached) -> Sent {
        Sent {
            seq: c.seq,
            pt: c.pt,
            ts: c.ts,
            marker: c.marker(),
            with_mid: c.with_mid(),
            orientation: c.orientation(),
            vp8: c.vp8(),
        }
    }

    #[test]
    fn an_entry_is_small_and_nothing_is_allocated_before_a_packet() {
        assert!(std::mem::size_of::<Option<Cached>>() <= 48);
        assert_eq!(RtxRing::default().slots(), 0);
    }

    #[test]
    fn what_was_sent_comes_back_exactly() {
        let mut r = RtxRing::default();
        let now = Instant::now();
        let payload: Arc<[u8]> = Arc::from(&[1u8, 2, 3][..]);
        for seq in 65_530..65_545u64 {
            r.insert(now, &sent(seq), &payload);
        }
        for seq in 65_530..65_545u64 {
            let c = r.take_for_resend(now, seq as u16, Duration::ZERO).unwrap();
            assert_eq!(back(&c), sent(seq));
            assert_eq!(&c.payload[..], &[1, 2, 3]);
        }
        let none = Sent {
            orientation: None,
            vp8: None,
            ..sent(7)
        };
        r.insert(now, &none, &payload);
        assert_eq!(
            back(&r.take_for_resend(now, 7, Duration::ZERO).unwrap()),
            none
        );
    }

    #[test]
    fn grows_to_hold_half_a_second_and_no_more_than_the_cap() {
        let mut r = RtxRing::default();
        let t0 = Instant::now();
        let payload: Arc<[u8]> = Arc::from(&[0u8][..]);
        // 200 packets a second for 3 s: half a second needs 100 slots.
        for i in 0..600u64 {
            r.insert(t0 + Duration::from_millis(i * 5), &sent(i), &payload);
        }
        assert_eq!(r.slots(), 128);
        let now = t0 + Duration::from_millis(2995);
        // 127 packets (635 ms) back: still in its slot.
        assert!(r.take_for_resend(now, 599 - 127, Duration::ZERO).is_ok());
        // 128 back: overwritten.
        assert!(r.take_for_resend(now, 599 - 128, Duration::ZERO).is_err());
        // 100 packets a second: 64 slots hold 640 ms, no growth.
        let mut slow = RtxRing::default();
        for i in 0..300u64 {
            slow.insert(t0 + Duration::from_millis(i * 10), &sent(i), &payload);
        }
        assert_eq!(slow.slots(), 64);
        // Older than a second is not resent even where the slot holds it.
        let mut idle = RtxRing::default();
        idle.insert(t0, &sent(1), &payload);
        let later = t0 + Duration::from_millis(1001);
        assert!(idle.take_for_resend(later, 1, Duration::ZERO).is_err());
        // 5,000 packets a second: capped.
        for i in 0..10_000u64 {
            r.insert(
                now + Duration::from_micros(i * 200),
                &sent(300 + i),
                &payload,
            );
        }
        assert_eq!(r.slots(), MAX_SLOTS);
    }

    #[test]
    fn a_packet_is_not_resent_twice_within_the_gap() {
        let mut r = RtxRing::default();
        let t0 = Instant::now();
        let payload: Arc<[u8]> = Arc::from(&[0u8][..]);
        r.insert(t0, &sent(9), &payload);
        let gap = Duration::from_millis(100);
        assert!(r.take_for_resend(t0, 9, gap).is_ok());
        r.mark_resent(t0, 9);
        assert_eq!(
            r.take_for_resend(t0 + Duration::from_millis(50), 9, gap)
                .err(),
            Some(true)
        );
        assert!(r
            .take_for_resend(t0 + Duration::from_millis(100), 9, gap)
            .is_ok());
        assert_eq!(
            r.take_for_resend(t0, 10, gap).err(),
            Some(false),
            "never sent"
        );
    }
}
