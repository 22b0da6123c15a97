//! Clients for tests: an awc HTTPS client, and the real `curl` binary.
//!
//! ```no_run
//! # async fn demo(env: &gateway_tests::harness::TestEnv) {
//! use gateway_tests::client::{TestClient, Curl};
//!
//! let host = env.pki.host_cert("0d9c2c52-1111-2222-3333-444455556666");
//! let client = TestClient::builder(&env.gateway.url()).ca_pem(&env.pki.ca_pem()).identity(&host).build();
//! let r = client.get("/v2/").send().await;                 // inside #[actix_web::test]
//! assert_eq!(r.status, 200);
//! let r = client.head("/v2/org/app/manifests/latest").header("Accept", "a").header("Accept", "b").send().await;
//! let digest = r.header("docker-content-digest");
//! let big = client.get("/v2/org/big/blobs/sha256:...").send_drain().await;  // streamed, not buffered
//! assert_eq!(big.len, 1 << 30);
//!
//! // the real curl (blocking; fine from any test: the gateway runs on its own threads)
//! let r = Curl::new(&env.gateway.url()).cacert(&env.gateway.files().ca).cert_pair(&env.write_cert(&host)).get("/v2/");
//! // the same, shorter: env.curl_as(&host).get("/v2/")
//! assert_eq!(r.status, 200);
//! # }
//! ```
//!
//! * [`TestClient`] (awc, rustls with the ring provider): trusts the given CA
//!   (PEM), optionally presents a client certificate ([`ClientBuilder::identity`]
//!   or [`ClientBuilder::identity_pem`]), speaks HTTP/1.1 unless
//!   [`ClientBuilder::http2`], never follows redirects unless told, sends no
//!   `Accept-Encoding` and never decompresses. Must be used inside an actix
//!   runtime (`#[actix_web::test]`). Plain `http://` URLs work too (no TLS).
//! * [`TestRequest`]: `.header(name, value)` (repeatable: each call is one header
//!   line), `.bearer(token)`, `.basic(user, password)`, then `.send()` (panics on a
//!   transport error), `.try_send()` (`Err(text)` instead), or `.send_drain()` /
//!   `.try_send_drain()` (reads the body as a stream: length + sha256, memory stays flat).
//! * [`TestResponse`]: `status`, `version`, `headers` (every header line,
//!   lower-case names, in order), `body`; `.header(name)`, `.header_all(name)`,
//!   `.text()`, `.json()`.
//! * [`Curl`]: builds a `curl` command line (`--cacert`, `--cert/--key`, `-H`,
//!   `--http1.1`/`--http2`, `-L`, `--max-time`) and returns a [`CurlResponse`] with the
//!   status, HTTP version, headers of the last response (and of every hop with `-L`) and body.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::pki::Issued;

// ---------------------------------------------------------------------------
// awc
// ---------------------------------------------------------------------------

/// Configures a [`TestClient`].
pub struct ClientBuilder {
    base: String,
    ca_pem: Vec<String>,
    identity: Option<(String, String)>,
    http2: bool,
    follow_redirects: bool,
    timeout: Duration,
    body_limit: usize,
    user_agent: String,
}

impl ClientBuilder {
    /// Trust this CA (PEM; may be called several times).
    pub fn ca_pem(mut self, pem: &str) -> Self {
        self.ca_pem.push(pem.to_owned());
        self
    }

    /// Present this certificate (its chain) and key in the TLS handshake.
    pub fn identity(self, cert: &Issued) -> Self {
        self.identity_pem(&cert.chain_pem(), &cert.key_pem)
    }

    /// Present a certificate chain and key given as PEM.
    pub fn identity_pem(mut self, chain_pem: &str, key_pem: &str) -> Self {
        self.identity = Some((chain_pem.to_owned(), key_pem.to_owned()));
        self
    }

