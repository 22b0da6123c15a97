//! No answer gives away a repository its client may not see.
//!
//! A population of hosts (subscription certificates), users (bearer tokens from
//! the gateway's `/v2/token`) and an anonymous client, with random grants over
//! a pool of repositories with distinctive names, some public, some in Pulp
//! but not on Katello's list, some on the list but not in Pulp. Central answers
//! each host's `_catalog`. Every identity asks every route: the Flatpak index
//! (static and dynamic, several queries, gzip, `If-None-Match`), `_catalog`
//! with paging, `tags/list`, manifests and blobs by tag and by digest (GET and
//! HEAD) for every repository it may and may not see and for repositories that
//! do not exist, `/v1/search`, `/v2/token`, unknown routes and error paths.
//!
//! For each answer: the status line, every header and the body (gunzipped)
//! contain no name, Flatpak id or digest of a repository outside the client's
//! view (except what the request itself named); the answer is the one
//! expected; and a repository the client may not see is answered exactly as
//! one that does not exist. Then every identity's index `ETag` is replayed by
//! every other identity: a 304 only where the two filtered bodies are the same.
//!
//! The grants come from a seeded generator; the seed is printed, and
//! `LEAK_CHECK_SEED=<n>` replays a run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use gateway_tests::client::{TestClient, TestRequest, TestResponse};
use gateway_tests::fake_pulp::{FLATPAK_INDEX_QUERY, FakePulp, FakeRepo, Image, tar_gz_layer};
use gateway_tests::harness::{TestEnv, TestEnvBuilder};
use gateway_tests::pki::Issued;

const HOSTS: usize = 40;
const REPOS: usize = 60;
const PUBLIC: usize = 6;
const UNLISTED: usize = 4;
/// Listed (so visible to whoever is granted them) but not in Pulp.
const NOT_IN_PULP: [usize; 2] = [58, 59];
const USERS: usize = 3;
const THREADS: usize = 4;

// ---------------------------------------------------------------------------
// The world
// ---------------------------------------------------------------------------

/// splitmix64: small, seedable, good enough to draw grants.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn seed() -> u64 {
    match std::env::var("LEAK_CHECK_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("LEAK_CHECK_SEED={s}: {e}")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(42),
    }
}

#[derive(Clone, Debug)]
struct Repo {
    name: String,
    public: bool,
    listed: bool,
    in_pulp: bool,
    flatpak: Option<String>,
    direct_blobs: bool,
    redirect_manifests: bool,
}

fn repo_name(i: usize) -> String {
    format!("leakcheck/r{i:02}x/app")
}

fn ghost_name(i: usize) -> String {
    format!("leakcheck/ghost{i:02}x/app")
}

fn repos() -> Vec<Repo> {
    (0..REPOS + UNLISTED)
        .map(|i| Repo {
            name: repo_name(i),
            public: i < PUBLIC,
            listed: i < REPOS,
            in_pulp: !NOT_IN_PULP.contains(&i),
            flatpak: (i % 3 != 2).then(|| format!("org.leakcheck.App{i:02}x")),
            direct_blobs: i % 7 == 3,
            redirect_manifests: i % 11 == 5,
        })
        .collect()
}

/// Digests of one repository's content.
#[derive(Clone, Debug)]
struct Content {
    latest: String,
    layer: String,
    markers: Vec<String>,
}

/// What every check needs to know.
struct World {
    repos: Vec<Repo>,
    content: BTreeMap<String, Content>,
    /// digest -> the repositories holding it
    digest_owners: std::collections::HashMap<String, Vec<String>>,
    ghosts: Vec<String>,
    public_url: String,
    content_origin: String,
}

impl World {
    /// Every mention in `text` of a repository of the pool: its name or
    /// Flatpak id (in any spelling that keeps `leakcheck` and its number:
    /// plain, percent-encoded, JSON) or one of its digests, with the names of
    /// the repositories it belongs to. One pass over the text.
    fn mentions(&self, text: &str) -> Vec<(String, Vec<String>)> {
        let lower = text.to_ascii_lowercase();
        let bytes = lower.as_bytes();
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(at) = lower[from..].find("leakcheck").map(|i| i + from) {
            from = at + "leakcheck".len();
            let tail = &bytes[from..bytes.len().min(from + 16)];
            if lower[from..].starts_with("/ghost") || lower[from..].starts_with("%2fghost") {
                continue;
            }
            let Some(n) = tail.windows(3).find_map(|w| {
                (w[0].is_ascii_digit() && w[1].is_ascii_digit() && w[2] == b'x')
                    .then(|| usize::from(w[0] - b'0') * 10 + usize::from(w[1] - b'0'))
            }) else {
                continue;
            };
            let Some(repo) = self.repos.get(n) else {
                continue;
            };
            let marker = if lower[..at].ends_with("org.") {
                repo.flatpak
                    .clone()
                    .unwrap_or_else(|| format!("org.leakcheck.App{n:02}x"))
            } else {
                repo.name.clone()
            };
            out.push((marker, vec![repo.name.clone()]));
        }
        let mut from = 0;
        while let Some(at) = lower[from..].find("sha256:").map(|i| i + from) {
            from = at + "sha256:".len();
            let Some(digest) = lower.get(at..at + "sha256:".len() + 64) else {
                continue;
            };
            if let Some(owners) = self.digest_owners.get(digest) {
                out.push((digest.to_owned(), owners.clone()));
            }
        }
        out
    }
}

