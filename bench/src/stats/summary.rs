//! Minimum, median and maximum of repeated runs ([`Summary`], [`summarize`]).

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
