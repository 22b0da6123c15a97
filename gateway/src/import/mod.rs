//! `container-gateway import-settings`: a gateway.toml from the settings of
//! the Ruby smart-proxy plugin it replaces (foreman-proxy's `settings.yml` and
//! `settings.d/container_gateway.yml`), with a comment on every key saying
//! where its value came from, and a report of where each source key went or
//! why it has no equivalent.

mod map;
mod render;
mod yaml;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use map::{Env, Imported, RHSM_KATELLO_CA, import, parse_url};
pub use render::{Outcome, Report};
pub use yaml::{SettingsFile, Value};

/// A written file cannot be replaced, stdout is gone, or the import itself is wrong.
pub const EXIT_RUNTIME: i32 = 1;
/// A settings file cannot be read (missing, permissions).
pub const EXIT_UNREADABLE: i32 = 3;
/// A settings file is not YAML, or not a mapping of settings.
pub const EXIT_MALFORMED: i32 = 4;
/// A setting is missing or holds a value that cannot be carried over.
pub const EXIT_INVALID: i32 = 5;
/// `--output` names an existing file and `--force` was not given.
pub const EXIT_OUTPUT_EXISTS: i32 = 6;

pub const EXIT_CODES_HELP: &str = "\
Exit status: 0 written; 1 cannot write the output; 3 a settings file cannot be
read; 4 a settings file is not valid YAML; 5 a setting is missing or unusable;
6 the output file exists (pass --force to replace it).";

/// The Ruby plugin's two settings files, as `import-settings` and `migrate` read them.
#[derive(clap::Args, Debug, Clone)]
pub struct SettingsFiles {
    /// foreman-proxy's settings.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/foreman-proxy/settings.yml"
    )]
    pub proxy_settings: PathBuf,
    /// smart_proxy_container_gateway's settings.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/foreman-proxy/settings.d/container_gateway.yml"
    )]
    pub plugin_settings: PathBuf,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    #[command(flatten)]
    pub settings: SettingsFiles,
    /// Write gateway.toml here (and the report to standard output) instead of
    /// to standard output (and the report to standard error).
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Replace the --output file if it exists.
    #[arg(long, requires = "output")]
    pub force: bool,
    /// This machine's name, for the Ruby plugin's `https://<hostname>`
    /// defaults [default: the system hostname].
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {}: {message}", path.display())]
    Unreadable { path: PathBuf, message: String },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {key} {message}", located(path, *line))]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    #[error("{}: {key} is not set: {message}", path.display())]
    Missing {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("cannot tell this machine's hostname, which {needed_for} defaults to: pass --hostname")]
    NoHostname { needed_for: String },
    #[error("{hostname:?} is not a host name: pass --hostname")]
    BadHostname { hostname: String },
    #[error("{} exists: pass --force to replace it", path.display())]
    OutputExists { path: PathBuf },
    #[error("cannot write {}: {message}", path.display())]
    Write { path: PathBuf, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

fn located(path: &Path, line: usize) -> String {
    if line > 0 {
        format!("{}:{line}", path.display())
    } else {
        path.display().to_string()
    }
}

impl ImportError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ImportError::Unreadable { .. } => EXIT_UNREADABLE,
            ImportError::Malformed { .. } => EXIT_MALFORMED,
            ImportError::Invalid { .. }
            | ImportError::Missing { .. }
            | ImportError::NoHostname { .. }
            | ImportError::BadHostname { .. } => EXIT_INVALID,
            ImportError::OutputExists { .. } => EXIT_OUTPUT_EXISTS,
            ImportError::Write { .. } | ImportError::Internal(_) => EXIT_RUNTIME,
        }
    }
}

/// Read both files and build the configuration, without writing anything.
pub fn import_files(proxy: &Path, plugin: &Path, env: &Env) -> Result<Imported, ImportError> {
    let proxy = SettingsFile::load(proxy)?;
    let plugin = SettingsFile::load(plugin)?;
    let imported = import(&proxy, &plugin, env)?;
    // What the import writes must be a configuration the gateway parses;
    // anything else is a bug here, not in the admin's files.
    crate::config::parse(&imported.toml).map_err(|p| {
        ImportError::Internal(format!("the written configuration does not parse: {p}"))
    })?;
    Ok(imported)
}

/// The command: exit status as documented in [`EXIT_CODES_HELP`].
pub fn run(args: &ImportArgs) -> i32 {
    match run_inner(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("container-gateway import-settings: {e}");
            e.exit_code()
        }
    }
}

fn run_inner(args: &ImportArgs) -> Result<(), ImportError> {
    // Refuse early, before the admin reads a report about a file never written.
    if let Some(out) = &args.output
        && !args.force
        && std::fs::symlink_metadata(out).is_ok()
    {
        return Err(ImportError::OutputExists { path: out.clone() });
    }
    let env = Env {
        hostname: args.hostname.clone().or_else(system_hostname),
        rhsm_ca: PathBuf::from(RHSM_KATELLO_CA),
    };
    let imported = import_files(
        &args.settings.proxy_settings,
        &args.settings.plugin_settings,
        &env,
    )?;
    let report = imported.report.render(args.output.as_deref());
    match &args.output {
        Some(path) => {
            write_output(path, &imported.toml, args.force)?;
            print_to(
                &mut std::io::stdout(),
                &report,
                Path::new("standard output"),
            )?;
        }
        None => {
            print_to(
                &mut std::io::stdout(),
                &imported.toml,
                Path::new("standard output"),
            )?;
            print_to(&mut std::io::stderr(), &report, Path::new("standard error"))?;
        }
    }
    Ok(())
}

fn print_to(w: &mut dyn Write, text: &str, name: &Path) -> Result<(), ImportError> {
    w.write_all(text.as_bytes())
        .and_then(|()| w.flush())
        .map_err(|e| ImportError::Write {
            path: name.to_owned(),
            message: e.to_string(),
        })
}

/// What `hostname` prints, as the Ruby plugin's default took it.
fn system_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Write `text` to `path` whole or not at all: a temporary file beside it,
/// renamed over it (`force`) or linked into place only if nothing is there.
pub fn write_output(path: &Path, text: &str, force: bool) -> Result<(), ImportError> {
    let write_err = |e: &dyn std::fmt::Display| ImportError::Write {
        path: path.to_owned(),
        message: e.to_string(),
    };
    // The file names paths only, no secrets; the gateway's own user must read it.
    let existing = if force {
        crate::files::Existing::Replace
    } else {
        crate::files::Existing::Keep
    };
    crate::files::write_whole(path, text.as_bytes(), 0o644, None, existing).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            ImportError::OutputExists {
                path: path.to_owned(),
            }
        } else {
            write_err(&e)
        }
    })
}

#[cfg(test)]
mod tests;