fn pulp_repos(
    b: gateway_tests::fake_pulp::FakePulpBuilder,
) -> gateway_tests::fake_pulp::FakePulpBuilder {
    let mut b = b;
    for (i, r) in repos().iter().enumerate().filter(|(_, r)| r.in_pulp) {
        let layer = tar_gz_layer(&[("repo.txt", r.name.as_bytes())]);
        let latest = match &r.flatpak {
            Some(id) if i == 0 => Image::flatpak_runtime(id, "1"),
            Some(id) => Image::flatpak_app(id),
            None => Image::new().label("org.leakcheck.repo", &r.name),
        }
        .layers(vec![layer]);
        let v1 = Image::new()
            .label("org.leakcheck.v1", &r.name)
            .layers(vec![tar_gz_layer(&[("v1.txt", r.name.as_bytes())])]);
        b = b.repo(
            FakeRepo::new(&r.name)
                .image("latest", latest)
                .image("v1", v1)
                .direct_blobs(r.direct_blobs)
                .redirect_manifests(r.redirect_manifests),
        );
    }
    b
}

fn content_of(pulp: &FakePulp, name: &str) -> Option<Content> {
    let repo = pulp.repo(name)?;
    let latest = repo.tag_digest("latest")?;
    let v1 = repo.tag_digest("v1")?;
    let layer = repo.layer_digests("latest").first().cloned()?;
    let mut markers = vec![latest.clone(), v1.clone(), layer.clone()];
    markers.extend(repo.layer_digests("v1"));
    for tag in ["latest", "v1"] {
        if let Some(m) = repo.manifest_for(tag) {
            let v: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap_or_default();
            if let Some(config) = v["config"]["digest"].as_str() {
                markers.push(config.to_owned());
            }
        }
    }
    Some(Content {
        latest,
        layer,
        markers,
    })
}

#[derive(Clone, Debug)]
enum Kind {
    Host(Issued),
    User { login: String, password: String },
    Anonymous,
}

#[derive(Clone, Debug)]
struct Who {
    label: String,
    kind: Kind,
    /// Sorted names it may see.
    visible: Vec<String>,
}

impl Who {
    fn sees(&self, name: &str) -> bool {
        self.visible
            .binary_search_by(|v| v.as_str().cmp(name))
            .is_ok()
    }

    fn anonymous(&self) -> bool {
        matches!(self.kind, Kind::Anonymous)
    }
}

/// (uuid, what central answers for it)
type HostGrant = (String, Vec<String>);
/// (login, password, the user's repositories at central)
type UserGrant = (String, String, Vec<String>);

/// Hosts, users and grants drawn from `rng`; returns the identities and the
/// configured environment.
fn population(rng: &mut Rng) -> (Vec<HostGrant>, Vec<UserGrant>) {
    let all = repos();
    let private_listed: Vec<&Repo> = all.iter().filter(|r| r.listed && !r.public).collect();
    let unlisted: Vec<&Repo> = all.iter().filter(|r| !r.listed).collect();
    let draw = |rng: &mut Rng, density: u64| -> Vec<String> {
        let mut g: Vec<String> = private_listed
            .iter()
            .filter(|_| rng.chance(density))
            .map(|r| r.name.clone())
            .collect();
        // Central may name repositories Katello did not list: still invisible.
        g.extend(
            unlisted
                .iter()
                .filter(|_| rng.chance(30))
                .map(|r| r.name.clone()),
        );
        if rng.chance(10) {
            g.push(ghost_name(7));
        }
        g
    };
    let hosts = (0..HOSTS)
        .map(|i| {
            let uuid = format!("1eac0000-{i:04}-4a5b-9c6d-{:012x}", rng.below(1 << 40));
            let density = [0, 5, 15, 30, 60, 100][rng.below(6) as usize];
            (uuid, draw(rng, density))
        })
        .collect();
    let users = (0..USERS)
        .map(|i| {
            let mut g = draw(rng, 25);
            // A token is only stored for a private scope: give each user one.
            let pick = private_listed[rng.below(private_listed.len() as u64) as usize];
            if !g.contains(&pick.name) {
                g.push(pick.name.clone());
            }
            (
                format!("leakuser{i}"),
                format!("pw-{i}-{}", rng.below(1 << 30)),
                g,
            )
        })
        .collect();
    (hosts, users)
}

fn visible_of(granted: &[String]) -> Vec<String> {
    let mut v: Vec<String> = repos()
        .into_iter()
        .filter(|r| r.listed && (r.public || granted.contains(&r.name)))
        .map(|r| r.name)
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// Talking to the gateway
// ---------------------------------------------------------------------------

struct Probe<'a> {
    world: &'a World,
    who: &'a Who,
    client: TestClient,
    token: Option<String>,
    requests: u64,
    checks: u64,
    problems: Vec<String>,
}

