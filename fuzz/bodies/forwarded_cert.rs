//! `auth::forwarded::decode`: the client certificate a trusted frontend
//! forwards in a header (PEM, maybe with newlines turned into spaces, maybe
//! percent-escaped, or `(null)`).
//!
//! Invariants: a decoded certificate is non-empty and no larger than its
//! base64 allows; it survives a round trip through a canonical PEM in every
//! transport encoding; percent-escaping the whole value changes nothing; each
//! error is the one its input deserves.

use base64::Engine as _;
use container_gateway::auth::forwarded::{ForwardedCertError, MAX_HEADER_LEN, decode};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

pub fn run(data: &[u8]) {
    let result = decode(data);
    if data.len() > MAX_HEADER_LEN {
        assert_eq!(result, Err(ForwardedCertError::TooLong));
        return;
    }
    let text = std::str::from_utf8(data).ok();
    match &result {
        Ok(Some(der)) => {
            assert!(!der.is_empty(), "an empty certificate");
            assert!(
                der.len() / 3 * 4 <= data.len(),
                "{} bytes decoded from {}",
                der.len(),
                data.len()
            );
            round_trips(der);
        }
        Ok(None) => {
            let Some(text) = text else {
                panic!("no certificate from bytes that are not UTF-8")
            };
            let trimmed = text.trim();
            let unescaped = percent_decode_str(trimmed).decode_utf8_lossy();
            assert!(
                trimmed.is_empty()
                    || trimmed == "(null)"
                    || unescaped.trim() == "(null)"
                    || (trimmed.contains('%') && unescaped.trim().is_empty()),
                "no certificate from {text:?}"
            );
        }
        Err(ForwardedCertError::TooLong) => panic!("TooLong for {} bytes", data.len()),
        Err(ForwardedCertError::BadEscape) => {
            assert!(
                text.is_none_or(|t| t.contains('%')),
                "BadEscape without escapes"
            );
        }
        Err(ForwardedCertError::NoPem | ForwardedCertError::BadBase64) => {
            assert!(text.is_some(), "{result:?} for bytes that are not UTF-8");
        }
    }

    // Escaping is only transport: escaping the whole value changes nothing.
    if let Some(text) = text
        && !text.contains('%')
    {
        let escaped = utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
        if escaped.len() <= MAX_HEADER_LEN {
            assert_eq!(decode(escaped.as_bytes()), result, "escaped {text:?}");
        }
    }
}

/// The same bytes as a canonical PEM, as Apache with newlines turned into
/// spaces, and percent-escaped, all decode back to `der`.
fn round_trips(der: &[u8]) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let spaced = pem.replace('\n', " ");
    let escaped = utf8_percent_encode(&pem, NON_ALPHANUMERIC).to_string();
    for form in [&pem, &spaced, &escaped] {
        if form.len() <= MAX_HEADER_LEN {
            assert_eq!(decode(form.as_bytes()), Ok(Some(der.to_vec())), "{form:?}");
        }
    }
}
