//! The fakes themselves speak the wire format of real Pulp and Katello.

use std::time::{Duration, Instant};

use gateway_tests::client::{Curl, TestClient};
use gateway_tests::fake_central::{CentralRoute, FakeCentral, IssuedAt};
use gateway_tests::fake_pulp::{
    Blob, FLATPAK_INDEX_QUERY, FakePulp, FakeRepo, Image, PathKind, generated_chunk,
    generated_digest, sha256_digest,
};
use gateway_tests::harness::{Fault, upstream_tls};
use gateway_tests::pki::Pki;

fn pulp() -> FakePulp {
    FakePulp::builder()
        .repo(
            FakeRepo::new("org/flatpak/platform")
                .image("latest", Image::flatpak_runtime("org.test.Platform", "1")),
        )
        .repo(
            FakeRepo::new("org/flatpak/hello")
                .image("latest", Image::flatpak_app("org.test.Hello")),
        )
        .repo(
            FakeRepo::new("org/lib/tiny")
                .image("latest", Image::new())
                .image("1.0", Image::new().label("version", "1.0"))
                .image("2.0", Image::new().label("version", "2.0")),
        )
        .start()
}

#[test]
fn index_is_pulp_shaped() {
    let pulp = pulp();
    let curl = Curl::new(&pulp.registry_url());

    let r = curl.get("/index/static?architecture=amd64");
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        r#"{"detail":"Missing label:org.flatpak.ref:exists=1."}"#
    );
    let r = curl.get(&format!(
        "/index/static?{FLATPAK_INDEX_QUERY}&annotation:x:exists=1"
    ));
    assert_eq!(r.status, 400, "{}", r.text());

    let r = curl.get(&format!("/index/static?{FLATPAK_INDEX_QUERY}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("connection"), Some("close"));
    for h in ["etag", "cache-control", "last-modified"] {
        assert!(r.header(h).is_none(), "no {h}");
    }
    let text = r.text();
    assert!(text.starts_with(&format!(r#"{{"Registry":"{}","Results":[{{"Name":"org/flatpak/platform","Images":[{{"Tags":["latest"],"Digest":"sha256:"#, pulp.url())), "{text}");
    assert!(text.contains("ünïcödé ✓"), "raw UTF-8, not escaped: {text}");
    assert!(
        !text.contains("\": ") && !text.contains(", \"") && !text.contains("org/lib/tiny"),
        "compact, plain images filtered: {text}"
    );
    let v = r.json();
    let hello = &v["Results"][1];
    assert_eq!(hello["Name"], "org/flatpak/hello");
    let digest = pulp
        .repo("org/flatpak/hello")
        .and_then(|r| r.tag_digest("latest"))
        .expect("tagged");
    assert_eq!(hello["Images"][0]["Digest"], digest.as_str());
    assert_eq!(
        hello["Images"][0]["Labels"]["org.flatpak.ref"],
        "app/org.test.Hello/x86_64/stable"
    );
    assert_eq!(
        pulp.index_json(FLATPAK_INDEX_QUERY).expect("valid query"),
        r.body
    );

    pulp.set_index_json(Some("{\"Registry\":\"x\",\"Results\":[]}".into()));
    let r = curl.get(&format!("/index/dynamic?{FLATPAK_INDEX_QUERY}"));
    assert_eq!(r.text(), "{\"Registry\":\"x\",\"Results\":[]}");
    assert_eq!(pulp.count(PathKind::Index), 4);
}

#[test]
fn manifests_blobs_and_tags() {
    let pulp = pulp();
    let curl = Curl::new(&pulp.registry_url());
    let repo = pulp.repo("org/lib/tiny").expect("configured");
    let digest = repo.tag_digest("latest").expect("tagged");

    let r = curl
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .header("Accept", "*/*")
        .get("/v2/org/lib/tiny/manifests/latest");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(sha256_digest(&r.body), digest, "content-addressed");
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    let seen = pulp.last_request().expect("logged");
    assert_eq!(
        seen.accept(),
        vec!["application/vnd.oci.image.manifest.v1+json", "*/*"],
        "one entry per Accept line"
    );

    let h = curl.head(&format!("/v2/org/lib/tiny/manifests/{digest}"));
    assert_eq!(h.status, 200);
    assert_eq!(
        h.header("content-length").map(str::to_owned),
        Some(r.body.len().to_string())
    );
    assert_eq!(
        pulp.last_request().map(|r| r.method),
        Some("HEAD".to_owned())
    );

    let r = curl.get("/v2/org/lib/tiny/manifests/nope");
    assert_eq!(
        (r.status, r.json()["errors"][0]["code"].as_str()),
        (404, Some("MANIFEST_UNKNOWN"))
    );
    let r = curl.get("/v2/org/lib/nope/manifests/latest");
    assert_eq!(
        (r.status, r.json()["errors"][0]["code"].as_str()),
        (404, Some("NAME_UNKNOWN"))
    );

    // Blobs: 302 to a signed content-app URL, which serves the bytes.
    let layer = repo.layer_digests("latest").remove(0);
    let r = curl.get(&format!("/v2/org/lib/tiny/blobs/{layer}"));
    assert_eq!(r.status, 302);
    let location = r.header("location").expect("redirect").to_owned();
    assert!(
        location.starts_with(&format!(
            "{}/pulp/container/org/lib/tiny/blobs/{layer}?expires=",
            pulp.url()
        )),
        "{location}"
    );
    assert!(location.contains("&validate_token="));
    let r = curl.get(&location);
    assert_eq!(r.status, 200);
    assert_eq!(sha256_digest(&r.body), layer);
    assert_eq!(r.header("docker-content-digest"), Some(layer.as_str()));
    let r = curl.get(&location.replace("validate_token=", "validate_token=0"));
    assert_eq!(r.status, 403);
    let r = curl.header("Range", "bytes=0-9").get(&location);
    assert_eq!((r.status, r.body.len()), (206, 10));

    // tags/list paging with Pulp's absolute Link.
    let r = curl.get("/v2/org/lib/tiny/tags/list?n=2");
    assert_eq!(
        r.json(),
        serde_json::json!({"name": "org/lib/tiny", "tags": ["1.0", "2.0"]})
    );
    let host = pulp.addr().to_string();
    assert_eq!(
        r.header("link"),
        Some(
            format!("<http://{host}/v2/org/lib/tiny/tags/list?n=2&last=2.0>; rel=\"next\"")
                .as_str()
        )
    );
    let r = curl.get("/v2/org/lib/tiny/tags/list?n=2&last=2.0");
    assert_eq!(r.json()["tags"], serde_json::json!(["latest"]));
    assert!(r.header("link").is_none());

    let r = curl.get("/v2/_catalog");
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["org/flatpak/hello", "org/flatpak/platform", "org/lib/tiny"])
    );
    let r = curl.get("/v2/");
    assert_eq!(
        (r.status, r.header("www-authenticate")),
        (401, Some("Basic realm=\"api\""))
    );
}

#[test]
fn redirected_manifests_and_streamed_blobs() {
    let size = 8 * 1024 * 1024 + 3;
    let big = Blob::generated(size, 9);
    let pulp = FakePulp::builder()
        .registry_path("")
        .repo(
            FakeRepo::new("old/style")
                .image("latest", Image::new())
                .redirect_manifests(true),
        )
        .repo(FakeRepo::new("big").blob(big.clone()).direct_blobs(true))
        .start();
    let curl = Curl::new(pulp.url());

    let r = curl.get("/v2/old/style/manifests/latest");
    assert_eq!(r.status, 302);
    assert!(
        r.header("location")
            .is_some_and(|l| l.contains("/pulp/container/old/style/manifests/latest?expires="))
    );
    let r = curl
        .follow_redirects()
        .get("/v2/old/style/manifests/latest");
    assert_eq!(r.status, 200);
    assert_eq!(r.hops.len(), 2);

    let r = curl.get(&format!("/v2/big/blobs/{}", big.digest));
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len() as u64, size);
    assert_eq!(sha256_digest(&r.body), generated_digest(size, 9));
    assert_eq!(r.body[1000..1010], generated_chunk(9, 1000, 10)[..]);
    assert_eq!(pulp.streams_completed(), 1);
    assert_eq!(pulp.blob_bytes_sent(), size);
}

#[test]
fn faults() {
    let pulp = pulp();
    let curl = Curl::new(&pulp.registry_url()).max_time(Duration::from_secs(5));
    let path = "/v2/org/lib/tiny/manifests/latest";

    pulp.fail_times(Some(PathKind::Manifest), Fault::Status(503), 1);
    assert_eq!(curl.get(path).status, 503);
    assert_eq!(curl.get(path).status, 200, "the fault was used up");

    pulp.fail_kind(PathKind::Manifest, Fault::Garbage);
    let r = curl.get(path);
    assert!(r.status == 200 && serde_json::from_slice::<serde_json::Value>(&r.body).is_err());
    pulp.clear_faults();

    pulp.fail(Fault::Close);
    let e = curl.try_run("GET", path).expect_err("connection dropped");
    assert!(e.exit_code.is_some(), "{e}");
    pulp.clear_faults();

    pulp.fail(Fault::Truncate);
    let e = curl.try_run("GET", path).expect_err("body cut short");
    assert_eq!(e.exit_code, Some(18), "partial file: {e}");
    pulp.clear_faults();

    pulp.fail(Fault::Stall(Duration::from_millis(600)));
    let t = Instant::now();
    assert_eq!(curl.get(path).status, 200);
    assert!(t.elapsed() >= Duration::from_millis(600));
    pulp.clear_faults();

    assert_eq!(pulp.count(PathKind::Manifest), 6);
    pulp.reset();
    assert_eq!((pulp.total(), pulp.requests().len()), (0, 0));
}

#[test]
fn tls_fakes_require_a_client_certificate() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let files = pki.write_to(dir.path());
    let pulp = FakePulp::builder()
        .tls(upstream_tls(&pki))
        .repo(FakeRepo::new("a").image("latest", Image::new()))
        .start();
    assert!(pulp.url().starts_with("https://"));
    let curl = Curl::new(&pulp.registry_url()).cacert(&files.ca);
    assert!(
        curl.try_run("GET", "/v2/a/manifests/latest").is_err(),
        "no client cert, no handshake"
    );
    let r = curl
        .cert(&files.management_cert, &files.management_key)
        .get("/v2/");
    assert_eq!(
        r.status, 200,
        "a client certificate authenticates /v2/ like Apache's SSL_CLIENT_S_DN"
    );
    assert!(pulp.last_request().is_some_and(|r| r.tls && r.client_cert));
}

