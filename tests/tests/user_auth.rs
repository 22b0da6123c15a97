//! Users: the registry token flow as podman and flatpak run it, tokens the
//! gateway issued or never saw, what central's answers do to them, and the v1
//! routes (`/v1/_ping`, `/v1/search`).

mod common;

use std::time::Duration;

use gateway_tests::client::TestClient;
use gateway_tests::fake_central::{CentralRoute, IssuedAt};
use gateway_tests::fake_pulp::{FakeRepo, Image, PathKind};
use gateway_tests::harness::{Fault, TestEnv, TestEnvBuilder};

const PUBLIC: &str = "org/public/app";
const ALICE_REPO: &str = "org/alice/app";
const BOB_REPO: &str = "org/bob/app";
const ALICE_PAT: &str = "pat-alice-0123456789";
/// A host with no repositories of its own.
const HOST: &str = "f0f0f0f0-8888-4a5b-9c6d-0e1f2a3b4c5d";

fn builder() -> TestEnvBuilder {
    TestEnv::builder()
        .pulp(|p| {
            p.repo(FakeRepo::new(PUBLIC).image("latest", Image::new()))
                .repo(
                    FakeRepo::new(ALICE_REPO).image("latest", Image::flatpak_app("org.test.Alice")),
                )
                .repo(FakeRepo::new(BOB_REPO).image("latest", Image::new().label("bob", "yes")))
        })
        .central(|c| {
            c.public(&[PUBLIC])
                .user("alice", "alice-pw", &[ALICE_REPO])
                .user("bob", "bob-pw", &[BOB_REPO])
                .personal_token(ALICE_PAT, "alice")
                .host(HOST, &[])
        })
        .repositories(&[(PUBLIC, false), (ALICE_REPO, true), (BOB_REPO, true)])
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn manifest_path(env: &TestEnv, repo: &str) -> String {
    let digest = env
        .pulp
        .repo(repo)
        .and_then(|r| r.tag_digest("latest"))
        .expect("tagged");
    format!("/v2/{repo}/manifests/{digest}")
}

/// A token for `user` through the gateway's `/v2/token`, the podman way.
async fn token(client: &TestClient, user: &str, password: &str, scope_repo: &str) -> String {
    let r = client
        .get(&format!(
            "/v2/token?account={user}&scope={}&service=gw",
            enc(&format!("repository:{scope_repo}:pull"))
        ))
        .basic(user, password)
        .send()
        .await;
    assert_eq!(r.status, 200, "token for {user}: {}", r.text());
    r.json()["token"].as_str().expect("a token").to_owned()
}

#[actix_web::test]
async fn the_plugin_chain_is_certificates_then_tokens() {
    let env = builder().start();
    assert_eq!(
        env.gateway.shared().chain.names(),
        vec!["rhsm-cert", "katello-token"]
    );
    assert_eq!(
        env.gateway.config().plugins.chain,
        vec!["rhsm-cert", "katello-token"]
    );

    // The first decisive answer wins: a host certificate is never overridden by a
    // token, even one that would see more.
    let client = env.client();
    let alice = token(&client, "alice", "alice-pw", ALICE_REPO).await;
    let host = env.client_as(&env.host_cert(HOST));
    let r = host
        .get(&manifest_path(&env, ALICE_REPO))
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(common::error_code(&r.body), "NAME_UNKNOWN");
    let r = client
        .get(&manifest_path(&env, ALICE_REPO))
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[actix_web::test]
async fn podman_login_and_pull() {
    let env = builder().start();
    let client = env.client();
    let public_url = env.gateway.config().server.public_url.clone();

    // podman login: /v2/ without credentials, then the realm it names.
    let r = client.get("/v2/").send().await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let challenge = r
        .header("www-authenticate")
        .expect("a challenge")
        .to_owned();
    assert_eq!(challenge, common::expected_challenge(&public_url, None));
    let realm = common::challenge_param(&challenge, "realm").expect("realm");
    let service = common::challenge_param(&challenge, "service").expect("service");
    let scope = format!("repository:{ALICE_REPO}:pull");
    let r = client
        .get(&format!(
            "{realm}?account=alice&scope={}&service={}",
            enc(&scope),
            enc(&service)
        ))
        .basic("alice", "alice-pw")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let body = r.json();
    let alice = body["token"].as_str().expect("a token").to_owned();
    assert_eq!(body["expires_in"], 3600);
    assert!(body["issued_at"].is_string());
    let to_central = env
        .central
        .requests_of(CentralRoute::Token)
        .pop()
        .expect("relayed to central");
    assert_eq!(to_central.query_param("account").as_deref(), Some("alice"));
    assert_eq!(
        to_central.query_param("scope").as_deref(),
        Some(scope.as_str())
    );
    assert_eq!(
        to_central.query_param("service"),
        None,
        "only account and scope, as the Ruby gateway"
    );
    assert!(
        to_central
            .authorization()
            .is_some_and(|a| a.starts_with("Basic "))
    );
    assert_eq!(
        env.central.catalog_calls_for_user("alice"),
        1,
        "her repositories were fetched"
    );

    // podman pull with the token.
    let r = client.get("/v2/").bearer(&alice).send().await;
    assert_eq!((r.status, r.text()), (200, "{}".to_owned()));
    let path = manifest_path(&env, ALICE_REPO);
    let r = client.head(&path).bearer(&alice).send().await;
    assert_eq!(r.status, 200);
    let r = client.get(&path).bearer(&alice).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        Some(common_digest(&r.body).as_str()),
        path.rsplit('/').next()
    );
    let r = client.get("/v2/_catalog").bearer(&alice).send().await;
    assert_eq!(common::catalog_names(&r.body), vec![ALICE_REPO, PUBLIC]);

    // Bob logs in too; neither sees the other's repository.
    let bob = token(&client, "bob", "bob-pw", BOB_REPO).await;
    assert_ne!(bob, alice);
    for (who, t, other) in [("alice", &alice, BOB_REPO), ("bob", &bob, ALICE_REPO)] {
        let r = client
            .get(&manifest_path(&env, other))
            .bearer(t)
            .send()
            .await;
        assert_eq!(r.status, 404, "{who} reading {other}: {}", r.text());
        assert_eq!(common::error_code(&r.body), "NAME_UNKNOWN");
        let r = client
            .get(&format!("/v2/{other}/tags/list"))
            .bearer(t)
            .send()
            .await;
        assert_eq!(r.status, 404, "{who}");
    }
    let r = client
        .get(&manifest_path(&env, BOB_REPO))
        .bearer(&bob)
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(common::stored_users(&env.gateway), vec!["alice", "bob"]);
    assert_eq!(
        env.pulp
            .requests()
            .iter()
            .filter(|r| r.authorization().is_some())
            .count(),
        0
    );
}

fn common_digest(body: &[u8]) -> String {
    gateway_tests::fake_pulp::sha256_digest(body)
}

#[actix_web::test]
async fn flatpak_authenticator_flow_without_account() {
    let env = builder().start();
    let public_url = env.gateway.config().server.public_url.clone();
    let client = TestClient::builder(&env.gateway.url())
        .ca_pem(&env.ca_pem())
        .user_agent("Flatpak 1.16.1")
        .http2(true)
        .build();
    let accept = "application/vnd.oci.image.manifest.v1+json";

    // A public repository needs no token: the anonymous HEAD succeeds.
    let r = client
        .head(&manifest_path(&env, PUBLIC))
        .header("Accept", accept)
        .send()
        .await;
    assert_eq!(r.status, 200);

    // A private one: 401 with a Bearer challenge naming it.
    let path = manifest_path(&env, ALICE_REPO);
    let r = client.head(&path).header("Accept", accept).send().await;
    assert_eq!(r.status, 401);
    let challenge = r
        .header("www-authenticate")
        .expect("a challenge")
        .to_owned();
    assert_eq!(
        challenge,
        common::expected_challenge(&public_url, Some(ALICE_REPO))
    );
    let realm = common::challenge_param(&challenge, "realm").expect("realm");
    let service = common::challenge_param(&challenge, "service").expect("service");
    let scope = common::challenge_param(&challenge, "scope").expect("scope");

    // The token request as flatpak sends it: service and scope, Basic, no account.
    let r = client
        .get(&format!(
            "{realm}?service={}&scope={}",
            enc(&service),
            enc(&scope)
        ))
        .basic("alice", "alice-pw")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["token"].as_str().expect("a token").to_owned();
    let to_central = env
        .central
        .requests_of(CentralRoute::Token)
        .pop()
        .expect("relayed");
    assert_eq!(
        to_central.query_param("account").as_deref(),
        Some("alice"),
        "derived from Basic"
    );

    let r = client
        .get(&path)
        .header("Accept", accept)
        .bearer(&token)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        Some(common_digest(&r.body).as_str()),
        path.rsplit('/').next()
    );
    assert_eq!(r.version, "HTTP/2.0");
    assert_eq!(common::stored_users(&env.gateway), vec!["alice"]);
}

