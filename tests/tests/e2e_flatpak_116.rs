//! The real flatpak >= 1.16 client, which presents a host's certificate from
//! `certs.d` (RHEL 10, Fedora), through the gateway's TLS listener.
//!
//! Debian 12's flatpak 1.14 sends no client certificate to OCI remotes, so it
//! only ever gets the anonymous index. `tests/e2e/flatpak-116.sh` builds
//! flatpak 1.16 from source into its own prefix and prints it; set
//! `CG_FLATPAK_116=<prefix>`. Each environment puts the host's
//! `client.cert` + `client.key` (and the CA as `ca.crt`) in
//! `$XDG_CONFIG_HOME/containers/certs.d/127.0.0.1:<port>/`, the first place
//! flatpak 1.16 looks (`common/flatpak-utils-http.c`); its system-wide lookup
//! (`$FLATPAK_SYSTEM_CERTS_D`) points at an empty private directory.
//!
//! * `real_pulp_flatpak_116_lists_and_installs_per_host`: the gateway in front
//!   of a REAL Pulp (`CG_REAL_PULP_DIR`, as in `e2e_real_pulp.rs`; CI:
//!   `tests/e2e/real-pulp-ci.sh`), seeded with the app `org.test.Hello` and the
//!   runtime `org.test.Platform`. Hello is private and entitled to host A only;
//!   the runtime is public.
//! * `flatpak_lists_a_hosts_refs_from_a_20000_repository_index`: the fake Pulp
//!   serving a synthetic 20,000-repository index plus one entry whose images
//!   are under `Lists` (an image index: amd64 and arm64), read by flatpak 1.16
//!   with host certificates and by flatpak 1.14 (anonymous, and a host's index
//!   relayed).
//!
//! The gateway's access log (`access` target: route, status, identity) is
//! captured and printed. Without the prefix, Pulp or a tool, a test prints
//! `SKIPPED: ...` and passes; `CG_REQUIRE_FLATPAK_116=1` makes a missing build
//! or tool a failure, and `CG_REQUIRE_REAL_PULP=1` a missing Pulp (`.ci/run`
//! sets the first, `tests/e2e/real-pulp-ci.sh` both).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use container_gateway::index::synth;
use gateway_tests::client::Curl;
use gateway_tests::e2e::flatpak::{Client, FlatpakEnv, IndexRelay, ca_namespace_works};
use gateway_tests::e2e::{Outcome, say, which, write};
use gateway_tests::fake_central::FakeCentral;
use gateway_tests::fake_pulp::{FLATPAK_INDEX_QUERY, FakePulp};
use gateway_tests::harness::{Gateway, GatewayBuilder};
use gateway_tests::pki::{Issued, Pki};

/// The prefix `tests/e2e/flatpak-116.sh` printed.
const PREFIX_ENV: &str = "CG_FLATPAK_116";
const REQUIRE_ENV: &str = "CG_REQUIRE_FLATPAK_116";
const PULP_DIR_ENV: &str = "CG_REAL_PULP_DIR";
const REQUIRE_PULP_ENV: &str = "CG_REQUIRE_REAL_PULP";

const HOST_A: &str = "3b9e0c41-5d6f-4a7b-8c9d-0e1f2a3b4c5d";
const HOST_B: &str = "9c8b7a69-5847-4362-a514-0f1e2d3c4b5a";
/// Issued by the right CA, but unknown to Katello: a deleted (unregistered) consumer.
const HOST_GONE: &str = "0d6e5f4a-3b2c-4d1e-8f9a-b0c1d2e3f4a5";

const HELLO: &str = "org/flatpak/hello";
const PLATFORM: &str = "org/flatpak/platform";
const TINY: &str = "org/lib/tiny";
const OTHER: &str = "org/lib/other";
const HELLO_REF: &str = "app/org.test.Hello/x86_64/stable";
const PLATFORM_REF: &str = "runtime/org.test.Platform/x86_64/1";
/// What the seeded app prints.
const HELLO_OUTPUT: &str = "hello from flatpak";

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";

