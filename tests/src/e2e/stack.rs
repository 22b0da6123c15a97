//! Everything the end-to-end suite runs against, wired together:
//! [`RegistryUpstream`] (docker-registry + the Pulp-shaped index) with the
//! images pushed by skopeo, a [`FakeCentral`] answering for the hosts and the
//! user, and a gateway (TLS, plugins `rhsm-cert` + `katello-token`) with
//! Katello's pushes applied. Upstreams are served over mTLS, as in production.
//!
//! | repository | content | `auth_required` | visible to |
//! |---|---|---|---|
//! | [`REPO_A`] | plain image `tiny_a` | yes | host A, [`USER`] |
//! | [`REPO_B`] | plain image `tiny_b` | yes | host B |
//! | [`REPO_PUBLIC`] | plain multi-arch image `tiny_multi` | no | everyone |
//! | [`REPO_PLATFORM`] | Flatpak runtime | no | everyone |
//! | [`REPO_HELLO`] | Flatpak app `org.test.Hello` v1 | no | everyone |
//! | [`REPO_PRIVATE`] | Flatpak app `org.test.Private` (image index) | yes | host A, [`USER`] |

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::images::{Images, Layout};
use super::{Cmd, mkdir, write};
use crate::fake_central::FakeCentral;
use crate::harness::{Gateway, GatewayBuilder, upstream_tls};
use crate::pki::{Issued, Pki};
use crate::registry_upstream::RegistryUpstream;

pub const HOST_A: &str = "6f1c2f9e-0a1b-4c2d-8e3f-0123456789aa";
pub const HOST_B: &str = "7a2d3e4f-5b6c-4d7e-9f80-0123456789bb";
pub const USER: &str = "alice";
pub const PASSWORD: &str = "alice-secret";

pub const REPO_A: &str = "acme/a/tiny";
pub const REPO_B: &str = "acme/b/tiny";
pub const REPO_PUBLIC: &str = "acme/public/tiny";
pub const REPO_PLATFORM: &str = "acme/public/platform";
pub const REPO_HELLO: &str = "acme/public/hello";
pub const REPO_PRIVATE: &str = "acme/a/private";

/// `(name, auth_required)`, as Katello pushes the repository list.
pub const REPOSITORIES: [(&str, bool); 6] = [
    (REPO_A, true),
    (REPO_B, true),
    (REPO_PUBLIC, false),
    (REPO_PLATFORM, false),
    (REPO_HELLO, false),
    (REPO_PRIVATE, true),
];
pub const PUBLIC: [&str; 3] = [REPO_PUBLIC, REPO_PLATFORM, REPO_HELLO];
pub const HOST_A_REPOS: [&str; 2] = [REPO_A, REPO_PRIVATE];
pub const HOST_B_REPOS: [&str; 1] = [REPO_B];
pub const USER_REPOS: [&str; 2] = [REPO_A, REPO_PRIVATE];

/// The running pieces.
pub struct Stack {
    pub pki: Arc<Pki>,
    pub upstream: RegistryUpstream,
    pub central: FakeCentral,
    pub gateway: Gateway,
    pub images: &'static Images,
    dir: tempfile::TempDir,
}

