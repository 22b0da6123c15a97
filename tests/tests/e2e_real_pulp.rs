//! The gateway in front of a REAL Pulp (pulpcore + pulp_container from PyPI,
//! PostgreSQL, gunicorn and aiohttp), driven by real clients: curl, skopeo,
//! podman and flatpak.
//!
//! Pulp comes from `shared/tools/real-pulp.sh` (see the repository README,
//! "Against a real Pulp"):
//!
//! ```sh
//! ../shared/tools/real-pulp.sh up   /tmp/cg-pulp && ../shared/tools/real-pulp.sh seed /tmp/cg-pulp
//! CG_REAL_PULP_DIR=/tmp/cg-pulp cargo test -p gateway-tests --test e2e_real_pulp
//! ../shared/tools/real-pulp.sh down /tmp/cg-pulp
//! ```
//!
//! Without `CG_REAL_PULP_DIR` (a directory holding the script's `pulp.env`),
//! or without the client tools, every test prints `SKIPPED: ...` and passes;
//! with `CG_REQUIRE_REAL_PULP=1` (CI) it fails instead.
//!
//! Each test starts its own gateway (`pulp.registry_path = ""`: real Pulp
//! serves `/v2/` and `/index/` at the API root; plain HTTP on loopback), a fake
//! central speaking Katello's wire format, and applies Katello's pushes:
//!
//! | seeded repository | content | `auth_required` | host A | host B |
//! |---|---|---|---|---|
//! | `org/flatpak/hello` | Flatpak app `org.test.Hello` | yes (no in the public-Flatpak test) | yes | - |
//! | `org/flatpak/platform` | Flatpak runtime `org.test.Platform` | yes (no in the public-Flatpak test) | yes | yes |
//! | `org/lib/tiny` | plain OCI image, tags `latest` and `1.0` | yes | yes | - |
//! | `org/lib/other` | plain OCI image | no | (public) | (public) |
//! | `org/lib/multi` | multi-arch: tag `latest` an OCI index, `v2s2` a Docker manifest list, each of linux/amd64 and linux/arm64/v8 | yes | yes | - |
//!
//! `org/lib/multi` comes from `tests/e2e/seed_multiarch.py DIR` (after `seed`;
//! the CI step runs it); only the tests that use it need it.
//!
//! `fake_pulp_answers_like_real_pulp` also holds the project's stand-in
//! (`gateway_tests::fake_pulp`, which the core suites run against) to real
//! Pulp's answers: statuses, error bodies, content negotiation, headers,
//! manifest lists. (The fake's `redirect_manifests` and `direct_blobs` modes
//! model older pulp_container releases that no 2.30 setting reproduces; see
//! that module's documentation.)
//! CI runs all of it through `tests/e2e/real-pulp-ci.sh`.
//!
//! What the gateway must do with the real thing: filter Pulp's own index
//! (entries byte for byte, `Registry` = us), relay manifests with Pulp's
//! digests, relay Pulp's signed blob redirects to its content app (clients
//! follow them and verify digests), and answer TLS at once (gunicorn, spoken to
//! directly, stalls Go clients for 20 s: see `shared/notes/real-pulp.md`).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gateway_tests::client::Curl;
use gateway_tests::e2e::flatpak::{FlatpakEnv, ca_namespace_works};
use gateway_tests::e2e::stack::ContainerTools;
use gateway_tests::e2e::{Outcome, say, which};
use gateway_tests::fake_central::FakeCentral;
use gateway_tests::fake_pulp::{FLATPAK_INDEX_QUERY, sha256_digest};
use gateway_tests::harness::{Gateway, GatewayBuilder};
use gateway_tests::pki::{Issued, Pki};
use serde_json::value::RawValue;

/// Directory of a `real-pulp.sh up` + `seed` (holds `pulp.env`).
const DIR_ENV: &str = "CG_REAL_PULP_DIR";
/// `1`: fail instead of skipping when Pulp or a tool is missing.
const REQUIRE_ENV: &str = "CG_REQUIRE_REAL_PULP";

const HOST_A: &str = "3b9e0c41-5d6f-4a7b-8c9d-0e1f2a3b4c5d";
const HOST_B: &str = "9c8b7a69-5847-4362-a514-0f1e2d3c4b5a";

const HELLO: &str = "org/flatpak/hello";
const PLATFORM: &str = "org/flatpak/platform";
const TINY: &str = "org/lib/tiny";
const OTHER: &str = "org/lib/other";
const MULTI: &str = "org/lib/multi";

const HELLO_REF: &str = "app/org.test.Hello/x86_64/stable";
const PLATFORM_REF: &str = "runtime/org.test.Platform/x86_64/1";
/// What the seeded app prints (a static binary built by `real-pulp.sh seed`).
const HELLO_OUTPUT: &str = "hello from flatpak";

/// Host A's and host B's auth_required repositories.
const HOST_A_REPOS: [&str; 4] = [HELLO, PLATFORM, TINY, MULTI];
const HOST_B_REPOS: [&str; 1] = [PLATFORM];

/// What the Go clients and flatpak send when they fetch a manifest.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// `org/lib/multi`'s tags and the list type each is.
const MULTI_TAGS: [(&str, &str); 2] = [("latest", OCI_INDEX), ("v2s2", DOCKER_LIST)];

/// A Go client pointed straight at gunicorn waits 10 s for each TLS handshake
/// (about 20 s per command). Through the gateway a command takes well under a
/// second here; this bound only catches that stall coming back.
const NO_STALL: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// The real Pulp
// ---------------------------------------------------------------------------

/// `(architecture, manifest digest)` of each entry of a manifest list.
type Platforms = Vec<(String, String)>;

/// A running, seeded `real-pulp.sh` instance, from its `pulp.env`.
struct RealPulp {
    dir: PathBuf,
    /// `http://127.0.0.1:<api>`: REST API, `/v2/` and `/index/` at the root.
    api: String,
    /// Pulp's `CONTENT_ORIGIN` (where blob redirects point).
    content_origin: String,
}

fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// Skip (or fail, with `CG_REQUIRE_REAL_PULP=1`) with a visible message.
fn skip(test: &str, why: &str) -> Option<RealPulp> {
    let msg = format!(
        "SKIPPED: {test}: {why} (start one with `shared/tools/real-pulp.sh up DIR && real-pulp.sh seed DIR`, \
         then set {DIR_ENV}=DIR; set {REQUIRE_ENV}=1 to fail instead)"
    );
    if required() {
        panic!("{REQUIRE_ENV}=1 but {msg}");
    }
    say(&msg);
    None
}

/// `KEY=value` lines of a shell-sourceable file (values possibly single-quoted).
fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v);
            (k.trim().to_owned(), v.to_owned())
        })
        .collect()
}

impl RealPulp {
    /// The instance named by `CG_REAL_PULP_DIR`, when it is up and seeded and
    /// every tool in `tools` is installed.
    fn get(test: &str, tools: &[&str]) -> Option<RealPulp> {
        let Some(dir) = std::env::var_os(DIR_ENV).map(PathBuf::from) else {
            return skip(test, &format!("{DIR_ENV} is not set"));
        };
        let env_file = dir.join("pulp.env");
        let Ok(text) = std::fs::read_to_string(&env_file) else {
            return skip(test, &format!("no {}", env_file.display()));
        };
        let vars = parse_env(&text);
        let var = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (Some(api), Some(content_origin)) = (var("PULP_API"), var("PULP_CONTENT_ORIGIN"))
        else {
            return skip(
                test,
                &format!(
                    "{} lacks PULP_API or PULP_CONTENT_ORIGIN",
                    env_file.display()
                ),
            );
        };
        let missing: Vec<&str> = tools
            .iter()
            .copied()
            .filter(|t| which(t).is_none())
            .collect();
        if !missing.is_empty() {
            return skip(test, &format!("not on PATH: {}", missing.join(", ")));
        }
        if tools.contains(&"flatpak")
            && let Err(e) = ca_namespace_works()
        {
            return skip(test, &e);
        }
        let pulp = RealPulp {
            dir,
            api,
            content_origin,
        };
        let status = pulp
            .curl()
            .max_time(Duration::from_secs(10))
            .try_run("GET", "/pulp/api/v3/status/");
        match status {
            Ok(r) if r.status == 200 => {}
            Ok(r) => return skip(test, &format!("Pulp status answered {}", r.status)),
            Err(e) => return skip(test, &format!("Pulp at {} is not up: {e}", pulp.api)),
        }
        for repo in [HELLO, PLATFORM, TINY, OTHER] {
            let r = pulp
                .curl()
                .header("Accept", MANIFEST_ACCEPT)
                .head(&format!("/v2/{repo}/manifests/latest"));
            if r.status != 200 {
                return skip(
                    test,
                    &format!(
                        "Pulp has no {repo}:latest ({}): run `real-pulp.sh seed`",
                        r.status
                    ),
                );
            }
        }
        Some(pulp)
    }

