//! Support shared by the robustness suites: raw HTTP/1.1 over TCP or TLS (for
//! requests ordinary clients refuse to send), a tally of what came back, a
//! panic watch for the gateway's threads, and the process's resident memory.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use gateway_tests::harness::TestEnv;

// ---------------------------------------------------------------------------
// One test at a time
// ---------------------------------------------------------------------------

/// The gateway runs inside the test process, so memory figures are the
/// process's: tests of one suite run one after the other to keep them apart.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------
// Panics on the gateway's threads
// ---------------------------------------------------------------------------

thread_local! {
    static TEST_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Record every panic that happens on a thread not marked with this function
/// (the gateway's workers, its blocking pool, the fakes); call it first in
/// every test and in every thread a test spawns, whose own assertion failures
/// are not the gateway's.
pub fn watch_panics() {
    static HOOK: Once = Once::new();
    TEST_THREAD.with(|t| t.set(true));
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !TEST_THREAD.with(|t| t.get()) {
                let thread = std::thread::current();
                PANICS
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("{}: {info}", thread.name().unwrap_or("unnamed")));
            }
            previous(info);
        }));
    });
}

/// Panics seen so far outside test threads.
pub fn panics() -> Vec<String> {
    PANICS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The gateway still answers (a plain `GET /v2/_catalog` over TLS is 200) and
/// nothing panicked on its threads.
pub fn assert_alive(env: &TestEnv, after: &str) {
    let p = panics();
    assert!(p.is_empty(), "after {after}: panicked: {p:#?}");
    let r = env
        .curl()
        .max_time(Duration::from_secs(20))
        .try_run("GET", "/v2/_catalog")
        .unwrap_or_else(|e| panic!("after {after}: the gateway does not answer: {e}"));
    assert_eq!(r.status, 200, "after {after}: {}", r.text());
}

// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------

/// This process's resident set (`VmRSS`), in bytes; the gateway runs in it.
pub fn rss_bytes() -> u64 {
    gateway_tests::harness::rss_kib(std::process::id()).map_or(0, |(kb, _)| kb * 1024)
}

pub const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------
// Tally
// ---------------------------------------------------------------------------

/// What one request got, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Status(u16),
    /// The connection ended without a (complete) response head.
    Closed,
}

/// Counts of requests and answers, per suite (one test binary each).
#[derive(Default)]
pub struct Tally {
    requests: AtomicU64,
    closed: AtomicU64,
    statuses: Mutex<BTreeMap<u16, u64>>,
    tests_done: AtomicUsize,
}

