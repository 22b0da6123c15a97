//! The command line (contract §8): `serve`, `check-config`, `demo`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "container-gateway", version, about = "Per-client gateway for Katello smart proxies: filters Pulp's Flatpak index and guards the container registry")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/container-gateway/gateway.toml")]
        config: PathBuf,
    },
    /// Check a configuration (TLS material, upstream TLS, plugins) and exit.
    CheckConfig {
        #[arg(long, short, default_value = "/etc/container-gateway/gateway.toml")]
        config: PathBuf,
    },
    /// Start a sample Pulp, a sample central and the gateway on loopback, and
    /// print commands that show two hosts seeing different indexes.
    Demo {
        /// Port for the gateway's TLS listener (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Directory holding the plugin .so files (default: next to this binary).
        #[arg(long)]
        plugins_dir: Option<PathBuf>,
    },
}