/// One request as sent: method, path, extra headers.
#[derive(Clone, Debug)]
struct Asked {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
}

impl Asked {
    fn get(path: impl Into<String>) -> Asked {
        Asked {
            method: "GET",
            path: path.into(),
            headers: Vec::new(),
        }
    }

    fn head(path: impl Into<String>) -> Asked {
        Asked {
            method: "HEAD",
            ..Asked::get(path)
        }
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Asked {
        self.headers.push((name, value.into()));
        self
    }

    fn describe(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Whether the request itself contains `s` (then an answer may echo it).
    fn names(&self, s: &str) -> bool {
        let decoded = percent_encoding::percent_decode_str(&self.path).decode_utf8_lossy();
        self.path.contains(s)
            || decoded.contains(s)
            || self.headers.iter().any(|(_, v)| v.contains(s))
    }
}

/// The body as the client would read it (gunzipped).
fn plain_body(r: &TestResponse) -> Vec<u8> {
    if r.header("content-encoding") == Some("gzip") {
        let mut out = Vec::new();
        match flate2::read::GzDecoder::new(&r.body[..]).read_to_end(&mut out) {
            Ok(_) => out,
            Err(_) => r.body.to_vec(),
        }
    } else {
        r.body.to_vec()
    }
}

fn error_code(r: &TestResponse) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    v["errors"][0]["code"].as_str().map(str::to_owned)
}

impl Probe<'_> {
    fn fail(&mut self, asked: &Asked, what: impl std::fmt::Display) {
        if self.problems.len() < 40 {
            self.problems
                .push(format!("{} {}: {what}", self.who.label, asked.describe()));
        }
    }

    /// One check: `ok` or a recorded problem.
    fn check(&mut self, asked: &Asked, ok: bool, what: impl FnOnce() -> String) -> bool {
        self.checks += 1;
        if !ok {
            let w = what();
            self.fail(asked, w);
        }
        ok
    }

    fn request(&self, asked: &Asked) -> TestRequest<'_> {
        let mut req = self.client.request(asked.method, &asked.path);
        if let Some(t) = &self.token {
            req = req.bearer(t);
        }
        for (k, v) in &asked.headers {
            req = req.header(k, v);
        }
        req
    }

    /// Send, and check the whole answer for anything outside the client's view.
    async fn ask(&mut self, asked: &Asked) -> Option<TestResponse> {
        self.requests += 1;
        let r = match self.request(asked).try_send().await {
            Ok(r) => r,
            Err(e) => {
                self.fail(asked, format!("transfer failed: {e}"));
                return None;
            }
        };
        let mut text = format!("HTTP {}\n", r.status);
        for (k, v) in &r.headers {
            text.push_str(&format!("{k}: {v}\n"));
        }
        text.push_str(&String::from_utf8_lossy(&plain_body(&r)));
        let mut leaked = Vec::new();
        for (marker, owners) in self.world.mentions(&text) {
            if owners.iter().all(|o| !self.who.sees(o)) && !asked.names(&marker) {
                leaked.push(format!("{marker} (of {owners:?})"));
            }
        }
        self.check(asked, leaked.is_empty(), || {
            format!("gives away {leaked:?}:\n{text}")
        });
        self.check(asked, r.status != 500, || "500".into());
        Some(r)
    }

    fn expect_status(&mut self, asked: &Asked, r: &TestResponse, status: u16) -> bool {
        self.check(asked, r.status == status, || {
            format!("status {} (want {status}): {}", r.status, r.text())
        })
    }

    fn expect_error(&mut self, asked: &Asked, r: &TestResponse, status: u16, code: &str) {
        if self.expect_status(asked, r, status) && asked.method == "GET" {
            let got = error_code(r);
            self.check(asked, got.as_deref() == Some(code), || {
                format!("error code {got:?} (want {code}): {}", r.text())
            });
        }
    }

    /// The answer for a repository this client may not see (or that does not exist).
    fn expect_invisible(&mut self, asked: &Asked, r: &TestResponse, name: &str) {
        if self.who.anonymous() {
            self.expect_status(asked, r, 401);
            let want = common::expected_challenge(&self.world.public_url, Some(name));
            self.check(asked, r.header("www-authenticate") == Some(&want), || {
                format!("challenge {:?}, want {want}", r.header("www-authenticate"))
            });
        } else {
            self.expect_error(asked, r, 404, "NAME_UNKNOWN");
        }
    }
}

// ---------------------------------------------------------------------------
// The routes
// ---------------------------------------------------------------------------

/// Per-repository requests, for one name and the references to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Template {
    Tags,
    TagsPage,
    ManifestTag,
    ManifestTagHead,
    ManifestDigest,
    ManifestDigestHead,
    Blob,
    BlobHead,
}

const TEMPLATES: [Template; 8] = [
    Template::Tags,
    Template::TagsPage,
    Template::ManifestTag,
    Template::ManifestTagHead,
    Template::ManifestDigest,
    Template::ManifestDigestHead,
    Template::Blob,
    Template::BlobHead,
];

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json";

