//! `registry::names`: repository names and references, checked on the raw
//! path before any upstream is asked.
//!
//! Each checker is compared with an independent reading of the grammar
//! (contract §4, the OCI distribution and image specs) that tokenises into
//! runs instead of scanning, and accepted values are checked for what makes
//! them safe in a path: no empty, `.` or `..` segment, no escape, bounded.

use container_gateway::registry::names::{
    MAX_NAME_LEN, valid_digest, valid_name, valid_reference, valid_tag,
};

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check(&text);
    if text.contains(['\n', '@']) {
        for part in text.split(['\n', '@']) {
            check(part);
        }
    }
}

fn check(s: &str) {
    let name = valid_name(s);
    assert_eq!(name, model_name(s), "valid_name({s:?})");
    if name {
        assert!(!s.is_empty() && s.len() <= MAX_NAME_LEN);
        assert!(!s.starts_with('/') && !s.ends_with('/'), "{s:?}");
        assert!(
            s.split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != ".."),
            "{s:?}"
        );
        assert!(!s.contains(".."), "{s:?}");
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)),
            "{s:?}"
        );
    }

    let tag = valid_tag(s);
    assert_eq!(tag, model_tag(s), "valid_tag({s:?})");
    let digest = valid_digest(s);
    assert_eq!(digest, model_digest(s), "valid_digest({s:?})");
    assert!(!(tag && digest), "{s:?} is both a tag and a digest");
    assert_eq!(valid_reference(s), tag || digest, "valid_reference({s:?})");
    if tag || digest {
        assert!(!s.is_empty() && s != "." && s != "..", "{s:?}");
        assert!(
            !s.bytes()
                .any(|b| b == b'/' || b == b'%' || b.is_ascii_whitespace() || b < 0x20),
            "{s:?}"
        );
    }
    if digest {
        assert_eq!(s.matches(':').count(), 1, "{s:?}");
        assert!(!s.contains(".."), "{s:?}");
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Alnum,
    Separator,
}

/// Maximal runs of `[a-z0-9]` and of `[._-]`; `None` if another byte occurs.
fn runs(component: &str) -> Option<Vec<(Class, &str)>> {
    let mut out: Vec<(Class, &str)> = Vec::new();
    let mut start = 0;
    let mut current = None;
    for (i, b) in component.bytes().enumerate() {
        let class = match b {
            b'a'..=b'z' | b'0'..=b'9' => Class::Alnum,
            b'.' | b'_' | b'-' => Class::Separator,
            _ => return None,
        };
        if current != Some(class) {
            if let Some(c) = current {
                out.push((c, &component[start..i]));
            }
            current = Some(class);
            start = i;
        }
    }
    if let Some(c) = current {
        out.push((c, &component[start..]));
    }
    Some(out)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: alphanumeric runs at both ends, and
/// every separator run between them one of `.`, `_`, `__`, or dashes only.
fn model_component(c: &str) -> bool {
    let Some(runs) = runs(c) else {
        return false;
    };
    let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
        return false;
    };
    first.0 == Class::Alnum
        && last.0 == Class::Alnum
        && runs
            .iter()
            .filter(|r| r.0 == Class::Separator)
            .all(|(_, sep)| {
                *sep == "." || *sep == "_" || *sep == "__" || sep.bytes().all(|b| b == b'-')
            })
}

/// Components joined by single slashes, at most 255 bytes in all.
fn model_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.split('/').all(model_component)
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn model_tag(s: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    word(first) && s.chars().count() <= 128 && chars.all(|c| word(c) || c == '.' || c == '-')
}

/// The image spec's `algorithm ":" encoded`, where `algorithm` is
/// `[a-z0-9]+([+._-][a-z0-9]+)*` and `encoded` is `[a-zA-Z0-9=_-]+`; the
/// registered `sha256` and `sha512` need exactly 64 and 128 lowercase hex
/// digits. The gateway bounds other encodings to 1024 characters.
fn model_digest(s: &str) -> bool {
    let Some(colon) = s.find(':') else {
        return false;
    };
    let (algorithm, encoded) = (&s[..colon], &s[colon + 1..]);
    let lower_hex = |len: usize| {
        encoded.len() == len && encoded.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
    };
    match algorithm {
        "sha256" => lower_hex(64),
        "sha512" => lower_hex(128),
        _ => {
            let mut algorithm_ok = !algorithm.is_empty();
            let mut previous_separator = true;
            for c in algorithm.chars() {
                match c {
                    'a'..='z' | '0'..='9' => previous_separator = false,
                    '+' | '.' | '_' | '-' if !previous_separator => previous_separator = true,
                    _ => algorithm_ok = false,
                }
            }
            algorithm_ok
                && !previous_separator
                && (1..=1024).contains(&encoded.len())
                && encoded
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '=' || c == '_' || c == '-')
        }
    }
}
