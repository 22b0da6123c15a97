//! The command line (contract §8): `serve`, `check-config`, `demo`, `import-settings`,
//! `migrate`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "container-gateway",
    version,
    about = "Per-client gateway for Katello smart proxies: filters Pulp's Flatpak index and guards the container registry"
)]
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
    /// Explain what one client sees and why: where its repositories come from,
    /// the Flatpak refs it gets, and every app whose runtime it cannot see.
    #[command(group = clap::ArgGroup::new("who").required(true).multiple(false))]
    Explain {
        #[arg(long, short, default_value = "/etc/container-gateway/gateway.toml")]
        config: PathBuf,
        /// A host, by consumer UUID.
        #[arg(long, group = "who")]
        host: Option<String>,
        /// A token user, by login.
        #[arg(long, group = "who")]
        user: Option<String>,
        /// An anonymous client.
        #[arg(long, group = "who")]
        anonymous: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The OCI architecture whose Flatpak index to examine.
        #[arg(long, default_value = "amd64")]
        arch: String,
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
    /// Write a gateway.toml from smart_proxy_container_gateway's settings
    /// (foreman-proxy's settings.yml and settings.d/container_gateway.yml).
    #[command(after_help = crate::import::EXIT_CODES_HELP)]
    ImportSettings(crate::import::ImportArgs),
    /// Take over from smart_proxy_container_gateway: write gateway.toml, point
    /// Apache's ProxyPass lines at the gateway, turn the Ruby plugin off in the
    /// installer's hiera (each file backed up), and print the commands that
    /// follow. --dry-run only prints; --rollback restores the backups.
    #[command(after_help = crate::migrate::EXIT_CODES_HELP)]
    Migrate(crate::migrate::MigrateArgs),
}
