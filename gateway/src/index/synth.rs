//! Synthetic indexes shaped like Pulp's `/index/static` (compact JSON, raw
//! UTF-8, labels as pulp_container copies them from the image config), for
//! benches, load tools and tests. Deterministic for a given [`Spec`].

use super::write_json_str;

/// What to generate.
#[derive(Clone, Debug)]
pub struct Spec {
    pub repos: usize,
    /// Images per repository, one per architecture (at most four distinct).
    pub images_per_repo: usize,
    /// Every `dup_every`-th repository (0: none) publishes the same refs as
    /// the repository before it.
    pub dup_every: usize,
    /// Every `malformed_every`-th image (0: none) has no `Digest`.
    pub malformed_every: usize,
    pub seed: u64,
}

impl Spec {
    /// `repos` repositories of one well-formed amd64 image each, no duplicates.
    pub fn new(repos: usize) -> Spec {
        Spec {
            repos,
            images_per_repo: 1,
            dup_every: 0,
            malformed_every: 0,
            seed: 0x5eed,
        }
    }
}

/// The `Name` of repository `i`.
pub fn repo_name(i: usize) -> String {
    format!("org/flatpak/app-{i:05}")
}

/// A xorshift64* generator: enough for test data, no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n`; `n` must not be 0.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

const ARCHES: [(&str, &str); 4] = [
    ("amd64", "x86_64"),
    ("arm64", "aarch64"),
    ("ppc64le", "ppc64le"),
    ("s390x", "s390x"),
];

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Generate the index body.
pub fn index(spec: &Spec) -> Vec<u8> {
    let mut rng = Rng::new(spec.seed);
    let mut out = Vec::with_capacity(spec.repos * spec.images_per_repo.max(1) * 2600 + 64);
    out.extend_from_slice(b"{\"Registry\":\"http://pulp.example.com:24816\",\"Results\":[");
    let mut image_no = 0usize;
    for i in 0..spec.repos {
        if i > 0 {
            out.push(b',');
        }
        // The repository whose refs this one publishes.
        let app = if spec.dup_every > 0 && i > 0 && i.is_multiple_of(spec.dup_every) {
            i - 1
        } else {
            i
        };
        out.extend_from_slice(b"{\"Name\":");
        write_json_str(&mut out, &repo_name(i));
        out.extend_from_slice(b",\"Images\":[");
        for j in 0..spec.images_per_repo {
            if j > 0 {
                out.push(b',');
            }
            image_no += 1;
            let malformed =
                spec.malformed_every > 0 && image_no.is_multiple_of(spec.malformed_every);
            image(&mut out, &mut rng, app, ARCHES[j % ARCHES.len()], malformed);
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}");
    out
}

fn image(out: &mut Vec<u8>, rng: &mut Rng, app: usize, arch: (&str, &str), malformed: bool) {
    let (oci_arch, flatpak_arch) = arch;
    let runtime = app.is_multiple_of(16);
    let platform = format!("org.example.Platform{}", app / 16 % 8);
    let (id, flatpak_ref, metadata) = if runtime {
        let id = format!("org.example.Platform{app}");
        let r = format!("runtime/{id}/{flatpak_arch}/23.08");
        let md = format!(
            "[Runtime]\nname={id}\nruntime={id}/{flatpak_arch}/23.08\nsdk=org.example.Sdk{app}/{flatpak_arch}/23.08\n\n[Extension {id}.GL]\ndirectory=lib/GL\nversion=1.4\nsubdirectories=true\n"
        );
        (id, r, md)
    } else {
        let id = format!("org.example.App{app}");
        let r = format!("app/{id}/{flatpak_arch}/stable");
        let md = format!(
            "[Application]\nname={id}\nruntime={platform}/{flatpak_arch}/23.08\nsdk=org.example.Sdk/{flatpak_arch}/23.08\ncommand=app{app}\n\n[Context]\nshared=network;ipc;\nsockets=x11;wayland;pulseaudio;\ndevices=dri;\nfilesystems=xdg-documents;\n"
        );
        (id, r, md)
    };
    let appdata = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<components version=\"0.8\" origin=\"flatpak\">\n  <component type=\"desktop-application\">\n    <id>{id}</id>\n    <name>Example {app}</name>\n    <name xml:lang=\"de\">Beispiel {app} – Äpfel</name>\n    <summary>Does useful things, number {app}</summary>\n    <description><p>An example application used to size the index: “quoted”, ünïcödé ✓.</p></description>\n    <releases><release version=\"1.{app}\" timestamp=\"1700000000\"/></releases>\n  </component>\n</components>\n"
    );
    let commit = hex(rng, 32);

    out.extend_from_slice(b"{\"Tags\":[\"latest\"],");
    if !malformed {
        out.extend_from_slice(b"\"Digest\":\"sha256:");
        out.extend_from_slice(hex(rng, 32).as_bytes());
        out.extend_from_slice(b"\",");
    }
    out.extend_from_slice(b"\"MediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"OS\":\"linux\",\"Architecture\":");
    write_json_str(out, oci_arch);
    let labels_start = out.len();
    out.extend_from_slice(b",\"Labels\":{");
    let label = |out: &mut Vec<u8>, k: &str, v: &str, first: bool| {
        if !first {
            out.push(b',');
        }
        write_json_str(out, k);
        out.push(b':');
        write_json_str(out, v);
    };
    label(out, "org.flatpak.ref", &flatpak_ref, true);
    label(out, "org.flatpak.commit", &commit, false);
    label(out, "org.flatpak.metadata", &metadata, false);
    label(out, "org.flatpak.subject", &format!("Export {id}"), false);
    label(out, "org.flatpak.timestamp", "1795387250", false);
    let download = 100_000 + rng.below(50_000_000);
    label(
        out,
        "org.flatpak.download-size",
        &download.to_string(),
        false,
    );
    label(
        out,
        "org.flatpak.installed-size",
        &(download * 3).to_string(),
        false,
    );
    label(
        out,
        "org.flatpak.commit-metadata.xa.ref",
        &base64(rng, flatpak_ref.len() + 3),
        false,
    );
    label(
        out,
        "org.flatpak.commit-metadata.xa.metadata",
        &base64(rng, metadata.len() + 3),
        false,
    );
    label(
        out,
        "org.flatpak.commit-metadata.xa.download-size",
        "AAAAAAAIGRMAdA==",
        false,
    );
    label(
        out,
        "org.flatpak.commit-metadata.ostree.collection-binding",
        "AABz",
        false,
    );
    label(out, "org.freedesktop.appstream.appdata", &appdata, false);
    // The icon pads the labels to 1-3 KB, the spread seen on real indexes
    // once icons are small.
    let target = 1024 + rng.below(2048);
    let so_far = out.len() - labels_start + 64;
    let icon_len = target.saturating_sub(so_far).max(64);
    let icon = format!(
        "data:image/png;base64,iVBORw0KGgo{}",
        base64(rng, icon_len * 3 / 4)
    );
    label(out, "org.freedesktop.appstream.icon-64", &icon, false);
    out.extend_from_slice(b"}}");
}

fn hex(rng: &mut Rng, bytes: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..bytes * 2)
        .map(|_| char::from(HEX[rng.below(16)]))
        .collect()
}

/// Base64 text of `bytes` random bytes (the characters are random; their
/// length and padding are those of a real encoding).
fn base64(rng: &mut Rng, bytes: usize) -> String {
    let full = bytes / 3 * 4;
    let mut s: String = (0..full).map(|_| char::from(B64[rng.below(64)])).collect();
    match bytes % 3 {
        1 => {
            s.push(char::from(B64[rng.below(64)]));
            s.push_str("A==");
        }
        2 => {
            s.push(char::from(B64[rng.below(64)]));
            s.push(char::from(B64[rng.below(64)]));
            s.push_str("A=");
        }
        _ => {}
    }
    s
}
