//! The registry v2 routes over real TLS: manifests, blobs, `_catalog`,
//! `tags/list`, what is forwarded to Pulp and what never reaches it.

mod common;

use std::time::Duration;

use gateway_tests::client::CurlHttp;
use gateway_tests::fake_pulp::{Blob, FakeRepo, Image, PathKind, sha256_digest};
use gateway_tests::harness::{Fault, Gateway, GatewayBuilder, TestEnv};

const HOST_A: &str = "a0a0a0a0-1111-4a5b-9c6d-0e1f2a3b4c5d";
const HOST_B: &str = "b0b0b0b0-2222-4a5b-9c6d-0e1f2a3b4c5d";
/// A host nobody told the gateway about: reaching central for it would count.
const STRANGER: &str = "c0c0c0c0-3333-4a5b-9c6d-0e1f2a3b4c5d";
const RUNTIME: &str = "org/public/runtime";
const TOOLS: &str = "org/public/tools";
/// Pulp answers its manifests with 200 and its blobs with a 302.
const APP_A: &str = "org/a/app";
/// Pulp answers its manifests with a 302 (older pulp_container).
const LEGACY_A: &str = "org/a/legacy";
/// Pulp serves its blobs with a 200.
const DIRECT_A: &str = "org/a/direct";
const APP_B: &str = "org/b/app";
/// In Pulp, but not in the repository list Katello pushed.
const UNLISTED: &str = "org/unlisted/app";

const REPOS: [(&str, bool); 6] = [
    (RUNTIME, false),
    (TOOLS, false),
    (APP_A, true),
    (LEGACY_A, true),
    (DIRECT_A, true),
    (APP_B, true),
];

fn env() -> TestEnv {
    TestEnv::builder()
        .pulp(|p| {
            p.repo(
                FakeRepo::new(RUNTIME)
                    .image("1.0", Image::new())
                    .image("1.1", Image::new().label("v", "1.1"))
                    .image("2.0", Image::new().label("v", "2.0"))
                    .image("latest", Image::new().label("v", "2.0")),
            )
            .repo(FakeRepo::new(TOOLS).image("latest", Image::new()))
            .repo(FakeRepo::new(APP_A).image("latest", Image::flatpak_app("org.test.AppA")))
            .repo(
                FakeRepo::new(LEGACY_A)
                    .image("latest", Image::new().label("legacy", "yes"))
                    .redirect_manifests(true),
            )
            .repo(
                FakeRepo::new(DIRECT_A)
                    .image(
                        "latest",
                        Image::new().add_layer(Blob::generated(3 << 20, 7)),
                    )
                    .direct_blobs(true),
            )
            .repo(FakeRepo::new(APP_B).image("latest", Image::new().label("b", "yes")))
            .repo(FakeRepo::new(UNLISTED).image("latest", Image::new()))
        })
        .central(|c| {
            c.public(&[RUNTIME, TOOLS])
                .host(HOST_A, &[APP_A, LEGACY_A, DIRECT_A])
                .host(HOST_B, &[APP_B])
        })
        .repositories(&REPOS)
        .host_mapping(HOST_A, &[APP_A, LEGACY_A, DIRECT_A])
        .host_mapping(HOST_B, &[APP_B])
        .start()
}

/// Another gateway on the same fakes and PKI, with the same pushed state.
fn second_gateway(
    env: &TestEnv,
    configure: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
) -> Gateway {
    let g = configure(
        GatewayBuilder::new(env.pki.clone())
            .pulp(&env.pulp)
            .central(&env.central),
    )
    .start();
    g.push_repository_list(&REPOS);
    g.push_hosts(&[HOST_A, HOST_B]);
    g.push_host_mapping(&[(HOST_A, &[APP_A, LEGACY_A, DIRECT_A]), (HOST_B, &[APP_B])]);
    g
}

fn manifest_layer(env: &TestEnv) -> String {
    env.pulp
        .repo(APP_A)
        .map(|r| r.layer_digests("latest"))
        .unwrap_or_default()
        .swap_remove(0)
}

