//! Bearer tokens are confirmed with central again after
//! `cache.token_revalidate_secs`: a token central revoked stops working on
//! every instance within that window and is forgotten; while central cannot
//! be reached a token is honoured for `cache.stale_if_error_secs` after its
//! last confirmation, then refused (503); concurrent requests share one call.
//!
//! Waits below only let a window pass; nothing asserts how long anything took.

use std::time::Duration;

use gateway_tests::client::{TestClient, TestResponse};
use gateway_tests::fake_pulp::{FakeRepo, Image};
use gateway_tests::harness::{GatewayBuilder, TestEnv, TestEnvBuilder};
use sha2::{Digest, Sha256};

const PUBLIC: &str = "org/public/app";
const ALICE_REPO: &str = "org/alice/app";
const ALICE_PAT: &str = "pat-alice-revalidated-0123456789";
const REPOS: [(&str, bool); 2] = [(PUBLIC, false), (ALICE_REPO, true)];
const MANIFEST: &str = "/v2/org/alice/app/manifests/latest";

/// A second past a one-second window, with room for a slow machine.
const PAST_WINDOW: Duration = Duration::from_millis(1300);

fn builder() -> TestEnvBuilder {
    TestEnv::builder()
        .pulp(|p| {
            p.repo(FakeRepo::new(PUBLIC).image("latest", Image::new()))
                .repo(FakeRepo::new(ALICE_REPO).image("latest", Image::new()))
        })
        .central(|c| {
            c.public(&[PUBLIC])
                .user("alice", "alice-pw", &[ALICE_REPO])
                .personal_token(ALICE_PAT, "alice")
        })
        .repositories(&REPOS)
}

async fn issue_token(client: &TestClient) -> String {
    let r = client
        .get("/v2/token?account=alice&scope=repository:org/alice/app:pull&service=gw")
        .basic("alice", "alice-pw")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["token"].as_str().expect("a token").to_owned()
}

async fn pull(client: &TestClient, token: &str) -> TestResponse {
    client.get(MANIFEST).bearer(token).send().await
}

