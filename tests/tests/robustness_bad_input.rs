//! Hostile and broken client input against a running gateway, over real
//! sockets: forged, garbage, oversized and wrongly encoded forwarded
//! certificate headers (from a trusted frontend and from anyone else), heads
//! and queries far beyond what clients send, traversal and malformed names,
//! references and digests, NUL bytes and invalid UTF-8, a slowloris client and
//! clients that connect and say nothing.
//!
//! Every request gets a defined answer (a 4xx in registry format where the
//! gateway answers, a 400/408/431 without body where the HTTP parser does, or
//! a closed connection), never a 5xx, and never a panic; the gateway still
//! serves after each batch, and memory stays flat. Requests go out raw
//! (`std::net::TcpStream`, or rustls over it) so that nothing normalises them.
//! With `--nocapture` each test prints the running tally and the last one the
//! suite's line: `bad-input: N requests, 2xx=.., 4xx=.., 5xx=0, conn-closed=..`.

mod common;
mod robustness;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use base64::Engine;
use gateway_tests::client::TestClient;
use gateway_tests::fake_pulp::{FLATPAK_INDEX_QUERY, FakeRepo, Image};
use gateway_tests::harness::TestEnv;
use robustness::{
    MIB, Outcome, Raw, Seen, Tally, assert_alive, assert_error, exchange, get, rss_bytes, tcp, tls,
};

const SUITE: &str = "bad-input";
const TESTS: usize = 7;
static TALLY: LazyLock<Tally> = LazyLock::new(Tally::default);

/// Pushed by Katello with its mapping: no central call is ever needed for it.
const HOST: &str = "f1f1f1f1-1111-4a5b-9c6d-0e1f2a3b4c5d";
/// Known to central only: a request that reached identification would ask central.
const LOOKUP_HOST: &str = "f2f2f2f2-2222-4a5b-9c6d-0e1f2a3b4c5d";
const PUBLIC: &str = "org/public/runtime";
const PRIVATE: &str = "org/private/app";
const CERT_HEADER: &str = "X-RHSM-SSL-Client-Cert";
/// Seconds a client has to send its request head (`server.client_request_timeout_secs`).
const REQUEST_TIMEOUT: u64 = 2;

fn env(trusted_loopback: bool) -> TestEnv {
    TestEnv::builder()
        .pulp(|p| {
            p.repo(
                FakeRepo::new(PUBLIC)
                    .image("latest", Image::flatpak_runtime("org.test.Platform", "1")),
            )
            .repo(FakeRepo::new(PRIVATE).image("latest", Image::flatpak_app("org.test.Private")))
        })
        .central(|c| c.public(&[PUBLIC]).host(LOOKUP_HOST, &[PRIVATE]))
        .repositories(&[(PUBLIC, false), (PRIVATE, true)])
        .host_mapping(HOST, &[PRIVATE])
        .gateway(move |g| {
            let g = g
                .plain_listener(true)
                .client_request_timeout(REQUEST_TIMEOUT);
            if trusted_loopback {
                g
            } else {
                g.trusted_frontends(&["192.0.2.0/24"])
            }
        })
        .start()
}

fn plain_addr(env: &TestEnv) -> SocketAddr {
    env.gateway.plain_addr().expect("a plain listener")
}

/// One raw request over the plain listener, counted.
fn plain(env: &TestEnv, request: &[u8]) -> Outcome {
    let out = exchange(&mut tcp(plain_addr(env)), request);
    TALLY.note(out.seen());
    out
}

/// One raw request over the TLS listener (no client certificate), counted.
fn over_tls(env: &TestEnv, request: &[u8]) -> Outcome {
    let out = exchange(&mut tls(env.gateway.tls_addr(), &env.ca_pem()), request);
    TALLY.note(out.seen());
    out
}

/// Never a 5xx; a closed connection only where `may_close`.
fn defined(what: &str, out: &Outcome, may_close: bool) {
    match out {
        Outcome::Answered(r) => assert!(r.status < 500, "{what}: {} {}", r.status, r.text()),
        Outcome::Closed(why) => assert!(may_close, "{what}: connection closed: {why}"),
    }
}

/// What the HTTP layer answers to a head it will not parse: a status without
/// a registry body (400 malformed, 431 too large), or it closes the connection.
fn refused_by_parser(what: &str, out: &Outcome, statuses: &[u16]) {
    defined(what, out, true);
    if let Outcome::Answered(r) = out {
        assert!(
            statuses.contains(&r.status),
            "{what}: {} (expected one of {statuses:?}): {}",
            r.status,
            r.text()
        );
    }
}

