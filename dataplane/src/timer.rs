//! A hashed timing wheel: each shard keeps one so it only visits sessions whose
//! str0m deadline has passed, instead of polling every session each loop turn.
//!
//! Entries carry a generation; an entry whose generation no longer matches the
//! owner's current one is stale and skipped by the caller. Rescheduling is O(1)
//! and never searches the wheel.

use std::time::{Duration, Instant};

/// Slot width. str0m deadlines are millisecond-grained in practice.
pub const TICK: Duration = Duration::from_millis(1);
const SLOTS: usize = 1024;

/// One scheduled wake-up: the owner's slab key and the generation it had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerEntry {
    pub key: u32,
    pub generation: u32,
}

/// The wheel. Deadlines beyond one rotation wait in an overflow list.
pub struct TimerWheel {
    origin: Instant,
    /// Ticks fully processed: every slot for ticks `< cursor` has fired.
    cursor: u64,
    slots: Vec<Vec<(u64, TimerEntry)>>,
    overflow: Vec<(u64, TimerEntry)>,
    len: usize,
}

impl TimerWheel {
    pub fn new(origin: Instant) -> Self {
        TimerWheel {
            origin,
            cursor: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            overflow: Vec::new(),
            len: 0,
        }
    }

    fn tick_of(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin);
        // Round up so an entry never fires before its deadline.
        d.as_nanos().div_ceil(TICK.as_nanos()) as u64
    }

    fn instant_of(&self, tick: u64) -> Instant {
        self.origin + TICK * (tick as u32)
    }

    /// Whether the wheel holds no entries, stale ones included.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedule `entry` to fire at or after `at`.
    pub fn schedule(&mut self, at: Instant, entry: TimerEntry) {
        let tick = self.tick_of(at).max(self.cursor);
        self.len += 1;
        if tick - self.cursor < SLOTS as u64 {
            self.slots[(tick % SLOTS as u64) as usize].push((tick, entry));
        } else {
            self.overflow.push((tick, entry));
        }
    }

    /// Move every entry whose deadline is `<= now` into `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<TimerEntry>) {
        // A deadline at exactly `now` rounds up to a tick <= now_tick.
        let now_tick = now.saturating_duration_since(self.origin).as_nanos() / TICK.as_nanos();
        let now_tick = now_tick as u64;
        if now_tick < self.cursor {
            return;
        }
        let steps = (now_tick - self.cursor + 1).min(SLOTS as u64);
        for i in 0..steps {
            let slot = ((self.cursor + i) % SLOTS as u64) as usize;
            let bucket = &mut self.slots[slot];
            let mut j = 0;
            while j < bucket.len() {
                if bucket[j].0 <= now_tick {
                    out.push(bucket.swap_remove(j).1);
                    self.len -= 1;
                } else {
                    j += 1;
                }
            }
        }
        self.cursor = now_tick + 1;
        if !self.overflow.is_empty() {
            let cursor = self.cursor;
            let mut j = 0;
            while j < self.overflow.len() {
                let (tick, entry) = self.overflow[j];
                if tick <= now_tick {
                    out.push(entry);
                    self.overflow.swap_remove(j);
                    self.len -= 1;
                } else if tick - cursor < SLOTS as u64 {
                    self.overflow.swap_remove(j);
                    self.slots[(tick % SLOTS as u64) as usize].push((tick, entry));
                } else {
                    j += 1;
                }
            }
        }
    }

    /// The earliest instant at which `expire` would return something, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        for i in 0..SLOTS as u64 {
            let slot = &self.slots[((self.cursor + i) % SLOTS as u64) as usize];
            if let Some(min) = slot.iter().map(|(t, _)| *t).min() {
                return Some(self.instant_of(min));
            }
        }
        self.overflow
            .iter()
            .map(|(t, _)| *t)
            .min()
            .map(|t| self.instant_of(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: u32) -> TimerEntry {
        TimerEntry { key, generation: 0 }
    }

    #[test]
    fn entry_never_fires_before_its_deadline() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.schedule(t0 + Duration::from_micros(1500), e(1));
        let mut out = Vec::new();
        w.expire(t0 + Duration::from_millis(1), &mut out);
        assert!(out.is_empty());
        w.expire(t0 + Duration::from_millis(2), &mut out);
        assert_eq!(out, vec![e(1)]);
        assert!(w.is_empty());
    }

    #[test]
    fn far_deadlines_wait_in_overflow_and_fire_on_time() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.schedule(t0 + Duration::from_secs(5), e(7));
        w.schedule(t0 + Duration::from_millis(3), e(8));
        let mut out = Vec::new();
        let mut now = t0;
        let mut fired_at = Vec::new();
        while now < t0 + Duration::from_secs(6) {
            now += Duration::from_millis(7);
            out.clear();
            w.expire(now, &mut out);
            for x in &out {
                fired_at.push((x.key, now));
            }
        }
        assert_eq!(fired_at.len(), 2);
        assert_eq!(fired_at[0].0, 8);
        assert_eq!(fired_at[1].0, 7);
        assert!(fired_at[1].1 >= t0 + Duration::from_secs(5));
        assert!(fired_at[1].1 < t0 + Duration::from_millis(5010));
    }

    #[test]
    fn a_long_idle_gap_fires_everything_due_once() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        for k in 0..100 {
            w.schedule(t0 + Duration::from_millis(k * 37), e(k as u32));
        }
        let mut out = Vec::new();
        w.expire(t0 + Duration::from_secs(60), &mut out);
        out.sort_by_key(|x| x.key);
        assert_eq!(out.len(), 100);
        assert_eq!(
            out.iter().map(|x| x.key).collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn next_deadline_reports_the_earliest_entry() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.schedule(t0 + Duration::from_millis(40), e(1));
        w.schedule(t0 + Duration::from_millis(10), e(2));
        w.schedule(t0 + Duration::from_secs(3), e(3));
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_millis(10)));
        let mut out = Vec::new();
        w.expire(t0 + Duration::from_millis(41), &mut out);
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(3)));
    }
}
