//! Starting a gateway for a test, and the building blocks the fakes share.
//!
//! (The gateway part is further down; this first section is what
//! [`crate::fake_pulp`] and [`crate::fake_central`] are built from.)
//!
//! # Shared building blocks
//!
//! * [`ServerTls`]: PEM material for a fake's TLS listener; with `client_ca_pem`
//!   set, a client certificate signed by that CA is **required** (the gateway
//!   talks to Pulp and central over mTLS in production).
//! * [`Fault`]: what a fake does instead of answering normally (500, garbage,
//!   stall, dropped connection), switchable at runtime on each fake.
//! * [`Recorded`]: one request as a fake received it (method, raw path and
//!   query, every header, whether a TLS client certificate was presented).

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::dev::{Extensions, ServerHandle};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

// ---------------------------------------------------------------------------
// TLS for the fakes
// ---------------------------------------------------------------------------

/// TLS material for a fake upstream's listener (PEM text).
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// Server certificate, optionally followed by intermediates.
    pub cert_chain_pem: String,
    /// The server certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
    /// When set, clients **must** present a certificate chaining to one of these CAs.
    pub client_ca_pem: Option<String>,
}

impl ServerTls {
    /// The rustls configuration (ring provider, HTTP/1.1 only, like gunicorn/Rails behind Apache).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = CertificateDer::pem_slice_iter(self.cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("fake server certificate: {e}"))?;
        if certs.is_empty() {
            return Err("fake server certificate: no PEM certificate".into());
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| format!("fake server key: {e}"))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &self.client_ca_pem {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    let cert = cert.map_err(|e| format!("fake client CA: {e}"))?;
                    roots.add(cert).map_err(|e| format!("fake client CA: {e}"))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| format!("fake client verifier: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| format!("fake server cert/key: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Per-connection facts a fake records (set by [`capture_connection`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnFacts {
    pub tls: bool,
    /// DER of the client's end-entity certificate, when one was presented.
    pub client_cert: Option<Arc<Vec<u8>>>,
}

/// `HttpServer::on_connect` hook of the fakes.
pub(crate) fn capture_connection(conn: &dyn std::any::Any, ext: &mut Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    let facts = match conn.downcast_ref::<Tls>() {
        Some(tls) => {
            let (_, session) = tls.get_ref();
            ConnFacts {
                tls: true,
                client_cert: session.peer_certificates().and_then(|c| c.first()).map(|c| Arc::new(c.as_ref().to_vec())),
            }
        }
        None => ConnFacts::default(),
    };
    ext.insert(facts);
}

// ---------------------------------------------------------------------------
// Request records
// ---------------------------------------------------------------------------

/// One request as a fake received it. `K` is the fake's route kind
/// ([`crate::fake_pulp::PathKind`], [`crate::fake_central::CentralRoute`]).
#[derive(Clone, Debug)]
pub struct Recorded<K> {
    pub kind: K,
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The raw path, exactly as sent (not percent-decoded).
    pub path: String,
    /// The raw query without `?` (empty when none).
    pub query: String,
    /// Every header in arrival order; repeated headers (Go clients send several
    /// `Accept:` lines) appear once per line. Names are lower-case.
    pub headers: Vec<(String, String)>,
    /// Whether the request came over TLS.
    pub tls: bool,
    /// Whether the TLS client presented a certificate.
    pub client_cert: bool,
    /// When the fake received it.
    pub at: Instant,
}

impl<K> Recorded<K> {
    /// `path?query` as sent (just the path when there is no query).
    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() { self.path.clone() } else { format!("{}?{}", self.path, self.query) }
    }

    /// Every value of a header (case-insensitive name), one per header line.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// Each `Accept` header line (not split on commas).
    pub fn accept(&self) -> Vec<&str> {
        self.header_all("accept")
    }

    /// `If-None-Match` lines.
    pub fn if_none_match(&self) -> Vec<&str> {
        self.header_all("if-none-match")
    }

    pub fn authorization(&self) -> Option<&str> {
        self.header("authorization")
    }

    /// The forwarded subscription certificate header, if any reached the fake.
    pub fn rhsm_cert(&self) -> Option<&str> {
        self.header("x-rhsm-ssl-client-cert")
    }

    pub fn host(&self) -> Option<&str> {
        self.header("host")
    }

    /// The value of a query parameter (percent-decoded), first occurrence.
    pub fn query_param(&self, key: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
    }
}

pub(crate) fn record<K>(req: &HttpRequest, kind: K) -> Recorded<K> {
    let facts = req.conn_data::<ConnFacts>().cloned().unwrap_or_default();
    let mut headers = Vec::new();
    // HeaderMap iterates each value of a multi-valued header separately.
    for (name, value) in req.headers() {
        headers.push((name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()));
    }
    Recorded {
        kind,
        method: req.method().as_str().to_owned(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().unwrap_or_default().to_owned(),
        headers,
        tls: facts.tls,
        client_cert: facts.client_cert.is_some(),
        at: Instant::now(),
    }
}

/// Bounded log of received requests (the oldest are dropped past `cap`).
pub(crate) struct RequestLog<K> {
    entries: Mutex<VecDeque<Recorded<K>>>,
    cap: usize,
}

impl<K: Clone> RequestLog<K> {
    pub fn new(cap: usize) -> Self {
        Self { entries: Mutex::new(VecDeque::new()), cap }
    }

    pub fn push(&self, r: Recorded<K>) {
        let mut e = lock(&self.entries);
        if e.len() >= self.cap {
            e.pop_front();
        }
        e.push_back(r);
    }

    pub fn all(&self) -> Vec<Recorded<K>> {
        lock(&self.entries).iter().cloned().collect()
    }

    pub fn clear(&self) {
        lock(&self.entries).clear();
    }
}

/// Lock a mutex, ignoring poisoning (a panicking test thread must not wedge a fake).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

/// What a fake does instead of (or before) answering normally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with the upstream's usual error body
    /// (Pulp: Django's HTML error page; central: a Rails JSON error).
    Status(u16),
    /// 200 with `Content-Type: application/json` and a body that is not JSON.
    Garbage,
    /// Wait this long, then answer normally (a stall longer than the gateway's
    /// timeout looks like a hung upstream).
    Stall(Duration),
    /// Drop the connection without a complete response (a `Content-Length`
    /// response head may be written, but no body byte follows).
    Close,
    /// Send the full response head and half of a normal-looking body, then drop the connection.
    Truncate,
}

struct FaultRule<K> {
    kind: Option<K>,
    fault: Fault,
    remaining: Option<u32>,
}

/// Ordered fault rules; the first matching one applies.
pub(crate) struct Faults<K> {
    rules: Mutex<Vec<FaultRule<K>>>,
}

impl<K: Copy + PartialEq> Faults<K> {
    pub fn new() -> Self {
        Self { rules: Mutex::new(Vec::new()) }
    }

    /// Add a rule: `kind` None matches every request; `times` None is forever.
    pub fn add(&self, kind: Option<K>, fault: Fault, times: Option<u32>) {
        lock(&self.rules).push(FaultRule { kind, fault, remaining: times });
    }

    pub fn clear(&self) {
        lock(&self.rules).clear();
    }

    /// The fault for a request of this kind, consuming one use of its rule.
    pub fn take(&self, kind: K) -> Option<Fault> {
        let mut rules = lock(&self.rules);
        let i = rules.iter().position(|r| r.kind.is_none_or(|k| k == kind))?;
        let fault = rules[i].fault.clone();
        if let Some(n) = rules[i].remaining.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                rules.remove(i);
            }
        }
        Some(fault)
    }
}

/// An error for a body stream that drops the connection.
#[derive(Debug)]
pub(crate) struct InjectedDrop;

impl std::fmt::Display for InjectedDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose by a test fake")
    }
}

