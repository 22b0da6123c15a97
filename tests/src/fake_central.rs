//! A fake central Katello server: `GET /v2/_catalog` and `GET /v2/token` as
//! Katello's `RegistryProxiesController` answers them.
//!
//! ```no_run
//! use gateway_tests::fake_central::{FakeCentral, IssuedAt};
//! use gateway_tests::harness::Fault;
//! use std::time::Duration;
//!
//! let central = FakeCentral::builder()
//!     .public(&["org/public"])                               // unauthenticated-pull repos
//!     .host("0d9c2c52-...", &["org/public", "org/private"])  // HostUUID -> repos
//!     .user("alice", "secret", &["org/private"])             // Basic creds -> repos (+ public)
//!     .delay(Duration::from_millis(200))                     // every answer waits (coalescing window)
//!     .start();                                              // plain HTTP on 127.0.0.1:<random>
//! // ... 50 concurrent first requests through the gateway ...
//! assert_eq!(central.catalog_calls_for_host("0d9c2c52-..."), 1);
//! central.fail(Fault::Status(500));        // runtime faults; central.clear_faults()
//! let mut central = central;
//! central.stop();                          // down: connection refused
//! central.restart();                       // up again on the SAME port, state kept
//! ```
//!
//! # Wire behaviour (paths under `registry_path`, default `/v2/`)
//!
//! * `GET /v2/_catalog` (`n`/`last` ignored, like Katello), `Content-Type: application/json; charset=utf-8`:
//!   * `Authorization: Basic` with good credentials: `{"repositories":[public + the user's]}`;
//!     bad credentials: 401 `{"error":{"message":"Unable to authenticate user <login>"}}`.
//!   * `Authorization: Bearer <t>`: a token this fake issued (and not expired/revoked) or one
//!     registered with [`FakeCentralBuilder::personal_token`]: the owner's list; otherwise 401.
//!   * no `Authorization`, `HostUUID: <uuid>`: the host's configured list (exactly, in
//!     configured order); an unknown host gets only the public repos, **200** (Katello's "hack").
//!   * neither: the public repos.
//! * `GET /v2/token?account=&scope=&service=`:
//!   * `scope` and `account` both blank, or `scope=repository:<public repo>:pull`:
//!     `{"token":"unauthenticated","expires_in":180,"issued_at":"<rfc3339>"}`;
//!   * good Basic credentials: `{"token":"<t>","expires_in":<n>,"issued_at":"<rfc3339>"}`; like
//!     Katello, a user keeps one token string while it is valid (see
//!     [`FakeCentralBuilder::fresh_tokens`]); `expires_in` and `issued_at` are configurable
//!     ([`IssuedAt::Omit`] leaves the field out so the `Date` header must be used);
//!   * otherwise 401 (body as above).
//! * every answer has `Docker-Distribution-API-Version: registry/2.0`; other paths: 404 JSON.
//!
//! # Observing
//!
//! Counted on arrival (before delay/stall), concurrency-safe: [`FakeCentral::total`],
//! [`FakeCentral::catalog_calls`], [`FakeCentral::catalog_calls_for_host`],
//! [`FakeCentral::catalog_calls_for_user`] (Basic or a token it maps to),
//! [`FakeCentral::catalog_calls_for_authorization`] (raw header value),
//! [`FakeCentral::token_calls`], and the request log [`FakeCentral::requests`]
//! ([`CentralRequest`]: method, raw path/query, every header). [`FakeCentral::reset`] zeroes them.
//!
//! # Knobs at runtime
//!
//! [`FakeCentral::set_delay`], [`FakeCentral::fail`] / [`FakeCentral::fail_route`] /
//! [`FakeCentral::fail_times`] / [`FakeCentral::clear_faults`], [`FakeCentral::set_host`],
//! [`FakeCentral::remove_host`], [`FakeCentral::set_user`], [`FakeCentral::set_public`],
//! [`FakeCentral::set_expires_in`], [`FakeCentral::set_issued_at`],
//! [`FakeCentral::revoke_token`], [`FakeCentral::stop`] / [`FakeCentral::restart`].

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{App, HttpRequest, HttpResponse, HttpResponseBuilder, HttpServer, web};
use base64::Engine;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::harness::{
    Fault, Faults, HUGE_NAME_PREFIX, Recorded, RequestLog, ServerThread, ServerTls,
    any_loopback_port, capture_connection, dropping_response, huge_response, lock, paced_response,
    record, respond_response, stall_body_response, truncate_response,
};

