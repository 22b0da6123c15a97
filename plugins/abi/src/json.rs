//! The identity documents a plugin returns, written without a JSON library so
//! the ABI crate stays dependency-free.

use crate::Identity;

/// `{"kind":"host","id":"..."}` and friends.
pub(crate) fn identity(identity: &Identity) -> Vec<u8> {
    match identity {
        Identity::Host(id) => tagged("host", "id", id),
        Identity::User(id) => tagged("user", "id", id),
        Identity::Anonymous => br#"{"kind":"anonymous"}"#.to_vec(),
    }
}

/// `{"kind":"token","sha256":"..."}`.
pub(crate) fn token(sha256: &str) -> Vec<u8> {
    tagged("token", "sha256", sha256)
}

fn tagged(kind: &str, key: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + kind.len() + key.len() + value.len());
    out.extend_from_slice(br#"{"kind":""#);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(br#"",""#);
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(br#"":""#);
    escape_into(&mut out, value);
    out.extend_from_slice(br#""}"#);
    out
}

/// JSON string escaping: quotes, backslashes and control characters; other
/// UTF-8 passes through unchanged, which JSON allows.
fn escape_into(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in value.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(br#"\""#),
            b'\\' => out.extend_from_slice(br"\\"),
            b'\n' => out.extend_from_slice(br"\n"),
            b'\r' => out.extend_from_slice(br"\r"),
            b'\t' => out.extend_from_slice(br"\t"),
            0..0x20 | 0x7f => {
                out.extend_from_slice(br"\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents() {
        assert_eq!(
            identity(&Identity::Host("u-1".into())),
            br#"{"kind":"host","id":"u-1"}"#
        );
        assert_eq!(
            identity(&Identity::User("bob".into())),
            br#"{"kind":"user","id":"bob"}"#
        );
        assert_eq!(identity(&Identity::Anonymous), br#"{"kind":"anonymous"}"#);
        assert_eq!(token("ab12"), br#"{"kind":"token","sha256":"ab12"}"#);
    }

    #[test]
    fn escaping() {
        let doc = identity(&Identity::User("a\"b\\c\nd\u{1}é\u{7f}".into()));
        assert_eq!(
            doc,
            r#"{"kind":"user","id":"a\"b\\c\nd\u0001é\u007f"}"#.as_bytes()
        );
    }
}
