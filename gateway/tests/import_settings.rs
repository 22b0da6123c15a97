//! `container-gateway import-settings` as an admin runs it: the real binary,
//! settings files as the Katello installer writes them, and the written
//! gateway.toml read back by the gateway's own parser and validator.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use container_gateway::config;

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
        ] {
            std::fs::write(
                dir.path().join(name),
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            )
            .expect("write pem");
        }
        std::fs::create_dir(dir.path().join("settings.d")).expect("settings.d");
        std::fs::create_dir(dir.path().join("state")).expect("state");
        std::fs::create_dir(dir.path().join("plugins")).expect("plugins");
        let c = Capsule { dir };
        c.write("settings.yml", &c.proxy_settings());
        c.write(
            "settings.d/container_gateway.yml",
            "---\n# Container Gateway for Katello\n:enabled: https\n:pulp_endpoint: https://capsule.example.com\n\
             :client_endpoint: https://capsule.example.com\n\
             :sqlite_db_path: /var/lib/foreman-proxy/smart_proxy_container_gateway.db\n\
             :db_connection_string: postgres:///container_gateway\n",
        );
        c
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.p(name), text).expect("write");
    }

    fn proxy_settings(&self) -> String {
        format!(
            "---\n:settings_directory: /etc/foreman-proxy/settings.d\n\
             :ssl_ca_file: {}\n:ssl_certificate: {}\n:ssl_private_key: {}\n\
             :trusted_hosts:\n  - katello.example.com\n  - capsule.example.com\n\
             :foreman_url: https://katello.example.com\n\
             :foreman_ssl_ca: {}\n:foreman_ssl_cert: {}\n:foreman_ssl_key: {}\n\
             :bind_host: '*'\n:https_port: 9090\n:log_file: /var/log/foreman-proxy/proxy.log\n:log_level: INFO\n",
            self.p("ssl_ca.pem").display(),
            self.p("ssl_cert.pem").display(),
            self.p("ssl_key.pem").display(),
            self.p("foreman_ssl_ca.pem").display(),
            self.p("foreman_ssl_cert.pem").display(),
            self.p("foreman_ssl_key.pem").display(),
        )
    }

    fn run(&self, extra: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_container-gateway"));
        cmd.arg("import-settings")
            .arg("--proxy-settings")
            .arg(self.p("settings.yml"))
            .arg("--plugin-settings")
            .arg(self.p("settings.d/container_gateway.yml"))
            .arg("--hostname")
            .arg("capsule.example.com")
            .args(extra);
        cmd.output().expect("run container-gateway")
    }

    fn validate(&self, toml: &str) -> config::Config {
        let mut f = config::parse(toml).unwrap_or_else(|p| panic!("does not parse: {p}\n{toml}"));
        f.state.dir = self.p("state").display().to_string();
        f.plugins.dir = self.p("plugins").display().to_string();
        config::validate(Path::new("gateway.toml"), &f)
            .unwrap_or_else(|p| panic!("does not validate: {p}\n{toml}"))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn toml_to_stdout_and_report_to_stderr() {
    let c = Capsule::new();
    let out = c.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let toml = text(&out.stdout);
    let report = text(&out.stderr);
    let cfg = c.validate(&toml);
    assert_eq!(cfg.central.url, "https://katello.example.com");
    assert_eq!(
        cfg.allowed_cns,
        vec!["katello.example.com", "capsule.example.com"]
    );
    assert_eq!(cfg.server.public_url, "https://capsule.example.com");
    assert_eq!(cfg.pulp.endpoint, "https://capsule.example.com");
    assert_eq!(
        cfg.pulp.tls.client_cert,
        Some((c.p("foreman_ssl_cert.pem"), c.p("foreman_ssl_key.pem")))
    );
    assert!(
        report.contains(":foreman_url:") && report.contains("-> central.url"),
        "{report}"
    );
    assert!(
        report.contains(":db_connection_string:") && report.contains("no equivalent"),
        "{report}"
    );
    // A connection string may hold a password: the report names keys only.
    assert!(!report.contains("postgres:///"), "{report}");
    assert!(!toml.contains("postgres"), "{toml}");
}

#[test]
fn output_file_is_written_once_and_replaced_only_with_force() {
    let c = Capsule::new();
    let target = c.p("gateway.toml");
    let target_s = target.display().to_string();

    let out = c.run(&["--output", &target_s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("-> central.url"),
        "the report goes to stdout with --output"
    );
    let written = std::fs::read_to_string(&target).expect("written");
    c.validate(&written);

    std::fs::write(&target, "# edited by hand\n").expect("edit");
    let out = c.run(&["--output", &target_s]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&target_s),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&target).expect("kept"),
        "# edited by hand\n"
    );

    let out = c.run(&["--output", &target_s, "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&target).expect("replaced"), written);
}

#[test]
fn malformed_yaml_names_file_and_line() {
    let c = Capsule::new();
    c.write(
        "settings.d/container_gateway.yml",
        "---\n:enabled: true\n:pulp_endpoint: 'https://capsule.example.com\n:sqlite_db_path: /x\n",
    );
    let out = c.run(&[]);
    assert_eq!(out.status.code(), Some(4));
    let err = text(&out.stderr);
    let path = c
        .p("settings.d/container_gateway.yml")
        .display()
        .to_string();
    assert!(err.contains(&format!("{path}:")), "{err}");
    assert!(err.contains("not valid YAML"), "{err}");
    assert!(out.stdout.is_empty(), "nothing is written on error");
}

#[test]
fn missing_file_is_named() {
    let c = Capsule::new();
    std::fs::remove_file(c.p("settings.yml")).expect("remove");
    let out = c.run(&[]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains(&c.p("settings.yml").display().to_string()),
        "{err}"
    );
}

#[test]
fn a_missing_required_setting_has_its_own_status() {
    let c = Capsule::new();
    let without: String = c
        .proxy_settings()
        .lines()
        .filter(|l| !l.starts_with(":foreman_url:"))
        .map(|l| format!("{l}\n"))
        .collect();
    c.write("settings.yml", &without);
    let out = c.run(&[]);
    assert_eq!(out.status.code(), Some(5));
    assert!(
        text(&out.stderr).contains(":foreman_url: is not set"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn force_without_output_is_a_usage_error() {
    let c = Capsule::new();
    let out = c.run(&["--force"]);
    assert_eq!(out.status.code(), Some(2));
}