impl Stack {
    /// Build (or reuse) the images, start everything, push the content and
    /// Katello's state. Panics with the failing step.
    pub fn start() -> Stack {
        let started = std::time::Instant::now();
        let images = Images::get();
        let pki = Arc::new(Pki::new());
        let dir = tempfile::Builder::new()
            .prefix("cg-e2e-stack-")
            .tempdir()
            .expect("temp dir");
        let upstream = RegistryUpstream::builder()
            .tls(upstream_tls(&pki))
            .start()
            .unwrap_or_else(|e| panic!("the registry upstream does not start: {e}"));
        let stack_dir = dir.path().to_owned();
        let pusher = Pusher::new(stack_dir.join("push"));
        for (layout, repo) in [
            (&images.tiny_a, REPO_A),
            (&images.tiny_b, REPO_B),
            (&images.tiny_multi, REPO_PUBLIC),
            (&images.platform, REPO_PLATFORM),
            (&images.hello_v1, REPO_HELLO),
            (&images.private, REPO_PRIVATE),
        ] {
            pusher.push(&upstream, layout, repo, "latest");
        }
        let mut host_a: Vec<&str> = PUBLIC.to_vec();
        host_a.extend(HOST_A_REPOS);
        let mut host_b: Vec<&str> = PUBLIC.to_vec();
        host_b.extend(HOST_B_REPOS);
        let central = FakeCentral::builder()
            .public(&PUBLIC)
            .host(HOST_A, &host_a)
            .host(HOST_B, &host_b)
            .user(USER, PASSWORD, &USER_REPOS)
            .tls(upstream_tls(&pki))
            .start();
        let gateway = GatewayBuilder::new(pki.clone())
            .pulp_at(upstream.url(), upstream.registry_path())
            .central(&central)
            .plugins(&["rhsm-cert", "katello-token"])
            // Every index request reaches the upstream: a new push shows at once.
            .index_ttl(0)
            .upstream_timeout(30)
            .start();
        gateway.push_repository_list(&REPOSITORIES);
        gateway.push_hosts(&[HOST_A, HOST_B]);
        gateway.push_host_mapping(&[(HOST_A, &HOST_A_REPOS), (HOST_B, &HOST_B_REPOS)]);
        eprintln!(
            "e2e: stack up in {:.2} s: gateway {}, upstream {} (docker-registry {})",
            started.elapsed().as_secs_f64(),
            gateway.url(),
            upstream.url(),
            upstream.registry().url()
        );
        Stack {
            pki,
            upstream,
            central,
            gateway,
            images,
            dir,
        }
    }

    /// `127.0.0.1:<port>` of the gateway: the registry name clients use.
    pub fn registry_host(&self) -> String {
        self.gateway.tls_addr().to_string()
    }

    /// A subscription certificate for `uuid`.
    pub fn host_cert(&self, uuid: &str) -> Issued {
        self.pki.host_cert(uuid)
    }

    /// skopeo and podman with their own configuration, storage and certs.
    pub fn container_tools(&self) -> ContainerTools {
        ContainerTools::new(&self.registry_host(), &self.pki.ca_pem())
    }

    /// Push another layout into docker-registry (e.g. a new build).
    pub fn push(&self, layout: &Layout, repo: &str, tag: &str) {
        Pusher::new(self.dir.path().join("push")).push(&self.upstream, layout, repo, tag);
    }

    /// The digest docker-registry has for `repo:tag`.
    pub fn registry_digest(&self, repo: &str, tag: &str) -> String {
        self.upstream
            .tag_digest(repo, tag)
            .unwrap_or_else(|| panic!("docker-registry has no {repo}:{tag}"))
    }

    /// A scratch directory that lives as long as the stack.
    pub fn scratch(&self, name: &str) -> PathBuf {
        mkdir(&self.dir.path().join("scratch").join(name))
    }
}

/// `skopeo copy` into docker-registry with an isolated policy and configuration.
struct Pusher {
    dir: PathBuf,
}

impl Pusher {
    fn new(dir: PathBuf) -> Pusher {
        write(
            &dir.join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        );
        write(
            &dir.join("registries.conf"),
            "unqualified-search-registries = []\n",
        );
        mkdir(&dir.join("home"));
        mkdir(&dir.join("tmp"));
        Pusher { dir }
    }

    fn push(&self, upstream: &RegistryUpstream, layout: &Layout, repo: &str, tag: &str) {
        let dest = format!("docker://{}/{repo}:{tag}", upstream.registry_addr());
        let mut cmd = Cmd::new("skopeo")
            .arg("--policy")
            .arg(self.dir.join("policy.json"))
            .args(["copy", "--dest-tls-verify=false"]);
        if layout.multi {
            cmd = cmd.arg("--all");
        }
        cmd.args([layout.source(), dest])
            .env("HOME", self.dir.join("home"))
            .env("TMPDIR", self.dir.join("tmp"))
            .env("REGISTRY_AUTH_FILE", self.dir.join("auth.json"))
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.dir.join("registries.conf"),
            )
            .timeout(Duration::from_secs(120))
            .run()
            .ok();
        let pushed = upstream.tag_digest(repo, tag);
        assert_eq!(
            pushed.as_deref(),
            Some(layout.digest.as_str()),
            "skopeo kept the manifest bytes of {}",
            layout.dir.display()
        );
    }
}

