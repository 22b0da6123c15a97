//! Real clients end to end: skopeo, podman and flatpak talk to the gateway over
//! TLS, the gateway talks to a real registry (docker-registry behind a
//! Pulp-shaped index service, see `gateway_tests::registry_upstream`), and
//! entitlements come from a fake central plus Katello's pushes.
//!
//! Needs `skopeo`, `podman`, `flatpak`, `docker-registry`, `ostree`,
//! `dbus-daemon`, `gcc` (static libc), `unshare` and `curl`; without them each test
//! prints `SKIPPED: ...` and passes, unless `CG_REQUIRE_E2E=1` (CI), which makes it
//! fail. The content of the repositories and who may see what:
//! `gateway_tests::e2e::stack`.

use std::collections::BTreeSet;
use std::io::Read;

use gateway_tests::client::Curl;
use gateway_tests::e2e::flatpak::{AUTHENTICATOR, FlatpakEnv, IndexRelay};
use gateway_tests::e2e::images::{
    HELLO_REF, HELLO_V1, HELLO_V2, PLATFORM_REF, PRIVATE_OUTPUT, PRIVATE_REF,
};
use gateway_tests::e2e::stack::{
    HOST_A, HOST_B, PASSWORD, REPO_A, REPO_B, REPO_HELLO, REPO_PLATFORM, REPO_PRIVATE, REPO_PUBLIC,
    Stack, USER,
};
use gateway_tests::e2e::{self, Needs};
use gateway_tests::fake_central::CentralRoute;
use gateway_tests::fake_pulp::FLATPAK_INDEX_QUERY;
use gateway_tests::registry_upstream::UpstreamRoute;
use serde_json::value::RawValue;

/// What docker-registry's error code `NAME_UNKNOWN` looks like in Go clients' messages.
const NAME_UNKNOWN: &str = "name unknown";

fn digest_in_oci_dir(dir: &std::path::Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json"))
            .expect("index.json is JSON");
    index["manifests"][0]["digest"]
        .as_str()
        .expect("a manifest in index.json")
        .to_owned()
}

/// `curl` to the gateway presenting `uuid`'s subscription certificate.
fn curl_as_host(stack: &Stack, uuid: &str) -> Curl {
    let pair = stack
        .host_cert(uuid)
        .write_to(&stack.scratch("curl-certs"), uuid);
    stack.gateway.curl().cert_pair(&pair)
}

/// `curl` to the upstream presenting the gateway's own client certificate.
fn curl_upstream(stack: &Stack) -> Curl {
    let pair = stack
        .gateway
        .upstream_cert()
        .write_to(&stack.scratch("curl-certs"), "upstream");
    Curl::new(stack.upstream.url())
        .cacert(&stack.gateway.files().ca)
        .cert_pair(&pair)
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

/// `Name` -> raw JSON text of each `Results[]` entry, in order.
fn raw_results(body: &[u8]) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Index<'a> {
        #[serde(rename = "Results", borrow)]
        results: Vec<&'a RawValue>,
    }
    let index: Index = serde_json::from_slice(body).expect("an index");
    index
        .results
        .iter()
        .map(|raw| {
            let v: serde_json::Value = serde_json::from_str(raw.get()).expect("an entry");
            (
                v["Name"].as_str().expect("Name").to_owned(),
                raw.get().to_owned(),
            )
        })
        .collect()
}

