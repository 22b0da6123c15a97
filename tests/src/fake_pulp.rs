//! A fake Pulp (pulpcore + pulp_container) that speaks REAL Pulp's wire format.
//!
//! ```no_run
//! use gateway_tests::fake_pulp::{FakePulp, FakeRepo, Image, PathKind, Blob};
//! use gateway_tests::harness::Fault;
//!
//! let pulp = FakePulp::builder()                       // registry_path "/pulpcore_registry"
//!     .repo(FakeRepo::new("org/flatpak/hello").image("latest", Image::flatpak_app("org.test.Hello")))
//!     .repo(FakeRepo::new("org/lib/tiny").image("latest", Image::new()).image("1.0", Image::new().label("v", "1")))
//!     .repo(FakeRepo::new("org/big").blob(Blob::generated(1 << 30, 7)).direct_blobs(true))
//!     .start();                                        // plain HTTP on 127.0.0.1:<random>
//! let digest = pulp.repo("org/lib/tiny").unwrap().tag_digest("latest").unwrap();
//! // ... drive the gateway ...
//! assert_eq!(pulp.count(PathKind::Manifest), 1);
//! assert!(pulp.requests_of(PathKind::Manifest)[0].method == "HEAD");
//! pulp.fail_kind(PathKind::Index, Fault::Status(500));   // runtime fault injection
//! pulp.clear_faults();
//! ```
//!
//! # Routes (under `registry_path`, e.g. `/pulpcore_registry`, or `""`)
//!
//! | route | answer (as pulp_container 2.30 on gunicorn) |
//! |---|---|
//! | `GET\|HEAD /index/static`, `/index/dynamic` | 400 `{"detail":"Missing label:org.flatpak.ref:exists=1."}` without that key, 400 `Unsupported <key>.` for unknown keys; else 200 compact raw-UTF-8 JSON (`Content-Type: application/json`, no ETag/Cache-Control), either the body set with [`FakePulpBuilder::index_json`] / [`FakePulp::set_index_json`] (served verbatim) or one generated from the repos and the query ([`pulp_index_json`]); `Registry` is the content origin. `/index/dynamic` with `Accept: text/html` gives DRF's HTML page. |
//! | `GET /v2/` | 401 `WWW-Authenticate: Basic realm="api"` unless an `Authorization` header or a TLS client certificate came with it, then 200 `{}` |
//! | `GET\|HEAD /v2/<name>/manifests/<ref>` | 200 with the exact bytes, `Content-Type` = media type, `Docker-Content-Digest`, `Content-Length` (HEAD: headers only); 404 `NAME_UNKNOWN` / `MANIFEST_UNKNOWN`; with [`FakeRepo::redirect_manifests`], a 302 to the content app instead (pulp_container before 2.28, see below). Manifest lists / OCI indexes ([`FakeRepo::image_list`]) likewise: by tag only for an `Accept` naming the list's own type |
//! | `GET\|HEAD /v2/<name>/blobs/<digest>` | 302 to `<content_origin>/pulp/container/<name>/blobs/<digest>?expires=..&validate_token=..`; with [`FakeRepo::direct_blobs`] a 200 streamed straight from the `/v2/` route (pulp_container 1.x, see below); 404 `BLOB_UNKNOWN` |
//! | `GET\|HEAD /v2/<name>/referrers/<digest>` | no such route in pulp_container 2.30 (its `urls.py` has none): Django's HTML 404, the same bytes as real Pulp, for any name ([`PathKind::Other`]) |
//! | `GET /v2/<name>/tags/list?n=&last=` | `{"name":..,"tags":[sorted]}`; when a page is full, `Link: <http://<Host>/v2/<name>/tags/list?n=N&last=X>; rel="next"` (absolute, without `registry_path`, as Pulp behind Apache writes it) |
//! | `GET /v2/_catalog?n=&last=` | `{"repositories":[sorted names]}`, same paging |
//! | `GET\|HEAD /pulp/container/<name>/blobs/<digest>?expires=&validate_token=` | the content app (always at the root, not under `registry_path`): checks the signature (403 otherwise) and serves 200 with `Docker-Content-Digest`, `Etag`, `Accept-Ranges: bytes` (single `Range` supported, 206) |
//! | `GET\|HEAD /pulp/container/<name>/manifests/<ref>?expires=&validate_token=` | only for a [`FakeRepo::redirect_manifests`] repository: signature checked, then 200 with the bytes, `Docker-Content-Digest` and `Docker-Distribution-API-Version`; otherwise aiohttp's no-route `404: Not Found` (pulp_container 2.30's content app has no manifest route) |
//!
//! # Modes no pulp_container 2.30 answers in (not compared with a live Pulp)
//!
//! `tests/tests/e2e_real_pulp.rs` holds everything above to pulpcore 3.123 +
//! pulp_container 2.30, including a multi-arch repository (OCI index and Docker
//! manifest list). Two per-repository modes model older Pulps that the gateway
//! still meets in the field, and no setting of 2.30 reproduces them, so they are
//! not part of that comparison:
//!
//! * [`FakeRepo::redirect_manifests`]: pulp_container 2.0.0 to 2.27.x answer
//!   manifest `GET` (and, from 2.3, `HEAD`) by tag or digest with a 302 to
//!   `CONTENT_ORIGIN/pulp/container/<name>/manifests/<ref>` (signed), served by
//!   the content app. 2.28.0 (changelog: "Manifest data is now served directly
//!   from the registry API instead of issuing a redirect to the content app")
//!   removed the redirect and the content app's manifest route; 2.30's
//!   `Manifests.handle_safe_method` only returns `ManifestResponse`, whatever
//!   the storage backend.
//! * [`FakeRepo::direct_blobs`]: pulp_container 1.0 to 1.4 served `/v2/` from
//!   the content app itself (aiohttp), blobs as a 200 from
//!   `/v2/<name>/blobs/<digest>`. Since 2.0.0 the `/v2/` API is pulpcore-api's,
//!   and a blob `GET` is always a 302: to the content app with the local
//!   filesystem, with `REDIRECT_TO_OBJECT_STORAGE = False`, for on-demand and
//!   pull-through blobs; to a presigned object-storage URL (another host) with
//!   S3 or Azure and `REDIRECT_TO_OBJECT_STORAGE = True` (the default). (2.0
//!   to 2.2 answered a blob `HEAD` with a bodiless 200 from the API.) A 200
//!   from the `/v2/` route therefore also stands for any front that follows
//!   the redirect itself.
//!
//! API answers carry gunicorn's `Connection: close` (turn off with
//! [`FakePulpBuilder::keep_alive`]); content-app answers keep the connection.
//! Blob bodies are streamed; [`Blob::generated`] bodies are produced on the
//! fly (zero-copy slices of one pattern buffer), so a 1 GiB blob costs no memory.
//!
//! # Observing
//!
//! * [`FakePulp::total`], [`FakePulp::count`] (per [`PathKind`]), counted when a request arrives (before any stall).
//! * [`FakePulp::requests`] / [`FakePulp::requests_of`]: [`PulpRequest`]s with the method, raw path and
//!   query, and every header line (`accept()` gives each `Accept:` line, `if_none_match()`,
//!   `authorization()`, `rhsm_cert()`, `host()`), and whether a TLS client cert was presented.
//! * [`FakePulp::blob_bytes_sent`], [`FakePulp::streams_completed`], [`FakePulp::streams_aborted`]:
//!   streamed body bytes, and bodies that ended early (the reader went away).
//! * [`FakePulp::reset`] clears counters and the log.
//!
//! # Faults (runtime)
//!
//! [`FakePulp::fail`] (every request), [`FakePulp::fail_kind`], [`FakePulp::fail_times`],
//! [`FakePulp::clear_faults`]; see [`Fault`].
//! Outage: [`FakePulp::stop`] (connection refused) and [`FakePulp::restart`] (same port, same state).
//!
//! # Content helpers
//!
//! [`Image`] builds a content-addressed OCI (or Docker schema 2) image: a real
//! tar.gz layer, a config blob with the labels and matching `diff_ids`, and a
//! manifest whose digest is the sha256 of its exact bytes.
//! [`Image::flatpak_app`] / [`Image::flatpak_runtime`] carry the labels Pulp's
//! index shows (`org.flatpak.ref`, `org.flatpak.metadata`, `org.flatpak.subject`
//! with non-ASCII text, `org.flatpak.commit-metadata.*`, ...).
//! [`FakeRepo::image_list`] builds a manifest list / OCI index.
//! [`sha256_digest`], [`Blob::generated`], [`generated_digest`] and
//! [`generated_chunk`] help tests check what they received.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{App, HttpRequest, HttpResponse, HttpResponseBuilder, HttpServer, web};
use base64::Engine;
use bytes::Bytes;
use futures_util::Stream;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::harness::{
    Fault, Faults, HUGE_NAME_PREFIX, Recorded, RequestLog, ServerThread, ServerTls,
    any_loopback_port, capture_connection, dropping_response, huge_response, lock, paced_response,
    record, respond_response, stall_body_response, truncate_response,
};