fn env_is_1(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// Print `SKIPPED: ...`, or fail when one of `require` is `1`.
fn skip<T>(test: &str, why: &str, require: &[&str]) -> Option<T> {
    let msg = format!(
        "SKIPPED: {test}: {why} (set {} to fail instead)",
        require
            .iter()
            .map(|r| format!("{r}=1"))
            .collect::<Vec<_>>()
            .join(" or ")
    );
    if let Some(r) = require.iter().find(|r| env_is_1(r)) {
        panic!("{r}=1 but {msg}");
    }
    say(&msg);
    None
}

/// The flatpak 1.16 build, when it and everything an environment needs are there.
fn flatpak_116(test: &str, require: &[&str]) -> Option<Client> {
    let Some(prefix) = std::env::var_os(PREFIX_ENV).map(PathBuf::from) else {
        return skip(
            test,
            &format!(
                "{PREFIX_ENV} is not set (build flatpak 1.16 with `tests/e2e/flatpak-116.sh` and set it to the prefix it prints)"
            ),
            require,
        );
    };
    let client = match Client::in_prefix(&prefix) {
        Ok(c) => c,
        Err(e) => return skip(test, &e, require),
    };
    let version = gateway_tests::e2e::Cmd::new(&client.program)
        .arg("--version")
        .run();
    let v = version.stdout.trim().to_owned();
    let minor_ok = v
        .strip_prefix("Flatpak 1.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|m| m.parse::<u32>().ok())
        .is_some_and(|m| m >= 16);
    if !minor_ok {
        return skip(
            test,
            &format!(
                "{} is not flatpak >= 1.16: {version}",
                client.program.display()
            ),
            require,
        );
    }
    let missing: Vec<&str> = ["dbus-daemon", "unshare", "curl"]
        .into_iter()
        .filter(|t| which(t).is_none())
        .collect();
    if !missing.is_empty() {
        return skip(
            test,
            &format!("not on PATH: {}", missing.join(", ")),
            require,
        );
    }
    if let Err(e) = ca_namespace_works() {
        return skip(test, &e, require);
    }
    say(&format!("{test}: {v} from {}", prefix.display()));
    Some(client)
}

// ---------------------------------------------------------------------------
// The gateway's access log
// ---------------------------------------------------------------------------

/// Every `access` event of this process, one line each.
fn access_log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let installed = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("access=info"))
            .with_ansi(false)
            .without_time()
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        assert!(
            installed.is_ok(),
            "the access-log capture must be the process' subscriber"
        );
        log
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One test at a time (they share the access log); its lines start at `from`.
struct Serial {
    _guard: MutexGuard<'static, ()>,
    from: usize,
}

fn serial() -> Serial {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let from = access_log().lock().unwrap_or_else(|p| p.into_inner()).len();
    Serial {
        _guard: guard,
        from,
    }
}

impl Serial {
    /// The access-log lines written since this test started, from `mark` on.
    fn lines_since(&self, mark: usize) -> Vec<String> {
        let log = access_log().lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&log[mark.max(self.from)..])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn mark(&self) -> usize {
        access_log().lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

// ---------------------------------------------------------------------------
// Identities and a flatpak environment for each
// ---------------------------------------------------------------------------

/// What one flatpak environment presents in certs.d.
struct Identity {
    name: &'static str,
    cert: Option<Issued>,
}

/// A flatpak environment with `identity`'s certificate (if any) in certs.d for
/// the gateway, and the remote `gw` (`oci+https://127.0.0.1:<port>/`) added.
fn env_for(client: &Client, pki: &Pki, gateway: &Gateway, identity: &Identity) -> FlatpakEnv {
    let fp = FlatpakEnv::with_client(&pki.ca_pem(), client.clone());
    let host_port = gateway.tls_addr().to_string();
    let dir = fp.certs_d(&host_port);
    write(&dir.join("ca.crt"), pki.ca_pem());
    if let Some(cert) = &identity.cert {
        write(&dir.join("client.cert"), cert.chain_pem());
        write(&dir.join("client.key"), &cert.key_pem);
    }
    let remote = format!("oci+{}/", gateway.url());
    fp.flatpak(&["remote-add", "--user", "--no-gpg-verify", "gw", &remote])
        .run()
        .ok();
    fp
}

fn refs(remote_ls: &str) -> BTreeSet<String> {
    remote_ls
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn set<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> BTreeSet<String> {
    items.into_iter().map(|s| s.as_ref().to_owned()).collect()
}

/// `flatpak remote-ls --user --columns=ref gw [extra]`: the outcome and the refs it printed.
fn remote_ls(fp: &FlatpakEnv, extra: &[&str]) -> (Outcome, BTreeSet<String>) {
    let mut args = vec!["remote-ls", "--user", "--columns=ref"];
    args.extend_from_slice(extra);
    args.push("gw");
    let out = fp.flatpak(&args).timeout(Duration::from_secs(120)).run();
    let listed = refs(&out.stdout);
    (out, listed)
}

/// The first line of stderr that says what went wrong, for the report.
fn error_line(out: &Outcome) -> String {
    out.stderr
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("error:") || l.contains("rror"))
        .unwrap_or("")
        .to_owned()
}

/// One row of the report: identity, expected, listed, how flatpak ended.
fn report(rows: &[(String, BTreeSet<String>, BTreeSet<String>, String)]) {
    say("| identity | expected | flatpak listed | flatpak |");
    say("|---|---|---|---|");
    for (who, expected, listed, how) in rows {
        let show = |s: &BTreeSet<String>| {
            if s.len() > 6 {
                format!("{} refs", s.len())
            } else if s.is_empty() {
                "(none)".to_owned()
            } else {
                s.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        };
        say(&format!(
            "| {who} | {} | {} | {how} |",
            show(expected),
            show(listed)
        ));
    }
}

fn print_access_log(test: &str, lines: &[String]) {
    say(&format!(
        "{test}: gateway access log ({} lines):",
        lines.len()
    ));
    for l in lines {
        say(&format!("  {l}"));
    }
}

/// Keep only the access-log lines of `identity` kind and id.
fn lines_of<'a>(lines: &'a [String], needle: &str) -> Vec<&'a String> {
    lines.iter().filter(|l| l.contains(needle)).collect()
}

// ---------------------------------------------------------------------------
// In front of a real Pulp
// ---------------------------------------------------------------------------

/// `PULP_API` of a seeded `real-pulp.sh` instance.
fn real_pulp(test: &str) -> Option<String> {
    // Only the real-Pulp step promises a Pulp.
    let require = [REQUIRE_PULP_ENV];
    let Some(dir) = std::env::var_os(PULP_DIR_ENV).map(PathBuf::from) else {
        return skip(
            test,
            &format!(
                "{PULP_DIR_ENV} is not set (`shared/tools/real-pulp.sh up DIR && real-pulp.sh seed DIR`, then set it to DIR)"
            ),
            &require,
        );
    };
    let env_file = dir.join("pulp.env");
    let Ok(text) = std::fs::read_to_string(&env_file) else {
        return skip(test, &format!("no {}", env_file.display()), &require);
    };
    let Some(api) = text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("PULP_API=")
            .map(|v| v.trim_matches('\'').to_owned())
    }) else {
        return skip(
            test,
            &format!("no PULP_API in {}", env_file.display()),
            &require,
        );
    };
    let curl = Curl::new(&api).max_time(Duration::from_secs(30));
    for repo in [HELLO, PLATFORM] {
        match curl
            .header("Accept", MANIFEST_ACCEPT)
            .try_run("HEAD", &format!("/v2/{repo}/manifests/latest"))
        {
            Ok(r) if r.status == 200 => {}
            Ok(r) => {
                return skip(
                    test,
                    &format!(
                        "Pulp has no {repo}:latest ({}): run `real-pulp.sh seed`",
                        r.status
                    ),
                    &require,
                );
            }
            Err(e) => return skip(test, &format!("Pulp at {api} is not up: {e}"), &require),
        }
    }
    Some(api)
}

