//! The Flatpak index (`/index/static`, `/index/dynamic`) over real TLS: what
//! each identity sees, the shape flatpak needs, entries copied byte for byte,
//! identical refs served once, the caching headers, and Pulp's failures.

mod common;

use std::io::Read;
use std::time::Duration;

use gateway_tests::fake_pulp::{FLATPAK_INDEX_QUERY, FakeRepo, Image, PathKind};
use gateway_tests::harness::{Fault, TestEnv};

const HOST_A: &str = "a0a0a0a0-1111-4a5b-9c6d-0e1f2a3b4c5d";
const HOST_B: &str = "b0b0b0b0-2222-4a5b-9c6d-0e1f2a3b4c5d";
const RUNTIME: &str = "org/public/runtime";
const APP_A: &str = "org/a/app";
const APP_B: &str = "org/b/app";
/// Holds the same Flatpak ref and architecture as `APP_A`.
const MIRROR_A: &str = "org/a/mirror";
const REF_A: &str = "app/org.test.AppA/x86_64/stable";

fn index_path(kind: &str) -> String {
    format!("/index/{kind}?{FLATPAK_INDEX_QUERY}")
}

fn env() -> TestEnv {
    TestEnv::builder()
        .pulp(|p| {
            p.repo(
                FakeRepo::new(RUNTIME)
                    .image("latest", Image::flatpak_runtime("org.test.Platform", "1")),
            )
            .repo(FakeRepo::new(APP_A).image("latest", Image::flatpak_app("org.test.AppA")))
            .repo(FakeRepo::new(APP_B).image("latest", Image::flatpak_app("org.test.AppB")))
            .repo(FakeRepo::new(MIRROR_A).image("latest", Image::flatpak_app("org.test.AppA")))
        })
        .central(|c| {
            c.public(&[RUNTIME])
                .host(HOST_A, &[APP_A, MIRROR_A])
                .host(HOST_B, &[APP_B])
        })
        .repositories(&[
            (RUNTIME, false),
            (APP_A, true),
            (APP_B, true),
            (MIRROR_A, true),
        ])
        .host_mapping(HOST_A, &[APP_A, MIRROR_A])
        .host_mapping(HOST_B, &[APP_B])
        .start()
}

#[test]
fn each_identity_gets_its_own_index_with_upstream_entries_byte_for_byte() {
    let env = env();
    let upstream = env
        .pulp
        .index_json(FLATPAK_INDEX_QUERY)
        .expect("the fake serves the flatpak query");
    assert_eq!(
        common::images_with_ref(&upstream, REF_A),
        2,
        "Pulp lists the shared ref twice (the fixture is right)"
    );
    let registry = format!("{}/", env.gateway.config().server.public_url);

    let cases = [
        (
            "host A",
            Some(HOST_A),
            vec![RUNTIME, APP_A],
            vec![APP_B, "org.test.AppB"],
        ),
        (
            "host B",
            Some(HOST_B),
            vec![RUNTIME, APP_B],
            vec![APP_A, MIRROR_A, "org.test.AppA"],
        ),
        (
            "anonymous",
            None,
            vec![RUNTIME],
            vec![APP_A, APP_B, MIRROR_A, "org.test.AppA", "org.test.AppB"],
        ),
    ];
    for (who, uuid, want, hidden) in cases {
        let curl = match uuid {
            Some(u) => env.curl_as(&env.host_cert(u)),
            None => env.curl(),
        };
        for kind in ["static", "dynamic", "static/"] {
            let r = curl.get(&index_path(kind));
            assert_eq!(r.status, 200, "{who} {kind}: {}", r.text());
            assert!(
                r.header("content-type")
                    .is_some_and(|c| c.starts_with("application/json")),
                "{who}: {:?}",
                r.header("content-type")
            );
            let names = common::index_names(&r.body);
            assert_eq!(names, want, "{who} {kind}");
            let index = common::RawIndex::parse(&r.body);
            assert_eq!(
                index.registry, registry,
                "{who}: Registry is the gateway's public URL"
            );
            for entry in &index.results {
                assert!(
                    common::contains_bytes(&upstream, entry.get().as_bytes()),
                    "{who}: entry not byte-identical to Pulp's: {}",
                    entry.get()
                );
            }
            let text = r.text();
            for h in &hidden {
                assert!(!text.contains(h), "{who} must not see {h}: {text}");
            }
        }
    }

    // Host A sees both repositories holding AppA; flatpak must get the ref once.
    let r = env
        .curl_as(&env.host_cert(HOST_A))
        .get(&index_path("static"));
    assert_eq!(common::images_with_ref(&r.body, REF_A), 1, "{}", r.text());

    // One Pulp fetch per kind serves every identity; the query reached Pulp intact.
    assert_eq!(env.pulp.count(PathKind::Index), 2);
    for req in env.pulp.requests_of(PathKind::Index) {
        assert_eq!(
            req.query_param("label:org.flatpak.ref:exists").as_deref(),
            Some("1")
        );
        assert_eq!(req.query_param("architecture").as_deref(), Some("amd64"));
        assert_eq!(req.query_param("os").as_deref(), Some("linux"));
        assert_eq!(req.query_param("tag").as_deref(), Some("latest"));
    }
    assert_eq!(
        env.central.total(),
        0,
        "pushed mappings need no central call"
    );
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("the body is gzip");
    out
}

