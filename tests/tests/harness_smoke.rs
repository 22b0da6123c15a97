//! The harness end to end: fake Pulp + fake central + a gateway, over real sockets.

use gateway_tests::client::CurlHttp;
use gateway_tests::fake_pulp::{FakeRepo, Image, PathKind};
use gateway_tests::harness::TestEnv;

const HOST: &str = "0d9c2c52-7a4e-4b1c-9a7c-1f2e3d4c5b6a";

fn env(upstream_tls: bool) -> TestEnv {
    TestEnv::builder()
        .pulp(|p| {
            p.repo(FakeRepo::new("org/public/app").image("latest", Image::new()))
                .repo(
                    FakeRepo::new("org/private/app")
                        .image("latest", Image::flatpak_app("org.test.Private")),
                )
        })
        .central(|c| {
            c.public(&["org/public/app"])
                .host(HOST, &["org/public/app", "org/private/app"])
        })
        .repositories(&[("org/public/app", false), ("org/private/app", true)])
        .upstream_tls(upstream_tls)
        .start()
}

#[actix_web::test]
async fn v2_is_200_with_a_host_cert_and_401_anonymous() {
    let env = env(false);

    let r = env.client_as(&env.host_cert(HOST)).get("/v2/").send().await;
    assert_eq!(r.status, 200, "host: {}", r.text());

    let r = env.client().get("/v2/").send().await;
    assert_eq!(r.status, 401, "anonymous: {}", r.text());
    let challenge = r
        .header("www-authenticate")
        .expect("a 401 carries a challenge");
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{}/v2/token\"", env.gateway.url())),
        "challenge points at the gateway: {challenge}"
    );
    assert_eq!(env.pulp.count(PathKind::Manifest), 0);
}

#[test]
fn real_curl_over_h2_and_upstream_mtls_and_restart() {
    let mut env = env(true);
    let host = env.host_cert(HOST);

    let r = env.curl_as(&host).http(CurlHttp::Http2).get("/v2/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.http_version, "2");

    let r = env.curl().http(CurlHttp::Http11).get("/v2/");
    assert_eq!(r.status, 401, "{}", r.text());

    // Through the gateway to Pulp over mTLS.
    let digest = env
        .pulp
        .repo("org/private/app")
        .and_then(|r| r.tag_digest("latest"))
        .expect("tagged");
    let r = env
        .curl_as(&host)
        .head("/v2/org/private/app/manifests/latest");
    if r.status != 200 {
        let g = env
            .curl_as(&host)
            .get("/v2/org/private/app/manifests/latest");
        panic!(
            "HEAD gave {} {:?}; GET gives {} {}",
            r.status,
            r.headers,
            g.status,
            g.text()
        );
    }
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let seen = env.pulp.requests_of(PathKind::Manifest);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "HEAD");
    assert!(
        seen[0].tls && seen[0].client_cert,
        "the gateway presented its client certificate to Pulp"
    );

    env.gateway.restart();
    let r = env.curl_as(&host).get("/v2/");
    assert_eq!(r.status, 200, "after restart: {}", r.text());
}

#[test]
fn katello_pushes_reach_the_gateway() {
    const PUSHED: &str = "7f3e1a2b-0000-4000-8000-000000000001";
    let env = TestEnv::builder()
        .pulp(|p| p.repo(FakeRepo::new("org/private/app").image("latest", Image::new())))
        .repositories(&[("org/private/app", true)])
        .host_mapping(PUSHED, &["org/private/app"])
        .start();
    let r = env
        .curl_as(&env.host_cert(PUSHED))
        .head("/v2/org/private/app/manifests/latest");
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(
        env.central.catalog_calls_for_host(PUSHED),
        0,
        "a pushed mapping needs no central lookup"
    );

    let r = env
        .gateway
        .push("repository_list", "repositories[][repository]=x");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = env
        .gateway
        .curl()
        .body("application/x-www-form-urlencoded", "repositories")
        .put("/container_gateway/repository_list");
    assert_ne!(
        r.status, 200,
        "management routes need the management certificate"
    );
}