fn central() -> FakeCentral {
    FakeCentral::builder()
        .public(&["org/public"])
        .host("h1", &["org/public", "org/private"])
        .user("alice", "secret", &["org/alice"])
        .personal_token("pat-1", "alice")
        .start()
}

#[test]
fn central_catalog_and_token() {
    let central = central();
    let curl = Curl::new(central.url());

    let r = curl.header("HostUUID", "h1").get("/v2/_catalog");
    assert_eq!(
        r.json(),
        serde_json::json!({"repositories": ["org/public", "org/private"]})
    );
    let r = curl.header("HostUUID", "unknown").get("/v2/_catalog");
    assert_eq!(
        (r.status, r.json()["repositories"].clone()),
        (200, serde_json::json!(["org/public"]))
    );
    let r = curl.basic("alice", "secret").get("/v2/_catalog");
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["org/public", "org/alice"])
    );
    let r = curl.basic("alice", "wrong").get("/v2/_catalog");
    assert_eq!(r.status, 401);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Unable to authenticate"))
    );
    let r = curl
        .header("Authorization", "Bearer pat-1")
        .get("/v2/_catalog");
    assert_eq!(r.status, 200);

    let r = curl.get("/v2/token");
    assert_eq!(r.json()["token"], "unauthenticated");
    assert_eq!(r.json()["expires_in"], 180);
    let r = curl
        .basic("alice", "secret")
        .get("/v2/token?account=alice&scope=repository:org/alice:pull&service=x");
    let token = r.json()["token"].as_str().expect("a token").to_owned();
    assert_eq!(r.json()["expires_in"], 3600);
    assert!(
        r.json()["issued_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let again = curl.basic("alice", "secret").get("/v2/token?account=alice");
    assert_eq!(
        again.json()["token"].as_str(),
        Some(token.as_str()),
        "Katello re-issues the same token"
    );
    let r = curl
        .header("Authorization", &format!("Bearer {token}"))
        .get("/v2/_catalog");
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["org/public", "org/alice"])
    );
    assert_eq!(
        curl.basic("bob", "x").get("/v2/token?account=bob").status,
        401
    );

    central.set_issued_at(IssuedAt::Omit);
    let r = curl.basic("alice", "secret").get("/v2/token?account=alice");
    assert!(r.json().get("issued_at").is_none() && r.header("date").is_some());

    central.revoke_token(&token);
    assert_eq!(
        curl.header("Authorization", &format!("Bearer {token}"))
            .get("/v2/_catalog")
            .status,
        401
    );

    assert_eq!(central.catalog_calls_for_host("h1"), 1);
    assert_eq!(central.catalog_calls_for_user("alice"), 4);
    assert_eq!(central.token_calls(), 5);
    assert_eq!(central.requests_of(CentralRoute::Token).len(), 5);
}

