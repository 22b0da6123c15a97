//! The OCI distribution-spec conformance suite (`conformance.test`, built from
//! opencontainers/distribution-spec `conformance/`), pull and content-discovery
//! workflows, run twice against a REAL Pulp: straight at Pulp's API port, and
//! through the gateway in front of that Pulp. Every test must end the same way
//! both times. `tests/e2e/oci-conformance.sh` runs this and prints the table.
//!
//! Needs `CG_REAL_PULP_DIR` (a `real-pulp.sh up` + `seed` directory) and
//! `CG_OCI_CONFORMANCE_BIN` (the suite's binary); `CG_OCI_CONFORMANCE_OUT` is
//! where both runs leave `junit.xml`, `report.html`, their log, and
//! `table.md`. Without them the test prints `SKIPPED: ...` and passes; with
//! `CG_REQUIRE_OCI_CONFORMANCE=1` it fails instead.
//!
//! The suite only reads: push and content management are off (the gateway is
//! a read-only mirror, and Pulp's registry API takes pushes only with
//! credentials), so it runs on the content `real-pulp.sh seed` put there,
//! named through `OCI_TAG_NAME`, `OCI_MANIFEST_DIGEST`, `OCI_BLOB_DIGEST`
//! (`org/lib/tiny:latest`, its digest and its config blob) and `OCI_TAG_LIST`.
//!
//! Through the gateway the suite is a registered host: `org/lib/tiny` is
//! `auth_required` and in that host's grant. The suite's HTTP client (reggie)
//! cannot present a client certificate, so it speaks plain HTTP to a loopback
//! forwarder started here, which opens one TLS connection to the gateway's TLS
//! listener per connection, presenting the host's subscription certificate (a
//! host's own TLS client, moved out of the suite's process). The gateway sees a
//! real mutual-TLS client; nothing is injected into its requests. (The user
//! token flow is no alternative with this client: on a 401 reggie retries with
//! a token but drops the request's query, so `tags/list?n=` would be asked
//! without `n`.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use gateway_tests::client::{Curl, TestClient};
use gateway_tests::e2e::say;
use gateway_tests::fake_central::FakeCentral;
use gateway_tests::harness::GatewayBuilder;
use gateway_tests::pki::Pki;

const DIR_ENV: &str = "CG_REAL_PULP_DIR";
const BIN_ENV: &str = "CG_OCI_CONFORMANCE_BIN";
const OUT_ENV: &str = "CG_OCI_CONFORMANCE_OUT";
const REQUIRE_ENV: &str = "CG_REQUIRE_OCI_CONFORMANCE";

const HOST: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b";
const TINY: &str = "org/lib/tiny";
const OTHER: &str = "org/lib/other";
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Tests whose outcome may differ between the two runs, and why. Empty: none does.
const DELIBERATE: [(&str, &str); 0] = [];

/// Why tests fail in both runs (a note in the table, not an allowance).
const PULP_LACKS: [(&str, &str); 1] = [(
    "(listing references)",
    "Pulp 2.30 has no referrers route (Django 404); the gateway: 404 UNSUPPORTED, clients fall back to the sha256-<hex> tag",
)];

/// The suite's outcome for one test, in the order of its JUnit report.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Case {
    name: String,
    status: String,
}

fn skip(why: &str) {
    let msg = format!(
        "SKIPPED: oci_conformance: {why} (tests/e2e/oci-conformance.sh sets {DIR_ENV}, {BIN_ENV} and {OUT_ENV}; \
         {REQUIRE_ENV}=1 fails instead)"
    );
    assert!(!std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1"), "{msg}");
    say(&msg);
}

/// `KEY=value` lines of `pulp.env` (values possibly single-quoted).
fn env_var(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().trim_matches('\'').to_owned())
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[start..].find('"')?;
    Some(xml_unescape(&tag[start..start + len]))
}

