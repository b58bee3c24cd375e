//! Measurement primitives for the load generator: RTP sequence accounting
//! ([`SeqTracker`]), latency histograms ([`Histogram`]), min/median/max of
//! repeated runs ([`summarize`]) and per-thread CPU time and RSS of a process
//! read from Linux procfs ([`ProcSnapshot`], [`diff_snapshots`]).
//!
//! Everything here is plain data with bounded memory; only [`ProcSnapshot::read`]
//! touches the operating system.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::time::Instant;

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

/// Bits of mantissa kept per value: bucket width is at most 1/128 of the
/// value, so a reported percentile is within ±0.4% of a recorded value.
const HIST_PRECISION_BITS: u32 = 8;
const HIST_HALF: u64 = 1 << (HIST_PRECISION_BITS - 1);

/// Latency histogram in microseconds with log-linear buckets (as HdrHistogram).
///
/// Values below 256 are exact; above that each power of two is split into 128
/// buckets, so memory grows with the logarithm of the largest value (at most
/// ~7,400 counters for the whole `u64` range) and never with the sample count.
/// Count, sum, minimum and maximum are exact.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one sample of `us` microseconds.
    pub fn record(&mut self, us: u64) {
        let index = bucket_index(us);
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        if self.count == 0 {
            self.min = us;
            self.max = us;
        } else {
            self.min = self.min.min(us);
            self.max = self.max.max(us);
        }
        self.count += 1;
        self.sum += u128::from(us);
    }

    /// Number of samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The value at or below which `p` percent of the samples lie (p in 0..=100,
    /// clamped), within the bucket precision; 0 for an empty histogram.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
        let rank = ((p / 100.0) * self.count as f64).ceil() as u64;
        let rank = rank.clamp(1, self.count);
        let mut seen = 0;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, high) = bucket_bounds(index);
                let middle = low + (high - low) / 2;
                return middle.clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Largest sample, or `None` for an empty histogram.
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// Smallest sample, or `None` for an empty histogram.
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    /// Arithmetic mean of the samples, or `None` for an empty histogram.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// Adds every sample of `other` to `self`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        if self.count == 0 {
            self.min = other.min;
            self.max = other.max;
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        self.count += other.count;
        self.sum += other.sum;
    }
}

/// Bucket of `value`: exact below `2 * HIST_HALF`, then `HIST_HALF` buckets
/// per power of two, indices contiguous across the boundary.
fn bucket_index(value: u64) -> usize {
    if value < 2 * HIST_HALF {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let shift = exponent + 1 - HIST_PRECISION_BITS;
    let mantissa = value >> shift;
    (u64::from(shift) * HIST_HALF + mantissa) as usize
}

/// Inclusive range of values that fall into bucket `index`.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < 2 * HIST_HALF {
        return (index, index);
    }
    let shift = index / HIST_HALF - 1;
    let mantissa = index - shift * HIST_HALF;
    let low = mantissa << shift;
    (low, low + ((1u64 << shift) - 1))
}

/// Minimum, median and maximum of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Smallest value.
    pub min: f64,
    /// Middle value (mean of the two middle ones for an even count).
    pub median: f64,
    /// Largest value.
    pub max: f64,
}

/// Sorts `values` and summarizes them, ignoring NaNs; `None` if no number is left.
pub fn summarize(values: &mut [f64]) -> Option<Summary> {
    // total_cmp puts negative NaNs first and positive NaNs last, so the
    // numbers form one contiguous run in between.
    values.sort_unstable_by(f64::total_cmp);
    let start = values.iter().position(|v| !v.is_nan())?;
    let end = values.iter().rposition(|v| !v.is_nan())?;
    let numbers = &values[start..=end];
    let n = numbers.len();
    let median = if n % 2 == 1 {
        numbers[n / 2]
    } else {
        (numbers[n / 2 - 1] + numbers[n / 2]) / 2.0
    };
    Some(Summary {
        min: numbers[0],
        median,
        max: numbers[n - 1],
    })
}