fn asked_for(t: Template, name: &str, c: &Content) -> Asked {
    let manifest = |r: &str| format!("/v2/{name}/manifests/{r}");
    match t {
        Template::Tags => Asked::get(format!("/v2/{name}/tags/list")),
        Template::TagsPage => Asked::get(format!("/v2/{name}/tags/list?n=1")),
        Template::ManifestTag => Asked::get(manifest("latest")).with("Accept", MANIFEST_ACCEPT),
        Template::ManifestTagHead => {
            Asked::head(manifest("latest")).with("Accept", MANIFEST_ACCEPT)
        }
        Template::ManifestDigest => Asked::get(manifest(&c.latest)).with("Accept", MANIFEST_ACCEPT),
        Template::ManifestDigestHead => {
            Asked::head(manifest(&c.latest)).with("Accept", MANIFEST_ACCEPT)
        }
        Template::Blob => Asked::get(format!("/v2/{name}/blobs/{}", c.layer)),
        Template::BlobHead => Asked::head(format!("/v2/{name}/blobs/{}", c.layer)),
    }
}

/// An answer with the asked name and references replaced, `Date` left out:
/// what must be the same for an invisible and a nonexistent repository.
fn normalized(r: &TestResponse, name: &str, c: &Content) -> String {
    let norm = |s: &str| {
        s.replace(name, "<NAME>")
            .replace(&c.latest, "<REF>")
            .replace(&c.layer, "<REF>")
    };
    let mut headers: Vec<String> = r
        .headers
        .iter()
        .filter(|(k, _)| k != "date")
        .map(|(k, v)| format!("{k}: {}\n", norm(v)))
        .collect();
    headers.sort();
    let mut out = format!("{}\n{}", r.status, headers.concat());
    out.push_str(&norm(&String::from_utf8_lossy(&r.body)));
    out
}

