//! The real binary under a stand-in service manager: readiness on a
//! `NOTIFY_SOCKET` the test owns, SIGHUP reloads (of the certificate and of
//! the `rhsm-cert` plugin's trusted CAs), SIGTERM drains, and the admin
//! listener of a process of its own (so its metrics start at zero).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

const WAIT: Duration = Duration::from_secs(30);

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        Pki::named("lifecycle test CA")
    }

    fn named(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A host's subscription certificate, `CN=<uuid>`, as Candlepin issues it.
    fn host(&self, uuid: &str) -> HostCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, uuid);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        HostCert {
            der: cert.der().to_vec(),
            key: key.serialize_der(),
        }
    }

    /// A server certificate for localhost/127.0.0.1 written as `server.pem` /
    /// `server-key.pem`; returns its DER to compare with what a handshake shows.
    fn write_server(&self, dir: &Path) -> Vec<u8> {
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        // Written aside and renamed, as a certificate tool does, so a reload never reads half a file.
        std::fs::write(dir.join("server.pem.new"), cert.pem()).unwrap();
        std::fs::write(dir.join("server-key.pem.new"), key.serialize_pem()).unwrap();
        std::fs::rename(dir.join("server.pem.new"), dir.join("server.pem")).unwrap();
        std::fs::rename(dir.join("server-key.pem.new"), dir.join("server-key.pem")).unwrap();
        cert.der().to_vec()
    }
}

/// A client certificate and its key (PKCS#8), both DER.
struct HostCert {
    der: Vec<u8>,
    key: Vec<u8>,
}

/// Replace a file the way a certificate tool does: aside, then renamed, so a
/// reload never reads half of it.
fn replace_file(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// The `rhsm-cert` plugin built for this test run (a dev-dependency, so cargo
/// builds its shared object next to the test binary), or `$GW_PLUGIN_DIR`'s.
fn rhsm_cert_library() -> PathBuf {
    let file = "librhsm_cert.so";
    if let Some(dir) = std::env::var_os("GW_PLUGIN_DIR") {
        return PathBuf::from(dir).join(file);
    }
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    [deps.join(file), deps.join("..").join(file)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{file} not found next to {}", exe.display()))
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A stand-in for Pulp: 401 to everything, except that `/index/` answers an
/// empty index after `index_delay` (an upstream call to be in flight).
struct FakePulp {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl FakePulp {
    fn start(index_delay: Duration) -> FakePulp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = counter.clone();
                std::thread::spawn(move || answer_pulp(stream, index_delay, &counter));
            }
        });
        FakePulp { addr, requests }
    }
}

fn answer_pulp(stream: TcpStream, index_delay: Duration, counter: &AtomicUsize) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    counter.fetch_add(1, Ordering::SeqCst);
    let response = if request_line.contains("/index/") {
        std::thread::sleep(index_delay);
        let body = r#"{"Registry":"http://pulp.invalid/","Results":[]}"#;
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    };
    let _ = reader.get_mut().write_all(response.as_bytes());
}

/// The binary, started with a configuration of its own in a temporary directory.
struct Gateway {
    dir: tempfile::TempDir,
    child: Child,
    notify: UnixDatagram,
    tls: SocketAddr,
    plain: SocketAddr,
    admin: SocketAddr,
    pki: Pki,
    first_cert: Vec<u8>,
}

impl Gateway {
    fn start(pulp: SocketAddr) -> Gateway {
        Gateway::start_with(pulp, None)
    }

