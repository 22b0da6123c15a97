//! `index::UpstreamIndex::{parse, filter}` over arbitrary bodies from Pulp.
//!
//! Invariants:
//! - the scanner accepts exactly the JSON serde_json accepts, and classifies
//!   the document (`Results` missing, not an array) as serde_json reads it;
//! - the leak check: every entry written has a `Name` (as a JSON parser reads
//!   it, not as the scanner did) that the visibility predicate accepted, so no
//!   rejected repository reaches the client;
//! - the output is what flatpak needs: `Registry` then `Results`, each entry
//!   with a string `Name` and an `Images` array of well-formed images, no two
//!   images with the same (ref, architecture), images copied byte for byte;
//! - filtering is deterministic, calls the predicate once per servable entry,
//!   writes nothing for "none visible", and is idempotent: the output, parsed
//!   and filtered again with everything visible, comes out unchanged.

use std::cell::Cell;
use std::collections::HashSet;

use bytes::Bytes;
use container_gateway::index::{Filtered, IndexError, UpstreamIndex};
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

/// Registry URLs to write, including ones that need JSON escaping.
const REGISTRIES: [&str; 4] = [
    "https://gw.example.com",
    "https://gw.example.com/pulpcore_registry/",
    "http://[::1]:8080/a\"b\\c\u{1}\u{7f}\n\u{2028}é",
    "",
];

