//! Decoding the client certificate a trusted frontend forwards in a header.
//!
//! Apache sends `X-RHSM-SSL-Client-Cert: %{SSL_CLIENT_CERT}s`: PEM whose newlines
//! may have become spaces, possibly URL-escaped (`%{escape:...}`), and the literal
//! `(null)` when the client sent no certificate. This module only turns that
//! transport encoding back into DER bytes; judging the certificate is a backend's job.

use base64::Engine;

/// Header names a trusted frontend may use, in order of preference. The
/// Katello installer's vhost sets `X_RHSM_SSL_CLIENT_CERT` with underscores
/// (Rack reads `-` and `_` alike), so that spelling counts too.
pub const HEADER_NAMES: [&str; 3] = [
    "x-rhsm-ssl-client-cert",
    "x_rhsm_ssl_client_cert",
    "ssl_client_cert",
];

/// Largest header value considered: an SCA certificate is 3-4 KB of PEM; a chain
/// of a few of them still fits.
pub const MAX_HEADER_LEN: usize = 32 * 1024;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForwardedCertError {
    #[error("forwarded certificate header is longer than {MAX_HEADER_LEN} bytes")]
    TooLong,
    #[error("forwarded certificate header is not valid percent-encoded UTF-8")]
    BadEscape,
    #[error("forwarded certificate header holds no PEM certificate")]
    NoPem,
    #[error("forwarded certificate header holds invalid base64")]
    BadBase64,
}

/// Decode one header value. `Ok(None)` means "no certificate" (empty or `(null)`).
pub fn decode(value: &[u8]) -> Result<Option<Vec<u8>>, ForwardedCertError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(ForwardedCertError::TooLong);
    }
    let text = std::str::from_utf8(value).map_err(|_| ForwardedCertError::BadEscape)?;
    let text = text.trim();
    if text.is_empty() || text == "(null)" {
        return Ok(None);
    }
    let unescaped;
    let text = if text.contains('%') {
        unescaped = percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map_err(|_| ForwardedCertError::BadEscape)?;
        unescaped.trim()
    } else {
        text
    };
    // Escaping is only transport: escaped blanks mean no certificate too.
    if text.is_empty() || text == "(null)" {
        return Ok(None);
    }
    let start = text.find(BEGIN).ok_or(ForwardedCertError::NoPem)? + BEGIN.len();
    let len = text[start..].find(END).ok_or(ForwardedCertError::NoPem)?;
    // Bytes, not chars: this runs on every forwarded request.
    let body: Vec<u8> = text.as_bytes()[start..start + len]
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if body.is_empty() {
        return Err(ForwardedCertError::NoPem);
    }
    base64::engine::general_purpose::STANDARD
        .decode(&body)
        .map(Some)
        .map_err(|_| ForwardedCertError::BadBase64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nAAECAwQF\nBgcI\n-----END CERTIFICATE-----\n";

    #[test]
    fn null_and_empty_mean_no_certificate() {
        assert_eq!(decode(b"(null)"), Ok(None));
        assert_eq!(decode(b"  "), Ok(None));
        assert_eq!(decode(b""), Ok(None));
        assert_eq!(decode(b"%28null%29"), Ok(None));
        assert_eq!(decode(b"%20%20"), Ok(None));
    }

    #[test]
    fn plain_pem_decodes() {
        assert_eq!(
            decode(PEM.as_bytes()),
            Ok(Some(vec![0, 1, 2, 3, 4, 5, 6, 7, 8]))
        );
    }

    #[test]
    fn newlines_turned_into_spaces_decode() {
        let spaced = PEM.replace('\n', " ");
        assert_eq!(
            decode(spaced.as_bytes()),
            Ok(Some(vec![0, 1, 2, 3, 4, 5, 6, 7, 8]))
        );
    }

    #[test]
    fn url_escaped_pem_decodes() {
        let escaped: String =
            percent_encoding::utf8_percent_encode(PEM, percent_encoding::NON_ALPHANUMERIC)
                .collect();
        assert_eq!(
            decode(escaped.as_bytes()),
            Ok(Some(vec![0, 1, 2, 3, 4, 5, 6, 7, 8]))
        );
    }

    #[test]
    fn garbage_is_an_error_not_anonymous() {
        assert_eq!(decode(b"hello"), Err(ForwardedCertError::NoPem));
        assert_eq!(
            decode(b"-----BEGIN CERTIFICATE-----!!!-----END CERTIFICATE-----"),
            Err(ForwardedCertError::BadBase64)
        );
        assert_eq!(
            decode(b"-----BEGIN CERTIFICATE----- -----END CERTIFICATE-----"),
            Err(ForwardedCertError::NoPem)
        );
        assert_eq!(decode(b"%ff%fe"), Err(ForwardedCertError::BadEscape));
        assert_eq!(
            decode(&vec![b'a'; MAX_HEADER_LEN + 1]),
            Err(ForwardedCertError::TooLong)
        );
    }
}
