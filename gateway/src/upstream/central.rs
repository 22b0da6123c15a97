//! The central Katello server: which repositories a host or a token may see.

use std::sync::Arc;

use awc::http::StatusCode;
use awc::http::header::HeaderName;
use serde::Deserialize;

use super::{Upstream, UpstreamError};
use crate::config::CentralConfig;
use crate::entitlements::Lookup;
use crate::state::RepoSet;

/// Largest `_catalog` answer we accept.
const CATALOG_LIMIT: usize = 64 * 1024 * 1024;

pub struct CentralClient {
    upstream: Upstream,
    catalog_url: String,
    cfg: CentralConfig,
}

#[derive(Deserialize)]
struct Catalog {
    repositories: Vec<String>,
}

impl CentralClient {
    pub fn new(cfg: &CentralConfig, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self {
            upstream: Upstream::new(tls, cfg.timeout),
            catalog_url: cfg.endpoint("_catalog"),
            cfg: cfg.clone(),
        }
    }

    pub fn config(&self) -> &CentralConfig {
        &self.cfg
    }

    pub fn client(&self) -> &awc::Client {
        self.upstream.client()
    }

    /// `GET /v2/_catalog` with `HostUUID`.
    pub async fn catalog_for_host(&self, uuid: &str) -> Lookup {
        let Ok(value) = awc::http::header::HeaderValue::from_str(uuid) else {
            return Lookup::Failed("host UUID is not a valid header value".into());
        };
        self.catalog((HeaderName::from_static("hostuuid"), value))
            .await
    }

    /// `GET /v2/_catalog` with a client's own `Authorization` (bearer token or Basic).
    pub async fn catalog_for_authorization(&self, authorization: &str) -> Lookup {
        let Ok(value) = awc::http::header::HeaderValue::from_str(authorization) else {
            return Lookup::Rejected;
        };
        self.catalog((awc::http::header::AUTHORIZATION, value))
            .await
    }

    /// `GET /v2/_catalog` with one identifying header: head and answer within
    /// `central.timeout_secs`. A central stalling mid-answer would otherwise
    /// hold the lookup, and every request coalesced on it, for the whole stall.
    async fn catalog(&self, header: (HeaderName, awc::http::header::HeaderValue)) -> Lookup {
        let timeout = self.cfg.timeout;
        actix_web::rt::time::timeout(timeout, self.catalog_within(header))
            .await
            .unwrap_or_else(|_| {
                Lookup::Failed(format!("central did not answer within {timeout:?}"))
            })
    }

    async fn catalog_within(
        &self,
        (name, value): (HeaderName, awc::http::header::HeaderValue),
    ) -> Lookup {
        let sent = send(&self.upstream, |client| {
            client
                .get(&self.catalog_url)
                .insert_header(("Accept", "application/json"))
                .insert_header((name.clone(), value.clone()))
        })
        .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => return Lookup::Failed(e.to_string()),
        };
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Lookup::Rejected,
            other => return Lookup::Failed(format!("central answered {other}")),
        }
        let body = match resp.body().limit(CATALOG_LIMIT).await {
            Ok(b) => b,
            Err(e) => {
                return Lookup::Failed(UpstreamError::from_payload(e, CATALOG_LIMIT).to_string());
            }
        };
        match serde_json::from_slice::<Catalog>(&body) {
            Ok(c) => Lookup::Granted(RepoSet::new(c.repositories)),
            Err(e) => Lookup::Failed(format!("malformed _catalog answer: {e}")),
        }
    }
}

/// Central's answer to a token request, read whole (it is small).
pub struct TokenAnswer {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub date: Option<String>,
    pub body: bytes::Bytes,
}

/// Largest token answer accepted.
const TOKEN_LIMIT: usize = 1024 * 1024;

impl CentralClient {
    /// `GET /v2/token?<query>` with the client's `Authorization`, if any.
    pub async fn token(
        &self,
        authorization: Option<&str>,
        query: &str,
    ) -> Result<TokenAnswer, UpstreamError> {
        let url = if query.is_empty() {
            self.cfg.endpoint("token")
        } else {
            format!("{}?{query}", self.cfg.endpoint("token"))
        };
        let authorization = authorization
            .map(|auth| {
                awc::http::header::HeaderValue::from_str(auth).map_err(|_| {
                    UpstreamError::Response("Authorization is not a valid header value".into())
                })
            })
            .transpose()?;
        let mut resp = send(&self.upstream, |client| {
            let req = client
                .get(&url)
                .insert_header(("Accept", "application/json"));
            match &authorization {
                Some(value) => req.insert_header((awc::http::header::AUTHORIZATION, value.clone())),
                None => req,
            }
        })
        .await?
        .timeout(self.cfg.timeout);
        let header = |name| super::header_text(resp.headers(), name);
        let content_type = header(awc::http::header::CONTENT_TYPE);
        let date = header(awc::http::header::DATE);
        let body = resp
            .body()
            .limit(TOKEN_LIMIT)
            .await
            .map_err(|e| UpstreamError::from_payload(e, TOKEN_LIMIT))?;
        Ok(TokenAnswer {
            status: resp.status(),
            content_type,
            date,
            body,
        })
    }
}

/// Send the GET that `build` makes (see [`Upstream::send`] for the retry).
async fn send<F>(upstream: &Upstream, build: F) -> Result<awc::ClientResponse, UpstreamError>
where
    F: Fn(&awc::Client) -> awc::ClientRequest,
{
    let started = std::time::Instant::now();
    let sent = upstream.send(build).await.map_err(UpstreamError::from_send);
    crate::admin::metrics::upstream("central", started, sent.as_ref().map(|r| r.status()));
    sent
}
