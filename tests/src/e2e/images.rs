//! The images the end-to-end suite pushes, built with no network and cached
//! per test process ([`Images::get`]).
//!
//! | layout | what | pushed as |
//! |---|---|---|
//! | `tiny_a`, `tiny_b` | a plain container image: one hand-made tar.gz layer, a config with a label, an OCI manifest ([`crate::fake_pulp::Image`]) | single manifest |
//! | `tiny_multi` | the same for linux/amd64 and linux/arm64 under one OCI image index | `skopeo copy --all` |
//! | `platform` | Flatpak runtime `runtime/org.test.Platform/x86_64/1` (an empty `/usr`) | single manifest |
//! | `hello_v1`, `hello_v2` | Flatpak app `app/org.test.Hello/x86_64/stable`: a static binary printing [`HELLO_V1`] / [`HELLO_V2`] and a 200 KB payload | single manifest |
//! | `private` | Flatpak app `app/org.test.Private/x86_64/stable` printing [`PRIVATE_OUTPUT`], wrapped in an OCI image index (linux/amd64) | `skopeo copy --all` |
//!
//! The Flatpak build dirs are written by hand (`flatpak build-init` would need an
//! installed SDK), the binaries are `gcc -static` (the runtime has no libc), then
//! `flatpak build-finish`, `build-export` and `build-bundle --oci`, with every piece
//! of flatpak state in the build directory. The directory is
//! `$TMPDIR/cg-e2e-images-<pid>`; directories of dead processes are removed when
//! the next one is made.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::{Cmd, mkdir, write};
use crate::fake_pulp::{Image, media, sha256_digest, tar_gz_layer};

pub const HELLO_V1: &str = "hello from flatpak v1";
pub const HELLO_V2: &str = "hello from flatpak v2";
pub const PRIVATE_OUTPUT: &str = "hello from a private flatpak";
pub const PLATFORM_REF: &str = "runtime/org.test.Platform/x86_64/1";
pub const HELLO_REF: &str = "app/org.test.Hello/x86_64/stable";
pub const PRIVATE_REF: &str = "app/org.test.Private/x86_64/stable";

/// One OCI image layout on disk.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
    /// `org.opencontainers.image.ref.name` to pick in `index.json`.
    pub reference: String,
    /// An image index to push whole (`skopeo copy --all`).
    pub multi: bool,
    /// Digest of what `reference` names (manifest, or image index when `multi`).
    pub digest: String,
    /// Digests of the image manifests (the children when `multi`).
    pub image_digests: Vec<String>,
}

impl Layout {
    /// `oci:<dir>:<reference>`, the skopeo source.
    pub fn source(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.reference)
    }
}

/// Every layout, built once per process.
pub struct Images {
    pub dir: PathBuf,
    pub tiny_a: Layout,
    pub tiny_b: Layout,
    pub tiny_multi: Layout,
    pub platform: Layout,
    pub hello_v1: Layout,
    pub hello_v2: Layout,
    pub private: Layout,
}

impl Images {
    /// Build (first call) or return the layouts. Panics with the failing command.
    pub fn get() -> &'static Images {
        static IMAGES: OnceLock<Images> = OnceLock::new();
        IMAGES.get_or_init(build)
    }
}

fn build() -> Images {
    let started = std::time::Instant::now();
    let dir = cache_dir();
    let tiny = |label: &str, text: &str| {
        Image::new()
            .label("org.example.repo", label)
            .layers(vec![tar_gz_layer(&[("hello.txt", text.as_bytes())])])
    };
    let tiny_a = write_layout(&dir.join("tiny-a"), &[tiny("a", "tiny image A\n")], false);
    let tiny_b = write_layout(&dir.join("tiny-b"), &[tiny("b", "tiny image B\n")], false);
    let tiny_multi = write_layout(
        &dir.join("tiny-multi"),
        &[
            tiny("public", "tiny public image, amd64\n"),
            tiny("public", "tiny public image, arm64\n").arch("arm64"),
        ],
        true,
    );
    let fp = Flatpak::new(&dir.join("flatpak"));
    let platform = fp.runtime("org.test.Platform", "1", "oci-platform");
    let hello_v1 = fp.app("org.test.Hello", HELLO_V1, "oci-hello-v1");
    let hello_v2 = fp.app("org.test.Hello", HELLO_V2, "oci-hello-v2");
    let private_single = fp.app("org.test.Private", PRIVATE_OUTPUT, "oci-private-single");
    let private = wrap_in_index(&private_single, &dir.join("flatpak/oci-private"));
    eprintln!(
        "e2e: images built in {:.2} s under {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Images {
        dir,
        tiny_a,
        tiny_b,
        tiny_multi,
        platform,
        hello_v1,
        hello_v2,
        private,
    }
}

