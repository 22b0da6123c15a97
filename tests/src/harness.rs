//! Starting a gateway for a test, and the building blocks the fakes share.
//!
//! # The quick way: [`TestEnv`]
//!
//! ```no_run
//! use gateway_tests::harness::{Fault, TestEnv};
//! use gateway_tests::fake_pulp::{FakeRepo, Image, PathKind};
//!
//! const HOST: &str = "0d9c2c52-7a4e-4b1c-9a7c-1f2e3d4c5b6a";
//! let env = TestEnv::builder()
//!     .pulp(|p| p.repo(FakeRepo::new("org/app").image("latest", Image::flatpak_app("org.test.App"))))
//!     .central(|c| c.host(HOST, &["org/app"]))          // what central answers for HostUUID
//!     .repositories(&[("org/app", true)])              // Katello's repository_list push
//!     .host_mapping(HOST, &["org/app"])                // optional: update_hosts + host_repository_mapping
//!     .gateway(|g| g.cache_ttl(2).index_ttl(1))        // any gateway.toml knob
//!     .upstream_tls(true)                              // fakes over mTLS, as in production
//!     .start();
//!
//! let host = env.host_cert(HOST);                      // Candlepin-shaped cert from env.pki
//! let r = env.curl_as(&host).head("/v2/org/app/manifests/latest");   // real curl, blocking
//! assert_eq!(r.status, 200);
//! assert_eq!(env.pulp.requests_of(PathKind::Manifest)[0].method, "HEAD");
//! // inside #[actix_web::test]: env.client_as(&host).get("/v2/").send().await
//! // inside a plain #[test]:    actix_web::rt::System::new().block_on(async { ... })
//! env.pulp.fail(Fault::Status(500));
//! ```
//!
//! [`TestEnv`] holds `pki` ([`Pki`]), `pulp` ([`FakePulp`]), `central`
//! ([`FakeCentral`]) and `gateway` ([`Gateway`]); helpers: `host_cert(uuid)`,
//! `ca_pem()`, `client()` / `client_as(cert)` (awc, see [`crate::client`]),
//! `curl()` / `curl_as(cert)`, `write_cert(cert) -> (cert path, key path)`.
//! The fakes are plain HTTP unless [`TestEnvBuilder::upstream_tls`].
//!
//! # The gateway alone: [`GatewayBuilder`] -> [`Gateway`]
//!
//! `GatewayBuilder::new(Arc<Pki>)` (or `default()`), then `.pulp(&fake)` /
//! `.pulp_at(url, registry_path)`, `.central(&fake)` / `.central_at(url)` (https
//! URLs get the test CA as `ssl_ca` and a client certificate, CN
//! [`UPSTREAM_CLIENT_CN`], as `ssl_cert`/`ssl_key`), `.plain_listener(true)`,
//! `.trusted_frontends(&[..])`, `.public_url(..)`, `.cache_ttl(s)`,
//! `.stale_if_error(s)`, `.negative_ttl(s)`, `.index_ttl(s)`,
//! `.upstream_timeout(s)`, `.client_request_timeout(s)`, `.client_endpoint(url)`,
//! `.allowed_cns(&[..])`,
//! `.plugins(&["rhsm-cert", "katello-token"])` (the default; the workspace-built
//! `.so` files are staged into a private `plugins.dir` by [`crate::plugins`]),
//! `.backends(vec![..])` (in-process backends instead of plugins),
//! `.admin_listener(true)`, `.workers(n)`, and `.set("any.key", value)` for
//! every other key of `gateway.toml`. `.start()` panics with the configuration
//! problems; `.try_start()` returns them.
//!
//! What it does: a temp dir with `pki/` (CA, server cert for 127.0.0.1 and
//! localhost, management cert, upstream client cert), `state/` and
//! `gateway.toml`, which is parsed and validated by the gateway's own
//! `config::{parse, validate}`; the TLS (and plain, admin) listeners get free
//! loopback ports picked up front so that `server.public_url` defaults to
//! `https://127.0.0.1:<port>`, the address clients really use (the challenge
//! realm and `Link` headers are then usable by real clients);
//! `plugins.require_root_owner = false`. The gateway runs on its own thread in
//! its own actix `System`, so both `#[actix_web::test]` and `#[test]` work.
//!
//! [`Gateway`]: `url()`, `tls_addr()`, `plain_url()`, `admin_url()`,
//! `config()`, `shared()` (white-box access), `config_path()`, `state_dir()`,
//! `files()` ([`PkiFiles`]), `curl()`, `plain_curl()`, `katello_curl()`;
//! Katello's pushes as Katello encodes them (Rack form, management certificate,
//! real TLS): `push(route, form)` (any answer), `push_repository_list`,
//! `push_hosts`, `push_host_mapping`, `push_update_host_repositories`,
//! `push_user_mapping` (these assert 200); bodies from [`katello_form`].
//! Lifecycle: `stop()` (connections cut), `stop_graceful()`, `restart()` (same
//! ports, same `state/`, with keys changed by `set(key, value)`), and stop on drop.
//!
//! # Shared building blocks
//!
//! * [`ServerTls`]: PEM material for a fake's TLS listener; with `client_ca_pem`
//!   set, a client certificate signed by that CA is **required** (the gateway
//!   talks to Pulp and central over mTLS in production). [`upstream_tls`] builds
//!   one from a [`Pki`].
//! * [`Fault`]: what a fake does instead of answering normally (status, garbage,
//!   stall, dropped connection, truncated body, any given answer, a huge body),
//!   switchable at runtime on each fake.
//! * [`Recorded`]: one request as a fake received it (method, raw path and
//!   query, every header line, whether a TLS client certificate was presented).
//! * [`init_logging`]: gateway logs to stderr when `RUST_LOG` is set (called by `start`).

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
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| format!("fake server key: {e}"))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &self.client_ca_pem {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    let cert = cert.map_err(|e| format!("fake client CA: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("fake client CA: {e}"))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| format!("fake client verifier: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("fake server cert/key: {e}"))?;
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
                client_cert: session
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| Arc::new(c.as_ref().to_vec())),
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
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    /// Every value of a header (case-insensitive name), one per header line.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
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
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

pub(crate) fn record<K>(req: &HttpRequest, kind: K) -> Recorded<K> {
    let facts = req.conn_data::<ConnFacts>().cloned().unwrap_or_default();
    let mut headers = Vec::new();
    // HeaderMap iterates each value of a multi-valued header separately.
    for (name, value) in req.headers() {
        headers.push((
            name.as_str().to_owned(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        ));
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
        Self {
            entries: Mutex::new(VecDeque::new()),
            cap,
        }
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
    /// Drop the connection without sending any response byte (curl: "Empty reply from server").
    Close,
    /// Send the full response head (its `Content-Length` unchanged) and the
    /// first half of the normal body, pause 100 ms, then drop the connection.
    Truncate,
    /// Send the full response head and the first half of the normal body,
    /// then wait this long before sending the rest (a hang in mid-body).
    StallBody(Duration),
    /// Send the full response head, then the normal body in `pieces` equal
    /// parts with `gap` before each, the first included: one piece after a
    /// long gap is a hang right after the head; many after short gaps, a slow
    /// but steady upstream. `chunked` leaves out `Content-Length`.
    Paced {
        pieces: u32,
        gap: Duration,
        chunked: bool,
    },
    /// Answer exactly this status, `Content-Type` and body (an HTML page where
    /// JSON belongs, JSON of the wrong shape, ...).
    Respond {
        status: u16,
        content_type: String,
        body: Bytes,
    },
    /// 200 `application/json` with a well-formed body of about `size` bytes in
    /// the shape of the route's answer, naming repositories `org/huge/r<n>`
    /// (Pulp's index: one `Results` entry each; central's `_catalog`: the
    /// `repositories` list). It is produced while streaming, so it costs the
    /// fake no memory. `chunked` leaves out `Content-Length`.
    Huge { size: u64, chunked: bool },
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
        Self {
            rules: Mutex::new(Vec::new()),
        }
    }

    /// Add a rule: `kind` None matches every request; `times` None is forever.
    pub fn add(&self, kind: Option<K>, fault: Fault, times: Option<u32>) {
        lock(&self.rules).push(FaultRule {
            kind,
            fault,
            remaining: times,
        });
    }

    pub fn clear(&self) {
        lock(&self.rules).clear();
    }

    /// The fault for a request of this kind, consuming one use of its rule.
    pub fn take(&self, kind: K) -> Option<Fault> {
        let mut rules = lock(&self.rules);
        let i = rules
            .iter()
            .position(|r| r.kind.is_none_or(|k| k == kind))?;
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
pub(crate) fn dropping_response(
    status: StatusCode,
    content_type: &str,
    declared_len: u64,
    prefix: Bytes,
) -> HttpResponse {
    let chunks: Vec<Result<Bytes, InjectedDrop>> = if prefix.is_empty() {
        vec![Err(InjectedDrop)]
    } else {
        vec![Ok(prefix), Err(InjectedDrop)]
    };
    HttpResponse::build(status)
        .insert_header((
            actix_web::http::header::CONTENT_TYPE,
            content_type.to_owned(),
        ))
        .body(actix_web::body::SizedStream::new(
            declared_len,
            futures_util::stream::iter(chunks),
        ))
}

/// Prefix of the repository names in a [`Fault::Huge`] body.
pub const HUGE_NAME_PREFIX: &str = "org/huge/r";

/// The answer for [`Fault::Respond`].
pub(crate) fn respond_response(status: u16, content_type: &str, body: Bytes) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
        .insert_header((
            actix_web::http::header::CONTENT_TYPE,
            content_type.to_owned(),
        ))
        .body(body)
}

/// A 200 JSON answer of about `size` bytes: `head`, then fixed-width entries
/// (`entry(i)`, comma-separated), then `tail`, generated while streaming.
pub(crate) fn huge_response(
    size: u64,
    chunked: bool,
    head: &'static str,
    entry: fn(u64) -> String,
    tail: &'static str,
) -> HttpResponse {
    let entry_len = entry(0).len() as u64;
    let fixed = (head.len() + tail.len()) as u64;
    let entries = size.saturating_sub(fixed) / (entry_len + 1);
    let declared = fixed + entries * entry_len + entries.saturating_sub(1);
    let stream = HugeBody {
        head: Some(head),
        tail: Some(tail),
        entry,
        next: 0,
        entries,
    };
    let mut b = HttpResponse::Ok();
    b.insert_header((actix_web::http::header::CONTENT_TYPE, "application/json"));
    if chunked {
        b.streaming(stream)
    } else {
        b.body(actix_web::body::SizedStream::new(declared, stream))
    }
}

struct HugeBody {
    head: Option<&'static str>,
    tail: Option<&'static str>,
    entry: fn(u64) -> String,
    next: u64,
    entries: u64,
}

impl futures_util::Stream for HugeBody {
    type Item = Result<Bytes, InjectedDrop>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::fmt::Write as _;
        use std::task::Poll;
        let this = self.get_mut();
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(Bytes::from_static(head.as_bytes()))));
        }
        if this.next < this.entries {
            let mut chunk = String::with_capacity(64 * 1024 + 128);
            while this.next < this.entries && chunk.len() < 64 * 1024 {
                if this.next > 0 {
                    chunk.push(',');
                }
                let _ = write!(chunk, "{}", (this.entry)(this.next));
                this.next += 1;
            }
            return Poll::Ready(Some(Ok(Bytes::from(chunk))));
        }
        Poll::Ready(
            this.tail
                .take()
                .map(|tail| Ok(Bytes::from_static(tail.as_bytes()))),
        )
    }
}