#[actix_web::test]
async fn central_counts_concurrent_calls_and_restarts_on_its_port() {
    let mut central = central();
    central.set_delay(Duration::from_millis(200));
    let client = TestClient::builder(central.url()).build();
    let started = Instant::now();
    let calls = (0..50).map(|_| client.get("/v2/_catalog").header("HostUUID", "h1").send());
    let answers = futures_util::future::join_all(calls).await;
    assert!(answers.iter().all(|r| r.status == 200));
    assert_eq!(central.catalog_calls_for_host("h1"), 50);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the delay is per request, not serialised"
    );

    let addr = central.addr();
    central.stop();
    assert!(client.get("/v2/_catalog").try_send().await.is_err(), "down");
    central.restart();
    assert_eq!(central.addr(), addr);
    // A pooled keep-alive connection from before the stop is dead: start afresh.
    let client = TestClient::builder(central.url()).build();
    let r = client
        .get("/v2/_catalog")
        .header("HostUUID", "h1")
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        central.catalog_calls_for_host("h1"),
        51,
        "state survives a restart"
    );

    central.fail_route(CentralRoute::Catalog, Fault::Status(500));
    assert_eq!(client.get("/v2/_catalog").send().await.status, 500);
    central.clear_faults();
    central.fail(Fault::Garbage);
    let r = client.get("/v2/_catalog").send().await;
    assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_err());
}

#[test]
fn head_of_a_streamed_blob_keeps_its_length() {
    let blob = Blob::generated_unhashed(5 << 20, 1);
    let pulp = FakePulp::builder()
        .repo(FakeRepo::new("b").blob(blob.clone()).direct_blobs(true))
        .start();
    let r = Curl::new(&pulp.registry_url()).head(&format!("/v2/b/blobs/{}", blob.digest));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("5242880"));
    assert_eq!(
        pulp.streams_completed() + pulp.streams_aborted(),
        0,
        "HEAD streams nothing"
    );
}

#[test]
fn pulp_restarts_on_its_port() {
    let mut pulp = pulp();
    let curl = Curl::new(&pulp.registry_url()).max_time(Duration::from_secs(5));
    pulp.stop();
    assert!(!pulp.is_up());
    assert!(
        curl.try_run("GET", "/v2/_catalog").is_err(),
        "connection refused"
    );
    pulp.restart();
    assert_eq!(curl.get("/v2/_catalog").status, 200);
    assert_eq!(pulp.count(PathKind::Catalog), 1);
}