    /// With `rhsm` set, the chain is the `rhsm-cert` plugin, with `rhsm` as
    /// its `[plugins.settings.rhsm-cert]` table; without, the chain is empty.
    fn start_with(pulp: SocketAddr, rhsm: Option<&str>) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("gw-lifecycle-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("state")).unwrap();
        let pki = Pki::new();
        let first_cert = pki.write_server(d);
        std::fs::write(d.join("ca.pem"), pki.ca.pem()).unwrap();
        let (tls, plain, admin) = (free_port(), free_port(), free_port());
        let plugins = match rhsm {
            None => "chain = []".to_owned(),
            Some(settings) => {
                // A private 0755 copy: the gateway refuses group-writable
                // plugin files, and the build directory's mode follows the umask.
                let plugin_dir = d.join("plugins");
                std::fs::create_dir(&plugin_dir).unwrap();
                std::fs::set_permissions(&plugin_dir, std::fs::Permissions::from_mode(0o755))
                    .unwrap();
                let so = plugin_dir.join("librhsm_cert.so");
                std::fs::copy(rhsm_cert_library(), &so).unwrap();
                std::fs::set_permissions(&so, std::fs::Permissions::from_mode(0o755)).unwrap();
                format!(
                    "dir = \"{}\"\nchain = [\"rhsm-cert\"]\n\n[plugins.settings.rhsm-cert]\n{}",
                    plugin_dir.display(),
                    settings
                )
            }
        };
        let config = format!(
            r#"[server]
listen = ["{tls}"]
listen_plain = ["{plain}"]
tls_cert = "{d}/server.pem"
tls_key = "{d}/server-key.pem"
client_ca = "{d}/ca.pem"
public_url = "https://localhost:{tls_port}"
workers = 2
shutdown_timeout_secs = 10

[pulp]
endpoint = "http://{pulp}"

[central]
url = "http://127.0.0.1:9"

[state]
dir = "{d}/state"

[plugins]
{plugins}

[admin]
listen = "{admin}"

[log]
filter = "info"
"#,
            d = d.display(),
            tls_port = tls.port(),
        );
        std::fs::write(d.join("gateway.toml"), config).unwrap();
        let notify_path = d.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify.set_read_timeout(Some(WAIT)).unwrap();
        let log = File::create(d.join("stderr.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_container-gateway"))
            .args(["serve", "--config"])
            .arg(d.join("gateway.toml"))
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Gateway {
            dir,
            child,
            notify,
            tls,
            plain,
            admin,
            pki,
            first_cert,
        }
    }

