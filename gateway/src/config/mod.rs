//! Configuration: the file model (`file`), and the validated `Config` the rest
//! of the gateway is built from. Validation reports every problem at once, each
//! naming its key, so an admin fixes a file in one pass.

mod credentials;
pub mod file;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use file::FileConfig;

/// One thing wrong with a configuration, tied to the key that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl Problems {
    pub fn one(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problems(vec![Problem {
            key: key.into(),
            message: message.into(),
        }])
    }
}

/// Client-side TLS material for an upstream (Pulp or central).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls {
    /// CA bundle that signs the upstream's server certificate.
    pub ca: Option<PathBuf>,
    /// Our client certificate and key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub listen_plain: Vec<SocketAddr>,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub client_ca: PathBuf,
    pub trusted_frontends: Vec<IpNet>,
    /// Scheme + authority (+ optional path), no trailing slash.
    pub public_url: String,
    /// Authority of `public_url` (host[:port]), used as the token `service`.
    pub public_host: String,
    pub client_request_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub workers: usize,
    /// `server.http2_*`: what one HTTP/2 connection may make the gateway hold.
    pub http2: Http2Limits,
}

/// Per-connection HTTP/2 bounds. Roughly, one connection holds at most
/// `max_concurrent_streams x (max_header_list_bytes + max_send_buffer_bytes)`
/// plus actix-http's 2 MiB connection flow-control window of request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2Limits {
    pub max_header_list_bytes: u32,
    pub max_concurrent_streams: u32,
    pub max_send_buffer_bytes: u32,
}

impl ServerConfig {
    pub fn is_trusted_frontend(&self, peer: Option<SocketAddr>) -> bool {
        peer.is_some_and(|p| {
            self.trusted_frontends
                .iter()
                .any(|net| net.contains(&p.ip()))
        })
    }
}

#[derive(Clone, Debug)]
pub struct PulpConfig {
    /// Scheme + authority, no trailing slash.
    pub endpoint: String,
    /// `""` or `/segment...`, no trailing slash.
    pub registry_path: String,
    /// Scheme + authority that replaces Pulp's in redirect Locations.
    pub client_endpoint: Option<String>,
    pub tls: UpstreamTls,
    pub timeout: Duration,
    pub index_ttl: Duration,
    /// Largest index body taken from Pulp (`pulp.max_index_mb`): a bigger one
    /// is refused (502) instead of being buffered and parsed.
    pub max_index_bytes: usize,
    /// `pulp.stream_idle_secs`: the longest silence from Pulp inside a
    /// streamed manifest or blob body.
    pub stream_idle: Duration,
}

impl PulpConfig {
    /// Base URL of Pulp's registry API (`/v2/...` and `/index/...` hang off it).
    pub fn registry_base(&self) -> String {
        format!("{}{}", self.endpoint, self.registry_path)
    }
}

#[derive(Clone, Debug)]
pub struct CentralConfig {
    pub url: String,
    /// Path prefix of Katello's registry API, with leading and trailing `/`.
    pub registry_path: String,
    pub tls: UpstreamTls,
    pub timeout: Duration,
}

impl CentralConfig {
    pub fn endpoint(&self, route: &str) -> String {
        format!("{}{}{}", self.url, self.registry_path, route)
    }
}

#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub ttl: Duration,
    pub stale_if_error: Duration,
    pub max_identities: usize,
    pub negative_ttl: Duration,
    /// A bearer token, stored or cached, is confirmed with central again
    /// once this has passed since central last vouched for it.
    pub token_revalidate: Duration,
}

#[derive(Clone, Debug)]
pub struct PluginsConfig {
    pub dir: PathBuf,
    pub chain: Vec<String>,
    pub require_root_owner: bool,
    pub call_timeout: Duration,
    /// Per-plugin settings (JSON objects), by plugin name.
    pub settings: BTreeMap<String, serde_json::Value>,
}