    /// [`RealPulp::get`], when `tests/e2e/seed_multiarch.py` seeded `org/lib/multi` too.
    fn get_multi(test: &str, tools: &[&str]) -> Option<RealPulp> {
        let pulp = RealPulp::get(test, tools)?;
        for (tag, list_type) in MULTI_TAGS {
            let r = pulp
                .curl()
                .header("Accept", list_type)
                .head(&format!("/v2/{MULTI}/manifests/{tag}"));
            if r.status != 200 {
                return skip(
                    test,
                    &format!(
                        "Pulp has no {MULTI}:{tag} ({}): run `python3 tests/e2e/seed_multiarch.py {}`",
                        r.status,
                        pulp.dir.display()
                    ),
                );
            }
        }
        Some(pulp)
    }

    /// `repo:tag`'s manifest list as Pulp serves it: its digest, and
    /// `(architecture, digest)` of each listed manifest.
    fn list(&self, repo: &str, tag: &str, list_type: &str) -> (String, Platforms) {
        let r = self
            .curl()
            .header("Accept", MANIFEST_ACCEPT)
            .get(&format!("/v2/{repo}/manifests/{tag}"));
        assert_eq!(r.status, 200, "Pulp {repo}:{tag}: {}", r.text());
        assert_eq!(r.header("content-type"), Some(list_type), "{repo}:{tag}");
        let digest = self.digest(repo, tag);
        let children = r.json()["manifests"]
            .as_array()
            .expect("a list names manifests")
            .iter()
            .map(|m| {
                (
                    m["platform"]["architecture"]
                        .as_str()
                        .expect("a platform")
                        .to_owned(),
                    m["digest"].as_str().expect("a digest").to_owned(),
                )
            })
            .collect();
        (digest, children)
    }

    /// The first layer of the image manifest `reference` of `repo`.
    fn layer_of(&self, repo: &str, reference: &str) -> String {
        let r = self
            .curl()
            .header("Accept", MANIFEST_ACCEPT)
            .get(&format!("/v2/{repo}/manifests/{reference}"));
        assert_eq!(r.status, 200, "Pulp {repo}@{reference}: {}", r.text());
        r.json()["layers"][0]["digest"]
            .as_str()
            .expect("a layer")
            .to_owned()
    }

    /// curl against Pulp's API (plain HTTP), no credentials.
    fn curl(&self) -> Curl {
        Curl::new(&self.api).max_time(Duration::from_secs(60))
    }

    /// The `Docker-Content-Digest` Pulp reports for `repo:reference`.
    fn digest(&self, repo: &str, reference: &str) -> String {
        let r = self
            .curl()
            .header("Accept", MANIFEST_ACCEPT)
            .get(&format!("/v2/{repo}/manifests/{reference}"));
        assert_eq!(r.status, 200, "Pulp {repo}:{reference}: {}", r.text());
        let digest = r
            .header("docker-content-digest")
            .expect("Pulp sends Docker-Content-Digest")
            .to_owned();
        assert_eq!(
            sha256_digest(&r.body),
            digest,
            "Pulp's digest is the sha256 of its bytes"
        );
        digest
    }

    /// The first layer of `repo:latest`, as Pulp's manifest names it.
    fn layer(&self, repo: &str) -> String {
        let r = self
            .curl()
            .header("Accept", MANIFEST_ACCEPT)
            .get(&format!("/v2/{repo}/manifests/latest"));
        r.json()["layers"][0]["digest"]
            .as_str()
            .expect("a layer")
            .to_owned()
    }

    /// Whether the content app's access log shows a signed GET of `repo`'s
    /// blob `digest` by a client whose User-Agent contains `agent`: the
    /// client followed the redirect the gateway relayed.
    fn content_app_served(&self, repo: &str, digest: &str, agent: &str) -> bool {
        let log = self.dir.join("logs/pulpcore-content.access.log");
        let path = format!("GET /pulp/container/{repo}/blobs/{digest}?expires=");
        // The line is written once the response is done, maybe just after the client is.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let seen = text.lines().any(|l| {
                l.contains(&path)
                    && l.contains("&validate_token=")
                    && l.contains(" 200 ")
                    && l.contains(agent)
            });
            if seen || std::time::Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Pulp's own Flatpak index (`/index/static`, the query flatpak sends).
    fn index(&self) -> Vec<u8> {
        let r = self
            .curl()
            .get(&format!("/index/static?{FLATPAK_INDEX_QUERY}"));
        assert_eq!(r.status, 200, "Pulp's index: {}", r.text());
        r.body
    }
}

// ---------------------------------------------------------------------------
// The gateway in front of it
// ---------------------------------------------------------------------------

struct Setup {
    pki: Arc<Pki>,
    /// Kept alive for the gateway (central is asked on cache misses).
    _central: FakeCentral,
    gateway: Gateway,
    pulp: RealPulp,
    scratch: tempfile::TempDir,
}

