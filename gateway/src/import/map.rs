//! From smart_proxy_container_gateway's settings to gateway.toml keys.
//!
//! The defaults are the Ruby plugin's (3.5.0, `container_gateway.rb`):
//! `pulp_endpoint` is `https://<hostname>`, `katello_registry_path` is `/v2/`,
//! and `pulp_client_ssl_{ca,cert,key}` copy foreman-proxy's
//! `foreman_ssl_{ca,cert,key}`. Where those are unset too, foreman-proxy's own
//! rule for its calls to Foreman applies: `foreman_ssl_*` falls back to
//! `ssl_ca_file`, `ssl_certificate` and `ssl_private_key`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ImportError;
use super::render::{DefaultLine, Doc, Line, Outcome, Report, SourceReport, TomlValue};
use super::yaml::{Origin, SettingsFile, Value};

/// Where subscription certificates' CA is installed on a registered machine
/// (katello-ca-consumer).
pub const RHSM_KATELLO_CA: &str = "/etc/rhsm/ca/katello-default-ca.pem";

/// What the import needs from the machine it runs on.
#[derive(Clone, Debug)]
pub struct Env {
    /// This machine's name, for the plugin's `https://<hostname>` defaults.
    /// `None` is an error only if a default needs it.
    pub hostname: Option<String>,
    /// katello-default-ca as installed for subscription-manager.
    pub rhsm_ca: PathBuf,
}

/// The result: the file's text and what to tell the admin.
#[derive(Clone, Debug)]
pub struct Imported {
    pub toml: String,
    pub report: Report,
}

/// Preferred listeners; the next candidate is taken when foreman-proxy's own
/// ports (read from its settings) already hold one.
const TLS_PORTS: [u16; 3] = [8443, 9443, 10443];
const PLAIN_PORTS: [u16; 3] = [8080, 8081, 8082];

struct Builder<'a> {
    proxy: &'a SettingsFile,
    plugin: &'a SettingsFile,
    env: &'a Env,
    doc: Doc,
    /// (file, key as written) -> gateway keys it went to.
    routes: HashMap<(PathBuf, String), Vec<String>>,
    defaults: Vec<DefaultLine>,
    warnings: Vec<String>,
}

/// A value and its provenance, as one comment line.
struct Sourced {
    value: String,
    why: String,
    origin: Option<Origin>,
}

pub fn import(
    proxy: &SettingsFile,
    plugin: &SettingsFile,
    env: &Env,
) -> Result<Imported, ImportError> {
    let mut b = Builder {
        proxy,
        plugin,
        env,
        doc: Doc::default(),
        routes: HashMap::new(),
        defaults: Vec::new(),
        warnings: Vec::new(),
    };
    b.doc
        .header("gateway.toml written by `container-gateway import-settings` from");
    b.doc.header(format!("  {}", proxy.path.display()));
    b.doc.header(format!("  {}", plugin.path.display()));
    b.doc
        .header("Each key says where its value came from. Keys not written here keep the");
    b.doc
        .header("gateway's defaults (README, \"Configuration\"). Check this file with");
    b.doc
        .header("  container-gateway check-config --config <this file>");

    b.server()?;
    b.pulp()?;
    b.central()?;
    b.management()?;
    b.log()?;
    b.enabled()?;

    let toml = b.doc.render();
    let mut report = Report {
        sources: vec![
            b.source_report(proxy, Kind::Proxy),
            b.source_report(plugin, Kind::Plugin),
        ],
        defaults: b.defaults,
        warnings: b.warnings,
        unreadable: Vec::new(),
    };
    report.unreadable = unreadable_files(&b.doc);
    Ok(Imported { toml, report })
}

#[derive(Clone, Copy)]
enum Kind {
    Proxy,
    Plugin,
}

