//! A real flatpak client with all its state in a temporary directory.
//!
//! * Flatpak 1.14 fetches with libcurl-gnutls, which trusts only the system
//!   bundle `/etc/ssl/certs/ca-certificates.crt` (`SSL_CERT_FILE` and
//!   `CURL_CA_BUNDLE` are ignored; checked). So every flatpak command, and the
//!   private session bus (whose D-Bus-activated `flatpak-oci-authenticator` fetches
//!   tokens and must trust the gateway too), runs in its own mount namespace
//!   (`unshare --mount`) where a copy of that bundle plus the test CA is
//!   bind-mounted over it. The machine's trust store is never changed.
//! * `FLATPAK_USER_DIR`, `FLATPAK_SYSTEM_DIR`, `FLATPAK_CONFIG_DIR`, `HOME` and
//!   every `XDG_*` directory are under the temporary directory; commands get a clean
//!   environment (see [`super::Cmd`]).
//! * A private session bus (`dbus-daemon --nofork` with its own configuration,
//!   started with `XDG_RUNTIME_DIR` already set, so the authenticator reads
//!   `$XDG_RUNTIME_DIR/containers/auth.json`) is required for installs from OCI
//!   remotes. It can activate one service, `flatpak-oci-authenticator`, and
//!   nothing else: a stock session bus activates every service the machine has in
//!   `/usr/share/dbus-1/services`, and with xdg-desktop-portal installed (a
//!   recommended package of flatpak) `flatpak run` activates the document portal,
//!   which FUSE-mounts `$XDG_RUNTIME_DIR/doc` in the bus's mount namespace, where
//!   no flatpak command can see it; bwrap then fails with `Can't find source
//!   path .../doc/by-app/<app>`. Without the service, flatpak runs the app without
//!   the portal. On drop the processes it spawned and the bus itself are killed by PID.
//! * [`IndexRelay`] serves a fixed index body on plain HTTP (see its docs).
//! * [`Client`]: which flatpak an environment drives, Debian's on `PATH` or a
//!   build in its own prefix (flatpak >= 1.16 from `tests/e2e/flatpak-116.sh`),
//!   with that build's own authenticator. Flatpak >= 1.16 presents the client
//!   certificate of `$XDG_CONFIG_HOME/containers/certs.d/<host:port>/` and then
//!   of `$FLATPAK_SYSTEM_CERTS_D` (default `/etc/containers/certs.d:/etc/docker/certs.d`);
//!   the latter is set to an empty private directory, so the machine's are never read.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use bytes::Bytes;

use super::{Cmd, mkdir, write};
use crate::harness::{ServerThread, any_loopback_port};

/// The system bundle libcurl-gnutls reads.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The one D-Bus service the private bus may activate: it fetches registry
/// tokens for installs from OCI remotes.
pub const AUTHENTICATOR: &str = "org.flatpak.Authenticator.Oci";
const AUTHENTICATOR_SERVICE: &str = "org.flatpak.Authenticator.Oci.service";

/// Where D-Bus looks for session services (`XDG_DATA_DIRS` defaults).
const SERVICE_DIRS: [&str; 2] = [
    "/usr/local/share/dbus-1/services",
    "/usr/share/dbus-1/services",
];

/// The authenticator's service file as the flatpak package installs it.
pub fn authenticator_service() -> Result<PathBuf, String> {
    SERVICE_DIRS
        .iter()
        .map(|d| Path::new(d).join(AUTHENTICATOR_SERVICE))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no {AUTHENTICATOR_SERVICE} in {} (the flatpak package installs it)",
                SERVICE_DIRS.join(" or ")
            )
        })
}

/// A session bus whose only service directory is `services`: nothing of the
/// machine's (portals, accessibility bus, flatpak-session-helper, dconf) can be
/// activated on it. The policy is the stock session bus's. dbus-daemon refuses a
/// configuration without `<listen>`; the `--address` it is started with replaces it.
fn bus_config(services: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:tmpdir=/tmp</listen>
  <servicedir>{}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
        services.display()
    )
}

/// Binds `$1` over the system bundle, then runs the rest.
const BIND_AND_EXEC: &str =
    "mount --bind \"$1\" /etc/ssl/certs/ca-certificates.crt && shift && exec \"$@\"";

