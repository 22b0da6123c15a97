//! From decoded parameters to what each management route carries.
//!
//! Shapes are checked in full before anything changes; a wrong shape is an
//! error naming the parameter. Nil and blank values are not errors: Katello's
//! encoding produces them for hosts without a UUID, hosts and users without
//! repositories, and empty lists (each of which broke the Ruby gateway, see
//! Foreman Redmine 38862, 38728 and 32745), so they are skipped or read as
//! "none". A list in which every entry was skipped is an error, though: that
//! is a garbled body, and applying it would empty the list.

use std::collections::HashMap;
use std::fmt;

use super::rack::{Object, Value, shorten};

/// A body that does not have the shape a route needs; the text names what is
/// wrong and goes back to the caller in a 400.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadError(pub String);

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PayloadError {}

fn bad(msg: impl Into<String>) -> PayloadError {
    PayloadError(msg.into())
}

/// `PUT repository_list`: name -> auth_required, in push order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepositoryList {
    pub repositories: Vec<(String, bool)>,
    /// Entries without a name.
    pub skipped: usize,
}

/// `PUT update_hosts`: the UUIDs, blank and nil ones left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostList {
    pub uuids: Vec<String>,
    pub skipped: usize,
}

/// `PUT host_repository_mapping`, `update_host_repositories`,
/// `user_repository_mapping`: key (UUID or login) -> the repositories it
/// may pull beyond the public ones, in push order, each key once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MappingList {
    pub mappings: Vec<(String, Vec<String>)>,
    /// Blank keys, nil keys (as Rack leaves them) and empty entries.
    pub skipped: usize,
}

impl MappingList {
    pub fn granted(&self) -> usize {
        self.mappings.iter().map(|(_, r)| r.len()).sum()
    }
}

/// What `key` holds: `Ok(None)` for nil (a bare key: an empty list), an
/// error when it is missing (a body for another route, or none at all).
fn top<'a>(params: &'a Object, key: &str) -> Result<Option<&'a [Value]>, PayloadError> {
    match params.get(key) {
        None => Err(bad(format!(
            "missing `{key}`; an empty list is sent as the bare key `{key}` (form) or `\"{key}\": []` (JSON)"
        ))),
        Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(other) => Err(bad(format!(
            "`{key}` must be a list, got {}",
            describe(other)
        ))),
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a hash",
    }
}

/// A string that is neither nil nor blank (Ruby's `present?`).
fn present(v: Option<&Value>, what: &str) -> Result<Option<String>, PayloadError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(format!(
            "{what} must be a string, got {}",
            describe(other)
        ))),
    }
}

/// `"true"`/`"false"` (any case, as strings or JSON booleans); nil or absent
/// gives `default`.
fn boolean(v: Option<&Value>, default: bool, what: &str) -> Result<bool, PayloadError> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(Value::String(s)) => Err(bad(format!(
            "{what} must be true or false, got \"{}\"",
            shorten(s)
        ))),
        Some(other) => Err(bad(format!(
            "{what} must be true or false, got {}",
            describe(other)
        ))),
    }
}

/// A list that had entries none of which could be used: refused, so that a
/// garbled push never reads as "replace everything with nothing". An empty
/// list has its own spelling, the bare key.
fn none_usable(key: &str, skipped: usize, what: &str) -> PayloadError {
    bad(format!(
        "none of the {skipped} entries of `{key}` has {what}; nothing was applied (an empty list is sent as the bare key `{key}` (form) or `\"{key}\": []` (JSON))"
    ))
}

/// `repositories: [{repository, auth_required}]`; nil is the empty list.
///
/// A missing `auth_required` means true: an entry we cannot classify must not
/// become public.
pub fn repository_list(params: &Object) -> Result<RepositoryList, PayloadError> {
    let mut out = RepositoryList::default();
    let Some(items) = top(params, "repositories")? else {
        return Ok(out);
    };
    out.repositories.reserve(items.len());
    for (i, item) in items.iter().enumerate() {
        let entry = match item {
            Value::Null => {
                out.skipped += 1;
                continue;
            }
            Value::Object(o) => o,
            other => {
                return Err(bad(format!(
                    "`repositories[{i}]` must be a hash with `repository` and `auth_required`, got {}",
                    describe(other)
                )));
            }
        };
        if !entry.contains_key("repository") {
            return Err(bad(format!("`repositories[{i}]` has no `repository`")));
        }
        let auth_required = boolean(
            entry.get("auth_required"),
            true,
            &format!("`repositories[{i}][auth_required]`"),
        )?;
        match present(
            entry.get("repository"),
            &format!("`repositories[{i}][repository]`"),
        )? {
            Some(name) => out.repositories.push((name, auth_required)),
            None => out.skipped += 1,
        }
    }
    if out.repositories.is_empty() && out.skipped > 0 {
        return Err(none_usable("repositories", out.skipped, "a name"));
    }
    Ok(out)
}

