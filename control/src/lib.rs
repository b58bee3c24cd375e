//! The sluice control plane: configuration, HTTPS (WHIP/WHEP, rooms, admin API,
//! metrics, the embedded web client) and placement of sessions on shards.
//!
//! Imports point down only: [`server`] → [`routes`] → handlers ([`whip`], [`rooms::socket`], [`admin`], [`metrics`], [`web`]) → [`sessions`], [`authz`], [`error`], [`transports`] → [`app`] (state, holding the [`rooms`] tables but no handler) → leaves; so the router is built in `routes` over `App`, and `Server::start` composes the two.

#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod authz;
pub mod cluster;
pub mod config;
pub mod doctor;
pub mod error;
pub mod icefrag;
pub mod limits;
pub mod metrics;
pub mod negotiate;
pub mod notify;
pub mod registry;
pub mod relay;
pub mod rooms;
pub mod routes;
pub mod server;
pub mod sessions;
pub mod tls;
pub mod transports;
pub mod web;
pub mod whip;

pub use config::Config;
pub use server::Server;