/// Media types.
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
}

/// `sha256:<hex>` of the bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

// ---------------------------------------------------------------------------
// Blobs
// ---------------------------------------------------------------------------

/// Size of one streamed chunk.
const CHUNK: usize = 64 * 1024;
/// Period of the generated pattern (prime, so chunks do not line up with it).
const PERIOD: u64 = 251;

/// Byte `i` of a generated body: `(i % 251) ^ seed`.
pub fn generated_byte(seed: u8, i: u64) -> u8 {
    ((i % PERIOD) as u8) ^ seed
}

fn pattern(seed: u8) -> Bytes {
    (0..(CHUNK as u64 + PERIOD))
        .map(|i| generated_byte(seed, i))
        .collect::<Vec<u8>>()
        .into()
}

/// Bytes `offset..offset+len` of a generated body (for tests that check content).
pub fn generated_chunk(seed: u8, offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|i| generated_byte(seed, i))
        .collect()
}

/// The true sha256 digest of a generated body (streams it through the hash).
pub fn generated_digest(size: u64, seed: u8) -> String {
    let pat = pattern(seed);
    let mut h = Sha256::new();
    let mut pos = 0u64;
    while pos < size {
        let len = (size - pos).min(CHUNK as u64) as usize;
        let start = (pos % PERIOD) as usize;
        h.update(&pat[start..start + len]);
        pos += len as u64;
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// What a blob's body is.
#[derive(Clone, Debug)]
pub enum BlobBody {
    Bytes(Bytes),
    /// `size` bytes of [`generated_byte`]`(seed, i)`, produced while streaming.
    Generated {
        size: u64,
        seed: u8,
    },
}

/// A blob and its digest.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub body: BlobBody,
}

impl Blob {
    /// A blob with these bytes; digest = sha256 of them.
    pub fn new(bytes: impl Into<Bytes>) -> Blob {
        let bytes = bytes.into();
        Blob {
            digest: sha256_digest(&bytes),
            body: BlobBody::Bytes(bytes),
        }
    }

    /// A generated body of `size` bytes with its true digest (hashing 1 GiB takes about a
    /// second; see [`Blob::generated_unhashed`]).
    pub fn generated(size: u64, seed: u8) -> Blob {
        Blob {
            digest: generated_digest(size, seed),
            body: BlobBody::Generated { size, seed },
        }
    }

    /// A generated body whose digest is **not** its content hash
    /// (`sha256(<size>:<seed>)`): for streaming tests that never verify digests.
    pub fn generated_unhashed(size: u64, seed: u8) -> Blob {
        Blob {
            digest: sha256_digest(format!("generated:{size}:{seed}").as_bytes()),
            body: BlobBody::Generated { size, seed },
        }
    }

    pub fn size(&self) -> u64 {
        match &self.body {
            BlobBody::Bytes(b) => b.len() as u64,
            BlobBody::Generated { size, .. } => *size,
        }
    }

    /// The whole body (generated bodies are materialised: keep them small).
    pub fn to_bytes(&self) -> Bytes {
        match &self.body {
            BlobBody::Bytes(b) => b.clone(),
            BlobBody::Generated { size, seed } => generated_chunk(*seed, 0, *size as usize).into(),
        }
    }
}

// ---------------------------------------------------------------------------
// Manifests and images
// ---------------------------------------------------------------------------

/// A manifest: exact bytes, media type and digest (sha256 of the bytes).
#[derive(Clone, Debug)]
pub struct Manifest {
    pub media_type: String,
    pub bytes: Bytes,
    pub digest: String,
}

impl Manifest {
    pub fn new(media_type: &str, bytes: impl Into<Bytes>) -> Manifest {
        let bytes = bytes.into();
        Manifest {
            media_type: media_type.to_owned(),
            digest: sha256_digest(&bytes),
            bytes,
        }
    }
}

/// Labels in insertion order, serialised as a JSON object in that order.
#[derive(Clone, Debug, Default)]
struct Labels(Vec<(String, String)>);

impl Labels {
    fn set(&mut self, k: &str, v: &str) {
        match self.0.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.to_owned(),
            None => self.0.push((k.to_owned(), v.to_owned())),
        }
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

impl Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Manifest flavour of an [`Image`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Oci,
    DockerV2,
}

/// An image to build: platform, labels, layers.
#[derive(Clone, Debug)]
pub struct Image {
    os: String,
    architecture: String,
    variant: Option<String>,
    labels: Labels,
    layers: Vec<Blob>,
    flavor: Flavor,
}

impl Default for Image {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`Image::build`] produces.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub manifest: Manifest,
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub labels: Vec<(String, String)>,
}

impl Image {
    /// linux/amd64, OCI, no labels, one small real tar.gz layer.
    pub fn new() -> Image {
        Image {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
            labels: Labels::default(),
            layers: vec![tar_gz_layer(&[("hello.txt", b"hello from a test layer\n")])],
            flavor: Flavor::Oci,
        }
    }

    /// A Flatpak application (ref `app/<id>/x86_64/stable`) with the labels
    /// Pulp's index shows, including a non-ASCII `org.flatpak.subject`.
    pub fn flatpak_app(app_id: &str) -> Image {
        let r#ref = format!("app/{app_id}/x86_64/stable");
        let metadata = format!(
            "[Application]\nname={app_id}\nruntime=org.test.Platform/x86_64/1\nsdk=org.test.Platform/x86_64/1\ncommand=hello\n\n[Context]\nshared=network;\n"
        );
        let body =
            format!("Name: {app_id}\nArch: x86_64\nBranch: stable\nBuilt with: Flatpak 1.14.10\n");
        Image::new().flatpak_labels(
            &r#ref,
            &metadata,
            &body,
            &format!("{app_id} app – ünïcödé ✓"),
        )
    }

    /// A Flatpak runtime (ref `runtime/<id>/x86_64/<branch>`).
    pub fn flatpak_runtime(id: &str, branch: &str) -> Image {
        let r#ref = format!("runtime/{id}/x86_64/{branch}");
        let metadata = format!(
            "[Runtime]\nname={id}\nruntime={id}/x86_64/{branch}\nsdk={id}/x86_64/{branch}\n"
        );
        let body =
            format!("Name: {id}\nArch: x86_64\nBranch: {branch}\nBuilt with: Flatpak 1.14.10\n");
        Image::new().flatpak_labels(&r#ref, &metadata, &body, &format!("Export {id}"))
    }

    fn flatpak_labels(self, r#ref: &str, metadata: &str, body: &str, subject: &str) -> Image {
        let b64 = |s: &str| {
            base64::engine::general_purpose::STANDARD.encode([s.as_bytes(), b"\0\0s"].concat())
        };
        let commit = hex::encode(Sha256::digest(r#ref.as_bytes()));
        self.label("org.flatpak.ref", r#ref)
            .label("org.flatpak.body", body)
            .label("org.flatpak.commit", &commit)
            .label("org.flatpak.subject", subject)
            .label("org.flatpak.metadata", metadata)
            .label("org.flatpak.timestamp", "1795387250")
            .label("org.flatpak.download-size", "531729")
            .label("org.flatpak.installed-size", "963584")
            .label("org.flatpak.commit-metadata.xa.ref", &b64(r#ref))
            .label("org.flatpak.commit-metadata.xa.metadata", &b64(metadata))
            .label(
                "org.flatpak.commit-metadata.xa.download-size",
                "AAAAAAAIGRMAdA==",
            )
            .label(
                "org.flatpak.commit-metadata.xa.installed-size",
                "AAAAAAAOtAAAdA==",
            )
            .label(
                "org.flatpak.commit-metadata.ostree.ref-binding",
                &b64(r#ref),
            )
            .label(
                "org.flatpak.commit-metadata.ostree.collection-binding",
                "AABz",
            )
    }

    /// Set (or replace) a label.
    pub fn label(mut self, key: &str, value: &str) -> Image {
        self.labels.set(key, value);
        self
    }

    pub fn os(mut self, os: &str) -> Image {
        self.os = os.to_owned();
        self
    }

    pub fn arch(mut self, architecture: &str) -> Image {
        self.architecture = architecture.to_owned();
        self
    }

    /// The CPU variant (`v8` for arm64, as `skopeo --override-arch arm64` expects), written into
    /// the config and, in [`FakeRepo::image_list`], the entry's `platform`.
    pub fn variant(mut self, variant: &str) -> Image {
        self.variant = Some(variant.to_owned());
        self
    }

    /// Replace the layers (use [`tar_gz_layer`], [`Blob::new`] or [`Blob::generated`]).
    pub fn layers(mut self, layers: Vec<Blob>) -> Image {
        self.layers = layers;
        self
    }

    /// Append a layer.
    pub fn add_layer(mut self, layer: Blob) -> Image {
        self.layers.push(layer);
        self
    }

    /// Docker schema 2 media types instead of OCI.
    pub fn docker_v2(mut self) -> Image {
        self.flavor = Flavor::DockerV2;
        self
    }

    /// Build config blob and manifest (content-addressed, deterministic).
    pub fn build(&self) -> BuiltImage {
        #[derive(Serialize)]
        struct RootFs {
            r#type: &'static str,
            diff_ids: Vec<String>,
        }
        #[derive(Serialize)]
        struct ContainerConfig<'a> {
            #[serde(rename = "Labels")]
            labels: &'a Labels,
        }
        #[derive(Serialize)]
        struct History {
            created: &'static str,
            created_by: &'static str,
        }
        #[derive(Serialize)]
        struct Config<'a> {
            created: &'static str,
            architecture: &'a str,
            os: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            variant: Option<&'a str>,
            config: ContainerConfig<'a>,
            rootfs: RootFs,
            history: Vec<History>,
        }
        let diff_ids = self.layers.iter().map(layer_diff_id).collect();
        let config = Config {
            created: "2026-01-01T00:00:00Z",
            architecture: &self.architecture,
            os: &self.os,
            variant: self.variant.as_deref(),
            config: ContainerConfig {
                labels: &self.labels,
            },
            rootfs: RootFs {
                r#type: "layers",
                diff_ids,
            },
            history: vec![History {
                created: "2026-01-01T00:00:00Z",
                created_by: "gateway-tests",
            }],
        };
        let config = Blob::new(serde_json::to_vec(&config).expect("image config serialises"));
        let (manifest_type, config_type, layer_type) = match self.flavor {
            Flavor::Oci => (
                media::OCI_MANIFEST,
                media::OCI_CONFIG,
                media::OCI_LAYER_GZIP,
            ),
            Flavor::DockerV2 => (
                media::DOCKER_MANIFEST,
                media::DOCKER_CONFIG,
                media::DOCKER_LAYER_GZIP,
            ),
        };
        let descriptor = |media_type: &str, b: &Blob| serde_json::json!({"mediaType": media_type, "digest": b.digest, "size": b.size()});
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": descriptor(config_type, &config),
            "layers": self.layers.iter().map(|l| descriptor(layer_type, l)).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        BuiltImage {
            manifest: Manifest::new(manifest_type, bytes),
            config,
            layers: self.layers.clone(),
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
            labels: self.labels.0.clone(),
        }
    }
}

/// sha256 of the uncompressed layer for the `diff_ids` (only exact for layers
/// made by [`tar_gz_layer`]; other layers get the digest of their bytes).
fn layer_diff_id(layer: &Blob) -> String {
    if let BlobBody::Bytes(b) = &layer.body {
        let mut d = flate2::read::GzDecoder::new(&b[..]);
        let mut out = Vec::new();
        if io::Read::read_to_end(&mut d, &mut out).is_ok() {
            return sha256_digest(&out);
        }
    }
    layer.digest.clone()
}

/// A real, deterministic `tar.gz` layer holding these files.
pub fn tar_gz_layer(files: &[(&str, &[u8])]) -> Blob {
    let mut tar = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        let put = |h: &mut [u8; 512], at: usize, s: &[u8]| h[at..at + s.len()].copy_from_slice(s);
        put(&mut h, 0, &name.as_bytes()[..name.len().min(99)]);
        put(&mut h, 100, b"0000644\0");
        put(&mut h, 108, b"0000000\0");
        put(&mut h, 116, b"0000000\0");
        put(&mut h, 124, format!("{:011o}\0", data.len()).as_bytes());
        put(&mut h, 136, b"15034104000\0");
        put(&mut h, 148, b"        ");
        h[156] = b'0';
        put(&mut h, 257, b"ustar\0");
        put(&mut h, 263, b"00");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
        tar.extend_from_slice(&h);
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("gzip into memory");
    Blob::new(gz.finish().expect("gzip into memory"))
}

// ---------------------------------------------------------------------------
// Repositories
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct ImageInfo {
    os: String,
    architecture: String,
    labels: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
struct Stored {
    manifest: Manifest,
    /// Set for image manifests (what the index shows).
    image: Option<ImageInfo>,
    /// For lists: (digest, os, architecture) of each listed manifest.
    children: Vec<(String, String, String)>,
}

/// A Pulp distribution (`base_path` = repository name) and its content.
#[derive(Clone, Debug)]
pub struct FakeRepo {
    name: String,
    tags: BTreeMap<String, String>,
    manifests: HashMap<String, Stored>,
    blobs: HashMap<String, Blob>,
    redirect_manifests: bool,
    direct_blobs: bool,
}

impl FakeRepo {
    pub fn new(name: &str) -> FakeRepo {
        FakeRepo {
            name: name.to_owned(),
            tags: BTreeMap::new(),
            manifests: HashMap::new(),
            blobs: HashMap::new(),
            redirect_manifests: false,
            direct_blobs: false,
        }
    }

    fn store_image(&mut self, built: &BuiltImage) {
        self.blobs
            .insert(built.config.digest.clone(), built.config.clone());
        for l in &built.layers {
            self.blobs.insert(l.digest.clone(), l.clone());
        }
        self.manifests.insert(
            built.manifest.digest.clone(),
            Stored {
                manifest: built.manifest.clone(),
                image: Some(ImageInfo {
                    os: built.os.clone(),
                    architecture: built.architecture.clone(),
                    labels: built.labels.clone(),
                }),
                children: Vec::new(),
            },
        );
    }

    /// Build `image` and tag it.
    pub fn image(mut self, tag: &str, image: Image) -> FakeRepo {
        let built = image.build();
        self.store_image(&built);
        self.tags
            .insert(tag.to_owned(), built.manifest.digest.clone());
        self
    }

    /// Build the images and a manifest list (OCI index, or Docker list when the
    /// first image is [`Image::docker_v2`]) naming them with their platforms; tag the list.
    pub fn image_list(mut self, tag: &str, images: Vec<Image>) -> FakeRepo {
        let docker = images.first().is_some_and(|i| i.flavor == Flavor::DockerV2);
        let mut entries = Vec::new();
        let mut children = Vec::new();
        for image in &images {
            let built = image.build();
            self.store_image(&built);
            let mut platform =
                serde_json::json!({"architecture": built.architecture, "os": built.os});
            if let Some(v) = &built.variant {
                platform["variant"] = serde_json::json!(v);
            }
            entries.push(serde_json::json!({
                "mediaType": built.manifest.media_type,
                "digest": built.manifest.digest,
                "size": built.manifest.bytes.len(),
                "platform": platform,
            }));
            children.push((
                built.manifest.digest.clone(),
                built.os.clone(),
                built.architecture.clone(),
            ));
        }
        let media_type = if docker {
            media::DOCKER_LIST
        } else {
            media::OCI_INDEX
        };
        let list =
            serde_json::json!({"schemaVersion": 2, "mediaType": media_type, "manifests": entries});
        let manifest = Manifest::new(
            media_type,
            serde_json::to_vec_pretty(&list).expect("list serialises"),
        );
        self.tags.insert(tag.to_owned(), manifest.digest.clone());
        self.manifests.insert(
            manifest.digest.clone(),
            Stored {
                manifest,
                image: None,
                children,
            },
        );
        self
    }

    /// Add a raw manifest (not shown in the index), tagged when `tag` is given.
    pub fn manifest(mut self, tag: Option<&str>, manifest: Manifest) -> FakeRepo {
        if let Some(t) = tag {
            self.tags.insert(t.to_owned(), manifest.digest.clone());
        }
        self.manifests.insert(
            manifest.digest.clone(),
            Stored {
                manifest,
                image: None,
                children: Vec::new(),
            },
        );
        self
    }

    /// Add a blob.
    pub fn blob(mut self, blob: Blob) -> FakeRepo {
        self.blobs.insert(blob.digest.clone(), blob);
        self
    }

    /// Point `tag` at a manifest digest already in the repo.
    pub fn tag(mut self, tag: &str, digest: &str) -> FakeRepo {
        self.tags.insert(tag.to_owned(), digest.to_owned());
        self
    }

    /// Answer manifest requests with a 302 to the content app (older pulp_container).
    pub fn redirect_manifests(mut self, on: bool) -> FakeRepo {
        self.redirect_manifests = on;
        self
    }

    /// Serve blobs with a 200 straight from `/v2/` instead of a 302.
    pub fn direct_blobs(mut self, on: bool) -> FakeRepo {
        self.direct_blobs = on;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sorted tag names.
    pub fn tags(&self) -> Vec<String> {
        self.tags.keys().cloned().collect()
    }

    pub fn tag_digest(&self, tag: &str) -> Option<String> {
        self.tags.get(tag).cloned()
    }

    /// A manifest by tag or digest.
    pub fn manifest_for(&self, reference: &str) -> Option<Manifest> {
        let digest = if reference.starts_with("sha256:") {
            reference
        } else {
            self.tags.get(reference)?
        };
        self.manifests.get(digest).map(|s| s.manifest.clone())
    }

    /// Digests of the layers of the image manifest at `reference` (tag or digest).
    pub fn layer_digests(&self, reference: &str) -> Vec<String> {
        let Some(m) = self.manifest_for(reference) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap_or_default();
        v["layers"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .filter_map(|l| l["digest"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn blob_by_digest(&self, digest: &str) -> Option<Blob> {
        self.blobs.get(digest).cloned()
    }

    pub fn blob_digests(&self) -> Vec<String> {
        let mut v: Vec<String> = self.blobs.keys().cloned().collect();
        v.sort();
        v
    }
}

// ---------------------------------------------------------------------------
// The Flatpak index
// ---------------------------------------------------------------------------

/// The filters of an index request, parsed like pulp_container's `FlatpakIndexDynamicView`.
#[derive(Clone, Debug, Default)]
pub struct IndexQuery {
    pub repositories: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub oss: Option<Vec<String>>,
    pub architectures: Option<Vec<String>>,
    pub label_exists: BTreeSet<String>,
    pub label_values: Vec<(String, Vec<String>)>,
}

impl IndexQuery {
    /// Parse a raw query string; `Err` holds Pulp's 400 `detail`.
    pub fn parse(query: &str) -> Result<IndexQuery, String> {
        let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match grouped.iter_mut().find(|(key, _)| *key == k) {
                Some((_, vs)) => vs.push(v.into_owned()),
                None => grouped.push((k.into_owned(), vec![v.into_owned()])),
            }
        }
        let mut q = IndexQuery::default();
        for (key, values) in grouped {
            match key.as_str() {
                "repository" => q.repositories = Some(values),
                "tag" => q.tags = Some(values),
                "os" => q.oss = Some(values),
                "architecture" => q.architectures = Some(values),
                k if k.starts_with("label:") => {
                    if let Some(label) = k
                        .strip_prefix("label:")
                        .and_then(|l| l.strip_suffix(":exists"))
                    {
                        if values.iter().any(|v| v != "1") {
                            return Err(format!("{k} must have value 1."));
                        }
                        q.label_exists.insert(label.to_owned());
                    } else {
                        q.label_values
                            .push((k["label:".len()..].to_owned(), values));
                    }
                }
                other => return Err(format!("Unsupported {other}.")),
            }
        }
        if !q.label_exists.contains("org.flatpak.ref") {
            return Err("Missing label:org.flatpak.ref:exists=1.".into());
        }
        Ok(q)
    }

    /// What flatpak sends: `label:org.flatpak.ref:exists=1&architecture=amd64&os=linux&tag=latest`.
    pub fn flatpak() -> IndexQuery {
        IndexQuery::parse("label:org.flatpak.ref:exists=1&architecture=amd64&os=linux&tag=latest")
            .expect("the flatpak query parses")
    }
}

/// The query flatpak sends, raw.
pub const FLATPAK_INDEX_QUERY: &str =
    "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";

fn collect_images(
    repo: &FakeRepo,
    tag: &str,
    digest: &str,
    q: &IndexQuery,
    out: &mut Vec<(String, BTreeSet<String>)>,
) {
    let Some(stored) = repo.manifests.get(digest) else {
        return;
    };
    if stored.image.is_some() {
        match out.iter_mut().find(|(d, _)| d == digest) {
            Some((_, tags)) => {
                tags.insert(tag.to_owned());
            }
            None => out.push((digest.to_owned(), BTreeSet::from([tag.to_owned()]))),
        }
        return;
    }
    for (child, os, arch) in &stored.children {
        if q.oss.as_ref().is_some_and(|o| !o.contains(os))
            || q.architectures.as_ref().is_some_and(|a| !a.contains(arch))
        {
            continue;
        }
        collect_images(repo, tag, child, q, out);
    }
}

/// Pulp's index for these repos and this query: compact JSON, raw UTF-8, keys
/// in Pulp's order, results in repo order, only images with labels matching.
pub fn pulp_index_json(registry: &str, repos: &[FakeRepo], q: &IndexQuery) -> Vec<u8> {
    #[derive(Serialize)]
    struct Img<'a> {
        #[serde(rename = "Tags")]
        tags: Vec<String>,
        #[serde(rename = "Digest")]
        digest: &'a str,
        #[serde(rename = "MediaType")]
        media_type: &'a str,
        #[serde(rename = "OS")]
        os: &'a str,
        #[serde(rename = "Architecture")]
        architecture: &'a str,
        #[serde(rename = "Labels")]
        labels: Labels,
    }
    #[derive(Serialize)]
    struct Res<'a> {
        #[serde(rename = "Name")]
        name: &'a str,
        #[serde(rename = "Images")]
        images: Vec<Img<'a>>,
    }
    #[derive(Serialize)]
    struct Index<'a> {
        #[serde(rename = "Registry")]
        registry: &'a str,
        #[serde(rename = "Results")]
        results: Vec<Res<'a>>,
    }
    let mut results = Vec::new();
    for repo in repos {
        if q.repositories
            .as_ref()
            .is_some_and(|r| !r.contains(&repo.name))
        {
            continue;
        }
        let mut found = Vec::new();
        for (tag, digest) in &repo.tags {
            if q.tags.as_ref().is_some_and(|t| !t.contains(tag)) {
                continue;
            }
            collect_images(repo, tag, digest, q, &mut found);
        }
        let mut images = Vec::new();
        for (digest, tags) in found {
            let Some(stored) = repo.manifests.get(&digest) else {
                continue;
            };
            let Some(info) = &stored.image else { continue };
            let labels = Labels(info.labels.clone());
            if labels.0.is_empty()
                || q.label_exists.iter().any(|l| labels.get(l).is_none())
                || q.oss.as_ref().is_some_and(|o| !o.contains(&info.os))
                || q.architectures
                    .as_ref()
                    .is_some_and(|a| !a.contains(&info.architecture))
                || q.label_values
                    .iter()
                    .any(|(l, vs)| !labels.get(l).is_some_and(|v| vs.iter().any(|x| x == v)))
            {
                continue;
            }
            images.push(Img {
                tags: tags.into_iter().collect(),
                digest: &stored.manifest.digest,
                media_type: &stored.manifest.media_type,
                os: &info.os,
                architecture: &info.architecture,
                labels,
            });
        }
        if !images.is_empty() {
            results.push(Res {
                name: &repo.name,
                images,
            });
        }
    }
    serde_json::to_vec(&Index { registry, results }).expect("index serialises")
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// Which route a request hit (for counters, logs and faults).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// `/v2/`
    Ping,
    /// `/index/static`, `/index/dynamic`
    Index,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags,
    /// `/v2/<name>/manifests/<ref>`
    Manifest,
    /// `/v2/<name>/blobs/<digest>`
    Blob,
    /// The content app: `/pulp/container/...`
    Content,
    /// Anything else (404 from Pulp).
    Other,
}

impl PathKind {
    pub const ALL: [PathKind; 8] = [
        PathKind::Ping,
        PathKind::Index,
        PathKind::Catalog,
        PathKind::Tags,
        PathKind::Manifest,
        PathKind::Blob,
        PathKind::Content,
        PathKind::Other,
    ];

    fn slot(self) -> usize {
        self as usize
    }
}

/// A request the fake Pulp received.
pub type PulpRequest = Recorded<PathKind>;

#[derive(Debug)]
enum Route {
    Ping,
    Index {
        dynamic: bool,
    },
    Catalog,
    Tags {
        name: String,
    },
    Manifest {
        name: String,
        reference: String,
    },
    Blob {
        name: String,
        digest: String,
    },
    ContentBlob {
        name: String,
        digest: String,
    },
    ContentManifest {
        name: String,
        reference: String,
    },
    /// `/v2/<name>/blobs/uploads/...` (push only).
    Upload,
    /// `/v2` without its slash: Django's `APPEND_SLASH` redirect.
    AppendSlash,
    Other,
}

impl Route {
    fn kind(&self) -> PathKind {
        match self {
            Route::Ping => PathKind::Ping,
            Route::Index { .. } => PathKind::Index,
            Route::Catalog => PathKind::Catalog,
            Route::Tags { .. } => PathKind::Tags,
            Route::Manifest { .. } => PathKind::Manifest,
            Route::Blob { .. } => PathKind::Blob,
            Route::ContentBlob { .. } | Route::ContentManifest { .. } => PathKind::Content,
            Route::Upload | Route::AppendSlash | Route::Other => PathKind::Other,
        }
    }
}

fn split_ref(rest: &str, sep: &str) -> Option<(String, String)> {
    let (name, r) = rest.rsplit_once(sep)?;
    (!name.is_empty() && !r.is_empty() && !r.contains('/')).then(|| (name.to_owned(), r.to_owned()))
}

fn classify(path: &str, prefix: &str) -> Route {
    if let Some(rest) = path.strip_prefix("/pulp/container/") {
        if let Some((name, digest)) = split_ref(rest, "/blobs/") {
            return Route::ContentBlob { name, digest };
        }
        if let Some((name, reference)) = split_ref(rest, "/manifests/") {
            return Route::ContentManifest { name, reference };
        }
        return Route::Other;
    }
    let Some(p) = path.strip_prefix(prefix) else {
        return Route::Other;
    };
    match p {
        "/index/static" => return Route::Index { dynamic: false },
        "/index/dynamic" => return Route::Index { dynamic: true },
        "/v2" => return Route::AppendSlash,
        "/v2/" => return Route::Ping,
        "/v2/_catalog" => return Route::Catalog,
        _ => {}
    }
    let Some(rest) = p.strip_prefix("/v2/") else {
        return Route::Other;
    };
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return if name.is_empty() {
            Route::Other
        } else {
            Route::Tags {
                name: name.to_owned(),
            }
        };
    }
    if let Some((name, reference)) = split_ref(rest, "/manifests/") {
        return Route::Manifest { name, reference };
    }
    if let Some((name, digest)) = split_ref(rest, "/blobs/")
        && digest != "uploads"
    {
        return Route::Blob { name, digest };
    }
    if rest.contains("/blobs/uploads") {
        return Route::Upload;
    }
    Route::Other
}

struct PulpState {
    registry_path: String,
    repos: Mutex<Vec<FakeRepo>>,
    index_override: Mutex<Option<Bytes>>,
    content_origin: Mutex<String>,
    connection_close: bool,
    secret: String,
    total: AtomicU64,
    counts: [AtomicU64; 8],
    log: RequestLog<PathKind>,
    faults: Faults<PathKind>,
    bytes_sent: AtomicU64,
    streams_completed: AtomicU64,
    streams_aborted: AtomicU64,
    correlation: AtomicU64,
}

impl PulpState {
    fn repo(&self, name: &str) -> Option<FakeRepo> {
        lock(&self.repos).iter().find(|r| r.name == name).cloned()
    }

    fn origin(&self) -> String {
        lock(&self.content_origin).clone()
    }

    /// A signed content-app URL like pulpcore's (`expires` + `validate_token=salt:hash`).
    fn signed_url(&self, path: &str) -> String {
        let expires = now_secs() + 3600;
        let salt = hex::encode(
            &Sha256::digest(format!(
                "{path}{expires}{}",
                self.correlation.load(Ordering::Relaxed)
            ))[..16],
        );
        format!(
            "{}{path}?expires={expires}&validate_token={salt}:{}",
            self.origin(),
            self.token(&salt, path, expires)
        )
    }

    fn token(&self, salt: &str, path: &str, expires: u64) -> String {
        hex::encode(Sha256::digest(format!(
            "{salt}{path}?expires={expires}{}",
            self.secret
        )))
    }

    fn verify(&self, req: &HttpRequest) -> bool {
        let q: HashMap<String, String> =
            form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        let (Some(expires), Some(token)) = (
            q.get("expires").and_then(|e| e.parse::<u64>().ok()),
            q.get("validate_token"),
        ) else {
            return false;
        };
        let Some((salt, hash)) = token.split_once(':') else {
            return false;
        };
        expires >= now_secs() && *hash == self.token(salt, req.uri().path(), expires)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Configures and starts a [`FakePulp`].
pub struct FakePulpBuilder {
    registry_path: String,
    repos: Vec<FakeRepo>,
    index_override: Option<Bytes>,
    tls: Option<ServerTls>,
    content_origin: Option<String>,
    connection_close: bool,
    log_cap: usize,
}

impl FakePulpBuilder {
    /// Path prefix of the registry API: `/pulpcore_registry` (default, Katello's) or `""`.
    pub fn registry_path(mut self, path: &str) -> Self {
        self.registry_path = path.trim_end_matches('/').to_owned();
        self
    }

    /// Add a repository (distribution); results follow the order of these calls.
    pub fn repo(mut self, repo: FakeRepo) -> Self {
        self.repos.push(repo);
        self
    }

    /// Serve exactly these bytes as the index (both `static` and `dynamic`),
    /// instead of generating one from the repos.
    pub fn index_json(mut self, body: impl Into<Bytes>) -> Self {
        self.index_override = Some(body.into());
        self
    }

    /// Serve over TLS (optionally requiring a client certificate).
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Pulp's `CONTENT_ORIGIN` (index `Registry`, redirect Locations). Default: the fake's own URL.
    pub fn content_origin(mut self, origin: &str) -> Self {
        self.content_origin = Some(origin.trim_end_matches('/').to_owned());
        self
    }

    /// Keep API connections alive (default: `Connection: close`, like gunicorn's sync worker).
    pub fn keep_alive(mut self, on: bool) -> Self {
        self.connection_close = !on;
        self
    }

    /// How many requests the log keeps (default 10,000; counters are unbounded).
    pub fn log_capacity(mut self, cap: usize) -> Self {
        self.log_cap = cap;
        self
    }

    /// Start it, panicking with the reason when it cannot.
    pub fn start(self) -> FakePulp {
        self.try_start().expect("fake Pulp starts")
    }

    pub fn try_start(self) -> io::Result<FakePulp> {
        let secret = hex::encode(Sha256::digest(format!(
            "{:?}{:?}",
            SystemTime::now(),
            std::thread::current().id()
        )));
        let state = Arc::new(PulpState {
            registry_path: self.registry_path,
            repos: Mutex::new(self.repos),
            index_override: Mutex::new(self.index_override),
            content_origin: Mutex::new(String::new()),
            connection_close: self.connection_close,
            secret,
            total: AtomicU64::new(0),
            counts: Default::default(),
            log: RequestLog::new(self.log_cap),
            faults: Faults::new(),
            bytes_sent: AtomicU64::new(0),
            streams_completed: AtomicU64::new(0),
            streams_aborted: AtomicU64::new(0),
            correlation: AtomicU64::new(0),
        });
        let tls = self
            .tls
            .map(|t| t.server_config().map_err(io::Error::other))
            .transpose()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = serve(&state, tls.clone(), any_loopback_port())?;
        let url = format!("{scheme}://{}", server.addr);
        *lock(&state.content_origin) = self.content_origin.unwrap_or_else(|| url.clone());
        Ok(FakePulp {
            addr: server.addr,
            state,
            tls,
            server: Some(server),
            url,
        })
    }
}

fn serve(
    state: &Arc<PulpState>,
    tls: Option<rustls::ServerConfig>,
    addr: SocketAddr,
) -> io::Result<ServerThread> {
    let app_state = state.clone();
    ServerThread::start("fake-pulp", addr, move |listener| {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::from(app_state.clone()))
                .default_service(web::to(handle))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(1)
        .on_connect(capture_connection);
        let server = match tls {
            Some(tls) => server.listen_rustls_0_23(listener, tls)?,
            None => server.listen(listener)?,
        };
        Ok(server.run())
    })
}

/// A running fake Pulp; stops on drop.
pub struct FakePulp {
    addr: SocketAddr,
    state: Arc<PulpState>,
    tls: Option<rustls::ServerConfig>,
    server: Option<ServerThread>,
    url: String,
}

impl FakePulp {
    pub fn builder() -> FakePulpBuilder {
        FakePulpBuilder {
            registry_path: "/pulpcore_registry".into(),
            repos: Vec::new(),
            index_override: None,
            tls: None,
            content_origin: None,
            connection_close: true,
            log_cap: 10_000,
        }
    }

    /// `http(s)://127.0.0.1:<port>` (the value for `pulp.endpoint`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The registry prefix (`pulp.registry_path`).
    pub fn registry_path(&self) -> &str {
        &self.state.registry_path
    }

    /// `url + registry_path`.
    pub fn registry_url(&self) -> String {
        format!("{}{}", self.url, self.state.registry_path)
    }

    /// The content origin: index `Registry` and redirect host.
    pub fn content_origin(&self) -> String {
        self.state.origin()
    }

    // -- counters and log ---------------------------------------------------

    /// Requests received, any route.
    pub fn total(&self) -> u64 {
        self.state.total.load(Ordering::SeqCst)
    }

    /// Requests received on one kind of route.
    pub fn count(&self, kind: PathKind) -> u64 {
        self.state.counts[kind.slot()].load(Ordering::SeqCst)
    }

    /// Every logged request, oldest first.
    pub fn requests(&self) -> Vec<PulpRequest> {
        self.state.log.all()
    }

    pub fn requests_of(&self, kind: PathKind) -> Vec<PulpRequest> {
        self.state
            .log
            .all()
            .into_iter()
            .filter(|r| r.kind == kind)
            .collect()
    }

    pub fn last_request(&self) -> Option<PulpRequest> {
        self.state.log.all().pop()
    }

    /// Body bytes handed to the network by streamed blob answers.
    pub fn blob_bytes_sent(&self) -> u64 {
        self.state.bytes_sent.load(Ordering::SeqCst)
    }

    /// Streamed blob bodies sent to the end.
    pub fn streams_completed(&self) -> u64 {
        self.state.streams_completed.load(Ordering::SeqCst)
    }

    /// Streamed blob bodies dropped before the end (the reader went away).
    pub fn streams_aborted(&self) -> u64 {
        self.state.streams_aborted.load(Ordering::SeqCst)
    }

    /// Zero every counter and clear the log.
    pub fn reset(&self) {
        let s = &self.state;
        s.total.store(0, Ordering::SeqCst);
        for c in &s.counts {
            c.store(0, Ordering::SeqCst);
        }
        for c in [&s.bytes_sent, &s.streams_completed, &s.streams_aborted] {
            c.store(0, Ordering::SeqCst);
        }
        s.log.clear();
    }

    // -- faults -------------------------------------------------------------

    /// Every request gets `fault` until [`FakePulp::clear_faults`].
    pub fn fail(&self, fault: Fault) {
        self.state.faults.add(None, fault, None);
    }

    /// Requests of `kind` get `fault` until cleared.
    pub fn fail_kind(&self, kind: PathKind, fault: Fault) {
        self.state.faults.add(Some(kind), fault, None);
    }

    /// The next `times` requests (of `kind`, or any) get `fault`.
    pub fn fail_times(&self, kind: Option<PathKind>, fault: Fault, times: u32) {
        self.state.faults.add(kind, fault, Some(times));
    }

    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }

    // -- content at runtime ---------------------------------------------------

    /// Replace the served index body (`None`: generate from the repos again).
    pub fn set_index_json(&self, body: Option<Bytes>) {
        *lock(&self.state.index_override) = body;
    }

    /// Add a repo, replacing one with the same name (in place).
    pub fn add_repo(&self, repo: FakeRepo) {
        let mut repos = lock(&self.state.repos);
        match repos.iter_mut().find(|r| r.name == repo.name) {
            Some(slot) => *slot = repo,
            None => repos.push(repo),
        }
    }

    pub fn remove_repo(&self, name: &str) {
        lock(&self.state.repos).retain(|r| r.name != name);
    }

    /// A copy of a configured repo (digests, tags, blobs).
    pub fn repo(&self, name: &str) -> Option<FakeRepo> {
        self.state.repo(name)
    }

    /// The index body this fake would serve for `query` (raw query string),
    /// or Pulp's 400 `detail`.
    pub fn index_json(&self, query: &str) -> Result<Bytes, String> {
        let q = IndexQuery::parse(query)?;
        if let Some(b) = lock(&self.state.index_override).clone() {
            return Ok(b);
        }
        let repos = lock(&self.state.repos).clone();
        Ok(pulp_index_json(&self.state.origin(), &repos, &q).into())
    }

    /// Stop serving: connections are refused (and open ones cut) until [`FakePulp::restart`].
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
    }

    /// Serve again on the same port, with the same content, faults and counters
    /// (pooled keep-alive connections from before stay dead).
    pub fn restart(&mut self) {
        self.stop();
        self.server = Some(
            serve(&self.state, self.tls.clone(), self.addr)
                .expect("fake Pulp restarts on its port"),
        );
    }

    pub fn is_up(&self) -> bool {
        self.server.is_some()
    }
}

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

const GUNICORN: &str = "gunicorn";
const AIOHTTP: &str = "Python/3.11 aiohttp/3.14.5";

/// A response builder with the headers every Pulp API answer has.
fn api(
    state: &PulpState,
    status: StatusCode,
    registry_headers: bool,
    allow: &str,
) -> HttpResponseBuilder {
    let mut b = HttpResponse::build(status);
    b.insert_header((header::SERVER, GUNICORN));
    if registry_headers {
        b.insert_header(("Docker-Distribution-Api-Version", "registry/2.0"));
        b.insert_header(("X-Registry-Supports-Signatures", "1"));
    }
    if !allow.is_empty() {
        b.insert_header(("Allow", allow.to_owned()));
    }
    b.insert_header(("X-Frame-Options", "DENY"));
    b.insert_header(("X-Content-Type-Options", "nosniff"));
    b.insert_header(("Referrer-Policy", "same-origin"));
    b.insert_header(("Cross-Origin-Opener-Policy", "same-origin"));
    let id = state.correlation.fetch_add(1, Ordering::Relaxed);
    b.insert_header(("Correlation-ID", format!("{:032x}", id + 0x5cf7_6e8d)));
    b.insert_header(("Access-Control-Expose-Headers", "Correlation-ID"));
    if state.connection_close {
        b.force_close();
    }
    b
}

fn json_error(
    state: &PulpState,
    status: StatusCode,
    code: &str,
    message: &str,
    detail: serde_json::Value,
) -> HttpResponse {
    json_error_on(state, ROUTE_JSON, status, code, message, detail)
}

/// `Allow` and `Vary` of a pulp_container view: the JSON views (ping,
/// catalog, tags) negotiate on `Accept`; manifests and blobs do not.
type ViewHeaders = (&'static str, &'static str);
const ROUTE_JSON: ViewHeaders = ("GET, HEAD, OPTIONS", "Accept, Cookie");
const ROUTE_MANIFEST: ViewHeaders = ("GET, PUT, DELETE, HEAD, OPTIONS", "Cookie");
const ROUTE_BLOB: ViewHeaders = ("GET, DELETE, HEAD, OPTIONS", "Cookie");
const ROUTE_UPLOAD: ViewHeaders = ("GET, POST, PUT, HEAD, OPTIONS", "Accept, Cookie");

fn json_error_on(
    state: &PulpState,
    (allow, vary): ViewHeaders,
    status: StatusCode,
    code: &str,
    message: &str,
    detail: serde_json::Value,
) -> HttpResponse {
    let body =
        serde_json::json!({"errors": [{"code": code, "message": message, "detail": detail}]});
    api(state, status, true, allow)
        .content_type("application/json")
        .insert_header((header::VARY, vary))
        .body(serde_json::to_vec(&body).expect("error serialises"))
}

/// What DRF's content negotiation picks for a view rendering JSON or the
/// browsable API (pulp_container's ping, catalog, tags and index views).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Negotiated {
    Json,
    Html,
    NotAcceptable,
}

/// DRF's `DefaultContentNegotiation`: the `Accept` entries are grouped by
/// specificity (`type/subtype;params` > `type/subtype` > `type/*` > `*/*`;
/// q-values are ignored), and in the most specific group that matches any
/// renderer, the first renderer in the view's order (JSON, then HTML) wins.
/// No `Accept` at all is JSON.
fn negotiate(req: &HttpRequest) -> Negotiated {
    let entries: Vec<(String, u8)> = req
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| {
            let mut parts = entry.split(';').map(str::trim);
            let media = parts.next().filter(|m| !m.is_empty())?.to_ascii_lowercase();
            let params = parts.any(|p| !p.is_empty() && !p.starts_with("q="));
            let precedence = if media.starts_with("*/") {
                0
            } else if media.ends_with("/*") {
                1
            } else if params {
                3
            } else {
                2
            };
            Some((media, precedence))
        })
        .collect();
    if entries.is_empty() {
        return Negotiated::Json;
    }
    let matches = |renderer: &str, accepted: &str| {
        accepted == "*/*"
            || accepted == renderer
            || accepted
                .strip_suffix('*')
                .is_some_and(|prefix| prefix.ends_with('/') && renderer.starts_with(prefix))
    };
    for level in (0..=3).rev() {
        let group: Vec<&str> = entries
            .iter()
            .filter(|(_, p)| *p == level)
            .map(|(m, _)| m.as_str())
            .collect();
        for (renderer, pick) in [
            ("application/json", Negotiated::Json),
            ("text/html", Negotiated::Html),
        ] {
            if group.iter().any(|a| matches(renderer, a)) {
                return pick;
            }
        }
    }
    Negotiated::NotAcceptable
}

/// pulp_container's 406 on a registry view.
fn not_acceptable(state: &PulpState) -> HttpResponse {
    let mut r = json_error_on(
        state,
        ROUTE_JSON,
        StatusCode::NOT_ACCEPTABLE,
        "UNSUPPORTED",
        "Could not satisfy the request Accept header.",
        serde_json::json!({}),
    );
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    r
}

/// DRF's browsable-API page for a JSON view (`Accept: text/html`).
fn browsable_api(state: &PulpState, title: &str, json: &serde_json::Value) -> HttpResponse {
    api(state, StatusCode::OK, true, ROUTE_JSON.0)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::VARY, ROUTE_JSON.1))
        .body(format!(
            "<!DOCTYPE html>\n<html><head><title>{title} – Django REST framework</title></head><body><pre>{}</pre></body></html>\n",
            serde_json::to_string_pretty(json).unwrap_or_default().replace('"', "&quot;")
        ))
}

/// Whether a manifest fetched **by tag** may be served for these `Accept`
/// lines (pulp_container's `is_media_type_accepted`: its exact media type or
/// `*/*`, parameters ignored; no `Accept` accepts anything). By digest there is
/// no such check.
fn tag_accepted(req: &HttpRequest, media_type: &str) -> bool {
    let accepted: Vec<&str> = req
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|e| e.split(';').next().map(str::trim))
        .filter(|m| !m.is_empty())
        .collect();
    accepted.is_empty() || accepted.iter().any(|a| *a == "*/*" || *a == media_type)
}

fn django_error(state: &PulpState, status: StatusCode) -> HttpResponse {
    let reason = status.canonical_reason().unwrap_or("Error");
    api(state, status, false, "GET, HEAD, OPTIONS")
        .content_type("text/html; charset=utf-8")
        .body(format!("\n<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>{reason} ({})</title>\n</head>\n<body>\n  <h1>{reason} ({})</h1><p></p>\n</body>\n</html>\n", status.as_u16(), status.as_u16()))
}

fn method_not_allowed(state: &PulpState, method: &str) -> HttpResponse {
    api(
        state,
        StatusCode::METHOD_NOT_ALLOWED,
        true,
        "GET, HEAD, OPTIONS",
    )
    .content_type("application/json")
    .body(format!(
        "{{\"detail\":\"Method \\\"{method}\\\" not allowed.\"}}"
    ))
}

async fn handle(req: HttpRequest, state: web::Data<PulpState>) -> HttpResponse {
    let route = classify(req.uri().path(), &state.registry_path);
    let kind = route.kind();
    state.total.fetch_add(1, Ordering::SeqCst);
    state.counts[kind.slot()].fetch_add(1, Ordering::SeqCst);
    state.log.push(record(&req, kind));

    let mut truncate = false;
    let mut stall_body = None;
    let mut paced = None;
    match state.faults.take(kind) {
        None => {}
        Some(Fault::Stall(d)) => actix_web::rt::time::sleep(d).await,
        Some(Fault::Status(code)) => {
            return django_error(
                &state,
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            );
        }
        Some(Fault::Garbage) => {
            return api(
                &state,
                StatusCode::OK,
                kind != PathKind::Index,
                "GET, HEAD, OPTIONS",
            )
            .content_type("application/json")
            .body(&b"<html>\x00\xff not json {\"Registry\": [,,]"[..]);
        }
        Some(Fault::Close) => {
            return dropping_response(StatusCode::OK, "application/json", 4096, Bytes::new());
        }
        Some(Fault::Truncate) => truncate = true,
        Some(Fault::StallBody(d)) => stall_body = Some(d),
        Some(Fault::Paced {
            pieces,
            gap,
            chunked,
        }) => paced = Some((pieces, gap, chunked)),
        Some(Fault::Respond {
            status,
            content_type,
            body,
        }) => return respond_response(status, &content_type, body),
        Some(Fault::Huge { size, chunked }) => {
            return huge_response(
                size,
                chunked,
                "{\"Registry\":\"https://pulp.example.com/\",\"Results\":[",
                |i| format!("{{\"Name\":\"{HUGE_NAME_PREFIX}{i:010}\",\"Images\":[]}}"),
                "]}",
            );
        }
    }
    let state = state.into_inner();
    let resp = answer(&req, &state, route);
    if truncate {
        truncate_response(resp)
    } else if let Some(pause) = stall_body {
        stall_body_response(resp, pause)
    } else if let Some((pieces, gap, chunked)) = paced {
        paced_response(resp, pieces, gap, chunked)
    } else {
        resp
    }
}

fn answer(req: &HttpRequest, state: &Arc<PulpState>, route: Route) -> HttpResponse {
    let method = req.method().as_str();
    let head = method == "HEAD";
    let authenticated = req.headers().contains_key(header::AUTHORIZATION)
        || req
            .conn_data::<crate::harness::ConnFacts>()
            .is_some_and(|c| c.client_cert.is_some());
    if method != "GET" && !head {
        // Pulp asks for credentials before it looks at what is pushed.
        // (What it answers a credentialed write is not emulated: 405.)
        let view = match route {
            Route::Manifest { .. } => Some(ROUTE_MANIFEST),
            Route::Blob { .. } => Some(ROUTE_BLOB),
            Route::Upload => Some(ROUTE_UPLOAD),
            Route::Ping | Route::Catalog | Route::Tags { .. } => Some(ROUTE_JSON),
            _ => None,
        };
        if let (Some(view), false) = (view, authenticated) {
            let mut r = json_error_on(
                state,
                view,
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "Authentication credentials were not provided.",
                serde_json::json!({}),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"api\""),
            );
            return r;
        }
        return method_not_allowed(state, method);
    }
    let negotiated = match route {
        Route::Ping | Route::Catalog | Route::Tags { .. } => negotiate(req),
        _ => Negotiated::Json,
    };
    if negotiated == Negotiated::NotAcceptable {
        return not_acceptable(state);
    }
    match route {
        Route::AppendSlash => api(state, StatusCode::MOVED_PERMANENTLY, false, "")
            .content_type("text/html; charset=utf-8")
            .insert_header((header::LOCATION, format!("{}/v2/", state.registry_path)))
            .finish(),
        Route::Upload => api(state, StatusCode::NOT_FOUND, true, ROUTE_UPLOAD.0)
            .content_type("application/json")
            .insert_header((header::VARY, ROUTE_UPLOAD.1))
            .body(r#"{"detail":"No Upload matches the given query."}"#),
        Route::Ping => {
            if authenticated {
                api(state, StatusCode::OK, true, "GET, HEAD, OPTIONS")
                    .content_type("application/json")
                    .insert_header((header::VARY, "Accept, Cookie"))
                    .body("{}")
            } else {
                let mut r = json_error(
                    state,
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "Authentication credentials were not provided.",
                    serde_json::json!({}),
                );
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"api\""));
                r
            }
        }
        Route::Index { dynamic } => index(req, state, dynamic),
        Route::Catalog => {
            let names: Vec<String> = {
                let mut n: Vec<String> = lock(&state.repos).iter().map(|r| r.name.clone()).collect();
                n.sort();
                n
            };
            let (page, link) = paginate(req, &names, "/v2/_catalog");
            let json = serde_json::json!({"repositories": page});
            if negotiated == Negotiated::Html {
                return browsable_api(state, "Catalog", &json);
            }
            let mut b = api(state, StatusCode::OK, true, "GET, HEAD, OPTIONS");
            b.content_type("application/json").insert_header((header::VARY, "Accept, Cookie"));
            if let Some(l) = link {
                b.insert_header((header::LINK, l));
            }
            b.body(serde_json::to_vec(&json).expect("catalog serialises"))
        }
        Route::Tags { name } => {
            let Some(repo) = state.repo(&name) else { return name_unknown(state, ROUTE_JSON, &name) };
            let (page, link) = paginate(req, &repo.tags(), &format!("/v2/{name}/tags/list"));
            let json = serde_json::json!({"name": name, "tags": page});
            if negotiated == Negotiated::Html {
                return browsable_api(state, "Tags List", &json);
            }
            let mut b = api(state, StatusCode::OK, true, "GET, HEAD, OPTIONS");
            b.content_type("application/json").insert_header((header::VARY, "Accept, Cookie"));
            if let Some(l) = link {
                b.insert_header((header::LINK, l));
            }
            b.body(serde_json::to_vec(&json).expect("tags serialise"))
        }
        Route::Manifest { name, reference } => {
            let Some(repo) = state.repo(&name) else { return name_unknown(state, ROUTE_MANIFEST, &name) };
            let manifest_unknown = || {
                json_error_on(
                    state,
                    ROUTE_MANIFEST,
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    "Manifest not found.",
                    serde_json::json!({"reference": reference}),
                )
            };
            let Some(m) = repo.manifest_for(&reference) else { return manifest_unknown() };
            if !reference.starts_with("sha256:") && !tag_accepted(req, &m.media_type) {
                return manifest_unknown();
            }
            if repo.redirect_manifests {
                return redirect(state, &state.signed_url(&format!("/pulp/container/{name}/manifests/{reference}")));
            }
            let mut b = api(state, StatusCode::OK, true, "GET, PUT, DELETE, HEAD, OPTIONS");
            b.content_type(m.media_type.clone())
                .insert_header(("Docker-Content-Digest", m.digest.clone()))
                .insert_header((header::VARY, "Cookie"));
            b.body(m.bytes)
        }
        Route::Blob { name, digest } => {
            let Some(repo) = state.repo(&name) else { return name_unknown(state, ROUTE_BLOB, &name) };
            let Some(blob) = repo.blob_by_digest(&digest) else {
                return json_error_on(
                    state,
                    ROUTE_BLOB,
                    StatusCode::NOT_FOUND,
                    "BLOB_UNKNOWN",
                    "Blob not found, hello!?",
                    serde_json::json!({"digest": digest}),
                );
            };
            if repo.direct_blobs {
                let mut b = api(state, StatusCode::OK, true, "GET, DELETE, HEAD, OPTIONS");
                return serve_blob(req, state, &mut b, &blob);
            }
            redirect(state, &state.signed_url(&format!("/pulp/container/{name}/blobs/{digest}")))
        }
        Route::ContentBlob { name, digest } => {
            if !state.verify(req) {
                return content_forbidden();
            }
            let Some(blob) = state.repo(&name).and_then(|r| r.blob_by_digest(&digest)) else {
                return content_not_found(req);
            };
            let mut b = HttpResponse::Ok();
            b.insert_header((header::SERVER, AIOHTTP));
            serve_blob(req, state, &mut b, &blob)
        }
        Route::ContentManifest { name, reference } => {
            // pulp_container 2.28 dropped this route from the content app (manifests come from
            // the API), so aiohttp answers with its no-route 404 before any signature check;
            // only a repository in the older redirect mode still has it.
            if !state.repo(&name).is_some_and(|r| r.redirect_manifests) {
                return no_route();
            }
            if !state.verify(req) {
                return content_forbidden();
            }
            let Some(m) = state.repo(&name).and_then(|r| r.manifest_for(&reference)) else {
                return content_not_found(req);
            };
            HttpResponse::Ok()
                .insert_header((header::SERVER, AIOHTTP))
                .content_type(m.media_type.clone())
                .insert_header(("Docker-Content-Digest", m.digest.clone()))
                .insert_header(("Docker-Distribution-API-Version", "registry/2.0"))
                .body(m.bytes)
        }
        Route::Other => api(state, StatusCode::NOT_FOUND, false, "")
            .content_type("text/html; charset=utf-8")
            .body("\n<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n</body>\n</html>\n"),
    }
}