    /// Offer h2 through ALPN (as flatpak's libcurl does); default HTTP/1.1 only (podman, skopeo).
    pub fn http2(mut self, on: bool) -> Self {
        self.http2 = on;
        self
    }

    /// Follow redirects (default: no, so tests see the 302).
    pub fn follow_redirects(mut self, on: bool) -> Self {
        self.follow_redirects = on;
        self
    }

    /// Whole-request timeout (default 30 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Largest body `send()` reads into memory (default 256 MiB).
    pub fn body_limit(mut self, limit: usize) -> Self {
        self.body_limit = limit;
        self
    }

    /// `User-Agent` (default `gateway-tests`; `Flatpak 1.16.1` makes it look like flatpak).
    pub fn user_agent(mut self, ua: &str) -> Self {
        self.user_agent = ua.to_owned();
        self
    }

    /// The rustls configuration this client uses.
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for pem in &self.ca_pem {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots
                    .add(cert.map_err(|e| format!("CA PEM: {e}"))?)
                    .map_err(|e| format!("CA: {e}"))?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((chain, key)) => {
                let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("client certificate PEM: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                    .map_err(|e| format!("client key PEM: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = if self.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(config)
    }

    /// Build the client (panics with the reason on bad PEM).
    pub fn build(self) -> TestClient {
        let config = self.rustls_config().expect("test client TLS configuration");
        let connector = awc::Connector::new()
            .rustls_0_23(Arc::new(config))
            .timeout(self.timeout);
        let mut builder = awc::Client::builder()
            .connector(connector)
            .timeout(self.timeout)
            .no_default_headers()
            .add_default_header((awc::http::header::USER_AGENT, self.user_agent.clone()));
        if !self.follow_redirects {
            builder = builder.disable_redirects();
        }
        // No `max_http_version`: awc would replace our TLS config; ALPN above decides.
        TestClient {
            client: builder.finish(),
            base: self.base.trim_end_matches('/').to_owned(),
            body_limit: self.body_limit,
        }
    }
}

/// An awc client bound to a base URL. Use inside an actix runtime.
pub struct TestClient {
    client: awc::Client,
    base: String,
    body_limit: usize,
}

impl TestClient {
    /// Start configuring a client for `base_url` (`https://127.0.0.1:port`).
    pub fn builder(base_url: &str) -> ClientBuilder {
        ClientBuilder {
            base: base_url.to_owned(),
            ca_pem: Vec::new(),
            identity: None,
            http2: false,
            follow_redirects: false,
            timeout: Duration::from_secs(30),
            body_limit: 256 * 1024 * 1024,
            user_agent: "gateway-tests".into(),
        }
    }

    /// Trust `ca_pem`, no client certificate.
    pub fn anonymous(base_url: &str, ca_pem: &str) -> TestClient {
        Self::builder(base_url).ca_pem(ca_pem).build()
    }

    /// Trust `ca_pem` and present `cert`.
    pub fn with_cert(base_url: &str, ca_pem: &str, cert: &Issued) -> TestClient {
        Self::builder(base_url)
            .ca_pem(ca_pem)
            .identity(cert)
            .build()
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The underlying awc client.
    pub fn awc(&self) -> &awc::Client {
        &self.client
    }

    /// A request; `path` is appended to the base URL unless it is absolute (`http…`).
    pub fn request(&self, method: &str, path: &str) -> TestRequest<'_> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        };
        TestRequest {
            client: self,
            method: method.to_owned(),
            url,
            headers: Vec::new(),
        }
    }

    pub fn get(&self, path: &str) -> TestRequest<'_> {
        self.request("GET", path)
    }

    pub fn head(&self, path: &str) -> TestRequest<'_> {
        self.request("HEAD", path)
    }
}

/// A request being built.
pub struct TestRequest<'a> {
    client: &'a TestClient,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
}

