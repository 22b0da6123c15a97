//! HTTP clients for Pulp and central. awc clients are not `Send`, so each
//! worker thread builds its own pair from the shared TLS configuration; each
//! keeps a pool of keep-alive connections.

pub mod central;
pub mod pulp;

use std::sync::Arc;
use std::time::Duration;

/// Why an upstream call produced nothing usable.
#[derive(Clone, Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("timed out")]
    Timeout,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("bad response: {0}")]
    Response(String),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

impl UpstreamError {
    fn from_send(e: awc::error::SendRequestError) -> Self {
        use awc::error::SendRequestError as E;
        match e {
            E::Timeout => UpstreamError::Timeout,
            E::Connect(c) => match c {
                awc::error::ConnectError::Timeout => UpstreamError::Timeout,
                other => UpstreamError::Connect(other.to_string()),
            },
            other => UpstreamError::Response(other.to_string()),
        }
    }

    fn from_payload(e: awc::error::PayloadError, limit: usize) -> Self {
        match e {
            awc::error::PayloadError::Overflow => UpstreamError::TooLarge(limit),
            other => UpstreamError::Response(other.to_string()),
        }
    }
}

/// Build an awc client: no redirects followed (we relay them), no default headers.
pub(crate) fn build_client(
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> awc::Client {
    let mut connector = awc::Connector::new()
        .timeout(timeout.min(Duration::from_secs(10)))
        .limit(256);
    if let Some(tls) = tls {
        connector = connector.rustls_0_23(tls);
    }
    awc::Client::builder()
        .connector(connector)
        .timeout(timeout)
        .disable_redirects()
        .no_default_headers()
        .add_default_header((
            awc::http::header::USER_AGENT,
            concat!("container-gateway/", env!("CARGO_PKG_VERSION")),
        ))
        .finish()
}
