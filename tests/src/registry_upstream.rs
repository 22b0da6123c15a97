//! A stand-in for Pulp made of real parts: Debian's `docker-registry` (CNCF
//! distribution) serves `/v2/...`, and a small index service builds Pulp's
//! Flatpak index from that registry's contents, both under one
//! `registry_path` prefix, as pulp_container serves them.
//!
//! ```no_run
//! use gateway_tests::registry_upstream::RegistryUpstream;
//!
//! let up = RegistryUpstream::builder()        // registry_path "/pulpcore_registry"
//!     .start()                                // docker-registry child + index/proxy service
//!     .expect("docker-registry is installed");
//! let push_to = up.registry_addr();           // push with skopeo (no auth, plain HTTP)
//! let digest = up.tag_digest("org/app", "latest"); // Docker-Content-Digest from the registry
//! // gateway: GatewayBuilder::new(pki).pulp_at(up.url(), up.registry_path())
//! let idx = up.requests_of(gateway_tests::registry_upstream::UpstreamRoute::Index);
//! ```
//!
//! # What it serves (under `registry_path`, e.g. `/pulpcore_registry`, or `""`)
//!
//! | route | answer |
//! |---|---|
//! | `GET\|HEAD /index/static`, `/index/dynamic` | built live from the registry on every request, as Pulp builds it from its database: every repository of `_catalog` (paginated), its tags, each tagged manifest (an OCI index or Docker manifest list is followed to its children, filtered by their `platform` against `os`/`architecture`), each image's config blob for `os`, `architecture` and `Labels` (order kept). Only images with labels, matching every `label:<l>:exists=1`, `label:<l>=<v>`, `os`, `architecture`, `tag` and `repository` filter, are listed; lists are flattened into `Images` (no `Lists` key, as Pulp). Query parsing is [`IndexQuery::parse`]: 400 `{"detail":"Missing label:org.flatpak.ref:exists=1."}` without that key, 400 for unknown keys. Compact JSON, raw UTF-8, `Content-Type: application/json`, **no** `ETag`, `Cache-Control` or `Last-Modified`. `Registry` is this service's own origin (`http://127.0.0.1:<port>`, no trailing slash), as Pulp writes its `CONTENT_ORIGIN` there: it serves no `/v2/` at the root, so a client that used it directly would fail. |
//! | anything under `/v2/` | reverse-proxied to docker-registry (GET and HEAD only: the gateway never writes), every request header line kept (Go clients send several `Accept:` lines) except hop-by-hop ones and `Host`; status, headers and body streamed back. |
//! | anything else | 404 |
//!
//! docker-registry runs as a child process with a generated configuration
//! (filesystem storage in a temporary directory, no auth, loopback, a free
//! port); it is killed on drop. Push content straight to it
//! ([`RegistryUpstream::registry_addr`], plain HTTP) with skopeo.
//!
//! Every request the service receives is recorded ([`UpstreamRequest`],
//! [`RegistryUpstream::requests`]). With [`RegistryUpstreamBuilder::tls`] the
//! service listens on HTTPS and (with `client_ca_pem` set) requires the
//! gateway's client certificate, as Pulp behind Apache does.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderName};
use actix_web::http::{Method, StatusCode};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::fake_pulp::{IndexQuery, sha256_digest};
use crate::harness::{
    Recorded, RequestLog, ServerThread, ServerTls, any_loopback_port, capture_connection, lock,
    record,
};

/// Which route a request to the upstream hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamRoute {
    /// `/index/static` or `/index/dynamic`.
    Index,
    /// `/v2/...`, proxied to docker-registry.
    Registry,
    Other,
}

/// A request the upstream received.
pub type UpstreamRequest = Recorded<UpstreamRoute>;

/// Every manifest media type, as the index service asks the registry for them.
const MANIFEST_ACCEPT: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// How long the proxy and the index service wait for docker-registry.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// docker-registry as a child process
// ---------------------------------------------------------------------------

