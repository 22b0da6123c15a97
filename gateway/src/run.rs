//! What each command does; `main` only maps the outcome to an exit code.

use std::path::Path;

use crate::config::{self, Config};
use crate::server::{self, StartOptions};

/// Exit codes: 0 fine, 1 runtime failure, 2 bad configuration.
pub const EXIT_RUNTIME: i32 = 1;
pub const EXIT_CONFIG: i32 = 2;

pub fn init_logging(filter: &str) {
    let filter = std::env::var("RUST_LOG").ok().filter(|f| !f.is_empty()).unwrap_or_else(|| filter.to_owned());
    let env_filter =
        tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Under systemd, journald stamps each line itself and colours are noise.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(env_filter).with_writer(std::io::stderr);
    let result = if journald {
        builder.without_time().with_ansi(false).try_init()
    } else {
        builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init()
    };
    let _ = result;
}

fn load_or_report(path: &Path) -> Result<Config, i32> {
    config::load(path).map_err(|problems| {
        eprintln!("{}: configuration has {} problem(s):", path.display(), problems.0.len());
        for p in &problems.0 {
            eprintln!("  {p}");
        }
        EXIT_CONFIG
    })
}

pub fn check_config(path: &Path) -> i32 {
    let config = match load_or_report(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match server::prepare(&config, None) {
        Ok(prepared) => {
            println!(
                "{}: OK ({} TLS listener(s), {} plain, plugins [{}], pulp {}{}, central {})",
                path.display(),
                config.server.listen.len(),
                config.server.listen_plain.len(),
                prepared.backends.iter().map(|b| b.name().to_owned()).collect::<Vec<_>>().join(", "),
                config.pulp.endpoint,
                config.pulp.registry_path,
                config.central.url,
            );
            0
        }
        Err(problems) => {
            eprintln!("{}: configuration has {} problem(s):", path.display(), problems.0.len());
            for p in &problems.0 {
                eprintln!("  {p}");
            }
            EXIT_CONFIG
        }
    }
}

pub fn serve(path: &Path) -> i32 {
    let config = match load_or_report(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&config.log_filter);
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        match server::start(config, StartOptions { handle_signals: true, ..Default::default() }).await {
            Ok(running) => match running.wait().await {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(error = %e, "server failed");
                    EXIT_RUNTIME
                }
            },
            Err(server::StartError::Config(problems)) => {
                for p in &problems.0 {
                    tracing::error!(key = %p.key, "{}", p.message);
                }
                EXIT_CONFIG
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                EXIT_RUNTIME
            }
        }
    })
}
