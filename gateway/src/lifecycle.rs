//! Running under systemd: readiness and status on `$NOTIFY_SOCKET`, SIGHUP
//! reloads, SIGTERM/SIGINT drain.
//!
//! The notify protocol is one datagram of `KEY=VALUE` lines to the socket named
//! by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket), see
//! sd_notify(3); it is small enough that a crate would add more than it saves.

use std::ffi::OsString;
use std::fmt::Debug;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use tokio::signal::unix::{SignalKind, signal};

use crate::auth::{AuthChain, ReloadOutcome};
use crate::config::{self, Config};
use crate::run::{EXIT_CONFIG, EXIT_RUNTIME, LogFilter};
use crate::server::{self, Running, StartError, StartOptions};
use crate::tls::ServerTls;

/// Where service-manager notifications go; does nothing outside systemd.
#[derive(Debug)]
pub struct Notifier {
    target: Option<Target>,
}

#[derive(Debug, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    pub fn from_env() -> Self {
        Self::new(std::env::var_os("NOTIFY_SOCKET"))
    }

    pub fn new(socket: Option<OsString>) -> Self {
        use std::os::unix::ffi::OsStrExt;
        let target =
            socket
                .filter(|s| !s.is_empty())
                .map(|s| match s.as_bytes().strip_prefix(b"@") {
                    Some(name) => Target::Abstract(name.to_vec()),
                    None => Target::Path(PathBuf::from(s)),
                });
        Self { target }
    }

    /// Send one message (newline-separated assignments). A failure is logged,
    /// never fatal: the gateway serves whether or not anyone listens.
    pub fn notify(&self, message: &str) {
        if let Err(e) = self.send(message) {
            tracing::warn!(error = %e, "cannot notify the service manager");
        }
    }

    fn send(&self, message: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let socket = UnixDatagram::unbound()?;
        let sent = match target {
            Target::Path(path) => socket.send_to(message.as_bytes(), path)?,
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(message.as_bytes(), &addr)?
            }
        };
        if sent != message.len() {
            return Err(io::Error::other("short write to the notify socket"));
        }
        Ok(())
    }
}

/// `CLOCK_MONOTONIC` in microseconds, as systemd >= 253 wants next to `RELOADING=1`.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000
}

/// Start the gateway, report readiness, and handle signals until it stops.
pub async fn run(path: &Path, config: Config, log_filter: LogFilter) -> i32 {
    let notifier = Notifier::from_env();
    // Before anything else, so a signal during start-up is not fatal (SIGHUP)
    // or abrupt (SIGTERM) by default action.
    let signals = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    let (mut hup, mut term, mut int) = match signals {
        (Ok(h), Ok(t), Ok(i)) => (h, t, i),
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return EXIT_RUNTIME;
        }
    };
    notifier.notify("STATUS=Starting: loading plugins and state, binding listeners");
    let running = match server::start(config, StartOptions::default()).await {
        Ok(r) => r,
        Err(e) => return start_failed(&notifier, e),
    };
    let listeners = listeners(&running);
    let status = |shared: &crate::server::shared::Shared| {
        let state = if shared.state.is_loaded() {
            "state loaded"
        } else {
            "no state yet (waiting for Katello to sync)"
        };
        format!("Serving {listeners}; {state}")
    };
    // Everything a client needs is bound and loaded by now: listeners,
    // plugins, persisted state, the admin listener.
    notifier.notify(&format!("READY=1\nSTATUS={}", status(&running.shared)));

    let handle = running.handle.clone();
    let tls = running.tls.clone();
    let shared = running.shared.clone();
    let stopped = running.wait();
    tokio::pin!(stopped);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = &mut stopped => {
                return match result {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::error!(error = %e, "server failed");
                        EXIT_RUNTIME
                    }
                };
            }
            _ = hup.recv(), if !stopping => {
                notifier.notify(&format!("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=Reloading {}", monotonic_usec(), path.display()));
                // Plugins reload only with the rest: a rejected file applies nothing.
                let outcome = reload(path, &shared.config, tls.as_ref(), &log_filter)
                    .map(|()| reload_plugins(&shared.chain));
                let (result, note) = match outcome {
                    Ok(Ok(())) => ("ok", String::new()),
                    Ok(Err(first)) => ("partial", format!("; last reload partial: {first}")),
                    Err(first) => ("rejected", format!("; last reload rejected: {first}")),
                };
                crate::admin::metrics::reload(result);
                notifier.notify(&format!("READY=1\nSTATUS={}{note}", status(&shared)));
            }
            _ = async { tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} } } => {
                // A second signal gives up on draining.
                let graceful = !stopping;
                stopping = true;
                let timeout = shared.config.server.shutdown_timeout;
                tracing::info!(graceful, timeout_secs = timeout.as_secs(), "stopping");
                notifier.notify(&format!("STOPPING=1\nSTATUS=Stopping: draining requests for up to {}s", timeout.as_secs()));
                drop(handle.stop(graceful));
            }
        }
    }
}

fn start_failed(notifier: &Notifier, e: StartError) -> i32 {
    let (status, code) = match &e {
        StartError::Config(problems) => {
            for p in &problems.0 {
                tracing::error!(key = %p.key, "{}", p.message);
            }
            ("configuration rejected", EXIT_CONFIG)
        }
        StartError::Bind { .. } => {
            tracing::error!(error = %e, "cannot start");
            ("cannot bind a listener", EXIT_RUNTIME)
        }
    };
    notifier.notify(&format!("STATUS=Failed to start: {status}"));
    code
}

