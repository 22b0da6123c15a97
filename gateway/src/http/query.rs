//! Query strings: parsed as a multimap, bounded, and re-encoded canonically.

/// Longest query string accepted on client routes.
pub const MAX_QUERY_LEN: usize = 8 * 1024;
/// Most parameters accepted on client routes.
pub const MAX_PARAMS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("query string longer than {MAX_QUERY_LEN} bytes")]
    TooLong,
    #[error("more than {MAX_PARAMS} query parameters")]
    TooMany,
    #[error("query string holds a NUL byte")]
    Nul,
    #[error("query string holds a percent-encoding that is not UTF-8")]
    NotUtf8,
}

/// Decoded `(key, value)` pairs in the order given (`+` is a space, `%XX` decoded).
///
/// Decoded the way `form_urlencoded::parse` does, except that a percent-encoding
/// that is not UTF-8 is refused instead of turned into U+FFFD: replacing it
/// would make different queries one (`tag=%ff` and `tag=%fe` would share a
/// cached index) and send Pulp and central a value the client never sent.
pub fn pairs(raw: &str) -> Result<Vec<(String, String)>, QueryError> {
    if raw.len() > MAX_QUERY_LEN {
        return Err(QueryError::TooLong);
    }
    let mut out = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        if out.len() == MAX_PARAMS {
            return Err(QueryError::TooMany);
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k)?, decode(v)?);
        if k.contains('\0') || v.contains('\0') {
            return Err(QueryError::Nul);
        }
        out.push((k, v));
    }
    Ok(out)
}

fn decode(component: &str) -> Result<String, QueryError> {
    let spaced = component.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|d| d.into_owned())
        .map_err(|_| QueryError::NotUtf8)
}

/// One canonical encoding for a multimap: pairs sorted, form-encoded. Pulp
/// treats the query as a multimap (repeated keys OR'ed, different keys AND'ed),
/// so order carries no meaning and the canonical form is a sound cache key.
pub fn canonical(mut pairs: Vec<(String, String)>) -> String {
    pairs.sort();
    pairs.dedup();
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The first value of `key`.
pub fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatpak_query_is_decoded_and_canonical() {
        let raw = "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";
        let p = pairs(raw).unwrap();
        assert_eq!(
            p[0],
            ("label:org.flatpak.ref:exists".to_owned(), "1".to_owned())
        );
        let c = canonical(p);
        assert_eq!(
            c,
            "architecture=amd64&label%3Aorg.flatpak.ref%3Aexists=1&os=linux&tag=latest"
        );
        // another order and encoding of the same multimap gives the same key
        let other =
            pairs("tag=latest&os=linux&label:org.flatpak.ref:exists=1&architecture=amd64").unwrap();
        assert_eq!(canonical(other), c);
    }

    #[test]
    fn limits() {
        assert_eq!(pairs(&"a=1&".repeat(10_000)), Err(QueryError::TooLong));
        assert_eq!(
            pairs(&"a=1&".repeat(MAX_PARAMS + 1)),
            Err(QueryError::TooMany)
        );
        assert_eq!(pairs("a=%00"), Err(QueryError::Nul));
        assert!(pairs("").unwrap().is_empty());
    }

    #[test]
    fn decoding_matches_form_encoding_and_refuses_invalid_utf8() {
        for raw in [
            "a=1&b=x+y&c=%C3%A9&d&=e&&f=g=h&%zz=1&x=%",
            "label%3Aorg.flatpak.ref%3Aexists=1&tag=latest",
        ] {
            let expected: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            assert_eq!(pairs(raw).unwrap(), expected, "{raw}");
        }
        for raw in ["tag=%ff", "%fe=1", "last=%ed%a0%80", "a=%c3"] {
            assert_eq!(pairs(raw), Err(QueryError::NotUtf8), "{raw}");
        }
    }
}