/// CPU time of one thread at the moment of a [`ProcSnapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadCpu {
    /// Kernel thread id.
    pub tid: u32,
    /// Thread name (`comm`, at most 15 bytes).
    pub name: String,
    /// User plus system CPU time since the thread started, in seconds.
    pub cpu_seconds: f64,
}

/// CPU time per thread and resident memory of one process at one instant.
#[derive(Debug, Clone)]
pub struct ProcSnapshot {
    /// Process id the snapshot was read from.
    pub pid: u32,
    /// When the snapshot was read.
    pub taken_at: Instant,
    /// Threads alive at that instant.
    pub threads: Vec<ThreadCpu>,
    /// Resident set size (VmRSS) in bytes; 0 for processes without one.
    pub rss_bytes: u64,
}

impl ProcSnapshot {
    /// Reads `/proc/<pid>/task/*/stat` and `/proc/<pid>/status`.
    ///
    /// Threads that exit while the snapshot is being read are left out.
    pub fn read(pid: u32) -> io::Result<ProcSnapshot> {
        let root = Path::new("/proc").join(pid.to_string());
        let taken_at = Instant::now();
        let ticks = clock_ticks_per_second();
        let mut threads = Vec::new();
        for entry in fs::read_dir(root.join("task"))? {
            let entry = entry?;
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let line = match fs::read_to_string(entry.path().join("stat")) {
                Ok(line) => line,
                // A thread that exited meanwhile reads as ENOENT or ESRCH.
                Err(e) if thread_gone(&e) => continue,
                Err(e) => return Err(e),
            };
            let (name, cpu_ticks) = parse_stat_line(&line).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected format in /proc/{pid}/task/{tid}/stat"),
                )
            })?;
            threads.push(ThreadCpu {
                tid,
                name,
                cpu_seconds: cpu_ticks as f64 / ticks,
            });
        }
        threads.sort_by_key(|t| t.tid);
        let status = fs::read_to_string(root.join("status"))?;
        Ok(ProcSnapshot {
            pid,
            taken_at,
            threads,
            rss_bytes: parse_vm_rss(&status).unwrap_or(0),
        })
    }

    /// Sum of the CPU time of the threads alive at the snapshot, in seconds.
    pub fn total_cpu_seconds(&self) -> f64 {
        self.threads.iter().map(|t| t.cpu_seconds).sum()
    }
}

/// CPU time spent by the threads of one name between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedCpu {
    /// Thread name shared by the group.
    pub name: String,
    /// Threads of that name alive at the later snapshot.
    pub threads: usize,
    /// CPU seconds they spent between the snapshots.
    pub cpu_seconds: f64,
}

/// What a process did between two [`ProcSnapshot`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcDelta {
    /// Wall time between the snapshots.
    pub wall_seconds: f64,
    /// CPU seconds spent, all groups together.
    pub cpu_seconds: f64,
    /// Per thread name, the busiest first.
    pub by_name: Vec<NamedCpu>,
    /// RSS at the later snapshot.
    pub rss_bytes: u64,
}

impl ProcDelta {
    /// Average number of cores kept busy between the snapshots.
    pub fn cores(&self) -> f64 {
        if self.wall_seconds > 0.0 {
            self.cpu_seconds / self.wall_seconds
        } else {
            0.0
        }
    }
}

