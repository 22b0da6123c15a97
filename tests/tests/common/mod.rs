//! Small checks shared by the integration test files (each file uses a subset).
#![allow(dead_code)]

use serde::Deserialize;
use serde_json::value::RawValue;

/// The error code of a registry-format error body (`{"errors":[{"code","message"}]}`),
/// panicking when the body is not in that format.
pub fn error_code(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "error body is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    let errors = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no `errors` array in {v}"));
    assert!(!errors.is_empty(), "empty `errors` in {v}");
    for e in errors {
        assert!(e["code"].is_string(), "error without a code: {v}");
        assert!(e["message"].is_string(), "error without a message: {v}");
    }
    errors[0]["code"].as_str().unwrap_or_default().to_owned()
}

/// Assert a response is a registry-format error with this status and code.
pub fn assert_error(
    what: &str,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    want_status: u16,
    want_code: &str,
) {
    assert_eq!(
        status,
        want_status,
        "{what}: status (body {})",
        String::from_utf8_lossy(body)
    );
    assert!(
        content_type.is_some_and(|c| c.starts_with("application/json")),
        "{what}: content type {content_type:?}"
    );
    assert_eq!(error_code(body), want_code, "{what}");
}

/// The members of a `WWW-Authenticate: Bearer k="v",...` challenge.
pub fn challenge(value: &str) -> Vec<(String, String)> {
    let rest = value
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer challenge: {value}"));
    let mut out = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s
            .split_once("=\"")
            .unwrap_or_else(|| panic!("malformed challenge: {value}"));
        let end = after
            .find('"')
            .unwrap_or_else(|| panic!("unterminated value in challenge: {value}"));
        out.push((key.trim().to_owned(), after[..end].to_owned()));
        s = after[end + 1..].trim_start_matches(',').trim();
    }
    out
}

/// One member of a challenge.
pub fn challenge_param(value: &str, key: &str) -> Option<String> {
    challenge(value)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The challenge the gateway must send for `scope` (`None`: no scope member).
pub fn expected_challenge(public_url: &str, scope_repo: Option<&str>) -> String {
    let service = public_url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_default();
    match scope_repo {
        Some(name) => format!(
            "Bearer realm=\"{public_url}/v2/token\",service=\"{service}\",scope=\"repository:{name}:pull\""
        ),
        None => format!("Bearer realm=\"{public_url}/v2/token\",service=\"{service}\""),
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A Flatpak index as served, with each `Results` entry kept as its raw bytes.
#[derive(Deserialize)]
pub struct RawIndex<'a> {
    #[serde(rename = "Registry")]
    pub registry: String,
    #[serde(rename = "Results", borrow)]
    pub results: Vec<&'a RawValue>,
}

impl<'a> RawIndex<'a> {
    pub fn parse(body: &'a [u8]) -> RawIndex<'a> {
        serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "index is not a JSON object with Registry and Results ({e}): {}",
                String::from_utf8_lossy(body)
            )
        })
    }
}

/// Check what flatpak >= 1.17.1 requires of an index and return the `Name`s in order.
pub fn index_names(body: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("index is not JSON ({e}): {}", String::from_utf8_lossy(body)));
    let registry = v["Registry"].as_str().expect("Registry is a string");
    assert!(
        registry.ends_with('/'),
        "Registry ends with a slash: {registry}"
    );
    let results = v["Results"].as_array().expect("Results is an array");
    let mut names = Vec::new();
    for r in results {
        let name = r["Name"]
            .as_str()
            .unwrap_or_else(|| panic!("entry without a Name: {r}"));
        let images = r["Images"]
            .as_array()
            .unwrap_or_else(|| panic!("entry {name} without an Images array: {r}"));
        for i in images {
            assert!(
                i["Digest"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("sha256:")),
                "{name}: image digest: {i}"
            );
            for key in ["MediaType", "OS", "Architecture"] {
                assert!(i[key].is_string(), "{name}: image without {key}: {i}");
            }
        }
        names.push(name.to_owned());
    }
    names
}

/// How many images in an index carry this `org.flatpak.ref`.
pub fn images_with_ref(body: &[u8], flatpak_ref: &str) -> usize {
    let v: serde_json::Value = serde_json::from_slice(body).expect("index is JSON");
    v["Results"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["Images"].as_array().into_iter().flatten())
        .filter(|i| i["Labels"]["org.flatpak.ref"] == flatpak_ref)
        .count()
}

/// `repositories` of a `_catalog` body.
pub fn catalog_names(body: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "catalog is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    v["repositories"]
        .as_array()
        .unwrap_or_else(|| panic!("no repositories array: {v}"))
        .iter()
        .map(|n| n.as_str().expect("names are strings").to_owned())
        .collect()
}

/// `/container_gateway/users` as Katello reads it.
pub fn stored_users(gateway: &gateway_tests::harness::Gateway) -> Vec<String> {
    let r = gateway.katello_curl().get("/container_gateway/users");
    assert_eq!(r.status, 200, "GET users: {}", r.text());
    r.json()["users"]
        .as_array()
        .expect("users is an array")
        .iter()
        .map(|u| u.as_str().expect("logins are strings").to_owned())
        .collect()
}

/// The admin listener's `/metrics` body (the gateway was started with it on).
pub fn scrape_metrics(gateway: &gateway_tests::harness::Gateway) -> String {
    let admin = gateway.admin_url().expect("the admin listener is on");
    let r = gateway_tests::client::Curl::new(&admin).get("/metrics");
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
    r.text()
}

/// The value of one series (`name{labels}`) in a `/metrics` body, 0 when absent.
pub fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}