impl Builder<'_> {
    fn route(&mut self, origin: &Origin, gateway_key: &str) {
        let keys = self
            .routes
            .entry((origin.path.clone(), origin.written.clone()))
            .or_default();
        if !keys.iter().any(|k| k == gateway_key) {
            keys.push(gateway_key.to_owned());
        }
    }

    fn hostname(&self, needed_for: &str) -> Result<String, ImportError> {
        let host = self
            .env
            .hostname
            .clone()
            .ok_or_else(|| ImportError::NoHostname {
                needed_for: needed_for.to_owned(),
            })?;
        let valid = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(ImportError::BadHostname { hostname: host });
        }
        Ok(host)
    }

    fn plugin_file(&self) -> String {
        self.plugin.path.display().to_string()
    }

    fn proxy_file(&self) -> String {
        self.proxy.path.display().to_string()
    }

    /// Write `table.key` from a sourced value, noting its route.
    fn put(&mut self, table: &'static str, key: &'static str, s: &Sourced, extra: &[&str]) {
        let gateway_key = format!("{table}.{key}");
        if let Some(o) = &s.origin {
            self.route(o, &gateway_key);
        }
        let mut comment = vec![s.why.clone()];
        comment.extend(extra.iter().map(|l| (*l).to_owned()));
        self.doc
            .set(table, key, TomlValue::Str(s.value.clone()), comment);
    }

    fn server(&mut self) -> Result<(), ImportError> {
        let taken = self.proxy_ports()?;
        let https_port = match self.proxy.scalar("https_port")? {
            Some((p, _)) => format!(":https_port: {p}"),
            None => "foreman-proxy's HTTPS port".to_owned(),
        };
        let tls = pick_port(&TLS_PORTS, &taken);
        let plain = pick_port(&PLAIN_PORTS, &taken);
        self.doc.set(
            "server",
            "listen",
            TomlValue::List(vec![format!("0.0.0.0:{tls}")]),
            vec![format!(
                "Not a Ruby plugin setting: the plugin answered inside foreman-proxy, on {https_port}. \
                 This TLS listener takes Katello's management calls and any client that connects directly \
                 (README, \"Migrating from smart_proxy_container_gateway\")."
            )],
        );
        self.doc.set(
            "server",
            "listen_plain",
            TomlValue::List(vec![format!("127.0.0.1:{plain}")]),
            vec![
                "Not a Ruby plugin setting: Apache's ProxyPass lines for /v1/, /v2/ and /index/ point here. \
                 Apache forwards the client certificate in X-RHSM-SSL-Client-Cert, which is believed only \
                 from server.trusted_frontends (loopback by default)."
                    .to_owned(),
            ],
        );

        if let Some(s) = sourced(self.proxy, "ssl_certificate")? {
            self.put(
                "server",
                "tls_cert",
                &s,
                &["foreman-proxy's own server certificate."],
            );
        }
        if let Some(s) = sourced(self.proxy, "ssl_private_key")? {
            self.put("server", "tls_key", &s, &[]);
        }

        // The client CA does two jobs in the gateway: it verifies subscription
        // certificates (katello-default-ca signs them) and Katello's client
        // certificate on management calls, which foreman-proxy verified with
        // ssl_ca_file. On a Katello smart proxy ssl_ca_file *is*
        // katello-default-ca (puppet-certs copies it there), so taking it keeps
        // both working; RHSM's copy is checked against it below.
        match self.proxy.scalar("ssl_ca_file")? {
            Some((value, origin)) => {
                let s = Sourced {
                    value: value.clone(),
                    why: format!("{origin}."),
                    origin: Some(origin.clone()),
                };
                self.put(
                    "server",
                    "client_ca",
                    &s,
                    &["foreman-proxy verified Katello's client certificate with it, and so do the gateway's \
                       management routes. On a Katello smart proxy it is katello-default-ca, which also signs \
                       the subscription certificates hosts present."],
                );
                if let Some(w) = ca_mismatch(Path::new(&value), &self.env.rhsm_ca) {
                    self.warnings.push(format!("{origin}: {w}"));
                }
            }
            None => {
                let value = self.env.rhsm_ca.display().to_string();
                self.doc.set(
                    "server",
                    "client_ca",
                    TomlValue::Str(value.clone()),
                    vec![format!(
                        ":ssl_ca_file: is not set in {}: katello-default-ca as katello-ca-consumer installs it; \
                         it signs subscription certificates and Katello's client certificate.",
                        self.proxy_file()
                    )],
                );
                self.defaults.push(DefaultLine {
                    key: ":ssl_ca_file:".to_owned(),
                    gateway_key: "server.client_ca".to_owned(),
                    value: super::render::toml_string(&value),
                    why: "katello-default-ca, which signs subscription certificates".to_owned(),
                });
            }
        }

        match self.plugin.scalar("client_endpoint")? {
            Some((value, origin)) => {
                let url = parse_url(&value)
                    .ok_or_else(|| self.bad_url(self.plugin, "client_endpoint", &value))?;
                let s = Sourced {
                    value: url.without_slash(),
                    why: format!("{origin}."),
                    origin: Some(origin),
                };
                self.put(
                    "server",
                    "public_url",
                    &s,
                    &["The name clients pull from: the token realm, the index's Registry, Links."],
                );
            }
            None => {
                let host = self.hostname("server.public_url")?;
                let value = format!("https://{host}");
                self.doc.set(
                    "server",
                    "public_url",
                    TomlValue::Str(value.clone()),
                    vec![format!(
                        ":client_endpoint: is not set in {}: https://<hostname>, the name of this machine \
                         (--hostname). Clients pull from this name: the token realm, the index's Registry, Links.",
                        self.plugin_file()
                    )],
                );
                self.defaults.push(DefaultLine {
                    key: ":client_endpoint:".to_owned(),
                    gateway_key: "server.public_url".to_owned(),
                    value: super::render::toml_string(&value),
                    why: "https://<hostname>, as clients reach this smart proxy".to_owned(),
                });
            }
        }
        Ok(())
    }

    /// foreman-proxy's own ports, which the gateway must not take.
    fn proxy_ports(&self) -> Result<Vec<u16>, ImportError> {
        let mut taken = Vec::new();
        for name in ["https_port", "http_port"] {
            if let Some((value, _)) = self.proxy.scalar(name)? {
                match value.parse::<u16>() {
                    Ok(p) => taken.push(p),
                    Err(_) => {
                        let entry = self
                            .proxy
                            .get(name)
                            .ok_or_else(|| ImportError::Internal(format!("{name} vanished")))?;
                        return Err(self
                            .proxy
                            .invalid(entry, &format!("must be a port number, not {value:?}")));
                    }
                }
            }
        }
        Ok(taken)
    }

    fn bad_url(&self, file: &SettingsFile, name: &str, value: &str) -> ImportError {
        match file.get(name) {
            Some(entry) => file.invalid(
                entry,
                &format!(
                    "must be an http:// or https:// URL with a host and no query, not {value:?}"
                ),
            ),
            None => ImportError::Internal(format!("{name} vanished")),
        }
    }

    fn pulp(&mut self) -> Result<(), ImportError> {
        let (url, endpoint_source) = match self.plugin.scalar("pulp_endpoint")? {
            Some((value, origin)) => {
                let url = parse_url(&value)
                    .ok_or_else(|| self.bad_url(self.plugin, "pulp_endpoint", &value))?;
                (url, Some(origin))
            }
            None => {
                let host = self.hostname("pulp.endpoint")?;
                let value = format!("https://{host}");
                let url = parse_url(&value).ok_or(ImportError::BadHostname { hostname: host })?;
                (url, None)
            }
        };
        let endpoint = url.origin();
        match &endpoint_source {
            Some(origin) => {
                let s = Sourced {
                    value: endpoint.clone(),
                    why: format!("{origin}."),
                    origin: Some(origin.clone()),
                };
                self.put("pulp", "endpoint", &s, &[]);
            }
            None => {
                self.doc.set(
                    "pulp",
                    "endpoint",
                    TomlValue::Str(endpoint.clone()),
                    vec![format!(
                        ":pulp_endpoint: is not set in {}: the Ruby plugin's default, https://<hostname> \
                         (the name of this machine, --hostname).",
                        self.plugin_file()
                    )],
                );
                self.defaults.push(DefaultLine {
                    key: ":pulp_endpoint:".to_owned(),
                    gateway_key: "pulp.endpoint".to_owned(),
                    value: super::render::toml_string(&endpoint),
                    why: "https://<hostname>".to_owned(),
                });
                // 4.0.0 dropped this default (foreman-packaging#13948): such a
                // file ran only under 3.x, so the guess is 3.x's and is said so.
                self.warnings.push(format!(
                    ":pulp_endpoint: is not set in {}: smart_proxy_container_gateway 4.0 and later have no default for it, so pulp.endpoint = {} is 3.x's default (https://<hostname>); check that Pulp answers there",
                    self.plugin_file(),
                    super::render::toml_string(&endpoint)
                ));
            }
        }
        // The plugin appended /pulpcore_registry to whatever pulp_endpoint held,
        // path included; the gateway keeps origin and path apart.
        let registry_path = format!("{}/pulpcore_registry", url.path.trim_end_matches('/'));
        let why = match &endpoint_source {
            Some(origin) if !url.path.trim_end_matches('/').is_empty() => {
                self.route(origin, "pulp.registry_path");
                format!("The path of {origin}, plus /pulpcore_registry:")
            }
            _ => "Not a Ruby plugin setting:".to_owned(),
        };
        self.doc.set(
            "pulp",
            "registry_path",
            TomlValue::Str(registry_path),
            vec![format!(
                "{why} the Ruby plugin always asked Pulp under <pulp_endpoint>/pulpcore_registry."
            )],
        );

        // Without client_endpoint the plugin put pulp_endpoint's host into
        // redirect Locations, which is the host Pulp itself names on a standard
        // smart proxy: leaving the key empty keeps Pulp's Location as it is.
        if let Some((value, origin)) = self.plugin.scalar("client_endpoint")? {
            let ce = parse_url(&value)
                .ok_or_else(|| self.bad_url(self.plugin, "client_endpoint", &value))?;
            if !ce.path.trim_end_matches('/').is_empty() {
                self.warnings.push(format!(
                    "{origin}: its path {:?} is dropped for pulp.client_endpoint, which replaces only the scheme and host of Pulp's redirects (the Ruby plugin used only the host)",
                    ce.path
                ));
            }
            let s = Sourced {
                value: ce.origin(),
                why: format!("{origin}."),
                origin: Some(origin),
            };
            self.put(
                "pulp",
                "client_endpoint",
                &s,
                &["Replaces the origin of Pulp's redirect Locations (a load balancer in front)."],
            );
        }

        let https = endpoint.starts_with("https://");
        for (plugin_key, proxy_key, fallback, gateway_key) in [
            (
                "pulp_client_ssl_ca",
                "foreman_ssl_ca",
                "ssl_ca_file",
                "ssl_ca",
            ),
            (
                "pulp_client_ssl_cert",
                "foreman_ssl_cert",
                "ssl_certificate",
                "ssl_cert",
            ),
            (
                "pulp_client_ssl_key",
                "foreman_ssl_key",
                "ssl_private_key",
                "ssl_key",
            ),
        ] {
            let chosen = self.chain(&[
                (self.plugin, plugin_key),
                (self.proxy, proxy_key),
                (self.proxy, fallback),
            ])?;
            let Some((value, origin, depth)) = chosen else {
                if https {
                    self.warnings.push(format!(
                        ":{plugin_key}:, :{proxy_key}: and :{fallback}: are all unset: pulp.{gateway_key} keeps the gateway's default"
                    ));
                }
                continue;
            };
            let table_key: &'static str = gateway_key;
            let why = match depth {
                0 => format!("{origin}."),
                1 => format!(
                    ":{plugin_key}: is not set in {}: the Ruby plugin copies {origin}.",
                    self.plugin_file()
                ),
                _ => format!(
                    ":{plugin_key}: and :{proxy_key}: are not set: the Ruby plugin copies :{proxy_key}:, which foreman-proxy takes from {origin}."
                ),
            };
            let s = Sourced {
                value: value.clone(),
                why,
                origin: Some(origin.clone()),
            };
            self.put("pulp", table_key, &s, &[]);
            if depth > 0 {
                self.defaults.push(DefaultLine {
                    key: format!(":{plugin_key}:"),
                    gateway_key: format!("pulp.{gateway_key}"),
                    value: super::render::toml_string(&value),
                    why: format!("copied from {}", origin.written),
                });
            }
        }
        Ok(())
    }

    /// The first of `keys` that is set, and how far down the list it was.
    fn chain(
        &self,
        keys: &[(&SettingsFile, &str)],
    ) -> Result<Option<(String, Origin, usize)>, ImportError> {
        for (depth, (file, name)) in keys.iter().enumerate() {
            if let Some((value, origin)) = file.scalar(name)? {
                return Ok(Some((value, origin, depth)));
            }
        }
        Ok(None)
    }

    fn central(&mut self) -> Result<(), ImportError> {
        let Some((value, origin)) = self.proxy.scalar("foreman_url")? else {
            return Err(ImportError::Missing {
                path: self.proxy.path.clone(),
                key: ":foreman_url:".to_owned(),
                message: "the gateway asks the central Katello at this URL (central.url)"
                    .to_owned(),
            });
        };
        let url =
            parse_url(&value).ok_or_else(|| self.bad_url(self.proxy, "foreman_url", &value))?;
        // URI.join(foreman_url, '/v2/', route): the absolute registry path
        // replaces whatever path foreman_url had.
        if !url.path.trim_end_matches('/').is_empty() {
            self.warnings.push(format!(
                "{origin}: its path {:?} is dropped for central.url: the Ruby plugin joined an absolute :katello_registry_path: onto it, which discards it",
                url.path
            ));
        }
        let s = Sourced {
            value: url.origin(),
            why: format!("{origin}."),
            origin: Some(origin),
        };
        self.put("central", "url", &s, &[]);

        match self.plugin.scalar("katello_registry_path")? {
            Some((value, _)) if !value.starts_with('/') => {
                let entry = self.plugin.get("katello_registry_path").ok_or_else(|| {
                    ImportError::Internal("katello_registry_path vanished".to_owned())
                })?;
                return Err(self.plugin.invalid(
                    entry,
                    &format!("must be an absolute path like /v2/, not {value:?}"),
                ));
            }
            Some((value, origin)) => {
                let s = Sourced {
                    value,
                    why: format!("{origin}."),
                    origin: Some(origin),
                };
                self.put("central", "registry_path", &s, &[]);
            }
            None => {
                self.doc.set(
                    "central",
                    "registry_path",
                    TomlValue::Str("/v2/".to_owned()),
                    vec![format!(
                        ":katello_registry_path: is not set in {}: the Ruby plugin's default.",
                        self.plugin_file()
                    )],
                );
                self.defaults.push(DefaultLine {
                    key: ":katello_registry_path:".to_owned(),
                    gateway_key: "central.registry_path".to_owned(),
                    value: "\"/v2/\"".to_owned(),
                    why: "the Ruby plugin's default".to_owned(),
                });
            }
        }

        for (proxy_key, fallback, gateway_key) in [
            ("foreman_ssl_ca", "ssl_ca_file", "ssl_ca"),
            ("foreman_ssl_cert", "ssl_certificate", "ssl_cert"),
            ("foreman_ssl_key", "ssl_private_key", "ssl_key"),
        ] {
            let Some((value, origin, depth)) =
                self.chain(&[(self.proxy, proxy_key), (self.proxy, fallback)])?
            else {
                continue;
            };
            let why = if depth == 0 {
                format!("{origin}.")
            } else {
                format!(":{proxy_key}: is not set: foreman-proxy calls Foreman with {origin}.")
            };
            let s = Sourced {
                value: value.clone(),
                why,
                origin: Some(origin.clone()),
            };
            self.put("central", gateway_key, &s, &[]);
            if depth > 0 {
                self.defaults.push(DefaultLine {
                    key: format!(":{proxy_key}:"),
                    gateway_key: format!("central.{gateway_key}"),
                    value: super::render::toml_string(&value),
                    why: format!("foreman-proxy uses {} for Foreman", origin.written),
                });
            }
        }
        Ok(())
    }

    fn management(&mut self) -> Result<(), ImportError> {
        let listed = self.proxy.list("trusted_hosts")?;
        match listed {
            Some((names, origin)) if !names.is_empty() => {
                self.route(&origin, "management.allowed_cns");
                self.doc.set(
                    "management",
                    "allowed_cns",
                    TomlValue::List(names),
                    vec![
                        format!("{origin}."),
                        "foreman-proxy let these client-certificate CNs call the Ruby plugin's management routes \
                         (and every other feature)."
                            .to_owned(),
                    ],
                );
            }
            other => {
                // foreman-proxy with no trusted_hosts lets any certificate its
                // CA signed in; the gateway wants names, and Katello's client
                // certificate is named after its host.
                let (value, _) = self.proxy.scalar("foreman_url")?.ok_or_else(|| {
                    ImportError::Internal(
                        "foreman_url vanished between central and management".to_owned(),
                    )
                })?;
                let host = parse_url(&value).map(|u| u.host()).unwrap_or_default();
                let state = if other.is_some() {
                    "is empty"
                } else {
                    "is not set"
                };
                let foreman = self.proxy.get("foreman_url").map(|e| self.proxy.origin(e));
                if let Some(o) = &foreman {
                    self.route(o, "management.allowed_cns");
                }
                self.doc.set(
                    "management",
                    "allowed_cns",
                    TomlValue::List(vec![host.clone()]),
                    vec![format!(
                        ":trusted_hosts: {state} in {}: foreman-proxy then let any client certificate its CA \
                         signed call it. The gateway needs names: this is the host of :foreman_url:, the name in \
                         Katello's client certificate.",
                        self.proxy_file()
                    )],
                );
                self.warnings.push(format!(
                    ":trusted_hosts: {state}: management.allowed_cns is [{host:?}] from :foreman_url:; add the name of every Katello server (and of the smart proxy itself if its own certificate calls the management routes)"
                ));
            }
        }
        Ok(())
    }

    fn log(&mut self) -> Result<(), ImportError> {
        let Some((value, origin)) = self.proxy.scalar("log_level")? else {
            return Ok(());
        };
        // foreman-proxy's level covers all its features; debugging them should
        // not turn on every library's debug output in the gateway.
        let filter = match value.to_ascii_uppercase().as_str() {
            "DEBUG" => "info,container_gateway=debug",
            "INFO" => "info",
            "WARN" | "WARNING" => "warn",
            "ERROR" | "FATAL" | "UNKNOWN" => "error",
            _ => {
                self.warnings.push(format!(
                    "{origin}: {value:?} is not a level foreman-proxy knows (DEBUG, INFO, WARN, ERROR, FATAL); log.filter keeps its default"
                ));
                return Ok(());
            }
        };
        self.route(&origin, "log.filter");
        self.doc.set(
            "log",
            "filter",
            TomlValue::Str(filter.to_owned()),
            vec![format!(
                "{origin}: {value}, foreman-proxy's level for all its features."
            )],
        );
        Ok(())
    }

    fn enabled(&mut self) -> Result<(), ImportError> {
        if let Some((value, origin)) = self.plugin.scalar("enabled")?
            && value.eq_ignore_ascii_case("false")
        {
            self.warnings.push(format!(
                "{origin} is false: foreman-proxy does not load the Ruby plugin on this machine; imported anyway"
            ));
        }
        Ok(())
    }

    fn source_report(&self, file: &SettingsFile, kind: Kind) -> SourceReport {
        let lines = file
            .entries
            .iter()
            .map(|e| {
                let routed = self.routes.get(&(file.path.clone(), e.written.clone()));
                let outcome = match routed {
                    Some(keys) => Outcome::To(keys.clone()),
                    None => Outcome::NoEquivalent(no_equivalent(kind, &e.name, &e.value)),
                };
                Line {
                    key: e.written.clone(),
                    outcome,
                }
            })
            .collect();
        SourceReport {
            path: file.path.clone(),
            lines,
        }
    }
}

