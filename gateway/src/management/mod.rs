//! Management routes Katello calls during smart proxy sync (contract §6).
//!
//! Each route is served at `/<route>` and `/container_gateway/<route>` (the
//! Ruby plugin's mount point, which Katello's `ProxyAPI::ContainerGateway`
//! uses), with or without a trailing slash, over TLS only, to a client
//! certificate from this very handshake whose CN is in
//! `management.allowed_cns`. The caller is checked before the body is read.
//!
//! A push is decoded and checked whole, then applied with one
//! `StateStore::replace`: written to disk, then swapped in. A reader sees the
//! state before or after it, never a half-applied or empty one.

pub mod apply;
pub mod payload;
pub mod rack;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde::Serialize;
use tracing::{info, warn};

use crate::http::drain;
use crate::http::errors::{self, API_VERSION, API_VERSION_HEADER};
use crate::server::identify::tls_host;
use crate::server::shared::Shared;
use crate::state::{Snapshot, StateStore, StoreError};
use payload::{PayloadError, WhenNil};
use rack::{Limits, Object, Value};

/// Largest body accepted. Since Katello #39314 a sync of load-balanced
/// sibling capsules pushes every sibling's hosts to each of them, so a
/// mapping can be far larger than this capsule's own. One repository entry
/// of a host mapping is two parameters, about 175 bytes in rest-client's
/// encoding (36-character UUID, 46-character name; ~207 with the brackets
/// percent-encoded): 100,000 hosts x 10 repositories is 175-207 MB. The
/// bound matches `rack::Limits::max_params` (4,000,000 parameters, i.e.
/// 2,000,000 repository entries, 100,000 hosts x 20) at about 100 bytes a
/// parameter. Decoding holds about four times the body in memory at peak
/// (see README, "Pushes from Katello").
pub const MAX_BODY: usize = 384 << 20;

/// The pushes Katello makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    RepositoryList,
    UpdateHosts,
    HostRepositoryMapping,
    UserRepositoryMapping,
    UpdateHostRepositories,
}

impl Route {
    pub const ALL: [Route; 5] = [
        Route::RepositoryList,
        Route::UpdateHosts,
        Route::HostRepositoryMapping,
        Route::UserRepositoryMapping,
        Route::UpdateHostRepositories,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Route::RepositoryList => "repository_list",
            Route::UpdateHosts => "update_hosts",
            Route::HostRepositoryMapping => "host_repository_mapping",
            Route::UserRepositoryMapping => "user_repository_mapping",
            Route::UpdateHostRepositories => "update_host_repositories",
        }
    }
}

/// How a body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/x-www-form-urlencoded` with Rack nesting (what Katello sends).
    Form,
    Json,
}

/// What a push changed, for the log line and tests. Counts only: repository
/// names never go to the info log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Repositories, hosts, or mapped hosts/users in the push.
    pub entries: usize,
    /// Of a repository list: the public ones. Of a mapping: repositories granted in total.
    pub detail: usize,
    /// Entries left out: nil or blank names and UUIDs.
    pub skipped: usize,
    /// The snapshot generation now current.
    pub generation: u64,
}

/// Why a push was not applied. Nothing changed in any case.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed, but refused by policy (`management.max_shrink_percent`).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Persist(String),
}

/// What the admin allows a push to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushPolicy {
    /// The largest share of the current repository list, in percent, that one
    /// `repository_list` push may remove; 100 allows any push.
    pub max_shrink_percent: u8,
}

impl Default for PushPolicy {
    fn default() -> Self {
        PushPolicy {
            max_shrink_percent: 100,
        }
    }
}

impl PushPolicy {
    /// Refuse a repository list that would drop more of `old` than allowed.
    fn check_shrink(
        &self,
        old: &Snapshot,
        push: &payload::RepositoryList,
    ) -> Result<(), PushError> {
        let current = old.repositories.len();
        if self.max_shrink_percent >= 100 || current == 0 {
            return Ok(());
        }
        let kept: HashSet<&str> = push.repositories.iter().map(|(n, _)| n.as_str()).collect();
        let dropped = old
            .repositories
            .keys()
            .filter(|name| !kept.contains(&***name))
            .count();
        // Compared in integers: dropped / current > max / 100.
        if dropped * 100 > usize::from(self.max_shrink_percent) * current {
            return Err(PushError::Conflict(format!(
                "this push would remove {dropped} of the {current} repositories ({}%), more than management.max_shrink_percent ({}%) allows; nothing was changed",
                dropped * 100 / current,
                self.max_shrink_percent
            )));
        }
        Ok(())
    }
}

