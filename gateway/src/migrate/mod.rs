//! `container-gateway migrate`: from smart_proxy_container_gateway's settings
//! to a gateway that takes its place, in one command.
//!
//! It writes gateway.toml (from `import-settings`, plus `management.listen`
//! so that Foreman can register the gateway as a smart proxy), points the
//! installer's Apache `ProxyPass` lines for `/v1/`, `/v2/` and `/index/` at
//! the gateway's plain listener, and sets the installer's hiera flag that
//! turns the Ruby plugin off. `--dry-run` prints all of it and writes
//! nothing; a real run backs every file up first; `--rollback` restores them.
//! It runs no service command: it prints the ones that come next.

mod backup;
pub mod edit;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::import::{self, Env, ImportError, RHSM_KATELLO_CA, SettingsFile};
use backup::{Manifest, Restored};
use edit::Edit;

pub const EXIT_CODES_HELP: &str = "\
Exit status: 0 done (or, with --dry-run, nothing wrong found); 1 a file cannot
be read or written; 3-5 as import-settings for the settings files; 6 the vhost
or configuration cannot be migrated as found (see the message).";

/// Exit status when the files are not as `migrate` can handle.
pub const EXIT_UNMIGRATABLE: i32 = 6;

/// Ports tried for `management.listen`, past foreman-proxy's and the client listeners'.
const MANAGEMENT_PORTS: [u16; 4] = [9443, 10443, 11443, 12443];

#[derive(clap::Args, Debug, Clone)]
pub struct MigrateArgs {
    /// Print every change and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Put back every file a previous migrate changed, from its backups.
    #[arg(long)]
    pub rollback: bool,
    #[command(flatten)]
    pub settings: import::SettingsFiles,
    /// The gateway configuration to write.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/container-gateway/gateway.toml"
    )]
    pub config: PathBuf,
    /// Replace --config when it exists with other contents (it is backed up).
    /// Without it an existing file is kept and its listeners are used.
    #[arg(long)]
    pub replace_config: bool,
    /// An Apache file with the installer's `## Container Gateway` lines (may
    /// be repeated) [default: every *.conf in --httpd-conf-dir that has them].
    #[arg(long = "vhost", value_name = "PATH")]
    pub vhosts: Vec<PathBuf>,
    #[arg(long, value_name = "DIR", default_value = "/etc/httpd/conf.d")]
    pub httpd_conf_dir: PathBuf,
    /// foreman-installer's custom hiera file.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/foreman-installer/custom-hiera.yaml"
    )]
    pub hiera: PathBuf,
    /// Where the backups and their manifest are kept.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/container-gateway-migrate"
    )]
    pub backup_dir: PathBuf,
    /// foreman-proxy's VERSION file, copied to `management.proxy_version`.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/usr/share/foreman-proxy/VERSION"
    )]
    pub foreman_proxy_version: PathBuf,
    /// Port of `management.listen` [default: the first of 9443, 10443, ...
    /// that foreman-proxy and the client listeners do not use].
    #[arg(long, value_name = "PORT")]
    pub management_port: Option<u16>,
    /// This machine's name [default: the system hostname].
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Import(#[from] ImportError),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Unmigratable(String),
}

impl MigrateError {
    fn exit_code(&self) -> i32 {
        match self {
            MigrateError::Import(e) => e.exit_code(),
            MigrateError::Io(_) => 1,
            MigrateError::Unmigratable(_) => EXIT_UNMIGRATABLE,
        }
    }
}

/// One file migrate would write.
#[derive(Debug, Clone)]
pub struct Change {
    pub path: PathBuf,
    pub what: &'static str,
    pub existed: bool,
    pub after: Vec<u8>,
    /// Line edits to show; empty for a file shown whole.
    pub edits: Vec<Edit>,
}

/// Everything migrate found and would do.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Files looked at and already as wanted, or kept on purpose.
    pub unchanged: Vec<String>,
    pub warnings: Vec<String>,
    pub hostname: String,
    pub management_port: Option<u16>,
    pub vhosts: Vec<PathBuf>,
}

