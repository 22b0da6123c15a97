//! Pushes as Katello sends them, byte for byte, through decoding and the
//! store; and the Ruby gateway's known failures on these routes (katello
//! contract §6), each shown fixed.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::state::{Mapping, RepoSet, Snapshot};

// ---- rest-client's encoding of a Ruby hash (flatten_params + encode_query_string) ----

/// The Ruby values Katello puts in a payload.
#[derive(Clone, Debug)]
pub(super) enum Ruby {
    Nil,
    Str(String),
    Bool(bool),
    Arr(Vec<Ruby>),
    Hash(Vec<(Option<String>, Ruby)>),
}

fn esc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn flatten(v: &Ruby, parent: Option<&str>, out: &mut Vec<(String, Option<String>)>) {
    let before = out.len();
    match v {
        Ruby::Hash(pairs) => {
            for (k, v) in pairs {
                let k = esc(k.as_deref().unwrap_or(""));
                let key = match parent {
                    Some(p) => format!("{p}[{k}]"),
                    None => k,
                };
                match v {
                    Ruby::Arr(_) | Ruby::Hash(_) => flatten(v, Some(&key), out),
                    _ => out.push((key, scalar(v))),
                }
            }
        }
        Ruby::Arr(items) => {
            let key = format!("{}[]", parent.unwrap_or(""));
            for v in items {
                match v {
                    Ruby::Arr(_) | Ruby::Hash(_) => flatten(v, Some(&key), out),
                    _ => out.push((key.clone(), scalar(v))),
                }
            }
        }
        _ => {}
    }
    // "transform empty collections into nil, where possible"
    if out.len() == before
        && let Some(p) = parent
    {
        out.push((p.to_owned(), None));
    }
}

