//! test support

pub mod client;
pub mod e2e;
pub mod fake_central;
pub mod fake_pulp;
pub mod harness;
pub mod pki;
pub mod plugins;
pub mod registry_upstream;