impl Probe<'_> {
    /// Every per-repository route for every repository, and the nonexistent ones.
    async fn repositories(&mut self) {
        let world = self.world;
        // The nonexistent repositories' answers, asked with real references.
        let sample = world
            .content
            .values()
            .next()
            .cloned()
            .expect("Pulp holds content");
        let mut ghost_answers = BTreeMap::new();
        for ghost in &world.ghosts {
            for t in TEMPLATES {
                let asked = asked_for(t, ghost, &sample);
                if let Some(r) = self.ask(&asked).await {
                    self.expect_invisible(&asked, &r, ghost);
                    let n = normalized(&r, ghost, &sample);
                    if let Some(previous) = ghost_answers.insert(t, n.clone()) {
                        self.check(&asked, previous == n, || {
                            format!("two nonexistent repositories differ:\n{previous}\n---\n{n}")
                        });
                    }
                }
            }
        }
        for repo in &world.repos {
            let name = repo.name.as_str();
            let content = world
                .content
                .get(name)
                .cloned()
                .unwrap_or_else(|| sample.clone());
            let visible = self.who.sees(name);
            for t in TEMPLATES {
                let asked = asked_for(t, name, &content);
                let Some(r) = self.ask(&asked).await else {
                    continue;
                };
                if !visible {
                    self.expect_invisible(&asked, &r, name);
                    let n = normalized(&r, name, &content);
                    let ghost = ghost_answers.get(&t).cloned().unwrap_or_default();
                    self.check(&asked, n == ghost, || {
                        format!("answered unlike a nonexistent repository:\n{n}\n---\n{ghost}")
                    });
                } else if !repo.in_pulp {
                    self.expect_status(&asked, &r, 404);
                } else {
                    self.visible_answer(t, &asked, &r, repo, &content);
                }
            }
        }
    }

    fn visible_answer(
        &mut self,
        t: Template,
        asked: &Asked,
        r: &TestResponse,
        repo: &Repo,
        c: &Content,
    ) {
        let name = repo.name.as_str();
        let origin = self.world.content_origin.clone();
        match t {
            Template::Tags | Template::TagsPage => {
                if !self.expect_status(asked, r, 200) {
                    return;
                }
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                let want = if t == Template::Tags {
                    serde_json::json!(["latest", "v1"])
                } else {
                    serde_json::json!(["latest"])
                };
                self.check(asked, v["name"] == name && v["tags"] == want, || {
                    format!("tags {v}")
                });
                let link = r.header("link").map(str::to_owned);
                if t == Template::TagsPage {
                    let want = format!("<{}/v2/{name}/tags/list?", self.world.public_url);
                    self.check(
                        asked,
                        link.as_deref().is_some_and(|l| l.starts_with(&want)),
                        || format!("Link {link:?}, want {want}..."),
                    );
                } else {
                    self.check(asked, link.is_none(), || {
                        format!("Link {link:?} on the last page")
                    });
                }
            }
            Template::ManifestTag
            | Template::ManifestTagHead
            | Template::ManifestDigest
            | Template::ManifestDigestHead => {
                if repo.redirect_manifests {
                    if self.expect_status(asked, r, 302) {
                        let loc = r.header("location").unwrap_or_default().to_owned();
                        let want = format!("{origin}/pulp/container/{name}/manifests/");
                        self.check(asked, loc.starts_with(&want), || format!("Location {loc}"));
                    }
                    return;
                }
                if !self.expect_status(asked, r, 200) {
                    return;
                }
                let digest = r.header("docker-content-digest").map(str::to_owned);
                self.check(asked, digest.as_deref() == Some(c.latest.as_str()), || {
                    format!("Docker-Content-Digest {digest:?}, want {}", c.latest)
                });
                if asked.method == "GET" {
                    let got = gateway_tests::fake_pulp::sha256_digest(&r.body);
                    self.check(asked, got == c.latest, || "manifest bytes".into());
                }
            }
            Template::Blob | Template::BlobHead => {
                if repo.direct_blobs {
                    if self.expect_status(asked, r, 200) && asked.method == "GET" {
                        let got = gateway_tests::fake_pulp::sha256_digest(&r.body);
                        self.check(asked, got == c.layer, || "blob bytes".into());
                    }
                    return;
                }
                if self.expect_status(asked, r, 302) {
                    let loc = r.header("location").unwrap_or_default().to_owned();
                    let want = format!("{origin}/pulp/container/{name}/blobs/{}?", c.layer);
                    self.check(asked, loc.starts_with(&want), || format!("Location {loc}"));
                }
            }
        }
    }

    /// The Flatpak index: several queries, gzip, `If-None-Match`, Pulp's errors.
    async fn index(&mut self) {
        let world = self.world;
        let shown: Vec<&Repo> = world
            .repos
            .iter()
            .filter(|r| r.flatpak.is_some() && r.in_pulp && self.who.sees(&r.name))
            .collect();
        let everything: Vec<String> = shown.iter().map(|r| r.name.clone()).collect();
        let hidden_app = world
            .repos
            .iter()
            .find(|r| r.flatpak.is_some() && r.in_pulp && !self.who.sees(&r.name));
        let seen_app = shown.last().copied();
        let exists = "label%3Aorg.flatpak.ref%3Aexists=1";
        let mut cases: Vec<(Asked, Vec<String>)> = vec![
            (
                Asked::get(format!("/index/static?{FLATPAK_INDEX_QUERY}")),
                everything.clone(),
            ),
            (
                Asked::get(format!("/index/dynamic?{FLATPAK_INDEX_QUERY}")),
                everything.clone(),
            ),
            (
                Asked::get(format!("/index/static?{exists}")),
                everything.clone(),
            ),
            (
                Asked::get(format!("/index/static?{FLATPAK_INDEX_QUERY}"))
                    .with("Accept-Encoding", "gzip"),
                everything.clone(),
            ),
            (
                Asked::get(format!("/index/dynamic?{exists}&tag=v1")),
                Vec::new(),
            ),
        ];
        for app in hidden_app.iter().chain(seen_app.iter()) {
            let expect = if self.who.sees(&app.name) {
                vec![app.name.clone()]
            } else {
                Vec::new()
            };
            let id = app.flatpak.clone().unwrap_or_default();
            let r#ref: String =
                form_urlencoded::byte_serialize(format!("app/{id}/x86_64/stable").as_bytes())
                    .collect();
            // The runtime's ref is `runtime/...`: an `app/` ref names nothing.
            let by_ref = if app.name == repo_name(0) {
                Vec::new()
            } else {
                expect.clone()
            };
            cases.push((
                Asked::get(format!("/index/dynamic?{exists}&repository={}", app.name)),
                expect.clone(),
            ));
            cases.push((
                Asked::get(format!(
                    "/index/static?{exists}&label%3Aorg.flatpak.ref={}",
                    r#ref
                )),
                by_ref,
            ));
        }
        let mut own_etag = None;
        for (asked, want) in cases {
            let Some(r) = self.ask(&asked).await else {
                continue;
            };
            if !self.expect_status(&asked, &r, 200) {
                continue;
            }
            let body = plain_body(&r);
            let names = common::index_names(&body);
            self.check(&asked, names == want, || {
                format!("index {names:?}, want {want:?}")
            });
            let registry = common::RawIndex::parse(&body).registry;
            self.check(&asked, registry == format!("{}/", world.public_url), || {
                format!("Registry {registry}")
            });
            self.check(
                &asked,
                r.header("cache-control") == Some("private, no-cache"),
                || format!("Cache-Control {:?}", r.header("cache-control")),
            );
            if own_etag.is_none() {
                own_etag = r.header("etag").map(str::to_owned);
            }
        }
        // Its own ETag: 304, and nothing else.
        if let Some(etag) = own_etag {
            let asked = Asked::get(format!("/index/static?{FLATPAK_INDEX_QUERY}"))
                .with("If-None-Match", etag);
            if let Some(r) = self.ask(&asked).await {
                self.expect_status(&asked, &r, 304);
                self.check(&asked, r.body.is_empty(), || "a 304 with a body".into());
            }
        }
        // Pulp's own refusals pass through without naming anything.
        for path in [
            "/index/static",
            "/index/dynamic?label%3Aorg.flatpak.ref%3Aexists=1&bogus=1",
        ] {
            let asked = Asked::get(path);
            if let Some(r) = self.ask(&asked).await {
                self.expect_status(&asked, &r, 400);
            }
        }
    }

    /// `_catalog`: whole, paged by `Link`, from an arbitrary `last`, bad `n`.
    async fn catalog(&mut self) {
        let visible = self.who.visible.clone();
        let asked = Asked::get("/v2/_catalog");
        if let Some(r) = self.ask(&asked).await
            && self.expect_status(&asked, &r, 200)
        {
            let names = common::catalog_names(&r.body);
            self.check(&asked, names == visible, || format!("catalog {names:?}"));
        }
        // Follow the Links.
        let mut path = "/v2/_catalog?n=7".to_owned();
        let mut walked = Vec::new();
        for _ in 0..=REPOS {
            let asked = Asked::get(path.clone());
            let Some(r) = self.ask(&asked).await else {
                break;
            };
            if !self.expect_status(&asked, &r, 200) {
                break;
            }
            walked.extend(common::catalog_names(&r.body));
            let Some(link) = r.header("link") else { break };
            let prefix = format!("<{}", self.world.public_url);
            let next = link
                .strip_prefix(&prefix)
                .and_then(|l| l.strip_suffix(">; rel=\"next\""));
            if !self.check(&asked, next.is_some(), || format!("Link {link}")) {
                break;
            }
            path = next.unwrap_or_default().to_owned();
        }
        let asked = Asked::get("/v2/_catalog?n=7 (walked)");
        self.check(&asked, walked == visible, || format!("pages {walked:?}"));
        // From a `last` the client may not see, or that does not exist.
        let world = self.world;
        let hidden = world
            .repos
            .iter()
            .find(|r| !self.who.sees(&r.name))
            .map(|r| r.name.clone());
        for last in hidden
            .into_iter()
            .chain([ghost_name(3), "leakcheck/r3".to_owned()])
        {
            let asked = Asked::get(format!("/v2/_catalog?n=5&last={last}"));
            if let Some(r) = self.ask(&asked).await
                && self.expect_status(&asked, &r, 200)
            {
                let want: Vec<String> = visible
                    .iter()
                    .filter(|v| **v > last)
                    .take(5)
                    .cloned()
                    .collect();
                let names = common::catalog_names(&r.body);
                self.check(&asked, names == want, || {
                    format!("catalog {names:?}, want {want:?}")
                });
            }
        }
        let asked = Asked::get("/v2/_catalog?n=abc");
        if let Some(r) = self.ask(&asked).await {
            self.expect_error(&asked, &r, 400, "PAGINATION_NUMBER_INVALID");
        }
    }

    /// `/v2/`, v1, token, unknown routes, refused writes, malformed names.
    async fn the_rest(&mut self) {
        let world = self.world;
        let asked = Asked::get("/v2/");
        if let Some(r) = self.ask(&asked).await {
            self.expect_status(&asked, &r, if self.who.anonymous() { 401 } else { 200 });
        }
        let asked = Asked::get("/v1/search?q=leakcheck&n=100");
        if let Some(r) = self.ask(&asked).await
            && self.expect_status(&asked, &r, 200)
        {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let names: Vec<String> = v["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h["name"].as_str().map(str::to_owned))
                .collect();
            self.check(&asked, names == self.who.visible, || {
                format!("search {names:?}")
            });
        }
        let hidden = world
            .repos
            .iter()
            .find(|r| !self.who.sees(&r.name))
            .map(|r| r.name.clone());
        let seen = self.who.visible.last().cloned();
        let mut named: Vec<String> = hidden.iter().chain(seen.iter()).cloned().collect();
        named.push(ghost_name(5));
        for name in &named {
            let scope: String =
                form_urlencoded::byte_serialize(format!("repository:{name}:pull").as_bytes())
                    .collect();
            for asked in [
                Asked::get(format!("/v1/search?q={name}")),
                Asked::get(format!("/v2/token?scope={scope}&service=leakcheck")),
                Asked::get(format!("/v2/{name}/unknown")),
                Asked::get(format!("/v2/{name}/tags/list?n=-1")),
                Asked::get(format!("/v2/{name}/manifests/..%2F..%2Fetc")),
                Asked::get(format!("/v2/{name}/blobs/sha256:XYZ")),
                Asked {
                    method: "PUT",
                    ..Asked::get(format!("/v2/{name}/manifests/latest"))
                },
                Asked {
                    method: "DELETE",
                    ..Asked::get(format!("/v2/{name}/manifests/latest"))
                },
                Asked {
                    method: "POST",
                    ..Asked::get(format!("/v2/{name}/blobs/uploads/"))
                },
            ] {
                if let Some(r) = self.ask(&asked).await {
                    let status = r.status;
                    self.check(&asked, status < 500, || format!("status {status}"));
                }
            }
        }
        for path in [
            "/nowhere",
            "/v2/_catalog/extra",
            "/index/other",
            "/v2/LeakCheck/Upper/manifests/latest",
            "/v1/_ping",
        ] {
            let asked = Asked::get(path);
            if let Some(r) = self.ask(&asked).await {
                let status = r.status;
                self.check(&asked, status < 500, || format!("status {status}"));
            }
        }
    }
}

