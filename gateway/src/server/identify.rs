//! From a request to an identity and the repositories it may see.

use std::sync::Arc;

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use tracing::{debug, warn};

use crate::auth::{AuthFacts, AuthFailure, Identity, Resolved, forwarded};
use crate::entitlements::{EntitlementError, Grant, Lookup};
use crate::http::errors::{self, Code};
use crate::server::conn::{PeerChain, Transport};
use crate::server::shared::{Shared, Upstreams};
use crate::state::{RepoSet, Snapshot};

/// The facts of one request, owned so they can go to the blocking pool.
struct OwnedFacts {
    tls_chain: Arc<Vec<Vec<u8>>>,
    forwarded: Option<Vec<u8>>,
    authorization: Option<String>,
    method: String,
    path: String,
    peer: Option<std::net::SocketAddr>,
}

/// Outcome of identification, as an HTTP answer when it fails.
pub type Identified = Result<Identity, actix_web::HttpResponse>;

fn gather(
    req: &HttpRequest,
    shared: &Shared,
    allow_forwarded: bool,
) -> Result<OwnedFacts, actix_web::HttpResponse> {
    let tls = req.conn_data::<Transport>().copied() == Some(Transport::Tls);
    let tls_chain = if tls {
        req.conn_data::<PeerChain>().map(|c| c.0.clone())
    } else {
        None
    };
    let peer = req.peer_addr();
    let mut forwarded_cert = None;
    if allow_forwarded {
        let present: Vec<(&str, &actix_web::http::header::HeaderValue)> = forwarded::HEADER_NAMES
            .iter()
            .flat_map(|name| req.headers().get_all(*name).map(move |v| (*name, v)))
            .collect();
        if let Some((name, _)) = present.first() {
            if !shared.config.server.is_trusted_frontend(peer) {
                warn!(peer = ?peer, header = name, "ignoring a forwarded certificate header from a peer that is not a trusted frontend");
            } else if present.len() > 1 {
                // A frontend sets one header; a second one came from the client
                // through a frontend that does not clear it. Which is genuine
                // cannot be told, so neither is believed.
                warn!(peer = ?peer, "several forwarded certificate headers; refusing the request");
                return Err(certificate_refused(shared, "ambiguous client certificate"));
            } else if let Some((_, value)) = present.first() {
                match forwarded::decode(value.as_bytes()) {
                    Ok(der) => forwarded_cert = der,
                    Err(e) => {
                        debug!(error = %e, "undecodable forwarded certificate");
                        return Err(certificate_refused(shared, "invalid client certificate"));
                    }
                }
            }
        }
    }
    let authorization = match req.headers().get(actix_web::http::header::AUTHORIZATION) {
        None => None,
        Some(v) => match v.to_str() {
            Ok(s) => Some(s.to_owned()),
            Err(_) => {
                return Err(errors::respond(
                    StatusCode::BAD_REQUEST,
                    Code::Unauthorized,
                    "Authorization header is not ASCII",
                ));
            }
        },
    };
    Ok(OwnedFacts {
        tls_chain: tls_chain.unwrap_or_default(),
        forwarded: forwarded_cert,
        authorization: if allow_forwarded { authorization } else { None },
        method: req.method().as_str().to_owned(),
        path: req.path().to_owned(),
        peer,
    })
}

/// 401 for a forwarded certificate header that cannot be believed. With the
/// Bearer challenge, like every other 401 (a certificate the backends reject
/// gets one too): without it podman and flatpak do not know where to get a token.
fn certificate_refused(shared: &Shared, message: &str) -> actix_web::HttpResponse {
    let s = &shared.config.server;
    errors::unauthorized(&s.public_url, &s.public_host, None, message)
}