pub fn run(args: &MigrateArgs) -> i32 {
    let result = if args.rollback {
        rollback(args)
    } else {
        migrate(args)
    };
    match result {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("container-gateway migrate: {e}");
            e.exit_code()
        }
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, MigrateError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MigrateError::Io(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, MigrateError> {
    String::from_utf8(bytes)
        .map_err(|_| MigrateError::Unmigratable(format!("{} is not UTF-8 text", path.display())))
}

/// Work out every change without writing anything.
pub fn plan(args: &MigrateArgs) -> Result<Plan, MigrateError> {
    let env = Env {
        hostname: args.hostname.clone().or_else(system_hostname),
        rhsm_ca: PathBuf::from(RHSM_KATELLO_CA),
    };
    let imported = import::import_files(
        &args.settings.proxy_settings,
        &args.settings.plugin_settings,
        &env,
    )?;
    let mut plan = Plan {
        hostname: env.hostname.clone().unwrap_or_else(|| "<this host>".into()),
        ..Plan::default()
    };

    // gateway.toml: the import's, with the management listener added; an
    // existing other file is the admin's and is kept unless told otherwise.
    let proxy_ports = foreman_proxy_ports(&args.settings.proxy_settings)?;
    let existing = read_optional(&args.config)?;
    let imported_file = crate::config::parse(&imported.toml)
        .map_err(|p| MigrateError::Io(format!("internal error: the import does not parse: {p}")))?;
    let mut taken = proxy_ports.clone();
    taken.extend(ports(&imported_file.server.listen));
    taken.extend(ports(&imported_file.server.listen_plain));
    let management_port = match args.management_port {
        Some(p) => p,
        None => MANAGEMENT_PORTS
            .into_iter()
            .find(|p| !taken.contains(p))
            .ok_or_else(|| {
                MigrateError::Unmigratable(
                    "no free port for management.listen: pass --management-port".into(),
                )
            })?,
    };
    let (proxy_version, version_note) = proxy_version(&args.foreman_proxy_version);
    if let Some(note) = version_note {
        plan.warnings.push(note);
    }
    let wanted = with_management(&imported.toml, management_port, &proxy_version);
    let config_text = match &existing {
        Some(bytes) if bytes.as_slice() == wanted.as_bytes() => {
            plan.unchanged.push(format!(
                "{}: already as migrate writes it",
                args.config.display()
            ));
            wanted.clone()
        }
        Some(bytes) if !args.replace_config => {
            let text = utf8(&args.config, bytes.clone())?;
            plan.unchanged.push(format!(
                "{}: exists and differs from the import; kept (--replace-config replaces it); its listeners are used",
                args.config.display()
            ));
            text
        }
        _ => {
            plan.changes.push(Change {
                path: args.config.clone(),
                what: "gateway configuration",
                existed: existing.is_some(),
                after: wanted.clone().into_bytes(),
                edits: Vec::new(),
            });
            wanted.clone()
        }
    };
    let file = crate::config::parse(&config_text).map_err(|p| {
        MigrateError::Unmigratable(format!("{} does not parse: {p}", args.config.display()))
    })?;
    let plain = file.server.listen_plain.first().cloned().ok_or_else(|| {
        MigrateError::Unmigratable(format!(
            "{} has no server.listen_plain for Apache to forward to",
            args.config.display()
        ))
    })?;
    plan.management_port = match file.management.listen.first() {
        Some(addr) => addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok()),
        None => {
            plan.warnings.push(format!(
                "{} sets no management.listen: Foreman cannot register the gateway until it does",
                args.config.display()
            ));
            None
        }
    };

    // Apache.
    let vhosts = if args.vhosts.is_empty() {
        find_vhosts(&args.httpd_conf_dir, &plain)?
    } else {
        args.vhosts.clone()
    };
    if vhosts.is_empty() {
        plan.warnings.push(format!(
            "no file in {} sends /v2/ to the Ruby plugin: point Apache at http://{plain}/ by hand (README, \"Clients: Apache's ProxyPass lines\")",
            args.httpd_conf_dir.display()
        ));
    }
    for path in &vhosts {
        let bytes = std::fs::read(path)
            .map_err(|e| MigrateError::Io(format!("cannot read {}: {e}", path.display())))?;
        let text = utf8(path, bytes)?;
        let r = edit::rewrite_vhost(&text, &plain);
        for left in &r.left {
            plan.warnings.push(format!(
                "{}:{}: left as it is, the gateway serves no such path: {}",
                path.display(),
                left.line,
                left.old.as_deref().unwrap_or_default()
            ));
        }
        if r.edits.is_empty() {
            plan.unchanged.push(format!(
                "{}: already sends clients to the gateway",
                path.display()
            ));
        } else {
            plan.changes.push(Change {
                path: path.clone(),
                what: "Apache vhost",
                existed: true,
                after: r.text.into_bytes(),
                edits: r.edits,
            });
        }
    }
    plan.vhosts = vhosts;

    // The installer.
    let hiera = match read_optional(&args.hiera)? {
        Some(b) => Some(utf8(&args.hiera, b)?),
        None => None,
    };
    let (text, edits) = edit::disable_in_hiera(hiera.as_deref());
    if edits.is_empty() {
        plan.unchanged.push(format!(
            "{}: already has {}: false",
            args.hiera.display(),
            edit::HIERA_KEY
        ));
    } else {
        plan.changes.push(Change {
            path: args.hiera.clone(),
            what: "installer hiera",
            existed: hiera.is_some(),
            after: text.into_bytes(),
            edits,
        });
    }
    Ok(plan)
}

fn migrate(args: &MigrateArgs) -> Result<String, MigrateError> {
    let plan = plan(args)?;
    let mut out = String::new();
    if args.dry_run {
        let _ = writeln!(out, "Dry run: nothing is written. migrate would:");
    }
    describe(&mut out, &plan, args);
    if !args.dry_run && !plan.changes.is_empty() {
        let mut manifest = Manifest::load(&args.backup_dir).map_err(MigrateError::Io)?;
        for change in &plan.changes {
            manifest
                .back_up(&args.backup_dir, &change.path)
                .map_err(MigrateError::Io)?;
            let (mode, owner) = backup::current_mode(&change.path);
            backup::write_atomic(&change.path, &change.after, mode, owner)
                .map_err(MigrateError::Io)?;
            let _ = writeln!(out, "wrote {}", change.path.display());
        }
        let _ = writeln!(
            out,
            "Backups: {} (container-gateway migrate --rollback puts them back)",
            args.backup_dir.display()
        );
    }
    next_steps(&mut out, &plan, args);
    Ok(out)
}

fn describe(out: &mut String, plan: &Plan, args: &MigrateArgs) {
    let verb = if args.dry_run {
        "would change"
    } else {
        "changes"
    };
    if plan.changes.is_empty() {
        let _ = writeln!(out, "Nothing to change.");
    }
    for c in &plan.changes {
        let how = if c.existed { verb } else { "would create" };
        let how = if !args.dry_run && !c.existed {
            "creates"
        } else {
            how
        };
        let _ = writeln!(out, "\n== {} ({}) {how}:", c.path.display(), c.what);
        if c.edits.is_empty() {
            for line in String::from_utf8_lossy(&c.after).lines() {
                let _ = writeln!(out, "  + {line}");
            }
        }
        for e in &c.edits {
            match &e.old {
                Some(old) => {
                    let _ = writeln!(out, "  line {}: - {}", e.line, old.trim());
                    let _ = writeln!(out, "  line {}: + {}", e.line, e.new.trim());
                }
                None => {
                    let _ = writeln!(out, "  line {}: + {} (inserted)", e.line, e.new.trim());
                }
            }
        }
    }
    for u in &plan.unchanged {
        let _ = writeln!(out, "unchanged: {u}");
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
}

fn next_steps(out: &mut String, plan: &Plan, args: &MigrateArgs) {
    let host = &plan.hostname;
    let config = args.config.display();
    let _ = writeln!(out, "\nNext, as root (migrate runs none of these):");
    let mut steps = vec![
        "foreman-installer   # applies the hiera flag: foreman-proxy stops serving the Ruby plugin; it also rewrites the vhost, so:".to_owned(),
        "container-gateway migrate   # again, same arguments: puts the ProxyPass lines back on the gateway (changes only what the installer reverted)".to_owned(),
    ];
    let mut relabel: Vec<String> = plan
        .vhosts
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    relabel.push(config.to_string());
    steps.push(format!("restorecon -v {}", relabel.join(" ")));
    steps.push(format!("container-gateway check-config --config {config}"));
    steps.push("systemctl enable --now container-gateway".into());
    steps.push("apachectl configtest && systemctl reload httpd".into());
    steps.push(format!(
        "hammer proxy refresh-features --name {host}   # its record loses Container_Gateway"
    ));
    match plan.management_port {
        Some(port) => steps.push(format!(
            "hammer proxy create --name {host}-container-gateway --url https://{host}:{port} --organizations <the proxy's> --locations <the proxy's>   # Foreman reads /v2/features from the gateway"
        )),
        None => steps.push(
            "set management.listen, restart the gateway, then hammer proxy create --url https://<host>:<its port>".into(),
        ),
    }
    steps.push(
        "hammer capsule content synchronize --name <this proxy>   # the first push; /readyz turns 200 once Pulp has answered too".into(),
    );
    for (i, s) in steps.iter().enumerate() {
        let _ = writeln!(out, "  {}. {s}", i + 1);
    }
    if let Some(port) = plan.management_port {
        let _ = writeln!(
            out,
            "Open TCP {port} to the Katello server only. With SELinux enforcing, Apache needs httpd_can_network_connect to reach the gateway."
        );
    }
}

fn rollback(args: &MigrateArgs) -> Result<String, MigrateError> {
    let manifest = Manifest::load(&args.backup_dir).map_err(MigrateError::Io)?;
    let mut out = String::new();
    if manifest.files.is_empty() {
        let _ = writeln!(
            out,
            "Nothing to roll back: {} holds no backup manifest.",
            args.backup_dir.display()
        );
        return Ok(out);
    }
    if args.dry_run {
        let _ = writeln!(out, "Dry run: nothing is written. --rollback would:");
    }
    for entry in &manifest.files {
        let done =
            backup::restore(&args.backup_dir, entry, args.dry_run).map_err(MigrateError::Io)?;
        let line = match done {
            Restored::From(src) => {
                format!("restore {} from {}", entry.path.display(), src.display())
            }
            Restored::Removed => format!(
                "remove {} (it did not exist before migrate)",
                entry.path.display()
            ),
            Restored::AlreadyAbsent => {
                format!("leave {} absent (as before migrate)", entry.path.display())
            }
        };
        let _ = writeln!(out, "{}{line}", if args.dry_run { "would " } else { "" });
    }
    if !args.dry_run {
        backup::discard(&args.backup_dir, &manifest).map_err(MigrateError::Io)?;
        let _ = writeln!(
            out,
            "Backups removed: every file is as it was before migrate."
        );
        let _ = writeln!(
            out,
            "\nNext, as root: systemctl disable --now container-gateway; foreman-installer (turns the Ruby plugin back on); hammer proxy delete --name <host>-container-gateway; hammer proxy refresh-features --name <host>; synchronize the smart proxy."
        );
    }
    Ok(out)
}

/// foreman-proxy's own ports, which the management listener must not take.
fn foreman_proxy_ports(path: &Path) -> Result<Vec<u16>, MigrateError> {
    let settings = SettingsFile::load(path)?;
    let mut taken = Vec::new();
    for name in ["https_port", "http_port"] {
        if let Some((value, _)) = settings.scalar(name)?
            && let Ok(p) = value.parse::<u16>()
        {
            taken.push(p);
        }
    }
    Ok(taken)
}

fn ports(addrs: &[String]) -> Vec<u16> {
    addrs
        .iter()
        .filter_map(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .collect()
}

/// The installed foreman-proxy's version, or "" (the gateway's) with why.
fn proxy_version(path: &Path) -> (String, Option<String>) {
    match std::fs::read_to_string(path) {
        Ok(v) if crate::config::is_version(v.trim()) => (v.trim().to_owned(), None),
        Ok(v) => (
            String::new(),
            Some(format!(
                "{} holds {:?}, not a version: /version reports the gateway's",
                path.display(),
                v.trim()
            )),
        ),
        Err(e) => (
            String::new(),
            Some(format!(
                "cannot read {} ({e}): /version reports the gateway's version, and Foreman may show a version warning",
                path.display()
            )),
        ),
    }
}

/// The import's gateway.toml with `management.listen` and
/// `management.proxy_version` at the top of its `[management]` table.
fn with_management(toml: &str, port: u16, proxy_version: &str) -> String {
    let lines = format!(
        "# Written by `container-gateway migrate`: register this listener in Foreman\n\
         # as a smart proxy (hammer proxy create --url https://<this host>:{port}).\n\
         listen = [\"0.0.0.0:{port}\"]\n\n\
         # The installed foreman-proxy's version, which /version reports.\n\
         proxy_version = \"{proxy_version}\"\n\n"
    );
    match toml.find("\n[management]\n") {
        Some(i) => {
            let at = i + "\n[management]\n".len();
            format!("{}{lines}{}", &toml[..at], &toml[at..])
        }
        None => format!("{toml}\n[management]\n{lines}"),
    }
}

/// Every `*.conf` in `dir` with a `ProxyPass` line to the Ruby plugin, or
/// (migrated already) to the gateway's plain listener `plain`, sorted.
fn find_vhosts(dir: &Path, plain: &str) -> Result<Vec<PathBuf>, MigrateError> {
    let gateway = format!("http://{plain}/");
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(MigrateError::Io(format!(
                "cannot list {}: {e}",
                dir.display()
            )));
        }
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "conf") || !path.is_file() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let ours = text.lines().any(|l| {
            let mut w = l.split_whitespace();
            w.next()
                .is_some_and(|d| d.eq_ignore_ascii_case("ProxyPass"))
                && w.nth(1)
                    .is_some_and(|t| t.contains("/container_gateway/") || t.starts_with(&gateway))
        });
        if ours {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

fn system_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}