fn names(body: &[u8]) -> BTreeSet<String> {
    raw_results(body).into_iter().map(|(n, _)| n).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn refs(remote_ls: &str) -> BTreeSet<String> {
    remote_ls
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The stand-in for Pulp behaves like Pulp where the gateway depends on it.
#[test]
fn upstream_is_pulp_shaped() {
    if !e2e::ready("upstream_is_pulp_shaped", Needs::Registry) {
        return;
    }
    let stack = Stack::start();
    let up = curl_upstream(&stack);
    let prefix = stack.upstream.registry_path().to_owned();

    let r = up.get(&format!("{prefix}/index/static?tag=latest"));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json()["detail"],
        "Missing label:org.flatpak.ref:exists=1."
    );

    let r = up.get(&format!("{prefix}/index/static?{FLATPAK_INDEX_QUERY}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    for h in ["etag", "cache-control", "last-modified", "expires"] {
        assert_eq!(r.header(h), None, "Pulp sends no {h}");
    }
    let text = String::from_utf8(r.body.clone()).expect("UTF-8");
    assert!(
        text.contains("ünïcödé ✓"),
        "raw UTF-8, not \\u escapes: {text}"
    );
    assert!(
        !text.contains("\": ") && !text.contains(", \""),
        "compact JSON: {text}"
    );
    let index = r.json();
    assert_eq!(
        index["Registry"],
        stack.upstream.url(),
        "Registry = its own origin"
    );
    assert!(index.get("Lists").is_none());
    assert_eq!(
        names(&r.body),
        set(&[REPO_HELLO, REPO_PLATFORM, REPO_PRIVATE]),
        "only Flatpak images: {text}"
    );
    // The private app is pushed as an image index: the index lists its child.
    let private = index["Results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["Name"] == REPO_PRIVATE)
        .unwrap();
    assert_eq!(
        private["Images"][0]["Digest"],
        stack.images.private.image_digests[0].as_str()
    );
    assert_eq!(
        private["Images"][0]["MediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        private["Images"][0]["Labels"]["org.flatpak.ref"],
        PRIVATE_REF
    );

    let r = up.get(&format!(
        "{prefix}/index/static?label%3Aorg.flatpak.ref%3Aexists=1&architecture=arm64"
    ));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["Results"], serde_json::json!([]));

    // /v2/ is proxied keeping every Accept line: docker-registry refuses an
    // OCI index unless one of them allows it, and here only the first does.
    let r = up
        .header("Accept", "application/vnd.oci.image.index.v1+json")
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .get(&format!("{prefix}/v2/{REPO_PUBLIC}/manifests/latest"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("docker-content-digest"),
        Some(stack.images.tiny_multi.digest.as_str())
    );
    let accepts = stack
        .upstream
        .requests_of(UpstreamRoute::Registry)
        .last()
        .map(|r| r.accept().len());
    assert_eq!(accepts, Some(2));
    // Nothing at the origin's root: a client must not use `Registry` directly.
    assert_eq!(up.get("/v2/").status, 404);
}

/// skopeo and podman with a host's subscription certificate, and anonymously.
#[test]
fn skopeo_and_podman_with_subscription_certificates() {
    if !e2e::ready(
        "skopeo_and_podman_with_subscription_certificates",
        Needs::Containers,
    ) {
        return;
    }
    let stack = Stack::start();
    let tools = stack.container_tools();
    let certs_a = path(&tools.cert_dir("host-a", &stack.host_cert(HOST_A)));
    let certs_b = path(&tools.cert_dir("host-b", &stack.host_cert(HOST_B)));
    let anonymous = path(&tools.ca_only_dir());
    let digest_a = stack.registry_digest(REPO_A, "latest");
    let digest_public = stack.registry_digest(REPO_PUBLIC, "latest");

    // skopeo inspect: A's repository, with A's certificate.
    let out = tools
        .skopeo(&[
            "inspect",
            "--cert-dir",
            &certs_a,
            "--format",
            "{{.Digest}}",
            &tools.docker(REPO_A, "latest"),
        ])
        .run()
        .ok();
    assert_eq!(out.stdout.trim(), digest_a);

    // skopeo copy: the bytes come through unchanged.
    let copy = stack.scratch("skopeo-copy-a");
    tools
        .skopeo(&[
            "copy",
            "--src-cert-dir",
            &certs_a,
            &tools.docker(REPO_A, "latest"),
            &format!("oci:{}:latest", copy.display()),
        ])
        .run()
        .ok();
    assert_eq!(digest_in_oci_dir(&copy), digest_a);

    // tags/list (Pulp's paging Link is rewritten by the gateway).
    let out = tools
        .skopeo(&[
            "list-tags",
            "--cert-dir",
            &certs_a,
            &tools.docker_repo(REPO_A),
        ])
        .run()
        .ok();
    let tags: serde_json::Value = serde_json::from_str(&out.stdout).expect("list-tags JSON");
    assert_eq!(tags["Tags"], serde_json::json!(["latest"]), "{out}");

    // B's repository does not exist for A.
    let out = tools
        .skopeo(&[
            "inspect",
            "--cert-dir",
            &certs_a,
            &tools.docker(REPO_B, "latest"),
        ])
        .run()
        .failed();
    assert!(out.stderr.contains(NAME_UNKNOWN), "{out}");
    // ... but does for B, which in turn cannot see A's.
    tools
        .skopeo(&[
            "inspect",
            "--cert-dir",
            &certs_b,
            &tools.docker(REPO_B, "latest"),
        ])
        .run()
        .ok();
    let out = tools
        .skopeo(&[
            "inspect",
            "--cert-dir",
            &certs_b,
            &tools.docker(REPO_A, "latest"),
        ])
        .run()
        .failed();
    assert!(out.stderr.contains(NAME_UNKNOWN), "{out}");

    // Anonymous: the public repository (a multi-arch image index) works ...
    let out = tools
        .skopeo(&[
            "inspect",
            "--raw",
            "--cert-dir",
            &anonymous,
            &tools.docker(REPO_PUBLIC, "latest"),
        ])
        .run()
        .ok();
    assert_eq!(
        out.stdout.as_bytes(),
        stack
            .upstream
            .manifest_bytes(REPO_PUBLIC, "latest")
            .unwrap()
    );
    let copy = stack.scratch("skopeo-copy-public");
    tools
        .skopeo(&[
            "copy",
            "--all",
            "--src-cert-dir",
            &anonymous,
            &tools.docker(REPO_PUBLIC, "latest"),
            &format!("oci:{}:latest", copy.display()),
        ])
        .run()
        .ok();
    assert_eq!(
        digest_in_oci_dir(&copy),
        digest_public,
        "the whole image index"
    );
    // ... and a private one asks for credentials.
    let out = tools
        .skopeo(&[
            "inspect",
            "--cert-dir",
            &anonymous,
            &tools.docker(REPO_A, "latest"),
        ])
        .run()
        .failed();
    assert!(
        out.stderr.contains("unauthorized") || out.stderr.contains("authentication required"),
        "{out}"
    );

    // podman pull with A's certificate.
    tools
        .podman(&[
            "pull",
            "--cert-dir",
            &certs_a,
            &tools.image(REPO_A, "latest"),
        ])
        .run()
        .ok();
    let out = tools
        .podman(&[
            "image",
            "inspect",
            "--format",
            "{{.Digest}}",
            &tools.image(REPO_A, "latest"),
        ])
        .run()
        .ok();
    assert_eq!(out.stdout.trim(), digest_a);
    let out = tools
        .podman(&[
            "pull",
            "--cert-dir",
            &certs_a,
            &tools.image(REPO_B, "latest"),
        ])
        .run()
        .failed();
    assert!(out.stderr.contains(NAME_UNKNOWN), "{out}");
    // Anonymous podman pull of the public multi-arch image.
    tools
        .podman(&[
            "pull",
            "--cert-dir",
            &anonymous,
            &tools.image(REPO_PUBLIC, "latest"),
        ])
        .run()
        .ok();
    let out = tools
        .podman(&[
            "image",
            "inspect",
            "--format",
            "{{.Digest}}",
            &tools.image(REPO_PUBLIC, "latest"),
        ])
        .run()
        .ok();
    assert_eq!(out.stdout.trim(), digest_public);

    // Every pull reached the real registry through the gateway with several Accept lines.
    let manifest_gets: Vec<_> = stack
        .upstream
        .requests_of(UpstreamRoute::Registry)
        .into_iter()
        .filter(|r| r.path.contains("/manifests/") && r.method == "GET")
        .collect();
    assert!(
        manifest_gets.iter().any(|r| r.accept().len() > 1),
        "Go clients send several Accept lines and the gateway forwards them"
    );
}

/// `podman login` and `skopeo --creds`: the registry token flow through
/// `/v2/token`, central and the katello-token plugin.
#[test]
fn podman_login_and_skopeo_creds_use_the_token_flow() {
    if !e2e::ready(
        "podman_login_and_skopeo_creds_use_the_token_flow",
        Needs::Containers,
    ) {
        return;
    }
    let stack = Stack::start();
    let tools = stack.container_tools();
    let anonymous = path(&tools.ca_only_dir());
    let digest_a = stack.registry_digest(REPO_A, "latest");

    let out = tools
        .podman(&[
            "login",
            "--cert-dir",
            &anonymous,
            "--username",
            USER,
            "--password-stdin",
            tools.registry(),
        ])
        .stdin(PASSWORD)
        .run()
        .ok();
    assert!(out.stdout.contains("Login Succeeded"), "{out}");
    let auth =
        std::fs::read_to_string(tools.auth_file()).expect("podman login wrote the auth file");
    assert!(auth.contains(tools.registry()), "{auth}");

    tools
        .podman(&[
            "pull",
            "--cert-dir",
            &anonymous,
            &tools.image(REPO_A, "latest"),
        ])
        .run()
        .ok();
    let out = tools
        .podman(&[
            "image",
            "inspect",
            "--format",
            "{{.Digest}}",
            &tools.image(REPO_A, "latest"),
        ])
        .run()
        .ok();
    assert_eq!(out.stdout.trim(), digest_a);
    let out = tools
        .podman(&[
            "pull",
            "--cert-dir",
            &anonymous,
            &tools.image(REPO_B, "latest"),
        ])
        .run()
        .failed();
    assert!(out.stderr.contains(NAME_UNKNOWN), "{out}");
    // skopeo reads the same auth file.
    tools
        .skopeo(&[
            "inspect",
            "--cert-dir",
            &anonymous,
            &tools.docker(REPO_PRIVATE, "latest"),
        ])
        .run()
        .ok();
    tools.podman(&["logout", tools.registry()]).run().ok();

    // skopeo --creds, no auth file.
    let out = tools
        .skopeo(&[
            "inspect",
            "--cert-dir",
            &anonymous,
            "--creds",
            &format!("{USER}:{PASSWORD}"),
            "--format",
            "{{.Digest}}",
            &tools.docker(REPO_A, "latest"),
        ])
        .run()
        .ok();
    assert_eq!(out.stdout.trim(), digest_a);
    let out = tools
        .skopeo(&[
            "inspect",
            "--cert-dir",
            &anonymous,
            "--creds",
            &format!("{USER}:wrong"),
            &tools.docker(REPO_A, "latest"),
        ])
        .run()
        .failed();
    assert!(
        out.stderr.contains("unauthorized") || out.stderr.contains("401"),
        "{out}"
    );

    // Central issued the tokens for the user, and the gateway remembers them.
    let tokens = stack.central.requests_of(CentralRoute::Token);
    assert!(
        tokens
            .iter()
            .any(|r| r.query_param("account").as_deref() == Some(USER)
                && r.query_param("scope").as_deref() == Some(&format!("repository:{REPO_A}:pull"))),
        "token requests: {:?}",
        tokens
            .iter()
            .map(|r| r.path_and_query())
            .collect::<Vec<_>>()
    );
    let users = stack.gateway.katello_curl().get("/container_gateway/users");
    assert_eq!(users.status, 200, "{}", users.text());
    assert_eq!(users.json()["users"], serde_json::json!([USER]));
}

/// flatpak remote-add / remote-ls / install / run / update of a public app
/// (anonymous: flatpak 1.14 presents no client certificate).
#[test]
fn flatpak_installs_and_updates_a_public_app() {
    if !e2e::ready("flatpak_installs_and_updates_a_public_app", Needs::Flatpak) {
        return;
    }
    let stack = Stack::start();
    let fp = FlatpakEnv::new(&stack.pki.ca_pem());
    let remote = format!("oci+{}/", stack.gateway.url());
    fp.flatpak(&["remote-add", "--user", "--no-gpg-verify", "gw", &remote])
        .run()
        .ok();

    let out = fp
        .flatpak(&["remote-ls", "--user", "--columns=ref", "gw"])
        .run()
        .ok();
    assert_eq!(
        refs(&out.stdout),
        set(&[HELLO_REF, PLATFORM_REF]),
        "exactly the anonymous-visible refs\n{out}"
    );

    fp.flatpak(&[
        "install",
        "--user",
        "-y",
        "--noninteractive",
        "gw",
        "org.test.Hello",
    ])
    .run()
    .ok();
    let out = fp.flatpak(&["run", "--user", "org.test.Hello"]).run().ok();
    assert_eq!(out.stdout.trim(), HELLO_V1, "{out}");
    // Nothing of the machine's desktop services (document portal, accessibility
    // bus, session helper) was started for the run: what the suite does is the
    // same whether or not flatpak's recommended packages are installed.
    let activated = fp.activated_services();
    assert!(
        activated.iter().all(|s| s == AUTHENTICATOR),
        "the private bus activated {activated:?}"
    );
    // Manifests and blobs came through the gateway (its `Registry`), by digest.
    let hello_manifest = format!(
        "{}/v2/{REPO_HELLO}/manifests/{}",
        stack.upstream.registry_path(),
        stack.images.hello_v1.digest
    );
    assert!(
        stack
            .upstream
            .requests_of(UpstreamRoute::Registry)
            .iter()
            .any(|r| r.path == hello_manifest),
        "flatpak fetched {hello_manifest} through the gateway"
    );

    // The gateway's Cache-Control makes flatpak revalidate instead of trusting
    // its copy for 30 minutes: each command reaches the gateway (and, with no
    // index TTL, the upstream).
    let before = stack.upstream.requests_of(UpstreamRoute::Index).len();
    fp.flatpak(&["remote-ls", "--user", "--columns=ref", "gw"])
        .run()
        .ok();
    assert!(
        stack.upstream.requests_of(UpstreamRoute::Index).len() > before,
        "flatpak asked for the index again"
    );

    // A new build of the app shows up on `flatpak update`.
    stack.push(&stack.images.hello_v2, REPO_HELLO, "latest");
    fp.flatpak(&["update", "--user", "-y", "--noninteractive"])
        .run()
        .ok();
    let out = fp.flatpak(&["run", "--user", "org.test.Hello"]).run().ok();
    assert_eq!(out.stdout.trim(), HELLO_V2, "{out}");
    let out = fp.flatpak(&["info", "--user", "org.test.Hello"]).run().ok();
    assert!(
        out.stdout
            .contains(stack.images.hello_v2.digest.trim_start_matches("sha256:")),
        "the installed commit is the new manifest digest\n{out}"
    );
}

/// Host A's filtered index, fetched as flatpak >= 1.16.1 fetches it (client
/// certificate from certs.d, `Accept-Encoding: gzip`, no Authorization).
#[test]
fn host_index_is_what_flatpak_1_16_would_receive() {
    if !e2e::ready(
        "host_index_is_what_flatpak_1_16_would_receive",
        Needs::Registry,
    ) {
        return;
    }
    let stack = Stack::start();
    let path = format!("/index/static?{FLATPAK_INDEX_QUERY}");
    let as_flatpak = |c: Curl| {
        c.header("User-Agent", "Flatpak 1.16.1")
            .header("Accept-Encoding", "gzip")
    };
    let r = as_flatpak(curl_as_host(&stack, HOST_A)).get(&path);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let cache_control = r.header("cache-control").unwrap_or_default().to_owned();
    assert!(cache_control.contains("no-cache"), "{cache_control}");
    let etag = r.header("etag").expect("an ETag").to_owned();
    let body = gunzip(&r.body);
    let index: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(index["Registry"], format!("{}/", stack.gateway.url()));
    assert_eq!(
        names(&body),
        set(&[REPO_HELLO, REPO_PLATFORM, REPO_PRIVATE]),
        "A sees the public apps and its own"
    );
    // Fields flatpak >= 1.17.1 requires.
    for result in index["Results"].as_array().unwrap() {
        for image in result["Images"].as_array().expect("Images") {
            for field in ["Digest", "MediaType", "OS", "Architecture"] {
                assert!(image[field].is_string(), "{field} in {image}");
            }
        }
    }
    // Entries are Pulp's, byte for byte.
    let upstream = curl_upstream(&stack).get(&format!(
        "{}/index/static?{FLATPAK_INDEX_QUERY}",
        stack.upstream.registry_path()
    ));
    assert_eq!(upstream.status, 200);
    let pulp_entries = raw_results(&upstream.body);
    for (name, raw) in raw_results(&body) {
        let pulp = pulp_entries
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r.as_str());
        assert_eq!(
            Some(raw.as_str()),
            pulp,
            "{name} is copied through unchanged"
        );
    }
    // Revalidation answers 304 with the same caching rules.
    let r = as_flatpak(curl_as_host(&stack, HOST_A))
        .header("If-None-Match", &etag)
        .get(&path);
    assert_eq!(r.status, 304);
    assert!(
        r.header("cache-control")
            .unwrap_or_default()
            .contains("no-cache")
    );

    // Others get less: anonymous (flatpak 1.14) and host B see the public apps only.
    let r = as_flatpak(stack.gateway.curl()).get(&path);
    assert_eq!(r.status, 200);
    assert_eq!(names(&gunzip(&r.body)), set(&[REPO_HELLO, REPO_PLATFORM]));
    let r = as_flatpak(curl_as_host(&stack, HOST_B)).get(&path);
    assert_eq!(r.status, 200);
    assert_eq!(names(&gunzip(&r.body)), set(&[REPO_HELLO, REPO_PLATFORM]));
}

/// A non-public app: flatpak 1.14 gets host A's index (as flatpak >= 1.16.1
/// would fetch it with A's certificate) and pulls through the Bearer token flow
/// with the user's credentials in the authenticator's auth.json.
#[test]
fn flatpak_installs_a_private_app_with_a_bearer_token() {
    if !e2e::ready(
        "flatpak_installs_a_private_app_with_a_bearer_token",
        Needs::Flatpak,
    ) {
        return;
    }
    let stack = Stack::start();
    let r = curl_as_host(&stack, HOST_A)
        .header("User-Agent", "Flatpak 1.16.1")
        .get(&format!("/index/static?{FLATPAK_INDEX_QUERY}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let relay = IndexRelay::start(r.body.clone().into()).expect("index relay");

    let fp = FlatpakEnv::new(&stack.pki.ca_pem());
    let remote = format!("oci+{}/", relay.url());
    fp.flatpak(&["remote-add", "--user", "--no-gpg-verify", "host-a", &remote])
        .run()
        .ok();
    let out = fp
        .flatpak(&["remote-ls", "--user", "--columns=ref", "host-a"])
        .run()
        .ok();
    assert_eq!(
        refs(&out.stdout),
        set(&[HELLO_REF, PLATFORM_REF, PRIVATE_REF]),
        "{out}"
    );

    // Without credentials the gateway challenges and central refuses a token.
    let out = fp
        .flatpak(&[
            "install",
            "--user",
            "-y",
            "--noninteractive",
            "host-a",
            "org.test.Private",
        ])
        .run()
        .failed();
    assert!(
        out.stderr.contains("Failed to get tokens for ref"),
        "the authenticator got no token\n{out}"
    );
    let anonymous_token_requests = stack
        .central
        .requests_of(CentralRoute::Token)
        .iter()
        .filter(|r| {
            r.authorization().is_none()
                && r.query_param("scope").as_deref()
                    == Some(&format!("repository:{REPO_PRIVATE}:pull"))
        })
        .count();
    assert!(
        anonymous_token_requests >= 1,
        "the gateway challenged and the anonymous token request reached central"
    );

    // With the user's credentials where `podman login` puts them.
    fp.write_auth_json(&stack.registry_host(), USER, PASSWORD);
    fp.flatpak(&[
        "install",
        "--user",
        "-y",
        "--noninteractive",
        "host-a",
        "org.test.Private",
    ])
    .run()
    .ok();
    let out = fp
        .flatpak(&["run", "--user", "org.test.Private"])
        .run()
        .ok();
    assert_eq!(out.stdout.trim(), PRIVATE_OUTPUT, "{out}");
    // The token flow went through the authenticator, the only service the
    // private bus offers (and the proof that its log shows activations).
    assert_eq!(fp.activated_services(), [AUTHENTICATOR]);

    // The authenticator fetched a token for the private repository with Basic
    // credentials (no `account`: the gateway derived it), and the pulls used it.
    let tokens = stack.central.requests_of(CentralRoute::Token);
    assert!(
        tokens.iter().any(
            |r| r.authorization().is_some_and(|a| a.starts_with("Basic "))
                && r.query_param("scope").as_deref()
                    == Some(&format!("repository:{REPO_PRIVATE}:pull"))
                && r.query_param("account").as_deref() == Some(USER)
        ),
        "token requests: {:?}",
        tokens
            .iter()
            .map(|r| r.path_and_query())
            .collect::<Vec<_>>()
    );
    let private_manifest = format!(
        "{}/v2/{REPO_PRIVATE}/manifests/{}",
        stack.upstream.registry_path(),
        stack.images.private.image_digests[0]
    );
    assert!(
        stack
            .upstream
            .requests_of(UpstreamRoute::Registry)
            .iter()
            .any(|r| r.path == private_manifest && r.method == "GET"),
        "flatpak fetched the child manifest {private_manifest} by digest"
    );
    assert!(relay.hits() >= 1);
}
