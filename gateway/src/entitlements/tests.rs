use super::*;
use crate::state::Mapping;
use std::sync::atomic::{AtomicUsize, Ordering};

fn cfg(ttl_ms: u64, stale_ms: u64) -> CacheConfig {
    CacheConfig {
        ttl: Duration::from_millis(ttl_ms),
        stale_if_error: Duration::from_millis(stale_ms),
        max_identities: 1000,
        negative_ttl: Duration::ZERO,
    }
}

fn uuid(s: &str) -> Arc<str> {
    Arc::from(s)
}

#[tokio::test(flavor = "current_thread")]
async fn fresh_cache_is_served_without_central() {
    let e = Entitlements::new(cfg(60_000, 60_000));
    let calls = AtomicUsize::new(0);
    let snap = Snapshot::default();
    for _ in 0..3 {
        let g = e
            .for_host(&snap, &uuid("h1"), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Lookup::Granted(RepoSet::new(["a"]))
            })
            .await
            .unwrap();
        assert!(g.repositories.contains("a"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn stale_entry_serves_when_central_fails() {
    let e = Entitlements::new(cfg(0, 60_000));
    let snap = Snapshot::default();
    e.for_host(&snap, &uuid("h1"), || async {
        Lookup::Granted(RepoSet::new(["a"]))
    })
    .await
    .unwrap();
    let g = e
        .for_host(&snap, &uuid("h1"), || async {
            Lookup::Failed("down".into())
        })
        .await
        .unwrap();
    assert_eq!(g.source, Source::StaleCentral);
    assert!(g.repositories.contains("a"));
}

#[tokio::test(flavor = "current_thread")]
async fn nothing_to_fall_back_on_is_unavailable() {
    let e = Entitlements::new(cfg(0, 0));
    let snap = Snapshot::default();
    let r = e
        .for_host(&snap, &uuid("h1"), || async {
            Lookup::Failed("down".into())
        })
        .await;
    assert!(matches!(r, Err(EntitlementError::Unavailable(_))));
}

#[tokio::test(flavor = "current_thread")]
async fn pushed_mapping_serves_when_central_fails_whatever_its_age() {
    let e = Entitlements::new(cfg(0, 0));
    let mut snap = Snapshot::default();
    snap.host_mappings.insert(
        uuid("h1"),
        Mapping {
            repositories: RepoSet::new(["p"]),
            updated_at: SystemTime::UNIX_EPOCH,
        },
    );
    let g = e
        .for_host(&snap, &uuid("h1"), || async {
            Lookup::Failed("down".into())
        })
        .await
        .unwrap();
    assert_eq!(g.source, Source::Pushed);
    assert!(g.repositories.contains("p"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_fresh_push_is_used_without_central() {
    let e = Entitlements::new(cfg(60_000, 60_000));
    let mut snap = Snapshot::default();
    snap.host_mappings.insert(
        uuid("h1"),
        Mapping {
            repositories: RepoSet::new(["p"]),
            updated_at: SystemTime::now(),
        },
    );
    let g = e
        .for_host(&snap, &uuid("h1"), || async {
            panic!("central must not be asked")
        })
        .await
        .unwrap();
    assert_eq!(g.source, Source::Pushed);
}

#[tokio::test(flavor = "current_thread")]
async fn rejected_token_is_an_error() {
    let e = Entitlements::new(cfg(60_000, 60_000));
    let r = e
        .for_token(&uuid("abc"), || async { Lookup::Rejected })
        .await;
    assert!(matches!(r, Err(EntitlementError::Rejected)));
}

#[tokio::test(flavor = "current_thread")]
async fn eviction_keeps_the_cache_bounded() {
    let mut c = cfg(60_000, 60_000);
    c.max_identities = 10;
    let e = Entitlements::new(c);
    for i in 0..100 {
        e.remember(Subject::Host(uuid(&format!("h{i}"))), RepoSet::new(["a"]));
    }
    assert!(e.cached_identities() <= 10, "{}", e.cached_identities());
}