impl Tally {
    pub fn note(&self, seen: Seen) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match seen {
            Seen::Status(s) => {
                *self
                    .statuses
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(s)
                    .or_default() += 1;
            }
            Seen::Closed => {
                self.closed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `N requests, 2xx=.., 3xx=.., 4xx=.., 5xx=.., conn-closed=.. (status: count, ...)`.
    pub fn line(&self) -> String {
        let statuses = self
            .statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let class = |c: u16| -> u64 {
            statuses
                .iter()
                .filter(|(s, _)| **s / 100 == c)
                .map(|(_, n)| n)
                .sum()
        };
        let each: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
        format!(
            "{} requests, 2xx={}, 3xx={}, 4xx={}, 5xx={}, conn-closed={} ({})",
            self.requests.load(Ordering::Relaxed),
            class(2),
            class(3),
            class(4),
            class(5),
            self.closed.load(Ordering::Relaxed),
            each.join(" ")
        )
    }

    /// Count a finished test; the last of `total` prints the suite's line.
    pub fn test_done(&self, suite: &str, test: &str, total: usize) {
        println!("{suite}[{test}]: so far {}", self.line());
        if self.tests_done.fetch_add(1, Ordering::SeqCst) + 1 == total {
            println!("{suite}: {}", self.line());
        }
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------

/// A response as read off the wire.
#[derive(Clone, Debug)]
pub struct Raw {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A response, or the connection ending without one.
#[derive(Clone, Debug)]
pub enum Outcome {
    Answered(Raw),
    /// Closed or reset before a complete response head; the text says how.
    Closed(String),
}

impl Outcome {
    pub fn seen(&self) -> Seen {
        match self {
            Outcome::Answered(r) => Seen::Status(r.status),
            Outcome::Closed(_) => Seen::Closed,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Answered(r) => Some(r.status),
            Outcome::Closed(_) => None,
        }
    }

    /// The response, panicking with `what` when there is none.
    pub fn answered(self, what: &str) -> Raw {
        match self {
            Outcome::Answered(r) => r,
            Outcome::Closed(why) => panic!("{what}: no answer ({why})"),
        }
    }
}

/// Any stream a raw request can go over.
pub trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// Connect to a plain listener.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(20)));
    let _ = s.set_nodelay(true);
    s
}

/// Connect to a TLS listener, trusting `ca_pem`, without a client certificate.
pub fn tls(
    addr: SocketAddr,
    ca_pem: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
    rustls::StreamOwned::new(conn, tcp(addr))
}

/// Send `request` as is and read the answer until the connection closes (send
/// `Connection: close`) or the declared body is complete. A failed write is
/// not an error: the server may answer and close before taking everything.
pub fn exchange(conn: &mut dyn Conn, request: &[u8]) -> Outcome {
    let head = request.starts_with(b"HEAD ");
    let write_error = conn.write_all(request).and_then(|()| conn.flush()).err();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let read_error = loop {
        if let Some(r) = parse(&buf, head, false) {
            return Outcome::Answered(r);
        }
        match conn.read(&mut chunk) {
            Ok(0) => break None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => break Some(e),
        }
    };
    match parse(&buf, head, true) {
        Some(r) => Outcome::Answered(r),
        None => Outcome::Closed(format!(
            "{} bytes received; write: {write_error:?}; read: {read_error:?}",
            buf.len()
        )),
    }
}

/// A whole response in `buf`, if one is there (`Content-Length` or chunked;
/// none for `HEAD`); `at_eof` accepts a body that ends with the connection.
fn parse(buf: &[u8], head_only: bool, at_eof: bool) -> Option<Raw> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &buf[end + 4..];
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let no_body = head_only || status == 304 || status == 204 || (100..200).contains(&status);
    let body = if no_body {
        Vec::new()
    } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() < len {
            return None;
        }
        rest[..len].to_vec()
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if at_eof {
        rest.to_vec()
    } else {
        return None;
    };
    Some(Raw {
        status,
        headers,
        body,
    })
}

/// A complete chunked body, or `None` while it is incomplete.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if rest.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// `GET <target> HTTP/1.1` with `Host`, `Connection: close` and these extra
/// header lines (each `name: value`, sent as given).
pub fn get(target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut r = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(k);
        r.push_str(": ");
        r.push_str(v);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// The code of a registry-format error body (`{"errors":[{"code","message"}]}`),
/// panicking when the body is not in that format.
pub fn error_code(what: &str, body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{what}: error body is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    let errors = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no `errors` array in {v}"));
    assert!(!errors.is_empty(), "{what}: empty `errors` in {v}");
    for e in errors {
        assert!(e["code"].is_string(), "{what}: error without a code: {v}");
        assert!(
            e["message"].is_string(),
            "{what}: error without a message: {v}"
        );
    }
    errors[0]["code"].as_str().unwrap_or_default().to_owned()
}

/// `status` and, in registry format with `Content-Type: application/json`, `code`.
pub fn assert_error(what: &str, r: &Raw, status: u16, code: &str) {
    assert_eq!(r.status, status, "{what}: status (body {})", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: content type {:?}",
        r.header("content-type")
    );
    assert_eq!(error_code(what, &r.body), code, "{what}");
}
