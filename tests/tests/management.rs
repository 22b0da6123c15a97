//! The management routes over real TLS, as Katello's smart proxy sync calls
//! them: who may call them, what they change, and what survives a restart.

use std::sync::Arc;
use std::time::Duration;

use container_gateway::state::Snapshot;
use gateway_tests::client::Curl;
use gateway_tests::harness::{TestEnv, katello_form};
use gateway_tests::pki::{Issued, MANAGEMENT_CN};

const H1: &str = "8d1f2b3c-1111-4a5b-9c6d-0e1f2a3b4c5d";
const H2: &str = "8d1f2b3c-2222-4a5b-9c6d-0e1f2a3b4c5d";
const H3: &str = "8d1f2b3c-3333-4a5b-9c6d-0e1f2a3b4c5d";
const PUBLIC: &str = "org/public/app";
const PRIVATE: &str = "org/private/app";
const OTHER: &str = "org/private/other";

/// Central knows the repositories but none of the hosts: whatever a host
/// sees beyond the public ones came from a push.
fn env() -> TestEnv {
    TestEnv::builder()
        .central(|c| c.public(&[PUBLIC]))
        .gateway(|g| g.plain_listener(true))
        .start()
}

fn snapshot(env: &TestEnv) -> Arc<Snapshot> {
    env.gateway.shared().state.snapshot()
}

fn curl_for(env: &TestEnv, cert: Option<&Issued>) -> Curl {
    match cert {
        Some(c) => env.curl_as(c),
        None => env.curl(),
    }
}

fn catalog(env: &TestEnv, uuid: &str) -> (u16, Vec<String>) {
    let r = env.curl_as(&env.host_cert(uuid)).get("/v2/_catalog");
    if r.status != 200 {
        return (r.status, Vec::new());
    }
    let names = r.json()["repositories"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (r.status, names)
}

fn sync(env: &TestEnv) {
    env.gateway
        .push_repository_list(&[(PUBLIC, false), (PRIVATE, true), (OTHER, true)]);
    env.gateway.push_hosts(&[H1, H2, H3]);
    env.gateway
        .push_host_mapping(&[(H1, &[PRIVATE]), (H2, &[PRIVATE, OTHER]), (H3, &[])]);
}

#[test]
fn allowed_cn_pushes_change_what_hosts_see() {
    let env = env();
    let before = snapshot(&env);
    assert!(before.repositories.is_empty());

    // Exactly what rest-client sends: raw brackets, a bare key for "none".
    let r = env
        .gateway
        .katello_curl()
        .body(
            "application/x-www-form-urlencoded",
            "repositories[][repository]=org%2Fpublic%2Fapp&repositories[][auth_required]=false\
             &repositories[][repository]=org%2Fprivate%2Fapp&repositories[][auth_required]=true\
             &repositories[][repository]=org%2Fprivate%2Fother&repositories[][auth_required]=true",
        )
        .put("/container_gateway/repository_list");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.body.is_empty(),
        "Katello expects an empty body: {}",
        r.text()
    );

    let r = env
        .gateway
        .katello_curl()
        .body(
            "application/x-www-form-urlencoded",
            format!("hosts[][uuid]={H1}&hosts[][uuid]&hosts[][uuid]=&hosts[][uuid]={H3}"),
        )
        .put("/update_hosts/");
    assert_eq!(r.status, 200, "{}", r.text());

    let r = env
        .gateway
        .katello_curl()
        .body(
            "application/x-www-form-urlencoded",
            format!(
                "hosts[][{H1}][][repository]=org%2Fprivate%2Fapp&hosts[][{H1}][][auth_required]=true&hosts[][{H3}]"
            ),
        )
        .put("/container_gateway/host_repository_mapping/");
    assert_eq!(r.status, 200, "{}", r.text());

    let after = snapshot(&env);
    assert!(after.generation > before.generation);
    assert_eq!(after.repositories.len(), 3);
    assert_eq!(after.hosts.len(), 2);
    assert_eq!(
        catalog(&env, H1),
        (200, vec![PRIVATE.to_owned(), PUBLIC.to_owned()])
    );
    assert_eq!(catalog(&env, H3), (200, vec![PUBLIC.to_owned()]));
    assert_eq!(
        env.central.catalog_calls_for_host(H1),
        0,
        "the push answered"
    );
}