#[test]
fn etag_304_gzip_and_a_new_etag_when_visibility_changes() {
    let env = env();
    let host = env.curl_as(&env.host_cert(HOST_A));
    let path = index_path("static");

    let plain = host.get(&path);
    assert_eq!(plain.status, 200, "{}", plain.text());
    assert_eq!(plain.header("cache-control"), Some("private, no-cache"));
    assert_eq!(plain.header("content-encoding"), None);
    let etag = plain.header("etag").expect("an ETag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let again = host.header("If-None-Match", &etag).get(&path);
    assert_eq!(again.status, 304, "{}", again.text());
    assert!(again.body.is_empty());
    assert_eq!(
        again.header("cache-control"),
        Some("private, no-cache"),
        "304 repeats Cache-Control"
    );
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    let zipped = host.header("Accept-Encoding", "gzip").get(&path);
    assert_eq!(zipped.status, 200);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_eq!(zipped.header("cache-control"), Some("private, no-cache"));
    assert_eq!(
        gunzip(&zipped.body),
        plain.body,
        "gzip decompresses to the same JSON"
    );
    let zipped_etag = zipped.header("etag").expect("an ETag").to_owned();
    assert_ne!(zipped_etag, etag, "each encoding has its own tag");
    let again = host
        .header("Accept-Encoding", "gzip")
        .header("If-None-Match", &zipped_etag)
        .get(&path);
    assert_eq!(again.status, 304);

    // A client with another view gets another tag.
    let other = env.curl().get(&path);
    assert_ne!(other.header("etag"), Some(etag.as_str()));

    // Katello moves host A from its apps to B's: same If-None-Match, new body and tag.
    env.gateway
        .push_update_host_repositories(&[(HOST_A, &[APP_B])]);
    let changed = host.header("If-None-Match", &etag).get(&path);
    assert_eq!(changed.status, 200, "{}", changed.text());
    let new_etag = changed.header("etag").expect("an ETag");
    assert_ne!(new_etag, etag);
    assert_eq!(common::index_names(&changed.body), vec![RUNTIME, APP_B]);
}

#[test]
fn pulp_failures_on_the_index_are_registry_errors_never_500() {
    let env = TestEnv::builder()
        .pulp(|p| {
            p.repo(
                FakeRepo::new(RUNTIME)
                    .image("latest", Image::flatpak_runtime("org.test.Platform", "1")),
            )
        })
        .repositories(&[(RUNTIME, false)])
        .gateway(|g| g.upstream_timeout(1))
        .start();
    let curl = env.curl();
    // Each case asks for another tag so that no cached index can answer for it.
    let path = |tag: &str| format!("/index/static?{FLATPAK_INDEX_QUERY}&tag={tag}");

    env.pulp
        .fail_times(Some(PathKind::Index), Fault::Status(500), 1);
    let r = curl.get(&path("t500"));
    common::assert_error(
        "Pulp 500",
        r.status,
        r.header("content-type"),
        &r.body,
        502,
        "UPSTREAM_ERROR",
    );

    env.pulp
        .fail_times(Some(PathKind::Index), Fault::Garbage, 1);
    let r = curl.get(&path("garbage"));
    common::assert_error(
        "Pulp garbage",
        r.status,
        r.header("content-type"),
        &r.body,
        502,
        "UPSTREAM_ERROR",
    );

    env.pulp.fail_times(Some(PathKind::Index), Fault::Close, 1);
    let r = curl.get(&path("closed"));
    assert!(
        matches!(r.status, 502 | 503),
        "dropped connection: {} {}",
        r.status,
        r.text()
    );
    common::error_code(&r.body);

    env.pulp.fail_times(
        Some(PathKind::Index),
        Fault::Stall(Duration::from_secs(3)),
        1,
    );
    let started = std::time::Instant::now();
    let r = curl.get(&path("stalled"));
    common::assert_error(
        "Pulp stalls",
        r.status,
        r.header("content-type"),
        &r.body,
        503,
        "UNAVAILABLE",
    );
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "answered at pulp.timeout_secs"
    );

    // Pulp's own 400 (flatpak's mandatory label missing) is relayed as a 400.
    let r = curl.get("/index/static?architecture=amd64");
    common::assert_error(
        "Pulp 400",
        r.status,
        r.header("content-type"),
        &r.body,
        400,
        "UNSUPPORTED",
    );
    assert!(
        r.text().contains("label:org.flatpak.ref:exists=1"),
        "{}",
        r.text()
    );

    // And after all that, a healthy Pulp serves the index again.
    let r = curl.get(&path("latest"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(common::index_names(&r.body), vec![RUNTIME]);
}