    /// The next notification, as its `KEY=VALUE` lines.
    fn next_notification(&self) -> Vec<String> {
        let mut buf = [0u8; 4096];
        let n = self
            .notify
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification within {WAIT:?}: {e}\n{}", self.log()));
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Notifications up to and including the one with `key` (e.g. `READY=1`).
    fn wait_for(&self, key: &str) -> Vec<Vec<String>> {
        let mut seen = Vec::new();
        loop {
            let message = self.next_notification();
            let done = message.iter().any(|l| l == key);
            seen.push(message);
            if done {
                return seen;
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// A fresh TLS connection (no session to resume), HTTP/1.1.
    fn tls_connect(&self) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        self.tls_connect_as(None)
    }

    /// A fresh TLS connection presenting `client`'s certificate, if any.
    fn tls_connect_as(
        &self,
        client: Option<&HostCert>,
    ) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.pki.ca.der().to_vec()))
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some(host) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from(host.der.clone())],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(host.key.clone())),
                )
                .unwrap(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let conn = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let sock = TcpStream::connect(self.tls).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, sock);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        stream
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn leaf(stream: &rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> Vec<u8> {
    stream
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("the server sent a certificate")
}

/// Read one HTTP/1.1 response (sized by `Content-Length`): (status, body).
fn read_response(stream: &mut impl Read) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("a response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("the response body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

/// A request on a kept-alive TLS connection.
fn tls_get(
    stream: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    path: &str,
) -> (u16, String) {
    stream.write_all(&request(path)).unwrap();
    stream.flush().unwrap();
    read_response(stream)
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.write_all(&request(path)).unwrap();
    read_response(&mut sock)
}

/// `GET /v2/` on a fresh TLS connection as `host`: the status.
fn ping_as(gw: &Gateway, host: &HostCert) -> u16 {
    tls_get(&mut gw.tls_connect_as(Some(host)), "/v2/").0
}

/// SIGHUP, then the `STATUS=` line that comes with the `READY=1` after it.
fn reload(gw: &Gateway) -> String {
    gw.signal(libc::SIGHUP);
    let messages = gw.wait_for("READY=1");
    messages
        .last()
        .unwrap()
        .iter()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_default()
        .to_owned()
}

/// The value of one series (`name{labels}`) in a `/metrics` body, 0 when absent.
fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

#[test]
fn ready_is_sent_once_every_listener_accepts() {
    let pulp = FakePulp::start(Duration::ZERO);
    let gw = Gateway::start(pulp.addr);
    let before_ready = gw.wait_for("READY=1");
    // Connect at once: READY=1 promises the ports are already accepting.
    for addr in [gw.tls, gw.plain, gw.admin] {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("{addr} does not accept after READY=1: {e}\n{}", gw.log()));
    }
    let ready = before_ready.last().unwrap();
    assert!(
        ready.iter().any(|l| l.starts_with("STATUS=Serving")),
        "{ready:?}"
    );
    assert!(
        before_ready[0]
            .iter()
            .any(|l| l.starts_with("STATUS=Starting")),
        "{before_ready:?}"
    );
    assert_eq!(
        before_ready
            .iter()
            .flatten()
            .filter(|l| *l == "READY=1")
            .count(),
        1
    );
    assert_eq!(http_get(gw.admin, "/healthz").0, 200);
}

#[test]
fn sighup_rotates_the_certificate_and_keeps_open_connections() {
    let pulp = FakePulp::start(Duration::ZERO);
    let gw = Gateway::start(pulp.addr);
    gw.wait_for("READY=1");

    let mut before = gw.tls_connect();
    assert_eq!(leaf(&before), gw.first_cert);
    assert_eq!(
        tls_get(&mut before, "/v2/").0,
        401,
        "anonymous /v2/ before the reload"
    );

    let second_cert = gw.pki.write_server(&gw.dir());
    assert_ne!(second_cert, gw.first_cert);
    // The same reload quietens the log: the access lines stop.
    let config = gw.dir().join("gateway.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("filter = \"info\"", "filter = \"warn\""),
    )
    .unwrap();
    gw.signal(libc::SIGHUP);
    let messages = gw.wait_for("READY=1");
    let reloading = messages
        .iter()
        .find(|m| m.iter().any(|l| l == "RELOADING=1"))
        .expect("RELOADING=1 before READY=1");
    let usec = reloading
        .iter()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC next to RELOADING=1");
    assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{usec}");

    let mut after = gw.tls_connect();
    assert_eq!(
        leaf(&after),
        second_cert,
        "a new handshake presents the new certificate"
    );
    assert_eq!(tls_get(&mut after, "/v2/").0, 401);
    // The connection opened before the reload still works, on its old session.
    assert_eq!(
        tls_get(&mut before, "/v2/").0,
        401,
        "keep-alive connection from before the reload"
    );
    assert_eq!(leaf(&before), gw.first_cert);

    // A broken certificate is refused and the current one stays.
    std::fs::write(gw.dir().join("server.pem"), "not a certificate").unwrap();
    gw.signal(libc::SIGHUP);
    let messages = gw.wait_for("READY=1");
    let status = messages
        .last()
        .unwrap()
        .iter()
        .find(|l| l.starts_with("STATUS="))
        .cloned()
        .unwrap_or_default();
    assert!(
        status.contains("last reload rejected: server.tls_cert"),
        "{status}"
    );
    assert_eq!(leaf(&gw.tls_connect()), second_cert);
    let log = gw.log();
    assert!(log.contains("reload rejected"), "{log}");
    let access = log.lines().filter(|l| l.contains(" access: ")).count();
    assert_eq!(
        access, 1,
        "only the request before log.filter = warn is logged:\n{log}"
    );
}

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    let pulp = FakePulp::start(Duration::from_millis(1500));
    let mut gw = Gateway::start(pulp.addr);
    gw.wait_for("READY=1");

    let plain = gw.plain;
    let in_flight =
        std::thread::spawn(move || http_get(plain, "/index/static?label:org.flatpak.ref:exists=1"));
    let deadline = Instant::now() + WAIT;
    while pulp.requests.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the index request never reached Pulp"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    gw.signal(libc::SIGTERM);
    let stopping = gw.wait_for("STOPPING=1");
    assert!(
        stopping
            .last()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("STATUS=Stopping")),
        "{stopping:?}"
    );

    let (status, body) = in_flight
        .join()
        .expect("the in-flight request got a whole answer");
    assert_eq!(status, 200, "{body}");
    let exit = gw.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "{}", gw.log());
}