impl TestRequest<'_> {
    /// Add a header line (calling twice with one name sends two lines).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    pub fn basic(self, user: &str, password: &str) -> Self {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.header("Authorization", &format!("Basic {b64}"))
    }

    fn build(&self) -> Result<awc::ClientRequest, String> {
        let method =
            awc::http::Method::from_bytes(self.method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = self.client.client.request(method, &self.url);
        for (k, v) in &self.headers {
            req = req.append_header((k.as_str(), v.as_str()));
        }
        Ok(req)
    }

    /// Send and read the whole body; `Err` describes a transport failure.
    pub async fn try_send(self) -> Result<TestResponse, String> {
        let mut resp = self
            .build()?
            .send()
            .await
            .map_err(|e| format!("{} {}: {e}", self.method, self.url))?;
        let (status, version, headers) = head_of(&resp);
        let body = resp
            .body()
            .limit(self.client.body_limit)
            .await
            .map_err(|e| format!("{} {}: reading the body: {e}", self.method, self.url))?;
        Ok(TestResponse {
            status,
            version,
            headers,
            body,
        })
    }

    /// Send and read the whole body; panics on a transport failure.
    pub async fn send(self) -> TestResponse {
        match self.try_send().await {
            Ok(r) => r,
            Err(e) => panic!("request failed: {e}"),
        }
    }

    /// Send and consume the body as a stream, keeping only its length, sha256
    /// and first 64 KiB; `Err` if the transfer broke (the bytes read so far are in the message).
    pub async fn try_send_drain(self) -> Result<DrainedResponse, String> {
        let mut resp = self
            .build()?
            .send()
            .await
            .map_err(|e| format!("{} {}: {e}", self.method, self.url))?;
        let (status, version, headers) = head_of(&resp);
        let mut len = 0u64;
        let mut hash = Sha256::new();
        let mut head = Vec::new();
        while let Some(chunk) = resp.next().await {
            let chunk = chunk.map_err(|e| {
                format!(
                    "{} {}: body broke after {len} bytes: {e}",
                    self.method, self.url
                )
            })?;
            len += chunk.len() as u64;
            hash.update(&chunk);
            if head.len() < 64 * 1024 {
                head.extend_from_slice(&chunk[..chunk.len().min(64 * 1024 - head.len())]);
            }
        }
        Ok(DrainedResponse {
            status,
            version,
            headers,
            len,
            sha256: format!("sha256:{}", hex::encode(hash.finalize())),
            head,
        })
    }

    /// As [`TestRequest::try_send_drain`], panicking on failure.
    pub async fn send_drain(self) -> DrainedResponse {
        match self.try_send_drain().await {
            Ok(r) => r,
            Err(e) => panic!("request failed: {e}"),
        }
    }
}

fn head_of<S>(resp: &awc::ClientResponse<S>) -> (u16, String, Vec<(String, String)>) {
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    (
        resp.status().as_u16(),
        format!("{:?}", resp.version()),
        headers,
    )
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A response read whole.
#[derive(Clone, Debug)]
pub struct TestResponse {
    pub status: u16,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub version: String,
    /// Every header line, lower-case names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name).into_iter().next()
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        find(&self.headers, name)
    }

    /// The body as UTF-8 (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }
}

/// A response whose body was streamed and counted, not kept.
#[derive(Clone, Debug)]
pub struct DrainedResponse {
    pub status: u16,
    pub version: String,
    pub headers: Vec<(String, String)>,
    /// Body bytes received.
    pub len: u64,
    /// `sha256:<hex>` of the body.
    pub sha256: String,
    /// The first 64 KiB of the body.
    pub head: Vec<u8>,
}

impl DrainedResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name).into_iter().next()
    }
}

// ---------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------

/// HTTP version curl should use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CurlHttp {
    /// curl's default (h2 over TLS when offered).
    Default,
    Http11,
    Http2,
}