/// Which route a central request hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CentralRoute {
    Catalog,
    Token,
    Other,
}

/// A request the fake central received.
pub type CentralRequest = Recorded<CentralRoute>;

/// What `issued_at` a token answer carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssuedAt {
    /// The current time, RFC 3339 (default).
    Now,
    /// This long ago (e.g. to hand out a token that is already expired).
    Ago(Duration),
    /// No `issued_at` field: clients must use the `Date` header.
    Omit,
    /// This exact JSON string value (may be unparsable on purpose).
    Raw(String),
}

#[derive(Clone, Debug)]
struct User {
    password: String,
    repos: Vec<String>,
}

#[derive(Clone, Debug)]
struct Token {
    login: String,
    expires: Option<SystemTime>,
}

struct CentralState {
    registry_path: String,
    public: Mutex<Vec<String>>,
    hosts: Mutex<HashMap<String, Vec<String>>>,
    users: Mutex<HashMap<String, User>>,
    tokens: Mutex<HashMap<String, Token>>,
    expires_in: AtomicU64,
    issued_at: Mutex<IssuedAt>,
    fresh_tokens: bool,
    delay_ms: AtomicU64,
    total: AtomicU64,
    catalog: AtomicU64,
    token_calls: AtomicU64,
    per_host: Mutex<HashMap<String, u64>>,
    per_user: Mutex<HashMap<String, u64>>,
    per_authorization: Mutex<HashMap<String, u64>>,
    log: RequestLog<CentralRoute>,
    faults: Faults<CentralRoute>,
    minted: AtomicU64,
}

/// Configures and starts a [`FakeCentral`].
pub struct FakeCentralBuilder {
    registry_path: String,
    public: Vec<String>,
    hosts: HashMap<String, Vec<String>>,
    users: HashMap<String, User>,
    tokens: HashMap<String, Token>,
    expires_in: u64,
    issued_at: IssuedAt,
    fresh_tokens: bool,
    delay: Duration,
    tls: Option<ServerTls>,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

impl FakeCentralBuilder {
    /// Path prefix of Katello's registry API (`central.registry_path`), default `/v2/`.
    pub fn registry_path(mut self, path: &str) -> Self {
        let p = path.trim_matches('/');
        self.registry_path = if p.is_empty() {
            "/".into()
        } else {
            format!("/{p}/")
        };
        self
    }

    /// Repositories with unauthenticated pull (every identity sees them).
    pub fn public(mut self, repos: &[&str]) -> Self {
        self.public = strings(repos);
        self
    }

    /// A registered host and its exact `_catalog` answer.
    pub fn host(mut self, uuid: &str, repos: &[&str]) -> Self {
        self.hosts.insert(uuid.to_owned(), strings(repos));
        self
    }

    /// A user with Basic credentials; `_catalog` answers the public repos plus these.
    pub fn user(mut self, login: &str, password: &str, repos: &[&str]) -> Self {
        self.users.insert(
            login.to_owned(),
            User {
                password: password.to_owned(),
                repos: strings(repos),
            },
        );
        self
    }

    /// A personal access token of `login` (never expires) accepted as `Bearer`.
    pub fn personal_token(mut self, token: &str, login: &str) -> Self {
        self.tokens.insert(
            token.to_owned(),
            Token {
                login: login.to_owned(),
                expires: None,
            },
        );
        self
    }

    /// `expires_in` of issued tokens (default 3600).
    pub fn expires_in(mut self, secs: u64) -> Self {
        self.expires_in = secs;
        self
    }

    pub fn issued_at(mut self, issued_at: IssuedAt) -> Self {
        self.issued_at = issued_at;
        self
    }

