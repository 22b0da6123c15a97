//! `container-gateway migrate` as an admin runs it: the real binary against a
//! smart proxy's files laid out in a temporary directory (every path passed
//! by flag). The vhost is the installer's: the `## Container Gateway` block
//! is what theforeman/puppet-foreman_proxy_content 9f441f35
//! `templates/container-gateway-fragment.epp` renders for
//! `manifests/container.pp`'s defaults, inside the puppetlabs-apache
//! `pulpcore-https` vhost it is a fragment of.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const HIERA_LINE: &str = "foreman_proxy::plugin::container_gateway::enabled: false";

const VHOST: &str = r#"# ************************************
# Vhost template in module puppetlabs-apache
# Managed by Puppet
# ************************************
#
<VirtualHost *:443>
  ServerName capsule.example.com

  ## Vhost docroot
  DocumentRoot "/var/www/html"

  ## Logging
  ErrorLog "/var/log/httpd/pulpcore-https_error_ssl.log"
  ServerSignature Off
  CustomLog "/var/log/httpd/pulpcore-https_access_ssl.log" combined

  ## Request header rules
  RequestHeader unset X-CLIENT-CERT
  RequestHeader set X-CLIENT-CERT "%{SSL_CLIENT_CERT}s" env=SSL_CLIENT_CERT

  ## Proxy rules
  ProxyRequests Off
  ProxyPreserveHost On
  ProxyPass /pulp/api/v3 unix:///run/pulpcore-api.sock|http://pulpcore-api/pulp/api/v3 timeout=600
  ProxyPassReverse /pulp/api/v3 unix:///run/pulpcore-api.sock|http://pulpcore-api/pulp/api/v3

  ## SSL directives
  SSLEngine on
  SSLCertificateFile      "/etc/pki/katello/certs/katello-apache.crt"
  SSLCertificateKeyFile   "/etc/pki/katello/private/katello-apache.key"
  SSLVerifyClient         optional
  SSLVerifyDepth          10
  SSLCACertificateFile    "/etc/pki/katello/certs/katello-default-ca.crt"
  SSLOptions +StdEnvVars +ExportCertData

  ## Custom fragment

  ## Container Gateway
  <Location "/pulpcore_registry/v2/">
    Require expr %{tolower:%{SSL_CLIENT_S_DN_CN}} == "capsule.example.com"
    RequestHeader set SSL_CLIENT_S_DN "admin"
  </Location>
  ProxyPass /v1/ https://capsule.example.com:9090/container_gateway/v1/
  ProxyPassReverse /v1/ https://capsule.example.com:9090/container_gateway/v1/
  ProxyPass /v2/ https://capsule.example.com:9090/container_gateway/v2/
  ProxyPassReverse /v2/ https://capsule.example.com:9090/container_gateway/v2/
  ProxyPass /index/ https://capsule.example.com:9090/container_gateway/index/
  ProxyPassReverse /index/ https://capsule.example.com:9090/container_gateway/index/
</VirtualHost>
"#;

/// The port-80 vhost, which sends nothing to the plugin.
const PLAIN_VHOST: &str = "<VirtualHost *:80>\n  ServerName capsule.example.com\n  ProxyPass /pulp/content unix:///run/pulpcore-content.sock|http://pulpcore-content/pulp/content\n</VirtualHost>\n";

const HIERA: &str = "---\n# This file can be used to override the default puppet settings.\napache::mod::status::extended_status: 'On'\n";

struct Capsule {
    dir: tempfile::TempDir,
}

