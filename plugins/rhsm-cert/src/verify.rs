//! Judging one client certificate against the configured CA bundle.
//!
//! Deliberately narrow: the checks a subscription certificate must pass (chain
//! to a trusted CA, validity, CA flags on issuers, a CN, one of the two kinds
//! below) and nothing that would reject what Candlepin issues (no SAN or
//! key-usage requirements; an extendedKeyUsage, when present, must allow
//! clientAuth, which Candlepin's does).
//!
//! Candlepin names the consumer in the CN of both certificates a registered
//! host holds (`CN=<consumer uuid>, O=<owner key>`; `SCACertificateGenerator`
//! and `IdentityCertificateGenerator` build the same `DistinguishedName`), and
//! Katello maps either to a host by that CN alone (`Cert::RhsmClient#uuid`,
//! then `SubscriptionFacet.find_by(uuid:)`). What tells the kinds apart is the
//! Red Hat entitlement extensions: the identity certificate has none (Candlepin's
//! `SSLAuth` refuses any certificate that has one), the content access
//! certificate has all three, with type `OrgLevel`. Other certificates from the
//! same CA carry the CN of something that is not a consumer: a pool
//! entitlement (type `Basic`, CN = entitlement id) or an anonymous cloud
//! consumer (type `basic`). Those, and anything with only some of the
//! extensions, are refused rather than looked up as a host.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::{OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA, Oid};
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

/// Intermediates a client may send beyond its leaf that are considered at
/// all; more only cost signature checks.
pub const MAX_PRESENTED_INTERMEDIATES: usize = 6;
/// Issuers between the leaf and a trust anchor.
pub const MAX_INTERMEDIATES_IN_PATH: usize = 4;

/// A trusted CA from the bundle.
pub struct Anchor {
    der: Vec<u8>,
}

impl Anchor {
    /// Accept a bundle entry as a trust anchor, or say why not.
    pub fn new(der: Vec<u8>) -> Result<Anchor, String> {
        let cert = parse(&der)?;
        match cert.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => Ok(Anchor { der }),
            Ok(_) => Err(format!(
                "{} is not a CA certificate (basicConstraints CA:TRUE missing)",
                cert.subject()
            )),
            Err(e) => Err(format!("{}: invalid basicConstraints: {e}", cert.subject())),
        }
    }

    pub fn subject(&self) -> String {
        parse(&self.der)
            .map(|c| c.subject().to_string())
            .unwrap_or_default()
    }
}

/// A verified certificate: who it names, what kind of subscription
/// certificate it is, and when the whole path that vouches for it is valid
/// (UNIX seconds, inclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub cn: String,
    pub kind: Kind,
    pub not_before: i64,
    pub not_after: i64,
}

/// The two Candlepin certificates that name a consumer in their CN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/etc/pki/consumer/cert.pem`: no entitlement extensions.
    ConsumerIdentity,
    /// `/etc/pki/entitlement/<serial>.pem` under simple content access, which
    /// Katello's host setup links into `/etc/containers/certs.d/<capsule>/`.
    ContentAccess,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::ConsumerIdentity => "consumer identity certificate",
            Kind::ContentAccess => "content access certificate",
        }
    }
}

/// `1.3.6.1.4.1.2312.9.6`, the entitlement certificate version ("3.4").
const RH_ENTITLEMENT_VERSION: &[u64] = &[1, 3, 6, 1, 4, 1, 2312, 9, 6];
/// `1.3.6.1.4.1.2312.9.7`, the compressed content payload.
const RH_ENTITLEMENT_DATA: &[u64] = &[1, 3, 6, 1, 4, 1, 2312, 9, 7];
/// `1.3.6.1.4.1.2312.9.8`, the entitlement type.
const RH_ENTITLEMENT_TYPE: &[u64] = &[1, 3, 6, 1, 4, 1, 2312, 9, 8];
/// The type Candlepin gives the content access certificate.
const CONTENT_ACCESS_TYPE: &str = "OrgLevel";
/// ASN.1 UTF8String, the only string type Candlepin writes into its extensions.
const TAG_UTF8_STRING: u8 = 0x0c;

/// The raw value of the one extension with OID `arcs`; two of them is an error.
fn rh_extension<'a>(
    cert: &'a X509Certificate<'_>,
    arcs: &[u64],
) -> Result<Option<&'a [u8]>, String> {
    let oid = Oid::from(arcs).map_err(|_| "internal error: bad OID".to_owned())?;
    match cert.get_extension_unique(&oid) {
        Ok(ext) => Ok(ext.map(|e| e.value)),
        Err(_) => Err(format!("extension {oid} appears more than once")),
    }
}

