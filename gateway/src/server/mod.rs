//! The HTTP server: listeners, TLS, routes, and the shared state behind them.

mod access_log;
pub mod conn;
pub mod identify;
pub mod index_cache;
mod listeners;
pub mod shared;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::{App, HttpRequest, HttpResponse, web};

use crate::auth::{AuthChain, Authenticator};
use crate::config::{Config, Problems};
use crate::entitlements::Entitlements;
use crate::http::errors::{self, Code};
use crate::http::{drain, index_route, registry_routes, token_route, v1_routes};
use crate::state::{LoadReport, StateStore};
use crate::tls::ServerTls;
use shared::{Shared, Upstreams};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] Problems),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Knobs that differ between the service and tests or the demo.
#[derive(Clone, Default)]
pub struct StartOptions {
    /// Let actix handle SIGTERM/SIGINT (graceful stop). Off when several
    /// servers share a process (tests, demo).
    pub handle_signals: bool,
    /// Backends to use instead of loading `plugins.chain` (demo, tests).
    pub backends: Option<Vec<Arc<dyn Authenticator>>>,
}

/// A started gateway.
pub struct Running {
    pub tls_addrs: Vec<SocketAddr>,
    pub plain_addrs: Vec<SocketAddr>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`admin.listen`).
    pub admin_addr: Option<SocketAddr>,
    /// Where Foreman's discovery and Katello's pushes are served (`management.listen`).
    pub management_addrs: Vec<SocketAddr>,
    pub handle: actix_web::dev::ServerHandle,
    pub shared: Arc<Shared>,
    pub tls: Option<ServerTls>,
    pub state_report: Arc<LoadReport>,
    server: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Wait until the server stops.
    pub async fn wait(self) -> std::io::Result<()> {
        match self.server.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

fn bind_error(addr: &SocketAddr) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |source| StartError::Bind {
        addr: *addr,
        source,
    }
}

fn tls_problem(key: &str, e: impl std::fmt::Display) -> Problems {
    Problems::one(key, e.to_string())
}

/// Everything that can be checked without binding: TLS material, upstream TLS,
/// plugins. Used by `serve` and `check-config` alike.
pub struct Prepared {
    pub tls: Option<ServerTls>,
    pub pulp_tls: Option<Arc<rustls::ClientConfig>>,
    pub central_tls: Option<Arc<rustls::ClientConfig>>,
    pub backends: Vec<Arc<dyn Authenticator>>,
}

pub fn prepare(
    config: &Config,
    backends: Option<Vec<Arc<dyn Authenticator>>>,
) -> Result<Prepared, Problems> {
    let mut problems = Vec::new();
    let s = &config.server;
    let tls = if s.listen.is_empty() && config.management_listen.is_empty() {
        None
    } else {
        ServerTls::build(&s.tls_cert, &s.tls_key, &s.client_ca)
            .map_err(|e| problems.extend(tls_problem("server.tls_cert", e).0))
            .ok()
    };
    let upstream =
        |key: &str, url: &str, tls: &crate::config::UpstreamTls, problems: &mut Vec<_>| {
            if !url.starts_with("https://") {
                return None;
            }
            crate::tls::client_config(tls)
                .map_err(|e| problems.extend(tls_problem(key, e).0))
                .ok()
        };
    let pulp_tls = upstream(
        "pulp.ssl_cert",
        &config.pulp.endpoint,
        &config.pulp.tls,
        &mut problems,
    );
    let central_tls = upstream(
        "central.ssl_cert",
        &config.central.url,
        &config.central.tls,
        &mut problems,
    );
    let backends = match backends {
        Some(b) => b,
        None => crate::auth::plugin_host::load_chain(&config.plugins, &config.server.client_ca)
            .map_err(|p| problems.extend(p.0))
            .unwrap_or_default(),
    };
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    Ok(Prepared {
        tls,
        pulp_tls,
        central_tls,
        backends,
    })
}