impl Capsule {
    /// `hiera`: custom-hiera.yaml's contents, `None` for no such file.
    fn new(hiera: Option<&str>) -> Capsule {
        let dir = tempfile::tempdir().expect("temp dir");
        let c = Capsule { dir };
        for d in [
            "foreman-proxy/settings.d",
            "httpd/conf.d",
            "foreman-installer",
            "container-gateway",
        ] {
            std::fs::create_dir_all(c.p(d)).expect("mkdir");
        }
        for name in [
            "ssl_ca.pem",
            "ssl_cert.pem",
            "ssl_key.pem",
            "foreman_ssl_ca.pem",
            "foreman_ssl_cert.pem",
            "foreman_ssl_key.pem",
        ] {
            c.write(
                &format!("foreman-proxy/{name}"),
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            );
        }
        let fp = |n: &str| c.p(&format!("foreman-proxy/{n}")).display().to_string();
        c.write(
            "foreman-proxy/settings.yml",
            &format!(
                "---\n:settings_directory: /etc/foreman-proxy/settings.d\n\
                 :ssl_ca_file: {}\n:ssl_certificate: {}\n:ssl_private_key: {}\n\
                 :trusted_hosts:\n  - katello.example.com\n  - capsule.example.com\n\
                 :foreman_url: https://katello.example.com\n\
                 :foreman_ssl_ca: {}\n:foreman_ssl_cert: {}\n:foreman_ssl_key: {}\n\
                 :bind_host: '*'\n:https_port: 9090\n:log_level: INFO\n",
                fp("ssl_ca.pem"),
                fp("ssl_cert.pem"),
                fp("ssl_key.pem"),
                fp("foreman_ssl_ca.pem"),
                fp("foreman_ssl_cert.pem"),
                fp("foreman_ssl_key.pem"),
            ),
        );
        c.write(
            "foreman-proxy/settings.d/container_gateway.yml",
            "---\n:enabled: https\n:pulp_endpoint: https://capsule.example.com\n\
             :client_endpoint: https://capsule.example.com\n\
             :db_connection_string: postgres:///container_gateway\n",
        );
        c.write("httpd/conf.d/10-pulpcore-https.conf", VHOST);
        c.write("httpd/conf.d/10-pulpcore.conf", PLAIN_VHOST);
        std::fs::set_permissions(
            c.p("httpd/conf.d/10-pulpcore-https.conf"),
            std::fs::Permissions::from_mode(0o640),
        )
        .expect("chmod");
        if let Some(h) = hiera {
            c.write("foreman-installer/custom-hiera.yaml", h);
        }
        c.write("VERSION", "3.11.0\n");
        c
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.p(name), text).expect("write");
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.p(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn migrate(&self, extra: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_container-gateway"))
            .arg("migrate")
            .arg("--proxy-settings")
            .arg(self.p("foreman-proxy/settings.yml"))
            .arg("--plugin-settings")
            .arg(self.p("foreman-proxy/settings.d/container_gateway.yml"))
            .arg("--config")
            .arg(self.p("container-gateway/gateway.toml"))
            .arg("--httpd-conf-dir")
            .arg(self.p("httpd/conf.d"))
            .arg("--hiera")
            .arg(self.p("foreman-installer/custom-hiera.yaml"))
            .arg("--backup-dir")
            .arg(self.p("backup"))
            .arg("--foreman-proxy-version")
            .arg(self.p("VERSION"))
            .arg("--hostname")
            .arg("capsule.example.com")
            .args(extra)
            .output()
            .expect("run container-gateway");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Every file under the directory (but the backups): contents and mode.
    fn snapshot(&self) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
        fn walk(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, u32)>) {
            for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
                let p = e.path();
                if p == skip {
                    continue;
                }
                if p.is_dir() {
                    walk(&p, skip, out);
                } else {
                    let mode = p.metadata().expect("metadata").permissions().mode() & 0o7777;
                    out.insert(p.clone(), (std::fs::read(&p).expect("read"), mode));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.dir.path(), &self.p("backup"), &mut out);
        out
    }
}

/// Files whose contents or mode differ, or that exist in only one snapshot.
fn differing(
    a: &BTreeMap<PathBuf, (Vec<u8>, u32)>,
    b: &BTreeMap<PathBuf, (Vec<u8>, u32)>,
) -> Vec<PathBuf> {
    let mut keys: Vec<&PathBuf> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// The files a report says it changes (`== <path> (...)` headings).
fn reported_files(report: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = report
        .lines()
        .filter_map(|l| l.strip_prefix("== "))
        .filter_map(|l| l.split(" (").next())
        .map(PathBuf::from)
        .collect();
    v.sort();
    v
}

/// `- old` and `+ new` lines a report gives for one file.
fn reported_edits(report: &str, file: &Path) -> (Vec<String>, Vec<String>) {
    let heading = format!("== {} (", file.display());
    let mut removed = Vec::new();
    let mut added = Vec::new();
    let mut inside = false;
    for l in report.lines() {
        if l.starts_with("== ") {
            inside = l.starts_with(&heading);
            continue;
        }
        if !inside {
            continue;
        }
        if !l.starts_with("  line ") {
            inside = l.starts_with("  ");
            continue;
        }
        if let Some((_, rest)) = l.split_once(": - ") {
            removed.push(rest.to_owned());
        } else if let Some((_, rest)) = l.split_once(": + ") {
            added.push(rest.trim_end_matches(" (inserted)").to_owned());
        }
    }
    (removed, added)
}

/// Lines (trimmed) in `a` but not in `b`, as a multiset difference.
fn minus(a: &str, b: &str) -> Vec<String> {
    let mut rest: Vec<&str> = b.lines().map(str::trim).collect();
    let mut out = Vec::new();
    for l in a.lines().map(str::trim) {
        match rest.iter().position(|r| *r == l) {
            Some(i) => {
                rest.remove(i);
            }
            None => out.push(l.to_owned()),
        }
    }
    out.sort();
    out
}

#[test]
fn dry_run_prints_every_change_and_writes_nothing() {
    let c = Capsule::new(Some(HIERA));
    let before = c.snapshot();
    let (code, out) = c.migrate(&["--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        differing(&before, &c.snapshot()),
        Vec::<PathBuf>::new(),
        "{out}"
    );
    assert!(!c.p("backup").exists(), "a dry run made backups");

    let mut expected = vec![
        c.p("container-gateway/gateway.toml"),
        c.p("foreman-installer/custom-hiera.yaml"),
        c.p("httpd/conf.d/10-pulpcore-https.conf"),
    ];
    expected.sort();
    assert_eq!(reported_files(&out), expected, "{out}");
    assert!(
        out.contains("- ProxyPass /v2/ https://capsule.example.com:9090/container_gateway/v2/"),
        "{out}"
    );
    assert!(
        out.contains("+ ProxyPass /v2/ http://127.0.0.1:8080/v2/"),
        "{out}"
    );
    assert!(
        out.contains(
            "+ RequestHeader set X-RHSM-SSL-Client-Cert \"%{SSL_CLIENT_CERT}s\" (inserted)"
        ),
        "{out}"
    );
    assert!(out.contains(&format!("+ {HIERA_LINE}")), "{out}");
    // The whole gateway.toml, management listener and foreman-proxy version included.
    assert!(out.contains("  + listen = [\"0.0.0.0:9443\"]"), "{out}");
    assert!(out.contains("  + proxy_version = \"3.11.0\""), "{out}");
    assert!(out.contains("  + [management]"), "{out}");
    // What comes next, never run by migrate.
    assert!(out.contains("hammer proxy create --name capsule.example.com-container-gateway --url https://capsule.example.com:9443"), "{out}");
    assert!(
        out.contains("systemctl enable --now container-gateway"),
        "{out}"
    );
}

#[test]
fn apply_changes_exactly_what_the_dry_run_reported() {
    let c = Capsule::new(Some(HIERA));
    let before = c.snapshot();
    let (code, dry) = c.migrate(&["--dry-run"]);
    assert_eq!(code, 0, "{dry}");
    let (code, out) = c.migrate(&[]);
    assert_eq!(code, 0, "{out}");
    let after = c.snapshot();

    assert_eq!(differing(&before, &after), reported_files(&dry), "{out}");
    assert_eq!(reported_files(&out), reported_files(&dry));

    // The vhost: exactly the reported lines went and came, nothing else; its mode kept.
    let vhost = c.p("httpd/conf.d/10-pulpcore-https.conf");
    let (mut removed, mut added) = reported_edits(&dry, &vhost);
    removed.sort();
    added.sort();
    let new_vhost = c.read("httpd/conf.d/10-pulpcore-https.conf");
    assert_eq!(minus(VHOST, &new_vhost), removed);
    assert_eq!(minus(&new_vhost, VHOST), added);
    assert_eq!(removed.len(), 6);
    assert!(!new_vhost.contains("/container_gateway/"));
    assert_eq!(after[&vhost].1, 0o640);
    assert_eq!(c.read("httpd/conf.d/10-pulpcore.conf"), PLAIN_VHOST);

    // The hiera file: the one line added.
    assert_eq!(
        c.read("foreman-installer/custom-hiera.yaml"),
        format!("{HIERA}{HIERA_LINE}\n")
    );

    // The gateway.toml: the gateway's own parser reads it; Apache points at its plain listener.
    let toml = c.read("container-gateway/gateway.toml");
    let file = container_gateway::config::parse(&toml).expect("gateway.toml parses");
    assert_eq!(file.management.listen, ["0.0.0.0:9443"]);
    assert_eq!(file.management.proxy_version, "3.11.0");
    assert_eq!(file.server.listen_plain, ["127.0.0.1:8080"]);
    assert!(new_vhost.contains("ProxyPass /index/ http://127.0.0.1:8080/index/"));
}

#[test]
fn rollback_restores_every_file_byte_for_byte() {
    for hiera in [Some(HIERA), None] {
        let c = Capsule::new(hiera);
        let before = c.snapshot();
        let (code, out) = c.migrate(&[]);
        assert_eq!(code, 0, "{out}");
        assert_ne!(differing(&before, &c.snapshot()).len(), 0);

        let (code, dry) = c.migrate(&["--rollback", "--dry-run"]);
        assert_eq!(code, 0, "{dry}");
        assert!(dry.contains("would restore"), "{dry}");

        let (code, out) = c.migrate(&["--rollback"]);
        assert_eq!(code, 0, "{out}");
        assert_eq!(
            differing(&before, &c.snapshot()),
            Vec::<PathBuf>::new(),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "restore {}",
                c.p("httpd/conf.d/10-pulpcore-https.conf").display()
            )),
            "{out}"
        );
        // A file migrate created is removed, not emptied.
        let hiera_path = c.p("foreman-installer/custom-hiera.yaml");
        match hiera {
            Some(_) => assert!(
                out.contains(&format!("restore {}", hiera_path.display())),
                "{out}"
            ),
            None => assert!(
                out.contains(&format!("remove {}", hiera_path.display())),
                "{out}"
            ),
        }
        assert!(
            out.contains(&format!(
                "remove {}",
                c.p("container-gateway/gateway.toml").display()
            )),
            "{out}"
        );

        let (code, out) = c.migrate(&["--rollback"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("Nothing to roll back"), "{out}");
    }
}

#[test]
fn applying_twice_changes_nothing_the_second_time() {
    let c = Capsule::new(Some(HIERA));
    let (code, out) = c.migrate(&[]);
    assert_eq!(code, 0, "{out}");
    let once = c.snapshot();
    let manifest = std::fs::read(c.p("backup/manifest.json")).expect("manifest");

    let (code, out) = c.migrate(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Nothing to change."), "{out}");
    assert!(reported_files(&out).is_empty(), "{out}");
    assert_eq!(differing(&once, &c.snapshot()), Vec::<PathBuf>::new());
    assert_eq!(
        std::fs::read(c.p("backup/manifest.json")).expect("manifest"),
        manifest
    );
}

#[test]
fn after_the_installer_rewrites_the_vhost_migrate_fixes_it_and_rollback_still_goes_back_to_the_start()
 {
    let c = Capsule::new(Some(HIERA));
    let before = c.snapshot();
    let (code, out) = c.migrate(&[]);
    assert_eq!(code, 0, "{out}");
    // foreman-installer writes its vhost again.
    c.write("httpd/conf.d/10-pulpcore-https.conf", VHOST);
    let (code, out) = c.migrate(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        reported_files(&out),
        [c.p("httpd/conf.d/10-pulpcore-https.conf")],
        "{out}"
    );
    let (code, out) = c.migrate(&["--rollback"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        differing(&before, &c.snapshot()),
        Vec::<PathBuf>::new(),
        "{out}"
    );
}

#[test]
fn an_existing_gateway_toml_is_kept_and_its_plain_listener_used() {
    let c = Capsule::new(Some(HIERA));
    let mine = "# mine\n[server]\nlisten_plain = [\"127.0.0.1:8181\"]\n[management]\nlisten = [\"0.0.0.0:9555\"]\n";
    c.write("container-gateway/gateway.toml", mine);
    let (code, out) = c.migrate(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(c.read("container-gateway/gateway.toml"), mine);
    assert!(out.contains("kept"), "{out}");
    assert!(
        c.read("httpd/conf.d/10-pulpcore-https.conf")
            .contains("ProxyPass /v2/ http://127.0.0.1:8181/v2/")
    );
    assert!(
        out.contains("--url https://capsule.example.com:9555"),
        "{out}"
    );

    // With --replace-config it is backed up and replaced, and rollback brings it back.
    let (code, out) = c.migrate(&["--replace-config"]);
    assert_eq!(code, 0, "{out}");
    assert_ne!(c.read("container-gateway/gateway.toml"), mine);
    let (code, out) = c.migrate(&["--rollback"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(c.read("container-gateway/gateway.toml"), mine);
}

#[test]
fn a_config_without_a_plain_listener_is_refused_before_anything_is_written() {
    let c = Capsule::new(Some(HIERA));
    c.write(
        "container-gateway/gateway.toml",
        "[server]\nlisten_plain = []\n",
    );
    let before = c.snapshot();
    let (code, out) = c.migrate(&[]);
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("server.listen_plain"), "{out}");
    assert_eq!(differing(&before, &c.snapshot()), Vec::<PathBuf>::new());
}