/// A setting's value, with the file and line it came from as its comment.
fn sourced(file: &SettingsFile, name: &str) -> Result<Option<Sourced>, ImportError> {
    Ok(file.scalar(name)?.map(|(value, origin)| Sourced {
        value,
        why: format!("{origin}."),
        origin: Some(origin),
    }))
}

/// Why a key that was not carried over has no equivalent.
fn no_equivalent(kind: Kind, name: &str, value: &Value) -> String {
    const NO_DB: &str = "the gateway keeps no database: Katello pushes the repository list and the host and user mappings at each smart proxy sync, and the gateway persists them in state.dir. The Ruby plugin's database is left as it is (keep it for a rollback)";
    const LOGS: &str =
        "the gateway logs to standard error (the journal under systemd); the level is log.filter";
    match kind {
        Kind::Proxy => match name {
            "settings_directory" => "where foreman-proxy finds settings.d; the plugin's file is --plugin-settings".to_owned(),
            "ssl_disabled_ciphers" | "tls_disabled_versions" => {
                "the gateway (rustls) offers only TLS 1.2 and 1.3 with AEAD cipher suites; there is nothing older to disable".to_owned()
            }
            "forward_verify" => {
                "reverse-DNS checks of :trusted_hosts: apply to plain-HTTP callers; the gateway takes management calls over TLS only, by certificate CN".to_owned()
            }
            "bind_host" => "foreman-proxy's listen addresses; the gateway's are server.listen and server.listen_plain".to_owned(),
            "https_port" => {
                let port = match value {
                    Value::Scalar(p) => p.as_str(),
                    _ => "9090",
                };
                format!(
                    "foreman-proxy keeps its port; Katello calls https://<proxy>:{port}/container_gateway/<route> there (README, \"Migrating from smart_proxy_container_gateway\")"
                )
            }
            "http_port" => "foreman-proxy's plain HTTP port stays foreman-proxy's".to_owned(),
            "log_file" | "file_rolling_size" | "file_rolling_age" | "file_rolling_keep" | "file_logging_pattern"
            | "system_logging_pattern" | "log_buffer" | "log_buffer_errors" => LOGS.to_owned(),
            "daemon" | "daemon_pid" => "systemd runs the gateway".to_owned(),
            "foreman_ssl_ca" | "foreman_ssl_cert" | "foreman_ssl_key" | "ssl_certificate" | "ssl_private_key"
            | "ssl_ca_file" => "empty, so nothing to carry over".to_owned(),
            "trusted_hosts" => {
                "empty: foreman-proxy then trusts any certificate its CA signed; management.allowed_cns comes from :foreman_url: instead (see the warnings)".to_owned()
            }
            "log_level" => "not a level this import knows (see the warnings); log.filter keeps its default".to_owned(),
            _ => "a foreman-proxy setting the container gateway never read".to_owned(),
        },
        Kind::Plugin => match name {
            "enabled" => {
                let v = match value {
                    Value::Scalar(s) => s.clone(),
                    _ => "unset".to_owned(),
                };
                format!("whether foreman-proxy loads the Ruby plugin (here: {v}); the gateway is its own service (systemctl enable --now container-gateway)")
            }
            "sqlite_db_path" | "sqlite_timeout" | "db_connection_string" | "db_max_connections" | "db_pool_timeout" => {
                NO_DB.to_owned()
            }
            "pulp_endpoint" | "pulp_client_ssl_ca" | "pulp_client_ssl_cert" | "pulp_client_ssl_key" | "client_endpoint"
            | "katello_registry_path" => "empty, so the Ruby plugin's default applies (see below)".to_owned(),
            _ => "not a setting of smart_proxy_container_gateway 3.5.0, which ignored it".to_owned(),
        },
    }
}

