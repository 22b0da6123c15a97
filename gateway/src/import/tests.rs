//! Settings in the shapes puppet-foreman_proxy's templates write
//! (`settings.yml.erb`, `plugin/container_gateway.yml.erb`), imported and
//! read back through the gateway's own configuration parser and validator.

use std::path::{Path, PathBuf};

use super::*;
use crate::config::{self, FileConfig};

/// A smart proxy's files under a temporary directory: the certificate paths
/// the settings name exist, so the result can be validated.
struct Capsule {
    dir: tempfile::TempDir,
}

impl Capsule {
    fn new() -> Capsule {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in [
            "ssl_ca.pem",
            "ssl_cert.pem",
            "ssl_key.pem",
            "foreman_ssl_ca.pem",
            "foreman_ssl_cert.pem",
            "foreman_ssl_key.pem",
            "pulp_ca.pem",
            "pulp_cert.pem",
            "pulp_key.pem",
            "katello-default-ca.pem",
        ] {
            std::fs::write(dir.path().join(name), pem("MIIBkatellodefaultca")).expect("write pem");
        }
        std::fs::create_dir(dir.path().join("state")).expect("state dir");
        std::fs::create_dir(dir.path().join("plugins")).expect("plugins dir");
        Capsule { dir }
    }

    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn env(&self) -> Env {
        Env {
            hostname: Some("capsule.example.com".to_owned()),
            rhsm_ca: self.dir.path().join("katello-default-ca.pem"),
        }
    }

    /// settings.yml as the installer writes it for a Katello smart proxy,
    /// with `trusted_hosts` (already indented list lines, or the commented-out
    /// block the template writes when there are none).
    fn proxy_yml(&self, trusted_hosts: &str) -> String {
        format!(
            r#"---
### File managed with puppet ###
## Module:           'foreman_proxy'

#replace default location of "settings.d"
:settings_directory: /etc/foreman-proxy/settings.d

# SSL Setup

# If enabled, all communication would be verified via SSL
:ssl_ca_file: {ca}
:ssl_certificate: {cert}
:ssl_private_key: {key}

# Use this option only if you need to disable certain cipher suites.
#:ssl_disabled_ciphers: [CIPHER-SUITE-1, CIPHER-SUITE-2]

#:tls_disabled_versions: []

# Hosts which the proxy accepts connections from
{trusted_hosts}

# verify a DNS reverse lookup against it's forward lookup
#:forward_verify: true

# Endpoint for reverse communication
:foreman_url: https://katello.example.com

# SSL settings for client authentication against Foreman.
:foreman_ssl_ca: {fca}
:foreman_ssl_cert: {fcert}
:foreman_ssl_key: {fkey}

# host and ports configuration
# Host or IP to bind ports to (e.g. *, localhost, 0.0.0.0, ::, 192.168.1.20)
:bind_host: '*'
# http is disabled by default. To enable, uncomment 'http_port' setting
:http_port: 8000
# https is enabled if certificate, CA certificate, and private key are present
:https_port: 9090
:log_file: /var/log/foreman-proxy/proxy.log
:log_level: INFO
:log_buffer: 2000
:log_buffer_errors: 1000
"#,
            ca = self.p("ssl_ca.pem"),
            cert = self.p("ssl_cert.pem"),
            key = self.p("ssl_key.pem"),
            fca = self.p("foreman_ssl_ca.pem"),
            fcert = self.p("foreman_ssl_cert.pem"),
            fkey = self.p("foreman_ssl_key.pem"),
        )
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write settings");
        path
    }

    fn import(&self, proxy: &str, plugin: &str) -> Result<Imported, ImportError> {
        let proxy = self.write("settings.yml", proxy);
        let plugin = self.write("container_gateway.yml", plugin);
        import_files(&proxy, &plugin, &self.env())
    }

    /// Parse the TOML back and validate it with this directory's state and
    /// plugin directories (the import leaves both at their defaults).
    fn validate(&self, toml: &str) -> config::Config {
        let mut f = parsed(toml);
        f.state.dir = self.p("state");
        f.plugins.dir = self.p("plugins");
        match config::validate(Path::new("gateway.toml"), &f) {
            Ok(c) => c,
            Err(p) => panic!("validate failed:\n{p}\n--- toml ---\n{toml}"),
        }
    }
}

const TRUSTED_TWO: &str = ":trusted_hosts:\n  - katello.example.com\n  - capsule.example.com";
const TRUSTED_NONE: &str = "#:trusted_hosts:\n#- foreman.prod.domain\n#- foreman.dev.domain";

