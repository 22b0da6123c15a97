//! The admin listener of an in-process gateway: `/readyz` follows the state
//! and Pulp, `/metrics` follows the requests. (The binary's readiness, reload
//! and stop are in `gateway/tests/lifecycle.rs`.)
//!
//! The metrics recorder is global to this test binary, so the metric checks
//! compare before and after, on series that no other test here moves.

use std::convert::Infallible;

use gateway_tests::fake_pulp::{FakeRepo, Image};
use gateway_tests::harness::{Gateway, GatewayBuilder, TestEnv};

const HOST: &str = "5b0f7e9a-3c1d-4e2f-8a6b-9c0d1e2f3a4b";

async fn admin_get(gateway: &Gateway, path: &str) -> (u16, String) {
    let url = format!(
        "{}{path}",
        gateway.admin_url().expect("the admin listener is on")
    );
    let mut resp = awc::Client::default()
        .get(url)
        .send()
        .await
        .expect("the admin listener answers");
    let body = resp.body().await.expect("a body");
    (
        resp.status().as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn readiness(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("/readyz body is not JSON ({e}): {body}"))
}

/// Katello's first push, as far as readiness is concerned.
fn push_state(gateway: &Gateway) {
    let stored = gateway
        .shared()
        .state
        .replace(|old| Ok::<_, Infallible>(old.clone()));
    assert!(stored.is_ok(), "the state store takes a push");
}

/// The value of one series (`name{labels}`) in a `/metrics` body, 0 when absent.
fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

#[actix_web::test]
async fn readyz_waits_for_the_first_state_and_then_is_ready() {
    let env = TestEnv::builder()
        .pulp(|p| p.repo(FakeRepo::new("org/app").image("latest", Image::new())))
        .gateway(|g| g.admin_listener(true))
        .start();
    assert_eq!(admin_get(&env.gateway, "/healthz").await.0, 200);

    let (status, body) = admin_get(&env.gateway, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        readiness(&body),
        serde_json::json!({"ready": false, "state_loaded": false, "pulp_answered": true}),
        "Pulp answered the probe; no state yet"
    );

    push_state(&env.gateway);
    let (status, body) = admin_get(&env.gateway, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(readiness(&body)["ready"], true);
}

#[actix_web::test]
async fn readyz_is_503_while_pulp_has_never_answered() {
    // Without .pulp(), the harness points Pulp at a port nobody listens on.
    let gateway = GatewayBuilder::default().admin_listener(true).start();
    push_state(&gateway);
    let (status, body) = admin_get(&gateway, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        readiness(&body),
        serde_json::json!({"ready": false, "state_loaded": true, "pulp_answered": false})
    );
    assert_eq!(
        admin_get(&gateway, "/healthz").await.0,
        200,
        "alive, though not ready"
    );
}

#[actix_web::test]
async fn metrics_follow_a_known_sequence_of_requests() {
    let env = TestEnv::builder()
        .central(|c| c.public(&[]).host(HOST, &["org/app"]))
        .gateway(|g| g.admin_listener(true).cache_ttl(300))
        .start();
    let (_, before) = admin_get(&env.gateway, "/metrics").await;

    let host = env.client_as(&env.host_cert(HOST));
    for _ in 0..2 {
        let r = host.get("/v2/_catalog").send().await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = env.client().get("/v2/").send().await;
    assert_eq!(r.status, 401, "{}", r.text());

    let (status, after) = admin_get(&env.gateway, "/metrics").await;
    assert_eq!(status, 200);
    let moved = |series: &str| metric(&after, series) - metric(&before, series);
    assert_eq!(
        moved(r#"gateway_requests_total{route="/v2/_catalog",status="200"}"#),
        2.0,
        "{after}"
    );
    assert_eq!(
        moved(r#"gateway_requests_total{route="/v2/",status="401"}"#),
        1.0,
        "{after}"
    );
    // The first lookup asks central, the second is served from the cache.
    assert_eq!(
        moved(r#"gateway_entitlement_lookups_total{result="miss"}"#),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved(r#"gateway_entitlement_lookups_total{result="hit"}"#),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved(r#"gateway_upstream_duration_seconds_count{upstream="central"}"#),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(&after, "gateway_entitlement_cached_identities"),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(&after, "gateway_entitlement_coalesced_waits_total"),
        0.0,
        "{after}"
    );
}