fn digest_of(env: &TestEnv, repo: &str, tag: &str) -> String {
    env.pulp
        .repo(repo)
        .and_then(|r| r.tag_digest(tag))
        .expect("tagged in the fixture")
}

#[actix_web::test]
async fn manifests_are_streamed_with_their_headers_and_head_stays_head() {
    let env = env();
    let client = env.client_as(&env.host_cert(HOST_A));
    let manifest = env
        .pulp
        .repo(APP_A)
        .and_then(|r| r.manifest_for("latest"))
        .expect("manifest");
    let accept = [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json",
    ];
    let path = format!("/v2/{APP_A}/manifests/latest");

    let r = client
        .get(&path)
        .header("Accept", accept[0])
        .header("Accept", accept[1])
        .header("Accept", accept[2])
        .header("If-None-Match", "\"not-this-one\"")
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("docker-content-digest"),
        Some(manifest.digest.as_str())
    );
    assert_eq!(r.header("content-type"), Some(manifest.media_type.as_str()));
    assert_eq!(
        r.header("content-length"),
        Some(manifest.bytes.len().to_string().as_str())
    );
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    assert_eq!(r.body, manifest.bytes);
    assert_eq!(
        sha256_digest(&r.body),
        manifest.digest,
        "the body hashes to its digest"
    );

    let seen = env.pulp.requests_of(PathKind::Manifest);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, format!("/pulpcore_registry{path}"));
    let forwarded: Vec<&str> = seen[0]
        .accept()
        .iter()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .collect();
    let sent: Vec<&str> = accept
        .iter()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .collect();
    assert_eq!(forwarded, sent, "every Accept value reaches Pulp, in order");
    assert_eq!(seen[0].if_none_match(), vec!["\"not-this-one\""]);
    assert_eq!(
        seen[0].authorization(),
        None,
        "client credentials never reach Pulp"
    );
    assert_eq!(seen[0].rhsm_cert(), None);

    // HEAD by tag and by digest: forwarded as HEAD, headers without a body.
    for reference in ["latest", manifest.digest.as_str()] {
        let r = client
            .head(&format!("/v2/{APP_A}/manifests/{reference}"))
            .header("Accept", accept[0])
            .send()
            .await;
        assert_eq!(r.status, 200, "HEAD {reference}");
        assert!(r.body.is_empty());
        assert_eq!(
            r.header("docker-content-digest"),
            Some(manifest.digest.as_str())
        );
        assert_eq!(
            r.header("content-length"),
            Some(manifest.bytes.len().to_string().as_str())
        );
        let last = env.pulp.last_request().expect("Pulp was asked");
        assert_eq!(
            (last.kind, last.method.as_str()),
            (PathKind::Manifest, "HEAD")
        );
    }

    // The routes tolerate a trailing slash, as the Ruby gateway's did; Pulp gets
    // the canonical path.
    for (route, kind) in [
        (format!("{path}/"), PathKind::Manifest),
        (
            format!("/v2/{APP_A}/blobs/{}/", manifest_layer(&env)),
            PathKind::Blob,
        ),
        (format!("/v2/{APP_A}/tags/list/"), PathKind::Tags),
        ("/v2/_catalog/".to_owned(), PathKind::Catalog),
    ] {
        let r = client.get(&route).send().await;
        assert!(
            matches!(r.status, 200 | 302),
            "{route}: {} {}",
            r.status,
            r.text()
        );
        if kind != PathKind::Catalog {
            let last = env.pulp.last_request().expect("Pulp was asked");
            assert_eq!(last.kind, kind, "{route}");
            assert_eq!(
                format!("{}/", last.path),
                format!("/pulpcore_registry{route}")
            );
        }
    }

    // Pulp's own 404 for an unknown tag of a visible repository is passed on.
    let r = client
        .get(&format!("/v2/{APP_A}/manifests/no-such-tag"))
        .send()
        .await;
    common::assert_error(
        "unknown tag",
        r.status,
        r.header("content-type"),
        &r.body,
        404,
        "MANIFEST_UNKNOWN",
    );
}

