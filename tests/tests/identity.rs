//! Who a client is: a subscription certificate over mutual TLS, one forwarded
//! by a trusted frontend in `X-RHSM-SSL-Client-Cert`, or nobody; and what a
//! certificate that does not check out (or a forged header) gets.

mod common;

use gateway_tests::client::Curl;
use gateway_tests::fake_pulp::{FLATPAK_INDEX_QUERY, FakeRepo, Image};
use gateway_tests::harness::TestEnv;
use gateway_tests::pki::Issued;

const HOST: &str = "d0d0d0d0-4444-4a5b-9c6d-0e1f2a3b4c5d";
const PUBLIC: &str = "org/public/runtime";
const PRIVATE: &str = "org/private/app";
const HEADER: &str = "X-RHSM-SSL-Client-Cert";

fn env(trusted: Option<&[&str]>) -> TestEnv {
    let trusted: Option<Vec<String>> = trusted.map(|t| t.iter().map(|s| (*s).to_owned()).collect());
    TestEnv::builder()
        .pulp(|p| {
            p.repo(
                FakeRepo::new(PUBLIC)
                    .image("latest", Image::flatpak_runtime("org.test.Platform", "1")),
            )
            .repo(FakeRepo::new(PRIVATE).image("latest", Image::flatpak_app("org.test.Private")))
        })
        .central(|c| c.public(&[PUBLIC]).host(HOST, &[PRIVATE]))
        .repositories(&[(PUBLIC, false), (PRIVATE, true)])
        .gateway(move |g| {
            let g = g.plain_listener(true);
            match &trusted {
                Some(nets) => {
                    g.trusted_frontends(&nets.iter().map(String::as_str).collect::<Vec<_>>())
                }
                None => g,
            }
        })
        .start()
}

/// What the gateway made of a client, seen from the outside.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// `/v2/` 200 and the private repository in `_catalog` and the index.
    Host,
    /// `/v2/` 401 with a challenge, public repositories only.
    Anonymous,
    /// 401 in registry format everywhere.
    Rejected,
}

fn seen(curl: &Curl, public_url: &str) -> Seen {
    let ping = curl.get("/v2/");
    let catalog = curl.get("/v2/_catalog");
    let index = curl.get(&format!("/index/static?{FLATPAK_INDEX_QUERY}"));
    match ping.status {
        200 => {
            assert_eq!(catalog.status, 200, "{}", catalog.text());
            assert_eq!(common::catalog_names(&catalog.body), vec![PRIVATE, PUBLIC]);
            assert_eq!(index.status, 200, "{}", index.text());
            assert_eq!(common::index_names(&index.body), vec![PUBLIC, PRIVATE]);
            Seen::Host
        }
        401 if catalog.status == 200 => {
            assert_eq!(
                ping.header("www-authenticate"),
                Some(common::expected_challenge(public_url, None).as_str())
            );
            assert_eq!(common::catalog_names(&catalog.body), vec![PUBLIC]);
            assert_eq!(index.status, 200, "{}", index.text());
            assert_eq!(common::index_names(&index.body), vec![PUBLIC]);
            Seen::Anonymous
        }
        401 => {
            for r in [&ping, &catalog, &index] {
                common::assert_error(
                    "rejected",
                    r.status,
                    r.header("content-type"),
                    &r.body,
                    401,
                    "UNAUTHORIZED",
                );
                assert!(!r.text().contains(PRIVATE));
            }
            Seen::Rejected
        }
        other => panic!("unexpected /v2/ status {other}: {}", ping.text()),
    }
}

fn forwarded(plain: &Curl, value: &str) -> Curl {
    plain.header(HEADER, value)
}