#[test]
fn every_route_answers_at_both_mount_points() {
    let env = env();
    sync(&env);
    let cases = [
        (
            "repository_list",
            katello_form::repository_list(&[(PUBLIC, false), (PRIVATE, true)]),
        ),
        ("update_hosts", katello_form::hosts(&[H1, H2])),
        (
            "host_repository_mapping",
            katello_form::mapping("hosts", &[(H1, &[PRIVATE])]),
        ),
        (
            "update_host_repositories",
            katello_form::mapping("hosts", &[(H2, &[PRIVATE])]),
        ),
        (
            "user_repository_mapping",
            katello_form::mapping("users", &[("admin", &[PRIVATE]), ("viewer", &[])]),
        ),
    ];
    for prefix in ["", "/container_gateway"] {
        for slash in ["", "/"] {
            for (route, body) in &cases {
                let path = format!("{prefix}/{route}{slash}");
                let r = env
                    .gateway
                    .katello_curl()
                    .body("application/x-www-form-urlencoded", body.clone())
                    .put(&path);
                assert_eq!(r.status, 200, "PUT {path}: {}", r.text());
            }
            let path = format!("{prefix}/users{slash}");
            let r = env.gateway.katello_curl().get(&path);
            assert_eq!(r.status, 200, "GET {path}: {}", r.text());
            assert_eq!(r.json(), serde_json::json!({"users": []}));
        }
    }
    let s = snapshot(&env);
    assert!(
        s.user_mapping("viewer")
            .is_some_and(|m| m.repositories.is_empty())
    );
    assert_eq!(
        catalog(&env, H2).1,
        vec![PRIVATE.to_owned(), PUBLIC.to_owned()]
    );
}

#[test]
fn a_cn_not_in_the_allow_list_is_403_and_changes_nothing() {
    let env = env();
    sync(&env);
    let before = snapshot(&env);
    let intruder = env.pki.management_cert("intruder.example.com");
    let host = env.host_cert(H1);
    let body = katello_form::repository_list(&[]);
    for (who, cert) in [
        ("intruder", Some(&intruder)),
        ("a host", Some(&host)),
        ("no certificate", None),
    ] {
        for path in ["/container_gateway/repository_list", "/repository_list"] {
            let r = curl_for(&env, cert)
                .body("application/x-www-form-urlencoded", body.clone())
                .put(path);
            assert_eq!(r.status, 403, "{who} {path}: {}", r.text());
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.json()["errors"][0]["code"], "DENIED", "{who}");
        }
        let r = curl_for(&env, cert).get("/container_gateway/users");
        assert_eq!(r.status, 403, "{who} GET users");
    }
    let after = snapshot(&env);
    assert!(Arc::ptr_eq(&before, &after), "state unchanged");
    assert_eq!(
        catalog(&env, H1).1,
        vec![PRIVATE.to_owned(), PUBLIC.to_owned()]
    );
}

#[test]
fn the_allowed_cn_from_another_ca_is_not_accepted() {
    let env = env();
    sync(&env);
    let before = snapshot(&env);
    let forged = env.pki.host_cert_from_other_ca(MANAGEMENT_CN);
    let r = env
        .curl_as(&forged)
        .body("application/x-www-form-urlencoded", "repositories")
        .try_run("PUT", "/container_gateway/repository_list");
    if let Ok(r) = r {
        assert!(
            r.status == 403 || r.status == 401,
            "{}: {}",
            r.status,
            r.text()
        );
    }
    assert!(Arc::ptr_eq(&before, &snapshot(&env)));
}

#[test]
fn a_forwarded_certificate_never_authorises_a_management_call() {
    let env = env();
    sync(&env);
    let before = snapshot(&env);
    let katello = env.pki.management_cert(MANAGEMENT_CN);
    let forwarded = katello.forwarded_header_value();
    let plain = env.gateway.plain_url().expect("a plain listener");
    for header in ["X-RHSM-SSL-Client-Cert", "SSL_CLIENT_CERT"] {
        // From a trusted frontend (loopback) over the plain listener...
        let r = Curl::new(&plain)
            .header(header, &forwarded)
            .body("application/x-www-form-urlencoded", "repositories")
            .put("/container_gateway/repository_list");
        assert_eq!(
            r.status,
            403,
            "{header} via the frontend listener: {}",
            r.text()
        );
        // ...and over TLS without a certificate of its own.
        let r = env
            .curl()
            .header(header, &forwarded)
            .body("application/x-www-form-urlencoded", "repositories")
            .put("/container_gateway/repository_list");
        assert_eq!(r.status, 403, "{header} over TLS: {}", r.text());
    }
    assert!(Arc::ptr_eq(&before, &snapshot(&env)));
    assert_eq!(snapshot(&env).repositories.len(), 3);
}

