//! `GET /v2/token`: the registry token flow, relayed to central. A token that
//! central issues is remembered (by its SHA-256) until it expires, and the
//! user's repositories are refreshed from central with the same credentials.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::entitlements::Lookup;
use crate::http::errors::{self, API_VERSION, API_VERSION_HEADER, Code};
use crate::http::forward::upstream_failure;
use crate::http::query;
use crate::server::shared::{Shared, Upstreams};
use crate::state::Mapping;

/// Lifetime assumed when central names none (as Katello's clients do).
const DEFAULT_EXPIRES_IN: u64 = 60;

#[derive(Deserialize)]
struct TokenBody {
    token: Option<serde_json::Value>,
    expires_in: Option<serde_json::Value>,
    issued_at: Option<String>,
}

/// The login in a Basic `Authorization` header (flatpak sends no `account`).
pub fn basic_login(authorization: Option<&str>) -> Option<String> {
    let (scheme, encoded) = authorization?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let login = text.split_once(':').map_or(text.as_str(), |(user, _)| user);
    (!login.is_empty()).then(|| login.to_owned())
}

/// When a token expires: `issued_at` (else the response's `Date`) plus `expires_in`.
fn expiry(body: &TokenBody, date: Option<&str>) -> Result<SystemTime, &'static str> {
    let expires_in = match &body.expires_in {
        None | Some(serde_json::Value::Null) => DEFAULT_EXPIRES_IN,
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or("expires_in is not a number")?,
    };
    let issued = match (&body.issued_at, date) {
        (Some(at), _) => {
            let t = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .map_err(|_| "issued_at is not an RFC 3339 time")?;
            SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_secs(
                    u64::try_from(t.unix_timestamp()).map_err(|_| "issued_at is before 1970")?,
                ))
                .ok_or("issued_at is out of range")?
        }
        (None, Some(d)) => {
            httpdate::parse_http_date(d).map_err(|_| "the Date header is not an HTTP date")?
        }
        (None, None) => SystemTime::now(),
    };
    issued
        .checked_add(Duration::from_secs(expires_in))
        .ok_or("expiry is out of range")
}

/// Central's refusal is the client's business: its status, with central's
/// message (Katello's `{"error":{"message"}}`, or a registry error's) in a
/// registry-format body. Anything else central sent (an HTML page from its
/// frontend, say) is not passed on.
fn refusal(status: u16, body: &[u8]) -> HttpResponse {
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|s| s.is_client_error())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let code = match status {
        StatusCode::UNAUTHORIZED => Code::Unauthorized,
        StatusCode::FORBIDDEN => Code::Denied,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::BAD_GATEWAY => Code::UpstreamError,
        _ => Code::Unsupported,
    };
    let message = central_message(body).unwrap_or_else(|| {
        format!(
            "central refused the token request ({})",
            status.canonical_reason().unwrap_or("error")
        )
    });
    errors::respond(status, code, &message)
}

/// The message in a Katello or registry error body, if it has a short one.
fn central_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = v
        .pointer("/error/message")
        .or_else(|| v.pointer("/errors/0/message"))?
        .as_str()?
        .trim();
    (!message.is_empty() && message.len() <= 512 && !message.chars().any(char::is_control))
        .then(|| message.to_owned())
}

fn malformed(why: &str) -> HttpResponse {
    tracing::warn!(reason = why, "malformed token answer from central");
    errors::respond(
        StatusCode::BAD_GATEWAY,
        Code::UpstreamError,
        "received a malformed token response",
    )
}