async fn probe(world: &World, who: &Who, url: &str, ca: &str) -> (u64, u64, Vec<String>) {
    let client = match &who.kind {
        Kind::Host(cert) => TestClient::with_cert(url, ca, cert),
        _ => TestClient::anonymous(url, ca),
    };
    let mut p = Probe {
        world,
        who,
        client,
        token: None,
        requests: 0,
        checks: 0,
        problems: Vec::new(),
    };
    if let Kind::User { login, password } = &who.kind {
        // The registry token flow through the gateway, for one private repository.
        let private = world
            .repos
            .iter()
            .find(|r| !r.public && who.sees(&r.name))
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let scope: String =
            form_urlencoded::byte_serialize(format!("repository:{private}:pull").as_bytes())
                .collect();
        let asked = Asked::get(format!(
            "/v2/token?account={login}&scope={scope}&service=leakcheck"
        ));
        p.requests += 1;
        match p
            .client
            .get(&asked.path)
            .basic(login, password)
            .try_send()
            .await
        {
            Ok(r) if r.status == 200 => {
                p.token = r.json()["token"].as_str().map(str::to_owned);
            }
            Ok(r) => p.fail(&asked, format!("token: {} {}", r.status, r.text())),
            Err(e) => p.fail(&asked, e),
        }
        if p.token.is_none() {
            return (p.requests, p.checks, p.problems);
        }
    }
    p.index().await;
    p.catalog().await;
    p.repositories().await;
    p.the_rest().await;
    (p.requests, p.checks, p.problems)
}