/// A `curl` command line against one base URL. Blocking. Builder methods
/// return a modified copy, so one `Curl` can be reused as a template.
#[derive(Clone, Debug)]
pub struct Curl {
    base: String,
    cacert: Option<PathBuf>,
    cert: Option<(PathBuf, PathBuf)>,
    headers: Vec<String>,
    http: CurlHttp,
    follow: bool,
    max_time: Duration,
    extra: Vec<String>,
    body: Option<Vec<u8>>,
}

/// What curl got.
#[derive(Clone, Debug)]
pub struct CurlResponse {
    /// Status of the last response.
    pub status: u16,
    /// `1.1`, `2` (curl's `%{http_version}`).
    pub http_version: String,
    /// Headers of the last response (lower-case names).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Every response in order (several with `-L`): status and headers.
    pub hops: Vec<(u16, Vec<(String, String)>)>,
    /// curl's stderr (with `-sS`: errors only).
    pub stderr: String,
}

impl CurlResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name).into_iter().next()
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        find(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }
}

/// curl failed (exit code non-zero): a transport error, not an HTTP status.
#[derive(Clone, Debug)]
pub struct CurlError {
    pub exit_code: Option<i32>,
    pub stderr: String,
    /// Whatever status line arrived before the failure (0 if none).
    pub status: u16,
}

impl std::fmt::Display for CurlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "curl exited with {:?}: {}",
            self.exit_code,
            self.stderr.trim()
        )
    }
}

impl Curl {
    pub fn new(base_url: &str) -> Curl {
        Curl {
            base: base_url.trim_end_matches('/').to_owned(),
            cacert: None,
            cert: None,
            headers: Vec::new(),
            http: CurlHttp::Default,
            follow: false,
            max_time: Duration::from_secs(30),
            extra: Vec::new(),
            body: None,
        }
    }

