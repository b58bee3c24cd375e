//! RTP sequence accounting: [`SeqTracker`] counts one SSRC's packets from
//! their 16-bit sequence numbers (received, lost, duplicated, reordered, late).

/// How many sequence numbers behind the highest one [`SeqTracker`] remembers
/// for duplicate detection. A power of two so the bitmap index is a mask.
pub const SEQ_WINDOW: u64 = 4096;

const SEQ_WORDS: usize = (SEQ_WINDOW / 64) as usize;

/// Counts the RTP packets of one SSRC from their 16-bit sequence numbers.
///
/// Sequence numbers are extended to 64 bits by choosing, for each packet, the
/// extension closest to the highest one seen so far (the cycle counting of
/// RFC 3550 appendix A.1): a step of less than half the 16-bit space forward
/// is new data, anything else is a late packet. A bitmap of the last
/// [`SEQ_WINDOW`] sequence numbers tells duplicates from late originals; a
/// packet older than that window cannot be told apart and is counted as
/// [`late`](Self::late), not as received, so a duplicate is never counted twice.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    /// Lowest and highest extended sequence numbers seen; `None` before the first packet.
    range: Option<(u64, u64)>,
    /// Bit `ext % SEQ_WINDOW` is set when `ext` (within the window) was received.
    seen: [u64; SEQ_WORDS],
    received: u64,
    duplicates: u64,
    reordered: u64,
    late: u64,
}

impl Default for SeqTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl SeqTracker {
    /// Extended numbers start one full cycle up so packets that arrive
    /// reordered before the very first one do not underflow.
    const ORIGIN: u64 = 1 << 16;

    /// A tracker that has seen no packet.
    pub fn new() -> Self {
        Self {
            range: None,
            seen: [0; SEQ_WORDS],
            received: 0,
            duplicates: 0,
            reordered: 0,
            late: 0,
        }
    }

    /// Accounts for one packet carrying sequence number `seq`.
    pub fn record(&mut self, seq: u16) {
        let Some((low, high)) = self.range else {
            let ext = Self::ORIGIN + u64::from(seq);
            self.range = Some((ext, ext));
            self.set_seen(ext);
            self.received = 1;
            return;
        };
        // Interpreting the 16-bit difference as signed picks the nearest
        // extension; `high >= ORIGIN` so a step back of up to 2^15 cannot underflow.
        let delta = i64::from(seq.wrapping_sub(high as u16) as i16);
        let ext = high.wrapping_add_signed(delta);
        if ext > high {
            self.advance_window(high, ext);
            self.range = Some((low, ext));
            self.set_seen(ext);
            self.received += 1;
        } else if high - ext >= SEQ_WINDOW {
            self.late += 1;
        } else if self.is_seen(ext) {
            self.duplicates += 1;
        } else {
            self.set_seen(ext);
            self.range = Some((low.min(ext), high));
            self.received += 1;
            self.reordered += 1;
        }
    }

    /// Distinct packets received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets the sender sent between the lowest and highest sequence number seen.
    pub fn expected(&self) -> u64 {
        self.range.map_or(0, |(low, high)| high - low + 1)
    }

    /// Expected packets that were not received (late ones count as lost).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    /// `lost / expected`, or 0 when nothing was expected.
    pub fn loss_ratio(&self) -> f64 {
        match self.expected() {
            0 => 0.0,
            expected => self.lost() as f64 / expected as f64,
        }
    }

    /// Packets received again after an earlier copy within the window.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Packets that arrived after a packet with a higher sequence number.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Packets older than the duplicate-detection window, not counted as received.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Highest extended sequence number seen, counting from the first packet's cycle.
    pub fn highest_extended(&self) -> Option<u64> {
        self.range.map(|(_, high)| high - Self::ORIGIN)
    }

    fn advance_window(&mut self, high: u64, new_high: u64) {
        if new_high - high >= SEQ_WINDOW {
            self.seen = [0; SEQ_WORDS];
        } else {
            for ext in high + 1..=new_high {
                self.seen[Self::word(ext)] &= !Self::bit(ext);
            }
        }
    }

    fn is_seen(&self, ext: u64) -> bool {
        self.seen[Self::word(ext)] & Self::bit(ext) != 0
    }

    fn set_seen(&mut self, ext: u64) {
        self.seen[Self::word(ext)] |= Self::bit(ext);
    }

    fn word(ext: u64) -> usize {
        ((ext % SEQ_WINDOW) / 64) as usize
    }