/// The plugin's settings as the installer writes them with the default
/// (postgres) backend.
const PLUGIN_POSTGRES: &str = "---
# Container Gateway for Katello
:enabled: https
:pulp_endpoint: https://capsule.example.com
:client_endpoint: https://capsule.example.com
:sqlite_db_path: /var/lib/foreman-proxy/smart_proxy_container_gateway.db
:db_connection_string: postgres:///container_gateway
";

/// With `database_backend => 'sqlite'` and every optional parameter set.
const PLUGIN_SQLITE: &str = "---
# Container Gateway for Katello
:enabled: https
:pulp_endpoint: https://capsule.example.com
:client_endpoint: https://containers.example.com
:sqlite_db_path: /var/lib/foreman-proxy/smart_proxy_container_gateway.db
:sqlite_timeout: 30000
:db_connection_string: sqlite:///var/lib/foreman-proxy/smart_proxy_container_gateway.db
:db_max_connections: 30
:db_pool_timeout: 30
";

/// The 1-based line of the first line starting with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(prefix))
        .map(|i| i + 1)
        .expect("line present")
}

fn pem(body: &str) -> String {
    format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
}

fn parsed(toml: &str) -> FileConfig {
    match config::parse(toml) {
        Ok(f) => f,
        Err(p) => panic!("written TOML does not parse: {p}\n{toml}"),
    }
}

fn routed(outcome: Option<&Outcome>) -> Vec<String> {
    match outcome {
        Some(Outcome::To(keys)) => keys.clone(),
        other => panic!("expected a route, got {other:?}"),
    }
}

fn no_equivalent(outcome: Option<&Outcome>) -> String {
    match outcome {
        Some(Outcome::NoEquivalent(why)) => why.clone(),
        other => panic!("expected no equivalent, got {other:?}"),
    }
}

#[test]
fn installer_capsule_with_postgres_maps_every_key() {
    let c = Capsule::new();
    let out = c
        .import(&c.proxy_yml(TRUSTED_TWO), PLUGIN_POSTGRES)
        .expect("import");
    let f = parsed(&out.toml);

    assert_eq!(f.server.listen, vec!["0.0.0.0:8443"]);
    assert_eq!(f.server.listen_plain, vec!["127.0.0.1:8080"]);
    assert_eq!(f.server.tls_cert, c.p("ssl_cert.pem"));
    assert_eq!(f.server.tls_key, c.p("ssl_key.pem"));
    assert_eq!(f.server.client_ca, c.p("ssl_ca.pem"));
    assert_eq!(f.server.public_url, "https://capsule.example.com");
    assert_eq!(f.pulp.endpoint, "https://capsule.example.com");
    assert_eq!(f.pulp.registry_path, "/pulpcore_registry");
    assert_eq!(f.pulp.client_endpoint, "https://capsule.example.com");
    // The Ruby plugin's programmable defaults: foreman-proxy's certificates for Foreman.
    assert_eq!(f.pulp.ssl_ca, c.p("foreman_ssl_ca.pem"));
    assert_eq!(f.pulp.ssl_cert, c.p("foreman_ssl_cert.pem"));
    assert_eq!(f.pulp.ssl_key, c.p("foreman_ssl_key.pem"));
    assert_eq!(f.central.url, "https://katello.example.com");
    assert_eq!(f.central.registry_path, "/v2/");
    assert_eq!(f.central.ssl_ca, c.p("foreman_ssl_ca.pem"));
    assert_eq!(f.central.ssl_cert, c.p("foreman_ssl_cert.pem"));
    assert_eq!(f.central.ssl_key, c.p("foreman_ssl_key.pem"));
    assert_eq!(
        f.management.allowed_cns,
        vec!["katello.example.com", "capsule.example.com"]
    );
    assert_eq!(f.log.filter, "info");

    let cfg = c.validate(&out.toml);
    assert_eq!(
        cfg.central.endpoint("_catalog"),
        "https://katello.example.com/v2/_catalog"
    );
    assert_eq!(
        cfg.pulp.registry_base(),
        "https://capsule.example.com/pulpcore_registry"
    );

    let proxy = c.dir.path().join("settings.yml");
    let plugin = c.dir.path().join("container_gateway.yml");
    let r = &out.report;
    assert_eq!(
        routed(r.outcome(&proxy, ":foreman_url:")),
        vec!["central.url"]
    );
    assert_eq!(
        routed(r.outcome(&proxy, ":foreman_ssl_ca:")),
        vec!["pulp.ssl_ca", "central.ssl_ca"]
    );
    assert_eq!(
        routed(r.outcome(&proxy, ":ssl_ca_file:")),
        vec!["server.client_ca"]
    );
    assert_eq!(
        routed(r.outcome(&proxy, ":trusted_hosts:")),
        vec!["management.allowed_cns"]
    );
    assert_eq!(
        routed(r.outcome(&plugin, ":client_endpoint:")),
        vec!["server.public_url", "pulp.client_endpoint"]
    );
    assert_eq!(
        routed(r.outcome(&plugin, ":pulp_endpoint:")),
        vec!["pulp.endpoint"]
    );
    assert!(no_equivalent(r.outcome(&plugin, ":db_connection_string:")).contains("no database"));
    assert!(no_equivalent(r.outcome(&plugin, ":sqlite_db_path:")).contains("state.dir"));
    assert!(no_equivalent(r.outcome(&plugin, ":enabled:")).contains("https"));
    assert!(no_equivalent(r.outcome(&proxy, ":https_port:")).contains(":9090/container_gateway/"));
    assert!(no_equivalent(r.outcome(&proxy, ":log_file:")).contains("journal"));
    // Every key of both files is accounted for, in file order.
    assert_eq!(r.sources[0].lines.len(), 16, "{:#?}", r.sources[0].lines);
    assert_eq!(r.sources[1].lines.len(), 5);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(r.unreadable.is_empty(), "{:?}", r.unreadable);
}