/// The `unshare` arguments that work here (root: a plain mount namespace;
/// otherwise one inside a user namespace).
fn unshare_args() -> Result<&'static [&'static str], String> {
    static ARGS: OnceLock<Result<&'static [&'static str], String>> = OnceLock::new();
    ARGS.get_or_init(|| {
        if !Path::new(SYSTEM_BUNDLE).is_file() {
            return Err(format!(
                "{SYSTEM_BUNDLE} is missing (install ca-certificates)"
            ));
        }
        let probe_dir = tempfile::Builder::new()
            .prefix("cg-e2e-ns-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let probe = write(&probe_dir.path().join("bundle.crt"), "probe-bundle\n");
        let candidates: [&'static [&'static str]; 2] = [
            &["--mount", "--propagation", "private"],
            &["--mount", "--map-root-user", "--propagation", "private"],
        ];
        let mut errors = Vec::new();
        for args in candidates {
            let out = Cmd::new("unshare")
                .args(args)
                .args(["--", "sh", "-c", BIND_AND_EXEC, "sh"])
                .arg(&probe)
                .args(["cat", SYSTEM_BUNDLE])
                .timeout(Duration::from_secs(20))
                .run();
            if out.success() && out.stdout == "probe-bundle\n" {
                return Ok(args);
            }
            errors.push(out.stderr.trim().to_owned());
        }
        Err(format!(
            "cannot bind-mount a CA bundle in a private mount namespace (unshare: {})",
            errors.join(" / ")
        ))
    })
    .clone()
}

/// Whether flatpak can be made to trust the test CA without touching the system
/// store, and the authenticator can be offered on the private bus.
pub fn ca_namespace_works() -> Result<(), String> {
    authenticator_service()?;
    unshare_args().map(|_| ())
}

/// Wrap `program args...` so that it runs with `bundle` as the system CA bundle.
fn in_ca_namespace(bundle: &Path, program: impl AsRef<std::ffi::OsStr>) -> Cmd {
    let args = unshare_args().unwrap_or_else(|e| panic!("{e}"));
    Cmd::new("unshare")
        .args(args)
        .args(["--", "sh", "-c", BIND_AND_EXEC, "sh"])
        .arg(bundle)
        .arg(program)
}

/// A flatpak client: its executable and the service file of its
/// `flatpak-oci-authenticator` (whose `Exec=` names that build's own).
#[derive(Clone, Debug)]
pub struct Client {
    pub program: PathBuf,
    pub authenticator_service: PathBuf,
}

impl Client {
    /// The flatpak on `PATH` (Debian's) and the service file its package installs.
    pub fn system() -> Result<Client, String> {
        Ok(Client {
            program: PathBuf::from("flatpak"),
            authenticator_service: authenticator_service()?,
        })
    }

    /// A build installed with `--prefix=<prefix>`.
    pub fn in_prefix(prefix: &Path) -> Result<Client, String> {
        let client = Client {
            program: prefix.join("bin/flatpak"),
            authenticator_service: prefix
                .join("share/dbus-1/services")
                .join(AUTHENTICATOR_SERVICE),
        };
        for p in [&client.program, &client.authenticator_service] {
            if !p.is_file() {
                return Err(format!("{} is missing", p.display()));
            }
        }
        Ok(client)
    }
}

/// Flatpak state, a CA bundle and a private session bus in a temporary directory.
pub struct FlatpakEnv {
    client: Client,
    dir: tempfile::TempDir,
    bundle: PathBuf,
    vars: Vec<(OsString, OsString)>,
    bus: Option<Child>,
}

impl FlatpakEnv {
    /// Trust `ca_pem` (on top of the system bundle) and start the session bus.
    pub fn new(ca_pem: &str) -> FlatpakEnv {
        FlatpakEnv::with_client(ca_pem, Client::system().unwrap_or_else(|e| panic!("{e}")))
    }

