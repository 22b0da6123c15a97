//! The configuration file as an admin writes it (contract §8). Every table
//! rejects unknown keys by name; every key has the documented default.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub server: ServerFile,
    pub pulp: PulpFile,
    pub central: CentralFile,
    pub cache: CacheFile,
    pub management: ManagementFile,
    pub state: StateFile,
    pub plugins: PluginsFile,
    pub admin: AdminFile,
    pub log: LogFile,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct ServerFile {
    pub listen: Vec<String>,
    pub listen_plain: Vec<String>,
    /// Allow `listen_plain` addresses other than loopback (a TLS-terminating
    /// balancer on another host).
    pub listen_plain_remote: bool,
    pub tls_cert: String,
    pub tls_key: String,
    pub client_ca: String,
    pub trusted_frontends: Vec<String>,
    pub public_url: String,
    /// Seconds a client has to send its request head (slow clients are cut off).
    pub client_request_timeout_secs: u64,
    /// Seconds for graceful shutdown to drain in-flight requests.
    pub shutdown_timeout_secs: u64,
    /// Worker threads; 0 means one per CPU.
    pub workers: usize,
    /// Largest header list (KiB, RFC 9113 size) a request may carry over HTTP/2.
    pub http2_max_header_list_kb: u64,
    /// Streams a client may have open at once on one HTTP/2 connection.
    pub http2_max_concurrent_streams: u64,
    /// Response bytes (KiB) one HTTP/2 stream may queue ahead of a slow reader.
    pub http2_max_send_buffer_kb: u64,
}

impl Default for ServerFile {
    fn default() -> Self {
        Self {
            listen: vec!["0.0.0.0:8443".into()],
            listen_plain: vec![],
            listen_plain_remote: false,
            tls_cert: "/etc/foreman-proxy/ssl_cert.pem".into(),
            tls_key: "/etc/foreman-proxy/ssl_key.pem".into(),
            client_ca: "/etc/rhsm/ca/katello-default-ca.pem".into(),
            trusted_frontends: vec!["127.0.0.1/32".into(), "::1/128".into()],
            public_url: "https://proxy.example.com".into(),
            client_request_timeout_secs: 10,
            shutdown_timeout_secs: 30,
            workers: 0,
            http2_max_header_list_kb: 64,
            http2_max_concurrent_streams: 128,
            http2_max_send_buffer_kb: 64,
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct PulpFile {
    pub endpoint: String,
    pub registry_path: String,
    pub client_endpoint: String,
    pub ssl_ca: String,
    pub ssl_cert: String,
    pub ssl_key: String,
    pub timeout_secs: u64,
    /// Seconds a fetched upstream index is reused before it is revalidated.
    pub index_ttl_secs: u64,
    /// Largest index body taken from Pulp, in MiB.
    pub max_index_mb: u64,
    /// Seconds a streamed manifest or blob body may go without a byte from
    /// Pulp before the client's transfer is cut.
    pub stream_idle_secs: u64,
}

impl Default for PulpFile {
    fn default() -> Self {
        Self {
            endpoint: "https://proxy.example.com".into(),
            registry_path: "/pulpcore_registry".into(),
            client_endpoint: String::new(),
            ssl_ca: "/etc/foreman-proxy/ssl_ca.pem".into(),
            ssl_cert: "/etc/foreman-proxy/ssl_cert.pem".into(),
            ssl_key: "/etc/foreman-proxy/ssl_key.pem".into(),
            timeout_secs: 30,
            index_ttl_secs: 10,
            max_index_mb: 64,
            stream_idle_secs: 60,
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct CentralFile {
    pub url: String,
    pub registry_path: String,
    pub ssl_ca: String,
    pub ssl_cert: String,
    pub ssl_key: String,
    pub timeout_secs: u64,
}

impl Default for CentralFile {
    fn default() -> Self {
        Self {
            url: "https://katello.example.com".into(),
            registry_path: "/v2/".into(),
            ssl_ca: "/etc/foreman-proxy/foreman_ssl_ca.pem".into(),
            ssl_cert: "/etc/foreman-proxy/foreman_ssl_cert.pem".into(),
            ssl_key: "/etc/foreman-proxy/foreman_ssl_key.pem".into(),
            timeout_secs: 10,
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct CacheFile {
    pub ttl_secs: u64,
    pub stale_if_error_secs: u64,
    pub max_identities: usize,
    /// Seconds a failed central lookup is remembered before it is retried.
    pub negative_ttl_secs: u64,
    /// Seconds after which a bearer token is confirmed with central again;
    /// unset, `ttl_secs` (always valid, as `ttl_secs <= stale_if_error_secs`).
    pub token_revalidate_secs: Option<u64>,
}

impl Default for CacheFile {
    fn default() -> Self {
        Self {
            ttl_secs: 300,
            stale_if_error_secs: 3600,
            max_identities: 1_000_000,
            negative_ttl_secs: 5,
            token_revalidate_secs: None,
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct ManagementFile {
    pub allowed_cns: Vec<String>,
    pub max_shrink_percent: u64,
    /// TLS listeners that answer only what Foreman and Katello ask of a smart
    /// proxy: `/features`, `/v2/features`, `/version` and the pushes.
    pub listen: Vec<String>,
    /// The foreman-proxy version `/version` reports; empty: the gateway's own.
    pub proxy_version: String,
}

impl Default for ManagementFile {
    fn default() -> Self {
        Self {
            allowed_cns: vec!["katello.example.com".into()],
            max_shrink_percent: 100,
            listen: vec![],
            proxy_version: String::new(),
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct StateFile {
    pub dir: String,
}

impl Default for StateFile {
    fn default() -> Self {
        Self {
            dir: "/var/lib/container-gateway".into(),
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsFile {
    pub dir: String,
    pub chain: Vec<String>,
    /// Refuse plugin files not owned by root (or by the gateway's own user).
    /// Group- or world-writable files are refused whatever this says.
    pub require_root_owner: bool,
    /// Milliseconds one plugin call may take before the request fails closed.
    pub call_timeout_ms: u64,
    /// Extra settings handed to each plugin at init, by plugin name.
    pub settings: BTreeMap<String, toml::Table>,
}

impl Default for PluginsFile {
    fn default() -> Self {
        Self {
            dir: "/usr/lib64/container-gateway/plugins".into(),
            chain: vec!["rhsm-cert".into(), "katello-token".into()],
            require_root_owner: true,
            call_timeout_ms: 2000,
            settings: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct AdminFile {
    pub listen: String,
}

impl Default for AdminFile {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct LogFile {
    /// A `RUST_LOG`-style filter, e.g. `info` or `info,container_gateway::central=debug`.
    pub filter: String,
}

impl Default for LogFile {
    fn default() -> Self {
        Self {
            filter: "info".into(),
        }
    }
}
