//! `state.json`: the snapshot on disk.
//!
//! ```json
//! {"version": 1, "saved_at": <unix ms>,
//!  "repositories": {"<name>": <auth_required>, ...},
//!  "hosts": ["<uuid>", ...],
//!  "host_mappings": {"<uuid>": {"repositories": ["<name>", ...], "updated_at": <unix ms>}, ...},
//!  "user_mappings": {"<login>": {"repositories": [...], "updated_at": <unix ms>}, ...}}
//! ```
//!
//! Keys are written sorted so two saves of the same state are byte-identical.
//! Readers ignore fields they do not know, so a field can be added without a
//! new version; anything incompatible bumps `version`.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::sync::Arc;
use std::time::SystemTime;

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};

use super::persist::{FORMAT_VERSION, from_unix_millis, to_unix_millis};
use super::{Mapping, RepoSet, Snapshot};

pub(crate) const STATE_FILE: &str = "state.json";

/// Serialize `snapshot` straight into `w` without building an intermediate copy.
pub(crate) fn write(snapshot: &Snapshot, w: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer(
        w,
        &Out {
            snapshot,
            saved_at: SystemTime::now(),
        },
    )
    .map_err(io::Error::other)
}

struct Out<'a> {
    snapshot: &'a Snapshot,
    saved_at: SystemTime,
}

impl Serialize for Out<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let snap = self.snapshot;
        let mut st = s.serialize_struct("State", 6)?;
        st.serialize_field("version", &FORMAT_VERSION)?;
        st.serialize_field("saved_at", &to_unix_millis(self.saved_at))?;
        st.serialize_field(
            "repositories",
            &Sorted(snap.repositories.iter().map(|(k, v)| (&**k, *v)).collect()),
        )?;
        let mut hosts: Vec<&str> = snap.hosts.iter().map(|h| &**h).collect();
        hosts.sort_unstable();
        st.serialize_field("hosts", &hosts)?;
        st.serialize_field("host_mappings", &mappings(&snap.host_mappings))?;
        st.serialize_field("user_mappings", &mappings(&snap.user_mappings))?;
        st.end()
    }
}

fn mappings(m: &HashMap<Arc<str>, Mapping>) -> Sorted<'_, MappingOut<'_>> {
    Sorted(m.iter().map(|(k, v)| (&**k, MappingOut(v))).collect())
}

/// A map serialized in key order.
struct Sorted<'a, V>(Vec<(&'a str, V)>);

impl<V: Serialize> Serialize for Sorted<'_, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<&(&str, V)> = self.0.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (k, v) in entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

struct MappingOut<'a>(&'a Mapping);

impl Serialize for MappingOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Mapping", 2)?;
        st.serialize_field("repositories", &self.0.repositories)?;
        st.serialize_field("updated_at", &to_unix_millis(self.0.updated_at))?;
        st.end()
    }
}

#[derive(Deserialize)]
pub(crate) struct In {
    #[serde(default)]
    repositories: HashMap<String, bool>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    host_mappings: HashMap<String, MappingIn>,
    #[serde(default)]
    user_mappings: HashMap<String, MappingIn>,
}

#[derive(Deserialize)]
struct MappingIn {
    repositories: Vec<String>,
    updated_at: u64,
}

