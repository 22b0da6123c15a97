use super::*;

use std::os::unix::net::UnixDatagram;

fn receive(socket: &UnixDatagram) -> String {
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn notifies_a_socket_named_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    let notifier = Notifier::new(Some(path.into_os_string()));
    notifier.notify("READY=1\nSTATUS=Serving");
    assert_eq!(receive(&socket), "READY=1\nSTATUS=Serving");
}

#[test]
fn notifies_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!(
        "container-gateway-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    let notifier = Notifier::new(Some(format!("@{name}").into()));
    notifier.notify("STOPPING=1");
    assert_eq!(receive(&socket), "STOPPING=1");
}

#[test]
fn without_a_socket_nothing_is_sent_and_nothing_fails() {
    assert_eq!(Notifier::new(None).target, None);
    assert_eq!(Notifier::new(Some(OsString::new())).target, None);
    assert!(Notifier::new(None).send("READY=1").is_ok());
}

#[test]
fn an_unreachable_socket_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let notifier = Notifier::new(Some(dir.path().join("nobody-listens").into_os_string()));
    assert!(notifier.send("READY=1").is_err());
    notifier.notify("READY=1");
}

#[test]
fn monotonic_clock_moves_forward() {
    let a = monotonic_usec();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let b = monotonic_usec();
    assert!(a > 0 && b >= a + 2_000, "{a} then {b}");
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let text = format!(
        r#"[server]
listen = []
listen_plain = ["127.0.0.1:0"]
client_ca = "{d}/ca.pem"
[pulp]
endpoint = "http://127.0.0.1:1"
[central]
url = "http://127.0.0.1:2"
[state]
dir = "{d}/state"
[plugins]
chain = []
{extra}"#,
        d = dir.display()
    );
    if !dir.join("ca.pem").exists() {
        std::fs::write(dir.join("ca.pem"), "x").unwrap();
    }
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn only_start_time_settings_are_reported_as_needing_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let old = config::load(&path).unwrap();

    write_config(dir.path(), "[log]\nfilter = \"debug\"\n");
    assert_eq!(
        restart_needed(&old, &config::load(&path).unwrap()),
        Vec::<&str>::new()
    );

    write_config(
        dir.path(),
        "[cache]\nttl_secs = 60\n[admin]\nlisten = \"127.0.0.1:9999\"\n",
    );
    assert_eq!(
        restart_needed(&old, &config::load(&path).unwrap()),
        vec!["cache", "admin.listen"]
    );
}

#[test]
fn a_bad_file_is_rejected_with_its_first_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let old = config::load(&path).unwrap();
    write_config(dir.path(), "[cache]\nttl_secs = 0\n");
    let err = reload(&path, &old, None, &LogFilter::default()).unwrap_err();
    assert!(err.starts_with("cache.ttl_secs"), "{err}");
    write_config(dir.path(), "[log]\nfilter = \"warn\"\n");
    assert_eq!(reload(&path, &old, None, &LogFilter::default()), Ok(()));
}

fn write_pem(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}-key.pem")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

#[test]
fn a_certificate_that_does_not_load_rejects_the_reload() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = write_pem(d, "server");
    let (ca, _) = write_pem(d, "ca");
    let tls = ServerTls::build(&cert, &key, &ca).unwrap();
    let path = write_config(d, "");
    let old = config::load(&path).unwrap();
    // A key that belongs to another certificate.
    let (_, other_key) = write_pem(d, "other");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[server]\nlisten = []",
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"",
            cert.display(),
            other_key.display()
        ),
    );
    std::fs::write(&path, text).unwrap();
    let err = reload(&path, &old, Some(&tls), &LogFilter::default()).unwrap_err();
    assert!(err.starts_with("server.tls_cert"), "{err}");
}

/// A backend with a fixed reload outcome, counting how often it was asked.
struct Reloading(&'static str, ReloadOutcome, std::sync::atomic::AtomicUsize);

impl crate::auth::Authenticator for Reloading {
    fn name(&self) -> &str {
        self.0
    }
    fn authenticate(
        &self,
        _: &crate::auth::AuthFacts<'_>,
    ) -> Result<crate::auth::AuthDecision, crate::auth::BackendError> {
        Ok(crate::auth::AuthDecision::Abstain)
    }
    fn reload(&self) -> ReloadOutcome {
        self.2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.1.clone()
    }
}

#[test]
fn a_failed_plugin_reload_does_not_stop_the_others() {
    let backend = |name, outcome| std::sync::Arc::new(Reloading(name, outcome, Default::default()));
    let backends = [
        backend("a", ReloadOutcome::Failed("gone".to_owned())),
        backend("b", ReloadOutcome::Unsupported),
        backend("c", ReloadOutcome::Failed("also gone".to_owned())),
        backend("d", ReloadOutcome::Reloaded),
    ];
    let chain = AuthChain::new(
        backends
            .iter()
            .map(|b| b.clone() as std::sync::Arc<dyn crate::auth::Authenticator>)
            .collect(),
    );
    assert_eq!(reload_plugins(&chain), Err("plugin a: gone".to_owned()));
    for b in &backends {
        assert_eq!(b.2.load(std::sync::atomic::Ordering::SeqCst), 1, "{}", b.0);
    }
    let fine = AuthChain::new(vec![
        backend("b", ReloadOutcome::Unsupported),
        backend("d", ReloadOutcome::Reloaded),
    ]);
    assert_eq!(reload_plugins(&fine), Ok(()));
    assert_eq!(reload_plugins(&AuthChain::default()), Ok(()));
}
