//! Support for the end-to-end suite that drives the real clients (skopeo,
//! podman, flatpak) through the gateway against a real registry
//! ([`crate::registry_upstream`]). Used by `tests/tests/e2e_real_clients.rs`.
//!
//! ```no_run
//! use gateway_tests::e2e::{self, stack::Stack};
//!
//! if !e2e::ready("my_test", e2e::Needs::Containers) { return; } // prints SKIPPED (or fails with CG_REQUIRE_E2E=1)
//! let stack = Stack::start();                  // upstream + images pushed + fake central + gateway (TLS)
//! let tools = stack.container_tools();         // isolated skopeo/podman config, storage and certs
//! let out = tools.skopeo(&["inspect", "--cert-dir"]).run();
//! ```
//!
//! * [`ready`]: checks the tools ([`ALL_TOOLS`]: `skopeo`, `podman`, `flatpak`,
//!   `docker-registry`, `ostree`, `dbus-daemon`, `gcc`, `unshare`, `curl`) and, for flatpak, that a private mount
//!   namespace can be made (the test CA is bind-mounted over the system bundle there)
//!   and that flatpak's `org.flatpak.Authenticator.Oci` D-Bus service file exists.
//!   When something is missing it writes `SKIPPED: ...` straight to stderr (visible
//!   even under the test harness' capture) and returns false; with
//!   `CG_REQUIRE_E2E=1` it panics instead.
//! * [`Cmd`]: one external command with a clean environment, a deadline (killed
//!   by its PID past it), stdout/stderr in files (never pipes, so a process the
//!   command leaves behind cannot hold the test up), and a transcript line on stderr.
//! * [`images`]: the OCI layouts, built once per test process with no network.
//! * [`stack`]: everything wired together, and the client wrappers
//!   ([`stack::ContainerTools`], [`flatpak::FlatpakEnv`]).

pub mod flatpak;
pub mod images;
pub mod stack;

use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Set to `1` to turn a skip into a failure (CI sets it).
pub const REQUIRE_ENV: &str = "CG_REQUIRE_E2E";

/// What a test drives. Every test needs every tool of [`ALL_TOOLS`] (the
/// shared images are built with flatpak and gcc); flatpak tests also need a
/// private mount namespace for the CA bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// The upstream and curl only.
    Registry,
    /// skopeo and podman.
    Containers,
    /// The flatpak client, its session bus and the CA namespace.
    Flatpak,
}

/// Every tool the suite uses.
pub const ALL_TOOLS: [&str; 9] = [
    "skopeo",
    "podman",
    "flatpak",
    "docker-registry",
    "ostree",
    "dbus-daemon",
    "gcc",
    "unshare",
    "curl",
];

/// Where `program` is on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The tools of [`ALL_TOOLS`] that are not on `PATH`.
pub fn missing() -> Vec<&'static str> {
    ALL_TOOLS
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect()
}

/// Whether the skip must be a failure.
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// Write a line to the real stderr, bypassing the test harness' capture.
pub fn say(line: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{line}");
}

/// True when `test` can run; otherwise prints `SKIPPED: ...` (or panics when
/// `CG_REQUIRE_E2E=1`).
pub fn ready(test: &str, needs: Needs) -> bool {
    let mut why = Vec::new();
    let gone = missing();
    if !gone.is_empty() {
        why.push(format!("not on PATH: {}", gone.join(", ")));
    }
    if needs == Needs::Flatpak
        && gone.is_empty()
        && let Err(e) = flatpak::ca_namespace_works()
    {
        why.push(e);
    }
    if why.is_empty() {
        return true;
    }
    let msg = format!(
        "SKIPPED: {test}: {} (Debian: apt-get install skopeo podman flatpak docker-registry ostree dbus gcc libc6-dev curl; set {REQUIRE_ENV}=1 to fail instead)",
        why.join("; ")
    );
    if required() {
        panic!("{REQUIRE_ENV}=1 but {msg}");
    }
    say(&msg);
    false
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
            })
            .unwrap_or(false)
    })
}

// ---------------------------------------------------------------------------
// Running a command
// ---------------------------------------------------------------------------

/// An external command with a clean environment and a deadline.
#[derive(Clone, Debug)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    timeout: Duration,
    stdin: Option<Vec<u8>>,
}