/// `(name, auth_required)` as Katello pushes it.
fn repository_list(flatpak_public: bool) -> [(&'static str, bool); 5] {
    [
        (HELLO, !flatpak_public),
        (PLATFORM, !flatpak_public),
        (TINY, true),
        (OTHER, false),
        (MULTI, true),
    ]
}

impl Setup {
    fn start(pulp: RealPulp, flatpak_public: bool) -> Setup {
        let pki = Arc::new(Pki::new());
        let list = repository_list(flatpak_public);
        let public: Vec<&str> = list.iter().filter(|(_, a)| !a).map(|(n, _)| *n).collect();
        let with_public = |own: &[&'static str]| -> Vec<&'static str> {
            let mut v = public.clone();
            v.extend(own.iter().copied().filter(|r| !public.contains(r)));
            v
        };
        let central = FakeCentral::builder()
            .public(&public)
            .host(HOST_A, &with_public(&HOST_A_REPOS))
            .host(HOST_B, &with_public(&HOST_B_REPOS))
            .start();
        let gateway = GatewayBuilder::new(pki.clone())
            .pulp_at(&pulp.api, "")
            .central(&central)
            // Every index request reaches Pulp.
            .index_ttl(0)
            .upstream_timeout(60)
            .start();
        gateway.push_repository_list(&list);
        gateway.push_hosts(&[HOST_A, HOST_B]);
        gateway.push_host_mapping(&[(HOST_A, &HOST_A_REPOS), (HOST_B, &HOST_B_REPOS)]);
        let scratch = tempfile::Builder::new()
            .prefix("cg-e2e-real-pulp-")
            .tempdir()
            .expect("temp dir");
        say(&format!(
            "e2e-real-pulp: gateway {} in front of Pulp {} (real-pulp.sh dir {}), Flatpak repositories {}",
            gateway.url(),
            pulp.api,
            pulp.dir.display(),
            if flatpak_public { "public" } else { "private" }
        ));
        Setup {
            pki,
            _central: central,
            gateway,
            pulp,
            scratch,
        }
    }

    fn cert(&self, uuid: &str) -> Issued {
        self.pki.host_cert(uuid)
    }

    /// curl to the gateway presenting `uuid`'s subscription certificate.
    fn curl_as(&self, uuid: &str) -> Curl {
        let pair = self.cert(uuid).write_to(self.scratch.path(), uuid);
        self.gateway.curl().cert_pair(&pair)
    }

    /// curl to the gateway without a client certificate.
    fn curl_anonymous(&self) -> Curl {
        self.gateway.curl()
    }

    fn tools(&self) -> ContainerTools {
        ContainerTools::new(&self.gateway.tls_addr().to_string(), &self.pki.ca_pem())
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.scratch.path().join(name);
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

/// `(Name, raw JSON text)` of each `Results[]` entry, in order.
fn raw_results(body: &[u8]) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Index<'a> {
        #[serde(rename = "Results", borrow)]
        results: Vec<&'a RawValue>,
    }
    let index: Index = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not an index ({e}): {}", String::from_utf8_lossy(body)));
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

/// The one manifest digest of an OCI layout written by `skopeo copy`.
fn digest_in_oci_dir(dir: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json"))
            .expect("index.json is JSON");
    index["manifests"][0]["digest"]
        .as_str()
        .expect("a manifest in index.json")
        .to_owned()
}

/// Every blob of an OCI layout hashes to its file name.
fn assert_layout_verifies(dir: &Path) {
    let blobs = dir.join("blobs/sha256");
    let mut n = 0;
    for e in std::fs::read_dir(&blobs).expect("blobs/sha256") {
        let p = e.expect("entry").path();
        let bytes = std::fs::read(&p).expect("blob");
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            sha256_digest(&bytes),
            format!("sha256:{name}"),
            "{}",
            p.display()
        );
        n += 1;
    }
    assert!(
        n >= 3,
        "manifest, config and a layer in {}",
        blobs.display()
    );
}

/// Every blob of a `dir:` copy (files named by their hex digest) hashes to its
/// name; the manifest's sha256, as `sha256:<hex>`.
fn dir_copy_verifies(dir: &Path) -> String {
    let mut blobs = 0;
    for e in std::fs::read_dir(dir).expect("the copy") {
        let p = e.expect("entry").path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let bytes = std::fs::read(&p).expect("blob");
            assert_eq!(
                sha256_digest(&bytes),
                format!("sha256:{name}"),
                "{}",
                p.display()
            );
            blobs += 1;
        }
    }
    assert!(blobs >= 2, "config and a layer in {}", dir.display());
    sha256_digest(&std::fs::read(dir.join("manifest.json")).expect("manifest.json"))
}

/// A Go client's command through the gateway finished without the TLS stall.
#[track_caller]
fn quick(out: Outcome) -> Outcome {
    assert!(
        out.elapsed < NO_STALL,
        "took {:.1} s through the gateway (gunicorn's TLS stall is about 20 s): {out}",
        out.elapsed.as_secs_f64()
    );
    out
}

fn refs(remote_ls: &str) -> BTreeSet<String> {
    remote_ls
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------
// The index
// ---------------------------------------------------------------------------

/// Host A's `/index/static` holds exactly A's Flatpak repositories, each entry
/// byte-identical to real Pulp's, with `Registry` naming the gateway.
#[test]
fn host_index_is_pulps_own_entries_filtered() {
    let Some(pulp) = RealPulp::get("host_index_is_pulps_own_entries_filtered", &["curl"]) else {
        return;
    };
    let pulp_index = pulp.index();
    let setup = Setup::start(pulp, false);
    let pulp_entries = raw_results(&pulp_index);
    assert_eq!(
        pulp_entries
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<BTreeSet<_>>(),
        [HELLO, PLATFORM].into_iter().collect(),
        "real Pulp's own index lists the two Flatpak repositories (plain images filtered out)"
    );
    let pulp_json: serde_json::Value = serde_json::from_slice(&pulp_index).unwrap();
    assert_eq!(
        pulp_json["Registry"], setup.pulp.content_origin,
        "real Pulp writes its CONTENT_ORIGIN into Registry"
    );

    let path = format!("/index/static?{FLATPAK_INDEX_QUERY}");
    let r = setup.curl_as(HOST_A).get(&path);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let index: serde_json::Value = r.json();
    assert_eq!(
        index["Registry"],
        format!("{}/", setup.gateway.url()),
        "Registry is server.public_url + /"
    );
    let ours = raw_results(&r.body);
    assert_eq!(names(&r.body), set(&[HELLO, PLATFORM]), "{}", r.text());
    for (name, raw) in &ours {
        let theirs = pulp_entries.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        assert_eq!(Some(raw), theirs, "{name}: Pulp's entry, byte for byte");
    }
    let order: Vec<&str> = ours.iter().map(|(n, _)| n.as_str()).collect();
    let pulp_order: Vec<&str> = pulp_entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, pulp_order, "Pulp's order is kept");
    assert!(
        r.text().contains("Hello app – ünïcödé ✓"),
        "the non-ASCII subject stays raw UTF-8"
    );

    // The gzip variant is the same document; revalidation answers 304.
    let etag = r.header("etag").expect("an ETag").to_owned();
    assert!(
        r.header("cache-control")
            .unwrap_or_default()
            .contains("no-cache")
    );
    let gz = setup
        .curl_as(HOST_A)
        .header("Accept-Encoding", "gzip")
        .get(&path);
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&gz.body), r.body);
    let again = setup
        .curl_as(HOST_A)
        .header("If-None-Match", &etag)
        .get(&path);
    assert_eq!(again.status, 304);

    // B sees only its runtime; anonymous (flatpak 1.14) sees nothing private.
    let r = setup.curl_as(HOST_B).get(&path);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(names(&r.body), set(&[PLATFORM]));
    let r = setup.curl_anonymous().get(&path);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["Results"], serde_json::json!([]));

    // Pulp's answer to a query it refuses passes through as a client error.
    let r = setup.curl_as(HOST_A).get("/index/static?tag=latest");
    assert!(
        (400..500).contains(&r.status),
        "Pulp's 400 for a missing label filter: {} {}",
        r.status,
        r.text()
    );
}

// ---------------------------------------------------------------------------
// Registry reads with curl
// ---------------------------------------------------------------------------

