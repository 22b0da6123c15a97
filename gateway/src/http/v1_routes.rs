//! The two v1 routes clients still touch: `/v1/_ping` and `/v1/search`.

use actix_web::http::header::{self, HeaderName};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use crate::entitlements::Lookup;
use crate::http::errors::{self, API_VERSION, Code};
use crate::http::forward::upstream_failure;
use crate::http::query;
use crate::http::token_route::basic_login;
use crate::server::identify::{identify, view};
use crate::server::shared::{Shared, Upstreams};
use crate::state::{RepoSet, Snapshot};

const DEFAULT_PAGE: usize = 25;

/// Pulp's liveness, as the Ruby gateway reported it: 200 `{}` when Pulp answers.
pub async fn ping(_req: HttpRequest, up: web::Data<Upstreams>) -> HttpResponse {
    match up.pulp.forward(Method::GET, "/v2/", &[]).await {
        Ok(r) if r.status().is_server_error() => errors::respond(
            StatusCode::BAD_GATEWAY,
            Code::UpstreamError,
            "Pulp failed to answer",
        ),
        Ok(_) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .body("{}"),
        Err(e) => upstream_failure(&e),
    }
}

#[derive(Serialize)]
struct Hit<'a> {
    description: &'static str,
    name: &'a str,
}

#[derive(Serialize)]
struct SearchBody<'a> {
    num_results: usize,
    query: &'a str,
    results: Vec<Hit<'a>>,
}

/// `GET /v1/search?q=&n=`: the visible names containing `q` (case-insensitive).
/// v2 clients get 404 so they fall back to `_catalog`.
pub async fn search(
    req: HttpRequest,
    shared: web::Data<Shared>,
    up: web::Data<Upstreams>,
) -> HttpResponse {
    let v2_client = req
        .headers()
        .get(HeaderName::from_static("docker-distribution-api-version"))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(API_VERSION));
    if v2_client {
        return errors::respond(StatusCode::NOT_FOUND, Code::NotFound, "not found");
    }
    let pairs = match query::pairs(req.query_string()) {
        Ok(p) => p,
        Err(e) => {
            return errors::respond(StatusCode::BAD_REQUEST, Code::Unsupported, &e.to_string());
        }
    };
    let n = match query::first(&pairs, "n") {
        None => DEFAULT_PAGE,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n,
            Err(_) => {
                return errors::respond(
                    StatusCode::BAD_REQUEST,
                    Code::PaginationNumberInvalid,
                    "n must be a number",
                );
            }
        },
    };
    let q = query::first(&pairs, "q").unwrap_or_default().to_owned();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    // Basic credentials are checked with central directly (docker's v1 search sends them).
    let (snapshot, granted): (std::sync::Arc<Snapshot>, Option<RepoSet>) =
        if basic_login(authorization.as_deref()).is_some() {
            let lookup = up
                .central
                .catalog_for_authorization(authorization.as_deref().unwrap_or_default());
            match lookup.await {
                Lookup::Granted(repos) => (shared.state.snapshot(), Some(repos)),
                Lookup::Rejected => {
                    let s = &shared.config.server;
                    return errors::unauthorized(
                        &s.public_url,
                        &s.public_host,
                        None,
                        "invalid credentials",
                    );
                }
                Lookup::Failed(why) => {
                    tracing::warn!(reason = %why, "central unavailable for a search");
                    return errors::unavailable("central is temporarily unavailable", 10);
                }
            }
        } else {
            let identity = match identify(&req, &shared, &up).await {
                Ok(id) => id,
                Err(resp) => return resp,
            };
            match view(&req, identity, &shared, &up).await {
                Ok(v) => {
                    let granted = v.granted().cloned();
                    (v.snapshot, granted)
                }
                Err(resp) => return resp,
            }
        };
    let needle = q.to_lowercase();
    let names = snapshot.repository_names();
    let matches: Vec<&str> = names
        .iter()
        .map(|n| &**n)
        .filter(|name| {
            snapshot.visible(name, granted.as_ref()) && name.to_lowercase().contains(&needle)
        })
        .collect();
    let results: Vec<Hit<'_>> = matches
        .iter()
        .take(n)
        .map(|name| Hit {
            description: "",
            name,
        })
        .collect();
    // The length of the page, as the Ruby gateway counted it.
    let body = SearchBody {
        num_results: results.len(),
        query: &q,
        results,
    };
    HttpResponse::Ok().json(body)
}