async fn run_chain(shared: &Arc<Shared>, facts: OwnedFacts) -> Result<Resolved, AuthFailure> {
    let chain = shared.chain.clone();
    let timeout = shared.config.plugins.call_timeout;
    let started = std::time::Instant::now();
    let resolve = move || {
        let f = AuthFacts {
            tls_chain: &facts.tls_chain,
            forwarded_cert: facts.forwarded.as_deref(),
            authorization: facts.authorization.as_deref(),
            method: &facts.method,
            path: &facts.path,
            peer: facts.peer,
        };
        chain.resolve(&f)
    };
    if !shared.chain.may_block() {
        // Every backend promised not to wait: the two thread switches of the
        // blocking pool would cost more than the call itself.
        let result = resolve();
        crate::admin::metrics::plugin_call(started, &result);
        return result;
    }
    let call = actix_web::rt::task::spawn_blocking(resolve);
    let unavailable = |message: String| {
        AuthFailure::Unavailable(crate::auth::BackendError {
            backend: "chain".into(),
            message,
        })
    };
    let result = match tokio::time::timeout(timeout, call).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(unavailable(format!("auth call failed: {join}"))),
        Err(_) => Err(unavailable(format!(
            "auth chain took longer than {timeout:?}"
        ))),
    };
    crate::admin::metrics::plugin_call(started, &result);
    result
}

fn failure_response(shared: &Shared, failure: &AuthFailure) -> actix_web::HttpResponse {
    match failure {
        AuthFailure::Rejected { backend, reason } => {
            debug!(backend = %backend, reason = %reason, "credentials rejected");
            let s = &shared.config.server;
            errors::unauthorized(&s.public_url, &s.public_host, None, "invalid credentials")
        }
        AuthFailure::Unavailable(e) => {
            warn!(error = %e, "authentication could not decide; failing closed");
            errors::unavailable("authentication is temporarily unavailable", 5)
        }
    }
}

/// The grant of a bearer token validated with central rather than found in
/// this gateway's token store (issued through another instance, or before a restart).
#[derive(Clone)]
struct TokenGrant(Grant);

/// Identify a client request (TLS certificate, forwarded certificate, bearer token).
pub async fn identify(req: &HttpRequest, shared: &Arc<Shared>, up: &Upstreams) -> Identified {
    use actix_web::HttpMessage;
    let facts = gather(req, shared, true)?;
    let identity = match run_chain(shared, facts).await {
        Ok(Resolved::Identity(id)) => id,
        Ok(Resolved::Token(digest)) => resolve_token(req, shared, up, digest).await?,
        Err(f) => return Err(failure_response(shared, &f)),
    };
    req.extensions_mut().insert(identity.clone());
    Ok(identity)
}

/// A token from our store names its user; any other is asked of central, whose
/// `_catalog` validates Katello's own tokens (cached under the digest). Either
/// kind is asked again once `cache.token_revalidate` has passed since central
/// last vouched for it: central may have revoked it.
async fn resolve_token(
    req: &HttpRequest,
    shared: &Arc<Shared>,
    up: &Upstreams,
    digest: String,
) -> Identified {
    use actix_web::HttpMessage;
    let authorization = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let key: Arc<str> = Arc::from(digest.as_str());
    if let Some(stored) = shared.state.tokens().get(&digest) {
        return stored_token(shared, up, &key, &authorization, stored).await;
    }
    match shared
        .entitlements
        .for_token(&key, || {
            up.central.catalog_for_authorization(&authorization)
        })
        .await
    {
        Ok(grant) => {
            req.extensions_mut().insert(TokenGrant(grant));
            // The login is not known here; a digest prefix keeps logs useful without the token.
            Ok(Identity::User(Arc::from(format!(
                "token:{}",
                &digest[..digest.len().min(12)]
            ))))
        }
        Err(e) => Err(entitlement_failure(shared, &e)),
    }
}