impl PluginsConfig {
    /// The file a chain entry loads: `lib<name with - as _>.so` in `dir`.
    pub fn library_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!(
            "{}{}{}",
            std::env::consts::DLL_PREFIX,
            name.replace('-', "_"),
            std::env::consts::DLL_SUFFIX
        ))
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub source: PathBuf,
    pub server: ServerConfig,
    pub pulp: PulpConfig,
    pub central: CentralConfig,
    pub cache: CacheConfig,
    pub allowed_cns: Vec<String>,
    /// `management.max_shrink_percent`.
    pub push_policy: crate::management::PushPolicy,
    /// `management.listen`: where Foreman registers the gateway as a smart proxy.
    pub management_listen: Vec<SocketAddr>,
    /// `management.proxy_version`, or the gateway's own version when unset.
    pub proxy_version: String,
    pub state_dir: PathBuf,
    pub plugins: PluginsConfig,
    pub admin_listen: Option<SocketAddr>,
    pub log_filter: String,
}

/// Read, parse and validate a configuration file.
pub fn load(path: &Path) -> Result<Config, Problems> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Problems::one("(file)", format!("cannot read {}: {e}", path.display())))?;
    let file = parse(&text)?;
    validate(path, &file)
}

/// Parse TOML text; unknown keys are reported with their full dotted name.
pub fn parse(text: &str) -> Result<FileConfig, Problems> {
    toml::from_str::<FileConfig>(text).map_err(|e| {
        let message = e.message().to_owned();
        let key = unknown_key_path(text, &e).unwrap_or_else(|| "(file)".to_owned());
        let location = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        Problems::one(key, format!("{message}{location}"))
    })
}

/// For an "unknown field" error, rebuild `table.key` from the error span.
fn unknown_key_path(text: &str, err: &toml::de::Error) -> Option<String> {
    let span = err.span()?;
    let key = text.get(span.clone())?.trim().trim_matches('"').to_owned();
    if !err.message().starts_with("unknown field") {
        return None;
    }
    let table = text[..span.start]
        .lines()
        .rev()
        .find_map(|l| {
            let l = l.trim();
            (l.starts_with('[') && l.ends_with(']'))
                .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
        })
        .unwrap_or_default();
    Some(if table.is_empty() {
        key
    } else {
        format!("{table}.{key}")
    })
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn add(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_owned(),
            message: message.into(),
        });
    }

    fn addrs(&mut self, key: &str, values: &[String]) -> Vec<SocketAddr> {
        values
            .iter()
            .filter_map(|v| match v.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.add(
                        key,
                        format!(
                            "{v:?} is not an address:port (e.g. \"0.0.0.0:8443\" or \"[::1]:8443\")"
                        ),
                    );
                    None
                }
            })
            .collect()
    }

    fn readable(&mut self, key: &str, value: &str) -> PathBuf {
        let p = match credentials::expand(
            value,
            std::env::var_os("CREDENTIALS_DIRECTORY").as_deref(),
        ) {
            Ok(p) => p,
            Err(e) => {
                self.add(key, e);
                return PathBuf::from(value);
            }
        };
        if value.is_empty() {
            self.add(key, "must name a file");
        } else if let Err(e) = std::fs::File::open(&p) {
            self.add(key, format!("cannot read {}: {e}", p.display()));
        }
        p
    }

    /// A count from 1 to `max`.
    fn within(&mut self, key: &str, value: u64, max: u32) -> u32 {
        match u32::try_from(value) {
            Ok(v) if (1..=max).contains(&v) => v,
            _ => {
                self.add(key, format!("must be from 1 to {max}"));
                1
            }
        }
    }

    /// A size in KiB from 1 to `max_kib`, as bytes.
    fn kib_within(&mut self, key: &str, kib: u64, max_kib: u32) -> u32 {
        self.within(key, kib, max_kib).saturating_mul(1024)
    }

    fn duration(&mut self, key: &str, secs: u64) -> Duration {
        if secs == 0 {
            self.add(key, "must be greater than 0");
        }
        Duration::from_secs(secs)
    }

    /// `http(s)://authority[/path]` without a trailing slash.
    fn url(&mut self, key: &str, value: &str, allow_path: bool) -> String {
        let trimmed = value.trim_end_matches('/');
        let Some(rest) = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"))
        else {
            self.add(
                key,
                format!("{value:?} must start with https:// or http://"),
            );
            return trimmed.to_owned();
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() || authority.contains(['?', '#', '@', ' ']) {
            self.add(key, format!("{value:?} has no valid host"));
        }
        if !allow_path && rest.len() > authority.len() {
            self.add(
                key,
                format!("{value:?} must be scheme://host[:port] with no path"),
            );
        }
        trimmed.to_owned()
    }

    fn upstream_tls(
        &mut self,
        table: &str,
        url: &str,
        ca: &str,
        cert: &str,
        key: &str,
    ) -> UpstreamTls {
        if !url.starts_with("https://") {
            return UpstreamTls {
                ca: None,
                client_cert: None,
            };
        }
        let ca = (!ca.is_empty()).then(|| self.readable(&format!("{table}.ssl_ca"), ca));
        let client_cert = match (cert.is_empty(), key.is_empty()) {
            (true, true) => None,
            (false, false) => Some((
                self.readable(&format!("{table}.ssl_cert"), cert),
                self.readable(&format!("{table}.ssl_key"), key),
            )),
            (true, false) => {
                self.add(&format!("{table}.ssl_cert"), "must be set when ssl_key is");
                None
            }
            (false, true) => {
                self.add(&format!("{table}.ssl_key"), "must be set when ssl_cert is");
                None
            }
        };
        if ca.is_none() {
            self.add(
                &format!("{table}.ssl_ca"),
                "must name the CA bundle for an https:// upstream",
            );
        }
        UpstreamTls { ca, client_cert }
    }
}