    /// Whether a `curl` binary can be run here.
    pub fn available() -> bool {
        Command::new("curl")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `--cacert`.
    pub fn cacert(&self, path: &Path) -> Curl {
        let mut c = self.clone();
        c.cacert = Some(path.to_owned());
        c
    }

    /// `--cert` and `--key`.
    pub fn cert(&self, cert: &Path, key: &Path) -> Curl {
        let mut c = self.clone();
        c.cert = Some((cert.to_owned(), key.to_owned()));
        c
    }

    /// `--cert` and `--key` from a `(cert, key)` pair of paths.
    pub fn cert_pair(&self, pair: &(PathBuf, PathBuf)) -> Curl {
        self.cert(&pair.0, &pair.1)
    }

    /// `-H "name: value"` (repeatable).
    pub fn header(&self, name: &str, value: &str) -> Curl {
        let mut c = self.clone();
        c.headers.push(format!("{name}: {value}"));
        c
    }

    /// `-u user:password` (Basic credentials).
    pub fn basic(&self, user: &str, password: &str) -> Curl {
        self.arg("-u").arg(&format!("{user}:{password}"))
    }

    pub fn http(&self, v: CurlHttp) -> Curl {
        let mut c = self.clone();
        c.http = v;
        c
    }

    /// `-L`.
    pub fn follow_redirects(&self) -> Curl {
        let mut c = self.clone();
        c.follow = true;
        c
    }

    /// `--max-time` (default 30 s).
    pub fn max_time(&self, t: Duration) -> Curl {
        let mut c = self.clone();
        c.max_time = t;
        c
    }

    /// Send this request body (`--data-binary`) with this `Content-Type`.
    pub fn body(&self, content_type: &str, body: impl Into<Vec<u8>>) -> Curl {
        let mut c = self.header("Content-Type", content_type);
        c.body = Some(body.into());
        c
    }

    pub fn put(&self, path: &str) -> CurlResponse {
        self.run("PUT", path)
    }

    /// Any other argument, passed as is.
    pub fn arg(&self, a: &str) -> Curl {
        let mut c = self.clone();
        c.extra.push(a.to_owned());
        c
    }

    pub fn get(&self, path: &str) -> CurlResponse {
        self.run("GET", path)
    }

    pub fn head(&self, path: &str) -> CurlResponse {
        self.run("HEAD", path)
    }

    /// Run and panic on a transport error.
    pub fn run(&self, method: &str, path: &str) -> CurlResponse {
        self.try_run(method, path)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Run; `Err` when curl itself failed (connection refused, reset, TLS error, timeout...).
    pub fn try_run(&self, method: &str, path: &str) -> Result<CurlResponse, CurlError> {
        let dir = tempfile::tempdir().map_err(|e| CurlError {
            exit_code: None,
            stderr: e.to_string(),
            status: 0,
        })?;
        let head_file = dir.path().join("headers");
        let body_file = dir.path().join("body");
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        };
        let mut cmd = Command::new("curl");
        // `-q` first: no ~/.curlrc; every target is on this machine, so no
        // proxy from the caller's environment either.
        cmd.arg("-q")
            .arg("--noproxy")
            .arg("*")
            .arg("-sS")
            .arg("--max-time")
            .arg(format!("{:.3}", self.max_time.as_secs_f64()))
            .arg("-D")
            .arg(&head_file)
            .arg("-o")
            .arg(&body_file)
            .arg("-w")
            .arg("%{http_code} %{http_version}");
        match method {
            "GET" => {}
            "HEAD" => {
                cmd.arg("-I");
            }
            m => {
                cmd.arg("-X").arg(m);
            }
        }
        if let Some(ca) = &self.cacert {
            cmd.arg("--cacert").arg(ca);
        }
        if let Some((c, k)) = &self.cert {
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
        for h in &self.headers {
            cmd.arg("-H").arg(h);
        }
        match self.http {
            CurlHttp::Default => {}
            CurlHttp::Http11 => {
                cmd.arg("--http1.1");
            }
            CurlHttp::Http2 => {
                cmd.arg("--http2");
            }
        }
        if self.follow {
            cmd.arg("-L");
        }
        if let Some(body) = &self.body {
            let body_in = dir.path().join("request-body");
            std::fs::write(&body_in, body).map_err(|e| CurlError {
                exit_code: None,
                stderr: e.to_string(),
                status: 0,
            })?;
            let mut arg = std::ffi::OsString::from("@");
            arg.push(&body_in);
            cmd.arg("--data-binary").arg(arg);
        }
        cmd.args(&self.extra).arg(&url);
        let out = cmd.output().map_err(|e| CurlError {
            exit_code: None,
            stderr: format!("cannot run curl: {e}"),
            status: 0,
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut w = stdout.split_whitespace();
        let status: u16 = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let http_version = w.next().unwrap_or_default().to_owned();
        if !out.status.success() {
            return Err(CurlError {
                exit_code: out.status.code(),
                stderr,
                status,
            });
        }
        let raw_head = std::fs::read(&head_file).unwrap_or_default();
        let hops = parse_header_dump(&String::from_utf8_lossy(&raw_head));
        let headers = hops.last().map(|(_, h)| h.clone()).unwrap_or_default();
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            std::fs::read(&body_file).unwrap_or_default()
        };
        Ok(CurlResponse {
            status,
            http_version,
            headers,
            body,
            hops,
            stderr,
        })
    }
}

/// Split curl's `-D` dump into responses.
fn parse_header_dump(dump: &str) -> Vec<(u16, Vec<(String, String)>)> {
    let mut hops = Vec::new();
    let mut current: Option<(u16, Vec<(String, String)>)> = None;
    for line in dump.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("HTTP/") {
            if let Some(h) = current.take() {
                hops.push(h);
            }
            let status = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            current = Some((status, Vec::new()));
        } else if let Some((name, value)) = line.split_once(':')
            && let Some((_, headers)) = current.as_mut()
        {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    if let Some(h) = current {
        hops.push(h);
    }
    hops
}