/// Manifests, tags, the catalog and blobs through the gateway agree with what
/// real Pulp serves; blobs are Pulp's signed redirects to its content app.
#[test]
fn registry_reads_match_pulp_and_blobs_follow_signed_redirects() {
    let Some(pulp) = RealPulp::get(
        "registry_reads_match_pulp_and_blobs_follow_signed_redirects",
        &["curl"],
    ) else {
        return;
    };
    let digest = pulp.digest(TINY, "latest");
    let digest_1_0 = pulp.digest(TINY, "1.0");
    assert_ne!(digest, digest_1_0);
    let setup = Setup::start(pulp, false);
    let a = setup.curl_as(HOST_A).header("Accept", MANIFEST_ACCEPT);

    // Manifest by tag and by digest, GET and HEAD.
    let direct = setup
        .pulp
        .curl()
        .header("Accept", MANIFEST_ACCEPT)
        .get(&format!("/v2/{TINY}/manifests/latest"));
    for reference in ["latest", digest.as_str()] {
        let r = a.get(&format!("/v2/{TINY}/manifests/{reference}"));
        assert_eq!(r.status, 200, "{reference}: {}", r.text());
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        assert_eq!(r.header("content-type"), direct.header("content-type"));
        assert_eq!(r.body, direct.body, "Pulp's manifest bytes");
        let h = a.head(&format!("/v2/{TINY}/manifests/{reference}"));
        assert_eq!(h.status, 200);
        assert_eq!(h.header("docker-content-digest"), Some(digest.as_str()));
        assert_eq!(
            h.header("content-length"),
            Some(direct.body.len().to_string().as_str())
        );
    }
    let r = a.get(&format!("/v2/{TINY}/manifests/1.0"));
    assert_eq!(r.header("docker-content-digest"), Some(digest_1_0.as_str()));

    // By tag, Pulp serves a manifest only to an Accept naming its type (or */*).
    let r = setup
        .curl_as(HOST_A)
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .get(&format!("/v2/{TINY}/manifests/latest"));
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("MANIFEST_UNKNOWN"), "{}", r.text());

    // tags/list is Pulp's JSON whatever the client accepts: Pulp itself would
    // answer a browser's Accept with its browsable-API page, and a manifest
    // type with 406.
    let pulp_tags = setup
        .pulp
        .curl()
        .get(&format!("/v2/{TINY}/tags/list"))
        .json();
    assert_eq!(pulp_tags["tags"], serde_json::json!(["1.0", "latest"]));
    for accept in [
        "*/*",
        MANIFEST_ACCEPT,
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ] {
        let r = setup
            .curl_as(HOST_A)
            .header("Accept", accept)
            .get(&format!("/v2/{TINY}/tags/list"));
        assert_eq!(r.status, 200, "Accept {accept}: {}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "Accept {accept}"
        );
        assert_eq!(r.json(), pulp_tags, "Accept {accept}");
    }
    let r = a.get(&format!("/v2/{TINY}/tags/list?n=1"));
    assert_eq!(r.json()["tags"], serde_json::json!(["1.0"]));
    assert_eq!(
        r.header("link"),
        Some(
            format!(
                "<{}/v2/{TINY}/tags/list?n=1&last=1.0>; rel=\"next\"",
                setup.gateway.url()
            )
            .as_str()
        ),
        "Pulp's Link, pointing back at the gateway"
    );

    // _catalog is the gateway's own (the pushed list, filtered), never Pulp's.
    let r = a.get("/v2/_catalog");
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!([HELLO, PLATFORM, MULTI, OTHER, TINY])
    );
    let r = setup.curl_as(HOST_B).get("/v2/_catalog");
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!([PLATFORM, OTHER])
    );
    let r = setup.curl_anonymous().get("/v2/_catalog");
    assert_eq!(r.json()["repositories"], serde_json::json!([OTHER]));

    // Blobs: the gateway relays Pulp's 302 to CONTENT_ORIGIN, signed.
    let manifest: serde_json::Value = serde_json::from_slice(&direct.body).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let config = manifest["config"]["digest"].as_str().unwrap().to_owned();
    for blob in [&layer, &config] {
        let r = setup
            .curl_as(HOST_A)
            .get(&format!("/v2/{TINY}/blobs/{blob}"));
        assert_eq!(r.status, 302, "{}", r.text());
        let location = r.header("location").expect("a Location").to_owned();
        let prefix = format!(
            "{}/pulp/container/{TINY}/blobs/{blob}?",
            setup.pulp.content_origin
        );
        assert!(
            location.starts_with(&prefix),
            "{location} starts with {prefix}"
        );
        assert!(
            location.contains("expires=") && location.contains("validate_token="),
            "signed: {location}"
        );
        let followed = setup
            .curl_as(HOST_A)
            .follow_redirects()
            .get(&format!("/v2/{TINY}/blobs/{blob}"));
        assert_eq!(followed.status, 200, "{}", followed.text());
        assert_eq!(followed.hops.len(), 2, "one redirect, then the content app");
        assert_eq!(&sha256_digest(&followed.body), blob, "the bytes verify");
    }
    // The Flatpak app's half-megabyte layer too.
    let hello: serde_json::Value =
        serde_json::from_slice(&a.get(&format!("/v2/{HELLO}/manifests/latest")).body).unwrap();
    let big = hello["layers"][0]["digest"].as_str().unwrap();
    let r = setup
        .curl_as(HOST_A)
        .follow_redirects()
        .get(&format!("/v2/{HELLO}/blobs/{big}"));
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 100_000);
    assert_eq!(sha256_digest(&r.body), big);

    // Who may not see a repository gets what the contract says, Pulp unasked.
    let r = setup
        .curl_as(HOST_B)
        .get(&format!("/v2/{TINY}/manifests/latest"));
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("NAME_UNKNOWN"), "{}", r.text());
    let r = setup
        .curl_as(HOST_B)
        .get(&format!("/v2/{TINY}/blobs/{layer}"));
    assert_eq!(r.status, 404, "no redirect to Pulp's signed URL for B");
    let r = setup
        .curl_anonymous()
        .get(&format!("/v2/{TINY}/manifests/latest"));
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer ") && c.contains(TINY)),
        "{:?}",
        r.header("www-authenticate")
    );
    // A public repository works anonymously.
    let r = setup
        .curl_anonymous()
        .header("Accept", MANIFEST_ACCEPT)
        .get(&format!("/v2/{OTHER}/manifests/latest"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("docker-content-digest"),
        Some(setup.pulp.digest(OTHER, "latest").as_str())
    );
    // Pulp's own 404 for an unknown tag of a visible repository.
    let r = a.get(&format!("/v2/{TINY}/manifests/nope"));
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("MANIFEST_UNKNOWN"), "{}", r.text());
}

// ---------------------------------------------------------------------------
// skopeo and podman
// ---------------------------------------------------------------------------

/// skopeo inspect/copy and podman pull with host certificates and anonymously.
#[test]
fn skopeo_and_podman_pull_through_the_gateway() {
    let Some(pulp) = RealPulp::get(
        "skopeo_and_podman_pull_through_the_gateway",
        &["curl", "skopeo", "podman"],
    ) else {
        return;
    };
    let digest_tiny = pulp.digest(TINY, "latest");
    let digest_tiny_1_0 = pulp.digest(TINY, "1.0");
    let digest_other = pulp.digest(OTHER, "latest");
    let setup = Setup::start(pulp, false);
    let tools = setup.tools();
    let certs_a = path(&tools.cert_dir("host-a", &setup.cert(HOST_A)));
    let certs_b = path(&tools.cert_dir("host-b", &setup.cert(HOST_B)));
    let anonymous = path(&tools.ca_only_dir());

    // A's repository with A's certificate: Pulp's digests.
    for (tag, want) in [("latest", &digest_tiny), ("1.0", &digest_tiny_1_0)] {
        let out = quick(
            tools
                .skopeo(&[
                    "inspect",
                    "--cert-dir",
                    &certs_a,
                    "--format",
                    "{{.Digest}}",
                    &tools.docker(TINY, tag),
                ])
                .run()
                .ok(),
        );
        assert_eq!(out.stdout.trim(), want.as_str(), "{out}");
    }
    let copy = setup.dir("skopeo-copy-tiny");
    quick(
        tools
            .skopeo(&[
                "copy",
                "--src-cert-dir",
                &certs_a,
                &tools.docker(TINY, "latest"),
                &format!("oci:{}:latest", copy.display()),
            ])
            .run()
            .ok(),
    );
    assert_eq!(digest_in_oci_dir(&copy), digest_tiny);
    assert_layout_verifies(&copy);
    assert!(
        setup
            .pulp
            .content_app_served(TINY, &setup.pulp.layer(TINY), "skopeo/"),
        "skopeo fetched the layer from Pulp's content app through the relayed signed redirect"
    );

    // B's certificate on A's repository: not found.
    let out = quick(
        tools
            .skopeo(&[
                "inspect",
                "--cert-dir",
                &certs_b,
                &tools.docker(TINY, "latest"),
            ])
            .run()
            .failed(),
    );
    assert!(out.stderr.contains("name unknown"), "{out}");

    // Anonymous: the public repository works, A's asks for credentials.
    let out = quick(
        tools
            .skopeo(&[
                "inspect",
                "--cert-dir",
                &anonymous,
                "--format",
                "{{.Digest}}",
                &tools.docker(OTHER, "latest"),
            ])
            .run()
            .ok(),
    );
    assert_eq!(out.stdout.trim(), digest_other);
    let copy = setup.dir("skopeo-copy-other");
    quick(
        tools
            .skopeo(&[
                "copy",
                "--src-cert-dir",
                &anonymous,
                &tools.docker(OTHER, "latest"),
                &format!("oci:{}:latest", copy.display()),
            ])
            .run()
            .ok(),
    );
    assert_eq!(digest_in_oci_dir(&copy), digest_other);
    assert_layout_verifies(&copy);
    let out = quick(
        tools
            .skopeo(&[
                "inspect",
                "--cert-dir",
                &anonymous,
                &tools.docker(TINY, "latest"),
            ])
            .run()
            .failed(),
    );
    assert!(
        out.stderr.contains("unauthorized") || out.stderr.contains("authentication required"),
        "{out}"
    );

    // podman pull with A's certificate, with B's, and anonymously.
    quick(
        tools
            .podman(&["pull", "--cert-dir", &certs_a, &tools.image(TINY, "latest")])
            .run()
            .ok(),
    );
    let out = tools
        .podman(&[
            "image",
            "inspect",
            "--format",
            "{{.Digest}}",
            &tools.image(TINY, "latest"),
        ])
        .run()
        .ok();
    assert_eq!(out.stdout.trim(), digest_tiny, "{out}");
    let out = quick(
        tools
            .podman(&["pull", "--cert-dir", &certs_b, &tools.image(TINY, "1.0")])
            .run()
            .failed(),
    );
    assert!(out.stderr.contains("name unknown"), "{out}");
    quick(
        tools
            .podman(&[
                "pull",
                "--cert-dir",
                &anonymous,
                &tools.image(OTHER, "latest"),
            ])
            .run()
            .ok(),
    );
    let out = tools
        .podman(&[
            "image",
            "inspect",
            "--format",
            "{{.Digest}}",
            &tools.image(OTHER, "latest"),
        ])
        .run()
        .ok();
    assert_eq!(out.stdout.trim(), digest_other, "{out}");
}

