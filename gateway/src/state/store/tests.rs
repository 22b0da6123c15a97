use std::convert::Infallible;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::state::{Mapping, RepoSet};

fn pushed() -> Snapshot {
    let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut s = Snapshot::default();
    s.repositories.insert("org/pub".into(), false);
    s.repositories.insert("org/priv".into(), true);
    s.hosts.insert("h1".into());
    s.host_mappings.insert(
        "h1".into(),
        Mapping {
            repositories: RepoSet::new(["org/priv"]),
            updated_at: t,
        },
    );
    s.user_mappings.insert(
        "admin".into(),
        Mapping {
            repositories: RepoSet::new(["org/priv"]),
            updated_at: t,
        },
    );
    s
}

fn set(store: &StateStore, s: Snapshot) -> Arc<Snapshot> {
    match store.replace(|_| Ok::<_, Infallible>(s)) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

fn same_content(a: &Snapshot, b: &Snapshot) -> bool {
    a.repositories == b.repositories
        && a.hosts == b.hosts
        && a.host_mappings == b.host_mappings
        && a.user_mappings == b.user_mappings
}

fn moved_aside_files(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{name}.corrupt-")))
        .collect()
}

#[test]
fn first_start_is_empty_and_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = StateStore::open(dir.path());
    assert!(report.problems.is_empty());
    assert!(!report.state_loaded);
    assert!(!store.is_loaded());
    assert!(store.snapshot().repositories.is_empty());
}

#[test]
fn state_round_trips_through_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = StateStore::open(dir.path());
        set(&store, pushed());
        assert!(store.is_loaded());
    }
    let (store, report) = StateStore::open(dir.path());
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.state_loaded && store.is_loaded());
    assert_eq!(
        (
            report.repositories,
            report.hosts,
            report.host_mappings,
            report.user_mappings
        ),
        (2, 1, 1, 1)
    );
    assert!(same_content(&store.snapshot(), &pushed()));
}

#[test]
fn state_dir_is_created_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    let (store, report) = StateStore::open(&nested);
    assert!(report.problems.is_empty());
    set(&store, pushed());
    assert!(nested.join(STATE_FILE).is_file());
}

#[test]
fn corrupt_file_is_moved_aside_reported_and_store_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(STATE_FILE),
        b"{\"version\":1,\"repositories\":{\"a\":tru",
    )
    .unwrap();
    let (store, report) = StateStore::open(dir.path());
    assert_eq!(report.problems.len(), 1);
    assert!(
        report.problems[0].contains("state.json"),
        "{}",
        report.problems[0]
    );
    assert!(
        report.problems[0].contains("moved aside"),
        "{}",
        report.problems[0]
    );
    assert_eq!(report.moved_aside.len(), 1);
    assert!(!report.state_loaded && !store.is_loaded());
    assert!(store.snapshot().repositories.is_empty());
    assert!(!dir.path().join(STATE_FILE).exists());
    assert_eq!(moved_aside_files(dir.path(), STATE_FILE).len(), 1);
    // The next push writes a fresh file and leaves the evidence alone.
    set(&store, pushed());
    let (again, report) = StateStore::open(dir.path());
    assert!(report.problems.is_empty());
    assert!(same_content(&again.snapshot(), &pushed()));
    assert_eq!(moved_aside_files(dir.path(), STATE_FILE).len(), 1);
}

#[test]
fn wrong_shape_and_future_versions_are_not_trusted() {
    for body in [
        &b"[]"[..],
        b"{\"version\":1,\"hosts\":{}}",
        b"{\"version\":2}",
        b"\xff\xfe",
        b"",
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), body).unwrap();
        let (store, report) = StateStore::open(dir.path());
        assert_eq!(report.problems.len(), 1, "{body:?}");
        assert!(store.snapshot().hosts.is_empty());
        assert_eq!(moved_aside_files(dir.path(), STATE_FILE).len(), 1);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(STATE_FILE), b"{\"version\":2}").unwrap();
    let (_, report) = StateStore::open(dir.path());
    assert!(
        report.problems[0].contains("version 2"),
        "{}",
        report.problems[0]
    );
}

#[test]
fn unreadable_state_path_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be: reading fails whoever we run as.
    std::fs::create_dir(dir.path().join(STATE_FILE)).unwrap();
    let (store, report) = StateStore::open(dir.path());
    assert_eq!(report.problems.len(), 1);
    assert!(store.snapshot().repositories.is_empty());
}