fn cache_dir() -> PathBuf {
    let base = std::env::temp_dir();
    let prefix = "cg-e2e-images-";
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(prefix)
                && pid.parse::<u32>().is_ok()
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = base.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    mkdir(&dir)
}

fn write_blob(layout: &Path, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let hex = digest.trim_start_matches("sha256:");
    write(&layout.join("blobs/sha256").join(hex), bytes);
    digest
}

fn write_index_json(layout: &Path, media_type: &str, digest: &str, size: usize, reference: &str) {
    write(
        layout.join("oci-layout").as_path(),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [{
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": reference},
        }],
    });
    write(
        &layout.join("index.json"),
        serde_json::to_vec_pretty(&index).expect("index.json"),
    );
}

/// A hand-made OCI layout with these images: one manifest, or (`multi`) an image
/// index listing each with its platform. Tagged `latest`.
fn write_layout(layout: &Path, images: &[Image], multi: bool) -> Layout {
    let _ = std::fs::remove_dir_all(layout);
    let mut children = Vec::new();
    for image in images {
        let built = image.build();
        for blob in std::iter::once(&built.config).chain(&built.layers) {
            let bytes = blob.to_bytes();
            write_blob(layout, &bytes);
        }
        let digest = write_blob(layout, &built.manifest.bytes);
        assert_eq!(digest, built.manifest.digest);
        children.push((built, digest));
    }
    let (media_type, digest, size) = if multi {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": children.iter().map(|(b, d)| serde_json::json!({
                "mediaType": b.manifest.media_type,
                "digest": d,
                "size": b.manifest.bytes.len(),
                "platform": {"architecture": b.architecture, "os": b.os},
            })).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec_pretty(&index).expect("image index");
        (
            media::OCI_INDEX.to_owned(),
            write_blob(layout, &bytes),
            bytes.len(),
        )
    } else {
        let (b, d) = &children[0];
        (
            b.manifest.media_type.clone(),
            d.clone(),
            b.manifest.bytes.len(),
        )
    };
    write_index_json(layout, &media_type, &digest, size, "latest");
    Layout {
        dir: layout.to_owned(),
        reference: "latest".into(),
        multi,
        digest,
        image_digests: children.into_iter().map(|(_, d)| d).collect(),
    }
}

/// Copy a single-manifest layout and put an image index (linux/amd64) on top.
fn wrap_in_index(single: &Layout, layout: &Path) -> Layout {
    let _ = std::fs::remove_dir_all(layout);
    mkdir(&layout.join("blobs/sha256"));
    for e in std::fs::read_dir(single.dir.join("blobs/sha256")).expect("blobs dir") {
        let e = e.expect("blob entry");
        std::fs::copy(e.path(), layout.join("blobs/sha256").join(e.file_name()))
            .expect("copy blob");
    }
    let manifest_path = single
        .dir
        .join("blobs/sha256")
        .join(single.digest.trim_start_matches("sha256:"));
    let manifest = std::fs::read(&manifest_path).expect("manifest blob");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [{
            "mediaType": media::OCI_MANIFEST,
            "digest": single.digest,
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    });
    let bytes = serde_json::to_vec_pretty(&index).expect("image index");
    let digest = write_blob(layout, &bytes);
    write_index_json(layout, media::OCI_INDEX, &digest, bytes.len(), "latest");
    Layout {
        dir: layout.to_owned(),
        reference: "latest".into(),
        multi: true,
        digest,
        image_digests: vec![single.digest.clone()],
    }
}

/// `n` incompressible, deterministic bytes.
fn payload(n: usize, seed: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(&Sha256::digest(format!("{seed}:{i}").as_bytes()));
        i += 1;
    }
    out.truncate(n);
    out
}

