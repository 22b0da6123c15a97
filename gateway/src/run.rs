//! What each command does; `main` only maps the outcome to an exit code.

use std::path::Path;

use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{self, Config};
use crate::server;

/// Exit codes: 0 fine, 1 runtime failure, 2 bad configuration.
pub const EXIT_RUNTIME: i32 = 1;
pub const EXIT_CONFIG: i32 = 2;

/// Changes the log filter of the running process: a reload applies a new
/// `log.filter`, unless `RUST_LOG` (which wins over the file) is set.
#[derive(Default)]
pub struct LogFilter {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
}

impl LogFilter {
    pub fn set(&self, filter: &str) -> Result<(), String> {
        if rust_log().is_some() {
            return Ok(());
        }
        let Some(handle) = &self.handle else {
            return Ok(());
        };
        let filter = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    }
}

fn rust_log() -> Option<String> {
    std::env::var("RUST_LOG").ok().filter(|f| !f.is_empty())
}

pub fn init_logging(filter: &str) -> LogFilter {
    use tracing_subscriber::prelude::*;
    let filter = rust_log().unwrap_or_else(|| filter.to_owned());
    let env_filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (env_filter, handle) = reload::Layer::new(env_filter);
    // Under systemd, journald stamps each line itself, colours are noise, and
    // a `<N>` prefix carries each line's priority.
    let fmt = if std::env::var_os("JOURNAL_STREAM").is_some() {
        tracing_subscriber::fmt::layer()
            .with_writer(crate::journal_prefix::JournalPrefix(std::io::stderr))
            .without_time()
            .with_ansi(false)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed()
    };
    if tracing_subscriber::registry()
        .with(env_filter)
        .with(fmt)
        .try_init()
        .is_err()
    {
        return LogFilter::default();
    }
    LogFilter {
        handle: Some(handle),
    }
}

fn load_or_report(path: &Path) -> Result<Config, i32> {
    config::load(path).map_err(|problems| {
        eprintln!(
            "{}: configuration has {} problem(s):",
            path.display(),
            problems.0.len()
        );
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
                prepared
                    .backends
                    .iter()
                    .map(|b| b.name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
                config.pulp.endpoint,
                config.pulp.registry_path,
                config.central.url,
            );
            0
        }
        Err(problems) => {
            eprintln!(
                "{}: configuration has {} problem(s):",
                path.display(),
                problems.0.len()
            );
            for p in &problems.0 {
                eprintln!("  {p}");
            }
            EXIT_CONFIG
        }
    }
}

/// Run as a service until stopped: readiness, reload and stop are in `lifecycle`.
pub fn serve(path: &Path) -> i32 {
    let config = match load_or_report(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let log_filter = init_logging(&config.log_filter);
    let system = actix_web::rt::System::new();
    system.block_on(crate::lifecycle::run(path, config, log_filter))
}