/// The text of a DER UTF8String that is the whole of `value`.
fn utf8_string(value: &[u8]) -> Option<&str> {
    let (&tag, rest) = value.split_first()?;
    let (&len, body) = rest.split_first()?;
    // Short-form length only: every type Candlepin writes is a short word.
    if tag != TAG_UTF8_STRING || len >= 0x80 || body.len() != usize::from(len) {
        return None;
    }
    std::str::from_utf8(body).ok()
}

/// Which of the two consumer certificates `cert` is, or why it is neither.
fn kind(cert: &X509Certificate<'_>) -> Result<Kind, String> {
    let version = rh_extension(cert, RH_ENTITLEMENT_VERSION)?;
    let data = rh_extension(cert, RH_ENTITLEMENT_DATA)?;
    let entitlement_type = rh_extension(cert, RH_ENTITLEMENT_TYPE)?;
    match (version, data, entitlement_type) {
        (None, None, None) => Ok(Kind::ConsumerIdentity),
        (Some(_), Some(_), Some(t)) => match utf8_string(t) {
            Some(CONTENT_ACCESS_TYPE) => Ok(Kind::ContentAccess),
            // A pool entitlement's CN is the entitlement's id, an anonymous
            // cloud consumer's is not a registered host: neither may be
            // looked up as one.
            Some(other) => Err(format!(
                "an entitlement certificate of type {other:?}, not a consumer identity or content access ({CONTENT_ACCESS_TYPE}) certificate"
            )),
            None => Err("entitlement type extension is not a UTF8String".to_owned()),
        },
        _ => Err(
            "some but not all of the entitlement extensions (1.3.6.1.4.1.2312.9.6, .7, .8): neither a consumer identity nor a content access certificate"
                .to_owned(),
        ),
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok((rest, _)) if !rest.is_empty() => Err(format!(
            "{} bytes of trailing data after the certificate",
            rest.len()
        )),
        Ok((_, cert)) => Ok(cert),
        Err(e) => Err(format!("not a DER X.509 certificate: {e}")),
    }
}

/// Checks every certificate in a path must pass, whatever its position.
fn check_common(cert: &X509Certificate<'_>, what: &str, now: ASN1Time) -> Result<(), String> {
    if cert.tbs_certificate.signature.algorithm != cert.signature_algorithm.algorithm {
        return Err(format!(
            "{what} {}: inner and outer signature algorithms differ",
            cert.subject()
        ));
    }
    let alg = &cert.signature_algorithm.algorithm;
    if *alg == OID_PKCS1_SHA1WITHRSA || *alg == OID_SHA1_WITH_RSA {
        return Err(format!(
            "{what} {}: SHA-1 signatures are not accepted",
            cert.subject()
        ));
    }
    let validity = cert.validity();
    if now < validity.not_before {
        return Err(format!(
            "{what} {} is not valid before {}",
            cert.subject(),
            validity.not_before
        ));
    }
    if now > validity.not_after {
        return Err(format!(
            "{what} {} expired at {}",
            cert.subject(),
            validity.not_after
        ));
    }
    for ext in cert.extensions() {
        let unknown = matches!(
            ext.parsed_extension(),
            ParsedExtension::UnsupportedExtension { .. } | ParsedExtension::ParseError { .. }
        );
        if ext.critical && unknown {
            return Err(format!(
                "{what} {}: critical extension {} is not understood",
                cert.subject(),
                ext.oid
            ));
        }
    }
    Ok(())
}

/// An issuer (intermediate or anchor) `below` certificates above the leaf.
fn check_issuer(cert: &X509Certificate<'_>, what: &str, below: usize) -> Result<(), String> {
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {
            if let Some(limit) = bc.value.path_len_constraint
                && (limit as usize) < below
            {
                return Err(format!(
                    "{what} {}: pathLenConstraint {limit} exceeded",
                    cert.subject()
                ));
            }
        }
        Ok(_) => {
            return Err(format!(
                "{what} {} is not a CA (basicConstraints CA:TRUE missing)",
                cert.subject()
            ));
        }
        Err(e) => {
            return Err(format!(
                "{what} {}: invalid basicConstraints: {e}",
                cert.subject()
            ));
        }
    }
    match cert.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => Err(format!(
            "{what} {}: keyUsage does not allow keyCertSign",
            cert.subject()
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("{what} {}: invalid keyUsage: {e}", cert.subject())),
    }
}