/// Flatpak 1.16 with each identity's certificate in certs.d, against the
/// gateway in front of real Pulp: A lists and installs its private app, B and
/// the anonymous client see only the public runtime, and certificates the
/// gateway refuses (another CA, expired) or a host Katello no longer knows
/// get no private ref.
#[test]
fn real_pulp_flatpak_116_lists_and_installs_per_host() {
    const TEST: &str = "real_pulp_flatpak_116_lists_and_installs_per_host";
    let Some(api) = real_pulp(TEST) else {
        return;
    };
    let Some(client) = flatpak_116(TEST, &[REQUIRE_ENV, REQUIRE_PULP_ENV]) else {
        return;
    };
    let serial = serial();
    let hello_digest = {
        let r = Curl::new(&api)
            .header("Accept", MANIFEST_ACCEPT)
            .get(&format!("/v2/{HELLO}/manifests/latest"));
        r.header("docker-content-digest")
            .expect("Pulp sends Docker-Content-Digest")
            .to_owned()
    };

    let pki = Arc::new(Pki::new());
    // Katello's pushes: Hello and tiny are private, the runtime and other public.
    let list = [
        (HELLO, true),
        (PLATFORM, false),
        (TINY, true),
        (OTHER, false),
    ];
    let public = [PLATFORM, OTHER];
    let central = FakeCentral::builder()
        .public(&public)
        .host(HOST_A, &[PLATFORM, OTHER, HELLO, TINY])
        .host(HOST_B, &[PLATFORM, OTHER, TINY])
        .start();
    let gateway = GatewayBuilder::new(pki.clone())
        .pulp_at(&api, "")
        .central(&central)
        .index_ttl(0)
        .upstream_timeout(60)
        .start();
    gateway.push_repository_list(&list);
    gateway.push_hosts(&[HOST_A, HOST_B]);
    gateway.push_host_mapping(&[(HOST_A, &[HELLO, TINY]), (HOST_B, &[TINY])]);
    say(&format!(
        "{TEST}: gateway {} in front of Pulp {api}",
        gateway.url()
    ));

    let identities = [
        Identity {
            name: "host A (Hello entitled)",
            cert: Some(pki.host_cert(HOST_A)),
        },
        Identity {
            name: "host B (not entitled)",
            cert: Some(pki.host_cert(HOST_B)),
        },
        Identity {
            name: "no certificate",
            cert: None,
        },
        Identity {
            name: "host A's UUID, foreign CA",
            cert: Some(pki.host_cert_from_other_ca(HOST_A)),
        },
        Identity {
            name: "host A, expired",
            cert: Some(pki.expired_host_cert(HOST_A)),
        },
        Identity {
            name: "unregistered host (right CA)",
            cert: Some(pki.host_cert(HOST_GONE)),
        },
    ];
    let public_only = set([PLATFORM_REF]);
    let mut rows = Vec::new();
    for (i, identity) in identities.iter().enumerate() {
        let mark = serial.mark();
        let fp = env_for(&client, &pki, &gateway, identity);
        let (out, listed) = remote_ls(&fp, &[]);
        let lines = serial.lines_since(mark);
        let index_lines: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("route=/index/"))
            .collect();
        assert!(
            !index_lines.is_empty(),
            "{}: flatpak fetched the index from the gateway\n{out}",
            identity.name
        );
        match i {
            // A: exactly its refs, then it installs and runs the private app.
            0 => {
                assert!(out.success(), "{out}");
                assert_eq!(listed, set([HELLO_REF, PLATFORM_REF]), "{out}");
                assert!(
                    index_lines
                        .iter()
                        .all(|l| l.contains("status=200") && l.contains(HOST_A)),
                    "the index was fetched as host A: {index_lines:#?}"
                );
                let timeout = Duration::from_secs(240);
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
                let info = fp.flatpak(&["info", "--user", "org.test.Hello"]).run().ok();
                assert!(
                    info.stdout
                        .contains(hello_digest.trim_start_matches("sha256:")),
                    "the installed commit is Pulp's manifest digest {hello_digest}\n{info}"
                );
                let run = fp
                    .flatpak(&["run", "--user", "org.test.Hello"])
                    .timeout(timeout)
                    .run()
                    .ok();
                assert_eq!(run.stdout.trim(), HELLO_OUTPUT, "{run}");
                let manifests = lines
                    .iter()
                    .chain(serial.lines_since(mark).iter())
                    .filter(|l| l.contains("manifests") && l.contains(HOST_A))
                    .count();
                assert!(manifests > 0, "manifests were fetched as host A");
                rows.push((
                    identity.name.to_owned(),
                    set([HELLO_REF, PLATFORM_REF]),
                    listed,
                    "remote-ls ok; install + run ok".to_owned(),
                ));
            }
            // B and the anonymous client: the public runtime only; Hello is not installable.
            1 | 2 => {
                assert!(out.success(), "{out}");
                assert_eq!(listed, public_only, "{}\n{out}", identity.name);
                let who = if i == 1 {
                    HOST_B
                } else {
                    "identity=\"anonymous\""
                };
                assert!(
                    !lines_of(&lines, who).is_empty(),
                    "the gateway saw {who}: {lines:#?}"
                );
                let install = fp
                    .flatpak(&[
                        "install",
                        "--user",
                        "-y",
                        "--noninteractive",
                        "gw",
                        "org.test.Hello",
                    ])
                    .timeout(Duration::from_secs(120))
                    .run()
                    .failed();
                assert!(
                    install.stderr.contains("Nothing matches org.test.Hello"),
                    "{install}"
                );
                rows.push((
                    identity.name.to_owned(),
                    public_only.clone(),
                    listed,
                    format!("remote-ls ok; install Hello: {}", error_line(&install)),
                ));
            }
            // Refused or unknown: never a private ref, whatever flatpak makes of the answer.
            _ => {
                assert!(
                    !listed.contains(HELLO_REF),
                    "{}: no private ref\n{out}",
                    identity.name
                );
                let how = if out.success() {
                    "remote-ls ok".to_owned()
                } else {
                    format!("remote-ls exit non-zero: {}", error_line(&out))
                };
                let statuses: BTreeSet<String> = index_lines
                    .iter()
                    .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("status=")))
                    .map(str::to_owned)
                    .collect();
                let expected = if i == 5 {
                    public_only.clone()
                } else {
                    set::<&str>([])
                };
                if i == 5 {
                    assert!(out.success(), "{out}");
                    assert_eq!(listed, public_only, "{out}");
                } else {
                    assert!(
                        statuses.iter().all(|s| s == "status=401"),
                        "the gateway refuses the certificate: {index_lines:#?}"
                    );
                    assert!(listed.is_empty(), "{out}");
                }
                rows.push((
                    identity.name.to_owned(),
                    expected,
                    listed,
                    format!(
                        "{how} (gateway {})",
                        statuses.into_iter().collect::<Vec<_>>().join(",")
                    ),
                ));
            }
        }
        drop(fp);
    }
    report(&rows);
    print_access_log(TEST, &serial.lines_since(0));
}

