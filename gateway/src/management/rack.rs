//! Rack-style nested form parameters, as Katello's rest-client encodes a Ruby
//! hash and as Sinatra (Rack 2, `Rack::QueryParser#parse_nested_query` and
//! `normalize_params`) decodes it on the Ruby gateway:
//!
//! - `a=1` is `{"a": "1"}`; a bare `a` (no `=`) is `{"a": nil}`, which is how
//!   rest-client sends an empty array or hash;
//! - `a[b]=1` nests a hash, `a[]=1&a[]=2` builds an array;
//! - `a[][k]=1&a[][j]=2&a[][k]=3` builds `[{"k":"1","j":"2"},{"k":"3"}]`: a
//!   key goes into the array's last hash unless that hash already holds it;
//! - a key whose rest holds `[]` (`a[][x][][k]`) never counts as held, so
//!   `hosts[][u1][][repository]=..&hosts[][u2][][repository]=..` lands in
//!   one hash: `[{"u1": [...], "u2": [...]}]`;
//! - a key used both as a scalar and as a container is a type error.
//!
//! The same value model carries JSON bodies (booleans and numbers become the
//! strings Katello's form encoding would have sent), so one decoder serves
//! both.

use std::collections::HashMap;
use std::fmt;

/// A decoded parameter value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    String(String),
    Array(Vec<Value>),
    Object(Object),
}

impl Value {
    /// Ruby's class name, for messages that match what Rack would say.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nil",
            Value::String(_) => "String",
            Value::Array(_) => "Array",
            Value::Object(_) => "Hash",
        }
    }
}

/// Objects this small are searched linearly; most are `{repository, auth_required}`.
const INDEX_FROM: usize = 8;

/// A hash that keeps insertion order (as Ruby's does) and looks keys up in
/// O(1) once it grows: the host mapping hash holds every host of a push.
#[derive(Clone, Debug, Default)]
pub struct Object {
    entries: Vec<(String, Value)>,
    index: Option<HashMap<String, usize>>,
}

impl PartialEq for Object {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for Object {}

impl Object {
    pub fn new() -> Self {
        Self::default()
    }

    fn position(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.entries.iter().position(|(k, _)| k == key),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.position(key)
            .and_then(|i| self.entries.get(i))
            .map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Set `key`, keeping its original position when it already exists (as a
    /// Ruby hash does), and return the stored value.
    pub fn insert(&mut self, key: &str, value: Value) -> &mut Value {
        let i = match self.position(key) {
            Some(i) => {
                if let Some(slot) = self.entries.get_mut(i) {
                    slot.1 = value;
                }
                i
            }
            None => {
                let i = self.entries.len();
                self.entries.push((key.to_owned(), value));
                if let Some(index) = &mut self.index {
                    index.insert(key.to_owned(), i);
                } else if self.entries.len() > INDEX_FROM {
                    self.index = Some(
                        self.entries
                            .iter()
                            .enumerate()
                            .map(|(i, (k, _))| (k.clone(), i))
                            .collect(),
                    );
                }
                i
            }
        };
        // `i` is in range: it was either found or just pushed.
        &mut self.entries[i].1
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Bounds that keep a hostile or broken body from exhausting the process.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Nesting levels of one parameter name (Rack 3 uses 32).
    pub max_depth: usize,
    /// `&`-separated parameters in one body.
    pub max_params: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Two parameters a repository entry: 2,000,000 entries, e.g. the
        // 100,000 hosts of load-balanced siblings with 20 repositories each
        // (or 10,000 with 200). `MAX_BODY` is sized to match.
        Limits {
            max_depth: 32,
            max_params: 4_000_000,
        }
    }
}

/// Why a body could not be decoded; the text is fit for a 400 response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RackError {
    /// The same name used as two different kinds of value.
    Type {
        expected: &'static str,
        got: &'static str,
        param: String,
    },
    TooDeep {
        param: String,
        limit: usize,
    },
    TooManyParams {
        limit: usize,
    },
    /// A `%` not followed by two hex digits (Rack: "invalid %-encoding").
    InvalidEscape {
        index: usize,
        param: String,
    },
    /// A name or value that is not UTF-8 once decoded.
    NotUtf8 {
        index: usize,
        param: String,
    },
    /// A name without a key character (`=x`, `[]=x`, `a[][[[`): Rack drops
    /// such a parameter silently, which turned a garbled push into an empty
    /// one. We refuse the body instead.
    NoName {
        index: usize,
        param: String,
    },
}

impl fmt::Display for RackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RackError::Type {
                expected,
                got,
                param,
            } => {
                write!(
                    f,
                    "expected {expected} (got {got}) for param `{}'",
                    shorten(param)
                )
            }
            RackError::TooDeep { param, limit } => {
                write!(
                    f,
                    "param `{}' is nested deeper than {limit} levels",
                    shorten(param)
                )
            }
            RackError::TooManyParams { limit } => write!(f, "more than {limit} parameters"),
            RackError::InvalidEscape { index, param } => write!(
                f,
                "invalid %-encoding in parameter {index} `{}'",
                shorten(param)
            ),
            RackError::NotUtf8 { index, param } => write!(
                f,
                "parameter {index} `{}' is not UTF-8 once decoded",
                shorten(param)
            ),
            RackError::NoName { index, param } => {
                write!(f, "parameter {index} `{}' has no name", shorten(param))
            }
        }
    }
}

