//! Pulp and central misbehaving under a running gateway: malformed JSON,
//! truncated bodies, stalls far beyond the configured timeouts (before the
//! response head and in mid-body), dropped connections, a stopped upstream,
//! HTML where JSON belongs, and bodies of 200 MB.
//!
//! Every answer is a defined registry error (502 for an unusable answer, 503
//! with `Retry-After` for an upstream that cannot be reached in time), or,
//! where the contract says so, the previous answer (a host's last entitlements
//! from central, the previous index while Pulp cannot be reached); never a
//! 500, never a panic, never a repository outside the client's grant, and the
//! gateway does not balloon on a huge body. A manifest or blob body Pulp stops
//! sending is cut at `pulp.stream_idle_secs`, so that the client's transfer
//! breaks instead of hanging or looking complete. Upstream timeouts are 1 s
//! and the idle limit 2 s here, so a 10 s stall costs the suite a second or
//! two. With `--nocapture` the last test prints
//! `upstream-faults: N requests, 2xx=.., 5xx=.. (502:.., 503:..)`.

mod common;
mod robustness;

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use gateway_tests::client::CurlHttp;
use gateway_tests::fake_central::CentralRoute;
use gateway_tests::fake_pulp::{Blob, FLATPAK_INDEX_QUERY, FakeRepo, Image, PathKind};
use gateway_tests::harness::{Fault, HUGE_NAME_PREFIX, TestEnv, TestEnvBuilder};
use robustness::{MIB, Outcome, Raw, Tally, assert_alive, exchange, rss_bytes, tcp};

const SUITE: &str = "upstream-faults";
const TESTS: usize = 7;
static TALLY: LazyLock<Tally> = LazyLock::new(Tally::default);

/// Pushed by Katello with `APP_A`; central says the same.
const HOST_A: &str = "a1a1a1a1-1111-4a5b-9c6d-0e1f2a3b4c5d";
const PUBLIC: &str = "org/public/runtime";
const APP_A: &str = "org/a/app";
/// A user central knows (Basic credentials for the token flow).
const USER: &str = "alice";
const PASSWORD: &str = "secret";
/// Nobody in this suite may see it.
const APP_B: &str = "org/b/app";
/// What must never reach a client of this suite.
const FORBIDDEN: [&str; 3] = [APP_B, "org.test.AppB", HUGE_NAME_PREFIX];
/// `pulp.timeout_secs` and `central.timeout_secs`.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Longer than any timeout: an answer must come well before a stall ends.
const STALL: Duration = Duration::from_secs(10);
/// `pulp.stream_idle_secs`: well below `STALL`, above the gap of a slow but
/// steady body.
const IDLE: Duration = Duration::from_secs(2);
const HUGE: u64 = 200_000_000;

fn builder() -> TestEnvBuilder {
    TestEnv::builder()
        .pulp(|p| {
            p.repo(
                FakeRepo::new(PUBLIC)
                    .image("latest", Image::flatpak_runtime("org.test.Platform", "1")),
            )
            .repo(
                FakeRepo::new(APP_A)
                    .image("latest", Image::flatpak_app("org.test.AppA"))
                    .blob(big_blob())
                    .direct_blobs(true),
            )
            .repo(FakeRepo::new(APP_B).image("latest", Image::flatpak_app("org.test.AppB")))
        })
        .central(|c| {
            c.public(&[PUBLIC])
                .host(HOST_A, &[APP_A])
                .user(USER, PASSWORD, &[APP_A])
        })
        .repositories(&[(PUBLIC, false), (APP_A, true), (APP_B, true)])
        .host_mapping(HOST_A, &[APP_A])
        .gateway(|g| {
            g.plain_listener(true)
                .upstream_timeout(TIMEOUT.as_secs())
                .index_ttl(1)
                .cache_ttl(1)
                .negative_ttl(1)
                .set("pulp.stream_idle_secs", IDLE.as_secs() as i64)
                .admin_listener(true)
        })
}

/// Served by `APP_A`: sixteen of the fake's 64 KiB chunks.
fn big_blob() -> Blob {
    Blob::generated(1024 * 1024, 7)
}

