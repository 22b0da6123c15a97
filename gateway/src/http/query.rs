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
}

/// Decoded `(key, value)` pairs in the order given (`+` is a space, `%XX` decoded).
pub fn pairs(raw: &str) -> Result<Vec<(String, String)>, QueryError> {
    if raw.len() > MAX_QUERY_LEN {
        return Err(QueryError::TooLong);
    }
    let mut out = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        if out.len() == MAX_PARAMS {
            return Err(QueryError::TooMany);
        }
        if k.contains('\0') || v.contains('\0') {
            return Err(QueryError::Nul);
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
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
}
