//! The admin listener (`admin.listen`): `/metrics`, `/healthz`, `/readyz`,
//! and `/explain/{host/<uuid>,user/<login>,anonymous}`.
//!
//! Plain HTTP with no authentication, so configuration only allows loopback;
//! it is its own server, sharing nothing with the client listeners' routes.

pub mod metrics;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::http::Method;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{App, HttpResponse, HttpServer, web};

use crate::server::shared::Shared;
use crate::upstream::central::CentralClient;
use crate::upstream::pulp::PulpClient;

/// `/readyz` asks Pulp itself until Pulp has answered once; a probe must not
/// hang the way a client request to Pulp may.
const PULP_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Bind the admin listener and build its server; it starts with the caller's
/// actix system and is stopped through the returned server's handle.
pub fn bind(
    shared: Arc<Shared>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, actix_web::dev::Server)> {
    // Installed before any request so the first scrape already has every series' help text.
    let _ = metrics::handle();
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let server = HttpServer::new(move || {
        let pulp = PulpClient::new(
            &shared.config.pulp,
            shared.pulp_tls.clone(),
            shared.pulp_answered.clone(),
        );
        let central = CentralClient::new(&shared.config.central, shared.central_tls.clone());
        App::new()
            .app_data(web::Data::from(shared.clone()))
            .app_data(web::Data::new(pulp))
            .app_data(web::Data::new(central))
            .route("/metrics", web::get().to(metrics_route))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route(
                "/explain/host/{uuid}",
                web::get().to(crate::explain::live::host),
            )
            .route(
                "/explain/user/{login}",
                web::get().to(crate::explain::live::user),
            )
            .route(
                "/explain/anonymous",
                web::get().to(crate::explain::live::anonymous),
            )
            .default_service(web::to(HttpResponse::NotFound))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok((local, server))
}

async fn metrics_route(shared: web::Data<Shared>) -> HttpResponse {
    let Some(handle) = metrics::handle() else {
        return HttpResponse::ServiceUnavailable().body("metrics recorder unavailable\n");
    };
    let mut body = handle.render();
    body.push_str(&metrics::render_instance(&shared));
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "no-store"))
        .body(body)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .body("ok\n")
}

/// Ready once Katello's state is loaded and Pulp has answered since start:
/// before that, every client would get an empty catalog or a 503.
async fn readyz(shared: web::Data<Shared>, pulp: web::Data<PulpClient>) -> HttpResponse {
    if !shared.pulp_answered.load(Ordering::Acquire) {
        // Any answer counts (401 included): the client records it itself.
        let _ =
            tokio::time::timeout(PULP_PROBE_TIMEOUT, pulp.forward(Method::GET, "/v2/", &[])).await;
    }
    let state_loaded = shared.state.is_loaded();
    let pulp_answered = shared.pulp_answered.load(Ordering::Acquire);
    let ready = state_loaded && pulp_answered;
    let body = serde_json::json!({ "ready": ready, "state_loaded": state_loaded, "pulp_answered": pulp_answered });
    let mut resp = if ready {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    resp.insert_header((CACHE_CONTROL, "no-store")).json(body)
}