fn index_target() -> String {
    format!("/index/static?{FLATPAK_INDEX_QUERY}")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn pem_armored(body: &str) -> String {
    format!("-----BEGIN CERTIFICATE----- {body} -----END CERTIFICATE-----")
}

/// `(what, header lines)`: forwarded certificate headers that hold no good certificate.
fn bad_forwarded(env: &TestEnv) -> Vec<(String, Vec<(String, String)>)> {
    let one = |v: String| vec![(CERT_HEADER.to_owned(), v)];
    let good = env.host_cert(HOST).forwarded_header_value();
    // A certificate claiming to be the host, from a CA with the same name as ours.
    let forged = env
        .pki
        .host_cert_from_other_ca(HOST)
        .forwarded_header_value();
    let key_der = &env.host_cert(HOST).key_der;
    let random: Vec<u8> = (0..24 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    vec![
        ("forged (another CA)".into(), one(forged)),
        (
            "another CA's own CA certificate".into(),
            one(env.pki.other_ca_pem().trim_end().replace('\n', " ")),
        ),
        (
            "garbage text".into(),
            one("definitely not a certificate".into()),
        ),
        ("64 KiB of garbage".into(), one("A".repeat(64 * 1024))),
        (
            "64 KiB of base64 inside PEM armour".into(),
            one(pem_armored(&"QUFB".repeat(16 * 1024))),
        ),
        ("bad base64".into(), one(pem_armored("@@@@!!!!****"))),
        (
            "base64 with a bad length".into(),
            one(pem_armored("QUJDRA=")),
        ),
        (
            "PEM without END".into(),
            one(good.replace("-----END CERTIFICATE-----", "")),
        ),
        (
            "PEM END before BEGIN".into(),
            one("-----END CERTIFICATE----- MIIB -----BEGIN CERTIFICATE-----".into()),
        ),
        (
            "a private key in PEM".into(),
            one(format!(
                "-----BEGIN PRIVATE KEY----- {} -----END PRIVATE KEY-----",
                b64(key_der)
            )),
        ),
        (
            "DER of a private key as a certificate".into(),
            one(pem_armored(&b64(key_der))),
        ),
        (
            "DER of SEQUENCE { INTEGER 5 }".into(),
            one(pem_armored(&b64(&[0x30, 0x03, 0x02, 0x01, 0x05]))),
        ),
        (
            "24 KiB of random DER".into(),
            one(pem_armored(&b64(&random))),
        ),
        ("empty PEM".into(), one(pem_armored(""))),
        (
            "truncated certificate".into(),
            one(good[..good.len() / 2].to_owned()),
        ),
        (
            "invalid UTF-8 percent escapes".into(),
            one("%ff%fe%fd".into()),
        ),
        (
            "percent-escaped NUL in PEM".into(),
            one(good.replacen("MII", "MI%00I", 1)),
        ),
        (
            "both spellings at once".into(),
            vec![
                (CERT_HEADER.to_owned(), good.clone()),
                ("X_RHSM_SSL_CLIENT_CERT".to_owned(), good.clone()),
            ],
        ),
        (
            "both spellings, one (null)".into(),
            vec![
                ("X_RHSM_SSL_CLIENT_CERT".to_owned(), "(null)".to_owned()),
                (CERT_HEADER.to_owned(), good.clone()),
            ],
        ),
        (
            "SSL_CLIENT_CERT and X-RHSM-SSL-Client-Cert".into(),
            vec![
                ("SSL_CLIENT_CERT".to_owned(), good.clone()),
                (CERT_HEADER.to_owned(), good.clone()),
            ],
        ),
        (
            "the same header twice".into(),
            vec![
                (CERT_HEADER.to_owned(), good.clone()),
                (CERT_HEADER.to_owned(), good.clone()),
            ],
        ),
        (
            "SSL_CLIENT_CERT spelling, garbage".into(),
            vec![("SSL_CLIENT_CERT".to_owned(), "garbage".to_owned())],
        ),
    ]
}

fn with_headers(target: &str, headers: &[(String, String)]) -> Vec<u8> {
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    get(target, &refs)
}

fn assert_no_private(what: &str, r: &Raw) {
    let text = r.text();
    for marker in [PRIVATE, "org.test.Private"] {
        assert!(!text.contains(marker), "{what}: {marker} leaked: {text}");
    }
}

#[test]
fn forwarded_certificate_headers_from_a_trusted_frontend() {
    let _serial = robustness::serial();
    robustness::watch_panics();
    let env = env(true);
    let public_url = env.gateway.config().server.public_url.clone();
    let calls_before = env.central.total();

    // The test can tell: a good forwarded certificate is the host, on both listeners.
    let good = vec![(
        CERT_HEADER.to_owned(),
        env.host_cert(HOST).forwarded_header_value(),
    )];
    for out in [
        plain(&env, &with_headers("/v2/_catalog", &good)),
        over_tls(&env, &with_headers("/v2/_catalog", &good)),
    ] {
        let r = out.answered("good forwarded certificate");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(common::catalog_names(&r.body), vec![PRIVATE, PUBLIC]);
    }

    let rss_before = rss_bytes();
    let targets = [
        "/v2/".to_owned(),
        "/v2/_catalog".to_owned(),
        index_target(),
        format!("/v2/{PRIVATE}/manifests/latest"),
        format!("/v2/{PUBLIC}/tags/list"),
    ];
    for (what, headers) in bad_forwarded(&env) {
        for target in &targets {
            for (listener, out) in [
                ("plain", plain(&env, &with_headers(target, &headers))),
                ("tls", over_tls(&env, &with_headers(target, &headers))),
            ] {
                let label = format!("{what} on {target} ({listener})");
                let r = out.answered(&label);
                assert_error(&label, &r, 401, "UNAUTHORIZED");
                assert_eq!(
                    r.header("www-authenticate"),
                    Some(common::expected_challenge(&public_url, None).as_str()),
                    "{label}"
                );
                assert_no_private(&label, &r);
            }
        }
    }

    // Beyond what the HTTP layer parses (128 KiB of head): refused before any
    // route runs, without a body, or the connection is closed on the client.
    for size in [256 * 1024, MIB as usize] {
        for _ in 0..10 {
            let req = with_headers(
                "/v2/_catalog",
                &[(CERT_HEADER.to_owned(), "A".repeat(size))],
            );
            refused_by_parser(&format!("{size}-byte header"), &plain(&env, &req), &[431]);
            refused_by_parser(
                &format!("{size}-byte header over TLS"),
                &over_tls(&env, &req),
                &[431],
            );
        }
    }
    let grown = rss_bytes().saturating_sub(rss_before);
    println!(
        "{SUITE}: forwarded headers: resident memory grew {} KiB",
        grown / 1024
    );
    assert!(grown < 64 * MIB, "memory grew by {} MiB", grown / MIB);
    assert_eq!(
        env.central.total(),
        calls_before,
        "no bad certificate led to a central lookup"
    );
    assert_alive(&env, "bad forwarded headers from a trusted frontend");
    TALLY.test_done(SUITE, "trusted", TESTS);
}

#[test]
fn forwarded_certificate_headers_from_an_untrusted_peer_are_ignored() {
    let _serial = robustness::serial();
    robustness::watch_panics();
    let env = env(false);
    let public_url = env.gateway.config().server.public_url.clone();
    let mut cases = bad_forwarded(&env);
    cases.push((
        "a good certificate".into(),
        vec![(
            CERT_HEADER.to_owned(),
            env.host_cert(HOST).forwarded_header_value(),
        )],
    ));
    for (what, headers) in &cases {
        for (listener, send) in [
            ("plain", plain as fn(&TestEnv, &[u8]) -> Outcome),
            ("tls", over_tls),
        ] {
            let label = |t: &str| format!("{what} on {t} ({listener})");
            // Ignored means anonymous: the challenge, public repositories only.
            let r = send(&env, &with_headers("/v2/", headers)).answered(&label("/v2/"));
            assert_error(&label("/v2/"), &r, 401, "UNAUTHORIZED");
            assert_eq!(
                r.header("www-authenticate"),
                Some(common::expected_challenge(&public_url, None).as_str())
            );
            let r =
                send(&env, &with_headers("/v2/_catalog", headers)).answered(&label("/v2/_catalog"));
            assert_eq!(r.status, 200, "{}", label("/v2/_catalog"));
            assert_eq!(common::catalog_names(&r.body), vec![PUBLIC]);
            let r = send(&env, &with_headers(&index_target(), headers)).answered(&label("index"));
            assert_eq!(r.status, 200, "{}: {}", label("index"), r.text());
            assert_eq!(common::index_names(&r.body), vec![PUBLIC]);
            let private = format!("/v2/{PRIVATE}/manifests/latest");
            let r = send(&env, &with_headers(&private, headers)).answered(&label(&private));
            assert_error(&label(&private), &r, 401, "UNAUTHORIZED");
            assert_eq!(
                r.header("www-authenticate"),
                Some(common::expected_challenge(&public_url, Some(PRIVATE)).as_str())
            );
        }
    }
    for size in [256 * 1024, MIB as usize] {
        let req = with_headers(
            "/v2/_catalog",
            &[(CERT_HEADER.to_owned(), "A".repeat(size))],
        );
        refused_by_parser(&format!("{size}-byte header"), &plain(&env, &req), &[431]);
    }
    assert_eq!(env.central.total(), 0, "no forged host was ever looked up");
    assert_alive(&env, "forwarded headers from an untrusted peer");
    TALLY.test_done(SUITE, "untrusted", TESTS);
}

#[test]
fn oversized_heads_and_queries() {
    let _serial = robustness::serial();
    robustness::watch_panics();
    let env = env(true);
    let rss_before = rss_bytes();
    let host = env.host_cert(HOST).forwarded_header_value();

    // 64 KiB of headers in total (16 x 4 KiB), and one 64 KiB header: headers
    // the gateway does not read change nothing, on either listener.
    let padding: Vec<(String, String)> = (0..16)
        .map(|i| (format!("X-Padding-{i}"), "p".repeat(4096 - 16)))
        .collect();
    let single = vec![("X-Junk".to_owned(), "j".repeat(64 * 1024))];
    for headers in [&padding, &single] {
        for _ in 0..20 {
            for send in [plain as fn(&TestEnv, &[u8]) -> Outcome, over_tls] {
                let r = send(&env, &with_headers("/v2/_catalog", headers)).answered("padding");
                assert_eq!(r.status, 200, "{}", r.text());
                assert_eq!(common::catalog_names(&r.body), vec![PUBLIC]);
                let mut as_host = headers.clone();
                as_host.push((CERT_HEADER.to_owned(), host.clone()));
                let r =
                    send(&env, &with_headers(&index_target(), &as_host)).answered("padding, host");
                assert_eq!(r.status, 200, "{}", r.text());
                assert_eq!(common::index_names(&r.body), vec![PUBLIC, PRIVATE]);
            }
        }
    }
    // The same over HTTP/2, which flatpak's libcurl negotiates, under its own
    // bound (`server.http2_max_header_list_kb`, 64 KiB by default).
    let h2_padding = padding[..12].to_vec();
    let h2_single = vec![("X-Junk".to_owned(), "j".repeat(48 * 1024))];
    let public_url = env.gateway.config().server.public_url.clone();
    actix_web::rt::System::new().block_on(async {
        let client = TestClient::builder(&env.gateway.url())
            .ca_pem(&env.ca_pem())
            .http2(true)
            .build();
        let many = vec!["a=1"; 10_000].join("&");
        for _ in 0..5 {
            for headers in [&h2_padding, &h2_single] {
                let mut req = client.get("/v2/_catalog");
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                let r = req.send().await;
                TALLY.note(Seen::Status(r.status));
                assert_eq!((r.status, r.version.as_str()), (200, "HTTP/2.0"));
                assert_eq!(common::catalog_names(&r.body), vec![PUBLIC]);
            }
            let r = client
                .get(&index_target())
                .header(CERT_HEADER, &"A".repeat(32 * 1024))
                .send()
                .await;
            TALLY.note(Seen::Status(r.status));
            common::assert_error(
                "32 KiB certificate header over HTTP/2",
                r.status,
                r.header("content-type"),
                &r.body,
                401,
                "UNAUTHORIZED",
            );
            assert_eq!(
                r.header("www-authenticate"),
                Some(common::expected_challenge(&public_url, None).as_str())
            );
            // Far over the bound, refused by the HTTP/2 layer before any
            // route: the connection is closed with GOAWAY (a list only a
            // little over it gets 431 on its stream). On a client of its own:
            // awc would reuse the closed connection for the next request.
            let r = TestClient::builder(&env.gateway.url())
                .ca_pem(&env.ca_pem())
                .http2(true)
                .build()
                .get(&index_target())
                .header(CERT_HEADER, &"A".repeat(MIB as usize))
                .try_send()
                .await;
            match &r {
                Ok(r) => {
                    TALLY.note(Seen::Status(r.status));
                    assert_eq!(r.status, 431, "1 MiB certificate header over HTTP/2");
                }
                Err(_) => TALLY.note(Seen::Closed),
            }
            let r = client.get(&format!("/index/static?{many}")).send().await;
            TALLY.note(Seen::Status(r.status));
            common::assert_error(
                "10,000 query parameters over HTTP/2",
                r.status,
                r.header("content-type"),
                &r.body,
                400,
                "UNSUPPORTED",
            );
        }
    });

    // Headers the gateway does read, 64 KiB long.
    let bearer = format!("Bearer {}", "t".repeat(64 * 1024));
    let r = plain(&env, &get("/v2/_catalog", &[("Authorization", &bearer)]))
        .answered("64 KiB bearer token");
    assert_error("64 KiB bearer token", &r, 401, "UNAUTHORIZED");
    let basic = format!("Basic {}", b64("u".repeat(48 * 1024).as_bytes()));
    let r = plain(&env, &get("/v2/_catalog", &[("Authorization", &basic)]))
        .answered("64 KiB Basic credentials");
    assert!(
        r.status == 200 && common::catalog_names(&r.body) == vec![PUBLIC],
        "Basic credentials are not an identity on registry routes: {} {}",
        r.status,
        r.text()
    );
    let inm = "\"x\", ".repeat(64 * 1024 / 5);
    let r = plain(&env, &get(&index_target(), &[("If-None-Match", &inm)]))
        .answered("64 KiB If-None-Match");
    assert_eq!(r.status, 200, "{}", r.text());
    let ae = "identity;q=0.5, ".repeat(4096);
    let r = plain(&env, &get(&index_target(), &[("Accept-Encoding", &ae)]))
        .answered("64 KiB Accept-Encoding");
    assert_eq!(r.status, 200, "{}", r.text());
    let accept = "application/x-nothing, ".repeat(64 * 1024 / 23);
    let r = plain(
        &env,
        &get(
            &format!("/v2/{PRIVATE}/tags/list"),
            &[("Accept", &accept), (CERT_HEADER, &host)],
        ),
    )
    .answered("64 KiB Accept");
    assert_eq!(
        r.status,
        200,
        "tags/list asks Pulp for JSON whatever the client accepts: {}",
        r.text()
    );

    // 10,000 query parameters (and a few over the limit of 64) on every route that reads a query.
    let many = vec!["a=1"; 10_000].join("&");
    let some = vec!["a"; 65].join("&");
    let blob = format!("sha256:{}", "0".repeat(64));
    let routes = [
        "/index/static".to_owned(),
        "/index/dynamic".to_owned(),
        "/v2/".to_owned(),
        "/v2/_catalog".to_owned(),
        format!("/v2/{PUBLIC}/manifests/latest"),
        format!("/v2/{PUBLIC}/blobs/{blob}"),
        format!("/v2/{PUBLIC}/tags/list"),
        "/v2/token".to_owned(),
        "/v1/search".to_owned(),
    ];
    for _ in 0..10 {
        for route in &routes {
            for query in [&many, &some] {
                let target = format!("{route}?{query}");
                for (listener, send) in [
                    ("plain", plain as fn(&TestEnv, &[u8]) -> Outcome),
                    ("tls", over_tls),
                ] {
                    let what = format!("{route} with {} bytes of query ({listener})", query.len());
                    let r = send(&env, &get(&target, &[])).answered(&what);
                    assert_error(&what, &r, 400, "UNSUPPORTED");
                }
            }
        }
    }

    // A request head beyond 128 KiB, or a target of 64 KiB or more, is refused
    // by the HTTP layer (431 and 400, without a body), or the connection closed.
    let long_line = format!("/v2/{}/manifests/latest", "a".repeat(200 * 1024));
    refused_by_parser(
        "200 KiB request line",
        &plain(&env, &get(&long_line, &[])),
        &[431],
    );
    let long_query = format!("/index/static?{}", "b=2&".repeat(50 * 1024));
    refused_by_parser(
        "200 KiB query",
        &plain(&env, &get(&long_query, &[])),
        &[431],
    );
    let target_64k = format!("/v2/{}/manifests/latest", "a".repeat(64 * 1024));
    refused_by_parser(
        "64 KiB request target",
        &plain(&env, &get(&target_64k, &[])),
        &[400],
    );
    // Under that, the gateway judges: a 60 KiB name or query is a registry error.
    let what = "60 KiB name";
    let r = plain(
        &env,
        &get(
            &format!("/v2/{}/manifests/latest", "a".repeat(60 * 1024)),
            &[],
        ),
    )
    .answered(what);
    assert_error(what, &r, 400, "NAME_INVALID");
    let what = "60 KiB query";
    let r = plain(
        &env,
        &get(&format!("/index/static?q={}", "q".repeat(60 * 1024)), &[]),
    )
    .answered(what);
    assert_error(what, &r, 400, "UNSUPPORTED");
    // More header lines than the parser keeps (96).
    let lines: Vec<(String, String)> = (0..200).map(|i| (format!("X-H{i}"), "v".into())).collect();
    refused_by_parser(
        "200 header lines",
        &plain(&env, &with_headers("/v2/", &lines)),
        &[431],
    );

    let grown = rss_bytes().saturating_sub(rss_before);
    println!(
        "{SUITE}: oversized heads: resident memory grew {} KiB",
        grown / 1024
    );
    assert!(grown < 64 * MIB, "memory grew by {} MiB", grown / MIB);
    assert_alive(&env, "oversized heads and queries");
    TALLY.test_done(SUITE, "oversized", TESTS);
}

#[test]
fn traversal_and_malformed_names_references_and_digests() {
    let _serial = robustness::serial();
    robustness::watch_panics();
    let env = env(true);
    // A host that is not pushed: were identification to run, central would be asked.
    let host = env.host_cert(LOOKUP_HOST).forwarded_header_value();
    let (pulp_before, central_before) = (env.pulp.total(), env.central.total());
    let sha = "0".repeat(64);
    let a10k = "a".repeat(10 * 1024);
    let cases: Vec<(String, u16, &str)> = vec![
        // Traversal and path tricks in the name, on each kind of route.
        (
            format!("/v2/../{PRIVATE}/manifests/latest"),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/org/../private/app/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/org/public/../../org/private/app/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/%2e%2e/org/private/app/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/org/%2E%2E/private/app/blobs/sha256:".to_owned() + &sha,
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/org/..%2fprivate/app/tags/list".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/org%2fprivate%2fapp/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/org%2Fprivate%2Fapp/tags/list".into(),
            400,
            "NAME_INVALID",
        ),
        (
            format!("/v2//{PRIVATE}/manifests/latest"),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/org//private/app/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/org/private/app//manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/org\\private\\app/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/org/private/app\\..\\x/tags/list".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/./org/private/app/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/org/./private/app/blobs/sha256:".to_owned() + &sha,
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/org/private/app/./tags/list".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/Org/Private/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (format!("/v2/{a10k}/manifests/latest"), 400, "NAME_INVALID"),
        // ... in the reference or digest.
        (
            format!("/v2/{PRIVATE}/manifests/../../x"),
            400,
            "MANIFEST_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/manifests/..%2f..%2fx"),
            400,
            "MANIFEST_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/manifests/%2e%2e"),
            400,
            "MANIFEST_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/manifests/.hidden"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/{PRIVATE}/manifests/la\\test"),
            400,
            "MANIFEST_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/blobs/..%2f..%2fetc%2fpasswd"),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/blobs/../../x"),
            400,
            "DIGEST_INVALID",
        ),
        // Invalid references and digests.
        (
            format!("/v2/{PRIVATE}/manifests/{a10k}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/{PRIVATE}/manifests/{}", "t".repeat(129)),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/{PRIVATE}/manifests/sha256:{}", &sha[..63]),
            400,
            "MANIFEST_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/manifests/sha256:{}", "A".repeat(64)),
            400,
            "MANIFEST_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/manifests/sha256:"),
            400,
            "MANIFEST_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/blobs/sha256:{}", &sha[..63]),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/blobs/sha256:{sha}0"),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/blobs/sha256:{}", "F".repeat(64)),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/blobs/sha512:{sha}"),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/blobs/SHA256:{sha}"),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/blobs/sha256{sha}"),
            400,
            "DIGEST_INVALID",
        ),
        (format!("/v2/{PRIVATE}/blobs/:{sha}"), 400, "DIGEST_INVALID"),
        (
            format!("/v2/{PRIVATE}/blobs/sha256:{}", "a".repeat(10 * 1024)),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/blobs/x+y:{}", "a".repeat(2000)),
            400,
            "DIGEST_INVALID",
        ),
        (format!("/v2/{PRIVATE}/blobs/latest"), 400, "DIGEST_INVALID"),
        // NUL, percent-encoded, and invalid UTF-8 percent-encodings.
        (
            "/v2/org/private/app%00/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/manifests/latest%00"),
            400,
            "MANIFEST_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/blobs/sha256:{}%00", &sha[..62]),
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/org/%ff%fe/app/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/org/%c0%ae%c0%ae/app/tags/list".into(),
            400,
            "NAME_INVALID",
        ),
        (
            format!("/v2/{PRIVATE}/manifests/%ff"),
            400,
            "MANIFEST_INVALID",
        ),
        // NUL and invalid UTF-8 in queries.
        (
            format!("/index/static?{FLATPAK_INDEX_QUERY}&tag=%00"),
            400,
            "UNSUPPORTED",
        ),
        (
            format!("/index/static?{FLATPAK_INDEX_QUERY}&tag=%ff%fe"),
            400,
            "UNSUPPORTED",
        ),
        (
            format!("/index/static?{FLATPAK_INDEX_QUERY}&%c3=1"),
            400,
            "UNSUPPORTED",
        ),
        ("/v2/_catalog?last=%00".into(), 400, "UNSUPPORTED"),
        ("/v2/_catalog?last=%ff".into(), 400, "UNSUPPORTED"),
        (
            format!("/v2/{PRIVATE}/tags/list?last=%ed%a0%80"),
            400,
            "UNSUPPORTED",
        ),
        // Other routes under /v2 that lead nowhere.
        (
            "/v2/org/private/app/tags/list/../../../_catalog".into(),
            404,
            "NOT_FOUND",
        ),
        ("/v2/org/private/app".into(), 404, "NOT_FOUND"),
        ("/index/static/../../v2/_catalog".into(), 404, "NOT_FOUND"),
    ];
    for (target, status, code) in &cases {
        for method in ["GET", "HEAD"] {
            let req = format!(
                "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{CERT_HEADER}: {host}\r\n\r\n"
            );
            let what = format!("{method} {target:.120}");
            let r = plain(&env, req.as_bytes()).answered(&what);
            if method == "HEAD" {
                assert_eq!(r.status, *status, "{what}");
            } else {
                assert_error(&what, &r, *status, code);
                assert_no_private(&what, &r);
            }
        }
    }
    assert_eq!(
        env.pulp.total(),
        pulp_before,
        "nothing malformed reached Pulp"
    );
    assert_eq!(
        env.central.total(),
        central_before,
        "nothing malformed led to a central lookup"
    );

    // An unknown (but well-formed) algorithm is a digest: for a repository the
    // client may see, Pulp decides, and its "unknown" is relayed.
    let pushed = env.host_cert(HOST).forwarded_header_value();
    let what = "md5 digest";
    let target = format!("/v2/{PRIVATE}/blobs/md5:{}", "d".repeat(32));
    let r = plain(&env, &get(&target, &[(CERT_HEADER, &pushed)])).answered(what);
    assert_error(what, &r, 404, "BLOB_UNKNOWN");

    // Raw bytes the HTTP parser does not accept: NUL, control characters,
    // bytes above 0x7f in the request line or a header.
    let raw_heads: [(&str, &[u8]); 7] = [
        ("NUL in the path", b"GET /v2/org\0private/app/manifests/latest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("NUL in the query", b"GET /index/static?tag=\0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("NUL in a header", b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-RHSM-SSL-Client-Cert: ab\0cd\r\nConnection: close\r\n\r\n"),
        ("0xff in the path", b"GET /v2/org/\xff\xfe/manifests/latest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("control character in the path", b"GET /v2/org/\x01/manifests/latest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("space in the path", b"GET /v2/org/a b/manifests/latest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("not HTTP at all", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"),
    ];
    for (what, req) in raw_heads {
        // The whole request was sent, so the answer arrives: 400, no body.
        let r = plain(&env, req).answered(what);
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert!(r.body.is_empty(), "{what}: {}", r.text());
    }
    // Bytes above 0x7f in a header value reach the gateway: not a certificate, not a token.
    let raw_headers: [(&str, &[u8], u16, &str); 2] = [
        (
            "0xff in the certificate header",
            b"GET /v2/_catalog HTTP/1.1\r\nHost: x\r\nX-RHSM-SSL-Client-Cert: \xff\xfe\r\nConnection: close\r\n\r\n",
            401,
            "UNAUTHORIZED",
        ),
        (
            "0xff in Authorization",
            b"GET /v2/_catalog HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n",
            400,
            "UNAUTHORIZED",
        ),
    ];
    for (what, req, status, code) in raw_headers {
        let r = plain(&env, req).answered(what);
        assert_error(what, &r, status, code);
    }
    assert_alive(&env, "malformed names, references and digests");
    TALLY.test_done(SUITE, "grammar", TESTS);
}

/// Read what a connection receives until it is closed; `Some(bytes)` when the
/// gateway closed it within `limit`.
fn closed_within(conn: &mut dyn Read, limit: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(got),
        }
    }
    None
}