impl From<PayloadError> for PushError {
    fn from(e: PayloadError) -> Self {
        PushError::BadRequest(e.0)
    }
}

/// Decode a body into Rack's parameter model.
pub fn decode(format: BodyFormat, body: &[u8]) -> Result<Object, PushError> {
    match format {
        BodyFormat::Form => rack::parse_nested_query(body, Limits::default())
            .map_err(|e| PushError::BadRequest(e.to_string())),
        BodyFormat::Json => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) => Ok(o),
            Ok(_) => Err(PushError::BadRequest(
                "a JSON body must be an object".into(),
            )),
            Err(e) => Err(PushError::BadRequest(format!("invalid JSON: {e}"))),
        },
    }
}

/// Check a decoded push and apply it to `store` in one swap.
pub fn apply_push(
    store: &StateStore,
    route: Route,
    params: &Object,
    policy: &PushPolicy,
    now: SystemTime,
) -> Result<Summary, PushError> {
    let (mut summary, result) = match route {
        Route::RepositoryList => {
            let push = payload::repository_list(params)?;
            let public = push.repositories.iter().filter(|(_, auth)| !auth).count();
            let s = Summary {
                entries: push.repositories.len(),
                detail: public,
                skipped: push.skipped,
                generation: 0,
            };
            (
                s,
                store.replace(|old| {
                    policy.check_shrink(old, &push)?;
                    Ok::<_, PushError>(apply::repository_list(old, &push))
                }),
            )
        }
        Route::UpdateHosts => {
            let push = payload::host_list(params)?;
            let s = Summary {
                entries: push.uuids.len(),
                detail: 0,
                skipped: push.skipped,
                generation: 0,
            };
            (s, store.replace(|old| Ok(apply::update_hosts(old, &push))))
        }
        Route::HostRepositoryMapping => {
            let push = payload::mapping_list(params, "hosts", WhenNil::Empty)?;
            let s = Summary {
                entries: push.mappings.len(),
                detail: push.granted(),
                skipped: push.skipped,
                generation: 0,
            };
            (
                s,
                store.replace(|old| Ok(apply::host_repository_mapping(old, &push, now))),
            )
        }
        Route::UpdateHostRepositories => {
            let push = payload::mapping_list(params, "hosts", WhenNil::Reject)?;
            let s = Summary {
                entries: push.mappings.len(),
                detail: push.granted(),
                skipped: push.skipped,
                generation: 0,
            };
            (
                s,
                store.replace(|old| Ok(apply::update_host_repositories(old, &push, now))),
            )
        }
        Route::UserRepositoryMapping => {
            let push = payload::mapping_list(params, "users", WhenNil::Empty)?;
            let s = Summary {
                entries: push.mappings.len(),
                detail: push.granted(),
                skipped: push.skipped,
                generation: 0,
            };
            (
                s,
                store.replace(|old| Ok(apply::user_repository_mapping(old, &push, now))),
            )
        }
    };
    match result {
        Ok(snapshot) => {
            summary.generation = snapshot.generation;
            Ok(summary)
        }
        Err(StoreError::Rejected(e)) => Err(e),
        Err(StoreError::Persist(e)) => Err(PushError::Persist(e)),
    }
}

/// Register the management routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for route in Route::ALL {
        cfg.service(
            web::resource(paths(route.name()))
                .route(web::put().to(
                    move |req: HttpRequest, body: web::Payload, shared: web::Data<Shared>| {
                        push(route, req, body, shared)
                    },
                ))
                .default_service(drain::only("PUT")),
        );
    }
    cfg.service(
        web::resource(paths("users"))
            .route(web::get().to(users))
            .default_service(drain::only("GET")),
    );
}

fn paths(name: &str) -> Vec<String> {
    vec![
        format!("/{name}"),
        format!("/{name}/"),
        format!("/container_gateway/{name}"),
        format!("/container_gateway/{name}/"),
    ]
}

/// Whether a certificate CN may manage this gateway. Host names are
/// case-insensitive, so the comparison is too.
pub fn cn_allowed(allowed: &[String], cn: &str) -> bool {
    allowed.iter().any(|a| a.eq_ignore_ascii_case(cn))
}

