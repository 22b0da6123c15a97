//! An optional client-certificate verifier that proves key possession only.

use std::path::Path;
use std::sync::RwLock;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{Hints, TlsError, provider, read_certs};

/// Asks for a client certificate (hinting the client CA's subject, without which
/// Go clients such as podman send none), accepts the handshake with or without
/// one, and verifies the handshake signature so the client provably holds the key.
#[derive(Debug)]
pub struct OptionalClientAuth {
    hints: Hints,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

pub(crate) fn hint_subjects(ca: &Path) -> Result<Vec<DistinguishedName>, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in read_certs(ca)? {
        store.add(cert).map_err(|e| TlsError::Certs {
            path: ca.display().to_string(),
            message: e.to_string(),
        })?;
    }
    Ok(store.subjects())
}

impl OptionalClientAuth {
    pub fn from_ca_file(ca: &Path) -> Result<Self, TlsError> {
        let hints = hint_subjects(ca)?;
        Ok(Self {
            hints: RwLock::new(Vec::leak(hints)),
            algorithms: provider().signature_verification_algorithms,
        })
    }

    pub fn replace_hints(&self, hints: Vec<DistinguishedName>) {
        let leaked: &'static [DistinguishedName] = Vec::leak(hints);
        match self.hints.write() {
            Ok(mut guard) => *guard = leaked,
            Err(poisoned) => *poisoned.into_inner() = leaked,
        }
    }
}

impl ClientCertVerifier for OptionalClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        match self.hints.read() {
            Ok(guard) => *guard,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The chain is judged per request by the auth backends (see module docs).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
