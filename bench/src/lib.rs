//! sluice-bench: a load generator for WHIP/WHEP servers, and the WebRTC
//! clients the integration tests use.

pub mod client;
pub mod stats;
pub mod udp;