/// Keep `resp`'s head (with its `Content-Length`) but cut the body after half
/// of it, then drop the connection.
pub(crate) fn truncate_response(resp: HttpResponse) -> HttpResponse {
    use actix_web::body::{BodySize, MessageBody};
    let (resp, body) = resp.into_parts();
    let declared = match body.size() {
        BodySize::Sized(n) if n > 0 => n,
        _ => 2,
    };
    let stream = Truncating {
        body,
        left: declared / 2,
        pause: None,
    };
    resp.set_body(actix_web::body::SizedStream::new(declared, stream))
        .map_into_boxed_body()
}

/// Keep `resp`'s head and send the first half of its body at once, the rest
/// after `pause`.
pub(crate) fn stall_body_response(resp: HttpResponse, pause: Duration) -> HttpResponse {
    use actix_web::body::{BodySize, MessageBody};
    let (resp, body) = resp.into_parts();
    let declared = match body.size() {
        BodySize::Sized(n) if n > 0 => n,
        _ => 2,
    };
    let stream = StallingBody {
        body,
        held: None,
        first: declared / 2,
        sent: 0,
        pause: Box::pin(actix_web::rt::time::sleep(pause)),
    };
    resp.set_body(actix_web::body::SizedStream::new(declared, stream))
        .map_into_boxed_body()
}