/// Debian's `docker-registry` (CNCF distribution 2.x) on a free loopback port,
/// filesystem storage in a temporary directory, no auth. Killed on drop.
pub struct DockerRegistry {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl DockerRegistry {
    /// Start it (the binary is `docker-registry` on `PATH`) and wait until
    /// `GET /v2/` answers 200.
    pub fn start() -> io::Result<DockerRegistry> {
        let dir = tempfile::Builder::new()
            .prefix("cg-docker-registry-")
            .tempdir()?;
        let mut last = io::Error::other("docker-registry did not start");
        // A freshly released port can be taken by someone else in between: retry.
        for attempt in 0..3 {
            let port = TcpListener::bind(any_loopback_port())?.local_addr()?.port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let config = dir.path().join("config.yml");
            std::fs::write(&config, registry_config(&dir.path().join("data"), addr))?;
            let log = std::fs::File::create(dir.path().join(format!("registry-{attempt}.log")))?;
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                // distribution reads every `REGISTRY_*` variable as a configuration
                // override (a shell's `REGISTRY_AUTH_FILE` for podman makes it refuse
                // to start): it gets none of the caller's environment but `PATH`.
                .env_clear()
                .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?;
            match wait_until_up(&mut child, addr, Duration::from_secs(15)) {
                Ok(()) => return Ok(DockerRegistry { child, addr, dir }),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log =
                        std::fs::read_to_string(dir.path().join(format!("registry-{attempt}.log")))
                            .unwrap_or_default();
                    last = io::Error::other(format!("{e}; docker-registry log:\n{log}"));
                }
            }
        }
        Err(last)
    }

    /// `127.0.0.1:<port>` (for `docker://127.0.0.1:<port>/name:tag` references).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The registry's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its storage and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry_config(data: &Path, addr: SocketAddr) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n  headers:\n    X-Content-Type-Options: [nosniff]\n",
        data.display()
    )
}