/// A multi-arch image (an OCI index and a Docker manifest list, each of
/// amd64 and arm64) through the gateway: skopeo gets the list's own bytes,
/// picks each platform with `--override-arch`, and copies the platform's
/// manifest and blobs (from Pulp's content app) with Pulp's digests;
/// `--all` copies the list and both platforms.
#[test]
fn skopeo_pulls_each_platform_of_a_multi_arch_image() {
    let Some(pulp) = RealPulp::get_multi(
        "skopeo_pulls_each_platform_of_a_multi_arch_image",
        &["curl", "skopeo"],
    ) else {
        return;
    };
    let lists: Vec<(&str, String, Platforms)> = MULTI_TAGS
        .iter()
        .map(|(tag, list_type)| {
            let (digest, children) = pulp.list(MULTI, tag, list_type);
            let arches: BTreeSet<&str> = children.iter().map(|(a, _)| a.as_str()).collect();
            assert_eq!(arches, ["amd64", "arm64"].into_iter().collect(), "{tag}");
            (*tag, digest, children)
        })
        .collect();
    let setup = Setup::start(pulp, false);
    let tools = setup.tools();
    let certs_a = path(&tools.cert_dir("host-a", &setup.cert(HOST_A)));
    let certs_b = path(&tools.cert_dir("host-b", &setup.cert(HOST_B)));

    for (tag, list_digest, children) in &lists {
        let image = tools.docker(MULTI, tag);
        let out = quick(
            tools
                .skopeo(&["inspect", "--raw", "--cert-dir", &certs_a, &image])
                .run()
                .ok(),
        );
        assert_eq!(
            &sha256_digest(out.stdout.as_bytes()),
            list_digest,
            "{tag}: the list's own bytes\n{out}"
        );
        for (arch, child) in children {
            let out = quick(
                tools
                    .skopeo(&[
                        "--override-arch",
                        arch,
                        "inspect",
                        "--cert-dir",
                        &certs_a,
                        "--format",
                        "{{.Digest}} {{.Architecture}}",
                        &image,
                    ])
                    .run()
                    .ok(),
            );
            assert_eq!(
                out.stdout.trim(),
                format!("{list_digest} {arch}"),
                "{tag} for {arch}: {out}"
            );
            let copy = setup.dir(&format!("multi-{tag}-{arch}"));
            quick(
                tools
                    .skopeo(&[
                        "--override-arch",
                        arch,
                        "copy",
                        "--src-cert-dir",
                        &certs_a,
                        &image,
                        &format!("dir:{}", copy.display()),
                    ])
                    .run()
                    .ok(),
            );
            assert_eq!(
                &dir_copy_verifies(&copy),
                child,
                "{tag} for {arch}: the platform's manifest, as Pulp lists it"
            );
            let layer = setup.pulp.layer_of(MULTI, child);
            assert!(
                std::fs::read_dir(&copy).expect("the copy").any(
                    |e| e.is_ok_and(|e| *e.file_name() == *layer.trim_start_matches("sha256:"))
                ),
                "{tag} for {arch}: the copy holds the platform's layer {layer}"
            );
            assert!(
                setup.pulp.content_app_served(MULTI, &layer, "skopeo/"),
                "{tag} for {arch}: skopeo fetched {layer} from Pulp's content app through the relayed signed redirect"
            );
        }
        let all = setup.dir(&format!("multi-{tag}-all"));
        quick(
            tools
                .skopeo(&[
                    "copy",
                    "--all",
                    "--src-cert-dir",
                    &certs_a,
                    &image,
                    &format!("dir:{}", all.display()),
                ])
                .run()
                .ok(),
        );
        assert_eq!(
            &dir_copy_verifies(&all),
            list_digest,
            "{tag} --all: the list"
        );
        for (arch, child) in children {
            let file = all.join(format!(
                "{}.manifest.json",
                child.trim_start_matches("sha256:")
            ));
            let bytes = std::fs::read(&file).unwrap_or_else(|e| {
                panic!("{tag} --all: {arch}'s manifest {}: {e}", file.display())
            });
            assert_eq!(&sha256_digest(&bytes), child, "{tag} --all: {arch}");
        }
    }

    // B may not see the repository: neither the list nor a platform's manifest.
    let (tag, _, children) = &lists[0];
    let out = quick(
        tools
            .skopeo(&[
                "inspect",
                "--raw",
                "--cert-dir",
                &certs_b,
                &tools.docker(MULTI, tag),
            ])
            .run()
            .failed(),
    );
    assert!(out.stderr.contains("name unknown"), "{out}");
    let r = setup
        .curl_as(HOST_B)
        .header("Accept", MANIFEST_ACCEPT)
        .get(&format!("/v2/{MULTI}/manifests/{}", children[0].1));
    assert_eq!(r.status, 404, "{}", r.text());
}

// ---------------------------------------------------------------------------
// flatpak
// ---------------------------------------------------------------------------

/// The real flatpak 1.14 CLI (anonymous: it presents no client certificate)
/// installs and runs the seeded app through the gateway while its repositories
/// are public, and sees nothing once they are not.
#[test]
fn flatpak_installs_public_apps_and_sees_no_private_ones() {
    let Some(pulp) = RealPulp::get(
        "flatpak_installs_public_apps_and_sees_no_private_ones",
        &["curl", "flatpak", "dbus-daemon", "unshare"],
    ) else {
        return;
    };
    let hello_digest = pulp.digest(HELLO, "latest");
    let setup = Setup::start(pulp, true);
    let fp = FlatpakEnv::new(&setup.pki.ca_pem());
    let remote = format!("oci+{}/", setup.gateway.url());
    let timeout = Duration::from_secs(180);
    fp.flatpak(&["remote-add", "--user", "--no-gpg-verify", "gw", &remote])
        .run()
        .ok();
    let out = fp
        .flatpak(&["remote-ls", "--user", "--columns=ref", "gw"])
        .run()
        .ok();
    assert_eq!(refs(&out.stdout), set(&[HELLO_REF, PLATFORM_REF]), "{out}");

    // Install pulls the runtime too; manifests come from the gateway, blobs
    // from Pulp's content app through the relayed signed redirects.
    fp.flatpak(&[
        "install",
        "--user",
        "-y",
        "--noninteractive",
        "gw",
        "org.test.Hello",
    ])
    .timeout(timeout)
    .run()
    .ok();
    let out = fp
        .flatpak(&["run", "--user", "org.test.Hello"])
        .timeout(timeout)
        .run()
        .ok();
    assert_eq!(out.stdout.trim(), HELLO_OUTPUT, "{out}");
    for repo in [HELLO, PLATFORM] {
        assert!(
            setup
                .pulp
                .content_app_served(repo, &setup.pulp.layer(repo), "Flatpak"),
            "flatpak fetched {repo}'s layer from Pulp's content app through the relayed signed redirect"
        );
    }
    let out = fp.flatpak(&["info", "--user", "org.test.Hello"]).run().ok();
    assert!(
        out.stdout
            .contains(hello_digest.trim_start_matches("sha256:")),
        "the installed commit is Pulp's manifest digest {hello_digest}\n{out}"
    );

    // Katello makes the repositories private: the same remote (flatpak
    // revalidates its cached index) and a new one show nothing.
    let private = repository_list(false);
    setup.gateway.push_repository_list(&private);
    let out = fp
        .flatpak(&["remote-ls", "--user", "--columns=ref", "gw"])
        .run()
        .ok();
    assert_eq!(refs(&out.stdout), BTreeSet::new(), "{out}");
    fp.flatpak(&["remote-add", "--user", "--no-gpg-verify", "gw-new", &remote])
        .run()
        .ok();
    let out = fp
        .flatpak(&["remote-ls", "--user", "--columns=ref", "gw-new"])
        .run()
        .ok();
    assert_eq!(refs(&out.stdout), BTreeSet::new(), "{out}");
    let out = fp
        .flatpak(&[
            "install",
            "--user",
            "-y",
            "--noninteractive",
            "--reinstall",
            "gw-new",
            "org.test.Hello",
        ])
        .timeout(timeout)
        .run()
        .failed();
    assert!(
        out.stderr.contains("Nothing matches org.test.Hello"),
        "the remote offers nothing to install\n{out}"
    );
    // The manifest itself is refused too (the token flow gets nothing).
    let r = setup
        .curl_anonymous()
        .header("Accept", MANIFEST_ACCEPT)
        .head(&format!("/v2/{HELLO}/manifests/{hello_digest}"));
    assert_eq!(r.status, 401);
}

