//! `GET /v2/<name>/referrers/<digest>` (OCI distribution spec 1.1): guarded
//! exactly like a manifest read, forwarded to Pulp, and, since pulp_container
//! 2.30 has no referrers route (Django's HTML 404), answered with the spec's
//! "not supported" 404 so that clients fall back to the `sha256-<hex>` tag,
//! which goes through the manifest route and its guard.

mod common;

use gateway_tests::fake_pulp::{FakeRepo, Image, PathKind};
use gateway_tests::harness::{Fault, TestEnv};

const HOST_A: &str = "a1a1a1a1-1111-4a5b-9c6d-0e1f2a3b4c5d";
const PUBLIC: &str = "org/public/tools";
const APP_A: &str = "org/a/app";
const APP_B: &str = "org/b/app";
/// In Pulp, but not in the repository list Katello pushed.
const UNLISTED: &str = "org/unlisted/app";
const NOWHERE: &str = "org/does/not-exist";

fn env() -> TestEnv {
    TestEnv::builder()
        .pulp(|p| {
            p.repo(FakeRepo::new(PUBLIC).image("latest", Image::new()))
                .repo(FakeRepo::new(APP_A).image("latest", Image::new().label("a", "yes")))
                .repo(FakeRepo::new(APP_B).image("latest", Image::new().label("b", "yes")))
                .repo(FakeRepo::new(UNLISTED).image("latest", Image::new()))
        })
        .central(|c| c.public(&[PUBLIC]).host(HOST_A, &[APP_A]))
        .repositories(&[(PUBLIC, false), (APP_A, true), (APP_B, true)])
        .host_mapping(HOST_A, &[APP_A])
        .start()
}

fn digest_of(env: &TestEnv, repo: &str) -> String {
    env.pulp
        .repo(repo)
        .and_then(|r| r.tag_digest("latest"))
        .expect("tagged")
}

fn referrers_requests(env: &TestEnv) -> Vec<(String, String, String)> {
    env.pulp
        .requests_of(PathKind::Other)
        .into_iter()
        .map(|r| (r.method, r.path, r.query))
        .collect()
}

#[actix_web::test]
async fn a_visible_repository_is_forwarded_and_pulp_without_the_api_is_the_specs_404() {
    let env = env();
    let registry_path = env.pulp.registry_path().to_owned();
    let host = env.client_as(&env.host_cert(HOST_A));
    for (client, repo) in [(&host, APP_A), (&host, PUBLIC), (&env.client(), PUBLIC)] {
        env.pulp.reset();
        let digest = digest_of(&env, repo);
        let path = format!("/v2/{repo}/referrers/{digest}");

        let r = client.get(&path).send().await;
        common::assert_error(
            &path,
            r.status,
            r.header("content-type"),
            &r.body,
            404,
            "UNSUPPORTED",
        );
        assert!(
            !r.text().contains("<html") && !r.text().contains("doctype"),
            "Pulp's HTML page is not relayed: {}",
            r.text()
        );
        assert_eq!(r.header("www-authenticate"), None);

        // Only the spec's filter reaches Pulp, re-encoded; a trailing slash does not.
        let r = client
            .get(&format!(
                "{path}/?artifactType=application/vnd.example%2Bjson&n=2&x=y"
            ))
            .send()
            .await;
        assert_eq!(r.status, 404, "{}", r.text());
        let r = client.head(&path).send().await;
        assert_eq!(r.status, 404);
        assert!(r.body.is_empty(), "HEAD has no body");

        let want = format!("{registry_path}/v2/{repo}/referrers/{digest}");
        assert_eq!(
            referrers_requests(&env),
            vec![
                ("GET".to_owned(), want.clone(), String::new()),
                (
                    "GET".to_owned(),
                    want.clone(),
                    "artifactType=application%2Fvnd.example%2Bjson".to_owned()
                ),
                ("HEAD".to_owned(), want, String::new()),
            ],
            "{repo}"
        );

        // The client's fallback, the referrers tag schema, is a manifest read.
        let fallback = format!("/v2/{repo}/manifests/{}", digest.replacen(':', "-", 1));
        let r = client.get(&fallback).send().await;
        assert_eq!(r.status, 404, "{}", r.text());
        assert_eq!(common::error_code(&r.body), "MANIFEST_UNKNOWN");
        assert_eq!(env.pulp.count(PathKind::Manifest), 1);
    }
}