fn wait_until_up(child: &mut Child, addr: SocketAddr, limit: Duration) -> io::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "docker-registry exited with {status}"
            )));
        }
        if http_request(addr, "GET", "/v2/", &[]).is_ok_and(|r| r.status == 200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "docker-registry on {addr} not up after {limit:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A response read by [`http_request`].
#[derive(Clone, Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Lower-case names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A blocking HTTP/1.1 request over plain TCP with `Connection: close` (for
/// docker-registry on loopback; bodies are read to EOF, so no chunked decoding).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<RawResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::other("no HTTP head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(RawResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

// ---------------------------------------------------------------------------
// The upstream
// ---------------------------------------------------------------------------

struct UpstreamState {
    registry_path: String,
    registry: String,
    /// This service's own origin, written into the index's `Registry`.
    origin: Mutex<String>,
    log: RequestLog<UpstreamRoute>,
    /// Config blobs by digest (content-addressed, so never stale).
    configs: Mutex<HashMap<String, Arc<ImageConfig>>>,
}

/// Configures a [`RegistryUpstream`].
pub struct RegistryUpstreamBuilder {
    registry_path: String,
    tls: Option<ServerTls>,
}

impl RegistryUpstreamBuilder {
    /// The prefix of both the index and `/v2/` (`pulp.registry_path`), default
    /// `/pulpcore_registry`; `""` or `"/"` serves them at the root.
    pub fn registry_path(mut self, path: &str) -> Self {
        let p = path.trim_matches('/');
        self.registry_path = if p.is_empty() {
            String::new()
        } else {
            format!("/{p}")
        };
        self
    }

    /// Serve HTTPS (requiring a client certificate when `client_ca_pem` is set).
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Start docker-registry and the service. `Err` when docker-registry is
    /// missing or does not come up.
    pub fn start(self) -> io::Result<RegistryUpstream> {
        let registry = DockerRegistry::start()?;
        let state = Arc::new(UpstreamState {
            registry_path: self.registry_path,
            registry: registry.url(),
            origin: Mutex::new(String::new()),
            log: RequestLog::new(20_000),
            configs: Mutex::new(HashMap::new()),
        });
        let tls = self
            .tls
            .map(|t| t.server_config().map_err(io::Error::other))
            .transpose()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let app_state = state.clone();
        let server = ServerThread::start("registry-upstream", any_loopback_port(), move |l| {
            let server = HttpServer::new(move || {
                // awc clients are per thread (not Send): one per worker.
                App::new()
                    .app_data(web::Data::from(app_state.clone()))
                    .app_data(web::Data::new(proxy_client()))
                    .default_service(web::to(handle))
            })
            .workers(2)
            .disable_signals()
            .shutdown_timeout(1)
            .on_connect(capture_connection);
            let server = match tls {
                Some(tls) => server.listen_rustls_0_23(l, tls)?,
                None => server.listen(l)?,
            };
            Ok(server.run())
        })?;
        let url = format!("{scheme}://{}", server.addr);
        *lock(&state.origin) = url.clone();
        Ok(RegistryUpstream {
            url,
            state,
            server: Some(server),
            registry,
        })
    }
}

fn proxy_client() -> awc::Client {
    awc::Client::builder()
        .disable_redirects()
        .timeout(REGISTRY_TIMEOUT)
        .finish()
}

/// docker-registry plus the index service in front of it; both stop on drop.
pub struct RegistryUpstream {
    url: String,
    state: Arc<UpstreamState>,
    server: Option<ServerThread>,
    registry: DockerRegistry,
}

impl RegistryUpstream {
    pub fn builder() -> RegistryUpstreamBuilder {
        RegistryUpstreamBuilder {
            registry_path: "/pulpcore_registry".into(),
            tls: None,
        }
    }

    /// `http(s)://127.0.0.1:<port>`: the value for `pulp.endpoint`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The prefix (`pulp.registry_path`).
    pub fn registry_path(&self) -> &str {
        &self.state.registry_path
    }

    /// `url + registry_path`.
    pub fn registry_url(&self) -> String {
        format!("{}{}", self.url, self.state.registry_path)
    }

    /// The docker-registry behind it (push there).
    pub fn registry(&self) -> &DockerRegistry {
        &self.registry
    }

    /// `127.0.0.1:<port>` of docker-registry.
    pub fn registry_addr(&self) -> SocketAddr {
        self.registry.addr()
    }

    /// The `Docker-Content-Digest` docker-registry gives for `name:reference`
    /// (any manifest type), or `None` when it has none.
    pub fn tag_digest(&self, name: &str, reference: &str) -> Option<String> {
        let accept = MANIFEST_ACCEPT.join(", ");
        let r = http_request(
            self.registry.addr(),
            "GET",
            &format!("/v2/{name}/manifests/{reference}"),
            &[("Accept", &accept)],
        )
        .ok()?;
        (r.status == 200).then(|| sha256_digest(&r.body))
    }

    /// The manifest bytes docker-registry serves for `name:reference`.
    pub fn manifest_bytes(&self, name: &str, reference: &str) -> Option<Vec<u8>> {
        let accept = MANIFEST_ACCEPT.join(", ");
        let r = http_request(
            self.registry.addr(),
            "GET",
            &format!("/v2/{name}/manifests/{reference}"),
            &[("Accept", &accept)],
        )
        .ok()?;
        (r.status == 200).then_some(r.body)
    }

    /// The index this service answers for a raw query (as the gateway would
    /// get it), with the status.
    pub fn index(&self, query: &str) -> io::Result<RawResponse> {
        let addr = self
            .server
            .as_ref()
            .map(|s| s.addr)
            .ok_or_else(|| io::Error::other("the registry upstream is stopped"))?;
        if self.url.starts_with("https") {
            return Err(io::Error::other(
                "index() reads plain HTTP only; use a TLS client",
            ));
        }
        http_request(
            addr,
            "GET",
            &format!("{}/index/static?{query}", self.state.registry_path),
            &[],
        )
    }

    /// Every request received, oldest first.
    pub fn requests(&self) -> Vec<UpstreamRequest> {
        self.state.log.all()
    }

    pub fn requests_of(&self, route: UpstreamRoute) -> Vec<UpstreamRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.kind == route)
            .collect()
    }

    /// Forget the recorded requests.
    pub fn reset(&self) {
        self.state.log.clear();
    }

    /// Directory of docker-registry's storage and logs.
    pub fn dir(&self) -> PathBuf {
        self.registry.dir().to_path_buf()
    }
}

impl Drop for RegistryUpstream {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
    }
}

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