impl std::error::Error for InjectedDrop {}

/// A response whose body stream fails after `prefix`, which makes actix drop the connection.
pub(crate) fn dropping_response(status: StatusCode, content_type: &str, declared_len: u64, prefix: Bytes) -> HttpResponse {
    let chunks: Vec<Result<Bytes, InjectedDrop>> =
        if prefix.is_empty() { vec![Err(InjectedDrop)] } else { vec![Ok(prefix), Err(InjectedDrop)] };
    HttpResponse::build(status)
        .insert_header((actix_web::http::header::CONTENT_TYPE, content_type.to_owned()))
        .body(actix_web::body::SizedStream::new(declared_len, futures_util::stream::iter(chunks)))
}

// ---------------------------------------------------------------------------
// Running an actix server on its own thread
// ---------------------------------------------------------------------------

/// An actix server running on a dedicated thread with its own `System`, so it
/// works under `#[actix_web::test]` and plain `#[test]` alike. Stopped (not
/// gracefully: open connections are cut) on [`ServerThread::stop`] or drop.
pub(crate) struct ServerThread {
    pub addr: SocketAddr,
    handle: Option<ServerHandle>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Bind `addr` (retrying for a few seconds when a just-stopped server still
    /// holds it), then run the server that `build` makes from the listener.
    pub fn start<F>(name: &str, addr: SocketAddr, build: F) -> io::Result<Self>
    where
        F: FnOnce(TcpListener) -> io::Result<actix_web::dev::Server> + Send + 'static,
    {
        let listener = bind_retrying(addr)?;
        let local = listener.local_addr()?;
        let (tx, rx) = std::sync::mpsc::channel::<io::Result<ServerHandle>>();
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            let system = actix_web::rt::System::new();
            let server = system.block_on(async move { build(listener) });
            match server {
                Ok(server) => {
                    let _ = tx.send(Ok(server.handle()));
                    if let Err(e) = system.block_on(server) {
                        eprintln!("test server stopped with an error: {e}");
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
        let handle = rx.recv().map_err(|_| io::Error::other("test server thread died while starting"))??;
        Ok(Self { addr: local, handle: Some(handle), thread: Some(thread) })
    }

    /// Stop the server and wait until its thread is gone (the port is free again).
    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            // The command is sent when `stop` is called; the future only waits.
            drop(h.stop(false));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn bind_retrying(addr: SocketAddr) -> io::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && addr.port() != 0 && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// `127.0.0.1:0`.
pub(crate) fn any_loopback_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