#[test]
fn manifest_redirects_are_rebased_on_client_endpoint_or_kept() {
    let env = env();
    let host = env.host_cert(HOST_A);
    let path = format!("/v2/{LEGACY_A}/manifests/latest");
    let manifest = env
        .pulp
        .repo(LEGACY_A)
        .and_then(|r| r.manifest_for("latest"))
        .expect("manifest");

    // Without client_endpoint: Pulp's Location as it is.
    let r = env.curl_as(&host).get(&path);
    assert_eq!(r.status, 302, "{}", r.text());
    let kept = r.header("location").expect("a Location").to_owned();
    let origin = env.pulp.content_origin();
    assert!(
        kept.starts_with(&format!(
            "{origin}/pulp/container/{LEGACY_A}/manifests/latest?expires="
        )),
        "{kept}"
    );
    let r = env.curl_as(&host).head(&path);
    assert_eq!(r.status, 302, "HEAD keeps Pulp's status");
    assert_eq!(
        env.pulp
            .requests_of(PathKind::Manifest)
            .last()
            .map(|r| r.method.clone())
            .as_deref(),
        Some("HEAD")
    );

    // With client_endpoint (a load balancer name): same path and signed query on it.
    let lb = format!("http://localhost:{}", env.pulp.addr().port());
    let g = second_gateway(&env, |b| b.client_endpoint(&lb));
    let curl = g.curl().cert_pair(&env.write_cert(&host));
    let r = curl.get(&path);
    assert_eq!(r.status, 302, "{}", r.text());
    let rebased = r.header("location").expect("a Location").to_owned();
    let (_, kept_tail) = kept.split_once("/pulp/").expect("a content path");
    let (lb_origin, tail) = rebased.split_once("/pulp/").expect("a content path");
    assert_eq!(lb_origin, lb, "{rebased}");
    assert_eq!(
        tail.split_once('?').map(|(p, _)| p),
        kept_tail.split_once('?').map(|(p, _)| p)
    );
    assert!(
        tail.contains("validate_token="),
        "the signed query is kept: {rebased}"
    );

    // A real client follows it to the content app and gets the manifest.
    let r = curl.follow_redirects().get(&path);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.hops.len(), 2);
    assert_eq!(sha256_digest(&r.body), manifest.digest);
}

#[test]
fn blob_redirects_are_relayed_and_followable_and_direct_blobs_stream() {
    let env = env();
    let host = env.host_cert(HOST_A);
    let layer = env
        .pulp
        .repo(APP_A)
        .map(|r| r.layer_digests("latest"))
        .unwrap_or_default()[0]
        .clone();
    let path = format!("/v2/{APP_A}/blobs/{layer}");

    let lb = format!("http://localhost:{}", env.pulp.addr().port());
    let g = second_gateway(&env, |b| b.client_endpoint(&lb));
    let curl = g.curl().cert_pair(&env.write_cert(&host));

    let r = curl.get(&path);
    assert_eq!(r.status, 302, "{}", r.text());
    let location = r.header("location").expect("a Location");
    assert!(
        location.starts_with(&format!(
            "{lb}/pulp/container/{APP_A}/blobs/{layer}?expires="
        )),
        "{location}"
    );
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    let r = curl.follow_redirects().get(&path);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.hops.iter().map(|h| h.0).collect::<Vec<_>>(),
        vec![302, 200]
    );
    assert_eq!(
        sha256_digest(&r.body),
        layer,
        "the followed redirect yields the blob"
    );
    assert_eq!(env.pulp.count(PathKind::Content), 1);

    let r = curl.head(&path);
    assert_eq!(r.status, 302);
    assert_eq!(
        env.pulp
            .requests_of(PathKind::Blob)
            .last()
            .map(|r| r.method.clone())
            .as_deref(),
        Some("HEAD")
    );

    // Pulp answering 200 on the API route: streamed through with its headers.
    let big = env
        .pulp
        .repo(DIRECT_A)
        .map(|r| r.layer_digests("latest"))
        .unwrap_or_default()[1]
        .clone();
    let before = env.pulp.streams_completed();
    let r = env
        .curl_as(&host)
        .http(CurlHttp::Http11)
        .get(&format!("/v2/{DIRECT_A}/blobs/{big}"));
    assert_eq!(r.status, 200, "{}", r.stderr);
    assert_eq!(r.body.len(), 3 << 20);
    assert_eq!(sha256_digest(&r.body), big);
    assert_eq!(r.header("docker-content-digest"), Some(big.as_str()));
    assert_eq!(
        r.header("content-length"),
        Some((3u64 << 20).to_string().as_str())
    );
    assert_eq!(env.pulp.streams_completed(), before + 1);
}

