//! Upstreams that go away and come back.
//!
//! * A pooled keep-alive connection to Pulp or central that died while it sat
//!   in the pool costs no client a failure: the gateway sends the request again,
//!   once, on a new connection (and only then: not after a timeout, not once an
//!   answer has begun, not on a connection it had just opened).
//! * A bounded load run on loopback while central and Pulp are each stopped and
//!   restarted: only defined answers during the outages, never a repository
//!   outside the client's grant, and every route correct again afterwards
//!   without restarting the gateway.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gateway_tests::client::{TestClient, TestResponse};
use gateway_tests::fake_central::FakeCentral;
use gateway_tests::fake_pulp::{Blob, FLATPAK_INDEX_QUERY, FakePulp, FakeRepo, Image, PathKind};
use gateway_tests::harness::{Fault, GatewayBuilder, TestEnv, upstream_tls};
use gateway_tests::pki::{Issued, Pki};

// ---------------------------------------------------------------------------
// A relay that hides an upstream's closes
// ---------------------------------------------------------------------------

/// A TCP relay in front of a fake upstream that hides the upstream's closes
/// from the gateway: when the upstream ends a relayed connection (a restart,
/// an idle timeout), the gateway's side stays open, and the next bytes the
/// gateway sends on it are answered with a reset. That is what a client sees
/// when it reuses a keep-alive connection whose server went away while the
/// client was not looking (a busy worker, a lost FIN, state dropped in between).
struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    resets: Arc<AtomicU64>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay binds");
        listener
            .set_nonblocking(true)
            .expect("relay listener is non-blocking");
        let addr = listener.local_addr().expect("relay address");
        let stop = Arc::new(AtomicBool::new(false));
        let resets = Arc::new(AtomicU64::new(0));
        let accept = {
            let (stop, resets) = (stop.clone(), resets.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => relay_connection(client, upstream, resets.clone()),
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Relay {
            addr,
            stop,
            resets,
            accept: Some(accept),
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Connections reset because the gateway reused them after the upstream had closed.
    fn resets(&self) -> u64 {
        self.resets.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn relay_connection(client: TcpStream, upstream: SocketAddr, resets: Arc<AtomicU64>) {
    // A refused upstream: the new connection ends at once, as a dial would fail.
    let Ok(up) = TcpStream::connect(upstream) else {
        return;
    };
    let _ = client.set_nonblocking(false);
    let (Ok(up_reader), Ok(client_writer)) = (up.try_clone(), client.try_clone()) else {
        return;
    };
    let dead = Arc::new(AtomicBool::new(false));
    {
        let dead = dead.clone();
        std::thread::spawn(move || {
            let (mut from, mut to) = (up_reader, client_writer);
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            // Keep the gateway's side open (the other thread holds it): drop
            // only this copy, then mark the connection dead.
            drop(to);
            dead.store(true, Ordering::SeqCst);
        });
    }
    std::thread::spawn(move || {
        let (mut from, mut to) = (client, up);
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.peek(&mut buf[..1]) {
                Ok(0) | Err(_) => break,
                Ok(_) if dead.load(Ordering::SeqCst) => {
                    // Closing with unread bytes makes the kernel send a reset.
                    resets.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(_) => {}
            }
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

// ---------------------------------------------------------------------------
// Part 1: one retry on a dead pooled connection, and only then
// ---------------------------------------------------------------------------

const APP: &str = "chaos/retry/app";

fn retry_pulp(pki: &Pki) -> FakePulp {
    FakePulp::builder()
        .tls(upstream_tls(pki))
        .keep_alive(true)
        .repo(FakeRepo::new(APP).image("latest", Image::new().label("retry", "yes")))
        .start()
}

/// Hosts `f0000000-000<i>-...`.
fn retry_host(i: usize) -> String {
    format!("f0000000-{i:04}-4a5b-9c6d-0e1f2a3b4c5d")
}

#[test]
fn a_restarted_upstream_serves_the_very_next_request() {
    let pki = Arc::new(Pki::new());
    let mut pulp = retry_pulp(&pki);
    let mut central = {
        let mut b = FakeCentral::builder().tls(upstream_tls(&pki));
        for i in 0..16 {
            b = b.host(&retry_host(i), &[APP]);
        }
        b.start()
    };
    let pulp_relay = Relay::start(pulp.addr());
    let central_relay = Relay::start(central.addr());
    let gateway = GatewayBuilder::new(pki.clone())
        .pulp_at(&pulp_relay.url(), pulp.registry_path())
        .central_at(&central_relay.url())
        .start();
    gateway.push_repository_list(&[(APP, true)]);
    let digest = pulp
        .repo(APP)
        .and_then(|r| r.tag_digest("latest"))
        .expect("tagged");
    let manifest = format!("/v2/{APP}/manifests/latest");

    // Each round: four hosts never seen before (a central lookup each), each on
    // its own client connection (spread over the gateway's workers), each
    // fetching a manifest (a Pulp request each).
    let round = |first: usize| -> Vec<(String, u16, String)> {
        actix_web::rt::System::new().block_on(async {
            let mut out = Vec::new();
            for i in first..first + 4 {
                let host = retry_host(i);
                let client =
                    TestClient::with_cert(&gateway.url(), &pki.ca_pem(), &pki.host_cert(&host));
                let r = client.get("/v2/_catalog").send().await;
                out.push((format!("{host} _catalog"), r.status, r.text()));
                let r = client.get(&manifest).send().await;
                out.push((
                    format!("{host} manifest"),
                    r.status,
                    r.header("docker-content-digest")
                        .unwrap_or_default()
                        .to_owned(),
                ));
            }
            out
        })
    };
    let check = |answers: &[(String, u16, String)], when: &str| {
        for (what, status, detail) in answers {
            assert_eq!(*status, 200, "{when}: {what}: {detail}");
            if what.ends_with("_catalog") {
                assert_eq!(
                    detail,
                    &format!("{{\"repositories\":[\"{APP}\"]}}"),
                    "{when}"
                );
            } else {
                assert_eq!(detail, &digest, "{when}: {what}");
            }
        }
    };
    check(&round(0), "warm-up");
    assert_eq!(pulp_relay.resets() + central_relay.resets(), 0);

    for (n, first) in [(1, 4), (2, 8)] {
        pulp.restart();
        central.restart();
        // Let the relays see the old connections end (the gateway does not).
        std::thread::sleep(Duration::from_millis(300));
        let (pulp_before, central_before) = (pulp.total(), central.total());
        check(&round(first), &format!("after restart {n}"));
        assert!(
            pulp_relay.resets() >= n && central_relay.resets() >= n,
            "the gateway did reuse connections the upstreams had closed \
             (resets: Pulp {}, central {})",
            pulp_relay.resets(),
            central_relay.resets()
        );
        assert_eq!(
            pulp.total() - pulp_before,
            4,
            "one Pulp request per manifest"
        );
        assert_eq!(
            central.total() - central_before,
            4,
            "one central request per new host"
        );
    }
}

#[test]
fn only_a_dead_pooled_connection_is_retried() {
    let env = TestEnv::builder()
        .pulp(|p| {
            p.keep_alive(true).repo(
                FakeRepo::new(APP)
                    .image(
                        "latest",
                        Image::new().add_layer(Blob::generated(64 << 10, 3)),
                    )
                    .direct_blobs(true),
            )
        })
        .central(|c| c.host(&retry_host(0), &[APP]))
        .repositories(&[(APP, true)])
        .gateway(|g| g.workers(1).set("pulp.timeout_secs", 1))
        .start();
    let host = env.host_cert(&retry_host(0));
    let manifest = format!("/v2/{APP}/manifests/latest");
    let layer = env
        .pulp
        .repo(APP)
        .map(|r| r.layer_digests("latest"))
        .and_then(|l| l.first().cloned())
        .expect("a layer");
    let blob = format!("/v2/{APP}/blobs/{layer}");
    actix_web::rt::System::new().block_on(async {
        let client = env.client_as(&host);
        // One worker: its pool now holds a live connection to Pulp.
        assert_eq!(client.get(&manifest).send().await.status, 200);

        // Pulp drops the pooled connection without answering: asked again, once.
        env.pulp.reset();
        env.pulp
            .fail_times(Some(PathKind::Manifest), Fault::Close, 1);
        let r = client.get(&manifest).send().await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(env.pulp.count(PathKind::Manifest), 2);

        // Twice in a row: the retry is not retried. (The failed connection was
        // dropped and the retry's closed: pool a live one first.)
        assert_eq!(client.get(&manifest).send().await.status, 200);
        env.pulp.reset();
        env.pulp
            .fail_times(Some(PathKind::Manifest), Fault::Close, 2);
        let r = client.get(&manifest).send().await;
        assert!(matches!(r.status, 502 | 503), "{} {}", r.status, r.text());
        common::error_code(&r.body);
        assert_eq!(env.pulp.count(PathKind::Manifest), 2);
        env.pulp.clear_faults();
        assert_eq!(client.get(&manifest).send().await.status, 200);

        // A timeout is not retried.
        env.pulp.reset();
        env.pulp.fail_times(
            Some(PathKind::Manifest),
            Fault::Stall(Duration::from_millis(1500)),
            1,
        );
        let r = client.get(&manifest).send().await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(env.pulp.count(PathKind::Manifest), 1);
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(client.get(&manifest).send().await.status, 200);

        // An answer that breaks after its head is not retried: the client sees
        // the break, and Pulp was asked once.
        env.pulp.reset();
        env.pulp
            .fail_times(Some(PathKind::Blob), Fault::Truncate, 1);
        let r = client.get(&blob).try_send_drain().await;
        assert!(
            r.as_ref().is_err() || r.as_ref().is_ok_and(|d| d.len < 64 << 10),
            "a truncated blob is not passed off as whole: {r:?}"
        );
        assert_eq!(env.pulp.count(PathKind::Blob), 1);
    });

    // A connection opened for the request that fails is not retried either.
    let env = TestEnv::builder()
        .pulp(|p| p.repo(FakeRepo::new(APP).image("latest", Image::new())))
        .central(|c| c.host(&retry_host(0), &[APP]))
        .repositories(&[(APP, true)])
        .start();
    let curl = env.curl_as(&env.host_cert(&retry_host(0)));
    assert_eq!(curl.get(&manifest).status, 200);
    env.pulp.reset();
    env.pulp
        .fail_times(Some(PathKind::Manifest), Fault::Close, 1);
    let r = curl.get(&manifest);
    assert!(matches!(r.status, 502 | 503), "{} {}", r.status, r.text());
    assert_eq!(
        env.pulp.count(PathKind::Manifest),
        1,
        "Pulp closes every API connection (Connection: close): nothing was reused"
    );
}

// ---------------------------------------------------------------------------
// Part 2: load while central and Pulp go down and come back
// ---------------------------------------------------------------------------

/// One repository of the load run's world.
struct Spec {
    name: &'static str,
    /// `auth_required = false` on the pushed list.
    public: bool,
    /// On the repository list Katello pushed.
    listed: bool,
    /// Held by Pulp.
    in_pulp: bool,
    /// Flatpak application or runtime id (shown by the index).
    flatpak: Option<&'static str>,
    /// Pulp serves blobs with a 200 (else a 302 to the content app).
    direct_blobs: bool,
    /// Pulp answers manifests with a 302.
    redirect_manifests: bool,
}

const fn spec(name: &'static str, public: bool, flatpak: Option<&'static str>) -> Spec {
    Spec {
        name,
        public,
        listed: true,
        in_pulp: true,
        flatpak,
        direct_blobs: false,
        redirect_manifests: false,
    }
}

const RUNTIME: &str = "chaos/pub/runtime";
const TOOLS: &str = "chaos/pub/tools";
const ALPHA: &str = "chaos/alpha/app";
const BETA: &str = "chaos/beta/app";
const GAMMA: &str = "chaos/gamma/svc";
const DELTA: &str = "chaos/delta/app";
const UNLISTED: &str = "chaos/unlisted/app";
const MISSING: &str = "chaos/missing/app";

/// Pulp's order (the index follows it).
const WORLD: [Spec; 8] = [
    spec(RUNTIME, true, Some("org.chaos.Platform")),
    spec(TOOLS, true, None),
    spec(ALPHA, false, Some("org.chaos.Alpha")),
    Spec {
        direct_blobs: true,
        ..spec(BETA, false, Some("org.chaos.Beta"))
    },
    Spec {
        redirect_manifests: true,
        ..spec(GAMMA, false, None)
    },
    spec(DELTA, false, Some("org.chaos.Delta")),
    Spec {
        listed: false,
        ..spec(UNLISTED, false, Some("org.chaos.Unlisted"))
    },
    Spec {
        in_pulp: false,
        ..spec(MISSING, false, None)
    },
];

/// (label, uuid, what central answers, whether Katello pushed that mapping too).
const HOSTS: [(&str, &str, &[&str], bool); 5] = [
    (
        "host-ab",
        "c4a05000-0001-4a5b-9c6d-0e1f2a3b4c5d",
        &[ALPHA, BETA],
        false,
    ),
    (
        "host-bg",
        "c4a05000-0002-4a5b-9c6d-0e1f2a3b4c5d",
        &[BETA, GAMMA],
        false,
    ),
    (
        "host-d",
        "c4a05000-0003-4a5b-9c6d-0e1f2a3b4c5d",
        &[DELTA, UNLISTED],
        false,
    ),
    (
        "host-none",
        "c4a05000-0004-4a5b-9c6d-0e1f2a3b4c5d",
        &[],
        false,
    ),
    (
        "host-pushed",
        "c4a05000-0005-4a5b-9c6d-0e1f2a3b4c5d",
        &[GAMMA, DELTA],
        true,
    ),
];

/// What the world looks like from Pulp: digests, and strings that give a repository away.
struct Facts {
    /// name -> (manifest digest of `latest`, first layer digest)
    content: BTreeMap<&'static str, (String, String)>,
    /// name -> strings only that repository's answers contain
    markers: BTreeMap<&'static str, Vec<String>>,
    content_origin: String,
}

fn facts(pulp: &FakePulp) -> Facts {
    let mut content = BTreeMap::new();
    let mut markers: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for s in &WORLD {
        let mut m = vec![s.name.to_owned()];
        if let Some(id) = s.flatpak {
            m.push(id.to_owned());
        }
        if let Some(repo) = pulp.repo(s.name) {
            let digest = repo.tag_digest("latest").expect("tagged latest");
            let layer = repo
                .layer_digests("latest")
                .first()
                .cloned()
                .expect("a layer");
            m.push(digest.clone());
            content.insert(s.name, (digest, layer));
        }
        markers.insert(s.name, m);
    }
    Facts {
        content,
        markers,
        content_origin: pulp.content_origin(),
    }
}

fn chaos_pulp(
    b: gateway_tests::fake_pulp::FakePulpBuilder,
) -> gateway_tests::fake_pulp::FakePulpBuilder {
    let mut b = b.keep_alive(true);
    for s in WORLD.iter().filter(|s| s.in_pulp) {
        let image = match s.flatpak {
            Some(id) if s.name == RUNTIME => Image::flatpak_runtime(id, "1"),
            Some(id) => Image::flatpak_app(id),
            None => Image::new().label("org.example.repo", s.name),
        };
        let image = if s.direct_blobs {
            image.add_layer(Blob::generated(48 << 10, 9))
        } else {
            image
        };
        b = b.repo(
            FakeRepo::new(s.name)
                .image("latest", image)
                .image("v1", Image::new().label("org.example.v1", s.name))
                .direct_blobs(s.direct_blobs)
                .redirect_manifests(s.redirect_manifests),
        );
    }
    b
}

/// A client identity and the names it may see.
#[derive(Clone)]
struct Who {
    label: &'static str,
    cert: Option<Issued>,
    visible: Vec<&'static str>,
}

impl Who {
    fn sees(&self, name: &str) -> bool {
        self.visible.contains(&name)
    }

    fn anonymous(&self) -> bool {
        self.cert.is_none()
    }
}

fn identities(pki: &Pki) -> Vec<Who> {
    let listed_public: Vec<&'static str> = WORLD
        .iter()
        .filter(|s| s.listed && s.public)
        .map(|s| s.name)
        .collect();
    let mut out: Vec<Who> = HOSTS
        .iter()
        .map(|(label, uuid, granted, _)| {
            let mut visible = listed_public.clone();
            visible.extend(
                granted
                    .iter()
                    .filter(|g| WORLD.iter().any(|s| s.name == **g && s.listed)),
            );
            visible.sort_unstable();
            Who {
                label,
                cert: Some(pki.host_cert(uuid)),
                visible,
            }
        })
        .collect();
    let mut visible = listed_public;
    visible.sort_unstable();
    out.push(Who {
        label: "anonymous",
        cert: None,
        visible,
    });
    out
}

#[derive(Clone, Debug)]
enum Kind {
    Ping,
    Catalog(Option<usize>),
    Index,
    Tags(&'static str),
    Manifest(&'static str),
    Blob(&'static str),
}

#[derive(Clone, Debug)]
struct Route {
    head: bool,
    path: String,
    kind: Kind,
}

fn routes(facts: &Facts) -> Vec<Route> {
    let get = |path: String, kind: Kind| Route {
        head: false,
        path,
        kind,
    };
    let mut out = vec![
        get("/v2/".into(), Kind::Ping),
        get("/v2/_catalog".into(), Kind::Catalog(None)),
        get("/v2/_catalog?n=2".into(), Kind::Catalog(Some(2))),
        get(format!("/index/static?{FLATPAK_INDEX_QUERY}"), Kind::Index),
        get(format!("/index/dynamic?{FLATPAK_INDEX_QUERY}"), Kind::Index),
    ];
    let any_layer = facts
        .content
        .get(ALPHA)
        .map(|(_, l)| l.clone())
        .unwrap_or_default();
    for s in &WORLD {
        let layer = facts
            .content
            .get(s.name)
            .map(|(_, l)| l.clone())
            .unwrap_or_else(|| any_layer.clone());
        let name = s.name;
        out.push(get(format!("/v2/{name}/tags/list"), Kind::Tags(name)));
        out.push(get(
            format!("/v2/{name}/manifests/latest"),
            Kind::Manifest(name),
        ));
        out.push(Route {
            head: true,
            path: format!("/v2/{name}/manifests/latest"),
            kind: Kind::Manifest(name),
        });
        out.push(get(format!("/v2/{name}/blobs/{layer}"), Kind::Blob(name)));
    }
    out
}

/// Everything a response shows, for the leak check.
fn whole(r: &TestResponse) -> String {
    let mut s = format!("{}\n", r.status);
    for (k, v) in &r.headers {
        s.push_str(&format!("{k}: {v}\n"));
    }
    s.push_str(&String::from_utf8_lossy(&r.body));
    s
}

/// No marker of a repository `who` may not see, except what the request itself names.
fn leak(facts: &Facts, who: &Who, route: &Route, r: &TestResponse) -> Result<(), String> {
    let text = whole(r);
    let visible_markers: Vec<&String> = facts
        .markers
        .iter()
        .filter(|(n, _)| who.sees(n))
        .flat_map(|(_, m)| m)
        .collect();
    for (name, markers) in facts.markers.iter().filter(|(n, _)| !who.sees(n)) {
        for m in markers {
            // A digest shared with a visible repository gives nothing away.
            if text.contains(m.as_str())
                && !visible_markers.contains(&m)
                && !route.path.contains(m.as_str())
            {
                return Err(format!("leaks {m} (of {name})"));
            }
        }
    }
    Ok(())
}

fn error_code_of(r: &TestResponse) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    v["errors"][0]["code"].as_str().map(str::to_owned)
}

/// The answer when every upstream is up.
fn check_steady(facts: &Facts, who: &Who, route: &Route, r: &TestResponse) -> Result<(), String> {
    let want = |status: u16| -> Result<(), String> {
        if r.status == status {
            Ok(())
        } else {
            Err(format!("status {} (want {status}): {}", r.status, r.text()))
        }
    };
    let invisible = |r: &TestResponse| -> Result<(), String> {
        if who.anonymous() {
            want(401)?;
            let challenge = r.header("www-authenticate").unwrap_or_default();
            if !challenge.starts_with("Bearer realm=") {
                return Err(format!("401 without a Bearer challenge: {:?}", r.headers));
            }
        } else {
            want(404)?;
            if !route.head && error_code_of(r).as_deref() != Some("NAME_UNKNOWN") {
                return Err(format!("404 without NAME_UNKNOWN: {}", r.text()));
            }
        }
        Ok(())
    };
    match &route.kind {
        Kind::Ping => {
            if who.anonymous() {
                want(401)
            } else {
                want(200)?;
                (r.text() == "{}").then_some(()).ok_or_else(|| r.text())
            }
        }
        Kind::Catalog(n) => {
            want(200)?;
            let names = common::catalog_names(&r.body);
            let all: Vec<String> = who.visible.iter().map(|s| (*s).to_owned()).collect();
            let page = match n {
                Some(n) => all.iter().take(*n).cloned().collect(),
                None => all.clone(),
            };
            if names != page {
                return Err(format!("catalog {names:?}, want {page:?}"));
            }
            let more = n.is_some_and(|n| n < all.len());
            if r.header("link").is_some() != more {
                return Err(format!("Link {:?} (more pages: {more})", r.header("link")));
            }
            Ok(())
        }
        Kind::Index => {
            if r.status == 304 {
                return Ok(());
            }
            want(200)?;
            let names = common::index_names(&r.body);
            let expected: Vec<String> = WORLD
                .iter()
                .filter(|s| s.flatpak.is_some() && s.in_pulp && who.sees(s.name))
                .map(|s| s.name.to_owned())
                .collect();
            if names != expected {
                return Err(format!("index {names:?}, want {expected:?}"));
            }
            Ok(())
        }
        Kind::Tags(name) => {
            if !who.sees(name) {
                return invisible(r);
            }
            want(200)?;
            let v: serde_json::Value =
                serde_json::from_slice(&r.body).map_err(|e| format!("{e}: {}", r.text()))?;
            if v["name"] != *name || v["tags"] != serde_json::json!(["latest", "v1"]) {
                return Err(format!("tags {v}"));
            }
            Ok(())
        }
        Kind::Manifest(name) => {
            if !who.sees(name) {
                return invisible(r);
            }
            let spec = WORLD
                .iter()
                .find(|s| s.name == *name)
                .expect("in the world");
            let (digest, _) = &facts.content[name];
            if spec.redirect_manifests {
                want(302)?;
                let location = r.header("location").unwrap_or_default();
                if !location.starts_with(&format!(
                    "{}/pulp/container/{name}/manifests/",
                    facts.content_origin
                )) {
                    return Err(format!("Location {location}"));
                }
                return Ok(());
            }
            want(200)?;
            if r.header("docker-content-digest") != Some(digest.as_str()) {
                return Err(format!(
                    "digest {:?}, want {digest}",
                    r.header("docker-content-digest")
                ));
            }
            if !route.head && gateway_tests::fake_pulp::sha256_digest(&r.body) != *digest {
                return Err("manifest bytes do not match their digest".into());
            }
            Ok(())
        }
        Kind::Blob(name) => {
            if !who.sees(name) {
                return invisible(r);
            }
            let spec = WORLD
                .iter()
                .find(|s| s.name == *name)
                .expect("in the world");
            let (_, layer) = &facts.content[name];
            if spec.direct_blobs {
                want(200)?;
                if gateway_tests::fake_pulp::sha256_digest(&r.body) != *layer {
                    return Err("blob bytes do not match their digest".into());
                }
                return Ok(());
            }
            want(302)?;
            let location = r.header("location").unwrap_or_default();
            if !location.starts_with(&format!(
                "{}/pulp/container/{name}/blobs/{layer}?",
                facts.content_origin
            )) {
                return Err(format!("Location {location}"));
            }
            Ok(())
        }
    }
}

/// During an outage: the steady answer, or a registry-format 502/503/504.
fn check_outage(facts: &Facts, who: &Who, route: &Route, r: &TestResponse) -> Result<(), String> {
    if matches!(r.status, 502..=504) {
        if route.head {
            return Ok(());
        }
        let json = r
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"));
        return match error_code_of(r) {
            Some(_) if json => Ok(()),
            _ => Err(format!(
                "{} without a registry error body: {}",
                r.status,
                r.text()
            )),
        };
    }
    check_steady(facts, who, route, r)
}

#[derive(Default)]
struct Tally {
    total: u64,
    statuses: BTreeMap<u16, u64>,
    /// Transfers that broke (only allowed where the body is Pulp's, streamed through).
    broken: u64,
    violations: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.total += other.total;
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.broken += other.broken;
        self.violations.extend(other.violations);
    }

    fn class(&self, c: u16) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| **s / 100 == c)
            .map(|(_, n)| n)
            .sum()
    }

    fn status(&self, s: u16) -> u64 {
        self.statuses.get(&s).copied().unwrap_or(0)
    }

    fn violation(&mut self, v: String) {
        if self.violations.len() < 20 {
            self.violations.push(v);
        }
    }
}

async fn send(
    client: &TestClient,
    route: &Route,
    inm: Option<&str>,
) -> Result<TestResponse, String> {
    let mut req = if route.head {
        client.head(&route.path)
    } else {
        client.get(&route.path)
    };
    if matches!(route.kind, Kind::Manifest(_)) {
        req = req.header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        );
    }
    if let Some(etag) = inm {
        req = req.header("If-None-Match", etag);
    }
    req.try_send().await
}

fn client_for(url: &str, ca: &str, who: &Who) -> TestClient {
    let b = TestClient::builder(url)
        .ca_pem(ca)
        .timeout(Duration::from_secs(15));
    match &who.cert {
        Some(c) => b.identity(c).build(),
        None => b.build(),
    }
}

/// One load client: `who`'s routes, round robin from `offset`, until `until`.
fn load_client(
    url: String,
    ca: String,
    who: Who,
    facts: Arc<Facts>,
    routes: Vec<Route>,
    offset: usize,
    until: Instant,
) -> Tally {
    actix_web::rt::System::new().block_on(async move {
        let client = client_for(&url, &ca, &who);
        let mut tally = Tally::default();
        let mut etag: Option<String> = None;
        let mut i = offset;
        // Bounded in time and in count.
        while Instant::now() < until && tally.total < 20_000 {
            let route = &routes[i % routes.len()];
            i += 1;
            let inm = match route.kind {
                Kind::Index if i.is_multiple_of(2) => etag.clone(),
                _ => None,
            };
            tally.total += 1;
            let r = match send(&client, route, inm.as_deref()).await {
                Ok(r) => r,
                Err(e) => {
                    let streamed = matches!(
                        route.kind,
                        Kind::Tags(_) | Kind::Manifest(_) | Kind::Blob(_)
                    );
                    if streamed {
                        tally.broken += 1;
                    } else {
                        tally.violation(format!(
                            "{} {}: transfer failed: {e}",
                            who.label, route.path
                        ));
                    }
                    continue;
                }
            };
            *tally.statuses.entry(r.status).or_default() += 1;
            if r.status == 304 && inm.is_none() {
                tally.violation(format!(
                    "{} {}: 304 without If-None-Match",
                    who.label, route.path
                ));
            }
            if let Err(e) =
                check_outage(&facts, &who, route, &r).and_then(|()| leak(&facts, &who, route, &r))
            {
                tally.violation(format!(
                    "{} {} {}: {e}",
                    who.label,
                    if route.head { "HEAD" } else { "GET" },
                    route.path
                ));
            }
            if matches!(route.kind, Kind::Index) && r.status == 200 {
                etag = r.header("etag").map(str::to_owned);
            }
        }
        tally
    })
}

/// Every route for every identity, answered exactly as when nothing ever failed.
fn final_round(
    url: &str,
    ca: &str,
    facts: &Facts,
    who_all: &[Who],
    routes: &[Route],
) -> Vec<String> {
    actix_web::rt::System::new().block_on(async {
        let mut problems = Vec::new();
        for who in who_all {
            let client = client_for(url, ca, who);
            for route in routes {
                let method = if route.head { "HEAD" } else { "GET" };
                match send(&client, route, None).await {
                    Ok(r) => {
                        if let Err(e) = check_steady(facts, who, route, &r)
                            .and_then(|()| leak(facts, who, route, &r))
                        {
                            problems.push(format!("{} {method} {}: {e}", who.label, route.path));
                        }
                    }
                    Err(e) => problems.push(format!("{} {method} {}: {e}", who.label, route.path)),
                }
            }
        }
        problems
    })
}

#[test]
fn load_while_central_and_pulp_go_down_and_come_back() {
    let mut env = {
        let mut b = TestEnv::builder()
            .pulp(chaos_pulp)
            .central(|mut c| {
                c = c.public(&[RUNTIME, TOOLS]);
                for (_, uuid, granted, _) in HOSTS {
                    c = c.host(uuid, granted);
                }
                c
            })
            .repositories(
                &WORLD
                    .iter()
                    .filter(|s| s.listed)
                    .map(|s| (s.name, !s.public))
                    .collect::<Vec<_>>(),
            )
            .upstream_tls(true)
            .gateway(|g| {
                g.cache_ttl(2)
                    .negative_ttl(1)
                    .index_ttl(1)
                    .upstream_timeout(3)
            });
        for (_, uuid, granted, pushed) in HOSTS {
            if pushed {
                b = b.host_mapping(uuid, granted);
            }
        }
        b.start()
    };
    let facts = Arc::new(facts(&env.pulp));
    let who_all = identities(&env.pki);
    let routes = routes(&facts);
    let (url, ca) = (env.gateway.url(), env.ca_pem());

    // Everything is right before the storm.
    let problems = final_round(&url, &ca, &facts, &who_all, &routes);
    assert!(
        problems.is_empty(),
        "before any outage:\n{}",
        problems.join("\n")
    );

    const CLIENTS: usize = 8;
    let started = Instant::now();
    let until = started + Duration::from_secs(12);
    let workers: Vec<JoinHandle<Tally>> = (0..CLIENTS)
        .map(|i| {
            let (url, ca, facts, routes) = (url.clone(), ca.clone(), facts.clone(), routes.clone());
            let who = who_all[i % who_all.len()].clone();
            std::thread::spawn(move || load_client(url, ca, who, facts, routes, i * 5, until))
        })
        .collect();

    // (seconds after the start, what happens)
    let at = |secs: f64| {
        let t = started + Duration::from_secs_f64(secs);
        if let Some(wait) = t.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    };
    at(1.0);
    env.central.stop();
    at(3.0);
    env.central.restart();
    at(4.0);
    env.pulp.stop();
    at(6.0);
    env.pulp.restart();
    at(7.0);
    env.central.stop();
    at(7.5);
    env.pulp.stop();
    at(9.0);
    env.central.restart();
    at(9.5);
    env.pulp.restart();

    let mut tally = Tally::default();
    for w in workers {
        tally.add(w.join().expect("a load client panicked"));
    }
    println!(
        "chaos: {} requests, 2xx={}, 3xx={}, 4xx={}, 5xx={} (502={}, 503={}, 504={})",
        tally.total,
        tally.class(2),
        tally.class(3),
        tally.class(4),
        tally.class(5),
        tally.status(502),
        tally.status(503),
        tally.status(504),
    );
    println!(
        "chaos: {} transfers broke mid-body, statuses {:?}",
        tally.broken, tally.statuses
    );
    assert!(
        tally.violations.is_empty(),
        "during the run:\n{}",
        tally.violations.join("\n")
    );
    assert_eq!(tally.status(500), 0);
    assert!(
        tally.class(5) > 0,
        "the outages were seen by clients (else this run proved nothing)"
    );
    assert!(
        tally.broken * 100 <= tally.total,
        "few transfers broke: {} of {}",
        tally.broken,
        tally.total
    );

    // Both are back: every route is right again, the same gateway.
    std::thread::sleep(Duration::from_millis(1500));
    let problems = final_round(&url, &ca, &facts, &who_all, &routes);
    assert!(
        problems.is_empty(),
        "after the outages:\n{}",
        problems.join("\n")
    );
}