    /// Mint a new token string at every `/v2/token` (default: reuse the user's valid one, like Katello).
    pub fn fresh_tokens(mut self, on: bool) -> Self {
        self.fresh_tokens = on;
        self
    }

    /// Wait this long before every answer.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn start(self) -> FakeCentral {
        self.try_start().expect("fake central starts")
    }

    pub fn try_start(self) -> io::Result<FakeCentral> {
        let state = Arc::new(CentralState {
            registry_path: self.registry_path,
            public: Mutex::new(self.public),
            hosts: Mutex::new(self.hosts),
            users: Mutex::new(self.users),
            tokens: Mutex::new(self.tokens),
            expires_in: AtomicU64::new(self.expires_in),
            issued_at: Mutex::new(self.issued_at),
            fresh_tokens: self.fresh_tokens,
            delay_ms: AtomicU64::new(self.delay.as_millis() as u64),
            total: AtomicU64::new(0),
            catalog: AtomicU64::new(0),
            token_calls: AtomicU64::new(0),
            per_host: Mutex::new(HashMap::new()),
            per_user: Mutex::new(HashMap::new()),
            per_authorization: Mutex::new(HashMap::new()),
            log: RequestLog::new(10_000),
            faults: Faults::new(),
            minted: AtomicU64::new(0),
        });
        let tls = self
            .tls
            .map(|t| t.server_config().map_err(io::Error::other))
            .transpose()?;
        let server = serve(&state, tls.clone(), any_loopback_port())?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", server.addr);
        Ok(FakeCentral {
            addr: server.addr,
            state,
            tls,
            server: Some(server),
            url,
        })
    }
}

fn serve(
    state: &Arc<CentralState>,
    tls: Option<rustls::ServerConfig>,
    addr: SocketAddr,
) -> io::Result<ServerThread> {
    let app_state = state.clone();
    ServerThread::start("fake-central", addr, move |listener| {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::from(app_state.clone()))
                .default_service(web::to(handle))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(1)
        .on_connect(capture_connection);
        let server = match tls {
            Some(tls) => server.listen_rustls_0_23(listener, tls)?,
            None => server.listen(listener)?,
        };
        Ok(server.run())
    })
}

/// A running fake central; stops on drop.
pub struct FakeCentral {
    addr: SocketAddr,
    state: Arc<CentralState>,
    tls: Option<rustls::ServerConfig>,
    server: Option<ServerThread>,
    url: String,
}

impl FakeCentral {
    pub fn builder() -> FakeCentralBuilder {
        FakeCentralBuilder {
            registry_path: "/v2/".into(),
            public: Vec::new(),
            hosts: HashMap::new(),
            users: HashMap::new(),
            tokens: HashMap::new(),
            expires_in: 3600,
            issued_at: IssuedAt::Now,
            fresh_tokens: false,
            delay: Duration::ZERO,
            tls: None,
        }
    }