/// skopeo and podman with everything in a temporary directory: trust policy,
/// `registries.conf`, `containers.conf`, `storage.conf`, the auth file
/// (`REGISTRY_AUTH_FILE`), podman storage (`--root`/`--runroot`, vfs) and the
/// certificate directories given with `--cert-dir`. The machine's
/// `/etc/containers` is never written (and its `certs.d` is not read: an
/// explicit `--cert-dir` replaces it).
pub struct ContainerTools {
    dir: tempfile::TempDir,
    registry: String,
    ca_pem: String,
}

impl ContainerTools {
    pub fn new(registry_host: &str, ca_pem: &str) -> ContainerTools {
        let dir = tempfile::Builder::new()
            .prefix("cg-e2e-containers-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        write(
            &d.join("home/.config/containers/policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        );
        write(
            &d.join("registries.conf"),
            "unqualified-search-registries = []\n",
        );
        write(
            &d.join("containers.conf"),
            format!(
                "[engine]\nevents_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\ntmp_dir = \"{}\"\n[network]\nnetwork_config_dir = \"{}\"\n",
                d.join("libpod-tmp").display(),
                d.join("net").display()
            ),
        );
        write(
            &d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                d.join("storage").display(),
                d.join("runroot").display()
            ),
        );
        // podman refuses a REGISTRY_AUTH_FILE that does not exist.
        write(&d.join("auth.json"), r#"{"auths":{}}"#);
        for sub in ["tmp", "run", "libpod-tmp", "net", "storage", "runroot"] {
            mkdir(&d.join(sub));
        }
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(d.join("run"), std::fs::Permissions::from_mode(0o700));
        }
        ContainerTools {
            dir,
            registry: registry_host.to_owned(),
            ca_pem: ca_pem.to_owned(),
        }
    }

    fn env(&self, cmd: Cmd) -> Cmd {
        let d = self.dir.path();
        cmd.env("HOME", d.join("home"))
            .env("TMPDIR", d.join("tmp"))
            .env("XDG_RUNTIME_DIR", d.join("run"))
            .env("REGISTRY_AUTH_FILE", self.auth_file())
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .timeout(Duration::from_secs(120))
    }

    /// The auth file `podman login` writes and both tools read.
    pub fn auth_file(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    /// A certificate directory trusting the test CA only (anonymous client).
    pub fn ca_only_dir(&self) -> PathBuf {
        let d = self.dir.path().join("certs/anonymous");
        write(&d.join("ca.crt"), &self.ca_pem);
        d
    }

    /// A certificate directory with the test CA and `cert` as
    /// `client.cert`/`client.key` (what `/etc/containers/certs.d/<host>/` holds).
    pub fn cert_dir(&self, name: &str, cert: &Issued) -> PathBuf {
        let d = self.dir.path().join("certs").join(name);
        write(&d.join("ca.crt"), &self.ca_pem);
        write(&d.join("client.cert"), cert.chain_pem());
        write(&d.join("client.key"), &cert.key_pem);
        d
    }

    /// `127.0.0.1:<gateway port>/<repo>:<tag>`.
    pub fn image(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.registry)
    }

    /// `docker://` + [`ContainerTools::image`].
    pub fn docker(&self, repo: &str, tag: &str) -> String {
        format!("docker://{}", self.image(repo, tag))
    }

    /// `docker://127.0.0.1:<gateway port>/<repo>` (no tag: `skopeo list-tags`).
    pub fn docker_repo(&self, repo: &str) -> String {
        format!("docker://{}/{repo}", self.registry)
    }

    /// The registry name (`127.0.0.1:<port>`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `skopeo --policy <ours> <args>`.
    pub fn skopeo<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Cmd {
        self.env(
            Cmd::new("skopeo")
                .arg("--policy")
                .arg(self.dir.path().join("home/.config/containers/policy.json"))
                .args(args),
        )
    }

    /// `podman --root .. --runroot .. --storage-driver vfs ... <args>`.
    pub fn podman<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Cmd {
        let d = self.dir.path();
        self.env(
            Cmd::new("podman")
                .arg("--root")
                .arg(d.join("storage"))
                .arg("--runroot")
                .arg(d.join("runroot"))
                .arg("--tmpdir")
                .arg(d.join("libpod-tmp"))
                .arg("--network-config-dir")
                .arg(d.join("net"))
                .args([
                    "--storage-driver",
                    "vfs",
                    "--events-backend",
                    "none",
                    "--cgroup-manager",
                    "cgroupfs",
                ])
                .args(args),
        )
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}