/// `hosts: [{uuid}]`; nil is the empty list; nil and blank UUIDs are skipped.
pub fn host_list(params: &Object) -> Result<HostList, PayloadError> {
    let mut out = HostList::default();
    let Some(items) = top(params, "hosts")? else {
        return Ok(out);
    };
    out.uuids.reserve(items.len());
    for (i, item) in items.iter().enumerate() {
        let host = match item {
            Value::Null => {
                out.skipped += 1;
                continue;
            }
            Value::Object(o) => o,
            other => {
                return Err(bad(format!(
                    "`hosts[{i}]` must be a hash with `uuid`, got {}",
                    describe(other)
                )));
            }
        };
        if !host.contains_key("uuid") {
            return Err(bad(format!("`hosts[{i}]` has no `uuid`")));
        }
        match present(host.get("uuid"), &format!("`hosts[{i}][uuid]`"))? {
            Some(uuid) => out.uuids.push(uuid),
            None => out.skipped += 1,
        }
    }
    if out.uuids.is_empty() && out.skipped > 0 {
        return Err(none_usable("hosts", out.skipped, "a UUID"));
    }
    Ok(out)
}

/// What a route does with a nil top-level list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenNil {
    /// Nil is the empty list (a full replacement with nothing).
    Empty,
    /// Nil is an error: the route updates the listed keys only, so an
    /// absent list is a caller mistake, not "no change".
    Reject,
}

/// `<key>: [{"<uuid or login>": [{repository, auth_required}] | nil}, ...]`.
///
/// Rack folds every key into the list's first hash; one hash per key (JSON)
/// works too, and a key seen twice gets the union of its lists. Entries with
/// `auth_required` false are dropped (public repositories need no grant);
/// without `auth_required` they are kept, since listing them is the grant.
///
/// A nil or blank UUID reaches us as Rack leaves `hosts[][][][repository]=x`:
/// plain `repository` / `auth_required` strings beside the real keys. Those
/// are skipped; any other key must hold a list or nil.
pub fn mapping_list(
    params: &Object,
    key: &str,
    when_nil: WhenNil,
) -> Result<MappingList, PayloadError> {
    let mut out = MappingList::default();
    let items = match top(params, key)? {
        Some(items) => items,
        None if when_nil == WhenNil::Empty => return Ok(out),
        None => {
            return Err(bad(format!(
                "`{key}` is required and must list at least one entry; it was empty"
            )));
        }
    };
    let mut position: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let hash = match item {
            Value::Null => {
                out.skipped += 1;
                continue;
            }
            Value::Object(o) => o,
            other => {
                return Err(bad(format!(
                    "`{key}[{i}]` must be a hash of name => list of repositories, got {}",
                    describe(other)
                )));
            }
        };
        for (name, value) in hash.iter() {
            let entries = match value {
                Value::String(_) if name == "repository" || name == "auth_required" => {
                    out.skipped += 1;
                    continue;
                }
                Value::Null => &[][..],
                Value::Array(entries) => entries.as_slice(),
                other => {
                    return Err(bad(format!(
                        "`{key}[][{}]` must be a list of repositories, got {}",
                        shorten(name),
                        describe(other)
                    )));
                }
            };
            if name.trim().is_empty() {
                out.skipped += 1;
                continue;
            }
            let granted = granted(entries, key, name)?;
            match position.get(name) {
                Some(&at) => {
                    if let Some((_, existing)) = out.mappings.get_mut(at) {
                        existing.extend(granted);
                    }
                }
                None => {
                    position.insert(name.to_owned(), out.mappings.len());
                    out.mappings.push((name.to_owned(), granted));
                }
            }
        }
    }
    if out.mappings.is_empty() && out.skipped > 0 {
        let what = if key == "users" { "a login" } else { "a UUID" };
        return Err(none_usable(key, out.skipped, what));
    }
    Ok(out)
}

fn granted(entries: &[Value], key: &str, name: &str) -> Result<Vec<String>, PayloadError> {
    let mut out = Vec::with_capacity(entries.len());
    for (j, entry) in entries.iter().enumerate() {
        let what = || format!("`{key}[][{}][{j}]`", shorten(name));
        let e = match entry {
            Value::Null => continue,
            Value::Object(o) => o,
            other => {
                return Err(bad(format!(
                    "{} must be a hash with `repository` and `auth_required`, got {}",
                    what(),
                    describe(other)
                )));
            }
        };
        if !e.contains_key("repository") {
            return Err(bad(format!("{} has no `repository`", what())));
        }
        let auth_required = boolean(
            e.get("auth_required"),
            true,
            &format!("{}[auth_required]", what()),
        )?;
        if let Some(repo) = present(e.get("repository"), &format!("{}[repository]", what()))?
            && auth_required
        {
            out.push(repo);
        }
    }
    Ok(out)
}