/// The faults both fakes can inject, with a label.
fn faults() -> Vec<(&'static str, Fault)> {
    let html = "<!DOCTYPE html>\n<html><head><title>Maintenance</title></head><body>back soon</body></html>\n";
    vec![
        ("500", Fault::Status(500)),
        ("503", Fault::Status(503)),
        ("garbage", Fault::Garbage),
        ("truncated", Fault::Truncate),
        ("closed", Fault::Close),
        ("stall before the head", Fault::Stall(STALL)),
        ("stall in mid-body", Fault::StallBody(STALL)),
        (
            "HTML 200",
            Fault::Respond {
                status: 200,
                content_type: "text/html; charset=utf-8".into(),
                body: Bytes::from_static(html.as_bytes()),
            },
        ),
        (
            "JSON array",
            Fault::Respond {
                status: 200,
                content_type: "application/json".into(),
                body: Bytes::from_static(b"[]"),
            },
        ),
        (
            "JSON of the wrong shape",
            Fault::Respond {
                status: 200,
                content_type: "application/json".into(),
                body: Bytes::from_static(br#"{"Registry":7,"Results":{"a":1},"repositories":"x"}"#),
            },
        ),
        (
            "200 MB",
            Fault::Huge {
                size: HUGE,
                chunked: false,
            },
        ),
        (
            "200 MB chunked",
            Fault::Huge {
                size: HUGE,
                chunked: true,
            },
        ),
    ]
}

/// A client, as a trusted frontend forwards it to the plain listener (the
/// host's certificate in `X-RHSM-SSL-Client-Cert`); requests go out raw.
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    headers: Vec<(String, String)>,
}

impl Client {
    fn anonymous(env: &TestEnv) -> Client {
        Client {
            addr: env.gateway.plain_addr().expect("a plain listener"),
            headers: Vec::new(),
        }
    }

    fn host(env: &TestEnv, uuid: &str) -> Client {
        Client::anonymous(env).with(
            "X-RHSM-SSL-Client-Cert",
            &env.host_cert(uuid).forwarded_header_value(),
        )
    }

    fn with(mut self, name: &str, value: &str) -> Client {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn basic(self, user: &str, password: &str) -> Client {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.with("Authorization", &format!("Basic {b64}"))
    }

    /// The answer, or `None` when the connection ended without one (counted either way).
    fn send(&self, method: &str, path: &str) -> Option<Raw> {
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        for (k, v) in &self.headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let out = exchange(&mut tcp(self.addr), req.as_bytes());
        TALLY.note(out.seen());
        match out {
            Outcome::Answered(r) => Some(r),
            Outcome::Closed(_) => None,
        }
    }
}

fn answered(client: &Client, method: &str, path: &str, what: &str) -> Raw {
    client
        .send(method, path)
        .unwrap_or_else(|| panic!("{what}: {method} {path}: no answer from the gateway"))
}

fn json(r: &Raw) -> serde_json::Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", r.status, r.text()))
}

fn assert_nothing_forbidden(what: &str, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    for marker in FORBIDDEN {
        assert!(!text.contains(marker), "{what}: {marker} in {text:.300}");
    }
}

/// A registry error with one of `statuses` and `code`; 503 carries `Retry-After`.
fn assert_upstream_error(what: &str, r: &Raw, statuses: &[u16], code: &str) {
    assert!(
        statuses.contains(&r.status),
        "{what}: status {} (expected {statuses:?}): {}",
        r.status,
        r.text()
    );
    common::assert_error(
        what,
        r.status,
        r.header("content-type"),
        &r.body,
        r.status,
        code,
    );
    if r.status == 503 {
        let retry: Option<u64> = r.header("retry-after").and_then(|v| v.parse().ok());
        assert!(retry.is_some_and(|s| s > 0), "{what}: {:?}", r.headers);
    }
    assert_nothing_forbidden(what, &r.body);
}

fn index(tag: &str) -> String {
    // Pulp ORs repeated keys: every case gets the whole index under a query
    // (and so a cache key) of its own.
    format!("/index/static?{FLATPAK_INDEX_QUERY}&tag={tag}")
}