#[test]
fn every_written_key_says_where_it_came_from() {
    let c = Capsule::new();
    let out = c
        .import(&c.proxy_yml(TRUSTED_TWO), PLUGIN_POSTGRES)
        .expect("import");
    let mut previous = "";
    for line in out.toml.lines() {
        if !line.starts_with('#') && line.contains(" = ") {
            assert!(
                previous.starts_with('#'),
                "{line:?} has no comment above it:\n{}",
                out.toml
            );
        }
        previous = line;
    }
    let line = line_of(&c.proxy_yml(TRUSTED_TWO), ":foreman_url:");
    assert!(out.toml.contains(&format!(
        ":foreman_url: in {} (line {line})",
        c.dir.path().join("settings.yml").display()
    )));
}

#[test]
fn sqlite_backend_settings_have_no_equivalent() {
    let c = Capsule::new();
    let out = c
        .import(&c.proxy_yml(TRUSTED_TWO), PLUGIN_SQLITE)
        .expect("import");
    let plugin = c.dir.path().join("container_gateway.yml");
    for key in [
        ":sqlite_db_path:",
        ":sqlite_timeout:",
        ":db_connection_string:",
        ":db_max_connections:",
        ":db_pool_timeout:",
    ] {
        assert!(
            no_equivalent(out.report.outcome(&plugin, key)).contains("no database"),
            "{key}"
        );
    }
    let f = parsed(&out.toml);
    // A load balancer name: clients pull from it, and Pulp's redirects point at it.
    assert_eq!(f.server.public_url, "https://containers.example.com");
    assert_eq!(f.pulp.client_endpoint, "https://containers.example.com");
    assert_eq!(f.pulp.endpoint, "https://capsule.example.com");
    c.validate(&out.toml);
}

#[test]
fn absent_optional_keys_take_the_ruby_plugin_defaults() {
    let c = Capsule::new();
    let plugin = "---\n:enabled: true\n:sqlite_db_path: /var/lib/foreman-proxy/smart_proxy_container_gateway.db\n";
    let out = c.import(&c.proxy_yml(TRUSTED_TWO), plugin).expect("import");
    let f = parsed(&out.toml);
    assert_eq!(f.pulp.endpoint, "https://capsule.example.com");
    assert_eq!(f.server.public_url, "https://capsule.example.com");
    assert_eq!(f.central.registry_path, "/v2/");
    assert_eq!(f.pulp.ssl_ca, c.p("foreman_ssl_ca.pem"));
    assert_eq!(f.pulp.ssl_cert, c.p("foreman_ssl_cert.pem"));
    assert_eq!(f.pulp.ssl_key, c.p("foreman_ssl_key.pem"));
    // No client_endpoint: Pulp's redirect Locations are relayed as Pulp wrote them.
    assert_eq!(f.pulp.client_endpoint, "");
    assert!(!out.toml.contains("client_endpoint ="));
    let defaulted: Vec<&str> = out.report.defaults.iter().map(|d| d.key.as_str()).collect();
    for key in [
        ":client_endpoint:",
        ":pulp_endpoint:",
        ":pulp_client_ssl_ca:",
        ":katello_registry_path:",
    ] {
        assert!(defaulted.contains(&key), "{key} not among {defaulted:?}");
    }
    c.validate(&out.toml);
}