/// Keep `resp`'s head and send its body as [`Fault::Paced`] says.
pub(crate) fn paced_response(
    resp: HttpResponse,
    pieces: u32,
    gap: Duration,
    chunked: bool,
) -> HttpResponse {
    use actix_web::body::{BodySize, MessageBody};
    let (mut resp, body) = resp.into_parts();
    let declared = match body.size() {
        BodySize::Sized(n) => n,
        _ => 0,
    };
    let stream = PacedBody {
        body,
        held: bytes::BytesMut::new(),
        piece: declared.div_ceil(u64::from(pieces.max(1))).max(1) as usize,
        gap,
        timer: Box::pin(actix_web::rt::time::sleep(gap)),
        ended: false,
    };
    if chunked {
        resp.headers_mut()
            .remove(actix_web::http::header::CONTENT_LENGTH);
        resp.set_body(actix_web::body::BodyStream::new(stream))
            .map_into_boxed_body()
    } else {
        resp.set_body(actix_web::body::SizedStream::new(declared, stream))
            .map_into_boxed_body()
    }
}

struct PacedBody {
    body: actix_web::body::BoxBody,
    /// Read from `body`, not sent yet.
    held: bytes::BytesMut,
    piece: usize,
    gap: Duration,
    timer: std::pin::Pin<Box<actix_web::rt::time::Sleep>>,
    /// `body` has nothing more.
    ended: bool,
}

impl futures_util::Stream for PacedBody {
    type Item = Result<Bytes, InjectedDrop>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use actix_web::body::MessageBody;
        use std::future::Future;
        use std::task::Poll;
        let this = self.get_mut();
        // Read a piece ahead, so that the end is known without another gap.
        while !this.ended && this.held.len() < this.piece {
            match std::pin::Pin::new(&mut this.body).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.held.extend_from_slice(&chunk),
                Poll::Ready(Some(Err(_))) => return Poll::Ready(Some(Err(InjectedDrop))),
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => break,
            }
        }
        if this.ended && this.held.is_empty() {
            return Poll::Ready(None);
        }
        if this.timer.as_mut().poll(cx).is_pending()
            || (!this.ended && this.held.len() < this.piece)
        {
            return Poll::Pending;
        }
        let take = this.piece.min(this.held.len());
        let piece = this.held.split_to(take).freeze();
        let next = actix_web::rt::time::Instant::now() + this.gap;
        this.timer.as_mut().reset(next);
        Poll::Ready(Some(Ok(piece)))
    }
}

struct StallingBody {
    body: actix_web::body::BoxBody,
    /// The part of a chunk that crossed the halfway mark, sent after the pause.
    held: Option<Bytes>,
    first: u64,
    sent: u64,
    pause: std::pin::Pin<Box<actix_web::rt::time::Sleep>>,
}

impl futures_util::Stream for StallingBody {
    type Item = Result<Bytes, InjectedDrop>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use actix_web::body::MessageBody;
        use std::future::Future;
        use std::task::Poll;
        let this = self.get_mut();
        if this.sent >= this.first && this.pause.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if let Some(held) = this.held.take() {
            this.sent += held.len() as u64;
            return Poll::Ready(Some(Ok(held)));
        }
        match std::pin::Pin::new(&mut this.body).poll_next(cx) {
            Poll::Ready(Some(Ok(mut chunk))) => {
                let room = this.first.saturating_sub(this.sent) as usize;
                if room > 0 && chunk.len() > room {
                    this.held = Some(chunk.split_off(room));
                }
                this.sent += chunk.len() as u64;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(InjectedDrop))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

struct Truncating {
    body: actix_web::body::BoxBody,
    left: u64,
    /// actix drops unflushed output when a body fails: wait before failing so
    /// the head and the prefix reach the client.
    pause: Option<std::pin::Pin<Box<actix_web::rt::time::Sleep>>>,
}

impl futures_util::Stream for Truncating {
    type Item = Result<Bytes, InjectedDrop>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use actix_web::body::MessageBody;
        use std::future::Future;
        use std::task::Poll;
        let this = self.get_mut();
        if this.left == 0 {
            let pause = this.pause.get_or_insert_with(|| {
                Box::pin(actix_web::rt::time::sleep(Duration::from_millis(100)))
            });
            return match pause.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(InjectedDrop))),
                Poll::Pending => Poll::Pending,
            };
        }
        match std::pin::Pin::new(&mut this.body).poll_next(cx) {
            Poll::Ready(Some(Ok(mut chunk))) => {
                if chunk.len() as u64 > this.left {
                    chunk.truncate(this.left as usize);
                }
                this.left -= chunk.len() as u64;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => Poll::Ready(Some(Err(InjectedDrop))),
            Poll::Pending => Poll::Pending,
        }
    }
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
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
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
        let handle = rx
            .recv()
            .map_err(|_| io::Error::other("test server thread died while starting"))??;
        Ok(Self {
            addr: local,
            handle: Some(handle),
            thread: Some(thread),
        })
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
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && addr.port() != 0
                    && Instant::now() < deadline =>
            {
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

// ---------------------------------------------------------------------------
// The gateway under test
// ---------------------------------------------------------------------------

use std::path::{Path, PathBuf};

use container_gateway::auth::Authenticator;
use container_gateway::config::Config;
use container_gateway::server::shared::Shared;

use crate::client::{Curl, TestClient};
use crate::fake_central::{FakeCentral, FakeCentralBuilder};
use crate::fake_pulp::{FakePulp, FakePulpBuilder};
use crate::pki::{Issued, Pki, PkiFiles};
use crate::plugins::PluginDir;

/// CN of the client certificate the gateway presents to Pulp and central.
pub const UPSTREAM_CLIENT_CN: &str = "proxy.example.com";

/// Route gateway logs to stderr when `RUST_LOG` is set (once per process).
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("RUST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .try_init();
        }
    });
}

