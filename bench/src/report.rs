//! What `sluice-bench` reports: the figures of a fan-out run or ramp as plain
//! serialisable data (`--json` prints them as they are) and their layout as
//! readable text tables; also the loopback UDP throughput results of the
//! `udp` command as JSON ([`udp_json`]).
//!
//! The pieces are in submodules: `data` holds the serialisable types,
//! `numbers` the formatting of single figures and `text` the tables.

use crate::udp::{Outcome, UdpResult};

mod data;
mod numbers;
mod text;

pub use data::{
    BenchCpu, ErrorCount, FanoutReport, HostInfo, Percentiles, RampReport, ServerReport, Settings,
    SetupReport, Spread, StepReport, ThreadGroup,
};
pub use numbers::{bar, group_digits, human_bytes};
pub use text::format_fanout;

/// UDP results as JSON values (the `udp` module's types stay serde-free).
pub fn udp_json(results: &[UdpResult], packet_size: usize) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            let (outcome, note) = match &r.outcome {
                Outcome::Measured => ("measured", None),
                Outcome::Unavailable(why) => ("unavailable", Some(why.clone())),
                Outcome::Failed(why) => ("failed", Some(why.clone())),
            };
            serde_json::json!({
                "mode": r.mode.name(),
                "outcome": outcome,
                "note": note,
                "packets_sent": r.packets_sent,
                "packets_received": r.packets_received,
                "seconds": r.seconds,
                "pps_sent": r.pps_sent,
                "pps_received": r.pps_received,
                "gbit_s": r.gbit_s,
            })
        })
        .collect();
    serde_json::json!({ "packet_size": packet_size, "modes": rows })
}