// ---------------------------------------------------------------------------
// A 20,000-repository index with a `Lists` entry, from the fake Pulp
// ---------------------------------------------------------------------------

const REPOS: usize = 20_000;
const MULTI: &str = "org/flatpak/multi";
const MULTI_REF_X86: &str = "app/org.test.Multi/x86_64/stable";
const MULTI_REF_ARM: &str = "app/org.test.Multi/aarch64/stable";

/// One image of the `Lists` entry, labelled as pulp_container copies a
/// Flatpak image's labels.
fn multi_image(oci_arch: &str, flatpak_arch: &str, digest_byte: char) -> serde_json::Value {
    let r#ref = format!("app/org.test.Multi/{flatpak_arch}/stable");
    serde_json::json!({
        "Tags": ["latest"],
        "Digest": format!("sha256:{}", digest_byte.to_string().repeat(64)),
        "MediaType": "application/vnd.oci.image.manifest.v1+json",
        "OS": "linux",
        "Architecture": oci_arch,
        "Labels": {
            "org.flatpak.ref": r#ref,
            "org.flatpak.metadata": format!("[Application]\nname=org.test.Multi\nruntime=org.test.Platform/{flatpak_arch}/1\ncommand=multi\n"),
            "org.flatpak.download-size": "1000",
            "org.flatpak.installed-size": "3000",
        }
    })
}

