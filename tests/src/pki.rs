//! A throw-away PKI shaped like a Katello deployment, for tests.
//!
//! ```no_run
//! use gateway_tests::pki::Pki;
//!
//! let pki = Pki::new();                        // a katello-default-ca look-alike
//! let host = pki.host_cert("0d9c2c52-...");    // Candlepin-like, CN = uuid
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
//! | [`Pki::host_cert`] | subscription certificate, Candlepin-like and 3-4 KB (below), valid now |
//! | [`Pki::content_access_cert`] | Candlepin's SCA content access certificate, as `/etc/pki/entitlement/<serial>.pem` |
//! | [`Pki::identity_cert`] | Candlepin's consumer identity certificate, as `/etc/pki/consumer/cert.pem` |
//! | [`Pki::pool_entitlement_cert`] | Candlepin's pool entitlement certificate (type `Basic`, CN = entitlement id) |
//! | [`Pki::anonymous_content_access_cert`] | Candlepin's anonymous cloud consumer certificate (type `basic`, no O) |
//! | [`Pki::partial_entitlement_cert`] | `CN=<uuid>` with the content payload but no entitlement type or version |
//! | [`Pki::expired_host_cert`] / [`Pki::not_yet_valid_host_cert`] | the same, outside its validity period |
//! | [`Pki::host_cert_from_other_ca`] | the same, signed by a CA with the same name but another key |
//! | [`Pki::host_cert_via_intermediate`] | the same, signed by an intermediate CA; `chain_der()` includes it |
//! | [`Pki::cert_without_cn`] | signed by the CA, subject `O=...` only |
//! | [`Pki::server_cert`] | TLS server certificate for `localhost`, `127.0.0.1` and `::1` |
//! | [`Pki::management_cert`] | client certificate for Katello's management calls (`CN=katello.example.com`) |
//!
//! [`Pki::host_cert`] combines both consumer certificates so that one
//! certificate exercises every parser path: RSA-2048, sha256WithRSA,
//! `CN=<uuid>, O=<org>`; non-critical basicConstraints CA:FALSE; non-critical
//! keyUsage digitalSignature, keyEncipherment, dataEncipherment (Candlepin
//! before 2024); EKU clientAuth; Netscape cert type SSL client + S/MIME; the
//! identity certificate's subjectAltName of two directory names; the content
//! access certificate's Red Hat extensions `1.3.6.1.4.1.2312.9.{6,7,8}` with a
//! ~1.6 KB opaque payload, so the PEM is 3-4 KB.
//!
//! The `Candlepin's ...` certificates follow candlepin/candlepin at 48a972fe
//! (`pki/impl/bc/BouncyCastleX509CertificateBuilder.java`, and the
//! `SCACertificateGenerator`, `IdentityCertificateGenerator`,
//! `EntitlementCertificateGenerator`, `AnonymousCertificateGenerator` in
//! `pki/certs/`): the issuer is the CA's subject; the subject is `O=<owner key>`
//! then `CN=<name>` (`X500NameBuilder` order); Netscape cert type SSL client +
//! S/MIME; critical keyUsage digitalSignature; EKU clientAuth; authority and
//! subject key identifiers; non-critical basicConstraints CA:FALSE. The
//! identity certificate adds a subjectAltName (its subject, then `CN=<consumer
//! name>`) and no Red Hat extension. Entitlement certificates add no
//! subjectAltName but `2312.9.6` = UTF8String "3.4", `2312.9.8` = UTF8String
//! type, and `2312.9.7` = OCTET STRING payload: a zlib stream (best
//! compression) of the path segments, each NUL-terminated, followed by the
//! Huffman-coded path tree (here: deterministic filler bytes). Candlepin's keys
//! are RSA-4096 by default; these use the pooled RSA-2048 keys, which no check
//! tells apart.
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

    /// Candlepin's SCA content access certificate for consumer `uuid`, valid
    /// now: what `/etc/pki/entitlement/<serial>.pem` holds and what podman,
    /// skopeo and flatpak present once Katello's host setup has linked it into
    /// `/etc/containers/certs.d/<capsule>/client.cert`.
    pub fn content_access_cert(&self, uuid: &str) -> Issued {
        let payload = content_payload(&[ORG, "Library", "Default_Organization_View"]);
        issue_candlepin(
            &self.ca,
            &candlepin_params(
                Some(ORG),
                uuid,
                None,
                Some(("OrgLevel", payload)),
                Duration::days(365),
            ),
        )
    }

    /// Candlepin's consumer identity certificate for consumer `uuid`, whose
    /// registered name is `name`, valid now.
    pub fn identity_cert(&self, uuid: &str, name: &str) -> Issued {
        issue_candlepin(
            &self.ca,
            &candlepin_params(Some(ORG), uuid, Some(name), None, Duration::days(365 * 16)),
        )
    }

    /// Candlepin's certificate for one pool entitlement (the pre-SCA
    /// `/etc/pki/entitlement/<serial>.pem`): its CN is the entitlement's id,
    /// not a consumer's.
    pub fn pool_entitlement_cert(&self, entitlement_id: &str) -> Issued {
        let payload = content_payload(&[ORG, "Library", "content", "dist", "rhel9"]);
        issue_candlepin(
            &self.ca,
            &candlepin_params(
                Some(ORG),
                entitlement_id,
                None,
                Some(("Basic", payload)),
                Duration::days(365),
            ),
        )
    }

    /// Candlepin's certificate for an anonymous cloud consumer: `CN=<uuid>`
    /// with no organisation, entitlement type `basic`.
    pub fn anonymous_content_access_cert(&self, uuid: &str) -> Issued {
        let payload = content_payload(&["content", "dist", "rhel9"]);
        issue_candlepin(
            &self.ca,
            &candlepin_params(
                None,
                uuid,
                None,
                Some(("basic", payload)),
                Duration::days(2),
            ),
        )
    }

    /// `CN=<uuid>, O=<org>` with a `2312.9.7` payload but neither the type nor
    /// the version extension: neither kind of consumer certificate.
    pub fn partial_entitlement_cert(&self, uuid: &str) -> Issued {
        let mut params = candlepin_params(Some(ORG), uuid, None, None, Duration::days(365));
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                OID_RH_ENTITLEMENT_DATA,
                der::tlv(0x04, &content_payload(&[ORG, "Library"])),
            ));
        issue_candlepin(&self.ca, &params)
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
    issue_with_key(ca, params, key_pair(Slot::Leaf), intermediates)
}