    /// [`FlatpakEnv::new`] driving `client`.
    pub fn with_client(ca_pem: &str, client: Client) -> FlatpakEnv {
        let dir = tempfile::Builder::new()
            .prefix("cg-e2e-flatpak-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().to_owned();
        let mut bundle = std::fs::read(SYSTEM_BUNDLE).unwrap_or_default();
        bundle.extend_from_slice(b"\n");
        bundle.extend_from_slice(ca_pem.as_bytes());
        let bundle = write(&root.join("ca-bundle.crt"), bundle);
        let runtime = mkdir(&root.join("run"));
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700))
                .expect("chmod XDG_RUNTIME_DIR");
        }
        let mut vars: Vec<(OsString, OsString)> = Vec::new();
        let mut set = |k: &str, v: PathBuf| {
            mkdir(&v);
            vars.push((k.into(), v.into()));
        };
        set("HOME", root.join("home"));
        set("FLATPAK_USER_DIR", root.join("flatpak/user"));
        set("FLATPAK_SYSTEM_DIR", root.join("flatpak/system"));
        set("FLATPAK_CONFIG_DIR", root.join("flatpak/config"));
        set("XDG_CACHE_HOME", root.join("xdg/cache"));
        set("XDG_DATA_HOME", root.join("xdg/data"));
        set("XDG_CONFIG_HOME", root.join("xdg/config"));
        set("XDG_RUNTIME_DIR", runtime);
        set("TMPDIR", root.join("tmp"));
        set("FLATPAK_SYSTEM_CERTS_D", root.join("system-certs.d"));
        let socket = root.join("bus.sock");
        vars.push((
            "DBUS_SESSION_BUS_ADDRESS".into(),
            format!("unix:path={}", socket.display()).into(),
        ));
        vars.push(("GSETTINGS_BACKEND".into(), "memory".into()));
        vars.push(("GIO_USE_VFS".into(), "local".into()));
        let mut env = FlatpakEnv {
            client,
            dir,
            bundle,
            vars,
            bus: None,
        };
        env.start_bus(&socket);
        env
    }

    /// The private session bus, in the CA namespace, started by PID.
    fn start_bus(&mut self, socket: &Path) {
        let root = self.dir.path();
        let service = self.client.authenticator_service.clone();
        let services = mkdir(&root.join("dbus-services"));
        std::fs::copy(&service, services.join(AUTHENTICATOR_SERVICE))
            .unwrap_or_else(|e| panic!("{}: {e}", service.display()));
        let config = write(&root.join("bus.conf"), bus_config(&services));
        let child = in_ca_namespace(&self.bundle, "dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args([
                "--nofork".to_owned(),
                "--nopidfile".to_owned(),
                format!("--address=unix:path={}", socket.display()),
            ])
            .envs(&self.vars)
            .spawn(&self.dir.path().join("dbus.log"));
        self.bus = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if let Some(Ok(Some(status))) = self.bus.as_mut().map(Child::try_wait) {
                panic!(
                    "the session bus exited ({status}): {}",
                    std::fs::read_to_string(self.dir.path().join("dbus.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "the session bus did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `flatpak <args>` in this environment (in the CA namespace; 120 s deadline).
    pub fn flatpak(&self, args: &[&str]) -> Cmd {
        in_ca_namespace(&self.bundle, &self.client.program)
            .args(args)
            .envs(&self.vars)
            .cwd(self.dir.path())
    }

    /// Credentials for the authenticator: `$XDG_RUNTIME_DIR/containers/auth.json`
    /// (what `podman login` writes), keyed by `host:port` of the registry.
    pub fn write_auth_json(&self, registry_host: &str, user: &str, password: &str) -> PathBuf {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let body = serde_json::json!({"auths": {registry_host: {"auth": auth}}});
        write(
            &self
                .var_path("XDG_RUNTIME_DIR")
                .join("containers/auth.json"),
            serde_json::to_vec_pretty(&body).expect("auth.json"),
        )
    }

    /// The value of one of the environment's directories.
    pub fn var_path(&self, name: &str) -> PathBuf {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| panic!("{name} is not set"))
    }

    /// Where flatpak >= 1.16 looks first for the client certificate
    /// (`*.cert` + `*.key`) and CA (`*.crt`) it uses for `host_port`:
    /// `$XDG_CONFIG_HOME/containers/certs.d/<host:port>`.
    pub fn certs_d(&self, host_port: &str) -> PathBuf {
        self.var_path("XDG_CONFIG_HOME")
            .join("containers/certs.d")
            .join(host_port)
    }

    /// Where flatpak keeps a remote's cached index (`<remote>.index.gz`, ...).
    pub fn index_cache(&self, remote: &str) -> Vec<PathBuf> {
        let dir = self.var_path("FLATPAK_USER_DIR").join("oci");
        std::fs::read_dir(&dir)
            .map(|it| {
                it.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{remote}.")))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The services the private bus has activated so far, from its log
    /// (`Activating service name='...'`), in order, without repeats.
    pub fn activated_services(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.path().join("dbus.log")).unwrap_or_default();
        let mut out: Vec<String> = Vec::new();
        for rest in log.split("Activating service name='").skip(1) {
            if let Some(name) = rest.split('\'').next()
                && !out.iter().any(|n| n == name)
            {
                out.push(name.to_owned());
            }
        }
        out
    }

    /// Stop the bus and everything it started (the authenticator), by PID.
    /// D-Bus activation double-forks, so an activated service is not below the
    /// bus in the process tree: it is found by the bus address in its
    /// environment (`DBUS_STARTER_ADDRESS`), which names this environment's socket.
    pub fn stop(&mut self) {
        let Some(mut bus) = self.bus.take() else {
            return;
        };
        let socket = self.dir.path().join("bus.sock");
        let mut pids = descendants(bus.id());
        for pid in activated_by(&socket) {
            if pid != bus.id() && !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        if !pids.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(pids.iter().map(u32::to_string))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = bus.kill();
        let _ = bus.wait();
    }
}

impl Drop for FlatpakEnv {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Processes started by the bus listening on `socket`: their environment has
/// `DBUS_STARTER_ADDRESS=unix:path=<socket>,guid=...`.
pub fn activated_by(socket: &Path) -> Vec<u32> {
    let needle = format!("DBUS_STARTER_ADDRESS=unix:path={}", socket.display());
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(environ) = std::fs::read(e.path().join("environ")) else {
                continue;
            };
            let hit = environ.split(|b| *b == 0).any(|var| {
                var.starts_with(needle.as_bytes())
                    && matches!(var.get(needle.len()), None | Some(b','))
            });
            if hit {
                out.push(pid);
            }
        }
    }
    out
}

/// Every process below `root` (children, grandchildren, ...), from `/proc`.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may contain spaces and parentheses.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = after
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok())
            {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (child, _) in parent_of.iter().filter(|(_, pp)| *pp == p) {
            if !out.contains(child) {
                out.push(*child);
                frontier.push(*child);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// A fixed index on plain HTTP
// ---------------------------------------------------------------------------

/// Serves one index body at `/index/static` (and `/index/dynamic`) on plain
/// HTTP, `Cache-Control: no-cache`. Flatpak 1.14 cannot present a client
/// certificate, so it only ever gets the anonymous index from the gateway; the
/// suite fetches a host's index from the gateway with that host's certificate
/// (what flatpak >= 1.16.1 does through `certs.d`) and hands it to flatpak 1.14
/// through this relay. The body's `Registry` names the gateway, so every
/// manifest, blob and token request still goes to the gateway.
pub struct IndexRelay {
    server: ServerThread,
    hits: Arc<AtomicU64>,
}

impl IndexRelay {
    pub fn start(body: Bytes) -> io::Result<IndexRelay> {
        let hits = Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        let server = ServerThread::start("index-relay", any_loopback_port(), move |l| {
            Ok(HttpServer::new(move || {
                let body = body.clone();
                let counter = counter.clone();
                App::new().default_service(web::to(move |req: HttpRequest| {
                    let body = body.clone();
                    let counter = counter.clone();
                    async move {
                        let p = req.path().trim_end_matches('/');
                        if p.ends_with("/index/static") || p.ends_with("/index/dynamic") {
                            counter.fetch_add(1, Ordering::SeqCst);
                            HttpResponse::Ok()
                                .content_type("application/json")
                                .insert_header(("Cache-Control", "no-cache"))
                                .body(body)
                        } else {
                            HttpResponse::NotFound().finish()
                        }
                    }
                }))
            })
            .workers(1)
            .disable_signals()
            .shutdown_timeout(1)
            .listen(l)?
            .run())
        })?;
        Ok(IndexRelay { server, hits })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// How many index requests it answered.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}
