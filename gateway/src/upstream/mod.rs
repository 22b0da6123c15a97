//! HTTP clients for Pulp and central. awc clients are not `Send`, so each
//! worker thread builds its own pair from the shared TLS configuration; each
//! keeps a pool of keep-alive connections.
//!
//! # One retry on a dead pooled connection
//!
//! A keep-alive connection can die while it sits in the pool: Pulp or central
//! restarts, a server's idle timeout closes it just as we pick it up, or the
//! close arrives while the worker is busy and awc's liveness check (one
//! non-blocking read when the connection is taken from the pool) does not see
//! it yet. The next request sent on it fails at once, without the upstream
//! having answered anything, and without a retry the client would get a
//! 502/503 for an upstream that is perfectly healthy. So [`Upstream::send`]
//! sends a request again, exactly once and on a connection opened for it, when
//! all of these hold:
//!
//! * the method is GET or HEAD and the request has no body (every request we
//!   make; sending it twice has no effect the first one would not have had);
//! * the failed attempt ran on a connection taken from the pool, not one
//!   dialled for it (a fresh connection that fails says something about the
//!   upstream, and the answer is the client's 502/503);
//! * not one byte came back on that connection during the attempt, and the
//!   error is a connection-level one: writing the request failed, the peer
//!   closed or reset the connection before a response head, or an HTTP/2
//!   connection went away;
//! * it was not a timeout (a slow upstream is not made slower by asking twice).
//!
//! Once the response head has arrived nothing is retried: body errors surface
//! in the stream handed to the caller, which may already be relaying it to a
//! client.

pub mod central;
pub mod pulp;

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_rt::net::{ActixStream, Ready, TcpStream};
// awc enables actix-tls's `connect` feature; its connector is wrapped below.
use actix_tls::connect::{
    ConnectError as TcpConnectError, ConnectInfo, Connection as TcpConnection,
    Connector as TcpConnector, Resolver,
};
use actix_web::dev::Service;
use actix_web::http::{Method, Uri};
use awc::error::{ConnectError, SendRequestError};
use futures_util::future::{FutureExt, Map};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
            // awc's body deadline: the same stall a caller's own deadline
            // reports as a timeout, whichever of the two fires first.
            awc::error::PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                UpstreamError::Timeout
            }
            other => UpstreamError::Response(other.to_string()),
        }
    }
}

/// What the connection layer saw during one send attempt.
struct Attempt {
    /// A new connection was dialled (the request did not go out on a pooled one).
    dialled: Cell<bool>,
    /// At least one byte was read from the connection.
    read: Cell<bool>,
}

tokio::task_local! {
    /// Set around one attempt by [`Upstream::send`]. awc connects and sends an
    /// HTTP/1 request inside the caller's task, so the connector and the
    /// connection below see it; elsewhere (a body read later, an HTTP/2
    /// connection's own task) it is absent and nothing is noted.
    static ATTEMPT: Attempt;
}

/// The upstream clients of one worker: `pooled` for every request, `fresh`
/// (no connection is ever reused) for the one retry.
pub(crate) struct Upstream {
    pooled: awc::Client,
    fresh: awc::Client,
}

impl Upstream {
    pub(crate) fn new(tls: Option<Arc<rustls::ClientConfig>>, timeout: Duration) -> Self {
        Self {
            pooled: build_client(tls.clone(), timeout, true),
            fresh: build_client(tls, timeout, false),
        }
    }

    /// The pooled client.
    pub(crate) fn client(&self) -> &awc::Client {
        &self.pooled
    }

    /// Build a request with `build` on the pooled client and send it without a
    /// body; when it is a GET or HEAD that failed on a dead pooled connection
    /// (see the module documentation), build and send it once more on a new
    /// connection.
    pub(crate) async fn send<F>(&self, build: F) -> Result<awc::ClientResponse, SendRequestError>
    where
        F: Fn(&awc::Client) -> awc::ClientRequest,
    {
        let req = build(&self.pooled);
        let idempotent = matches!(*req.get_method(), Method::GET | Method::HEAD);
        let attempt = Attempt {
            dialled: Cell::new(false),
            read: Cell::new(false),
        };
        let (sent, reused_silent) = ATTEMPT
            .scope(attempt, async move {
                let sent = req.send().await;
                let reused_silent = ATTEMPT
                    .try_with(|a| !a.dialled.get() && !a.read.get())
                    .unwrap_or(false);
                (sent, reused_silent)
            })
            .await;
        match sent {
            Err(e) if idempotent && reused_silent && is_dead_connection(&e) => {
                tracing::debug!(error = %e, "a pooled upstream connection was dead; retrying once on a new one");
                build(&self.fresh).force_close().send().await
            }
            other => other,
        }
    }
}

