//! A throw-away PKI shaped like a Katello deployment, for tests.
//!
//! ```no_run
//! use gateway_tests::pki::Pki;
//!
//! let pki = Pki::new();                        // a katello-default-ca look-alike
//! let host = pki.host_cert("0d9c2c52-...");    // Candlepin SCA-shaped, CN = uuid
//! let files = pki.write_to(std::path::Path::new("/tmp/x")); // ca.pem, server.pem, ...
//! let chain: Vec<Vec<u8>> = host.chain_der();  // DER, leaf first, as `AuthFacts::tls_chain`
//! let header = host.forwarded_header_value();  // PEM with spaces, as Apache forwards it
//! ```
//!
//! What a [`Pki`] issues ([`Issued`]: PEM and DER of the certificate, its
//! PKCS#8 key, and the chain to send):
//!
//! | method | certificate |
//! |---|---|
//! | [`Pki::host_cert`] | subscription certificate as Candlepin issues it (below), valid now |
//! | [`Pki::expired_host_cert`] / [`Pki::not_yet_valid_host_cert`] | the same, outside its validity period |
//! | [`Pki::host_cert_from_other_ca`] | the same, signed by a CA with the same name but another key |
//! | [`Pki::host_cert_via_intermediate`] | the same, signed by an intermediate CA; `chain_der()` includes it |
//! | [`Pki::cert_without_cn`] | signed by the CA, subject `O=...` only |
//! | [`Pki::server_cert`] | TLS server certificate for `localhost`, `127.0.0.1` and `::1` |
//! | [`Pki::management_cert`] | client certificate for Katello's management calls (`CN=katello.example.com`) |
//!
//! The subscription certificate matches Candlepin's: RSA-2048, sha256WithRSA,
//! `CN=<uuid>, O=<org>`; non-critical basicConstraints CA:FALSE; non-critical
//! keyUsage digitalSignature, keyEncipherment, dataEncipherment; EKU
//! clientAuth; Netscape cert type SSL client + S/MIME; a subjectAltName of two
//! directory names; Red Hat extensions `1.3.6.1.4.1.2312.9.{6,7,8}` with a
//! ~1.6 KB opaque payload, so the PEM is 3-4 KB.
//!
//! RSA key generation is slow, so keys come from a small process-wide pool and
//! are shared between certificates and between `Pki` values. Consecutive
//! `Pki::new()` calls get different CA keys, so certificates of one do not
//! verify against the CA of the next one.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_RSA_SHA256, SanType,
    SerialNumber,
};
use rsa::pkcs8::EncodePrivateKey;
use rsa::rand_core::{OsRng, RngCore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// The organisation (Candlepin owner key) used in subjects.
pub const ORG: &str = "Default_Organization";
/// The CN of the management client certificate.
pub const MANAGEMENT_CN: &str = "katello.example.com";

/// A certificate with its key.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    /// PKCS#8 PEM.
    pub key_pem: String,
    pub key_der: Vec<u8>,
    /// Intermediate CA certificates (DER) between this one and the CA, nearest first.
    pub intermediates_der: Vec<Vec<u8>>,
}

impl Issued {
    /// Leaf first, then intermediates: what a client sends in TLS, and the
    /// shape of `AuthFacts::tls_chain`.
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        std::iter::once(self.cert_der.clone())
            .chain(self.intermediates_der.iter().cloned())
            .collect()
    }

    /// Leaf and intermediates, PEM, concatenated (a client's `client.cert`).
    pub fn chain_pem(&self) -> String {
        let mut out = self.cert_pem.clone();
        for der in &self.intermediates_der {
            out.push_str(&pem("CERTIFICATE", der));
        }
        out
    }

    /// The chain for rustls (`ClientConfig::with_client_auth_cert`, `ServerConfig::with_single_cert`).
    pub fn rustls_chain(&self) -> Vec<CertificateDer<'static>> {
        self.chain_der()
            .into_iter()
            .map(CertificateDer::from)
            .collect()
    }

    pub fn rustls_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// The leaf as Apache's `RequestHeader set X-RHSM-SSL-Client-Cert "%{SSL_CLIENT_CERT}s"`
    /// forwards it: PEM with newlines turned into spaces.
    pub fn forwarded_header_value(&self) -> String {
        self.cert_pem.trim_end().replace('\n', " ")
    }

    /// Write `<stem>.pem` (the chain) and `<stem>-key.pem` into `dir`.
    pub fn write_to(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        (
            write_file(dir, &format!("{stem}.pem"), &self.chain_pem()),
            write_file(dir, &format!("{stem}-key.pem"), &self.key_pem),
        )
    }
}