#[actix_web::test]
async fn invisible_and_nonexistent_repositories_answer_alike_without_asking_pulp() {
    let env = env();
    let public_url = env.gateway.config().server.public_url.clone();
    let digest = digest_of(&env, APP_A, "latest");
    let blob = format!("sha256:{}", "ab".repeat(32));
    let routes = |name: &str| {
        vec![
            ("GET", format!("/v2/{name}/manifests/latest")),
            ("HEAD", format!("/v2/{name}/manifests/{digest}")),
            ("GET", format!("/v2/{name}/blobs/{blob}")),
            ("HEAD", format!("/v2/{name}/blobs/{blob}")),
            ("GET", format!("/v2/{name}/tags/list")),
        ]
    };
    let hidden_from_a = [APP_B, UNLISTED, "org/does/not-exist"];

    let host = env.client_as(&env.host_cert(HOST_A));
    let mut bodies = Vec::new();
    for name in hidden_from_a {
        for (method, path) in routes(name) {
            let r = host.request(method, &path).send().await;
            assert_eq!(r.status, 404, "host: {method} {path}");
            assert_eq!(r.header("www-authenticate"), None, "{method} {path}");
            if method == "GET" {
                assert_eq!(common::error_code(&r.body), "NAME_UNKNOWN", "{path}");
                assert!(
                    !r.text().contains(name),
                    "the answer does not echo the name: {}",
                    r.text()
                );
                bodies.push(r.body);
            }
        }
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "one answer for all of them"
    );

    let anonymous = env.client();
    let mut bodies = Vec::new();
    for name in [APP_A, APP_B, UNLISTED, "org/does/not-exist"] {
        for (method, path) in routes(name) {
            let r = anonymous.request(method, &path).send().await;
            assert_eq!(r.status, 401, "anonymous: {method} {path}");
            assert_eq!(
                r.header("www-authenticate"),
                Some(common::expected_challenge(&public_url, Some(name)).as_str()),
                "{method} {path}"
            );
            if method == "GET" {
                assert_eq!(common::error_code(&r.body), "UNAUTHORIZED");
                bodies.push(r.body);
            }
        }
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "one answer for all of them"
    );

    assert_eq!(env.pulp.total(), 0, "{:?}", env.pulp.requests());
    assert_eq!(env.central.total(), 0);
}