/// As [`issue`], adding the subject key identifier Candlepin writes; rcgen
/// writes one only beside a critical basicConstraints, which Candlepin's is not.
fn issue_candlepin(ca: &Ca, params: &CertificateParams) -> Issued {
    let key = key_pair(Slot::Leaf);
    let mut params = params.clone();
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            OID_SUBJECT_KEY_IDENTIFIER,
            der::tlv(0x04, &params.key_identifier(&key)),
        ));
    issue_with_key(ca, &params, key, &[])
}

fn issue_with_key(
    ca: &Ca,
    params: &CertificateParams,
    key: KeyPair,
    intermediates: &[Vec<u8>],
) -> Issued {
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
const OID_SUBJECT_KEY_IDENTIFIER: &[u64] = &[2, 5, 29, 14];
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

/// The parameters of a certificate as Candlepin's certificate builder makes
/// them (see the module documentation): subject `O=<org>` (when there is one)
/// then `CN=<cn>`; a subjectAltName when `alt_name` is given (the identity
/// certificate); the three Red Hat entitlement extensions when `entitlement`
/// gives their type and payload.
fn candlepin_params(
    org: Option<&str>,
    cn: &str,
    alt_name: Option<&str>,
    entitlement: Option<(&str, Vec<u8>)>,
    lifetime: Duration,
) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let mut subject: Vec<(&[u64], &str)> = Vec::new();
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
        subject.push((OID_O, org));
    }
    dn.push(DnType::CommonName, cn);
    subject.push((OID_CN, cn));
    params.distinguished_name = dn;
    // Candlepin backdates by an hour, for clocks that lag.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + lifetime;
    params.serial_number = Some(serial());
    params.use_authority_key_identifier_extension = true;
    // rcgen writes basicConstraints critical; Candlepin's is not (below).
    params.is_ca = IsCa::NoCa;
    // rcgen writes keyUsage critical, as Candlepin does.
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.custom_extensions = vec![
        // SSL client (bit 0) and S/MIME (bit 2).
        CustomExtension::from_oid_content(OID_NETSCAPE_CERT_TYPE, vec![0x03, 0x02, 0x05, 0xa0]),
        CustomExtension::from_oid_content(OID_BASIC_CONSTRAINTS, der::seq(&[])),
    ];
    if let Some(name) = alt_name {
        let alt_cn: &[(&[u64], &str)] = &[(OID_CN, name)];
        let san = der::seq(&[
            &der::tlv(0xa4, &der::name(&subject)),
            &der::tlv(0xa4, &der::name(alt_cn)),
        ]);
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(OID_SUBJECT_ALT_NAME, san));
    }
    if let Some((entitlement_type, payload)) = entitlement {
        params.custom_extensions.extend([
            CustomExtension::from_oid_content(OID_RH_ENTITLEMENT_VERSION, der::tlv(0x0c, b"3.4")),
            CustomExtension::from_oid_content(
                OID_RH_ENTITLEMENT_TYPE,
                der::tlv(0x0c, entitlement_type.as_bytes()),
            ),
            CustomExtension::from_oid_content(OID_RH_ENTITLEMENT_DATA, der::tlv(0x04, &payload)),
        ]);
    }
    params
}