// ---------------------------------------------------------------------------
// The stand-in against the real thing
// ---------------------------------------------------------------------------

/// One request, sent the same way to real Pulp and to `fake_pulp`.
/// `{tiny}` is `org/lib/tiny:latest`'s manifest digest, `{layer}` its layer,
/// `{zero}` a digest nobody has, `{content}` the content-app URL a blob
/// redirect of the upstream being probed named.
struct Probe {
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// Compare the JSON body too (same repository names on both sides).
    body: bool,
}

const fn probe(method: &'static str, path: &'static str) -> Probe {
    Probe {
        method,
        path,
        headers: &[],
        body: false,
    }
}

const OCI_ONLY: &[(&str, &str)] = &[("Accept", "application/vnd.oci.image.manifest.v1+json")];
const GO_ACCEPT: &[(&str, &str)] = &[
    ("Accept", "application/vnd.oci.image.manifest.v1+json"),
    (
        "Accept",
        "application/vnd.docker.distribution.manifest.v2+json",
    ),
    ("Accept", "application/vnd.oci.image.index.v1+json"),
];
/// The `Accept` lines skopeo 1.9 and podman 4.3 send for a manifest (one line each).
const PODMAN_ACCEPT: &[(&str, &str)] = &[
    ("Accept", "application/vnd.oci.image.manifest.v1+json"),
    (
        "Accept",
        "application/vnd.docker.distribution.manifest.v2+json",
    ),
    (
        "Accept",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ),
    (
        "Accept",
        "application/vnd.docker.distribution.manifest.v1+json",
    ),
    (
        "Accept",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ),
    ("Accept", "application/vnd.oci.image.index.v1+json"),
];
const INDEX_ONLY: &[(&str, &str)] = &[("Accept", OCI_INDEX)];
const LIST_ONLY: &[(&str, &str)] = &[("Accept", DOCKER_LIST)];

fn probes() -> Vec<Probe> {
    let with = |mut p: Probe, headers: &'static [(&'static str, &'static str)]| {
        p.headers = headers;
        p
    };
    let body = |mut p: Probe| {
        p.body = true;
        p
    };
    vec![
        probe("GET", "/v2/"),
        probe("GET", "/v2"),
        body(probe("GET", "/v2/_catalog")),
        probe("HEAD", "/v2/_catalog"),
        body(probe("GET", "/v2/_catalog?n=2")),
        with(probe("GET", "/v2/_catalog"), OCI_ONLY),
        probe("GET", "/v2/_catalog/"),
        body(probe("GET", "/v2/org/lib/tiny/tags/list")),
        body(probe("GET", "/v2/org/lib/tiny/tags/list?n=1")),
        with(probe("GET", "/v2/org/lib/tiny/tags/list"), OCI_ONLY),
        with(
            probe("GET", "/v2/org/lib/tiny/tags/list"),
            &[("Accept", "text/html")],
        ),
        body(with(
            probe("GET", "/v2/org/lib/tiny/tags/list"),
            &[("Accept", "application/json")],
        )),
        probe("GET", "/v2/org/lib/nope/tags/list"),
        probe("GET", "/v2/org/lib/tiny/tags/list/"),
        with(probe("GET", "/v2/org/lib/tiny/manifests/latest"), GO_ACCEPT),
        with(
            probe("HEAD", "/v2/org/lib/tiny/manifests/latest"),
            GO_ACCEPT,
        ),
        with(probe("GET", "/v2/org/lib/tiny/manifests/{tiny}"), GO_ACCEPT),
        with(
            probe("GET", "/v2/org/lib/tiny/manifests/{tiny}"),
            &[("Accept", "application/json")],
        ),
        probe("GET", "/v2/org/lib/tiny/manifests/latest"),
        with(probe("GET", "/v2/org/lib/tiny/manifests/latest"), OCI_ONLY),
        with(
            probe("GET", "/v2/org/lib/tiny/manifests/latest"),
            &[(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            )],
        ),
        with(
            probe("GET", "/v2/org/lib/tiny/manifests/latest"),
            &[("Accept", "application/json")],
        ),
        with(
            probe("HEAD", "/v2/org/lib/tiny/manifests/latest"),
            &[("Accept", "application/vnd.oci.image.index.v1+json")],
        ),
        with(
            probe("GET", "/v2/org/lib/tiny/manifests/latest"),
            &[("Accept", "*/*")],
        ),
        with(
            probe("GET", "/v2/org/lib/tiny/manifests/latest"),
            &[("If-None-Match", "\"x\""), ("Accept", "*/*")],
        ),
        with(probe("GET", "/v2/org/lib/tiny/manifests/nope"), GO_ACCEPT),
        with(probe("GET", "/v2/org/lib/tiny/manifests/{zero}"), GO_ACCEPT),
        with(probe("GET", "/v2/org/lib/nope/manifests/latest"), GO_ACCEPT),
        probe("GET", "/v2/org/lib/tiny/manifests/latest/"),
        probe("GET", "/v2/org/lib/tiny/blobs/{layer}"),
        probe("HEAD", "/v2/org/lib/tiny/blobs/{layer}"),
        with(probe("GET", "/v2/org/lib/tiny/blobs/{layer}"), OCI_ONLY),
        probe("GET", "/v2/org/lib/tiny/blobs/{zero}"),
        probe("GET", "/v2/org/lib/nope/blobs/{zero}"),
        probe("PUT", "/v2/org/lib/tiny/manifests/latest"),
        probe("DELETE", "/v2/org/lib/tiny/manifests/{tiny}"),
        probe("POST", "/v2/org/lib/tiny/blobs/uploads/"),
        probe("GET", "/v2/org/lib/tiny/blobs/uploads/"),
        probe("PUT", "/v2/org/lib/tiny/tags/list"),
        with(probe("GET", "/v2/"), OCI_ONLY),
        with(
            probe("GET", "/v2/_catalog"),
            &[("Accept", "text/html, application/json")],
        ),
        with(probe("GET", "/v2/_catalog"), &[("Accept", "text/*")]),
        with(
            probe("GET", "/v2/org/lib/tiny/tags/list"),
            &[(
                "Accept",
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            )],
        ),
        probe("GET", "{content}"),
        probe("HEAD", "{content}"),
        with(probe("GET", "{content}"), &[("Range", "bytes=0-9")]),
        probe("GET", "{content-unsigned}"),
        probe("GET", "{content-badsig}"),
        probe("GET", "/index/static?{flatpak}"),
        probe("HEAD", "/index/static?{flatpak}"),
        with(
            probe("GET", "/index/static?{flatpak}"),
            &[("Accept", "text/html")],
        ),
        with(probe("GET", "/index/static?{flatpak}"), OCI_ONLY),
        with(
            probe("GET", "/index/dynamic?{flatpak}"),
            &[("Accept", "text/html")],
        ),
        body(probe("GET", "/index/static?tag=latest")),
        body(probe(
            "GET",
            "/index/static?label:org.flatpak.ref:exists=1&annotation:x=1",
        )),
        body(probe(
            "GET",
            "/index/static?label%3Aorg.flatpak.ref%3Aexists=1&architecture=arm64",
        )),
        probe("GET", "/index/static/?{flatpak}"),
        // A multi-arch image: the OCI index, the Docker manifest list, a
        // platform's manifest and its blobs.
        with(
            probe("GET", "/v2/org/lib/multi/manifests/latest"),
            PODMAN_ACCEPT,
        ),
        with(
            probe("HEAD", "/v2/org/lib/multi/manifests/latest"),
            PODMAN_ACCEPT,
        ),
        with(
            probe("GET", "/v2/org/lib/multi/manifests/latest"),
            &[("Accept", MANIFEST_ACCEPT)],
        ),
        with(
            probe("GET", "/v2/org/lib/multi/manifests/latest"),
            GO_ACCEPT,
        ),
        with(
            probe("GET", "/v2/org/lib/multi/manifests/latest"),
            INDEX_ONLY,
        ),
        with(
            probe("HEAD", "/v2/org/lib/multi/manifests/latest"),
            INDEX_ONLY,
        ),
        with(probe("GET", "/v2/org/lib/multi/manifests/latest"), OCI_ONLY),
        with(
            probe("GET", "/v2/org/lib/multi/manifests/latest"),
            LIST_ONLY,
        ),
        with(
            probe("GET", "/v2/org/lib/multi/manifests/latest"),
            &[("Accept", "*/*")],
        ),
        probe("GET", "/v2/org/lib/multi/manifests/latest"),
        with(
            probe("GET", "/v2/org/lib/multi/manifests/{multi}"),
            OCI_ONLY,
        ),
        with(
            probe("HEAD", "/v2/org/lib/multi/manifests/{multi}"),
            PODMAN_ACCEPT,
        ),
        with(
            probe("GET", "/v2/org/lib/multi/manifests/{multi-arm64}"),
            PODMAN_ACCEPT,
        ),
        with(
            probe("HEAD", "/v2/org/lib/multi/manifests/{multi-amd64}"),
            PODMAN_ACCEPT,
        ),
        with(
            probe("GET", "/v2/org/lib/multi/manifests/{multi-arm64}"),
            INDEX_ONLY,
        ),
        probe("GET", "/v2/org/lib/multi/blobs/{multi-layer}"),
        probe("HEAD", "/v2/org/lib/multi/blobs/{multi-layer}"),
        probe("GET", "/v2/org/lib/multi/blobs/{multi-config}"),
        probe("GET", "{multi-content}"),
        with(
            probe("GET", "/v2/org/lib/multi/manifests/v2s2"),
            PODMAN_ACCEPT,
        ),
        with(probe("HEAD", "/v2/org/lib/multi/manifests/v2s2"), LIST_ONLY),
        with(probe("GET", "/v2/org/lib/multi/manifests/v2s2"), INDEX_ONLY),
        with(
            probe("GET", "/v2/org/lib/multi/manifests/v2s2"),
            &[(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            )],
        ),
        with(
            probe("GET", "/v2/org/lib/multi/manifests/{multi-v2s2}"),
            OCI_ONLY,
        ),
        with(
            probe("GET", "/v2/org/lib/multi/manifests/{multi-v2s2-arm64}"),
            PODMAN_ACCEPT,
        ),
        body(probe("GET", "/v2/org/lib/multi/tags/list")),
        // The content app of pulp_container 2.28 and later has no manifest
        // route (the fake's redirect_manifests mode models the older one).
        probe("GET", "{content-manifest}"),
        probe("GET", "{content-manifest-signed}"),
    ]
}