/// The synthetic index with [`MULTI`] appended: no `Images` of its own, one
/// image index under `Lists` naming an amd64 and an arm64 image.
fn big_index() -> Vec<u8> {
    let mut body = synth::index(&synth::Spec::new(REPOS));
    let entry = serde_json::json!({
        "Name": MULTI,
        "Images": [],
        "Lists": [{
            "Digest": format!("sha256:{}", "c".repeat(64)),
            "MediaType": "application/vnd.oci.image.index.v1+json",
            "Tags": ["latest"],
            "Images": [multi_image("amd64", "x86_64", 'a'), multi_image("arm64", "aarch64", 'b')],
        }]
    });
    assert!(
        body.ends_with(b"]}"),
        "the synthetic index ends its Results"
    );
    body.truncate(body.len() - 2);
    body.push(b',');
    body.extend_from_slice(&serde_json::to_vec(&entry).expect("entry"));
    body.extend_from_slice(b"]}");
    body
}

/// `Name` -> the x86_64 refs of its images (`Images` and `Lists`), read from
/// the upstream body itself.
fn refs_by_repo(body: &[u8], flatpak_arch: &str) -> std::collections::HashMap<String, Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(body).expect("the index is JSON");
    let mut out = std::collections::HashMap::new();
    for r in v["Results"].as_array().expect("Results") {
        let name = r["Name"].as_str().expect("Name").to_owned();
        let mut images: Vec<&serde_json::Value> = Vec::new();
        images.extend(r["Images"].as_array().into_iter().flatten());
        for l in r["Lists"].as_array().into_iter().flatten() {
            images.extend(l["Images"].as_array().into_iter().flatten());
        }
        let refs = images
            .iter()
            .filter_map(|i| i["Labels"]["org.flatpak.ref"].as_str())
            .filter(|r| r.split('/').nth(2) == Some(flatpak_arch))
            .map(str::to_owned)
            .collect();
        out.insert(name, refs);
    }
    out
}