/// Errors that mean the connection was unusable before any answer: not
/// timeouts, not malformed answers, not a refused or failed dial.
/// A response header's value as text, if present and visible ASCII.
fn header_text(
    headers: &awc::http::header::HeaderMap,
    name: awc::http::header::HeaderName,
) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn is_dead_connection(e: &SendRequestError) -> bool {
    match e {
        // Writing the request head failed.
        SendRequestError::Send(_) => true,
        // End of stream where the response head should have been (awc reports
        // an end with buffered, unparsed bytes as a different error).
        SendRequestError::Connect(ConnectError::Disconnected) => true,
        SendRequestError::Response(actix_http::error::ParseError::Io(io)) => matches!(
            io.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                // A TLS connection closed without close_notify.
                | io::ErrorKind::UnexpectedEof
        ),
        // The HTTP/2 connection failed or was shut down under the request.
        SendRequestError::H2(h2) => h2.is_io() || h2.is_go_away(),
        _ => false,
    }
}

/// A TCP connection that notes reads in [`ATTEMPT`].
#[derive(Debug)]
struct NotedStream(TcpStream);

impl AsyncRead for NotedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
        if buf.filled().len() > before {
            let _ = ATTEMPT.try_with(|a| a.read.set(true));
        }
        polled
    }
}

impl AsyncWrite for NotedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl ActixStream for NotedStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_read_ready(&self.0, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_write_ready(&self.0, cx)
    }
}

type Dialled = Result<TcpConnection<Uri, TcpStream>, TcpConnectError>;
type Noted = Result<TcpConnection<Uri, NotedStream>, TcpConnectError>;

/// awc's default TCP connector, noting each dial in [`ATTEMPT`] and wrapping
/// the stream in a [`NotedStream`].
#[derive(Clone)]
struct NotingConnector<S> {
    inner: S,
}

impl<S> Service<ConnectInfo<Uri>> for NotingConnector<S>
where
    S: Service<ConnectInfo<Uri>, Response = TcpConnection<Uri, TcpStream>, Error = TcpConnectError>,
{
    type Response = TcpConnection<Uri, NotedStream>;
    type Error = TcpConnectError;
    type Future = Map<S::Future, fn(Dialled) -> Noted>;

    actix_web::dev::forward_ready!(inner);

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let _ = ATTEMPT.try_with(|a| a.dialled.set(true));
        fn wrap(dialled: Dialled) -> Noted {
            dialled.map(|conn| {
                let (io, uri) = conn.into_parts();
                TcpConnection::new(uri, NotedStream(io))
            })
        }
        self.inner.call(req).map(wrap as fn(Dialled) -> Noted)
    }
}

/// Build an awc client: no redirects followed (we relay them), no default
/// headers; `reuse` false keeps no connection for a later request.
fn build_client(
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    reuse: bool,
) -> awc::Client {
    let tcp = NotingConnector {
        inner: TcpConnector::new(Resolver::default()).service(),
    };
    let mut connector = awc::Connector::new()
        .connector(tcp)
        .timeout(timeout.min(Duration::from_secs(10)))
        .limit(256);
    if !reuse {
        connector = connector
            .conn_keep_alive(Duration::ZERO)
            .conn_lifetime(Duration::ZERO);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: io::ErrorKind) -> io::Error {
        io::Error::new(kind, "test")
    }

    #[test]
    fn only_connection_failures_before_an_answer_count_as_a_dead_connection() {
        use actix_http::error::ParseError;
        let dead = [
            SendRequestError::Send(io(io::ErrorKind::BrokenPipe)),
            SendRequestError::Connect(ConnectError::Disconnected),
            SendRequestError::Response(ParseError::Io(io(io::ErrorKind::ConnectionReset))),
            SendRequestError::Response(ParseError::Io(io(io::ErrorKind::UnexpectedEof))),
        ];
        for e in &dead {
            assert!(is_dead_connection(e), "{e}");
        }
        let alive = [
            SendRequestError::Timeout,
            SendRequestError::Connect(ConnectError::Timeout),
            SendRequestError::Connect(ConnectError::Io(io(io::ErrorKind::ConnectionRefused))),
            SendRequestError::Response(ParseError::Incomplete),
            SendRequestError::Response(ParseError::Header),
            // Bytes were left unparsed when the connection ended: an answer had begun.
            SendRequestError::Response(ParseError::Io(io(io::ErrorKind::Other))),
        ];
        for e in &alive {
            assert!(!is_dead_connection(e), "{e}");
        }
    }
}
