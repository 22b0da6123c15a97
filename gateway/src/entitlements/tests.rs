use super::*;
use crate::state::Mapping;
use std::sync::atomic::{AtomicUsize, Ordering};

fn cfg(ttl_ms: u64, stale_ms: u64) -> CacheConfig {
    CacheConfig {
        ttl: Duration::from_millis(ttl_ms),
        stale_if_error: Duration::from_millis(stale_ms),
        max_identities: 1000,
        negative_ttl: Duration::ZERO,
        token_revalidate: Duration::from_millis(ttl_ms),
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

#[tokio::test(flavor = "current_thread")]
async fn a_cached_token_is_asked_again_after_token_revalidate_even_within_the_ttl() {
    let mut c = cfg(60_000, 60_000);
    c.token_revalidate = Duration::from_millis(40);
    let e = Entitlements::new(c);
    let calls = AtomicUsize::new(0);
    let granted = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Lookup::Granted(RepoSet::new(["a"]))
    };
    e.for_token(&uuid("t"), granted).await.unwrap();
    e.for_token(&uuid("t"), granted).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "fresh within the window");
    tokio::time::sleep(Duration::from_millis(60)).await;
    let r = e.for_token(&uuid("t"), || async { Lookup::Rejected }).await;
    assert!(matches!(r, Err(EntitlementError::Rejected)), "revoked");
    assert_eq!(e.cached_identities(), 0, "and forgotten");
}

#[tokio::test(flavor = "current_thread")]
async fn confirming_a_token_caches_no_grant_and_remembers_a_rejection() {
    let mut c = cfg(60_000, 60_000);
    c.negative_ttl = Duration::from_secs(60);
    let e = Entitlements::new(c);
    let l = e
        .confirm_token(&uuid("t"), || async {
            Lookup::Granted(RepoSet::new(["a"]))
        })
        .await;
    assert!(matches!(l, Lookup::Granted(_)));
    assert_eq!(
        e.cached_identities(),
        0,
        "a stored token's grant is its user's"
    );
    e.confirm_token(&uuid("t"), || async { Lookup::Rejected })
        .await;
    let l = e
        .confirm_token(&uuid("t"), || async { panic!("not asked again") })
        .await;
    assert!(matches!(l, Lookup::Rejected), "within cache.negative_ttl");
}