#[test]
fn stale_temporary_files_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".state.json.x1y2.tmp"), b"half").unwrap();
    let (_store, report) = StateStore::open(dir.path());
    assert!(report.problems.is_empty());
    assert!(!dir.path().join(".state.json.x1y2.tmp").exists());
}

#[test]
fn persist_failure_leaves_the_old_state() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let (store, _) = StateStore::open(&state_dir);
    let before = set(&store, pushed());
    // Root ignores permission bits, so make the directory unusable outright.
    std::fs::remove_dir_all(&state_dir).unwrap();
    std::fs::write(&state_dir, b"not a directory").unwrap();
    let r = store.replace(|_| Ok::<_, Infallible>(Snapshot::default()));
    assert!(matches!(r, Err(StoreError::Persist(_))), "{:?}", r.err());
    let after = store.snapshot();
    assert!(Arc::ptr_eq(&before, &after));
    assert_eq!(after.generation, before.generation);
}

#[cfg(unix)]
#[test]
fn persist_failure_in_a_read_only_dir_leaves_the_old_state() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = StateStore::open(dir.path());
    let before = set(&store, pushed());
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let probe = tempfile::NamedTempFile::new_in(dir.path());
    if probe.is_ok() {
        // Running as root: permission bits do not apply; the test above covers it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        return;
    }
    let r = store.replace(|_| Ok::<_, Infallible>(Snapshot::default()));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(r, Err(StoreError::Persist(_))));
    assert!(Arc::ptr_eq(&before, &store.snapshot()));
    let (reopened, _) = StateStore::open(dir.path());
    assert!(same_content(&reopened.snapshot(), &pushed()));
}

#[test]
fn rejected_change_leaves_state_and_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = StateStore::open(dir.path());
    let before = set(&store, pushed());
    let file_before = std::fs::read(dir.path().join(STATE_FILE)).unwrap();
    let r = store.replace(|_| Err::<Snapshot, _>("bad body"));
    assert!(matches!(r, Err(StoreError::Rejected("bad body"))));
    assert!(Arc::ptr_eq(&before, &store.snapshot()));
    assert_eq!(
        std::fs::read(dir.path().join(STATE_FILE)).unwrap(),
        file_before
    );
}

#[test]
fn generation_increases_with_every_swap() {
    let store = StateStore::in_memory(Snapshot::default());
    let g0 = store.snapshot().generation;
    let g1 = set(&store, pushed()).generation;
    let g2 = set(&store, pushed()).generation;
    assert!(g0 < g1 && g1 < g2);
}

#[test]
fn in_memory_store_is_loaded_and_has_tokens() {
    let store = StateStore::in_memory(pushed());
    assert!(store.is_loaded());
    store
        .tokens()
        .insert("d", "admin", SystemTime::now() + Duration::from_secs(60));
    assert_eq!(store.tokens().users(), vec!["admin".to_owned()]);
}

#[test]
fn tokens_are_opened_from_the_same_dir() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = StateStore::open(dir.path());
        store
            .tokens()
            .insert("d", "admin", SystemTime::now() + Duration::from_secs(600));
    }
    let (store, report) = StateStore::open(dir.path());
    assert_eq!(report.tokens, 1);
    assert_eq!(store.tokens().lookup("d").as_deref(), Some("admin"));
}

#[test]
fn ten_thousand_hosts_persist_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = StateStore::open(dir.path());
    let mut s = Snapshot::default();
    for r in 0..50 {
        s.repositories
            .insert(format!("org/repo{r}").into(), r % 5 != 0);
    }
    let now = SystemTime::now();
    for h in 0..10_000 {
        let uuid: Arc<str> = format!("{h:08x}-0000-4000-8000-000000000000").into();
        s.hosts.insert(uuid.clone());
        let repos: Vec<Arc<str>> = (0..10)
            .map(|r| s.intern_repository(&format!("org/repo{}", (h + r) % 50)))
            .collect();
        s.host_mappings.insert(
            uuid,
            Mapping {
                repositories: RepoSet::from_arcs(repos),
                updated_at: now,
            },
        );
    }
    let started = std::time::Instant::now();
    set(&store, s.clone());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "persisting 10,000 hosts took {took:?}"
    );
    let (reopened, report) = StateStore::open(dir.path());
    assert_eq!(report.hosts, 10_000);
    let loaded = reopened.snapshot();
    assert_eq!(loaded.host_mappings.len(), 10_000);
    assert_eq!(loaded.repositories, s.repositories);
}