impl std::error::Error for RackError {}

/// At most 80 characters of a client-supplied name, for messages.
pub(crate) fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Decode an `application/x-www-form-urlencoded` body the way Rack does.
///
/// Parameters are separated by `&` (spaces after it are dropped, as Rack's
/// `/[&] */` separator does); names and values are percent-decoded with `+`
/// as space. An invalid escape is an error, as in Rack; so, stricter than
/// Rack, are a result that is not UTF-8 and a name with no key in it, since
/// either means the body is not what Katello meant to send.
pub fn parse_nested_query(body: &[u8], limits: Limits) -> Result<Object, RackError> {
    let mut params = Object::new();
    let mut count = 0usize;
    for (n, mut piece) in body.split(|b| *b == b'&').enumerate() {
        if n > 0 {
            while let [b' ', rest @ ..] = piece {
                piece = rest;
            }
        }
        if piece.is_empty() {
            continue;
        }
        count += 1;
        if count > limits.max_params {
            return Err(RackError::TooManyParams {
                limit: limits.max_params,
            });
        }
        let (raw_name, raw_value) = match piece.iter().position(|b| *b == b'=') {
            Some(at) => (&piece[..at], Some(&piece[at + 1..])),
            None => (piece, None),
        };
        let name = unescape(raw_name, count, piece)?;
        let value = match raw_value {
            Some(raw) => Value::String(unescape(raw, count, piece)?),
            None => Value::Null,
        };
        let no_name = || RackError::NoName {
            index: count,
            param: String::from_utf8_lossy(piece).into_owned(),
        };
        if split_name(&name).is_none() {
            return Err(no_name());
        }
        normalize(&mut params, &name, value, 0, limits.max_depth).map_err(|e| match e {
            RackError::NoName { .. } => no_name(),
            other => other,
        })?;
    }
    Ok(params)
}

/// Rack's `unescape` (`URI.decode_www_form_component`): `+` is a space and
/// `%XX` a byte; `%` followed by anything else is an error.
fn unescape(raw: &[u8], index: usize, piece: &[u8]) -> Result<String, RackError> {
    let param = || String::from_utf8_lossy(piece).into_owned();
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
                match (hex(bytes.next()), hex(bytes.next())) {
                    // Two hex digits make at most 0xff.
                    (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                    _ => {
                        return Err(RackError::InvalidEscape {
                            index,
                            param: param(),
                        });
                    }
                }
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| RackError::NotUtf8 {
        index,
        param: param(),
    })
}

/// What `normalize_params` returned, which its callers store: the hash it
/// was given, a one-element array (for a name of exactly `[]`), or nil.
enum Normalized {
    Params,
    Single(Value),
    Nil,
}

/// Rack's name split: `\A[\[\]]*([^\[\]]+)\]*`: skip leading brackets, take
/// the key up to the next bracket, skip closing brackets; the rest is
/// `after`. `None` when there is no key character at all.
fn split_name(name: &str) -> Option<(&str, &str)> {
    let start = name.find(|c| c != '[' && c != ']')?;
    let rest = name.get(start..)?;
    let key_len = rest.find(['[', ']']).unwrap_or(rest.len());
    let (key, after) = rest.split_at(key_len);
    Some((key, after.trim_start_matches(']')))
}