    fn bit(ext: u64) -> u64 {
        1 << (ext % 64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(seqs: &[u16]) -> SeqTracker {
        let mut t = SeqTracker::new();
        for &s in seqs {
            t.record(s);
        }
        t
    }

    #[test]
    fn empty_tracker_expects_nothing() {
        let t = SeqTracker::new();
        assert_eq!((t.received(), t.expected(), t.lost()), (0, 0, 0));
        assert_eq!(t.loss_ratio(), 0.0);
        assert_eq!(t.highest_extended(), None);
    }

    #[test]
    fn in_order_stream_has_no_loss() {
        let seqs: Vec<u16> = (100..1100).collect();
        let t = track(&seqs);
        assert_eq!(t.received(), 1000);
        assert_eq!(t.expected(), 1000);
        assert_eq!(t.lost(), 0);
        assert_eq!(t.reordered(), 0);
    }

    #[test]
    fn reordering_is_not_loss_but_a_gap_is() {
        // 13 never arrives; 11 and 12 swap.
        let t = track(&[10, 12, 11, 14, 15]);
        assert_eq!(t.received(), 5);
        assert_eq!(t.expected(), 6);
        assert_eq!(t.lost(), 1);
        assert_eq!(t.reordered(), 1);
        assert!((t.loss_ratio() - 1.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn packet_reordered_before_the_first_extends_expected() {
        let t = track(&[5, 3, 4, 6]);
        assert_eq!(t.expected(), 4);
        assert_eq!(t.received(), 4);
        assert_eq!(t.lost(), 0);
        assert_eq!(t.reordered(), 2);
    }

    #[test]
    fn duplicate_is_not_double_counted() {
        let t = track(&[1, 2, 2, 3, 1, 3]);
        assert_eq!(t.received(), 3);
        assert_eq!(t.duplicates(), 3);
        assert_eq!(t.lost(), 0);
        assert_eq!(t.reordered(), 0);
    }

    #[test]
    fn wraps_from_65535_to_0() {
        let t = track(&[65534, 65535, 0, 1, 2]);
        assert_eq!(t.received(), 5);
        assert_eq!(t.expected(), 5);
        assert_eq!(t.lost(), 0);
        assert_eq!(t.highest_extended(), Some(65536 + 2));
    }

    #[test]
    fn start_near_the_wrap_with_reordering_across_it() {
        let t = track(&[65533, 0, 65535, 65534, 1]);
        assert_eq!(t.received(), 5);
        assert_eq!(t.expected(), 5);
        assert_eq!(t.lost(), 0);
        assert_eq!(t.reordered(), 2);
    }

    #[test]
    fn loss_across_the_wrap_is_counted() {
        // 65535 and 1 are lost.
        let t = track(&[65533, 65534, 0, 2, 3]);
        assert_eq!(t.expected(), 7);
        assert_eq!(t.received(), 5);
        assert_eq!(t.lost(), 2);
    }

    #[test]
    fn many_wraps_extend_past_16_bits() {
        let mut t = SeqTracker::new();
        let mut seq: u16 = 40_000;
        for _ in 0..200_000 {
            t.record(seq);
            seq = seq.wrapping_add(1);
        }
        assert_eq!(t.expected(), 200_000);
        assert_eq!(t.received(), 200_000);
        assert_eq!(t.duplicates(), 0);
    }

    #[test]
    fn packet_older_than_window_is_late_not_received() {
        let mut t = SeqTracker::new();
        for s in 0..=(SEQ_WINDOW as u16 + 10) {
            t.record(s);
        }
        let received = t.received();
        // Seq 0 again: outside the window, cannot be checked for duplication.
        t.record(0);
        assert_eq!(t.late(), 1);
        assert_eq!(t.duplicates(), 0);
        assert_eq!(t.received(), received);
    }

    #[test]
    fn duplicate_at_window_edge_is_still_detected() {
        let mut t = SeqTracker::new();
        for s in 0..SEQ_WINDOW as u16 {
            t.record(s);
        }
        t.record(0);
        assert_eq!(t.duplicates(), 1);
        assert_eq!(t.late(), 0);
    }

    #[test]
    fn big_jump_forward_clears_window() {
        // After a jump the old slots must not read as already seen.
        let mut t = track(&[0, 1, 2]);
        t.record(SEQ_WINDOW as u16 * 2 + 1);
        t.record(SEQ_WINDOW as u16 * 2);
        assert_eq!(t.duplicates(), 0);
        assert_eq!(t.received(), 5);
    }
}