/// Paths written by [`Pki::write_to`].
#[derive(Clone, Debug)]
pub struct PkiFiles {
    pub dir: PathBuf,
    /// The CA certificate (`server.client_ca`, and what clients trust).
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub management_cert: PathBuf,
    pub management_key: PathBuf,
}

struct Ca {
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

/// A CA and everything it issues. Cheap to create once the key pool is warm.
pub struct Pki {
    ca: Ca,
    other_ca: OnceLock<Ca>,
    intermediate: OnceLock<Ca>,
    server: OnceLock<Issued>,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Pki {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let slot = if NEXT.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
            Slot::CaA
        } else {
            Slot::CaB
        };
        Pki {
            ca: make_ca(slot, None),
            other_ca: OnceLock::new(),
            intermediate: OnceLock::new(),
            server: OnceLock::new(),
        }
    }

    pub fn ca_pem(&self) -> String {
        pem("CERTIFICATE", &self.ca.cert_der)
    }

    pub fn ca_der(&self) -> Vec<u8> {
        self.ca.cert_der.clone()
    }

    /// A Candlepin subscription certificate for consumer `uuid`, valid now.
    pub fn host_cert(&self, uuid: &str) -> Issued {
        let now = OffsetDateTime::now_utc();
        issue(
            &self.ca,
            &host_params(uuid, now - Duration::hours(1), now + Duration::days(365)),
            &[],
        )
    }

    /// As [`Pki::host_cert`], expired yesterday.
    pub fn expired_host_cert(&self, uuid: &str) -> Issued {
        let now = OffsetDateTime::now_utc();
        issue(
            &self.ca,
            &host_params(uuid, now - Duration::days(400), now - Duration::days(1)),
            &[],
        )
    }

    /// As [`Pki::host_cert`], valid from tomorrow.
    pub fn not_yet_valid_host_cert(&self, uuid: &str) -> Issued {
        let now = OffsetDateTime::now_utc();
        issue(
            &self.ca,
            &host_params(uuid, now + Duration::days(1), now + Duration::days(365)),
            &[],
        )
    }

    /// As [`Pki::host_cert`], but signed by another CA that has the same
    /// distinguished name as this one (an impostor), so only the signature
    /// tells them apart.
    pub fn host_cert_from_other_ca(&self, uuid: &str) -> Issued {
        let other = self.other_ca.get_or_init(|| make_ca(Slot::Other, None));
        let now = OffsetDateTime::now_utc();
        issue(
            other,
            &host_params(uuid, now - Duration::hours(1), now + Duration::days(365)),
            &[],
        )
    }

    /// The other CA's certificate, e.g. to build a bundle that trusts it.
    pub fn other_ca_pem(&self) -> String {
        pem(
            "CERTIFICATE",
            &self
                .other_ca
                .get_or_init(|| make_ca(Slot::Other, None))
                .cert_der,
        )
    }

    /// As [`Pki::host_cert`], signed by an intermediate CA under this CA;
    /// [`Issued::chain_der`] carries the intermediate.
    pub fn host_cert_via_intermediate(&self, uuid: &str) -> Issued {
        let inter = self
            .intermediate
            .get_or_init(|| make_ca(Slot::Intermediate, Some(&self.ca)));
        let now = OffsetDateTime::now_utc();
        issue(
            inter,
            &host_params(uuid, now - Duration::hours(1), now + Duration::days(365)),
            std::slice::from_ref(&inter.cert_der),
        )
    }