#[actix_web::test]
async fn expired_tokens_are_refused() {
    let env = builder().central(|c| c.expires_in(2)).start();
    let client = env.client();
    let public_url = env.gateway.config().server.public_url.clone();
    let path = manifest_path(&env, ALICE_REPO);

    // Already expired when issued: handed out, not stored, refused on use.
    env.central
        .set_issued_at(IssuedAt::Ago(Duration::from_secs(3600)));
    let stale = token(&client, "alice", "alice-pw", ALICE_REPO).await;
    assert!(common::stored_users(&env.gateway).is_empty());
    let r = client.get(&path).bearer(&stale).send().await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(common::error_code(&r.body), "UNAUTHORIZED");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.starts_with(&format!("Bearer realm=\"{public_url}/v2/token\"")))
    );

    // Valid for two seconds: works, then does not.
    env.central.set_issued_at(IssuedAt::Now);
    let fresh = token(&client, "alice", "alice-pw", ALICE_REPO).await;
    assert_ne!(fresh, stale);
    let r = client.get(&path).bearer(&fresh).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(common::stored_users(&env.gateway), vec!["alice"]);
    actix_web::rt::time::sleep(Duration::from_millis(2100)).await;
    let r = client.get(&path).bearer(&fresh).send().await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = client.get("/v2/").bearer(&fresh).send().await;
    assert_eq!(r.status, 401);
    assert!(common::stored_users(&env.gateway).is_empty());

    // Without issued_at, the Date header starts the clock.
    env.central.set_expires_in(3600);
    env.central.set_issued_at(IssuedAt::Omit);
    let dated = token(&client, "alice", "alice-pw", ALICE_REPO).await;
    let r = client.get(&path).bearer(&dated).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[actix_web::test]
