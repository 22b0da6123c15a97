//! The per-request entitlement path once a host is known: the cache lookup
//! among 100,000 cached hosts (each holding 50 of 2,000 repositories), then the
//! visibility decision for one repository, as the v2 guard makes it. Also the
//! cost of learning one host's answer (interning its names into the list's).
//!
//! `cargo bench -p container-gateway --bench entitlements`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use container_gateway::config::CacheConfig;
use container_gateway::entitlements::{Entitlements, Lookup};
use container_gateway::state::{RepoSet, Snapshot};
use criterion::{Criterion, criterion_group, criterion_main};

const HOSTS: usize = 100_000;
const REPOS: usize = 2_000;
const PER_HOST: usize = 50;

fn repo(i: usize) -> String {
    format!("default_organization-library-cv{}-flatpak-app{i}", i % 40)
}

/// Deterministic spread of a host's repositories over the pool.
fn grant_of(host: usize) -> Vec<String> {
    (0..PER_HOST)
        .map(|k| repo((host.wrapping_mul(7919) + k * 37) % REPOS))
        .collect()
}

fn uuid(host: usize) -> Arc<str> {
    Arc::from(format!("{host:08x}-2a4f-4a21-9c6f-5b0e3e1c7a11"))
}

fn populated() -> (Entitlements, Snapshot, tokio::runtime::Runtime) {
    let mut snapshot = Snapshot::default();
    for i in 0..REPOS {
        snapshot
            .repositories
            .insert(Arc::from(repo(i)), i % 10 == 0);
    }
    let cache = Entitlements::new(CacheConfig {
        ttl: Duration::from_secs(3600),
        stale_if_error: Duration::from_secs(3600),
        max_identities: 1_000_000,
        negative_ttl: Duration::from_secs(5),
        token_revalidate: Duration::from_secs(300),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for h in 0..HOSTS {
            let names = grant_of(h);
            let grant = cache
                .for_host(&snapshot, &uuid(h), || async move {
                    Lookup::Granted(RepoSet::new(names))
                })
                .await;
            assert!(grant.is_ok(), "populating host {h}");
        }
    });
    (cache, snapshot, rt)
}

fn bench(c: &mut Criterion) {
    let (cache, snapshot, rt) = populated();
    let hosts: Vec<Arc<str>> = (0..1024).map(|i| uuid(i * 97 % HOSTS)).collect();
    let probe = repo(123);
    let mut g = c.benchmark_group("entitlements");
    let mut i = 0usize;
    g.bench_function("cached host + visibility (100k hosts)", |b| {
        b.iter(|| {
            i = (i + 1) % hosts.len();
            let grant = rt
                .block_on(cache.for_host(&snapshot, &hosts[i], || async {
                    Lookup::Failed("a cached host must not ask central".into())
                }))
                .expect("cached");
            black_box(snapshot.visible(black_box(&probe), Some(&grant.repositories)))
        })
    });
    let names = grant_of(42);
    g.bench_function("intern one central answer (50 names)", |b| {
        b.iter(|| black_box(snapshot.intern_set(&RepoSet::new(black_box(&names)))))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