    /// `http(s)://127.0.0.1:<port>` (the value for `central.url`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop answering: connections are refused (and open ones cut) until [`FakeCentral::restart`].
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
    }

    /// Serve again on the same port, with the same state and counters. Keep-alive
    /// connections from before the stop stay dead: a client (or the gateway) that
    /// reuses one from its pool gets a reset, as with a real central restart.
    pub fn restart(&mut self) {
        self.stop();
        let server = serve(&self.state, self.tls.clone(), self.addr)
            .expect("fake central restarts on its port");
        self.server = Some(server);
    }

    pub fn is_up(&self) -> bool {
        self.server.is_some()
    }

    // -- counters -----------------------------------------------------------

    pub fn total(&self) -> u64 {
        self.state.total.load(Ordering::SeqCst)
    }

    /// `_catalog` calls, any caller.
    pub fn catalog_calls(&self) -> u64 {
        self.state.catalog.load(Ordering::SeqCst)
    }

    /// `_catalog` calls that carried `HostUUID: uuid` (and no Authorization).
    pub fn catalog_calls_for_host(&self, uuid: &str) -> u64 {
        lock(&self.state.per_host).get(uuid).copied().unwrap_or(0)
    }

    /// `_catalog` calls authenticated as `login` (Basic, or a Bearer token of theirs).
    pub fn catalog_calls_for_user(&self, login: &str) -> u64 {
        lock(&self.state.per_user).get(login).copied().unwrap_or(0)
    }

    /// `_catalog` calls with exactly this `Authorization` value (e.g. `Bearer abc`).
    pub fn catalog_calls_for_authorization(&self, value: &str) -> u64 {
        lock(&self.state.per_authorization)
            .get(value)
            .copied()
            .unwrap_or(0)
    }

    /// `/v2/token` calls.
    pub fn token_calls(&self) -> u64 {
        self.state.token_calls.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<CentralRequest> {
        self.state.log.all()
    }

    pub fn requests_of(&self, route: CentralRoute) -> Vec<CentralRequest> {
        self.state
            .log
            .all()
            .into_iter()
            .filter(|r| r.kind == route)
            .collect()
    }

    /// Zero the counters and clear the log (issued tokens stay valid).
    pub fn reset(&self) {
        let s = &self.state;
        for c in [&s.total, &s.catalog, &s.token_calls] {
            c.store(0, Ordering::SeqCst);
        }
        lock(&s.per_host).clear();
        lock(&s.per_user).clear();
        lock(&s.per_authorization).clear();
        s.log.clear();
    }

    // -- knobs --------------------------------------------------------------

    pub fn set_delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every request gets `fault` until cleared.
    pub fn fail(&self, fault: Fault) {
        self.state.faults.add(None, fault, None);
    }

    pub fn fail_route(&self, route: CentralRoute, fault: Fault) {
        self.state.faults.add(Some(route), fault, None);
    }

    /// The next `times` requests (of `route`, or any) get `fault`.
    pub fn fail_times(&self, route: Option<CentralRoute>, fault: Fault, times: u32) {
        self.state.faults.add(route, fault, Some(times));
    }

    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }

    pub fn set_host(&self, uuid: &str, repos: &[&str]) {
        lock(&self.state.hosts).insert(uuid.to_owned(), strings(repos));
    }

    pub fn remove_host(&self, uuid: &str) {
        lock(&self.state.hosts).remove(uuid);
    }

    pub fn set_user(&self, login: &str, password: &str, repos: &[&str]) {
        lock(&self.state.users).insert(
            login.to_owned(),
            User {
                password: password.to_owned(),
                repos: strings(repos),
            },
        );
    }

    pub fn set_public(&self, repos: &[&str]) {
        *lock(&self.state.public) = strings(repos);
    }

    pub fn set_expires_in(&self, secs: u64) {
        self.state.expires_in.store(secs, Ordering::SeqCst);
    }

    pub fn set_issued_at(&self, issued_at: IssuedAt) {
        *lock(&self.state.issued_at) = issued_at;
    }

    /// Make a token invalid (`Bearer` gets 401 from now on).
    pub fn revoke_token(&self, token: &str) {
        lock(&self.state.tokens).remove(token);
    }

    /// Tokens currently valid, with their owner.
    pub fn tokens(&self) -> Vec<(String, String)> {
        lock(&self.state.tokens)
            .iter()
            .map(|(t, v)| (t.clone(), v.login.clone()))
            .collect()
    }
}

impl Drop for FakeCentral {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

fn rails(status: StatusCode) -> HttpResponseBuilder {
    let mut b = HttpResponse::build(status);
    b.insert_header(("Docker-Distribution-API-Version", "registry/2.0"));
    b.insert_header((header::CONTENT_TYPE, "application/json; charset=utf-8"));
    b.insert_header((
        "X-Request-Id",
        format!("{:x}", Sha256::digest(format!("{:?}", SystemTime::now()))),
    ));
    b
}

fn unauthorized(login: &str) -> HttpResponse {
    let body =
        serde_json::json!({"error": {"message": format!("Unable to authenticate user {login}")}});
    rails(StatusCode::UNAUTHORIZED).body(body.to_string())
}

enum Auth {
    None,
    Basic { login: String, password: String },
    Bearer(String),
    Malformed,
}

fn parse_auth(req: &HttpRequest) -> Auth {
    let Some(v) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Auth::None;
    };
    if let Some(b64) = v.strip_prefix("Basic ") {
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return Auth::Malformed;
        };
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (login, password) = raw.split_once(':').unwrap_or((raw.as_str(), ""));
        return Auth::Basic {
            login: login.to_owned(),
            password: password.to_owned(),
        };
    }
    if let Some(t) = v.strip_prefix("Bearer ") {
        return Auth::Bearer(t.trim().to_owned());
    }
    Auth::Malformed
}

