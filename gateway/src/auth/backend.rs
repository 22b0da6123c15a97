//! The one boundary between the core and whatever decides identities.
//!
//! The core never parses certificates or tokens: it hands the raw facts of a
//! request to a chain of backends (dynamic plugins in production) and gets an
//! identity back.

use std::net::SocketAddr;

use super::Identity;

/// What a backend may look at. Everything is borrowed for the duration of one call.
#[derive(Clone, Copy, Debug, Default)]
pub struct AuthFacts<'a> {
    /// The TLS peer's certificate chain as presented, DER, end-entity first.
    /// Possession of the leaf's key was proven in the handshake; the chain itself
    /// is NOT verified yet: that is the backend's job.
    pub tls_chain: &'a [Vec<u8>],
    /// A certificate forwarded by a trusted frontend (already checked against
    /// `server.trusted_frontends`), DER.
    pub forwarded_cert: Option<&'a [u8]>,
    /// The raw `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub peer: Option<SocketAddr>,
}

/// A backend's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthDecision {
    /// The request is from this identity; the chain stops here.
    Allow(Identity),
    /// A bearer token the gateway must resolve (its token store, else central):
    /// the lowercase hex SHA-256 of the token. The chain stops here.
    Token(String),
    /// Credentials were presented and are not acceptable: 401, the chain stops here.
    /// The reason is for logs only and never reaches the client.
    Deny(String),
    /// Not this backend's business: ask the next one.
    Abstain,
}

/// A backend that could not decide (crashed, timed out, answered garbage).
/// The request fails closed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("auth backend {backend}: {message}")]
pub struct BackendError {
    pub backend: String,
    pub message: String,
}

/// What a backend did when asked to reload (SIGHUP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// It re-read what it loads from outside its configuration.
    Reloaded,
    /// It cannot reload: it keeps what it loaded at start.
    Unsupported,
    /// It kept its previous state; why, for the logs.
    Failed(String),
}

/// One authentication backend. `authenticate` may be called concurrently.
pub trait Authenticator: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn authenticate(&self, facts: &AuthFacts<'_>) -> Result<AuthDecision, BackendError>;

    /// Re-read what the backend loaded at start from outside the
    /// configuration (a CA bundle, say). Runs while `authenticate` calls are
    /// in flight on other threads; the backend switches atomically, or on
    /// failure keeps its previous state.
    fn reload(&self) -> ReloadOutcome {
        ReloadOutcome::Unsupported
    }

    /// Whether a call may wait (I/O, sleeping): such a chain runs on the
    /// blocking pool, under `plugins.call_timeout_ms`.
    fn may_block(&self) -> bool {
        true
    }
}