#[test]
fn bad_bodies_are_400_in_registry_format_and_change_nothing() {
    let env = env();
    sync(&env);
    let before = snapshot(&env);
    let cases: [(&str, &str, &str, &str); 6] = [
        (
            "repository_list",
            "application/x-www-form-urlencoded",
            "",
            "missing `repositories`",
        ),
        (
            "repository_list",
            "application/x-www-form-urlencoded",
            "repositories=a&repositories[][repository]=b",
            "expected Array",
        ),
        (
            "update_hosts",
            "application/json",
            "{\"hosts\":",
            "invalid JSON",
        ),
        (
            "host_repository_mapping",
            "application/x-www-form-urlencoded",
            "hosts[][h1][][auth_required]=true",
            "has no `repository`",
        ),
        (
            "update_host_repositories",
            "application/x-www-form-urlencoded",
            "hosts",
            "`hosts` is required",
        ),
        (
            "user_repository_mapping",
            "application/json",
            "[]",
            "must be an object",
        ),
    ];
    for (route, ct, body, expected) in cases {
        let r = env
            .gateway
            .katello_curl()
            .body(ct, body)
            .put(&format!("/container_gateway/{route}"));
        assert_eq!(r.status, 400, "{route} {body:?}: {}", r.text());
        let v = r.json();
        assert_eq!(v["errors"][0]["code"], "BAD_REQUEST");
        let message = v["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(expected), "{route}: {message}");
    }
    let r = env
        .gateway
        .katello_curl()
        .body("text/plain", "repositories")
        .put("/container_gateway/repository_list");
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(Arc::ptr_eq(&before, &snapshot(&env)));
}

/// Every file under the state directory with a digest of its bytes.
fn state_on_disk(env: &TestEnv) -> Vec<(String, String)> {
    use sha2::{Digest, Sha256};
    let dir = env.gateway.state_dir();
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            (
                entry.file_name().to_string_lossy().into_owned(),
                hex::encode(Sha256::digest(&bytes)),
            )
        })
        .collect();
    files.sort();
    files
}

/// Each body is answered 400 in registry format with a message naming the
/// problem, and neither the served state nor a byte on disk changes.
#[track_caller]
fn refused_unchanged(env: &TestEnv, cases: &[(&str, &str, &str, &str)]) {
    let before = snapshot(env);
    let disk = state_on_disk(env);
    assert!(!disk.is_empty(), "a sync leaves state on disk");
    let seen_before = (catalog(env, H1), catalog(env, H2));
    for &(route, content_type, body, expected) in cases {
        let r = env
            .gateway
            .katello_curl()
            .body(content_type, body)
            .put(&format!("/container_gateway/{route}"));
        assert_eq!(r.status, 400, "{route} {body:?}: {}", r.text());
        let v = r.json();
        assert_eq!(v["errors"][0]["code"], "BAD_REQUEST", "{route} {body:?}");
        let message = v["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{route} {body:?}: {message}");
        assert!(
            Arc::ptr_eq(&before, &snapshot(env)),
            "{route} {body:?} changed the state"
        );
        assert_eq!(state_on_disk(env), disk, "{route} {body:?} wrote to disk");
    }
    assert_eq!((catalog(env, H1), catalog(env, H2)), seen_before);
}

