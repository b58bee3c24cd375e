//! The sluice control plane: configuration, HTTPS (WHIP/WHEP, rooms, admin API,
//! metrics, the embedded web client) and placement of sessions on shards.
//!
//! Knows nothing of sockets' insides; the dataplane owns media I/O.
//!
//! Layers, each importing only those below it: [`server`] (composition root)
//! → [`routes`] → handlers ([`whip`], [`rooms::socket`], [`admin`], [`metrics`],
//! [`web`]) → [`sessions`], [`authz`], [`error`] → [`app`] (shared state, which
//! owns the rooms' tables in [`rooms`] but none of their handlers) → leaves
//! ([`registry`], [`negotiate`], [`auth`], [`config`], [`rooms::protocol`]).
//! `App` never sees a handler, so the router is built in `routes` over `App`,
//! and `Server::start` puts the two together.

pub mod admin;
pub mod app;
pub mod auth;
pub mod authz;
pub mod config;
pub mod doctor;
pub mod error;
pub mod metrics;
pub mod negotiate;
pub mod notify;
pub mod registry;
pub mod rooms;
pub mod routes;
pub mod server;
pub mod sessions;
pub mod tls;
pub mod web;
pub mod whip;

pub use config::Config;
pub use server::Server;