    /// Signed by the CA, valid, but with no CN in the subject.
    pub fn cert_without_cn(&self) -> Issued {
        let now = OffsetDateTime::now_utc();
        let mut params = host_params(
            "unused",
            now - Duration::hours(1),
            now + Duration::days(365),
        );
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, ORG);
        params.distinguished_name = dn;
        issue(&self.ca, &params, &[])
    }

    /// TLS server certificate for `localhost`, `127.0.0.1` and `::1`, signed by the CA.
    pub fn server_cert(&self) -> Issued {
        self.server
            .get_or_init(|| {
                let mut params = leaf_params("localhost", Duration::days(365));
                params.subject_alt_names = vec![
                    SanType::DnsName("localhost".try_into().expect("static DNS name")),
                    SanType::IpAddress([127, 0, 0, 1].into()),
                    SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
                ];
                params.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                issue(&self.ca, &params, &[])
            })
            .clone()
    }

    /// A client certificate named `cn`, signed by the CA, as Katello presents
    /// for the management routes ([`MANAGEMENT_CN`] is the usual name).
    pub fn management_cert(&self, cn: &str) -> Issued {
        let mut params = leaf_params(cn, Duration::days(365));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        issue(&self.ca, &params, &[])
    }

    /// Write `ca.pem`, `server.pem`/`server-key.pem` and
    /// `management.pem`/`management-key.pem` into `dir`.
    pub fn write_to(&self, dir: &Path) -> PkiFiles {
        let ca = write_file(dir, "ca.pem", &self.ca_pem());
        let (server_cert, server_key) = self.server_cert().write_to(dir, "server");
        let (management_cert, management_key) = self
            .management_cert(MANAGEMENT_CN)
            .write_to(dir, "management");
        PkiFiles {
            dir: dir.to_owned(),
            ca,
            server_cert,
            server_key,
            management_cert,
            management_key,
        }
    }
}

/// Write `contents` to `dir/name` and return the path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// PEM-encode one DER object.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

// ---------------------------------------------------------------------------
// Keys

#[derive(Clone, Copy)]
enum Slot {
    CaA,
    CaB,
    Other,
    Intermediate,
    Leaf,
}

/// PKCS#8 DER of a pooled RSA-2048 key, generated on first use.
fn pooled_key(slot: Slot) -> &'static [u8] {
    static POOL: [OnceLock<Vec<u8>>; 5] = [const { OnceLock::new() }; 5];
    POOL[slot as usize].get_or_init(|| {
        let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA key generation");
        key.to_pkcs8_der()
            .expect("PKCS#8 encoding")
            .as_bytes()
            .to_vec()
    })
}

fn key_pair(slot: Slot) -> KeyPair {
    let der = PrivatePkcs8KeyDer::from(pooled_key(slot));
    KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_RSA_SHA256).expect("pooled RSA key loads")
}

// ---------------------------------------------------------------------------
// Certificates

fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// The DN puppet-certs gives katello-default-ca (every `Pki` uses it).
fn ca_dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::StateOrProvinceName, "North Carolina");
    dn.push(DnType::LocalityName, "Raleigh");
    dn.push(DnType::OrganizationName, "Katello");
    dn.push(DnType::OrganizationalUnitName, "SomeOrgUnit");
    dn.push(DnType::CommonName, cn);
    dn
}

fn make_ca(slot: Slot, parent: Option<&Ca>) -> Ca {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_dn(if parent.is_some() {
        "Katello Intermediate CA"
    } else {
        "katello.example.com"
    });
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::days(30);
    params.not_after = now + Duration::days(3650);
    params.serial_number = Some(serial());
    params.use_authority_key_identifier_extension = parent.is_some();
    let key = key_pair(slot);
    let cert = match parent {
        None => params.self_signed(&key),
        Some(p) => params.signed_by(&key, &p.issuer),
    }
    .expect("CA certificate");
    Ca {
        cert_der: cert.der().to_vec(),
        issuer: Issuer::new(params, key),
    }
}

fn leaf_params(cn: &str, lifetime: Duration) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.not_before = now - Duration::hours(1);
    params.not_after = now + lifetime;
    params.serial_number = Some(serial());
    params.use_authority_key_identifier_extension = true;
    params.is_ca = IsCa::ExplicitNoCa;
    params
}

fn issue(ca: &Ca, params: &CertificateParams, intermediates: &[Vec<u8>]) -> Issued {
    let key = key_pair(Slot::Leaf);
    let cert = params
        .signed_by(&key, &ca.issuer)
        .expect("certificate signs");
    Issued {
        cert_pem: pem("CERTIFICATE", cert.der()),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
        intermediates_der: intermediates.to_vec(),
    }
}

const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
const OID_NETSCAPE_CERT_TYPE: &[u64] = &[2, 16, 840, 1, 113730, 1, 1];
const OID_CN: &[u64] = &[2, 5, 4, 3];
const OID_O: &[u64] = &[2, 5, 4, 10];
const OID_RH_ENTITLEMENT_VERSION: &[u64] = &[1, 3, 6, 1, 4, 1, 2312, 9, 6];
const OID_RH_ENTITLEMENT_DATA: &[u64] = &[1, 3, 6, 1, 4, 1, 2312, 9, 7];
const OID_RH_ENTITLEMENT_TYPE: &[u64] = &[1, 3, 6, 1, 4, 1, 2312, 9, 8];
/// Size of the opaque `2312.9.7` payload, which brings the PEM to 3-4 KB.
const RH_PAYLOAD_LEN: usize = 1600;