fn classify<'a>(path: &'a str, prefix: &str) -> (UpstreamRoute, &'a str) {
    let Some(rest) = path.strip_prefix(prefix) else {
        return (UpstreamRoute::Other, path);
    };
    if rest == "/v2" || rest.starts_with("/v2/") {
        return (UpstreamRoute::Registry, rest);
    }
    match rest.trim_end_matches('/') {
        "/index/static" | "/index/dynamic" => (UpstreamRoute::Index, rest),
        _ => (UpstreamRoute::Other, rest),
    }
}

async fn handle(
    req: HttpRequest,
    state: web::Data<UpstreamState>,
    client: web::Data<awc::Client>,
) -> HttpResponse {
    let (route, rest) = classify(req.uri().path(), &state.registry_path);
    state.log.push(record(&req, route));
    let read = req.method() == Method::GET || req.method() == Method::HEAD;
    match route {
        UpstreamRoute::Other => HttpResponse::NotFound()
            .content_type("application/json")
            .body(r#"{"detail":"Not found."}"#),
        _ if !read => HttpResponse::MethodNotAllowed()
            .content_type("application/json")
            .body(format!(
                "{{\"detail\":\"Method \\\"{}\\\" not allowed.\"}}",
                req.method()
            )),
        UpstreamRoute::Index => index(&req, &state, &client).await,
        UpstreamRoute::Registry => {
            let target = match req.uri().query() {
                Some(q) => format!("{}{rest}?{q}", state.registry),
                None => format!("{}{rest}", state.registry),
            };
            proxy(&req, &client, &target).await
        }
    }
}

/// Headers that belong to one connection, never forwarded either way.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "http2-settings"
            | "host"
            | "content-length"
    )
}

async fn proxy(req: &HttpRequest, client: &awc::Client, target: &str) -> HttpResponse {
    let head = req.method() == Method::HEAD;
    let mut out = client.request(req.method().clone(), target);
    for (name, value) in req.headers() {
        // HeaderMap yields each line of a repeated header: every Accept line is kept.
        if !hop_by_hop(name) {
            out = out.append_header((name.clone(), value.clone()));
        }
    }
    let upstream = match out.send().await {
        Ok(r) => r,
        Err(e) => {
            return HttpResponse::BadGateway()
                .content_type("text/plain")
                .body(format!("docker-registry: {e}"));
        }
    };
    let mut resp = HttpResponse::build(upstream.status());
    for (name, value) in upstream.headers() {
        if !hop_by_hop(name) {
            resp.append_header((name.clone(), value.clone()));
        }
    }
    let length = upstream
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = upstream.map(|chunk| chunk.map_err(actix_web::Error::from));
    match (head, length) {
        (true, Some(len)) => resp.body(SizedStream::new(
            len,
            futures_util::stream::empty::<Result<Bytes, actix_web::Error>>(),
        )),
        (true, None) => resp.finish(),
        (false, Some(len)) => resp.body(SizedStream::new(len, body)),
        (false, None) => resp.streaming(body),
    }
}

// ---------------------------------------------------------------------------
// The index, built from the registry
// ---------------------------------------------------------------------------

/// Labels in the order of the image config.
#[derive(Clone, Debug, Default)]
struct OrderedLabels(Vec<(String, String)>);