/// Whether bytes a closed connection left behind are nothing, or a 408.
fn nothing_or_408(got: &[u8]) -> bool {
    got.is_empty() || got.starts_with(b"HTTP/1.1 408")
}

#[test]
fn a_slowloris_client_is_cut_off_after_the_request_timeout() {
    let _serial = robustness::serial();
    robustness::watch_panics();
    let env = env(true);
    let plain_addr = plain_addr(&env);
    let tls_addr = env.gateway.tls_addr();
    let ca = env.ca_pem();
    let plain_thread = std::thread::spawn(move || {
        robustness::watch_panics();
        let mut conn = tcp(plain_addr);
        slowloris(&mut conn, HEAD)
    });
    let tls_thread = std::thread::spawn(move || {
        robustness::watch_panics();
        let mut conn = tls(tls_addr, &ca);
        slowloris(&mut conn, HEAD)
    });
    // Meanwhile the gateway serves everyone else.
    for _ in 0..5 {
        let r = plain(&env, &get("/v2/_catalog", &[])).answered("while slowloris runs");
        assert_eq!(r.status, 200);
        std::thread::sleep(Duration::from_millis(200));
    }
    for (listener, t) in [("plain", plain_thread), ("tls", tls_thread)] {
        let (sent, got, took) = t.join().expect("slowloris thread");
        println!(
            "{SUITE}: slowloris ({listener}): cut off after {sent} of {} bytes, {took:?}, got {:?}",
            HEAD.len(),
            String::from_utf8_lossy(&got[..got.len().min(40)])
        );
        TALLY.note(if got.is_empty() {
            Seen::Closed
        } else {
            Seen::Status(408)
        });
        assert!(
            sent < HEAD.len(),
            "{listener}: the whole slow head was accepted"
        );
        assert!(
            took < Duration::from_secs(REQUEST_TIMEOUT * 4),
            "{listener}: cut off only after {took:?}"
        );
        assert!(
            nothing_or_408(&got),
            "{listener}: {}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_alive(&env, "slowloris");
    TALLY.test_done(SUITE, "slowloris", TESTS);
}

/// What a slowloris sends, one byte a second (about 85 s for the whole head).
const HEAD: &[u8] =
    b"GET /v2/_catalog HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\nConnection: close\r\n\r\n";

/// Send `head` one byte a second until the gateway closes the connection (or
/// answers): how many bytes went out, what came back, how long it took.
fn slowloris(conn: &mut dyn Conn2, head: &[u8]) -> (usize, Vec<u8>, Duration) {
    let started = Instant::now();
    let mut sent = 0;
    let mut got = Vec::new();
    for byte in head {
        if conn
            .write_all(&[*byte])
            .and_then(|()| conn.flush())
            .is_err()
        {
            break;
        }
        sent += 1;
        // Wait a second, but notice at once when the gateway closes.
        conn.set_timeout(Duration::from_secs(1));
        let mut buf = [0u8; 512];
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                break;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    (sent, got, started.elapsed())
}

/// A stream whose read timeout can be changed (plain TCP or TLS over it).
trait Conn2: Read + Write {
    fn set_timeout(&mut self, t: Duration);
}

impl Conn2 for std::net::TcpStream {
    fn set_timeout(&mut self, t: Duration) {
        let _ = self.set_read_timeout(Some(t));
    }
}

impl Conn2 for rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    fn set_timeout(&mut self, t: Duration) {
        let _ = self.sock.set_read_timeout(Some(t));
    }
}

#[test]
fn connections_that_send_nothing_are_closed() {
    let _serial = robustness::serial();
    robustness::watch_panics();
    let env = env(true);
    let rss_before = rss_bytes();
    const EACH: usize = 150;
    let opened = Instant::now();
    let mut idle: Vec<(&str, std::net::TcpStream)> = Vec::new();
    for _ in 0..EACH {
        idle.push(("plain", tcp(plain_addr(&env))));
        // Not even a TLS ClientHello.
        idle.push(("tls", tcp(env.gateway.tls_addr())));
    }
    // Meanwhile the gateway serves everyone else, on both listeners.
    for _ in 0..10 {
        let r = plain(&env, &get("/v2/_catalog", &[])).answered("plain, while idle ones wait");
        assert_eq!(r.status, 200);
        let r = over_tls(&env, &get("/v2/_catalog", &[])).answered("tls, while idle ones wait");
        assert_eq!(r.status, 200);
    }
    let mut by_408 = 0;
    for (listener, conn) in &mut idle {
        let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
        let limit = Duration::from_secs(REQUEST_TIMEOUT * 4).saturating_sub(opened.elapsed());
        let got = closed_within(conn, limit.max(Duration::from_millis(500))).unwrap_or_else(|| {
            panic!(
                "{listener}: an idle connection is still open after {:?}",
                opened.elapsed()
            )
        });
        assert!(
            nothing_or_408(&got),
            "{listener}: {}",
            String::from_utf8_lossy(&got)
        );
        if got.is_empty() {
            TALLY.note(Seen::Closed);
        } else {
            by_408 += 1;
            TALLY.note(Seen::Status(408));
        }
    }
    println!(
        "{SUITE}: {} idle connections closed after {:?} ({by_408} with a 408)",
        idle.len(),
        opened.elapsed()
    );
    drop(idle);
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(grown < 64 * MIB, "memory grew by {} MiB", grown / MIB);
    assert_alive(&env, "idle connections");
    TALLY.test_done(SUITE, "idle", TESTS);
}

#[test]
fn made_up_index_queries_do_not_pile_up() {
    let _serial = robustness::serial();
    robustness::watch_panics();
    let env = env(true);
    // A 1 MB index (Pulp's own entries and some padding no client may see);
    // Pulp ORs repeated keys, so every made-up `tag` gets all of it.
    let mut index: serde_json::Value = serde_json::from_slice(
        &env.pulp
            .index_json(FLATPAK_INDEX_QUERY)
            .expect("the fake serves the flatpak query"),
    )
    .expect("Pulp's index is JSON");
    let results = index["Results"].as_array_mut().expect("Results");
    for i in 0..3000 {
        results.push(serde_json::json!({
            "Name": format!("org/padding/r{i:05}"),
            "Images": [],
            "Padding": "x".repeat(300),
        }));
    }
    let body = serde_json::to_vec(&index).expect("serialises");
    assert!(body.len() > 1_000_000, "{}", body.len());
    env.pulp.set_index_json(Some(body.into()));

    let rss_before = rss_bytes();
    const QUERIES: usize = 300;
    for i in 0..QUERIES {
        let target = format!("{}&tag=made-up-{i}", index_target());
        let r = plain(&env, &get(&target, &[])).answered("made-up query");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(common::index_names(&r.body), vec![PUBLIC]);
    }
    let (queries, distinct, bytes) = env.gateway.shared().index.upstream_stats();
    let grown = rss_bytes().saturating_sub(rss_before);
    println!(
        "{SUITE}: {QUERIES} made-up index queries: {queries} cached, {distinct} distinct, {} KiB; resident memory grew {} KiB",
        bytes / 1024,
        grown / 1024
    );
    assert_eq!(distinct, 1, "one answer, parsed once");
    assert!(queries <= 256, "{queries} queries keep an index");
    assert!(grown < 64 * MIB, "memory grew by {} MiB", grown / MIB);
    assert_alive(&env, "made-up index queries");
    TALLY.test_done(SUITE, "made-up-queries", TESTS);
}