fn fnv(seed: u64, s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn recursion_limit(e: &serde_json::Error) -> bool {
    e.to_string().contains("recursion limit")
}

pub fn run(data: &[u8]) {
    let seed = data.len() as u64;
    let registry = REGISTRIES[data.len() % REGISTRIES.len()];
    let parsed = UpstreamIndex::parse(Bytes::copy_from_slice(data));
    let Ok(text) = std::str::from_utf8(data) else {
        assert!(matches!(parsed, Err(IndexError::NotUtf8(_))), "{parsed:?}");
        return;
    };

    // The same grammar as serde_json.
    let ours_json = !matches!(parsed, Err(IndexError::Json { .. }));
    match serde_json::from_str::<IgnoredAny>(text) {
        Ok(_) => assert!(
            ours_json,
            "serde_json accepts, the scanner does not: {parsed:?}"
        ),
        Err(e) if recursion_limit(&e) => {}
        Err(e) => assert!(!ours_json, "the scanner accepts, serde_json does not: {e}"),
    }
    // `None` when serde_json cannot build a Value (too deep, lone surrogate).
    let doc: Option<Value> = serde_json::from_str(text).ok();
    if let Some(doc) = &doc {
        let results = doc.get("Results");
        match &parsed {
            Ok(_) => assert!(results.is_some_and(|r| r.is_array() || r.is_null())),
            Err(IndexError::NotAnObject) => assert!(!doc.is_object()),
            Err(IndexError::MissingResults) => assert!(doc.is_object() && results.is_none()),
            Err(IndexError::ResultsNotArray) => {
                assert!(results.is_some_and(|r| !r.is_array() && !r.is_null()))
            }
            Err(IndexError::DuplicateResults) => assert!(results.is_some()),
            Err(e) => panic!("{e:?} for a document serde_json reads"),
        }
    }
    let Ok(index) = parsed else {
        return;
    };

    let names: Vec<&str> = index.names().collect();
    assert!(names.len() <= index.len());
    let known: HashSet<&str> = names.iter().copied().collect();
    for (name, _) in index.refs() {
        assert!(
            known.contains(name),
            "a ref of {name:?}, not a servable entry"
        );
    }

    let some = |n: &str| fnv(seed, n) & 1 == 0;
    let all = |_: &str| true;
    let none = |_: &str| false;
    let predicates: [&dyn Fn(&str) -> bool; 3] = [&some, &all, &none];
    for (i, visible) in predicates.into_iter().enumerate() {
        let calls = Cell::new(0usize);
        let counted = |n: &str| {
            calls.set(calls.get() + 1);
            visible(n)
        };
        let out = index.filter(registry, &counted);
        assert_eq!(calls.get(), names.len(), "predicate calls");
        assert_eq!(out.kept + out.dropped, index.len());
        assert_eq!(out.etag.len(), 34);
        assert!(out.etag.starts_with('"') && out.etag.ends_with('"'));
        assert!(
            out.etag[1..33]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        check_output(&out, text, doc.is_some(), visible, &names, registry);
        if i == 0 {
            let again = index.filter(registry, visible);
            assert_eq!(
                (again.body, again.etag),
                (out.body.clone(), out.etag.clone())
            );
        }
        if i == 2 {
            assert_eq!(out.kept, 0);
        }
    }
}

fn check_output(
    out: &Filtered,
    input: &str,
    input_is_value: bool,
    visible: &dyn Fn(&str) -> bool,
    names: &[&str],
    registry: &str,
) {
    let Ok(body) = std::str::from_utf8(&out.body) else {
        panic!("output is not UTF-8")
    };

    // Idempotent: a second pass (everything visible) changes nothing.
    let again = match UpstreamIndex::parse(out.body.clone()) {
        Ok(again) => again,
        Err(e) => panic!("output does not parse: {e}\n{body}"),
    };
    assert_eq!(again.len(), out.kept);
    assert_eq!(again.names().count(), out.kept);
    let second = again.filter(registry, &|_| true);
    assert_eq!(second.body, out.body, "a second pass changed the output");

    // Nesting is never deeper than the input's, so a Value can be built when
    // it could for the input.
    if !input_is_value {
        return;
    }
    let doc: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => panic!("output is not JSON: {e}\n{body}"),
    };
    let Some(top) = doc.as_object() else {
        panic!("output is not an object")
    };
    assert_eq!(top.len(), 2, "{body}");
    let expected_registry = if registry.ends_with('/') {
        registry.to_owned()
    } else {
        format!("{registry}/")
    };
    assert_eq!(top.get("Registry"), Some(&Value::String(expected_registry)));
    assert!(body.starts_with("{\"Registry\":"));
    let Some(results) = top.get("Results").and_then(Value::as_array) else {
        panic!("Results is not an array")
    };
    assert_eq!(results.len(), out.kept);

    let raw: RawResults<'_> = match serde_json::from_str(body) {
        Ok(r) => r,
        Err(e) => panic!("raw results: {e}"),
    };

    let mut allowed = names.iter().copied().filter(|n| visible(n));
    let mut refs = HashSet::new();
    for (entry, raw_entry) in results.iter().zip(&raw.results) {
        let Some(name) = entry.get("Name").and_then(Value::as_str) else {
            panic!("an entry without a string Name: {entry}")
        };
        // The leak check, on the name as a JSON parser reads it.
        assert!(visible(name), "entry {name:?} was not visible");
        assert!(
            allowed.any(|n| n == name),
            "{name:?} is not next among the visible names, in order"
        );
        let Some(images) = entry.get("Images").and_then(Value::as_array) else {
            panic!("Images is not an array: {entry}")
        };
        for image in images {
            check_image(image);
            let (Some(r), Some(arch)) = (
                image
                    .pointer("/Labels/org.flatpak.ref")
                    .and_then(Value::as_str),
                image.get("Architecture").and_then(Value::as_str),
            ) else {
                continue;
            };
            assert!(
                refs.insert((r.to_owned(), arch.to_owned())),
                "{r} {arch} served twice"
            );
        }
        for raw_image in &raw_entry.images {
            assert!(
                input.contains(raw_image.get()),
                "image not copied byte for byte: {}",
                raw_image.get()
            );
        }
    }
    for rejected in names.iter().filter(|n| !visible(n)) {
        assert!(
            results
                .iter()
                .all(|e| e.get("Name").and_then(Value::as_str) != Some(rejected)),
            "rejected {rejected:?} was served"
        );
    }
}

#[derive(serde::Deserialize)]
struct RawResults<'a> {
    #[serde(rename = "Results", borrow)]
    results: Vec<RawEntry<'a>>,
}

#[derive(serde::Deserialize)]
struct RawEntry<'a> {
    #[serde(rename = "Images", borrow)]
    images: Vec<&'a RawValue>,
}

/// What flatpak (>= 1.17.1) requires of an image.
fn check_image(image: &Value) {
    let Some(o) = image.as_object() else {
        panic!("an image that is not an object: {image}")
    };
    let string = |k: &str| o.get(k).and_then(Value::as_str);
    assert!(
        string("Digest").is_some_and(|d| d.starts_with("sha256:")),
        "{image}"
    );
    assert!(string("MediaType").is_some(), "{image}");
    assert!(string("OS").is_some(), "{image}");
    assert!(string("Architecture").is_some(), "{image}");
    for map in ["Labels", "Annotations"] {
        match o.get(map) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => assert!(m.values().all(Value::is_string), "{image}"),
            Some(other) => panic!("{map} is {other}"),
        }
    }
    assert!(
        matches!(o.get("Tags"), None | Some(Value::Null | Value::Array(_))),
        "{image}"
    );
}