impl OrderedLabels {
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

impl<'de> Deserialize<'de> for OrderedLabels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedLabels;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of labels or null")
            }
            fn visit_unit<E>(self) -> Result<OrderedLabels, E> {
                Ok(OrderedLabels::default())
            }
            fn visit_none<E>(self) -> Result<OrderedLabels, E> {
                Ok(OrderedLabels::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<OrderedLabels, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Option<String>>()? {
                    out.push((k, v.unwrap_or_default()));
                }
                Ok(OrderedLabels(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for OrderedLabels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Debug, Default, Deserialize)]
struct ImageConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<InnerConfig>,
}

#[derive(Debug, Default, Deserialize)]
struct InnerConfig {
    #[serde(rename = "Labels", default)]
    labels: Option<OrderedLabels>,
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Debug, Deserialize)]
struct AnyManifest {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
struct Catalog {
    #[serde(default)]
    repositories: Vec<String>,
}

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// One image as the index lists it.
#[derive(Serialize)]
struct IndexImage {
    #[serde(rename = "Tags")]
    tags: Vec<String>,
    #[serde(rename = "Digest")]
    digest: String,
    #[serde(rename = "MediaType")]
    media_type: String,
    #[serde(rename = "OS")]
    os: String,
    #[serde(rename = "Architecture")]
    architecture: String,
    #[serde(rename = "Labels")]
    labels: OrderedLabels,
}

#[derive(Serialize)]
struct IndexResult {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Images")]
    images: Vec<IndexImage>,
}

#[derive(Serialize)]
struct IndexBody<'a> {
    #[serde(rename = "Registry")]
    registry: &'a str,
    #[serde(rename = "Results")]
    results: Vec<IndexResult>,
}

async fn index(req: &HttpRequest, state: &UpstreamState, client: &awc::Client) -> HttpResponse {
    let q = match IndexQuery::parse(req.query_string()) {
        Ok(q) => q,
        Err(detail) => {
            return HttpResponse::BadRequest()
                .content_type("application/json")
                .body(serde_json::json!({ "detail": detail }).to_string());
        }
    };
    let reader = Reader {
        client,
        base: &state.registry,
        configs: &state.configs,
    };
    match build_index(&reader, &q).await {
        Ok(results) => {
            let origin = lock(&state.origin).clone();
            let body = serde_json::to_vec(&IndexBody {
                registry: &origin,
                results,
            })
            .unwrap_or_default();
            HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, "application/json"))
                .body(body)
        }
        Err(e) => HttpResponse::InternalServerError()
            .content_type("text/plain")
            .body(format!("index: {e}")),
    }
}

struct Reader<'a> {
    client: &'a awc::Client,
    base: &'a str,
    configs: &'a Mutex<HashMap<String, Arc<ImageConfig>>>,
}

impl Reader<'_> {
    async fn get(
        &self,
        path: &str,
        accept: &[&str],
    ) -> Result<(Vec<(String, String)>, Bytes), String> {
        let mut req = self.client.get(format!("{}{path}", self.base));
        for a in accept {
            req = req.append_header((header::ACCEPT, *a));
        }
        let mut resp = req.send().await.map_err(|e| format!("GET {path}: {e}"))?;
        if resp.status() != StatusCode::OK {
            return Err(format!("GET {path}: {}", resp.status()));
        }
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
        let body = resp
            .body()
            .limit(64 * 1024 * 1024)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        Ok((headers, body))
    }

    /// Follow `Link: <...>; rel="next"` pages of `_catalog` or `tags/list`.
    async fn pages<T, F>(&self, first: String, mut take: F) -> Result<(), String>
    where
        T: for<'de> Deserialize<'de>,
        F: FnMut(T),
    {
        let mut next = Some(first);
        let mut guard = 0;
        while let Some(path) = next.take() {
            guard += 1;
            if guard > 1000 {
                return Err("too many pages".into());
            }
            let (headers, body) = self.get(&path, &[]).await?;
            take(serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))?);
            next = headers
                .iter()
                .find(|(k, _)| k == "link")
                .and_then(|(_, v)| {
                    let start = v.find('<')? + 1;
                    let end = v[start..].find('>')? + start;
                    Some(v[start..end].to_owned())
                });
        }
        Ok(())
    }

    async fn catalog(&self) -> Result<Vec<String>, String> {
        let mut names = Vec::new();
        self.pages("/v2/_catalog?n=1000".into(), |c: Catalog| {
            names.extend(c.repositories)
        })
        .await?;
        Ok(names)
    }

    async fn tags(&self, name: &str) -> Result<Vec<String>, String> {
        let mut tags = Vec::new();
        self.pages(format!("/v2/{name}/tags/list?n=1000"), |t: TagList| {
            tags.extend(t.tags.unwrap_or_default())
        })
        .await?;
        Ok(tags)
    }

    /// The manifest's media type (body, else `Content-Type`), digest and parsed body.
    async fn manifest(
        &self,
        name: &str,
        reference: &str,
    ) -> Result<(String, String, AnyManifest), String> {
        let (headers, body) = self
            .get(
                &format!("/v2/{name}/manifests/{reference}"),
                &MANIFEST_ACCEPT,
            )
            .await?;
        let parsed: AnyManifest = serde_json::from_slice(&body)
            .map_err(|e| format!("manifest {name}:{reference}: {e}"))?;
        let content_type = headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let media_type = parsed.media_type.clone().unwrap_or(content_type);
        Ok((media_type, sha256_digest(&body), parsed))
    }

    async fn config(&self, name: &str, digest: &str) -> Result<Arc<ImageConfig>, String> {
        if let Some(c) = lock(self.configs).get(digest) {
            return Ok(c.clone());
        }
        let (_, body) = self.get(&format!("/v2/{name}/blobs/{digest}"), &[]).await?;
        let config: ImageConfig =
            serde_json::from_slice(&body).map_err(|e| format!("config {digest}: {e}"))?;
        let config = Arc::new(config);
        lock(self.configs).insert(digest.to_owned(), config.clone());
        Ok(config)
    }
}