pub async fn token(
    req: HttpRequest,
    shared: web::Data<Shared>,
    up: web::Data<Upstreams>,
) -> HttpResponse {
    let pairs = match query::pairs(req.query_string()) {
        Ok(p) => p,
        Err(e) => {
            return errors::respond(StatusCode::BAD_REQUEST, Code::Unsupported, &e.to_string());
        }
    };
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Central issues the token to whoever the credentials authenticate: that is
    // the user it is stored and refreshed for. `account` is only what the client
    // claims (flatpak sends none), passed on to central as Katello expects it.
    let login = basic_login(authorization.as_deref());
    let account = query::first(&pairs, "account")
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .or_else(|| login.clone());
    let mut central_query = form_urlencoded::Serializer::new(String::new());
    if let Some(a) = &account {
        central_query.append_pair("account", a);
    }
    for (k, v) in pairs.iter().filter(|(k, _)| k == "scope") {
        central_query.append_pair(k, v);
    }
    // Within central.timeout_secs, body included (the client's own timeout
    // ends with the response head).
    let central_query = central_query.finish();
    let token = up.central.token(authorization.as_deref(), &central_query);
    let answer = match actix_web::rt::time::timeout(shared.config.central.timeout, token).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return upstream_failure(&e),
        Err(_) => return upstream_failure(&crate::upstream::UpstreamError::Timeout),
    };
    if answer.status.is_server_error() {
        // Central failing is not the client's business: a 502 in registry
        // format, not central's own error page (HTML from its frontend, as often
        // as not) under a status it did not send.
        tracing::warn!(status = %answer.status, "central failed a token request");
        return errors::respond(
            StatusCode::BAD_GATEWAY,
            Code::UpstreamError,
            "central failed to answer the token request",
        );
    }
    if answer.status != StatusCode::OK {
        return refusal(answer.status.as_u16(), &answer.body);
    }
    let Ok(body) = serde_json::from_slice::<TokenBody>(&answer.body) else {
        return malformed("not a JSON object");
    };
    let Some(serde_json::Value::String(token)) = &body.token else {
        return malformed("no token");
    };
    if token == "unauthorized" {
        let s = &shared.config.server;
        return errors::unauthorized(&s.public_url, &s.public_host, None, "unauthorized");
    }
    let reply = HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((API_VERSION_HEADER, API_VERSION))
        .body(answer.body.clone());
    if token == "unauthenticated" || token.is_empty() {
        // Anonymous pulls of public repositories: nothing to remember.
        return reply;
    }
    let expires_at = match expiry(&body, answer.date.as_deref()) {
        Ok(t) => t,
        Err(why) => return malformed(why),
    };
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    match &login {
        Some(login) if expires_at > SystemTime::now() => {
            // The store writes its file: keep that off the worker thread.
            let (store, digest, login) = (Arc::clone(&shared), digest.clone(), login.clone());
            let stored =
                web::block(move || store.state.tokens().insert(&digest, &login, expires_at)).await;
            if stored.is_err() {
                tracing::error!(
                    "could not store a token; it will be validated with central on use"
                );
            }
        }
        Some(_) => tracing::debug!("central issued an already expired token; not stored"),
        None => tracing::debug!(
            "token issued without Basic credentials; it will be validated with central on use"
        ),
    }
    if let (Some(auth), Some(login)) = (authorization.as_deref(), login.as_deref()) {
        refresh_user(&shared, &up, auth, login).await;
    }
    reply
}

/// Replace one user's mapping with central's current answer. A failure keeps
/// the previous mapping: the token is still valid, and what it can see stays
/// what central said last. Nothing is cached under the token itself: a stored
/// token resolves to its user until it expires, confirmed with central every
/// `cache.token_revalidate_secs` (server/identify.rs), and after that (or when
/// it was never stored, being expired on arrival) only central may vouch for it.
async fn refresh_user(shared: &Arc<Shared>, up: &Upstreams, authorization: &str, login: &str) {
    let lookup = up.central.catalog_for_authorization(authorization);
    let repositories = match lookup.await {
        Lookup::Granted(r) => r,
        Lookup::Rejected => {
            tracing::warn!(
                "central refused the _catalog refresh for a user it just issued a token to"
            );
            return;
        }
        Lookup::Failed(why) => {
            tracing::warn!(reason = %why, "cannot refresh a user's repositories; keeping the previous mapping");
            return;
        }
    };
    let login: Arc<str> = Arc::from(login);
    let store = Arc::clone(shared);
    // `replace` rewrites and fsyncs the state file: not on the worker thread.
    let result = web::block(move || {
        store.state.replace(|old| {
            if old
                .user_mapping(&login)
                .is_some_and(|m| m.repositories == repositories)
            {
                return Err(Unchanged);
            }
            let mut next = old.clone();
            next.user_mappings.insert(
                login.clone(),
                Mapping {
                    repositories: repositories.clone(),
                    updated_at: SystemTime::now(),
                },
            );
            Ok(next)
        })
    })
    .await;
    match result {
        Ok(Err(crate::state::StoreError::Persist(e))) => {
            tracing::error!(error = %e, "cannot persist a user's repositories")
        }
        Err(_) => tracing::error!("could not store a user's repositories"),
        Ok(_) => {}
    }
}

#[derive(Debug)]
struct Unchanged;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_login_is_the_user_part() {
        let b = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        assert_eq!(
            basic_login(Some(&format!("Basic {b}"))),
            Some("alice".into())
        );
        assert_eq!(basic_login(Some("Basic Og==")), None);
        assert_eq!(basic_login(Some("Bearer x")), None);
        assert_eq!(basic_login(Some("Basic !!!")), None);
        assert_eq!(basic_login(None), None);
    }

    fn body(json: &str) -> TokenBody {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn expiry_from_issued_at_date_or_now() {
        let t = expiry(
            &body(r#"{"token":"t","expires_in":3600,"issued_at":"2026-01-01T00:00:00Z"}"#),
            None,
        )
        .unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_767_225_600 + 3600
        );
        let t = expiry(
            &body(r#"{"token":"t"}"#),
            Some("Thu, 01 Jan 2026 00:00:00 GMT"),
        )
        .unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_767_225_600 + 60
        );
        assert!(expiry(&body(r#"{"token":"t","issued_at":"yesterday"}"#), None).is_err());
        assert!(expiry(&body(r#"{"token":"t","expires_in":"soon"}"#), None).is_err());
    }
}
