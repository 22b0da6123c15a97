//! Several gateways behind one load balancer, with central as the only shared truth.

use gateway_tests::client::TestClient;
use gateway_tests::fake_pulp::{FLATPAK_INDEX_QUERY, FakeRepo, Image, PathKind};
use gateway_tests::harness::{GatewayBuilder, TestEnv};

const HOST: &str = "5b0c1d2e-3f40-4152-8364-758697a8b9ca";
const LB: &str = "https://registry.lb.example.com";
const REPOS: [(&str, bool); 3] = [
    ("org/flatpak/app", true),
    ("org/flatpak/runtime", false),
    ("org/user/tool", true),
];

#[actix_web::test]
async fn tokens_and_etags_work_across_instances_without_shared_state() {
    let env = TestEnv::builder()
        .pulp(|p| {
            p.repo(
                FakeRepo::new("org/flatpak/app")
                    .image("latest", Image::flatpak_app("org.test.App")),
            )
            .repo(
                FakeRepo::new("org/flatpak/runtime")
                    .image("latest", Image::flatpak_runtime("org.test.Platform", "1")),
            )
            .repo(FakeRepo::new("org/user/tool").image("latest", Image::new()))
        })
        .central(|c| {
            c.public(&["org/flatpak/runtime"])
                .host(HOST, &["org/flatpak/app"])
                .user("alice", "secret", &["org/user/tool"])
        })
        .gateway(|g| g.public_url(LB).client_endpoint(LB))
        .repositories(&REPOS)
        .start();
    // A second instance: same central, same Pulp, its own (empty) state dir.
    let second = GatewayBuilder::new(env.pki.clone())
        .pulp(&env.pulp)
        .central(&env.central)
        .public_url(LB)
        .client_endpoint(LB)
        .start();
    second.push_repository_list(&REPOS);
    let ca = env.pki.ca_pem();
    let anon = [
        TestClient::anonymous(&env.gateway.url(), &ca),
        TestClient::anonymous(&second.url(), &ca),
    ];

    // podman: token through instance 1 ...
    let r = anon[0]
        .get("/v2/token?account=alice&scope=repository:org/user/tool:pull&service=lb")
        .basic("alice", "secret")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["token"].as_str().expect("a token").to_owned();
    let bearer = format!("Bearer {token}");
    // ... then manifests alternately through both instances.
    for round in 0..6 {
        let client = &anon[round % 2];
        let r = client
            .get("/v2/org/user/tool/manifests/latest")
            .bearer(&token)
            .send()
            .await;
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        let r = client
            .get("/v2/org/flatpak/app/manifests/latest")
            .bearer(&token)
            .send()
            .await;
        assert_eq!(
            r.status, 404,
            "alice may not see the host's app (round {round})"
        );
    }
    // Instance 1 issued it and knows it; instance 2 asked central once and cached the answer.
    assert_eq!(
        env.central.catalog_calls_for_authorization(&bearer),
        1,
        "one validation per instance that had not seen the token"
    );

    // flatpak: the index fetched from one instance revalidates against the other.
    let host = env.pki.host_cert(HOST);
    let hosts = [
        TestClient::with_cert(&env.gateway.url(), &ca, &host),
        TestClient::with_cert(&second.url(), &ca, &host),
    ];
    let path = format!("/index/static?{FLATPAK_INDEX_QUERY}");
    let first = hosts[0].get(&path).send().await;
    assert_eq!(first.status, 200, "{}", first.text());
    let etag = first.header("etag").expect("an ETag").to_owned();
    let names: Vec<String> = first.json()["Results"]
        .as_array()
        .expect("Results")
        .iter()
        .filter_map(|r| r["Name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        names.len(),
        2,
        "the host's app and the public runtime: {names:?}"
    );
    assert_eq!(
        first.json()["Registry"],
        format!("{LB}/"),
        "the index names the load balancer"
    );
    let again = hosts[1]
        .get(&path)
        .header("If-None-Match", &etag)
        .send()
        .await;
    assert_eq!(again.status, 304, "revalidation through the other instance");
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let full = hosts[1].get(&path).send().await;
    assert_eq!(full.body, first.body, "both instances write the same bytes");

    // Redirects name the load balancer, whichever instance answered.
    let digest = env
        .pulp
        .repo("org/flatpak/app")
        .and_then(|r| r.tag_digest("latest"))
        .expect("tagged");
    let manifest = hosts[1]
        .get(&format!("/v2/org/flatpak/app/manifests/{digest}"))
        .send()
        .await;
    assert_eq!(manifest.status, 200);
    let config = manifest.json()["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_owned();
    for client in &hosts {
        let r = client
            .get(&format!("/v2/org/flatpak/app/blobs/{config}"))
            .send()
            .await;
        assert_eq!(r.status, 302, "{}", r.text());
        let location = r.header("location").expect("a Location");
        assert!(
            location.starts_with(&format!("{LB}/pulp/container/org/flatpak/app/blobs/")),
            "{location}"
        );
    }
    assert!(env.pulp.count(PathKind::Blob) >= 2);
}