#[test]
fn explicit_settings_win_over_defaults() {
    let c = Capsule::new();
    let plugin = format!(
        "---\n:enabled: true\n:pulp_endpoint: https://pulp.example.com:8443\n:pulp_client_ssl_ca: {}\n:pulp_client_ssl_cert: {}\n:pulp_client_ssl_key: {}\n:katello_registry_path: /registry/v2/\n",
        c.p("pulp_ca.pem"),
        c.p("pulp_cert.pem"),
        c.p("pulp_key.pem")
    );
    let out = c
        .import(&c.proxy_yml(TRUSTED_TWO), &plugin)
        .expect("import");
    let f = parsed(&out.toml);
    assert_eq!(f.pulp.endpoint, "https://pulp.example.com:8443");
    assert_eq!(f.pulp.ssl_ca, c.p("pulp_ca.pem"));
    assert_eq!(f.pulp.ssl_cert, c.p("pulp_cert.pem"));
    assert_eq!(f.pulp.ssl_key, c.p("pulp_key.pem"));
    assert_eq!(f.central.registry_path, "/registry/v2/");
    // central keeps foreman-proxy's own certificates for Foreman.
    assert_eq!(f.central.ssl_cert, c.p("foreman_ssl_cert.pem"));
    let cfg = c.validate(&out.toml);
    assert_eq!(
        cfg.central.endpoint("token"),
        "https://katello.example.com/registry/v2/token"
    );
    let proxy = c.dir.path().join("settings.yml");
    assert_eq!(
        routed(out.report.outcome(&proxy, ":foreman_ssl_ca:")),
        vec!["central.ssl_ca"]
    );
}

#[test]
fn without_foreman_ssl_settings_foreman_proxy_own_certificates_are_used() {
    let c = Capsule::new();
    let proxy: String = c
        .proxy_yml(TRUSTED_TWO)
        .lines()
        .filter(|l| !l.starts_with(":foreman_ssl_"))
        .map(|l| format!("{l}\n"))
        .collect();
    let out = c.import(&proxy, PLUGIN_POSTGRES).expect("import");
    let f = parsed(&out.toml);
    assert_eq!(f.central.ssl_ca, c.p("ssl_ca.pem"));
    assert_eq!(f.central.ssl_cert, c.p("ssl_cert.pem"));
    assert_eq!(f.central.ssl_key, c.p("ssl_key.pem"));
    assert_eq!(f.pulp.ssl_ca, c.p("ssl_ca.pem"));
    assert_eq!(f.pulp.ssl_cert, c.p("ssl_cert.pem"));
    assert_eq!(f.pulp.ssl_key, c.p("ssl_key.pem"));
    let path = c.dir.path().join("settings.yml");
    assert_eq!(
        routed(out.report.outcome(&path, ":ssl_certificate:")),
        vec!["server.tls_cert", "pulp.ssl_cert", "central.ssl_cert"]
    );
    c.validate(&out.toml);
}

#[test]
fn trusted_hosts_one_several_empty_and_absent() {
    let c = Capsule::new();
    let cases: [(&str, Vec<&str>, bool); 5] = [
        (
            ":trusted_hosts:\n  - katello.example.com",
            vec!["katello.example.com"],
            false,
        ),
        (
            TRUSTED_TWO,
            vec!["katello.example.com", "capsule.example.com"],
            false,
        ),
        (
            ":trusted_hosts:\n  - katello.example.com\n  - katello2.example.com\n  - capsule.example.com",
            vec![
                "katello.example.com",
                "katello2.example.com",
                "capsule.example.com",
            ],
            false,
        ),
        (":trusted_hosts: []", vec!["katello.example.com"], true),
        (TRUSTED_NONE, vec!["katello.example.com"], true),
    ];
    for (block, expected, warns) in cases {
        let out = c
            .import(&c.proxy_yml(block), PLUGIN_POSTGRES)
            .expect("import");
        let f = parsed(&out.toml);
        assert_eq!(f.management.allowed_cns, expected, "{block}");
        assert_eq!(
            out.report
                .warnings
                .iter()
                .any(|w| w.contains(":trusted_hosts:")),
            warns,
            "{block}: {:?}",
            out.report.warnings
        );
        c.validate(&out.toml);
    }
}