fn bump(map: &Mutex<HashMap<String, u64>>, key: &str) {
    *lock(map).entry(key.to_owned()).or_insert(0) += 1;
}

impl CentralState {
    fn check_basic(&self, login: &str, password: &str) -> Option<User> {
        lock(&self.users)
            .get(login)
            .filter(|u| u.password == password)
            .cloned()
    }

    fn token_owner(&self, token: &str) -> Option<String> {
        let tokens = lock(&self.tokens);
        let t = tokens.get(token)?;
        t.expires
            .is_none_or(|e| e > SystemTime::now())
            .then(|| t.login.clone())
    }

    fn user_view(&self, login: &str) -> Vec<String> {
        let mut repos = lock(&self.public).clone();
        if let Some(u) = lock(&self.users).get(login) {
            for r in &u.repos {
                if !repos.contains(r) {
                    repos.push(r.clone());
                }
            }
        }
        repos
    }
}

async fn handle(req: HttpRequest, state: web::Data<CentralState>) -> HttpResponse {
    let path = req.uri().path();
    let route = match path.strip_prefix(state.registry_path.as_str()) {
        Some("_catalog") => CentralRoute::Catalog,
        Some("token") => CentralRoute::Token,
        _ => CentralRoute::Other,
    };
    state.total.fetch_add(1, Ordering::SeqCst);
    state.log.push(record(&req, route));
    match route {
        CentralRoute::Catalog => {
            state.catalog.fetch_add(1, Ordering::SeqCst);
            match parse_auth(&req) {
                Auth::Basic { login, .. } => bump(&state.per_user, &login),
                Auth::Bearer(t) => {
                    if let Some(login) = state.token_owner(&t) {
                        bump(&state.per_user, &login);
                    }
                }
                Auth::None => {
                    if let Some(uuid) = req.headers().get("hostuuid").and_then(|v| v.to_str().ok())
                    {
                        bump(&state.per_host, uuid);
                    }
                }
                Auth::Malformed => {}
            }
            if let Some(v) = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
            {
                bump(&state.per_authorization, v);
            }
        }
        CentralRoute::Token => {
            state.token_calls.fetch_add(1, Ordering::SeqCst);
        }
        CentralRoute::Other => {}
    }

    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        actix_web::rt::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut truncate = false;
    let mut stall_body = None;
    let mut paced = None;
    match state.faults.take(route) {
        None => {}
        Some(Fault::Stall(d)) => actix_web::rt::time::sleep(d).await,
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = serde_json::json!({"error": {"message": format!("injected {code}")}});
            return rails(status).body(body.to_string());
        }
        Some(Fault::Garbage) => {
            return rails(StatusCode::OK).body(&b"{\"repositories\": [\"unterminated"[..]);
        }
        Some(Fault::Close) => {
            return dropping_response(StatusCode::OK, "application/json", 1024, Bytes::new());
        }
        Some(Fault::Truncate) => truncate = true,
        Some(Fault::StallBody(d)) => stall_body = Some(d),
        Some(Fault::Paced {
            pieces,
            gap,
            chunked,
        }) => paced = Some((pieces, gap, chunked)),
        Some(Fault::Respond {
            status,
            content_type,
            body,
        }) => return respond_response(status, &content_type, body),
        Some(Fault::Huge { size, chunked }) => {
            return huge_response(
                size,
                chunked,
                "{\"repositories\":[",
                |i| format!("\"{HUGE_NAME_PREFIX}{i:010}\""),
                "]}",
            );
        }
    }
    let resp = match route {
        CentralRoute::Catalog => catalog(&req, &state),
        CentralRoute::Token => token(&req, &state),
        CentralRoute::Other => {
            rails(StatusCode::NOT_FOUND).body(r#"{"error":{"message":"Route not found"}}"#)
        }
    };
    if truncate {
        truncate_response(resp)
    } else if let Some(pause) = stall_body {
        stall_body_response(resp, pause)
    } else if let Some((pieces, gap, chunked)) = paced {
        paced_response(resp, pieces, gap, chunked)
    } else {
        resp
    }
}