/// Candlepin's `2312.9.7` payload for content under the path `segments`: the
/// segments, each NUL-terminated, deflated into a zlib stream at best
/// compression, then the Huffman-coded path tree that points into them
/// (filler bytes here; nothing reads it but subscription-manager).
pub fn content_payload(segments: &[&str]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    for segment in segments {
        z.write_all(segment.as_bytes()).expect("write to memory");
        z.write_all(&[0]).expect("write to memory");
    }
    let mut out = z.finish().expect("write to memory");
    let tree_len = 8 + 2 * segments.len();
    out.extend((0..tree_len).map(|i| (i as u8).wrapping_mul(0x5d) ^ 0xa5));
    out
}

/// The path segments of a [`content_payload`], read back: what the zlib
/// stream at its start inflates to, split at the NULs.
pub fn content_payload_segments(payload: &[u8]) -> Option<Vec<String>> {
    use std::io::Read;
    let mut z = flate2::read::ZlibDecoder::new(payload);
    let mut text = Vec::new();
    z.read_to_end(&mut text).ok()?;
    let text = String::from_utf8(text).ok()?;
    let segments: Vec<String> = text
        .strip_suffix('\0')?
        .split('\0')
        .map(str::to_owned)
        .collect();
    Some(segments)
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

    const UUID: &str = "5a1c2f0e-7d3b-4c9a-8e6f-1b2d3c4e5f60";

    fn extension<'a>(
        cert: &'a x509_parser::certificate::X509Certificate<'_>,
        id: &str,
    ) -> Option<&'a x509_parser::extensions::X509Extension<'a>> {
        cert.extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == id)
    }

    #[test]
    fn content_access_cert_is_built_as_candlepin_builds_it() {
        use x509_parser::prelude::*;
        let pki = Pki::new();
        let issued = pki.content_access_cert(UUID);
        let (_, cert) = X509Certificate::from_der(&issued.cert_der).expect("parses");
        let ca_der = pki.ca_der();
        let (_, ca) = X509Certificate::from_der(&ca_der).expect("parses");
        assert_eq!(cert.issuer().as_raw(), ca.subject().as_raw());
        // O first, then CN, each its own RDN.
        let rdns: Vec<String> = cert
            .subject()
            .iter()
            .flat_map(|rdn| rdn.iter())
            .map(|a| {
                format!(
                    "{}={}",
                    a.attr_type().to_id_string(),
                    a.as_str().unwrap_or("?")
                )
            })
            .collect();
        assert_eq!(rdns, [format!("2.5.4.10={ORG}"), format!("2.5.4.3={UUID}")]);
        let ku = cert.key_usage().expect("one").expect("present");
        assert!(ku.critical && ku.value.digital_signature());
        assert!(!ku.value.key_encipherment() && !ku.value.key_cert_sign());
        let bc = cert.basic_constraints().expect("one").expect("present");
        assert!(!bc.critical && !bc.value.ca);
        assert!(
            cert.extended_key_usage()
                .expect("one")
                .expect("present")
                .value
                .client_auth
        );
        assert!(cert.subject_alternative_name().expect("one").is_none());
        assert!(extension(&cert, "2.5.29.35").is_some(), "authority key id");
        assert!(extension(&cert, "2.5.29.14").is_some(), "subject key id");
        assert!(
            extension(&cert, "2.16.840.1.113730.1.1").is_some(),
            "Netscape type"
        );

        let value = |id: &str| extension(&cert, id).map(|e| e.value.to_vec());
        assert_eq!(value("1.3.6.1.4.1.2312.9.6"), Some(der::tlv(0x0c, b"3.4")));
        assert_eq!(
            value("1.3.6.1.4.1.2312.9.8"),
            Some(der::tlv(0x0c, b"OrgLevel"))
        );
        let data = value("1.3.6.1.4.1.2312.9.7").expect("payload");
        assert_eq!(data[0], 0x04, "an OCTET STRING");
        let payload = &data[2..];
        assert_eq!(payload[..2], [0x78, 0xda], "zlib, best compression");
        assert_eq!(
            content_payload_segments(payload).expect("inflates"),
            [ORG, "Library", "Default_Organization_View"]
        );
        assert!(extension(&cert, "2.5.29.17").is_none());
    }

    #[test]
    fn identity_cert_has_the_alt_name_and_no_entitlement_extension() {
        use x509_parser::prelude::*;
        let issued = Pki::new().identity_cert(UUID, "host1.example.com");
        let (_, cert) = X509Certificate::from_der(&issued.cert_der).expect("parses");
        let san = cert
            .subject_alternative_name()
            .expect("one")
            .expect("present");
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DirectoryName(name) => name.to_string(),
                other => panic!("not a directory name: {other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                format!("O={ORG}, CN={UUID}"),
                "CN=host1.example.com".to_owned()
            ]
        );
        for arc in 6..=8 {
            assert!(extension(&cert, &format!("1.3.6.1.4.1.2312.9.{arc}")).is_none());
        }
    }

    #[test]
    fn other_candlepin_certificates_carry_their_own_type() {
        use x509_parser::prelude::*;
        let pki = Pki::new();
        for (issued, ty, org) in [
            (
                pki.pool_entitlement_cert("8a8b8c8d9e9f0a1b2c3d4e5f60718293"),
                "Basic",
                true,
            ),
            (pki.anonymous_content_access_cert(UUID), "basic", false),
        ] {
            let (_, cert) = X509Certificate::from_der(&issued.cert_der).expect("parses");
            let t = extension(&cert, "1.3.6.1.4.1.2312.9.8").expect("type");
            assert_eq!(t.value, der::tlv(0x0c, ty.as_bytes()));
            assert_eq!(cert.subject().iter_organization().next().is_some(), org);
        }
        let partial = pki.partial_entitlement_cert(UUID);
        let (_, cert) = X509Certificate::from_der(&partial.cert_der).expect("parses");
        assert!(extension(&cert, "1.3.6.1.4.1.2312.9.7").is_some());
        assert!(extension(&cert, "1.3.6.1.4.1.2312.9.8").is_none());
    }
}
