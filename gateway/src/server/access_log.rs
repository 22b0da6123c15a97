//! One log line per request: method, route template, status, latency and the
//! identity. Never the raw path: it may name a repository the client could not see.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};

use crate::auth::Identity;
use crate::http::registry_routes::RouteTemplate;

pub async fn log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let res = next.call(req).await?;
    let template = res
        .request()
        .extensions()
        .get::<RouteTemplate>()
        .map(|t| t.0.to_owned());
    let route = template
        .or_else(|| res.request().match_pattern())
        .unwrap_or_else(|| "-".to_owned());
    let status = res.status().as_u16();
    crate::admin::metrics::request(&route, status, started.elapsed());
    if tracing::enabled!(target: "access", tracing::Level::INFO) {
        let (kind, id) = match res.request().extensions().get::<Identity>() {
            Some(identity) => (identity.kind(), identity.id().to_owned()),
            None => ("-", String::new()),
        };
        tracing::info!(
            target: "access",
            method = %method,
            route = %route,
            status,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            identity = kind,
            id = %id,
        );
    }
    Ok(res)
}