/// What a [`Cmd`] did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The command line, for messages.
    pub line: String,
    /// Exit code (`None`: killed by a signal, or by the deadline).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// Panics (with the command line and its output) unless it succeeded.
    #[track_caller]
    pub fn ok(self) -> Outcome {
        assert!(self.success(), "command failed: {self}");
        self
    }

    /// Panics unless it failed (without timing out).
    #[track_caller]
    pub fn failed(self) -> Outcome {
        assert!(
            !self.success() && !self.timed_out,
            "command should have failed: {self}"
        );
        self
    }

    /// stdout and stderr together.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\n  exit: {}{} after {:.2} s\n  stdout: {}\n  stderr: {}",
            self.line,
            self.code.map_or("signal".to_owned(), |c| c.to_string()),
            if self.timed_out { " (TIMED OUT)" } else { "" },
            self.elapsed.as_secs_f64(),
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// The variables every command keeps from the test's environment.
const KEPT_ENV: [&str; 2] = ["PATH", "RUST_BACKTRACE"];

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            timeout: Duration::from_secs(120),
            stdin: None,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Set a variable (the environment is otherwise empty but for `PATH`).
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        self.env
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    pub fn envs(mut self, vars: &[(OsString, OsString)]) -> Cmd {
        self.env.extend(vars.iter().cloned());
        self
    }

    pub fn cwd(mut self, dir: &Path) -> Cmd {
        self.cwd = Some(dir.to_owned());
        self
    }

    /// Deadline (default 120 s); the process is killed past it.
    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = t;
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    /// The program and its arguments, shell-quoted enough for reading.
    pub fn line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| {
                let s = a.to_string_lossy();
                if s.is_empty() || s.contains([' ', '"', '\'', '\n']) {
                    format!("'{}'", s.replace('\'', "'\\''"))
                } else {
                    s.into_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The `std::process::Command`: clean environment but for `PATH`, `LANG`
    /// and what [`Cmd::env`] set.
    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args).env_clear();
        for k in KEPT_ENV {
            if let Some(v) = std::env::var_os(k) {
                c.env(k, v);
            }
        }
        c.env("LANG", "C.UTF-8").env("LC_ALL", "C.UTF-8");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c
    }

    /// Start it in the background, stdout and stderr appended to `log`; the
    /// caller owns (and must kill) the child.
    pub fn spawn(&self, log: &Path) -> std::process::Child {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.line()));
        eprintln!("e2e: $ {} & (pid {})", self.line(), child.id());
        child
    }

    /// Run to completion or the deadline. Panics only when it cannot start.
    pub fn run(&self) -> Outcome {
        let line = self.line();
        let mut out = tempfile::tempfile().expect("temp file for stdout");
        let mut err = tempfile::tempfile().expect("temp file for stderr");
        let mut stdin_file = None;
        if let Some(bytes) = &self.stdin {
            let mut f = tempfile::tempfile().expect("temp file for stdin");
            f.write_all(bytes).expect("write stdin");
            f.rewind().expect("rewind stdin");
            stdin_file = Some(f);
        }
        let mut c = self.command();
        c.stdin(stdin_file.map_or_else(Stdio::null, Stdio::from))
            .stdout(out.try_clone().expect("dup stdout file"))
            .stderr(err.try_clone().expect("dup stderr file"));
        let started = Instant::now();
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
        let deadline = started + self.timeout;
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() >= deadline => {
                    timed_out = true;
                    let _ = child.kill();
                    break child.wait().ok();
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => break None,
            }
        };
        let elapsed = started.elapsed();
        let read = |f: &mut std::fs::File| {
            let mut s = Vec::new();
            let _ = f.rewind();
            let _ = f.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        };
        let outcome = Outcome {
            line,
            code: status.and_then(|s| s.code()),
            stdout: read(&mut out),
            stderr: read(&mut err),
            elapsed,
            timed_out,
        };
        eprintln!(
            "e2e: $ {} -> {}{} ({:.2} s)",
            outcome.line,
            outcome
                .code
                .map_or("signal".to_owned(), |c| format!("exit {c}")),
            if timed_out { ", TIMED OUT" } else { "" },
            elapsed.as_secs_f64()
        );
        outcome
    }
}

/// Write a file, creating its directory.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> PathBuf {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path.to_owned()
}

/// Make a directory (and parents).
pub fn mkdir(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path.to_owned()
}