fn name_unknown(state: &PulpState, view: ViewHeaders, name: &str) -> HttpResponse {
    json_error_on(
        state,
        view,
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
        "Repository not found.",
        serde_json::json!({"name": name}),
    )
}

fn redirect(state: &PulpState, location: &str) -> HttpResponse {
    api(state, StatusCode::FOUND, true, "GET, DELETE, HEAD, OPTIONS")
        .content_type("text/html; charset=utf-8")
        .insert_header((header::LOCATION, location.to_owned()))
        .insert_header((header::VARY, "Cookie"))
        .finish()
}

fn content_forbidden() -> HttpResponse {
    let mut r = HttpResponse::Forbidden()
        .insert_header((header::SERVER, AIOHTTP))
        .content_type("text/plain; charset=utf-8")
        .body("403: Access not authenticated");
    r.head_mut().reason = Some("Access not authenticated");
    r
}

/// aiohttp's answer to a path no route of the content app matches.
fn no_route() -> HttpResponse {
    HttpResponse::NotFound()
        .insert_header((header::SERVER, AIOHTTP))
        .content_type("text/plain; charset=utf-8")
        .body("404: Not Found")
}

fn content_not_found(req: &HttpRequest) -> HttpResponse {
    HttpResponse::NotFound()
        .insert_header((header::SERVER, AIOHTTP))
        .content_type("text/plain; charset=utf-8")
        .body(format!("404: Not Found {}", req.uri().path()))
}

