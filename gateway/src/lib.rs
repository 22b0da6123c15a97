//! container-gateway: shows each client of a Katello smart proxy only the
//! container and Flatpak repositories it is entitled to, in front of Pulp.

// Request steps return the finished HTTP answer as their error: it is built
// once, where the reason is known, and moved up unchanged.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod auth;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod entitlements;
pub mod explain;
pub mod files;
pub mod http;
pub mod import;
pub mod index;
pub mod journal_prefix;
pub mod lifecycle;
pub mod management;
pub mod migrate;
pub mod registry;
pub mod run;
pub mod server;
pub mod state;
pub mod tls;
pub mod upstream;
