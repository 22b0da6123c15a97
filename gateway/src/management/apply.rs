//! Each push as a pure function from the current snapshot to the next one.
//!
//! Unlike the Ruby gateway, whose pushes cascaded deletes through its tables,
//! no push here removes what another push owns: a new repository list keeps
//! the host and user mappings (visibility intersects them with the list at
//! read time), and a new host list drops only the mappings of hosts that left.
//! So a sync never opens a window in which hosts lose access, and a mapping
//! naming a repository the list does not carry yet starts working as soon as
//! the list does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use super::payload::{HostList, MappingList, RepositoryList};
use crate::state::{Mapping, RepoSet, Snapshot};

/// The old snapshot's allocation for `key` when it has one.
fn reuse(set: &HashSet<Arc<str>>, key: &str) -> Arc<str> {
    set.get(key).cloned().unwrap_or_else(|| Arc::from(key))
}

fn mapping(snapshot: &Snapshot, repositories: &[String], now: SystemTime) -> Mapping {
    Mapping {
        repositories: RepoSet::from_arcs(
            repositories
                .iter()
                .map(|r| snapshot.intern_repository(r))
                .collect(),
        ),
        updated_at: now,
    }
}

/// Replace the repository list. A name listed twice is auth_required if any
/// entry says so: when in doubt, not public.
pub fn repository_list(old: &Snapshot, push: &RepositoryList) -> Snapshot {
    let mut repositories: HashMap<Arc<str>, bool> = HashMap::with_capacity(push.repositories.len());
    for (name, auth_required) in &push.repositories {
        let key = old.intern_repository(name);
        let slot = repositories.entry(key).or_insert(*auth_required);
        *slot |= *auth_required;
    }
    Snapshot {
        repositories,
        ..old.clone()
    }
}

/// Replace the set of known hosts; mappings of hosts no longer known go.
pub fn update_hosts(old: &Snapshot, push: &HostList) -> Snapshot {
    let hosts: HashSet<Arc<str>> = push.uuids.iter().map(|u| reuse(&old.hosts, u)).collect();
    let host_mappings = old
        .host_mappings
        .iter()
        .filter(|(k, _)| hosts.contains(&***k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Snapshot {
        hosts,
        host_mappings,
        ..old.clone()
    }
}

/// Replace every host mapping. A host Katello maps but did not list in
/// `update_hosts` becomes known: the push is the newer word on it, and
/// dropping it would make it look unknown until the next sync.
pub fn host_repository_mapping(old: &Snapshot, push: &MappingList, now: SystemTime) -> Snapshot {
    let mut hosts = old.hosts.clone();
    let mut host_mappings = HashMap::with_capacity(push.mappings.len());
    for (uuid, repositories) in &push.mappings {
        let key = reuse(&old.hosts, uuid);
        hosts.insert(key.clone());
        host_mappings.insert(key, mapping(old, repositories, now));
    }
    Snapshot {
        hosts,
        host_mappings,
        ..old.clone()
    }
}

/// Replace the mappings of the listed hosts only, adding them to the known
/// hosts (the Ruby gateway's `find_or_create_host`).
pub fn update_host_repositories(old: &Snapshot, push: &MappingList, now: SystemTime) -> Snapshot {
    let mut next = old.clone();
    for (uuid, repositories) in &push.mappings {
        let key = reuse(&old.hosts, uuid);
        next.hosts.insert(key.clone());
        next.host_mappings
            .insert(key, mapping(old, repositories, now));
    }
    next
}

/// Replace every user mapping; a login pushed with no repositories maps to
/// none (it is kept, so we know it was pushed).
pub fn user_repository_mapping(old: &Snapshot, push: &MappingList, now: SystemTime) -> Snapshot {
    let user_mappings = push
        .mappings
        .iter()
        .map(|(login, repos)| (Arc::from(login.as_str()), mapping(old, repos, now)))
        .collect();
    Snapshot {
        user_mappings,
        ..old.clone()
    }
}
