//! container-gateway: shows each client of a Katello smart proxy only the
//! container and Flatpak repositories it is entitled to, in front of Pulp.

// Request steps return the finished HTTP answer as their error: it is built
// once, where the reason is known, and moved up unchanged.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod state;
pub mod coalesce;
pub mod entitlements;
pub mod explain;
pub mod index;
pub mod tls;
pub mod http;
pub mod registry;
pub mod server;
pub mod upstream;
pub mod cli;
pub mod demo;
pub mod lifecycle;
pub mod run;
pub mod management;
pub mod import;
