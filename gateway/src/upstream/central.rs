//! The central Katello server: which repositories a host or a token may see.

use std::sync::Arc;

use awc::http::StatusCode;
use serde::Deserialize;

use super::{UpstreamError, build_client};
use crate::config::CentralConfig;
use crate::entitlements::Lookup;
use crate::state::RepoSet;

/// Largest `_catalog` answer we accept.
const CATALOG_LIMIT: usize = 64 * 1024 * 1024;

pub struct CentralClient {
    client: awc::Client,
    catalog_url: String,
    cfg: CentralConfig,
}

#[derive(Deserialize)]
struct Catalog {
    repositories: Vec<String>,
}

impl CentralClient {
    pub fn new(cfg: &CentralConfig, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self { client: build_client(tls, cfg.timeout), catalog_url: cfg.endpoint("_catalog"), cfg: cfg.clone() }
    }

    pub fn config(&self) -> &CentralConfig {
        &self.cfg
    }

    pub fn client(&self) -> &awc::Client {
        &self.client
    }

    /// `GET /v2/_catalog` with `HostUUID`.
    pub async fn catalog_for_host(&self, uuid: &str) -> Lookup {
        let req = self.client.get(&self.catalog_url).insert_header(("Accept", "application/json"));
        let req = match awc::http::header::HeaderValue::from_str(uuid) {
            Ok(v) => req.insert_header(("HostUUID", v)),
            Err(_) => return Lookup::Failed("host UUID is not a valid header value".into()),
        };
        Self::catalog(req).await
    }

    /// `GET /v2/_catalog` with a client's own `Authorization` (bearer token or Basic).
    pub async fn catalog_for_authorization(&self, authorization: &str) -> Lookup {
        let req = self.client.get(&self.catalog_url).insert_header(("Accept", "application/json"));
        let req = match awc::http::header::HeaderValue::from_str(authorization) {
            Ok(v) => req.insert_header((awc::http::header::AUTHORIZATION, v)),
            Err(_) => return Lookup::Rejected,
        };
        Self::catalog(req).await
    }

    async fn catalog(req: awc::ClientRequest) -> Lookup {
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Lookup::Failed(UpstreamError::from_send(e).to_string()),
        };
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Lookup::Rejected,
            other => return Lookup::Failed(format!("central answered {other}")),
        }
        let body = match resp.body().limit(CATALOG_LIMIT).await {
            Ok(b) => b,
            Err(e) => return Lookup::Failed(UpstreamError::from_payload(e, CATALOG_LIMIT).to_string()),
        };
        match serde_json::from_slice::<Catalog>(&body) {
            Ok(c) => Lookup::Granted(RepoSet::new(c.repositories)),
            Err(e) => Lookup::Failed(format!("malformed _catalog answer: {e}")),
        }
    }
}