async fn central_refusals_and_garbage_on_the_token_route() {
    let env = builder().start();
    let client = env.client();
    let scope = enc(&format!("repository:{ALICE_REPO}:pull"));
    let token_path = format!("/v2/token?account=alice&scope={scope}");

    // Wrong password: central's 401 and message, in registry format.
    let r = client.get(&token_path).basic("alice", "wrong").send().await;
    assert_eq!(r.status, 401);
    let expected = serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": "Unable to authenticate user alice"}]});
    assert_eq!(r.json(), expected);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    // Central answers 200 with garbage, or with an unusable issued_at: 502, nothing stored.
    env.central
        .fail_times(Some(CentralRoute::Token), Fault::Garbage, 1);
    let r = client
        .get(&token_path)
        .basic("alice", "alice-pw")
        .send()
        .await;
    common::assert_error(
        "garbage",
        r.status,
        r.header("content-type"),
        &r.body,
        502,
        "UPSTREAM_ERROR",
    );
    env.central.set_issued_at(IssuedAt::Raw("yesterday".into()));
    let r = client
        .get(&token_path)
        .basic("alice", "alice-pw")
        .send()
        .await;
    common::assert_error(
        "bad issued_at",
        r.status,
        r.header("content-type"),
        &r.body,
        502,
        "UPSTREAM_ERROR",
    );
    env.central.set_issued_at(IssuedAt::Now);
    assert!(common::stored_users(&env.gateway).is_empty());
    assert_eq!(
        env.central.catalog_calls_for_user("alice"),
        0,
        "no refresh without a token"
    );

    // A refusal from central's frontend (HTML): the status, in registry format,
    // and nothing of the page.
    env.central.fail_times(
        Some(CentralRoute::Token),
        Fault::Respond {
            status: 403,
            content_type: "text/html".into(),
            body: "<html><body>Forbidden by mod_security</body></html>".into(),
        },
        1,
    );
    let r = client
        .get(&token_path)
        .basic("alice", "alice-pw")
        .send()
        .await;
    common::assert_error(
        "html refusal",
        r.status,
        r.header("content-type"),
        &r.body,
        403,
        "DENIED",
    );
    assert!(!r.text().contains("mod_security"), "{}", r.text());

    // Central failing or away: 502/503 in registry format, never 500.
    env.central
        .fail_times(Some(CentralRoute::Token), Fault::Status(500), 1);
    let r = client
        .get(&token_path)
        .basic("alice", "alice-pw")
        .send()
        .await;
    assert_eq!(r.status, 502, "{}", r.text());

    // `unauthenticated` is handed out but never stored, even with an account.
    let public_scope = enc(&format!("repository:{PUBLIC}:pull"));
    for request in [
        client
            .get(&format!("/v2/token?account=alice&scope={public_scope}"))
            .basic("alice", "alice-pw"),
        client.get("/v2/token"),
    ] {
        let r = request.send().await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["token"], "unauthenticated");
        assert_eq!(r.json()["expires_in"], 180);
    }
    assert!(common::stored_users(&env.gateway).is_empty());
    // Both legacy literals are anonymous everywhere (the Ruby gateway let
    // `unauthorized` through `/v2/`).
    for literal in ["unauthenticated", "unauthorized"] {
        let r = client.get("/v2/").bearer(literal).send().await;
        assert_eq!(r.status, 401, "{literal}");
        let r = client.get("/v2/_catalog").bearer(literal).send().await;
        assert_eq!(common::catalog_names(&r.body), vec![PUBLIC], "{literal}");
    }
    let r = client
        .get(&manifest_path(&env, PUBLIC))
        .bearer("unauthenticated")
        .send()
        .await;
    assert_eq!(r.status, 200, "the literal token is anonymous");
    let r = client
        .get(&manifest_path(&env, ALICE_REPO))
        .bearer("unauthenticated")
        .send()
        .await;
    assert_eq!(r.status, 401);

    // A good answer is stored, so the checks above could have failed. When
    // central cannot say which repositories she may see right then, the token
    // still comes back and works, with what was known before (nothing yet).
    env.central
        .fail_times(Some(CentralRoute::Catalog), Fault::Status(500), 1);
    let alice = token(&client, "alice", "alice-pw", ALICE_REPO).await;
    assert_eq!(common::stored_users(&env.gateway), vec!["alice"]);
    let path = manifest_path(&env, ALICE_REPO);
    let r = client.get(&path).bearer(&alice).send().await;
    assert_eq!(r.status, 404, "{}", r.text());
    let again = token(&client, "alice", "alice-pw", ALICE_REPO).await;
    assert_eq!(
        again, alice,
        "Katello hands out the same token while it is valid"
    );
    let r = client.get(&path).bearer(&alice).send().await;
    assert_eq!(
        r.status, 200,
        "the next token request refreshed her repositories"
    );
}