/// Every `<testcase name=".." status="..">` of ginkgo's JUnit report.
fn junit_cases(xml: &str) -> Vec<Case> {
    xml.split("<testcase ")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            let tag = format!(" {tag}");
            Some(Case {
                name: attr(&tag, "name")?,
                status: attr(&tag, "status")?,
            })
        })
        .collect()
}

/// A loopback forwarder: plain TCP in, TLS with `config` (the host's
/// certificate) out to `target`, one upstream connection per client connection.
struct Forwarder {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    fn start(target: SocketAddr, config: rustls::ClientConfig) -> Forwarder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the forwarder");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("forwarder address");
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("forwarder runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                let name = rustls_pki_types::ServerName::IpAddress(target.ip().into());
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            let Ok((mut inbound, _)) = accepted else { continue };
                            let (connector, name) = (connector.clone(), name.clone());
                            tokio::spawn(async move {
                                let Ok(tcp) = tokio::net::TcpStream::connect(target).await else {
                                    return;
                                };
                                let Ok(mut tls) = connector.connect(name, tcp).await else {
                                    return;
                                };
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut tls).await;
                            });
                        }
                    }
                }
            });
        });
        Forwarder {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Run the suite against `root_url`, its reports into `dir`; its cases.
fn run_suite(bin: &Path, dir: &Path, root_url: &str, content: &[(&str, String)]) -> Vec<Case> {
    std::fs::create_dir_all(dir).expect("report dir");
    let log = std::fs::File::create(dir.join("run.log")).expect("log file");
    let status = Command::new(bin)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("OCI_ROOT_URL", root_url)
        .env("OCI_NAMESPACE", TINY)
        .env("OCI_CROSSMOUNT_NAMESPACE", OTHER)
        .env("OCI_TEST_PULL", "1")
        .env("OCI_TEST_CONTENT_DISCOVERY", "1")
        .env("OCI_TEST_PUSH", "0")
        .env("OCI_TEST_CONTENT_MANAGEMENT", "0")
        .env("OCI_HIDE_SKIPPED_WORKFLOWS", "1")
        .env("OCI_DEBUG", "1")
        .env("OCI_REPORT_DIR", dir)
        .envs(content.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .status()
        .expect("run conformance.test");
    say(&format!(
        "oci-conformance: {root_url}: suite exit {status}, log {}",
        dir.join("run.log").display()
    ));
    let xml = std::fs::read_to_string(dir.join("junit.xml"))
        .unwrap_or_else(|e| panic!("no junit.xml in {}: {e}", dir.display()));
    junit_cases(&xml)
}

fn table(direct: &[Case], gateway: &[Case]) -> String {
    let mut out = String::from(
        "| # | test | directly | through the gateway | note |\n|---|---|---|---|---|\n",
    );
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (i, (d, g)) in direct.iter().zip(gateway).enumerate() {
        let name = d
            .name
            .strip_prefix("OCI Distribution Conformance Tests ")
            .unwrap_or(&d.name);
        let note = if d.status == g.status {
            PULP_LACKS
                .iter()
                .find(|(part, _)| d.status == "failed" && d.name.contains(part))
                .map_or(String::new(), |(_, why)| (*why).to_owned())
        } else {
            DELIBERATE
                .iter()
                .find(|(n, _)| *n == d.name)
                .map_or("DIFFERENT".to_owned(), |(_, why)| (*why).to_owned())
        };
        if d.status != "skipped" || g.status != "skipped" {
            out.push_str(&format!(
                "| {} | {name} | {} | {} | {note} |\n",
                i + 1,
                d.status,
                g.status
            ));
        }
        *counts.entry(("directly", d.status.as_str())).or_default() += 1;
        *counts.entry(("gateway", g.status.as_str())).or_default() += 1;
    }
    for ((run, status), n) in counts {
        out.push_str(&format!("\n{run}: {n} {status}"));
    }
    out.push('\n');
    out
}

#[test]
fn conformance_through_the_gateway_ends_as_directly_at_pulp() {
    let (Some(dir), Some(bin), Some(out)) = (
        std::env::var_os(DIR_ENV).map(PathBuf::from),
        std::env::var_os(BIN_ENV).map(PathBuf::from),
        std::env::var_os(OUT_ENV).map(PathBuf::from),
    ) else {
        return skip(&format!("{DIR_ENV}, {BIN_ENV} or {OUT_ENV} is not set"));
    };
    if !bin.is_file() {
        return skip(&format!("no {}", bin.display()));
    }
    let Ok(text) = std::fs::read_to_string(dir.join("pulp.env")) else {
        return skip(&format!("no {}", dir.join("pulp.env").display()));
    };
    let Some(api) = env_var(&text, "PULP_API") else {
        return skip("pulp.env has no PULP_API");
    };

    // The seeded content the suite reads: tag, manifest digest, config blob, tags.
    let pulp = Curl::new(&api).header("Accept", MANIFEST_ACCEPT);
    let manifest = pulp.get(&format!("/v2/{TINY}/manifests/latest"));
    assert_eq!(
        manifest.status, 200,
        "Pulp has {TINY}:latest (real-pulp.sh seed)"
    );
    let digest = manifest
        .headers
        .iter()
        .find(|(k, _)| k == "docker-content-digest")
        .map(|(_, v)| v.clone())
        .expect("Docker-Content-Digest");
    let body: serde_json::Value = serde_json::from_slice(&manifest.body).expect("manifest JSON");
    let config = body["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_owned();
    let tags: serde_json::Value =
        serde_json::from_slice(&Curl::new(&api).get(&format!("/v2/{TINY}/tags/list")).body)
            .expect("tags JSON");
    let tag_list: Vec<&str> = tags["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    let content = [
        ("OCI_TAG_NAME", "latest".to_owned()),
        ("OCI_MANIFEST_DIGEST", digest),
        ("OCI_BLOB_DIGEST", config),
        ("OCI_TAG_LIST", tag_list.join(",")),
    ];

    let pki = Arc::new(Pki::new());
    let central = FakeCentral::builder()
        .public(&[OTHER])
        .host(HOST, &[TINY])
        .start();
    let gateway = GatewayBuilder::new(pki.clone())
        .pulp_at(&api, "")
        .central(&central)
        .upstream_timeout(60)
        .start();
    gateway.push_repository_list(&[(TINY, true), (OTHER, false)]);
    gateway.push_hosts(&[HOST]);
    gateway.push_host_mapping(&[(HOST, &[TINY])]);
    let tls = TestClient::builder(&gateway.url())
        .ca_pem(&pki.ca_pem())
        .identity(&pki.host_cert(HOST))
        .rustls_config()
        .expect("host TLS config");
    let forwarder = Forwarder::start(gateway.tls_addr(), tls);

    let direct = run_suite(&bin, &out.join("direct"), &api, &content);
    let through = run_suite(
        &bin,
        &out.join("gateway"),
        &format!("http://{}", forwarder.addr),
        &content,
    );
    drop(forwarder);

    let table = table(&direct, &through);
    std::fs::write(out.join("table.md"), &table).expect("write table.md");
    say(&table);

    let names = |cases: &[Case]| cases.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&direct), names(&through), "the same tests ran");
    let ran = |cases: &[Case], context: &str| {
        cases
            .iter()
            .filter(|c| c.name.contains(context) && c.status == "passed")
            .count()
    };
    for context in [
        " Pull Pull blobs ",
        " Pull Pull manifests ",
        " Content Discovery ",
    ] {
        assert!(
            ran(&direct, context) > 0,
            "the seeded content made some{context}test pass directly"
        );
    }
    let differing: Vec<String> = direct
        .iter()
        .zip(&through)
        .filter(|(d, g)| d.status != g.status)
        .filter(|(d, _)| !DELIBERATE.iter().any(|(n, _)| *n == d.name))
        .map(|(d, g)| {
            format!(
                "{}: {} directly, {} through the gateway",
                d.name, d.status, g.status
            )
        })
        .collect();
    assert!(
        differing.is_empty(),
        "outcomes differ (see {}):\n{}",
        out.display(),
        differing.join("\n")
    );
}