/// Bind the listeners and start serving. Must run inside an actix system.
pub async fn start(config: Config, options: StartOptions) -> Result<Running, StartError> {
    let prepared = prepare(&config, options.backends)?;
    let (state, report) = StateStore::open(&config.state_dir);
    for problem in &report.problems {
        tracing::error!(problem = %problem, "persisted state");
    }
    let config = Arc::new(config);
    let shared = Arc::new(Shared {
        config: config.clone(),
        state: Arc::new(state),
        chain: AuthChain::new(prepared.backends),
        entitlements: Entitlements::new(config.cache.clone()),
        index: Default::default(),
        pulp_tls: prepared.pulp_tls,
        central_tls: prepared.central_tls,
        pulp_answered: Default::default(),
    });

    let app_shared = shared.clone();
    let app = move || {
        let upstreams = Upstreams::new(&app_shared);
        App::new()
            .app_data(web::Data::from(app_shared.clone()))
            .app_data(web::Data::new(upstreams))
            .wrap(actix_web::middleware::from_fn(access_log::log))
            .configure(routes)
    };
    let mut server = listeners::Listeners::new(&config.server, options.handle_signals);

    // A listener and the address it got (port 0 picks one).
    let bind = |addr: &SocketAddr| {
        let listener = TcpListener::bind(addr).map_err(bind_error(addr))?;
        let local = listener.local_addr().map_err(bind_error(addr))?;
        Ok::<_, StartError>((listener, local))
    };
    let mut tls_addrs = Vec::new();
    if let Some(tls) = &prepared.tls {
        for addr in &config.server.listen {
            let (listener, local) = bind(addr)?;
            server = server
                .tls(listener, (*tls.config).clone(), app.clone())
                .map_err(bind_error(addr))?;
            tls_addrs.push(local);
        }
    }
    let mut plain_addrs = Vec::new();
    for addr in &config.server.listen_plain {
        let (listener, local) = bind(addr)?;
        server = server
            .plain(listener, app.clone())
            .map_err(bind_error(addr))?;
        plain_addrs.push(local);
    }
    // The management listeners share the server certificate (so SIGHUP
    // renews it there too) but not the client routes.
    let mut management_addrs = Vec::new();
    if let Some(tls) = &prepared.tls {
        let mgmt_shared = shared.clone();
        let mgmt_app = move || {
            App::new()
                .app_data(web::Data::from(mgmt_shared.clone()))
                .wrap(actix_web::middleware::from_fn(access_log::log))
                .configure(crate::discovery::configure)
                .configure(crate::management::configure)
                .default_service(web::to(not_found))
        };
        for addr in &config.management_listen {
            let (listener, local) = bind(addr)?;
            server = server
                .tls(listener, (*tls.config).clone(), mgmt_app.clone())
                .map_err(bind_error(addr))?;
            management_addrs.push(local);
        }
    }
    let admin = match config.admin_listen {
        Some(addr) => Some(
            crate::admin::bind(shared.clone(), addr)
                .map_err(|source| StartError::Bind { addr, source })?,
        ),
        None => None,
    };
    let admin_addr = admin.as_ref().map(|(addr, _)| *addr);
    let server = server.run();
    let handle = server.handle();
    // The admin listener lives exactly as long as the client listeners, however they are stopped.
    let server = actix_web::rt::spawn(async move {
        let admin = admin.map(|(_, admin)| (admin.handle(), actix_web::rt::spawn(admin)));
        let result = server.await;
        if let Some((admin_handle, admin)) = admin {
            admin_handle.stop(false).await;
            let _ = admin.await;
        }
        result
    });
    tracing::info!(tls = ?tls_addrs, plain = ?plain_addrs, management = ?management_addrs, admin = ?admin_addr, backends = ?shared.chain.names(), "listening");
    Ok(Running {
        tls_addrs,
        plain_addrs,
        admin_addr,
        management_addrs,
        handle,
        shared,
        tls: prepared.tls,
        state_report: Arc::new(report),
        server,
    })
}

fn routes(cfg: &mut web::ServiceConfig) {
    // One static pattern per resource, registry paths first: actix matches a
    // resource of several patterns, and `{tail:.*}`, with a regex, which cost
    // an eighth of a manifest request's CPU; a static prefix is a string
    // comparison.
    cfg.service(
        web::scope("/v2")
            .service(only_get(
                web::resource("/token").route(web::get().to(token_route::token)),
            ))
            .service(only_get(
                web::resource("/token/").route(web::get().to(token_route::token)),
            ))
            .default_service(web::to(registry_routes::dispatch)),
    );
    for path in [
        "/index/static",
        "/index/static/",
        "/index/dynamic",
        "/index/dynamic/",
    ] {
        cfg.service(
            web::resource(path)
                .route(web::get().to(index_route::index))
                .route(web::head().to(index_route::index))
                .default_service(drain::only("GET, HEAD")),
        );
    }
    for path in ["/v1/_ping", "/v1/_ping/"] {
        cfg.service(only_get(
            web::resource(path).route(web::get().to(v1_routes::ping)),
        ));
    }
    for path in ["/v1/search", "/v1/search/"] {
        cfg.service(only_get(
            web::resource(path).route(web::get().to(v1_routes::search)),
        ));
    }
    cfg.configure(crate::management::configure)
        .default_service(web::to(not_found));
}

/// Other methods on a GET route: 405 in registry format, not actix's empty one.
fn only_get(resource: actix_web::Resource) -> actix_web::Resource {
    resource.default_service(drain::only("GET"))
}

async fn not_found(_req: HttpRequest) -> HttpResponse {
    errors::respond(
        actix_web::http::StatusCode::NOT_FOUND,
        Code::NotFound,
        "no such route",
    )
}