#[test]
fn metrics_count_requests_and_access_log_has_one_line_each() {
    let pulp = FakePulp::start(Duration::ZERO);
    let gw = Gateway::start(pulp.addr);
    gw.wait_for("READY=1");

    let (status, body) = http_get(gw.admin, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &body,
            r#"gateway_requests_total{route="/v2/",status="401"}"#
        ),
        0.0
    );
    assert!(
        body.contains("# TYPE gateway_entitlement_coalesced_waits_total counter"),
        "{body}"
    );

    for _ in 0..3 {
        assert_eq!(http_get(gw.plain, "/v2/").0, 401);
    }
    for _ in 0..2 {
        assert_eq!(http_get(gw.plain, "/no/such/route").0, 404);
    }
    assert_eq!(
        http_get(gw.plain, "/v2/org/secret-repo/manifests/latest").0,
        401
    );

    let (_, body) = http_get(gw.admin, "/metrics");
    assert_eq!(
        metric(
            &body,
            r#"gateway_requests_total{route="/v2/",status="401"}"#
        ),
        3.0,
        "{body}"
    );
    assert_eq!(
        metric(&body, r#"gateway_requests_total{route="-",status="404"}"#),
        2.0,
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            r#"gateway_requests_total{route="/v2/{name}/manifests/{reference}",status="401"}"#
        ),
        1.0,
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            r#"gateway_request_duration_seconds_count{route="/v2/"}"#
        ),
        3.0,
        "{body}"
    );
    assert!(
        body.contains(r#"gateway_request_duration_seconds_bucket{route="/v2/",le="0.005"}"#),
        "{body}"
    );
    assert_eq!(
        metric(&body, "gateway_plugin_call_duration_seconds_count"),
        4.0,
        "{body}"
    );
    assert!(
        !body.contains("secret-repo"),
        "metrics never name a repository"
    );

    // /readyz: Pulp answers its probe, but no state was ever pushed.
    let (status, body) = http_get(gw.admin, "/readyz");
    assert_eq!(status, 503, "{body}");
    let readiness: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        readiness,
        serde_json::json!({"ready": false, "state_loaded": false, "pulp_answered": true})
    );
    let (_, body) = http_get(gw.admin, "/metrics");
    assert_eq!(metric(&body, "gateway_pulp_answered"), 1.0, "{body}");
    assert_eq!(
        metric(
            &body,
            r#"gateway_upstream_duration_seconds_count{upstream="pulp"}"#
        ),
        1.0,
        "{body}"
    );
    assert_eq!(
        http_get(gw.admin, "/v2/").0,
        404,
        "the admin listener has none of the client routes"
    );

    let log = gw.log();
    let access: Vec<&str> = log.lines().filter(|l| l.contains(" access: ")).collect();
    assert_eq!(
        access.len(),
        6,
        "one access line per client request:\n{log}"
    );
    assert!(
        access
            .iter()
            .all(|l| l.contains(" INFO ") && l.contains("status=") && l.contains("identity=")),
        "{log}"
    );
    assert!(
        !log.contains("secret-repo"),
        "logs never name a repository:\n{log}"
    );
}