fn listeners(running: &Running) -> String {
    let list = |addrs: &[std::net::SocketAddr]| {
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let admin = running
        .admin_addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| "off".to_owned());
    format!(
        "TLS [{}], plain [{}], management [{}], admin {admin}",
        list(&running.tls_addrs),
        list(&running.plain_addrs),
        list(&running.management_addrs)
    )
}

/// Re-read the configuration file and apply what can change without
/// dropping connections: the server certificate, key and client CA names,
/// and `log.filter`. All of it applies or none of it does; on failure the
/// first problem is returned (every problem is logged). The plugins reload
/// after it, see [`reload_plugins`].
pub fn reload(
    path: &Path,
    current: &Config,
    tls: Option<&ServerTls>,
    log_filter: &LogFilter,
) -> Result<(), String> {
    let next = match config::load(path) {
        Ok(c) => c,
        Err(problems) => {
            for p in &problems.0 {
                tracing::error!(key = %p.key, "reload rejected, the running configuration stays: {}", p.message);
            }
            return Err(problems
                .0
                .first()
                .map(ToString::to_string)
                .unwrap_or_default());
        }
    };
    if let Some(tls) = tls {
        let s = &next.server;
        if let Err(e) = tls.reload(&s.tls_cert, &s.tls_key, &s.client_ca) {
            tracing::error!(error = %e, "reload rejected, the running certificate stays");
            return Err(format!("server.tls_cert: {e}"));
        }
    }
    if let Err(e) = log_filter.set(&next.log_filter) {
        tracing::warn!(error = %e, "log.filter not applied");
    }
    let pending = restart_needed(current, &next);
    if pending.is_empty() {
        tracing::info!(config = %path.display(), "reloaded");
    } else {
        tracing::warn!(config = %path.display(), keys = ?pending, "reloaded; these changes take effect at the next restart");
    }
    Ok(())
}

/// Ask every plugin of the chain to reload (the `rhsm-cert` plugin re-reads
/// its CA bundle), logging and counting each outcome. A plugin that fails
/// keeps its previous state and the others still reload; the first failure
/// is returned for the service manager's status line.
pub fn reload_plugins(chain: &AuthChain) -> Result<(), String> {
    let mut first = None;
    for (plugin, outcome) in chain.reload() {
        let result = match outcome {
            ReloadOutcome::Reloaded => {
                tracing::info!(plugin, "auth plugin reloaded");
                "ok"
            }
            ReloadOutcome::Unsupported => {
                tracing::info!(
                    plugin,
                    "auth plugin does not reload; it keeps what it loaded at start"
                );
                "unsupported"
            }
            ReloadOutcome::Failed(message) => {
                tracing::error!(plugin, error = %message, "auth plugin reload failed; it keeps its previous state");
                first.get_or_insert_with(|| format!("plugin {plugin}: {message}"));
                "failed"
            }
        };
        crate::admin::metrics::plugin_reload(plugin, result);
    }
    first.map_or(Ok(()), Err)
}

/// Keys whose new value differs from the running one but only applies at
/// start (listeners, upstreams, plugins, state, caches).
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    fn differs(a: &dyn Debug, b: &dyn Debug) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let (o, n) = (&old.server, &new.server);
    let checks: [(&'static str, &dyn Debug, &dyn Debug); 19] = [
        ("server.listen", &o.listen, &n.listen),
        ("server.listen_plain", &o.listen_plain, &n.listen_plain),
        (
            "server.trusted_frontends",
            &o.trusted_frontends,
            &n.trusted_frontends,
        ),
        ("server.public_url", &o.public_url, &n.public_url),
        (
            "server.client_request_timeout_secs",
            &o.client_request_timeout,
            &n.client_request_timeout,
        ),
        (
            "server.shutdown_timeout_secs",
            &o.shutdown_timeout,
            &n.shutdown_timeout,
        ),
        ("server.workers", &o.workers, &n.workers),
        ("server.http2_*", &o.http2, &n.http2),
        // Plugins re-read the CA bundle on reload, but from the path they
        // were started with.
        ("server.client_ca (plugins)", &o.client_ca, &n.client_ca),
        ("pulp", &old.pulp, &new.pulp),
        ("central", &old.central, &new.central),
        ("cache", &old.cache, &new.cache),
        ("management.allowed_cns", &old.allowed_cns, &new.allowed_cns),
        (
            "management.max_shrink_percent",
            &old.push_policy,
            &new.push_policy,
        ),
        (
            "management.listen",
            &old.management_listen,
            &new.management_listen,
        ),
        (
            "management.proxy_version",
            &old.proxy_version,
            &new.proxy_version,
        ),
        ("state.dir", &old.state_dir, &new.state_dir),
        ("plugins", &old.plugins, &new.plugins),
        ("admin.listen", &old.admin_listen, &new.admin_listen),
    ];
    checks
        .into_iter()
        .filter(|(_, a, b)| differs(*a, *b))
        .map(|(key, ..)| key)
        .collect()
}

#[cfg(test)]
mod tests;