/// The headers compared (others: dates, ids, sizes of different content).
const COMPARED_HEADERS: [&str; 14] = [
    "content-type",
    "allow",
    "vary",
    "www-authenticate",
    "docker-distribution-api-version",
    "x-registry-supports-signatures",
    "server",
    "connection",
    "accept-ranges",
    "cache-control",
    "etag",
    "last-modified",
    "link",
    "location",
];

/// What a probe's answer looks like, with what necessarily differs
/// (origins, digests, signatures) replaced by placeholders.
fn shape(
    probe: &Probe,
    r: &gateway_tests::client::CurlResponse,
    origin: &str,
    content_origin: &str,
    vars: &[(String, String)],
) -> Vec<String> {
    let mut out = vec![format!("status {}", r.status)];
    // The stand-in is its own content app: name the origin by the header's role.
    let norm_as = |v: &str, first: (&str, &str), second: (&str, &str)| {
        let mut v = v.replace(first.0, first.1).replace(second.0, second.1);
        for (k, val) in vars {
            if !val.is_empty() {
                v = v.replace(val.as_str(), &format!("{{{k}}}"));
            }
        }
        v
    };
    let norm = |v: &str| {
        norm_as(
            v,
            (origin, "<origin>"),
            (content_origin, "<content-origin>"),
        )
    };
    for name in COMPARED_HEADERS {
        let mut values: Vec<String> = r
            .header_all(name)
            .iter()
            .map(|v| {
                if name == "location" {
                    norm_as(
                        v,
                        (content_origin, "<content-origin>"),
                        (origin, "<origin>"),
                    )
                } else {
                    norm(v)
                }
            })
            .collect();
        if name == "location" {
            // Signed URLs: keep the path and the parameter names.
            values = values
                .iter()
                .map(|v| match v.split_once('?') {
                    Some((p, q)) => {
                        let keys: Vec<&str> = q
                            .split('&')
                            .map(|kv| kv.split('=').next().unwrap_or_default())
                            .collect();
                        format!("{p}?{}", keys.join("&"))
                    }
                    None => v.clone(),
                })
                .collect();
        }
        if name == "etag" || name == "last-modified" {
            values = values.iter().map(|_| "<present>".to_owned()).collect();
        }
        if name == "vary" || name == "allow" {
            // Order and spelling of list headers as the server writes them.
            values = values
                .iter()
                .map(|v| v.split(',').map(str::trim).collect::<Vec<_>>().join(", "))
                .collect();
        }
        if !values.is_empty() {
            out.push(format!("{name}: {}", values.join(" | ")));
        }
    }
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let ct = r.header("content-type").unwrap_or_default();
    if ct.starts_with("application/json") {
        match serde_json::from_slice::<serde_json::Value>(&r.body) {
            Ok(v) if v.get("errors").is_some() || v.get("detail").is_some() || probe.body => {
                out.push(format!(
                    "body {}",
                    norm_as(
                        &v.to_string(),
                        (content_origin, "<content-origin>"),
                        (origin, "<origin>"),
                    )
                ));
            }
            Ok(v) if v.get("Results").is_some() => {
                out.push(format!("index {}", index_shape(&v, origin, content_origin)));
            }
            Ok(_) => {}
            Err(_) => out.push(format!("body (not JSON) {}", norm(&text))),
        }
    } else if ct.starts_with("text/plain") {
        out.push(format!("body {}", norm(&text)));
    } else if ct.starts_with("text/html") {
        out.push(format!(
            "html page (DRF: {})",
            text.contains("Django REST framework")
        ));
    }
    out
}

