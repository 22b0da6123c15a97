//! rustls client configuration for Pulp and central.

use std::sync::Arc;

use rustls::ClientConfig;

use super::{TlsError, provider, read_certs, read_key};
use crate::config::UpstreamTls;

/// Trust exactly the configured CA bundle and present our client certificate.
pub fn client_config(tls: &UpstreamTls) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &tls.ca {
        for cert in read_certs(ca)? {
            roots.add(cert).map_err(|e| TlsError::Certs {
                path: ca.display().to_string(),
                message: e.to_string(),
            })?;
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Other(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match &tls.client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| TlsError::Other(format!("{}: {e}", cert.display())))?,
        None => builder.with_no_client_auth(),
    };
    // awc speaks HTTP/1.1 to upstreams here; offering h2 would need its h2 path.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