fn case_tag(what: &str) -> String {
    what.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

#[test]
fn pulp_faults_on_the_index() {
    let _serial = robustness::serial();
    robustness::watch_panics();
    let mut env = builder().start();
    // Over mutual TLS once, then as a frontend forwards the same host.
    let r = env.curl_as(&env.host_cert(HOST_A)).get(&index("warm-tls"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(common::index_names(&r.body), vec![PUBLIC, APP_A]);
    let host = Client::host(&env, HOST_A);
    let r = answered(&host, "GET", &index("warm"), "healthy");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(common::index_names(&r.body), vec![PUBLIC, APP_A]);

    // Pulp down (first: stopping a fake waits for its stalled answers).
    env.pulp.stop();
    let r = answered(&host, "GET", &index("down"), "Pulp down");
    assert_upstream_error("index, Pulp down", &r, &[503], "UNAVAILABLE");
    env.pulp.restart();

    let rss_before = rss_bytes();
    for (what, fault) in faults() {
        let (statuses, code): (&[u16], &str) = match &fault {
            Fault::Stall(_) | Fault::StallBody(_) => (&[503], "UNAVAILABLE"),
            // No answer at all: Pulp could not be reached, as far as anyone can tell.
            Fault::Close => (&[502, 503], ""),
            // Refused at pulp.max_index_mb, or cut off at pulp.timeout_secs
            // first when the machine is slow to move 64 MiB.
            Fault::Huge { chunked: true, .. } => (&[502, 503], ""),
            _ => (&[502], "UPSTREAM_ERROR"),
        };
        env.pulp.fail_kind(PathKind::Index, fault);
        let started = Instant::now();
        let r = answered(&host, "GET", &index(&case_tag(what)), what);
        let took = started.elapsed();
        env.pulp.clear_faults();
        let code = match (code, r.status) {
            ("", 503) => "UNAVAILABLE",
            ("", _) => "UPSTREAM_ERROR",
            (code, _) => code,
        };
        assert_upstream_error(&format!("index, Pulp {what}"), &r, statuses, code);
        assert!(took < STALL, "index, Pulp {what}: answered after {took:?}");
        println!(
            "{SUITE}: index, Pulp {what}: {} in {took:?}, resident memory {} MiB",
            r.status,
            rss_bytes() / MIB
        );
    }
    // A Pulp that refuses the gateway is the gateway's problem, not the client's.
    for status in [401, 403] {
        env.pulp.fail_kind(PathKind::Index, Fault::Status(status));
        let r = answered(&host, "GET", &index(&format!("s{status}")), "refused");
        env.pulp.clear_faults();
        assert_upstream_error(
            &format!("index, Pulp {status}"),
            &r,
            &[502],
            "UPSTREAM_ERROR",
        );
    }
    // Pulp's own 404 keeps its status.
    env.pulp.fail_kind(PathKind::Index, Fault::Status(404));
    let r = answered(&host, "GET", &index("s404"), "404");
    env.pulp.clear_faults();
    assert_upstream_error("index, Pulp 404", &r, &[404], "NOT_FOUND");
    let grown = rss_bytes().saturating_sub(rss_before);
    println!(
        "{SUITE}: index faults: resident memory grew {} MiB",
        grown / MIB
    );
    assert!(
        grown < 256 * MIB,
        "two 200 MB indexes made the gateway grow by {} MiB",
        grown / MIB
    );

    let r = answered(&host, "GET", &index("after"), "healthy again");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(common::index_names(&r.body), vec![PUBLIC, APP_A]);
    assert_alive(&env, "index faults");
    TALLY.test_done(SUITE, "index", TESTS);
}

#[test]
fn the_previous_index_serves_while_pulp_cannot_be_reached() {
    let _serial = robustness::serial();
    robustness::watch_panics();
    // Pulp is asked on every request (pulp.index_ttl_secs = 0), so every
    // request below meets the fault.
    let mut env = builder()
        .gateway(|g| {
            g.plain_listener(true)
                .upstream_timeout(TIMEOUT.as_secs())
                .index_ttl(0)
        })
        .start();
    let host = Client::host(&env, HOST_A);
    let anonymous = Client::anonymous(&env);
    let path = index("stale");
    for client in [&host, &anonymous] {
        let r = answered(client, "GET", &path, "warm");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let cases: Vec<(&str, Option<Fault>)> = vec![
        ("down", None),
        ("closed", Some(Fault::Close)),
        ("truncated", Some(Fault::Truncate)),
        ("stall before the head", Some(Fault::Stall(STALL))),
        ("stall in mid-body", Some(Fault::StallBody(STALL))),
    ];
    for (what, fault) in cases {
        let asked = env.pulp.count(PathKind::Index);
        match fault {
            Some(f) => env.pulp.fail_kind(PathKind::Index, f),
            None => env.pulp.stop(),
        }
        for (who, client, names) in [
            ("host", &host, vec![PUBLIC, APP_A]),
            ("anonymous", &anonymous, vec![PUBLIC]),
        ] {
            let started = Instant::now();
            let r = answered(client, "GET", &path, what);
            let label = format!("stale index, Pulp {what}, {who}");
            assert_eq!(r.status, 200, "{label}: {}", r.text());
            assert_eq!(common::index_names(&r.body), names, "{label}");
            assert_nothing_forbidden(&label, &r.body);
            assert!(
                started.elapsed() < STALL,
                "{label}: {:?}",
                started.elapsed()
            );
        }
        match what {
            "down" => env.pulp.restart(),
            _ => {
                assert!(
                    env.pulp.count(PathKind::Index) > asked,
                    "{what}: Pulp was asked"
                );
                env.pulp.clear_faults();
            }
        }
    }
    assert_alive(&env, "stale index");
    TALLY.test_done(SUITE, "stale-index", TESTS);
}

#[test]
fn pulp_faults_on_registry_routes() {
    let _serial = robustness::serial();
    robustness::watch_panics();
    let mut env = builder().start();
    let host = Client::host(&env, HOST_A);
    let repo = env.pulp.repo(APP_A).expect("APP_A");
    let digest = repo.tag_digest("latest").expect("APP_A is tagged");
    let layer = repo.layer_digests("latest").remove(0);
    let routes = [
        (
            "GET",
            format!("/v2/{APP_A}/manifests/latest"),
            PathKind::Manifest,
        ),
        (
            "HEAD",
            format!("/v2/{APP_A}/manifests/{digest}"),
            PathKind::Manifest,
        ),
        ("GET", format!("/v2/{APP_A}/blobs/{layer}"), PathKind::Blob),
        ("GET", format!("/v2/{APP_A}/tags/list"), PathKind::Tags),
    ];
    let html = |status: u16| Fault::Respond {
        status,
        content_type: "text/html; charset=utf-8".into(),
        body: Bytes::from_static(b"<html><body><h1>Oops</h1></body></html>"),
    };
    let cases: Vec<(&str, Fault, &[u16], &str)> = vec![
        ("500", Fault::Status(500), &[502], "UPSTREAM_ERROR"),
        ("502", Fault::Status(502), &[502], "UPSTREAM_ERROR"),
        ("401", Fault::Status(401), &[502], "UPSTREAM_ERROR"),
        ("403", Fault::Status(403), &[502], "UPSTREAM_ERROR"),
        ("HTML 500", html(500), &[502], "UPSTREAM_ERROR"),
        ("HTML 404", html(404), &[404], "NOT_FOUND"),
        ("302 without Location", html(302), &[502], "UPSTREAM_ERROR"),
        (
            "stall before the head",
            Fault::Stall(STALL),
            &[503],
            "UNAVAILABLE",
        ),
        ("closed", Fault::Close, &[502, 503], ""),
    ];
    // Pulp down (first: stopping a fake waits for its stalled answers).
    env.pulp.stop();
    for (method, path, _) in &routes {
        let r = answered(&host, method, path, "Pulp down");
        if *method == "GET" {
            assert_upstream_error(&format!("{path}, Pulp down"), &r, &[503], "UNAVAILABLE");
        } else {
            assert_eq!(r.status, 503, "{method} {path}, Pulp down");
        }
    }
    env.pulp.restart();
    for (method, path, kind) in &routes {
        for (what, fault, statuses, code) in &cases {
            env.pulp.fail_kind(*kind, fault.clone());
            let started = Instant::now();
            let r = answered(&host, method, path, what);
            let took = started.elapsed();
            env.pulp.clear_faults();
            let label = format!("{method} {path}, Pulp {what}");
            assert!(took < STALL, "{label}: answered after {took:?}");
            if *method == "HEAD" {
                assert!(statuses.contains(&r.status), "{label}: {}", r.status);
                continue;
            }
            let code = if code.is_empty() {
                if r.status == 503 {
                    "UNAVAILABLE"
                } else {
                    "UPSTREAM_ERROR"
                }
            } else {
                code
            };
            assert_upstream_error(&label, &r, statuses, code);
        }
        // A body cut short after the head: the client's transfer breaks (the
        // status and length were already sent), the gateway carries on.
        env.pulp.fail_kind(*kind, Fault::Truncate);
        let r = host.send(method, path);
        env.pulp.clear_faults();
        match r {
            None => assert_eq!(*method, "GET", "{path}: HEAD has no body to cut"),
            Some(r) => assert!(
                *method == "HEAD" || r.status >= 500,
                "{method} {path}, Pulp truncated: a complete answer? {} {}",
                r.status,
                r.text()
            ),
        }
    }
    // Pulp's "unknown" with a body that stalls half-way: the status stands,
    // the body is not waited for.
    for (path, kind) in [
        (format!("/v2/{APP_A}/manifests/nope"), PathKind::Manifest),
        (
            format!("/v2/{APP_A}/blobs/sha256:{}", "0".repeat(64)),
            PathKind::Blob,
        ),
    ] {
        env.pulp.fail_kind(kind, Fault::StallBody(STALL));
        let started = Instant::now();
        let r = answered(&host, "GET", &path, "error body stalls");
        let took = started.elapsed();
        env.pulp.clear_faults();
        let label = format!("{path}, Pulp's 404 stalls in mid-body");
        assert!(took < STALL, "{label}: answered after {took:?}");
        assert_upstream_error(&label, &r, &[404], "NOT_FOUND");
    }
    // A repository the host may not see stays invisible whatever Pulp does.
    for (what, fault, _, _) in &cases {
        env.pulp.fail(fault.clone());
        for path in [
            format!("/v2/{APP_B}/manifests/latest"),
            format!("/v2/{APP_B}/tags/list"),
        ] {
            let r = answered(&host, "GET", &path, what);
            common::assert_error(
                &format!("{path}, Pulp {what}"),
                r.status,
                r.header("content-type"),
                &r.body,
                404,
                "NAME_UNKNOWN",
            );
        }
        env.pulp.clear_faults();
    }
    let r = answered(&host, "GET", &routes[0].1, "healthy again");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_alive(&env, "registry route faults");
    TALLY.test_done(SUITE, "registry", TESTS);
}

/// A manifest or blob whose body Pulp stops sending after the head, or half-way,
/// is cut at `pulp.stream_idle_secs`: the client (curl, over HTTP/1.1 and h2)
/// gets the status and then a broken transfer, never a hang or a body that
/// looks complete; each cut is counted once. A body that comes slowly but
/// steadily, a piece a second under a 2 s limit, arrives intact.
#[test]
fn pulp_silent_in_a_streamed_body_is_cut_at_the_idle_limit() {
    let _serial = robustness::serial();
    robustness::watch_panics();
    let env = builder().start();
    let repo = env.pulp.repo(APP_A).expect("APP_A");
    let digest = repo.tag_digest("latest").expect("APP_A is tagged");
    let manifest = repo.manifest_for(&digest).expect("the tagged manifest");
    let blob = big_blob();
    let targets = [
        (
            PathKind::Manifest,
            format!("/v2/{APP_A}/manifests/{digest}"),
            manifest.bytes.to_vec(),
            "/v2/{name}/manifests/{reference}",
        ),
        (
            PathKind::Blob,
            format!("/v2/{APP_A}/blobs/{}", blob.digest),
            blob.to_bytes().to_vec(),
            "/v2/{name}/blobs/{digest}",
        ),
    ];
    let after_head = |chunked| Fault::Paced {
        pieces: 1,
        gap: STALL,
        chunked,
    };
    let steady = |chunked| Fault::Paced {
        pieces: 3,
        gap: IDLE / 2,
        chunked,
    };
    // (what, fault, protocol, whether the gateway must cut it)
    let cases = [
        (
            "stall after the head",
            after_head(false),
            CurlHttp::Http11,
            true,
        ),
        (
            "stall half-way",
            Fault::StallBody(STALL),
            CurlHttp::Http11,
            true,
        ),
        (
            "chunked, stall after the head",
            after_head(true),
            CurlHttp::Http11,
            true,
        ),
        (
            "stall half-way, h2",
            Fault::StallBody(STALL),
            CurlHttp::Http2,
            true,
        ),
        ("slow but steady", steady(false), CurlHttp::Http11, false),
        (
            "chunked, slow but steady, h2",
            steady(true),
            CurlHttp::Http2,
            false,
        ),
    ];
    // A bound on curl's own wait: past it, the gateway let the client hang.
    let curl = env
        .curl_as(&env.host_cert(HOST_A))
        .max_time(STALL + STALL / 2);
    // Manifests and blobs side by side (each meets only its own fault), so
    // the suite waits out each idle limit once.
    std::thread::scope(|scope| {
        for (kind, path, body, route) in &targets {
            let (env, curl, cases) = (&env, &curl, &cases);
            scope.spawn(move || {
                robustness::watch_panics();
                let series =
                    format!("gateway_upstream_stream_idle_timeouts_total{{route=\"{route}\"}}");
                for (what, fault, http, cut) in cases {
                    let label = format!("GET {path} over {http:?}, Pulp: {what}");
                    let before = common::metric(&common::scrape_metrics(&env.gateway), &series);
                    env.pulp.fail_times(Some(*kind), fault.clone(), 1);
                    let started = Instant::now();
                    let got = curl.http(*http).try_run("GET", path);
                    let took = started.elapsed();
                    let counted =
                        common::metric(&common::scrape_metrics(&env.gateway), &series) - before;
                    match (got, cut) {
                        (Err(e), true) => {
                            assert_eq!(e.status, 200, "{label}: the head came through: {e}");
                            // curl's words for a body cut short: 18 (HTTP/1.1:
                            // the connection closed short of Content-Length or
                            // of the last chunk), 92 (h2: the stream was reset).
                            let want = if *http == CurlHttp::Http2 { 92 } else { 18 };
                            assert_eq!(e.exit_code, Some(want), "{label}: {e}");
                            println!("{SUITE}: {label}: cut after {took:?}: {}", e.stderr.trim());
                        }
                        (Ok(r), true) => panic!(
                            "{label}: a complete answer ({} with {} bytes) after a {STALL:?} stall",
                            r.status,
                            r.body.len()
                        ),
                        (Ok(r), false) => {
                            assert_eq!(r.status, 200, "{label}: {}", r.text());
                            let version = if *http == CurlHttp::Http2 { "2" } else { "1.1" };
                            assert_eq!(r.http_version, version, "{label}");
                            assert!(
                                r.body == *body,
                                "{label}: {} bytes, not the {} sent",
                                r.body.len(),
                                body.len()
                            );
                            println!("{SUITE}: {label}: intact after {took:?}");
                        }
                        (Err(e), false) => panic!("{label}: broken: {e}"),
                    }
                    let want = if *cut { 1.0 } else { 0.0 };
                    assert_eq!(counted, want, "{label}: {series} moved by {counted}");
                }
            });
        }
    });
    assert_eq!(
        env.pulp.count(PathKind::Manifest) + env.pulp.count(PathKind::Blob),
        12,
        "one Pulp call per request"
    );
    assert_alive(&env, "stream idle cuts");
    TALLY.test_done(SUITE, "stream-idle", TESTS);
}

/// A host central knows with `APP_A`, never seen by the gateway.
fn fresh_host(env: &TestEnv, n: usize) -> String {
    let uuid = format!("c0c0c0c0-{n:04}-4a5b-9c6d-0e1f2a3b4c5d");
    env.central.set_host(&uuid, &[APP_A]);
    uuid
}

#[test]
fn central_faults_for_a_host_never_seen_are_503() {
    let _serial = robustness::serial();
    robustness::watch_panics();
    let mut env = builder().start();
    let rss_before = rss_bytes();
    // Down first: stopping a fake waits for its stalled answers.
    let cases: Vec<(&str, Option<Fault>)> = std::iter::once(("down", None))
        .chain(faults().into_iter().map(|(w, f)| (w, Some(f))))
        .collect();
    for (n, (what, fault)) in cases.into_iter().enumerate() {
        let uuid = fresh_host(&env, n);
        let client = Client::host(&env, &uuid);
        match fault {
            Some(f) => env.central.fail_route(CentralRoute::Catalog, f),
            None => env.central.stop(),
        }
        let asked = env.central.catalog_calls_for_host(&uuid);
        for path in [
            index(&case_tag(what)),
            "/v2/_catalog".to_owned(),
            format!("/v2/{APP_A}/manifests/latest"),
            format!("/v2/{APP_A}/tags/list"),
        ] {
            let started = Instant::now();
            let r = answered(&client, "GET", &path, what);
            let label = format!("{path}, central {what}, new host");
            assert!(
                started.elapsed() < STALL,
                "{label}: {:?}",
                started.elapsed()
            );
            assert_upstream_error(&label, &r, &[503], "UNAVAILABLE");
            for name in [PUBLIC, APP_A] {
                assert!(!r.text().contains(name), "{label}: {}", r.text());
            }
        }
        if what == "down" {
            env.central.restart();
        } else {
            assert!(
                env.central.catalog_calls_for_host(&uuid) > asked,
                "{what}: central was asked"
            );
            env.central.clear_faults();
        }
        println!(
            "{SUITE}: central {what}: resident memory {} MiB",
            rss_bytes() / MIB
        );
    }
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(grown < 256 * MIB, "grew by {} MiB", grown / MIB);

    // A large list that fits central's limit: names not on Katello's
    // repository list do not exist, whoever grants them.
    let uuid = fresh_host(&env, 9999);
    env.central.fail_route(
        CentralRoute::Catalog,
        Fault::Huge {
            size: 4 * MIB,
            chunked: true,
        },
    );
    let client = Client::host(&env, &uuid);
    let r = answered(&client, "GET", &index("huge-grant"), "huge grant");
    env.central.clear_faults();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(common::index_names(&r.body), vec![PUBLIC]);
    let r = answered(&client, "GET", "/v2/_catalog", "huge grant");
    assert_eq!(common::catalog_names(&r.body), vec![PUBLIC]);
    assert_alive(&env, "central faults, new hosts");
    TALLY.test_done(SUITE, "central-new", TESTS);
}

#[test]
fn central_faults_serve_a_host_its_last_answer() {
    let _serial = robustness::serial();
    robustness::watch_panics();
    let env = builder().start();
    let cases = faults();
    // One host per fault, each seen once while central was healthy.
    let hosts: Vec<(String, Client)> = (0..cases.len())
        .map(|n| {
            let uuid = fresh_host(&env, 100 + n);
            let client = Client::host(&env, &uuid);
            let r = answered(&client, "GET", "/v2/_catalog", "warm");
            assert_eq!(common::catalog_names(&r.body), vec![APP_A, PUBLIC]);
            (uuid, client)
        })
        .collect();
    // Past cache.ttl_secs: central is asked again, and fails.
    std::thread::sleep(Duration::from_millis(1100));
    for ((what, fault), (uuid, client)) in cases.into_iter().zip(&hosts) {
        env.central.fail_route(CentralRoute::Catalog, fault);
        let asked = env.central.catalog_calls_for_host(uuid);
        let started = Instant::now();
        let r = answered(client, "GET", &index(&case_tag(what)), what);
        let label = format!("central {what}, known host");
        assert!(
            started.elapsed() < STALL,
            "{label}: {:?}",
            started.elapsed()
        );
        assert_eq!(r.status, 200, "{label}: {}", r.text());
        assert_eq!(common::index_names(&r.body), vec![PUBLIC, APP_A], "{label}");
        assert_nothing_forbidden(&label, &r.body);
        let r = answered(client, "GET", "/v2/_catalog", what);
        assert_eq!(
            common::catalog_names(&r.body),
            vec![APP_A, PUBLIC],
            "{label}"
        );
        let r = answered(
            client,
            "HEAD",
            &format!("/v2/{APP_A}/manifests/latest"),
            what,
        );
        assert_eq!(r.status, 200, "{label}");
        let r = answered(
            client,
            "GET",
            &format!("/v2/{APP_B}/manifests/latest"),
            what,
        );
        assert_eq!(r.status, 404, "{label}: {}", r.text());
        assert!(
            env.central.catalog_calls_for_host(uuid) > asked,
            "{label}: central was asked"
        );
        env.central.clear_faults();
    }
    assert_alive(&env, "central faults, known hosts");
    TALLY.test_done(SUITE, "central-stale", TESTS);
}

#[test]
fn central_faults_on_the_token_flow() {
    let _serial = robustness::serial();
    robustness::watch_panics();
    let mut env = builder().start();
    let scope = format!("/v2/token?scope=repository:{APP_A}:pull&service=gateway");
    let user = Client::anonymous(&env).basic(USER, PASSWORD);
    let r = answered(&user, "GET", &scope, "healthy");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(json(&r)["token"].is_string(), "{}", r.text());

    // Down first: stopping a fake waits for its stalled answers.
    let cases: Vec<(&str, Option<Fault>)> = std::iter::once(("down", None))
        .chain(faults().into_iter().map(|(w, f)| (w, Some(f))))
        .collect();
    for (n, (what, fault)) in cases.into_iter().enumerate() {
        let stalled = matches!(fault, Some(Fault::Stall(_) | Fault::StallBody(_)));
        match fault {
            Some(f) => env.central.fail(f),
            None => env.central.stop(),
        }
        // A token request: relayed to central, whose failure is a 502 (503
        // when it cannot be reached in time), never a token.
        let started = Instant::now();
        let r = answered(&user, "GET", &scope, what);
        let label = format!("/v2/token, central {what}");
        assert!(
            started.elapsed() < STALL,
            "{label}: {:?}",
            started.elapsed()
        );
        let statuses: &[u16] = match what {
            "down" => &[503],
            "closed" => &[502, 503],
            _ if stalled => &[503],
            _ => &[502],
        };
        let code = if r.status == 503 {
            "UNAVAILABLE"
        } else {
            "UPSTREAM_ERROR"
        };
        assert_upstream_error(&label, &r, statuses, code);
        // A bearer token this gateway never issued is checked with central:
        // while central fails, that is a 503, never access. Faults that keep
        // central's response head keep its verdict: 401 for a token it does
        // not know.
        let keeps_head = matches!(what, "truncated" | "stall in mid-body");
        let bearer = Client::anonymous(&env).with("Authorization", &format!("Bearer unknown-{n}"));
        for path in ["/v2/_catalog".to_owned(), index(&format!("token-{n}"))] {
            let started = Instant::now();
            let r = answered(&bearer, "GET", &path, what);
            let label = format!("{path} with an unknown token, central {what}");
            assert!(
                started.elapsed() < STALL,
                "{label}: {:?}",
                started.elapsed()
            );
            if keeps_head {
                assert_upstream_error(&label, &r, &[401], "UNAUTHORIZED");
            } else {
                assert_upstream_error(&label, &r, &[503], "UNAVAILABLE");
            }
            assert!(!r.text().contains(APP_A), "{label}: {}", r.text());
        }
        match what {
            "down" => env.central.restart(),
            _ => env.central.clear_faults(),
        }
    }
    let r = answered(&user, "GET", &scope, "healthy again");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_alive(&env, "token flow faults");
    TALLY.test_done(SUITE, "token", TESTS);
}