#[test]
fn garbled_form_bodies_are_400_and_change_nothing_in_memory_or_on_disk() {
    let env = env();
    sync(&env);
    const FORM: &str = "application/x-www-form-urlencoded";
    let mut cases = vec![
        // Once answered 200 and applied as an empty repository list.
        (
            "repository_list",
            FORM,
            "repositories[][[[=&&==%ZZ&=",
            "parameter 1 `repositories[][[[=' has no name",
        ),
        (
            "repository_list",
            FORM,
            "repositories[][repository]=org%ZZpublic&repositories[][auth_required]=false",
            "invalid %-encoding in parameter 1",
        ),
        (
            "repository_list",
            FORM,
            "repositories[][repository]=org%2Fa&repositories[][auth_required]=true&=1",
            "parameter 3 `=1' has no name",
        ),
        (
            "repository_list",
            FORM,
            "repositories[][repository]=%ff%fe&repositories[][auth_required]=true",
            "not UTF-8",
        ),
        (
            "repository_list",
            FORM,
            "repositories[]&repositories[]",
            "none of the 2 entries of `repositories` has a name",
        ),
        (
            "repository_list",
            FORM,
            "repositories[][repository]=&repositories[][auth_required]=true",
            "none of the 1 entries of `repositories` has a name",
        ),
        (
            "repository_list",
            "application/json",
            r#"{"repositories":[null,{"repository":" ","auth_required":true}]}"#,
            "none of the 2 entries",
        ),
    ];
    for route in [
        "update_hosts",
        "host_repository_mapping",
        "update_host_repositories",
    ] {
        cases.push((route, FORM, "hosts[][[=x", "has no name"));
        cases.push((route, FORM, "hosts[]%=x", "invalid %-encoding"));
    }
    cases.push((
        "update_hosts",
        FORM,
        "hosts[][uuid]=&hosts[][uuid]",
        "none of the 2 entries of `hosts` has a UUID",
    ));
    for route in ["host_repository_mapping", "update_host_repositories"] {
        cases.push((
            route,
            FORM,
            "hosts[][][][repository]=org%2Fprivate%2Fapp&hosts[][][][auth_required]=true",
            "of `hosts` has a UUID",
        ));
    }
    cases.push((
        "user_repository_mapping",
        FORM,
        "users[][%]",
        "invalid %-encoding",
    ));
    cases.push((
        "user_repository_mapping",
        "application/json",
        r#"{"users":[{"":[{"repository":"org/private/app","auth_required":true}]}]}"#,
        "of `users` has a login",
    ));
    refused_unchanged(&env, &cases);
}

#[test]
fn a_push_dropping_more_than_max_shrink_percent_is_409_and_changes_nothing() {
    let env = TestEnv::builder()
        .central(|c| c.public(&[PUBLIC]))
        .gateway(|g| {
            g.plain_listener(true)
                .set("management.max_shrink_percent", 50)
        })
        .start();
    sync(&env);
    let before = snapshot(&env);
    let disk = state_on_disk(&env);
    // Two of three (66%) and all three (an empty list) are refused.
    for body in [
        katello_form::repository_list(&[(PUBLIC, false)]),
        "repositories".to_owned(),
    ] {
        let r = env.gateway.push("repository_list", &body);
        assert_eq!(r.status, 409, "{body}: {}", r.text());
        let v = r.json();
        assert_eq!(v["errors"][0]["code"], "DENIED");
        let message = v["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("management.max_shrink_percent (50%)"),
            "{message}"
        );
        assert!(Arc::ptr_eq(&before, &snapshot(&env)));
        assert_eq!(state_on_disk(&env), disk);
    }
    assert_eq!(
        catalog(&env, H1),
        (200, vec![PRIVATE.to_owned(), PUBLIC.to_owned()])
    );
    // One of three (33%), with a new one added, is within the limit.
    env.gateway
        .push_repository_list(&[(PUBLIC, false), (PRIVATE, true), ("org/new/app", true)]);
    let after = snapshot(&env);
    assert_eq!(after.repositories.len(), 3);
    assert!(after.repositories.contains_key("org/new/app"));
    assert_ne!(state_on_disk(&env), disk);
}

#[test]
fn json_bodies_are_accepted() {
    let env = env();
    let put = |route: &str, body: serde_json::Value| {
        let r = env
            .gateway
            .katello_curl()
            .body("application/json", body.to_string())
            .put(&format!("/container_gateway/{route}"));
        assert_eq!(r.status, 200, "{route}: {}", r.text());
    };
    put(
        "repository_list",
        serde_json::json!({"repositories": [
            {"repository": PUBLIC, "auth_required": false},
            {"repository": PRIVATE, "auth_required": "true"}
        ]}),
    );
    put(
        "update_hosts",
        serde_json::json!({"hosts": [{"uuid": H1}, {"uuid": null}]}),
    );
    put(
        "host_repository_mapping",
        serde_json::json!({"hosts": [{H1: [{"repository": PRIVATE, "auth_required": true}]}, {H2: null}]}),
    );
    assert_eq!(
        catalog(&env, H1).1,
        vec![PRIVATE.to_owned(), PUBLIC.to_owned()]
    );
    assert_eq!(catalog(&env, H2).1, vec![PUBLIC.to_owned()]);
}