fn scalar(v: &Ruby) -> Option<String> {
    match v {
        Ruby::Nil => None,
        Ruby::Str(s) => Some(s.clone()),
        Ruby::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The body rest-client sends for `payload`.
pub(super) fn wire(payload: &Ruby) -> String {
    let mut pairs = Vec::new();
    flatten(payload, None, &mut pairs);
    pairs
        .into_iter()
        .map(|(k, v)| match v {
            None => k,
            Some(v) => format!("{k}={}", esc(&v)),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn str(s: &str) -> Ruby {
    Ruby::Str(s.to_owned())
}

fn hash(pairs: Vec<(&str, Ruby)>) -> Ruby {
    Ruby::Hash(
        pairs
            .into_iter()
            .map(|(k, v)| (Some(k.to_owned()), v))
            .collect(),
    )
}

fn repo(name: &str, auth_required: bool) -> Ruby {
    hash(vec![
        ("repository", str(name)),
        ("auth_required", Ruby::Bool(auth_required)),
    ])
}

/// `{key => [{name => [repos]}, ...]}` as Katello builds it (one hash per key).
fn mapping_payload(key: &str, entries: Vec<(Option<&str>, Vec<Ruby>)>) -> Ruby {
    let list = entries
        .into_iter()
        .map(|(k, repos)| Ruby::Hash(vec![(k.map(str::to_owned), Ruby::Arr(repos))]))
        .collect();
    hash(vec![(key, Ruby::Arr(list))])
}

// ---- driving pushes ----

fn store_with(s: Snapshot) -> StateStore {
    StateStore::in_memory(s)
}

#[track_caller]
fn push_form(store: &StateStore, route: Route, body: &str) -> Summary {
    let params = match decode(BodyFormat::Form, body.as_bytes()) {
        Ok(p) => p,
        Err(e) => panic!("{}: {e}", route.name()),
    };
    match apply_push(
        store,
        route,
        &params,
        &PushPolicy::default(),
        SystemTime::now(),
    ) {
        Ok(s) => s,
        Err(e) => panic!("{}: {e}", route.name()),
    }
}

#[track_caller]
fn push_json(store: &StateStore, route: Route, body: &str) -> Summary {
    let params = match decode(BodyFormat::Json, body.as_bytes()) {
        Ok(p) => p,
        Err(e) => panic!("{}: {e}", route.name()),
    };
    match apply_push(
        store,
        route,
        &params,
        &PushPolicy::default(),
        SystemTime::now(),
    ) {
        Ok(s) => s,
        Err(e) => panic!("{}: {e}", route.name()),
    }
}

#[track_caller]
fn rejected(store: &StateStore, route: Route, format: BodyFormat, body: &str) -> String {
    let before = store.snapshot();
    let r = decode(format, body.as_bytes())
        .and_then(|p| apply_push(store, route, &p, &PushPolicy::default(), SystemTime::now()));
    let after = store.snapshot();
    assert!(
        Arc::ptr_eq(&before, &after),
        "a rejected push must change nothing"
    );
    match r {
        Err(PushError::BadRequest(m)) => m,
        other => panic!("{}: expected a 400, got {other:?}", route.name()),
    }
}

fn granted(s: &Snapshot, uuid: &str) -> Vec<String> {
    s.host_mapping(uuid)
        .map(|m| m.repositories.iter().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn user_granted(s: &Snapshot, login: &str) -> Vec<String> {
    s.user_mapping(login)
        .map(|m| m.repositories.iter().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn old_mapping(names: &[&str]) -> Mapping {
    Mapping {
        repositories: RepoSet::new(names),
        updated_at: UNIX_EPOCH + Duration::from_secs(1_000),
    }
}

/// A proxy after one complete sync: two repositories, two hosts, one user.
fn synced() -> Snapshot {
    let mut s = Snapshot::default();
    s.repositories.insert("org/pub".into(), false);
    s.repositories.insert("org/priv".into(), true);
    s.hosts.insert("h1".into());
    s.hosts.insert("h2".into());
    s.host_mappings
        .insert("h1".into(), old_mapping(&["org/priv"]));
    s.host_mappings.insert("h2".into(), old_mapping(&[]));
    s.user_mappings
        .insert("admin".into(), old_mapping(&["org/priv"]));
    s
}

// ---- the wire encoding itself ----

#[test]
fn encoder_matches_katello_fixtures() {
    let body = wire(&hash(vec![(
        "repositories",
        Ruby::Arr(vec![repo("org/a", true), repo("org/b", false)]),
    )]));
    assert_eq!(
        body,
        "repositories[][repository]=org%2Fa&repositories[][auth_required]=true\
         &repositories[][repository]=org%2Fb&repositories[][auth_required]=false"
    );
    assert_eq!(
        wire(&hash(vec![("repositories", Ruby::Arr(vec![]))])),
        "repositories"
    );
    assert_eq!(
        wire(&mapping_payload(
            "hosts",
            vec![(Some("u1"), vec![repo("a", true)]), (Some("u2"), vec![])]
        )),
        "hosts[][u1][][repository]=a&hosts[][u1][][auth_required]=true&hosts[][u2]"
    );
    assert_eq!(
        wire(&mapping_payload(
            "hosts",
            vec![(None, vec![repo("a", true)])]
        )),
        "hosts[][][][repository]=a&hosts[][][][auth_required]=true"
    );
}

// ---- repository_list ----

#[test]
fn repository_list_replaces_the_list() {
    let store = store_with(synced());
    let body = wire(&hash(vec![(
        "repositories",
        Ruby::Arr(vec![
            repo("org/new", true),
            repo("org/pub", false),
            repo("org/priv", true),
        ]),
    )]));
    let s = push_form(&store, Route::RepositoryList, &body);
    assert_eq!((s.entries, s.detail, s.skipped), (3, 1, 0));
    let snap = store.snapshot();
    assert_eq!(snap.repository("org/new"), Some(true));
    assert_eq!(snap.repository("org/pub"), Some(false));
    assert_eq!(snap.repositories.len(), 3);
}

#[test]
fn max_shrink_percent_bounds_what_one_repository_list_may_remove() {
    // Four repositories; each push keeps the first `keep` of them.
    let names = ["org/a", "org/b", "org/c", "org/d"];
    let list = |keep: usize| {
        let repos: Vec<String> = names[..keep]
            .iter()
            .map(|n| format!(r#"{{"repository":"{n}","auth_required":true}}"#))
            .collect();
        format!(r#"{{"repositories":[{}]}}"#, repos.join(","))
    };
    let full = {
        let store = store_with(Snapshot::default());
        push_json(&store, Route::RepositoryList, &list(4));
        store.snapshot()
    };
    let outcome = |max_shrink_percent: u8, keep: usize| {
        let store = store_with((*full).clone());
        let params = decode(BodyFormat::Json, list(keep).as_bytes()).map_err(|e| e.to_string())?;
        let policy = PushPolicy { max_shrink_percent };
        let before = store.snapshot();
        match apply_push(
            &store,
            Route::RepositoryList,
            &params,
            &policy,
            SystemTime::now(),
        ) {
            Ok(_) => Ok(store.snapshot().repositories.len()),
            Err(PushError::Conflict(m)) => {
                assert!(Arc::ptr_eq(&before, &store.snapshot()));
                Err(m)
            }
            Err(e) => panic!("{e}"),
        }
    };
    // Dropping exactly the allowed share is accepted; one more is not.
    assert_eq!(outcome(50, 2), Ok(2));
    let refused = outcome(50, 1).expect_err("3 of 4 is over 50%");
    assert!(
        refused.contains("remove 3 of the 4 repositories (75%)"),
        "{refused}"
    );
    assert!(outcome(0, 3).is_err(), "0 allows no removal");
    assert_eq!(outcome(0, 4), Ok(4));
    assert_eq!(outcome(100, 0), Ok(0), "100 is off");
    assert_eq!(outcome(99, 0).map_err(|_| ()), Err(()));
    // A first list, onto nothing, is never a shrink.
    let store = store_with(Snapshot::default());
    let params = decode(BodyFormat::Json, list(1).as_bytes()).map_err(|e| e.to_string());
    let policy = PushPolicy {
        max_shrink_percent: 0,
    };
    assert!(params.is_ok_and(|p| {
        apply_push(
            &store,
            Route::RepositoryList,
            &p,
            &policy,
            SystemTime::now(),
        )
        .is_ok()
    }));
}

#[test]
fn repository_list_as_json_with_bool_or_string_booleans() {
    let store = store_with(Snapshot::default());
    push_json(
        &store,
        Route::RepositoryList,
        r#"{"repositories":[{"repository":"a","auth_required":true},{"repository":"b","auth_required":"false"},{"repository":"c","auth_required":"TRUE"}]}"#,
    );
    let snap = store.snapshot();
    assert_eq!(
        (
            snap.repository("a"),
            snap.repository("b"),
            snap.repository("c")
        ),
        (Some(true), Some(false), Some(true))
    );
}

#[test]
fn ruby_32745_empty_repository_list_arrives_as_nil() {
    let store = store_with(synced());
    push_form(&store, Route::RepositoryList, "repositories");
    let snap = store.snapshot();
    assert!(snap.repositories.is_empty());
    // Nothing is visible, but the mappings wait for the next list.
    assert_eq!(granted(&snap, "h1"), vec!["org/priv"]);
    assert!(!snap.visible("org/priv", snap.host_mapping("h1").map(|m| &m.repositories)));
    // JSON's spelling of the same thing.
    let store = store_with(synced());
    push_json(&store, Route::RepositoryList, r#"{"repositories":null}"#);
    assert!(store.snapshot().repositories.is_empty());
    push_json(&store, Route::RepositoryList, r#"{"repositories":[]}"#);
    assert!(store.snapshot().repositories.is_empty());
}

#[test]
fn ruby_repository_list_does_not_cascade_into_the_mappings() {
    // The Ruby gateway deleted every host and user mapping with the old list
    // and only restored them at the end of the sync.
    let store = store_with(synced());
    let body = wire(&hash(vec![(
        "repositories",
        Ruby::Arr(vec![repo("org/priv", true), repo("org/pub", false)]),
    )]));
    push_form(&store, Route::RepositoryList, &body);
    let snap = store.snapshot();
    assert!(snap.visible("org/priv", snap.host_mapping("h1").map(|m| &m.repositories)));
    assert!(snap.visible(
        "org/priv",
        snap.user_mapping("admin").map(|m| &m.repositories)
    ));
    assert_eq!(snap.hosts.len(), 2);
}

#[test]
fn ruby_repos_not_on_the_list_are_kept_in_mappings() {
    // Mapped before the list carries it: the Ruby gateway dropped the name for
    // good; here it becomes visible as soon as the list has it.
    let store = store_with(synced());
    let body = wire(&mapping_payload(
        "hosts",
        vec![(
            Some("h1"),
            vec![repo("org/priv", true), repo("org/later", true)],
        )],
    ));
    push_form(&store, Route::HostRepositoryMapping, &body);
    let snap = store.snapshot();
    let g = snap.host_mapping("h1").map(|m| m.repositories.clone());
    assert!(
        !snap.visible("org/later", g.as_ref()),
        "not on the list yet"
    );
    let body = wire(&hash(vec![(
        "repositories",
        Ruby::Arr(vec![repo("org/priv", true), repo("org/later", true)]),
    )]));
    push_form(&store, Route::RepositoryList, &body);
    let snap = store.snapshot();
    assert!(snap.visible(
        "org/later",
        snap.host_mapping("h1").map(|m| &m.repositories)
    ));
}

#[test]
fn repository_list_rejects_wrong_shapes_and_changes_nothing() {
    let store = store_with(synced());
    let form = |b: &str| rejected(&store, Route::RepositoryList, BodyFormat::Form, b);
    assert!(form("").contains("missing `repositories`"));
    assert!(form("hosts[][uuid]=x").contains("missing `repositories`"));
    assert!(form("repositories=a").contains("must be a list"));
    assert!(form("repositories[repository]=a").contains("must be a list"));
    assert!(form("repositories[]=a").contains("`repositories[0]` must be a hash"));
    assert!(
        form("repositories[][auth_required]=true")
            .contains("`repositories[0]` has no `repository`")
    );
    let m = form("repositories[][repository]=a&repositories[][auth_required]=yes");
    assert!(
        m.contains("`repositories[0][auth_required]` must be true or false"),
        "{m}"
    );
    assert!(
        form("repositories[][repository][x]=a")
            .contains("`repositories[0][repository]` must be a string")
    );
    assert!(
        form("repositories=a&repositories[][repository]=b").contains("expected Array (got String)")
    );
    let json = |b: &str| rejected(&store, Route::RepositoryList, BodyFormat::Json, b);
    assert!(json("[1]").contains("must be an object"));
    assert!(json("{\"repositories\":").contains("invalid JSON"));
    assert!(
        json("{\"repositories\":[{\"repository\":\"a\",\"auth_required\":2}]}")
            .contains("true or false")
    );
}

#[test]
fn repository_list_nameless_entries_are_skipped_and_unknown_auth_is_private() {
    let store = store_with(Snapshot::default());
    let s = push_form(
        &store,
        Route::RepositoryList,
        "repositories[][repository]&repositories[][auth_required]=false\
         &repositories[][repository]=%20&repositories[][auth_required]=false\
         &repositories[][repository]=a",
    );
    assert_eq!((s.entries, s.skipped), (1, 2));
    assert_eq!(store.snapshot().repository("a"), Some(true));
}

#[test]
fn repository_listed_twice_is_private_if_any_entry_says_so() {
    let store = store_with(Snapshot::default());
    let body = wire(&hash(vec![(
        "repositories",
        Ruby::Arr(vec![repo("a", false), repo("a", true), repo("b", false)]),
    )]));
    push_form(&store, Route::RepositoryList, &body);
    let snap = store.snapshot();
    assert_eq!(
        (snap.repository("a"), snap.repository("b")),
        (Some(true), Some(false))
    );
}

// ---- update_hosts ----

#[test]
fn update_hosts_replaces_known_hosts_and_drops_mappings_of_departed_ones() {
    let store = store_with(synced());
    let body = wire(&hash(vec![(
        "hosts",
        Ruby::Arr(vec![
            hash(vec![("uuid", str("h1"))]),
            hash(vec![("uuid", str("h3"))]),
        ]),
    )]));
    let s = push_form(&store, Route::UpdateHosts, &body);
    assert_eq!(s.entries, 2);
    let snap = store.snapshot();
    assert!(snap.hosts.contains("h1") && snap.hosts.contains("h3") && !snap.hosts.contains("h2"));
    assert_eq!(
        granted(&snap, "h1"),
        vec!["org/priv"],
        "a host still known keeps its mapping"
    );
    assert!(snap.host_mapping("h2").is_none());
    assert!(
        snap.host_mapping("h3").is_none(),
        "a new host waits for its mapping"
    );
}

#[test]
fn ruby_38862_nil_and_blank_uuids_in_update_hosts() {
    let store = store_with(synced());
    let body = wire(&hash(vec![(
        "hosts",
        Ruby::Arr(vec![
            hash(vec![("uuid", str("h1"))]),
            hash(vec![("uuid", Ruby::Nil)]),
            hash(vec![("uuid", str(""))]),
            hash(vec![("uuid", str("  "))]),
            hash(vec![("uuid", str("h2"))]),
        ]),
    )]));
    assert_eq!(
        body,
        "hosts[][uuid]=h1&hosts[][uuid]&hosts[][uuid]=&hosts[][uuid]=++&hosts[][uuid]=h2"
    );
    let s = push_form(&store, Route::UpdateHosts, &body);
    assert_eq!((s.entries, s.skipped), (2, 3));
    let snap = store.snapshot();
    assert_eq!(snap.hosts.len(), 2);
    assert!(!snap.hosts.contains(""));
    assert_eq!(granted(&snap, "h1"), vec!["org/priv"]);
}

#[test]
fn update_hosts_empty_list_forgets_every_host() {
    let store = store_with(synced());
    push_form(&store, Route::UpdateHosts, "hosts");
    let snap = store.snapshot();
    assert!(snap.hosts.is_empty() && snap.host_mappings.is_empty());
    assert_eq!(
        user_granted(&snap, "admin"),
        vec!["org/priv"],
        "users are not hosts"
    );
}

#[test]
fn update_hosts_rejects_wrong_shapes() {
    let store = store_with(synced());
    let form = |b: &str| rejected(&store, Route::UpdateHosts, BodyFormat::Form, b);
    assert!(form("").contains("missing `hosts`"));
    assert!(form("hosts[]=h1").contains("`hosts[0]` must be a hash with `uuid`"));
    assert!(form("hosts[][id]=h1").contains("`hosts[0]` has no `uuid`"));
    assert!(form("hosts[][uuid][]=h1").contains("`hosts[0][uuid]` must be a string"));
    let json = |b: &str| rejected(&store, Route::UpdateHosts, BodyFormat::Json, b);
    assert!(json(r#"{"hosts":["h1"]}"#).contains("must be a hash"));
}

#[test]
fn update_hosts_as_json() {
    let store = store_with(synced());
    push_json(
        &store,
        Route::UpdateHosts,
        r#"{"hosts":[{"uuid":"h2"},{"uuid":null},{"uuid":""}]}"#,
    );
    let snap = store.snapshot();
    assert_eq!(snap.hosts.len(), 1);
    assert!(snap.host_mapping("h2").is_some());
}

// ---- host_repository_mapping ----

#[test]
fn host_repository_mapping_replaces_all_host_mappings() {
    let store = store_with(synced());
    let before = SystemTime::now();
    let body = wire(&mapping_payload(
        "hosts",
        vec![
            (
                Some("h2"),
                vec![repo("org/priv", true), repo("org/pub", false)],
            ),
            (Some("h9"), vec![repo("org/priv", true)]),
        ],
    ));
    let s = push_form(&store, Route::HostRepositoryMapping, &body);
    assert_eq!((s.entries, s.detail), (2, 2));
    let snap = store.snapshot();
    assert!(snap.host_mapping("h1").is_none(), "h1 was not in the push");
    assert_eq!(
        granted(&snap, "h2"),
        vec!["org/priv"],
        "only auth_required entries are kept"
    );
    assert_eq!(granted(&snap, "h9"), vec!["org/priv"]);
    assert!(snap.hosts.contains("h9"), "a mapped host becomes known");
    assert!(snap.hosts.contains("h1"), "known hosts stay known");
    assert!(
        snap.host_mapping("h2")
            .is_some_and(|m| m.updated_at >= before)
    );
}

#[test]
fn ruby_38728_host_with_no_repositories() {
    let store = store_with(synced());
    let body = wire(&mapping_payload(
        "hosts",
        vec![
            (Some("h1"), vec![]),
            (Some("h2"), vec![repo("org/priv", true)]),
            (Some("h3"), vec![]),
        ],
    ));
    assert_eq!(
        body,
        "hosts[][h1]&hosts[][h2][][repository]=org%2Fpriv&hosts[][h2][][auth_required]=true&hosts[][h3]"
    );
    let s = push_form(&store, Route::HostRepositoryMapping, &body);
    assert_eq!(s.entries, 3);
    let snap = store.snapshot();
    // Mapped to none, and known to be: no need to ask central about it.
    assert!(
        snap.host_mapping("h1")
            .is_some_and(|m| m.repositories.is_empty())
    );
    assert!(
        snap.host_mapping("h3")
            .is_some_and(|m| m.repositories.is_empty())
    );
    assert_eq!(granted(&snap, "h2"), vec!["org/priv"]);
    // A push of only such hosts works too.
    push_form(&store, Route::HostRepositoryMapping, "hosts[][h1]");
    assert!(
        store
            .snapshot()
            .host_mapping("h1")
            .is_some_and(|m| m.repositories.is_empty())
    );
}

#[test]
fn ruby_38862_nil_and_blank_uuids_in_host_repository_mapping() {
    let store = store_with(synced());
    let body = wire(&mapping_payload(
        "hosts",
        vec![
            (Some("h1"), vec![repo("org/priv", true)]),
            (None, vec![repo("org/priv", true)]),
            (Some(""), vec![repo("org/priv", true)]),
            (Some(" "), vec![repo("org/priv", true)]),
            (None, vec![]),
            (Some("h2"), vec![repo("org/priv", true)]),
        ],
    ));
    let s = push_form(&store, Route::HostRepositoryMapping, &body);
    assert_eq!(s.entries, 2);
    assert!(s.skipped >= 3);
    let snap = store.snapshot();
    assert_eq!(granted(&snap, "h1"), vec!["org/priv"]);
    assert_eq!(granted(&snap, "h2"), vec!["org/priv"]);
    assert!(snap.host_mapping("repository").is_none() && snap.host_mapping("").is_none());
    assert!(!snap.hosts.contains("repository") && !snap.hosts.contains(" "));
    // Nil UUID first in the body.
    let body = wire(&mapping_payload(
        "hosts",
        vec![(None, vec![]), (Some("h1"), vec![repo("org/priv", true)])],
    ));
    push_form(&store, Route::HostRepositoryMapping, &body);
    assert_eq!(granted(&store.snapshot(), "h1"), vec!["org/priv"]);
}

#[test]
fn host_repository_mapping_one_hash_per_host_in_json() {
    let store = store_with(synced());
    push_json(
        &store,
        Route::HostRepositoryMapping,
        r#"{"hosts":[{"h1":[{"repository":"org/priv","auth_required":true}]},{"h2":null},{"h3":[]},
            {"h1":[{"repository":"org/other","auth_required":"true"}]},{"h4":[{"repository":"org/x"}]}]}"#,
    );
    let snap = store.snapshot();
    assert_eq!(
        granted(&snap, "h1"),
        vec!["org/other", "org/priv"],
        "a host listed twice gets both"
    );
    assert!(
        snap.host_mapping("h2")
            .is_some_and(|m| m.repositories.is_empty())
    );
    assert!(
        snap.host_mapping("h3")
            .is_some_and(|m| m.repositories.is_empty())
    );
    assert_eq!(
        granted(&snap, "h4"),
        vec!["org/x"],
        "listing a repository is the grant"
    );
}

#[test]
fn host_repository_mapping_empty_list_maps_no_host() {
    let store = store_with(synced());
    push_form(&store, Route::HostRepositoryMapping, "hosts");
    let snap = store.snapshot();
    assert!(snap.host_mappings.is_empty());
    assert_eq!(snap.hosts.len(), 2);
}

#[test]
fn host_repository_mapping_rejects_wrong_shapes() {
    let store = store_with(synced());
    let form = |b: &str| rejected(&store, Route::HostRepositoryMapping, BodyFormat::Form, b);
    assert!(form("").contains("missing `hosts`"));
    assert!(form("hosts=x").contains("must be a list"));
    assert!(form("hosts[]=h1").contains("`hosts[0]` must be a hash"));
    assert!(
        form("hosts[][h1]=org%2Fpriv").contains("`hosts[][h1]` must be a list of repositories")
    );
    assert!(form("hosts[][h1][repository]=a").contains("`hosts[][h1]` must be a list"));
    assert!(form("hosts[][h1][]=a").contains("`hosts[][h1][0]` must be a hash"));
    assert!(
        form("hosts[][h1][][auth_required]=true").contains("`hosts[][h1][0]` has no `repository`")
    );
    assert!(
        form("hosts[][h1][][repository]=a&hosts[][h1][][auth_required]=maybe")
            .contains("true or false")
    );
}

// ---- update_host_repositories ----

#[test]
fn update_host_repositories_changes_only_the_listed_hosts() {
    let store = store_with(synced());
    let body = wire(&mapping_payload(
        "hosts",
        vec![
            (Some("h2"), vec![repo("org/priv", true)]),
            (Some("h7"), vec![]),
        ],
    ));
    push_form(&store, Route::UpdateHostRepositories, &body);
    let snap = store.snapshot();
    assert_eq!(granted(&snap, "h1"), vec!["org/priv"]);
    assert_eq!(
        snap.host_mapping("h1").map(|m| m.updated_at),
        Some(UNIX_EPOCH + Duration::from_secs(1_000))
    );
    assert_eq!(granted(&snap, "h2"), vec!["org/priv"]);
    assert!(
        snap.host_mapping("h7")
            .is_some_and(|m| m.repositories.is_empty())
    );
    assert!(snap.hosts.contains("h7"), "find_or_create_host");
}

#[test]
fn ruby_update_host_repositories_nil_hosts_is_400_not_500() {
    let store = store_with(synced());
    let m = rejected(
        &store,
        Route::UpdateHostRepositories,
        BodyFormat::Form,
        "hosts",
    );
    assert!(m.contains("`hosts` is required"), "{m}");
    let m = rejected(&store, Route::UpdateHostRepositories, BodyFormat::Form, "");
    assert!(m.contains("missing `hosts`"), "{m}");
    let m = rejected(
        &store,
        Route::UpdateHostRepositories,
        BodyFormat::Json,
        r#"{"hosts":null}"#,
    );
    assert!(m.contains("`hosts` is required"), "{m}");
}

// ---- user_repository_mapping ----

#[test]
fn user_repository_mapping_replaces_all_user_mappings() {
    let store = store_with(synced());
    let body = wire(&mapping_payload(
        "users",
        vec![(Some("bob@example.com"), vec![repo("org/priv", true)])],
    ));
    assert!(body.starts_with("users[][bob%40example.com][]"), "{body}");
    push_form(&store, Route::UserRepositoryMapping, &body);
    let snap = store.snapshot();
    assert!(snap.user_mapping("admin").is_none());
    assert_eq!(user_granted(&snap, "bob@example.com"), vec!["org/priv"]);
    assert_eq!(
        granted(&snap, "h1"),
        vec!["org/priv"],
        "hosts are not users"
    );
}

#[test]
fn ruby_user_repository_mapping_user_with_no_repositories_is_not_a_500() {
    // The Ruby gateway called `nil.filter` and failed every user's mapping.
    let store = store_with(synced());
    let body = wire(&mapping_payload(
        "users",
        vec![
            (Some("admin"), vec![repo("org/priv", true)]),
            (Some("viewer"), vec![]),
            (Some("bob"), vec![repo("org/priv", true)]),
        ],
    ));
    assert!(body.contains("users[][viewer]&"), "{body}");
    let s = push_form(&store, Route::UserRepositoryMapping, &body);
    assert_eq!((s.entries, s.detail), (3, 2));
    let snap = store.snapshot();
    assert_eq!(user_granted(&snap, "admin"), vec!["org/priv"]);
    assert!(
        snap.user_mapping("viewer")
            .is_some_and(|m| m.repositories.is_empty())
    );
    assert_eq!(user_granted(&snap, "bob"), vec!["org/priv"]);
}

#[test]
fn ruby_user_repository_mapping_login_unknown_here_is_accepted() {
    // A login with no token on this gateway made the Ruby gateway 500.
    let store = store_with(Snapshot::default());
    assert!(store.tokens().users().is_empty());
    push_form(
        &store,
        Route::UserRepositoryMapping,
        "users[][stranger][][repository]=a&users[][stranger][][auth_required]=true",
    );
    assert_eq!(user_granted(&store.snapshot(), "stranger"), vec!["a"]);
}

#[test]
fn ruby_non_unique_users_are_merged() {
    // The Ruby `users` table had no unique name; a login listed twice got
    // whichever rows won. Here it gets the union, once.
    let store = store_with(Snapshot::default());
    push_json(
        &store,
        Route::UserRepositoryMapping,
        r#"{"users":[{"admin":[{"repository":"a","auth_required":true}]},{"admin":[{"repository":"b","auth_required":true}]},{"admin":null}]}"#,
    );
    let snap = store.snapshot();
    assert_eq!(snap.user_mappings.len(), 1);
    assert_eq!(user_granted(&snap, "admin"), vec!["a", "b"]);
}

#[test]
fn user_repository_mapping_blank_and_nil_logins_are_skipped() {
    let store = store_with(Snapshot::default());
    let body = wire(&mapping_payload(
        "users",
        vec![
            (None, vec![repo("a", true)]),
            (Some(""), vec![]),
            (Some("admin"), vec![repo("a", true)]),
        ],
    ));
    let s = push_form(&store, Route::UserRepositoryMapping, &body);
    assert_eq!(s.entries, 1);
    assert_eq!(user_granted(&store.snapshot(), "admin"), vec!["a"]);
    push_form(&store, Route::UserRepositoryMapping, "users");
    assert!(store.snapshot().user_mappings.is_empty());
}

// ---- a whole sync, and the window the Ruby gateway left open ----

fn full_sync(store: &StateStore, hosts: usize) {
    let repos = Ruby::Arr(vec![repo("org/priv", true), repo("org/pub", false)]);
    push_form(
        store,
        Route::RepositoryList,
        &wire(&hash(vec![("repositories", repos)])),
    );
    push_form(
        store,
        Route::UserRepositoryMapping,
        &wire(&mapping_payload(
            "users",
            vec![(Some("admin"), vec![repo("org/priv", true)])],
        )),
    );
    let uuids: Vec<String> = (0..hosts).map(|h| format!("host-{h:05}")).collect();
    let list = Ruby::Arr(uuids.iter().map(|u| hash(vec![("uuid", str(u))])).collect());
    push_form(
        store,
        Route::UpdateHosts,
        &wire(&hash(vec![("hosts", list)])),
    );
    let mapping = mapping_payload(
        "hosts",
        uuids
            .iter()
            .map(|u| (Some(u.as_str()), vec![repo("org/priv", true)]))
            .collect(),
    );
    push_form(store, Route::HostRepositoryMapping, &wire(&mapping));
}

#[test]
fn ruby_sync_never_leaves_hosts_without_access() {
    let store = Arc::new(store_with(Snapshot::default()));
    full_sync(&store, 200);
    let stop = AtomicBool::new(false);
    let checks = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let snap = store.snapshot();
                    for h in [0, 77, 199] {
                        let uuid = format!("host-{h:05}");
                        let g = snap.host_mapping(&uuid).map(|m| &m.repositories);
                        assert!(
                            snap.visible("org/priv", g),
                            "{uuid} lost access at generation {}",
                            snap.generation
                        );
                    }
                    let u = snap.user_mapping("admin").map(|m| &m.repositories);
                    assert!(
                        snap.visible("org/priv", u),
                        "admin lost access at generation {}",
                        snap.generation
                    );
                    checks.fetch_add(1, Ordering::Relaxed);
                    std::thread::yield_now();
                }
            });
        }
        for _ in 0..5 {
            full_sync(&store, 200);
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(checks.load(Ordering::Relaxed) > 0);
}

#[test]
fn twenty_readers_never_see_an_empty_mapping_during_a_10000_host_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = StateStore::open(dir.path());
    let store = Arc::new(store);
    let hosts: Vec<String> = (0..10_000)
        .map(|h| format!("{h:08x}-1111-4222-8333-444455556666"))
        .collect();
    let push = |repos: &[&str]| {
        let mapping = mapping_payload(
            "hosts",
            hosts
                .iter()
                .map(|u| {
                    (
                        Some(u.as_str()),
                        repos.iter().map(|r| repo(r, true)).collect(),
                    )
                })
                .collect(),
        );
        wire(&mapping)
    };
    let first = push(&["org/a", "org/b"]);
    let second = push(&["org/a", "org/c"]);
    push_form(&store, Route::HostRepositoryMapping, &first);
    let watched: Vec<String> = [0usize, 1, 4_999, 9_998, 9_999]
        .iter()
        .map(|i| hosts[*i].clone())
        .collect();
    let stop = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..20 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let snap = store.snapshot();
                    for uuid in &watched {
                        let m = snap.host_mapping(uuid);
                        assert!(
                            m.is_some_and(|m| m.repositories.contains("org/a")),
                            "{uuid} had no mapping at generation {}",
                            snap.generation
                        );
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                    // Twenty spinning readers would starve the writer on a small machine.
                    std::thread::yield_now();
                }
            });
        }
        for body in [&second, &first, &second] {
            push_form(&store, Route::HostRepositoryMapping, body);
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(reads.load(Ordering::Relaxed) > 20);
    let snap = store.snapshot();
    assert_eq!(snap.host_mappings.len(), 10_000);
    assert!(
        snap.host_mapping(&hosts[42])
            .is_some_and(|m| m.repositories.contains("org/c"))
    );
}

#[test]
fn ten_thousand_hosts_in_katello_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = StateStore::open(dir.path());
    let started = std::time::Instant::now();
    full_sync(&store, 10_000);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "a 10,000-host sync took {took:?}"
    );
    let snap = store.snapshot();
    assert_eq!(
        (snap.hosts.len(), snap.host_mappings.len()),
        (10_000, 10_000)
    );
    drop(store);
    let (reopened, report) = StateStore::open(dir.path());
    assert_eq!(report.host_mappings, 10_000);
    assert_eq!(
        granted(&reopened.snapshot(), "host-09999"),
        vec!["org/priv"]
    );
}

#[test]
fn mapped_names_share_the_list_allocation() {
    let store = store_with(Snapshot::default());
    full_sync(&store, 3);
    let snap = store.snapshot();
    let listed = snap
        .repositories
        .get_key_value("org/priv")
        .map(|(k, _)| k.clone())
        .unwrap();
    let mapped = snap
        .host_mapping("host-00001")
        .and_then(|m| m.repositories.iter().next().map(|s| s.as_ptr()))
        .unwrap();
    assert!(std::ptr::eq(listed.as_ptr(), mapped));
}

#[test]
fn persist_failure_rejects_the_push_and_keeps_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let (store, _) = StateStore::open(&state_dir);
    let _ = store.replace(|_| Ok::<_, Infallible>(synced()));
    let before = store.snapshot();
    std::fs::remove_dir_all(&state_dir).unwrap();
    std::fs::write(&state_dir, b"x").unwrap();
    let params = decode(BodyFormat::Form, b"repositories").unwrap();
    let r = apply_push(
        &store,
        Route::RepositoryList,
        &params,
        &PushPolicy::default(),
        SystemTime::now(),
    );
    assert!(matches!(r, Err(PushError::Persist(_))), "{r:?}");
    assert!(Arc::ptr_eq(&before, &store.snapshot()));
}

#[test]
fn caller_cn_is_compared_case_insensitively() {
    let allowed = vec!["katello.example.com".to_owned()];
    assert!(cn_allowed(&allowed, "Katello.Example.COM"));
    assert!(!cn_allowed(&allowed, "katello.example.com.evil"));
    assert!(!cn_allowed(&[], "katello.example.com"));
}

// ---- the routes, in process (no TLS here, so every caller is refused) ----

mod http {
    use actix_web::{App, test};

    use super::*;
    use crate::auth::AuthChain;
    use crate::entitlements::Entitlements;

    fn shared(dir: &std::path::Path) -> Arc<Shared> {
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, b"").unwrap();
        let state = dir.join("state");
        std::fs::create_dir(&state).unwrap();
        let toml = format!(
            r#"
            [server]
            listen = []
            listen_plain = ["127.0.0.1:0"]
            client_ca = "{ca}"
            public_url = "https://proxy.example.com"
            [pulp]
            endpoint = "http://127.0.0.1:1"
            [central]
            url = "http://127.0.0.1:1"
            [management]
            allowed_cns = ["katello.example.com"]
            [state]
            dir = "{state}"
            [plugins]
            chain = []
            "#,
            ca = ca.display(),
            state = state.display()
        );
        let file = match crate::config::parse(&toml) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        let config = match crate::config::validate(std::path::Path::new("test.toml"), &file) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let (store, _) = StateStore::open(&config.state_dir);
        let mut s = synced();
        s.generation = 0;
        let _ = store.replace(|_| Ok::<_, Infallible>(s));
        Arc::new(Shared {
            entitlements: Entitlements::new(config.cache.clone()),
            config: Arc::new(config),
            state: Arc::new(store),
            chain: AuthChain::new(Vec::new()),
            index: Default::default(),
            pulp_tls: None,
            central_tls: None,
            pulp_answered: Default::default(),
        })
    }

    #[actix_web::test]
    async fn every_route_and_spelling_refuses_a_caller_without_a_tls_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let before = shared.state.snapshot();
        let app = test::init_service(
            App::new()
                .app_data(web::Data::from(shared.clone()))
                .configure(configure),
        )
        .await;
        for route in Route::ALL {
            for path in paths(route.name()) {
                let req = test::TestRequest::put()
                    .uri(&path)
                    .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
                    // Even from a trusted frontend, a forwarded certificate does not count.
                    .insert_header(("X-RHSM-SSL-Client-Cert", "-----BEGIN CERTIFICATE-----"))
                    .peer_addr("127.0.0.1:5000".parse().unwrap())
                    .set_payload("repositories")
                    .to_request();
                let resp = test::call_service(&app, req).await;
                assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
                let body: serde_json::Value = test::read_body_json(resp).await;
                assert_eq!(body["errors"][0]["code"], "DENIED", "{path}");
            }
        }
        for path in paths("users") {
            let resp =
                test::call_service(&app, test::TestRequest::get().uri(&path).to_request()).await;
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
        }
        assert!(
            Arc::ptr_eq(&before, &shared.state.snapshot()),
            "state unchanged"
        );
    }

    async fn read(
        declared: Option<usize>,
        chunks: &[usize],
        limit: usize,
    ) -> Result<Vec<u8>, StatusCode> {
        use actix_web::FromRequest;
        let mut req = test::TestRequest::put();
        if let Some(n) = declared {
            req = req.insert_header((header::CONTENT_LENGTH, n.to_string()));
        }
        let req = req.to_http_request();
        let (mut tx, streamed) = actix_http::h1::Payload::create(false);
        for n in chunks {
            tx.feed_data(bytes::Bytes::from(vec![b'a'; *n]));
        }
        tx.feed_eof();
        let mut dev = actix_web::dev::Payload::from(streamed);
        let body = match web::Payload::from_request(&req, &mut dev).await {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        read_body(&req, body, limit).await.map_err(|r| r.status())
    }

    #[actix_web::test]
    async fn bodies_over_the_limit_are_413_whether_declared_or_streamed() {
        assert_eq!(
            read(Some(11), &[11], 10).await,
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(
            read(None, &[6, 5], 10).await,
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(
            read(Some(3), &[6, 5], 10).await,
            Err(StatusCode::PAYLOAD_TOO_LARGE),
            "a lying length"
        );
        assert_eq!(read(None, &[4, 6], 10).await.map(|b| b.len()), Ok(10));
        assert_eq!(
            read(Some(usize::MAX), &[], 10).await,
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        );
    }

    #[actix_web::test]
    async fn wrong_method_is_405_in_registry_format() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let app = test::init_service(
            App::new()
                .app_data(web::Data::from(shared))
                .configure(configure),
        )
        .await;
        let resp = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/container_gateway/repository_list")
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            resp.headers()
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok()),
            Some("PUT")
        );
        let body: serde_json::Value = test::read_body_json(resp).await;
        assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
        let resp =
            test::call_service(&app, test::TestRequest::put().uri("/users/").to_request()).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
