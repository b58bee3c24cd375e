//! sluice-bench: a load generator for WHIP/WHEP servers, and the WebRTC
//! clients the integration tests use.

pub mod churn;
pub mod client;
pub mod fanout;
pub mod gro;
pub mod pacer;
pub mod plot;
pub mod repeat;
pub mod report;
pub mod stats;
pub mod udp;
pub mod units;