/// The files the configuration names, that cannot be opened now.
fn unreadable_files(doc: &Doc) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let pulp_https =
        matches!(doc.get("pulp", "endpoint"), Some(TomlValue::Str(s)) if s.starts_with("https://"));
    let central_https =
        matches!(doc.get("central", "url"), Some(TomlValue::Str(s)) if s.starts_with("https://"));
    let mut keys = vec![
        ("server", "tls_cert"),
        ("server", "tls_key"),
        ("server", "client_ca"),
    ];
    if pulp_https {
        keys.extend([
            ("pulp", "ssl_ca"),
            ("pulp", "ssl_cert"),
            ("pulp", "ssl_key"),
        ]);
    }
    if central_https {
        keys.extend([
            ("central", "ssl_ca"),
            ("central", "ssl_cert"),
            ("central", "ssl_key"),
        ]);
    }
    for (table, key) in keys {
        if let Some(TomlValue::Str(path)) = doc.get(table, key)
            && let Err(e) = std::fs::File::open(path)
        {
            out.push((format!("{table}.{key}"), path.clone(), e.to_string()));
        }
    }
    out
}

/// A warning when `ssl_ca` lacks a certificate of RHSM's katello-default-ca:
/// then subscription certificates would not verify against server.client_ca.
/// Silent when either file cannot be read (the report lists unreadable files).
fn ca_mismatch(ssl_ca: &Path, rhsm_ca: &Path) -> Option<String> {
    let ours = std::fs::read_to_string(ssl_ca).ok()?;
    let rhsm = std::fs::read_to_string(rhsm_ca).ok()?;
    let ours = pem_bodies(&ours);
    let rhsm = pem_bodies(&rhsm);
    if rhsm.is_empty() || rhsm.iter().all(|c| ours.contains(c)) {
        return None;
    }
    Some(format!(
        "it does not hold the certificate in {} (katello-default-ca, which signs subscription certificates): hosts' certificates would be refused. Point server.client_ca at a bundle holding both",
        rhsm_ca.display()
    ))
}