/// `flatpak build-*` with all of flatpak's state inside `root`.
struct Flatpak {
    root: PathBuf,
}

impl Flatpak {
    fn new(root: &Path) -> Flatpak {
        let root = mkdir(root);
        for d in [
            "home",
            "state/user",
            "state/system",
            "state/config",
            "xdg/cache",
            "xdg/data",
            "xdg/config",
        ] {
            mkdir(&root.join(d));
        }
        Flatpak { root }
    }

    fn cmd(&self, args: &[&str]) -> Cmd {
        let r = &self.root;
        Cmd::new("flatpak")
            .args(args)
            .cwd(r)
            .env("HOME", r.join("home"))
            .env("FLATPAK_USER_DIR", r.join("state/user"))
            .env("FLATPAK_SYSTEM_DIR", r.join("state/system"))
            .env("FLATPAK_CONFIG_DIR", r.join("state/config"))
            .env("XDG_CACHE_HOME", r.join("xdg/cache"))
            .env("XDG_DATA_HOME", r.join("xdg/data"))
            .env("XDG_CONFIG_HOME", r.join("xdg/config"))
    }

    fn read_layout(&self, name: &str) -> Layout {
        let dir = self.root.join(name);
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("index.json")).expect("flatpak build-bundle wrote index.json"),
        )
        .expect("index.json is JSON");
        let m = &index["manifests"][0];
        let digest = m["digest"].as_str().expect("manifest digest").to_owned();
        let reference = m["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .expect("ref.name")
            .to_owned();
        Layout {
            dir,
            reference,
            multi: false,
            image_digests: vec![digest.clone()],
            digest,
        }
    }

    fn runtime(&self, id: &str, branch: &str, out: &str) -> Layout {
        let b = self.root.join(format!("build-{id}"));
        let _ = std::fs::remove_dir_all(&b);
        mkdir(&b.join("usr/bin"));
        mkdir(&b.join("files")); // without it: "Build directory ... not initialized"
        write(
            &b.join("metadata"),
            format!(
                "[Runtime]\nname={id}\nruntime={id}/x86_64/{branch}\nsdk={id}/x86_64/{branch}\n"
            ),
        );
        let b = b.to_string_lossy().into_owned();
        self.cmd(&[
            "build-export",
            "--runtime",
            "--disable-sandbox",
            "repo",
            &b,
            branch,
        ])
        .run()
        .ok();
        self.cmd(&[
            "build-bundle",
            "--oci",
            "--runtime",
            "repo",
            out,
            id,
            branch,
        ])
        .run()
        .ok();
        self.read_layout(out)
    }

    /// Export a new commit of app `id` (branch `stable`) printing `says`, and bundle it.
    fn app(&self, id: &str, says: &str, out: &str) -> Layout {
        let b = self.root.join(format!("build-{out}"));
        let _ = std::fs::remove_dir_all(&b);
        mkdir(&b.join("files/bin"));
        write(
            &b.join("metadata"),
            format!(
                "[Application]\nname={id}\nruntime=org.test.Platform/x86_64/1\nsdk=org.test.Platform/x86_64/1\ncommand=hello\n"
            ),
        );
        let src = write(
            &self.root.join(format!("{out}.c")),
            format!("#include <stdio.h>\nint main(void){{puts(\"{says}\");return 0;}}\n"),
        );
        Cmd::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(b.join("files/bin/hello"))
            .arg(&src)
            .env("TMPDIR", std::env::temp_dir())
            .run()
            .ok();
        // A real (incompressible) layer of a few hundred KB.
        write(&b.join("files/payload.bin"), payload(200_000, out));
        let bs = b.to_string_lossy().into_owned();
        // build-finish before any export exists ("already finalized" otherwise).
        self.cmd(&["build-finish", &bs, "--share=network"])
            .run()
            .ok();
        // A non-ASCII subject, as in the field: the index must carry it as raw UTF-8.
        let subject = format!("--subject={id} – ünïcödé ✓");
        self.cmd(&[
            "build-export",
            "--disable-sandbox",
            &subject,
            "repo",
            &bs,
            "stable",
        ])
        .run()
        .ok();
        self.cmd(&["build-bundle", "--oci", "repo", out, id, "stable"])
            .run()
            .ok();
        self.read_layout(out)
    }
}