fn check_leaf(cert: &X509Certificate<'_>) -> Result<(String, Kind), String> {
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {
            return Err("certificate is a CA (basicConstraints CA:TRUE)".to_owned());
        }
        Ok(_) => {}
        Err(e) => return Err(format!("invalid basicConstraints: {e}")),
    }
    match cert.extended_key_usage() {
        Ok(Some(eku)) if !eku.value.client_auth && !eku.value.any => {
            return Err("extendedKeyUsage does not allow clientAuth".to_owned());
        }
        Ok(_) => {}
        Err(e) => return Err(format!("invalid extendedKeyUsage: {e}")),
    }
    let Some(cn) = cert.subject().iter_common_name().next() else {
        return Err(format!("subject {} has no CN", cert.subject()));
    };
    let cn = match cn.as_str() {
        Ok("") => return Err("subject CN is empty".to_owned()),
        Ok(cn) if cn.chars().any(char::is_control) => {
            return Err("subject CN holds control characters".to_owned());
        }
        Ok(cn) => cn.to_owned(),
        Err(_) => return Err("subject CN is not a text string".to_owned()),
    };
    Ok((cn, kind(cert)?))
}

fn narrow(window: &mut (i64, i64), cert: &X509Certificate<'_>) {
    window.0 = window.0.max(cert.validity().not_before.timestamp());
    window.1 = window.1.min(cert.validity().not_after.timestamp());
}

/// Verify `leaf` (DER), with `presented` as candidate intermediates, against
/// `anchors` at `now`. The error is a reason for the logs.
pub fn verify<'a>(
    leaf: &[u8],
    presented: impl Iterator<Item = &'a [u8]>,
    anchors: &[Anchor],
    now: ASN1Time,
) -> Result<Verified, String> {
    let leaf = parse(leaf)?;
    check_common(&leaf, "certificate", now)?;
    let (cn, kind) = check_leaf(&leaf)?;
    let mut window = (
        leaf.validity().not_before.timestamp(),
        leaf.validity().not_after.timestamp(),
    );

    // Unparsable extras cannot be part of a path; they are simply not candidates.
    let intermediates: Vec<X509Certificate<'_>> = presented
        .take(MAX_PRESENTED_INTERMEDIATES)
        .filter_map(|der| parse(der).ok())
        .collect();
    let anchors: Vec<X509Certificate<'_>> =
        anchors.iter().filter_map(|a| parse(&a.der).ok()).collect();
    let mut used = [false; MAX_PRESENTED_INTERMEDIATES];

    let mut current = &leaf;
    for depth in 0..=MAX_INTERMEDIATES_IN_PATH {
        let issuer_name = current.issuer().as_raw();
        let mut signature_error = None;
        for anchor in anchors
            .iter()
            .filter(|a| a.subject().as_raw() == issuer_name)
        {
            match current.verify_signature(Some(anchor.public_key())) {
                Ok(()) => {
                    check_common(anchor, "trusted CA", now)?;
                    check_issuer(anchor, "trusted CA", depth)?;
                    narrow(&mut window, anchor);
                    return Ok(Verified {
                        cn,
                        kind,
                        not_before: window.0,
                        not_after: window.1,
                    });
                }
                Err(e) => {
                    signature_error = Some(format!(
                        "signature by trusted CA {} does not verify: {e}",
                        anchor.subject()
                    ))
                }
            }
        }
        if depth == MAX_INTERMEDIATES_IN_PATH {
            break;
        }
        let next = intermediates.iter().enumerate().find(|(i, c)| {
            !used[*i]
                && c.subject().as_raw() == issuer_name
                && current.verify_signature(Some(c.public_key())).is_ok()
        });
        let Some((index, issuer)) = next else {
            return Err(signature_error.unwrap_or_else(|| {
                format!(
                    "issuer {} is not a trusted CA and no presented intermediate leads to one",
                    current.issuer()
                )
            }));
        };
        used[index] = true;
        check_common(issuer, "intermediate", now)?;
        check_issuer(issuer, "intermediate", depth)?;
        narrow(&mut window, issuer);
        current = issuer;
    }
    Err(format!(
        "no trusted CA within {MAX_INTERMEDIATES_IN_PATH} intermediates"
    ))
}