#[test]
fn sighup_makes_rhsm_cert_trust_the_rotated_ca_bundle() {
    let pulp = FakePulp::start(Duration::ZERO);
    // The production layout: server.client_ca is the plugin's bundle too.
    let gw = Gateway::start_with(pulp.addr, Some(""));
    gw.wait_for("READY=1");
    let bundle = gw.dir().join("ca.pem");
    let rotated = Pki::named("rotated Katello CA");
    let old_host = gw.pki.host("0d2e5e4c-old-host");
    let new_host = rotated.host("6a1f0b7e-new-host");

    assert_eq!(ping_as(&gw, &old_host), 200, "{}", gw.log());
    let mut kept_alive = gw.tls_connect_as(Some(&old_host));
    assert_eq!(
        tls_get(&mut kept_alive, "/v2/").0,
        200,
        "again, from the cache"
    );
    assert_eq!(ping_as(&gw, &new_host), 401, "a CA not yet trusted");
    assert_eq!(tls_get(&mut gw.tls_connect(), "/v2/").0, 401, "anonymous");

    replace_file(&bundle, &rotated.ca.pem());
    let status = reload(&gw);
    assert!(!status.contains("last reload"), "{status}");
    assert_eq!(ping_as(&gw, &new_host), 200, "{}", gw.log());
    assert_eq!(
        ping_as(&gw, &old_host),
        401,
        "accepted and cached under the removed CA, refused after the reload"
    );
    assert_eq!(
        tls_get(&mut kept_alive, "/v2/").0,
        401,
        "every request is judged again, also on a connection from before the reload"
    );

    // A bundle that does not load: the reload is refused, the trust stays.
    replace_file(&bundle, "not a certificate\n");
    let status = reload(&gw);
    assert!(status.contains("last reload rejected"), "{status}");
    assert_eq!(ping_as(&gw, &new_host), 200);
    assert_eq!(ping_as(&gw, &rotated.host("a-host-never-seen")), 200);
    assert_eq!(ping_as(&gw, &old_host), 401);

    let (_, body) = http_get(gw.admin, "/metrics");
    for (series, value) in [
        (r#"gateway_reloads_total{result="ok"}"#, 1.0),
        (r#"gateway_reloads_total{result="rejected"}"#, 1.0),
        (
            r#"gateway_plugin_reloads_total{plugin="rhsm-cert",result="ok"}"#,
            1.0,
        ),
        (
            r#"gateway_plugin_reloads_total{plugin="rhsm-cert",result="failed"}"#,
            0.0,
        ),
    ] {
        assert_eq!(metric(&body, series), value, "{series}\n{body}");
    }
    let log = gw.log();
    assert!(
        log.contains("reloaded: trusting 1 CA certificate(s)"),
        "{log}"
    );
    assert!(log.contains("auth plugin reloaded"), "{log}");
}

#[test]
fn a_plugin_bundle_that_does_not_load_keeps_the_old_trust_and_the_rest_of_the_reload() {
    let pulp = FakePulp::start(Duration::ZERO);
    // The plugin's own bundle, apart from the TLS hints' server.client_ca.
    let hosts_dir = tempfile::tempdir().unwrap();
    let bundle = hosts_dir.path().join("hosts-ca.pem");
    let hosts = Pki::named("hosts CA");
    replace_file(&bundle, &hosts.ca.pem());
    let settings = format!("client_ca = \"{}\"", bundle.display());
    let gw = Gateway::start_with(pulp.addr, Some(&settings));
    gw.wait_for("READY=1");
    let first = hosts.host("host-1");
    assert_eq!(ping_as(&gw, &first), 200, "{}", gw.log());

    std::fs::remove_file(&bundle).unwrap();
    let second_cert = gw.pki.write_server(&gw.dir());
    let status = reload(&gw);
    assert!(
        status.contains("last reload partial: plugin rhsm-cert: client_ca"),
        "{status}"
    );
    assert_eq!(
        leaf(&gw.tls_connect()),
        second_cert,
        "the rest of the reload applied"
    );
    assert_eq!(ping_as(&gw, &first), 200);
    assert_eq!(
        ping_as(&gw, &hosts.host("host-2")),
        200,
        "verified against the CAs trusted so far"
    );
    assert_eq!(http_get(gw.admin, "/healthz").0, 200);

    let (_, body) = http_get(gw.admin, "/metrics");
    assert_eq!(
        metric(&body, r#"gateway_reloads_total{result="partial"}"#),
        1.0,
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            r#"gateway_plugin_reloads_total{plugin="rhsm-cert",result="failed"}"#
        ),
        1.0,
        "{body}"
    );
    let log = gw.log();
    assert!(log.contains("auth plugin reload failed"), "{log}");
}