#[actix_web::test]
async fn a_token_belongs_to_whoever_authenticated_not_to_the_account_named() {
    let env = builder().start();
    let client = env.client();
    let bob = token(&client, "bob", "bob-pw", BOB_REPO).await;

    // Alice names bob as the account, with her own credentials: central issues
    // her token; it must neither become bob's nor change what bob sees.
    let r = client
        .get(&format!(
            "/v2/token?account=bob&scope={}",
            enc(&format!("repository:{ALICE_REPO}:pull"))
        ))
        .basic("alice", "alice-pw")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let alice = r.json()["token"].as_str().expect("a token").to_owned();
    assert_eq!(
        env.central
            .tokens()
            .iter()
            .find(|(t, _)| *t == alice)
            .map(|(_, l)| l.as_str()),
        Some("alice"),
        "central issued it to alice"
    );

    let r = client
        .get(&manifest_path(&env, BOB_REPO))
        .bearer(&bob)
        .send()
        .await;
    assert_eq!(r.status, 200, "bob keeps his repository: {}", r.text());
    let r = client
        .get(&manifest_path(&env, ALICE_REPO))
        .bearer(&bob)
        .send()
        .await;
    assert_eq!(r.status, 404, "bob does not get alice's");
    let r = client
        .get(&manifest_path(&env, ALICE_REPO))
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(r.status, 200, "alice's token is hers: {}", r.text());
    let r = client
        .get(&manifest_path(&env, BOB_REPO))
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(common::stored_users(&env.gateway), vec!["alice", "bob"]);
}

#[actix_web::test]
async fn an_issued_token_survives_a_restart_without_asking_central() {
    let mut env = builder().start();
    let alice = token(&env.client(), "alice", "alice-pw", ALICE_REPO).await;
    let path = manifest_path(&env, ALICE_REPO);

    env.gateway.restart();
    env.central.reset();
    let client = env.client();
    let r = client.get(&path).bearer(&alice).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = client.get("/v2/_catalog").bearer(&alice).send().await;
    assert_eq!(common::catalog_names(&r.body), vec![ALICE_REPO, PUBLIC]);
    let r = client
        .get(&manifest_path(&env, BOB_REPO))
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(env.central.total(), 0, "{:?}", env.central.requests());
    assert_eq!(common::stored_users(&env.gateway), vec!["alice"]);
}

