//! Sibling pushes: since Katello #39314, a sync of load-balanced sibling
//! capsules pushes every sibling's hosts to each gateway, so `update_hosts`
//! and `host_repository_mapping` carry far more hosts than this capsule's own.
//! A push of 100,000 hosts, and a mapping of those hosts x 10 repositories in
//! Katello's form encoding, are applied whole: every grant right, counts
//! exact, persisted and reloaded; readers during a replacement never miss a
//! host. Sizes, times and the process's peak memory are printed, not asserted.
//!
//! The suite maps 10,000 of the 100,000 hosts (a debug build decodes about
//! 10,000 hosts x 10 repositories in 15 s); the full mapping is the ignored
//! test, run by hand, best in release:
//! `cargo test --release -p gateway-tests --test sibling_push -- --ignored --nocapture`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use gateway_tests::fake_pulp::{FakeRepo, Image};
use gateway_tests::harness::{TestEnv, katello_form, rss_kib};

const PUBLIC: &str = "org/public/app";

fn uuid(i: usize) -> String {
    format!("{i:08x}-5555-4a5b-9c6d-0e1f2a3b4c5d")
}

/// A Katello-like Pulp name, 46 characters.
fn repo(i: usize) -> String {
    format!(
        "default_organization-library-product{:03}-repo{:02}",
        i / 10,
        i % 10
    )
}

/// Host `h` is granted `per_host` of the `pool` repositories starting at `h + shift`.
fn grant(h: usize, per_host: usize, pool: usize, shift: usize) -> Vec<usize> {
    (0..per_host).map(|k| (h + shift + k) % pool).collect()
}

/// Forget the peak so far (`VmHWM`), so the next reading is this push's.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Push `body` to `route`, printing its size, the time and the memory.
fn timed_push(env: &TestEnv, route: &str, body: &str) {
    let pid = std::process::id();
    let before = rss_kib(pid).map_or(0, |(rss, _)| rss);
    reset_peak();
    let started = Instant::now();
    let r = env.gateway.push(route, body);
    let took = started.elapsed();
    assert_eq!(r.status, 200, "PUT {route}: {}", r.text());
    let (after, peak) = rss_kib(pid).unwrap_or_default();
    println!(
        "{route}: body {:.1} MiB ({} bytes), applied in {took:.2?}; test process RSS {} MiB before, peak {} MiB (+{} MiB), {} MiB after",
        body.len() as f64 / f64::from(1 << 20),
        body.len(),
        before >> 10,
        peak >> 10,
        peak.saturating_sub(before) >> 10,
        after >> 10
    );
}

