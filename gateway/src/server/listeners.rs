//! The client listeners, assembled from actix-server and actix-http directly.
//!
//! actix-web's `HttpServer` does not let its HTTP/2 settings be chosen beyond
//! the flow-control windows: a client could send a 16 MiB header list on every
//! stream and open streams without limit. Built here, every connection gets
//! the `server.http2_*` limits (through the patched actix-http, see
//! vendor/actix-http/PATCHED.md) and otherwise exactly what `HttpServer` gave
//! it: the connection hook, the TLS handshake deadline, the request and
//! disconnect timeouts, keep-alive, graceful shutdown and the `AppConfig`.

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::{HttpService, Request, Response, TlsAcceptorConfig};
use actix_server::{Server, ServerBuilder};
use actix_service::{IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt, map_config};
use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::AppConfig;
use actix_web::rt::net::TcpStream;

use super::conn;
use crate::config::{Http2Limits, ServerConfig};

/// How long a connection being closed may take to say goodbye.
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Listeners being set up; `run` starts them.
pub struct Listeners {
    builder: ServerBuilder,
    request_timeout: Duration,
    http2: Http2Limits,
}

impl Listeners {
    /// Worker count, signal handling and drain time from `server.*`.
    pub fn new(config: &ServerConfig, handle_signals: bool) -> Self {
        let mut builder = Server::build().shutdown_timeout(config.shutdown_timeout.as_secs());
        if config.workers > 0 {
            builder = builder.workers(config.workers);
        }
        if !handle_signals {
            builder = builder.disable_signals();
        }
        Self {
            builder,
            request_timeout: config.client_request_timeout,
            http2: config.http2,
        }
    }

    /// Serve HTTPS (h2 and http/1.1 by ALPN) on `listener`.
    pub fn tls<F, I, S, B>(
        mut self,
        listener: TcpListener,
        tls: rustls::ServerConfig,
        app: F,
    ) -> std::io::Result<Self>
    where
        F: Fn() -> I + Send + Clone + 'static,
        I: IntoServiceFactory<S, Request>,
        S: ServiceFactory<Request, Config = AppConfig> + 'static,
        S::Error: Into<actix_web::Error> + 'static,
        S::InitError: fmt::Debug,
        S::Response: Into<Response<B>> + 'static,
        <S::Service as Service<Request>>::Future: 'static,
        B: MessageBody + 'static,
    {
        let addr = listener.local_addr()?;
        let shutdown = self.builder.graceful_shutdown_signal();
        let (timeout, limits) = (self.request_timeout, self.http2);
        self.builder = self
            .builder
            .listen(format!("gateway-tls-{addr}"), listener, move || {
                let shutdown = shutdown.clone();
                let acceptor = TlsAcceptorConfig::default().handshake_timeout(timeout);
                HttpService::<TlsStream<TcpStream>, _, _>::build()
                    .graceful_shutdown_signal(move || {
                        let shutdown = shutdown.clone();
                        async move { shutdown.notified().await }
                    })
                    .client_request_timeout(timeout)
                    .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                    .h2_max_header_list_size(limits.max_header_list_bytes)
                    .h2_max_concurrent_streams(limits.max_concurrent_streams)
                    .h2_max_send_buffer_size(limits.max_send_buffer_bytes)
                    .on_connect_ext(|io: &TlsStream<TcpStream>, ext| conn::capture(io, ext))
                    .finish(app_service(app(), true, addr))
                    .rustls_0_23_with_config(tls.clone(), acceptor)
            })?;
        Ok(self)
    }

    /// Serve plain HTTP/1 on `listener` (a trusted frontend on loopback).
    pub fn plain<F, I, S, B>(mut self, listener: TcpListener, app: F) -> std::io::Result<Self>
    where
        F: Fn() -> I + Send + Clone + 'static,
        I: IntoServiceFactory<S, Request>,
        S: ServiceFactory<Request, Config = AppConfig> + 'static,
        S::Error: Into<actix_web::Error> + 'static,
        S::InitError: fmt::Debug,
        S::Response: Into<Response<B>> + 'static,
        <S::Service as Service<Request>>::Future: 'static,
        B: MessageBody + 'static,
    {
        let addr = listener.local_addr()?;
        let shutdown = self.builder.graceful_shutdown_signal();
        let timeout = self.request_timeout;
        self.builder =
            self.builder
                .listen(format!("gateway-plain-{addr}"), listener, move || {
                    let shutdown = shutdown.clone();
                    HttpService::<TcpStream, _, _>::build()
                        .graceful_shutdown_signal(move || {
                            let shutdown = shutdown.clone();
                            async move { shutdown.notified().await }
                        })
                        .client_request_timeout(timeout)
                        .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                        .local_addr(addr)
                        .on_connect_ext(|io: &TcpStream, ext| conn::capture(io, ext))
                        .finish(app_service(app(), false, addr))
                        .tcp()
                })?;
        Ok(self)
    }

    pub fn run(self) -> Server {
        self.builder.run()
    }
}

/// An actix-web `App` as the `Config = ()` service actix-http wants, its
/// errors rendered as responses, with the `AppConfig` `HttpServer` gave it
/// (scheme and host that `ConnectionInfo` falls back on; the gateway itself
/// builds its URLs from `server.public_url`).
fn app_service<I, S, B>(
    app: I,
    secure: bool,
    addr: SocketAddr,
) -> impl ServiceFactory<
    Request,
    Config = (),
    Response = S::Response,
    Error = actix_web::HttpResponse,
    InitError = S::InitError,
>
where
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::Response: Into<Response<B>> + 'static,
{
    let host = addr.to_string();
    let factory = app
        .into_factory()
        .map_err(|err| err.into().error_response());
    map_config(factory, move |()| {
        // actix-web's only public way to say "TLS, this address": hidden and
        // semver-exempt, so an actix-web update that drops it fails to build
        // here rather than changing behaviour (the version is locked).
        AppConfig::__priv_test_new(secure, host.clone(), addr)
    })
}
