//! Pulp's registry API: the Flatpak index and the v2 read routes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use awc::http::{Method, StatusCode};
use bytes::Bytes;

use super::{UpstreamError, build_client};
use crate::config::PulpConfig;

/// Largest index body we take from Pulp (Katello indexes grow with every
/// content view version; 20 MB is large, this leaves room).
pub const INDEX_LIMIT: usize = 512 * 1024 * 1024;

pub struct PulpClient {
    client: awc::Client,
    base: String,
    answered: Arc<AtomicBool>,
}

/// A fully read answer.
pub struct Buffered {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl PulpClient {
    /// `answered` is set on Pulp's first non-5xx answer (readiness).
    pub fn new(
        cfg: &PulpConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
        answered: Arc<AtomicBool>,
    ) -> Self {
        Self {
            client: build_client(tls, cfg.timeout),
            base: cfg.registry_base(),
            answered,
        }
    }

    async fn send(&self, req: awc::ClientRequest) -> Result<awc::ClientResponse, UpstreamError> {
        let started = Instant::now();
        let sent = req.send().await.map_err(UpstreamError::from_send);
        crate::admin::metrics::upstream("pulp", started, sent.as_ref().map(|r| r.status()));
        if sent.as_ref().is_ok_and(|r| !r.status().is_server_error()) {
            self.answered.store(true, Ordering::Release);
        }
        sent
    }

    /// `GET {registry}/index/{kind}?{query}`, body read whole (it must be parsed).
    pub async fn index(&self, kind: &str, query: &str) -> Result<Buffered, UpstreamError> {
        let url = if query.is_empty() {
            format!("{}/index/{kind}", self.base)
        } else {
            format!("{}/index/{kind}?{query}", self.base)
        };
        let mut resp = self
            .send(
                self.client
                    .get(url)
                    .insert_header(("Accept", "application/json")),
            )
            .await?;
        let content_type = resp
            .headers()
            .get(awc::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .body()
            .limit(INDEX_LIMIT)
            .await
            .map_err(|e| UpstreamError::from_payload(e, INDEX_LIMIT))?;
        Ok(Buffered {
            status: resp.status(),
            content_type,
            body,
        })
    }

    /// Send a v2 read request (`path` starts with `/v2/`), keeping the response
    /// body as a stream.
    pub async fn forward(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(
            awc::http::header::HeaderName,
            awc::http::header::HeaderValue,
        )],
    ) -> Result<awc::ClientResponse, UpstreamError> {
        let mut req = self
            .client
            .request(method, format!("{}{path_and_query}", self.base));
        for (name, value) in headers {
            req = req.append_header((name.clone(), value.clone()));
        }
        self.send(req).await
    }
}