#[cfg(test)]
mod kind_tests {
    //! Which certificates name a host: Candlepin's two consumer certificates,
    //! told apart by the entitlement extensions, and nothing else from its CA.

    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType, IsCa,
        KeyPair,
    };

    const UUID: &str = "5a1c2f0e-7d3b-4c9a-8e6f-1b2d3c4e5f60";

    fn utf8(text: &str) -> Vec<u8> {
        let mut out = vec![TAG_UTF8_STRING, text.len() as u8];
        out.extend_from_slice(text.as_bytes());
        out
    }

    fn ext(arcs: &[u64], value: Vec<u8>) -> CustomExtension {
        CustomExtension::from_oid_content(arcs, value)
    }

    /// The three extensions of an entitlement certificate of type `ty`.
    fn entitlement(ty: &str) -> Vec<CustomExtension> {
        vec![
            ext(RH_ENTITLEMENT_VERSION, utf8("3.4")),
            ext(RH_ENTITLEMENT_TYPE, utf8(ty)),
            // An OCTET STRING holding a zlib header and a little more.
            ext(RH_ENTITLEMENT_DATA, vec![0x04, 4, 0x78, 0xda, 0x01, 0x02]),
        ]
    }

    fn verify_with(cn: &str, extensions: Vec<CustomExtension>) -> Result<Verified, String> {
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "Katello Default CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA signs");
        let mut leaf = CertificateParams::default();
        leaf.distinguished_name
            .push(DnType::OrganizationName, "Default_Organization");
        leaf.distinguished_name.push(DnType::CommonName, cn);
        leaf.custom_extensions = extensions;
        let key = KeyPair::generate().expect("key");
        let cert = leaf.signed_by(&key, &ca).expect("leaf signs");
        let anchor = Anchor::new(ca.der().to_vec()).expect("anchor");
        verify(cert.der(), std::iter::empty(), &[anchor], ASN1Time::now())
    }

    #[test]
    fn identity_and_content_access_certificates_name_the_consumer() {
        let identity = verify_with(UUID, Vec::new()).expect("identity certificate");
        assert_eq!(
            (identity.cn.as_str(), identity.kind),
            (UUID, Kind::ConsumerIdentity)
        );
        let sca = verify_with(UUID, entitlement("OrgLevel")).expect("content access");
        assert_eq!((sca.cn.as_str(), sca.kind), (UUID, Kind::ContentAccess));
    }

    #[test]
    fn other_entitlement_certificates_are_refused() {
        for ty in ["Basic", "basic", "orglevel", "OrgLevel ", ""] {
            let err = verify_with(UUID, entitlement(ty)).expect_err(ty);
            assert!(
                err.contains("entitlement certificate of type"),
                "{ty}: {err}"
            );
        }
    }

    #[test]
    fn some_of_the_extensions_are_refused() {
        let all = entitlement("OrgLevel");
        for missing in 0..all.len() {
            let some: Vec<CustomExtension> = entitlement("OrgLevel")
                .into_iter()
                .enumerate()
                .filter(|(i, _)| *i != missing)
                .map(|(_, e)| e)
                .collect();
            let err = verify_with(UUID, some).expect_err("two of three");
            assert!(err.contains("some but not all"), "{err}");
        }
        let only_data = vec![ext(RH_ENTITLEMENT_DATA, vec![0x04, 0])];
        assert!(verify_with(UUID, only_data).is_err());
    }

    #[test]
    fn a_type_that_is_not_a_utf8_string_is_refused() {
        let mut exts = entitlement("OrgLevel");
        // PrintableString "OrgLevel": the same letters, not what Candlepin writes.
        let mut printable = utf8("OrgLevel");
        printable[0] = 0x13;
        exts[1] = ext(RH_ENTITLEMENT_TYPE, printable);
        let err = verify_with(UUID, exts).expect_err("PrintableString");
        assert!(err.contains("not a UTF8String"), "{err}");
        let mut trailing = entitlement("OrgLevel");
        let mut long = utf8("OrgLevel");
        long.push(0);
        trailing[1] = ext(RH_ENTITLEMENT_TYPE, long);
        assert!(verify_with(UUID, trailing).is_err());
    }

    #[test]
    fn a_repeated_extension_is_refused() {
        let mut exts = entitlement("OrgLevel");
        exts.push(ext(RH_ENTITLEMENT_TYPE, utf8("OrgLevel")));
        assert!(verify_with(UUID, exts).is_err());
    }
}