#[actix_web::test]
async fn malformed_names_references_and_digests_are_400_before_any_upstream() {
    let env = env();
    let good = format!("sha256:{}", "0".repeat(64));
    let long_name = "a".repeat(256);
    let long_tag = "t".repeat(129);
    let cases: Vec<(String, &str)> = vec![
        (
            "/v2/org/../org/b/app/manifests/latest".to_owned(),
            "NAME_INVALID",
        ),
        (
            "/v2/../v2/org/a/app/manifests/latest".to_owned(),
            "NAME_INVALID",
        ),
        (
            "/v2/org/%2e%2e/b/app/manifests/latest".to_owned(),
            "NAME_INVALID",
        ),
        ("/v2/%2e%2e/manifests/latest".to_owned(), "NAME_INVALID"),
        ("/v2/org//a/app/manifests/latest".to_owned(), "NAME_INVALID"),
        (
            "/v2/org%2Fa%2Fapp/manifests/latest".to_owned(),
            "NAME_INVALID",
        ),
        (format!("/v2/org%2fa/app/blobs/{good}"), "NAME_INVALID"),
        ("/v2/Org/A/App/manifests/latest".to_owned(), "NAME_INVALID"),
        (
            "/v2/org/a/app%00/manifests/latest".to_owned(),
            "NAME_INVALID",
        ),
        ("/v2/org/a/app%00/tags/list".to_owned(), "NAME_INVALID"),
        (format!("/v2/{long_name}/manifests/latest"), "NAME_INVALID"),
        (format!("/v2/{long_name}/tags/list"), "NAME_INVALID"),
        (
            "/v2/org/a/app/manifests/a%20b".to_owned(),
            "MANIFEST_INVALID",
        ),
        (
            "/v2/org/a/app/manifests/..%2f..%2fsecret".to_owned(),
            "MANIFEST_INVALID",
        ),
        (
            "/v2/org/a/app/manifests/latest%00".to_owned(),
            "MANIFEST_INVALID",
        ),
        (
            format!("/v2/org/a/app/manifests/sha256:{}", "0".repeat(63)),
            "MANIFEST_INVALID",
        ),
        (
            format!("/v2/org/a/app/manifests/sha256:{}", "A".repeat(64)),
            "MANIFEST_INVALID",
        ),
        ("/v2/org/a/app/blobs/latest".to_owned(), "DIGEST_INVALID"),
        (
            "/v2/org/a/app/blobs/sha256:xyz".to_owned(),
            "DIGEST_INVALID",
        ),
        ("/v2/org/a/app/blobs/sha256:".to_owned(), "DIGEST_INVALID"),
        (
            format!("/v2/org/a/app/blobs/sha256:{}%00", "0".repeat(64)),
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/org/a/app/blobs/sha256:..%2f..%2f{}", "0".repeat(58)),
            "DIGEST_INVALID",
        ),
    ];
    // A client unknown to the gateway and an anonymous one: neither may cause a
    // central lookup or a Pulp request with a malformed path. (awc sends paths
    // as given, dot segments and escapes included.)
    let clients = [
        ("stranger", env.client_as(&env.host_cert(STRANGER))),
        ("anonymous", env.client()),
    ];
    for (who, client) in &clients {
        for (path, code) in &cases {
            let r = client.get(path).send().await;
            common::assert_error(
                &format!("{who} GET {path}"),
                r.status,
                r.header("content-type"),
                &r.body,
                400,
                code,
            );
            let r = client.head(path).send().await;
            assert_eq!(r.status, 400, "{who} HEAD {path}");
        }
    }
    // References of tag characters that are no tag name no manifest: 404, as
    // Pulp answers for a tag it lacks (the OCI conformance suite pulls
    // `.INVALID_MANIFEST_NAME` and wants a 404), still before any upstream.
    let unknown = [
        "/v2/org/a/app/manifests/.hidden".to_owned(),
        "/v2/org/b/app/manifests/-dash".to_owned(),
        format!("/v2/org/a/app/manifests/{long_tag}"),
        "/v2/org/does/not-exist/manifests/.INVALID_MANIFEST_NAME".to_owned(),
    ];
    for (who, client) in &clients {
        for path in &unknown {
            let r = client.get(path).send().await;
            common::assert_error(
                &format!("{who} GET {path}"),
                r.status,
                r.header("content-type"),
                &r.body,
                404,
                "MANIFEST_UNKNOWN",
            );
            let r = client.head(path).send().await;
            assert_eq!(r.status, 404, "{who} HEAD {path}");
        }
    }
    // The same through a real client that is told not to squash dot segments.
    let curl = env.curl_as(&env.host_cert(STRANGER)).arg("--path-as-is");
    for (path, code) in &cases[..4] {
        let r = curl.get(path);
        common::assert_error(path, r.status, r.header("content-type"), &r.body, 400, code);
    }
    assert_eq!(
        env.pulp.total(),
        0,
        "{:?}",
        env.pulp
            .requests()
            .iter()
            .map(|r| r.path_and_query())
            .collect::<Vec<_>>()
    );
    assert_eq!(env.central.total(), 0);
}