fn index(req: &HttpRequest, state: &PulpState, dynamic: bool) -> HttpResponse {
    let allow = "GET, HEAD, OPTIONS";
    // DRF negotiates before the view runs; /index/static then always renders JSON.
    let negotiated = negotiate(req);
    if negotiated == Negotiated::NotAcceptable {
        return api(state, StatusCode::NOT_ACCEPTABLE, false, allow)
            .content_type("application/json")
            .insert_header((header::VARY, "Accept"))
            .body(r#"{"detail":"Could not satisfy the request Accept header."}"#);
    }
    let q = match IndexQuery::parse(req.uri().query().unwrap_or_default()) {
        Ok(q) => q,
        Err(detail) => {
            return api(state, StatusCode::BAD_REQUEST, false, allow)
                .content_type("application/json")
                .insert_header((header::VARY, "Accept"))
                .body(
                    serde_json::to_vec(&serde_json::json!({"detail": detail}))
                        .expect("detail serialises"),
                );
        }
    };
    if dynamic && negotiated == Negotiated::Html {
        return api(state, StatusCode::OK, false, allow)
            .content_type("text/html; charset=utf-8")
            .insert_header((header::VARY, "Accept, Cookie"))
            .body("<!DOCTYPE html>\n<html><head><title>Flatpak Index Dynamic – Django REST framework</title></head><body><pre>…</pre></body></html>\n");
    }
    let body = match lock(&state.index_override).clone() {
        Some(b) => b,
        None => {
            let repos = lock(&state.repos).clone();
            Bytes::from(pulp_index_json(&state.origin(), &repos, &q))
        }
    };
    api(state, StatusCode::OK, false, allow)
        .content_type("application/json")
        .insert_header((header::VARY, "Accept"))
        .body(body)
}

/// Pulp's `n`/`last` paging (`n` defaults to 100, capped at 1000) with its `Link`.
fn paginate(
    req: &HttpRequest,
    sorted: &[String],
    link_path: &str,
) -> (Vec<String>, Option<String>) {
    let query = req.uri().query().unwrap_or_default();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let n = get("n")
        .and_then(|n| n.parse::<i64>().ok())
        .map_or(100, |n| n.clamp(0, 1000)) as usize;
    let last = get("last").filter(|l| !l.is_empty());
    let page: Vec<String> = sorted
        .iter()
        .filter(|t| last.as_ref().is_none_or(|l| t.as_str() > l.as_str()))
        .take(n)
        .cloned()
        .collect();
    let link = (n > 0 && page.len() == n).then(|| {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        let mut seen_n = false;
        let mut seen_last = false;
        for (k, v) in &pairs {
            match k.as_str() {
                "n" if !seen_n => {
                    seen_n = true;
                    ser.append_pair("n", &n.to_string());
                }
                "last" if !seen_last => {
                    seen_last = true;
                    ser.append_pair("last", page.last().map(String::as_str).unwrap_or_default());
                }
                "n" | "last" => {}
                _ => {
                    ser.append_pair(k, v);
                }
            }
        }
        if !seen_n {
            ser.append_pair("n", &n.to_string());
        }
        if !seen_last {
            ser.append_pair("last", page.last().map(String::as_str).unwrap_or_default());
        }
        let scheme = if req
            .conn_data::<crate::harness::ConnFacts>()
            .is_some_and(|c| c.tls)
        {
            "https"
        } else {
            "http"
        };
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!(
            "<{scheme}://{host}{link_path}?{}>; rel=\"next\"",
            ser.finish()
        )
    });
    (page, link)
}

/// A parsed single `Range: bytes=a-b`.
fn range(req: &HttpRequest, size: u64) -> Option<(u64, u64)> {
    let v = req.headers().get(header::RANGE)?.to_str().ok()?;
    let spec = v.strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let suffix: u64 = b.parse().ok()?;
        (size.saturating_sub(suffix), size - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size - 1
        } else {
            b.parse::<u64>().ok()?.min(size - 1)
        };
        (start, end)
    };
    (start <= end && start < size).then_some((start, end))
}