/// CPU time per thread name between `before` and `after` (same process).
///
/// Threads are matched by id; a thread new in `after` counts from zero, and
/// the time of threads that exited in between is not seen by either snapshot.
pub fn diff_snapshots(before: &ProcSnapshot, after: &ProcSnapshot) -> ProcDelta {
    let earlier: HashMap<u32, &ThreadCpu> = before.threads.iter().map(|t| (t.tid, t)).collect();
    let mut groups: Vec<NamedCpu> = Vec::new();
    for thread in &after.threads {
        let base = match earlier.get(&thread.tid) {
            // A reused tid shows as a different name or a clock that went back.
            Some(old) if old.name == thread.name && old.cpu_seconds <= thread.cpu_seconds => {
                old.cpu_seconds
            }
            _ => 0.0,
        };
        let spent = thread.cpu_seconds - base;
        match groups.iter_mut().find(|g| g.name == thread.name) {
            Some(group) => {
                group.threads += 1;
                group.cpu_seconds += spent;
            }
            None => groups.push(NamedCpu {
                name: thread.name.clone(),
                threads: 1,
                cpu_seconds: spent,
            }),
        }
    }
    groups.sort_by(|a, b| {
        b.cpu_seconds
            .total_cmp(&a.cpu_seconds)
            .then(a.name.cmp(&b.name))
    });
    ProcDelta {
        wall_seconds: after
            .taken_at
            .saturating_duration_since(before.taken_at)
            .as_secs_f64(),
        cpu_seconds: groups.iter().map(|g| g.cpu_seconds).sum(),
        by_name: groups,
        rss_bytes: after.rss_bytes,
    }
}

/// Time the threads of process `pid` have spent runnable but waiting for a
/// CPU (the second field of `/proc/<pid>/task/*/schedstat`), in seconds. On a
/// shared machine this tells contention for the process's cores from its own
/// slowness. Threads that exit meanwhile are left out.
pub fn runqueue_wait_seconds(pid: u32) -> io::Result<f64> {
    let mut ns = 0u64;
    for entry in fs::read_dir(Path::new("/proc").join(pid.to_string()).join("task"))? {
        let line = match fs::read_to_string(entry?.path().join("schedstat")) {
            Ok(line) => line,
            Err(e) if thread_gone(&e) => continue,
            Err(e) => return Err(e),
        };
        ns += parse_schedstat_wait(&line).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "unexpected schedstat format")
        })?;
    }
    Ok(ns as f64 / 1e9)
}

/// Run-queue wait in nanoseconds from a `schedstat` line (`run wait slices`).
fn parse_schedstat_wait(line: &str) -> Option<u64> {
    let mut fields = line.split_whitespace();
    fields.next()?.parse::<u64>().ok()?;
    fields.next()?.parse().ok()
}

/// How many CPUs process `pid` may run on (`Cpus_allowed_list` in its status),
/// so that CPU time can be read as a share of what the process can get.
pub fn allowed_cpu_count(pid: u32) -> io::Result<usize> {
    let status = fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(parse_cpu_list)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no Cpus_allowed_list in /proc/{pid}/status"),
            )
        })
}

/// Counts the CPUs in a list such as `0-3,8,10-11`.
fn parse_cpu_list(list: &str) -> Option<usize> {
    let mut count = 0;
    for part in list.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                count += b.checked_sub(a)? + 1;
            }
            None => {
                part.trim().parse::<usize>().ok()?;
                count += 1;
            }
        }
    }
    (count > 0).then_some(count)
}

fn thread_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// The `sysconf` call behind `clock_ticks_per_second`, the module's only
/// `unsafe` code.
#[allow(unsafe_code)]
mod sys {
    /// `sysconf(_SC_CLK_TCK)`: the unit of the CPU times in `/proc`; zero or
    /// negative when the system does not say.
    pub(super) fn clock_ticks() -> libc::c_long {
        // SAFETY: sysconf takes no pointers and only reads a system constant.
        unsafe { libc::sysconf(libc::_SC_CLK_TCK) }
    }
}