fn normalize_path(value: &str) -> Option<String> {
    let trimmed = value.trim_end_matches('/');
    if trimmed.is_empty() {
        return Some(String::new());
    }
    let ok = trimmed.starts_with('/')
        && trimmed[1..].split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
        });
    ok.then(|| trimmed.to_owned())
}

/// `management.listen` must not share an address with a client listener, and
/// is useless without a CN that may use it.
fn check_management_listen(
    c: &mut Checker,
    f: &FileConfig,
    management: &[SocketAddr],
    listen: &[SocketAddr],
    listen_plain: &[SocketAddr],
) {
    for addr in management {
        if listen.contains(addr) || listen_plain.contains(addr) {
            c.add(
                "management.listen",
                format!("{addr} is also a client listener (server.listen or server.listen_plain)"),
            );
        }
    }
    if !management.is_empty() && f.management.allowed_cns.is_empty() {
        c.add(
            "management.allowed_cns",
            "is empty, so every call to management.listen would be refused",
        );
    }
}

/// A foreman-proxy version as Foreman parses it (`3.11.0`, `3.11.0-develop`):
/// Foreman compares its major and minor with its own.
pub(crate) fn is_version(v: &str) -> bool {
    let (numbers, suffix) = v.split_once('-').unwrap_or((v, ""));
    let parts: Vec<&str> = numbers.split('.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && (v.len() == numbers.len()
            || (!suffix.is_empty()
                && suffix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')))
}

/// Check a parsed file, including that the files it names can be read.
pub fn validate(source: &Path, f: &FileConfig) -> Result<Config, Problems> {
    let mut c = Checker {
        problems: Vec::new(),
    };

    let listen = c.addrs("server.listen", &f.server.listen);
    let listen_plain = c.addrs("server.listen_plain", &f.server.listen_plain);
    if !f.server.listen_plain_remote {
        // Plain HTTP carries bearer tokens and forwarded certificates in the
        // clear: only for a frontend on this machine unless said otherwise.
        for addr in listen_plain.iter().filter(|a| !a.ip().is_loopback()) {
            c.add(
                "server.listen_plain",
                format!(
                    "{addr} is not a loopback address; plain HTTP is for a frontend on this machine (127.0.0.1 or ::1). For a TLS-terminating balancer on another host set server.listen_plain_remote = true and list only the balancer in server.trusted_frontends"
                ),
            );
        }
    }
    if f.server.listen.is_empty() && f.server.listen_plain.is_empty() {
        c.add(
            "server.listen",
            "no listener: set server.listen (TLS) or server.listen_plain",
        );
    }
    let management_listen = c.addrs("management.listen", &f.management.listen);
    let (tls_cert, tls_key) = if f.server.listen.is_empty() && f.management.listen.is_empty() {
        (
            PathBuf::from(&f.server.tls_cert),
            PathBuf::from(&f.server.tls_key),
        )
    } else {
        (
            c.readable("server.tls_cert", &f.server.tls_cert),
            c.readable("server.tls_key", &f.server.tls_key),
        )
    };
    let client_ca = c.readable("server.client_ca", &f.server.client_ca);
    let trusted_frontends = f
        .server
        .trusted_frontends
        .iter()
        .filter_map(|v| {
            v.parse::<IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    c.add(
                        "server.trusted_frontends",
                        format!("{v:?} is not an address or CIDR network"),
                    )
                })
                .ok()
        })
        .collect();
    let public_url = c.url("server.public_url", &f.server.public_url, true);
    let public_host = public_url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let client_request_timeout = c.duration(
        "server.client_request_timeout_secs",
        f.server.client_request_timeout_secs,
    );
    let shutdown_timeout = Duration::from_secs(f.server.shutdown_timeout_secs);
    let http2 = Http2Limits {
        max_header_list_bytes: c.kib_within(
            "server.http2_max_header_list_kb",
            f.server.http2_max_header_list_kb,
            16 * 1024,
        ),
        max_concurrent_streams: c.within(
            "server.http2_max_concurrent_streams",
            f.server.http2_max_concurrent_streams,
            1000,
        ),
        max_send_buffer_bytes: c.kib_within(
            "server.http2_max_send_buffer_kb",
            f.server.http2_max_send_buffer_kb,
            16 * 1024,
        ),
    };

    let pulp_endpoint = c.url("pulp.endpoint", &f.pulp.endpoint, false);
    let registry_path = normalize_path(&f.pulp.registry_path).unwrap_or_else(|| {
        c.add(
            "pulp.registry_path",
            format!(
                "{:?} must be empty or an absolute path like /pulpcore_registry",
                f.pulp.registry_path
            ),
        );
        String::new()
    });
    let client_endpoint = (!f.pulp.client_endpoint.is_empty())
        .then(|| c.url("pulp.client_endpoint", &f.pulp.client_endpoint, false));
    let pulp_tls = c.upstream_tls(
        "pulp",
        &pulp_endpoint,
        &f.pulp.ssl_ca,
        &f.pulp.ssl_cert,
        &f.pulp.ssl_key,
    );
    let pulp_timeout = c.duration("pulp.timeout_secs", f.pulp.timeout_secs);
    let index_ttl = Duration::from_secs(f.pulp.index_ttl_secs);
    // No "0 = never": a Pulp that stalls in mid-blob would hold the client,
    // its connection and an upstream connection for as long as it stalls.
    let stream_idle = c.duration("pulp.stream_idle_secs", f.pulp.stream_idle_secs);
    let max_index_bytes = match usize::try_from(f.pulp.max_index_mb)
        .ok()
        .and_then(|mb| mb.checked_mul(1024 * 1024))
    {
        Some(0) => {
            c.add("pulp.max_index_mb", "must be greater than 0");
            0
        }
        Some(bytes) => bytes,
        None => {
            c.add("pulp.max_index_mb", "is too large");
            0
        }
    };

    let central_url = c.url("central.url", &f.central.url, true);
    let central_path = match normalize_path(&f.central.registry_path) {
        Some(p) => format!("{p}/"),
        None => {
            c.add(
                "central.registry_path",
                format!(
                    "{:?} must be an absolute path like /v2/",
                    f.central.registry_path
                ),
            );
            "/v2/".to_owned()
        }
    };
    let central_tls = c.upstream_tls(
        "central",
        &central_url,
        &f.central.ssl_ca,
        &f.central.ssl_cert,
        &f.central.ssl_key,
    );
    let central_timeout = c.duration("central.timeout_secs", f.central.timeout_secs);

    let ttl = c.duration("cache.ttl_secs", f.cache.ttl_secs);
    if f.cache.stale_if_error_secs < f.cache.ttl_secs {
        c.add(
            "cache.stale_if_error_secs",
            "must be at least cache.ttl_secs",
        );
    }
    if f.cache.max_identities == 0 {
        c.add("cache.max_identities", "must be greater than 0");
    }
    let token_revalidate_secs = f.cache.token_revalidate_secs.unwrap_or(f.cache.ttl_secs);
    let token_revalidate = c.duration("cache.token_revalidate_secs", token_revalidate_secs);
    if token_revalidate_secs > f.cache.stale_if_error_secs {
        // Past stale_if_error an unconfirmed token is refused anyway: a longer
        // interval would only hide that central was never asked.
        c.add(
            "cache.token_revalidate_secs",
            "must be at most cache.stale_if_error_secs",
        );
    }

    for cn in &f.management.allowed_cns {
        if cn.trim().is_empty() {
            c.add("management.allowed_cns", "holds an empty name");
        }
    }
    check_management_listen(&mut c, f, &management_listen, &listen, &listen_plain);
    let proxy_version = if f.management.proxy_version.is_empty() {
        env!("CARGO_PKG_VERSION").to_owned()
    } else {
        if !is_version(&f.management.proxy_version) {
            c.add(
                "management.proxy_version",
                format!(
                    "{:?} is not a version like \"3.11.0\" (digits and dots, optionally -suffix)",
                    f.management.proxy_version
                ),
            );
        }
        f.management.proxy_version.clone()
    };
    let max_shrink_percent = match u8::try_from(f.management.max_shrink_percent) {
        Ok(p) if p <= 100 => p,
        _ => {
            c.add(
                "management.max_shrink_percent",
                "must be a percentage from 0 to 100 (100 allows any push)",
            );
            100
        }
    };

    let state_dir = PathBuf::from(&f.state.dir);
    if f.state.dir.is_empty() {
        c.add("state.dir", "must name a directory");
    } else if !state_dir.is_dir() {
        c.add("state.dir", format!("{} is not a directory", f.state.dir));
    } else if let Err(e) = tempfile::NamedTempFile::new_in(&state_dir) {
        c.add("state.dir", format!("{} is not writable: {e}", f.state.dir));
    }

    let plugin_dir = PathBuf::from(&f.plugins.dir);
    if !f.plugins.chain.is_empty() && !plugin_dir.is_dir() {
        c.add(
            "plugins.dir",
            format!("{} is not a directory", f.plugins.dir),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in &f.plugins.chain {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            c.add(
                "plugins.chain",
                format!("{name:?} is not a plugin name (letters, digits, - and _)"),
            );
        }
        if !seen.insert(name) {
            c.add("plugins.chain", format!("{name:?} is listed twice"));
        }
    }
    for name in f.plugins.settings.keys() {
        if !f.plugins.chain.contains(name) {
            c.add(
                &format!("plugins.settings.{name}"),
                "names a plugin that is not in plugins.chain",
            );
        }
    }
    if f.plugins.call_timeout_ms == 0 {
        c.add("plugins.call_timeout_ms", "must be greater than 0");
    }
    let settings = f
        .plugins
        .settings
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
            )
        })
        .collect();

    let admin_listen = if f.admin.listen.is_empty() {
        None
    } else {
        let a = c
            .addrs("admin.listen", std::slice::from_ref(&f.admin.listen))
            .into_iter()
            .next();
        if let Some(a) = a
            && !a.ip().is_loopback()
        {
            c.add(
                "admin.listen",
                format!("{a} is not a loopback address: the admin listener has no authentication"),
            );
        }
        a
    };

    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&f.log.filter) {
        c.add(
            "log.filter",
            format!("{:?} is not a valid filter: {e}", f.log.filter),
        );
    }

    if !c.problems.is_empty() {
        return Err(Problems(c.problems));
    }
    Ok(Config {
        source: source.to_owned(),
        server: ServerConfig {
            listen,
            listen_plain,
            tls_cert,
            tls_key,
            client_ca,
            trusted_frontends,
            public_url,
            public_host,
            client_request_timeout,
            shutdown_timeout,
            workers: f.server.workers,
            http2,
        },
        pulp: PulpConfig {
            endpoint: pulp_endpoint,
            registry_path,
            client_endpoint,
            tls: pulp_tls,
            timeout: pulp_timeout,
            index_ttl,
            max_index_bytes,
            stream_idle,
        },
        central: CentralConfig {
            url: central_url,
            registry_path: central_path,
            tls: central_tls,
            timeout: central_timeout,
        },
        cache: CacheConfig {
            ttl,
            stale_if_error: Duration::from_secs(f.cache.stale_if_error_secs),
            max_identities: f.cache.max_identities,
            negative_ttl: Duration::from_secs(f.cache.negative_ttl_secs),
            token_revalidate,
        },
        allowed_cns: f.management.allowed_cns.clone(),
        push_policy: crate::management::PushPolicy { max_shrink_percent },
        management_listen,
        proxy_version,
        state_dir,
        plugins: PluginsConfig {
            dir: plugin_dir,
            chain: f.plugins.chain.clone(),
            require_root_owner: f.plugins.require_root_owner,
            call_timeout: Duration::from_millis(f.plugins.call_timeout_ms),
            settings,
        },
        admin_listen,
        log_filter: f.log.filter.clone(),
    })
}

#[cfg(test)]
mod tests;