/// TLS material for a fake upstream from the test PKI: server cert for
/// 127.0.0.1/localhost, requiring a client cert signed by the same CA.
pub fn upstream_tls(pki: &Pki) -> ServerTls {
    let server = pki.server_cert();
    ServerTls {
        cert_chain_pem: server.chain_pem(),
        key_pem: server.key_pem,
        client_ca_pem: Some(pki.ca_pem()),
    }
}

/// A free loopback port (bound and released; the kernel does not hand it out again soon).
/// Resident and peak resident memory of a process (`VmRSS`, `VmHWM` in
/// `/proc/<pid>/status`), in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn free_port() -> io::Result<SocketAddr> {
    TcpListener::bind(any_loopback_port())?.local_addr()
}

/// Set `dotted.key = value` in a TOML table, creating (or replacing non-table
/// values with) tables on the way.
fn toml_set(table: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = table
                .entry(head.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(inner) = entry {
                toml_set(inner, rest, value);
            }
        }
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Configures a gateway for a test. Every knob writes a key of `gateway.toml`;
/// [`GatewayBuilder::set`] writes any other.
pub struct GatewayBuilder {
    pki: Arc<Pki>,
    table: toml::Table,
    plain: bool,
    admin: bool,
    public_url: Option<String>,
    plugins: Vec<String>,
    backends: Option<Vec<Arc<dyn Authenticator>>>,
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        Self::new(Arc::new(Pki::new()))
    }
}

impl GatewayBuilder {
    /// A gateway using this PKI: its server certificate, and its CA as the
    /// client CA (katello-default-ca). Defaults: TLS listener only, 2 workers,
    /// plugins `rhsm-cert` + `katello-token`, upstream timeouts 5 s, cache TTL
    /// 300 s / stale 3600 s, admin listener off, Pulp and central at
    /// unreachable `http://127.0.0.1:9` until [`GatewayBuilder::pulp`] / [`GatewayBuilder::central`].
    pub fn new(pki: Arc<Pki>) -> GatewayBuilder {
        let mut b = GatewayBuilder {
            pki,
            table: toml::Table::new(),
            plain: false,
            admin: false,
            public_url: None,
            plugins: vec!["rhsm-cert".into(), "katello-token".into()],
            backends: None,
        };
        b = b
            .set(
                "server.trusted_frontends",
                toml::Value::Array(vec!["127.0.0.1/32".into(), "::1/128".into()]),
            )
            .set("server.workers", 2)
            .set("server.shutdown_timeout_secs", 1)
            .set("pulp.endpoint", "http://127.0.0.1:9")
            .set("pulp.registry_path", "/pulpcore_registry")
            .set("pulp.timeout_secs", 5)
            .set("central.url", "http://127.0.0.1:9")
            .set("central.timeout_secs", 5)
            .set(
                "management.allowed_cns",
                toml::Value::Array(vec![crate::pki::MANAGEMENT_CN.into()]),
            )
            .set("plugins.require_root_owner", false)
            .set("log.filter", "info");
        b
    }