#[test]
fn empty_trusted_hosts_are_reported_and_foreman_url_named() {
    let c = Capsule::new();
    let out = c
        .import(&c.proxy_yml(":trusted_hosts: []"), PLUGIN_POSTGRES)
        .expect("import");
    let proxy = c.dir.path().join("settings.yml");
    assert!(no_equivalent(out.report.outcome(&proxy, ":trusted_hosts:")).contains("empty"));
    assert_eq!(
        routed(out.report.outcome(&proxy, ":foreman_url:")),
        vec!["central.url", "management.allowed_cns"]
    );
}

#[test]
fn pulp_endpoint_path_moves_into_registry_path() {
    let c = Capsule::new();
    let plugin = "---\n:pulp_endpoint: https://capsule.example.com/pulp/\n:client_endpoint: https://lb.example.com/\n";
    let out = c.import(&c.proxy_yml(TRUSTED_TWO), plugin).expect("import");
    let f = parsed(&out.toml);
    assert_eq!(f.pulp.endpoint, "https://capsule.example.com");
    assert_eq!(f.pulp.registry_path, "/pulp/pulpcore_registry");
    assert_eq!(f.pulp.client_endpoint, "https://lb.example.com");
    assert_eq!(f.server.public_url, "https://lb.example.com");
    c.validate(&out.toml);
}

#[test]
fn foreman_url_path_is_dropped_like_uri_join_did() {
    let c = Capsule::new();
    let proxy = c.proxy_yml(TRUSTED_TWO).replace(
        ":foreman_url: https://katello.example.com",
        ":foreman_url: https://katello.example.com/foreman/",
    );
    let out = c.import(&proxy, PLUGIN_POSTGRES).expect("import");
    assert_eq!(parsed(&out.toml).central.url, "https://katello.example.com");
    assert!(
        out.report.warnings.iter().any(|w| w.contains("/foreman/")),
        "{:?}",
        out.report.warnings
    );
}