pub(crate) async fn authorize(
    req: &HttpRequest,
    shared: &Arc<Shared>,
) -> Result<Arc<str>, HttpResponse> {
    match tls_host(req, shared).await? {
        Some(cn) if cn_allowed(&shared.config.allowed_cns, &cn) => Ok(cn),
        Some(cn) => {
            warn!(cn = %cn, path = req.path(), "management call from a certificate CN not in management.allowed_cns");
            Err(error(
                StatusCode::FORBIDDEN,
                "DENIED",
                "this client certificate may not manage the gateway",
            ))
        }
        None => {
            warn!(peer = ?req.peer_addr(), path = req.path(), "management call without a valid TLS client certificate");
            Err(error(
                StatusCode::FORBIDDEN,
                "DENIED",
                "a valid TLS client certificate is required",
            ))
        }
    }
}

async fn push(
    route: Route,
    req: HttpRequest,
    body: web::Payload,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let shared = shared.into_inner();
    let caller = match authorize(&req, &shared).await {
        Ok(cn) => cn,
        Err(response) => return drain::after_draining(body, response).await,
    };
    let format = match body_format(&req) {
        Some(f) => f,
        None => {
            let response = error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED",
                "send application/x-www-form-urlencoded or application/json",
            );
            return drain::after_draining(body, response).await;
        }
    };
    let body = match read_body(&req, body, MAX_BODY).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let state = shared.state.clone();
    let policy = shared.config.push_policy;
    let outcome = web::block(move || {
        let params = decode(format, &body)?;
        drop(body);
        apply_push(&state, route, &params, &policy, SystemTime::now())
    })
    .await;
    match outcome {
        Ok(Ok(s)) => {
            info!(
                route = route.name(),
                caller = %caller,
                entries = s.entries,
                detail = s.detail,
                skipped = s.skipped,
                generation = s.generation,
                "management push applied"
            );
            HttpResponse::Ok().finish()
        }
        Ok(Err(PushError::BadRequest(message))) => {
            warn!(route = route.name(), caller = %caller, problem = %message, "management push rejected");
            error(StatusCode::BAD_REQUEST, "BAD_REQUEST", &message)
        }
        Ok(Err(PushError::Conflict(message))) => {
            warn!(route = route.name(), caller = %caller, problem = %message, "management push refused");
            error(StatusCode::CONFLICT, "DENIED", &message)
        }
        Ok(Err(PushError::Persist(message))) => {
            tracing::error!(route = route.name(), problem = %message, "management push not applied: cannot save state");
            errors::unavailable("the gateway cannot save its state; nothing was changed", 30)
        }
        Err(e) => {
            tracing::error!(route = route.name(), error = %e, "management push failed");
            errors::unavailable("the push could not be processed; nothing was changed", 30)
        }
    }
}

#[derive(Serialize)]
struct Users {
    users: Vec<String>,
}

async fn users(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    let shared = shared.into_inner();
    if let Err(response) = authorize(&req, &shared).await {
        return response;
    }
    let body = Users {
        users: shared.state.tokens().users(),
    };
    HttpResponse::Ok().json(body)
}

fn body_format(req: &HttpRequest) -> Option<BodyFormat> {
    let media = req.content_type().trim().to_ascii_lowercase();
    match media.as_str() {
        // rest-client always labels its bodies; an unlabelled one is read as
        // a form, as Katello would have meant it.
        "" | "application/x-www-form-urlencoded" => Some(BodyFormat::Form),
        "application/json" => Some(BodyFormat::Json),
        m if m.starts_with("application/") && m.ends_with("+json") => Some(BodyFormat::Json),
        _ => None,
    }
}

async fn read_body(
    req: &HttpRequest,
    mut body: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, HttpResponse> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "TOO_LARGE",
            &format!("the body is larger than {} MiB", limit >> 20),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize).min(limit));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &format!("cannot read the body: {e}"),
            )
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// A registry-format error (`{"errors":[{"code","message"}]}`), with codes of
/// our own where the registry vocabulary has none for a management failure.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    #[derive(Serialize)]
    struct Item<'a> {
        code: &'a str,
        message: &'a str,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        errors: [Item<'a>; 1],
    }
    HttpResponse::build(status)
        .insert_header((API_VERSION_HEADER, API_VERSION))
        .json(Body {
            errors: [Item { code, message }],
        })
}

#[cfg(test)]
mod tests;
