//! `explain`: what a host sees and why, and the apps whose runtime it cannot see.

use container_gateway::explain::command::{Who, explain};
use gateway_tests::fake_pulp::{FLATPAK_INDEX_QUERY, FakeRepo, Image};
use gateway_tests::harness::TestEnv;

const APP_ONLY: &str = "6a1b2c3d-0000-4000-8000-00000000000a";
const BOTH: &str = "6a1b2c3d-0000-4000-8000-00000000000b";

fn env() -> TestEnv {
    TestEnv::builder()
        .pulp(|p| {
            p.repo(
                FakeRepo::new("org/flatpak/app")
                    .image("latest", Image::flatpak_app("org.test.App")),
            )
            .repo(
                FakeRepo::new("org/flatpak/platform")
                    .image("latest", Image::flatpak_runtime("org.test.Platform", "1")),
            )
        })
        .gateway(|g| g.admin_listener(true))
        .repositories(&[("org/flatpak/app", true), ("org/flatpak/platform", true)])
        .host_mapping(APP_ONLY, &["org/flatpak/app"])
        .host_mapping(BOTH, &["org/flatpak/app", "org/flatpak/platform"])
        .start()
}

#[test]
fn explain_names_the_missing_runtime_and_where_it_lives() {
    let env = env();
    let e = explain(
        &env.gateway.config_path(),
        Who::Host(APP_ONLY.into()),
        "amd64",
    )
    .expect("explained");
    assert_eq!(e.identity, format!("host:{APP_ONLY}"));
    assert!(e.source.contains("pushed"), "{}", e.source);
    let names: Vec<&str> = e.repositories.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["org/flatpak/app"]);
    let index = e.index.as_ref().expect("the index was examined");
    assert_eq!(index.refs.len(), 1, "{:?}", index.refs);
    let runtime: Vec<_> = index
        .missing
        .iter()
        .filter(|m| m.kind == "runtime")
        .collect();
    assert_eq!(runtime.len(), 1, "{:?}", index.missing);
    assert_eq!(runtime[0].needs, "runtime/org.test.Platform/x86_64/1");
    assert_eq!(runtime[0].held_by, vec!["org/flatpak/platform".to_owned()]);
    assert!(
        e.render().contains("held by org/flatpak/platform"),
        "{}",
        e.render()
    );

    let e =
        explain(&env.gateway.config_path(), Who::Host(BOTH.into()), "amd64").expect("explained");
    let index = e.index.as_ref().expect("the index was examined");
    assert_eq!(index.refs.len(), 2);
    assert!(
        index.missing.is_empty(),
        "nothing to flag: {:?}",
        index.missing
    );

    let e = explain(&env.gateway.config_path(), Who::Anonymous, "amd64").expect("explained");
    assert!(e.repositories.is_empty());
    assert!(e.index.as_ref().is_some_and(|i| i.refs.is_empty()));
}

#[test]
fn the_missing_runtime_warning_is_counted_once_per_host_and_index_version() {
    let env = env();
    let host = env.host_cert(APP_ONLY);
    let curl = env.curl_as(&host);
    for _ in 0..100 {
        let r = curl.get(&format!("/index/static?{FLATPAK_INDEX_QUERY}"));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let other = env.curl_as(&env.host_cert(BOTH));
    assert_eq!(
        other
            .get(&format!("/index/static?{FLATPAK_INDEX_QUERY}"))
            .status,
        200
    );
    let admin = env.gateway.admin_url().expect("admin listener");
    let metrics = gateway_tests::client::Curl::new(&admin)
        .get("/metrics")
        .text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("index_apps_missing_runtime"))
        .unwrap_or_else(|| panic!("no index_apps_missing_runtime in\n{metrics}"));
    assert_eq!(line.split_whitespace().last(), Some("1"), "{line}");
}

#[test]
fn the_admin_listener_explains_a_host_from_the_running_gateway() {
    let env = env();
    let admin = env.gateway.admin_url().expect("admin listener");
    let r = gateway_tests::client::Curl::new(&admin).get(&format!("/explain/host/{APP_ONLY}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["identity"], format!("host:{APP_ONLY}"));
    assert_eq!(v["source"], "pushed by Katello");
    assert_eq!(v["repositories"][0]["name"], "org/flatpak/app");
    let missing = v["index"]["missing"].as_array().expect("missing list");
    assert!(
        missing
            .iter()
            .any(|m| m["kind"] == "runtime" && m["held_by"][0] == "org/flatpak/platform"),
        "{v}"
    );
    let r = gateway_tests::client::Curl::new(&admin).get("/explain/anonymous");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["repositories"].as_array().map(Vec::len), Some(0));
}
