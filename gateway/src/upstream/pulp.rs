//! Pulp's registry API: the Flatpak index and the v2 read routes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use awc::http::{Method, StatusCode};
use bytes::Bytes;

use super::{Upstream, UpstreamError};
use crate::config::PulpConfig;

pub struct PulpClient {
    upstream: Upstream,
    base: String,
    answered: Arc<AtomicBool>,
    /// `pulp.timeout_secs`: the whole index body must arrive within it.
    timeout: Duration,
    /// `pulp.max_index_mb`, in bytes.
    index_limit: usize,
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
            upstream: Upstream::new(tls, cfg.timeout),
            base: cfg.registry_base(),
            answered,
            timeout: cfg.timeout,
            index_limit: cfg.max_index_bytes,
        }
    }

    /// Send the GET or HEAD that `build` makes (see [`Upstream::send`] for the retry).
    async fn send<F>(&self, build: F) -> Result<awc::ClientResponse, UpstreamError>
    where
        F: Fn(&awc::Client) -> awc::ClientRequest,
    {
        let started = Instant::now();
        let sent = self
            .upstream
            .send(build)
            .await
            .map_err(UpstreamError::from_send);
        crate::admin::metrics::upstream("pulp", started, sent.as_ref().map(|r| r.status()));
        if sent.as_ref().is_ok_and(|r| !r.status().is_server_error()) {
            self.answered.store(true, Ordering::Release);
        }
        sent
    }

    /// `GET {registry}/index/{kind}?{query}`, body read whole (it must be parsed).
    ///
    /// The body must arrive within `pulp.timeout_secs` like the head: a Pulp
    /// that stalls after the head would otherwise hold every client of that
    /// query (they share one fetch) for as long as the stall. One larger than
    /// `pulp.max_index_mb` is refused as soon as its `Content-Length` or its
    /// size says so: a 200 MB index parsed into about 800 MB. And a body cut
    /// short of its `Content-Length` is a failed fetch (awc ends it without an
    /// error when the connection closes), not an index that happens to be
    /// malformed, so the previous index may serve.
    pub async fn index(&self, kind: &str, query: &str) -> Result<Buffered, UpstreamError> {
        let url = if query.is_empty() {
            format!("{}/index/{kind}", self.base)
        } else {
            format!("{}/index/{kind}?{query}", self.base)
        };
        let mut resp = self
            .send(|client| {
                client
                    .get(&url)
                    .insert_header(("Accept", "application/json"))
            })
            .await?;
        let header = |name| super::header_text(resp.headers(), name);
        let content_type = header(awc::http::header::CONTENT_TYPE);
        let declared: Option<usize> =
            header(awc::http::header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let limit = self.index_limit;
        let read = actix_web::rt::time::timeout(self.timeout, resp.body().limit(limit)).await;
        let failed = match read {
            Ok(Ok(body)) if declared.is_none_or(|d| d == body.len()) => {
                return Ok(Buffered {
                    status: resp.status(),
                    content_type,
                    body,
                });
            }
            Ok(Ok(_)) => {
                UpstreamError::Response("Pulp's index ended before its Content-Length".into())
            }
            Ok(Err(awc::error::PayloadError::Overflow)) => {
                tracing::warn!(
                    limit_mib = limit / (1024 * 1024),
                    "Pulp's index is larger than pulp.max_index_mb; refused"
                );
                UpstreamError::TooLarge(limit)
            }
            Ok(Err(other)) => UpstreamError::Response(other.to_string()),
            Err(_) => UpstreamError::Timeout,
        };
        // The head was counted when it arrived; what went wrong after it is counted here.
        let kind = match &failed {
            UpstreamError::Timeout => "timeout",
            UpstreamError::TooLarge(_) => "too_large",
            _ => "response",
        };
        metrics::counter!(crate::admin::metrics::UPSTREAM_ERRORS, "upstream" => "pulp", "kind" => kind)
            .increment(1);
        Err(failed)
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
        let url = format!("{}{path_and_query}", self.base);
        self.send(|client| {
            let mut req = client.request(method.clone(), &url);
            for (name, value) in headers {
                req = req.append_header((name.clone(), value.clone()));
            }
            req
        })
        .await
    }
}
