//! Where a host's entitlements come from when the gateway has to ask central:
//! one call for many concurrent requests, a stale answer while central is
//! down, and 503 (never unfiltered data) when there is nothing to fall back on.

mod common;

use std::time::Duration;

use gateway_tests::fake_pulp::{FLATPAK_INDEX_QUERY, FakeRepo, Image, PathKind};
use gateway_tests::harness::{Fault, TestEnv};

const HOST_A: &str = "e0e0e0e0-5555-4a5b-9c6d-0e1f2a3b4c5d";
const HOST_C: &str = "e0e0e0e0-6666-4a5b-9c6d-0e1f2a3b4c5d";
const HOST_D: &str = "e0e0e0e0-7777-4a5b-9c6d-0e1f2a3b4c5d";
const PUBLIC: &str = "org/public/runtime";
const APP_A: &str = "org/a/app";
const APP_C: &str = "org/c/app";
const PRIVATE_MARKERS: [&str; 4] = [APP_A, APP_C, "org.test.AppA", "org.test.AppC"];

fn index_path() -> String {
    format!("/index/static?{FLATPAK_INDEX_QUERY}")
}

fn builder() -> gateway_tests::harness::TestEnvBuilder {
    TestEnv::builder()
        .pulp(|p| {
            p.repo(
                FakeRepo::new(PUBLIC)
                    .image("latest", Image::flatpak_runtime("org.test.Platform", "1")),
            )
            .repo(FakeRepo::new(APP_A).image("latest", Image::flatpak_app("org.test.AppA")))
            .repo(FakeRepo::new(APP_C).image("latest", Image::flatpak_app("org.test.AppC")))
        })
        .central(|c| {
            c.public(&[PUBLIC])
                .host(HOST_A, &[APP_A])
                .host(HOST_C, &[APP_C])
                .host(HOST_D, &[APP_A, APP_C])
        })
        .repositories(&[(PUBLIC, false), (APP_A, true), (APP_C, true)])
}

#[actix_web::test]
async fn fifty_concurrent_first_requests_make_one_central_call() {
    let env = builder().start();
    env.central.set_delay(Duration::from_millis(500));
    let client = env.client_as(&env.host_cert(HOST_A));
    let index = index_path();
    let requests = (0..50).map(|i| {
        let path = match i % 3 {
            0 => "/v2/_catalog".to_owned(),
            1 => index.clone(),
            _ => format!("/v2/{APP_A}/manifests/latest"),
        };
        let client = &client;
        async move { (path.clone(), client.get(&path).send().await) }
    });
    let answers = futures_util::future::join_all(requests).await;
    for (path, r) in &answers {
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        if path == "/v2/_catalog" {
            assert_eq!(common::catalog_names(&r.body), vec![APP_A, PUBLIC]);
        } else if path.starts_with("/index/") {
            assert_eq!(common::index_names(&r.body), vec![PUBLIC, APP_A]);
        }
    }
    assert_eq!(
        env.central.catalog_calls_for_host(HOST_A),
        1,
        "{:?}",
        env.central.requests().len()
    );
    assert_eq!(env.central.catalog_calls(), 1);
    assert!(
        env.gateway.shared().entitlements.coalesced_waits() > 0,
        "requests did wait for the one call in flight"
    );
    assert_eq!(env.pulp.count(PathKind::Index), 1, "and one index fetch");
}

#[test]
fn central_down_serves_stale_answers_or_503_never_unfiltered_data() {
    let mut env = builder()
        .gateway(|g| g.cache_ttl(1).negative_ttl(1))
        .start();
    let a = env.curl_as(&env.host_cert(HOST_A));
    let c = env.curl_as(&env.host_cert(HOST_C));
    let d = env.curl_as(&env.host_cert(HOST_D));

    let r = a.get(&index_path());
    assert_eq!(common::index_names(&r.body), vec![PUBLIC, APP_A]);
    assert_eq!(env.central.catalog_calls_for_host(HOST_A), 1);

    // Past cache.ttl, central fails: A's previous answer still serves, after a try.
    std::thread::sleep(Duration::from_millis(1100));
    env.central.fail(Fault::Status(500));
    let r = a.get(&index_path());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(common::index_names(&r.body), vec![PUBLIC, APP_A]);
    assert_eq!(
        env.central.catalog_calls_for_host(HOST_A),
        2,
        "central was asked first"
    );
    let r = a.get("/v2/_catalog");
    assert_eq!(common::catalog_names(&r.body), vec![APP_A, PUBLIC]);
    let r = a.head(&format!("/v2/{APP_A}/manifests/latest"));
    assert_eq!(r.status, 200);

    // C was never seen: nothing to fall back on, on any route.
    let pulp_before = env.pulp.total();
    for path in [
        index_path(),
        "/v2/_catalog".to_owned(),
        format!("/v2/{APP_C}/manifests/latest"),
    ] {
        let r = c.get(&path);
        common::assert_error(
            &path,
            r.status,
            r.header("content-type"),
            &r.body,
            503,
            "UNAVAILABLE",
        );
        let retry: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{path}: Retry-After in seconds: {:?}", r.headers));
        assert!(retry > 0);
        let text = r.text();
        for marker in PRIVATE_MARKERS
            .iter()
            .chain([&PUBLIC, &"org.test.Platform"])
        {
            assert!(!text.contains(marker), "{path}: {text}");
        }
    }
    assert_eq!(env.pulp.total(), pulp_before, "nothing was fetched for C");

    // Central unreachable rather than failing: the same for D.
    env.central.clear_faults();
    env.central.stop();
    let r = d.get(&index_path());
    common::assert_error(
        "central down",
        r.status,
        r.header("content-type"),
        &r.body,
        503,
        "UNAVAILABLE",
    );
    assert!(!r.text().contains("org/"), "{}", r.text());
    // Anonymous clients need no central: public only, as always.
    let r = env.curl().get(&index_path());
    assert_eq!(common::index_names(&r.body), vec![PUBLIC]);
    let r = a.get(&index_path());
    assert_eq!(
        common::index_names(&r.body),
        vec![PUBLIC, APP_A],
        "A's stale answer still serves"
    );

    // Central back: D gets its own view once the failure is no longer remembered.
    env.central.restart();
    std::thread::sleep(Duration::from_millis(1100));
    let r = d.get(&index_path());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(common::index_names(&r.body), vec![PUBLIC, APP_A, APP_C]);
}
