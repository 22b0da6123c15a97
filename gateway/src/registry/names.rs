//! The OCI distribution grammar for repository names and references, checked
//! on the raw (still percent-encoded) path before any upstream is asked.

/// Longest repository name accepted (the distribution spec's practical limit).
pub const MAX_NAME_LEN: usize = 255;

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        // a run of [a-z0-9]+
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // a separator: '.', '_', '__' or '-'+
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'.' || x == b'_' || x == b'-')
}

/// `algorithm:encoded`; the registered algorithms must have their exact hex length.
pub fn valid_digest(digest: &str) -> bool {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return false;
    };
    let hex_of = |len: usize| {
        encoded.len() == len
            && encoded
                .bytes()
                .all(|x| x.is_ascii_digit() || (b'a'..=b'f').contains(&x))
    };
    match algorithm {
        "sha256" => hex_of(64),
        "sha512" => hex_of(128),
        _ => {
            let alg_ok = !algorithm.is_empty()
                && algorithm.split(['+', '.', '_', '-']).all(|p| {
                    !p.is_empty()
                        && p.bytes()
                            .all(|x| x.is_ascii_lowercase() || x.is_ascii_digit())
                });
            alg_ok
                && !encoded.is_empty()
                && encoded.len() <= 1024
                && encoded
                    .bytes()
                    .all(|x| x.is_ascii_alphanumeric() || x == b'=' || x == b'_' || x == b'-')
        }
    }
}

/// Only the characters a tag is made of (`[A-Za-z0-9._-]`), whatever their
/// order or number: a reference like that which is no valid tag (`.x`, `-x`, 129
/// characters) names no manifest, as opposed to one with `/`, `%`, spaces ...
pub fn tag_characters(reference: &str) -> bool {
    !reference.is_empty()
        && reference
            .bytes()
            .all(|x| x.is_ascii_alphanumeric() || x == b'.' || x == b'_' || x == b'-')
}

/// A manifest reference: a tag or a digest.
pub fn valid_reference(reference: &str) -> bool {
    if reference.contains(':') {
        valid_digest(reference)
    } else {
        valid_tag(reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "org/flatpak/hello",
            "a.b",
            "a_b",
            "a__b",
            "a---b",
            "x/y-z.1",
            "0",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "..", "a/../b", "a/./b", "%2e%2e", "a%2fb", "a___b", "a.",
            ".a", "a-", "a b", "a\0b", "a:b", "é",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(!valid_name(&"a".repeat(256)));
        assert!(valid_name(&"a".repeat(255)));
    }

    #[test]
    fn references() {
        assert!(valid_reference("latest"));
        assert!(valid_reference("_x.y-Z"));
        assert!(!valid_reference(".hidden"));
        assert!(!valid_reference(&"t".repeat(129)));
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(valid_reference(&d) && valid_digest(&d));
        assert!(!valid_digest(&format!("sha256:{}", "A".repeat(64))));
        assert!(!valid_digest(&format!("sha256:{}", "a".repeat(63))));
        assert!(!valid_digest("sha256:"));
        assert!(!valid_digest("latest"));
        assert!(!valid_digest("sha256:../../x"));
        assert!(valid_digest(
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8"
        ));
        for shaped in [".INVALID_MANIFEST_NAME", "-x", &"t".repeat(129), "latest"] {
            assert!(tag_characters(shaped), "{shaped}");
        }
        for not in [
            "", "a/b", "a%2fb", "a b", "sha256:x", "la\\test", "a\0b", "é",
        ] {
            assert!(!tag_characters(not), "{not:?}");
        }
    }
}
