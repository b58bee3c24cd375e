//! `fanout --repeat N`: the same measurement N times, summarised as
//! min / median / max per figure, so a figure is reported as a range.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::report::FanoutReport;

/// One figure over the runs that reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Range {
    /// What it is, with its unit.
    pub name: String,
    /// Runs that reported it (a run without `--server-pid` has no server figures).
    pub runs: usize,
    /// Smallest.
    pub min: f64,
    /// Median (the mean of the middle two for an even count).
    pub median: f64,
    /// Largest.
    pub max: f64,
}

/// Every run's report and the ranges over them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepeatReport {
    /// The reports, in the order they ran.
    pub runs: Vec<FanoutReport>,
    /// Min / median / max of each figure.
    pub ranges: Vec<Range>,
}

fn range(name: &str, mut values: Vec<f64>) -> Option<Range> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    Some(Range {
        name: name.to_string(),
        runs: n,
        min: values[0],
        median,
        max: values[n - 1],
    })
}

/// The ranges of the figures BENCHMARKS.md quotes, over `runs`.
pub fn summarize(runs: Vec<FanoutReport>) -> RepeatReport {
    let m = |f: &dyn Fn(&FanoutReport) -> Option<f64>| -> Vec<f64> {
        runs.iter().filter_map(f).collect()
    };
    let server = |r: &FanoutReport| r.measurement.as_ref().and_then(|m| m.server.clone());
    let figures: Vec<(&str, Vec<f64>)> = vec![
        (
            "delivered pkt per server CPU-second",
            m(&|r| server(r)?.packets_per_cpu_second),
        ),
        (
            "memory per viewer, KiB",
            m(&|r| Some(server(r)?.memory_per_viewer_bytes? / 1024.0)),
        ),
        ("server cores", m(&|r| Some(server(r)?.cores))),
        (
            "delivered pkt/s",
            m(&|r| Some(r.measurement.as_ref()?.delivered_pps)),
        ),
        (
            "delivery, %",
            m(&|r| r.measurement.as_ref()?.delivery_percent),
        ),
        (
            "latency p50, ms",
            m(&|r| Some(r.measurement.as_ref()?.latency_ms.as_ref()?.p50)),
        ),
        (
            "latency p99, ms",
            m(&|r| Some(r.measurement.as_ref()?.latency_ms.as_ref()?.p99)),
        ),
        (
            "frame latency p50, ms",
            m(&|r| Some(r.measurement.as_ref()?.frame_latency_ms.as_ref()?.p50)),
        ),
        (
            "frame latency p99, ms",
            m(&|r| Some(r.measurement.as_ref()?.frame_latency_ms.as_ref()?.p99)),
        ),
        ("setup, sessions/s", m(&|r| Some(r.setup.rate_per_second))),
        (
            "setup, sessions per server CPU-s",
            m(&|r| r.setup.per_server_cpu_second()),
        ),
    ];
    let ranges = figures
        .into_iter()
        .filter_map(|(name, v)| range(name, v))
        .collect();
    RepeatReport { runs, ranges }
}

fn num(v: f64) -> String {
    if v.abs() >= 1000.0 {
        crate::report::group_digits(v.round() as u64)
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The ranges as a table.
pub fn format_repeat(r: &RepeatReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nover {} runs:", r.runs.len());
    let _ = writeln!(
        out,
        "  {:<38} {:>12} {:>12} {:>12}",
        "figure", "min", "median", "max"
    );
    for g in &r.ranges {
        let _ = writeln!(
            out,
            "  {:<38} {:>12} {:>12} {:>12}{}",
            g.name,
            num(g.min),
            num(g.median),
            num(g.max),
            if g.runs < r.runs.len() {
                format!("  ({} runs)", g.runs)
            } else {
                String::new()
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_has_min_median_max_and_skips_what_is_not_a_number() {
        let r = range("x", vec![3.0, 1.0, f64::NAN, 2.0]).unwrap();
        assert_eq!((r.runs, r.min, r.median, r.max), (3, 1.0, 2.0, 3.0));
        let even = range("x", vec![4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(even.median, 2.5);
        assert!(range("x", vec![]).is_none());
    }

    #[test]
    fn the_table_names_a_figure_fewer_runs_reported() {
        let rep = RepeatReport {
            runs: Vec::new(),
            ranges: vec![range(
                "delivered pkt per server CPU-second",
                vec![350_000.0, 390_000.0],
            )
            .unwrap()],
        };
        let t = format_repeat(&rep);
        assert!(
            t.contains("350,000") && t.contains("370,000") && t.contains("390,000"),
            "{t}"
        );
    }
}