/// The index without its content: Registry, each result's name and the keys
/// of each image, in order.
fn index_shape(v: &serde_json::Value, origin: &str, content_origin: &str) -> String {
    let registry = v["Registry"]
        .as_str()
        .unwrap_or("<none>")
        .replace(content_origin, "<content-origin>")
        .replace(origin, "<origin>");
    let keys: Vec<&String> = v
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    let mut results: Vec<String> = v["Results"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let images: Vec<String> = r["Images"]
                        .as_array()
                        .map(|i| {
                            i.iter()
                                .map(|img| {
                                    img.as_object()
                                        .map(|o| o.keys().cloned().collect::<Vec<_>>().join(","))
                                        .unwrap_or_default()
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    format!(
                        "{}[{}]",
                        r["Name"].as_str().unwrap_or("?"),
                        images.join(";")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    results.sort();
    format!("keys {keys:?} Registry {registry} Results {results:?}")
}

/// The digests of `org/lib/multi` on `curl`'s server: `{multi}` (the OCI
/// index), `{multi-amd64}` and `{multi-arm64}` (its platforms),
/// `{multi-layer}` and `{multi-config}` (arm64's blobs), `{multi-v2s2}` (the
/// Docker manifest list) and `{multi-v2s2-arm64}`, and `{multi-content}` (the
/// content-app URL arm64's layer redirects to).
fn multi_vars(curl: &Curl) -> Vec<(String, String)> {
    let get = |reference: &str| {
        let r = curl
            .header("Accept", MANIFEST_ACCEPT)
            .get(&format!("/v2/{MULTI}/manifests/{reference}"));
        assert_eq!(r.status, 200, "{MULTI}:{reference}: {}", r.text());
        let digest = r.header("docker-content-digest").unwrap().to_owned();
        (digest, r.json())
    };
    let platform = |list: &serde_json::Value, arch: &str| -> String {
        list["manifests"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["platform"]["architecture"] == arch))
            .and_then(|m| m["digest"].as_str())
            .unwrap_or_else(|| panic!("{MULTI}: no {arch} in {list}"))
            .to_owned()
    };
    let (index, index_json) = get("latest");
    let (list, list_json) = get("v2s2");
    let arm64 = platform(&index_json, "arm64");
    let (_, arm64_json) = get(&arm64);
    let layer = arm64_json["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let config = arm64_json["config"]["digest"].as_str().unwrap().to_owned();
    let redirect = curl.get(&format!("/v2/{MULTI}/blobs/{layer}"));
    vec![
        ("multi-amd64".into(), platform(&index_json, "amd64")),
        ("multi-arm64".into(), arm64),
        ("multi-layer".into(), layer),
        ("multi-config".into(), config),
        ("multi-v2s2-arm64".into(), platform(&list_json, "arm64")),
        ("multi-v2s2".into(), list),
        ("multi".into(), index),
        (
            "multi-content".into(),
            redirect.header("location").unwrap_or_default().to_owned(),
        ),
    ]
}

/// Ask `base` every probe; `(probe line, shape)`.
fn probe_all(base: &str, content_origin: &str) -> Vec<(String, Vec<String>)> {
    let curl = Curl::new(base).max_time(Duration::from_secs(60));
    let accept = ("Accept", MANIFEST_ACCEPT);
    let m = curl
        .header(accept.0, accept.1)
        .get(&format!("/v2/{TINY}/manifests/latest"));
    assert_eq!(m.status, 200, "{base}: {}", m.text());
    let tiny = m.header("docker-content-digest").unwrap().to_owned();
    let manifest: serde_json::Value = m.json();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let blob = curl.get(&format!("/v2/{TINY}/blobs/{layer}"));
    let content = blob.header("location").unwrap_or_default().to_owned();
    let unsigned = content.split('?').next().unwrap_or_default().to_owned();
    let badsig = format!(
        "{}validate_token=00:00",
        content.split("validate_token=").next().unwrap_or_default()
    );
    let content_manifest = format!("{content_origin}/pulp/container/{TINY}/manifests/latest");
    let content_manifest_signed = match content.split_once('?') {
        Some((_, query)) => format!("{content_manifest}?{query}"),
        None => content_manifest.clone(),
    };
    let multi = multi_vars(&curl);
    let mut vars: Vec<(String, String)> = vec![
        ("tiny".into(), tiny),
        ("layer".into(), layer),
        ("zero".into(), format!("sha256:{}", "0".repeat(64))),
        ("content".into(), content),
        ("content-unsigned".into(), unsigned),
        ("content-badsig".into(), badsig),
        ("content-manifest".into(), content_manifest),
        ("content-manifest-signed".into(), content_manifest_signed),
        ("flatpak".into(), FLATPAK_INDEX_QUERY.into()),
    ];
    vars.extend(multi);
    probes()
        .iter()
        .map(|p| {
            let mut path = p.path.to_owned();
            for (k, v) in &vars {
                path = path.replace(&format!("{{{k}}}"), v);
            }
            let mut c = curl.clone();
            for (k, v) in p.headers {
                c = c.header(k, v);
            }
            let r = c.run(p.method, &path);
            let line = format!(
                "{} {}{}",
                p.method,
                p.path,
                p.headers
                    .iter()
                    .map(|(k, v)| format!(" [{k}: {v}]"))
                    .collect::<String>()
            );
            // The signed content URLs are the only variables compared by shape.
            let shown: Vec<(String, String)> = vars
                .iter()
                .filter(|(k, _)| {
                    k == "tiny"
                        || k == "layer"
                        || k == "zero"
                        || (k.starts_with("multi") && k != "multi-content")
                })
                .cloned()
                .collect();
            (line, shape(p, &r, base, content_origin, &shown))
        })
        .collect()
}

/// `fake_pulp` (the stand-in the core suites run against) answers like real
/// Pulp: same statuses, error bodies, content negotiation, headers and
/// redirect shapes, for the requests the gateway makes and a few it must
/// never make.
#[test]
fn fake_pulp_answers_like_real_pulp() {
    use gateway_tests::fake_pulp::{FakePulp, FakeRepo, Image, tar_gz_layer};
    let Some(pulp) = RealPulp::get_multi("fake_pulp_answers_like_real_pulp", &["curl"]) else {
        return;
    };
    // What tests/e2e/seed_multiarch.py pushes: linux/amd64 and linux/arm64/v8,
    // one small layer each.
    let multi_arch = |image: fn() -> Image| {
        vec![
            image()
                .label("org.example.arch", "amd64")
                .layers(vec![tar_gz_layer(&[(
                    "hello.txt",
                    b"multi-arch image, linux/amd64\n",
                )])]),
            image()
                .arch("arm64")
                .variant("v8")
                .label("org.example.arch", "arm64")
                .layers(vec![tar_gz_layer(&[(
                    "hello.txt",
                    b"multi-arch image, linux/arm64\n",
                )])]),
        ]
    };
    let fake = FakePulp::builder()
        .registry_path("")
        .repo(
            FakeRepo::new(PLATFORM)
                .image("latest", Image::flatpak_runtime("org.test.Platform", "1")),
        )
        .repo(FakeRepo::new(HELLO).image("latest", Image::flatpak_app("org.test.Hello")))
        .repo(
            FakeRepo::new(TINY)
                .image("latest", Image::new())
                .image("1.0", Image::new().label("org.example.version", "1.0")),
        )
        .repo(FakeRepo::new(OTHER).image("latest", Image::new()))
        .repo(
            FakeRepo::new(MULTI)
                .image_list("latest", multi_arch(Image::new))
                .image_list("v2s2", multi_arch(|| Image::new().docker_v2())),
        )
        .start();
    let real = probe_all(&pulp.api, &pulp.content_origin);
    let stand_in = probe_all(fake.url(), &fake.content_origin());
    let mut differences = Vec::new();
    for ((line, want), (_, got)) in real.iter().zip(&stand_in) {
        if want != got {
            let mut d = format!("{line}\n");
            for w in want.iter().filter(|w| !got.contains(w)) {
                d.push_str(&format!("    real Pulp: {w}\n"));
            }
            for g in got.iter().filter(|g| !want.contains(g)) {
                d.push_str(&format!("    fake_pulp: {g}\n"));
            }
            differences.push(d);
        }
    }
    say(&format!(
        "e2e-real-pulp: fake_pulp compared with real Pulp on {} requests, {} differ",
        real.len(),
        differences.len()
    ));
    assert!(
        differences.is_empty(),
        "fake_pulp differs from real Pulp:\n{}",
        differences.join("")
    );
}
