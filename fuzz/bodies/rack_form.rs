//! `management::rack::parse_nested_query`: Katello's form-encoded pushes,
//! decoded with Rack 2's nested-parameter rules. The first two input bytes
//! choose the limits, the rest is the body.
//!
//! Invariants: the limits hold (parameter count, nesting depth); they only
//! ever reject, never change an answer; an error names the limit it hit and
//! its message stays short whatever the input; every object's keys are
//! unique; and bodies of plain names (`a=1`, `a`, `a[]=1`) decode, or are
//! refused for a bad escape, non-UTF-8 text or a name with no key, exactly as
//! a straightforward model of Rack says.

use container_gateway::management::rack::{Limits, Object, RackError, Value, parse_nested_query};

/// Rack's parameter pieces: `&`-separated, spaces after a `&` dropped, empty
/// pieces skipped.
fn pieces(body: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    for (n, mut piece) in body.split(|b| *b == b'&').enumerate() {
        if n > 0 {
            while let [b' ', rest @ ..] = piece {
                piece = rest;
            }
        }
        if !piece.is_empty() {
            out.push(piece);
        }
    }
    out
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Null | Value::String(_) => 0,
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => object_depth(o),
    }
}

fn object_depth(o: &Object) -> usize {
    1 + o.iter().map(|(_, v)| depth(v)).max().unwrap_or(0)
}

fn strings(v: &Value) -> usize {
    match v {
        Value::Null => 0,
        Value::String(_) => 1,
        Value::Array(items) => items.iter().map(strings).sum(),
        Value::Object(o) => o.iter().map(|(_, v)| strings(v)).sum(),
    }
}

fn unique_keys(v: &Value) {
    match v {
        Value::Object(o) => unique_object_keys(o),
        Value::Array(items) => items.iter().for_each(unique_keys),
        _ => {}
    }
}

fn unique_object_keys(o: &Object) {
    let mut keys: Vec<&str> = o.iter().map(|(k, _)| k).collect();
    let n = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), n, "a key twice in one hash");
    o.iter().for_each(|(_, v)| unique_keys(v));
}

pub fn run(data: &[u8]) {
    let [d, p, body @ ..] = data else {
        return;
    };
    let limits = Limits {
        max_depth: usize::from(d % 40),
        max_params: usize::from(p % 80),
    };
    let count = pieces(body).len();
    let result = parse_nested_query(body, limits);
    let loose = Limits {
        max_depth: limits.max_depth + 8,
        max_params: usize::MAX,
    };
    let loose_result = parse_nested_query(body, loose);

    match &result {
        Ok(params) => {
            assert!(
                count <= limits.max_params,
                "{count} > {}",
                limits.max_params
            );
            if limits.max_depth == 0 {
                assert!(count == 0 && params.is_empty());
            }
            assert!(
                object_depth(params) <= 1 + 2 * limits.max_depth,
                "depth {} with a limit of {}",
                object_depth(params),
                limits.max_depth
            );
            assert!(params.len() <= count);
            assert!(params.iter().map(|(_, v)| strings(v)).sum::<usize>() <= count);
            unique_object_keys(params);
            assert_eq!(&loose_result, &result, "a looser limit changed the answer");
        }
        Err(RackError::TooManyParams { limit }) => {
            assert_eq!(*limit, limits.max_params);
            assert!(count > limits.max_params);
        }
        Err(RackError::TooDeep { limit, .. }) => assert_eq!(*limit, limits.max_depth),
        Err(
            e @ (RackError::InvalidEscape { .. }
            | RackError::NotUtf8 { .. }
            | RackError::NoName { .. }),
        ) => {
            assert_eq!(
                loose_result.as_ref().err(),
                Some(e),
                "a looser limit hid {e}"
            );
        }
        Err(e @ RackError::Type { .. }) => {
            assert_eq!(
                loose_result.as_ref().err(),
                Some(e),
                "a looser limit hid {e}"
            );
        }
    }
    if count > limits.max_params {
        assert!(
            result.is_err(),
            "{count} parameters with a limit of {}",
            limits.max_params
        );
    }
    if let Err(e) = &result {
        let message = e.to_string();
        assert!(!message.is_empty());
        assert!(message.len() <= 512, "a {} byte message", message.len());
    }
    if let Some(expected) = flat_model(body) {
        match (&loose_result, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, &want, "the model disagrees"),
            (Err(RackError::Type { .. }), Err(Refused::Type)) => {}
            (
                Err(RackError::InvalidEscape { .. } | RackError::NotUtf8 { .. }),
                Err(Refused::Decode),
            ) => {}
            (Err(RackError::NoName { .. }), Err(Refused::NoName)) => {}
            (got, want) => panic!("the model disagrees: {got:?}, model {want:?}"),
        }
    }
}

/// Why the model expects a body to be refused.
#[derive(Debug)]
enum Refused {
    Type,
    Decode,
    NoName,
}

/// The model's own decoding: `+` is a space, `%XX` a byte, any other `%` an
/// error, and the result must be UTF-8. `None` where the gateway must refuse.
fn decode(raw: &[u8]) -> Option<String> {
    let escapes_valid = raw.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || raw
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_valid {
        return None;
    }
    let spaced: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    percent_encoding::percent_decode(&spaced)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Rack on a body whose names are all `key` or `key[]` with no other
/// bracket: a hash that keeps first positions and last values, where `key[]`
/// appends to an array (a nil or absent key starts one) and a non-array there
/// is a type error. Pieces that do not decode, and names with no key, are
/// refused, in body order. `None` when the body has other names.
fn flat_model(body: &[u8]) -> Option<Result<Object, Refused>> {
    let mut params = Object::new();
    for piece in pieces(body) {
        let (raw_name, raw_value) = match piece.iter().position(|b| *b == b'=') {
            Some(at) => (&piece[..at], Some(&piece[at + 1..])),
            None => (piece, None),
        };
        let Some(name) = decode(raw_name) else {
            return Some(Err(Refused::Decode));
        };
        let value = match raw_value.map(decode) {
            None => Value::Null,
            Some(Some(v)) => Value::String(v),
            Some(None) => return Some(Err(Refused::Decode)),
        };
        if name.chars().all(|c| c == '[' || c == ']') {
            return Some(Err(Refused::NoName));
        }
        let (key, append) = match name.strip_suffix("[]") {
            Some(key) => (key, true),
            None => (name.as_str(), false),
        };
        if key.is_empty() || key.contains(['[', ']']) {
            return None;
        }
        if !append {
            params.insert(key, value);
            continue;
        }
        match params.get(key) {
            None | Some(Value::Null) => {
                params.insert(key, Value::Array(vec![value]));
            }
            Some(Value::Array(items)) => {
                let mut items = items.clone();
                items.push(value);
                params.insert(key, Value::Array(items));
            }
            Some(_) => return Some(Err(Refused::Type)),
        }
    }
    Some(Ok(params))
}