#[test]
fn certificates_over_mutual_tls() {
    let env = env(None);
    let public_url = env.gateway.config().server.public_url.clone();
    let pki = &env.pki;

    assert_eq!(
        seen(&env.curl_as(&env.host_cert(HOST)), &public_url),
        Seen::Host
    );
    assert_eq!(
        seen(
            &env.curl_as(&pki.host_cert_via_intermediate(HOST)),
            &public_url
        ),
        Seen::Host,
        "a chain through an intermediate CA"
    );
    assert_eq!(seen(&env.curl(), &public_url), Seen::Anonymous);

    assert_eq!(
        env.central.catalog_calls_for_host(HOST),
        1,
        "one lookup, then cached"
    );
    let calls = env.central.total();
    let bad: [(&str, Issued); 4] = [
        ("another CA", pki.host_cert_from_other_ca(HOST)),
        ("expired", pki.expired_host_cert(HOST)),
        ("not yet valid", pki.not_yet_valid_host_cert(HOST)),
        ("no CN", pki.cert_without_cn()),
    ];
    for (what, cert) in &bad {
        let r = env.curl_as(cert).try_run("GET", "/v2/_catalog");
        let r = r.unwrap_or_else(|e| {
            panic!("{what}: the handshake must succeed so a 401 can be sent: {e}")
        });
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(
            seen(&env.curl_as(cert), &public_url),
            Seen::Rejected,
            "{what}"
        );
    }
    assert_eq!(
        env.central.total(),
        calls,
        "rejected certificates cause no central lookup"
    );
}

#[test]
fn forwarded_certificates_from_a_trusted_frontend() {
    let env = env(None);
    let public_url = env.gateway.config().server.public_url.clone();
    let pki = &env.pki;
    let plain = env.gateway.plain_curl().expect("a plain listener");
    let host = env.host_cert(HOST);

    // As Apache forwards it (newlines turned into spaces), as raw PEM lines are
    // not possible in a header, and URL-escaped (`%{escape:...}`).
    let spaced = host.forwarded_header_value();
    let escaped: String = percent_encoding::utf8_percent_encode(
        host.cert_pem.trim_end(),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .collect();
    for value in [&spaced, &escaped] {
        assert_eq!(
            seen(&forwarded(&plain, value), &public_url),
            Seen::Host,
            "{value:.40}"
        );
    }
    // The header means the same on the TLS listener when the peer is a trusted frontend.
    assert_eq!(
        seen(&forwarded(&env.curl(), &spaced), &public_url),
        Seen::Host
    );

    // Apache's "no certificate", and no header at all.
    assert_eq!(
        seen(&forwarded(&plain, "(null)"), &public_url),
        Seen::Anonymous
    );
    assert_eq!(seen(&plain, &public_url), Seen::Anonymous);

    // A header that is present but does not hold a good certificate is a 401.
    let bad = [
        (
            "another CA",
            pki.host_cert_from_other_ca(HOST).forwarded_header_value(),
        ),
        (
            "expired",
            pki.expired_host_cert(HOST).forwarded_header_value(),
        ),
        (
            "not yet valid",
            pki.not_yet_valid_host_cert(HOST).forwarded_header_value(),
        ),
        ("no CN", pki.cert_without_cn().forwarded_header_value()),
        ("garbage", "definitely not a certificate".to_owned()),
        (
            "bad base64",
            "-----BEGIN CERTIFICATE----- @@@@ -----END CERTIFICATE-----".to_owned(),
        ),
        (
            "not DER",
            "-----BEGIN CERTIFICATE----- aGVsbG8gd29ybGQ= -----END CERTIFICATE-----".to_owned(),
        ),
        ("truncated", spaced[..spaced.len() / 2].to_owned()),
    ];
    for (what, value) in &bad {
        assert_eq!(
            seen(&forwarded(&plain, value), &public_url),
            Seen::Rejected,
            "{what}"
        );
    }
    assert_eq!(
        env.central.catalog_calls_for_host(HOST),
        1,
        "one lookup for every good header, none for bad ones"
    );
}

#[test]
fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    // The plain listener is on loopback, which is not a trusted frontend here.
    let env = env(Some(&["192.0.2.0/24"]));
    let public_url = env.gateway.config().server.public_url.clone();
    let plain = env.gateway.plain_curl().expect("a plain listener");
    let forged = env.host_cert(HOST).forwarded_header_value();

    assert_eq!(
        seen(&forwarded(&plain, &forged), &public_url),
        Seen::Anonymous
    );
    assert_eq!(
        seen(&forwarded(&env.curl(), &forged), &public_url),
        Seen::Anonymous
    );
    // Ignored means ignored: a header that would be a 401 from a frontend is not one here.
    assert_eq!(
        seen(&forwarded(&plain, "garbage"), &public_url),
        Seen::Anonymous
    );
    let r = forwarded(&plain, &forged).get(&format!("/v2/{PRIVATE}/manifests/latest"));
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.header("www-authenticate"),
        Some(common::expected_challenge(&public_url, Some(PRIVATE)).as_str())
    );
    assert_eq!(
        env.central.catalog_calls_for_host(HOST),
        0,
        "the forged host was never looked up"
    );

    // A real TLS client certificate still identifies the host.
    assert_eq!(
        seen(&env.curl_as(&env.host_cert(HOST)), &public_url),
        Seen::Host
    );
}

