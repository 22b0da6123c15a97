//! Finding the plugin shared objects built in this workspace, and laying them
//! out as a `plugins.dir`.
//!
//! ```no_run
//! use gateway_tests::plugins::PluginDir;
//!
//! let dir = PluginDir::with(&["rhsm-cert", "katello-token"]); // lib<name>.so in a temp dir
//! let cfg = dir.config(&["rhsm-cert", "katello-token"]);      // a PluginsConfig for it
//! ```
//!
//! Where a plugin's `.so` comes from, first match wins:
//! 1. `$GW_PLUGIN_DIR/lib<crate>.so` when `GW_PLUGIN_DIR` is set (installed
//!    plugins, e.g. in an RPM `%check` or on a VM); a shipped plugin
//!    ([`SHIPPED`]) missing there is an error, test-only plugins fall through;
//! 2. next to the running test binary (`target/<profile>/deps/`): a
//!    `["cdylib", "rlib"]` crate listed in this crate's dependencies is built
//!    there by `cargo test`, which keeps it up to date;
//! 3. `cargo build -p <crate> --message-format=json`, reading the
//!    `compiler-artifact` file names (for plugins that are not dependencies, or
//!    an unusual target layout).
//!
//! Every `.so` is copied once per process into a private staging directory
//! with mode 0755, so the gateway's refusal of group-writable files does not
//! depend on the developer's umask; a [`PluginDir`] holds symlinks to those
//! copies.

use std::collections::HashMap;
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use container_gateway::config::PluginsConfig;

/// Plugins the gateway ships: with `GW_PLUGIN_DIR` set, these must be there.
pub const SHIPPED: [&str; 2] = ["rhsm-cert", "katello-token"];

/// `lib<name with - as _>.so`, the file name `plugins.chain` entries resolve to.
pub fn library_file_name(name: &str) -> String {
    format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

/// The freshly built (or installed) shared object of plugin crate `crate_name`.
/// Panics with an explanation when it cannot be found or built.
pub fn built_library(crate_name: &str) -> PathBuf {
    let file = library_file_name(crate_name);
    if let Some(dir) = std::env::var_os("GW_PLUGIN_DIR") {
        let path = Path::new(&dir).join(&file);
        if path.is_file() {
            return path;
        }
        assert!(
            !SHIPPED.contains(&crate_name),
            "GW_PLUGIN_DIR is set but the shipped plugin {} does not exist",
            path.display()
        );
    }
    if let Some(path) = beside_test_binary(&file) {
        return path;
    }
    cargo_build(crate_name, &file)
}

/// A private, stable copy of [`built_library`], mode 0755.
pub fn staged_library(crate_name: &str) -> PathBuf {
    static STAGED: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    static STAGING: OnceLock<tempfile::TempDir> = OnceLock::new();
    let staging = STAGING.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("gw-plugins-")
            .tempdir()
            .expect("staging dir")
    });
    let mut staged = STAGED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(path) = staged.get(crate_name) {
        return path.clone();
    }
    let source = built_library(crate_name);
    let target = staging.path().join(library_file_name(crate_name));
    std::fs::copy(&source, &target).unwrap_or_else(|e| panic!("copying {}: {e}", source.display()));
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
        .expect("chmod staged plugin");
    staged.insert(crate_name.to_owned(), target.clone());
    target
}

fn beside_test_binary(file: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    // `deps/` for test binaries, its parent for examples and uplifted artifacts.
    [Some(deps), deps.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join(file))
        .find(|p| p.is_file())
}

fn cargo_build(crate_name: &str, file: &str) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--quiet",
        "--message-format=json",
        "-p",
        crate_name,
        "--manifest-path",
    ])
    .arg(&manifest);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("running cargo build -p {crate_name}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut found = None;
    for line in std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
    {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let paths = msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str());
        if let Some(path) = paths
            .map(PathBuf::from)
            .find(|p| p.file_name().is_some_and(|n| n == file))
        {
            found = Some(path);
        }
    }
    let status = child.wait().expect("cargo build exits");
    assert!(status.success(), "cargo build -p {crate_name} failed");
    found.unwrap_or_else(|| panic!("cargo build -p {crate_name} produced no {file}"))
}

/// A temporary `plugins.dir`.
pub struct PluginDir {
    dir: tempfile::TempDir,
}

impl Default for PluginDir {
    fn default() -> Self {
        Self::new()
    }
}

impl PluginDir {
    /// An empty directory (mode 0700).
    pub fn new() -> PluginDir {
        PluginDir {
            dir: tempfile::Builder::new()
                .prefix("gw-plugin-dir-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// A directory holding each named plugin crate under its own name.
    pub fn with(crates: &[&str]) -> PluginDir {
        let dir = PluginDir::new();
        for name in crates {
            dir.add(name, name);
        }
        dir
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Make chain entry `name` load crate `crate_name` (a symlink to the
    /// staged copy). Returns the link's path.
    pub fn add(&self, name: &str, crate_name: &str) -> PathBuf {
        let link = self.path().join(library_file_name(name));
        std::os::unix::fs::symlink(staged_library(crate_name), &link).expect("symlink plugin");
        link
    }

    /// Like [`PluginDir::add`], but a real copy (its own inode, so its own
    /// statics when loaded, and its own permissions to break).
    pub fn add_copy(&self, name: &str, crate_name: &str) -> PathBuf {
        let path = self.path().join(library_file_name(name));
        std::fs::copy(staged_library(crate_name), &path).expect("copy plugin");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod plugin");
        path
    }

    /// A `PluginsConfig` for this directory, with no settings.
    pub fn config(&self, chain: &[&str]) -> PluginsConfig {
        PluginsConfig {
            dir: self.path().to_owned(),
            chain: chain.iter().map(|s| (*s).to_owned()).collect(),
            require_root_owner: true,
            call_timeout: Duration::from_secs(2),
            settings: Default::default(),
        }
    }
}