/// A token this gateway stored at `/v2/token`: its user, while central's
/// last word on it is recent enough. Revoked (401 from central): forgotten
/// and refused. Central unreachable: honoured until `cache.stale_if_error`
/// after its last confirmation, then 503, as a host with nothing cached gets;
/// not 401, which would send the client to `/v2/token`, which needs central too.
async fn stored_token(
    shared: &Arc<Shared>,
    up: &Upstreams,
    digest: &Arc<str>,
    authorization: &str,
    stored: crate::state::StoredToken,
) -> Identified {
    let cache = &shared.config.cache;
    let age = |at: std::time::SystemTime| {
        std::time::SystemTime::now()
            .duration_since(at)
            .unwrap_or_default()
    };
    if age(stored.confirmed_at) < cache.token_revalidate {
        return Ok(Identity::User(stored.login));
    }
    let tokens = shared.state.tokens();
    // Confirmed inside the coalesced call, before it ends; and a request that
    // found the token due but enters just after another's call finds the
    // fresh confirmation and asks nothing.
    let ask = || async {
        if tokens
            .get(digest)
            .is_some_and(|t| age(t.confirmed_at) < cache.token_revalidate)
        {
            return Lookup::Granted(crate::state::RepoSet::default());
        }
        let asked = std::time::SystemTime::now();
        let outcome = up.central.catalog_for_authorization(authorization).await;
        if matches!(outcome, Lookup::Granted(_)) {
            tokens.confirm(digest, asked);
        }
        outcome
    };
    match shared.entitlements.confirm_token(digest, ask).await {
        Lookup::Granted(_) => Ok(Identity::User(stored.login)),
        Lookup::Rejected => {
            debug!("central no longer accepts a stored token; forgetting it");
            // The store rewrites its file: keep that off the worker thread.
            let (store, key) = (Arc::clone(shared), Arc::clone(digest));
            if actix_web::web::block(move || store.state.tokens().forget(&key))
                .await
                .is_err()
            {
                warn!("could not forget a revoked token; central is asked about it on every use");
            }
            Err(entitlement_failure(shared, &EntitlementError::Rejected))
        }
        Lookup::Failed(reason) if age(stored.confirmed_at) < cache.stale_if_error => {
            debug!(reason = %reason, "central cannot confirm a stored token; honouring it within cache.stale_if_error_secs");
            Ok(Identity::User(stored.login))
        }
        Lookup::Failed(reason) => Err(entitlement_failure(
            shared,
            &EntitlementError::Unavailable(reason),
        )),
    }
}

/// The CN of a management caller: only a certificate from this TLS handshake
/// counts, never a forwarded header or a token.
pub async fn tls_host(
    req: &HttpRequest,
    shared: &Arc<Shared>,
) -> Result<Option<Arc<str>>, actix_web::HttpResponse> {
    let facts = gather(req, shared, false)?;
    if facts.tls_chain.is_empty() {
        return Ok(None);
    }
    match run_chain(shared, facts).await {
        Ok(Resolved::Identity(Identity::Host(cn))) => Ok(Some(cn)),
        Ok(_) => Ok(None),
        Err(AuthFailure::Rejected { .. }) => Ok(None),
        Err(f) => Err(failure_response(shared, &f)),
    }
}

/// What an identity may see: the snapshot it was decided against plus its own grant.
pub struct View {
    pub identity: Identity,
    pub snapshot: Arc<Snapshot>,
    pub grant: Option<Grant>,
}

impl View {
    pub fn granted(&self) -> Option<&RepoSet> {
        self.grant.as_ref().map(|g| &g.repositories)
    }

    pub fn visible(&self, name: &str) -> bool {
        self.snapshot.visible(name, self.granted())
    }
}

/// Look up the entitlements of an identity.
pub async fn view(
    req: &HttpRequest,
    identity: Identity,
    shared: &Arc<Shared>,
    up: &Upstreams,
) -> Result<View, actix_web::HttpResponse> {
    use actix_web::HttpMessage;
    let snapshot = shared.state.snapshot();
    if let Some(TokenGrant(grant)) = req.extensions().get::<TokenGrant>().cloned() {
        return Ok(View {
            identity,
            snapshot,
            grant: Some(grant),
        });
    }
    let grant = match &identity {
        Identity::Anonymous => None,
        Identity::Host(uuid) => {
            let r = shared
                .entitlements
                .for_host(&snapshot, uuid, || up.central.catalog_for_host(uuid))
                .await;
            Some(r.map_err(|e| entitlement_failure(shared, &e))?)
        }
        Identity::User(login) => snapshot.user_mapping(login).map(Grant::pushed),
    };
    Ok(View {
        identity,
        snapshot,
        grant,
    })
}

fn entitlement_failure(shared: &Shared, e: &EntitlementError) -> actix_web::HttpResponse {
    match e {
        EntitlementError::Unavailable(reason) => {
            warn!(reason = %reason, "no entitlements available; failing closed");
            errors::unavailable("entitlements are temporarily unavailable", 10)
        }
        EntitlementError::Rejected => {
            let s = &shared.config.server;
            errors::unauthorized(&s.public_url, &s.public_host, None, "invalid credentials")
        }
    }
}