fn catalog(req: &HttpRequest, state: &CentralState) -> HttpResponse {
    let repos = match parse_auth(req) {
        Auth::Basic { login, password } => match state.check_basic(&login, &password) {
            Some(_) => state.user_view(&login),
            None => return unauthorized(&login),
        },
        Auth::Bearer(t) => match state.token_owner(&t) {
            Some(login) => state.user_view(&login),
            None => return unauthorized(""),
        },
        Auth::Malformed => return unauthorized(""),
        Auth::None => match req.headers().get("hostuuid").and_then(|v| v.to_str().ok()) {
            Some(uuid) => lock(&state.hosts)
                .get(uuid)
                .cloned()
                .unwrap_or_else(|| lock(&state.public).clone()),
            None => lock(&state.public).clone(),
        },
    };
    rails(StatusCode::OK).body(serde_json::json!({"repositories": repos}).to_string())
}

fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn token(req: &HttpRequest, state: &CentralState) -> HttpResponse {
    let params: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    // Rails keeps the last value of a repeated key.
    let last = |k: &str| {
        params
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let scope = last("scope");
    let account = last("account");
    let scope_repo = scope
        .strip_prefix("repository:")
        .and_then(|s| s.rsplit_once(':'))
        .map(|(name, _)| name.to_owned());
    let scope_is_public = scope_repo.is_some_and(|r| lock(&state.public).contains(&r));
    let issued = |now: SystemTime| -> Option<String> {
        match &*lock(&state.issued_at) {
            IssuedAt::Now => Some(rfc3339(now)),
            IssuedAt::Ago(d) => Some(rfc3339(now - *d)),
            IssuedAt::Omit => None,
            IssuedAt::Raw(s) => Some(s.clone()),
        }
    };
    let body = |token: &str, expires_in: u64, now: SystemTime| {
        let mut m = serde_json::Map::new();
        m.insert("token".into(), token.into());
        m.insert("expires_in".into(), expires_in.into());
        if let Some(at) = issued(now) {
            m.insert("issued_at".into(), at.into());
        }
        serde_json::Value::Object(m).to_string()
    };
    let now = SystemTime::now();
    if (scope.is_empty() && account.is_empty()) || scope_is_public {
        return rails(StatusCode::OK).body(body("unauthenticated", 180, now));
    }
    let login = match parse_auth(req) {
        Auth::Basic { login, password } => match state.check_basic(&login, &password) {
            Some(_) => login,
            None => return unauthorized(&login),
        },
        _ => return unauthorized(&account),
    };
    let expires_in = state.expires_in.load(Ordering::SeqCst);
    let issued_base = match &*lock(&state.issued_at) {
        IssuedAt::Ago(d) => now - *d,
        _ => now,
    };
    let expires = Some(issued_base + Duration::from_secs(expires_in));
    let mut tokens = lock(&state.tokens);
    let existing = (!state.fresh_tokens)
        .then(|| {
            tokens
                .iter()
                .find(|(_, t)| t.login == login && t.expires.is_some_and(|e| e > now))
                .map(|(k, _)| k.clone())
        })
        .flatten();
    let value = existing.unwrap_or_else(|| {
        let n = state.minted.fetch_add(1, Ordering::SeqCst);
        let seed = format!("{login}:{n}:{:?}", SystemTime::now());
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(&Sha256::digest(seed.as_bytes())[..18])
    });
    tokens.insert(value.clone(), Token { login, expires });
    drop(tokens);
    rails(StatusCode::OK).body(body(&value, expires_in, now))
}