#[test]
fn the_installer_header_spelling_counts_and_two_headers_are_refused() {
    let env = env(None);
    let public_url = env.gateway.config().server.public_url.clone();
    let plain = env.gateway.plain_curl().expect("a plain listener");
    let host = env.host_cert(HOST).forwarded_header_value();
    // Katello's installer sets `X_RHSM_SSL_CLIENT_CERT`, with underscores.
    assert_eq!(
        seen(&plain.header("X_RHSM_SSL_CLIENT_CERT", &host), &public_url),
        Seen::Host
    );
    // The frontend set one header and the client smuggled in another: neither
    // is believed, whichever holds the good certificate.
    let other = env
        .pki
        .host_cert(OTHER_HOST_FOR_AMBIGUITY)
        .forwarded_header_value();
    for (first, second) in [(&host, &other), (&other, &host)] {
        let both = plain
            .header(HEADER, first)
            .header("X_RHSM_SSL_CLIENT_CERT", second);
        assert_eq!(seen(&both, &public_url), Seen::Rejected);
    }
    let with_null = plain
        .header("X_RHSM_SSL_CLIENT_CERT", "(null)")
        .header(HEADER, &host);
    assert_eq!(seen(&with_null, &public_url), Seen::Rejected);
}

const OTHER_HOST_FOR_AMBIGUITY: &str = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";

/// Katello's host setup links the SCA content access certificate
/// (`/etc/pki/entitlement/<serial>.pem`) into `/etc/containers/certs.d/`,
/// so podman, skopeo and flatpak present that; subscription-manager's tools
/// hold the consumer identity certificate. Both name the consumer in their CN;
/// other certificates from Candlepin's CA do not, and are refused before any
/// lookup, over TLS and forwarded alike.
#[test]
fn both_consumer_certificates_name_the_host_and_other_candlepin_certificates_do_not() {
    let env = env(None);
    let public_url = env.gateway.config().server.public_url.clone();
    let pki = &env.pki;
    let plain = env.gateway.plain_curl().expect("a plain listener");

    let good = [
        ("content access", pki.content_access_cert(HOST)),
        (
            "consumer identity",
            pki.identity_cert(HOST, "host1.example.com"),
        ),
    ];
    for (what, cert) in &good {
        assert_eq!(
            seen(&env.curl_as(cert), &public_url),
            Seen::Host,
            "{what} over TLS"
        );
        assert_eq!(
            seen(
                &forwarded(&plain, &cert.forwarded_header_value()),
                &public_url
            ),
            Seen::Host,
            "{what} forwarded"
        );
    }
    assert_eq!(
        env.central.catalog_calls_for_host(HOST),
        1,
        "the same host, whichever certificate: one lookup"
    );

    // A pool entitlement's CN is the entitlement's id; give it the host's
    // UUID as CN too, so only its kind can be what refuses it.
    let calls = env.central.total();
    let bad = [
        ("pool entitlement", pki.pool_entitlement_cert(HOST)),
        (
            "pool entitlement, its own id",
            pki.pool_entitlement_cert("8a8b8c8d9e9f0a1b2c3d4e5f60718293"),
        ),
        (
            "anonymous cloud consumer",
            pki.anonymous_content_access_cert(HOST),
        ),
        (
            "some entitlement extensions",
            pki.partial_entitlement_cert(HOST),
        ),
    ];
    for (what, cert) in &bad {
        let r = env
            .curl_as(cert)
            .try_run("GET", "/v2/_catalog")
            .unwrap_or_else(|e| panic!("{what}: the handshake must succeed: {e}"));
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(
            seen(&env.curl_as(cert), &public_url),
            Seen::Rejected,
            "{what} over TLS"
        );
        assert_eq!(
            seen(
                &forwarded(&plain, &cert.forwarded_header_value()),
                &public_url
            ),
            Seen::Rejected,
            "{what} forwarded"
        );
    }
    assert_eq!(
        env.central.total(),
        calls,
        "refused certificates cause no central lookup"
    );
}
