//! TLS for the client listeners and for our upstream connections.
//!
//! Server side: the certificate is swappable (SIGHUP re-reads it), and a client
//! certificate is requested but optional. The handshake proves only that the
//! client holds the key of the certificate it presents; whether that certificate
//! is a valid subscription certificate is decided by the auth backends, so an
//! invalid one is answered with a registry-format 401 instead of an opaque
//! handshake alert.

mod client_auth;
mod upstream;

use std::path::Path;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use client_auth::OptionalClientAuth;
pub use upstream::client_config;

/// The one crypto provider used everywhere (ring: no C toolchain beyond cc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Errors loading TLS material, worded for an admin.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {message}")]
    Certs { path: String, message: String },
    #[error("cannot read a private key from {path}: {message}")]
    Key { path: String, message: String },
    #[error("{0}")]
    Other(String),
}

pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Certs {
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate found".into()));
    }
    Ok(certs)
}

pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Load a certificate chain and its key, checking that they belong together.
pub fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certs(cert)?;
    let key_der = read_key(key)?;
    let ck = CertifiedKey::from_der(chain, key_der, &provider())
        .map_err(|e| TlsError::Other(format!("{} and {}: {e}", cert.display(), key.display())))?;
    Ok(Arc::new(ck))
}

/// Serves whichever certificate was loaded last.
#[derive(Debug)]
pub struct SwappableCert(ArcSwap<CertifiedKey>);

impl SwappableCert {
    pub fn new(ck: Arc<CertifiedKey>) -> Self {
        Self(ArcSwap::new(ck))
    }
    pub fn replace(&self, ck: Arc<CertifiedKey>) {
        self.0.store(ck);
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Handles to what a reload may change without rebinding the listeners.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub cert: Arc<SwappableCert>,
    pub client_auth: Arc<OptionalClientAuth>,
}

impl ServerTls {
    pub fn build(cert: &Path, key: &Path, client_ca: &Path) -> Result<Self, TlsError> {
        let cert = Arc::new(SwappableCert::new(certified_key(cert, key)?));
        let client_auth = Arc::new(OptionalClientAuth::from_ca_file(client_ca)?);
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Other(e.to_string()))?
            .with_client_cert_verifier(client_auth.clone())
            .with_cert_resolver(cert.clone());
        // flatpak's libcurl negotiates h2; podman and skopeo speak HTTP/1.1 and
        // reconnect for every request, so session resumption is worth having.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Stateless TLS 1.3 tickets: the client keeps the (encrypted) session.
        // A server-side cache holds each session's client certificate chain,
        // 7 KB an entry: 16,384 entries grew the process by 115 MB under load.
        config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| TlsError::Other(format!("session tickets: {e}")))?;
        // What remains for TLS 1.2 session IDs stays small.
        config.session_storage = ServerSessionMemoryCache::new(1024);
        Ok(Self {
            config: Arc::new(config),
            cert,
            client_auth,
        })
    }

    /// Re-read the certificate, key and client CA bundle. Either all of them
    /// load and are swapped in, or nothing changes.
    pub fn reload(&self, cert: &Path, key: &Path, client_ca: &Path) -> Result<(), TlsError> {
        let ck = certified_key(cert, key)?;
        let hints = client_auth::hint_subjects(client_ca)?;
        self.cert.replace(ck);
        self.client_auth.replace_hints(hints);
        Ok(())
    }
}

/// Leaked hint lists are tiny and replaced only on reload.
pub(crate) type Hints = RwLock<&'static [rustls::DistinguishedName]>;