/// Real flatpak 1.16 (host certificates) and 1.14 (anonymous, and a host's
/// index relayed) over a 20,000-repository index through the gateway list
/// exactly what each identity may see, including the ref carried only under
/// `Lists`, for x86_64 and aarch64.
#[test]
fn flatpak_lists_a_hosts_refs_from_a_20000_repository_index() {
    const TEST: &str = "flatpak_lists_a_hosts_refs_from_a_20000_repository_index";
    let Some(client) = flatpak_116(TEST, &[REQUIRE_ENV]) else {
        return;
    };
    let system = match Client::system() {
        Ok(c) if which("flatpak").is_some() => c,
        Ok(_) => return skip(TEST, "no flatpak on PATH", &[REQUIRE_ENV]).unwrap_or(()),
        Err(e) => return skip(TEST, &e, &[REQUIRE_ENV]).unwrap_or(()),
    };
    let serial = serial();
    let body = big_index();
    let by_repo = refs_by_repo(&body, "x86_64");
    let names: Vec<String> = (0..REPOS).map(synth::repo_name).collect();
    // Every 1000th repository is public; A may see 40 more and the `Lists` entry, B 10.
    let public: Vec<&str> = names.iter().step_by(1000).map(String::as_str).collect();
    let a_private: Vec<&str> = names
        .iter()
        .skip(7)
        .step_by(500)
        .map(String::as_str)
        .chain([MULTI])
        .collect();
    let b_private: Vec<&str> = names
        .iter()
        .skip(3)
        .step_by(2000)
        .map(String::as_str)
        .collect();
    assert_eq!(
        (public.len(), a_private.len(), b_private.len()),
        (20, 41, 10)
    );
    let expected = |repos: &[&str]| -> BTreeSet<String> {
        repos
            .iter()
            .chain(public.iter())
            .flat_map(|r| by_repo.get(*r).cloned().unwrap_or_default())
            .collect()
    };
    let want_a = expected(&a_private);
    let want_b = expected(&b_private);
    let want_public = expected(&[]);
    assert!(want_a.contains(MULTI_REF_X86));
    assert_eq!(want_a.len(), 61, "{want_a:?}");

    let mut list: Vec<(&str, bool)> = names
        .iter()
        .map(|n| (n.as_str(), !public.contains(&n.as_str())))
        .collect();
    list.push((MULTI, true));
    let with_public = |own: &[&str]| -> Vec<String> {
        public
            .iter()
            .chain(own.iter())
            .map(|s| (*s).to_owned())
            .collect()
    };
    let a_all = with_public(&a_private);
    let b_all = with_public(&b_private);
    let pki = Arc::new(Pki::new());
    let central = FakeCentral::builder()
        .public(&public)
        .host(
            HOST_A,
            &a_all.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .host(
            HOST_B,
            &b_all.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .start();
    let upstream_len = body.len();
    let pulp = FakePulp::builder().index_json(body).start();
    let gateway = GatewayBuilder::new(pki.clone())
        .pulp(&pulp)
        .central(&central)
        .upstream_timeout(60)
        .start();
    gateway.push_repository_list(&list);
    gateway.push_hosts(&[HOST_A, HOST_B]);
    gateway.push_host_mapping(&[(HOST_A, &a_private), (HOST_B, &b_private)]);
    say(&format!(
        "{TEST}: upstream index {REPOS} repositories + {MULTI} (Lists), {:.1} MB",
        upstream_len as f64 / 1e6
    ));

    let mut rows = Vec::new();
    // flatpak 1.16, presenting each host's certificate.
    for (name, cert, want) in [
        ("1.16 host A", Some(pki.host_cert(HOST_A)), &want_a),
        ("1.16 host B", Some(pki.host_cert(HOST_B)), &want_b),
        ("1.16 no certificate", None, &want_public),
    ] {
        let identity = Identity { name, cert };
        let fp = env_for(&client, &pki, &gateway, &identity);
        let (out, listed) = remote_ls(&fp, &[]);
        assert!(out.success(), "{out}");
        assert_eq!(&listed, want, "{name}\n{out}");
        rows.push((
            name.to_owned(),
            want.clone(),
            listed,
            "remote-ls ok".to_owned(),
        ));
        // The aarch64 image of the image index: listed for A only.
        let (out, listed) = remote_ls(&fp, &["--arch=aarch64"]);
        assert!(out.success(), "{out}");
        let want_arm = if name.ends_with('A') {
            set([MULTI_REF_ARM])
        } else {
            BTreeSet::new()
        };
        assert_eq!(listed, want_arm, "{name} --arch=aarch64\n{out}");
        rows.push((
            format!("{name} --arch=aarch64"),
            want_arm,
            listed,
            "remote-ls ok".to_owned(),
        ));
    }

    // flatpak 1.14 sends no certificate: the public refs.
    let fp = FlatpakEnv::with_client(&pki.ca_pem(), system);
    let remote = format!("oci+{}/", gateway.url());
    fp.flatpak(&["remote-add", "--user", "--no-gpg-verify", "gw", &remote])
        .run()
        .ok();
    let (out, listed) = remote_ls(&fp, &[]);
    assert!(out.success(), "{out}");
    assert_eq!(listed, want_public, "1.14 anonymous\n{out}");
    rows.push((
        "1.14 (no certificate)".to_owned(),
        want_public.clone(),
        listed,
        "remote-ls ok".to_owned(),
    ));
    // Host A's filtered index (fetched with A's certificate), relayed to 1.14.
    let pair = pki.host_cert(HOST_A).write_to(fp.dir(), "host-a");
    let r = gateway
        .curl()
        .cert_pair(&pair)
        .get(&format!("/index/static?{FLATPAK_INDEX_QUERY}"));
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("\"Lists\":[{"),
        "the Lists entry is passed through"
    );
    let relay = IndexRelay::start(Bytes::from(r.body)).expect("relay");
    fp.flatpak(&[
        "remote-add",
        "--user",
        "--no-gpg-verify",
        "relay",
        &format!("oci+{}/", relay.url()),
    ])
    .run()
    .ok();
    let out = fp
        .flatpak(&["remote-ls", "--user", "--columns=ref", "relay"])
        .run()
        .ok();
    let listed = refs(&out.stdout);
    assert_eq!(listed, want_a, "1.14 with host A's index\n{out}");
    assert!(relay.hits() > 0);
    rows.push((
        "1.14, host A's index relayed".to_owned(),
        want_a.clone(),
        listed,
        "remote-ls ok".to_owned(),
    ));
    report(&rows);
    let lines = serial.lines_since(0);
    print_access_log(TEST, &lines);
    for uuid in [HOST_A, HOST_B] {
        assert!(
            lines_of(&lines, uuid)
                .iter()
                .any(|l| l.contains("route=/index/") && l.contains("status=200")),
            "flatpak 1.16 fetched the index as {uuid}"
        );
    }
}