fn serve_blob(
    req: &HttpRequest,
    state: &Arc<PulpState>,
    b: &mut HttpResponseBuilder,
    blob: &Blob,
) -> HttpResponse {
    let size = blob.size();
    let hex_part = blob.digest.rsplit(':').next().unwrap_or_default();
    let etag = format!("\"{}-{size:x}\"", hex_part.get(..16).unwrap_or(hex_part));
    b.content_type("application/octet-stream")
        .insert_header(("Docker-Content-Digest", blob.digest.clone()))
        .insert_header(("Docker-Distribution-API-Version", "registry/2.0"))
        .insert_header((header::ETAG, etag))
        .insert_header((header::LAST_MODIFIED, "Sun, 22 Nov 2026 22:41:03 GMT"))
        .insert_header((header::ACCEPT_RANGES, "bytes"));
    let (start, end) = match range(req, size) {
        Some((s, e)) => {
            b.status(StatusCode::PARTIAL_CONTENT);
            b.insert_header((header::CONTENT_RANGE, format!("bytes {s}-{e}/{size}")));
            (s, e + 1)
        }
        None => (0, size),
    };
    if req.method() == actix_web::http::Method::HEAD {
        // actix writes Content-Length from the body's size and sends no body for HEAD.
        let nothing = futures_util::stream::empty::<Result<Bytes, io::Error>>();
        return b.body(actix_web::body::SizedStream::new(end - start, nothing));
    }
    let stream = BodyStream {
        body: blob.body.clone(),
        pattern: match blob.body {
            BlobBody::Generated { seed, .. } => pattern(seed),
            BlobBody::Bytes(_) => Bytes::new(),
        },
        pos: start,
        end,
        state: state.clone(),
    };
    b.body(actix_web::body::SizedStream::new(end - start, stream))
}

/// A blob body streamed in 64 KiB chunks (zero-copy for generated bodies).
struct BodyStream {
    body: BlobBody,
    pattern: Bytes,
    pos: u64,
    end: u64,
    state: Arc<PulpState>,
}

impl Stream for BodyStream {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.pos >= this.end {
            return Poll::Ready(None);
        }
        let len = (this.end - this.pos).min(CHUNK as u64) as usize;
        let chunk = match &this.body {
            BlobBody::Bytes(b) => b.slice(this.pos as usize..this.pos as usize + len),
            BlobBody::Generated { .. } => {
                let start = (this.pos % PERIOD) as usize;
                this.pattern.slice(start..start + len)
            }
        };
        this.pos += len as u64;
        this.state
            .bytes_sent
            .fetch_add(len as u64, Ordering::Relaxed);
        Poll::Ready(Some(Ok(chunk)))
    }
}

impl Drop for BodyStream {
    fn drop(&mut self) {
        if self.pos >= self.end {
            self.state.streams_completed.fetch_add(1, Ordering::SeqCst);
        } else {
            self.state.streams_aborted.fetch_add(1, Ordering::SeqCst);
        }
    }
}