#[test]
fn catalog_is_paginated_with_links_to_the_gateway_and_anonymous_sees_public_only() {
    let env = env();
    let public_url = env.gateway.config().server.public_url.clone();
    let host = env.curl_as(&env.host_cert(HOST_A));

    let r = host.get("/v2/_catalog");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        common::catalog_names(&r.body),
        vec![APP_A, DIRECT_A, LEGACY_A, RUNTIME, TOOLS],
        "sorted, the public ones and host A's own"
    );
    assert_eq!(r.header("link"), None);

    let r = host.get("/v2/_catalog?n=2");
    assert_eq!(common::catalog_names(&r.body), vec![APP_A, DIRECT_A]);
    let link = r
        .header("link")
        .expect("a Link to the next page")
        .to_owned();
    let next = link
        .strip_prefix(&format!("<{public_url}"))
        .and_then(|l| l.strip_suffix(">; rel=\"next\""))
        .unwrap_or_else(|| panic!("Link points at the gateway: {link}"));
    assert_eq!(next, "/v2/_catalog?n=2&last=org%2Fa%2Fdirect");

    let r = host.get(next);
    assert_eq!(common::catalog_names(&r.body), vec![LEGACY_A, RUNTIME]);
    let link = r
        .header("link")
        .expect("a Link to the last page")
        .to_owned();
    let next = link
        .strip_prefix(&format!("<{public_url}"))
        .and_then(|l| l.strip_suffix(">; rel=\"next\""))
        .unwrap_or_else(|| panic!("{link}"))
        .to_owned();
    let r = host.get(&next);
    assert_eq!(common::catalog_names(&r.body), vec![TOOLS]);
    assert_eq!(r.header("link"), None, "no Link after the last page");

    let r = host.get(&format!("/v2/_catalog?last={}", "org%2Fpublic%2Fruntime"));
    assert_eq!(common::catalog_names(&r.body), vec![TOOLS]);

    let r = env.curl().get("/v2/_catalog");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(common::catalog_names(&r.body), vec![RUNTIME, TOOLS]);
    let r = env.curl_as(&env.host_cert(HOST_B)).get("/v2/_catalog");
    assert_eq!(common::catalog_names(&r.body), vec![APP_B, RUNTIME, TOOLS]);

    for bad in ["abc", "-1", "1.5", ""] {
        let r = host.get(&format!("/v2/_catalog?n={bad}"));
        common::assert_error(
            bad,
            r.status,
            r.header("content-type"),
            &r.body,
            400,
            "PAGINATION_NUMBER_INVALID",
        );
    }
    assert_eq!(
        env.pulp.total(),
        0,
        "the catalog comes from Katello's list, not Pulp"
    );
}

