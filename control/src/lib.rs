//! The sluice control plane: configuration, HTTPS (WHIP/WHEP, admin API,
//! metrics, the embedded web client) and placement of sessions on shards.
//!
//! Knows nothing of sockets' insides; the dataplane owns media I/O.

pub mod admin;
pub mod auth;
pub mod config;
pub mod doctor;
pub mod http;
pub mod metrics;
pub mod negotiate;
pub mod notify;
pub mod registry;
pub mod rooms;
pub mod server;
pub mod tls;
pub mod web;

pub use config::Config;
pub use server::Server;