/// The base64 bodies of the PEM certificates in `text`, whitespace removed.
fn pem_bodies(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let Some(end) = after.find(END) else { break };
        out.push(
            after[..end]
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect(),
        );
        rest = &after[end + END.len()..];
    }
    out
}

fn pick_port(candidates: &[u16], taken: &[u16]) -> u16 {
    candidates
        .iter()
        .copied()
        .find(|p| !taken.contains(p))
        .unwrap_or(candidates[0])
}

/// An http(s) URL split the way the gateway's keys want it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub authority: String,
    /// `""` or `/...`, as written.
    pub path: String,
}

impl Url {
    /// `scheme://authority`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// The whole URL without a trailing slash.
    pub fn without_slash(&self) -> String {
        format!("{}{}", self.origin(), self.path.trim_end_matches('/'))
    }

    /// The host, without port or IPv6 brackets.
    pub fn host(&self) -> String {
        let a = self.authority.as_str();
        if let Some(rest) = a.strip_prefix('[') {
            return rest.split(']').next().unwrap_or_default().to_owned();
        }
        a.split(':').next().unwrap_or_default().to_owned()
    }
}

pub fn parse_url(value: &str) -> Option<Url> {
    let value = value.trim();
    let (scheme, rest) = value.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    if rest.contains(['?', '#']) {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(['@', ' ', '\t']) {
        return None;
    }
    Some(Url {
        scheme,
        authority: authority.to_owned(),
        path: path.to_owned(),
    })
}