#[test]
fn tags_list_forwards_pagination_and_links_back_to_the_gateway() {
    let env = env();
    let public_url = env.gateway.config().server.public_url.clone();
    let curl = env.curl();

    let r = curl.get(&format!("/v2/{RUNTIME}/tags/list"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({"name": RUNTIME, "tags": ["1.0", "1.1", "2.0", "latest"]})
    );
    assert_eq!(r.header("link"), None);
    assert_eq!(env.pulp.requests_of(PathKind::Tags)[0].query, "");

    let r = curl.get(&format!("/v2/{RUNTIME}/tags/list?n=2&x=y"));
    assert_eq!(r.json()["tags"], serde_json::json!(["1.0", "1.1"]));
    let sent = env
        .pulp
        .requests_of(PathKind::Tags)
        .pop()
        .expect("forwarded");
    assert_eq!(sent.query, "n=2", "only n and last reach Pulp");
    let link = r.header("link").expect("Pulp's Link, rewritten").to_owned();
    assert_eq!(
        link,
        format!("<{public_url}/v2/{RUNTIME}/tags/list?n=2&last=1.1>; rel=\"next\""),
        "points at the gateway, not at Pulp"
    );

    let next = link
        .strip_prefix(&format!("<{public_url}"))
        .and_then(|l| l.strip_suffix(">; rel=\"next\""))
        .expect("a gateway URL");
    let r = curl.get(next);
    assert_eq!(r.json()["tags"], serde_json::json!(["2.0", "latest"]));
    let sent = env
        .pulp
        .requests_of(PathKind::Tags)
        .pop()
        .expect("forwarded");
    assert_eq!(sent.query_param("n").as_deref(), Some("2"));
    assert_eq!(sent.query_param("last").as_deref(), Some("1.1"));

    // Private repositories' tags are guarded like their manifests.
    let r = env
        .curl_as(&env.host_cert(HOST_A))
        .get(&format!("/v2/{APP_A}/tags/list?last=a"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tags"], serde_json::json!(["latest"]));
}

#[test]
fn pulp_errors_and_timeouts_are_502_or_503_in_registry_format() {
    let env = TestEnv::builder()
        .pulp(|p| p.repo(FakeRepo::new(RUNTIME).image("latest", Image::new())))
        .repositories(&[(RUNTIME, false)])
        .gateway(|g| g.upstream_timeout(1))
        .start();
    let layer = env
        .pulp
        .repo(RUNTIME)
        .map(|r| r.layer_digests("latest"))
        .unwrap_or_default()[0]
        .clone();
    let curl = env.curl().http(CurlHttp::Http11);
    let routes = [
        (
            PathKind::Manifest,
            format!("/v2/{RUNTIME}/manifests/latest"),
        ),
        (PathKind::Blob, format!("/v2/{RUNTIME}/blobs/{layer}")),
        (PathKind::Tags, format!("/v2/{RUNTIME}/tags/list")),
    ];
    for (kind, path) in &routes {
        for status in [500, 502, 503] {
            env.pulp.fail_times(Some(*kind), Fault::Status(status), 1);
            let r = curl.get(path);
            common::assert_error(
                path,
                r.status,
                r.header("content-type"),
                &r.body,
                502,
                "UPSTREAM_ERROR",
            );
            assert!(
                !r.text().contains("<html"),
                "Pulp's page is not relayed: {}",
                r.text()
            );
        }
        env.pulp.fail_times(Some(*kind), Fault::Status(500), 1);
        let r = curl.head(path);
        assert_eq!(r.status, 502, "HEAD {path}");

        // Pulp refusing the gateway's credentials is the gateway's problem, not a challenge.
        env.pulp.fail_times(Some(*kind), Fault::Status(401), 1);
        let r = curl.get(path);
        common::assert_error(
            path,
            r.status,
            r.header("content-type"),
            &r.body,
            502,
            "UPSTREAM_ERROR",
        );
        assert_eq!(r.header("www-authenticate"), None);

        env.pulp.fail_times(Some(*kind), Fault::Close, 1);
        let r = curl.get(path);
        assert!(
            matches!(r.status, 502 | 503),
            "{path}: dropped connection gave {}",
            r.status
        );
        common::error_code(&r.body);
    }

    // Pulp stalls past pulp.timeout_secs on every route at once.
    for (kind, _) in &routes {
        env.pulp
            .fail_times(Some(*kind), Fault::Stall(Duration::from_secs(3)), 1);
    }
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for (_, path) in &routes {
            let curl = &curl;
            scope.spawn(move || {
                let r = curl.get(path);
                common::assert_error(
                    path,
                    r.status,
                    r.header("content-type"),
                    &r.body,
                    503,
                    "UNAVAILABLE",
                );
                assert!(r.header("retry-after").is_some(), "{path}: {:?}", r.headers);
            });
        }
    });
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "answered at pulp.timeout_secs, not when Pulp woke up"
    );
    // One Pulp request per client request (seven per route): failures are not retried.
    let asked = [PathKind::Manifest, PathKind::Blob, PathKind::Tags].map(|k| env.pulp.count(k));
    assert_eq!(asked, [7, 7, 7]);

    // Pulp down altogether.
    let mut env = env;
    env.pulp.stop();
    let r = curl.get(&routes[0].1);
    common::assert_error(
        "Pulp down",
        r.status,
        r.header("content-type"),
        &r.body,
        503,
        "UNAVAILABLE",
    );
    env.pulp.restart();
    let r = curl.get(&routes[0].1);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn pushes_and_deletes_are_405_unsupported_and_never_reach_pulp() {
    let env = env();
    let digest = digest_of(&env, APP_A, "latest");
    let cases = [
        ("PUT", format!("/v2/{APP_A}/manifests/latest")),
        ("PUT", format!("/v2/{APP_A}/manifests/{digest}")),
        ("DELETE", format!("/v2/{APP_A}/manifests/{digest}")),
        ("POST", format!("/v2/{APP_A}/blobs/uploads/")),
        (
            "POST",
            format!("/v2/{APP_A}/blobs/uploads/?mount={digest}&from={APP_B}"),
        ),
        ("PATCH", format!("/v2/{APP_A}/blobs/uploads/0f1e2d3c")),
        (
            "PUT",
            format!("/v2/{APP_A}/blobs/uploads/0f1e2d3c?digest={digest}"),
        ),
        ("GET", format!("/v2/{APP_A}/blobs/uploads/0f1e2d3c")),
        ("DELETE", format!("/v2/{APP_A}/blobs/uploads/0f1e2d3c")),
        ("DELETE", format!("/v2/{APP_A}/blobs/{digest}")),
        ("PUT", format!("/v2/{APP_B}/manifests/latest")),
        ("PUT", "/v2/brand/new/manifests/latest".to_owned()),
    ];
    for (who, curl) in [
        ("host", env.curl_as(&env.host_cert(HOST_A))),
        ("anonymous", env.curl()),
    ] {
        // podman and skopeo push over HTTP/1.1.
        let curl = curl.http(CurlHttp::Http11);
        let with_body = curl.body("application/vnd.oci.image.manifest.v1+json", b"{}".to_vec());
        for (method, path) in &cases {
            let r = if *method == "GET" {
                curl.get(path)
            } else {
                with_body.run(method, path)
            };
            if *method == "GET" {
                // Reading an upload's status is not a read of content either.
                assert!(
                    matches!(r.status, 404 | 405),
                    "{who} {method} {path}: {}",
                    r.status
                );
                assert_eq!(common::error_code(&r.body), "UNSUPPORTED");
                continue;
            }
            common::assert_error(
                &format!("{who} {method} {path}"),
                r.status,
                r.header("content-type"),
                &r.body,
                405,
                "UNSUPPORTED",
            );
        }
    }
    // Over HTTP/2 (Go clients may negotiate it), a manifest PUT gets the 405
    // too, not a reset of the stream it is sending its body on.
    let manifest = env
        .pulp
        .repo(APP_A)
        .and_then(|r| r.manifest_for("latest"))
        .expect("manifest");
    let h2 = env
        .curl_as(&env.host_cert(HOST_A))
        .http(CurlHttp::Http2)
        .body(&manifest.media_type, manifest.bytes.to_vec());
    for path in [
        format!("/v2/{APP_A}/manifests/latest"),
        format!("/v2/{APP_A}/manifests/{digest}"),
    ] {
        let r = h2
            .try_run("PUT", &path)
            .unwrap_or_else(|e| panic!("PUT {path} over h2: {e}"));
        assert_eq!(r.http_version, "2");
        common::assert_error(
            &path,
            r.status,
            r.header("content-type"),
            &r.body,
            405,
            "UNSUPPORTED",
        );
    }
    // The other routes answer other methods the same way, naming what they take.
    let curl = env.curl_as(&env.host_cert(HOST_A)).http(CurlHttp::Http11);
    for (method, path, allow) in [
        (
            "POST",
            "/index/static?label:org.flatpak.ref:exists=1",
            "GET, HEAD",
        ),
        ("DELETE", "/index/dynamic", "GET, HEAD"),
        ("POST", "/v2/token?scope=x", "GET"),
        ("PUT", "/v1/_ping", "GET"),
        ("POST", "/v1/search?q=a", "GET"),
    ] {
        let r = curl
            .body("application/json", b"{}".to_vec())
            .run(method, path);
        common::assert_error(
            &format!("{method} {path}"),
            r.status,
            r.header("content-type"),
            &r.body,
            405,
            "UNSUPPORTED",
        );
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
    assert_eq!(env.pulp.total(), 0);
    assert_eq!(env.central.total(), 0);
}