    /// Set any key of `gateway.toml` (`"cache.ttl_secs"`, `"pulp.client_endpoint"`, ...).
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        toml_set(&mut self.table, key, value.into());
        self
    }

    /// Point `pulp.*` at a fake Pulp (endpoint, registry path, and mTLS material when it is https).
    pub fn pulp(self, pulp: &FakePulp) -> Self {
        self.pulp_at(pulp.url(), pulp.registry_path())
    }

    /// Point `pulp.*` at any URL (`https://` gets the test CA and our client cert).
    pub fn pulp_at(self, endpoint: &str, registry_path: &str) -> Self {
        self.set("pulp.endpoint", endpoint)
            .set("pulp.registry_path", registry_path)
            .upstream_tls_keys("pulp", endpoint)
    }

    /// Point `central.*` at a fake central.
    pub fn central(self, central: &FakeCentral) -> Self {
        self.central_at(central.url())
    }

    pub fn central_at(self, url: &str) -> Self {
        self.set("central.url", url)
            .upstream_tls_keys("central", url)
    }

    fn upstream_tls_keys(mut self, table: &str, url: &str) -> Self {
        // Paths are filled in at start, when the PKI files exist; remember the intent.
        if url.starts_with("https://") {
            toml_set(&mut self.table, &format!("{table}.ssl_ca"), "@ca".into());
            toml_set(
                &mut self.table,
                &format!("{table}.ssl_cert"),
                "@upstream-cert".into(),
            );
            toml_set(
                &mut self.table,
                &format!("{table}.ssl_key"),
                "@upstream-key".into(),
            );
        } else {
            for k in ["ssl_ca", "ssl_cert", "ssl_key"] {
                toml_set(&mut self.table, &format!("{table}.{k}"), "".into());
            }
        }
        self
    }

    /// Also listen on plain HTTP (`server.listen_plain`), for frontend tests.
    pub fn plain_listener(mut self, on: bool) -> Self {
        self.plain = on;
        self
    }

    /// `server.trusted_frontends`.
    pub fn trusted_frontends(self, nets: &[&str]) -> Self {
        self.set(
            "server.trusted_frontends",
            toml::Value::Array(nets.iter().map(|n| (*n).into()).collect()),
        )
    }

    /// `server.public_url` (default `https://127.0.0.1:<tls port>`).
    pub fn public_url(mut self, url: &str) -> Self {
        self.public_url = Some(url.to_owned());
        self
    }

    /// `cache.ttl_secs` (and raises `stale_if_error_secs` to it when lower).
    pub fn cache_ttl(self, secs: u64) -> Self {
        let stale = self
            .table
            .get("cache")
            .and_then(|c| c.get("stale_if_error_secs"))
            .and_then(|v| v.as_integer());
        let b = self.set("cache.ttl_secs", secs as i64);
        if stale.is_none_or(|s| (s as u64) < secs) {
            b.set("cache.stale_if_error_secs", (secs.max(3600)) as i64)
        } else {
            b
        }
    }

    /// `cache.stale_if_error_secs`.
    pub fn stale_if_error(self, secs: u64) -> Self {
        self.set("cache.stale_if_error_secs", secs as i64)
    }

    /// `cache.negative_ttl_secs`.
    pub fn negative_ttl(self, secs: u64) -> Self {
        self.set("cache.negative_ttl_secs", secs as i64)
    }

    /// `pulp.index_ttl_secs`.
    pub fn index_ttl(self, secs: u64) -> Self {
        self.set("pulp.index_ttl_secs", secs as i64)
    }

    /// `pulp.timeout_secs` and `central.timeout_secs`.
    pub fn upstream_timeout(self, secs: u64) -> Self {
        self.set("pulp.timeout_secs", secs as i64)
            .set("central.timeout_secs", secs as i64)
    }

    /// `server.client_request_timeout_secs` (also the TLS handshake timeout).
    pub fn client_request_timeout(self, secs: u64) -> Self {
        self.set("server.client_request_timeout_secs", secs as i64)
    }

    /// `pulp.client_endpoint`.
    pub fn client_endpoint(self, url: &str) -> Self {
        self.set("pulp.client_endpoint", url)
    }

    /// `management.allowed_cns`.
    pub fn allowed_cns(self, cns: &[&str]) -> Self {
        self.set(
            "management.allowed_cns",
            toml::Value::Array(cns.iter().map(|n| (*n).into()).collect()),
        )
    }

    /// `plugins.chain` (the `.so` files are staged into a private `plugins.dir`).
    pub fn plugins(mut self, chain: &[&str]) -> Self {
        self.plugins = chain.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Use these in-process backends instead of loading plugins.
    pub fn backends(mut self, backends: Vec<Arc<dyn Authenticator>>) -> Self {
        self.backends = Some(backends);
        self
    }

    /// Serve the admin listener on a free loopback port.
    pub fn admin_listener(mut self, on: bool) -> Self {
        self.admin = on;
        self
    }

    /// `server.workers`.
    pub fn workers(self, n: usize) -> Self {
        self.set("server.workers", n as i64)
    }

    /// Start, panicking with every configuration problem when it cannot.
    pub fn start(self) -> Gateway {
        self.try_start()
            .unwrap_or_else(|e| panic!("gateway does not start: {e}"))
    }

    /// Start; `Err` carries the configuration problems or the start error.
    pub fn try_start(self) -> Result<Gateway, String> {
        init_logging();
        let dir = tempfile::Builder::new()
            .prefix("gw-test-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let pki_dir = dir.path().join("pki");
        let state_dir = dir.path().join("state");
        for d in [&pki_dir, &state_dir] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let files = self.pki.write_to(&pki_dir);
        let upstream = self.pki.management_cert(UPSTREAM_CLIENT_CN);
        let (upstream_cert, upstream_key) = upstream.write_to(&pki_dir, "upstream-client");
        let plugin_dir = PluginDir::new();
        for name in &self.plugins {
            plugin_dir.add(name, name);
        }

        let mut table = self.table;
        // Resolve the TLS placeholders left by pulp()/central().
        for t in ["pulp", "central"] {
            if let Some(toml::Value::Table(inner)) = table.get_mut(t) {
                for (_, v) in inner.iter_mut() {
                    let replacement = match v.as_str() {
                        Some("@ca") => Some(path_str(&files.ca)),
                        Some("@upstream-cert") => Some(path_str(&upstream_cert)),
                        Some("@upstream-key") => Some(path_str(&upstream_key)),
                        _ => None,
                    };
                    if let Some(r) = replacement {
                        *v = toml::Value::String(r);
                    }
                }
            }
        }
        let set = |table: &mut toml::Table, k: &str, v: toml::Value| toml_set(table, k, v);
        set(
            &mut table,
            "server.tls_cert",
            path_str(&files.server_cert).into(),
        );
        set(
            &mut table,
            "server.tls_key",
            path_str(&files.server_key).into(),
        );
        set(&mut table, "server.client_ca", path_str(&files.ca).into());
        set(&mut table, "state.dir", path_str(&state_dir).into());
        set(
            &mut table,
            "plugins.dir",
            path_str(plugin_dir.path()).into(),
        );
        set(
            &mut table,
            "plugins.chain",
            toml::Value::Array(self.plugins.iter().map(|p| p.as_str().into()).collect()),
        );

        let mut gw = Gateway {
            dir,
            plugin_dir,
            files,
            upstream_cert: upstream,
            table,
            backends: self.backends,
            running: None,
            config: None,
        };
        let mut last_err = String::new();
        for _ in 0..3 {
            let tls = free_port().map_err(|e| e.to_string())?;
            gw.set(
                "server.listen",
                toml::Value::Array(vec![tls.to_string().into()]),
            );
            let plain = if self.plain {
                vec![free_port().map_err(|e| e.to_string())?.to_string().into()]
            } else {
                vec![]
            };
            gw.set("server.listen_plain", toml::Value::Array(plain));
            let admin = if self.admin {
                free_port().map_err(|e| e.to_string())?.to_string()
            } else {
                String::new()
            };
            gw.set("admin.listen", admin);
            let public = self
                .public_url
                .clone()
                .unwrap_or_else(|| format!("https://127.0.0.1:{}", tls.port()));
            gw.set("server.public_url", public);
            match gw.boot() {
                Ok(()) => return Ok(gw),
                Err(BootError::Bind(e)) => last_err = e,
                Err(BootError::Other(e)) => return Err(e),
            }
        }
        Err(last_err)
    }
}

enum BootError {
    Bind(String),
    Other(String),
}

struct RunningGateway {
    tls_addrs: Vec<SocketAddr>,
    plain_addrs: Vec<SocketAddr>,
    handle: ServerHandle,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A running gateway with its temporary directory (PKI files, `gateway.toml`,
/// `state/`) and plugin directory. Stops on drop.
pub struct Gateway {
    dir: tempfile::TempDir,
    plugin_dir: PluginDir,
    files: PkiFiles,
    upstream_cert: Issued,
    table: toml::Table,
    backends: Option<Vec<Arc<dyn Authenticator>>>,
    running: Option<RunningGateway>,
    config: Option<Config>,
}

impl Gateway {
    fn boot(&mut self) -> Result<(), BootError> {
        let path = self.config_path();
        let text = toml::to_string(&self.table)
            .map_err(|e| BootError::Other(format!("gateway.toml: {e}")))?;
        std::fs::write(&path, &text)
            .map_err(|e| BootError::Other(format!("{}: {e}", path.display())))?;
        let file =
            container_gateway::config::parse(&text).map_err(|p| BootError::Other(p.to_string()))?;
        let config = container_gateway::config::validate(&path, &file)
            .map_err(|p| BootError::Other(p.to_string()))?;
        self.config = Some(config.clone());
        let options = container_gateway::server::StartOptions {
            handle_signals: false,
            backends: self.backends.clone(),
        };

        type Started =
            Result<(Vec<SocketAddr>, Vec<SocketAddr>, ServerHandle, Arc<Shared>), BootError>;
        let (tx, rx) = std::sync::mpsc::channel::<Started>();
        let thread = std::thread::Builder::new()
            .name("gateway".into())
            .spawn(move || {
                let system = actix_web::rt::System::new();
                match system.block_on(container_gateway::server::start(config, options)) {
                    Ok(running) => {
                        let started = (
                            running.tls_addrs.clone(),
                            running.plain_addrs.clone(),
                            running.handle.clone(),
                            running.shared.clone(),
                        );
                        let _ = tx.send(Ok(started));
                        if let Err(e) = system.block_on(running.wait()) {
                            eprintln!("gateway stopped with an error: {e}");
                        }
                    }
                    Err(e) => {
                        let err = match e {
                            container_gateway::server::StartError::Bind { .. } => {
                                BootError::Bind(e.to_string())
                            }
                            other => BootError::Other(other.to_string()),
                        };
                        let _ = tx.send(Err(err));
                    }
                }
            })
            .map_err(|e| BootError::Other(format!("spawning the gateway thread: {e}")))?;
        match rx.recv() {
            Ok(Ok((tls_addrs, plain_addrs, handle, shared))) => {
                self.running = Some(RunningGateway {
                    tls_addrs,
                    plain_addrs,
                    handle,
                    shared,
                    thread: Some(thread),
                });
                Ok(())
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(BootError::Other(
                    "the gateway thread died while starting (see its panic above)".into(),
                ))
            }
        }
    }

    fn running(&self) -> &RunningGateway {
        self.running
            .as_ref()
            .expect("the gateway is running (it was stopped)")
    }

    /// `https://127.0.0.1:<port>` of the (first) TLS listener.
    pub fn url(&self) -> String {
        format!("https://{}", self.tls_addr())
    }

    pub fn tls_addr(&self) -> SocketAddr {
        *self
            .running()
            .tls_addrs
            .first()
            .expect("the gateway has a TLS listener")
    }

    /// `http://127.0.0.1:<port>` of the plain listener, when configured.
    pub fn plain_url(&self) -> Option<String> {
        self.running()
            .plain_addrs
            .first()
            .map(|a| format!("http://{a}"))
    }

    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.running().plain_addrs.first().copied()
    }

    /// The admin listener's URL, when enabled.
    pub fn admin_url(&self) -> Option<String> {
        self.config
            .as_ref()
            .and_then(|c| c.admin_listen)
            .map(|a| format!("http://{a}"))
    }

    /// The validated configuration it runs with.
    pub fn config(&self) -> &Config {
        self.config.as_ref().expect("the gateway was configured")
    }

    /// The gateway's shared state (white-box checks).
    pub fn shared(&self) -> Arc<Shared> {
        self.running().shared.clone()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The temporary directory holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn plugin_dir(&self) -> &Path {
        self.plugin_dir.path()
    }

    /// Paths of the PKI files (`ca`, `server_cert`, `management_cert`, ...).
    pub fn files(&self) -> &PkiFiles {
        &self.files
    }

    /// The client certificate the gateway presents to its upstreams.
    pub fn upstream_cert(&self) -> &Issued {
        &self.upstream_cert
    }

    /// Change a key for the next [`Gateway::restart`].
    pub fn set(&mut self, key: &str, value: impl Into<toml::Value>) {
        toml_set(&mut self.table, key, value.into());
    }

    /// Stop at once (open connections are cut).
    pub fn stop(&mut self) {
        self.stop_with(false);
    }

    /// Stop gracefully (in-flight requests get `server.shutdown_timeout_secs`).
    pub fn stop_graceful(&mut self) {
        self.stop_with(true);
    }

    fn stop_with(&mut self, graceful: bool) {
        if let Some(mut r) = self.running.take() {
            drop(r.handle.stop(graceful));
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stop (if running) and start again with the same state directory, on the
    /// same ports, with any keys changed by [`Gateway::set`].
    pub fn restart(&mut self) {
        if let Some(r) = &self.running {
            let tls: Vec<toml::Value> = r.tls_addrs.iter().map(|a| a.to_string().into()).collect();
            let plain: Vec<toml::Value> =
                r.plain_addrs.iter().map(|a| a.to_string().into()).collect();
            toml_set(&mut self.table, "server.listen", toml::Value::Array(tls));
            toml_set(
                &mut self.table,
                "server.listen_plain",
                toml::Value::Array(plain),
            );
        }
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.boot() {
                Ok(()) => return,
                Err(BootError::Bind(e)) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(BootError::Bind(e)) | Err(BootError::Other(e)) => {
                    panic!("gateway does not restart: {e}")
                }
            }
        }
    }
}

/// Katello's push bodies, encoded as rest-client does (Rack nested keys,
/// keys and values percent-encoded, an empty list as a bare key meaning nil).
pub mod katello_form {
    fn enc(s: &str) -> String {
        form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }

    /// `key=value&...`; a `None` value is written as the bare key.
    pub fn encode(pairs: &[(String, Option<String>)]) -> String {
        pairs
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{}={}", enc(k), enc(v)),
                None => enc(k),
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// `PUT repository_list`: `repositories[][repository]=..&repositories[][auth_required]=..`.
    pub fn repository_list(repos: &[(&str, bool)]) -> String {
        if repos.is_empty() {
            return encode(&[("repositories".into(), None)]);
        }
        let mut pairs = Vec::new();
        for (name, auth) in repos {
            pairs.push((
                "repositories[][repository]".into(),
                Some((*name).to_owned()),
            ));
            pairs.push((
                "repositories[][auth_required]".into(),
                Some(auth.to_string()),
            ));
        }
        encode(&pairs)
    }

    /// `PUT update_hosts`: `hosts[][uuid]=..`.
    pub fn hosts(uuids: &[&str]) -> String {
        if uuids.is_empty() {
            return encode(&[("hosts".into(), None)]);
        }
        encode(
            &uuids
                .iter()
                .map(|u| ("hosts[][uuid]".to_owned(), Some((*u).to_owned())))
                .collect::<Vec<_>>(),
        )
    }

    /// `PUT host_repository_mapping` / `update_host_repositories` (`top` = `hosts`) and
    /// `PUT user_repository_mapping` (`top` = `users`): every repository is sent with
    /// `auth_required=true`, as Katello does; an empty list is the bare key.
    pub fn mapping(top: &str, entries: &[(&str, &[&str])]) -> String {
        if entries.is_empty() {
            return encode(&[(top.to_owned(), None)]);
        }
        let mut pairs = Vec::new();
        for (who, repos) in entries {
            if repos.is_empty() {
                pairs.push((format!("{top}[][{who}]"), None));
            }
            for r in *repos {
                pairs.push((
                    format!("{top}[][{who}][][repository]"),
                    Some((*r).to_owned()),
                ));
                pairs.push((
                    format!("{top}[][{who}][][auth_required]"),
                    Some("true".to_owned()),
                ));
            }
        }
        encode(&pairs)
    }
}

impl Gateway {
    /// `curl` against this gateway, trusting the test CA.
    pub fn curl(&self) -> Curl {
        Curl::new(&self.url()).cacert(&self.files.ca)
    }

    /// `curl` against the plain listener (for frontend tests: add
    /// `X-RHSM-SSL-Client-Cert` yourself), when one is configured.
    pub fn plain_curl(&self) -> Option<Curl> {
        self.plain_url().map(|u| Curl::new(&u))
    }

    /// `curl` presenting the management certificate (CN `katello.example.com`), as Katello does.
    pub fn katello_curl(&self) -> Curl {
        self.curl()
            .cert(&self.files.management_cert, &self.files.management_key)
    }

    /// `PUT /container_gateway/<route>` with a form body, as Katello; returns the answer whatever it is.
    pub fn push(&self, route: &str, form: &str) -> crate::client::CurlResponse {
        self.katello_curl()
            .body(
                "application/x-www-form-urlencoded",
                form.as_bytes().to_vec(),
            )
            .put(&format!("/container_gateway/{route}"))
    }

    fn push_ok(&self, route: &str, form: &str) {
        let r = self.push(route, form);
        assert_eq!(r.status, 200, "PUT {route} failed: {}", r.text());
    }

    /// Push the repository list: `(name, auth_required)`. Panics unless 200.
    pub fn push_repository_list(&self, repos: &[(&str, bool)]) {
        self.push_ok("repository_list", &katello_form::repository_list(repos));
    }

    /// Push the known hosts. Panics unless 200.
    pub fn push_hosts(&self, uuids: &[&str]) {
        self.push_ok("update_hosts", &katello_form::hosts(uuids));
    }

    /// Push every host's repositories (hosts must be known: see [`Gateway::push_hosts`]).
    pub fn push_host_mapping(&self, hosts: &[(&str, &[&str])]) {
        self.push_ok(
            "host_repository_mapping",
            &katello_form::mapping("hosts", hosts),
        );
    }

    /// Replace only these hosts' repositories.
    pub fn push_update_host_repositories(&self, hosts: &[(&str, &[&str])]) {
        self.push_ok(
            "update_host_repositories",
            &katello_form::mapping("hosts", hosts),
        );
    }

    /// Push every user's repositories.
    pub fn push_user_mapping(&self, users: &[(&str, &[&str])]) {
        self.push_ok(
            "user_repository_mapping",
            &katello_form::mapping("users", users),
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// Everything together
// ---------------------------------------------------------------------------

/// A PKI, a fake Pulp, a fake central and a gateway wired to them.
///
/// ```no_run
/// use gateway_tests::harness::TestEnv;
/// use gateway_tests::fake_pulp::{FakeRepo, Image};
///
/// let env = TestEnv::builder()
///     .pulp(|p| p.repo(FakeRepo::new("org/app").image("latest", Image::new())))
///     .central(|c| c.public(&["org/app"]))
///     .gateway(|g| g.cache_ttl(1))
///     .start();
/// let r = env.curl_as(&env.host_cert("uuid-1")).get("/v2/");
/// assert_eq!(r.status, 200);
/// ```
pub struct TestEnv {
    pub pki: Arc<Pki>,
    pub pulp: FakePulp,
    pub central: FakeCentral,
    pub gateway: Gateway,
}

/// Configures a [`TestEnv`].
pub struct TestEnvBuilder {
    pki: Arc<Pki>,
    pulp: FakePulpBuilder,
    central: FakeCentralBuilder,
    gateway: Box<dyn FnOnce(GatewayBuilder) -> GatewayBuilder>,
    upstream_tls: bool,
    repositories: Option<Vec<(String, bool)>>,
    host_mapping: Vec<(String, Vec<String>)>,
}

impl TestEnvBuilder {
    /// Configure the fake Pulp.
    pub fn pulp(mut self, f: impl FnOnce(FakePulpBuilder) -> FakePulpBuilder) -> Self {
        self.pulp = f(self.pulp);
        self
    }

    /// Configure the fake central.
    pub fn central(mut self, f: impl FnOnce(FakeCentralBuilder) -> FakeCentralBuilder) -> Self {
        self.central = f(self.central);
        self
    }

    /// Configure the gateway (applied after it is pointed at the fakes).
    pub fn gateway(mut self, f: impl FnOnce(GatewayBuilder) -> GatewayBuilder + 'static) -> Self {
        self.gateway = Box::new(f);
        self
    }

    /// Serve both fakes over HTTPS requiring the gateway's client certificate,
    /// as in production (default: plain HTTP).
    pub fn upstream_tls(mut self, on: bool) -> Self {
        self.upstream_tls = on;
        self
    }

    /// Push this repository list (`(name, auth_required)`) once the gateway is up.
    pub fn repositories(mut self, repos: &[(&str, bool)]) -> Self {
        self.repositories = Some(repos.iter().map(|(n, a)| ((*n).to_owned(), *a)).collect());
        self
    }

    /// Push this host (`update_hosts`) and its repositories (`host_repository_mapping`)
    /// once the gateway is up; may be called for several hosts.
    pub fn host_mapping(mut self, uuid: &str, repos: &[&str]) -> Self {
        self.host_mapping.push((
            uuid.to_owned(),
            repos.iter().map(|r| (*r).to_owned()).collect(),
        ));
        self
    }

    pub fn start(self) -> TestEnv {
        let (mut pulp, mut central) = (self.pulp, self.central);
        if self.upstream_tls {
            pulp = pulp.tls(upstream_tls(&self.pki));
            central = central.tls(upstream_tls(&self.pki));
        }
        let pulp = pulp.start();
        let central = central.start();
        let gateway = (self.gateway)(
            GatewayBuilder::new(self.pki.clone())
                .pulp(&pulp)
                .central(&central),
        )
        .start();
        if let Some(repos) = &self.repositories {
            let repos: Vec<(&str, bool)> = repos.iter().map(|(n, a)| (n.as_str(), *a)).collect();
            gateway.push_repository_list(&repos);
        }
        if !self.host_mapping.is_empty() {
            let uuids: Vec<&str> = self.host_mapping.iter().map(|(u, _)| u.as_str()).collect();
            gateway.push_hosts(&uuids);
            let repos: Vec<Vec<&str>> = self
                .host_mapping
                .iter()
                .map(|(_, r)| r.iter().map(String::as_str).collect())
                .collect();
            let mapping: Vec<(&str, &[&str])> = uuids
                .iter()
                .copied()
                .zip(repos.iter().map(Vec::as_slice))
                .collect();
            gateway.push_host_mapping(&mapping);
        }
        TestEnv {
            pki: self.pki,
            pulp,
            central,
            gateway,
        }
    }
}

impl TestEnv {
    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder {
            pki: Arc::new(Pki::new()),
            pulp: FakePulp::builder(),
            central: FakeCentral::builder(),
            gateway: Box::new(|g| g),
            upstream_tls: false,
            repositories: None,
            host_mapping: Vec::new(),
        }
    }

    /// A subscription certificate for `uuid` from the env's CA.
    pub fn host_cert(&self, uuid: &str) -> Issued {
        self.pki.host_cert(uuid)
    }

    /// The CA PEM clients trust (it signs the gateway's server certificate).
    pub fn ca_pem(&self) -> String {
        self.pki.ca_pem()
    }

    /// An awc client trusting the CA, no client certificate. Use inside an actix runtime.
    pub fn client(&self) -> TestClient {
        TestClient::anonymous(&self.gateway.url(), &self.ca_pem())
    }

    /// An awc client presenting `cert`.
    pub fn client_as(&self, cert: &Issued) -> TestClient {
        TestClient::with_cert(&self.gateway.url(), &self.ca_pem(), cert)
    }

    /// `curl` against the gateway's TLS listener, trusting the CA.
    pub fn curl(&self) -> Curl {
        self.gateway.curl()
    }

    /// `curl` presenting `cert` (written to the env's directory).
    pub fn curl_as(&self, cert: &Issued) -> Curl {
        self.curl().cert_pair(&self.write_cert(cert))
    }

    /// Write a certificate and key to files (named after a hash of the cert) and return their paths.
    pub fn write_cert(&self, cert: &Issued) -> (PathBuf, PathBuf) {
        use sha2::Digest;
        let stem = format!(
            "client-{}",
            &hex::encode(sha2::Sha256::digest(&cert.cert_der))[..16]
        );
        cert.write_to(&self.gateway.dir().join("pki"), &stem)
    }
}