fn is_list(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}

struct Found {
    digest: String,
    media_type: String,
    tags: BTreeSet<String>,
    config_digest: String,
}

async fn build_index(reader: &Reader<'_>, q: &IndexQuery) -> Result<Vec<IndexResult>, String> {
    let mut results = Vec::new();
    for name in reader.catalog().await? {
        if q.repositories.as_ref().is_some_and(|r| !r.contains(&name)) {
            continue;
        }
        // Image manifests reachable from the requested tags, in first-seen order.
        let mut found: Vec<Found> = Vec::new();
        for tag in reader.tags(&name).await? {
            if q.tags.as_ref().is_some_and(|t| !t.contains(&tag)) {
                continue;
            }
            let (media_type, digest, manifest) = reader.manifest(&name, &tag).await?;
            let mut images = Vec::new();
            if is_list(&media_type) || manifest.manifests.is_some() {
                for child in manifest.manifests.unwrap_or_default() {
                    if let Some(p) = &child.platform
                        && (q.oss.as_ref().is_some_and(|o| !o.contains(&p.os))
                            || q.architectures
                                .as_ref()
                                .is_some_and(|a| !a.contains(&p.architecture)))
                    {
                        continue;
                    }
                    let (child_type, child_digest, child_manifest) =
                        reader.manifest(&name, &child.digest).await?;
                    if child_digest != child.digest {
                        return Err(format!("{name}@{}: digest mismatch", child.digest));
                    }
                    let child_type = child.media_type.unwrap_or(child_type);
                    if let Some(config) = child_manifest.config {
                        images.push((child_digest, child_type, config.digest));
                    }
                }
            } else if let Some(config) = manifest.config {
                images.push((digest, media_type, config.digest));
            }
            for (digest, media_type, config_digest) in images {
                match found.iter_mut().find(|f| f.digest == digest) {
                    Some(f) => {
                        f.tags.insert(tag.clone());
                    }
                    None => found.push(Found {
                        digest,
                        media_type,
                        tags: BTreeSet::from([tag.clone()]),
                        config_digest,
                    }),
                }
            }
        }
        let mut images = Vec::new();
        for f in found {
            let config = reader.config(&name, &f.config_digest).await?;
            let labels = config
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default();
            if labels.0.is_empty()
                || q.label_exists.iter().any(|l| labels.get(l).is_none())
                || q.oss.as_ref().is_some_and(|o| !o.contains(&config.os))
                || q.architectures
                    .as_ref()
                    .is_some_and(|a| !a.contains(&config.architecture))
                || q.label_values
                    .iter()
                    .any(|(l, vs)| !labels.get(l).is_some_and(|v| vs.iter().any(|x| x == v)))
            {
                continue;
            }
            images.push(IndexImage {
                tags: f.tags.into_iter().collect(),
                digest: f.digest,
                media_type: f.media_type,
                os: config.os.clone(),
                architecture: config.architecture.clone(),
                labels,
            });
        }
        if !images.is_empty() {
            results.push(IndexResult { name, images });
        }
    }
    Ok(results)
}