/// Candlepin's extensions are all non-critical; rcgen marks basicConstraints
/// and keyUsage critical, so those (and what rcgen cannot express: directory
/// names in the SAN, the Netscape type, Red Hat OIDs) are written by hand.
fn host_params(
    uuid: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, uuid);
    dn.push(DnType::OrganizationName, ORG);
    params.distinguished_name = dn;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(serial());
    params.use_authority_key_identifier_extension = true;
    params.is_ca = IsCa::NoCa;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];

    let san = der::seq(&[
        &der::tlv(0xa4, &der::name(&[(OID_CN, uuid), (OID_O, ORG)])),
        &der::tlv(
            0xa4,
            &der::name(&[(OID_CN, &format!("{uuid}.consumers.example.com"))]),
        ),
    ]);
    params.custom_extensions = vec![
        CustomExtension::from_oid_content(OID_BASIC_CONSTRAINTS, der::seq(&[])),
        // digitalSignature, keyEncipherment, dataEncipherment: bits 0, 2, 3.
        CustomExtension::from_oid_content(OID_KEY_USAGE, vec![0x03, 0x02, 0x04, 0xb0]),
        // SSL client (bit 0) and S/MIME (bit 2).
        CustomExtension::from_oid_content(OID_NETSCAPE_CERT_TYPE, vec![0x03, 0x02, 0x05, 0xa0]),
        CustomExtension::from_oid_content(OID_SUBJECT_ALT_NAME, san),
        CustomExtension::from_oid_content(OID_RH_ENTITLEMENT_VERSION, der::tlv(0x0c, b"3.4")),
        CustomExtension::from_oid_content(OID_RH_ENTITLEMENT_TYPE, der::tlv(0x0c, b"OrgLevel")),
        CustomExtension::from_oid_content(
            OID_RH_ENTITLEMENT_DATA,
            der::tlv(0x04, &opaque_payload(uuid)),
        ),
    ];
    params
}

/// Looks like Candlepin's zlib-compressed entitlement data: a zlib header,
/// then incompressible bytes (deterministic per uuid).
fn opaque_payload(uuid: &str) -> Vec<u8> {
    let mut state = uuid.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut out = vec![0x78, 0x9c];
    while out.len() < RH_PAYLOAD_LEN {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(RH_PAYLOAD_LEN);
    out
}

/// Just enough DER to write the extensions rcgen cannot.
mod der {
    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(content);
        out
    }

    pub fn seq(items: &[&[u8]]) -> Vec<u8> {
        tlv(0x30, &items.concat())
    }

    pub fn oid(arcs: &[u64]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut encode = |mut v: u64| {
            let mut chunk = vec![(v & 0x7f) as u8];
            v >>= 7;
            while v > 0 {
                chunk.push(0x80 | (v & 0x7f) as u8);
                v >>= 7;
            }
            chunk.reverse();
            body.extend_from_slice(&chunk);
        };
        encode(arcs[0] * 40 + arcs[1]);
        for &arc in &arcs[2..] {
            encode(arc);
        }
        tlv(0x06, &body)
    }

    /// An X.501 Name: one single-valued RDN per attribute, UTF8String values.
    pub fn name(attributes: &[(&[u64], &str)]) -> Vec<u8> {
        let rdns: Vec<Vec<u8>> = attributes
            .iter()
            .map(|(o, v)| tlv(0x31, &seq(&[&oid(o), &tlv(0x0c, v.as_bytes())])))
            .collect();
        tlv(0x30, &rdns.concat())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_helpers() {
        assert_eq!(
            der::oid(&[2, 5, 29, 17]),
            vec![0x06, 0x03, 0x55, 0x1d, 0x11]
        );
        assert_eq!(
            der::oid(&[1, 3, 6, 1, 4, 1, 2312, 9, 7]),
            vec![0x06, 0x09, 0x2b, 6, 1, 4, 1, 0x92, 0x08, 9, 7]
        );
        assert_eq!(der::tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(der::tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
    }
}