#[actix_web::test]
async fn tokens_the_gateway_never_issued_are_validated_by_central_once() {
    let env = builder().start();
    let client = env.client();
    let alice_path = manifest_path(&env, ALICE_REPO);

    let r = client.get("/v2/").bearer(ALICE_PAT).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    for _ in 0..3 {
        let r = client.get(&alice_path).bearer(ALICE_PAT).send().await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = client.head(&alice_path).bearer(ALICE_PAT).send().await;
        assert_eq!(r.status, 200);
    }
    let r = client.get("/v2/_catalog").bearer(ALICE_PAT).send().await;
    assert_eq!(common::catalog_names(&r.body), vec![ALICE_REPO, PUBLIC]);
    let r = client
        .get(&manifest_path(&env, BOB_REPO))
        .bearer(ALICE_PAT)
        .send()
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        env.central
            .catalog_calls_for_authorization(&format!("Bearer {ALICE_PAT}")),
        1
    );
    assert_eq!(env.central.token_calls(), 0);

    // A token central does not know: 401 with the challenge, and the refusal is remembered.
    for _ in 0..2 {
        let r = client.get(&alice_path).bearer("made-up-token").send().await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(common::error_code(&r.body), "UNAUTHORIZED");
        assert!(r.header("www-authenticate").is_some());
        let r = client
            .get(&manifest_path(&env, PUBLIC))
            .bearer("made-up-token")
            .send()
            .await;
        assert_eq!(r.status, 401, "a bad token is not anonymous");
    }
    assert_eq!(
        env.central
            .catalog_calls_for_authorization("Bearer made-up-token"),
        1
    );
    assert!(
        common::stored_users(&env.gateway).is_empty(),
        "validated tokens are not issued ones"
    );
}

#[actix_web::test]
async fn v1_ping_and_search() {
    let env = builder().start();
    let client = env.client();

    let r = client.get("/v1/_ping").send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({}));
    assert_eq!(
        env.pulp.count(PathKind::Ping),
        1,
        "Pulp's liveness was checked"
    );

    // podman's search sends the v2 header first and falls back to _catalog on 404.
    let r = client
        .get("/v1/search?q=app")
        .header("Docker-Distribution-API-Version", "registry/2.0")
        .basic("alice", "alice-pw")
        .send()
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(env.central.total(), 0);

    let names = |r: &gateway_tests::client::TestResponse| -> Vec<String> {
        r.json()["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|h| {
                assert_eq!(h["description"], "");
                h["name"].as_str().expect("a name").to_owned()
            })
            .collect()
    };
    let r = client.get("/v1/search?q=app").send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(names(&r), vec![PUBLIC]);
    assert_eq!(r.json()["query"], "app");
    assert_eq!(r.json()["num_results"], 1);

    let r = client
        .get("/v1/search?q=app")
        .basic("alice", "alice-pw")
        .send()
        .await;
    assert_eq!(names(&r), vec![ALICE_REPO, PUBLIC]);
    let r = client
        .get("/v1/search?q=ALICE")
        .basic("alice", "alice-pw")
        .send()
        .await;
    assert_eq!(names(&r), vec![ALICE_REPO]);
    let r = client
        .get("/v1/search?q=app&n=1")
        .basic("alice", "alice-pw")
        .send()
        .await;
    assert_eq!(names(&r), vec![ALICE_REPO]);
    assert_eq!(
        r.json()["num_results"],
        1,
        "the length of the page, as the Ruby gateway"
    );
    let r = client
        .get("/v1/search")
        .basic("alice", "alice-pw")
        .send()
        .await;
    assert_eq!(
        names(&r),
        vec![ALICE_REPO, PUBLIC],
        "no q: everything visible"
    );

    let r = client
        .get("/v1/search?q=app")
        .basic("alice", "wrong")
        .send()
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = client
        .get("/v1/search?q=app")
        .header("Authorization", "Basic Og==")
        .send()
        .await;
    assert_eq!(names(&r), vec![PUBLIC], "empty credentials are anonymous");

    let alice = token(&client, "alice", "alice-pw", ALICE_REPO).await;
    let r = client.get("/v1/search?q=org").bearer(&alice).send().await;
    assert_eq!(names(&r), vec![ALICE_REPO, PUBLIC]);
    let r = env
        .client_as(&env.host_cert(HOST))
        .get("/v1/search?q=org")
        .send()
        .await;
    assert_eq!(names(&r), vec![PUBLIC]);

    // A page holds 25 results unless `n` says otherwise.
    let many: Vec<String> = (0..30).map(|i| format!("org/bulk/r{i:02}")).collect();
    let list: Vec<(&str, bool)> = many.iter().map(|n| (n.as_str(), false)).collect();
    env.gateway.push_repository_list(&list);
    let r = client.get("/v1/search?q=bulk").send().await;
    assert_eq!(names(&r), many[..25].to_vec());
    assert_eq!(r.json()["num_results"], 25);
    let r = client.get("/v1/search?q=bulk&n=30").send().await;
    assert_eq!(names(&r).len(), 30);
}