fn clock_ticks_per_second() -> f64 {
    let ticks = sys::clock_ticks();
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Thread name and utime + stime in clock ticks from a `stat` line.
///
/// The name is in parentheses and may itself contain spaces and parentheses,
/// so the fields are counted from the last `)`.
fn parse_stat_line(line: &str) -> Option<(String, u64)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let name = line.get(open + 1..close)?.to_string();
    // Fields after the name start at field 3 (state); utime and stime are 14 and 15.
    let mut fields = line.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// VmRSS in bytes from the text of `/proc/<pid>/status`.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

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

    #[test]
    fn histogram_buckets_are_contiguous_and_tight() {
        let mut previous = 0;
        for v in (0..1_000_000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let index = bucket_index(v);
            assert!(index == previous || index == previous + 1 || v > 1_000_000);
            let (low, high) = bucket_bounds(index);
            assert!(
                low <= v && v <= high,
                "{v} outside bucket {index} = {low}..={high}"
            );
            assert!(
                (high - low) as f64 <= v as f64 / 128.0,
                "bucket too wide at {v}"
            );
            previous = index;
        }
    }

    #[test]
    fn uniform_percentiles_are_within_one_percent() {
        let mut h = Histogram::new();
        for v in 1..=10_000 {
            h.record(v);
        }
        assert_eq!(h.count(), 10_000);
        for (p, want) in [
            (50.0, 5000.0),
            (90.0, 9000.0),
            (99.0, 9900.0),
            (99.9, 9990.0),
        ] {
            let got = h.percentile(p) as f64;
            assert!(
                (got - want).abs() / want < 0.01,
                "p{p} = {got}, want {want}"
            );
        }
        assert_eq!(h.percentile(0.0), 1);
        assert_eq!(h.percentile(100.0), 10_000);
        assert_eq!(h.min(), Some(1));
        assert_eq!(h.max(), Some(10_000));
        assert_eq!(h.mean(), Some(5000.5));
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in [3, 3, 3, 7, 200] {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), 3);
        assert_eq!(h.percentile(80.0), 7);
        assert_eq!(h.percentile(100.0), 200);
    }

    #[test]
    fn skewed_distribution_tail_is_found() {
        // 99% fast at 100 µs, 1% slow at 50 ms.
        let mut h = Histogram::new();
        for i in 0..10_000 {
            h.record(if i % 100 == 0 { 50_000 } else { 100 });
        }
        assert_eq!(h.percentile(99.0), 100);
        let p999 = h.percentile(99.9) as f64;
        assert!((p999 - 50_000.0).abs() / 50_000.0 < 0.01, "p99.9 = {p999}");
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        let mut all = Histogram::new();
        for v in 1..=5_000 {
            a.record(v);
            all.record(v);
        }
        for v in 5_001..=1_000_000 {
            if v % 7 == 0 {
                b.record(v);
                all.record(v);
            }
        }
        a.merge(&b);
        assert_eq!(a.count(), all.count());
        assert_eq!(a.min(), Some(1));
        assert_eq!(a.max(), all.max());
        assert_eq!(a.mean(), all.mean());
        for p in [1.0, 25.0, 50.0, 90.0, 99.0, 100.0] {
            assert_eq!(a.percentile(p), all.percentile(p), "p{p}");
        }
    }

    #[test]
    fn merge_into_empty_takes_min_and_max() {
        let mut empty = Histogram::new();
        let mut other = Histogram::new();
        other.record(40);
        other.record(90);
        empty.merge(&other);
        assert_eq!(empty.min(), Some(40));
        assert_eq!(empty.max(), Some(90));
        empty.merge(&Histogram::new());
        assert_eq!(empty.count(), 2);
    }

    #[test]
    fn empty_histogram_reports_zero_or_none() {
        let h = Histogram::new();
        assert_eq!(h.count(), 0);
        assert_eq!(h.percentile(50.0), 0);
        assert_eq!(h.min(), None);
        assert_eq!(h.max(), None);
        assert_eq!(h.mean(), None);
    }

    #[test]
    fn summary_of_odd_and_even_counts() {
        let s = summarize(&mut [3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            s,
            Summary {
                min: 1.0,
                median: 2.0,
                max: 3.0
            }
        );
        let s = summarize(&mut [4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(
            s,
            Summary {
                min: 1.0,
                median: 2.5,
                max: 4.0
            }
        );
    }

    #[test]
    fn summary_ignores_nan_and_empty_is_none() {
        assert_eq!(summarize(&mut []), None);
        assert_eq!(summarize(&mut [f64::NAN]), None);
        let s = summarize(&mut [f64::NAN, 5.0, -f64::NAN, 1.0]).unwrap();
        assert_eq!(
            s,
            Summary {
                min: 1.0,
                median: 3.0,
                max: 5.0
            }
        );
    }

    #[test]
    fn stat_line_with_parentheses_in_name_parses() {
        let line = "4242 (we (ird) name) R 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(
            parse_stat_line(line),
            Some(("we (ird) name".to_string(), 300))
        );
        assert_eq!(parse_stat_line("4242 (short) R 1 2"), None);
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn schedstat_wait_is_the_second_field() {
        assert_eq!(
            parse_schedstat_wait("222761266 139680794 740\n"),
            Some(139680794)
        );
        assert_eq!(parse_schedstat_wait("12"), None);
        assert_eq!(parse_schedstat_wait("a b c"), None);
        assert!(runqueue_wait_seconds(std::process::id()).unwrap() >= 0.0);
        assert!(runqueue_wait_seconds(u32::MAX).is_err());
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list(" 0-3,8,10-11\n"), Some(7));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn own_process_may_run_somewhere() {
        let n = allowed_cpu_count(std::process::id()).unwrap();
        assert!(n >= 1);
        assert!(allowed_cpu_count(u32::MAX).is_err());
    }

    #[test]
    fn snapshot_of_own_process_has_threads_and_memory() {
        let snap = ProcSnapshot::read(std::process::id()).unwrap();
        assert!(!snap.threads.is_empty());
        assert!(snap.rss_bytes > 0);
        assert!(snap.threads.iter().any(|t| t.tid == std::process::id()));
        assert!(snap.total_cpu_seconds() >= 0.0);
    }

    #[test]
    fn snapshot_of_missing_process_is_an_error() {
        // Above the kernel's PID_MAX_LIMIT (2^22), so no such process can exist.
        assert!(ProcSnapshot::read(u32::MAX).is_err());
    }

    #[test]
    fn diff_attributes_cpu_to_the_busy_thread_name() {
        let pid = std::process::id();
        let before = ProcSnapshot::read(pid).unwrap();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (busy_tx, busy_rx) = mpsc::channel::<bool>();
        let spinner = std::thread::Builder::new()
            .name("stats-spin".into())
            .spawn(move || {
                // Spin until procfs shows 50 ms of CPU for this thread, or give up.
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut x = 0u64;
                let reached = loop {
                    for i in 0..100_000u64 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                    }
                    let snap = ProcSnapshot::read(pid).unwrap();
                    let cpu: f64 = snap
                        .threads
                        .iter()
                        .filter(|t| t.name == "stats-spin")
                        .map(|t| t.cpu_seconds)
                        .sum();
                    if cpu >= 0.05 {
                        break true;
                    }
                    if Instant::now() > deadline {
                        break false;
                    }
                };
                busy_tx.send(reached).unwrap();
                // Stay alive until the second snapshot is taken.
                done_rx.recv().ok();
            })
            .unwrap();
        assert!(
            busy_rx.recv().unwrap(),
            "spinner never accumulated CPU time"
        );
        let after = ProcSnapshot::read(pid).unwrap();
        done_tx.send(()).unwrap();
        spinner.join().unwrap();

        let delta = diff_snapshots(&before, &after);
        let spin = delta
            .by_name
            .iter()
            .find(|g| g.name == "stats-spin")
            .unwrap();
        assert_eq!(spin.threads, 1);
        assert!(spin.cpu_seconds >= 0.05, "{spin:?}");
        assert!(delta.cpu_seconds >= spin.cpu_seconds);
        assert!(delta.wall_seconds > 0.0);
        assert!(delta.cores() > 0.0);
    }
}
