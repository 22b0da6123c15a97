//! Judging one client certificate against the configured CA bundle.
//!
//! Deliberately narrow: the checks a subscription certificate must pass (chain
//! to a trusted CA, validity, CA flags on issuers, a CN) and nothing that would
//! reject what Candlepin issues (no SAN or key-usage requirements; an
//! extendedKeyUsage, when present, must allow clientAuth, which Candlepin's does).

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::{OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA};
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

/// A verified certificate: who it names and when the whole path that vouches
/// for it is valid (UNIX seconds, inclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub cn: String,
    pub not_before: i64,
    pub not_after: i64,
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

fn check_leaf(cert: &X509Certificate<'_>) -> Result<String, String> {
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
    match cn.as_str() {
        Ok("") => Err("subject CN is empty".to_owned()),
        Ok(cn) if cn.chars().any(char::is_control) => {
            Err("subject CN holds control characters".to_owned())
        }
        Ok(cn) => Ok(cn.to_owned()),
        Err(_) => Err("subject CN is not a text string".to_owned()),
    }
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
    let cn = check_leaf(&leaf)?;
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