impl In {
    /// Build the snapshot, sharing one allocation per repository name and per
    /// host UUID. A timestamp in the future (clock stepped back since it was
    /// written) is clamped to now, so it cannot look fresh forever.
    pub(crate) fn into_snapshot(self, now: SystemTime) -> Snapshot {
        let repositories: HashMap<Arc<str>, bool> = self
            .repositories
            .into_iter()
            .map(|(k, v)| (Arc::from(k), v))
            .collect();
        let hosts: HashSet<Arc<str>> = self.hosts.into_iter().map(Arc::from).collect();
        let mapping = |m: MappingIn| Mapping {
            repositories: RepoSet::from_arcs(
                m.repositories
                    .iter()
                    .map(|n| intern(&repositories, n))
                    .collect(),
            ),
            updated_at: from_unix_millis(m.updated_at).min(now),
        };
        let host_mappings = self
            .host_mappings
            .into_iter()
            .map(|(k, m)| {
                (
                    hosts
                        .get(k.as_str())
                        .cloned()
                        .unwrap_or_else(|| Arc::from(k)),
                    mapping(m),
                )
            })
            .collect();
        let user_mappings = self
            .user_mappings
            .into_iter()
            .map(|(k, m)| (Arc::from(k), mapping(m)))
            .collect();
        Snapshot {
            repositories,
            hosts,
            host_mappings,
            user_mappings,
            generation: 0,
        }
    }
}

/// The repository list's own allocation for `name`, or a new one when the
/// name is not (yet) on the list.
pub(crate) fn intern(repositories: &HashMap<Arc<str>, bool>, name: &str) -> Arc<str> {
    repositories
        .get_key_value(name)
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| Arc::from(name))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn sample() -> Snapshot {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let mut s = Snapshot::default();
        s.repositories.insert("pub".into(), false);
        s.repositories.insert("priv".into(), true);
        s.hosts.insert("h1".into());
        s.hosts.insert("h2".into());
        s.host_mappings.insert(
            "h1".into(),
            Mapping {
                repositories: RepoSet::new(["priv", "later"]),
                updated_at: t,
            },
        );
        s.host_mappings.insert(
            "h2".into(),
            Mapping {
                repositories: RepoSet::default(),
                updated_at: t,
            },
        );
        s.user_mappings.insert(
            "admin".into(),
            Mapping {
                repositories: RepoSet::new(["priv"]),
                updated_at: t,
            },
        );
        s
    }

    fn round_trip(s: &Snapshot) -> Snapshot {
        let mut buf = Vec::new();
        write(s, &mut buf).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["version"], 1);
        let parsed: In = serde_json::from_slice(&buf).unwrap();
        parsed.into_snapshot(SystemTime::now())
    }

    #[test]
    fn round_trip_keeps_everything() {
        let s = sample();
        assert_eq!(round_trip(&s), s);
    }

    #[test]
    fn output_is_deterministic() {
        let s = sample();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write(&s, &mut a).unwrap();
        write(&s.clone(), &mut b).unwrap();
        let strip = |v: &[u8]| {
            let mut j: serde_json::Value = serde_json::from_slice(v).unwrap();
            j["saved_at"] = 0.into();
            j.to_string()
        };
        assert_eq!(strip(&a), strip(&b));
        let text = String::from_utf8(a).unwrap();
        assert!(text.find("\"h1\"").unwrap() < text.find("\"h2\"").unwrap());
    }

    #[test]
    fn names_are_shared_with_the_repository_list() {
        let s = round_trip(&sample());
        let listed = s.repositories.get_key_value("priv").unwrap().0.clone();
        let mapped = s.host_mappings["h1"]
            .repositories
            .iter()
            .find(|n| *n == "priv")
            .unwrap();
        assert!(std::ptr::eq(listed.as_ptr(), mapped.as_ptr()));
    }

    #[test]
    fn future_timestamps_are_clamped() {
        let now = SystemTime::now();
        let json = format!(
            r#"{{"version":1,"host_mappings":{{"h":{{"repositories":[],"updated_at":{}}}}}}}"#,
            to_unix_millis(now) + 86_400_000
        );
        let parsed: In = serde_json::from_str(&json).unwrap();
        let s = parsed.into_snapshot(now);
        assert_eq!(s.host_mappings["h"].updated_at, now);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let parsed: In =
            serde_json::from_str(r#"{"version":1,"repositories":{"a":true},"future":{"x":1}}"#)
                .unwrap();
        assert_eq!(
            parsed.into_snapshot(SystemTime::now()).repository("a"),
            Some(true)
        );
    }
}