/// Every host known, every grant as expected (all hosts, by the snapshot;
/// a sample over HTTP).
fn check_all(
    env: &TestEnv,
    (listed, uuids): (usize, &[String]),
    names: &[String],
    per_host: usize,
    shift: usize,
) {
    let snapshot = env.gateway.shared().state.snapshot();
    assert_eq!(snapshot.hosts.len(), listed, "known hosts");
    assert_eq!(snapshot.host_mappings.len(), uuids.len(), "mapped hosts");
    let mut granted = 0;
    for (h, u) in uuids.iter().enumerate() {
        let m = snapshot
            .host_mapping(u)
            .unwrap_or_else(|| panic!("host {h} ({u}) has no mapping"));
        granted += m.repositories.len();
        for k in grant(h, per_host, names.len(), shift) {
            assert!(
                m.repositories.contains(&names[k]),
                "host {h} lacks {}",
                names[k]
            );
        }
    }
    assert_eq!(
        granted,
        uuids.len() * per_host,
        "repositories granted in total"
    );
    for h in [0, 1, uuids.len() / 2, uuids.len() - 1] {
        let r = env.curl_as(&env.host_cert(&uuids[h])).get("/v2/_catalog");
        assert_eq!(r.status, 200, "{}", r.text());
        let mut seen: Vec<String> = r.json()["repositories"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        seen.sort();
        let mut want: Vec<String> = grant(h, per_host, names.len(), shift)
            .into_iter()
            .map(|k| names[k].clone())
            .chain([PUBLIC.to_owned()])
            .collect();
        want.sort();
        assert_eq!(seen, want, "host {h} over HTTP");
    }
}

#[test]
fn a_hundred_thousand_sibling_hosts_ten_thousand_mapped_with_ten_repositories_each() {
    sibling_sync(100_000, 10_000, 10);
}

#[test]
#[ignore = "full size: about 200 MiB of mapping, minutes in a debug build; run by hand"]
fn a_hundred_thousand_sibling_hosts_mapped_with_ten_repositories_each() {
    sibling_sync(100_000, 100_000, 10);
}

/// `listed` hosts pushed, the first `hosts` of them mapped to `per_host` repositories.
fn sibling_sync(listed: usize, hosts: usize, per_host: usize) {
    let pool = 200;
    let names: Vec<String> = (0..pool).map(repo).collect();
    let all: Vec<String> = (0..listed).map(uuid).collect();
    let uuids = &all[..hosts];
    let mut env = TestEnv::builder()
        .pulp(|p| {
            let mut p = p.repo(FakeRepo::new(PUBLIC).image("latest", Image::new()));
            for i in 0..4 {
                p = p.repo(FakeRepo::new(&repo(i)).image("latest", Image::new()));
            }
            p
        })
        .central(|c| c.public(&[PUBLIC]))
        .start();
    let mut list: Vec<(&str, bool)> = names.iter().map(|n| (n.as_str(), true)).collect();
    list.push((PUBLIC, false));
    env.gateway.push_repository_list(&list);

    let every: Vec<&str> = all.iter().map(String::as_str).collect();
    timed_push(&env, "update_hosts", &katello_form::hosts(&every));
    let snapshot = env.gateway.shared().state.snapshot();
    assert_eq!(snapshot.hosts.len(), listed);
    assert!(all.iter().all(|u| snapshot.hosts.contains(u.as_str())));
    drop(snapshot);
    let refs = &every[..hosts];

    let mapping_body = |shift: usize| {
        let grants: Vec<Vec<&str>> = (0..hosts)
            .map(|h| {
                grant(h, per_host, pool, shift)
                    .into_iter()
                    .map(|k| names[k].as_str())
                    .collect()
            })
            .collect();
        let entries: Vec<(&str, &[&str])> = refs
            .iter()
            .zip(&grants)
            .map(|(u, g)| (*u, g.as_slice()))
            .collect();
        katello_form::mapping("hosts", &entries)
    };
    let body = mapping_body(0);
    timed_push(&env, "host_repository_mapping", &body);
    drop(body);
    check_all(&env, (listed, uuids), &names, per_host, 0);

    // A second sync replaces every grant while readers look up hosts: each
    // finds its host mapped, to the old grant or the new one, never neither.
    let body = mapping_body(1);
    let done = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let shared = env.gateway.shared();
            let (done, lookups) = (done.clone(), lookups.clone());
            let uuids = uuids.to_vec();
            std::thread::spawn(move || {
                let mut i = r * 7919;
                while !done.load(Ordering::SeqCst) {
                    let snapshot = shared.state.snapshot();
                    for _ in 0..1000 {
                        i = (i + 104_729) % uuids.len();
                        let m = snapshot.host_mapping(&uuids[i]);
                        assert!(
                            m.is_some_and(|m| m.repositories.len() == per_host),
                            "reader {r}: host {i} missing or partly mapped"
                        );
                    }
                    lookups.fetch_add(1000, Ordering::Relaxed);
                    // Bounded: the push needs the cores more than the readers.
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            })
        })
        .collect();
    let http_reader = {
        let done = done.clone();
        // Host `h` holds h+1..h+9 under both grants: probe one Pulp serves.
        let h = (hosts / 2 / pool) * pool + pool - 1;
        let (curl, probe) = (env.curl_as(&env.host_cert(&uuids[h])), repo((h + 1) % pool));
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !done.load(Ordering::SeqCst) {
                let r = curl.get(&format!("/v2/{probe}/manifests/latest"));
                // The probed host holds `probe` under both grants.
                assert_eq!(r.status, 200, "HTTP reader: {}", r.text());
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            n
        })
    };
    timed_push(&env, "host_repository_mapping", &body);
    drop(body);
    done.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().expect("a reader failed");
    }
    let http_reads = http_reader.join().expect("the HTTP reader failed");
    println!(
        "during the replacement: {} snapshot lookups, {http_reads} HTTP reads, none missed a host",
        lookups.load(Ordering::Relaxed)
    );
    check_all(&env, (listed, uuids), &names, per_host, 1);

    let state_file = env.gateway.state_dir().join("state.json");
    let on_disk = std::fs::metadata(&state_file).map_or(0, |m| m.len());
    let started = Instant::now();
    env.gateway.restart();
    println!(
        "state.json {:.1} MiB; restart with reload took {:.2?}",
        on_disk as f64 / f64::from(1 << 20),
        started.elapsed()
    );
    check_all(&env, (listed, uuids), &names, per_host, 1);
}