fn assert_bearer_401(r: &TestResponse, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm="),
        "{what}: {challenge}"
    );
    assert_eq!(
        r.json()["errors"][0]["code"],
        "UNAUTHORIZED",
        "{what}: {}",
        r.text()
    );
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[actix_web::test]
async fn a_stored_token_revoked_at_central_is_refused_after_the_window_and_forgotten() {
    let mut env = builder()
        .gateway(|g| g.set("cache.token_revalidate_secs", 1).negative_ttl(60))
        .start();
    let client = env.client();
    let token = issue_token(&client).await;
    let bearer = format!("Bearer {token}");
    let tokens_file = env.gateway.state_dir().join("tokens.json");
    let on_disk = |f: &std::path::Path| std::fs::read_to_string(f).unwrap_or_default();
    assert!(on_disk(&tokens_file).contains(&digest(&token)), "stored");

    // Past the window, the first use is confirmed with central, once.
    std::thread::sleep(PAST_WINDOW);
    let r = pull(&client, &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.central.catalog_calls_for_authorization(&bearer), 1);

    env.central.revoke_token(&token);
    std::thread::sleep(PAST_WINDOW);
    let r = pull(&client, &token).await;
    assert_bearer_401(&r, "revoked, after the window");
    assert_eq!(env.central.catalog_calls_for_authorization(&bearer), 2);
    assert!(
        env.gateway
            .shared()
            .state
            .tokens()
            .lookup(&digest(&token))
            .is_none()
    );
    assert!(
        !on_disk(&tokens_file).contains(&digest(&token)),
        "forgotten on disk too"
    );
    // The refusal is remembered for cache.negative_ttl_secs: no further call.
    for _ in 0..3 {
        assert_bearer_401(&pull(&client, &token).await, "again");
    }
    assert_eq!(env.central.catalog_calls_for_authorization(&bearer), 2);

    // A restart does not bring it back.
    env.gateway.restart();
    let client = env.client();
    assert_bearer_401(&pull(&client, &token).await, "after a restart");
    // Anonymous access to public content is unaffected.
    let r = client
        .get("/v2/org/public/app/manifests/latest")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[actix_web::test]
async fn within_the_window_a_token_is_not_asked_about() {
    // Production default: revalidation after cache.ttl_secs (300 s).
    let env = builder().start();
    assert_eq!(
        env.gateway.config().cache.token_revalidate,
        Duration::from_secs(300)
    );
    let client = env.client();
    let token = issue_token(&client).await;
    env.central.reset();
    for _ in 0..5 {
        assert_eq!(pull(&client, &token).await.status, 200);
        assert_eq!(pull(&client, ALICE_PAT).await.status, 200);
    }
    assert_eq!(
        env.central
            .catalog_calls_for_authorization(&format!("Bearer {token}")),
        0,
        "a stored token is its user's"
    );
    assert_eq!(
        env.central
            .catalog_calls_for_authorization(&format!("Bearer {ALICE_PAT}")),
        1,
        "a token this instance never issued is validated once, then cached"
    );
}

#[actix_web::test]
async fn central_down_keeps_tokens_within_the_stale_window_then_fails_closed() {
    // The window starts at each token's last confirmation: issue (stored)
    // or central's answer (personal token).
    let mut env = builder()
        .gateway(|g| {
            g.cache_ttl(1)
                .stale_if_error(4)
                .set("cache.token_revalidate_secs", 1)
                .negative_ttl(1)
        })
        .start();
    let client = env.client();
    let token = issue_token(&client).await;
    assert_eq!(pull(&client, ALICE_PAT).await.status, 200, "validated");
    env.central.stop();

    std::thread::sleep(PAST_WINDOW);
    for t in [token.as_str(), ALICE_PAT] {
        let r = pull(&client, t).await;
        assert_eq!(
            r.status,
            200,
            "central down, within the stale window: {}",
            r.text()
        );
    }

    std::thread::sleep(Duration::from_secs(4));
    for t in [token.as_str(), ALICE_PAT] {
        let r = pull(&client, t).await;
        assert_eq!(r.status, 503, "past the stale window: {}", r.text());
        assert_eq!(r.json()["errors"][0]["code"], "UNAVAILABLE", "{}", r.text());
        assert!(r.header("retry-after").is_some());
    }
    // Not forgotten: central never said no.
    assert!(
        env.gateway
            .shared()
            .state
            .tokens()
            .lookup(&digest(&token))
            .is_some()
    );

    env.central.restart();
    std::thread::sleep(PAST_WINDOW); // the failure memory (negative_ttl) lapses
    env.central.reset();
    for t in [token.as_str(), ALICE_PAT] {
        let r = pull(&client, t).await;
        assert_eq!(r.status, 200, "central back: {}", r.text());
        assert_eq!(
            env.central
                .catalog_calls_for_authorization(&format!("Bearer {t}")),
            1
        );
    }
}

#[actix_web::test]
async fn concurrent_requests_for_one_due_token_make_one_central_call() {
    let env = builder()
        .gateway(|g| g.set("cache.token_revalidate_secs", 1))
        .start();
    let token = issue_token(&env.client()).await;
    // Every request must find the call in flight: central answers slowly.
    env.central.set_delay(Duration::from_millis(500));
    const N: usize = 20;
    let clients: Vec<TestClient> = (0..N).map(|_| env.client()).collect();
    // Connections first, so the requests arrive together.
    for c in &clients {
        c.get("/v2/").send().await;
    }
    std::thread::sleep(PAST_WINDOW);
    env.central.reset();
    for t in [token.as_str(), ALICE_PAT] {
        let statuses = futures_util::future::join_all(clients.iter().map(|c| pull(c, t))).await;
        assert!(
            statuses.iter().all(|r| r.status == 200),
            "{:?}",
            statuses.iter().map(|r| r.status).collect::<Vec<_>>()
        );
        assert_eq!(
            env.central
                .catalog_calls_for_authorization(&format!("Bearer {t}")),
            1,
            "{N} concurrent requests, one call"
        );
    }
}

#[actix_web::test]
async fn a_token_revoked_at_central_stops_working_on_both_instances() {
    let env = builder()
        .gateway(|g| g.set("cache.token_revalidate_secs", 1).negative_ttl(60))
        .start();
    let second = GatewayBuilder::new(env.pki.clone())
        .pulp(&env.pulp)
        .central(&env.central)
        .set("cache.token_revalidate_secs", 1)
        .negative_ttl(60)
        .start();
    second.push_repository_list(&REPOS);
    let ca = env.pki.ca_pem();
    let clients = [
        TestClient::anonymous(&env.gateway.url(), &ca),
        TestClient::anonymous(&second.url(), &ca),
    ];
    // Issued through the first; the second never saw it.
    let token = issue_token(&clients[0]).await;
    let bearer = format!("Bearer {token}");
    std::thread::sleep(PAST_WINDOW);
    env.central.reset();
    for c in &clients {
        let r = pull(c, &token).await;
        assert_eq!(r.status, 200, "{}: {}", c.base_url(), r.text());
    }
    assert_eq!(
        env.central.catalog_calls_for_authorization(&bearer),
        2,
        "the first confirms its stored token, the second validates it"
    );

    env.central.revoke_token(&token);
    std::thread::sleep(PAST_WINDOW);
    for c in &clients {
        assert_bearer_401(&pull(c, &token).await, c.base_url());
    }
    assert_eq!(env.central.catalog_calls_for_authorization(&bearer), 4);
    for c in &clients {
        assert_bearer_401(&pull(c, &token).await, "still");
    }
    assert_eq!(
        env.central.catalog_calls_for_authorization(&bearer),
        4,
        "a refusal is remembered"
    );
    // The user gets a new token at central and carries on through either.
    let fresh = issue_token(&clients[1]).await;
    assert_ne!(fresh, token);
    for c in &clients {
        assert_eq!(pull(c, &fresh).await.status, 200);
    }
}
