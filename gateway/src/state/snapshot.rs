//! The state Katello pushes, as one immutable value. Readers hold an
//! `Arc<Snapshot>`; a push builds a whole new snapshot and swaps it in, so a
//! reader sees the state before or after a push, never half of one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// A set of repository names, sorted, for O(log n) membership and cheap sharing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "Vec<String>", into = "Vec<String>")]
pub struct RepoSet(Arc<[Arc<str>]>);

impl RepoSet {
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut v: Vec<Arc<str>> = names.into_iter().map(|s| Arc::from(s.as_ref())).collect();
        v.sort_unstable();
        v.dedup();
        RepoSet(v.into())
    }

    /// Like `new`, but keeps the given allocations, so names shared with the
    /// repository list are stored once however many hosts hold them.
    pub fn from_arcs(mut names: Vec<Arc<str>>) -> Self {
        names.sort_unstable();
        names.dedup();
        RepoSet(names.into())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.binary_search_by(|probe| (**probe).cmp(name)).is_ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|s| &**s)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<String>> for RepoSet {
    fn from(v: Vec<String>) -> Self {
        RepoSet::new(v)
    }
}

impl From<RepoSet> for Vec<String> {
    fn from(s: RepoSet) -> Self {
        s.iter().map(str::to_owned).collect()
    }
}

/// The repositories one host or user may see beyond the public ones, and when
/// that was learned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    pub repositories: RepoSet,
    pub updated_at: SystemTime,
}

/// Everything pushed by Katello (contract §6).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The repository list: name -> auth_required. A name not here does not exist.
    pub repositories: HashMap<Arc<str>, bool>,
    /// Hosts Katello says belong to this proxy (`update_hosts`).
    pub hosts: HashSet<Arc<str>>,
    /// Host UUID -> pushed mapping.
    pub host_mappings: HashMap<Arc<str>, Mapping>,
    /// User login -> mapping (pushed, or refreshed at `/v2/token`).
    pub user_mappings: HashMap<Arc<str>, Mapping>,
    /// Bumped by the store on every swap, so caches derived from a snapshot can
    /// tell versions apart (a pointer could be reused after a free).
    #[serde(skip)]
    pub generation: u64,
}

impl Snapshot {
    /// `Some(auth_required)` when the repository is on the pushed list.
    pub fn repository(&self, name: &str) -> Option<bool> {
        self.repositories.get(name).copied()
    }

    pub fn is_public(&self, name: &str) -> bool {
        self.repository(name) == Some(false)
    }

    /// All repository names, sorted.
    pub fn repository_names(&self) -> Vec<Arc<str>> {
        let mut v: Vec<Arc<str>> = self.repositories.keys().cloned().collect();
        v.sort_unstable();
        v
    }

    /// The list's own allocation for `name` when it is on the list (else a
    /// new one), so a name held by thousands of mappings is stored once.
    pub fn intern_repository(&self, name: &str) -> Arc<str> {
        self.repositories
            .get_key_value(name)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| Arc::from(name))
    }

    /// The same set, each name held in the list's allocation where it is on the list.
    pub fn intern_set(&self, set: &RepoSet) -> RepoSet {
        RepoSet::from_arcs(set.iter().map(|n| self.intern_repository(n)).collect())
    }

    pub fn host_mapping(&self, uuid: &str) -> Option<&Mapping> {
        self.host_mappings.get(uuid)
    }

    pub fn user_mapping(&self, login: &str) -> Option<&Mapping> {
        self.user_mappings.get(login)
    }

    /// Whether a client whose own mapping is `granted` may see `name`:
    /// the repository must be on the list, and public or granted.
    pub fn visible(&self, name: &str, granted: Option<&RepoSet>) -> bool {
        match self.repository(name) {
            Some(false) => true,
            Some(true) => granted.is_some_and(|g| g.contains(name)),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        let mut s = Snapshot::default();
        s.repositories.insert("pub".into(), false);
        s.repositories.insert("priv".into(), true);
        s
    }

    #[test]
    fn visibility_rules() {
        let s = snap();
        let granted = RepoSet::new(["priv", "unknown"]);
        assert!(s.visible("pub", None));
        assert!(!s.visible("priv", None));
        assert!(s.visible("priv", Some(&granted)));
        // granted but not on the pushed list: does not exist
        assert!(!s.visible("unknown", Some(&granted)));
    }

    #[test]
    fn interned_sets_share_the_lists_names() {
        let s = snap();
        let a = s.intern_set(&RepoSet::new(["priv", "elsewhere"]));
        let b = s.intern_set(&RepoSet::new(["priv"]));
        let (listed, _) = s.repositories.get_key_value("priv").expect("on the list");
        let held = |set: &RepoSet| set.0.iter().find(|n| &***n == "priv").cloned();
        assert!(Arc::ptr_eq(&held(&a).expect("kept"), listed));
        assert!(Arc::ptr_eq(&held(&b).expect("kept"), listed));
        // A name not on the list is kept as it is: a later push may list it.
        assert!(a.contains("elsewhere") && a.len() == 2);
    }

    #[test]
    fn repo_set_is_sorted_and_deduplicated() {
        let s = RepoSet::new(["b", "a", "b"]);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec!["a", "b"]);
        assert!(s.contains("a") && !s.contains("c"));
    }
}
