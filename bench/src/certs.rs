//! Host certificates in bulk: an ECDSA CA and one leaf per host (`CN=<uuid>`)
//! sharing a key, in the forwarded-header form Apache produces. ECDSA because
//! signing 100,000 RSA certificates would take minutes; the gateway's plugin
//! verifies either the same way.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};

pub struct HostCa {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    leaf_key: KeyPair,
}

impl HostCa {
    pub fn new() -> Result<HostCa, String> {
        let ca_key = KeyPair::generate().map_err(|e| format!("CA key: {e}"))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "bench-katello-default-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params
            .self_signed(&ca_key)
            .map_err(|e| format!("CA cert: {e}"))?;
        Ok(HostCa {
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, ca_key),
            leaf_key: KeyPair::generate().map_err(|e| format!("leaf key: {e}"))?,
        })
    }

    pub fn write_ca(&self, path: &Path) -> Result<(), String> {
        std::fs::write(path, &self.ca_pem).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The `X-RHSM-SSL-Client-Cert` value for host `uuid` (PEM, newlines as spaces).
    pub fn header_for(&self, uuid: &str) -> Result<String, String> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, uuid);
        params.distinguished_name = dn;
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(|e| format!("host cert: {e}"))?;
        Ok(cert.pem().trim_end().replace('\n', " "))
    }

    /// Headers for many hosts, signed on every core.
    pub fn headers_for(&self, uuids: &[String]) -> Result<Vec<String>, String> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let chunk = uuids.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            let parts: Vec<_> = uuids
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|u| self.header_for(u))
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            let mut all = Vec::with_capacity(uuids.len());
            for p in parts {
                all.extend(
                    p.join()
                        .map_err(|_| "signing thread panicked".to_owned())??,
                );
            }
            Ok(all)
        })
    }
}

/// A UUID-shaped, distinct id for host `i` of a run.
pub fn host_uuid(run: u32, i: usize) -> String {
    format!("{run:08x}-{:04x}-4a21-9c6f-{i:012x}", (i >> 16) & 0xffff)
}