/// `^\[\]\[([^\[\]]+)\]$` or else `^\[\](.+)$`: the key to use inside the
/// array's element for a name continuing with `after`.
fn array_child_key(after: &str) -> Option<&str> {
    let rest = after.strip_prefix("[]")?;
    if let Some(inner) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        && !inner.is_empty()
        && !inner.contains(['[', ']'])
    {
        return Some(inner);
    }
    (!rest.is_empty()).then_some(rest)
}

/// Rack's `params_hash_has_key?`: whether `key` (possibly `a[b][c]`) is
/// already fully present in `hash`. A key with `[]` in it never is.
fn has_key(hash: &Object, key: &str) -> bool {
    if key.contains("[]") {
        return false;
    }
    let mut current = hash;
    let mut parts = key.split(['[', ']']).filter(|p| !p.is_empty()).peekable();
    while let Some(part) = parts.next() {
        match current.get(part) {
            None => return false,
            Some(Value::Object(inner)) => current = inner,
            Some(_) if parts.peek().is_none() => return true,
            Some(_) => return false,
        }
    }
    true
}

/// `params[k] ||= []` / `||= {}`: nil counts as absent.
fn slot_or<'a>(params: &'a mut Object, k: &str, empty: fn() -> Value) -> &'a mut Value {
    match params.position(k) {
        // `i` came from `position`, so it is in range.
        Some(i) if !matches!(params.entries[i].1, Value::Null) => &mut params.entries[i].1,
        _ => params.insert(k, empty()),
    }
}

fn normalize(
    params: &mut Object,
    name: &str,
    v: Value,
    depth: usize,
    max_depth: usize,
) -> Result<Normalized, RackError> {
    if depth >= max_depth {
        return Err(RackError::TooDeep {
            param: name.to_owned(),
            limit: max_depth,
        });
    }
    let Some((k, after)) = split_name(name) else {
        // `a[][]` is an array of arrays; any other keyless rest (`a[][[[`)
        // is a garbled name, which Rack would have stored as nil.
        if name != "[]" {
            return Err(RackError::NoName {
                index: 0,
                param: name.to_owned(),
            });
        }
        return Ok(if v != Value::Null {
            Normalized::Single(v)
        } else {
            Normalized::Nil
        });
    };

    if after.is_empty() {
        params.insert(k, v);
    } else if after == "[" {
        params.insert(name, v);
    } else if after == "[]" {
        match slot_or(params, k, || Value::Array(Vec::new())) {
            Value::Array(a) => a.push(v),
            other => return Err(type_error("Array", other, k)),
        }
    } else if let Some(child_key) = array_child_key(after) {
        let array = match slot_or(params, k, || Value::Array(Vec::new())) {
            Value::Array(a) => a,
            other => return Err(type_error("Array", other, k)),
        };
        match array.last_mut() {
            Some(Value::Object(last)) if !has_key(last, child_key) => {
                normalize(last, child_key, v, depth + 1, max_depth)?;
            }
            _ => {
                let mut fresh = Object::new();
                let element = match normalize(&mut fresh, child_key, v, depth + 1, max_depth)? {
                    Normalized::Params => Value::Object(fresh),
                    Normalized::Single(x) => Value::Array(vec![x]),
                    Normalized::Nil => Value::Null,
                };
                array.push(element);
            }
        }
    } else {
        let outcome = match slot_or(params, k, || Value::Object(Object::new())) {
            Value::Object(inner) => normalize(inner, after, v, depth + 1, max_depth)?,
            other => return Err(type_error("Hash", other, k)),
        };
        match outcome {
            Normalized::Params => {}
            Normalized::Single(x) => {
                params.insert(k, Value::Array(vec![x]));
            }
            Normalized::Nil => {
                params.insert(k, Value::Null);
            }
        }
    }
    Ok(Normalized::Params)
}

fn type_error(expected: &'static str, got: &Value, param: &str) -> RackError {
    RackError::Type {
        expected,
        got: got.kind(),
        param: param.to_owned(),
    }
}

// JSON bodies decode into the same model. Object keys keep document order;
// a repeated key keeps its first position and its last value.
impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> serde::de::Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::String(if v { "true" } else { "false" }.to_owned()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::Deserialize::deserialize(d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            v.push(item);
        }
        Ok(Value::Array(v))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut o = Object::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            o.insert(&k, v);
        }
        Ok(Value::Object(o))
    }
}

#[cfg(test)]
mod tests;
