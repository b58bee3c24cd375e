//! Latency histogram ([`Histogram`]): log-linear buckets in microseconds, with
//! memory bounded by the range of the values, not their number.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