#[test]
fn users_lists_logins_with_a_token_and_survives_a_restart() {
    let mut env = TestEnv::builder()
        .central(|c| c.public(&[PUBLIC]).user("alice", "secret", &[PRIVATE]))
        .start();
    let r = env.gateway.katello_curl().get("/container_gateway/users");
    assert_eq!(r.json(), serde_json::json!({"users": []}));
    let r = env.curl().basic("alice", "secret").get(&format!(
        "/v2/token?account=alice&scope=repository:{PRIVATE}:pull"
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = env.gateway.katello_curl().get("/users");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), serde_json::json!({"users": ["alice"]}));

    env.central.stop();
    env.gateway.restart();
    let r = env.gateway.katello_curl().get("/container_gateway/users");
    assert_eq!(
        r.json(),
        serde_json::json!({"users": ["alice"]}),
        "tokens are persisted"
    );
}

#[test]
fn restart_with_central_unreachable_serves_every_pushed_host() {
    let mut env = TestEnv::builder()
        .central(|c| c.public(&[PUBLIC]))
        // A short TTL makes the pushed mappings old enough that central is
        // asked first; it is down, so the persisted push must answer.
        .gateway(|g| g.cache_ttl(1).negative_ttl(1))
        .start();
    sync(&env);
    env.central.stop();
    env.gateway.restart();
    assert!(env.gateway.shared().state.is_loaded());
    std::thread::sleep(Duration::from_millis(1_200));
    assert_eq!(
        catalog(&env, H1),
        (200, vec![PRIVATE.to_owned(), PUBLIC.to_owned()])
    );
    assert_eq!(
        catalog(&env, H2),
        (
            200,
            vec![PRIVATE.to_owned(), OTHER.to_owned(), PUBLIC.to_owned()]
        )
    );
    assert_eq!(catalog(&env, H3), (200, vec![PUBLIC.to_owned()]));
    // Never fail open: a host nobody pushed cannot be decided.
    let (status, _) = catalog(&env, "8d1f2b3c-9999-4a5b-9c6d-0e1f2a3b4c5d");
    assert_eq!(status, 503);
}

#[test]
fn a_corrupt_state_file_is_set_aside_and_the_gateway_starts_empty() {
    let mut env = env();
    sync(&env);
    env.gateway.stop();
    let state = env.gateway.state_dir().join("state.json");
    std::fs::write(&state, b"{\"version\":1,\"hosts\":[").expect("write state.json");
    env.gateway.restart();
    assert!(snapshot(&env).repositories.is_empty());
    assert!(!env.gateway.shared().state.is_loaded());
    let aside = std::fs::read_dir(env.gateway.state_dir())
        .expect("state dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        })
        .count();
    assert_eq!(aside, 1);
    // The next sync restores service.
    sync(&env);
    assert_eq!(
        catalog(&env, H1).1,
        vec![PRIVATE.to_owned(), PUBLIC.to_owned()]
    );
}

#[test]
fn ten_thousand_hosts_in_one_push() {
    let env = env();
    env.gateway
        .push_repository_list(&[(PUBLIC, false), (PRIVATE, true), (OTHER, true)]);
    let uuids: Vec<String> = (0..10_000)
        .map(|i| format!("{i:08x}-5555-4a5b-9c6d-0e1f2a3b4c5d"))
        .collect();
    let refs: Vec<&str> = uuids.iter().map(String::as_str).collect();
    env.gateway.push_hosts(&refs);
    let repos: &[&str] = &[PRIVATE, OTHER];
    let mapping: Vec<(&str, &[&str])> = refs.iter().map(|u| (*u, repos)).collect();
    let body = katello_form::mapping("hosts", &mapping);
    assert!(
        body.len() > 1 << 20,
        "a realistic body: {} bytes",
        body.len()
    );
    let r = env.gateway.push("host_repository_mapping", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let s = snapshot(&env);
    assert_eq!(s.host_mappings.len(), 10_000);
    assert_eq!(catalog(&env, &uuids[9_999]).1.len(), 3);
}