#[actix_web::test]
async fn invisible_and_nonexistent_repositories_answer_as_for_manifests_without_asking_pulp() {
    let env = env();
    let public_url = env.gateway.config().server.public_url.clone();
    let digest = digest_of(&env, APP_A);
    let host = env.client_as(&env.host_cert(HOST_A));

    let mut bodies = Vec::new();
    for name in [APP_B, UNLISTED, NOWHERE] {
        let manifest = host
            .get(&format!("/v2/{name}/manifests/{digest}"))
            .send()
            .await;
        for (method, path) in [
            ("GET", format!("/v2/{name}/referrers/{digest}")),
            (
                "GET",
                format!("/v2/{name}/referrers/{digest}?artifactType=a%2Fb"),
            ),
            ("HEAD", format!("/v2/{name}/referrers/{digest}")),
        ] {
            let r = host.request(method, &path).send().await;
            assert_eq!(r.status, 404, "host: {method} {path}");
            assert_eq!(r.header("www-authenticate"), None);
            if method == "GET" {
                assert_eq!(r.body, manifest.body, "same answer as the manifest: {path}");
                assert_eq!(common::error_code(&r.body), "NAME_UNKNOWN");
                bodies.push(r.body);
            }
        }
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "one answer");

    let anonymous = env.client();
    let mut bodies = Vec::new();
    for name in [APP_A, APP_B, UNLISTED, NOWHERE] {
        let path = format!("/v2/{name}/referrers/{digest}");
        let r = anonymous.get(&path).send().await;
        assert_eq!(r.status, 401, "anonymous: {path}");
        assert_eq!(
            r.header("www-authenticate"),
            Some(common::expected_challenge(&public_url, Some(name)).as_str()),
            "{path}"
        );
        assert_eq!(common::error_code(&r.body), "UNAUTHORIZED");
        bodies.push(r.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "one answer");
    assert_eq!(env.pulp.total(), 0, "{:?}", env.pulp.requests());
}

#[actix_web::test]
async fn malformed_digests_and_names_are_400_and_writes_405_before_any_upstream() {
    let env = env();
    let host = env.client_as(&env.host_cert(HOST_A));
    let good = format!("sha256:{}", "0".repeat(64));
    let cases = [
        (
            format!("/v2/{APP_A}/referrers/sha256:abc"),
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/{APP_A}/referrers/sha256:{}", "A".repeat(64)),
            "DIGEST_INVALID",
        ),
        (format!("/v2/{APP_A}/referrers/latest"), "DIGEST_INVALID"),
        (
            format!("/v2/{APP_A}/referrers/sha256:%2e%2e"),
            "DIGEST_INVALID",
        ),
        (format!("/v2/Org/A/referrers/{good}"), "NAME_INVALID"),
        (format!("/v2/org/../b/app/referrers/{good}"), "NAME_INVALID"),
        (
            format!("/v2/org%2Fa%2Fapp/referrers/{good}"),
            "NAME_INVALID",
        ),
    ];
    for client in [&host, &env.client()] {
        for (path, code) in &cases {
            let r = client.get(path).send().await;
            common::assert_error(path, r.status, r.header("content-type"), &r.body, 400, code);
        }
        for method in ["PUT", "DELETE", "POST"] {
            let path = format!("/v2/{APP_A}/referrers/{good}");
            let r = client.request(method, &path).send().await;
            assert_eq!(r.status, 405, "{method} {path}");
            assert_eq!(r.header("allow"), Some("GET, HEAD"));
        }
    }
    assert_eq!(env.pulp.total(), 0, "{:?}", env.pulp.requests());
    assert_eq!(env.central.total(), 0);
}

#[actix_web::test]
async fn pulp_failing_on_referrers_is_502_in_registry_format() {
    let env = env();
    let host = env.client_as(&env.host_cert(HOST_A));
    let path = format!("/v2/{APP_A}/referrers/{}", digest_of(&env, APP_A));
    for status in [500, 503] {
        env.pulp.fail_kind(PathKind::Other, Fault::Status(status));
        let r = host.get(&path).send().await;
        common::assert_error(
            &path,
            r.status,
            r.header("content-type"),
            &r.body,
            502,
            "UPSTREAM_ERROR",
        );
        env.pulp.clear_faults();
    }
    // Pulp refusing the gateway is the gateway's problem, not a client challenge.
    env.pulp.fail_kind(PathKind::Other, Fault::Status(403));
    let r = host.get(&path).send().await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), None);
}