#[test]
fn without_ssl_ca_file_the_rhsm_katello_ca_is_the_client_ca() {
    let c = Capsule::new();
    let proxy: String = c
        .proxy_yml(TRUSTED_TWO)
        .lines()
        .filter(|l| !l.starts_with(":ssl_ca_file:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let out = c.import(&proxy, PLUGIN_POSTGRES).expect("import");
    assert_eq!(
        parsed(&out.toml).server.client_ca,
        c.p("katello-default-ca.pem")
    );
    assert!(
        out.report
            .defaults
            .iter()
            .any(|d| d.key == ":ssl_ca_file:" && d.gateway_key == "server.client_ca")
    );
    c.validate(&out.toml);
}

#[test]
fn an_ssl_ca_file_without_katello_default_ca_is_warned_about() {
    let c = Capsule::new();
    std::fs::write(c.dir.path().join("ssl_ca.pem"), pem("MIIBsomeotherca")).expect("write");
    let out = c
        .import(&c.proxy_yml(TRUSTED_TWO), PLUGIN_POSTGRES)
        .expect("import");
    assert!(
        out.report
            .warnings
            .iter()
            .any(|w| w.contains("subscription certificates") && w.contains(":ssl_ca_file:")),
        "{:?}",
        out.report.warnings
    );
    // A bundle holding katello-default-ca among others is fine.
    let bundle = format!(
        "{}{}",
        pem("MIIBsomeotherca"),
        pem("MIIB\nkatellodefaultca")
    );
    std::fs::write(c.dir.path().join("ssl_ca.pem"), bundle).expect("write");
    let out = c
        .import(&c.proxy_yml(TRUSTED_TWO), PLUGIN_POSTGRES)
        .expect("import");
    assert!(out.report.warnings.is_empty(), "{:?}", out.report.warnings);
}

#[test]
fn foreman_proxy_on_8443_moves_the_gateway_listener() {
    let c = Capsule::new();
    let proxy = c
        .proxy_yml(TRUSTED_TWO)
        .replace(":https_port: 9090", ":https_port: 8443")
        .replace(":http_port: 8000", ":http_port: 8080");
    let out = c.import(&proxy, PLUGIN_POSTGRES).expect("import");
    let f = parsed(&out.toml);
    assert_eq!(f.server.listen, vec!["0.0.0.0:9443"]);
    assert_eq!(f.server.listen_plain, vec!["127.0.0.1:8081"]);
}

#[test]
fn log_levels_map_to_filters() {
    let c = Capsule::new();
    for (level, filter) in [
        ("DEBUG", "info,container_gateway=debug"),
        ("WARN", "warn"),
        ("ERROR", "error"),
        ("FATAL", "error"),
    ] {
        let proxy = c
            .proxy_yml(TRUSTED_TWO)
            .replace(":log_level: INFO", &format!(":log_level: {level}"));
        let out = c.import(&proxy, PLUGIN_POSTGRES).expect("import");
        assert_eq!(parsed(&out.toml).log.filter, filter);
        c.validate(&out.toml);
    }
    let proxy = c
        .proxy_yml(TRUSTED_TWO)
        .replace(":log_level: INFO", ":log_level: LOUD");
    let out = c.import(&proxy, PLUGIN_POSTGRES).expect("import");
    assert_eq!(parsed(&out.toml).log.filter, "info");
    assert!(out.report.warnings.iter().any(|w| w.contains("LOUD")));
}

#[test]
fn unknown_and_plain_string_keys_are_reported() {
    let c = Capsule::new();
    let proxy = format!(
        "{}:puppet_url: https://puppet.example.com:8140\n",
        c.proxy_yml(TRUSTED_TWO)
    );
    let plugin = format!("{PLUGIN_POSTGRES}:listen_on: https\nkatello_registry_path: /v2/\n");
    let out = c.import(&proxy, &plugin).expect("import");
    let proxy_path = c.dir.path().join("settings.yml");
    let plugin_path = c.dir.path().join("container_gateway.yml");
    assert!(no_equivalent(out.report.outcome(&proxy_path, ":puppet_url:")).contains("never read"));
    assert!(
        no_equivalent(out.report.outcome(&plugin_path, ":listen_on:")).contains("not a setting")
    );
    // A key written without the symbol's colon is still the same setting.
    assert_eq!(
        routed(out.report.outcome(&plugin_path, "katello_registry_path")),
        vec!["central.registry_path"]
    );
}

#[test]
fn disabled_plugin_is_imported_with_a_warning() {
    let c = Capsule::new();
    let plugin = PLUGIN_POSTGRES.replace(":enabled: https", ":enabled: false");
    let out = c
        .import(&c.proxy_yml(TRUSTED_TWO), &plugin)
        .expect("import");
    assert!(
        out.report
            .warnings
            .iter()
            .any(|w| w.contains(":enabled:") && w.contains("false"))
    );
}

#[test]
fn odd_characters_survive_the_round_trip() {
    let c = Capsule::new();
    let odd = c.dir.path().join("we\"ird \\ dir");
    std::fs::create_dir(&odd).expect("dir");
    let cert = odd.join("cert #1.pem");
    std::fs::write(&cert, pem("x")).expect("write");
    let proxy = c.proxy_yml(TRUSTED_TWO).replace(
        &format!(":ssl_certificate: {}", c.p("ssl_cert.pem")),
        &format!(":ssl_certificate: '{}'", cert.display()),
    );
    let out = c.import(&proxy, PLUGIN_POSTGRES).expect("import");
    assert_eq!(
        parsed(&out.toml).server.tls_cert,
        cert.display().to_string()
    );
    c.validate(&out.toml);
}

#[test]
fn malformed_yaml_names_the_file_and_line() {
    let c = Capsule::new();
    let broken =
        "---\n:enabled: true\n:pulp_endpoint: 'https://capsule.example.com\n:sqlite_db_path: /x\n";
    let err = c
        .import(&c.proxy_yml(TRUSTED_TWO), broken)
        .expect_err("broken YAML");
    assert_eq!(err.exit_code(), EXIT_MALFORMED);
    let shown = err.to_string();
    let path = c
        .dir
        .path()
        .join("container_gateway.yml")
        .display()
        .to_string();
    assert!(shown.starts_with(&format!("{path}:")), "{shown}");
    assert!(
        matches!(err, ImportError::Malformed { line, .. } if line >= 3),
        "{shown}"
    );

    let bad_indent =
        "---\n:enabled: true\n  :pulp_endpoint: https://x\n :client_endpoint: https://y\n";
    let err = c
        .import(&c.proxy_yml(TRUSTED_TWO), bad_indent)
        .expect_err("bad indentation");
    assert_eq!(err.exit_code(), EXIT_MALFORMED);
    assert!(
        matches!(err, ImportError::Malformed { line: 3 | 4, .. }),
        "{err}"
    );

    let duplicate = format!("{PLUGIN_POSTGRES}:pulp_endpoint: https://again.example.com\n");
    let err = c
        .import(&c.proxy_yml(TRUSTED_TWO), &duplicate)
        .expect_err("duplicate key");
    assert!(
        matches!(err, ImportError::Malformed { line: 8, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains(":pulp_endpoint: is set twice"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_mapping_is_malformed() {
    let c = Capsule::new();
    let err = c
        .import(
            &c.proxy_yml(TRUSTED_TWO),
            "---\n# comment\n- just\n- a list\n",
        )
        .expect_err("list");
    assert_eq!(err.exit_code(), EXIT_MALFORMED);
    assert!(
        matches!(err, ImportError::Malformed { line: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("mapping"), "{err}");
}

#[test]
fn empty_plugin_file_means_every_default() {
    let c = Capsule::new();
    let out = c
        .import(&c.proxy_yml(TRUSTED_TWO), "---\n")
        .expect("import");
    assert_eq!(
        parsed(&out.toml).pulp.endpoint,
        "https://capsule.example.com"
    );
    assert!(out.report.sources[1].lines.is_empty());
    c.validate(&out.toml);
}

#[test]
fn a_value_of_the_wrong_shape_names_file_line_and_key() {
    let c = Capsule::new();
    let proxy = c.proxy_yml(TRUSTED_TWO).replace(
        ":foreman_url: https://katello.example.com",
        ":foreman_url:\n  - https://katello.example.com",
    );
    let err = c
        .import(&proxy, PLUGIN_POSTGRES)
        .expect_err("list for a URL");
    assert_eq!(err.exit_code(), EXIT_INVALID);
    let shown = err.to_string();
    let line = line_of(&proxy, ":foreman_url:");
    assert!(
        shown.contains(&format!(
            "{}:{line}: :foreman_url:",
            c.dir.path().join("settings.yml").display()
        )),
        "{shown}"
    );

    let plugin = PLUGIN_POSTGRES.replace(
        ":pulp_endpoint: https://capsule.example.com",
        ":pulp_endpoint: capsule.example.com",
    );
    let err = c
        .import(&c.proxy_yml(TRUSTED_TWO), &plugin)
        .expect_err("not a URL");
    assert_eq!(err.exit_code(), EXIT_INVALID);
    assert!(err.to_string().contains(":4: :pulp_endpoint:"), "{err}");

    let plugin = format!("{PLUGIN_POSTGRES}:katello_registry_path: v2/\n");
    let err = c
        .import(&c.proxy_yml(TRUSTED_TWO), &plugin)
        .expect_err("relative path");
    assert!(err.to_string().contains(":katello_registry_path:"), "{err}");
}

#[test]
fn missing_foreman_url_is_an_error() {
    let c = Capsule::new();
    let proxy: String = c
        .proxy_yml(TRUSTED_TWO)
        .lines()
        .filter(|l| !l.starts_with(":foreman_url:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let err = c
        .import(&proxy, PLUGIN_POSTGRES)
        .expect_err("no foreman_url");
    assert_eq!(err.exit_code(), EXIT_INVALID);
    assert!(
        err.to_string().contains(":foreman_url: is not set"),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let c = Capsule::new();
    let proxy = c.write("settings.yml", &c.proxy_yml(TRUSTED_TWO));
    let absent = c.dir.path().join("settings.d/container_gateway.yml");
    let err = import_files(&proxy, &absent, &c.env()).expect_err("missing file");
    assert_eq!(err.exit_code(), EXIT_UNREADABLE);
    assert!(
        err.to_string().contains(&absent.display().to_string()),
        "{err}"
    );
}

#[test]
fn the_hostname_is_needed_only_for_defaults() {
    let c = Capsule::new();
    let proxy = c.write("settings.yml", &c.proxy_yml(TRUSTED_TWO));
    let full = c.write("full.yml", PLUGIN_POSTGRES);
    let bare = c.write("bare.yml", "---\n:enabled: true\n");
    let no_name = Env {
        hostname: None,
        rhsm_ca: c.dir.path().join("katello-default-ca.pem"),
    };
    import_files(&proxy, &full, &no_name).expect("both endpoints set");
    let err = import_files(&proxy, &bare, &no_name).expect_err("defaults need the hostname");
    assert_eq!(err.exit_code(), EXIT_INVALID);
    assert!(err.to_string().contains("--hostname"), "{err}");
    let bad_name = Env {
        hostname: Some("capsule/evil".to_owned()),
        ..no_name
    };
    assert!(matches!(
        import_files(&proxy, &bare, &bad_name),
        Err(ImportError::BadHostname { .. })
    ));
}

#[test]
fn exit_codes_are_distinct_per_kind_of_bad_input() {
    let codes = [
        EXIT_RUNTIME,
        EXIT_UNREADABLE,
        EXIT_MALFORMED,
        EXIT_INVALID,
        EXIT_OUTPUT_EXISTS,
    ];
    for (i, a) in codes.iter().enumerate() {
        assert!(codes[i + 1..].iter().all(|b| a != b));
        // 0 is success and 2 is clap's usage error.
        assert!(*a != 0 && *a != 2);
    }
}

#[test]
fn output_is_never_replaced_without_force() {
    use std::os::unix::fs::PermissionsExt;
    let c = Capsule::new();
    let out = c.dir.path().join("gateway.toml");
    write_output(&out, "first = 1\n", false).expect("first write");
    let err = write_output(&out, "second = 2\n", false).expect_err("exists");
    assert_eq!(err.exit_code(), EXIT_OUTPUT_EXISTS);
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "first = 1\n");
    write_output(&out, "third = 3\n", true).expect("forced");
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "third = 3\n");
    let mode = std::fs::metadata(&out).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let leftovers: Vec<_> = std::fs::read_dir(c.dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".gateway.toml.")
        })
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn urls_split_as_the_gateway_wants_them() {
    let u = parse_url("HTTPS://katello.example.com:443/foreman/").expect("url");
    assert_eq!(u.origin(), "https://katello.example.com:443");
    assert_eq!(u.host(), "katello.example.com");
    assert_eq!(u.without_slash(), "https://katello.example.com:443/foreman");
    assert_eq!(parse_url("https://[::1]:8443").expect("v6").host(), "::1");
    for bad in [
        "katello.example.com",
        "ftp://x",
        "https://",
        "https://x/?q=1",
        "https://user@x",
    ] {
        assert!(parse_url(bad).is_none(), "{bad}");
    }
}

/// smart_proxy_container_gateway 4.0.0 has no `https://<hostname>` default
/// for `:pulp_endpoint:`: the import still takes 3.x's, and says so.
#[test]
fn a_defaulted_pulp_endpoint_is_warned_about_as_the_3x_default() {
    let c = Capsule::new();
    let bare = c
        .import(&c.proxy_yml(TRUSTED_TWO), "---\n:enabled: true\n")
        .expect("import");
    assert_eq!(
        parsed(&bare.toml).pulp.endpoint,
        "https://capsule.example.com"
    );
    let warned: Vec<&String> = bare
        .report
        .warnings
        .iter()
        .filter(|w| w.contains(":pulp_endpoint:") && w.contains("4.0"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", bare.report.warnings);
    assert!(
        warned[0].contains("https://capsule.example.com"),
        "{}",
        warned[0]
    );

    let set = c
        .import(&c.proxy_yml(TRUSTED_TWO), PLUGIN_POSTGRES)
        .expect("import");
    assert!(
        !set.report
            .warnings
            .iter()
            .any(|w| w.contains(":pulp_endpoint:")),
        "{:?}",
        set.report.warnings
    );
}

/// foremanctl writes `:db_connection_string:` with the database password in
/// it (`postgresql://user:password@host:port/db`, for 4.0.x): it has no
/// equivalent, and the password reaches neither gateway.toml nor the report.
#[test]
fn a_db_connection_string_with_a_password_is_not_copied_anywhere() {
    let c = Capsule::new();
    let plugin = "---\n:enabled: true\n:pulp_endpoint: https://capsule.example.com\n:db_connection_string: postgresql://container_gateway:s3cr3t-pw@db.example.com:5432/container_gateway\n";
    let out = c.import(&c.proxy_yml(TRUSTED_TWO), plugin).expect("import");
    let plugin_path = c.dir.path().join("container_gateway.yml");
    assert!(
        no_equivalent(out.report.outcome(&plugin_path, ":db_connection_string:"))
            .contains("no database")
    );
    let report = out.report.render(None);
    for text in [&out.toml, &report] {
        assert!(!text.contains("s3cr3t-pw"), "{text}");
    }
    c.validate(&out.toml);
}