/// Every identity replays every other one's index `ETag`.
async fn etags_across(
    world: &World,
    who_all: &[Who],
    url: &str,
    ca: &str,
) -> (u64, u64, Vec<String>) {
    let clients: Vec<(TestClient, Option<String>)> = who_all
        .iter()
        .map(|w| match &w.kind {
            Kind::Host(cert) => (TestClient::with_cert(url, ca, cert), None),
            _ => (TestClient::anonymous(url, ca), None),
        })
        .collect();
    // Users need their token again (the probe's client is gone): ask once more.
    let mut clients = clients;
    for (i, w) in who_all.iter().enumerate() {
        if let Kind::User { login, password } = &w.kind {
            let private = world
                .repos
                .iter()
                .find(|r| !r.public && w.sees(&r.name))
                .map(|r| r.name.clone())
                .unwrap_or_default();
            let scope: String =
                form_urlencoded::byte_serialize(format!("repository:{private}:pull").as_bytes())
                    .collect();
            let r = clients[i]
                .0
                .get(&format!(
                    "/v2/token?account={login}&scope={scope}&service=leakcheck"
                ))
                .basic(login, password)
                .send()
                .await;
            clients[i].1 = r.json()["token"].as_str().map(str::to_owned);
        }
    }
    let (mut requests, mut checks, mut problems) = (0u64, 0u64, Vec::new());
    let mut replays: BTreeMap<u16, u64> = BTreeMap::new();
    let send = |i: usize, path: String, inm: Option<String>| {
        let (client, token) = &clients[i];
        let mut req = client.get(&path);
        if let Some(t) = token {
            req = req.bearer(t);
        }
        if let Some(e) = inm {
            req = req.header("If-None-Match", &e);
        }
        req.send()
    };
    for kind in ["static", "dynamic"] {
        let path = format!("/index/{kind}?{FLATPAK_INDEX_QUERY}");
        let mut own = Vec::new();
        for i in 0..who_all.len() {
            let r = send(i, path.clone(), None).await;
            requests += 1;
            own.push((
                r.header("etag").unwrap_or_default().to_owned(),
                r.body.clone(),
            ));
        }
        checks += 1;
        // Distinct bodies, distinct ETags; identical bodies, identical ETags.
        for a in 0..own.len() {
            for b in 0..own.len() {
                checks += 1;
                if (own[a].0 == own[b].0) != (own[a].1 == own[b].1) && problems.len() < 40 {
                    problems.push(format!(
                        "{kind}: {} and {}: ETag equality disagrees with body equality",
                        who_all[a].label, who_all[b].label
                    ));
                }
            }
        }
        // Interleaved: round k, identity j replays identity (j + k)'s ETag.
        for k in 1..who_all.len() {
            for j in 0..who_all.len() {
                let i = (j + k) % who_all.len();
                let r = send(j, path.clone(), Some(own[i].0.clone())).await;
                requests += 1;
                checks += 1;
                let same = own[i].1 == own[j].1;
                let ok = match r.status {
                    304 => same && r.body.is_empty(),
                    200 => !same && r.body == own[j].1,
                    _ => false,
                };
                *replays.entry(r.status).or_insert(0) += 1;
                if !ok && problems.len() < 40 {
                    problems.push(format!(
                        "{kind}: {} replaying {}'s ETag got {} (same view: {same})",
                        who_all[j].label, who_all[i].label, r.status
                    ));
                }
            }
        }
    }
    println!(
        "leak check: every identity replayed every other one's index ETag: {} answered 304 (same view), {} answered 200 (another view)",
        replays.get(&304).copied().unwrap_or(0),
        replays.get(&200).copied().unwrap_or(0)
    );
    (requests, checks, problems)
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

fn environment(hosts: &[HostGrant], users: &[UserGrant]) -> TestEnv {
    let all = repos();
    let public: Vec<String> = all
        .iter()
        .filter(|r| r.public)
        .map(|r| r.name.clone())
        .collect();
    let listed: Vec<(String, bool)> = all
        .iter()
        .filter(|r| r.listed)
        .map(|r| (r.name.clone(), !r.public))
        .collect();
    let (hosts, users) = (hosts.to_vec(), users.to_vec());
    let builder: TestEnvBuilder = TestEnv::builder()
        .pulp(pulp_repos)
        .central(move |mut c| {
            let public: Vec<&str> = public.iter().map(String::as_str).collect();
            c = c.public(&public);
            for (uuid, granted) in &hosts {
                let g: Vec<&str> = granted.iter().map(String::as_str).collect();
                c = c.host(uuid, &g);
            }
            for (login, password, granted) in &users {
                let g: Vec<&str> = granted.iter().map(String::as_str).collect();
                c = c.user(login, password, &g);
            }
            c
        })
        .gateway(|g| g.workers(2));
    let listed: Vec<(&str, bool)> = listed.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    builder.repositories(&listed).start()
}

#[test]
fn no_answer_gives_away_a_repository_outside_the_clients_view() {
    let seed = seed();
    println!("leak check: seed {seed} (replay with LEAK_CHECK_SEED={seed})");
    let mut rng = Rng(seed);
    let (hosts, users) = population(&mut rng);
    let env = environment(&hosts, &users);

    let all = repos();
    let content = all
        .iter()
        .filter_map(|r| content_of(&env.pulp, &r.name).map(|c| (r.name.clone(), c)))
        .collect();
    let content: BTreeMap<String, Content> = content;
    let mut digest_owners: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (name, c) in &content {
        for m in &c.markers {
            digest_owners
                .entry(m.clone())
                .or_default()
                .push(name.clone());
        }
    }
    let world = Arc::new(World {
        repos: all,
        content,
        digest_owners,
        ghosts: vec![ghost_name(1), ghost_name(2)],
        public_url: env.gateway.config().server.public_url.clone(),
        content_origin: env.pulp.content_origin(),
    });
    let mut who_all: Vec<Who> = hosts
        .iter()
        .enumerate()
        .map(|(i, (uuid, granted))| Who {
            label: format!("host{i:02}"),
            kind: Kind::Host(env.host_cert(uuid)),
            visible: visible_of(granted),
        })
        .collect();
    who_all.extend(users.iter().map(|(login, password, granted)| Who {
        label: login.clone(),
        kind: Kind::User {
            login: login.clone(),
            password: password.clone(),
        },
        visible: visible_of(granted),
    }));
    who_all.push(Who {
        label: "anonymous".into(),
        kind: Kind::Anonymous,
        visible: visible_of(&[]),
    });
    let distinct: BTreeSet<&Vec<String>> = who_all.iter().map(|w| &w.visible).collect();
    println!(
        "leak check: {} hosts, {} users, anonymous; {} repositories ({} public, {} unlisted, {} not in Pulp); {} distinct views",
        HOSTS,
        USERS,
        world.repos.len(),
        PUBLIC,
        UNLISTED,
        NOT_IN_PULP.len(),
        distinct.len()
    );

    // Every identity, every route; identities interleaved over a few threads.
    let (url, ca) = (env.gateway.url(), env.ca_pem());
    let next = Arc::new(AtomicUsize::new(0));
    let who_shared = Arc::new(who_all.clone());
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (world, who_all, next, url, ca) = (
                world.clone(),
                who_shared.clone(),
                next.clone(),
                url.clone(),
                ca.clone(),
            );
            std::thread::spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let (mut requests, mut checks, mut problems) = (0, 0, Vec::new());
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(who) = who_all.get(i) else { break };
                        let (r, c, p) = probe(&world, who, &url, &ca).await;
                        requests += r;
                        checks += c;
                        problems.extend(p);
                    }
                    (requests, checks, problems)
                })
            })
        })
        .collect();
    let (mut requests, mut checks, mut problems) = (0u64, 0u64, Vec::new());
    for t in threads {
        let (r, c, p) = t.join().expect("a probe thread panicked");
        requests += r;
        checks += c;
        problems.extend(p);
    }
    let (r, c, p) =
        actix_web::rt::System::new().block_on(etags_across(&world, &who_all, &url, &ca));
    requests += r;
    checks += c;
    problems.extend(p);

    println!(
        "leak check: {} identities ({HOSTS} hosts), {requests} requests, {checks} checks, {} problems (seed {seed})",
        who_all.len(),
        problems.len()
    );
    problems.truncate(40);
    assert!(
        problems.is_empty(),
        "seed {seed}:\n{}",
        problems.join("\n\n")
    );
}
